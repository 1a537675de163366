//! A file being received: written under a temporary name next to its final name,
//! owner-only (0600) while it is incomplete, and renamed into place only once it is
//! verified and on disk. A temporary of a cut transfer is the *partial* of its file
//! (`.xfer-<hash of name and size>.partial`), kept for a later session to resume;
//! any other is a `.xfer-<random>.part`, removed unless committed.
//!
//! A file that needs no partial, outside a server, is better still *unnamed*
//! (`O_TMPFILE`) until it is committed: then `linkat` gives it its final name, and
//! only if that name is free, exactly as a no-replace rename would. Nobody can see,
//! open or swap it meanwhile, a crash or a cut leaves nothing behind, and it costs
//! one directory entry instead of three (create, rename in, rename out) and none of
//! the checks that a named temporary needs.
//!
//! The rename moves only the file this session wrote and hashed: its device and
//! inode are checked under the temporary name first, so a file put there by anyone
//! else is never reported as received.
//!
//! Partials are ours or nothing: one is reused (its length offered, its data
//! hashed, truncated, written) only when it is a regular file with one link, owned
//! by this process's user and, on a server, marked as made by the server (the
//! `user.xfer.partial` attribute, or its inode recorded by this process where the
//! filesystem keeps no attributes). Anything else under a partial's name is left
//! alone and a fresh temporary is used. On a server every change a part file makes
//! to the disk is counted in the user's ledger, under its lock (`fs::quota`).

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::num::NonZeroU64;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{Advice, AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use super::displaced::Displaced;
use super::meta::{self, Unapplied};
use crate::escape::escape;
use crate::fs::Refusal;
use crate::fs::beneath::{self, NotOver};
use crate::fs::ledger::{Account, Books, Footprint};
use crate::fs::path::{RESERVED_PREFIX, temporary_name};
use crate::hex::hex;
use crate::proto::hash::Hasher;
use crate::proto::message::{Entry, ErrorCode};

/// Mode of a temporary while it is incomplete: the receiver must be able to reopen
/// it to resume, whatever mode the file will have.
const TEMPORARY_MODE: u32 = 0o600;
/// Every this many bytes written, writeback of them is started (see
/// [`PartFile::write_all`]). 1 GiB transfers, medians of 4: 4 MiB 3.73 s, 16 MiB
/// 3.48 s, 64 MiB 3.73 s.
const WRITEBACK_WINDOW: u64 = 16 << 20;
/// The extended attribute that marks a partial as made by a server.
const MARKER: &str = "user.xfer.partial";
/// Partials made by this process where the filesystem would not take [`MARKER`].
static MARKED: std::sync::Mutex<std::collections::BTreeSet<(u64, u64)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Whether the open file `fd` (as `stat` describes it) may be taken as our own
/// partial: a regular file with one link, owned by us, and on a server (`marked`)
/// marked as made by the server.
pub(super) fn is_ours(fd: &OwnedFd, stat: &rustix::fs::Stat, marked: bool) -> bool {
    if !plain(stat) || !marked {
        return plain(stat);
    }
    let mut value = [0u8; 8];
    matches!(rustix::fs::fgetxattr(fd, MARKER, &mut value), Ok(1) if value[0] == b'1')
        || MARKED
            .lock()
            .expect("no panics while holding the lock")
            .contains(&(stat.st_dev, stat.st_ino))
}

/// Whether the file `name` in `dir`, under a partial's name, looks like a complete
/// file a server sealed and did not live to name: a regular file with one link,
/// owned by us, without the mark (see [`is_ours`]), and no longer of a
/// temporary's mode (0600: a sealed file has its offered mode). A server unmarks a
/// complete file when it seals it, just before it names it, and nothing resumes it
/// then. A partial being written is 0600, whoever writes it: one of a plain
/// receiver's (never marked) inside a home is not taken for one; nor is a file of
/// another's, or a link. A file offered with mode 0600 exactly is left to the
/// partials' rule.
pub(crate) fn is_unmarked_partial(dir: &OwnedFd, name: &std::ffi::CStr) -> bool {
    beneath::open_file(dir, name).is_ok_and(|fd| {
        rustix::fs::fstat(&fd).is_ok_and(|stat| {
            let sealed = stat.st_mode & 0o7777 != TEMPORARY_MODE;
            plain(&stat) && sealed && !is_ours(&fd, &stat, true)
        })
    })
}

/// Marks the partial `fd` (just created) as made by us.
fn mark(fd: &OwnedFd, identity: (u64, u64)) {
    if rustix::fs::fsetxattr(fd, MARKER, b"1", rustix::fs::XattrFlags::empty()).is_err() {
        MARKED
            .lock()
            .expect("no panics while holding the lock")
            .insert(identity);
    }
}

/// Where resumable data for a file continues.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume {
    /// The file's offered size (part of the partial file's name).
    pub(crate) size: u64,
    /// Bytes of the partial data to keep; the rest is cut off.
    pub(crate) offset: u64,
}

/// The partial file of `name` offered with `size` bytes: stable across sessions and
/// restarts, so a later offer of the same file finds it; another size is another file.
pub(crate) fn partial_name(name: &[u8], size: u64) -> String {
    let digest = Sha256::new()
        .chain_update(name)
        .chain_update([0])
        .chain_update(size.to_be_bytes())
        .finalize();
    format!("{RESERVED_PREFIX}{}.partial", &hex(&digest)[..32])
}

/// A file being received.
pub(crate) struct PartFile {
    pub(super) dir: Arc<OwnedFd>,
    temp: Box<str>,
    name: Box<[u8]>,
    pub(super) path: Box<str>,
    /// Open until sealed (see [`PartFile::seal`]).
    file: Option<File>,
    /// (device, inode) of what this session wrote: the only thing it renames.
    identity: (u64, u64),
    /// Left in place when dropped: resumable partial data, or a committed file.
    keep: bool,
    /// Where the next bytes go (the bytes in the file so far, but for a sparse
    /// entry), and how far writeback has been started.
    at: u64,
    writeback_from: u64,
    /// The file's length (all of it charged, on a server: a sparse entry's holes
    /// too, as the quota counts a file's size).
    len: u64,
    /// Whether to start writeback as it goes: not for a sparse entry, whose runs
    /// are read back for their hash (section 16.4) and best read from memory.
    writeback: bool,
    /// A server's: the user's ledger, and this file's path beneath the home.
    meter: Option<(Account, String)>,
    /// Where the session counts what it could not apply to this file.
    dropped: Arc<Unapplied>,
    /// Where the session records the inodes it takes a name from (`displaced.rs`).
    displaced: Arc<Displaced>,
    /// A `get`'s file: only `user.*` attributes are set or removed on it.
    user_xattrs: bool,
    /// The session's offer named no attributes but `user.*` (or it is a `get`'s):
    /// only those are the sender's to remove (`meta::Policy::user_strays`).
    user_strays: bool,
    /// Unnamed (`O_TMPFILE`): `temp` is empty, the file stays open until it is
    /// linked in (closing it would free it), and it has no identity to check.
    unnamed: bool,
    /// Its name may hold a directory, emptied by `TargetDir::clear`: the file
    /// takes its place (see [`PartFile::replaces_dir`]).
    over_dir: bool,
}

/// What a part file keeps of its session's (see [`PartFile::create`]).
pub(crate) struct OfSession<'a> {
    /// A server's: the user's ledger.
    pub(crate) meter: Option<&'a Account>,
    /// Where the session counts what it could not apply.
    pub(crate) dropped: Arc<Unapplied>,
    /// Where it records the inodes it takes a name from (`displaced.rs`).
    pub(crate) displaced: Arc<Displaced>,
    /// Whether only `user.*` attributes are set here (a `get`'s: see
    /// `TargetDir::for_a_get`), and whether only those are the sender's to remove.
    pub(crate) scope: (bool, bool),
}

impl PartFile {
    /// Opens the file `path`'s data goes to until it is verified, in `dir`, next to
    /// its final `name`. With `resume`, that is its partial file: opened (or
    /// created), locked against any other writer, and cut to the offset the data
    /// starts at; it survives this session unless discarded. If that name holds
    /// something that is not a regular file, or without `resume`, it is a fresh
    /// temporary file, removed unless committed. `session`: what it keeps of its
    /// session's (see [`OfSession`]).
    pub(crate) fn create(
        dir: Arc<OwnedFd>,
        path: &str,
        name: &[u8],
        resume: Option<Resume>,
        session: OfSession<'_>,
    ) -> Result<PartFile, Refusal> {
        if resume.is_none()
            && session.meter.is_none()
            && let Some(file) = create_unnamed(&dir, path)?
        {
            return Ok(PartFile::unnamed(dir, path, name, file).counting(session));
        }
        let part = PartFile::create_named(dir, path, name, resume, session.meter)?;
        Ok(part.counting(session))
    }

    /// [`PartFile::create`] of a named temporary: a partial, or a `.part`.
    fn create_named(
        dir: Arc<OwnedFd>,
        path: &str,
        name: &[u8],
        resume: Option<Resume>,
        meter: Option<&Account>,
    ) -> Result<PartFile, Refusal> {
        let account = meter.cloned();
        // On a server, made and counted under the ledger's lock: nothing sees the
        // file on disk and not in the books.
        let mut books = meter.map(Account::books);
        let opened = match resume {
            Some(resume) => open_partial(&dir, path, name, resume, books.as_deref_mut())?,
            None => None,
        };
        let resumable = opened.is_some();
        let (temp, file, made) = match opened {
            Some(opened) => opened,
            None => create_temporary(&dir, path).map(|(temp, file)| (temp, file, true))?,
        };
        let stat = rustix::fs::fstat(&file).map_err(|err| {
            // A temporary made just now goes, not counted yet (a resumed partial stays).
            if made {
                let _ = rustix::fs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
            }
            Refusal::io(path, "cannot inspect its temporary file", err)
        })?;
        let identity = (stat.st_dev, stat.st_ino);
        let start = resume
            .filter(|_| resumable)
            .map_or(0, |resume| resume.offset);
        let meter = account.map(|account| {
            let home_path = account.home_path(path);
            (account, home_path)
        });
        if let (Some(books), Some(meter)) = (books.as_deref_mut(), &meter) {
            count_opened(books, meter, (&dir, &temp), made.then_some(path), identity)?;
        }
        drop(books);
        Ok(PartFile {
            dir,
            temp: temp.into(),
            name: name.into(),
            path: path.into(),
            file: Some(file),
            identity,
            keep: resumable,
            at: start,
            writeback_from: start,
            len: start,
            writeback: true,
            meter,
            dropped: Arc::default(),
            displaced: Arc::default(),
            user_xattrs: false,
            user_strays: true,
            unnamed: false,
            over_dir: false,
        })
    }

    /// The part file of `path` held in `file`, made by [`create_unnamed`] in `dir`.
    fn unnamed(dir: Arc<OwnedFd>, path: &str, name: &[u8], file: File) -> PartFile {
        PartFile {
            dir,
            temp: Box::default(),
            name: name.into(),
            path: path.into(),
            file: Some(file),
            identity: (0, 0),
            keep: false,
            at: 0,
            writeback_from: 0,
            len: 0,
            writeback: true,
            meter: None,
            dropped: Arc::default(),
            displaced: Arc::default(),
            user_xattrs: false,
            user_strays: true,
            unnamed: true,
            over_dir: false,
        }
    }

    /// This file, keeping what it needs of its `session`'s.
    fn counting(mut self, session: OfSession<'_>) -> PartFile {
        self.dropped = session.dropped;
        self.displaced = session.displaced;
        (self.user_xattrs, self.user_strays) = session.scope;
        self
    }

    /// Lets the verified file take the place of the empty directory its name holds
    /// (emptied by `TargetDir::clear` once the file verified): the directory goes
    /// only when the file is named, in one exchange (see `beneath::rename_over_dir`), so
    /// a cut or a crash leaves the directory or the file, never a half-file.
    pub(crate) fn replaces_dir(&mut self) {
        self.over_dir = true;
    }

    /// The directory it is named in (see `TargetDir::clear`).
    pub(crate) fn parent(&self) -> &OwnedFd {
        &self.dir
    }

    /// Whether this file holds a descriptor while it waits for its group: an
    /// unnamed one must (see the module documentation).
    pub(crate) fn holds_descriptor(&self) -> bool {
        self.unnamed && self.file.is_some()
    }

    /// Appends bytes.
    ///
    /// Every `WRITEBACK_WINDOW` bytes it asks the kernel to start writing them to
    /// disk (`posix_fadvise(DONTNEED)` does that on Linux, asynchronously), so the
    /// fsync before the `ok` waits for the last window only, not the whole file:
    /// measured on a 1 GiB loopback transfer here, 3.9 s without and 3.3 s with.
    ///
    /// The same advice covers everything written before the window, which drops
    /// the pages that reached the disk since the last call: a file being received
    /// keeps about two windows in the page cache, not all of it, and none once it
    /// is committed ([`PartFile::commit`]). Receiving 100 GiB
    /// then does not push the machine's working set out of memory, and the next
    /// window is written into pages just freed, not into pages nobody touched for
    /// a while — which a virtual machine's host may have taken back (free page
    /// reporting) and backs again at ~10 µs a page on first touch: a 1 GiB receive
    /// here took 2.5 s without and 0.75 s with (median of 4 each, 3 s idle first).
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let file = self
            .file
            .as_mut()
            .expect("a sealed part file is not written");
        let n = bytes.len() as u64;
        let written = match &self.meter {
            // On a server, checked, made and charged under the ledger's lock: what
            // the file grows by (holes skipped before it included) is charged as it
            // reaches the disk, a failed or short write no more than it wrote (the
            // ledger's rule).
            Some((account, home_path)) => {
                let mut books = account.books();
                let more = Footprint {
                    bytes: (self.at + n).saturating_sub(self.len),
                    files: 0,
                };
                account.may_add(&books, home_path, more, &self.path)?;
                let (wrote, failed) = write_counting(file, bytes);
                books.grew(home_path, (self.at + wrote).saturating_sub(self.len), 0);
                self.at += wrote;
                failed
            }
            None => {
                let failed = file.write_all(bytes).err();
                if failed.is_none() {
                    self.at += n;
                }
                failed
            }
        };
        self.len = self.len.max(self.at);
        if let Some(err) = written {
            return Err(Refusal::io(&self.path, "cannot write", err));
        }
        let pending = self.at - self.writeback_from;
        if self.writeback && pending >= WRITEBACK_WINDOW {
            // Only advice: if it fails, the final fsync does all the work.
            let _ = rustix::fs::fadvise(&*file, 0, NonZeroU64::new(self.at), Advice::DontNeed);
            self.writeback_from = self.at;
        }
        Ok(())
    }

    /// Moves where the next bytes go, for a sparse entry's next run: what is
    /// skipped stays a hole. (A fresh temporary only: sparse entries never resume.)
    pub(crate) fn seek_to(&mut self, offset: u64) -> Result<(), Refusal> {
        self.writeback = false;
        let file = self
            .file
            .as_mut()
            .expect("a sealed part file is not written");
        file.seek(SeekFrom::Start(offset))
            .map_err(|err| Refusal::io(&self.path, "cannot seek", err))?;
        self.at = offset;
        Ok(())
    }

    /// Feeds bytes `range` of what was written back into `hasher`: a run's hash
    /// needs its length before its bytes, known only once the run has arrived.
    pub(crate) fn hash_back(&self, range: Range<u64>, hasher: &mut Hasher) -> Result<(), Refusal> {
        let mut file = self.file.as_ref().expect("a sealed part file is not read");
        let len = range.end - range.start;
        let read = file
            .seek(SeekFrom::Start(range.start))
            .and_then(|_| hasher.update_from(&mut file, len));
        match read {
            Ok(n) if n == len => Ok(()),
            Ok(_) => Err(Refusal::io(
                &self.path,
                "cannot read back what was written",
                io::Error::from(io::ErrorKind::UnexpectedEof),
            )),
            Err(err) => Err(Refusal::io(
                &self.path,
                "cannot read back what was written",
                err,
            )),
        }
    }

    /// Sets the length to `size`: the holes after the last run. On a server, what
    /// it grows by is checked and charged, under the ledger's lock, as a write is.
    pub(crate) fn set_len(&mut self, size: u64) -> Result<(), Refusal> {
        let file = self
            .file
            .as_ref()
            .expect("a sealed part file is not written");
        let mut books = self.meter.as_ref().map(|(account, _)| account.books());
        if let (Some(books), Some((account, home_path))) = (&books, &self.meter) {
            let more = Footprint {
                bytes: size.saturating_sub(self.len),
                files: 0,
            };
            account.may_add(books, home_path, more, &self.path)?;
        }
        file.set_len(size)
            .map_err(|err| Refusal::io(&self.path, "cannot set its length", err))?;
        if let (Some(books), Some((_, home_path))) = (books.as_deref_mut(), &self.meter) {
            books.grew(home_path, size.saturating_sub(self.len), 0);
            books.shrank(self.len.saturating_sub(size), 0);
        }
        self.len = size;
        Ok(())
    }

    /// The bytes this file leaves on disk if it is dropped now: its length when it
    /// is resumable partial data (kept), else nothing.
    pub(crate) fn left_behind(&self) -> Option<u64> {
        (self.keep && self.len > 0).then_some(self.len)
    }

    /// Makes the file durable under its final name: mode and time applied, flushed
    /// to disk, renamed into place (refusing to replace a file unless `overwrite`),
    /// and the directory flushed so the rename itself survives a crash.
    pub(crate) fn commit(mut self, entry: &Entry, overwrite: bool) -> Result<(), Refusal> {
        self.finish_metadata(entry)?;
        let file = self.file.as_ref().expect("commit comes before sealing");
        if let Err(err) = file.sync_all() {
            self.keep = false;
            return Err(Refusal::io(&self.path, "cannot flush to disk", err));
        }
        if self.writeback && self.at >= WRITEBACK_WINDOW {
            // On disk now: its last window leaves the page cache too (`write_all`).
            let _ = rustix::fs::fadvise(file, 0, None, Advice::DontNeed);
        }
        if !self.unnamed {
            self.file = None;
        }
        self.rename_into_place(overwrite)?;
        rustix::fs::fsync(&*self.dir)
            .map_err(|err| Refusal::io(&self.path, "cannot flush its directory", err))
    }

    /// Readies a complete, verified file for [`super::TargetDir::name_group`]: mode
    /// and time applied and a named file closed, so that a group of a thousand
    /// waiting files holds no descriptors (an unnamed one must stay open: see
    /// [`PartFile::holds_descriptor`]). Its durability then comes from the group's
    /// flush.
    pub(crate) fn seal(&mut self, entry: &Entry) -> Result<(), Refusal> {
        self.finish_metadata(entry)?;
        if !self.unnamed {
            self.file = None;
        }
        Ok(())
    }

    /// Gives the complete file its offered metadata (mode, time, owner, xattrs).
    /// From here on it is no longer resumable data: if anything fails, it is removed.
    fn finish_metadata(&mut self, entry: &Entry) -> Result<(), Refusal> {
        let file = self.file.as_ref().expect("metadata before sealing");
        self.keep = false;
        if self.meter.is_some() {
            // Complete: no longer a partial, marked or recorded.
            let _ = rustix::fs::fremovexattr(file, MARKER);
            MARKED
                .lock()
                .expect("no panics while holding the lock")
                .remove(&self.identity);
        }
        // A server keeps reading and writing what it holds, whatever was offered.
        let policy = meta::Policy {
            server: self.meter.is_some(),
            keep: if self.meter.is_some() { 0o600 } else { 0 },
            dropped: &self.dropped,
            user_xattrs: self.user_xattrs,
            // A new file holds only what is set, but the ACL it inherited from its
            // directory, which goes where the offer named every namespace.
            user_strays: self.user_strays,
        };
        meta::apply(file, entry, policy)
            .map_err(|err| Refusal::io(&self.path, "cannot set its mode or time", err))
    }

    /// Renames the temporary to the final name, if the temporary is still the file
    /// this session wrote. On success the file is kept; on failure it is removed.
    pub(super) fn rename_into_place(&mut self, overwrite: bool) -> Result<(), Refusal> {
        if self.unnamed {
            return self.link_into_place(overwrite);
        }
        let meter = self.meter.as_ref().map(|(account, _)| account.clone());
        let mut books = meter.as_ref().map(Account::books);
        // What the rename replaces (a file, a link, the emptied directory of a change
        // of type) leaves the disk: measured under the lock (and only where there
        // are books to keep).
        let replaced = match books
            .as_ref()
            .map(|_| beneath::stat(&*self.dir, &self.name[..]))
        {
            Some(Ok(Some(stat))) if overwrite => Some(stat),
            _ => None,
        };
        if let (Some(books), Some((account, key))) = (books.as_deref(), &self.meter) {
            // Nothing is named in a home that stopped being the user's since the
            // last write (a reload), nor for a user who may no longer write.
            account.current(books)?;
            // A directory replaced goes in the same step as the name is given, under
            // the lock: no `put` can claim a path beneath it between this check and
            // the exchange (the ledger's rule).
            if self.over_dir && beneath::holds_dir(&*self.dir, &self.name[..]) {
                books.unclaimed_but(key, Some(key))?;
            }
        }
        self.rename_checked(overwrite)?;
        if let (Some(books), Some(stat)) = (books.as_deref_mut(), replaced) {
            books.gone(&stat);
        }
        Ok(())
    }

    /// [`PartFile::rename_into_place`] without the counting.
    fn rename_checked(&mut self, overwrite: bool) -> Result<(), Refusal> {
        self.still_ours()?;
        let (temp, name) = (&*self.temp, &self.name[..]);
        let result = if overwrite {
            // rename(2) replaces the target atomically; a symlink there is replaced, not followed.
            let rename = || rustix::fs::renameat(&*self.dir, temp, &*self.dir, name);
            match self.displaced.taking(&self.dir, name, rename) {
                Err(Errno::ISDIR) if self.over_dir => {
                    let exchanged = exchange_with_dir(&self.dir, temp, name, &self.path);
                    // A directory stranded: the file holds the name now, and stays.
                    self.keep |= exchanged.is_err();
                    exchanged?
                }
                other => other,
            }
        } else {
            match rustix::fs::renameat_with(
                &*self.dir,
                temp,
                &*self.dir,
                name,
                RenameFlags::NOREPLACE,
            ) {
                // Filesystems without RENAME_NOREPLACE: a hard link fails the same way if the name is taken.
                Err(Errno::INVAL | Errno::NOSYS) => {
                    rustix::fs::linkat(&*self.dir, temp, &*self.dir, name, AtFlags::empty())
                        .and_then(|()| rustix::fs::unlinkat(&*self.dir, temp, AtFlags::empty()))
                }
                other => other,
            }
        };
        match result {
            Ok(()) => {
                self.keep = true;
                Ok(())
            }
            Err(Errno::EXIST | Errno::NOTEMPTY | Errno::ISDIR) => Err(Refusal::new(
                ErrorCode::Exists,
                format!(
                    "{}: appeared on the receiver during the transfer; not replaced, and the \
                     received copy was discarded",
                    escape(&self.path)
                ),
            )),
            Err(err) => Err(Refusal::io(&self.path, "cannot rename into place", err)),
        }
    }

    /// Whether the temporary is still the file this session wrote; if not, it is
    /// left alone, whatever is there, and the entry fails.
    fn still_ours(&mut self) -> Result<(), Refusal> {
        match beneath::stat(&*self.dir, &*self.temp) {
            Ok(Some(stat))
                if beneath::kind(&stat) == FileType::RegularFile
                    && (stat.st_dev, stat.st_ino) == self.identity =>
            {
                Ok(())
            }
            _ => {
                self.keep = true;
                Err(Refusal::new(
                    ErrorCode::Io,
                    format!(
                        "{}: its temporary file was replaced by something else during the \
                         transfer; not renamed",
                        escape(&self.path)
                    ),
                ))
            }
        }
    }

    /// Gives the unnamed file its final name: `linkat` fails if the name is taken,
    /// which without `overwrite` is the answer; with it, the file is linked under a
    /// fresh temporary name and renamed over the old one. On success the file is
    /// kept (and closed); on failure, closing it frees it.
    fn link_into_place(&mut self, overwrite: bool) -> Result<(), Refusal> {
        let file = self
            .file
            .take()
            .expect("an unnamed file is open until linked");
        let appeared = || {
            Refusal::new(
                ErrorCode::Exists,
                format!(
                    "{}: appeared on the receiver during the transfer; not replaced, and the \
                     received copy was discarded",
                    escape(&self.path)
                ),
            )
        };
        match link_unnamed(&file, &self.dir, &self.name) {
            Ok(()) => {
                self.keep = true;
                return Ok(());
            }
            Err(Errno::EXIST) if overwrite => {}
            Err(Errno::EXIST) => return Err(appeared()),
            Err(err) => return Err(Refusal::io(&self.path, "cannot link into place", err)),
        }
        // Replacing: a name of our own first, then one atomic rename over the old file.
        let temp = loop {
            let temp = temporary_name(random_bytes());
            match link_unnamed(&file, &self.dir, temp.as_bytes()) {
                Ok(()) => break temp,
                Err(Errno::EXIST) => continue,
                Err(err) => return Err(Refusal::io(&self.path, "cannot link into place", err)),
            }
        };
        let rename = || rustix::fs::renameat(&*self.dir, temp.as_str(), &*self.dir, &self.name[..]);
        let renamed = match self.displaced.taking(&self.dir, &self.name, rename) {
            Err(Errno::ISDIR) if self.over_dir => {
                let exchanged = exchange_with_dir(&self.dir, &temp, &self.name, &self.path);
                self.keep |= exchanged.is_err();
                exchanged?
            }
            other => other,
        };
        match renamed {
            Ok(()) => {
                self.keep = true;
                Ok(())
            }
            Err(err) => {
                let _ = rustix::fs::unlinkat(&*self.dir, temp.as_str(), AtFlags::empty());
                match err {
                    Errno::ISDIR | Errno::NOTEMPTY => Err(appeared()),
                    err => Err(Refusal::io(&self.path, "cannot rename into place", err)),
                }
            }
        }
    }

    /// Removes the data: it failed verification, or the receiver could not write it.
    pub(crate) fn discard(mut self) {
        self.keep = false;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.unnamed {
            return; // linked in and kept, or freed when its descriptor closes
        }
        // An empty partial file has nothing to resume from.
        let remove = !self.keep || (self.file.is_some() && self.len == 0);
        let Some((account, _)) = &self.meter else {
            if remove {
                let _ = rustix::fs::unlinkat(&*self.dir, &*self.temp, AtFlags::empty());
            }
            return;
        };
        let mut books = account.books();
        books.set_open(self.identity, false);
        if remove {
            unlink_ours(&mut books, &self.dir, &self.temp, self.identity, self.len);
        }
    }
}

/// `beneath::rename_over_dir` for the entry `path`: `Err` where the directory
/// was stranded under `temp` (the file then holds the name), saying where.
fn exchange_with_dir(
    dir: &OwnedFd,
    temp: &str,
    name: &[u8],
    path: &str,
) -> Result<Result<(), Errno>, Refusal> {
    match beneath::rename_over_dir(dir, temp, name) {
        Ok(()) => Ok(Ok(())),
        Err(NotOver::Failed(err)) => Ok(Err(err)),
        Err(NotOver::Stranded(err)) => Err(beneath::stranded(path, temp, err)),
    }
}

/// Counts the part file `temp` of `dir` just opened, in `books` (under the lock):
/// one just made for `made` (its entry's path) is an entry more, which must fit
/// now, or the file goes again at once, unseen; and marks it open (for the sweep).
fn count_opened(
    books: &mut Books,
    (account, home_path): &(Account, String),
    (dir, temp): (&OwnedFd, &str),
    made: Option<&str>,
    identity: (u64, u64),
) -> Result<(), Refusal> {
    if let Some(path) = made {
        let entry = Footprint { bytes: 0, files: 1 };
        if let Err(refusal) = account.may_add(books, home_path, entry, path) {
            let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
            return Err(refusal);
        }
        books.grew(home_path, 0, 1);
    }
    books.set_open(identity, true);
    Ok(())
}

/// Writes all of `bytes` to `file`, or as much as it takes before an error: how
/// many bytes it wrote, and the error.
fn write_counting(file: &mut File, bytes: &[u8]) -> (u64, Option<io::Error>) {
    let mut wrote = 0;
    while wrote < bytes.len() {
        match file.write(&bytes[wrote..]) {
            Ok(0) => return (wrote as u64, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => wrote += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return (wrote as u64, Some(err)),
        }
    }
    (wrote as u64, None)
}

/// Removes `name` from `dir` if it is still the file `identity` (of `charged`
/// bytes), and gives back what it held.
fn unlink_ours(books: &mut Books, dir: &OwnedFd, name: &str, identity: (u64, u64), charged: u64) {
    let ours = matches!(beneath::stat(dir, name), Ok(Some(stat)) if (stat.st_dev, stat.st_ino) == identity);
    if ours && rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok() {
        books.shrank(charged, 1);
    }
}

/// Opens (or creates) the partial file of `name`, locked, cut to the resume offset.
/// `None` when its name is taken by something that is not our own partial (see the
/// module documentation): the caller then writes to a fresh temporary (not
/// resumable), never into that thing. On a server, `books` counts the cut.
fn open_partial(
    dir: &OwnedFd,
    path: &str,
    name: &[u8],
    resume: Resume,
    books: Option<&mut Books>,
) -> Result<Option<(String, File, bool)>, Refusal> {
    let partial = partial_name(name, resume.size);
    let Some((fd, made)) = open_ours(dir, path, &partial, books.is_some())? else {
        return Ok(None);
    };
    let prepared = prepare(fd, path, resume, books);
    if prepared.is_err() && made {
        let _ = rustix::fs::unlinkat(dir, partial.as_str(), AtFlags::empty());
    }
    Ok(Some((partial, prepared?, made)))
}

/// Creates the partial `partial`, or opens it if it is our own (looked at before it
/// is opened, and again through the descriptor); `None` if something else is there.
fn open_ours(
    dir: &OwnedFd,
    path: &str,
    partial: &str,
    served: bool,
) -> Result<Option<(OwnedFd, bool)>, Refusal> {
    let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(TEMPORARY_MODE);
    match rustix::fs::openat(dir, partial, flags | OFlags::CREATE | OFlags::EXCL, mode) {
        Ok(fd) => {
            if served && let Ok(stat) = rustix::fs::fstat(&fd) {
                mark(&fd, (stat.st_dev, stat.st_ino));
            }
            return Ok(Some((fd, true)));
        }
        Err(Errno::EXIST) => {}
        Err(err) => return Err(Refusal::io(path, "cannot create its partial file", err)),
    }
    let seen = match beneath::stat(dir, partial) {
        Ok(Some(stat)) if plain(&stat) => stat,
        _ => return Ok(None), // a directory, a link, a FIFO, a hard link planted there
    };
    let fd = match rustix::fs::openat(dir, partial, flags, mode) {
        Ok(fd) => fd,
        Err(Errno::ISDIR | Errno::LOOP | Errno::NXIO | Errno::ACCESS | Errno::PERM) => {
            return Ok(None);
        }
        Err(err) => return Err(Refusal::io(path, "cannot open its partial file", err)),
    };
    let stat = rustix::fs::fstat(&fd)
        .map_err(|err| Refusal::io(path, "cannot inspect its partial file", err))?;
    let same = (stat.st_dev, stat.st_ino) == (seen.st_dev, seen.st_ino);
    Ok((same && is_ours(&fd, &stat, served)).then_some((fd, false)))
}

/// A regular file with one link, owned by us.
fn plain(stat: &rustix::fs::Stat) -> bool {
    beneath::kind(stat) == FileType::RegularFile
        && stat.st_nlink == 1
        && stat.st_uid == rustix::process::geteuid().as_raw()
}

/// Locks our partial `fd` and cuts it to the resume offset (counted in `books`).
fn prepare(
    fd: OwnedFd,
    path: &str,
    resume: Resume,
    books: Option<&mut Books>,
) -> Result<File, Refusal> {
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())
        .map_err(|err| Refusal::io(path, "cannot open its partial file", err))?;
    lock_partial(&fd, path)?;
    let mut file = File::from(fd);
    let len = file
        .metadata()
        .map_err(|err| Refusal::io(path, "cannot inspect its partial file", err))?
        .len();
    if len < resume.offset {
        return Err(Refusal::io(
            path,
            "resuming",
            io::Error::other("its partial data shrank since the plan"),
        ));
    }
    file.set_len(resume.offset)
        .and_then(|()| file.seek(SeekFrom::Start(resume.offset)).map(drop))
        .map_err(|err| Refusal::io(path, "cannot prepare its partial file", err))?;
    if let Some(books) = books {
        books.shrank(len - resume.offset, 0);
    }
    Ok(file)
}

/// Removes the partial `name` of `dir` if it is our own and no session has it
/// open; on a server, gives back what it held.
pub(super) fn remove_partial(dir: &OwnedFd, name: &str, meter: Option<&Account>) {
    let mut books = meter.map(Account::books);
    let Ok(Some(stat)) = beneath::stat(dir, name) else {
        return;
    };
    let identity = (stat.st_dev, stat.st_ino);
    if !plain(&stat) || books.as_ref().is_some_and(|books| books.is_open(identity)) {
        return;
    }
    if rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok()
        && let Some(books) = books.as_deref_mut()
    {
        books.shrank(stat.st_size as u64, 1);
    }
}

/// Locks a partial against any other writer (another process receiving it).
fn lock_partial(fd: &OwnedFd, path: &str) -> Result<(), Refusal> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        // Another process receiving the same file holds it: never mix two writers.
        Err(Errno::WOULDBLOCK) => Err(Refusal::new(
            ErrorCode::Busy,
            format!("{}: being received by another session", escape(path)),
        )),
        Err(err) => Err(Refusal::io(path, "cannot lock its partial file", err)),
    }
}

/// Creates an unnamed file in `dir` (see the module documentation); `None` where
/// that cannot be done (a filesystem without `O_TMPFILE`, or no `/proc` to link it
/// in through): the caller then names a temporary.
fn create_unnamed(dir: &OwnedFd, path: &str) -> Result<Option<File>, Refusal> {
    static LINKABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*LINKABLE.get_or_init(|| std::path::Path::new("/proc/self/fd").is_dir()) {
        return Ok(None);
    }
    match rustix::fs::openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(TEMPORARY_MODE),
    ) {
        Ok(fd) => Ok(Some(File::from(fd))),
        // Not supported here (by the filesystem or the kernel).
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => Ok(None),
        Err(err) => Err(Refusal::io(path, "cannot create a temporary file", err)),
    }
}

/// Whether `AT_EMPTY_PATH` was refused once (see [`link_unnamed`]): then it is not
/// tried again.
static EMPTY_PATH_REFUSED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Links the unnamed `file` into `dir` as `name`, which must be free: by its
/// descriptor (`AT_EMPTY_PATH`) where this process may (it needs
/// `CAP_DAC_READ_SEARCH`, which root has), else through `/proc/self/fd`, which any
/// user may do for a file made without `O_EXCL`. The descriptor saves resolving a
/// path through `/proc`: about a twentieth of a receiver's time in a tree of small
/// files.
fn link_unnamed(file: &File, dir: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    use std::sync::atomic::Ordering;
    if !EMPTY_PATH_REFUSED.load(Ordering::Relaxed) {
        match rustix::fs::linkat(file, "", dir, name, AtFlags::EMPTY_PATH) {
            // Refused without the capability (as ENOENT, or EPERM in newer kernels),
            // or ENOENT for a directory removed meanwhile: only the second way
            // failing the same tells that apart, and then the first stays in use.
            Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => {
                let through_proc = link_through_proc(file, dir, name);
                if through_proc != Err(Errno::NOENT) {
                    EMPTY_PATH_REFUSED.store(true, Ordering::Relaxed);
                }
                return through_proc;
            }
            other => return other,
        }
    }
    link_through_proc(file, dir, name)
}

/// Links the unnamed `file` into `dir` as `name` through `/proc/self/fd`.
fn link_through_proc(file: &File, dir: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let source = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        source.as_str(),
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )
}

/// Creates a fresh `.xfer-<random>.part` in `dir`.
fn create_temporary(dir: &OwnedFd, path: &str) -> Result<(String, File), Refusal> {
    loop {
        let temp = temporary_name(random_bytes());
        match rustix::fs::openat(
            dir,
            temp.as_str(),
            // Read and write: a sparse entry's runs are read back for their hash.
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(TEMPORARY_MODE),
        ) {
            Ok(fd) => return Ok((temp, File::from(fd))),
            Err(Errno::EXIST) => continue, // a 64-bit collision, or something planted: draw again
            Err(err) => return Err(Refusal::io(path, "cannot create a temporary file", err)),
        }
    }
}

pub(super) fn random_bytes() -> [u8; 8] {
    // Only uniqueness matters here; fall back to the clock if the OS RNG fails.
    crate::key::random_bytes().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .to_le_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_gone_before_the_link_does_not_stop_linking_by_descriptor() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: only root may link by descriptor");
            return;
        }
        let gone = tempfile::tempdir().unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(gone.path(), flags, Mode::empty()).unwrap();
        let file = create_unnamed(&dir, "x").unwrap().unwrap();
        std::fs::remove_dir(gone.path()).unwrap();
        assert_eq!(link_unnamed(&file, &dir, b"x"), Err(Errno::NOENT));
        let refused = EMPTY_PATH_REFUSED.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            !refused,
            "a vanished directory is no refusal of AT_EMPTY_PATH"
        );
    }
}
