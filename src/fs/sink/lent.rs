//! The directories this process lent itself (see `loosen.rs`, which decides when):
//! the registry of them, by identity, with how many sessions use each and the mode
//! each gets back; what a directory must be to be lent; and giving back, one or
//! all (the process exiting on a signal). Below the target directory and the
//! resolver, so that the sweep of stale partials can lend itself a directory too.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{Mode, Stat};
use rustix::io::Errno;

use crate::fs::beneath;

/// The owner's read, write and search bits.
pub(super) const OWNER_RWX: u32 = 0o700;

/// A directory some sessions of this process gave their owner's `rwx`.
pub(super) struct Loan {
    pub(super) identity: (u64, u64),
    /// Where it is: beneath this target directory, at this path.
    pub(super) root: Arc<OwnedFd>,
    pub(super) path: Vec<u8>,
    /// The mode it gets back, and the one it has while lent.
    pub(super) mode: u32,
    pub(super) loose: u32,
    /// The sessions using it.
    pub(super) users: usize,
}

/// Every directory this process lent itself and has not given back.
static LOANS: Mutex<Vec<Loan>> = Mutex::new(Vec::new());

pub(super) fn loans() -> std::sync::MutexGuard<'static, Vec<Loan>> {
    LOANS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `dir`'s status, if this process may not change names in it now only for want
/// of its owner's bits: the permission is what is missing (`EACCES`), it owns the
/// directory, the owner's bits lack some of `rwx`, and a change of mode would keep
/// a setgid bit (the kernel drops it for an owner outside the directory's group).
pub(super) fn loosenable(dir: &OwnedFd) -> Option<Stat> {
    if beneath::may_change_names(dir) != Err(Errno::ACCESS) {
        return None;
    }
    let stat = rustix::fs::fstat(dir).ok()?;
    let mine = stat.st_uid == rustix::process::geteuid().as_raw();
    let keeps_setgid = stat.st_mode & 0o2000 == 0 || in_group(stat.st_gid);
    (mine && keeps_setgid && stat.st_mode & OWNER_RWX != OWNER_RWX).then_some(stat)
}

/// Whether this process is in group `gid` (effective or supplementary).
fn in_group(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups()
            .is_ok_and(|groups| groups.iter().any(|group| group.as_raw() == gid))
}

pub(super) fn identity(stat: &Stat) -> (u64, u64) {
    (stat.st_dev, stat.st_ino)
}

/// Gives `loan`'s directory its mode back: reached from its target's root without
/// following links, and only if it is still the same directory with the mode it
/// was lent with (else someone else changed it since, and that stands). Nothing
/// to say where it fails: the directory keeps its owner's bits, which hides
/// nothing from anyone else.
pub(super) fn give_back(loan: &Loan) {
    let mut dir = None;
    for name in loan.path.split(|&byte| byte == b'/') {
        let parent = dir.as_ref().unwrap_or(&*loan.root);
        match beneath::open_dir(parent, name) {
            Ok(next) => dir = Some(next),
            Err(_) => return,
        }
    }
    let Some(dir) = dir else {
        return;
    };
    let unchanged = rustix::fs::fstat(&dir)
        .is_ok_and(|now| identity(&now) == loan.identity && now.st_mode & 0o7777 == loan.loose);
    if unchanged {
        let _ = rustix::fs::fchmod(&dir, Mode::from_raw_mode(loan.mode));
    }
}

/// Gives every directory this process lent itself its mode back, whoever uses it:
/// the process is about to exit (on a signal) and cut its sessions.
pub(crate) fn give_back_all() {
    for loan in std::mem::take(&mut *loans()) {
        give_back(&loan);
    }
}

/// Runs `change` of names in `dir` (a sweep's removal of a stale partial), with
/// its owner's `rwx` for the time of it if it needs them (see the module), unless
/// a session lent it already.
pub(crate) fn briefly_loosened<T>(dir: &OwnedFd, change: impl FnOnce() -> T) -> T {
    let loans = loans();
    let lent = rustix::fs::fstat(dir)
        .is_ok_and(|stat| loans.iter().any(|loan| loan.identity == identity(&stat)));
    let Some(stat) = loosenable(dir).filter(|_| !lent) else {
        return change();
    };
    let mode = stat.st_mode & 0o7777;
    if rustix::fs::fchmod(dir, Mode::from_raw_mode(mode | OWNER_RWX)).is_err() {
        return change();
    }
    let changed = change();
    let _ = rustix::fs::fchmod(dir, Mode::from_raw_mode(mode));
    changed
}
