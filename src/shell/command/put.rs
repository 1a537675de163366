//! `put`: local files and directories into a remote directory, with the checks,
//! resume and summary of `xfer put`. What the last operand means is decided here.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueHint};

use crate::client::path::resolve;
use crate::error::{Kind, fail};
use crate::fs::source::{self, WalkOptions};
use crate::shell::session::Session;
use crate::shell::words::expand_home;

/// upload files and directories (-f: replace remote files)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "put [-f] FILE... [DIR]")]
pub(crate) struct Put {
    /// Replace remote files of the same name
    #[arg(short = 'f')]
    pub(crate) force: bool,
    /// What to upload; of several, the last is the remote directory when it is
    /// not a local path
    #[arg(value_name = "FILE", required = true, value_hint = ValueHint::AnyPath)]
    pub(crate) operands: Vec<String>,
}

impl Put {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let operands = self.operands.as_slice();
        let (local, dir) = match operands {
            [.., last] if operands.len() > 1 && !expand_home(last).exists() => {
                (&operands[..operands.len() - 1], resolve(&session.cwd, last))
            }
            all => (all, session.cwd.clone()),
        };
        let files: Vec<PathBuf> = local.iter().map(|f| expand_home(f)).collect();
        let collected = source::collect(&files, &WalkOptions::default())?;
        if collected.is_stream() {
            bail!(fail(
                Kind::Usage,
                "put sends files and directories, not streams"
            ));
        }
        let result = session.transfer("sent", |client, tally| {
            client.put(&dir, self.force, &collected, tally)
        });
        session.forget_listings();
        result
    }
}
