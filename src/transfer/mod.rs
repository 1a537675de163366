//! Transfers (`PROTOCOL.md` section 5): the sender's session ([`send`]) and the
//! receiver's ([`recv`]), the authenticated offer and plan they open with
//! ([`offer`]), and the [`Tally`] that decides what a session adds up to.
//!
//! A session runs on a negotiated connection and never sees a command line: the
//! one-shot commands, `serve` and the shell all start them with plain values. What a
//! sender reads comes through an [`Outbox`]; what a receiver writes goes to a
//! `recv::Destination`. Both sit at the filesystem edge (`fs`).

pub mod offer;
pub mod recv;
pub mod send;

use std::io::Read;
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;

use crate::error::{Kind, fail, wire_code};
use crate::proto::message::{Entry, ErrorCode, Message};
use crate::proto::negotiated::{Feature, Negotiated};
use crate::proto::wire::FrameWriter;
use crate::ui::report::{FileOutcome, LIST_FILES_UP_TO, Reporter, Summary};

/// Where an entry's bytes are read from.
pub trait Input: Read + Send {
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
pub struct Stream<S: Read + AsFd + Send>(pub S);

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
pub trait Outbox: Sync {
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

/// The outcomes of one session's entries as they happen: each is shown at once,
/// counted, and, at the end, decides the session's result.
pub struct Tally {
    reporter: Reporter,
    summary: Mutex<Summary>,
    first_failure: Mutex<Option<ErrorCode>>,
    /// How many entries the session's offer had, and what they were to be.
    offered: Mutex<(usize, &'static str)>,
}

impl Tally {
    pub fn new(reporter: Reporter, negotiated: &Negotiated) -> Tally {
        Tally {
            reporter,
            summary: Mutex::new(Summary {
                hash: negotiated.hash(),
                encrypted: negotiated.has(Feature::Aead),
                ..Summary::default()
            }),
            first_failure: Mutex::new(None),
            offered: Mutex::new((0, "delivered")),
        }
    }

    /// How many entries the session's offer had (0 until it arrived).
    pub fn summary_offered(&self) -> usize {
        self.offered
            .lock()
            .expect("no panics while holding the lock")
            .0
    }

    /// The session's offer had `entries` entries, each to be `verb` (`delivered`,
    /// `received`): what [`Tally::verdict`] counts against.
    pub fn offered(&self, entries: usize, verb: &'static str) {
        *self
            .offered
            .lock()
            .expect("no panics while holding the lock") = (entries, verb);
    }

    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    pub fn reporter_mut(&mut self) -> &mut Reporter {
        &mut self.reporter
    }

    /// Shows and counts one entry's outcome.
    pub fn record(&self, outcome: FileOutcome) {
        self.reporter.file(&outcome);
        let mut summary = self
            .summary
            .lock()
            .expect("no panics while holding the lock");
        match outcome {
            FileOutcome::Verified {
                path,
                size,
                digest,
                resumed_at,
                ..
            } => {
                summary.verified += 1;
                summary.bytes += size;
                summary.resumed += usize::from(resumed_at.is_some());
                if summary.listed.len() < LIST_FILES_UP_TO {
                    summary.listed.push((path, digest));
                }
            }
            FileOutcome::Same { .. } => summary.same += 1,
            FileOutcome::Failed { code, .. } => {
                summary.failed += 1;
                self.first_failure
                    .lock()
                    .expect("no panics while holding the lock")
                    .get_or_insert(code);
            }
        }
    }

    /// A failed entry.
    pub fn failed(&self, path: &str, code: ErrorCode, why: String) {
        self.record(FileOutcome::Failed {
            path: path.to_string(),
            code,
            why,
        });
    }

    pub fn summary(&self) -> Summary {
        self.summary
            .lock()
            .expect("no panics while holding the lock")
            .clone()
    }

    /// What a completed session adds up to: fine if no entry failed, else the kind
    /// of the first failure, with a count.
    pub fn verdict(&self) -> Result<()> {
        let (entries, verb) = *self
            .offered
            .lock()
            .expect("no panics while holding the lock");
        let first = *self
            .first_failure
            .lock()
            .expect("no panics while holding the lock");
        match first {
            None => Ok(()),
            Some(code) => Err(fail(
                Kind::of_code(code),
                format!("{} of {entries} entries not {verb}", self.summary().failed),
            )),
        }
    }

    /// Shows the summary of `result`; `what` names the session in a server's log.
    pub fn finish(&self, what: &str, result: &Result<()>) {
        self.reporter.finish(what, &self.summary(), result);
    }
}

/// Tells the peer why a session ended, with the code `err` carries, where the
/// connection still allows it (a failure the peer reported is not echoed back).
pub fn tell_peer<W: std::io::Write>(writer: &mut FrameWriter<W>, err: &anyhow::Error) {
    if let Some(code) = wire_code(err) {
        let message = Message::error(code, format!("{err:#}"));
        let _ = writer.write_message(&message).and_then(|()| writer.flush());
    }
}
