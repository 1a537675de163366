//! The filesystem edge. What a sender reads ([`source`]: operands walked into an
//! offer, handed to sessions through the [`input`] traits); what a receiver writes ([`sink`]: temporaries, placement, resume, the
//! directory lock, the sweep); the path policy every untrusted name passes first
//! ([`path`]); and [`beneath`], the no-follow resolution beneath a held directory
//! that both the sink and `serve`'s homes stand on.
//!
//! Nothing here knows about frames or sockets. Failures an entry can have are a
//! [`Refusal`]: the wire code and a message already safe to print.

pub(crate) mod beneath;
pub(crate) mod descriptors;
pub(crate) mod filter;
pub(crate) mod home;
pub(crate) mod input;
pub(crate) mod ledger;
pub(crate) mod owners;
pub(crate) mod path;
pub(crate) mod quota;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod xattr;

use std::fmt;
use std::io;

use rustix::io::Errno;

use crate::escape::escape;
use crate::proto::message::ErrorCode;

/// Whether a regular file of `size` bytes that takes `blocks` 512-byte blocks is
/// sent as runs (`sparse`): fewer blocks than bytes, so it has holes (or is
/// compressed, and then reads as one run). The walk of `send` and a server's `get`
/// both judge by this.
/// Whether this process runs as root (its effective user; asked once: xfer never
/// changes it, and a receiver asks for every file).
pub(crate) fn running_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| rustix::process::geteuid().is_root())
}

pub(crate) fn has_holes(blocks: u64, size: u64) -> bool {
    blocks.saturating_mul(512) < size
}

/// Why an entry or a request was not (or could not be) carried out: the code for
/// the peer and a message, already escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// Nothing more of the session can succeed (a reload took its user's rights
    /// to the home): its receiver answers this entry, then ends the session, so
    /// that the sender stops instead of sending the rest to be refused.
    pub(crate) ends_session: bool,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            ends_session: false,
        }
    }

    /// A refusal after which the session can make nothing more (see
    /// `ends_session`).
    pub(crate) fn ending(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            ends_session: true,
            ..Refusal::new(code, message)
        }
    }

    /// An I/O failure on `path` while `doing` something, in a user's words.
    pub(crate) fn io(path: &str, doing: &str, err: impl Into<io::Error>) -> Self {
        let err: io::Error = err.into();
        // ENOSPC, EDQUOT and EFBIG say more to a user as words than as an errno.
        let why = match err.raw_os_error() {
            Some(code) if code == Errno::NOSPC.raw_os_error() => {
                "no space left on the receiver's disk".to_string()
            }
            Some(code) if code == Errno::DQUOT.raw_os_error() => {
                "the receiver's disk quota is exhausted".to_string()
            }
            Some(code) if code == Errno::FBIG.raw_os_error() => {
                "file too large for the receiver".to_string()
            }
            _ => err.to_string(),
        };
        Refusal::new(ErrorCode::Io, format!("{}: {doing}: {why}", escape(path)))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Refusal {}
