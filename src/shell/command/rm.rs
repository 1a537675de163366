//! `rm`: remote files or empty directories, or (`-r`) directories with all inside.

use anyhow::Result;
use clap::Args;

use crate::client::path::resolve;
use crate::shell::session::Session;

/// remove remote files or empty directories (-r: with all inside)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "rm [-r] PATH...")]
pub(crate) struct Rm {
    /// Remove directories and everything inside them (links are never followed; the
    /// server removes none: one stops it)
    #[arg(short = 'r', short_alias = 'R')]
    pub(crate) recursive: bool,
    /// What to remove, one after the other; the first failure stops
    #[arg(value_name = "PATH", required = true)]
    pub(crate) paths: Vec<String>,
}

impl Rm {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let recursive = self.recursive;
        let result = self.paths.iter().try_for_each(|path| {
            let path = resolve(&session.cwd, path);
            session.run(|client| {
                if recursive {
                    client.remove_tree(&path)
                } else {
                    client.remove(&path)
                }
            })
        });
        session.forget_listings();
        result
    }
}
