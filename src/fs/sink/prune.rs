//! `--delete` on the receiving side ([`TargetDir::prune`]): what the offered
//! directories hold and the offer does not, removed (files, links and other
//! non-directories, then the directories they emptied), beneath the target only.
//!
//! Every directory is opened from its parent without following links
//! (`beneath`), and `unlinkat` removes a link itself, never what it points at: a
//! link planted in the tree, or an offered directory that is a link here, leads
//! nowhere. Spared: whatever the caller keeps (the filter's exclusions, paths another
//! session of this process is receiving), xfer's own temporaries and partials,
//! names that are not UTF-8 (no report could name them), anything changed since
//! the session began (`ctime`: a file another session renamed into place, a
//! directory it added to), and on a server whatever the user's ledger says another
//! `put` is writing; what a server removes is given back to the user's quota.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use super::target::TargetDir;
use crate::fs::beneath::{self, MAX_DEPTH};
use crate::fs::path::{check_path, is_reserved_bytes};
use crate::proto::message::{ItemKind, Removed};

/// What [`TargetDir::prune`] may remove, and how.
pub(crate) struct Prune<'a> {
    /// Whether a path beneath the target is in the offer (or above something in it).
    pub(crate) offered: &'a dyn Fn(&str) -> bool,
    /// Whether a path (a directory: `true`) must stay although the offer lacks it.
    pub(crate) keep: &'a dyn Fn(&str, bool) -> bool,
    /// Nanoseconds since the epoch when the session began: newer changes are spared.
    pub(crate) since: i128,
    /// Only say what would go (`--dry-run`).
    pub(crate) dry_run: bool,
}

impl TargetDir {
    /// Removes what the offered directories `dirs` (accepted by the plan, paths
    /// beneath the target) hold and the offer does not, and says each removal (or
    /// failure) to `said`, deepest first.
    pub(crate) fn prune(&self, dirs: &[&str], rules: &Prune<'_>, said: &mut dyn FnMut(Removed)) {
        let Ok(root) = self.dup_root() else {
            return;
        };
        for dir in dirs {
            let Ok(components) = check_path(dir) else {
                continue;
            };
            // A component that is a link (or gone) is never entered.
            if let Ok(Some(fd)) = beneath::walk(&root, &components, false) {
                let mut walk = Walk {
                    rules,
                    said: &mut *said,
                    meter: self,
                };
                walk.children(&fd, dir, components.len());
            }
        }
    }
}

/// When `stat`'s inode last changed, in nanoseconds since the epoch.
fn changed_at(stat: &rustix::fs::Stat) -> i128 {
    i128::from(stat.st_ctime) * 1_000_000_000 + i128::from(stat.st_ctime_nsec)
}

struct Walk<'a, 'b> {
    rules: &'a Prune<'a>,
    said: &'b mut dyn FnMut(Removed),
    meter: &'a TargetDir,
}

impl Walk<'_, '_> {
    /// Looks at each child of the directory `fd` (offered as `path`); returns
    /// whether all of them went (or, in a dry run, would).
    fn children(&mut self, fd: &OwnedFd, path: &str, depth: usize) -> bool {
        let mut emptied = true;
        // In name order, so that a report reads the same on every run.
        let mut children: Vec<_> = beneath::children(fd).collect();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, stat) in children {
            let Ok(name) = name.into_string() else {
                emptied = false; // not UTF-8: no report could name it
                continue;
            };
            let child = format!("{path}/{name}");
            let is_dir = beneath::kind(&stat) == FileType::Directory;
            let spared = (self.rules.offered)(&child)
                || is_reserved_bytes(name.as_bytes())
                || (self.rules.keep)(&child, is_dir)
                || changed_at(&stat) >= self.rules.since;
            if spared || !self.remove(fd, &name, &child, &stat, depth) {
                emptied = false;
            }
        }
        emptied
    }

    /// Removes `name` (a directory with what it holds); whether it went.
    fn remove(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        path: &str,
        stat: &rustix::fs::Stat,
        depth: usize,
    ) -> bool {
        let kind = match beneath::kind(stat) {
            FileType::Directory => ItemKind::Dir,
            FileType::RegularFile => ItemKind::File,
            _ => ItemKind::Other,
        };
        if kind == ItemKind::Dir {
            let Ok(fd) = beneath::open_dir(parent, name) else {
                return false;
            };
            if depth >= MAX_DEPTH || !self.children(&fd, path, depth + 1) {
                return false; // something stays inside: so does the directory
            }
        }
        let result = if self.rules.dry_run {
            Ok(())
        } else {
            self.unlink(parent, name, path, stat, kind)
        };
        match result {
            Ok(()) => {
                (self.said)(Removed {
                    path: path.to_string(),
                    kind,
                    error: None,
                });
                true
            }
            // Another session wrote into it meanwhile, or is writing it: it stays.
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::BUSY | Errno::NOENT) => false,
            Err(err) => {
                (self.said)(Removed {
                    path: path.to_string(),
                    kind,
                    error: Some(std::io::Error::from(err).to_string()),
                });
                false
            }
        }
    }

    /// One `unlinkat`; on a server, under the user's ledger, refused (`BUSY`) for a
    /// path another `put` is writing, and what left the disk given back.
    fn unlink(
        &self,
        parent: &OwnedFd,
        name: &str,
        path: &str,
        stat: &rustix::fs::Stat,
        kind: ItemKind,
    ) -> Result<(), Errno> {
        let flags = match kind {
            ItemKind::Dir => AtFlags::REMOVEDIR,
            _ => AtFlags::empty(),
        };
        let Some(account) = self.meter.meter() else {
            return rustix::fs::unlinkat(parent, name, flags);
        };
        let mut books = account.books();
        if books.unclaimed(&account.home_path(path)).is_err() {
            return Err(Errno::BUSY);
        }
        rustix::fs::unlinkat(parent, name, flags)?;
        if kind == ItemKind::File {
            books.shrank(stat.st_size as u64, 1);
        }
        Ok(())
    }
}
