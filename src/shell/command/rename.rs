//! `rename` (also `mv`): a remote file or directory under a new name or place.

use anyhow::Result;
use clap::Args;

use crate::client::path::resolve;
use crate::shell::session::Session;

/// rename a remote file or directory (also: mv)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "rename OLD NEW")]
pub(crate) struct Rename {
    /// What is renamed
    #[arg(value_name = "OLD")]
    pub(crate) from: String,
    /// Its new path
    #[arg(value_name = "NEW")]
    pub(crate) to: String,
}

impl Rename {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let from = resolve(&session.cwd, &self.from);
        let to = resolve(&session.cwd, &self.to);
        session.run(|client| client.rename(&from, &to))?;
        session.forget_listings();
        Ok(())
    }
}
