//! Applying offered metadata (`PROTOCOL.md` sections 6 and 16): the permission bits
//! (`mode & 0o7777`, umask ignored; a server clears setuid and setgid and keeps its
//! own access), the modification time to the nanosecond, the owner (as root, not on
//! a server) and the extended attributes, through a descriptor, or for what cannot
//! be opened (links, fifos, devices) through its directory without following it.
//!
//! What may not be applied is counted per entry in the session's [`Unapplied`] (a
//! listener runs sessions at once: each says, and tells its sender, only its own),
//! for the receiver to say once per session, not once per file.

use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::fs::owners::Owners;
use crate::fs::xattr;
use crate::proto::message::{Dropped, Entry};

/// Permission bits a receiver may set: setuid, setgid, sticky and rwx.
const PERMISSION_BITS: u64 = 0o7777;
/// What a server never sets: setuid and setgid (a user must not plant a setuid file
/// for the server's user).
const SET_ID_BITS: u32 = 0o6000;

/// Who applies, with which rights, and where what it may not apply is counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy<'a> {
    /// A server's: its own access bits (0o700 for a directory, 0o600 for a file),
    /// no set-id bits, no owners, `user.*` attributes only.
    pub(crate) server: bool,
    /// Bits always set (the server's own access), 0 elsewhere.
    pub(crate) keep: u32,
    /// The session's counts of what was not applied.
    pub(crate) dropped: &'a Unapplied,
    /// Only `user.*` attributes are the sender's to set or remove (a `get`'s: a
    /// server keeps no others), even as root.
    pub(crate) user_xattrs: bool,
    /// Only `user.*` attributes an entry holds are the sender's to remove: its
    /// offer named no others (docs/PROTOCOL.md 16.1.1).
    pub(crate) user_strays: bool,
}

impl Policy<'_> {
    /// Whether attributes of every namespace are set, not only `user.*`: as root,
    /// but for a server and a `get`.
    fn all_namespaces(self) -> bool {
        is_root() && !self.server && !self.user_xattrs
    }

    /// Whether attributes of every namespace that an entry holds and its offer
    /// does not name are removed, not only `user.*` ones: where they are set, and
    /// the offer named them all.
    fn removes_all_namespaces(self) -> bool {
        self.all_namespaces() && !self.user_strays
    }
}

/// What one session could not apply, in entries per kind: counted by the threads
/// that apply it, taken once at the end of the session.
#[derive(Debug, Default)]
pub(crate) struct Unapplied {
    /// Entries whose setuid/setgid bits did not stay (not root; a server).
    pub(crate) set_id: AtomicUsize,
    /// Entries whose offered owner was not applied (not root; a server).
    pub(crate) owners: AtomicUsize,
    /// Entries with an offered extended attribute not set.
    pub(crate) xattrs: AtomicUsize,
    /// Entries whose time the filesystem cannot hold.
    pub(crate) times: AtomicUsize,
    /// Entries there already whose metadata could not be set at all (a warning).
    pub(crate) metadata: AtomicUsize,
}

impl Unapplied {
    fn count(counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// An entry there already whose metadata could not be set.
    pub(crate) fn metadata_not_set(&self) {
        Unapplied::count(&self.metadata);
    }

    /// The counts so far, as a receiver's `end` carries them (docs/PROTOCOL.md
    /// 16.3), none above `most` (the entries offered).
    pub(crate) fn counts(&self, most: usize) -> Dropped {
        let load = |counter: &AtomicUsize| counter.load(Ordering::Relaxed).min(most) as u64;
        Dropped {
            owners: load(&self.owners),
            set_id: load(&self.set_id),
            xattrs: load(&self.xattrs),
            times: load(&self.times),
            metadata: load(&self.metadata),
        }
    }
}

/// Owners are mapped by name unless `--numeric-ids` said otherwise.
static NUMERIC_IDS: OnceLock<bool> = OnceLock::new();
static LOCAL_OWNERS: OnceLock<Owners> = OnceLock::new();

/// `--numeric-ids`: owners are applied by number, never mapped by name.
pub(crate) fn set_numeric_ids() {
    let _ = NUMERIC_IDS.set(true);
}

fn is_root() -> bool {
    crate::fs::running_as_root()
}

/// The most bytes of extended attributes an entry keeps: a server's cap, so that
/// [`apply`] and [`differs`] agree on what an entry should hold.
fn xattr_cap(policy: Policy) -> Option<usize> {
    policy.server.then_some(xattr::SERVER_BYTES)
}

/// Applies everything `entry` says to the open file or directory `fd`.
pub(crate) fn apply(fd: impl AsFd, entry: &Entry, policy: Policy) -> Result<(), Errno> {
    // The owner first: a change of owner clears a file's capabilities
    // (`security.capability`), as it clears setuid and setgid.
    if let Some((uid, gid)) = owner_of(entry, policy, || owner_at_fd(&fd)) {
        rustix::fs::fchown(&fd, Some(uid), Some(gid))?;
    }
    if let Some(xattrs) = &entry.extra().xattrs {
        if policy.removes_all_namespaces() {
            // A new entry inherits its directory's default ACL; the source's is
            // set next, if it has one.
            xattr::drop_inherited_acl(&fd, xattrs);
        }
        let dropped = xattr::apply(&fd, xattrs, policy.all_namespaces(), xattr_cap(policy));
        if dropped > 0 {
            Unapplied::count(&policy.dropped.xattrs);
        }
    }
    if let Some(mode) = mode_of(entry, policy) {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        // Only set-id bits are ever dropped: without them there is nothing to look
        // at (an fstat per file saved, in a tree of small files).
        if wanted_set_id(entry) != 0 {
            let now = rustix::fs::fstat(&fd).map(|stat| stat.st_mode);
            count_dropped_bits(now, entry, policy);
        }
    }
    if let Some(times) = timestamps(entry) {
        count_times(rustix::fs::futimens(&fd, &times), policy)?;
        // Only a time past what every filesystem holds can have been clamped:
        // without one there is nothing to look at (an fstat per file saved).
        if beyond_every_filesystem(entry) {
            let now = rustix::fs::fstat(&fd).map(|stat| stat.st_mtime);
            count_clamped(now, entry, policy);
        }
    }
    Ok(())
}

/// Whether `entry`'s time lies outside the 32-bit seconds every filesystem with
/// times holds (1901-12-13 to 2038-01-19): one that holds less (ext4 with small
/// inodes, up to 2038; with large ones, up to 2446) clamps it without an error.
fn beyond_every_filesystem(entry: &Entry) -> bool {
    entry
        .mtime
        .is_some_and(|mtime| i32::try_from(mtime).is_err())
}

/// A time the filesystem clamped (it says nothing) is counted and said, as one it
/// refused: the copy does not have it, and the next run finds it changed.
fn count_clamped(now: Result<i64, Errno>, entry: &Entry, policy: Policy) {
    if now.is_ok_and(|now| Some(now) != entry.mtime) {
        Unapplied::count(&policy.dropped.times);
    }
}

/// Applies everything `entry` says to what `fd` holds in place of a new file or
/// directory (one found the same, a delta's basis kept, a directory that exists),
/// removing first the extended attributes it carries an object of and does not
/// name (none where it carries no object: its sender did not send them); whether
/// any went. The kernel lets a process that is not root change `user.*` attributes
/// only of what it may write: a read-only one of its own is made writable to its
/// owner for that moment, and gets the offered mode (or its own back) after.
pub(crate) fn apply_in_place(fd: impl AsFd, entry: &Entry, policy: Policy) -> Result<bool, Errno> {
    let was = writable_for_xattrs(&fd, entry);
    let removed = remove_other_xattrs(&fd, entry, policy);
    let applied = apply(&fd, entry, policy);
    if let Some(mode) = was.filter(|_| applied.is_err() || mode_of(entry, policy).is_none()) {
        let _ = rustix::fs::fchmod(&fd, mode);
    }
    applied.map(|()| removed)
}

/// Gives its owner write permission on what `fd` holds, when extended attributes
/// are to change there and this process, not root, owns it without it; its mode
/// before, if it changed it.
fn writable_for_xattrs(fd: impl AsFd, entry: &Entry) -> Option<Mode> {
    const OWNER_WRITE: u32 = 0o200;
    if entry.extra().xattrs.is_none() || is_root() {
        return None;
    }
    let stat = rustix::fs::fstat(&fd).ok()?;
    let mine = stat.st_uid == rustix::process::geteuid().as_raw();
    if !mine || stat.st_mode & OWNER_WRITE != 0 {
        return None;
    }
    let mode = stat.st_mode & PERMISSION_BITS as u32;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode | OWNER_WRITE)).ok()?;
    Some(Mode::from_raw_mode(mode))
}

/// Removes from `fd` the extended attributes `entry` carries an object of and does
/// not name; whether any went.
fn remove_other_xattrs(fd: impl AsFd, entry: &Entry, policy: Policy) -> bool {
    let all = policy.removes_all_namespaces();
    let Some(xattrs) = &entry.extra().xattrs else {
        return false;
    };
    match xattr::remove_others(fd, xattrs, all) {
        Ok(removed) => removed > 0,
        Err(_) => {
            // Those it holds cannot be listed: some the source lacks may stay.
            Unapplied::count(&policy.dropped.xattrs);
            false
        }
    }
}

/// Applies what `entry` says to `name` in `dir`, never following it: a link, a fifo,
/// a socket or a device node (none of which is opened), one made just now under a
/// temporary name or one found `same` under its final name.
pub(crate) fn apply_at(
    dir: impl AsFd,
    name: &[u8],
    entry: &Entry,
    policy: Policy,
) -> Result<(), Errno> {
    let holds = || {
        let stat = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        Some((stat.st_uid, stat.st_gid))
    };
    // The owner first, as for a file (`apply`).
    if let Some((uid, gid)) = owner_of(entry, policy, holds) {
        rustix::fs::chownat(&dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    if let Some(xattrs) = &entry.extra().xattrs {
        // Those the source's link no longer has go first (a new link has none).
        xattr::remove_others_at(&dir, name, xattrs, policy.removes_all_namespaces());
        let dropped = xattr::apply_to_link(&dir, name, xattrs, policy.all_namespaces());
        if dropped > 0 {
            Unapplied::count(&policy.dropped.xattrs);
        }
    } else if !is_link(entry) && policy.removes_all_namespaces() {
        // A fifo or device made under a default ACL inherits it (a link has none).
        xattr::drop_inherited_acl_at(&dir, name);
    }
    // A link has no mode of its own; chmod would follow it.
    if let (false, Some(mode)) = (is_link(entry), mode_of(entry, policy)) {
        chmod_not_following(&dir, name, mode)?;
        let stat = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW);
        count_dropped_bits(stat.map(|stat| stat.st_mode), entry, policy);
    }
    if let Some(times) = timestamps(entry) {
        let set = rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW);
        count_times(set, policy)?;
        if beyond_every_filesystem(entry) {
            let now = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW);
            count_clamped(now.map(|stat| stat.st_mtime), entry, policy);
        }
    }
    Ok(())
}

/// chmod(2) of what `name` in `dir` is, never of what a link put in its place
/// points at: through an `O_PATH` descriptor of it, checked not to be a link
/// (`fchmodat` has no flag for that that Linux honours before 6.6).
fn chmod_not_following(dir: impl AsFd, name: &[u8], mode: u32) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let node = rustix::fs::openat(&dir, name, flags, Mode::empty())?;
    if FileType::from_raw_mode(rustix::fs::fstat(&node)?.st_mode) == FileType::Symlink {
        return Err(Errno::LOOP);
    }
    let path = format!("/proc/self/fd/{}", node.as_raw_fd());
    rustix::fs::chmod(path.as_str(), Mode::from_raw_mode(mode))
}

/// The bits to set: `mode & 0o7777` (an entry without `meta` never has more than
/// 0o777), a server's without setuid and setgid and with its own access.
fn mode_of(entry: &Entry, policy: Policy) -> Option<u32> {
    let mut bits = (entry.mode? & PERMISSION_BITS) as u32;
    if policy.server {
        bits &= !SET_ID_BITS;
    }
    Some(bits | policy.keep)
}

/// The setuid/setgid bits `entry` offers.
fn wanted_set_id(entry: &Entry) -> u32 {
    entry.mode.map_or(0, |mode| mode as u32 & SET_ID_BITS)
}

/// The kernel clears setuid/setgid it will not let us set (not root, not in the
/// group), and a server never sets them: count the entry, to say so once.
fn count_dropped_bits(now: Result<u32, Errno>, entry: &Entry, policy: Policy) {
    if let Ok(now) = now {
        if wanted_set_id(entry) & !now != 0 {
            Unapplied::count(&policy.dropped.set_id);
        }
    }
}

/// A time the filesystem cannot hold is counted and said, not replaced.
fn count_times(result: Result<(), Errno>, policy: Policy) -> Result<(), Errno> {
    match result {
        Err(Errno::INVAL | Errno::OVERFLOW | Errno::RANGE) => {
            Unapplied::count(&policy.dropped.times);
            Ok(())
        }
        other => other,
    }
}

/// The owner to give, as root and not on a server: the local number of the sent
/// name where there is one (unless `--numeric-ids`), else the sent number. One
/// sent and not given is counted (a server keeps none: its sender hears it), unless
/// what is there has that owner already (`holds`: a user's own files sent to their
/// own account elsewhere lose nothing).
fn owner_of(
    entry: &Entry,
    policy: Policy,
    holds: impl FnOnce() -> Option<(u32, u32)>,
) -> Option<(Uid, Gid)> {
    let (uid, gid) = local_owner(entry)?;
    if policy.server || !is_root() {
        if holds() != Some((uid.as_raw(), gid.as_raw())) {
            Unapplied::count(&policy.dropped.owners);
        }
        return None;
    }
    Some((uid, gid))
}

/// The owner of what is at `fd`, if it can be read.
fn owner_at_fd(fd: impl AsFd) -> Option<(u32, u32)> {
    let stat = rustix::fs::fstat(fd).ok()?;
    Some((stat.st_uid, stat.st_gid))
}

/// The local numbers of the owner `entry` names (see [`owner_of`]).
fn local_owner(entry: &Entry) -> Option<(Uid, Gid)> {
    let (mut uid, mut gid) = (entry.extra().uid?, entry.extra().gid?);
    if !NUMERIC_IDS.get().copied().unwrap_or(false) {
        let owners = LOCAL_OWNERS.get_or_init(Owners::load);
        if let Some(local) = entry
            .extra()
            .owner
            .as_deref()
            .and_then(|name| owners.uid_of(name))
        {
            uid = local;
        }
        if let Some(local) = entry
            .extra()
            .group
            .as_deref()
            .and_then(|name| owners.gid_of(name))
        {
            gid = local;
        }
    }
    Some((Uid::from_raw(uid), Gid::from_raw(gid)))
}

/// Whether what is at `fd` (described by `stat`) differs from what
/// [`apply_in_place`] would give it under `policy`: its mode, its owner (only
/// where it would be applied), an offered extended attribute it lacks or holds
/// otherwise, or one it holds that an offered object does not name, and, with `times`,
/// its modification time (a side without nanoseconds matches any). Changes nothing
/// and counts nothing.
pub(crate) fn differs(
    fd: impl AsFd,
    stat: &rustix::fs::Stat,
    entry: &Entry,
    policy: Policy,
    times: bool,
) -> bool {
    let mode = mode_of(entry, policy).is_some_and(|mode| stat.st_mode & 0o7777 != mode);
    let time = times && time_differs(stat, entry);
    let xattrs = entry.extra().xattrs.as_ref().is_some_and(|xattrs| {
        let cap = xattr_cap(policy);
        let (set, remove) = (policy.all_namespaces(), policy.removes_all_namespaces());
        !xattr::holds(&fd, xattrs, set, cap) || xattr::has_others(&fd, xattrs, remove, cap)
    });
    mode || owner_differs(stat, entry, policy) || time || xattrs
}

/// Whether the directory `fd` (found as `stat`) holds all `entry` says already:
/// then nothing is applied and its change time stays as it was (a run that
/// changes nothing changes nothing, as rsync's; a backup that goes by change times
/// sees nothing). An owner this process could not give is counted as [`apply`]
/// would. Never where attributes came: what of them cannot be set is counted only
/// as they are applied.
pub(crate) fn dir_holds_already(
    fd: impl AsFd,
    stat: &rustix::fs::Stat,
    entry: &Entry,
    policy: Policy,
) -> bool {
    if entry.extra().xattrs.is_some() || differs(&fd, stat, entry, policy, true) {
        return false;
    }
    let _ = owner_of(entry, policy, || Some((stat.st_uid, stat.st_gid)));
    true
}

/// Whether the link or special file `stat` describes differs from what
/// [`apply_at`] would give it under `policy`: its modification time, its owner
/// (only where it would be applied) and, but for a link, which has none, its
/// mode. Extended attributes are [`node_xattrs_differ`]'s.
pub(crate) fn node_differs(stat: &rustix::fs::Stat, entry: &Entry, policy: Policy) -> bool {
    let mode =
        !is_link(entry) && mode_of(entry, policy).is_some_and(|mode| stat.st_mode & 0o7777 != mode);
    mode || owner_differs(stat, entry, policy) || time_differs(stat, entry)
}

/// Whether the link or special file `name` in `dir` lacks an attribute `entry`
/// offers, holds another value of one, or holds one it does not offer (as root:
/// `trusted.*` and `security.*` on a link; Linux keeps no `user.*` ones there):
/// [`apply_at`] makes them the offer's.
pub(crate) fn node_xattrs_differ(
    dir: impl AsFd,
    name: &[u8],
    entry: &Entry,
    policy: Policy,
) -> bool {
    let (all, remove) = (policy.all_namespaces(), policy.removes_all_namespaces());
    (entry.extra().xattrs.as_ref()).is_some_and(|xattrs| {
        !xattr::link_holds(&dir, name, xattrs, all)
            || xattr::link_has_others(&dir, name, xattrs, remove)
    })
}

/// Whether an owner would be applied (as root, not on a server) and differs.
fn owner_differs(stat: &rustix::fs::Stat, entry: &Entry, policy: Policy) -> bool {
    !policy.server
        && is_root()
        && local_owner(entry)
            .is_some_and(|(uid, gid)| (stat.st_uid, stat.st_gid) != (uid.as_raw(), gid.as_raw()))
}

/// Whether the offered modification time differs (a side without nanoseconds
/// matches any).
fn time_differs(stat: &rustix::fs::Stat, entry: &Entry) -> bool {
    entry.mtime.is_some_and(|mtime| {
        let nanos = entry.mtime_ns.unwrap_or(0);
        mtime != stat.st_mtime || !same_nanos(nanos, stat.st_mtime_nsec as u32)
    })
}

fn is_link(entry: &Entry) -> bool {
    entry.extra().target.is_some() || entry.extra().target_hex.is_some()
}

/// Section 16: nanoseconds agree when equal, or when either side has none (a
/// filesystem with whole-second times must not make every rerun resend).
pub(super) fn same_nanos(offered: u32, here: u32) -> bool {
    offered == here || offered == 0 || here == 0
}

fn timestamps(entry: &Entry) -> Option<Timestamps> {
    Some(Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: entry.mtime?,
            tv_nsec: i64::from(entry.mtime_ns.unwrap_or(0)),
        },
    })
}
