//! A file being received: written under a temporary name next to its final name,
//! owner-only (0600) while it is incomplete, and renamed into place only once it is
//! verified and on disk. A temporary of a cut transfer is the *partial* of its file
//! (`.xfer-<hash of name and size>.partial`), kept for a later session to resume;
//! any other is a `.xfer-<random>.part`, removed unless committed.
//!
//! The rename moves only the file this session wrote and hashed: its device and
//! inode are checked under the temporary name first, so a file put there by anyone
//! else is never reported as received.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::num::NonZeroU64;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{Advice, AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use super::meta;
use crate::escape::escape;
use crate::fs::Refusal;
use crate::fs::beneath;
use crate::fs::path::RESERVED_PREFIX;
use crate::hex::hex;
use crate::proto::message::ErrorCode;

/// Mode of a temporary while it is incomplete: the receiver must be able to reopen
/// it to resume, whatever mode the file will have.
const TEMPORARY_MODE: u32 = 0o600;
/// Every this many bytes written, writeback of them is started (see
/// [`PartFile::write_all`]). 1 GiB transfers, medians of 4: 4 MiB 3.73 s, 16 MiB
/// 3.48 s, 64 MiB 3.73 s.
const WRITEBACK_WINDOW: u64 = 16 << 20;

/// Where resumable data for a file continues.
#[derive(Debug, Clone, Copy)]
pub struct Resume {
    /// The file's offered size (part of the partial file's name).
    pub size: u64,
    /// Bytes of the partial data to keep; the rest is cut off.
    pub offset: u64,
}

/// The partial file of `name` offered with `size` bytes: stable across sessions and
/// restarts, so a later offer of the same file finds it; another size is another file.
pub fn partial_name(name: &str, size: u64) -> String {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0])
        .chain_update(size.to_be_bytes())
        .finalize();
    format!("{RESERVED_PREFIX}{}.partial", &hex(&digest)[..32])
}

/// A file being received.
pub struct PartFile {
    pub(super) dir: Arc<OwnedFd>,
    temp: String,
    name: String,
    pub(super) path: String,
    /// Open until sealed (see [`PartFile::seal`]).
    file: Option<File>,
    /// (device, inode) of what this session wrote: the only thing it renames.
    identity: (u64, u64),
    /// Left in place when dropped: resumable partial data, or a committed file.
    keep: bool,
    /// Bytes in the file so far, and how far writeback has been started.
    written: u64,
    writeback_from: u64,
}

impl PartFile {
    /// Opens the file `path`'s data goes to until it is verified, in `dir`, next to
    /// its final `name`. With `resume`, that is its partial file: opened (or
    /// created), locked against any other writer, and cut to the offset the data
    /// starts at; it survives this session unless discarded. If that name holds
    /// something that is not a regular file, or without `resume`, it is a fresh
    /// temporary file, removed unless committed.
    pub fn create(
        dir: Arc<OwnedFd>,
        path: &str,
        name: &str,
        resume: Option<Resume>,
    ) -> Result<PartFile, Refusal> {
        let opened = match resume {
            Some(resume) => open_partial(&dir, path, name, resume)?,
            None => None,
        };
        let resumable = opened.is_some();
        let (temp, file) = match opened {
            Some(opened) => opened,
            None => create_temporary(&dir, path)?,
        };
        let stat = rustix::fs::fstat(&file)
            .map_err(|err| Refusal::io(path, "cannot inspect its temporary file", err))?;
        let start = resume
            .filter(|_| resumable)
            .map_or(0, |resume| resume.offset);
        Ok(PartFile {
            dir,
            temp,
            name: name.to_string(),
            path: path.to_string(),
            file: Some(file),
            identity: (stat.st_dev, stat.st_ino),
            keep: resumable,
            written: start,
            writeback_from: start,
        })
    }

    /// Appends bytes.
    ///
    /// Every `WRITEBACK_WINDOW` bytes it asks the kernel to start writing them to
    /// disk (`posix_fadvise(DONTNEED)` does that on Linux, asynchronously), so the
    /// fsync before the `ok` waits for the last window only, not the whole file:
    /// measured on a 1 GiB loopback transfer here, 3.9 s without and 3.3 s with.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let file = self
            .file
            .as_mut()
            .expect("a sealed part file is not written");
        file.write_all(bytes)
            .map_err(|err| Refusal::io(&self.path, "cannot write", err))?;
        self.written += bytes.len() as u64;
        let pending = self.written - self.writeback_from;
        if pending >= WRITEBACK_WINDOW {
            // Only advice: if it fails, the final fsync does all the work.
            let _ = rustix::fs::fadvise(
                &*file,
                self.writeback_from,
                NonZeroU64::new(pending),
                Advice::DontNeed,
            );
            self.writeback_from = self.written;
        }
        Ok(())
    }

    /// The bytes this file leaves on disk if it is dropped now: its length when it
    /// is resumable partial data (kept), else nothing.
    pub fn left_behind(&self) -> Option<u64> {
        (self.keep && self.written > 0).then_some(self.written)
    }

    /// Makes the file durable under its final name: mode and time applied, flushed
    /// to disk, renamed into place (refusing to replace a file unless `overwrite`),
    /// and the directory flushed so the rename itself survives a crash.
    pub fn commit(
        mut self,
        mode: Option<u64>,
        mtime: Option<u64>,
        overwrite: bool,
    ) -> Result<(), Refusal> {
        self.finish_metadata(mode, mtime)?;
        let file = self.file.take().expect("commit comes before sealing");
        if let Err(err) = file.sync_all() {
            self.keep = false;
            return Err(Refusal::io(&self.path, "cannot flush to disk", err));
        }
        self.rename_into_place(overwrite)?;
        rustix::fs::fsync(&*self.dir)
            .map_err(|err| Refusal::io(&self.path, "cannot flush its directory", err))
    }

    /// Readies a complete, verified file for [`super::TargetDir::commit_all`]: mode
    /// and time applied and the file closed, so that a group of a thousand waiting
    /// files holds no descriptors. Its durability then comes from the group's flush.
    pub fn seal(&mut self, mode: Option<u64>, mtime: Option<u64>) -> Result<(), Refusal> {
        self.finish_metadata(mode, mtime)?;
        self.file = None;
        Ok(())
    }

    /// Gives the complete file its offered mode and time. From here on it is no
    /// longer resumable data: if anything fails, it is removed.
    fn finish_metadata(&mut self, mode: Option<u64>, mtime: Option<u64>) -> Result<(), Refusal> {
        let file = self.file.as_ref().expect("metadata before sealing");
        self.keep = false;
        meta::apply(file, mode, mtime)
            .map_err(|err| Refusal::io(&self.path, "cannot set its mode or time", err))
    }

    /// Renames the temporary to the final name, if the temporary is still the file
    /// this session wrote. On success the file is kept; on failure it is removed.
    pub(super) fn rename_into_place(&mut self, overwrite: bool) -> Result<(), Refusal> {
        let (temp, name) = (self.temp.as_str(), self.name.as_str());
        match beneath::stat(&*self.dir, temp) {
            Ok(Some(stat))
                if beneath::kind(&stat) == FileType::RegularFile
                    && (stat.st_dev, stat.st_ino) == self.identity => {}
            _ => {
                // Not ours any more: leave whatever is there alone.
                self.keep = true;
                return Err(Refusal::new(
                    ErrorCode::Io,
                    format!(
                        "{}: its temporary file was replaced by something else during the \
                         transfer; not renamed",
                        escape(&self.path)
                    ),
                ));
            }
        }
        let result = if overwrite {
            // rename(2) replaces the target atomically; a symlink there is replaced, not followed.
            rustix::fs::renameat(&*self.dir, temp, &*self.dir, name)
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

    /// Removes the data: it failed verification, or the receiver could not write it.
    pub fn discard(mut self) {
        self.keep = false;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        // An empty partial file has nothing to resume from.
        if !self.keep || (self.file.is_some() && self.written == 0) {
            let _ = rustix::fs::unlinkat(&*self.dir, self.temp.as_str(), AtFlags::empty());
        }
    }
}

/// Opens (or creates) the partial file of `name`, locked, cut to the resume offset.
/// `None` when its name is taken by something that is not a regular file: the
/// caller then writes to a fresh temporary (not resumable), never into that thing.
fn open_partial(
    dir: &OwnedFd,
    path: &str,
    name: &str,
    resume: Resume,
) -> Result<Option<(String, File)>, Refusal> {
    let partial = partial_name(name, resume.size);
    let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(TEMPORARY_MODE);
    let fd = match rustix::fs::openat(
        dir,
        partial.as_str(),
        flags | OFlags::CREATE | OFlags::EXCL,
        mode,
    ) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => match rustix::fs::openat(dir, partial.as_str(), flags, mode) {
            Ok(fd) => fd,
            // A directory, a link, a FIFO planted under the partial's name.
            Err(Errno::ISDIR | Errno::LOOP | Errno::NXIO | Errno::ACCESS | Errno::PERM) => {
                return Ok(None);
            }
            Err(err) => return Err(Refusal::io(path, "cannot open its partial file", err)),
        },
        Err(err) => return Err(Refusal::io(path, "cannot create its partial file", err)),
    };
    let stat = rustix::fs::fstat(&fd)
        .map_err(|err| Refusal::io(path, "cannot inspect its partial file", err))?;
    if beneath::kind(&stat) != FileType::RegularFile {
        return Ok(None);
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())
        .map_err(|err| Refusal::io(path, "cannot open its partial file", err))?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        // Another process receiving the same file holds it: never mix two writers.
        Err(Errno::WOULDBLOCK) => {
            return Err(Refusal::new(
                ErrorCode::Busy,
                format!("{}: being received by another session", escape(path)),
            ));
        }
        Err(err) => return Err(Refusal::io(path, "cannot lock its partial file", err)),
    }
    let mut file = File::from(fd);
    if (stat.st_size as u64) < resume.offset {
        return Err(Refusal::io(
            path,
            "resuming",
            io::Error::other("its partial data shrank since the plan"),
        ));
    }
    file.set_len(resume.offset)
        .and_then(|()| file.seek(SeekFrom::Start(resume.offset)).map(drop))
        .map_err(|err| Refusal::io(path, "cannot prepare its partial file", err))?;
    Ok(Some((partial, file)))
}

/// Creates a fresh `.xfer-<random>.part` in `dir`.
fn create_temporary(dir: &OwnedFd, path: &str) -> Result<(String, File), Refusal> {
    loop {
        let temp = format!("{RESERVED_PREFIX}{}.part", hex(&random_bytes()));
        match rustix::fs::openat(
            dir,
            temp.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(TEMPORARY_MODE),
        ) {
            Ok(fd) => return Ok((temp, File::from(fd))),
            Err(Errno::EXIST) => continue, // a 64-bit collision, or something planted: draw again
            Err(err) => return Err(Refusal::io(path, "cannot create a temporary file", err)),
        }
    }
}

fn random_bytes() -> [u8; 8] {
    // Only uniqueness matters here; fall back to the clock if the OS RNG fails.
    crate::key::random_bytes().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .to_le_bytes()
    })
}
