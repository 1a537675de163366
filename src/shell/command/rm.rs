//! `rm`: a remote file or empty directory.

use anyhow::Result;
use clap::Args;

use crate::client::path::resolve;
use crate::shell::session::Session;

/// remove a remote file or empty directory
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "rm PATH")]
pub(crate) struct Rm {
    /// The file or empty directory to remove
    #[arg(value_name = "PATH")]
    pub(crate) path: String,
}

impl Rm {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let path = resolve(&session.cwd, &self.path);
        session.run(|client| client.remove(&path))?;
        session.forget_listings();
        Ok(())
    }
}
