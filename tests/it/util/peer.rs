//! An independent implementation of the xfer wire protocol, version 2, written from
//! PROTOCOL.md alone, so that end-to-end tests can put a peer the binary did not
//! write on the other end of a socket: a well-behaved one to prove the two
//! interoperate, or a hostile one that sends exactly the bytes a test asks for.
//! It shares no code with the crate (it never uses `xfer::...`): a misreading of
//! the specification in one cannot hide in the other. Everything is blocking on a
//! `std::net::TcpStream`, and every read is bounded by a deadline, so a test that
//! goes wrong fails instead of hanging.
//!
//! Layers, bottom up: pure helpers (hex, MACs, hashes, keys, sealing, zstd
//! payloads, path checks, strict JSON) that the test vectors exercise one by one;
//! then [`Peer`], which owns one connection (frames and sealing, the handshake of
//! section 4, the transfer of section 5 as sender and as receiver, the requests
//! of section 9 as a client); and [`server`], a minimal server. High-level calls
//! behave as the specification says (they answer a broken frame with the error
//! frame it calls for); the raw calls beneath them send whatever they are given.

pub mod server;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use sha2::Sha256;

/// The protocol version this module speaks.
pub const VERSION: u64 = 2;
/// Largest control frame before authentication succeeds (section 2), in bytes.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;
/// Largest frame payload after authentication, plaintext, in bytes (section 2).
pub const MAX_FRAME: usize = 16 << 20;
/// Bytes an AES-256-GCM tag adds to a sealed frame (section 10).
pub const TAG_LEN: usize = 16;
/// How long any one frame may take to arrive before a read gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// The bound on a whole handshake, on either side (section 4).
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a side that closes after an error frame keeps reading (section 3).
pub const DRAIN_TIME: Duration = Duration::from_secs(1);
/// The first four bytes of every zstd frame (RFC 8878).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Content bytes per data frame this peer sends unless told otherwise.
pub const DEFAULT_CHUNK: usize = 256 << 10;
/// Entries per offer, plan or listing frame this peer sends unless told otherwise.
pub const DEFAULT_FRAME_ENTRIES: usize = 256;
/// Every feature of version 2 (section 7).
pub const ALL_FEATURES: [&str; 3] = ["aead", "blake3", "zstd"];

type HmacSha256 = Hmac<Sha256>;

/// What the high-level calls return.
pub type PeerResult<T> = Result<T, PeerError>;

// ---- Errors --------------------------------------------------------------------

/// An error frame this side sends: a `code` of section 3 and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The code, e.g. `protocol`.
    pub code: String,
    /// What went wrong, peer-supplied text already escaped.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// Why a peer operation did not go as the protocol says.
#[derive(Debug)]
pub enum PeerError {
    /// The socket failed, or a read passed its deadline (`TimedOut` or `WouldBlock`).
    Io(io::Error),
    /// The peer closed (or reset) the connection between two frames.
    Closed,
    /// A length prefix over the limit in force; nothing was allocated for it.
    TooLarge { len: usize, limit: usize },
    /// A sealed frame did not open (wrong key, counter, tag or length).
    Unsealed,
    /// A frame or field breaks PROTOCOL.md; the text says how.
    Malformed(String),
    /// The peer sent an error frame where this side expected something else.
    Remote(Value),
    /// A well-formed frame of a type this side did not expect here.
    Unexpected(Value),
    /// A MAC from the peer did not verify; the name says which (`mac_A`, `mac_plan`, ...).
    BadMac(&'static str),
    /// This side refused the peer (with the error frame shown, or silently) and closed.
    Refused(Refusal),
}

impl PeerError {
    /// The `code` of the peer's error frame, if that is what this is.
    pub fn remote_code(&self) -> Option<&str> {
        match self {
            PeerError::Remote(frame) => frame.get("code").and_then(Value::as_str),
            _ => None,
        }
    }

    /// The code this side refused the peer with, if that is what this is.
    pub fn refused_code(&self) -> Option<&str> {
        match self {
            PeerError::Refused(refusal) => Some(&refusal.code),
            _ => None,
        }
    }

    /// Whether this says the connection is gone: a close, a reset, a broken pipe.
    pub fn is_closed(&self) -> bool {
        match self {
            PeerError::Closed => true,
            PeerError::Io(err) => matches!(
                err.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Io(err) => write!(f, "i/o: {err}"),
            PeerError::Closed => f.write_str("the peer closed the connection"),
            PeerError::TooLarge { len, limit } => {
                write!(f, "a frame of {len} bytes, over the limit of {limit}")
            }
            PeerError::Unsealed => f.write_str("a sealed frame did not open"),
            PeerError::Malformed(why) => write!(f, "malformed: {why}"),
            PeerError::Remote(frame) => write!(f, "the peer sent an error: {frame}"),
            PeerError::Unexpected(frame) => write!(f, "unexpected frame: {frame}"),
            PeerError::BadMac(which) => write!(f, "{which} did not verify"),
            PeerError::Refused(r) => write!(f, "refused the peer: {}: {}", r.code, r.message),
        }
    }
}

impl std::error::Error for PeerError {}

impl From<io::Error> for PeerError {
    fn from(err: io::Error) -> PeerError {
        PeerError::Io(err)
    }
}

// ---- Hex, MACs, hashes, keys ---------------------------------------------------

/// Lowercase hex, two digits per byte (section 2).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex strictly as section 2 says: an even number of lowercase hex digits.
/// `None` for anything else (uppercase included).
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    digits
        .chunks(2)
        .map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?))
        .collect()
}

/// [`unhex`] of exactly `N` bytes: a nonce (32) or a MAC (32).
pub fn unhex_n<const N: usize>(text: &str) -> Option<[u8; N]> {
    unhex(text)?.try_into().ok()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `sent` is the lowercase hex of exactly `expected`, compared in constant time.
pub fn hex_matches(sent: Option<&str>, expected: &[u8]) -> bool {
    sent.and_then(unhex)
        .is_some_and(|got| ct_eq(&got, expected))
}

/// `HMAC-SHA256(key, label || 0x00 || parts...)`, the shape of every MAC and key here.
pub fn labelled_mac(key: &[u8], label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(label.as_bytes());
    mac.update(&[0]);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The content hash of section 5: MD5, or BLAKE3-256 when `blake3` is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    /// 16 bytes; the default.
    Md5,
    /// 32 bytes; when both feature lists name `blake3`.
    Blake3,
}

impl HashKind {
    /// The hash a session with these features in force uses.
    pub fn for_features(in_force: &[String]) -> HashKind {
        if in_force.iter().any(|f| f == "blake3") {
            HashKind::Blake3
        } else {
            HashKind::Md5
        }
    }

    /// The hash of `data`, raw bytes.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashKind::Md5 => Md5::digest(data).to_vec(),
            HashKind::Blake3 => blake3::hash(data).as_bytes().to_vec(),
        }
    }
}

/// `K` for a password (section 4): the lowercase hex (64 ASCII bytes) of
/// Argon2id(password, "xfer/2 password" 0x00 REALM 0x00 U), v0x13, t=3, m=64 MiB, p=4.
/// Slow by design (a fraction of a second optimised, seconds in a debug build).
pub fn password_key(password: &str, realm: &str, user: &str) -> Vec<u8> {
    let mut salt = b"xfer/2 password\0".to_vec();
    salt.extend_from_slice(realm.as_bytes());
    salt.push(0);
    salt.extend_from_slice(user.as_bytes());
    let params = argon2::Params::new(65_536, 3, 4, Some(32)).expect("the parameters of section 4");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .expect("Argon2id accepts a salt of 17 bytes or more");
    hex(&out).into_bytes()
}

/// `frame` as JSON with its `type` member first, as section 19 wants a packed
/// frame's JSON to begin (serde_json writes members in key order).
pub fn type_first(frame: &Value) -> Vec<u8> {
    let mut rest = frame.clone();
    let kind = rest
        .as_object_mut()
        .and_then(|members| members.remove("type"))
        .expect("a control frame has a type");
    let rest = serde_json::to_string(&rest).expect("a Value serialises");
    let opening = format!(r#"{{"type":{kind}"#);
    match rest.as_str() {
        "{}" => format!("{opening}}}"),
        _ => format!("{opening},{}", &rest[1..]),
    }
    .into_bytes()
}

/// Unpacks a packed list frame as section 19 says: one zstd frame declaring at most
/// 16 MiB, nothing after it, exactly that size, and a list frame's opening.
pub fn unpack_list_frame(packed: &[u8]) -> Result<Vec<u8>, String> {
    use zstd::zstd_safe;
    let declared = match zstd_safe::get_frame_content_size(packed) {
        Ok(Some(size)) if size <= 1 << 24 => size as usize,
        other => return Err(format!("a packed frame declaring {other:?}")),
    };
    if zstd_safe::find_frame_compressed_size(packed) != Ok(packed.len()) {
        return Err("bytes after the packed frame, or a truncated one".into());
    }
    let json = zstd::bulk::decompress(packed, declared).map_err(|err| err.to_string())?;
    let openings = ["offer", "plan", "deleted", "listing"].map(|t| format!(r#"{{"type":"{t}","#));
    match json.len() == declared && openings.iter().any(|o| json.starts_with(o.as_bytes())) {
        true => Ok(json),
        false => Err("a packed frame that is no list frame".into()),
    }
}

/// `mac_offer = HMAC(Ks, "xfer/2 offer" 0x00 || u64be(t) || W)`; `W` from [`transcript_bytes`].
pub fn mac_offer(ks: &[u8], t: u64, w: &[u8]) -> [u8; 32] {
    labelled_mac(ks, "xfer/2 offer", &[&t.to_be_bytes(), w])
}

/// `mac_plan = HMAC(Ks, "xfer/2 plan" 0x00 || u64be(t) || W)`.
pub fn mac_plan(ks: &[u8], t: u64, w: &[u8]) -> [u8; 32] {
    labelled_mac(ks, "xfer/2 plan", &[&t.to_be_bytes(), w])
}

/// `mac_deleted = HMAC(Ks, "xfer/2 deleted" 0x00 || u64be(t) || W)` (section 17.3).
pub fn mac_deleted(ks: &[u8], t: u64, w: &[u8]) -> [u8; 32] {
    labelled_mac(ks, "xfer/2 deleted", &[&t.to_be_bytes(), w])
}

/// `mac_done = HMAC(Ks, "xfer/2 done" 0x00 || u64be(t) || u64be(i) || u64be(N) || h || path)`.
pub fn mac_done(ks: &[u8], t: u64, index: u64, size: u64, hash: &[u8], path: &str) -> [u8; 32] {
    file_mac(ks, "xfer/2 done", t, index, size, hash, path)
}

/// `mac_ok = HMAC(Ks, "xfer/2 ok" 0x00 || u64be(t) || u64be(i) || u64be(N) || h || path)`.
pub fn mac_ok(ks: &[u8], t: u64, index: u64, size: u64, hash: &[u8], path: &str) -> [u8; 32] {
    file_mac(ks, "xfer/2 ok", t, index, size, hash, path)
}

fn file_mac(ks: &[u8], label: &str, t: u64, i: u64, n: u64, h: &[u8], path: &str) -> [u8; 32] {
    labelled_mac(
        ks,
        label,
        &[
            &t.to_be_bytes(),
            &i.to_be_bytes(),
            &n.to_be_bytes(),
            h,
            path.as_bytes(),
        ],
    )
}

/// `W` of section 5: each payload preceded by its length as u32be, concatenated.
pub fn transcript_bytes<P: AsRef<[u8]>>(payloads: &[P]) -> Vec<u8> {
    payloads
        .iter()
        .flat_map(|p| frame_bytes(p.as_ref()))
        .collect()
}

/// One unsealed frame as it goes on the wire: u32be(len) || payload.
pub fn frame_bytes(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a test frame under 4 GiB");
    [len.to_be_bytes().as_slice(), payload].concat()
}

// ---- Sealing (section 10) ------------------------------------------------------

/// `(k_I, k_A)` from `Ks`: the keys that seal what the initiator and the acceptor send.
pub fn aead_keys(ks: &[u8]) -> ([u8; 32], [u8; 32]) {
    (
        labelled_mac(ks, "xfer/2 key initiator", &[]),
        labelled_mac(ks, "xfer/2 key acceptor", &[]),
    )
}

fn gcm_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

/// Frame number `n` with plaintext `payload`, sealed under `key` as it goes on the
/// wire: `u32be(L) || AES-256-GCM(key, 0^4 || u64be(n), aad = u32be(L), payload)`.
pub fn seal_frame(key: &[u8; 32], n: u64, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + TAG_LEN).expect("a test frame under 4 GiB");
    let prefix = len.to_be_bytes();
    let cipher = Aes256Gcm::new_from_slice(key).expect("a 32-byte key");
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&gcm_nonce(n)),
            Payload {
                msg: payload,
                aad: &prefix,
            },
        )
        .expect("AES-GCM seals anything under 64 GiB");
    [prefix.as_slice(), &sealed].concat()
}

/// Opens frame number `n` (its prefix and body as read); `None` when it does not verify.
pub fn open_frame(key: &[u8; 32], n: u64, prefix: [u8; 4], body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < TAG_LEN || u32::from_be_bytes(prefix) as usize != body.len() {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(key).expect("a 32-byte key");
    cipher
        .decrypt(
            Nonce::from_slice(&gcm_nonce(n)),
            Payload {
                msg: body,
                aad: &prefix,
            },
        )
        .ok()
}

// ---- Compressed data frames (section 11) --------------------------------------

/// How this peer encodes the data frames it sends while `zstd` is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compress {
    /// Flag 0 on every frame.
    Never,
    /// Flag 1 (one zstd frame with its size) on every frame, even where it does not pay.
    Always,
    /// Flag 1 where the zstd frame is smaller than the bytes, else flag 0.
    Auto,
}

/// A data-frame payload with flag 0: the bytes, raw.
pub fn data_raw(bytes: &[u8]) -> Vec<u8> {
    [&[0u8][..], bytes].concat()
}

/// A data-frame payload with flag 1: one zstd frame that declares its size.
pub fn data_zstd(bytes: &[u8]) -> Vec<u8> {
    [&[1u8][..], &zstd_frame(bytes)].concat()
}

/// One zstd frame of `bytes` from the zstd library, its content size declared.
pub fn zstd_frame(bytes: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(bytes, 3).expect("zstd compresses in memory")
}

/// One zstd frame of `bytes` from the zstd library whose header declares no
/// content size: a frame section 11 refuses.
pub fn zstd_frame_unsized(bytes: &[u8]) -> Vec<u8> {
    let mut compressor = zstd::bulk::Compressor::new(3).expect("a zstd context");
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
        .expect("contentSizeFlag is a valid parameter");
    compressor
        .compress(bytes)
        .expect("zstd compresses in memory")
}

/// Largest block a hand-made frame uses (zstd's block size limit), in bytes.
const ZSTD_BLOCK: usize = 128 << 10;

/// A zstd frame written by hand from raw blocks, whose header declares `declared`
/// as its content size (`None`: no size field) whatever `content` really holds:
/// the way to craft frames that lie. Window 128 KiB, no checksum, no dictionary.
pub fn zstd_frame_by_hand(declared: Option<u64>, content: &[u8]) -> Vec<u8> {
    let mut out = zstd_header(declared);
    let blocks: Vec<&[u8]> = if content.is_empty() {
        vec![&[]]
    } else {
        content.chunks(ZSTD_BLOCK).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        let last = u32::from(i + 1 == blocks.len());
        let header = last | (block.len() as u32) << 3; // block type 0: raw
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(block);
    }
    out
}

/// A zstd frame of RLE blocks that expands to `actual` zero bytes from a few bytes
/// per 128 KiB, declaring `declared` (a decompression bomb when they differ).
pub fn zstd_rle_bomb(declared: Option<u64>, actual: u64) -> Vec<u8> {
    let mut out = zstd_header(declared);
    let mut left = actual;
    loop {
        let size = left.min(ZSTD_BLOCK as u64);
        left -= size;
        let last = u32::from(left == 0);
        let header = last | 1 << 1 | (size as u32) << 3; // block type 1: RLE
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
        if left == 0 {
            return out;
        }
    }
}

fn zstd_header(declared: Option<u64>) -> Vec<u8> {
    let mut out = ZSTD_MAGIC.to_vec();
    // Frame header descriptor: FCS field of 8 bytes (or none), not single-segment,
    // no checksum, no dictionary; then a window descriptor of 2^17 bytes.
    out.push(if declared.is_some() { 0xc0 } else { 0x00 });
    out.push(7 << 3);
    if let Some(size) = declared {
        out.extend_from_slice(&size.to_le_bytes());
    }
    out
}

/// What a zstd frame's header says about its content size, read by hand (RFC 8878
/// section 3.1.1.1): `Ok(None)` when it declares none; `Err` when the bytes do not
/// start a frame section 11 allows (another magic, a skippable frame, a dictionary,
/// a reserved bit set, a header cut short).
pub fn zstd_declared_size(frame: &[u8]) -> Result<Option<u64>, String> {
    if frame.get(..4) != Some(&ZSTD_MAGIC[..]) {
        return Err("not a zstd frame (magic)".into());
    }
    let fhd = *frame.get(4).ok_or("zstd header cut short")?;
    if fhd & 0x08 != 0 {
        return Err("zstd header: reserved bit set".into());
    }
    let single_segment = fhd & 0x20 != 0;
    let dict_len = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = 5 + usize::from(!single_segment);
    let dict = frame
        .get(at..at + dict_len)
        .ok_or("zstd header cut short")?;
    if dict.iter().any(|&b| b != 0) {
        return Err("zstd frame with a dictionary".into());
    }
    at += dict_len;
    let fcs = frame.get(at..at + fcs_len).ok_or("zstd header cut short")?;
    let mut size = [0u8; 8];
    size[..fcs_len].copy_from_slice(fcs);
    let size = u64::from_le_bytes(size);
    Ok(match fcs_len {
        0 => None,
        2 => Some(size + 256),
        _ => Some(size),
    })
}

/// Decodes one non-empty data-frame payload while `zstd` is in force (section 11):
/// flag 0 gives the bytes; flag 1 exactly one zstd frame that declares a size of
/// at most 16 MiB, nothing after it, decompressing to exactly that size into a
/// buffer of that size (a bomb costs no more). `Err` is what a receiver answers `protocol`.
pub fn decode_data(payload: &[u8]) -> Result<Vec<u8>, String> {
    match payload.split_first() {
        None => Err("an empty payload ends a file and has no flag".into()),
        Some((0, bytes)) => Ok(bytes.to_vec()),
        Some((1, frame)) => unzstd(frame),
        Some((flag, _)) => Err(format!("data frame flag {flag}")),
    }
}

fn unzstd(frame: &[u8]) -> Result<Vec<u8>, String> {
    let declared = zstd_declared_size(frame)?.ok_or("zstd frame without a declared size")?;
    if declared > MAX_FRAME as u64 {
        return Err(format!("zstd frame declares {declared} bytes"));
    }
    let len = zstd::zstd_safe::find_frame_compressed_size(frame)
        .map_err(|code| format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))?;
    if len != frame.len() {
        return Err(format!("{} bytes after the zstd frame", frame.len() - len));
    }
    let mut out = Vec::with_capacity(declared as usize);
    zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(frame, &mut out))
        .map_err(|err| format!("zstd: {err}"))?;
    if out.len() as u64 != declared {
        return Err(format!(
            "zstd frame of {} bytes declared {declared}",
            out.len()
        ));
    }
    Ok(out)
}

// ---- Names and paths -----------------------------------------------------------

/// Unicode category Cc: U+0000–U+001F and U+007F–U+009F.
pub fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Unicode category Cf (format characters: bidi overrides, zero-width ones, ...).
pub fn is_format(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}'
        | '\u{890}'..='\u{891}' | '\u{8e2}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{110bd}' | '\u{110cd}'
        | '\u{13430}'..='\u{1343f}' | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0001}' | '\u{e0020}'..='\u{e007f}')
}

/// Peer-supplied text made safe to print: control characters escaped (section 3).
pub fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if is_control(c) || is_format(c) {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Section 6: `Ok` when a peer may name `path`, else why it is `bad_path`.
/// `""` (the home itself) passes only when `allow_home`.
pub fn check_path(path: &str, allow_home: bool) -> Result<(), String> {
    if path.is_empty() {
        return if allow_home {
            Ok(())
        } else {
            Err("empty path".into())
        };
    }
    if path.len() > 4096 {
        return Err("path longer than 4096 bytes".into());
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err("drive prefix".into());
    }
    if let Some(c) = path
        .chars()
        .find(|&c| c == '\\' || is_control(c) || is_format(c))
    {
        return Err(format!("forbidden character {:?}", c));
    }
    for component in path.split('/') {
        match component {
            "" | "." | ".." => return Err(format!("component {component:?}")),
            _ if component.len() > 255 => return Err("component longer than 255 bytes".into()),
            _ => {}
        }
    }
    Ok(())
}

/// A user name (section 4): 1–64 bytes of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn valid_user(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A `realm` (section 4): 1–255 bytes without control characters.
pub fn valid_realm(realm: &str) -> bool {
    (1..=255).contains(&realm.len()) && !realm.chars().any(is_control)
}

/// A `features` field (section 4): absent (empty), or at most 16 distinct names
/// of `[a-z0-9_]{1,32}`. `Err` is what a side answers `protocol`.
pub fn parse_features(field: Option<&Value>) -> Result<Vec<String>, String> {
    let Some(field) = field else {
        return Ok(Vec::new());
    };
    let list = field.as_array().ok_or("features is not a list")?;
    if list.len() > 16 {
        return Err(format!("{} features", list.len()));
    }
    let mut names = Vec::new();
    for item in list {
        let name = item.as_str().ok_or("a feature that is not a string")?;
        let good = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
        if !good || names.iter().any(|n| n == name) {
            return Err(format!("feature {:?}", escape(name)));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Whether `(initiator, acceptor)` is a valid role pair (section 4).
pub fn valid_pair(initiator: &str, acceptor: &str) -> bool {
    matches!(
        (initiator, acceptor),
        ("sender", "receiver") | ("receiver", "sender") | ("client", "server")
    )
}

// ---- Strict JSON ---------------------------------------------------------------

/// Parses a control frame as section 2 requires: UTF-8 JSON, an object, no key
/// twice anywhere in it, a string `type`. `Err` says what broke.
pub fn parse_control(payload: &[u8]) -> Result<Value, String> {
    let StrictJson(value) =
        serde_json::from_slice(payload).map_err(|err| format!("not JSON: {err}"))?;
    match value.get("type") {
        Some(Value::String(_)) => Ok(value),
        _ => Err("not an object with a string \"type\"".into()),
    }
}

/// A field that section 2 calls a number: `Some` only for a plain integer in 0..2^64
/// (never a float such as `2.0`, a negative or a larger number).
pub fn field_u64(frame: &Value, key: &str) -> Option<u64> {
    frame.get(key)?.as_u64()
}

/// A string field, `None` when absent or of another type.
pub fn field_str<'a>(frame: &'a Value, key: &str) -> Option<&'a str> {
    frame.get(key)?.as_str()
}

/// The `type` of a control frame (`""` when it has none).
pub fn kind(frame: &Value) -> &str {
    field_str(frame, "type").unwrap_or("")
}

struct StrictJson(Value);

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("key {:?} twice", escape(&key))));
            }
            let StrictJson(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

// ---- The handshake, as pure functions (section 4) ------------------------------

/// Everything the handshake MACs and `Ks` cover: both nonces and `C`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The acceptor's nonce.
    pub na: [u8; 32],
    /// The initiator's nonce.
    pub ni: [u8; 32],
    /// `U`: the user name, empty when `auth` has none.
    pub user: String,
    /// `hello.features`, in the order sent.
    pub hello_features: Vec<String>,
    /// `auth.features`, in the order sent.
    pub auth_features: Vec<String>,
}

impl Transcript {
    /// `C = U || "\n" || FA || "\n" || FI`, the lists joined by `,`.
    pub fn context(&self) -> Vec<u8> {
        format!(
            "{}\n{}\n{}",
            self.user,
            self.hello_features.join(","),
            self.auth_features.join(",")
        )
        .into_bytes()
    }

    fn mac(&self, key: &[u8], label: &str) -> [u8; 32] {
        labelled_mac(key, label, &[&self.na, &self.ni, &self.context()])
    }

    /// `mac_I = HMAC(K, "xfer/2 initiator" 0x00 || Na || Ni || C)`.
    pub fn mac_i(&self, key: &[u8]) -> [u8; 32] {
        self.mac(key, "xfer/2 initiator")
    }

    /// `mac_A = HMAC(K, "xfer/2 acceptor" 0x00 || Na || Ni || C)`.
    pub fn mac_a(&self, key: &[u8]) -> [u8; 32] {
        self.mac(key, "xfer/2 acceptor")
    }

    /// `Ks = HMAC(K, "xfer/2 session" 0x00 || Na || Ni || C)`.
    pub fn ks(&self, key: &[u8]) -> [u8; 32] {
        self.mac(key, "xfer/2 session")
    }

    /// The features in force: named by both lists (in the order of `auth`).
    pub fn in_force(&self) -> Vec<String> {
        self.auth_features
            .iter()
            .filter(|f| self.hello_features.contains(f))
            .cloned()
            .collect()
    }
}

/// What an initiator brings to a handshake.
#[derive(Clone, Debug)]
pub struct Initiator {
    /// `K`, raw bytes (ignored when `password` is set).
    pub key: Vec<u8>,
    /// A password instead: `K` is derived from it, the hello's realm and `user`.
    pub password: Option<String>,
    /// `R_I`: `sender`, `receiver` or `client` (anything else is sent as given).
    pub role: String,
    /// The `user` field, sent as given (absent when `None`).
    pub user: Option<String>,
    /// `auth.features`, sent as given and in this order, odd ones included.
    pub features: Vec<String>,
    /// Features this side refuses to go without (answered `feature` in place of `auth`).
    pub require: Vec<String>,
}

impl Initiator {
    /// An initiator in `role` with key `key`, no user, no features.
    pub fn new(key: impl AsRef<[u8]>, role: &str) -> Initiator {
        Initiator {
            key: key.as_ref().to_vec(),
            password: None,
            role: role.to_owned(),
            user: None,
            features: Vec::new(),
            require: Vec::new(),
        }
    }

    /// A client as section 7 wants it: user `user`, features aead, blake3 and zstd,
    /// and `aead` required.
    pub fn client(key: impl AsRef<[u8]>, user: &str) -> Initiator {
        Initiator::new(key, "client")
            .user(user)
            .features(&ALL_FEATURES)
            .require(&["aead"])
    }

    /// With `user` as the `user` field.
    pub fn user(mut self, user: &str) -> Initiator {
        self.user = Some(user.to_owned());
        self
    }

    /// With `features` as `auth.features`.
    pub fn features(mut self, features: &[&str]) -> Initiator {
        self.features = features.iter().map(|f| f.to_string()).collect();
        self
    }

    /// Refusing to go on without each of `features`.
    pub fn require(mut self, features: &[&str]) -> Initiator {
        self.require = features.iter().map(|f| f.to_string()).collect();
        self
    }

    /// With a password instead of a key.
    pub fn password(mut self, password: &str) -> Initiator {
        self.password = Some(password.to_owned());
        self
    }

    /// `K` for a handshake whose `hello` named `realm`.
    pub fn key_for(&self, realm: Option<&str>) -> Vec<u8> {
        match &self.password {
            Some(pw) => password_key(pw, realm.unwrap_or(""), self.user.as_deref().unwrap_or("")),
            None => self.key.clone(),
        }
    }
}

/// The keys an acceptor checks `mac_I` with.
#[derive(Clone, Debug)]
pub enum Keys {
    /// One key for everybody; any valid user name, or none, is accepted.
    Single(Vec<u8>),
    /// A key per user; an unknown or absent user is checked against a random key.
    PerUser(Vec<(String, Vec<u8>)>),
}

/// What an acceptor brings to a handshake.
#[derive(Clone, Debug)]
pub struct Acceptor {
    /// `R_A`: `sender`, `receiver` or `server`.
    pub role: String,
    /// Whom it knows.
    pub keys: Keys,
    /// `hello.features`, sent as given and in this order.
    pub features: Vec<String>,
    /// The `realm` of `hello`, if any.
    pub realm: Option<String>,
    /// Features an initiator must bring into force (step 6: `feature`).
    pub require: Vec<String>,
}

impl Acceptor {
    /// An acceptor in `role` with one key, no features, no realm.
    pub fn new(key: impl AsRef<[u8]>, role: &str) -> Acceptor {
        Acceptor {
            role: role.to_owned(),
            keys: Keys::Single(key.as_ref().to_vec()),
            features: Vec::new(),
            realm: None,
            require: Vec::new(),
        }
    }

    /// With `features` as `hello.features`.
    pub fn features(mut self, features: &[&str]) -> Acceptor {
        self.features = features.iter().map(|f| f.to_string()).collect();
        self
    }

    /// Refusing (after `mac_I` verified) an initiator that does not bring each of `features`.
    pub fn require(mut self, features: &[&str]) -> Acceptor {
        self.require = features.iter().map(|f| f.to_string()).collect();
        self
    }

    /// With `realm` in `hello`.
    pub fn realm(mut self, realm: &str) -> Acceptor {
        self.realm = Some(realm.to_owned());
        self
    }

    /// The key `mac_I` is checked with for user `user` (`""`: none): a random one
    /// for a user it does not know, so that step 5 does the same work either way.
    pub fn key_of(&self, user: &str) -> Vec<u8> {
        match &self.keys {
            Keys::Single(key) => key.clone(),
            Keys::PerUser(users) => users
                .iter()
                .find(|(name, _)| !user.is_empty() && name == user)
                .map(|(_, key)| key.clone())
                .unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec()),
        }
    }
}

/// A `hello` as an initiator reads it.
#[derive(Clone, Debug)]
pub struct Hello {
    /// `R_A`.
    pub role: String,
    /// `Na`.
    pub nonce: [u8; 32],
    /// `hello.features`, in the order sent.
    pub features: Vec<String>,
    /// `realm`, if sent.
    pub realm: Option<String>,
}

/// A fresh 32-byte nonce from the operating system's CSPRNG (via `rand`).
pub fn fresh_nonce() -> [u8; 32] {
    rand::random()
}

/// The `hello` an acceptor with `cfg` sends, and the fresh `Na` in it.
pub fn make_hello(cfg: &Acceptor) -> (Value, [u8; 32]) {
    let na = fresh_nonce();
    let mut hello = json!({
        "type": "hello", "version": VERSION, "role": cfg.role,
        "nonce": hex(&na), "features": cfg.features,
    });
    if let Some(realm) = &cfg.realm {
        hello["realm"] = json!(realm);
    }
    (hello, na)
}

/// Checks a `hello` as an initiator in `role` must, in the order the acceptor
/// checks `auth` (section 4): a `hello` of version 2 whose fields have their
/// types, then the role pair, then `features` and `realm`, then the nonce. `Err`
/// is the error frame to send in place of `auth`.
pub fn check_hello(hello: &Value, role: &str) -> Result<Hello, Refusal> {
    if kind(hello) != "hello" {
        return Err(Refusal::new(
            "protocol",
            format!("expected hello, got {:?}", kind(hello)),
        ));
    }
    let version = field_u64(hello, "version").ok_or(Refusal::new("protocol", "version"))?;
    if version != VERSION {
        return Err(Refusal::new("version", format!("version {version}")));
    }
    let peer_role = field_str(hello, "role").ok_or(Refusal::new("protocol", "role"))?;
    let nonce = field_str(hello, "nonce").ok_or(Refusal::new("protocol", "nonce"))?;
    if !valid_pair(role, peer_role) {
        let why = format!("{role} with {:?}", escape(peer_role));
        return Err(Refusal::new("role", why));
    }
    let features =
        parse_features(hello.get("features")).map_err(|why| Refusal::new("protocol", why))?;
    let realm = match hello.get("realm") {
        None => None,
        Some(Value::String(realm)) if valid_realm(realm) => Some(realm.clone()),
        Some(_) => return Err(Refusal::new("protocol", "realm")),
    };
    let nonce = unhex_n::<32>(nonce).ok_or(Refusal::new("auth", "nonce"))?;
    Ok(Hello {
        role: peer_role.to_owned(),
        nonce,
        features,
        realm,
    })
}

/// The `auth` an initiator with `cfg` answers `hello` with, its transcript and `K`,
/// after checking the acceptor's nonce against ours (`auth`) and the features
/// `cfg` requires (`feature`). The `auth` holds `cfg`'s fields as given.
pub fn make_auth(cfg: &Initiator, hello: &Hello) -> Result<(Value, Transcript, Vec<u8>), Refusal> {
    let ni = fresh_nonce();
    if ni == hello.nonce {
        return Err(Refusal::new("auth", "the acceptor's nonce is ours"));
    }
    let transcript = Transcript {
        na: hello.nonce,
        ni,
        user: cfg.user.clone().unwrap_or_default(),
        hello_features: hello.features.clone(),
        auth_features: cfg.features.clone(),
    };
    let in_force = transcript.in_force();
    if let Some(missing) = cfg.require.iter().find(|f| !in_force.contains(f)) {
        return Err(Refusal::new("feature", format!("{missing} is required")));
    }
    let key = cfg.key_for(hello.realm.as_deref());
    let mut auth = json!({
        "type": "auth", "version": VERSION, "role": cfg.role, "nonce": hex(&ni),
        "features": cfg.features, "mac": hex(&transcript.mac_i(&key)),
    });
    if let Some(user) = &cfg.user {
        auth["user"] = json!(user);
    }
    Ok((auth, transcript, key))
}

/// Checks an `auth` as an acceptor with `cfg` that sent nonce `na` must, in the
/// order of section 4's table; the first failure is the error frame to send.
/// `Ok` holds the transcript and the key `mac_I` verified under.
pub fn check_auth(
    cfg: &Acceptor,
    na: &[u8; 32],
    auth: &Value,
) -> Result<(Transcript, Vec<u8>), Refusal> {
    // Step 1: an auth whose defined fields have their types, version 2.
    if kind(auth) != "auth" {
        return Err(Refusal::new(
            "protocol",
            format!("expected auth, got {:?}", escape(kind(auth))),
        ));
    }
    let version = field_u64(auth, "version").ok_or(Refusal::new("protocol", "version"))?;
    let (Some(role), Some(nonce), Some(mac)) = (
        field_str(auth, "role"),
        field_str(auth, "nonce"),
        field_str(auth, "mac"),
    ) else {
        return Err(Refusal::new(
            "protocol",
            "role, nonce and mac must be strings",
        ));
    };
    if version != VERSION {
        return Err(Refusal::new("version", format!("version {version}")));
    }
    // Step 2: the role pair.
    if !valid_pair(role, &cfg.role) {
        return Err(Refusal::new(
            "role",
            format!("{:?} with {}", escape(role), cfg.role),
        ));
    }
    // Step 3: user and features well formed.
    let user = match auth.get("user") {
        None => String::new(),
        Some(Value::String(user)) if valid_user(user) => user.clone(),
        Some(_) => return Err(Refusal::new("protocol", "user")),
    };
    let features =
        parse_features(auth.get("features")).map_err(|why| Refusal::new("protocol", why))?;
    // Step 4: the nonce.
    let ni = unhex_n::<32>(nonce)
        .filter(|ni| ni != na)
        .ok_or(Refusal::new("auth", "authentication failed"))?;
    // Step 5: mac_I under the key of U (a random key for a user it does not know).
    let transcript = Transcript {
        na: *na,
        ni,
        user,
        hello_features: cfg.features.clone(),
        auth_features: features,
    };
    let key = cfg.key_of(&transcript.user);
    if !hex_matches(Some(mac), &transcript.mac_i(&key)) {
        return Err(Refusal::new("auth", "authentication failed"));
    }
    // Step 6: what this initiator must meet.
    let in_force = transcript.in_force();
    if let Some(missing) = cfg.require.iter().find(|f| !in_force.contains(f)) {
        return Err(Refusal::new("feature", format!("{missing} is required")));
    }
    Ok((transcript, key))
}

/// What a handshake agreed: every later step consults it.
#[derive(Clone, Debug)]
pub struct Session {
    /// Nonces, user and both feature lists.
    pub transcript: Transcript,
    /// `Ks`.
    pub ks: [u8; 32],
    /// The features in force.
    pub in_force: Vec<String>,
    /// This side's role.
    pub role: String,
    /// The peer's role.
    pub peer_role: String,
}

impl Session {
    /// A session from a verified transcript and key.
    pub fn new(transcript: Transcript, key: &[u8], role: &str, peer_role: &str) -> Session {
        Session {
            ks: transcript.ks(key),
            in_force: transcript.in_force(),
            transcript,
            role: role.to_owned(),
            peer_role: peer_role.to_owned(),
        }
    }

    /// Whether `feature` is in force.
    pub fn has(&self, feature: &str) -> bool {
        self.in_force.iter().any(|f| f == feature)
    }

    /// The content hash in force.
    pub fn hash(&self) -> HashKind {
        HashKind::for_features(&self.in_force)
    }
}

// ---- What a transfer carries (section 5) ----------------------------------------

/// One entry a sender offers, with the bytes it will send for it.
#[derive(Clone, Debug)]
pub struct SendEntry {
    /// `path`, as offered.
    pub path: String,
    /// `kind` `dir` when true, else `file`.
    pub dir: bool,
    /// `size` as offered (`None`: `null`, a stream); need not match `content`.
    pub size: Option<u64>,
    /// `mode`, left out when `None`.
    pub mode: Option<u32>,
    /// `mtime`, left out when `None`.
    pub mtime: Option<u64>,
    /// The bytes sent for a file.
    pub content: Vec<u8>,
    /// When set, the sender gives this file up (`error` code `io`) instead of sending it.
    pub unreadable: bool,
    /// `xattrs`, left out when `None`.
    pub xattrs: Option<Value>,
}

impl SendEntry {
    /// A file whose offered size is its length.
    pub fn file(path: &str, content: impl Into<Vec<u8>>) -> SendEntry {
        let content = content.into();
        SendEntry {
            path: path.to_owned(),
            dir: false,
            size: Some(content.len() as u64),
            mode: None,
            mtime: None,
            content,
            unreadable: false,
            xattrs: None,
        }
    }

    /// A stream: a file offered with `size` null (the only entry of its offer).
    pub fn stream(path: &str, content: impl Into<Vec<u8>>) -> SendEntry {
        SendEntry {
            size: None,
            ..SendEntry::file(path, content)
        }
    }

    /// A directory (size 0, no data).
    pub fn dir(path: &str) -> SendEntry {
        SendEntry {
            dir: true,
            size: Some(0),
            ..SendEntry::file(path, Vec::new())
        }
    }

    /// With `mode`.
    pub fn mode(mut self, mode: u32) -> SendEntry {
        self.mode = Some(mode);
        self
    }

    /// With `mtime`.
    pub fn mtime(mut self, mtime: u64) -> SendEntry {
        self.mtime = Some(mtime);
        self
    }

    /// Given up by the sender with an `io` error instead of its data.
    pub fn unreadable(mut self) -> SendEntry {
        self.unreadable = true;
        self
    }

    /// The `ENTRY` object of the offer.
    pub fn to_json(&self) -> Value {
        let mut entry = json!({
            "path": self.path,
            "kind": if self.dir { "dir" } else { "file" },
            "size": self.size,
        });
        if let Some(mode) = self.mode {
            entry["mode"] = json!(mode);
        }
        if let Some(mtime) = self.mtime {
            entry["mtime"] = json!(mtime);
        }
        if let Some(xattrs) = &self.xattrs {
            entry["xattrs"] = xattrs.clone();
        }
        entry
    }
}

/// What a sender learnt from one transfer.
#[derive(Clone, Debug, Default)]
pub struct SendReport {
    /// The receiver's decisions, one per entry (their MAC verified).
    pub plan: Vec<Value>,
    /// The receiver's answer per entry it answered: `ok` (its MAC verified) or `error`.
    pub answers: BTreeMap<u64, Value>,
}

impl SendReport {
    /// Whether entry `index` was acknowledged with a verified `ok`.
    pub fn delivered(&self, index: u64) -> bool {
        self.answers.get(&index).is_some_and(|a| kind(a) == "ok")
    }

    /// The code the receiver gave entry `index`: from its error or its `skip`.
    pub fn code(&self, index: u64) -> Option<&str> {
        let from_answer = self.answers.get(&index).and_then(|a| field_str(a, "code"));
        from_answer.or_else(|| {
            self.plan
                .get(usize::try_from(index).ok()?)
                .and_then(|d| field_str(d, "code"))
        })
    }
}

/// A receiver's decision for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `send` from offset 0.
    Send,
    /// `send` from `prefix.len()`: the receiver already holds `prefix` (resume).
    Resume(Vec<u8>),
    /// `skip` with `code` and `message`.
    Skip(String, String),
}

impl Decision {
    /// A skip with `code`.
    pub fn skip(code: &str, message: &str) -> Decision {
        Decision::Skip(code.to_owned(), message.to_owned())
    }

    /// The `DECISION` object, `prefix_hash` in `hash`.
    pub fn to_json(&self, hash: HashKind) -> Value {
        match self {
            Decision::Send => json!({"action": "send", "offset": 0}),
            Decision::Resume(prefix) if prefix.is_empty() => json!({"action": "send", "offset": 0}),
            Decision::Resume(prefix) => json!({
                "action": "send", "offset": prefix.len(), "prefix_hash": hex(&hash.digest(prefix)),
            }),
            Decision::Skip(code, message) => {
                json!({"action": "skip", "code": code, "message": message})
            }
        }
    }
}

/// What a receiver does with an offer: decide, then keep each verified file.
pub trait Store {
    /// The decision for entry `index` (the offer already verified).
    fn decide(&mut self, index: u64, entry: &Value) -> Decision;

    /// Keeps a verified file before `ok` is sent; `Err((code, message))` is sent
    /// as that entry's error instead. Does nothing by default.
    fn keep(
        &mut self,
        _index: u64,
        _entry: &Value,
        _content: &[u8],
    ) -> Result<(), (String, String)> {
        Ok(())
    }
}

impl<F: FnMut(u64, &Value) -> Decision> Store for F {
    fn decide(&mut self, index: u64, entry: &Value) -> Decision {
        self(index, entry)
    }
}

/// What a receiver got from one transfer (all of it in memory).
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// The offered entries, in order.
    pub entries: Vec<Value>,
    /// The decisions sent, in order.
    pub plan: Vec<Value>,
    /// Each file answered `ok`, whole, by its offered path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Each entry that failed: the sender's error frame, or the one this side sent.
    pub failed: BTreeMap<u64, Value>,
    /// The first offer frame's `mirror` member (section 17.1), if it had one.
    pub mirror: Option<Value>,
}

// ---- The connection ------------------------------------------------------------

/// Which end of the connection a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// It connected.
    Initiator,
    /// It accepted.
    Acceptor,
}

struct Sealing {
    send_key: [u8; 32],
    recv_key: [u8; 32],
    sent: u64,
    received: u64,
}

/// One end of a connection speaking version 2: frames (sealed once `aead` is in
/// force), the handshake, transfers and requests. Every read waits at most
/// [`Peer::timeout`] for a whole frame (and the handshake as a whole at most
/// [`HANDSHAKE_DEADLINE`]).
pub struct Peer {
    stream: TcpStream,
    side: Side,
    timeout: Duration,
    deadline: Option<Instant>,
    session: Option<Session>,
    sealing: Option<Sealing>,
    /// Section 5's `t` for the next transfer: the high-level transfer calls use it
    /// and add one when that transfer began; the raw calls use it as it is.
    pub t: u64,
    /// File bytes per data frame this peer sends (before any flag byte).
    pub chunk: usize,
    /// Entries per offer, plan or listing frame this peer sends.
    pub frame_entries: usize,
    /// How data frames are encoded while `zstd` is in force.
    pub compress: Compress,
    /// Whether offer and plan frames go packed while `zstd_control` is in force
    /// (section 19 of docs/PROTOCOL.md).
    pub pack_lists: bool,
    /// Packed list frames read so far.
    pub unpacked: usize,
}

/// Accepts one connection on `listener`, waiting at most `limit`.
pub fn accept_within(listener: &TcpListener, limit: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let start = Instant::now();
    let accepted = loop {
        match listener.accept() {
            Ok((stream, _)) => break Ok(stream),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if start.elapsed() > limit {
                    break Err(io::Error::new(io::ErrorKind::TimedOut, "nobody connected"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => break Err(err),
        }
    };
    listener.set_nonblocking(false)?;
    let stream = accepted?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

impl Peer {
    /// Connects to `addr` as the initiator (waiting at most [`DEFAULT_TIMEOUT`]).
    pub fn connect(addr: impl ToSocketAddrs) -> PeerResult<Peer> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT) {
                Ok(stream) => return Peer::from_stream(stream, Side::Initiator),
                Err(err) => last = err,
            }
        }
        Err(PeerError::Io(last))
    }

    /// Accepts one connection on `listener` as the acceptor (waiting at most [`DEFAULT_TIMEOUT`]).
    pub fn accept(listener: &TcpListener) -> PeerResult<Peer> {
        Peer::from_stream(accept_within(listener, DEFAULT_TIMEOUT)?, Side::Acceptor)
    }

    /// Wraps a connected stream; `side` says which end it is.
    pub fn from_stream(stream: TcpStream, side: Side) -> PeerResult<Peer> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(Peer {
            stream,
            side,
            timeout: DEFAULT_TIMEOUT,
            deadline: None,
            session: None,
            sealing: None,
            t: 0,
            chunk: DEFAULT_CHUNK,
            frame_entries: DEFAULT_FRAME_ENTRIES,
            compress: Compress::Auto,
            pack_lists: false,
            unpacked: 0,
        })
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// How long one frame may take to arrive (and one write to go out).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets how long one frame may take to arrive (and one write to go out).
    pub fn set_timeout(&mut self, timeout: Duration) -> PeerResult<()> {
        self.timeout = timeout;
        self.stream.set_write_timeout(Some(timeout))?;
        Ok(())
    }

    /// The session, once a handshake succeeded (or [`Peer::start_session`] set one).
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    fn ks(&self) -> [u8; 32] {
        self.session
            .as_ref()
            .expect("no session: run the handshake first")
            .ks
    }

    fn has(&self, feature: &str) -> bool {
        self.session.as_ref().is_some_and(|s| s.has(feature))
    }

    /// The content hash in force (MD5 before a session).
    pub fn hash(&self) -> HashKind {
        self.session.as_ref().map_or(HashKind::Md5, Session::hash)
    }

    /// Whether frames are sealed now.
    pub fn sealed(&self) -> bool {
        self.sealing.is_some()
    }

    /// Starts `session`: frames are sealed from now on if it has `aead` in force
    /// (the initiator sends under `k_I`, the acceptor under `k_A`), and the limits
    /// after authentication apply. The handshake calls this; a test that ran its
    /// own handshake calls it by hand.
    pub fn start_session(&mut self, session: Session) {
        self.sealing = session.has("aead").then(|| {
            let (k_i, k_a) = aead_keys(&session.ks);
            let (send_key, recv_key) = match self.side {
                Side::Initiator => (k_i, k_a),
                Side::Acceptor => (k_a, k_i),
            };
            Sealing {
                send_key,
                recv_key,
                sent: 0,
                received: 0,
            }
        });
        self.session = Some(session);
    }

    // ---- Frames: writing

    /// Writes `bytes` to the socket as they are: no prefix, no sealing.
    pub fn send_wire(&mut self, bytes: &[u8]) -> PeerResult<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        Ok(())
    }

    /// The wire bytes of the next frame with plaintext `payload`: sealed (and the
    /// send counter advanced) when `aead` is in force, else just framed. Nothing is
    /// sent: a test can tamper with the bytes, send them twice, or never.
    pub fn seal_next(&mut self, payload: &[u8]) -> Vec<u8> {
        match &mut self.sealing {
            Some(sealing) => {
                let wire = seal_frame(&sealing.send_key, sealing.sent, payload);
                sealing.sent = sealing
                    .sent
                    .checked_add(1)
                    .expect("the frame counter never wraps");
                wire
            }
            None => frame_bytes(payload),
        }
    }

    /// Sends one frame with plaintext `payload` (sealed when `aead` is in force).
    pub fn send_frame(&mut self, payload: &[u8]) -> PeerResult<()> {
        let wire = self.seal_next(payload);
        self.send_wire(&wire)
    }

    /// Sends one control frame; returns its payload (for a transcript).
    pub fn send_control(&mut self, message: &Value) -> PeerResult<Vec<u8>> {
        let payload = serde_json::to_vec(message).expect("a Value serialises");
        self.send_frame(&payload)?;
        Ok(payload)
    }

    /// Sends an error frame (with `index` when it concerns one entry).
    pub fn send_error(&mut self, index: Option<u64>, code: &str, message: &str) -> PeerResult<()> {
        let mut error = json!({"type": "error", "code": code, "message": message});
        if let Some(index) = index {
            error["index"] = json!(index);
        }
        self.send_control(&error).map(drop)
    }

    /// Ends the connection as section 3 says: the error frame, the writing half shut,
    /// then what the peer still sends read and discarded for up to a second.
    /// Returns [`PeerError::Refused`] with that code, to be returned by the caller.
    pub fn close_with_error(&mut self, code: &str, message: &str) -> PeerError {
        let _ = self.send_error(None, code, message);
        let _ = self.stream.shutdown(Shutdown::Write);
        self.drain(DRAIN_TIME);
        PeerError::Refused(Refusal::new(code, message))
    }

    fn refuse(&mut self, refusal: Refusal) -> PeerError {
        self.close_with_error(&refusal.code, &refusal.message)
    }

    /// Closes both halves at once, sending nothing more.
    pub fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Shuts the writing half only (the peer reads end of file; this side may still read).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn drain(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        let mut sink = [0u8; 8192];
        while let Some(left) = end
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    // ---- Frames: reading

    fn frame_deadline(&self) -> Instant {
        let by_timeout = Instant::now() + self.timeout;
        self.deadline.map_or(by_timeout, |d| d.min(by_timeout))
    }

    /// Fills `buf` before `deadline`. `Ok(false)` when the peer closed before the
    /// first byte and `eof_ok` (a close, or a reset, between frames).
    fn fill(&mut self, buf: &mut [u8], deadline: Instant, eof_ok: bool) -> PeerResult<bool> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no frame before the deadline",
                )
                .into());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf[got..]) {
                Ok(0) if got == 0 && eof_ok => return Ok(false),
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => got += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err)
                    if got == 0
                        && eof_ok
                        && matches!(
                            err.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                        ) =>
                {
                    return Ok(false);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(true)
    }

    /// The largest length prefix this side reads now: 4 096 before a session, 16 MiB
    /// after (plus the tag when sealed).
    pub fn frame_limit(&self) -> usize {
        match (&self.session, &self.sealing) {
            (None, _) => MAX_HANDSHAKE_FRAME,
            (Some(_), None) => MAX_FRAME,
            (Some(_), Some(_)) => MAX_FRAME + TAG_LEN,
        }
    }

    /// Reads one frame as it is on the wire, prefix included, nothing opened (the
    /// receive counter does not move).
    ///
    /// # Returns
    /// `Ok(None)` when the peer closed between frames. A prefix over
    /// [`Peer::frame_limit`] is refused before anything is allocated.
    pub fn read_wire(&mut self) -> PeerResult<Option<Vec<u8>>> {
        let deadline = self.frame_deadline();
        let mut prefix = [0u8; 4];
        if !self.fill(&mut prefix, deadline, true)? {
            return Ok(None);
        }
        let len = u32::from_be_bytes(prefix) as usize;
        let limit = self.frame_limit();
        if len > limit {
            return Err(PeerError::TooLarge { len, limit });
        }
        let mut wire = vec![0u8; 4 + len];
        wire[..4].copy_from_slice(&prefix);
        self.fill(&mut wire[4..], deadline, false)?;
        Ok(Some(wire))
    }

    /// Reads one frame's plaintext payload, opened when `aead` is in force.
    ///
    /// # Returns
    /// `Ok(None)` when the peer closed between frames; [`PeerError::Unsealed`] for a
    /// sealed frame that does not open.
    pub fn read_frame(&mut self) -> PeerResult<Option<Vec<u8>>> {
        let Some(wire) = self.read_wire()? else {
            return Ok(None);
        };
        let Some(sealing) = &mut self.sealing else {
            return Ok(Some(wire[4..].to_vec()));
        };
        let prefix = [wire[0], wire[1], wire[2], wire[3]];
        let plain = open_frame(&sealing.recv_key, sealing.received, prefix, &wire[4..])
            .ok_or(PeerError::Unsealed)?;
        sealing.received = sealing
            .received
            .checked_add(1)
            .expect("the frame counter never wraps");
        Ok(Some(plain))
    }

    /// Reads one control frame and returns it with its plaintext payload.
    /// [`PeerError::Closed`] when the peer closed; [`PeerError::Malformed`] when it is
    /// not a control frame as section 2 defines it.
    pub fn read_control_raw(&mut self) -> PeerResult<(Value, Vec<u8>)> {
        let mut payload = self.read_frame()?.ok_or(PeerError::Closed)?;
        if self.has("zstd_control") && payload.starts_with(&ZSTD_MAGIC) {
            payload = unpack_list_frame(&payload).map_err(PeerError::Malformed)?;
            self.unpacked += 1;
        }
        let frame = parse_control(&payload).map_err(PeerError::Malformed)?;
        Ok((frame, payload))
    }

    /// Reads one control frame.
    pub fn read_control(&mut self) -> PeerResult<Value> {
        Ok(self.read_control_raw()?.0)
    }

    /// Reads one control frame of type `expected`: an error frame is
    /// [`PeerError::Remote`], another type [`PeerError::Unexpected`].
    pub fn expect(&mut self, expected: &str) -> PeerResult<Value> {
        let frame = self.read_control()?;
        match kind(&frame) {
            k if k == expected => Ok(frame),
            "error" => Err(PeerError::Remote(frame)),
            _ => Err(PeerError::Unexpected(frame)),
        }
    }

    /// Reads and discards frames until the peer closes; `Ok` once it did, within
    /// the timeout. For tests that check that the other side hung up.
    pub fn expect_close(&mut self) -> PeerResult<()> {
        loop {
            match self.read_wire() {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => {}
                Err(err) if err.is_closed() => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    /// Answers a broken frame as sections 2, 3 and 10 say, then closes: `mac` for
    /// a frame that did not open, `protocol` for a malformed or oversized one,
    /// `timeout` for a peer silent past the timeout after the handshake. Returns
    /// `err` unchanged; any other error is passed on without a word.
    fn answer_broken(&mut self, err: PeerError) -> PeerError {
        let code = match &err {
            PeerError::Unsealed => "mac",
            PeerError::Malformed(_) | PeerError::TooLarge { .. } => "protocol",
            PeerError::Io(io)
                if self.session.is_some()
                    && matches!(
                        io.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
            {
                "timeout"
            }
            _ => return err,
        };
        let message = escape(&err.to_string());
        self.close_with_error(code, &message);
        err
    }

    /// [`Peer::read_control_raw`] for the high-level calls: a broken frame is answered.
    fn next_control(&mut self) -> PeerResult<(Value, Vec<u8>)> {
        self.read_control_raw()
            .map_err(|err| self.answer_broken(err))
    }

    /// [`Peer::read_frame`] for the high-level calls: a broken frame is answered, a close is an error.
    fn next_frame(&mut self) -> PeerResult<Vec<u8>> {
        self.read_frame()
            .map_err(|err| self.answer_broken(err))?
            .ok_or(PeerError::Closed)
    }

    /// A control frame of type `expected` for the high-level calls: a broken
    /// frame is answered; an error frame is [`PeerError::Remote`], another type
    /// [`PeerError::Unexpected`].
    fn next_expected(&mut self, expected: &str) -> PeerResult<Value> {
        let (frame, _) = self.next_control()?;
        match kind(&frame) {
            k if k == expected => Ok(frame),
            "error" => Err(PeerError::Remote(frame)),
            _ => Err(PeerError::Unexpected(frame)),
        }
    }

    // ---- The handshake (section 4)

    /// Runs the whole handshake as the initiator: reads `hello` and checks it (an
    /// unacceptable one is answered with an error frame in place of `auth`, then
    /// close), sends `auth`, reads `auth_ok` and verifies `mac_A` (closing silently
    /// when it does not), then starts the session.
    pub fn initiate(&mut self, cfg: &Initiator) -> PeerResult<Session> {
        self.deadline = Some(Instant::now() + HANDSHAKE_DEADLINE);
        let result = self.run_initiator(cfg);
        self.deadline = None;
        result
    }

    fn run_initiator(&mut self, cfg: &Initiator) -> PeerResult<Session> {
        let hello = match self.read_hello() {
            Ok(hello) => hello,
            Err(PeerError::Malformed(why)) => return Err(self.close_with_error("protocol", &why)),
            Err(PeerError::TooLarge { len, .. }) => {
                return Err(self.close_with_error("protocol", &format!("a frame of {len} bytes")));
            }
            Err(err) => return Err(err),
        };
        let hello = check_hello(&hello, &cfg.role).map_err(|r| self.refuse(r))?;
        let (auth, transcript, key) = make_auth(cfg, &hello).map_err(|r| self.refuse(r))?;
        self.send_control(&auth)?;
        self.finish_initiator(transcript, &key, &cfg.role, &hello.role)
    }

    /// Reads `hello` as it came (an error frame in its place is [`PeerError::Remote`]).
    pub fn read_hello(&mut self) -> PeerResult<Value> {
        match self.expect("hello") {
            Err(PeerError::Unexpected(frame)) => Ok(frame), // check_hello says what is wrong
            other => other,
        }
    }

    /// The initiator's last step, after its `auth` went out: reads `auth_ok`,
    /// verifies `mac_A` under `key` (closing silently, [`PeerError::BadMac`], when it
    /// does not) and starts the session.
    pub fn finish_initiator(
        &mut self,
        transcript: Transcript,
        key: &[u8],
        role: &str,
        peer_role: &str,
    ) -> PeerResult<Session> {
        let reply = self.expect("auth_ok")?;
        if !hex_matches(field_str(&reply, "mac"), &transcript.mac_a(key)) {
            self.close();
            return Err(PeerError::BadMac("mac_A"));
        }
        let session = Session::new(transcript, key, role, peer_role);
        self.start_session(session.clone());
        Ok(session)
    }

    /// Runs the whole handshake as the acceptor, bounded by [`HANDSHAKE_DEADLINE`]:
    /// sends `hello`, reads `auth`, checks it in the order of section 4 (a failure
    /// is answered with its error frame, then close: [`PeerError::Refused`]; the
    /// deadline closes silently), sends `auth_ok` with `mac_A`, starts the session.
    pub fn accept_handshake(&mut self, cfg: &Acceptor) -> PeerResult<Session> {
        self.deadline = Some(Instant::now() + HANDSHAKE_DEADLINE);
        let result = self.run_acceptor(cfg);
        self.deadline = None;
        result
    }

    fn run_acceptor(&mut self, cfg: &Acceptor) -> PeerResult<Session> {
        let (hello, na) = make_hello(cfg);
        self.send_control(&hello)?;
        let auth = match self.read_control() {
            Ok(auth) if kind(&auth) == "error" => return Err(PeerError::Remote(auth)),
            Ok(auth) => auth,
            Err(PeerError::Malformed(why)) => return Err(self.close_with_error("protocol", &why)),
            Err(PeerError::TooLarge { len, .. }) => {
                return Err(self.close_with_error("protocol", &format!("a frame of {len} bytes")));
            }
            Err(err) => {
                self.close();
                return Err(err);
            }
        };
        let (transcript, key) = check_auth(cfg, &na, &auth).map_err(|r| self.refuse(r))?;
        self.send_control(&json!({"type": "auth_ok", "mac": hex(&transcript.mac_a(&key))}))?;
        let peer_role = field_str(&auth, "role").unwrap_or_default().to_owned();
        let session = Session::new(transcript, &key, &cfg.role, &peer_role);
        self.start_session(session.clone());
        Ok(session)
    }

    // ---- The transfer as sender (section 5)

    /// Sends the offer as given, one offer frame per group (`more` on all but the
    /// last), then `offer_end` with the number of entries and `mac_offer` over the
    /// frames exactly as sent. Uses `self.t`.
    pub fn send_offer(&mut self, groups: &[Vec<Value>]) -> PeerResult<()> {
        self.send_list("offer", groups, mac_offer)
    }

    /// Sends `groups` as frames of type `kind` (`more` on all but the last), then
    /// `{kind}_end` with the number of items and `mac` (with `self.t`) over the
    /// frames exactly as sent: the shape of the offer and the plan.
    fn send_list(
        &mut self,
        kind: &str,
        groups: &[Vec<Value>],
        mac: fn(&[u8], u64, &[u8]) -> [u8; 32],
    ) -> PeerResult<()> {
        let mut payloads = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            let mut frame = json!({"type": kind, "entries": group});
            if i + 1 < groups.len() {
                frame["more"] = json!(true);
            }
            if self.pack_lists && self.has("zstd_control") {
                let payload = type_first(&frame);
                self.send_frame(&zstd::bulk::compress(&payload, 3).expect("zstd packs"))?;
                payloads.push(payload);
            } else {
                payloads.push(self.send_control(&frame)?);
            }
        }
        let count: usize = groups.iter().map(Vec::len).sum();
        let mac = mac(&self.ks(), self.t, &transcript_bytes(&payloads));
        let end = format!("{kind}_end");
        self.send_control(&json!({"type": end, "count": count, "mac": hex(&mac)}))
            .map(drop)
    }

    /// Reads the plan: plan frames until one without `more`, then `plan_end`; verifies
    /// `mac_plan` (failure: a `mac` error, close) and that `count` equals the
    /// decisions read and `offered` (failure: `protocol`, close). An error frame in
    /// place of the plan is [`PeerError::Remote`].
    pub fn read_plan(&mut self, offered: usize) -> PeerResult<Vec<Value>> {
        let mut payloads = Vec::new();
        let mut decisions = Vec::new();
        loop {
            let (frame, payload) = self.next_control()?;
            match kind(&frame) {
                "plan" => {}
                "error" => return Err(PeerError::Remote(frame)),
                other => {
                    return Err(self.close_with_error(
                        "protocol",
                        &format!("{:?} in the plan", escape(other)),
                    ));
                }
            }
            let Some(entries) = frame.get("entries").and_then(Value::as_array) else {
                return Err(self.close_with_error("protocol", "plan without entries"));
            };
            decisions.extend(entries.iter().cloned());
            payloads.push(payload);
            match frame.get("more") {
                Some(Value::Bool(true)) => {}
                None | Some(Value::Bool(false)) => break,
                Some(_) => return Err(self.close_with_error("protocol", "more is not a boolean")),
            }
        }
        let (end, _) = self.next_control()?;
        if kind(&end) != "plan_end" {
            return Err(self.close_with_error("protocol", "expected plan_end"));
        }
        let mac = mac_plan(&self.ks(), self.t, &transcript_bytes(&payloads));
        if !hex_matches(field_str(&end, "mac"), &mac) {
            self.close_with_error("mac", "mac_plan did not verify");
            return Err(PeerError::BadMac("mac_plan"));
        }
        let count = field_u64(&end, "count");
        if count != Some(decisions.len() as u64) || decisions.len() != offered {
            return Err(self.close_with_error("protocol", "plan_end count"));
        }
        Ok(decisions)
    }

    /// Encodes `bytes` as one data-frame payload: as they are without `zstd`, else
    /// with the flag byte of section 11 as [`Peer::compress`] says.
    pub fn data_payload(&self, bytes: &[u8]) -> Vec<u8> {
        if !self.has("zstd") {
            return bytes.to_vec();
        }
        match self.compress {
            Compress::Never => data_raw(bytes),
            Compress::Always => data_zstd(bytes),
            Compress::Auto => {
                let packed = zstd_frame(bytes);
                if packed.len() < bytes.len() {
                    [&[1u8][..], &packed].concat()
                } else {
                    data_raw(bytes)
                }
            }
        }
    }

    /// The `done` frame for entry `index` whose whole content is `content`: size,
    /// hash in force and `mac_done` (with `self.t`).
    pub fn done_frame(&self, index: u64, path: &str, content: &[u8]) -> Value {
        let hash = self.hash().digest(content);
        let size = content.len() as u64;
        let mac = mac_done(&self.ks(), self.t, index, size, &hash, path);
        json!({"type": "done", "index": index, "size": size, "hash": hex(&hash), "mac": hex(&mac)})
    }

    /// Sends entry `index` from `offset`: `data`, data frames of at most
    /// [`Peer::chunk`] bytes, the empty frame, then `done` over the whole content.
    /// Panics when `offset` is past the end (a test's mistake).
    pub fn send_file(
        &mut self,
        index: u64,
        path: &str,
        content: &[u8],
        offset: u64,
    ) -> PeerResult<()> {
        let rest = usize::try_from(offset)
            .ok()
            .and_then(|o| content.get(o..))
            .expect("an offset within the content");
        self.send_control(&json!({"type": "data", "index": index, "offset": offset}))?;
        for piece in rest.chunks(self.chunk.max(1)) {
            let payload = self.data_payload(piece);
            self.send_frame(&payload)?;
        }
        self.send_frame(&[])?;
        let done = self.done_frame(index, path, content);
        self.send_control(&done).map(drop)
    }

    /// Sends `end`.
    pub fn send_end(&mut self) -> PeerResult<()> {
        self.send_control(&json!({"type": "end"})).map(drop)
    }

    /// The whole transfer as the sender, with `self.t` (then one more): the offer in
    /// frames of [`Peer::frame_entries`] entries, the plan read and verified, each
    /// file planned `send` sent from the offset the plan allows (its `prefix_hash`
    /// checked, else from 0) or given up with `io` when `unreadable`, then `end`,
    /// then every answer read (each `ok`'s `mac_ok` verified) up to the receiver's
    /// `end`. It sends everything before reading answers: fine for test-sized data.
    pub fn send_transfer(&mut self, entries: &[SendEntry]) -> PeerResult<SendReport> {
        let result = self.send_transfer_as_t(entries);
        self.t += 1;
        result
    }

    fn send_transfer_as_t(&mut self, entries: &[SendEntry]) -> PeerResult<SendReport> {
        let offer: Vec<Value> = entries.iter().map(SendEntry::to_json).collect();
        self.send_offer(&groups_of(&offer, self.frame_entries))?;
        let plan = self.read_plan(entries.len())?;
        let mut outstanding = BTreeMap::new();
        for (i, (entry, decision)) in entries.iter().zip(&plan).enumerate() {
            let index = i as u64;
            match field_str(decision, "action") {
                Some("send") => {}
                Some("skip") if field_str(decision, "code").is_some() => continue,
                _ => return Err(self.close_with_error("protocol", &format!("decision {index}"))),
            }
            let Some(offset) = field_u64(decision, "offset") else {
                return Err(self.close_with_error("protocol", &format!("decision {index} offset")));
            };
            if entry.dir {
                continue;
            }
            if entry.unreadable {
                self.send_error(Some(index), "io", "cannot read it")?;
                continue;
            }
            let resumable = entry.size.is_some()
                && usize::try_from(offset).is_ok_and(|o| {
                    o <= entry.content.len()
                        && hex_matches(
                            field_str(decision, "prefix_hash"),
                            &self.hash().digest(&entry.content[..o]),
                        )
                });
            let from = if offset > 0 && resumable { offset } else { 0 };
            self.send_file(index, &entry.path, &entry.content, from)?;
            outstanding.insert(index, entry);
        }
        self.send_end()?;
        let mut answers = BTreeMap::new();
        loop {
            let (answer, _) = self.next_control()?;
            let index = field_u64(&answer, "index");
            match (kind(&answer), index) {
                ("end", _) if outstanding.is_empty() => break,
                ("error", None) => return Err(PeerError::Remote(answer)),
                ("ok" | "error", Some(index)) if outstanding.contains_key(&index) => {
                    let entry = outstanding.remove(&index).expect("checked above");
                    if kind(&answer) == "ok" {
                        let hash = self.hash().digest(&entry.content);
                        let size = entry.content.len() as u64;
                        let mac = mac_ok(&self.ks(), self.t, index, size, &hash, &entry.path);
                        if !hex_matches(field_str(&answer, "mac"), &mac) {
                            self.close_with_error("mac", "mac_ok did not verify");
                            return Err(PeerError::BadMac("mac_ok"));
                        }
                    }
                    answers.insert(index, answer);
                }
                _ => {
                    let why = format!("unexpected answer {answer}");
                    return Err(self.close_with_error("protocol", &escape(&why)));
                }
            }
        }
        Ok(SendReport { plan, answers })
    }

    // ---- The transfer as receiver (section 5)

    /// Reads offer frames (the first given, already read) up to `offer_end` and
    /// checks them in the order of section 5: `mac_offer` (failure: `mac`, close),
    /// then `count` (failure: `protocol`, close), then each entry's form and the
    /// order of directories (failure: `protocol`, close). Uses `self.t`.
    pub fn read_offer_from(&mut self, first: (Value, Vec<u8>)) -> PeerResult<Vec<Value>> {
        let mut next = Some(first);
        let mut payloads = Vec::new();
        let mut entries = Vec::new();
        loop {
            let (frame, payload) = match next.take() {
                Some(first) => first,
                None => self.next_control()?,
            };
            match kind(&frame) {
                "offer" => {}
                "error" => return Err(PeerError::Remote(frame)),
                other => {
                    let why = format!("{:?} in the offer", escape(other));
                    return Err(self.close_with_error("protocol", &why));
                }
            }
            let Some(list) = frame.get("entries").and_then(Value::as_array) else {
                return Err(self.close_with_error("protocol", "offer without entries"));
            };
            entries.extend(list.iter().cloned());
            payloads.push(payload);
            match frame.get("more") {
                Some(Value::Bool(true)) => {}
                None | Some(Value::Bool(false)) => break,
                Some(_) => return Err(self.close_with_error("protocol", "more is not a boolean")),
            }
        }
        let (end, _) = self.next_control()?;
        if kind(&end) != "offer_end" {
            return Err(self.close_with_error("protocol", "expected offer_end"));
        }
        let mac = mac_offer(&self.ks(), self.t, &transcript_bytes(&payloads));
        if !hex_matches(field_str(&end, "mac"), &mac) {
            self.close_with_error("mac", "mac_offer did not verify");
            return Err(PeerError::BadMac("mac_offer"));
        }
        if field_u64(&end, "count") != Some(entries.len() as u64) {
            return Err(self.close_with_error("protocol", "offer_end count"));
        }
        if let Err(why) = check_offer(&entries) {
            return Err(self.close_with_error("protocol", &why));
        }
        Ok(entries)
    }

    /// Sends the plan as given, one plan frame per group (`more` on all but the
    /// last), then `plan_end` with the number of decisions and `mac_plan`. Uses `self.t`.
    pub fn send_plan(&mut self, groups: &[Vec<Value>]) -> PeerResult<()> {
        self.send_list("plan", groups, mac_plan)
    }

    /// Sends `ok` for entry `index` (size, raw hash, offered path) with `mac_ok` (with `self.t`).
    pub fn send_ok(&mut self, index: u64, size: u64, hash: &[u8], path: &str) -> PeerResult<()> {
        let mac = mac_ok(&self.ks(), self.t, index, size, hash, path);
        self.send_control(&json!({"type": "ok", "index": index, "mac": hex(&mac)}))
            .map(drop)
    }

    /// The whole transfer as the receiver, every file kept in memory, decisions from
    /// `decide(index, entry)`. See [`Peer::receive_transfer_into`].
    pub fn receive_transfer(
        &mut self,
        mut decide: impl FnMut(u64, &Value) -> Decision,
    ) -> PeerResult<Received> {
        self.receive_transfer_into(&mut decide)
    }

    /// The whole transfer as the receiver, with `self.t` (then one more once an
    /// offer began; an error frame in its place is [`PeerError::Remote`] and leaves
    /// `t` alone): the offer read and verified, the plan from `store` sent in frames
    /// of [`Peer::frame_entries`], then for each file planned `send`, in order, its
    /// data (from 0 or the planned offset, decompressed under `zstd`) checked
    /// against the offered size, hash and `mac_done`, kept by `store` and answered
    /// `ok` or per-entry `error`; the sender's per-entry errors recorded; `end`
    /// answered with `end`. A broken frame ends it with the error section 5 names.
    pub fn receive_transfer_into(&mut self, store: &mut dyn Store) -> PeerResult<Received> {
        let first = self.next_control()?;
        if kind(&first.0) == "error" {
            return Err(PeerError::Remote(first.0));
        }
        let result = self.receive_as_t(first, store);
        self.t += 1;
        result
    }

    fn receive_as_t(
        &mut self,
        first: (Value, Vec<u8>),
        store: &mut dyn Store,
    ) -> PeerResult<Received> {
        let mirror = first.0.get("mirror").cloned();
        let entries = self.read_offer_from(first)?;
        let hash = self.hash();
        let decisions: Vec<Decision> = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let stream = entry.get("size") == Some(&Value::Null);
                match store.decide(i as u64, entry) {
                    Decision::Resume(_) if stream => Decision::Send,
                    decision => decision,
                }
            })
            .collect();
        let plan: Vec<Value> = decisions.iter().map(|d| d.to_json(hash)).collect();
        self.send_plan(&groups_of(&plan, self.frame_entries))?;
        let mut expected: VecDeque<u64> = entries
            .iter()
            .zip(&decisions)
            .enumerate()
            .filter(|(_, (entry, d))| {
                field_str(entry, "kind") == Some("file") && !matches!(d, Decision::Skip(..))
            })
            .map(|(i, _)| i as u64)
            .collect();
        let mut received = Received {
            entries: entries.clone(),
            plan,
            mirror,
            ..Received::default()
        };
        loop {
            let (frame, _) = self.next_control()?;
            let index = field_u64(&frame, "index");
            match (kind(&frame), index) {
                ("data", Some(i)) if expected.front() == Some(&i) => {
                    expected.pop_front();
                    let idx = usize::try_from(i).expect("an index of an entry in memory");
                    self.receive_file(
                        i,
                        &entries[idx],
                        &decisions[idx],
                        &frame,
                        store,
                        &mut received,
                    )?;
                }
                ("error", Some(i)) if expected.front() == Some(&i) => {
                    expected.pop_front();
                    received.failed.insert(i, frame);
                }
                ("error", None) => return Err(PeerError::Remote(frame)),
                ("end", _) if expected.is_empty() => {
                    self.send_end()?;
                    return Ok(received);
                }
                _ => {
                    let why = format!("unexpected frame {frame}");
                    return Err(self.close_with_error("protocol", &escape(&why)));
                }
            }
        }
    }

    fn receive_file(
        &mut self,
        index: u64,
        entry: &Value,
        decision: &Decision,
        header: &Value,
        store: &mut dyn Store,
        received: &mut Received,
    ) -> PeerResult<()> {
        let path = field_str(entry, "path").unwrap_or_default().to_owned();
        let offered = field_u64(entry, "size");
        let mut content = match (field_u64(header, "offset"), decision) {
            (Some(0), _) => Vec::new(),
            (Some(o), Decision::Resume(prefix)) if o == prefix.len() as u64 => prefix.clone(),
            _ => {
                return Err(
                    self.close_with_error("protocol", &format!("data offset for entry {index}"))
                );
            }
        };
        loop {
            let payload = self.next_frame()?;
            if payload.is_empty() {
                break;
            }
            let bytes = if self.has("zstd") {
                decode_data(&payload).map_err(|why| self.close_with_error("protocol", &why))?
            } else {
                payload
            };
            content.extend_from_slice(&bytes);
            if offered.is_some_and(|size| content.len() as u64 > size) {
                return Err(
                    self.close_with_error("protocol", &format!("entry {index}: more than offered"))
                );
            }
        }
        let (done, _) = self.next_control()?;
        match (kind(&done), field_u64(&done, "index")) {
            ("done", Some(i)) if i == index => {}
            ("error", None) => return Err(PeerError::Remote(done)),
            _ => {
                return Err(
                    self.close_with_error("protocol", &format!("expected done for entry {index}"))
                );
            }
        }
        let Some(size) = field_u64(&done, "size") else {
            return Err(self.close_with_error("protocol", "done without a size"));
        };
        let hash = self.hash().digest(&content);
        let mac = mac_done(&self.ks(), self.t, index, size, &hash, &path);
        let verdict = if size != content.len() as u64 || offered.is_some_and(|o| o != size) {
            Err(("checksum".to_owned(), "size differs".to_owned()))
        } else if !hex_matches(field_str(&done, "hash"), &hash) {
            Err(("checksum".to_owned(), "hash differs".to_owned()))
        } else if !hex_matches(field_str(&done, "mac"), &mac) {
            Err(("mac".to_owned(), "mac_done did not verify".to_owned()))
        } else {
            store.keep(index, entry, &content)
        };
        match verdict {
            Ok(()) => {
                self.send_ok(index, content.len() as u64, &hash, &path)?;
                received.files.insert(path, content);
            }
            Err((code, message)) => {
                self.send_error(Some(index), &code, &message)?;
                let error =
                    json!({"type": "error", "index": index, "code": code, "message": message});
                received.failed.insert(index, error);
            }
        }
        Ok(())
    }

    // ---- Requests as a client (section 9)

    /// `list`: every item of every `listing` frame, in order. A refusal is [`PeerError::Remote`].
    pub fn list(&mut self, path: &str) -> PeerResult<Vec<Value>> {
        self.send_control(&json!({"type": "list", "path": path}))?;
        let mut items = Vec::new();
        loop {
            let listing = self.next_expected("listing")?;
            let entries = listing.get("entries").and_then(Value::as_array);
            items.extend(
                entries
                    .ok_or(PeerError::Malformed("listing without entries".into()))?
                    .iter()
                    .cloned(),
            );
            if listing.get("more") != Some(&Value::Bool(true)) {
                return Ok(items);
            }
        }
    }

    /// `usage`: the server's `usage` frame.
    pub fn usage(&mut self) -> PeerResult<Value> {
        self.send_control(&json!({"type": "usage"}))?;
        self.next_expected("usage")
    }

    fn request_ack(&mut self, request: Value) -> PeerResult<()> {
        self.send_control(&request)?;
        self.next_expected("ack").map(drop)
    }

    /// `mkdir`: `Ok` on `ack`.
    pub fn mkdir(&mut self, path: &str) -> PeerResult<()> {
        self.request_ack(json!({"type": "mkdir", "path": path}))
    }

    /// `remove`: `Ok` on `ack`.
    pub fn remove(&mut self, path: &str) -> PeerResult<()> {
        self.request_ack(json!({"type": "remove", "path": path}))
    }

    /// `rename`: `Ok` on `ack`.
    pub fn rename(&mut self, from: &str, to: &str) -> PeerResult<()> {
        self.request_ack(json!({"type": "rename", "from": from, "to": to}))
    }

    /// `put` into `dir`, then (on `ack`) the transfer as sender with the next `t`.
    pub fn put(&mut self, dir: &str, entries: &[SendEntry]) -> PeerResult<SendReport> {
        self.request_ack(json!({"type": "put", "dir": dir}))?;
        self.send_transfer(entries)
    }

    /// `get` of `paths`, then the transfer as receiver (every entry `send`) with the next `t`.
    pub fn get(&mut self, paths: &[&str]) -> PeerResult<Received> {
        self.get_into(paths, &mut |_: u64, _: &Value| Decision::Send)
    }

    /// `get` of `paths`, then the transfer as receiver with decisions from `store`.
    pub fn get_into(&mut self, paths: &[&str], store: &mut dyn Store) -> PeerResult<Received> {
        self.send_control(&json!({"type": "get", "paths": paths}))?;
        self.receive_transfer_into(store)
    }

    /// `bye`, then waits for the server to close.
    pub fn bye(&mut self) -> PeerResult<()> {
        self.send_control(&json!({"type": "bye"}))?;
        self.expect_close()
    }
}

/// Checks offered entries as a receiver must before planning: each has a string
/// `path`, a `kind` of `file` or `dir`, a `size` (a number; `null` only for the
/// single file of its offer; 0 for a dir), `mode` and `mtime` numbers when present;
/// and no directory comes after anything inside it. `Err` is answered `protocol`.
pub fn check_offer(entries: &[Value]) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = field_str(entry, "path").ok_or(format!("entry {i}: path"))?;
        let dir = match field_str(entry, "kind") {
            Some("file") => false,
            Some("dir") => true,
            _ => return Err(format!("entry {i}: kind")),
        };
        match entry.get("size") {
            Some(Value::Null) if !dir && entries.len() == 1 => {}
            Some(size) if size.as_u64().is_some_and(|s| !dir || s == 0) => {}
            _ => return Err(format!("entry {i}: size")),
        }
        for key in ["mode", "mtime"] {
            if entry.get(key).is_some_and(|v| v.as_u64().is_none()) {
                return Err(format!("entry {i}: {key}"));
            }
        }
        if dir
            && seen.iter().any(|p| {
                p.len() > path.len() && p.starts_with(path) && p.as_bytes()[path.len()] == b'/'
            })
        {
            return Err(format!("entry {i}: a directory after something inside it"));
        }
        seen.push(path);
    }
    Ok(())
}

/// `items` in groups of at most `size`, and at least one group (maybe empty): an
/// offer, a plan or a listing has at least one frame.
pub fn groups_of(items: &[Value], size: usize) -> Vec<Vec<Value>> {
    if items.is_empty() {
        return vec![Vec::new()];
    }
    items.chunks(size.max(1)).map(<[Value]>::to_vec).collect()
}
