//! xfer moves files between machines over TCP: encrypted, authenticated with a
//! shared key, and verified end to end. The wire protocol is `PROTOCOL.md`; the
//! project's own account of it is `docs/PROTOCOL.md`.
//!
//! The modules, top to bottom; a module imports only from rows below its own
//! (`tests/it/layering.rs` fails on any two that reach each other):
//!
//! ```text
//! main.rs            dispatch: the parsed command line to one command
//! cli/               clap types -> plain option structs; man pages, completions
//! commands/          one function per subcommand, taking option structs
//! shell/ -> client/   serve/     the shell drives the client; serve answers requests
//! transfer/          sender and receiver sessions: offer, plan, data, tally
//! fs/   net/         source, input, sink, homes, quotas; sockets, connect, listen
//! ui/                bars, reports, listings (it shows proto's hashes and items)
//! proto/             messages, frames, handshake, negotiated state, sealing, zstd
//! password.rs        a password into a key
//! key.rs             where keys come from
//! error.rs escape.rs stderr.rs hex.rs units.rs pool.rs     leaves
//! ```
//!
//! [`cli`] turns arguments into plain options; [`commands`] run them through
//! [`client`], [`serve`] or [`shell`]; [`transfer`] holds the sessions, which run
//! over [`proto`]'s negotiated connection that [`net`] opens; the filesystem
//! ([`fs`]) and the terminal ([`ui`]) sit below the sessions. The leaves import
//! nothing above them: [`error`] (the error kinds, the wire's error codes and the
//! exit codes; it uses only [`escape`]), [`escape`] (untrusted text made safe to
//! print), [`stderr`] (warnings and lines, `--quiet`), [`hex`], [`units`]
//! (durations, sizes, rates) and [`pool`] (reusable buffers between threads).
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
