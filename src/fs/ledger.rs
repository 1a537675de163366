//! The quota ledger of a home: one per home, shared by every session of its user,
//! with one lock, and the only way anything beneath the home is made, grown,
//! shrunk, renamed or removed by the server (a `put`'s part files and their
//! commit, its directories, links and changes of type, and `--delete`, here and in
//! `sink`; `remove`, `rename`, `mkdir`, the sweep of stale temporaries and the
//! first count in `quota.rs`).
//!
//! **What counts.** Every entry beneath a home (the home itself aside) is one of
//! its `files` (the users file's `max_files` bounds them): a regular file (each
//! name of a hard link, partials and temporaries included), a directory, a
//! symbolic link, a special file. Its bytes ([`Footprint::of`]): a regular file
//! its size; a directory one block, [`DIR_BYTES`] (4096), whatever its `st_size`
//! (which grows with its names and never shrinks on ext4, so could not be given
//! back exactly); a symbolic link its `lstat` size, the length of its target,
//! which never changes; a special file nothing. So a home's usage is the sum of
//! its files' sizes, plus 4096 per directory, plus its links' target lengths —
//! what `du`-like walks from outside count too, and what the first count adds up.
//!
//! **The rule.** At every moment, the bytes and entries on disk beneath a home —
//! complete files, partials and temporaries, directories and links, at any depth,
//! in any directory whatever its mode — are at most the quota plus what is in
//! flight in the frame being written right now; and `usage` reports what is on
//! disk. A partial's bytes are charged as they are written and stay charged until
//! the partial is gone; an overwrite's new file is charged as it is written,
//! beside the old one until that is replaced; a directory or link is charged, under the lock,
//! before it is made (`quota` if it does not fit, and then nothing is made); what
//! an entry was charged is given back exactly once, when it leaves the disk.
//!
//! **Why it cannot drift.** [`Books::on_disk`] is changed only by the code that
//! changes the disk, while it holds this ledger's lock, by an amount measured under
//! that lock: a part file makes each write while it holds the lock and charges what
//! reached the disk (a write that fails, for a full disk, a file-size limit or
//! an I/O error, only the bytes it wrote before failing), and gives back what it
//! was charged when it unlinks itself; a commit gives back what it replaces (a file,
//! a link, an emptied directory), looked at just before the rename; a directory or
//! a link is charged as it is made ([`Books::make`]); `remove`, `--delete`, a
//! change of type and the sweep give back what they `lstat` just before the
//! unlink; `rename` changes nothing. Numbers from the plan (what a client offered,
//! what was there then) only decide whether an entry is admitted
//! ([`Reservation`]), never what is counted; so a race between sessions, a cut, a
//! failed commit or a file removed mid-overwrite can make a refusal stricter,
//! never the count wrong. The server is the only writer beneath its root (one
//! server per root, `TargetDir::lock`); what an administrator changes behind its
//! back is caught up with when the home is counted again under the lock (at a
//! reload, and by the hourly sweep: `fs::quota`). Admission keeps the sum `on_disk +
//! reserved` within the quota: an entry is admitted only if its full new size fits
//! beside both (a partial it resumes is on disk, so counted already), and its
//! writes move room from its reservation to `on_disk`. A file rebuilt by delta
//! from the one it replaces, offered with its size and time (it may turn out to
//! be that file, kept), is admitted where the new file fits in the old one's
//! place ([`Account::reserve_in_place`]): its temporary's bytes beyond that are
//! charged as they are written, and past the quota it fails, the old file kept. Each write, temporary,
//! directory and link is checked again as it is made ([`Account::may_add`])
//! against the limits as they are then, beside what is on disk: a quota lowered
//! by a reload (which gives every ledger its user's new limits at once) stops an
//! entry admitted under the old one at its next write (`quota`; its data is
//! discarded, as a stream's that crosses the quota is). A `put`'s directories are
//! made (and so charged) by its plan, each before the entries inside it are
//! admitted, its parents too where the offer lists none.
//!
//! **A home no user has any more.** A ledger counts the home its users file
//! named, from the first login on. A reload that moves the user elsewhere (inside
//! the old home, say, or around it) leaves writes to the new home to another
//! ledger, which this one never sees; so at each reload a ledger whose home is no
//! longer any user's is forgotten ([`Ledger::forget`]): counted again from the
//! disk at the next login to it, and a `put` begun before the reload (its
//! session, whose home changed, ends before its next request) adds nothing more
//! to it, refused `denied` at its next write, entry or directory; what it gives
//! back still comes off, so the count stays true.
//!
//! A path being written is claimed here too: `remove` or `rename` of it, or of a
//! directory above it, is `busy` until its entry settles.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{FileType, Stat};

use super::Refusal;
use super::beneath::{MAX_DEPTH, kind};
use super::path::MAX_PATH;
use crate::escape::escape;
use crate::proto::message::ErrorCode;

/// What a directory is charged, whatever its size on disk (see the module
/// documentation): one block.
pub(crate) const DIR_BYTES: u64 = 4096;

/// Bytes and entries in a home, or of one entry (partial files and temporaries
/// included); `files` counts every entry, directories and links too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    pub(crate) bytes: u64,
    pub(crate) files: u64,
}

impl Footprint {
    /// A directory's charge.
    pub(crate) const DIR: Footprint = Footprint {
        bytes: DIR_BYTES,
        files: 1,
    };

    /// What the entry `stat` describes (links not followed) is charged: the rule of
    /// the module documentation, in one place.
    pub(crate) fn of(stat: &Stat) -> Footprint {
        let bytes = match kind(stat) {
            FileType::RegularFile | FileType::Symlink => stat.st_size as u64,
            FileType::Directory => DIR_BYTES,
            _ => 0,
        };
        Footprint { bytes, files: 1 }
    }

    /// A symbolic link to `target` (what its `lstat` size will be).
    pub(crate) fn link(target: &[u8]) -> Footprint {
        Footprint {
            bytes: target.len() as u64,
            files: 1,
        }
    }

    /// What `self` needs beyond what `gone` frees, never below nothing.
    pub(crate) fn beyond(self, gone: Footprint) -> Footprint {
        Footprint {
            bytes: self.bytes.saturating_sub(gone.bytes),
            files: self.files.saturating_sub(gone.files),
        }
    }
}

impl std::ops::AddAssign for Footprint {
    fn add_assign(&mut self, more: Footprint) {
        self.bytes += more.bytes;
        self.files += more.files;
    }
}

/// What a user may hold; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) bytes: Option<u64>,
    pub(crate) files: Option<u64>,
}

/// The state of one home's ledger (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Books {
    /// Counted from the disk yet (at the first login since the server started)?
    pub(crate) counted: bool,
    pub(crate) limits: Limits,
    /// The version of the users `limits` came from ([`Books::take_limits`]).
    limits_from: u64,
    /// Bytes and entries on disk beneath the home, partials and temporaries,
    /// directories and links included.
    pub(crate) on_disk: Footprint,
    /// Room promised to entries being written and not yet on disk.
    reserved: Footprint,
    /// Paths beneath the home being written, each with the room still held for it.
    writing: HashMap<String, Footprint>,
    /// Part files open for writing (device, inode): the sweep leaves them alone.
    open: HashSet<(u64, u64)>,
    /// Directories `put`s are writing into, with how many: `busy` to rename or
    /// remove, like the paths being written.
    targets: HashMap<String, usize>,
    /// How many times the home stopped being any user's ([`Ledger::forget`]), or
    /// its user's rights or key changed ([`Ledger::stop_puts`]): a `put` begun
    /// before then adds nothing more ([`Account::may_add`]).
    generation: u64,
    /// Why the last of those happened, as a refused `put` is told.
    stopped: &'static str,
}

impl Books {
    /// Takes `limits` from the users of version `from`, unless the books hold
    /// limits of newer users already (a session that read the users just before a
    /// reload must not put the old quota back after it).
    pub(crate) fn take_limits(&mut self, limits: Limits, from: u64) {
        if from >= self.limits_from {
            self.limits = limits;
            self.limits_from = from;
        }
    }

    /// `denied` if a reload stopped this home's sessions since `since` (a
    /// [`Ledger::generation`]): a request checked against the users before it
    /// changes nothing (the home may be another user's now).
    pub(crate) fn still(&self, since: u64) -> Result<(), Refusal> {
        if self.generation == since {
            return Ok(());
        }
        Err(Refusal::ending(ErrorCode::Denied, self.stopped))
    }

    /// Something of `bytes` and `files` appeared or grew on disk at `path`
    /// (beneath the home): charged, out of the room reserved for it first.
    pub(crate) fn grew(&mut self, path: &str, bytes: u64, files: u64) {
        if let Some(held) = self.writing.get_mut(path) {
            let (b, f) = (bytes.min(held.bytes), files.min(held.files));
            held.bytes -= b;
            held.files -= f;
            self.reserved.bytes -= b;
            self.reserved.files -= f;
        }
        self.on_disk.bytes += bytes;
        self.on_disk.files += files;
    }

    /// Whether `more` at `key` (a path beneath the home) fits within the room held
    /// for it and what the quota has left beside everything else.
    pub(crate) fn fits(&self, key: &str, more: Footprint) -> Result<(), Refusal> {
        let held = self.writing.get(key).copied().unwrap_or_default();
        let extra = Footprint {
            bytes: more.bytes.saturating_sub(held.bytes),
            files: more.files.saturating_sub(held.files),
        };
        self.check(extra, key)
    }

    /// Whether `more` fits within the limits beside what is on disk alone (the
    /// room reserved for it aside): a quota lowered by a reload stops an entry
    /// admitted under the old one at its next write (`quota`).
    fn within_limits(&self, more: Footprint, path: &str) -> Result<(), Refusal> {
        self.fits_beside(self.on_disk, more, path)
    }

    /// Bytes and entries left the disk.
    pub(crate) fn shrank(&mut self, bytes: u64, files: u64) {
        self.on_disk.bytes = self.on_disk.bytes.saturating_sub(bytes);
        self.on_disk.files = self.on_disk.files.saturating_sub(files);
    }

    /// The entry `stat` describes (looked at under the lock, just before) left the
    /// disk: what it was charged is given back.
    pub(crate) fn gone(&mut self, stat: &Stat) {
        let freed = Footprint::of(stat);
        self.shrank(freed.bytes, freed.files);
    }

    /// Makes an entry of `more` (a directory, a link) at `path` (as the refusal
    /// shows it) with `make`, which says whether it made it: `quota` if it does not
    /// fit beside what is on disk and promised, and then `make` is not called;
    /// charged once made. The caller holds the lock throughout, so nobody sees the
    /// entry on disk and not in the books.
    pub(crate) fn make<T>(
        &mut self,
        path: &str,
        more: Footprint,
        make: impl FnOnce() -> Result<(T, bool), Refusal>,
    ) -> Result<T, Refusal> {
        self.check(more, path)?;
        let (made, new) = make()?;
        if new {
            self.on_disk += more;
        }
        Ok(made)
    }

    /// A part file is open for writing (or not any more).
    pub(crate) fn set_open(&mut self, identity: (u64, u64), open: bool) {
        if open {
            self.open.insert(identity);
        } else {
            self.open.remove(&identity);
        }
    }

    pub(crate) fn is_open(&self, identity: (u64, u64)) -> bool {
        self.open.contains(&identity)
    }

    /// `busy` if `path`, something beneath it or a directory above it is being
    /// written.
    pub(crate) fn unclaimed(&self, path: &str) -> Result<(), Refusal> {
        self.unclaimed_but(path, None)
    }

    /// [`Books::unclaimed`], where the path `own` does not count: the entry the
    /// caller receives itself, in place of a directory it empties.
    pub(crate) fn unclaimed_but(&self, path: &str, own: Option<&str>) -> Result<(), Refusal> {
        let inside = |a: &str, b: &str| {
            a.len() > b.len() && a.starts_with(b) && a[b.len()..].starts_with('/')
        };
        let target = |p: &&String| p.as_str() == path || inside(p, path);
        let written = |p: &&String| (target(p) || inside(path, p)) && Some(p.as_str()) != own;
        match (self.writing.keys().find(written)).or_else(|| self.targets.keys().find(target)) {
            Some(p) => Err(Refusal::new(
                ErrorCode::Busy,
                format!(
                    "{}: {} is being written by a session",
                    escape(path),
                    escape(p)
                ),
            )),
            None => Ok(()),
        }
    }

    /// Whether `more` fits beside what is on disk and reserved; `quota` if not.
    pub(crate) fn check(&self, more: Footprint, path: &str) -> Result<(), Refusal> {
        let promised = Footprint {
            bytes: self.on_disk.bytes.saturating_add(self.reserved.bytes),
            files: self.on_disk.files.saturating_add(self.reserved.files),
        };
        self.fits_beside(promised, more, path)
    }

    /// Whether `more` fits within the limits beside `used`; `quota` if not. Only
    /// what grows is checked: nothing added fits even at the limit.
    fn fits_beside(&self, used: Footprint, more: Footprint, path: &str) -> Result<(), Refusal> {
        let over = |limit: Option<u64>, used: u64, more: u64| {
            more > 0 && limit.is_some_and(|limit| used.saturating_add(more) > limit)
        };
        let bytes_over = over(self.limits.bytes, used.bytes, more.bytes);
        if bytes_over || over(self.limits.files, used.files, more.files) {
            return Err(Refusal::new(
                ErrorCode::Quota,
                format!("{}: {}", escape(path), self.over_by(more, bytes_over)),
            ));
        }
        Ok(())
    }

    /// The numbers behind a `quota` refusal: what was asked for, what the home
    /// holds and may hold, and where to look.
    fn over_by(&self, more: Footprint, bytes: bool) -> String {
        use indicatif::HumanBytes;
        let (used, reserved) = (self.on_disk, self.reserved);
        let (asked, held, promised, limit) = if bytes {
            let limit = self.limits.bytes.unwrap_or(0);
            let show = |n: u64| HumanBytes(n).to_string();
            (
                show(more.bytes),
                show(used.bytes),
                show(reserved.bytes),
                show(limit),
            )
        } else {
            let limit = self.limits.files.unwrap_or(0);
            let show = |n: u64| crate::ui::report::entries(n as usize);
            (
                show(more.files),
                show(used.files),
                show(reserved.files),
                show(limit),
            )
        };
        format!(
            "over the quota: needs {asked}, the home holds {held} of {limit} \
             ({promised} more promised to uploads in progress); `xfer ls --usage` shows it"
        )
    }
}

/// One home's ledger, shared by all sessions of its user (a cheap handle).
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger(Arc<Shared>);

/// The books, and what a reload asked of them while someone held them: a write
/// holds the books' lock while it is on the disk, and a reload must not wait for a
/// stalled disk (every later reload, a revocation too, would wait behind it).
#[derive(Debug, Default)]
struct Shared {
    books: Mutex<Books>,
    pending: Mutex<Pending>,
}

/// A reload's changes, applied by whoever takes the books next.
#[derive(Debug, Default)]
struct Pending {
    /// New limits, with the version of the users they came from.
    limits: Option<(Limits, u64)>,
    forget: bool,
    /// Stop the `put`s begun before now, for this reason ([`Ledger::stop_puts`]).
    stop: Option<&'static str>,
    /// How many stops and forgets were asked so far, applied or not: the
    /// generation the books have once all are applied ([`Ledger::generation`]).
    asked: u64,
}

/// Why a `put` stops when its home is no longer its user's.
pub(crate) const HOME_CHANGED: &str =
    "this user's home changed on the server (a reload of the users file); the upload stops";

impl Ledger {
    /// The books, under their lock, with what a reload asked meanwhile applied.
    pub(crate) fn books(&self) -> MutexGuard<'_, Books> {
        let mut books = self
            .0
            .books
            .lock()
            .expect("no panics while holding the lock");
        self.apply_pending(&mut books);
        books
    }

    /// Asks for new limits, or for the home to be forgotten ([`Ledger::forget`]),
    /// without waiting for the books: applied now if they are free, else by the
    /// next taker (an upload's next write, which then meets them).
    pub(crate) fn ask(&self, limits: Option<(Limits, u64)>, forget: bool) {
        {
            let mut pending = self.pending();
            // Of two asked before the books took either, the newer users' limits.
            pending.limits = match (pending.limits, limits) {
                (Some(held), Some(asked)) if held.1 > asked.1 => Some(held),
                (held, asked) => asked.or(held),
            };
            pending.forget |= forget;
            pending.asked += u64::from(forget);
        }
        if let Ok(mut books) = self.0.books.try_lock() {
            self.apply_pending(&mut books);
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.0
            .pending
            .lock()
            .expect("no panics while holding the lock")
    }

    fn apply_pending(&self, books: &mut Books) {
        let (limits, forget, stop, asked) = {
            let mut pending = self.pending();
            let asked = pending.asked;
            let taken = std::mem::take(&mut *pending);
            pending.asked = asked;
            (taken.limits, taken.forget, taken.stop, asked)
        };
        if let Some((limits, from)) = limits {
            books.take_limits(limits, from);
        }
        if forget {
            books.counted = false;
        }
        if let Some(why) = forget.then_some(HOME_CHANGED).or(stop) {
            books.generation = asked;
            books.stopped = why;
        }
    }

    /// How many times a reload stopped this home's sessions so far (see
    /// [`Books::still`]): taken before a request is checked against the users.
    /// Read beside the books, never waiting for them: every request takes it (a
    /// `list` or `get` too), and the books may be held by a write on a stalled
    /// disk or a whole count of the home (a reload counts every home again).
    pub(crate) fn generation(&self) -> u64 {
        self.pending().asked
    }

    /// Stops the `put`s begun before now at their next write or removal, told
    /// `why`: their user may no longer write as they did (a reload changed the
    /// user's key or made them read-only). The count stays.
    pub(crate) fn stop_puts(&self, why: &'static str) {
        {
            let mut pending = self.pending();
            pending.stop = Some(why);
            pending.asked += 1;
        }
        if let Ok(mut books) = self.0.books.try_lock() {
            self.apply_pending(&mut books);
        }
    }

    /// Claims the directory `dir` a `put` writes into until the hold is dropped:
    /// renaming or removing it (or a directory above it) is `busy` meanwhile, so
    /// the put's paths keep naming what it writes.
    pub(crate) fn hold_dir(&self, dir: &str) -> DirHold {
        let dir = dir.trim_matches('/').to_string();
        *self.books().targets.entry(dir.clone()).or_default() += 1;
        DirHold {
            ledger: self.clone(),
            dir,
        }
    }

    /// A `put`'s view of the ledger for paths beneath the directory `dir` of the
    /// home (`""`: the home).
    pub(crate) fn account(&self, dir: &str) -> Account {
        Account {
            ledger: self.clone(),
            prefix: dir.trim_matches('/').to_string(),
            found: Arc::default(),
            generation: self.books().generation,
        }
    }

    /// The home is no longer any user's (a reload moved or removed its user): it
    /// is counted again from the disk at the next login that opens it, and the
    /// `put`s begun before now add nothing more to it (what they give back still
    /// comes off, so the count stays true for whoever opens it next).
    pub(crate) fn forget(&self) {
        self.ask(None, true);
    }
}

/// A directory a `put` writes into, held (see [`Ledger::hold_dir`]).
#[derive(Debug)]
pub(crate) struct DirHold {
    ledger: Ledger,
    dir: String,
}

impl Drop for DirHold {
    fn drop(&mut self) {
        let mut books = self.ledger.books();
        if let Some(count) = books.targets.get_mut(&self.dir) {
            *count -= 1;
            if *count == 0 {
                books.targets.remove(&self.dir);
            }
        }
    }
}

/// A path of more components than the walks over a home descend is `bad_path`: the
/// server never makes what it could not count again.
pub(crate) fn deep_enough(prefix: &[&str], path: &str) -> Result<(), Refusal> {
    let depth = prefix.len() + path.split('/').filter(|c| !c.is_empty()).count();
    if depth > MAX_DEPTH {
        return Err(Refusal::new(
            ErrorCode::BadPath,
            format!(
                "{}: deeper than {MAX_DEPTH} directories, which the server does not keep",
                escape(path)
            ),
        ));
    }
    Ok(())
}

/// A path beneath a home longer than [`MAX_PATH`] bytes is `bad_path`: no request
/// could name it again, to list, get, remove or rename it. The path is `bytes`
/// long beneath `prefix` (a directory of the home, `""`: the home), shown as
/// `shown` in the refusal.
pub(crate) fn nameable(prefix: &str, bytes: usize, shown: &str) -> Result<(), Refusal> {
    let above = if prefix.is_empty() {
        0
    } else {
        prefix.len() + 1
    };
    if above + bytes > MAX_PATH {
        return Err(Refusal::new(
            ErrorCode::BadPath,
            format!(
                "{}: a path in the home would be longer than {MAX_PATH} bytes, which no \
                 request could name again",
                escape(shown)
            ),
        ));
    }
    Ok(())
}

/// One `put`'s view of its user's [`Ledger`]: paths relative to the directory it
/// puts into.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    ledger: Ledger,
    /// The put's directory beneath the home (`""`: the home).
    prefix: String,
    /// Lengths of the partials the plan found (by path), so that a resumed entry is
    /// admitted for what it still needs.
    found: Arc<Mutex<HashMap<String, u64>>>,
    /// The ledger's generation when the `put` began (see [`Ledger::forget`]).
    generation: u64,
}

impl Account {
    /// `path` (relative to the put's directory) beneath the home.
    pub(crate) fn home_path(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }

    /// [`nameable`] for a path of `bytes` beneath the put's directory.
    pub(crate) fn nameable(&self, bytes: usize, shown: &str) -> Result<(), Refusal> {
        nameable(&self.prefix, bytes, shown)
    }

    /// How many components a path beneath the put's directory may have.
    pub(crate) fn depth_left(&self) -> usize {
        let used = self.prefix.split('/').filter(|c| !c.is_empty()).count();
        MAX_DEPTH.saturating_sub(used)
    }

    pub(crate) fn books(&self) -> MutexGuard<'_, Books> {
        self.ledger.books()
    }

    /// The books, for a change this `put` makes to the home: `denied` once it may
    /// make none ([`Account::current`]).
    pub(crate) fn books_to_change(&self) -> Result<MutexGuard<'_, Books>, Refusal> {
        let books = self.books();
        self.current(&books)?;
        Ok(books)
    }

    /// [`Ledger::hold_dir`] for the directory `path` (relative to the put's
    /// directory): a mirror emptying it keeps it where it is meanwhile.
    pub(crate) fn hold_dir(&self, path: &str) -> DirHold {
        self.ledger.hold_dir(&self.home_path(path))
    }

    /// `denied` once the home stopped being its user's, or its user's rights or
    /// key changed (a reload; see [`Ledger::forget`], [`Ledger::stop_puts`]):
    /// this `put` makes nothing more.
    pub(crate) fn current(&self, books: &Books) -> Result<(), Refusal> {
        books.still(self.generation)
    }

    /// `denied` if a reload stopped the home's sessions between `since` (taken
    /// before the request was checked against the users) and this account: the
    /// `put` then begins nothing in a home that may be another user's now.
    pub(crate) fn begun_since(&self, since: u64) -> Result<(), Refusal> {
        match self.generation == since {
            true => Ok(()),
            false => Err(Refusal::ending(
                ErrorCode::Denied,
                self.ledger.books().stopped,
            )),
        }
    }

    /// Whether `more` may be added to the disk at `key` (beneath the home) now, by
    /// the caller that holds `books`: the `put` is current, `more` fits within
    /// the room held for `key` and what the quota has left beside everything else,
    /// and within the limits as they are now beside what is on disk (a quota
    /// lowered since the entry was admitted stops it). `path` is shown in a refusal.
    pub(crate) fn may_add(
        &self,
        books: &Books,
        key: &str,
        more: Footprint,
        path: &str,
    ) -> Result<(), Refusal> {
        self.current(books)?;
        books.fits(key, more)?;
        books.within_limits(more, path)
    }

    /// The plan found a partial of `len` bytes for `path` (it will be resumed).
    pub(crate) fn found_partial(&self, path: &str, len: u64) {
        self.found
            .lock()
            .expect("no panics while holding the lock")
            .insert(path.to_string(), len);
    }

    /// Admits an entry for `path` whose finished file is `after`: room for all of
    /// it, less a partial the plan found (on disk and counted already), is held
    /// until the entry settles; the path is claimed until then. `quota` if it does
    /// not fit, `busy` if another session writes the path. `_before` (what the
    /// caller saw on disk) is not trusted: what is counted is measured (see the
    /// module documentation).
    pub(crate) fn reserve(
        &self,
        path: &str,
        _before: Footprint,
        after: Footprint,
    ) -> Result<Reservation, Refusal> {
        let partial = self
            .found
            .lock()
            .expect("no panics while holding the lock")
            .remove(path);
        let needs = Footprint {
            bytes: after.bytes.saturating_sub(partial.unwrap_or(0)),
            files: after.files.saturating_sub(u64::from(partial.is_some())),
        };
        self.hold(path, needs)
    }

    /// [`Account::reserve`] for a file rebuilt by delta from the regular file of
    /// `old` that `path` holds (its basis): admitted where the new file fits in the
    /// old one's place. Its temporary's bytes and entry beyond that are charged as
    /// they are made, each checked then ([`Account::may_add`]): past the quota the
    /// entry fails `quota` and the old file stays as it was.
    pub(crate) fn reserve_in_place(
        &self,
        path: &str,
        old: Footprint,
        after: Footprint,
    ) -> Result<Reservation, Refusal> {
        self.hold(path, after.beyond(old))
    }

    /// Holds `needs` for the entry at `path` until it settles, and claims the path.
    fn hold(&self, path: &str, needs: Footprint) -> Result<Reservation, Refusal> {
        let key = self.home_path(path);
        let mut books = self.books_to_change()?;
        if books.writing.contains_key(&key) {
            return Err(Refusal::new(
                ErrorCode::Busy,
                format!("{}: being received by another session", escape(path)),
            ));
        }
        books.check(needs, path)?;
        books.reserved.bytes += needs.bytes;
        books.reserved.files += needs.files;
        books.writing.insert(key.clone(), needs);
        Ok(Reservation {
            account: self.clone(),
            key,
        })
    }
}

/// Room held for one entry, and its claim on its path, until it settles or is
/// dropped (either releases what is still held; what is on disk stays counted).
#[derive(Debug)]
pub(crate) struct Reservation {
    account: Account,
    /// The entry's path beneath the home.
    key: String,
}

impl Reservation {
    /// Holds `bytes` more for a stream of unknown size, before they are written;
    /// `quota` if they do not fit.
    pub(crate) fn charge(&mut self, path: &str, bytes: u64) -> Result<(), Refusal> {
        let mut books = self.account.books_to_change()?;
        books.check(Footprint { bytes, files: 0 }, path)?;
        books.reserved.bytes += bytes;
        if let Some(held) = books.writing.get_mut(&self.key) {
            held.bytes += bytes;
        }
        Ok(())
    }

    /// The entry is over. What it left on disk was counted as it happened; `_after`
    /// is not trusted.
    pub(crate) fn settle(self, _after: Footprint) {}
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut books = self.account.books();
        if let Some(held) = books.writing.remove(&self.key) {
            books.reserved.bytes -= held.bytes;
            books.reserved.files -= held.files;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(bytes: u64, files: u64) -> Footprint {
        Footprint { bytes, files }
    }

    fn ledger(bytes: u64, files: u64) -> Ledger {
        let ledger = Ledger::default();
        ledger.books().limits = Limits {
            bytes: Some(bytes),
            files: Some(files),
        };
        ledger
    }

    /// A request checked against the users before a reload changes nothing after
    /// it: `mkdir`, `remove` and `rename` compare the generation taken before that
    /// check under the lock (`Books::still`), a `put` its account's (`begun_since`);
    /// one checked after the reload goes on.
    #[test]
    fn a_request_checked_before_a_reload_changes_nothing_after_it() {
        let ledger = ledger(100, 3);
        let checked = ledger.generation();
        assert!(ledger.books().still(checked).is_ok());
        assert!(ledger.account("").begun_since(checked).is_ok());
        ledger.stop_puts("this user may only read now");
        let stopped = ledger.books().still(checked).unwrap_err();
        assert_eq!(stopped.code, ErrorCode::Denied);
        assert!(stopped.message.contains("may only read now"), "{stopped}");
        let put = ledger.account("").begun_since(checked).unwrap_err();
        assert_eq!(put.code, ErrorCode::Denied);
        ledger.forget();
        let checked = ledger.generation();
        assert!(ledger.books().still(checked).is_ok());
        assert!(ledger.account("").begun_since(checked).is_ok());
    }

    /// Every request takes the generation before it reads the users (a `list` or a
    /// `get` too): it never waits for the books, which a write on a stalled disk or
    /// a reload's count of the whole home may hold for long; a stop asked while
    /// they are held is in it at once, and in the books once they are taken.
    #[test]
    fn the_generation_is_read_without_waiting_for_the_books() {
        let ledger = ledger(100, 3);
        let held = ledger.books();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = ledger.clone();
        std::thread::spawn(move || {
            let before = other.generation();
            other.stop_puts("this user may only read now");
            tx.send((before, other.generation())).unwrap();
        });
        let read = rx.recv_timeout(std::time::Duration::from_secs(5));
        let (before, after) = read.expect("the generation waited for the books");
        assert_eq!(after, before + 1);
        drop(held);
        assert!(ledger.books().still(before).is_err());
        assert!(ledger.books().still(after).is_ok());
        assert!(ledger.account("").begun_since(after).is_ok());
    }

    /// Limits of older users never overwrite those of newer ones: a session that
    /// read the users just before a reload, or a login waiting behind a reload's
    /// count, sets its limits after the reload set the new ones.
    #[test]
    fn limits_of_older_users_never_overwrite_newer_ones() {
        let ledger = ledger(100, 3);
        let (old, new) = (
            Limits {
                bytes: Some(100),
                files: Some(3),
            },
            Limits {
                bytes: Some(10),
                files: Some(1),
            },
        );
        ledger.set_limits(new, 2);
        ledger.set_limits(old, 1);
        assert_eq!(ledger.usage().1, new);
        // The same while the books are held: both wait as pending changes.
        let held = ledger.books();
        ledger.set_limits(old, 1);
        ledger.set_limits(new, 3);
        ledger.set_limits(old, 2);
        drop(held);
        assert_eq!(ledger.usage().1, new);
        // A newer one goes on applying.
        ledger.set_limits(old, 4);
        assert_eq!(ledger.usage().1, old);
    }

    #[test]
    fn an_entry_is_admitted_for_its_whole_size_and_charged_as_written() {
        let ledger = ledger(100, 3);
        let account = ledger.account("d");
        let a = account.reserve("a", fp(0, 0), fp(50, 1)).unwrap();
        // A second session of the same user: 50 + 60 > 100.
        let refused = account.reserve("b", fp(0, 0), fp(60, 1)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Quota);
        // The same path: busy, and so is a remove of it or of its directory.
        assert_eq!(
            account.reserve("a", fp(0, 0), fp(1, 1)).unwrap_err().code,
            ErrorCode::Busy
        );
        assert_eq!(
            ledger.books().unclaimed("d").unwrap_err().code,
            ErrorCode::Busy
        );
        assert!(ledger.books().unclaimed("da").is_ok());
        ledger.books().grew("d/a", 20, 1);
        assert_eq!(ledger.usage().0, fp(20, 1));
        assert_eq!(ledger.books().reserved, fp(30, 0));
        drop(a);
        assert_eq!(ledger.books().reserved, fp(0, 0));
        assert_eq!(ledger.usage().0, fp(20, 1), "what is on disk stays counted");
    }

    #[test]
    fn an_overwrite_is_charged_its_whole_size_and_a_partial_only_the_rest() {
        let ledger = ledger(100, 10);
        ledger.books().on_disk = fp(60, 1);
        let account = ledger.account("");
        // Replacing the 60-byte file with 50 bytes needs 50 more until it is replaced.
        assert_eq!(
            account.reserve("f", fp(60, 1), fp(50, 1)).unwrap_err().code,
            ErrorCode::Quota
        );
        account.found_partial("f", 30);
        assert!(account.reserve("f", fp(90, 2), fp(50, 1)).is_ok());
    }

    #[test]
    fn a_stream_is_held_as_it_arrives() {
        let ledger = ledger(10, 10);
        let account = ledger.account("");
        let mut stream = account.reserve("s", fp(0, 0), fp(0, 1)).unwrap();
        stream.charge("s", 8).unwrap();
        assert_eq!(stream.charge("s", 8).unwrap_err().code, ErrorCode::Quota);
        drop(stream);
        assert!(account.reserve("t", fp(0, 0), fp(10, 1)).is_ok());
    }

    #[test]
    fn a_directory_is_charged_before_it_is_made_and_only_if_made() {
        let ledger = ledger(2 * DIR_BYTES, 10);
        let mut books = ledger.books();
        books.make("a", Footprint::DIR, || Ok(((), true))).unwrap();
        // There already (another name made it meanwhile): nothing charged.
        books.make("b", Footprint::DIR, || Ok(((), false))).unwrap();
        assert_eq!(books.on_disk, Footprint::DIR);
        books.reserved = fp(1, 0);
        // One byte promised to an upload: the second directory does not fit, and
        // is not made.
        let refused = books.make("c", Footprint::DIR, || -> Result<((), bool), Refusal> {
            panic!("made although it does not fit")
        });
        assert_eq!(refused.unwrap_err().code, ErrorCode::Quota);
    }

    #[test]
    fn every_kind_of_entry_counts_one_and_its_bytes_by_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| {
            let path = dir.path().join(name);
            rustix::fs::lstat(&path)
                .map(|stat| Footprint::of(&stat))
                .unwrap()
        };
        std::fs::write(dir.path().join("f"), b"12345").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        for i in 0..200 {
            // A directory's own size grows with its names; its charge does not.
            std::fs::write(dir.path().join(format!("d/{i:0>40}")), b"").unwrap();
        }
        std::os::unix::fs::symlink("../some/target", dir.path().join("l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("p"),
            FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(at("f"), fp(5, 1));
        assert_eq!(at("d"), fp(4096, 1));
        assert_eq!(at("l"), Footprint::link(b"../some/target"));
        assert_eq!(at("l"), fp(14, 1));
        assert_eq!(at("p"), fp(0, 1));
    }

    #[test]
    fn a_lowered_quota_stops_what_was_admitted_under_the_old_one() {
        let ledger = ledger(100, 10);
        let account = ledger.account("");
        let _admitted = account.reserve("f", fp(0, 0), fp(80, 1)).unwrap();
        ledger.books().grew("f", 40, 1);
        let lowered = Limits {
            bytes: Some(50),
            files: Some(1),
        };
        ledger.set_limits(lowered, 1);
        let books = ledger.books();
        assert!(account.may_add(&books, "f", fp(10, 0), "f").is_ok());
        let over = account.may_add(&books, "f", fp(11, 0), "f").unwrap_err();
        assert_eq!(over.code, ErrorCode::Quota);
        // An entry more (a directory, a link) is over the lowered max_files.
        let over = account.may_add(&books, "d", fp(0, 1), "d").unwrap_err();
        assert_eq!(over.code, ErrorCode::Quota);
    }

    #[test]
    fn a_forgotten_home_takes_nothing_more_from_puts_begun_before() {
        let ledger = ledger(100, 10);
        ledger.books().counted = true;
        let before = ledger.account("");
        let mut stream = before.reserve("s", fp(0, 0), fp(0, 1)).unwrap();
        ledger.forget();
        assert!(!ledger.books().counted, "counted again at the next login");
        let refused = before.reserve("a", fp(0, 0), fp(1, 1)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Denied);
        assert_eq!(stream.charge("s", 1).unwrap_err().code, ErrorCode::Denied);
        let books = ledger.books();
        let more = fp(1, 0);
        assert_eq!(
            before.may_add(&books, "s", more, "s").unwrap_err().code,
            ErrorCode::Denied
        );
        drop(books);
        assert!(ledger.account("").reserve("a", fp(0, 0), fp(1, 1)).is_ok());
    }

    #[test]
    fn paths_deeper_than_the_walks_are_bad() {
        let deep = vec!["d"; MAX_DEPTH].join("/");
        assert!(deep_enough(&[], &deep).is_ok());
        assert_eq!(
            deep_enough(&["x"], &deep).unwrap_err().code,
            ErrorCode::BadPath
        );
    }
}
