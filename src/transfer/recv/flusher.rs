//! The receiver's flushing threads: they make groups of verified files durable
//! under their final names while the disk thread writes the next groups. A group
//! is committed in three steps: a filesystem flush for its data, its names, and a
//! flush for those names. The flushes run on one thread ("flush") and the naming
//! on another ("name"), so that one group is named while the next one's data is
//! being flushed: a flush waits on the disk for tens of milliseconds and naming a
//! thousand files costs about as long in the kernel, and one thread doing both in
//! turn was what held 10 000 files of 4 KiB back. A flush covers the names given
//! before it began, whichever group they belong to: each answer says up to which
//! group that is. The disk thread answers the sender.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Scope;

use rustix::io::Errno;

use crate::fs::Refusal;
use crate::fs::sink::{PartFile, TargetDir, Unflushed};

/// What the disk thread asks of the flushing threads.
pub(crate) enum Flush {
    /// Commit these sealed files (see `TargetDir::name_group`); the groups are
    /// numbered from 0 in the order asked.
    Group(Vec<PartFile>),
    /// Make the names given so far durable (asked once every group was answered).
    Names,
}

/// What came of a [`Flush`]: the outcome of the flush it took, which made the
/// names of every group numbered below `named_before` durable (or failed to), and
/// for a group each file's result, in order.
pub(crate) struct Flushed {
    pub(crate) before: Result<(), Errno>,
    pub(crate) named_before: usize,
    pub(crate) results: Vec<Result<(), Refusal>>,
}

/// Names given and not yet flushed, and how many groups were named in full: what
/// the naming thread leaves for the flushing thread's next flush.
#[derive(Default)]
struct Named {
    unflushed: Unflushed,
    groups: usize,
}

/// A request whose flush is over, on its way to the naming thread.
struct Synced {
    flush: Flush,
    before: Result<(), Errno>,
    named_before: usize,
}

/// The disk thread's end of the flushing threads: [`Flusher::ask`] a [`Flush`],
/// collect each [`Flushed`] in the order asked.
pub(crate) struct Flusher {
    requests: Sender<Flush>,
    answers: Receiver<Flushed>,
}

impl Flusher {
    /// Hands `flush` over; `false` when the threads are gone.
    pub(crate) fn ask(&self, flush: Flush) -> bool {
        self.requests.send(flush).is_ok()
    }

    /// Waits for the oldest answer not yet collected; `None` when the threads are
    /// gone.
    pub(crate) fn answer(&self) -> Option<Flushed> {
        self.answers.recv().ok()
    }

    /// The oldest answer not yet collected, if it is there already (`Ok(None)`: not
    /// yet); `Err` when the threads are gone.
    pub(crate) fn answer_ready(&self) -> Result<Option<Flushed>, ()> {
        match self.answers.try_recv() {
            Ok(flushed) => Ok(Some(flushed)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(()),
        }
    }
}

/// Starts the flushing and naming threads in `scope` for files received into
/// `target` (replacing what is there with `overwrite`). They end when the
/// [`Flusher`] is dropped.
pub(crate) fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    target: &'scope TargetDir,
    overwrite: bool,
) -> std::io::Result<Flusher> {
    let named = Arc::new(Mutex::new(Named::default()));
    let (requests, to_flush) = mpsc::channel::<Flush>();
    let (flushed, to_name) = mpsc::channel::<Synced>();
    let (reply, answers) = mpsc::channel::<Flushed>();
    let naming = Arc::clone(&named);
    std::thread::Builder::new()
        .name("name".into())
        .spawn_scoped(scope, move || {
            for synced in to_name {
                if reply
                    .send(name(target, synced, overwrite, &naming))
                    .is_err()
                {
                    return;
                }
            }
        })?;
    std::thread::Builder::new()
        .name("flush".into())
        .spawn_scoped(scope, move || {
            for flush in to_flush {
                if flushed.send(flush_for(target, flush, &named)).is_err() {
                    return;
                }
            }
        })?;
    Ok(Flusher { requests, answers })
}

/// The flushing thread's part of `flush`: one flush for a group's data and every
/// name given in full before it began.
fn flush_for(target: &TargetDir, flush: Flush, named: &Mutex<Named>) -> Synced {
    let (unflushed, named_before) = {
        let mut named = named.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut named.unflushed), named.groups)
    };
    let parts = match &flush {
        Flush::Group(parts) => &parts[..],
        Flush::Names => &[],
    };
    let before = target.flush(parts, unflushed);
    Synced {
        flush,
        before,
        named_before,
    }
}

/// The naming thread's part of a flushed request: a group's files get their names,
/// which it then leaves for the next flush.
fn name(target: &TargetDir, synced: Synced, overwrite: bool, named: &Mutex<Named>) -> Flushed {
    let Synced {
        flush,
        before,
        named_before,
    } = synced;
    let results = match flush {
        Flush::Group(parts) => {
            let mut unflushed = Unflushed::default();
            let results = target.name_group(parts, before, overwrite, &mut unflushed);
            let mut named = named.lock().unwrap_or_else(PoisonError::into_inner);
            named.unflushed.append(unflushed);
            named.groups += 1;
            results
        }
        Flush::Names => Vec::new(),
    };
    Flushed {
        before,
        named_before,
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::message::Entry;

    /// A sealed part file for `name` holding `name`'s bytes, not yet named.
    fn sealed(target: &TargetDir, name: &str) -> PartFile {
        let mut part = target
            .resolver()
            .create_part(name, &[name.as_bytes()], None)
            .unwrap();
        part.write_all(name.as_bytes()).unwrap();
        part.seal(&Entry::default()).unwrap();
        part
    }

    #[test]
    fn groups_are_named_after_their_flush_and_every_name_is_flushed_before_it_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        let groups = [["a", "b"], ["c", "d"], ["e", "f"]];
        std::thread::scope(|scope| {
            let flusher = start(scope, &target, false).unwrap();
            for names in groups {
                let parts = names.iter().map(|name| sealed(&target, name)).collect();
                assert!(flusher.ask(Flush::Group(parts)));
            }
            let mut named_before = 0;
            for (group, names) in groups.iter().enumerate() {
                let flushed = flusher.answer().unwrap();
                assert_eq!(flushed.before, Ok(()));
                assert!(flushed.results.iter().all(Result::is_ok));
                // A flush covers only groups named before it: never this one.
                assert!(flushed.named_before <= group, "group {group}");
                assert!(flushed.named_before >= named_before, "never going back");
                named_before = flushed.named_before;
                for name in names {
                    assert_eq!(
                        std::fs::read(dir.path().join(name)).unwrap(),
                        name.as_bytes()
                    );
                }
            }
            assert!(flusher.ask(Flush::Names));
            let last = flusher.answer().unwrap();
            assert_eq!((last.before, last.named_before), (Ok(()), groups.len()));
            assert!(last.results.is_empty());
        });
    }

    #[test]
    fn a_name_taken_meanwhile_is_refused_and_the_rest_of_the_group_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        std::thread::scope(|scope| {
            let flusher = start(scope, &target, false).unwrap();
            let parts = vec![sealed(&target, "x"), sealed(&target, "y")];
            std::fs::write(dir.path().join("y"), b"theirs").unwrap();
            assert!(flusher.ask(Flush::Group(parts)));
            let flushed = flusher.answer().unwrap();
            assert!(flushed.results[0].is_ok());
            let refused = flushed.results[1].as_ref().unwrap_err();
            assert_eq!(refused.code, crate::proto::message::ErrorCode::Exists);
            assert_eq!(std::fs::read(dir.path().join("y")).unwrap(), b"theirs");
            assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"x");
        });
    }
}
