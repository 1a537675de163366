//! The directories sessions of this process are changing names in (see
//! `loosen.rs`, which decides when one is taken): the registry of them, by
//! identity, with how many sessions use each, the mode each had and the one it
//! has while used; what a directory must be to be given its owner's bits; and
//! giving modes back, one or all (the process exiting on a signal). Below the
//! target directory and the resolver, so that the sweep of stale partials can
//! lend itself a directory too.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use rustix::fs::{Mode, Stat};
use rustix::io::Errno;

use crate::fs::beneath;

/// The owner's read, write and search bits.
pub(super) const OWNER_RWX: u32 = 0o700;

/// A directory sessions of this process change names in.
pub(super) struct Loan {
    /// Where it is: beneath this target directory, at this path.
    pub(super) root: Arc<OwnedFd>,
    pub(super) path: Vec<u8>,
    /// The mode it gets back once no session uses it, and the one it has
    /// meanwhile: the same, unless it was given its owner's bits, or a session
    /// applied the offered mode while another still used it.
    pub(super) mode: u32,
    pub(super) loose: u32,
    /// The sessions using it.
    pub(super) users: usize,
    /// Which loan this is: a directory removed and another made with its inode
    /// number gets another one.
    pub(super) serial: u64,
}

impl Loan {
    /// A loan of the directory at `path` beneath `root`, with the mode it gets back
    /// and the one it has meanwhile, to its first user.
    pub(super) fn new(root: Arc<OwnedFd>, path: Vec<u8>, (mode, loose): (u32, u32)) -> Self {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        Loan {
            root,
            path,
            mode,
            loose,
            users: 1,
            serial,
        }
    }
}

/// Every directory in use, by (device, inode).
pub(super) type Loans = HashMap<(u64, u64), Loan>;

static LOANS: LazyLock<Mutex<Loans>> = LazyLock::new(Mutex::default);

/// Set once the process gives every mode back to exit: no more are lent.
static CLOSING: AtomicBool = AtomicBool::new(false);

pub(super) fn loans() -> MutexGuard<'static, Loans> {
    LOANS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the process is giving every mode back to exit (see [`give_back_all`]).
pub(super) fn closing() -> bool {
    CLOSING.load(Ordering::SeqCst)
}

/// Whether this process may not change names in `dir` (found as `stat`) only for
/// want of its owner's bits: it owns the directory, the owner's bits lack some of
/// `rwx`, a change of mode would keep a setgid bit (the kernel drops it for an
/// owner outside the directory's group), and the permission is what is missing
/// (`EACCES`; asked last, a system call).
pub(super) fn loosenable(dir: &OwnedFd, stat: &Stat) -> bool {
    let mine = stat.st_uid == rustix::process::geteuid().as_raw();
    let keeps_setgid = stat.st_mode & 0o2000 == 0 || in_group(stat.st_gid);
    mine && keeps_setgid
        && stat.st_mode & OWNER_RWX != OWNER_RWX
        && beneath::may_change_names(dir) == Err(Errno::ACCESS)
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

/// Gives the directory of `loan` (found as `identity`) the mode it gets back, if
/// it has another meanwhile: reached from its target's root without following
/// links, and only if it is still that directory with the mode it was given
/// (else someone else changed it since, and that stands). Nothing to say where
/// it fails: the directory keeps its owner's bits, which hides nothing from
/// anyone else.
pub(super) fn give_back(identity_was: (u64, u64), loan: &Loan) {
    if loan.mode == loan.loose {
        return;
    }
    let components: Vec<&[u8]> = loan.path.split(|&byte| byte == b'/').collect();
    let Ok(Some(dir)) = beneath::walk(&loan.root, &components, None) else {
        return;
    };
    let unchanged = rustix::fs::fstat(&dir)
        .is_ok_and(|now| identity(&now) == identity_was && now.st_mode & 0o7777 == loan.loose);
    if unchanged {
        let _ = rustix::fs::fchmod(&dir, Mode::from_raw_mode(loan.mode));
    }
}

/// Gives every directory in use the mode it gets back, whoever uses it, and lends
/// none after: the process is about to exit (on a signal) and cut its sessions.
pub(crate) fn give_back_all() {
    let mut loans = loans();
    CLOSING.store(true, Ordering::SeqCst);
    for (identity, loan) in loans.drain() {
        give_back(identity, &loan);
    }
}

/// Runs `change` of names in `dir` (a sweep's removal of a stale partial), with
/// its owner's `rwx` for the time of it if it needs them, unless a session uses
/// the directory (and gave it those already).
pub(super) fn briefly_loosened<T>(dir: &OwnedFd, change: impl FnOnce() -> T) -> T {
    let loans = loans();
    let Ok(stat) = rustix::fs::fstat(dir) else {
        return change();
    };
    let in_use = loans.contains_key(&identity(&stat));
    if in_use || closing() || !loosenable(dir, &stat) {
        return change();
    }
    let mode = stat.st_mode & 0o7777;
    if rustix::fs::fchmod(dir, Mode::from_raw_mode(mode | OWNER_RWX)).is_err() {
        return change();
    }
    let changed = change();
    let _ = rustix::fs::fchmod(dir, Mode::from_raw_mode(mode));
    changed
}
