//! `mkdir`: a remote directory and its parents.

use anyhow::Result;
use clap::Args;

use crate::client::path::resolve;
use crate::shell::session::Session;

/// make a remote directory and its parents
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "mkdir PATH")]
pub(crate) struct Mkdir {
    /// The directory to make
    #[arg(value_name = "PATH")]
    pub(crate) path: String,
}

impl Mkdir {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let path = resolve(&session.cwd, &self.path);
        session.run(|client| client.mkdir(&path))?;
        session.forget_listings();
        Ok(())
    }
}
