//! The mutual HMAC-SHA256 challenge-response of `PROTOCOL.md` section 4, and the
//! session key with the per-file `done`/`ok` MACs derived from it (section 5).
//!
//! Both functions run on the raw stream before any buffering, with every read bounded
//! by one absolute deadline. Failures are tagged: a key mismatch is `Auth`, a version
//! or role mismatch or a malformed frame is `Protocol`. The key itself never leaves.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::Result;
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::Sha256;

use crate::conn::{DeadlineReader, ReadTimeout, net, read_frame};
use crate::error::{Kind, fail};
use crate::escape::escape;
use crate::frame::{self, ErrorCode, MAX_PREAUTH_CONTROL, Message, PROTOCOL_VERSION, Role};

type HmacSha256 = Hmac<Sha256>;

/// Nonce length, in bytes.
const NONCE_LEN: usize = 32;
type Nonce = [u8; NONCE_LEN];

/// The per-session key `Ks`, and the MACs that bind each file to the session.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)") // never print key material
    }
}

/// What a file MAC covers: which entry, its size, its content hash and its name.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts<'a> {
    pub index: u64,
    pub size: u64,
    pub md5: &'a [u8; 16],
    pub path: &'a str,
}

impl SessionKey {
    /// A session key from raw bytes, for driving a session without a handshake
    /// (fuzzing, tests). Real sessions get theirs from [`accept`] or [`initiate`].
    #[doc(hidden)]
    pub fn from_raw(bytes: [u8; 32]) -> SessionKey {
        SessionKey(bytes)
    }

    /// `mac_done`, as lowercase hex.
    pub fn done_mac(&self, facts: FileFacts<'_>) -> String {
        frame::hex(&self.file_mac("xfer/1 done", facts).finalize().into_bytes())
    }

    /// `mac_ok`, as lowercase hex.
    pub fn ok_mac(&self, facts: FileFacts<'_>) -> String {
        frame::hex(&self.file_mac("xfer/1 ok", facts).finalize().into_bytes())
    }

    /// Whether `mac_hex` is exactly the `mac_done` of `facts` (constant time).
    pub fn verify_done(&self, facts: FileFacts<'_>, mac_hex: &str) -> bool {
        verify(self.file_mac("xfer/1 done", facts), mac_hex)
    }

    /// Whether `mac_hex` is exactly the `mac_ok` of `facts` (constant time).
    pub fn verify_ok(&self, facts: FileFacts<'_>, mac_hex: &str) -> bool {
        verify(self.file_mac("xfer/1 ok", facts), mac_hex)
    }

    fn file_mac(&self, label: &str, facts: FileFacts<'_>) -> HmacSha256 {
        keyed(
            &self.0,
            label,
            &[
                &facts.index.to_be_bytes(),
                &facts.size.to_be_bytes(),
                facts.md5,
                facts.path.as_bytes(),
            ],
        )
    }
}

/// HMAC-SHA256 over `label || 0x00 || parts...`, not yet finalised.
fn keyed(key: &[u8], label: &str, parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(label.as_bytes());
    mac.update(&[0]);
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Strict decoding (exactly 64 lowercase hex digits), then a constant-time comparison.
fn verify(expected: HmacSha256, mac_hex: &str) -> bool {
    frame::unhex::<32>(mac_hex).is_some_and(|mac| expected.verify_slice(&mac).is_ok())
}

fn initiator_mac(key: &[u8], na: &Nonce, ni: &Nonce) -> HmacSha256 {
    keyed(key, "xfer/1 initiator", &[na, ni])
}

fn acceptor_mac(key: &[u8], na: &Nonce, ni: &Nonce) -> HmacSha256 {
    keyed(key, "xfer/1 acceptor", &[na, ni])
}

fn session_key(key: &[u8], na: &Nonce, ni: &Nonce) -> SessionKey {
    // F (the features in force) is empty in version 1.
    SessionKey(
        keyed(key, "xfer/1 session", &[na, ni])
            .finalize()
            .into_bytes()
            .into(),
    )
}

fn fresh_nonce() -> Result<Nonce> {
    let mut nonce = [0; NONCE_LEN];
    OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|err| anyhow::anyhow!("the operating system's random generator failed: {err}"))?;
    Ok(nonce)
}

/// The handshake from the listening side: send `hello`, check `auth`, prove the key.
pub fn accept<S>(stream: &mut S, key: &[u8], role: Role, deadline: Instant) -> Result<SessionKey>
where
    S: Read + Write + ReadTimeout,
{
    let na = fresh_nonce()?;
    send(
        stream,
        &Message::Hello {
            version: PROTOCOL_VERSION,
            role,
            nonce: frame::hex(&na),
            features: None,
        },
    )?;
    let message = match read_frame(
        &mut DeadlineReader::new(stream, deadline),
        MAX_PREAUTH_CONTROL,
    ) {
        Ok(Some(message)) => message,
        Ok(None) => {
            return Err(fail(
                Kind::Network,
                "the peer closed the connection during the handshake",
            ));
        }
        Err(err) => return Err(refuse_if_protocol(stream, err)),
    };
    let (version, peer_role, nonce, mac) = match message {
        Message::Auth {
            version,
            role,
            nonce,
            mac,
            ..
        } => (version, role, nonce, mac),
        Message::Error { code, message, .. } => return Err(peer_error(code, &message)),
        other => {
            return Err(refuse(
                stream,
                ErrorCode::Protocol,
                format!("expected auth, got {other}"),
            ));
        }
    };
    if version != PROTOCOL_VERSION {
        return Err(refuse(
            stream,
            ErrorCode::Version,
            format!("unsupported protocol version {version}; this side speaks {PROTOCOL_VERSION}"),
        ));
    }
    if peer_role == role {
        let role = role.as_str();
        return Err(refuse(
            stream,
            ErrorCode::Role,
            format!("both sides want to be the {role}"),
        ));
    }
    let Some(ni) = frame::unhex::<NONCE_LEN>(&nonce) else {
        return Err(refuse(
            stream,
            ErrorCode::Protocol,
            "nonce must be 64 lowercase hex digits",
        ));
    };
    // A reflected nonce would let the peer replay our own proof back to us.
    if ni == na || !verify(initiator_mac(key, &na, &ni), &mac) {
        return Err(refuse(stream, ErrorCode::Auth, "authentication failed"));
    }
    let proof = acceptor_mac(key, &na, &ni).finalize().into_bytes();
    send(
        stream,
        &Message::AuthOk {
            mac: frame::hex(&proof),
        },
    )?;
    Ok(session_key(key, &na, &ni))
}

/// The handshake from the connecting side: answer `hello`, then insist on proof
/// that the listener holds the key before anything else is exchanged.
pub fn initiate<S>(stream: &mut S, key: &[u8], role: Role, deadline: Instant) -> Result<SessionKey>
where
    S: Read + Write + ReadTimeout,
{
    let (version, peer_role, nonce) = match expect(stream, deadline, "hello")? {
        Message::Hello {
            version,
            role,
            nonce,
            ..
        } => (version, role, nonce),
        Message::Error { code, message, .. } => return Err(peer_error(code, &message)),
        other => {
            return Err(refuse(
                stream,
                ErrorCode::Protocol,
                format!("expected hello, got {other}"),
            ));
        }
    };
    if version != PROTOCOL_VERSION {
        return Err(refuse(
            stream,
            ErrorCode::Version,
            format!(
                "the peer speaks protocol version {version}; this side speaks {PROTOCOL_VERSION}"
            ),
        ));
    }
    if peer_role == role {
        let role = role.as_str();
        return Err(refuse(
            stream,
            ErrorCode::Role,
            format!("both sides want to be the {role}"),
        ));
    }
    let Some(na) = frame::unhex::<NONCE_LEN>(&nonce) else {
        return Err(refuse(
            stream,
            ErrorCode::Protocol,
            "nonce must be 64 lowercase hex digits",
        ));
    };
    let ni = fresh_nonce()?;
    if ni == na {
        return Err(refuse(stream, ErrorCode::Auth, "the peer echoed our nonce"));
    }
    let proof = initiator_mac(key, &na, &ni).finalize().into_bytes();
    send(
        stream,
        &Message::Auth {
            version: PROTOCOL_VERSION,
            role,
            nonce: frame::hex(&ni),
            mac: frame::hex(&proof),
            user: None,
            features: None,
        },
    )?;
    match expect(stream, deadline, "auth_ok")? {
        Message::AuthOk { mac } if verify(acceptor_mac(key, &na, &ni), &mac) => {
            Ok(session_key(key, &na, &ni))
        }
        Message::AuthOk { .. } => Err(refuse(
            stream,
            ErrorCode::Auth,
            "authentication failed: the listener could not prove it holds the key (wrong key on one side?)",
        )),
        Message::Error {
            code: ErrorCode::Auth,
            ..
        } => Err(fail(
            Kind::Auth,
            "authentication failed: the listener refused our key (wrong key on one side?)",
        )),
        Message::Error { code, message, .. } => Err(peer_error(code, &message)),
        other => Err(refuse(
            stream,
            ErrorCode::Protocol,
            format!("expected auth_ok, got {other}"),
        )),
    }
}

fn expect<S: Read + Write + ReadTimeout>(
    stream: &mut S,
    deadline: Instant,
    what: &str,
) -> Result<Message> {
    match read_frame(
        &mut DeadlineReader::new(stream, deadline),
        MAX_PREAUTH_CONTROL,
    ) {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(fail(
            Kind::Network,
            format!("the peer closed the connection while we waited for {what}"),
        )),
        Err(err) => Err(refuse_if_protocol(stream, err)),
    }
}

fn send<S: Write>(stream: &mut S, message: &Message) -> Result<()> {
    stream.write_all(&frame::encode(message)).map_err(net)
}

/// Tells the peer why we stop (best effort: it may be gone), and returns the error
/// for our side, tagged by what the code means.
fn refuse<S: Write>(stream: &mut S, code: ErrorCode, why: impl Into<String>) -> anyhow::Error {
    let why = why.into();
    let _ = send(stream, &Message::error(code, why.clone()));
    fail(Kind::of_code(code), why)
}

/// A malformed or oversized frame gets a `protocol` error frame before we close.
fn refuse_if_protocol<S: Write>(stream: &mut S, err: anyhow::Error) -> anyhow::Error {
    if crate::error::kind_of(&err) == Some(Kind::Protocol) {
        let _ = send(
            stream,
            &Message::error(ErrorCode::Protocol, format!("{err:#}")),
        );
    }
    err
}

/// The error a peer's `error` frame reports, with its text escaped.
pub fn peer_error(code: ErrorCode, message: &str) -> anyhow::Error {
    let text = match code {
        ErrorCode::Busy => "the listener is busy (at its connection limit); try again later",
        ErrorCode::Auth => "authentication failed (wrong key on one side?)",
        _ => "",
    };
    if text.is_empty() {
        fail(
            Kind::of_code(code),
            format!("the peer reported {code}: {}", escape(message)),
        )
    } else {
        fail(Kind::of_code(code), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    const KEY: &[u8] = b"correct horse battery staple";

    fn vector_nonces() -> (Nonce, Nonce) {
        let na: Nonce = std::array::from_fn(|i| i as u8);
        let ni: Nonce = std::array::from_fn(|i| i as u8 + 0x20);
        (na, ni)
    }

    fn hex_of(mac: HmacSha256) -> String {
        frame::hex(&mac.finalize().into_bytes())
    }

    #[test]
    fn handshake_macs_match_the_protocol_test_vector() {
        let (na, ni) = vector_nonces();
        assert_eq!(
            hex_of(initiator_mac(KEY, &na, &ni)),
            "0cc5571d3a9baf73901ceb686e111e07001967776a9c0234cb93d0184596cf8c"
        );
        assert_eq!(
            hex_of(acceptor_mac(KEY, &na, &ni)),
            "28760a9fa85aaa55caa46c4ed9bfe9de67950ab9837505f08e2365c6a5c414dc"
        );
        assert_eq!(
            frame::hex(&session_key(KEY, &na, &ni).0),
            "6c9c4162b114117f1e0ad5d21d685e403d45a7be521966dc12604feef91907b5"
        );
    }

    #[test]
    fn file_macs_match_the_protocol_test_vector() {
        let (na, ni) = vector_nonces();
        let ks = session_key(KEY, &na, &ni);
        let md5 = frame::unhex::<16>("22c3683b094136c3398391ae71b20f04").unwrap();
        let facts = FileFacts {
            index: 0,
            size: 13,
            md5: &md5,
            path: "docs/hello.txt",
        };
        let done = "db8209c741bc6c15924a0bf4da82c2c630f4d73a0525738ca2b08dd44c6ac7a9";
        let ok = "798f9624d42083632a65748e79192e7ebdcd6d19e6860b53f750809711de35bc";
        assert_eq!(ks.done_mac(facts), done);
        assert_eq!(ks.ok_mac(facts), ok);
        assert!(ks.verify_done(facts, done));
        assert!(ks.verify_ok(facts, ok));
        assert!(!ks.verify_ok(facts, done));
        assert!(!ks.verify_ok(facts, &ok.to_uppercase()));
        assert!(!ks.verify_ok(facts, &ok[..62]));
        assert!(!ks.verify_ok(FileFacts { index: 1, ..facts }, ok));
        assert!(!ks.verify_ok(
            FileFacts {
                path: "docs/hello.txT",
                ..facts
            },
            ok
        ));
    }

    fn run_pair(
        accept_key: &'static [u8],
        accept_role: Role,
        initiate_key: &'static [u8],
        initiate_role: Role,
    ) -> (Result<SessionKey>, Result<SessionKey>) {
        let (mut a, mut i) = UnixStream::pair().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let acceptor =
            std::thread::spawn(move || accept(&mut a, accept_key, accept_role, deadline));
        let initiated = initiate(&mut i, initiate_key, initiate_role, deadline);
        drop(i);
        (acceptor.join().unwrap(), initiated)
    }

    #[test]
    fn both_sides_derive_the_same_session_key() {
        let (a, i) = run_pair(KEY, Role::Receiver, KEY, Role::Sender);
        assert_eq!(a.unwrap().0, i.unwrap().0);
        let (a, i) = run_pair(KEY, Role::Sender, KEY, Role::Receiver);
        assert_eq!(a.unwrap().0, i.unwrap().0);
    }

    #[test]
    fn wrong_key_fails_on_both_sides_as_auth() {
        let (a, i) = run_pair(KEY, Role::Receiver, b"another key entirely", Role::Sender);
        assert_eq!(kind_of(&a.unwrap_err()), Some(Kind::Auth));
        assert_eq!(kind_of(&i.unwrap_err()), Some(Kind::Auth));
    }

    #[test]
    fn same_role_is_a_role_error() {
        let (a, i) = run_pair(KEY, Role::Sender, KEY, Role::Sender);
        assert_eq!(kind_of(&a.unwrap_err()), Some(Kind::Protocol));
        let err = i.unwrap_err();
        assert!(format!("{err:#}").contains("both sides want to be the sender"));
    }

    /// Which nonce a raw initiator puts in its `auth`.
    #[derive(Clone, Copy)]
    enum NonceChoice {
        Fresh,
        Short,
        UpperCase,
        EchoAcceptors,
    }

    /// A raw initiator that answers `hello` with the given `auth` fields.
    fn raw_auth(version: u64, nonce: NonceChoice, mac: &str) -> (Result<SessionKey>, Vec<Message>) {
        let (mut a, mut i) = UnixStream::pair().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let acceptor = std::thread::spawn(move || accept(&mut a, KEY, Role::Receiver, deadline));
        let Some(Message::Hello { nonce: na, .. }) = read_frame(&mut i, 4096).unwrap() else {
            panic!("expected hello");
        };
        let auth = Message::Auth {
            version,
            role: Role::Sender,
            nonce: match nonce {
                NonceChoice::Fresh => "11".repeat(32),
                NonceChoice::Short => "11".repeat(31),
                NonceChoice::UpperCase => "AB".repeat(32),
                NonceChoice::EchoAcceptors => na,
            },
            mac: mac.to_string(),
            user: None,
            features: None,
        };
        i.write_all(&frame::encode(&auth)).unwrap();
        let mut replies = Vec::new();
        while let Ok(Some(message)) = read_frame(&mut i, 4096) {
            replies.push(message);
        }
        (acceptor.join().unwrap(), replies)
    }

    #[test]
    fn acceptor_refuses_bad_auth_without_revealing_its_proof() {
        use NonceChoice::*;
        let cases = [
            (2, Fresh, "00".repeat(32), ErrorCode::Version),
            (1, Short, "00".repeat(32), ErrorCode::Protocol),
            (1, UpperCase, "00".repeat(32), ErrorCode::Protocol),
            (1, EchoAcceptors, "00".repeat(32), ErrorCode::Auth),
            (1, Fresh, "00".repeat(32), ErrorCode::Auth),
            (1, Fresh, "00".repeat(31), ErrorCode::Auth),
            (1, Fresh, "00".repeat(33), ErrorCode::Auth),
        ];
        for (version, nonce, mac, code) in cases {
            let (result, replies) = raw_auth(version, nonce, &mac);
            assert!(result.is_err());
            assert!(
                matches!(replies.as_slice(), [Message::Error { code: c, .. }] if *c == code),
                "{replies:?}, wanted {code}"
            );
        }
    }
}
