//! The command line: clap types ([`args`]) turned into the plain option structs the
//! commands take ([`Invocation`], built in `options.rs`, with the checks clap cannot
//! express), the man pages ([`man`]) and shell completions ([`complete`]) beside the
//! flags they describe. Nothing past this module sees clap, and nothing below it
//! imports it.

// The doc comments here are --help text, where `[ADDR:]PORT` is literal, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

pub(crate) mod args;
pub(crate) mod complete;
pub(crate) mod man;
mod options;
pub(crate) mod values;

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

pub(crate) use self::args::*;
pub(crate) use self::options::Invocation;

impl Cli {
    /// Parses and checks the process's arguments; exits with clap's usage error (2) on failure.
    pub(crate) fn parse_checked() -> Invocation {
        // Checking the options may warn (an `--include` that cannot apply): `-q`
        // must silence that too, so it takes effect before they are checked.
        let quiet_first = |matches: &clap::ArgMatches| {
            let quiet = matches
                .subcommand()
                .and_then(|(_, sub)| sub.try_get_one::<bool>("quiet").ok().flatten().copied());
            if quiet == Some(true) {
                crate::stderr::set_quiet();
            }
        };
        Cli::parse_then_check(std::env::args_os(), quiet_first).unwrap_or_else(|err| err.exit())
    }

    /// Parses and checks `args` (the program name first) into what to run.
    #[cfg(test)]
    pub(crate) fn try_parse_checked<I, T>(args: I) -> Result<Invocation, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Cli::parse_then_check(args, |_| {})
    }

    /// [`Cli::try_parse_checked`], showing `parsed` the arguments before the checks.
    fn parse_then_check<I, T>(
        args: I,
        parsed: impl FnOnce(&clap::ArgMatches),
    ) -> Result<Invocation, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        parsed(&matches);
        let cli = Cli::from_arg_matches(&matches)?;
        let subcommand = matches.subcommand_name().map(str::to_string);
        options::invocation(cli).map_err(|message| {
            // Shown with the subcommand's usage line, as clap's own errors are.
            let mut root = Cli::command();
            root.build();
            let mut command = match subcommand.and_then(|name| root.find_subcommand(&name).cloned())
            {
                Some(sub) => {
                    let name = format!("xfer {}", sub.get_name());
                    sub.bin_name(name)
                }
                None => root,
            };
            command.error(clap::error::ErrorKind::ValueValidation, message)
        })
    }
}

#[cfg(test)]
mod tests;
