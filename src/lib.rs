//! xfer moves files between machines over TCP: encrypted, authenticated with a
//! shared key, and verified end to end. The wire protocol is `PROTOCOL.md`; the
//! project's own account of it is `docs/PROTOCOL.md`.
//!
//! Data flows one way: [`cli`] (arguments into plain options) -> [`commands`] (one
//! per subcommand) -> [`transfer`] (the send and receive sessions) -> [`proto`]
//! (negotiated connection, frames, sealing, handshake) -> the socket ([`net`]). The
//! filesystem ([`fs`]) and the terminal ([`ui`]) sit at the edges, reached from
//! `commands` and `transfer`. Small helpers: [`error`] (exit codes), [`key`] and
//! [`password`] (where keys come from), [`pool`] (reusable buffers between threads).
//! [`fuzzing`] holds the fuzz targets' properties and is not an interface.

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod escape;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod hex;
pub mod key;
pub mod net;
pub mod password;
pub mod pool;
pub mod proto;
pub mod serve;
pub mod shell;
pub mod stderr;
pub mod transfer;
pub mod ui;
pub mod units;
