//! The inodes a session changed by taking a name from them (a file or link it
//! renamed over, or removed from the way of a directory) or by giving them one (a
//! hard link it made), each with the change time (`ctime`) the session left it
//! with. `--delete` spares whatever changed since the session began, lest it
//! remove another writer's file (`prune.rs`); but a hard-linked file whose other
//! name this session replaced changed by this session's hand alone, and its
//! stale names go in the same run, as rsync removes them. Only inodes with other
//! names are recorded: no other name of the rest is left to prune.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::fs::{FileType, Mode, OFlags, Stat};

use crate::fs::beneath;

/// See the module documentation: by device and inode, the change time the session
/// left each with.
#[derive(Default)]
pub(crate) struct Displaced(Mutex<HashMap<(u64, u64), i128>>);

impl Displaced {
    /// Runs `change`, which takes `name` of `dir` from whatever holds it (a rename
    /// over it, an unlink); if that has other names and `change` succeeds, records
    /// it as the change left it.
    pub(super) fn taking<T, E>(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        change: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let held = with_other_names(dir, name);
        let changed = change();
        if let (Ok(_), Some(fd)) = (&changed, held) {
            self.note(&fd);
        }
        changed
    }

    /// Records what `name` of `dir` holds as it is now (a file this session just
    /// gave another name), if it has other names.
    pub(super) fn note_at(&self, dir: &OwnedFd, name: &[u8]) {
        if let Some(fd) = with_other_names(dir, name) {
            self.note(&fd);
        }
    }

    /// Whether `stat`'s inode last changed by this session's hand: its change
    /// time is the one the session left it with.
    pub(super) fn left_as(&self, stat: &Stat) -> bool {
        let key = (stat.st_dev, stat.st_ino);
        self.books().get(&key) == Some(&beneath::changed_at(stat))
    }

    fn note(&self, fd: &OwnedFd) {
        if let Ok(stat) = rustix::fs::fstat(fd) {
            let key = (stat.st_dev, stat.st_ino);
            self.books().insert(key, beneath::changed_at(&stat));
        }
    }

    fn books(&self) -> MutexGuard<'_, HashMap<(u64, u64), i128>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `name` of `dir` held open (`O_PATH`; a link itself, never followed) where it
/// is not a directory and has other names.
fn with_other_names(dir: &OwnedFd, name: &[u8]) -> Option<OwnedFd> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    (beneath::kind(&stat) != FileType::Directory && stat.st_nlink > 1).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_dir(path: &std::path::Path) -> OwnedFd {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        rustix::fs::open(path, flags, Mode::empty()).unwrap()
    }

    #[test]
    fn a_hard_linked_file_renamed_over_is_known_as_left_until_changed_again() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), b"old").unwrap();
        std::fs::hard_link(tmp.path().join("a"), tmp.path().join("b")).unwrap();
        std::fs::write(tmp.path().join("new"), b"new").unwrap();
        let dir = open_dir(tmp.path());
        let displaced = Displaced::default();
        let renamed = displaced.taking(&dir, b"a", || rustix::fs::renameat(&dir, "new", &dir, "a"));
        renamed.unwrap();
        let stale = rustix::fs::lstat(tmp.path().join("b")).unwrap();
        assert_eq!(stale.st_nlink, 1);
        assert!(displaced.left_as(&stale));
        // Another writer's change after that is not the session's.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::set_permissions(
            tmp.path().join("b"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(!displaced.left_as(&rustix::fs::lstat(tmp.path().join("b")).unwrap()));
    }

    #[test]
    fn a_file_with_one_name_or_a_failed_change_is_not_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), b"only").unwrap();
        std::fs::write(tmp.path().join("new"), b"new").unwrap();
        let dir = open_dir(tmp.path());
        let displaced = Displaced::default();
        let stat = rustix::fs::lstat(tmp.path().join("a")).unwrap();
        let failed: Result<(), ()> = displaced.taking(&dir, b"a", || Err(()));
        assert!(failed.is_err());
        displaced
            .taking(&dir, b"a", || rustix::fs::renameat(&dir, "new", &dir, "a"))
            .unwrap();
        assert!(displaced.books().is_empty());
        assert!(!displaced.left_as(&stat));
    }
}
