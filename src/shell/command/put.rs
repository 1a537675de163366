//! `put`: local files and directories into a remote directory, with the checks,
//! resume and summary of `xfer put`. What the last operand means is decided here.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueHint};

use crate::client::path::resolve;
use crate::error::{Kind, fail};
use crate::fs::source::{self, WalkOptions};
use crate::shell::session::Session;

/// What `put` and `get` take for mirroring, as `xfer send` and `xfer get` do.
#[derive(Debug, Args, PartialEq, Eq, Default)]
pub(crate) struct ShellMirror {
    /// Remove what the destination's copy holds and the source does not
    #[arg(long)]
    pub(crate) delete: bool,
    /// Leave out what matches PATTERN (gitignore syntax); repeatable
    #[arg(long, value_name = "PATTERN")]
    pub(crate) exclude: Vec<String>,
    /// Take back what an --exclude left out; repeatable
    #[arg(long, value_name = "PATTERN")]
    pub(crate) include: Vec<String>,
    /// Only show what would happen
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
}

impl ShellMirror {
    /// The rules as gitignore lines: exclusions, then re-inclusions.
    pub(crate) fn rules(&self) -> Vec<String> {
        let includes = self.include.iter().map(|pattern| format!("!{pattern}"));
        self.exclude.iter().cloned().chain(includes).collect()
    }
}
use crate::shell::words::expand_home;

/// upload files and directories (-f: replace remote files; --delete: mirror)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "put [-f] FILE... [DIR]")]
pub(crate) struct Put {
    /// Replace remote files of the same name
    #[arg(short = 'f')]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) mirror: ShellMirror,
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
        let walk = WalkOptions {
            rules: self.mirror.rules(),
            ..WalkOptions::default()
        };
        let mut collected = source::collect(&files, &walk)?;
        if self.mirror.delete && !collected.has_dir() {
            bail!(fail(Kind::Usage, "--delete mirrors a directory: give one"));
        }
        collected.mirror(self.mirror.delete, self.mirror.dry_run);
        let force = self.force || self.mirror.delete;
        if collected.is_stream() {
            bail!(fail(
                Kind::Usage,
                "put sends files and directories, not streams"
            ));
        }
        let result = session.transfer("sent", |client, tally| {
            client.put(&dir, force, &collected, tally)
        });
        session.forget_listings();
        result
    }
}
