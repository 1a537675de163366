//! The mutual HMAC-SHA256 challenge-response of `PROTOCOL.md` section 4, version 2:
//! both nonces, the user name and both feature lists (the context `C`) are bound into
//! `mac_I`, `mac_A` and the session key, so a relay that edits any of them is caught.
//! The result is a [`Negotiated`].
//!
//! Both sides run on the raw stream before any buffering, every read bounded by one
//! absolute deadline. The acceptor checks `auth` in the order of section 4's table,
//! does the same work for an unknown user as for a wrong key, and reveals `mac_A` only
//! to an initiator whose `mac_I` verified. Failures are tagged (`error::Kind`); the
//! key itself never leaves.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::Result;
use hmac::Mac;

use super::message::{self, ErrorCode, MAX_PREAUTH_CONTROL, Message, PROTOCOL_VERSION, Role};
use super::negotiated::{Features, HmacSha256, Negotiated, SessionKey, keyed, verify};
use super::wire::{DeadlineReader, ReadTimeout, net, read_frame};
use crate::error::{Kind, fail, kind_of, peer_error, refused};
use crate::escape::escape;
use crate::key::{self, Key};

/// Nonce length, in bytes.
const NONCE_LEN: usize = 32;
type Nonce = [u8; NONCE_LEN];
/// Most feature names a list may hold.
const MAX_FEATURES: usize = 16;

/// Where an acceptor finds the key of the user an initiator names.
pub(crate) trait KeyStore: Send + Sync {
    /// The key `user` (`""` when the initiator named none) authenticates with, or
    /// `None` when there is no such user.
    fn key_for(&self, user: &str) -> Option<Key>;
}

/// One key for everybody (a receiver, a sender, a single-user server): any valid
/// user name, or none, is accepted, and bound into the MACs either way.
impl KeyStore for Key {
    fn key_for(&self, _user: &str) -> Option<Key> {
        Some(self.clone())
    }
}

/// How this side accepts.
pub(crate) struct Acceptor<'a> {
    pub(crate) role: Role,
    /// Listed in `hello`.
    pub(crate) offered: Features,
    /// Refused with `feature` when not in force (after `mac_I` verified).
    pub(crate) required: Features,
    pub(crate) realm: Option<&'a str>,
    pub(crate) keys: &'a dyn KeyStore,
}

/// How this side initiates.
pub(crate) struct Initiator<'a> {
    pub(crate) role: Role,
    pub(crate) user: Option<&'a str>,
    /// Chosen in `auth` where the acceptor lists them.
    pub(crate) wanted: Features,
    /// Refused with `feature`, in place of `auth`, when the acceptor does not list them.
    pub(crate) required: Features,
    pub(crate) secret: &'a Secret,
    /// A sender that meets a server speaks to it as a client (section 4).
    pub(crate) client_if_server: bool,
}

/// What proves this side: a key, or a password from which the key is derived with
/// the acceptor's realm (section 4). Made with [`Secret::password`], the password
/// is kept only until a handshake derives the key; from then on that key alone is
/// kept (in memory, never on disk), so reconnecting asks and derives nothing.
pub(crate) enum Secret {
    Key(Key),
    Password(std::sync::Mutex<Remembered>),
}

/// A password, or the key a handshake derived from it for one realm and user.
pub(crate) enum Remembered {
    Typed(crate::password::Password),
    Derived {
        realm: String,
        user: String,
        key: Key,
    },
}

impl Secret {
    /// A password, to be derived into a key at the first handshake.
    pub(crate) fn password(password: crate::password::Password) -> Secret {
        Secret::Password(std::sync::Mutex::new(Remembered::Typed(password)))
    }

    fn key_for(&self, realm: &str, user: &str) -> Result<Key> {
        let remembered = match self {
            Secret::Key(key) => return Ok(key.clone()),
            Secret::Password(remembered) => remembered,
        };
        let mut remembered = remembered.lock().expect("no panics while holding the lock");
        let key = match &*remembered {
            Remembered::Typed(password) => password.derive(realm, user)?,
            Remembered::Derived {
                realm: was,
                user: who,
                key,
            } => {
                if was != realm || who != user {
                    anyhow::bail!(
                        "the server's realm is now {}, not {} as when the password was \
                         typed; start again to type it",
                        escape(realm),
                        escape(was)
                    );
                }
                return Ok(key.clone());
            }
        };
        *remembered = Remembered::Derived {
            realm: realm.to_string(),
            user: user.to_string(),
            key: key.clone(),
        };
        Ok(key)
    }

    fn origin(&self) -> String {
        match self {
            Secret::Key(key) => key.origin().to_string(),
            Secret::Password(_) => "the password".into(),
        }
    }
}

/// An `auth` that verified, before `auth_ok` went out: the caller may still refuse
/// it (`busy`: a per-user limit) or confirm it.
pub(crate) struct Verified {
    negotiated: Negotiated,
    proof: String,
}

impl Verified {
    pub(crate) fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Sends `auth_ok`: the handshake is complete.
    pub(crate) fn confirm<S: Write>(self, stream: &mut S) -> Result<Negotiated> {
        send(stream, &Message::AuthOk { mac: self.proof })?;
        Ok(self.negotiated)
    }

    /// Refuses the verified initiator (section 3 allows only `feature` and `busy` here).
    pub(crate) fn refuse<S: Write>(
        self,
        stream: &mut S,
        code: ErrorCode,
        why: &str,
    ) -> anyhow::Error {
        refuse(stream, code, why)
    }
}

/// Whether `(initiator, acceptor)` is a valid pair of roles.
fn valid_pair(initiator: Role, acceptor: Role) -> bool {
    matches!(
        (initiator, acceptor),
        (Role::Sender, Role::Receiver)
            | (Role::Receiver, Role::Sender)
            | (Role::Client, Role::Server)
    )
}

/// The features a role pair requires: a request connection always runs sealed.
fn required_by_roles(initiator: Role) -> Features {
    match initiator {
        Role::Client => Features::of(&[super::negotiated::Feature::Aead]),
        _ => Features::NONE,
    }
}

/// Checks a user name (section 4): 1–64 bytes of `[A-Za-z0-9._-]`, not starting
/// with `.` or `-`.
pub(crate) fn valid_user(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a feature list (section 4): at most 16 distinct names of `[a-z0-9_]{1,32}`.
fn valid_features(names: &[String]) -> bool {
    let distinct = names.iter().collect::<std::collections::HashSet<_>>().len();
    names.len() <= MAX_FEATURES
        && distinct == names.len()
        && names.iter().all(|name| {
            (1..=32).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Checks a realm (section 4): 1–255 bytes, no control characters.
pub(crate) fn valid_realm(realm: &str) -> bool {
    (1..=255).contains(&realm.len()) && !realm.chars().any(char::is_control)
}

/// `C = U || "\n" || FA || "\n" || FI`.
fn context(user: &str, hello_features: &[String], auth_features: &[String]) -> Vec<u8> {
    format!(
        "{user}\n{}\n{}",
        hello_features.join(","),
        auth_features.join(",")
    )
    .into_bytes()
}

fn initiator_mac(key: &[u8], na: &Nonce, ni: &Nonce, c: &[u8]) -> HmacSha256 {
    keyed(key, "xfer/2 initiator", &[na, ni, c])
}

fn acceptor_mac(key: &[u8], na: &Nonce, ni: &Nonce, c: &[u8]) -> HmacSha256 {
    keyed(key, "xfer/2 acceptor", &[na, ni, c])
}

fn session_key(key: &[u8], na: &Nonce, ni: &Nonce, c: &[u8]) -> SessionKey {
    SessionKey::new(
        keyed(key, "xfer/2 session", &[na, ni, c])
            .finalize()
            .into_bytes()
            .into(),
    )
}

fn hex_of(mac: HmacSha256) -> String {
    crate::hex::hex(&mac.finalize().into_bytes())
}

/// A refusal in the handshake: the code the peer is told, and why.
type Refused = (ErrorCode, String);

/// The fields of an `auth`, as the acceptor read them.
struct Auth {
    version: u64,
    role: Role,
    nonce: String,
    user: Option<String>,
    features: Vec<String>,
    mac: String,
}

/// The fields of a `hello`, as the initiator read them.
struct Hello {
    version: u64,
    role: Role,
    nonce: String,
    features: Vec<String>,
    realm: Option<String>,
}

/// The listening side, up to a verified `auth` (steps 1–6 of section 4's table,
/// but for per-user limits, which the caller checks before [`Verified::confirm`]).
pub(crate) fn accept<S>(
    stream: &mut S,
    acceptor: &Acceptor<'_>,
    deadline: Instant,
) -> Result<Verified>
where
    S: Read + Write + ReadTimeout,
{
    let na: Nonce = key::random_bytes()?;
    let offered = acceptor.offered.names();
    send(
        stream,
        &Message::Hello {
            version: PROTOCOL_VERSION,
            role: acceptor.role,
            nonce: crate::hex::hex(&na),
            features: Some(offered.clone()),
            realm: acceptor.realm.map(str::to_string),
        },
    )?;
    let auth = read_auth(stream, deadline)?;
    let ni = check_auth(acceptor, &auth, &na).map_err(|(code, why)| refuse(stream, code, &why))?;
    // Step 5: the MAC, with the same work whether or not the user exists.
    let user = auth.user.as_deref().unwrap_or("");
    let key = match acceptor.keys.key_for(user) {
        Some(key) => key.bytes().to_vec(),
        None => key::random_bytes::<32>()?.to_vec(),
    };
    let c = context(user, &offered, &auth.features);
    if !verify(initiator_mac(&key, &na, &ni, &c), &auth.mac) {
        return Err(refuse(stream, ErrorCode::Auth, "authentication failed"));
    }
    // Step 6: what this initiator must meet.
    let in_force = acceptor.offered.intersect(Features::from_names(
        auth.features.iter().map(String::as_str),
    ));
    let missing = acceptor
        .required
        .with_all(required_by_roles(auth.role))
        .missing_from(in_force);
    if !missing.is_empty() {
        let why = format!("this {} requires {missing}", acceptor.role);
        return Err(refuse(stream, ErrorCode::Feature, &why));
    }
    let session_key = session_key(&key, &na, &ni, &c);
    Ok(Verified {
        negotiated: Negotiated::new(false, acceptor.role, auth.user, in_force, session_key),
        proof: hex_of(acceptor_mac(&key, &na, &ni, &c)),
    })
}

/// Step 1: reads the initiator's `auth` (or its error frame, or a refusal).
fn read_auth<S: Read + Write + ReadTimeout>(stream: &mut S, deadline: Instant) -> Result<Auth> {
    match expect(stream, deadline, "the initiator's auth")? {
        Message::Auth {
            version,
            role,
            nonce,
            user,
            features,
            mac,
        } => Ok(Auth {
            version,
            role,
            nonce,
            user,
            features: features.unwrap_or_default(),
            mac,
        }),
        Message::Error { code, message, .. } => Err(refused_by_peer(code, &message)),
        other => Err(refuse(
            stream,
            ErrorCode::Protocol,
            &format!("expected auth, got {other}"),
        )),
    }
}

/// Steps 1–4: the version, the roles, the user and feature list, the nonce (a
/// reflected one would let the peer replay our own proof). Returns `Ni`.
fn check_auth(acceptor: &Acceptor<'_>, auth: &Auth, na: &Nonce) -> Result<Nonce, Refused> {
    if auth.version != PROTOCOL_VERSION {
        let why = format!(
            "unsupported protocol version {}; this side speaks {PROTOCOL_VERSION} only",
            auth.version
        );
        return Err((ErrorCode::Version, why));
    }
    if !valid_pair(auth.role, acceptor.role) {
        let why = format!("a {} cannot talk to a {}", auth.role, acceptor.role);
        return Err((ErrorCode::Role, why));
    }
    if auth.user.as_deref().is_some_and(|u| !valid_user(u)) {
        let why = "a user name is 1-64 characters of A-Z a-z 0-9 . _ -, not starting with . or -";
        return Err((ErrorCode::Protocol, why.into()));
    }
    if !valid_features(&auth.features) {
        return Err((ErrorCode::Protocol, "malformed feature list".into()));
    }
    match crate::hex::unhex::<NONCE_LEN>(&auth.nonce) {
        Some(ni) if ni != *na => Ok(ni),
        _ => Err((ErrorCode::Auth, "authentication failed".into())),
    }
}

/// The connecting side: answer `hello`, then insist on proof that the acceptor holds
/// the key before anything else is exchanged.
pub(crate) fn initiate<S>(
    stream: &mut S,
    initiator: &Initiator<'_>,
    deadline: Instant,
) -> Result<Negotiated>
where
    S: Read + Write + ReadTimeout,
{
    let hello = read_hello(stream, deadline)?;
    let (role, na, listed) =
        check_hello(initiator, &hello).map_err(|(code, why)| refuse(stream, code, &why))?;
    let chosen = initiator
        .wanted
        .with_all(initiator.required)
        .with_all(required_by_roles(role))
        .intersect(listed)
        .names();
    let ni: Nonce = key::random_bytes()?;
    if ni == na {
        return Err(refuse(
            stream,
            ErrorCode::Auth,
            "the listener echoed our nonce",
        ));
    }
    let user = initiator.user.unwrap_or("");
    let key = initiator
        .secret
        .key_for(hello.realm.as_deref().unwrap_or(""), user)?;
    let c = context(user, &hello.features, &chosen);
    send(
        stream,
        &Message::Auth {
            version: PROTOCOL_VERSION,
            role,
            nonce: crate::hex::hex(&ni),
            user: initiator.user.map(str::to_string),
            features: Some(chosen.clone()),
            mac: hex_of(initiator_mac(key.bytes(), &na, &ni, &c)),
        },
    )?;
    let proof = acceptor_mac(key.bytes(), &na, &ni, &c);
    read_auth_ok(stream, deadline, proof, initiator, &hello)?;
    let in_force = listed.intersect(Features::from_names(chosen.iter().map(String::as_str)));
    let session_key = session_key(key.bytes(), &na, &ni, &c);
    let user = initiator.user.map(str::to_string);
    Ok(Negotiated::new(true, role, user, in_force, session_key))
}

/// Reads the acceptor's `hello` (or its error frame, or a refusal).
fn read_hello<S: Read + Write + ReadTimeout>(stream: &mut S, deadline: Instant) -> Result<Hello> {
    match expect(stream, deadline, LISTENER_HELLO)? {
        Message::Hello {
            version,
            role,
            nonce,
            features,
            realm,
        } => Ok(Hello {
            version,
            role,
            nonce,
            features: features.unwrap_or_default(),
            realm,
        }),
        Message::Error { code, message, .. } => Err(refused_by_peer(code, &message)),
        other => Err(refuse(
            stream,
            ErrorCode::Protocol,
            &format!("expected hello, got {other}"),
        )),
    }
}

/// Checks a `hello` in the order the acceptor checks `auth`, then what this side
/// requires of it; returns the role this side plays, `Na`, and what it lists.
fn check_hello(
    initiator: &Initiator<'_>,
    hello: &Hello,
) -> Result<(Role, Nonce, Features), Refused> {
    if hello.version != PROTOCOL_VERSION {
        let why = format!(
            "the listener speaks protocol version {}; this side speaks {PROTOCOL_VERSION} only",
            hello.version
        );
        return Err((ErrorCode::Version, why));
    }
    let role = match (initiator.role, hello.role) {
        (Role::Sender, Role::Server) if initiator.client_if_server => Role::Client,
        (role, _) => role,
    };
    if role == Role::Client && hello.role == Role::Receiver {
        let why = "the listener is a receiver, not a server: it takes no HOST:PORT:DIR";
        return Err((ErrorCode::Role, why.into()));
    }
    if !valid_pair(role, hello.role) {
        let why = format!("a {} cannot talk to a {}", initiator.role, hello.role);
        return Err((ErrorCode::Role, why));
    }
    if !valid_features(&hello.features) || hello.realm.as_deref().is_some_and(|r| !valid_realm(r)) {
        let why = "malformed feature list or realm in hello";
        return Err((ErrorCode::Protocol, why.into()));
    }
    let Some(na) = crate::hex::unhex::<NONCE_LEN>(&hello.nonce) else {
        return Err((ErrorCode::Auth, "malformed nonce in hello".into()));
    };
    let listed = Features::from_names(hello.features.iter().map(String::as_str));
    let missing = initiator
        .required
        .with_all(required_by_roles(role))
        .missing_from(listed);
    if !missing.is_empty() {
        let why = format!("the {role} requires {missing}, which the listener does not offer");
        return Err((ErrorCode::Feature, why));
    }
    Ok((role, na, listed))
}

/// Reads `auth_ok` and checks the acceptor's proof. To a listener that cannot
/// prove the key, this side closes sending nothing (section 4).
fn read_auth_ok<S: Read + Write + ReadTimeout>(
    stream: &mut S,
    deadline: Instant,
    proof: HmacSha256,
    initiator: &Initiator<'_>,
    hello: &Hello,
) -> Result<()> {
    match expect(stream, deadline, "the listener's auth_ok")? {
        Message::AuthOk { mac } if verify(proof, &mac) => Ok(()),
        Message::AuthOk { .. } => Err(fail(
            Kind::Auth,
            "authentication failed: the listener could not prove it holds the key \
             (wrong key on one side, or an impostor)",
        )),
        Message::Error {
            code: ErrorCode::Auth,
            ..
        } => Err(fail(Kind::Auth, login_refused(initiator, hello))),
        Message::Error { code, message, .. } => Err(refused_by_peer(code, &message)),
        other => Err(refuse(
            stream,
            ErrorCode::Protocol,
            &format!("expected auth_ok, got {other}"),
        )),
    }
}

/// An error frame in place of the peer's handshake message: an `auth` there is a
/// key the peer does not accept; other codes read as anywhere else.
fn refused_by_peer(code: ErrorCode, message: &str) -> anyhow::Error {
    match code {
        ErrorCode::Auth => fail(
            Kind::Auth,
            "authentication failed: the peer refused our key (wrong key on one side?)",
        ),
        code => peer_error(code, message),
    }
}

/// What an `auth` refusal tells the user: who this side logged in as (or that it
/// gave no name), with what, and the next step. A server's users each have a key
/// of their own, and a password's key depends on the realm the server announced.
fn login_refused(initiator: &Initiator<'_>, hello: &Hello) -> String {
    let origin = initiator.secret.origin();
    let realm = match hello.realm.as_deref() {
        Some(realm) => format!("realm {:?}", crate::escape::escape(realm)),
        None => "no realm (an empty one)".to_string(),
    };
    let password = matches!(initiator.secret, Secret::Password(_));
    let mut text = match (hello.role == Role::Server, initiator.user, password) {
        (true, Some(user), true) => format!(
            "the server refused user {user} with the password, for this server's {realm} \
             (wrong password, or the users file's key was not made with \
             `xfer passwd {user} --realm {}`)",
            crate::escape::escape(hello.realm.as_deref().unwrap_or(""))
        ),
        (true, Some(user), false) => format!(
            "the server refused user {user} with {origin} (wrong key, or no user {user} \
             there); if {user} logs in with a password, add --password"
        ),
        (true, None, _) => format!(
            "the server refused {origin} with no user name (no --user given): a wrong key, \
             or a server with users, each of whom has a key of their own: then add --user \
             NAME (and --password if NAME logs in with a password)"
        ),
        (false, _, true) => format!(
            "the listener refused the password, for its {realm} (wrong password on one side?)"
        ),
        (false, _, false) => format!("the listener refused {origin} (wrong key on one side?)"),
    };
    if !password && std::env::var_os(crate::password::PASSWORD_ENV).is_some() {
        text.push_str("; $XFER_PASSWORD is set but used only with --password: add --password");
    }
    format!("authentication failed: {text}")
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
        // At the deadline the acceptor closes without a frame (section 4).
        Err(_) if Instant::now() >= deadline => Err(fail(Kind::Network, too_late(what))),
        // A malformed or oversized frame is answered `protocol` before we close.
        Err(err) if kind_of(&err) == Some(Kind::Protocol) => {
            let _ = send(
                stream,
                &Message::error(ErrorCode::Protocol, format!("{err:#}")),
            );
            Err(err)
        }
        Err(err) => Err(err),
    }
}

/// What the initiator waits for first: the listener speaks first (section 4).
const LISTENER_HELLO: &str = "the listener's hello";

/// Why a handshake ran out of time, waiting for `what`. A listener that never says
/// hello is most likely another service waiting for us to speak (HTTP).
fn too_late(what: &str) -> String {
    if what == LISTENER_HELLO {
        "the peer sent nothing xfer understands before the handshake timeout (--handshake-timeout): is an xfer receiver or server \
         listening there, or another service (wrong port?)"
            .into()
    } else {
        format!("the peer did not complete the handshake in time (waiting for {what})")
    }
}

fn send<S: Write>(stream: &mut S, message: &Message) -> Result<()> {
    stream.write_all(&message::encode(message)).map_err(net)
}

/// Tells the peer why we stop (best effort: it may be gone), and returns the error
/// for our side, tagged by what the code means.
/// The error carries `code` (`error::wire_code`), which tells the caller that the
/// peer was told, so that it lingers before it closes (section 3).
fn refuse<S: Write>(stream: &mut S, code: ErrorCode, why: &str) -> anyhow::Error {
    let _ = send(stream, &Message::error(code, why));
    match code {
        ErrorCode::Auth if !why.starts_with("authentication failed") => {
            refused(code, format!("authentication failed: {why}"))
        }
        _ => refused(code, why),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::negotiated::Feature;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    const KEY: &[u8] = b"correct horse battery staple";

    fn vector_nonces() -> (Nonce, Nonce) {
        let na: Nonce = std::array::from_fn(|i| i as u8);
        let ni: Nonce = std::array::from_fn(|i| i as u8 + 0x20);
        (na, ni)
    }

    fn vector_context(vector: char) -> Vec<u8> {
        match vector {
            'A' => context("", &[], &[]),
            _ => context(
                "alice",
                &["aead".into(), "blake3".into(), "zstd".into()],
                &["blake3".into(), "aead".into()],
            ),
        }
    }

    /// `Ks` of test vector A or B.
    pub(crate) fn vector_session_key(vector: char) -> SessionKey {
        let (na, ni) = vector_nonces();
        session_key(KEY, &na, &ni, &vector_context(vector))
    }

    #[test]
    fn handshake_macs_match_vector_a() {
        let (na, ni) = vector_nonces();
        let c = vector_context('A');
        assert_eq!(c, b"\n\n");
        assert_eq!(
            hex_of(initiator_mac(KEY, &na, &ni, &c)),
            "8683e208edca1e864bfb96d28a781c7ff1d5571d7ca04c28170559e9e2e05f93"
        );
        assert_eq!(
            hex_of(acceptor_mac(KEY, &na, &ni, &c)),
            "ee7625cf706383dc0def64ee12c791a0a6896332ab090b31b87b78b69cb40c0e"
        );
        assert_eq!(
            crate::hex::hex(vector_session_key('A').bytes()),
            "10778f85122eeae399886248699d6cc50aff22972a803a65ac17b801c91288d0"
        );
    }

    #[test]
    fn handshake_macs_match_vector_b() {
        let (na, ni) = vector_nonces();
        let c = vector_context('B');
        assert_eq!(c, b"alice\naead,blake3,zstd\nblake3,aead");
        assert_eq!(
            hex_of(initiator_mac(KEY, &na, &ni, &c)),
            "7086731cc62bcdc68205b503036c248fb4e7e82b8e5b54406256c94e9da0bb25"
        );
        assert_eq!(
            hex_of(acceptor_mac(KEY, &na, &ni, &c)),
            "bec9e6011836e7c52e0fc821fd7aededdfa6510aa95b37b87d371a6c23820ca5"
        );
        assert_eq!(
            crate::hex::hex(vector_session_key('B').bytes()),
            "f18212535663ed800c035c9996697600f714a0cc308d6c18c9c800b75c23ac01"
        );
        let in_force = Features::from_names(["aead", "blake3", "zstd"])
            .intersect(Features::from_names(["blake3", "aead"]));
        assert_eq!(in_force.names(), ["aead", "blake3"]);
    }

    fn key(bytes: &[u8]) -> Key {
        Key::from_bytes(bytes.to_vec(), "a test key")
    }

    struct Side {
        role: Role,
        key: &'static [u8],
        features: Features,
        required: Features,
    }

    fn side(role: Role, key: &'static [u8]) -> Side {
        Side {
            role,
            key,
            features: Features::NONE,
            required: Features::NONE,
        }
    }

    fn run_pair(acceptor: Side, initiator: Side) -> (Result<Negotiated>, Result<Negotiated>) {
        let (mut a, mut i) = UnixStream::pair().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let accepting = std::thread::spawn(move || {
            let store = key(acceptor.key);
            let policy = Acceptor {
                role: acceptor.role,
                offered: acceptor.features,
                required: acceptor.required,
                realm: Some("test realm"),
                keys: &store,
            };
            accept(&mut a, &policy, deadline).and_then(|verified| verified.confirm(&mut a))
        });
        let secret = Secret::Key(key(initiator.key));
        let policy = Initiator {
            role: initiator.role,
            user: Some("alice"),
            wanted: initiator.features,
            required: initiator.required,
            secret: &secret,
            client_if_server: true,
        };
        let initiated = initiate(&mut i, &policy, deadline);
        drop(i);
        (accepting.join().unwrap(), initiated)
    }

    #[test]
    fn both_sides_derive_the_same_session_key_and_features() {
        let all = Features::of(&Feature::ALL);
        let (a, i) = run_pair(
            Side {
                features: all,
                ..side(Role::Receiver, KEY)
            },
            Side {
                features: Features::of(&[Feature::Blake3]),
                ..side(Role::Sender, KEY)
            },
        );
        let (a, i) = (a.unwrap(), i.unwrap());
        assert_eq!(a.session_key().bytes(), i.session_key().bytes());
        assert_eq!(a.features(), i.features());
        assert_eq!(a.features().names(), ["blake3"]);
        assert_eq!(a.user(), Some("alice"));
        let (a, i) = run_pair(side(Role::Sender, KEY), side(Role::Receiver, KEY));
        assert_eq!(
            a.unwrap().session_key().bytes(),
            i.unwrap().session_key().bytes()
        );
    }

    #[test]
    fn a_sender_meeting_a_server_becomes_a_client_with_aead() {
        let (a, i) = run_pair(
            Side {
                features: Features::of(&Feature::ALL),
                ..side(Role::Server, KEY)
            },
            side(Role::Sender, KEY),
        );
        let (a, i) = (a.unwrap(), i.unwrap());
        assert_eq!(i.role(), Role::Client);
        assert!(a.has(Feature::Aead) && i.has(Feature::Aead));
    }

    #[test]
    fn wrong_key_fails_on_both_sides_as_auth() {
        let (a, i) = run_pair(
            side(Role::Receiver, KEY),
            side(Role::Sender, b"another key"),
        );
        assert_eq!(kind_of(&a.unwrap_err()), Some(Kind::Auth));
        let err = i.unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Auth));
        assert!(format!("{err:#}").contains("a test key"), "{err:#}");
    }

    #[test]
    fn invalid_role_pairs_are_role_errors() {
        for (acceptor, initiator) in [
            (Role::Sender, Role::Sender),
            (Role::Receiver, Role::Client),
            (Role::Server, Role::Receiver),
        ] {
            let (a, i) = run_pair(side(acceptor, KEY), side(initiator, KEY));
            assert_eq!(kind_of(&a.unwrap_err()), Some(Kind::Protocol));
            let err = format!("{:#}", i.unwrap_err());
            assert!(
                err.contains("cannot talk to") || err.contains("not a server"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_required_feature_the_other_side_lacks_is_refused_on_both_sides() {
        // The initiator requires what the acceptor does not list: refused before auth.
        let (a, i) = run_pair(
            side(Role::Receiver, KEY),
            Side {
                required: Features::of(&[Feature::Blake3]),
                ..side(Role::Sender, KEY)
            },
        );
        assert_eq!(kind_of(&i.unwrap_err()), Some(Kind::Incompatible));
        assert_eq!(kind_of(&a.unwrap_err()), Some(Kind::Incompatible));
        // The acceptor requires what the initiator did not choose: refused after mac_I.
        let (a, i) = run_pair(
            Side {
                features: Features::of(&Feature::ALL),
                required: Features::of(&[Feature::Aead]),
                ..side(Role::Receiver, KEY)
            },
            side(Role::Sender, KEY),
        );
        assert_eq!(kind_of(&a.unwrap_err()), Some(Kind::Incompatible));
        let err = i.unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Incompatible));
        assert!(format!("{err:#}").contains("requires aead"), "{err:#}");
        // What the initiator requires it also chooses, whether or not it was wanted.
        let (a, i) = run_pair(
            Side {
                features: Features::of(&Feature::ALL),
                ..side(Role::Receiver, KEY)
            },
            Side {
                required: Features::of(&[Feature::Aead]),
                ..side(Role::Sender, KEY)
            },
        );
        assert!(a.unwrap().has(Feature::Aead));
        assert!(i.unwrap().has(Feature::Aead), "required, so in force");
    }

    #[test]
    fn user_names_and_feature_lists_are_checked() {
        for good in ["alice", "a", "Bob_2.x-y", &"u".repeat(64)] {
            assert!(valid_user(good), "{good}");
        }
        for bad in ["", ".alice", "-x", "al ice", "é", &"u".repeat(65), "a/b"] {
            assert!(!valid_user(bad), "{bad}");
        }
        assert!(valid_features(&["aead".into(), "zstd_2".into()]));
        assert!(!valid_features(&["aead".into(), "aead".into()]));
        assert!(!valid_features(&["Aead".into()]));
        assert!(!valid_features(&["".into()]));
        assert!(!valid_features(
            &(0..17).map(|i| format!("f{i}")).collect::<Vec<_>>()
        ));
        assert!(valid_realm("files.example.org") && !valid_realm("") && !valid_realm("a\nb"));
    }

    /// A raw initiator that answers `hello` with a hand-made `auth` payload.
    fn raw_auth(payload: impl FnOnce(&str) -> String) -> (Result<Verified>, Vec<Message>) {
        let (mut a, mut i) = UnixStream::pair().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let acceptor = std::thread::spawn(move || {
            let store = key(KEY);
            let policy = Acceptor {
                role: Role::Receiver,
                offered: Features::of(&Feature::ALL),
                required: Features::NONE,
                realm: None,
                keys: &store,
            };
            accept(&mut a, &policy, deadline)
        });
        let Some(Message::Hello { nonce: na, .. }) = read_frame(&mut i, 4096).unwrap() else {
            panic!("expected hello");
        };
        let body = payload(&na);
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        i.write_all(&frame).unwrap();
        let mut replies = Vec::new();
        while let Ok(Some(message)) = read_frame(&mut i, 4096) {
            replies.push(message);
        }
        (acceptor.join().unwrap(), replies)
    }

    #[test]
    fn acceptor_answers_each_bad_auth_in_the_order_of_the_table() {
        let nonce = "11".repeat(32);
        let mac = "00".repeat(32);
        type Case<'a> = (Box<dyn Fn(&str) -> String + 'a>, ErrorCode);
        let cases: Vec<Case> = vec![
            (
                Box::new(|_| r#"{"type":"hello","version":2}"#.into()),
                ErrorCode::Protocol,
            ),
            (
                Box::new(|_| {
                    format!(
                        r#"{{"type":"auth","version":1,"role":"sender","nonce":"{nonce}","mac":"{mac}"}}"#
                    )
                }),
                ErrorCode::Version,
            ),
            (
                Box::new(|_| {
                    format!(
                        r#"{{"type":"auth","version":2,"role":"client","nonce":"{nonce}","mac":"{mac}"}}"#
                    )
                }),
                ErrorCode::Role,
            ),
            (
                Box::new(|_| {
                    format!(
                        r#"{{"type":"auth","version":2,"role":"sender","nonce":"{nonce}","user":".x","mac":"{mac}"}}"#
                    )
                }),
                ErrorCode::Protocol,
            ),
            (
                Box::new(|_| {
                    format!(
                        r#"{{"type":"auth","version":2,"role":"sender","nonce":"{nonce}","features":["A"],"mac":"{mac}"}}"#
                    )
                }),
                ErrorCode::Protocol,
            ),
            (
                Box::new(|_| {
                    format!(
                        r#"{{"type":"auth","version":2,"role":"sender","nonce":"{}","mac":"{mac}"}}"#,
                        "AB".repeat(32)
                    )
                }),
                ErrorCode::Auth,
            ),
            (
                Box::new(|na| {
                    format!(
                        r#"{{"type":"auth","version":2,"role":"sender","nonce":"{na}","mac":"{mac}"}}"#
                    )
                }),
                ErrorCode::Auth,
            ),
            (
                Box::new(|_| {
                    format!(
                        r#"{{"type":"auth","version":2,"role":"sender","nonce":"{nonce}","mac":"{mac}"}}"#
                    )
                }),
                ErrorCode::Auth,
            ),
            (
                Box::new(|_| {
                    format!(
                        r#"{{"type":"auth","version":2,"role":"sender","nonce":"{nonce}","mac":"{}"}}"#,
                        "00".repeat(31)
                    )
                }),
                ErrorCode::Auth,
            ),
        ];
        for (payload, code) in cases {
            let (result, replies) = raw_auth(payload);
            assert!(result.is_err());
            assert!(
                matches!(replies.as_slice(), [Message::Error { code: c, .. }] if *c == code),
                "{replies:?}, wanted {code}"
            );
        }
    }
}
