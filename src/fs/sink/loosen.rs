//! Directories the receiving user owns but may not write to: a tree mirrored
//! with its read-only directories (a Go module cache, a `chmod -R a-w` archive)
//! arrives the first time, since its directories get their modes only at the
//! end, and the next run must add or remove names in them. As `rsync` does, such
//! a directory is given its owner's `rwx` just before this session changes a
//! name in it, and its own mode back before the offered modes are applied, or
//! when the session fails. Never the target itself (where the user said to
//! write), never on a server (its directories always keep its own access), never
//! where access is denied for another reason (another owner, a read-only
//! filesystem) or root, who needs no permission. A dry run changes nothing and
//! counts such a directory as one the real run could write in.

use std::os::fd::OwnedFd;
use std::sync::PoisonError;

use rustix::fs::{Mode, Stat};
use rustix::io::Errno;

use super::resolver::Resolver;
use super::target::{Loosened, TargetDir};
use crate::fs::beneath;

/// The owner's read, write and search bits.
const OWNER_RWX: u32 = 0o700;

/// `dir`'s status, if this process may not change names in it now only for want
/// of its owner's bits: the permission is what is missing (`EACCES`), it owns the
/// directory, and the owner's bits lack some of `rwx`.
fn loosenable(dir: &OwnedFd) -> Option<Stat> {
    if beneath::may_change_names(dir) != Err(Errno::ACCESS) {
        return None;
    }
    let stat = rustix::fs::fstat(dir).ok()?;
    let mine = stat.st_uid == rustix::process::geteuid().as_raw();
    (mine && stat.st_mode & OWNER_RWX != OWNER_RWX).then_some(stat)
}

impl TargetDir {
    /// Gives `dir` (`path` beneath the root, not the root) its owner's `rwx` if
    /// this session may not change names in it only for want of them (see the
    /// module), noting it for [`TargetDir::restore_loosened`]. Where that fails,
    /// the change of name that needed it fails as it would have.
    pub(crate) fn loosen(&self, dir: &OwnedFd, path: &[u8]) {
        if path.is_empty() || self.meter().is_some() {
            return;
        }
        let Some(stat) = loosenable(dir) else {
            return;
        };
        let mode = stat.st_mode & 0o7777;
        if rustix::fs::fchmod(dir, Mode::from_raw_mode(mode | OWNER_RWX)).is_ok() {
            self.loosened_dirs()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Loosened {
                    identity: (stat.st_dev, stat.st_ino),
                    path: path.to_vec(),
                    mode,
                });
        }
    }

    /// For a dry run: whether [`TargetDir::loosen`] would let this process change
    /// names in `dir` (`path` beneath the root), where it may not now.
    pub(crate) fn would_loosen(&self, dir: &OwnedFd, path: &[u8]) -> bool {
        !path.is_empty() && self.meter().is_none() && loosenable(dir).is_some()
    }

    /// Gives every directory [`TargetDir::loosen`] changed its mode back, the last
    /// loosened first (so that a directory is reached before its parent loses
    /// its owner's bits again). One no longer there (`--delete` removed it), or
    /// another directory in its place, is left alone.
    pub(crate) fn restore_loosened(&self) {
        let loosened = std::mem::take(
            &mut *self
                .loosened_dirs()
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut resolver = self.resolver();
        for dir in loosened.into_iter().rev() {
            let components: Vec<&[u8]> = dir.path.split(|&byte| byte == b'/').collect();
            let Ok(Some(fd)) = resolver.walk(&components, false) else {
                continue;
            };
            let same =
                rustix::fs::fstat(&*fd).is_ok_and(|now| (now.st_dev, now.st_ino) == dir.identity);
            if same {
                // Nothing to say where it fails: the directory keeps its owner's
                // bits, which hides nothing from anyone else.
                let _ = rustix::fs::fchmod(&*fd, Mode::from_raw_mode(dir.mode));
            }
        }
    }
}

impl Resolver<'_> {
    /// Before the plan has a name added or replaced at `components`: the deepest
    /// directory on its way that is there is loosened if need be (see the module).
    /// One this resolver made, or loosened already, costs a lookup in memory.
    pub(crate) fn let_in(&mut self, components: &[&[u8]]) {
        let Some((_, parents)) = components.split_last() else {
            return;
        };
        let mut depth = parents.len();
        let dir = loop {
            if depth == 0 || self.made_here(&parents[..depth]) {
                return;
            }
            match self.walk(&parents[..depth], false) {
                Ok(Some(dir)) => break dir,
                Ok(None) => depth -= 1,
                Err(_) => return, // refused on its way: the entry is, as before
            }
        };
        let path = parents[..depth].join(&b'/');
        if self.first_look(&path) {
            self.target.loosen(&dir, &path);
        }
    }
}
