//! What a receiver writes. [`TargetDir`] holds the opened target directory (or a
//! user's home) and, while a receiver runs, a lock on it; a [`Resolver`] reaches
//! every name beneath it without following links and decides where each file
//! lands; a [`PartFile`] is one file on its way, written under a temporary name and
//! renamed only once verified and on disk; groups of them are made durable together
//! by [`TargetDir::commit_all`]. `sweep.rs` removes what no sender came back for.

mod meta;
mod part;
mod resolver;
mod sweep;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{Access, AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

pub use self::part::{PartFile, Resume};
pub use self::resolver::{Placement, Resolver};
use super::Refusal;
use super::ledger::Account;
use crate::error::{Kind, fail};
use crate::ui::escape::escape_path;

/// The directory a receiver writes into, held open so that every name is resolved
/// beneath it.
pub struct TargetDir {
    root: OwnedFd,
    /// A server's `put`: the user's ledger, through which everything written here
    /// is counted (see `fs::quota`); also what makes the server keep its own access
    /// to what it writes and refuse paths too deep to count.
    meter: Option<Account>,
}

/// A receiver's claim on its target directory, released when dropped (or when the
/// process ends, however it ends).
#[derive(Debug)]
pub struct DirLock {
    _fd: OwnedFd,
}

/// The process holding a `flock` on the directory `fd`, from `/proc/locks`.
fn lock_holder(fd: &OwnedFd) -> Option<u32> {
    let stat = rustix::fs::fstat(fd).ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(stat.st_dev),
        rustix::fs::minor(stat.st_dev),
        stat.st_ino
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 3301 fe:00:246951 0 EOF"
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&id.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

impl TargetDir {
    /// Opens `path`, which must be an existing directory (a link to one is fine:
    /// the user chose it; links found inside it are never followed).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let root = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| {
            fail(
                Kind::Io,
                format!(
                    "cannot open target directory {}: {}",
                    escape_path(path),
                    io::Error::from(err)
                ),
            )
        })?;
        Ok(TargetDir { root, meter: None })
    }

    /// A target directory already opened (a directory of a user's home).
    pub fn from_fd(root: OwnedFd) -> Self {
        TargetDir { root, meter: None }
    }

    /// This directory as a server's `put` target, counted in `account`.
    pub fn metered(self, account: Account) -> Self {
        TargetDir {
            meter: Some(account),
            ..self
        }
    }

    pub(crate) fn meter(&self) -> Option<&Account> {
        self.meter.as_ref()
    }

    /// Takes the directory for this process: a second receiver on the same
    /// directory is refused, naming the first, rather than both sweeping and
    /// racing over each other's temporaries. The lock is the kernel's (`flock` on
    /// the directory itself: nothing is written into it, and a process that dies
    /// releases it). The directory must be writable, which is checked here too,
    /// before any peer is waited for.
    pub fn lock(&self, shown: &Path) -> anyhow::Result<DirLock> {
        let shown = escape_path(shown);
        let holder = rustix::io::dup(&self.root)
            .map_err(|err| anyhow::Error::new(io::Error::from(err)).context("cannot lock"))?;
        // A dup shares the open file description, and so the lock: lock a fresh one.
        let fd = rustix::fs::openat(
            &holder,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| {
            anyhow::Error::new(io::Error::from(err)).context(format!("cannot lock {shown}"))
        })?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let holder = lock_holder(&fd).map_or_else(
                    || "another process".to_string(),
                    |pid| format!("process {pid}"),
                );
                return Err(fail(
                    Kind::Io,
                    format!(
                        "another xfer receiver ({holder}) is writing into {shown}; \
                         stop it, or receive into another directory"
                    ),
                ));
            }
            Err(err) => {
                return Err(anyhow::Error::new(io::Error::from(err))
                    .context(format!("cannot lock {shown}")));
            }
        }
        rustix::fs::accessat(
            &self.root,
            ".",
            Access::WRITE_OK | Access::EXEC_OK,
            AtFlags::empty(),
        )
        .map_err(|err| {
            fail(
                Kind::Io,
                format!(
                    "cannot write into {shown}: {} (the receiver needs to create files there)",
                    io::Error::from(err)
                ),
            )
        })?;
        Ok(DirLock { _fd: fd })
    }

    /// The directory's device and inode: which directory it is, whatever its name.
    pub fn identity(&self) -> (u64, u64) {
        rustix::fs::fstat(&self.root).map_or((0, 0), |stat| (stat.st_dev, stat.st_ino))
    }

    /// Bytes available to us on the target's filesystem, if the system says.
    pub fn free_space(&self) -> Option<u64> {
        let stat = rustix::fs::fstatvfs(&self.root).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Makes sealed part files (see [`PartFile::seal`]) durable under their final
    /// names, all at once: one flush per filesystem for all their data, the renames,
    /// and one more flush for the names. Results are in the order of `parts`.
    pub fn commit_all(&self, parts: Vec<PartFile>, overwrite: bool) -> Vec<Result<(), Refusal>> {
        let mut results: Vec<Result<(), Refusal>> = parts.iter().map(|_| Ok(())).collect();
        if let Err(err) = sync_filesystems(parts.iter().map(|part| &part.dir)) {
            for (slot, part) in parts.iter().enumerate() {
                results[slot] = Err(Refusal::io(&part.path, "cannot flush to disk", err));
            }
            return results;
        }
        let mut renamed = Vec::with_capacity(parts.len());
        for (slot, mut part) in parts.into_iter().enumerate() {
            match part.rename_into_place(overwrite) {
                Ok(()) => renamed.push((slot, part)),
                Err(refusal) => results[slot] = Err(refusal),
            }
        }
        if let Err(err) = sync_filesystems(renamed.iter().map(|(_, part)| &part.dir)) {
            for (slot, part) in &renamed {
                results[*slot] = Err(Refusal::io(
                    &part.path,
                    "cannot flush its name to disk",
                    err,
                ));
            }
        }
        results
    }

    /// Another handle on the same directory (for a background sweep).
    pub fn try_clone(&self) -> io::Result<TargetDir> {
        Ok(TargetDir {
            root: self.dup_root()?,
            meter: self.meter.clone(),
        })
    }

    pub(crate) fn dup_root(&self) -> io::Result<OwnedFd> {
        Ok(rustix::io::dup(&self.root)?)
    }

    /// Removes temporary and partial files (`.xfer-*.part`, `.xfer-*.partial`) last
    /// modified more than `age` ago, anywhere beneath the root, following no links.
    /// Returns how many it removed.
    pub fn sweep_stale(&self, age: Duration) -> usize {
        let Some(cutoff) = SystemTime::now().checked_sub(age) else {
            return 0;
        };
        let cutoff = cutoff
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.dup_root().map_or(0, |root| sweep::sweep(root, cutoff))
    }

    /// A resolver for one thread of one session (see [`Resolver`]).
    pub fn resolver(&self) -> Resolver<'_> {
        Resolver::new(self)
    }
}

/// One `syncfs` for each filesystem among `dirs` (a subdirectory may be another mount).
fn sync_filesystems<'a>(dirs: impl Iterator<Item = &'a Arc<OwnedFd>>) -> Result<(), Errno> {
    // Files of one directory share its descriptor: look at each directory once.
    let mut seen = HashSet::new();
    let mut synced = HashSet::new();
    for dir in dirs {
        if seen.insert(Arc::as_ptr(dir)) && synced.insert(rustix::fs::fstat(&**dir)?.st_dev) {
            rustix::fs::syncfs(&**dir)?;
        }
    }
    Ok(())
}

/// Standard output as the destination of one received stream (`recv --stdout`).
/// Its bytes are out before they can be verified; the caller says so on a mismatch.
pub struct StdoutSink(File);

impl StdoutSink {
    /// A handle on standard output that writes straight to the descriptor, not
    /// through std's line buffering.
    pub fn open() -> io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(StdoutSink(File::from(fd)))
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::path::check_path;
    use crate::proto::message::ErrorCode;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn target() -> (tempfile::TempDir, TargetDir) {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        (dir, target)
    }

    fn write(
        target: &TargetDir,
        path: &str,
        content: &[u8],
        overwrite: bool,
    ) -> Result<Placement, Refusal> {
        let components = check_path(path).unwrap();
        let placement = target.resolver().probe_file(
            path,
            &components,
            overwrite,
            (Some(content.len() as u64), Some(1_000_000_000)),
        )?;
        if placement == Placement::Same {
            return Ok(placement);
        }
        let mut part = target.resolver().create_part(path, &components, None)?;
        part.write_all(content)?;
        part.commit(Some(0o640), Some(1_000_000_000), overwrite)?;
        Ok(placement)
    }

    #[test]
    fn a_committed_file_lands_with_its_mode_and_time_and_no_temporaries() {
        let (dir, target) = target();
        write(&target, "a/b/c.txt", b"content", false).unwrap();
        let landed = dir.path().join("a/b/c.txt");
        assert_eq!(std::fs::read(&landed).unwrap(), b"content");
        let meta = std::fs::metadata(&landed).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.mtime(), 1_000_000_000);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn a_dropped_part_file_leaves_nothing() {
        let (dir, target) = target();
        let mut part = target.resolver().create_part("x", &["x"], None).unwrap();
        part.write_all(b"half").unwrap();
        drop(part);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_read_only_file_stays_resumable_until_it_is_complete() {
        let (dir, target) = target();
        let resume = Resume { size: 8, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("ro", &["ro"], Some(resume))
            .unwrap();
        part.write_all(b"half").unwrap();
        drop(part); // cut: the partial stays, owner-writable
        let partial = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            partial.metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
        let resume = Resume { size: 8, offset: 4 };
        let mut part = target
            .resolver()
            .create_part("ro", &["ro"], Some(resume))
            .unwrap();
        part.write_all(b"more").unwrap();
        part.commit(Some(0o444), None, false).unwrap();
        let landed = dir.path().join("ro");
        assert_eq!(std::fs::read(&landed).unwrap(), b"halfmore");
        assert_eq!(
            std::fs::metadata(&landed).unwrap().permissions().mode() & 0o777,
            0o444
        );
    }

    #[test]
    fn same_size_and_time_is_same_and_anything_else_exists() {
        let (dir, target) = target();
        write(&target, "x", b"old", false).unwrap();
        assert_eq!(write(&target, "x", b"new", false).unwrap(), Placement::Same);
        let refusal = write(&target, "x", b"newer", false).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Exists);
        assert!(refusal.message.contains("--overwrite"));
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"old");
        write(&target, "x", b"newer", true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"newer");
    }

    #[test]
    fn a_file_appearing_during_the_transfer_is_not_replaced_nor_left_hidden() {
        let (dir, target) = target();
        let resume = Resume { size: 4, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("x", &["x"], Some(resume))
            .unwrap();
        part.write_all(b"mine").unwrap();
        std::fs::write(dir.path().join("x"), b"theirs").unwrap();
        let refusal = part.commit(None, None, false).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Exists);
        assert!(refusal.message.contains("discarded"));
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"theirs");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no complete copy left hidden"
        );
    }

    #[test]
    fn a_temporary_swapped_by_someone_else_is_never_renamed() {
        let (dir, target) = target();
        let resume = Resume { size: 4, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("x", &["x"], Some(resume))
            .unwrap();
        part.write_all(b"mine").unwrap();
        let partial = dir.path().join(part::partial_name("x", 4));
        std::fs::remove_file(&partial).unwrap();
        std::fs::write(&partial, b"evil").unwrap();
        let refusal = part.commit(None, None, true).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Io);
        assert!(!dir.path().join("x").exists());
        assert_eq!(std::fs::read(&partial).unwrap(), b"evil", "left alone");
    }

    #[test]
    fn a_directory_planted_as_the_partial_does_not_block_the_file() {
        let (dir, target) = target();
        std::fs::create_dir(dir.path().join(part::partial_name("x", 3))).unwrap();
        let components = ["x"];
        let found = target
            .resolver()
            .find_partial("x", &components, 3, crate::proto::hash::HashKind::Md5)
            .unwrap();
        assert!(found.is_none());
        let resume = Resume { size: 3, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("x", &components, Some(resume))
            .unwrap();
        part.write_all(b"abc").unwrap();
        part.commit(None, None, false).unwrap();
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"abc");
    }

    #[test]
    fn planted_symlinks_never_redirect_a_write() {
        let (dir, target) = target();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), dir.path().join("f")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/dangling", dir.path().join("d")).unwrap();

        assert_eq!(
            write(&target, "sub/x", b"evil", false).unwrap_err().code,
            ErrorCode::BadPath
        );
        assert_eq!(
            write(&target, "sub/deeper/x", b"evil", true)
                .unwrap_err()
                .code,
            ErrorCode::BadPath
        );
        assert_eq!(
            target
                .resolver()
                .create_dir(&["sub", "new"])
                .unwrap_err()
                .code,
            ErrorCode::BadPath
        );
        assert_eq!(
            write(&target, "f", b"evil", false).unwrap_err().code,
            ErrorCode::Exists
        );
        assert_eq!(
            write(&target, "d", b"evil", false).unwrap_err().code,
            ErrorCode::Exists
        );
        // With overwrite, the link itself is replaced; its target is untouched.
        write(&target, "f", b"fine", true).unwrap();
        assert!(
            !std::fs::symlink_metadata(dir.path().join("f"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_reported() {
        let (dir, target) = target();
        std::fs::write(dir.path().join("a"), b"file").unwrap();
        assert_eq!(
            write(&target, "a/b", b"x", false).unwrap_err().code,
            ErrorCode::Exists
        );
        assert_eq!(
            target.resolver().create_dir(&["a"]).unwrap_err().code,
            ErrorCode::Exists
        );
    }

    #[test]
    fn a_second_receiver_on_the_same_directory_is_refused_by_name() {
        let (dir, target) = target();
        let held = target.lock(dir.path()).unwrap();
        let second = TargetDir::open(dir.path()).unwrap();
        let err = second.lock(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("process {}", std::process::id())),
            "{err:#}"
        );
        drop(held);
        assert!(second.lock(dir.path()).is_ok());
    }
}
