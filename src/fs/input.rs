//! What a sender reads: the [`Outbox`] a session takes its offer and contents from,
//! and the [`Input`] each entry's bytes come through (a file, or a [`Stream`] of
//! unknown length). The sources that implement them (`source`, `serve`'s homes)
//! live beside it in `fs`; sessions in `transfer` only consume them. Nothing here
//! knows about frames or sockets.

use std::io::Read;
use std::ops::Range;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Result;

use crate::proto::message::{Entry, Mirror};

/// What a file the sender could not read counts as, not sent (on both sides): the
/// kind before the `:` of its reason.
pub(crate) const UNREADABLE: &str = "unreadable";

/// Where an entry's bytes are read from.
pub(crate) trait Input: Read + Send {
    /// Waits at most `timeout` for bytes (or the end) to be ready to read. A file is
    /// always ready; a stream (a pipe) may pause for as long as its producer likes,
    /// and its bytes go out as they come rather than once a whole frame has filled.
    fn ready(&self, timeout: Duration) -> bool {
        let _ = timeout;
        true
    }

    /// The next run of data at or after byte `from` of a file of `size` bytes, the
    /// input positioned at its start; `None` when only holes are left. What is not
    /// in a run reads as zeros. Without a way to find holes, all of it is data.
    fn next_run(&mut self, from: u64, size: u64) -> std::io::Result<Option<Range<u64>>> {
        Ok((from < size).then_some(from..size))
    }

    /// Its length now, where it has one.
    fn len_now(&self) -> Option<u64> {
        None
    }

    /// What tells this version of a file from another (an edit, a rename over it):
    /// `None` for an input that has no such thing (a stream).
    fn identity(&self) -> Option<Identity> {
        None
    }

    /// Moves on past the next `len` bytes without handing them out; an input that
    /// ends first is an error (`UnexpectedEof`).
    fn skip(&mut self, len: u64) -> std::io::Result<()> {
        let skipped = std::io::copy(&mut Read::take(&mut *self, len), &mut std::io::sink())?;
        match skipped == len {
            true => Ok(()),
            false => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// A file's identity and version as `fstat` gives them: a file with the same
/// identity later has not been written to, renamed over or resized meanwhile (as far
/// as the file system's timestamps tell; nanoseconds where it keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Input for std::fs::File {
    /// With `SEEK_DATA` and `SEEK_HOLE`: the holes are never read.
    fn next_run(&mut self, from: u64, size: u64) -> std::io::Result<Option<Range<u64>>> {
        use rustix::fs::{SeekFrom, seek};
        if from >= size {
            return Ok(None);
        }
        let start = match seek(&*self, SeekFrom::Data(from)) {
            Ok(start) if start < size => start,
            // ENXIO: no data past `from`.
            Ok(_) | Err(rustix::io::Errno::NXIO) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        // Every file ends in a hole at its end, so this finds one.
        let end = seek(&*self, SeekFrom::Hole(start))?.min(size);
        seek(&*self, SeekFrom::Start(start))?;
        Ok(Some(start..end))
    }

    fn len_now(&self) -> Option<u64> {
        self.metadata().ok().map(|meta| meta.len())
    }

    fn identity(&self) -> Option<Identity> {
        let stat = rustix::fs::fstat(self).ok()?;
        Some(Identity {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            size: stat.st_size as u64,
            mtime: (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
            ctime: (stat.st_ctime as i64, stat.st_ctime_nsec as i64),
        })
    }

    /// A seek: what is skipped is never read. Past the end only if the file
    /// shrank, which the sender finds when it reads on.
    fn skip(&mut self, len: u64) -> std::io::Result<()> {
        let len = i64::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        std::io::Seek::seek(self, std::io::SeekFrom::Current(len)).map(drop)
    }
}

/// A stream of unknown length (standard input, a named pipe): readiness is asked of
/// the system.
pub(crate) struct Stream<S: Read + AsFd + Send>(pub(crate) S);

impl<S: Read + AsFd + Send> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Read + AsFd + Send> Input for Stream<S> {
    fn ready(&self, timeout: Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        // An error or a hang-up counts as ready: the read then says what happened.
        !matches!(poll(&mut fds, Some(&timeout)), Ok(0))
    }
}

/// What a sender offers, and where each entry's bytes come from.
pub(crate) trait Outbox: Sync {
    /// The offer, in order (a directory before anything inside it).
    fn entries(&self) -> &[Entry];
    /// Opens entry `index`'s content for reading (a file or a stream).
    fn open(&self, index: usize) -> Result<Box<dyn Input>>;
    /// What a mirroring sender asks of the receiver (`--delete`, `--dry-run` and
    /// the filter rules), if anything.
    fn mirror(&self) -> Option<&Mirror> {
        None
    }
    /// Whether the entries' `xattrs` objects name attributes of every namespace
    /// (read as root), not only `user.*`: only then may a receiver remove the
    /// others an entry it keeps holds and an object does not name.
    fn xattrs_all(&self) -> bool {
        false
    }
    /// Whether entry `index` can be read again from the start (a stream cannot,
    /// so it never resumes).
    fn rereadable(&self, index: usize) -> bool;
    /// How to name entry `index` in this side's messages (escaped).
    fn shown(&self, index: usize) -> String;
}
