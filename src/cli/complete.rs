//! `xfer completions SHELL`: the completion script for a shell, generated from the
//! clap definition in `args.rs`. Owns only that; it must not reach for anything that
//! runs a transfer.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use super::args::Cli;

/// Prints the completion script for `shell` on stdout.
pub(crate) fn run(shell: clap_complete::Shell) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "xfer", &mut stdout);
    Ok(stdout.flush()?)
}
