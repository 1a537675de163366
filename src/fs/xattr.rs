//! Extended attributes: which a side may read and set, read from a path without
//! following a link, and set on a descriptor (or a link through its directory).
//! Values travel as lowercase hex (section 16). `user.xfer.*` is xfer's own (the
//! partial mark), never sent and never set from an offer.

use std::os::fd::AsFd;
use std::path::Path;

use crate::hex::{hex, unhex_vec};
use crate::proto::message::Xattrs;

/// The prefix of xfer's own attributes.
pub(crate) const OWN_PREFIX: &str = "user.xfer.";
/// The namespace anybody may use.
const USER_PREFIX: &str = "user.";

/// Whether this process may read and set every namespace (as root), or `user.*` only.
pub(crate) fn all_namespaces() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether an attribute of this name may be set here: never xfer's own; `user.*`
/// always, the others only as root and when the receiver allows them.
pub(crate) fn settable(name: &str, all: bool) -> bool {
    !name.starts_with(OWN_PREFIX) && (all || name.starts_with(USER_PREFIX))
}

/// The attributes of `path` (not following a link) that this process may carry;
/// `None` when there are none or they cannot be listed.
pub(crate) fn read(path: &Path) -> Option<Xattrs> {
    let all = all_namespaces();
    let size = rustix::fs::llistxattr_query(path).ok()?;
    if size == 0 {
        return None;
    }
    let mut names = vec![0u8; size];
    let len = rustix::fs::llistxattr(path, &mut names[..]).ok()?;
    let mut xattrs = Xattrs::new();
    for name in settable_names(&names[..len.min(size)], all) {
        if let Some(value) = value_of(path, name) {
            xattrs.insert(name.to_string(), hex(&value));
        }
    }
    (!xattrs.is_empty()).then_some(xattrs)
}

/// The names in a list the system gave (each ended by a NUL) that this process may
/// carry or change (`all`: every namespace; see [`settable`]).
fn settable_names(listed: &[u8], all: bool) -> impl Iterator<Item = &str> {
    listed
        .split(|b| *b == 0)
        .filter_map(|name| std::str::from_utf8(name).ok())
        .filter(move |name| !name.is_empty() && settable(name, all))
}

fn value_of(path: &Path, name: &str) -> Option<Vec<u8>> {
    let size = rustix::fs::lgetxattr_query(path, name).ok()?;
    let mut value = vec![0u8; size];
    let len = rustix::fs::lgetxattr(path, name, &mut value[..]).ok()?;
    value.truncate(len);
    Some(value)
}

/// Sets on `fd` those of `xattrs` that `all` allows; returns how many were not set
/// (refused by the rule or by the system).
pub(crate) fn apply(fd: impl AsFd, xattrs: &Xattrs, all: bool) -> usize {
    let mut dropped = 0;
    for (name, value) in xattrs {
        let value = unhex_vec(value).unwrap_or_default();
        let set = settable(name, all)
            && rustix::fs::fsetxattr(&fd, name.as_str(), &value, rustix::fs::XattrFlags::empty())
                .is_ok();
        dropped += usize::from(!set);
    }
    dropped
}

/// Removes from `fd` the attributes `all` allows that `xattrs` does not name: what a
/// file kept in place of a new one must lose to match it. Returns how many went.
pub(crate) fn remove_others(fd: impl AsFd, xattrs: &Xattrs, all: bool) -> usize {
    let names = listed(&fd);
    settable_names(&names, all)
        .filter(|name| removable(name) && !xattrs.contains_key(*name))
        .filter(|name| rustix::fs::fremovexattr(&fd, *name).is_ok())
        .count()
}

/// Whether `fd` holds an attribute `all` allows that `xattrs` does not name: one
/// [`remove_others`] would remove.
pub(crate) fn has_others(fd: impl AsFd, xattrs: &Xattrs, all: bool) -> bool {
    let names = listed(&fd);
    settable_names(&names, all).any(|name| removable(name) && !xattrs.contains_key(name))
}

/// Whether an attribute the source lacks may go: never a security label or an ACL
/// (`security.*`, `system.*`), which the receiving system gave the file and may
/// rely on (a file without its SELinux label may be denied to everyone), and which
/// a source on another filesystem may simply not have.
fn removable(name: &str) -> bool {
    !name.starts_with("security.") && !name.starts_with("system.")
}

/// The names `fd` holds, each ended by a NUL; none when they cannot be listed.
fn listed(fd: impl AsFd) -> Vec<u8> {
    let Ok(size) = rustix::fs::flistxattr_query(&fd) else {
        return Vec::new();
    };
    let mut names = vec![0u8; size];
    match rustix::fs::flistxattr(&fd, &mut names[..]) {
        Ok(len) => {
            names.truncate(len.min(size));
            names
        }
        Err(_) => Vec::new(),
    }
}

/// Whether `fd` holds each of `xattrs` that `all` allows, with the same value.
pub(crate) fn holds(fd: impl AsFd, xattrs: &Xattrs, all: bool) -> bool {
    xattrs
        .iter()
        .filter(|(name, _)| settable(name, all))
        .all(|(name, value)| {
            let wanted = unhex_vec(value).unwrap_or_default();
            let mut here = vec![0u8; wanted.len() + 1];
            rustix::fs::fgetxattr(&fd, name.as_str(), &mut here[..])
                .is_ok_and(|len| here[..len] == wanted[..])
        })
}

/// Sets attributes on the link `name` in directory `dir` itself (never what it
/// points at), through `/proc/self/fd`; returns how many were not set.
pub(crate) fn apply_to_link(dir: impl AsFd, name: &[u8], xattrs: &Xattrs, all: bool) -> usize {
    use std::os::fd::AsRawFd;
    let mut path = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let mut dropped = 0;
    for (attr, value) in xattrs {
        let value = unhex_vec(value).unwrap_or_default();
        let set = settable(attr, all)
            && rustix::fs::lsetxattr(
                path.as_slice(),
                attr.as_str(),
                &value,
                rustix::fs::XattrFlags::empty(),
            )
            .is_ok();
        dropped += usize::from(!set);
    }
    dropped
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
    fn labels_and_acls_the_source_lacks_stay() {
        assert!(removable("user.comment") && removable("trusted.x"));
        assert!(!removable("security.selinux") && !removable("system.posix_acl_access"));
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
        assert!(has_others(&file, &none, true));
        assert_eq!(remove_others(&file, &none, true), 1);
        assert!(!has_others(&file, &none, true));
        let mut left = vec![0u8; 256];
        let len = rustix::fs::flistxattr(&file, &mut left[..]).unwrap();
        assert!(
            left[..len].starts_with(b"security.xfer_test"),
            "{:?}",
            &left[..len]
        );
    }
}
