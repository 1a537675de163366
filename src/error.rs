//! The few error kinds a caller branches on, and the exit code each one gives.
//!
//! Sessions use `anyhow` with context everywhere; where an error decides the exit
//! code it is tagged once with a [`Kind`] (see [`Classify`] and [`fail`]), where the
//! failure is seen; `main` maps the innermost tag in the chain to an exit code.
//! Tagging does not change the message: `{err:#}` prints the same chain either way.
//! The wire's error codes ([`ErrorCode`], `PROTOCOL.md` section 3) are defined here
//! too, one table with the kinds they map to. A leaf: it imports nothing above it
//! (only `crate::escape`), so every layer can tag its errors.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::escape::escape_said;

/// The error codes of `PROTOCOL.md` section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    Version,
    Role,
    Auth,
    Feature,
    Busy,
    BadPath,
    NotFound,
    Denied,
    Exists,
    Same,
    TooLarge,
    Quota,
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Version => "version",
            ErrorCode::Role => "role",
            ErrorCode::Auth => "auth",
            ErrorCode::Feature => "feature",
            ErrorCode::Busy => "busy",
            ErrorCode::BadPath => "bad_path",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Denied => "denied",
            ErrorCode::Exists => "exists",
            ErrorCode::Same => "same",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Quota => "quota",
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

/// Why a transfer failed, as far as the exit code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The peer could not be reached, went away, timed out, or was busy (exit 3).
    Network,
    /// The peers do not share the key, or the peer would not prove it (exit 4).
    Auth,
    /// A checksum or MAC did not verify (exit 5).
    Verification,
    /// The receiver refused an entry: it exists, its path is unsafe, or it is too large (exit 6).
    Refused,
    /// Reading a source or writing the target failed, here or on the receiver (exit 7).
    Io,
    /// The peer broke the protocol: malformed or unexpected frames, or a role mismatch (exit 8).
    Protocol,
    /// The peer speaks another protocol version, or lacks a feature this side
    /// requires (`--encrypt`, `--hash blake3`), or requires one this side left out (exit 9).
    Incompatible,
    /// The command line asked for something impossible (exit 2, as clap's own errors).
    Usage,
    /// Some entries under the operands were not transferred (a socket, an unreadable
    /// file, a name the peer cannot take); everything else arrived and verified (exit 10).
    NotSent,
}

impl Kind {
    /// The process exit code for this kind, as listed in the README.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Kind::Network => 3,
            Kind::Auth => 4,
            Kind::Verification => 5,
            Kind::Refused => 6,
            Kind::Io => 7,
            Kind::Protocol => 8,
            Kind::Incompatible => 9,
            Kind::Usage => 2,
            Kind::NotSent => 10,
        }
    }

    /// The kind of failure a peer's error frame reports.
    pub(crate) fn of_code(code: ErrorCode) -> Kind {
        match code {
            ErrorCode::Role | ErrorCode::Protocol | ErrorCode::Unknown => Kind::Protocol,
            ErrorCode::Version | ErrorCode::Feature => Kind::Incompatible,
            ErrorCode::Auth => Kind::Auth,
            ErrorCode::Busy | ErrorCode::Timeout => Kind::Network,
            ErrorCode::BadPath
            | ErrorCode::NotFound
            | ErrorCode::Denied
            | ErrorCode::Exists
            | ErrorCode::Same
            | ErrorCode::TooLarge
            | ErrorCode::Quota => Kind::Refused,
            ErrorCode::Checksum | ErrorCode::Mac => Kind::Verification,
            ErrorCode::Io => Kind::Io,
        }
    }
}

/// An error tagged with its [`Kind`], and with the wire code the peer is told when
/// it ends a session; displays exactly as the error it wraps.
#[derive(Debug)]
struct Tagged {
    kind: Kind,
    code: Option<ErrorCode>,
    inner: anyhow::Error,
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the top message: anyhow prints the rest of the chain through `source`.
        write!(f, "{}", self.inner)
    }
}

impl std::error::Error for Tagged {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// A new error of the given kind.
pub(crate) fn fail(kind: Kind, message: impl fmt::Display) -> anyhow::Error {
    tag(kind, anyhow::anyhow!("{message}"))
}

/// Tags an existing error with a kind (an inner tag, if any, still wins).
pub(crate) fn tag(kind: Kind, err: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Tagged {
        kind,
        code: None,
        inner: err.into(),
    })
}

/// A failure the peer is told about with `code` (its kind follows from the code).
pub(crate) fn refused(code: ErrorCode, message: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Tagged {
        kind: Kind::of_code(code),
        code: Some(code),
        inner: anyhow::anyhow!("{message}"),
    })
}

/// The code a session-level error frame carries for `err`: the one it was refused
/// with, else what its kind means on the wire. `None`: tell the peer nothing (the
/// connection is gone, or the peer failed to authenticate).
pub(crate) fn wire_code(err: &anyhow::Error) -> Option<ErrorCode> {
    if said_by_peer(err) {
        return None;
    }
    let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(current) = layer {
        if let Some(tagged) = current.downcast_ref::<Tagged>() {
            if let Some(code) = wire_code(&tagged.inner) {
                return Some(code);
            }
            return tagged.code.or(match tagged.kind {
                Kind::Protocol => Some(ErrorCode::Protocol),
                Kind::Io => Some(ErrorCode::Io),
                Kind::Verification => Some(ErrorCode::Mac),
                Kind::Refused => Some(ErrorCode::TooLarge),
                _ => None,
            });
        }
        layer = current.source();
    }
    None
}

/// Tags the error of a `Result` with a kind.
pub(crate) trait Classify<T> {
    fn classify(self, kind: Kind) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn classify(self, kind: Kind) -> anyhow::Result<T> {
        self.map_err(|err| tag(kind, err))
    }
}

/// Whether `err` is a connection that ended with nothing said: the network's own
/// failure (a reset, an end of file, a write to a peer that went), not a frame of
/// the peer's, nor a verdict of ours (an idle timeout carries its code).
pub(crate) fn connection_lost(err: &anyhow::Error) -> bool {
    kind_of(err) == Some(Kind::Network) && wire_code(err).is_none()
}

/// The kind an error was tagged with, the innermost tag winning: the place that
/// saw the failure knows best what it was, outer layers only add context.
pub(crate) fn kind_of(err: &anyhow::Error) -> Option<Kind> {
    let mut found = None;
    let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(current) = layer {
        if let Some(tagged) = current.downcast_ref::<Tagged>() {
            found = Some(tagged.kind);
            // `Tagged::source` skips the wrapped error's own top layer, so look inside too.
            if let Some(inner) = kind_of(&tagged.inner) {
                found = Some(inner);
            }
            break;
        }
        layer = current.source();
    }
    found
}

/// A failure the peer reported in an error frame: nothing to tell it back.
#[derive(Debug)]
struct PeerSaid(String, ErrorCode);

impl fmt::Display for PeerSaid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PeerSaid {}

/// Whether `err` is (or wraps) what the peer reported in an error frame.
pub(crate) fn said_by_peer(err: &anyhow::Error) -> bool {
    let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(current) = layer {
        if current.downcast_ref::<PeerSaid>().is_some() {
            return true;
        }
        if let Some(tagged) = current.downcast_ref::<Tagged>() {
            return said_by_peer(&tagged.inner);
        }
        layer = current.source();
    }
    false
}

/// The error a peer's session-level `error` frame reports, its text escaped.
pub(crate) fn peer_error(code: ErrorCode, message: &str) -> anyhow::Error {
    let said = escape_said(message);
    let text = match code {
        ErrorCode::Busy => {
            let said = said.trim_end_matches("; try again later");
            format!("the peer is busy ({said}); try again later")
        }
        // After the handshake, `auth` is the peer ending the session (a server whose
        // reload changed or removed this user); the handshake words its own refusal.
        ErrorCode::Auth => format!("the server ended this session: {said}"),
        ErrorCode::Timeout => format!("the peer gave up waiting for us ({said})"),
        _ => format!("the peer reported {code}: {said}"),
    };
    tag(
        Kind::of_code(code),
        anyhow::Error::new(PeerSaid(text, code)),
    )
}

/// The code of the error frame `err` reports, if it is a peer's report.
pub(crate) fn peer_code(err: &anyhow::Error) -> Option<ErrorCode> {
    let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(current) = layer {
        if let Some(said) = current.downcast_ref::<PeerSaid>() {
            return Some(said.1);
        }
        if let Some(tagged) = current.downcast_ref::<Tagged>() {
            return peer_code(&tagged.inner);
        }
        layer = current.source();
    }
    None
}

/// A copy of `err` for a second report of it (an error is not `Clone`): its
/// whole text and its kind, so its exit code is the same.
pub(crate) fn retold(err: &anyhow::Error) -> anyhow::Error {
    let text = anyhow::anyhow!("{err:#}");
    match kind_of(err) {
        Some(kind) => tag(kind, text),
        None => text,
    }
}

/// The exit code for an error: its kind's code, or 1 for anything untagged.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    kind_of(err).map_or(1, Kind::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn tag_survives_context_and_keeps_the_message() {
        let err = Err::<(), _>(std::io::Error::other("reset"))
            .classify(Kind::Network)
            .context("sending a.txt")
            .unwrap_err();
        assert_eq!(exit_code(&err), 3);
        assert_eq!(format!("{err:#}"), "sending a.txt: reset");
    }

    #[test]
    fn innermost_tag_wins() {
        let inner = fail(Kind::Auth, "wrong key");
        let err = tag(Kind::Network, inner.context("handshake"));
        assert_eq!(kind_of(&err), Some(Kind::Auth));
    }

    #[test]
    fn untagged_errors_exit_1() {
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), 1);
    }
}
