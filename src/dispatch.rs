//! The top of the program: parse the command line, run what it asks for (one
//! command per subcommand), print any error once as `xfer: <chain>` on stderr, and
//! exit with the code its kind maps to. The dispatch lives here, above `cli` and
//! `commands`, so that `commands` never imports `cli`; [`main`] is the library's one
//! public entry, and `src/main.rs` only calls it.

use std::process::ExitCode;

use crate::cli::{self, Cli, Invocation};
use crate::commands::{keys, recv, remote, send};
use crate::ui::report;
use crate::{error, serve, shell};
use anyhow::Result;

/// Runs xfer with the process's arguments; the exit code to end with.
pub fn main() -> ExitCode {
    let invocation = Cli::parse_checked();
    match run(invocation) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::line(&format!("xfer: {err:#}"));
            ExitCode::from(error::exit_code(&err))
        }
    }
}

/// Runs what the command line asked for.
fn run(invocation: Invocation) -> Result<()> {
    if quiet(&invocation) {
        report::set_quiet();
    }
    // Before any file or socket is open: a receiver holds many (`fs::descriptors`).
    crate::fs::descriptors::raise_limit();
    // Every command that writes files (`recv`, `get`, the shell, `serve`) refuses
    // the one file a size limit stops, instead of dying of SIGXFSZ.
    crate::net::signals::survive_file_size_limit()?;
    if !matches!(invocation, Invocation::Serve(_)) {
        // A `kill -HUP` meant for a server, or a closed terminal, must not cut a transfer.
        crate::net::signals::ignore_hangup()?;
    }
    match invocation {
        Invocation::Send(options) => send::run(&options),
        Invocation::Recv(options) => recv::run(&options),
        Invocation::Serve(options) => serve::run(&options),
        Invocation::Get(options) => remote::get(&options),
        Invocation::Ls(options) => remote::ls(&options),
        Invocation::Change {
            client,
            change,
            style,
        } => remote::change(&client, &change, style),
        Invocation::Passwd { user, realm } => keys::passwd(&user, &realm),
        Invocation::Shell(options) => shell::run(&options),
        Invocation::Keygen(path) => keys::keygen(path),
        Invocation::Completions(shell) => cli::complete::run(shell),
        Invocation::Man { command, dir } => cli::man::run(command.as_deref(), dir),
    }
}

/// Whether `--quiet` was given: warnings are then not printed from the start.
fn quiet(invocation: &Invocation) -> bool {
    match invocation {
        Invocation::Send(options) => options.peering.style.quiet,
        Invocation::Recv(options) => options.peering.style.quiet,
        Invocation::Serve(options) => options.style.quiet,
        Invocation::Get(options) => options.style.quiet,
        Invocation::Ls(options) => options.style.quiet,
        Invocation::Change { style, .. } => style.quiet,
        Invocation::Shell(options) => options.quiet,
        _ => false,
    }
}
