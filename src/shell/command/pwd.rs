//! `pwd`: the remote directory the shell is in, as the prompt shows it.

use anyhow::Result;
use clap::Args;

use crate::escape::escape;
use crate::shell::session::Session;
use crate::shell::words::shown;

/// print the remote directory
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "pwd")]
pub(crate) struct Pwd {}

impl Pwd {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        println!("{}", escape(&shown(&session.cwd)));
        Ok(())
    }
}
