//! The opened target directory ([`TargetDir`]) and the receiver's lock on it
//! ([`DirLock`]): opening, locking, the questions asked of it (identity, free
//! space), making sealed part files durable together, and the sweep of stale
//! temporaries. The names beneath it are reached by a `Resolver` (`resolver.rs`,
//! which also holds [`TargetDir::resolver`]); this file must not resolve names
//! itself, nor reach for anything above `fs`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::{Access, AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::displaced::Displaced;
use super::meta::Unapplied;
use super::part::PartFile;
use super::sweep;
use crate::error::{Kind, fail};
use crate::escape::escape_path;
use crate::fs::Refusal;
use crate::fs::ledger::Account;

/// The directory a receiver writes into, held open so that every name is resolved
/// beneath it.
pub(crate) struct TargetDir {
    root: OwnedFd,
    /// A server's `put`: the user's ledger, through which everything written here
    /// is counted (see `fs::quota`); also what makes the server keep its own access
    /// to what it writes and refuse paths too deep to count.
    meter: Option<Account>,
    /// How whoever decides replaces an existing file, said when one is refused.
    replace_hint: &'static str,
    /// What the session writing here could not apply (see [`TargetDir::for_session`]).
    dropped: Arc<Unapplied>,
    /// A client's `get`: its server speaks for `user.*` attributes only, so only
    /// those are set or removed here (see [`TargetDir::for_a_get`]).
    user_xattrs: bool,
    /// The offer being received names no attributes but `user.*`, so only those
    /// are removed here (see [`TargetDir::offer_names_user_xattrs_only`]).
    user_strays: AtomicBool,
    /// The directories the session writing here uses with their owner's bits
    /// (`loosen.rs`).
    taken: Arc<Mutex<Taken>>,
    /// The inodes the session writing here took a name from or gave one
    /// (`displaced.rs`), which `--delete` knows changed by its hand.
    displaced: Arc<Displaced>,
}

/// What a session took of the directories lent to it (`loosen.rs`): the target's
/// root, held once for all of them, and the directories it uses, by identity.
#[derive(Default)]
pub(super) struct Taken {
    root: Option<Arc<OwnedFd>>,
    /// By identity, which loan of it (`lent.rs`).
    pub(super) used: HashMap<(u64, u64), u64>,
}

impl Taken {
    /// The target's root, for the loans of this session (one descriptor for all).
    pub(super) fn root(&mut self, target: &TargetDir) -> Option<Arc<OwnedFd>> {
        if self.root.is_none() {
            self.root = Some(Arc::new(target.dup_root().ok()?));
        }
        self.root.clone()
    }
}

/// The `exists` hint where the user who sees it is the one who replaces files
/// (`get -f`, a server's `put -f`).
const REPLACE_HINT: &str = "the receiver does not overwrite; --overwrite replaces it";

/// A receiver's claim on its target directory, released when dropped (or when the
/// process ends, however it ends).
#[derive(Debug)]
pub(crate) struct DirLock {
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

/// How [`TargetDir::make_and_lock`] refuses a `dir` that is a file.
fn not_a_directory(dir: &Path, named: &str) -> anyhow::Error {
    fail(
        Kind::Io,
        format!(
            "{named} {} is a file, not a directory: name a directory (it is made if missing)",
            escape_path(dir)
        ),
    )
}

/// How [`TargetDir::make_and_lock`] fails to make `dir` (`named` as there).
fn cannot_create(dir: &Path, named: &str, err: io::Error) -> anyhow::Error {
    let context = format!("cannot create {named} {}", escape_path(dir));
    crate::error::tag(Kind::Io, anyhow::Error::new(err).context(context))
}

/// Why making `dir`, which is not there, with its missing parents would fail, as
/// far as can be told without writing: the nearest thing that is there on the way
/// is a link leading nowhere (`mkdir` meets it: `EEXIST`), or a directory this
/// process may not add to (`access`, which also says `EROFS`). `None`: it looks
/// makeable (a full disk, a race, remain for the real run to meet).
fn why_it_cannot_be_made(dir: &Path) -> Option<io::Error> {
    let mut there = dir;
    while std::fs::symlink_metadata(there).is_err() {
        there = match there.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => return None,
        };
    }
    match std::fs::metadata(there) {
        Err(_) => Some(io::Error::from_raw_os_error(Errno::EXIST.raw_os_error())),
        Ok(meta) if meta.is_dir() => rustix::fs::access(there, Access::WRITE_OK | Access::EXEC_OK)
            .err()
            .map(io::Error::from),
        Ok(_) => None,
    }
}

/// A directory with nothing in it and no name (see [`TargetDir::open_for_dry_run`]).
fn empty_stand_in() -> anyhow::Result<TargetDir> {
    // `$TMPDIR` first, then the usual places, absolute ones only: a temporary
    // directory that cannot be used (set to nowhere, full, read-only) must not fail
    // a dry run whose real run would pass, nor a relative one put it in the user's
    // current directory.
    let mut bases = vec![std::env::temp_dir()];
    bases.extend(["/tmp", "/dev/shm", "/var/tmp"].map(std::path::PathBuf::from));
    bases.retain(|base| base.is_absolute());
    bases.dedup();
    let mut why = String::new();
    for base in &bases {
        match stand_in_at(base) {
            Ok(target) => return Ok(target),
            Err(err) => why = format!("{}: {err:#}", escape_path(base)),
        }
    }
    Err(fail(
        Kind::Io,
        format!(
            "a dry run into a directory not there yet plans in an empty one, and none \
             could be made in a temporary directory ({why})"
        ),
    ))
}

/// An empty directory made in `base`, opened and removed at once.
fn stand_in_at(base: &Path) -> anyhow::Result<TargetDir> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for attempt in 0..8 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!(".xfer-dry-run-{}-{nanos}-{attempt}", std::process::id());
        let path = base.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                let opened = TargetDir::open(&path);
                let _ = std::fs::remove_dir(&path);
                return opened;
            }
            Err(err) => last = Some(err),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::other("no name left"))
        .into())
}

impl TargetDir {
    /// Makes `dir` (and parents, with `mode` before the umask) unless it is there,
    /// then opens and locks it against a second writer: where a receiver, a
    /// download or a server writes. `named` is how the user gave it (`--dir`, `the
    /// root`), for the messages; a file of that name is refused plainly.
    pub(crate) fn make_and_lock(
        dir: &Path,
        named: &str,
        mode: u32,
    ) -> anyhow::Result<(TargetDir, DirLock)> {
        use std::os::unix::fs::DirBuilderExt;
        if dir.exists() && !dir.is_dir() {
            return Err(not_a_directory(dir, named));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .map_err(|err| cannot_create(dir, named, err))?;
        let target = TargetDir::open(dir)?;
        let lock = target.lock(dir)?;
        Ok((target, lock))
    }

    /// Where a dry run plans: `dir` opened and locked as [`TargetDir::make_and_lock`]
    /// would, but never made. When it is not there (`Ok((_, None))`, said as `style`
    /// says: a line, an event), a stand-in with nothing in it and no name: a
    /// directory made in the temporary directory, opened and removed at once, in
    /// which every name is absent and nothing can be made. Each entry then plans as
    /// new, as it would in the directory a real run makes.
    pub(crate) fn open_for_dry_run(
        dir: &Path,
        named: &str,
        style: crate::ui::report::Style,
    ) -> anyhow::Result<(TargetDir, Option<DirLock>)> {
        match std::fs::metadata(dir) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if let Some(err) = why_it_cannot_be_made(dir) {
                    return Err(cannot_create(dir, named, err));
                }
                let stand_in = empty_stand_in()?;
                crate::ui::report::not_there_yet_locally(style, dir);
                Ok((stand_in, None))
            }
            Ok(meta) if meta.is_dir() => {
                let target = TargetDir::open(dir)?;
                let lock = target.lock(dir)?;
                Ok((target, Some(lock)))
            }
            // Refused as a real run would refuse it, without making anything.
            Ok(_) => Err(not_a_directory(dir, named)),
            // A file on the way: what making it would meet.
            Err(err) if err.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {
                Err(cannot_create(dir, named, err))
            }
            Err(err) => Err(fail(
                Kind::Io,
                format!("cannot open {named} {}: {err}", escape_path(dir)),
            )),
        }
    }

    /// Opens `path`, which must be an existing directory (a link to one is fine:
    /// the user chose it; links found inside it are never followed).
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
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
        Ok(TargetDir::from_fd(root))
    }

    /// A target directory already opened (a directory of a user's home).
    pub(crate) fn from_fd(root: OwnedFd) -> Self {
        TargetDir {
            root,
            meter: None,
            replace_hint: REPLACE_HINT,
            dropped: Arc::default(),
            user_xattrs: false,
            user_strays: AtomicBool::new(false),
            taken: Arc::default(),
            displaced: Arc::default(),
        }
    }

    /// This directory as a server's `put` target, counted in `account`.
    pub(crate) fn metered(self, account: Account) -> Self {
        TargetDir {
            meter: Some(account),
            ..self
        }
    }

    pub(crate) fn meter(&self) -> Option<&Account> {
        self.meter.as_ref()
    }

    /// Says `hint` (in parentheses) when an existing file is refused, instead of
    /// pointing at `--overwrite`: a plain receiver's sender cannot replace files.
    pub(crate) fn with_replace_hint(mut self, hint: &'static str) -> Self {
        self.replace_hint = hint;
        self
    }

    /// This directory as a `get`'s: a server keeps no attributes but `user.*`, so
    /// the others a local file holds are not its to remove (a root client's
    /// `trusted.*` stay); `user.*` ones follow the server's copy.
    pub(crate) fn for_a_get(self) -> Self {
        TargetDir {
            user_xattrs: true,
            ..self
        }
    }

    /// Whether only `user.*` attributes are set or removed here (a `get`'s).
    pub(crate) fn user_xattrs_only(&self) -> bool {
        self.user_xattrs
    }

    /// Says that the offer being received names no attributes but `user.*` (its
    /// sender did not say `xattrs_all`, docs/PROTOCOL.md 16.1.1: not root, it read
    /// no others): the others an entry here holds are not its to remove (a root
    /// receiver's `trusted.*` stay), though it may still set any it names.
    pub(crate) fn offer_names_user_xattrs_only(&self) {
        self.user_strays.store(true, Ordering::Relaxed);
    }

    /// Whether only `user.*` attributes an entry holds are removed here.
    pub(crate) fn removes_user_xattrs_only(&self) -> bool {
        self.user_xattrs || self.user_strays.load(Ordering::Relaxed)
    }

    /// How whoever decides replaces an existing file (see [`Self::with_replace_hint`]).
    pub(crate) fn replace_hint(&self) -> &'static str {
        self.replace_hint
    }

    /// Takes the directory for this process: a second receiver on the same
    /// directory is refused, naming the first, rather than both sweeping and
    /// racing over each other's temporaries. The lock is the kernel's (`flock` on
    /// the directory itself: nothing is written into it, and a process that dies
    /// releases it). The directory must be writable, which is checked here too,
    /// before any peer is waited for.
    pub(crate) fn lock(&self, shown: &Path) -> anyhow::Result<DirLock> {
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
    pub(crate) fn identity(&self) -> (u64, u64) {
        rustix::fs::fstat(&self.root).map_or((0, 0), |stat| (stat.st_dev, stat.st_ino))
    }

    /// Bytes available to us on the target's filesystem, if the system says.
    pub(crate) fn free_space(&self) -> Option<u64> {
        let stat = rustix::fs::fstatvfs(&self.root).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Makes the data of sealed part files (see [`PartFile::seal`]) and the names
    /// given before (`named`, taken) durable: one `syncfs` per filesystem, since
    /// that flushes the whole filesystem anyway, through the session's own handle
    /// (`own`, see [`TargetDir::own_handle`]) for the target's filesystem.
    /// Committing a group is a flush of its data, then its names
    /// ([`TargetDir::name_group`]), then a flush that covers those names (the next
    /// group's, or one with no parts).
    pub(crate) fn flush(
        &self,
        own: Option<&Arc<OwnedFd>>,
        parts: &[PartFile],
        named: Unflushed,
    ) -> Result<(), Errno> {
        let dirs = named.0.iter().chain(parts.iter().map(|part| &part.dir));
        sync_filesystems(own.into_iter().chain(dirs))
    }

    /// The target opened afresh (its own open file, not a copy of the root's), for
    /// one session's flushes: `syncfs` tells of a lost write once per open file, to
    /// the files opened before it happened, so the root's descriptor (opened when
    /// the receiver started, and used by every session) may have been told already
    /// by another session's flush, and one opened later never is. `None` where the
    /// directory cannot be opened for reading (the flushes then go through the
    /// directories of the files, as before).
    pub(crate) fn own_handle(&self) -> Option<Arc<OwnedFd>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::openat(&self.root, ".", flags, Mode::empty())
            .ok()
            .map(Arc::new)
    }

    /// Gives part files whose data `flushed` made durable their final names
    /// (refused where a name was taken meanwhile), or refuses them all when that
    /// flush failed. Returns each part's result in the order of `parts` (`Ok`:
    /// under its final name, durable after the next flush); the directories of the
    /// names given are added to `named`, for that flush.
    pub(crate) fn name_group(
        &self,
        parts: Vec<PartFile>,
        flushed: Result<(), Errno>,
        overwrite: bool,
        named: &mut Unflushed,
    ) -> Vec<Result<(), Refusal>> {
        if let Err(err) = flushed {
            let refuse =
                |part: &PartFile| Err(Refusal::io(&part.path, "cannot flush to disk", err));
            return parts.iter().map(refuse).collect();
        }
        parts
            .into_iter()
            .map(|mut part| {
                part.rename_into_place(overwrite)?;
                named.0.push(part.dir.clone());
                Ok(())
            })
            .collect()
    }

    /// Another handle on the same directory (for a background sweep).
    pub(crate) fn try_clone(&self) -> io::Result<TargetDir> {
        Ok(TargetDir {
            root: self.dup_root()?,
            meter: self.meter.clone(),
            replace_hint: self.replace_hint,
            dropped: self.dropped.clone(),
            user_xattrs: self.user_xattrs,
            user_strays: AtomicBool::new(self.removes_user_xattrs_only()),
            taken: self.taken.clone(),
            displaced: self.displaced.clone(),
        })
    }

    /// Another handle on the same directory for one session, counting what that
    /// session could not apply apart from any other session writing here at once
    /// (a listener's, a server's).
    pub(crate) fn for_session(&self) -> io::Result<TargetDir> {
        Ok(TargetDir {
            dropped: Arc::default(),
            taken: Arc::default(),
            displaced: Arc::default(),
            ..self.try_clone()?
        })
    }

    /// What the session writing here could not apply so far.
    pub(crate) fn unapplied(&self) -> &Arc<Unapplied> {
        &self.dropped
    }

    /// The inodes the session writing here changed by naming (`displaced.rs`).
    pub(super) fn displaced(&self) -> &Arc<Displaced> {
        &self.displaced
    }

    /// The directories the session writing here uses lent (`loosen.rs`).
    pub(super) fn taken(&self) -> &Mutex<Taken> {
        &self.taken
    }

    pub(crate) fn dup_root(&self) -> io::Result<OwnedFd> {
        Ok(rustix::io::dup(&self.root)?)
    }

    /// Removes temporary and partial files (`.xfer-*.part`, `.xfer-*.partial`) last
    /// modified more than `age` ago, anywhere beneath the root, following no links.
    /// Returns how many it removed.
    pub(crate) fn sweep_stale(&self, age: Duration) -> usize {
        match (sweep::cutoff(age), self.dup_root()) {
            (Some(cutoff), Ok(root)) => sweep::sweep(root, cutoff),
            _ => 0,
        }
    }

    /// Sweeps (see [`TargetDir::sweep_stale`]) in a thread of its own, since a large
    /// tree takes a while: now, and then every hour while `repeat`. `removed` hears
    /// of each sweep that removed something.
    pub(crate) fn sweep_in_background(
        self,
        keep: Duration,
        repeat: bool,
        removed: impl Fn(usize) + Send + 'static,
    ) -> anyhow::Result<()> {
        sweep::in_background(repeat, move || self.sweep_stale(keep), removed)
    }
}

/// The directories of files [`TargetDir::name_group`] named whose names are
/// still to be flushed.
#[derive(Default)]
pub(crate) struct Unflushed(Vec<Arc<OwnedFd>>);

impl Unflushed {
    /// Adds the directories of `more`.
    pub(crate) fn append(&mut self, mut more: Unflushed) {
        self.0.append(&mut more.0);
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
