//! `lpwd`: the local directory.

use anyhow::Result;
use clap::Args;

use crate::escape::escape_path;
use crate::shell::session::Session;

/// print the local directory
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "lpwd")]
pub(crate) struct Lpwd {}

impl Lpwd {
    pub(crate) fn run(self, _session: &mut Session) -> Result<()> {
        println!("{}", escape_path(&std::env::current_dir()?));
        Ok(())
    }
}
