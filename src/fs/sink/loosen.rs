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
//! The rule this keeps: a directory is given back the mode it had (or, when a
//! session applied the offered mode meanwhile, that one) by the last session of
//! the process that used it, and only if nobody changed its mode since.

use std::os::fd::OwnedFd;
use std::sync::{Arc, PoisonError};

use rustix::fs::Mode;

use super::lent::{Loan, OWNER_RWX, give_back, identity, loans, loosenable};
use super::target::TargetDir;
use crate::proto::message::Entry;

impl TargetDir {
    /// Before this session changes a name in `dir` (`path` beneath the root, not
    /// the root): given its owner's `rwx` if it needs them and may (see the module),
    /// or counted as used where another session lent it already. Where that fails,
    /// the change of name fails as it would have.
    pub(crate) fn loosen(&self, dir: &OwnedFd, path: &[u8]) {
        if path.is_empty() || self.meter().is_some() {
            return;
        }
        let Ok(stat) = rustix::fs::fstat(dir) else {
            return;
        };
        let mut taken = self.taken().lock().unwrap_or_else(PoisonError::into_inner);
        let mut loans = loans();
        if let Some(loan) = loans
            .iter_mut()
            .find(|loan| loan.identity == identity(&stat))
        {
            if !taken.used.contains(&loan.identity) {
                loan.users += 1;
                taken.used.push(loan.identity);
            }
            return;
        }
        let Some(stat) = loosenable(dir) else {
            return;
        };
        let (mode, loose) = (stat.st_mode & 0o7777, (stat.st_mode & 0o7777) | OWNER_RWX);
        let root = match &taken.root {
            Some(root) => root.clone(),
            None => match self.dup_root() {
                Ok(root) => taken.root.insert(Arc::new(root)).clone(),
                Err(_) => return,
            },
        };
        if rustix::fs::fchmod(dir, Mode::from_raw_mode(loose)).is_ok() {
            loans.push(Loan {
                identity: identity(&stat),
                root,
                path: path.to_vec(),
                mode,
                loose,
                users: 1,
            });
            taken.used.push(identity(&stat));
        }
    }

    /// For a dry run: whether [`TargetDir::loosen`] would let this process change
    /// names in `dir` (`path` beneath the root), where it may not now.
    pub(crate) fn would_loosen(&self, dir: &OwnedFd, path: &[u8]) -> bool {
        !path.is_empty() && self.meter().is_none() && loosenable(dir).is_some()
    }

    /// This session uses none of the directories it took any more: the last user
    /// of each gives it its mode back (see [`give_back`]).
    pub(crate) fn restore_loosened(&self) {
        let used = std::mem::take(
            &mut self
                .taken()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .used,
        );
        let mut loans = loans();
        for identity in used {
            let Some(at) = loans.iter().position(|loan| loan.identity == identity) else {
                continue;
            };
            loans[at].users -= 1;
            if loans[at].users == 0 {
                give_back(&loans.swap_remove(at));
            }
        }
    }

    /// The offered metadata for directory `dir`, as applied now: where another
    /// session still uses it, with its owner's `rwx` kept, the offered mode being
    /// what the last user gives it back.
    pub(crate) fn offered_while_lent<'e>(
        &self,
        dir: &OwnedFd,
        entry: &'e Entry,
    ) -> std::borrow::Cow<'e, Entry> {
        let (Ok(stat), Some(offered)) = (rustix::fs::fstat(dir), entry.mode) else {
            return std::borrow::Cow::Borrowed(entry);
        };
        let mut loans = loans();
        let Some(loan) = loans
            .iter_mut()
            .find(|loan| loan.identity == identity(&stat))
        else {
            return std::borrow::Cow::Borrowed(entry);
        };
        let offered = (offered & 0o7777) as u32;
        (loan.mode, loan.loose) = (offered, offered | OWNER_RWX);
        let mut kept_open = entry.clone();
        kept_open.mode = Some(u64::from(loan.loose));
        std::borrow::Cow::Owned(kept_open)
    }
}

impl super::resolver::Resolver<'_> {
    /// Before the plan has a name added or replaced at `components`: the deepest
    /// directory on its way that is there is loosened if need be (see the module).
    /// One this resolver made, or looked at already, costs a lookup in memory.
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
