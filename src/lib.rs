//! xfer moves files between two machines over TCP, authenticated with a shared key
//! and verified end to end. The wire protocol is `PROTOCOL.md`.
//!
//! Data flows one way: `cli` -> `send` | `recv` -> `handshake` -> `conn` -> `frame`,
//! with `net` for sockets and listening, the filesystem (`source`, `sink`) and the
//! terminal (`progress`, `report`) at the edges, reached only from `send` and `recv`.
//! Small helpers: `error` (exit codes), `escape` (printing untrusted text), `key`,
//! `pool` (reusable buffers between threads), `hashing` (MD5 of a prefix).
//! `fuzzing` holds the fuzz targets' properties and is not an interface.

pub mod cli;
pub mod conn;
pub mod error;
pub mod escape;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod hashing;
pub mod key;
pub mod net;
pub mod pool;
pub mod progress;
pub mod recv;
pub mod report;
pub mod send;
pub mod sink;
pub mod source;

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use cli::{Cli, Command};

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Send(args) => send::run(&args),
        Command::Recv(args) => recv::run(&args),
        Command::Completions(args) => {
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(args.shell, &mut Cli::command(), "xfer", &mut stdout);
            Ok(stdout.flush()?)
        }
        Command::Man => {
            let mut stdout = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command()).render(&mut stdout)?;
            Ok(stdout.flush()?)
        }
        Command::Keygen(args) => {
            let new_key = key::generate()?;
            match args.path {
                Some(path) => key::write_new(&path, &new_key),
                None => {
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "{new_key}")?;
                    Ok(stdout.flush()?)
                }
            }
        }
    }
}
