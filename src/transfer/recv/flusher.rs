//! The receiver's flushing thread: it makes groups of verified files durable under
//! their final names (`TargetDir::commit_group`: one filesystem flush, then the
//! names) while the disk thread writes the next group. A flush waits on the disk,
//! often for tens of milliseconds; the disk thread used to wait with it, and so did
//! everything behind it. It holds the group's names that still need a flush
//! (`Unflushed`) between groups, and answers each request with its outcome; the
//! disk thread answers the sender.

use std::sync::mpsc::{self, Receiver, Sender};

use rustix::io::Errno;

use crate::fs::Refusal;
use crate::fs::sink::{PartFile, TargetDir, Unflushed};

/// What the disk thread asks of the flushing thread.
pub(crate) enum Flush {
    /// Commit these sealed files (see `TargetDir::commit_group`).
    Group(Vec<PartFile>),
    /// Make the names given so far durable (see `TargetDir::flush_names`).
    Names,
}

/// What came of a [`Flush`]: whether the names given before are now durable, and
/// for a group each file's result, in order.
pub(crate) struct Flushed {
    pub(crate) before: Result<(), Errno>,
    pub(crate) results: Vec<Result<(), Refusal>>,
}

/// The disk thread's end of the flushing thread.
pub(crate) struct Flusher {
    requests: Sender<Flush>,
    outcomes: Receiver<Flushed>,
}

impl Flusher {
    /// Starts the flushing thread in `scope` for files received into `target`
    /// (replacing what is there with `overwrite`). It ends when the returned end
    /// is dropped.
    pub(crate) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        target: &'scope TargetDir,
        overwrite: bool,
    ) -> std::io::Result<Flusher> {
        let (requests, queue) = mpsc::channel();
        let (answer, outcomes) = mpsc::channel();
        std::thread::Builder::new()
            .name("flush".into())
            .spawn_scoped(scope, move || serve(queue, answer, target, overwrite))?;
        Ok(Flusher { requests, outcomes })
    }

    /// Asks for `flush`; its outcome comes from [`Flusher::outcome`]. `false` when
    /// the thread is gone.
    pub(crate) fn ask(&self, flush: Flush) -> bool {
        self.requests.send(flush).is_ok()
    }

    /// Waits for the outcome of the oldest request not yet collected; `None` when
    /// the thread is gone.
    pub(crate) fn outcome(&self) -> Option<Flushed> {
        self.outcomes.recv().ok()
    }
}

fn serve(queue: Receiver<Flush>, answer: Sender<Flushed>, target: &TargetDir, overwrite: bool) {
    let mut unflushed = Unflushed::default();
    for flush in queue {
        let flushed = match flush {
            Flush::Group(parts) => {
                let (before, results) = target.commit_group(parts, overwrite, &mut unflushed);
                Flushed { before, results }
            }
            Flush::Names => Flushed {
                before: target.flush_names(&mut unflushed),
                results: Vec::new(),
            },
        };
        if answer.send(flushed).is_err() {
            return;
        }
    }
}
