//! The inodes a session changed by taking a name from them (a file or link it
//! renamed over, or removed: from the way of a directory, or by `--delete`) or by
//! giving them one (a hard link it made), each with the change times (`ctime`)
//! before and after. `--delete` spares whatever changed since the session began,
//! lest it remove another writer's file (`prune.rs`); but a hard-linked file whose
//! other name this session replaced changed by this session's hand alone, and its
//! stale names go in the same run, as rsync removes them. Alone means: unchanged
//! since before the session began until this session changed it (its ctime then
//! older than the session), and unchanged since (its ctime still the one the
//! session left it with); a change by another writer before or after the
//! session's own keeps it. A change within the same tick of the kernel's coarse
//! clock right after the session's cannot be told from it where the kernel stamps
//! changes coarsely (since 6.13 it stamps one precisely once its times were looked
//! at, as here). Only inodes with other names are recorded: no other name of the
//! rest is left to prune.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::fs::{FileType, Mode, OFlags, Stat};

use crate::fs::beneath;

/// See the module documentation: by device and inode, the change times before and
/// after each of the session's changes of it. Its threads may change one inode at
/// once (two hard links made to it side by side), so a change's `before` may be
/// another's `after` that no thread saw: each pair is kept, and a chain of them
/// from the inode's ctime back to one older than the session is what makes the
/// change the session's alone.
#[derive(Default)]
pub(crate) struct Displaced(Mutex<Books>);

/// By device and inode, each change's change times before and after.
type Books = HashMap<(u64, u64), Vec<(i128, i128)>>;

impl Displaced {
    /// Runs `change`, which takes `name` of `dir` from whatever holds it (a rename
    /// over it, an unlink); if that has other names and `change` succeeds, records
    /// it as it was before and as the change left it.
    pub(crate) fn taking<T, E>(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        change: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let held = with_other_names(dir, name);
        let changed = change();
        if let (Ok(_), Some((fd, before))) = (&changed, held) {
            self.note(&fd, before);
        }
        changed
    }

    /// The change time of what `name` of `dir` holds (a file about to get another
    /// name: [`Displaced::gave_name`] after).
    pub(crate) fn before(dir: &OwnedFd, name: &[u8]) -> Option<i128> {
        Some(beneath::changed_at(&beneath::stat(dir, name).ok()??))
    }

    /// Records what `name` of `dir` holds, found changed `before` the session gave it
    /// another name (a hard link).
    pub(crate) fn gave_name(&self, dir: &OwnedFd, name: &[u8], before: i128) {
        if let Some((fd, _)) = with_other_names(dir, name) {
            self.note(&fd, before);
        }
    }

    /// Whether `stat`'s inode last changed by this session's hand alone since the
    /// session began (`since`, see the module documentation).
    pub(crate) fn only_by_this_session(&self, stat: &Stat, since: i128) -> bool {
        let books = self.books();
        let Some(pairs) = books.get(&(stat.st_dev, stat.st_ino)) else {
            return false;
        };
        // Back from its ctime now, change by change, to a time before the session.
        let mut at = beneath::changed_at(stat);
        for _ in 0..=pairs.len() {
            let earliest = (pairs.iter())
                .filter(|(_, after)| *after == at)
                .map(|(before, _)| *before)
                .min();
            match earliest {
                Some(before) if before < since => return true,
                Some(before) => at = before,
                None => return false,
            }
        }
        false
    }

    /// Records that the session changed `fd`'s inode, found changed at `before`,
    /// and left it as it is now.
    fn note(&self, fd: &OwnedFd, before: i128) {
        let Ok(stat) = rustix::fs::fstat(fd) else {
            return;
        };
        let pair = (before, beneath::changed_at(&stat));
        let mut books = self.books();
        let pairs = books.entry((stat.st_dev, stat.st_ino)).or_default();
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `name` of `dir` held open (`O_PATH`; a link itself, never followed) where it
/// is not a directory and has other names, with its change time.
fn with_other_names(dir: &OwnedFd, name: &[u8]) -> Option<(OwnedFd, i128)> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    let other_names = beneath::kind(&stat) != FileType::Directory && stat.st_nlink > 1;
    other_names.then(|| (fd, beneath::changed_at(&stat)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_dir(path: &std::path::Path) -> OwnedFd {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        rustix::fs::open(path, flags, Mode::empty()).unwrap()
    }

    /// `a` and its hard link `b`, made a tick ago, and `new` to rename over `a`.
    fn twins() -> (tempfile::TempDir, OwnedFd) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), b"old").unwrap();
        std::fs::hard_link(tmp.path().join("a"), tmp.path().join("b")).unwrap();
        std::fs::write(tmp.path().join("new"), b"new").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let dir = open_dir(tmp.path());
        (tmp, dir)
    }

    fn lstat(path: std::path::PathBuf) -> Stat {
        rustix::fs::lstat(path).unwrap()
    }

    #[test]
    fn a_twin_renamed_over_is_this_sessions_change_until_another_writer_changes_it() {
        let (tmp, dir) = twins();
        let since = beneath::change_clock();
        let displaced = Displaced::default();
        let rename = || rustix::fs::renameat(&dir, "new", &dir, "a");
        displaced.taking(&dir, b"a", rename).unwrap();
        let stale = lstat(tmp.path().join("b"));
        assert_eq!(stale.st_nlink, 1);
        assert!(displaced.only_by_this_session(&stale, since));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::set_permissions(
            tmp.path().join("b"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(!displaced.only_by_this_session(&lstat(tmp.path().join("b")), since));
    }

    #[test]
    fn a_twin_another_writer_changed_before_the_sessions_rename_is_not_its_alone() {
        let (tmp, dir) = twins();
        let since = beneath::change_clock();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Another writer appends to `b` during the session, before the rename.
        std::fs::OpenOptions::new()
            .append(true)
            .open(tmp.path().join("b"))
            .and_then(|mut b| std::io::Write::write_all(&mut b, b"more"))
            .unwrap();
        let displaced = Displaced::default();
        let rename = || rustix::fs::renameat(&dir, "new", &dir, "a");
        displaced.taking(&dir, b"a", rename).unwrap();
        assert!(!displaced.only_by_this_session(&lstat(tmp.path().join("b")), since));
    }

    #[test]
    fn two_changes_of_the_session_in_a_row_keep_the_first_before() {
        let (tmp, dir) = twins();
        std::fs::hard_link(tmp.path().join("a"), tmp.path().join("c")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let since = beneath::change_clock();
        let displaced = Displaced::default();
        let rename = || rustix::fs::renameat(&dir, "new", &dir, "a");
        displaced.taking(&dir, b"a", rename).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let unlink = || rustix::fs::unlinkat(&dir, "c", rustix::fs::AtFlags::empty());
        displaced.taking(&dir, b"c", unlink).unwrap();
        assert!(displaced.only_by_this_session(&lstat(tmp.path().join("b")), since));
    }

    #[test]
    fn changes_noted_out_of_order_still_chain_back_to_before_the_session() {
        let (tmp, _dir) = twins();
        let file = open_dir(tmp.path());
        let fd = rustix::fs::openat(&file, "b", OFlags::PATH | OFlags::NOFOLLOW, Mode::empty());
        let fd = fd.unwrap();
        let now = beneath::changed_at(&lstat(tmp.path().join("b")));
        let since = now - 10;
        let displaced = Displaced::default();
        // Two threads linked it at once: the second saw the first's change (at
        // `now - 5`, never seen by the first), both see `now` after.
        displaced.note(&fd, now - 5);
        displaced.note(&fd, now - 20);
        assert!(displaced.only_by_this_session(&lstat(tmp.path().join("b")), since));
        // Without the older one, nothing reaches back before the session.
        let alone = Displaced::default();
        alone.note(&fd, now - 5);
        assert!(!alone.only_by_this_session(&lstat(tmp.path().join("b")), since));
    }

    #[test]
    fn a_file_with_one_name_or_a_failed_change_is_not_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), b"only").unwrap();
        std::fs::write(tmp.path().join("new"), b"new").unwrap();
        let dir = open_dir(tmp.path());
        let displaced = Displaced::default();
        let stat = lstat(tmp.path().join("a"));
        let failed: Result<(), ()> = displaced.taking(&dir, b"a", || Err(()));
        assert!(failed.is_err());
        let rename = || rustix::fs::renameat(&dir, "new", &dir, "a");
        displaced.taking(&dir, b"a", rename).unwrap();
        assert!(displaced.books().is_empty());
        assert!(!displaced.only_by_this_session(&stat, i128::MAX));
    }
}
