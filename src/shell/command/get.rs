//! `get`: remote files and directories into a local directory, with the checks,
//! resume and summary of `xfer get`. What the last operand means is decided here.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::client::path::resolve;
use crate::error::{Kind, fail, peer_code};
use crate::escape::escape_path;
use crate::fs::filter::get_request;
use crate::fs::path::Names;
use crate::fs::sink::{DirLock, TargetDir};
use crate::proto::message::ErrorCode;
use crate::shell::command::put::ShellMirror;
use crate::shell::session::Session;
use crate::shell::words::expand_home;
use crate::transfer::recv::{Destination, Settings};
use crate::ui::report::Style;

/// download files and directories (-f: replace local files; -X: with extended attributes;
/// --delete: mirror; -i: list changes)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "get [-f] [-X] PATH... [LOCAL]")]
pub(crate) struct Get {
    /// Replace local files of the same name
    #[arg(short = 'f')]
    pub(crate) force: bool,
    /// Bring back extended attributes (`user.*`, all a server keeps)
    #[arg(short = 'X', long)]
    pub(crate) xattrs: bool,
    #[command(flatten)]
    pub(crate) mirror: ShellMirror,
    /// What to download; of several, the last is the local directory when it is
    /// one here or names nothing on the server (then it is made)
    #[arg(value_name = "PATH", required = true)]
    pub(crate) operands: Vec<String>,
}

impl Get {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        // Filters first: an --exclude-from that cannot be read makes nothing here.
        let (delete, dry_run) = (self.mirror.delete, self.mirror.dry_run);
        self.mirror.check_ignore_times(self.force || delete)?;
        let mirror = get_request(&self.mirror.rules()?, delete, dry_run)
            .map_err(|why| fail(Kind::Usage, why))?;
        let (remote, local) = match self.operands.as_slice() {
            [first @ .., last] if !first.is_empty() && names_local_dir(session, last)? => {
                let local = expand_home(last);
                // A dry run makes nothing, not even the local directory.
                if !dry_run {
                    std::fs::create_dir_all(&local).map_err(|err| {
                        fail(
                            Kind::Io,
                            format!("cannot make {}: {err}", escape_path(&local)),
                        )
                    })?;
                }
                (first, local)
            }
            all => (all, PathBuf::from(".")),
        };
        let paths = remote
            .iter()
            .map(|path| resolve(&session.cwd, path))
            .collect::<Vec<_>>();
        let (target, _lock) = local_target(&local, dry_run, session.style)?;
        let destination = Destination::Dir(target);
        let settings = Settings {
            overwrite: self.force || delete,
            resume: true,
            names: Names::Safe,
            asked: Some((delete, dry_run)),
            delete_excluded: self.mirror.delete_excluded,
            ignore_times: self.mirror.ignore_times,
            xattrs: self.xattrs,
        };
        session.transfer("received", self.mirror.itemize, |client, tally| {
            client.asking(mirror.clone())?;
            client.get(&paths, &destination, settings, tally)
        })
    }
}

/// The local directory, opened and locked; in a dry run (which makes nothing) one
/// not there yet is said (as `style` says) and planned into as empty.
fn local_target(local: &Path, dry_run: bool, style: Style) -> Result<(TargetDir, Option<DirLock>)> {
    if !dry_run {
        let target = TargetDir::open(local)?.for_a_get();
        let lock = target.lock(local)?;
        return Ok((target, Some(lock)));
    }
    let (target, lock) = TargetDir::open_for_dry_run(local, "the local directory", style)?;
    Ok((target.for_a_get(), lock))
}

/// Is `last`, of several `get` operands, where to put what arrives?
fn names_local_dir(session: &mut Session, last: &str) -> Result<bool> {
    if expand_home(last).is_dir() {
        return Ok(true);
    }
    let remote = resolve(&session.cwd, last);
    match session.run(|client| client.list(&remote)) {
        Ok(_) => Ok(false),
        Err(err) if peer_code(&err) == Some(ErrorCode::NotFound) => Ok(true),
        Err(err) => Err(err),
    }
}
