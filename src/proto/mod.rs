//! The wire protocol (`PROTOCOL.md`; the project's own account is `docs/PROTOCOL.md`),
//! from the bottom up: [`message`] (every control frame and its strict codec), [`seal`]
//! (AES-256-GCM per frame) and [`compress`] (zstd data frames) beneath [`wire`] (frames
//! over a stream; both size their buffers with `buffer`), [`handshake`] (mutual
//! authentication), which yields a [`negotiated::Negotiated`]: roles, user, features,
//! session key and the MACs of each transfer. [`hash`] is the content hash (MD5 or
//! BLAKE3) files are verified with; [`delta`] chunks files (finding cuts with `cut`)
//! and codes the instructions of feature `delta`.
//!
//! Nothing here touches files or the terminal.

mod buffer;
pub(crate) mod compress;
pub(crate) mod cut;
pub(crate) mod delta;
pub(crate) mod entry;
pub(crate) mod handshake;
pub(crate) mod hash;
pub(crate) mod message;
pub(crate) mod negotiated;
pub(crate) mod seal;
pub(crate) mod wire;
