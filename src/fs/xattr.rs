//! Extended attributes: which a side may read and set, read from a path without
//! following a link (a sender's) or from a descriptor (a server's, opened beneath
//! a home), and set on a descriptor (or a link through its directory).
//! Values travel as lowercase hex (section 16). `user.xfer.*` is xfer's own (the
//! partial mark), never sent and never set from an offer.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::io::Errno;

use crate::escape::escape_path;
use crate::hex::{hex, unhex_vec};
use crate::proto::entry::{MAX_XATTR_TOTAL, MAX_XATTR_VALUE};
use crate::proto::message::Xattrs;

/// The prefix of xfer's own attributes.
pub(crate) const OWN_PREFIX: &str = "user.xfer.";
/// The namespace anybody may use.
const USER_PREFIX: &str = "user.";

/// Whether this process may read and set every namespace (as root), or `user.*` only.
pub(crate) fn all_namespaces() -> bool {
    crate::fs::running_as_root()
}

/// Whether this process reads the attributes of every namespace, so that what it
/// reads of an entry is all the entry has (a sender's `xattrs_all`, section
/// 16.1.1). Root is not enough: Linux shows `trusted.*` only to a process with
/// `CAP_SYS_ADMIN` in the first user namespace, which root in a container that
/// drops it, or euid 0 in a user namespace of its own, does not have.
pub(crate) fn reads_every_namespace() -> bool {
    let sys_admin = rustix::thread::capabilities(None)
        .is_ok_and(|sets| (sets.effective).contains(rustix::thread::CapabilitySet::SYS_ADMIN));
    all_namespaces() && sys_admin && in_first_user_namespace()
}

/// Whether this process's user namespace is the first one: its `uid_map` maps
/// every id to itself (`0 0 4294967295`). Unreadable counts as no.
fn in_first_user_namespace() -> bool {
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else {
        return false;
    };
    let numbers: Vec<&str> = map.split_whitespace().collect();
    numbers == ["0", "0", "4294967295"]
}

/// Whether an attribute of this name may be set here: never xfer's own; `user.*`
/// always, the others only as root and when the receiver allows them.
pub(crate) fn settable(name: &str, all: bool) -> bool {
    !name.starts_with(OWN_PREFIX) && (all || name.starts_with(USER_PREFIX))
}

/// The attributes of `path` (not following a link) that this process may carry
/// (see [`carried`]), empty when it has none; `None`, with a warning naming the
/// file, when they cannot be listed: the entry then says nothing of them, where an
/// empty object would have its receiver remove those its copy holds. Those left
/// out (more than an entry carries, or named in bytes that are not UTF-8) are
/// warned of, naming the file.
pub(crate) fn read(path: &Path) -> Option<Xattrs> {
    let carried = match carried(Holder::Path(path), all_namespaces()) {
        Ok(carried) => carried,
        Err(err) => {
            crate::stderr::warn(&format!(
                "{}: extended attributes not sent: cannot list them: {}",
                escape_path(path),
                std::io::Error::from(err)
            ));
            return None;
        }
    };
    let shown = escape_path(path);
    if carried.left_out > 0 {
        crate::stderr::warn(&format!(
            "{shown}: {} extended attributes not sent: an entry carries at most 1 MiB \
             of them",
            carried.left_out
        ));
    }
    if carried.not_utf8 > 0 {
        crate::stderr::warn(&format!(
            "{shown}: {} extended attributes not sent: their names are not UTF-8, \
             which an offer cannot carry",
            carried.not_utf8
        ));
    }
    Some(carried.xattrs)
}

/// Warns, naming `path` (a fifo, a socket or a device, not followed if a link),
/// of the attributes it holds that would be carried if it were a file: an offer
/// carries none for such an entry (section 16.1), and they must not be lost in
/// silence (SELinux labels every device).
pub(crate) fn say_not_carried(path: &Path) {
    let Ok(listed) = Holder::Path(path).listed() else {
        return;
    };
    let all = all_namespaces();
    let held = settable_names(&listed, all).count() + unnamable(&listed, all);
    if held > 0 {
        crate::stderr::warn(&format!(
            "{}: {held} extended attributes not sent: an offer carries none for a fifo, \
             a socket or a device",
            escape_path(path)
        ));
    }
}

/// The `user.*` attributes of `fd` but xfer's own, whatever namespaces this process
/// may read (see [`carried`]): what `xfer serve` offers a `get` that asks for them,
/// `{}` when there are none, `None` when they cannot be listed; and how many were
/// left out.
pub(crate) fn read_user(fd: impl AsFd) -> (Option<Xattrs>, usize) {
    match carried(Holder::Fd(fd.as_fd()), false) {
        Ok(carried) => (Some(carried.xattrs), carried.left_out + carried.not_utf8),
        Err(_) => (None, 0),
    }
}

/// Where attributes are read from: a path itself (a link is not followed), or an
/// open descriptor (one opened beneath a home, never through a link).
#[derive(Clone, Copy)]
enum Holder<'a> {
    Path(&'a Path),
    Fd(std::os::fd::BorrowedFd<'a>),
}

impl Holder<'_> {
    /// The names it holds, each ended by a NUL: none on a filesystem without
    /// attributes; an error when they cannot be listed (a list that keeps growing
    /// between measuring and reading it, three times, is one).
    fn listed(self) -> Result<Vec<u8>, Errno> {
        let mut tries = 0;
        loop {
            let size = match self {
                Holder::Path(path) => rustix::fs::llistxattr_query(path),
                Holder::Fd(fd) => rustix::fs::flistxattr_query(fd),
            };
            let size = match size {
                Ok(size) => size,
                Err(Errno::NOTSUP) => return Ok(Vec::new()),
                Err(err) => return Err(err),
            };
            let mut names = vec![0u8; size];
            let len = match self {
                Holder::Path(path) => rustix::fs::llistxattr(path, &mut names[..]),
                Holder::Fd(fd) => rustix::fs::flistxattr(fd, &mut names[..]),
            };
            match len {
                Ok(len) => {
                    names.truncate(len.min(size));
                    return Ok(names);
                }
                Err(Errno::RANGE) if tries < 2 => tries += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// Whether it holds `name`, with the value `wanted`.
    fn holds_value(self, name: &str, wanted: &[u8]) -> bool {
        let mut here = vec![0u8; wanted.len() + 1];
        let read = match self {
            Holder::Path(path) => rustix::fs::lgetxattr(path, name, &mut here[..]),
            Holder::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut here[..]),
        };
        read.is_ok_and(|len| here[..len] == *wanted)
    }

    /// Whether it holds `name` at all (its size asked, nothing read).
    fn has(self, name: &str) -> bool {
        match self {
            Holder::Path(path) => rustix::fs::lgetxattr_query(path, name).is_ok(),
            Holder::Fd(fd) => rustix::fs::fgetxattr_query(fd, name).is_ok(),
        }
    }

    /// Removes `name`; whether it went.
    fn remove(self, name: &str) -> bool {
        match self {
            Holder::Path(path) => rustix::fs::lremovexattr(path, name).is_ok(),
            Holder::Fd(fd) => rustix::fs::fremovexattr(fd, name).is_ok(),
        }
    }

    /// The value of `name`: `Err` with its size if that is over [`MAX_XATTR_VALUE`]
    /// (which no value offered may be), `None` if it cannot be read (gone, or grown
    /// since it was measured).
    fn value(self, name: &str) -> Option<Result<Vec<u8>, usize>> {
        let size = match self {
            Holder::Path(path) => rustix::fs::lgetxattr_query(path, name),
            Holder::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
        };
        let size = size.ok()?;
        if size > MAX_XATTR_VALUE {
            return Some(Err(size));
        }
        let mut value = vec![0u8; size];
        let len = match self {
            Holder::Path(path) => rustix::fs::lgetxattr(path, name, &mut value[..]),
            Holder::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut value[..]),
        };
        value.truncate(len.ok()?);
        Some(Ok(value))
    }
}

/// The attributes `holder` has that may be carried (`all`: every namespace; see
/// [`settable`]), within what an offer may hold (section 16.1): in name order,
/// each whose value is at most [`MAX_XATTR_VALUE`] bytes while the values stay
/// within [`MAX_XATTR_TOTAL`] bytes; the others are left out, and counted.
fn carried(holder: Holder<'_>, all: bool) -> Result<Carried, Errno> {
    let listed = holder.listed()?;
    let not_utf8 = unnamable(&listed, all);
    let mut names: Vec<&str> = settable_names(&listed, all).collect();
    names.sort_unstable();
    let mut room = MAX_XATTR_TOTAL;
    let mut xattrs = Xattrs::new();
    let mut left_out = 0;
    for name in names {
        match holder.value(name) {
            Some(Ok(value)) if value.len() <= room => {
                room -= value.len();
                xattrs.insert(name.to_string(), hex(&value));
            }
            Some(_) => left_out += 1,
            None => {} // gone since it was listed
        }
    }
    Ok(Carried {
        xattrs,
        left_out,
        not_utf8,
    })
}

/// What [`carried`] found: the attributes an entry carries, how many it left out
/// for the limits, and how many it cannot carry at all, their names not being
/// UTF-8 (an offer names them as JSON text).
struct Carried {
    xattrs: Xattrs,
    left_out: usize,
    not_utf8: usize,
}

/// How many names in a list the system gave are not UTF-8, in a namespace this
/// process would otherwise carry (`all`, or `user.`).
fn unnamable(listed: &[u8], all: bool) -> usize {
    listed
        .split(|b| *b == 0)
        .filter(|name| std::str::from_utf8(name).is_err())
        .filter(|name| all || name.starts_with(USER_PREFIX.as_bytes()))
        .count()
}

/// The names in a list the system gave (each ended by a NUL) that this process may
/// carry or change (`all`: every namespace; see [`settable`]).
fn settable_names(listed: &[u8], all: bool) -> impl Iterator<Item = &str> {
    listed
        .split(|b| *b == 0)
        .filter_map(|name| std::str::from_utf8(name).ok())
        .filter(move |name| !name.is_empty() && settable(name, all))
}

/// Most bytes of extended attributes (names and values) a server lets one entry
/// hold: what ext4 keeps in an inode's one block. A quota counts none of them
/// (`fs::ledger`), and XFS, btrfs or tmpfs would take 64 KiB each without end, on
/// an entry that costs nothing (an empty file): this keeps them within 4 KiB per
/// entry that `max_files` allows.
pub(crate) const SERVER_BYTES: usize = 4096;

/// Held while a server measures an entry's attributes and sets more, so that two
/// sessions refreshing one entry at once cannot both fill it to [`SERVER_BYTES`].
static MEASURED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets on `fd` those of `xattrs` that `all` allows; returns how many were not set
/// (refused by the rule, left out by the `cap` or refused by the system). With a
/// `cap` (a server's: see [`SERVER_BYTES`]), the entry keeps only what [`kept`]
/// says (the offer lists all its sender's attributes: an entry refreshed keeps
/// none it lost there, nor an old value of one left out).
pub(crate) fn apply(fd: impl AsFd, xattrs: &Xattrs, all: bool, cap: Option<usize>) -> usize {
    let mut kept = kept(xattrs, all, cap);
    let _measuring = cap.map(|_| MEASURED.lock().unwrap_or_else(|held| held.into_inner()));
    if cap.is_some() {
        make_room(&fd, &mut kept, all);
    }
    let set = kept
        .iter()
        .filter(|(name, value)| {
            rustix::fs::fsetxattr(&fd, *name, value, rustix::fs::XattrFlags::empty()).is_ok()
        })
        .count();
    xattrs.len() - set
}

/// Those of `xattrs` that `all` allows, with their values, in name order; with a
/// `cap`, only each that fits in it beside those kept before it. What an entry
/// keeps follows from the offer alone, not from what it held: a second run finds
/// it as the first left it ([`holds`]).
fn kept(xattrs: &Xattrs, all: bool, cap: Option<usize>) -> Vec<(&str, Vec<u8>)> {
    let mut room = cap.unwrap_or(usize::MAX);
    let settable = xattrs.iter().filter(|(name, _)| settable(name, all));
    settable
        .filter_map(|(name, value)| {
            let value = unhex_vec(value).unwrap_or_default();
            let cost = name.len() + value.len();
            let fits = cost <= room;
            room -= if fits { cost } else { 0 };
            fits.then_some((name.as_str(), value))
        })
        .collect()
}

/// Removes from `fd` the attributes `all` allows that are not `kept` (in name
/// order), and orders `kept` so that those that shrink are set before those that
/// grow: the entry never holds more than before or after.
fn make_room(fd: impl AsFd, kept: &mut [(&str, Vec<u8>)], all: bool) {
    let held = holding(&fd, all);
    for name in held.keys() {
        if stray(name, kept) {
            let _ = rustix::fs::fremovexattr(&fd, name.as_str());
        }
    }
    kept.sort_by_key(|(name, value)| {
        name.len() + value.len() > held.get(*name).copied().unwrap_or(0)
    });
}

/// The attributes `fd` holds that `all` allows to set, each with the bytes of its
/// name and value. One whose value cannot be measured counts the most a value may
/// be (it is set after those that shrink).
fn holding(fd: impl AsFd, all: bool) -> std::collections::HashMap<String, usize> {
    // One that cannot be listed holds none this can see, so none to remove.
    let listed = listed(&fd).unwrap_or_default();
    settable_names(&listed, all)
        .map(|name| {
            let value = rustix::fs::fgetxattr_query(&fd, name).unwrap_or(64 << 10);
            (name.to_string(), name.len() + value)
        })
        .collect()
}

/// The names of the attributes `fd` holds, each ended by a NUL (see
/// [`Holder::listed`]).
fn listed(fd: impl AsFd) -> Result<Vec<u8>, Errno> {
    Holder::Fd(fd.as_fd()).listed()
}

/// Removes from `fd` the attributes `all` allows that `xattrs` does not name: what a
/// file kept in place of a new one must lose to match it. Returns how many went, or
/// the error when they cannot be listed (the copy may keep some it should lose).
pub(crate) fn remove_others(fd: impl AsFd, xattrs: &Xattrs, all: bool) -> Result<usize, Errno> {
    remove_strays(Holder::Fd(fd.as_fd()), xattrs, all)
}

/// [`remove_others`] of any holder.
fn remove_strays(holder: Holder<'_>, xattrs: &Xattrs, all: bool) -> Result<usize, Errno> {
    let (listed, kept) = (holder.listed()?, kept(xattrs, all, None));
    let removed = settable_names(&listed, all)
        .filter(|name| stray(name, &kept))
        .filter(|name| holder.remove(name))
        .count();
    Ok(removed)
}

/// Whether `fd` holds each of `xattrs` that [`apply`] would set with `all` and
/// `cap`, with the same value.
pub(crate) fn holds(fd: impl AsFd, xattrs: &Xattrs, all: bool, cap: Option<usize>) -> bool {
    holds_each(Holder::Fd(fd.as_fd()), xattrs, all, cap)
}

/// [`holds`] of any holder.
fn holds_each(holder: Holder<'_>, xattrs: &Xattrs, all: bool, cap: Option<usize>) -> bool {
    let kept = kept(xattrs, all, cap);
    kept.iter()
        .all(|(name, wanted)| holder.holds_value(name, wanted))
}

/// Whether `fd` holds an attribute `all` allows that [`apply`] with `cap` would not
/// keep: one `xattrs` does not name, which [`remove_others`] removes, or, with a
/// `cap`, one it names that the cap leaves out, which [`make_room`] removes (an
/// entry over the cap that holds each kept one is not the same).
pub(crate) fn has_others(fd: impl AsFd, xattrs: &Xattrs, all: bool, cap: Option<usize>) -> bool {
    // One that cannot be listed may: it is refreshed (and what cannot be removed
    // counted) rather than found the same.
    any_stray(Holder::Fd(fd.as_fd()), xattrs, all, cap).unwrap_or(true)
}

/// Whether `holder` holds an attribute `all` allows that `xattrs` (with `cap`)
/// does not keep; the error when its attributes cannot be listed.
fn any_stray(
    holder: Holder<'_>,
    xattrs: &Xattrs,
    all: bool,
    cap: Option<usize>,
) -> Result<bool, Errno> {
    let (listed, kept) = (holder.listed()?, kept(xattrs, all, cap));
    Ok(settable_names(&listed, all).any(|name| stray(name, &kept)))
}

/// Whether the attribute `name` an entry holds goes, being none of `kept` (in name
/// order): every one that is not [`kept`] but a label or an ACL ([`removable`]).
fn stray(name: &str, kept: &[(&str, Vec<u8>)]) -> bool {
    removable(name) && kept.binary_search_by(|(k, _)| (*k).cmp(name)).is_err()
}

/// Whether an attribute the source lacks may go: never a security label
/// (`security.*`), which the receiving system gave the file and may rely on (a file
/// without its SELinux label may be denied to everyone), nor another `system.*`
/// one; a POSIX ACL does, as `rsync -A` removes it: access revoked at the source
/// must not stay granted on the copy. (Only where every namespace is removed, as
/// root from a sender that read them all: `system.*` is not settable otherwise.)
fn removable(name: &str) -> bool {
    let label = name.starts_with("security.") && name != CAPABILITIES;
    !label && (!name.starts_with("system.") || POSIX_ACLS.contains(&name))
}

/// A file's capabilities: a privilege, not a label the receiving system gave it,
/// and one the source dropped (`setcap -r`) must go from the copy too.
const CAPABILITIES: &str = "security.capability";

/// The attributes that hold a file's or directory's POSIX ACLs.
const POSIX_ACLS: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

/// Removes from the file or directory `fd`, just made, the ACL it inherited from
/// its directory's default ACL where `xattrs` (the source's, every namespace) has
/// none: the copy is to have the source's access, no more.
pub(crate) fn drop_inherited_acl(fd: impl AsFd, xattrs: &Xattrs) {
    if !xattrs.contains_key(POSIX_ACLS[0]) {
        drop_access_acl(Holder::Fd(fd.as_fd()));
    }
}

/// [`drop_inherited_acl`] for the fifo, socket or device `name` in `dir` (never
/// followed), which carries no attributes in an offer: the source's has none the
/// copy could be given, and the copy must not grant more than the source's mode.
pub(crate) fn drop_inherited_acl_at(dir: impl AsFd, name: &[u8]) {
    drop_access_acl(Holder::Path(&through_proc(dir, name)));
}

/// Removes the access ACL `holder` holds, if any. Looked for first: a removal
/// costs a filesystem transaction even where there is nothing to remove, a read
/// does not (a new file in a tree of small files has none, but under a default ACL).
fn drop_access_acl(holder: Holder<'_>) {
    if holder.has(POSIX_ACLS[0]) {
        holder.remove(POSIX_ACLS[0]);
    }
}

/// Sets attributes on the link `name` in directory `dir` itself (never what it
/// points at), through `/proc/self/fd`; returns how many were not set.
pub(crate) fn apply_to_link(dir: impl AsFd, name: &[u8], xattrs: &Xattrs, all: bool) -> usize {
    let path = through_proc(dir, name);
    let mut dropped = 0;
    for (attr, value) in xattrs {
        let value = unhex_vec(value).unwrap_or_default();
        let set = settable(attr, all)
            && rustix::fs::lsetxattr(
                &path,
                attr.as_str(),
                &value,
                rustix::fs::XattrFlags::empty(),
            )
            .is_ok();
        dropped += usize::from(!set);
    }
    dropped
}

/// Whether the link (or special file) `name` in `dir` itself holds each of
/// `xattrs` that [`apply_to_link`] would set with `all`, with the same value.
pub(crate) fn link_holds(dir: impl AsFd, name: &[u8], xattrs: &Xattrs, all: bool) -> bool {
    holds_each(Holder::Path(&through_proc(dir, name)), xattrs, all, None)
}

/// Whether the link `name` in `dir` holds an attribute `all` allows that `xattrs`
/// does not name (none where they cannot be listed).
pub(crate) fn link_has_others(dir: impl AsFd, name: &[u8], xattrs: &Xattrs, all: bool) -> bool {
    any_stray(Holder::Path(&through_proc(dir, name)), xattrs, all, None).unwrap_or(false)
}

/// Removes from the link `name` in `dir` itself the attributes `all` allows that
/// `xattrs` does not name: what goes from a link kept in place of a new one (see
/// [`remove_others`]); how many went, none where they cannot be listed.
pub(crate) fn remove_others_at(dir: impl AsFd, name: &[u8], xattrs: &Xattrs, all: bool) -> usize {
    remove_strays(Holder::Path(&through_proc(dir, name)), xattrs, all).unwrap_or(0)
}

/// `name` in `dir` as a path through `/proc/self/fd`, for the calls that take a
/// path only (`l*xattr`, which do not follow its last component).
fn through_proc(dir: impl AsFd, name: &[u8]) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStringExt;
    let mut path = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    std::ffi::OsString::from_vec(path).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfer_s_own_attributes_are_never_settable() {
        assert!(!settable("user.xfer.partial", true));
        assert!(settable("user.comment", false));
        assert!(!settable("trusted.x", false));
        assert!(settable("trusted.x", true));
    }

    #[test]
    fn attributes_that_cannot_be_listed_are_not_said_to_be_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        // None: an empty object, which a receiver goes by (as root, a label the
        // system gives every file, `security.selinux`, may be there: not counted).
        let user = |xattrs: Xattrs| -> Xattrs {
            xattrs
                .into_iter()
                .filter(|(name, _)| name.starts_with(USER_PREFIX))
                .collect()
        };
        assert_eq!(read(&file).map(user), Some(Xattrs::new()));
        // Gone since the walk saw it: nothing said (and a warning).
        assert_eq!(read(&dir.path().join("gone")), None);
        let opened = std::fs::File::open(&file).unwrap();
        assert_eq!(read_user(&opened), (Some(Xattrs::new()), 0));
        // A descriptor whose attributes cannot be listed (`O_PATH`: EBADF) is
        // refreshed, not found the same, and what cannot be removed is said.
        let path_only =
            rustix::fs::open(&file, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty()).unwrap();
        assert_eq!(read_user(&path_only), (None, 0));
        assert!(has_others(&path_only, &Xattrs::new(), false, None));
        assert!(remove_others(&path_only, &Xattrs::new(), false).is_err());
        if rustix::fs::fsetxattr(&opened, "user.a", b"1", rustix::fs::XattrFlags::empty()).is_ok() {
            let held = read(&file).unwrap();
            assert_eq!(held.get("user.a").map(String::as_str), Some("31"));
        }
    }

    #[test]
    fn names_that_are_not_utf8_are_counted_in_the_namespaces_carried() {
        let listed = b"user.a\0user.\xff\0trusted.\xfe\0\0";
        assert_eq!((unnamable(listed, false), unnamable(listed, true)), (1, 2));
    }

    #[test]
    fn labels_the_source_lacks_stay_and_acls_go() {
        assert!(removable("user.comment") && removable("trusted.x"));
        assert!(!removable("security.selinux") && !removable("system.nfs4_acl"));
        assert!(removable("security.capability"));
        assert!(removable("system.posix_acl_access") && removable("system.posix_acl_default"));
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let set = |name: &str| {
            rustix::fs::fsetxattr(&file, name, b"1", rustix::fs::XattrFlags::empty()).is_ok()
        };
        if !all_namespaces() || !set("user.gone") || !set("security.xfer_test") {
            eprintln!("skipped: needs root and a filesystem with user.* and security.*");
            return;
        }
        let none = Xattrs::new();
        assert!(has_others(&file, &none, true, None));
        assert_eq!(remove_others(&file, &none, true), Ok(1));
        assert!(!has_others(&file, &none, true, None));
        let mut left = vec![0u8; 256];
        let len = rustix::fs::flistxattr(&file, &mut left[..]).unwrap();
        assert!(
            left[..len].starts_with(b"security.xfer_test"),
            "{:?}",
            &left[..len]
        );
    }
}
