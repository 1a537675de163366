//! `cd`: the remote directory the shell is in. Whether the target is a directory
//! is asked of its parent's listing; the server keeps no current directory.

use anyhow::{Result, bail};
use clap::Args;

use crate::client::path::resolve;
use crate::error::{Kind, fail};
use crate::escape::escape;
use crate::proto::message::ItemKind;
use crate::shell::session::Session;

/// change the remote directory (/ is the home)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "cd PATH")]
pub(crate) struct Cd {
    /// The directory, from the home if it starts with /
    #[arg(value_name = "PATH")]
    pub(crate) path: String,
}

impl Cd {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let path = self.path;
        let target = resolve(&session.cwd, &path);
        if !target.is_empty() {
            // Is it a directory? Its parent's listing says.
            let (parent, name) = target.rsplit_once('/').unwrap_or(("", &target));
            let (parent, name) = (parent.to_string(), name.to_string());
            let items = session.run(|client| client.list(&parent))?;
            match items.iter().find(|item| item.name == name) {
                Some(item) if item.kind == ItemKind::Dir => {}
                Some(_) => bail!(fail(
                    Kind::Refused,
                    format!("cd: {}: not a directory", escape(&path))
                )),
                None => bail!(fail(
                    Kind::Refused,
                    format!("cd: {}: no such directory", escape(&path))
                )),
            }
        }
        session.cwd = target;
        Ok(())
    }
}
