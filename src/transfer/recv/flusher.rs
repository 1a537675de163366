//! The receiver's flushing thread: it makes groups of verified files durable under
//! their final names (`TargetDir::commit_group`: one filesystem flush, then the
//! names) while the disk thread writes the next group. A flush waits on the disk,
//! often for tens of milliseconds; the disk thread used to wait with it, and so did
//! everything behind it. It holds the group's names that still need a flush
//! (`Unflushed`) between groups, and answers each request with its outcome; the
//! disk thread answers the sender.

use rustix::io::Errno;

use super::worker::Worker;

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

/// The disk thread's end of the flushing thread: [`Worker::ask`] a [`Flush`],
/// [`Worker::answer`] its [`Flushed`].
pub(crate) type Flusher = Worker<Flush, Flushed>;

/// Starts the flushing thread in `scope` for files received into `target`
/// (replacing what is there with `overwrite`).
pub(crate) fn start<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    target: &'scope TargetDir,
    overwrite: bool,
) -> std::io::Result<Flusher> {
    Worker::start(
        scope,
        "flush",
        Unflushed::default,
        move |unflushed, flush| match flush {
            Flush::Group(parts) => {
                let (before, results) = target.commit_group(parts, overwrite, unflushed);
                Flushed { before, results }
            }
            Flush::Names => Flushed {
                before: target.flush_names(unflushed),
                results: Vec::new(),
            },
        },
    )
}
