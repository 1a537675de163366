//! `help`: the list of commands, or one command's help, rendered from the clap
//! definition it is handed (`command/mod.rs` owns that), so that `help`, `CMD
//! --help`, `xfer shell --help` and completion never disagree.

use std::io::Write;

use anyhow::{Result, bail};
use clap::{Args, ValueHint};

use crate::error::{Kind, fail};
use crate::escape::escape;

/// list the commands, or explain one
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "help [COMMAND]")]
pub(crate) struct Help {
    /// The command to explain
    #[arg(value_name = "COMMAND", value_hint = ValueHint::CommandName)]
    pub(crate) command: Option<String>,
}

/// What follows the list of commands.
const AFTER_LIST: &str = "Names with spaces or quotes: quote them ('my file') or use \
                          backslashes. Tab completes remote names.";

impl Help {
    /// Prints the list of `shell`'s commands, or the help of the one asked for.
    pub(crate) fn run(self, shell: &mut clap::Command) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match self.command {
            None => {
                write!(out, "{}", listed(&summary(shell)))?;
                writeln!(out, "{AFTER_LIST}")?;
            }
            Some(name) => {
                let Some(command) = shell.find_subcommand_mut(&name) else {
                    bail!(fail(Kind::Usage, format!("no command {}", escape(&name))));
                };
                write!(out, "{}", command.render_help())?;
            }
        }
        Ok(())
    }
}

/// `cmd`'s usage line, as `help` lists it: `ls [-l] [-h] [-R] [PATH]`.
pub(crate) fn usage_of(cmd: &mut clap::Command) -> String {
    let usage = cmd.render_usage().to_string();
    usage
        .strip_prefix("Usage: ")
        .unwrap_or(&usage)
        .trim()
        .to_string()
}

/// `commands` (see [`summary`]) a line each, their usages in a column as wide as the
/// longest: a flag added to a usage widens it, here and in `xfer shell --help`.
pub(crate) fn listed(commands: &[(String, String, String)]) -> String {
    let width = (commands.iter())
        .map(|(_, usage, _)| usage.chars().count())
        .max()
        .unwrap_or(0);
    (commands.iter())
        .map(|(_, usage, what)| format!("  {usage:<width$} {what}\n"))
        .collect()
}

/// Every command of `shell`: its name, usage and what it does.
pub(crate) fn summary(shell: &mut clap::Command) -> Vec<(String, String, String)> {
    shell
        .get_subcommands_mut()
        .filter(|cmd| !cmd.is_hide_set())
        .map(|cmd| {
            let about = cmd.get_about().map(ToString::to_string).unwrap_or_default();
            (cmd.get_name().to_string(), usage_of(cmd), about)
        })
        .collect()
}
