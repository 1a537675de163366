//! `put`: local files and directories into a remote directory, with the checks,
//! resume and summary of `xfer put`. What the last operand means is decided here.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueHint};

use crate::client::options::IGNORE_TIMES_WITHOUT_F;
use crate::client::path::resolve;
use crate::error::{Kind, fail};
use crate::fs::filter::command_line_rules;
use crate::fs::source::{self, WalkOptions};
use crate::proto::message::Mirror;
use crate::shell::session::Session;
use crate::shell::words::expand_home;

/// What `put` and `get` take for mirroring, as `xfer send` and `xfer get` do.
#[derive(Debug, Args, PartialEq, Eq, Default)]
pub(crate) struct ShellMirror {
    /// Remove what the destination's copy holds and the source does not
    #[arg(long)]
    pub(crate) delete: bool,
    /// With --delete: also delete what the filters exclude (rsync's --delete-excluded)
    #[arg(long, requires = "delete")]
    pub(crate) delete_excluded: bool,
    /// Leave out what matches PATTERN (gitignore syntax); repeatable
    #[arg(long, value_name = "PATTERN")]
    pub(crate) exclude: Vec<String>,
    /// Take back what an --exclude left out; repeatable
    #[arg(long, value_name = "PATTERN")]
    pub(crate) include: Vec<String>,
    /// Read exclude patterns from the local FILE, one a line; repeatable
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub(crate) exclude_from: Vec<String>,
    /// Only show what would happen
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// With -f: move files of the same size and time too (by delta), as rsync's -I
    #[arg(short = 'I', long)]
    pub(crate) ignore_times: bool,
    /// Print one line per changed entry (new, replaced, deleted, attrs, ...)
    #[arg(short = 'i', long)]
    pub(crate) itemize: bool,
}

impl ShellMirror {
    /// `-I` only with `-f` (or `--delete`): without them files that are there
    /// already stay, whatever their times.
    pub(crate) fn check_ignore_times(&self, force: bool) -> Result<()> {
        if self.ignore_times && !force {
            bail!(fail(Kind::Usage, IGNORE_TIMES_WITHOUT_F));
        }
        Ok(())
    }

    /// The rules as gitignore lines, as the command line makes them: exclusions
    /// (the patterns, then the files' lines), then re-inclusions.
    pub(crate) fn rules(&self) -> Result<Vec<String>> {
        let files: Vec<PathBuf> = self.exclude_from.iter().map(|f| expand_home(f)).collect();
        command_line_rules(&self.exclude, &files, &self.include)
            .map_err(|why| fail(Kind::Usage, why))
    }
}

/// upload files and directories (-f: replace remote files; --delete: mirror; -i: list changes)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "put [-f] FILE... [DIR]")]
pub(crate) struct Put {
    /// Replace remote files of the same name
    #[arg(short = 'f')]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) mirror: ShellMirror,
    /// Honour the `.gitignore` and `.ignore` files in the trees sent
    #[arg(long)]
    pub(crate) gitignore: bool,
    /// What to upload; of several, the last is the remote directory when it is
    /// not a local path
    #[arg(value_name = "FILE", required = true, value_hint = ValueHint::AnyPath)]
    pub(crate) operands: Vec<String>,
}

impl Put {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let force = self.force || self.mirror.delete;
        self.mirror.check_ignore_times(force)?;
        let operands = self.operands.as_slice();
        let (local, dir) = match operands {
            [.., last] if operands.len() > 1 && !expand_home(last).exists() => {
                (&operands[..operands.len() - 1], resolve(&session.cwd, last))
            }
            all => (all, session.cwd.clone()),
        };
        let files: Vec<PathBuf> = local.iter().map(|f| expand_home(f)).collect();
        let rules = self.mirror.rules()?;
        crate::fs::filter::warn_of_rules_naming_a_directory_sent(&rules, &files);
        let walk = WalkOptions {
            rules,
            gitignore: self.gitignore,
            ..WalkOptions::default()
        };
        let mut collected = source::collect(&files, &walk)?;
        if self.mirror.delete && !collected.has_dir() {
            bail!(fail(Kind::Usage, "--delete mirrors a directory: give one"));
        }
        let mirror = &self.mirror;
        collected.mirror(Mirror {
            delete: mirror.delete,
            dry_run: mirror.dry_run,
            delete_excluded: mirror.delete_excluded,
            ignore_times: mirror.ignore_times,
            ..Mirror::default()
        });
        if collected.is_stream() {
            bail!(fail(
                Kind::Usage,
                "put sends files and directories, not streams"
            ));
        }
        let result = session.transfer("sent", self.mirror.itemize, |client, tally| {
            client.put(&dir, force, &collected, tally)
        });
        session.forget_listings();
        result
    }
}
