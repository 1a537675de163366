//! What a sender reads: the [`Outbox`] a session takes its offer and contents from,
//! and the [`Input`] each entry's bytes come through (a file, or a [`Stream`] of
//! unknown length). The sources that implement them (`source`, `serve`'s homes)
//! live beside it in `fs`; sessions in `transfer` only consume them. Nothing here
//! knows about frames or sockets.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Result;

use crate::proto::message::{Entry, EntryKind};

/// Where an entry's bytes are read from.
pub(crate) trait Input: Read + Send {
    /// Waits at most `timeout` for bytes (or the end) to be ready to read. A file is
    /// always ready; a stream (a pipe) may pause for as long as its producer likes,
    /// and its bytes go out as they come rather than once a whole frame has filled.
    fn ready(&self, timeout: Duration) -> bool {
        let _ = timeout;
        true
    }
}

impl Input for std::fs::File {}

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
    /// Whether entry `index` can be read again from the start (a stream cannot,
    /// so it never resumes).
    fn rereadable(&self, index: usize) -> bool;
    /// How to name entry `index` in this side's messages (escaped).
    fn shown(&self, index: usize) -> String;
}

/// An outbox as a peer without `meta` may take it (sections 6 and 16): links and
/// special files left out with a warning (as before `meta`), a hard link sent as a
/// copy of its file, times in whole seconds and none before 1970, `mode & 0o777`,
/// no owners or attributes. Indices are this view's; each maps to the outbox's own.
pub(crate) struct Plain<'a> {
    outbox: &'a dyn Outbox,
    entries: Vec<Entry>,
    /// For each entry of this view, its index in `outbox`.
    origin: Vec<usize>,
}

impl<'a> Plain<'a> {
    pub(crate) fn of(outbox: &'a dyn Outbox) -> Plain<'a> {
        let all = outbox.entries();
        let mut plain = Plain {
            outbox,
            entries: Vec::with_capacity(all.len()),
            origin: Vec::with_capacity(all.len()),
        };
        for (index, entry) in all.iter().enumerate() {
            let copy_of = match entry.kind {
                EntryKind::File | EntryKind::Dir => entry,
                EntryKind::Hardlink => match entry.of.and_then(|of| all.get(of as usize)) {
                    Some(file) => file,
                    None => continue,
                },
                _ => {
                    crate::ui::report::warn(&format!(
                        "skipping {}: a {} (the receiver is an older xfer that takes only \
                         files and directories)",
                        outbox.shown(index),
                        entry.kind.name()
                    ));
                    continue;
                }
            };
            plain.entries.push(Entry {
                path: entry.path.clone(),
                kind: copy_of.kind,
                size: copy_of.size,
                mode: copy_of.mode.map(|mode| mode & 0o777),
                mtime: copy_of.mtime.filter(|mtime| *mtime >= 0),
                ..Entry::default()
            });
            plain.origin.push(index);
        }
        plain
    }
}

impl Outbox for Plain<'_> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&self, index: usize) -> Result<Box<dyn Input>> {
        self.outbox.open(self.origin[index])
    }

    fn rereadable(&self, index: usize) -> bool {
        self.outbox.rereadable(self.origin[index])
    }

    fn shown(&self, index: usize) -> String {
        self.outbox.shown(self.origin[index])
    }
}
