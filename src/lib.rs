//! xfer moves files between machines over TCP: encrypted, authenticated with a
//! shared key, and verified end to end. The wire protocol is `PROTOCOL.md`; the
//! project's own account of it is `docs/PROTOCOL.md`.
//!
//! The modules, top to bottom; a module imports only from rows below its own
//! (`tests/it/layering.rs` fails on any two that reach each other):
//!
//! ```text
//! dispatch.rs        the parsed command line to one command (main.rs calls it)
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
//! `cli` turns arguments into plain options; `commands` run them through
//! `client`, `serve` or `shell`; `transfer` holds the sessions, which run
//! over `proto`'s negotiated connection that `net` opens; the filesystem
//! (`fs`) and the terminal (`ui`) sit below the sessions. The leaves import
//! nothing above them: `error` (the error kinds, the wire's error codes and the
//! exit codes; it uses only `escape`), `escape` (untrusted text made safe to
//! print), `stderr` (warnings and lines, `--quiet`), `hex`, `units`
//! (durations, sizes, rates) and `pool` (reusable buffers between threads).
//! [`fuzzing`] holds the fuzz targets' properties and is not an interface.
//!
//! The public surface is two things: [`main`] (all `src/main.rs` calls) and
//! [`fuzzing`] (what `fuzz/` and `tests/fuzz_corpus.rs` replay). Everything else is
//! `pub(crate)`: the integration tests drive the binary and speak the protocol
//! with their own independent peer, and the benches run the binary, so none of
//! them needs the crate's insides.

mod cli;
mod client;
mod commands;
mod dispatch;
mod error;
mod escape;
mod fs;
#[doc(hidden)]
pub mod fuzzing;
mod hex;
mod key;
mod net;
mod password;
mod pool;
mod proto;
mod serve;
mod shell;
mod stderr;
mod transfer;
mod ui;
mod units;

pub use dispatch::main;
