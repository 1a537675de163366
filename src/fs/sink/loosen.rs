//! Directories the receiving user owns but may not write to: a tree mirrored
//! with its read-only directories (a Go module cache, a `chmod -R a-w` archive)
//! arrives the first time, since its directories get their modes only at the
//! end, and the next run must add or remove names in them. As `rsync` does, such
//! a directory is given its owner's `rwx` just before a session changes a name in
//! it, and its own mode back once no session of this process uses it any more:
//! before the offered modes are applied, when a session fails, and before the
//! process exits on a signal. Never the target itself (where the user said to
//! write), never on a server (its directories always keep its own access), never
//! where access is denied for another reason (another owner, a read-only
//! filesystem), for root, who needs no permission, nor where the kernel would drop
//! a setgid bit its owner could not give back. A dry run changes nothing and
//! counts such a directory as one the real run could write in.
//!
//! The rule this keeps: while any session of the process changes names in a
//! directory, it keeps the mode that lets it (`lent.rs` counts the sessions of
//! every directory they enter, writable or not); the last one to leave gives it
//! the mode it had, or the offered one when a session applied that meanwhile, and
//! only if nobody changed its mode since.

use std::os::fd::OwnedFd;
use std::sync::PoisonError;

use rustix::fs::Mode;
use rustix::io::Errno;

use super::lent::{Loan, OWNER_RWX, closing, give_back, identity, loans, loosenable};
use super::resolver::Resolver;
use super::target::TargetDir;
use crate::proto::message::Entry;

impl TargetDir {
    /// Before this session changes a name in `dir` (`path` beneath the root, not
    /// the root): counted among the directory's users, and given its owner's `rwx`
    /// if it needs them and may (see the module). Where that fails, the change of
    /// name fails as it would have.
    pub(crate) fn enter_dir(&self, dir: &OwnedFd, path: &[u8]) {
        if path.is_empty() || self.meter().is_some() {
            return;
        }
        let mut taken = self.taken().lock().unwrap_or_else(PoisonError::into_inner);
        let mut loans = loans();
        // Looked at under the lock: no session applies a mode or gives one back
        // meanwhile, and none is lent once the process gives every mode back.
        let Some(stat) = rustix::fs::fstat(dir).ok().filter(|_| !closing()) else {
            return;
        };
        let key = identity(&stat);
        match loans.get_mut(&key) {
            Some(loan) if taken.used.get(&key) == Some(&loan.serial) => return,
            Some(loan) => {
                loan.users += 1;
                taken.used.insert(key, loan.serial);
                return;
            }
            None => {}
        }
        let Some(root) = taken.root(self) else {
            return;
        };
        let mode = stat.st_mode & 0o7777;
        let loose = match loosenable(dir, &stat) {
            true if rustix::fs::fchmod(dir, Mode::from_raw_mode(mode | OWNER_RWX)).is_ok() => {
                mode | OWNER_RWX
            }
            _ => mode,
        };
        let loan = Loan::new(root, path.to_vec(), (mode, loose));
        taken.used.insert(key, loan.serial);
        loans.insert(key, loan);
    }

    /// For a dry run: whether [`TargetDir::enter_dir`] would let this process
    /// change names in `dir` (`below_root`: not the root itself), where it may not
    /// now.
    pub(crate) fn would_loosen(&self, dir: &OwnedFd, below_root: bool) -> bool {
        let stat = rustix::fs::fstat(dir);
        below_root && self.meter().is_none() && stat.is_ok_and(|stat| loosenable(dir, &stat))
    }

    /// The directory `stat` describes was removed (`--delete`, or a file took its
    /// place): its loan, if any, goes without giving anything back, so that a
    /// directory made later with the same inode number is not taken for it.
    pub(crate) fn forget_dir(&self, stat: &rustix::fs::Stat) {
        loans().remove(&identity(stat));
    }

    /// This session changes names in none of the directories it entered any more:
    /// the last user of each gives it the mode it gets back (see the module).
    pub(crate) fn leave_dirs(&self) {
        let mut taken = self.taken().lock().unwrap_or_else(PoisonError::into_inner);
        let mut loans = loans();
        for (key, serial) in std::mem::take(&mut taken.used) {
            // Gone already: given back (the process is exiting), or removed and
            // perhaps another directory's now.
            let Some(loan) = loans.get_mut(&key).filter(|loan| loan.serial == serial) else {
                continue;
            };
            loan.users -= 1;
            if loan.users == 0 {
                let loan = loans.remove(&key).expect("just found");
                give_back(key, &loan);
            }
        }
        if loans.is_empty() {
            // A long-running receiver keeps no room for its largest session's.
            loans.shrink_to_fit();
        }
    }

    /// Applies the offered metadata (`apply`, with `entry`) to directory `dir`.
    /// Where another session still changes names there, with its owner's `rwx`
    /// kept on: the offered mode is what the last user gives it. Under the
    /// registry's lock, so that no session enters it in between.
    pub(crate) fn apply_offered<T>(
        &self,
        dir: &OwnedFd,
        entry: &Entry,
        apply: impl FnOnce(&Entry) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let mut loans = loans();
        let loan = rustix::fs::fstat(dir)
            .ok()
            .and_then(|stat| loans.get_mut(&identity(&stat)));
        let (Some(loan), Some(offered)) = (loan, entry.mode) else {
            return apply(entry);
        };
        let offered = (offered & 0o7777) as u32;
        let mut kept_open = entry.clone();
        kept_open.mode = Some(u64::from(offered | OWNER_RWX));
        let applied = apply(&kept_open);
        // What the kernel made of it (it may drop a setgid bit) is what is given back from.
        if let Ok(now) = rustix::fs::fstat(dir) {
            (loan.mode, loan.loose) = (offered, now.st_mode & 0o7777);
        }
        applied
    }
}

impl Resolver<'_> {
    /// Before the plan has a name added or replaced at `components`: the deepest
    /// directory on its way that is there is entered (see the module), once per
    /// parent and resolver.
    pub(crate) fn let_in(&mut self, components: &[&[u8]]) {
        let Some((_, parents)) = components.split_last() else {
            return;
        };
        if self.target.meter().is_some() {
            return; // a server lends itself nothing
        }
        // Once per parent: the files of one directory cost a lookup in memory.
        if parents.is_empty() || !self.first_look(&parents.join(&b'/')) {
            return;
        }
        let mut depth = parents.len();
        let dir = loop {
            match self.walk(&parents[..depth], false) {
                Ok(Some(dir)) => break dir,
                Ok(None) if depth > 1 => depth -= 1,
                // Not there below the root, or refused on its way (the entry is,
                // as before).
                _ => return,
            }
        };
        self.target.enter_dir(&dir, &parents[..depth].join(&b'/'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::beneath;

    #[test]
    fn a_session_leaving_a_removed_directory_leaves_the_loan_of_its_successor_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let root = TargetDir::open(dir.path()).unwrap();
        let (first, second) = (root.for_session().unwrap(), root.for_session().unwrap());
        let fd = beneath::open_dir(root.dup_root().unwrap(), "d").unwrap();
        let stat = rustix::fs::fstat(&fd).unwrap();
        first.enter_dir(&fd, b"d");
        // Removed by the first session's `--delete`; a directory made since has
        // the same inode number (here: the same directory, entered again).
        first.forget_dir(&stat);
        second.enter_dir(&fd, b"d");
        first.leave_dirs();
        let users = |stat| loans().get(&identity(stat)).map(|loan| loan.users);
        assert_eq!(users(&stat), Some(1), "the second session's loan stands");
        second.leave_dirs();
        assert_eq!(users(&stat), None);
    }
}
