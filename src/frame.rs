//! Every control frame of the xfer wire protocol as one enum, and the pure codec for
//! it: JSON payloads in and out, length caps, and the lowercase-hex encoding of hashes,
//! nonces and MACs. The contract is `PROTOCOL.md` (sections 2–5). Nothing here does
//! I/O; `conn.rs` moves frames over a stream.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The only protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u64 = 1;
/// Size of the big-endian length that precedes every frame, in bytes.
pub const LENGTH_PREFIX: usize = 4;
/// Largest control frame accepted before authentication succeeds, in bytes.
pub const MAX_PREAUTH_CONTROL: usize = 4096;
/// Largest control frame accepted after authentication, in bytes.
pub const MAX_CONTROL: usize = 16 << 20;
/// Largest data frame a receiver accepts, in bytes.
pub const MAX_DATA_FRAME: usize = 16 << 20;

/// Which side of a transfer a peer plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Sender,
    Receiver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// The error codes of `PROTOCOL.md` section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Version,
    Role,
    Auth,
    Busy,
    BadPath,
    Exists,
    TooLarge,
    Checksum,
    Mac,
    Io,
    Protocol,
    Timeout,
    /// A code this version does not know (a newer peer); treated like `protocol`.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Version => "version",
            ErrorCode::Role => "role",
            ErrorCode::Auth => "auth",
            ErrorCode::Busy => "busy",
            ErrorCode::BadPath => "bad_path",
            ErrorCode::Exists => "exists",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Checksum => "checksum",
            ErrorCode::Mac => "mac",
            ErrorCode::Io => "io",
            ErrorCode::Protocol => "protocol",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an offered entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    /// A kind from a newer peer; the receiver skips such an entry.
    #[serde(other)]
    Unknown,
}

/// One entry of an `offer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated path; untrusted until `sink::check_path` accepted it.
    pub path: String,
    pub kind: EntryKind,
    /// Total size in bytes; `None` only for a stream of unknown length.
    #[serde(default)]
    pub size: Option<u64>,
    /// Permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Modification time, whole seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

/// The receiver's answer to one offered entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Send the entry from `offset` (0 unless resuming; then `prefix_md5` is set).
    Send {
        offset: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_md5: Option<String>,
    },
    /// The receiver will not take this entry.
    Skip {
        code: ErrorCode,
        #[serde(default)]
        message: String,
    },
}

/// Every control frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Acceptor's opening: its version, role and nonce.
    Hello {
        version: u64,
        role: Role,
        nonce: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<Vec<String>>,
    },
    /// Initiator's answer: its version, role, nonce and proof of the key.
    Auth {
        version: u64,
        role: Role,
        nonce: String,
        mac: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<Vec<String>>,
    },
    /// Acceptor's proof of the key, sent only after the initiator's verified.
    AuthOk { mac: String },
    /// A failure, for one entry (`index`) or for the whole session.
    Error {
        code: ErrorCode,
        #[serde(default)]
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u64>,
    },
    /// Everything the sender has, at once.
    Offer { entries: Vec<Entry> },
    /// One decision per offered entry, in order.
    Plan { entries: Vec<Decision> },
    /// Data frames for entry `index` follow, starting at byte `offset`.
    Data { index: u64, offset: u64 },
    /// The data of entry `index` is complete.
    Done {
        index: u64,
        size: u64,
        md5: String,
        mac: String,
    },
    /// Entry `index` is verified and durable under its final name.
    Ok { index: u64, mac: String },
    /// No more from this side.
    End,
}

impl Message {
    /// The frame's `type`, for messages like `unexpected frame: plan`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Auth { .. } => "auth",
            Message::AuthOk { .. } => "auth_ok",
            Message::Error { .. } => "error",
            Message::Offer { .. } => "offer",
            Message::Plan { .. } => "plan",
            Message::Data { .. } => "data",
            Message::Done { .. } => "done",
            Message::Ok { .. } => "ok",
            Message::End => "end",
        }
    }

    /// A session-level error frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error {
            code,
            message: message.into(),
            index: None,
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

/// Why bytes could not become a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds the cap in force; nothing was allocated for it.
    TooLong { len: u64, max: usize },
    /// The payload is not a valid control frame (not UTF-8, not JSON, unknown type, ...).
    Malformed(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::Malformed(why) => write!(f, "malformed control frame: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Checks a frame length against its cap; call before allocating anything for it.
pub fn check_len(len: u32, max: usize) -> Result<usize, FrameError> {
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLong {
            len: len as u64,
            max,
        });
    }
    Ok(len)
}

/// A control frame ready for the wire: length prefix and JSON payload in one buffer,
/// so it goes out with a single write. Refused if it would exceed [`MAX_CONTROL`],
/// which no peer would accept (an offer of a very large tree can).
pub fn try_encode(message: &Message) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0; LENGTH_PREFIX];
    serde_json::to_writer(&mut out, message).expect("a Message always serialises to JSON");
    let len = out.len() - LENGTH_PREFIX;
    if len > MAX_CONTROL {
        return Err(FrameError::TooLong {
            len: len as u64,
            max: MAX_CONTROL,
        });
    }
    let len = u32::try_from(len).expect("checked against MAX_CONTROL");
    out[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// [`try_encode`] for the messages that are small by construction (all but offers and plans).
pub fn encode(message: &Message) -> Vec<u8> {
    try_encode(message).expect("this message is far below the control frame limit")
}

/// Parses a control frame's payload (without its length prefix).
pub fn decode(payload: &[u8]) -> Result<Message, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Malformed("empty frame".into()));
    }
    // serde_json limits nesting depth, so hostile deep JSON fails instead of overflowing the stack.
    serde_json::from_slice(payload).map_err(|err| FrameError::Malformed(err.to_string()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// Decodes exactly `N` bytes from exactly `2 * N` lowercase hex digits; anything
/// else (upper case, wrong length, other characters) is `None`.
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: Message) {
        let bytes = encode(&message);
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode(&bytes[4..]).unwrap(), message);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Hello {
            version: 1,
            role: Role::Receiver,
            nonce: "ab".repeat(32),
            features: None,
        });
        round_trip(Message::Auth {
            version: 1,
            role: Role::Sender,
            nonce: "cd".repeat(32),
            mac: "ef".repeat(32),
            user: None,
            features: Some(vec![]),
        });
        round_trip(Message::AuthOk {
            mac: "01".repeat(32),
        });
        round_trip(Message::error(ErrorCode::Busy, "at the connection limit"));
        round_trip(Message::Error {
            code: ErrorCode::BadPath,
            message: "absolute".into(),
            index: Some(3),
        });
        round_trip(Message::Offer {
            entries: vec![
                Entry {
                    path: "docs/hello.txt".into(),
                    kind: EntryKind::File,
                    size: Some(u64::MAX),
                    mode: Some(0o644),
                    mtime: Some(-5),
                },
                Entry {
                    path: "stdin".into(),
                    kind: EntryKind::Dir,
                    size: None,
                    mode: None,
                    mtime: None,
                },
            ],
        });
        round_trip(Message::Plan {
            entries: vec![
                Decision::Send {
                    offset: 10,
                    prefix_md5: Some("00".repeat(16)),
                },
                Decision::Skip {
                    code: ErrorCode::Exists,
                    message: "exists".into(),
                },
            ],
        });
        round_trip(Message::Data {
            index: 1,
            offset: 0,
        });
        round_trip(Message::Done {
            index: 1,
            size: 5 << 32,
            md5: "aa".repeat(16),
            mac: "bb".repeat(32),
        });
        round_trip(Message::Ok {
            index: 1,
            mac: "cc".repeat(32),
        });
        round_trip(Message::End);
    }

    #[test]
    fn wire_shape_matches_the_protocol_text() {
        let offer = Message::Offer {
            entries: vec![Entry {
                path: "x".into(),
                kind: EntryKind::File,
                size: None,
                mode: None,
                mtime: None,
            }],
        };
        let json = String::from_utf8(encode(&offer)[4..].to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"type":"offer","entries":[{"path":"x","kind":"file","size":null}]}"#
        );
        let json = String::from_utf8(encode(&Message::End)[4..].to_vec()).unwrap();
        assert_eq!(json, r#"{"type":"end"}"#);
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_refused() {
        let msg = decode(br#"{"type":"data","index":2,"offset":0,"future":[1,2]}"#).unwrap();
        assert_eq!(
            msg,
            Message::Data {
                index: 2,
                offset: 0
            }
        );
        assert!(matches!(
            decode(br#"{"type":"teleport"}"#),
            Err(FrameError::Malformed(_))
        ));
        let code = decode(br#"{"type":"error","code":"quota_v9","message":"m"}"#).unwrap();
        assert!(matches!(
            code,
            Message::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let deep = "[".repeat(10_000);
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"not json",
            b"[]",
            b"{}",
            b"{\"type\":7}",
            b"{\"type\":\"hello\"}",
            b"{\"type\":\"done\",\"index\":0,\"size\":-1,\"md5\":\"\",\"mac\":\"\"}",
            b"{\"type\":\"done\",\"index\":0,\"size\":\"5\",\"md5\":\"\",\"mac\":\"\"}",
            deep.as_bytes(),
        ] {
            assert!(
                matches!(decode(bad), Err(FrameError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lengths_over_the_cap_are_refused() {
        assert_eq!(check_len(4096, MAX_PREAUTH_CONTROL), Ok(4096));
        assert_eq!(
            check_len(4097, MAX_PREAUTH_CONTROL),
            Err(FrameError::TooLong {
                len: 4097,
                max: 4096
            })
        );
        assert!(check_len(u32::MAX, MAX_CONTROL).is_err());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_when_encoding() {
        let entry = Entry {
            path: "x".repeat(250),
            kind: EntryKind::File,
            size: Some(1),
            mode: None,
            mtime: None,
        };
        let entries = vec![entry; (MAX_CONTROL / 250) + 1];
        let offer = Message::Offer { entries };
        assert!(matches!(
            try_encode(&offer),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn hex_is_strict_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex::<3>("00abff"), Some([0x00, 0xab, 0xff]));
        assert_eq!(unhex::<3>("00ABFF"), None);
        assert_eq!(unhex::<3>("00abf"), None);
        assert_eq!(unhex::<3>("00abfff0"), None);
        assert_eq!(unhex::<3>("00abgg"), None);
        assert_eq!(unhex::<2>("+1ab"), None);
    }
}
