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
//!
//! Two rules for the failures. A flush that failed fails every later one of the
//! session: `syncfs` reports a lost write once per descriptor, so the next flush
//! of the same directory could say `Ok` of data that never reached the disk. And
//! a [`Flusher`] dropped with groups still queued (the session failed) names none
//! of them: it waits for its threads, so that nothing lands under a final name
//! after the disk thread let go of the paths and their quota.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Scope;

use rustix::io::Errno;

use super::worker::Worker;
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

/// The disk thread's end of the flushing threads: `ask` a [`Flush`], collect each
/// [`Flushed`] in the order asked. Dropping it stops the threads without naming
/// what is still queued, and waits for them.
pub(crate) type Flusher<'scope> = Worker<'scope, Flush, Flushed>;

/// Starts the flushing and naming threads in `scope` for files received into
/// `target` (replacing what is there with `overwrite`).
pub(crate) fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    target: &'scope TargetDir,
    overwrite: bool,
) -> std::io::Result<Flusher<'scope>> {
    // Opened now, before this session writes anything (see `TargetDir::own_handle`).
    let own = target.own_handle();
    start_with(scope, target, overwrite, move |parts, named| {
        target.flush(own.as_ref(), parts, named)
    })
}

/// [`start`] with the flush to use (`TargetDir::flush`, or a test's).
fn start_with<'scope>(
    scope: &'scope Scope<'scope, '_>,
    target: &'scope TargetDir,
    overwrite: bool,
    flush: impl Fn(&[PartFile], Unflushed) -> Result<(), Errno> + Send + 'scope,
) -> std::io::Result<Flusher<'scope>> {
    let named = Arc::new(Mutex::new(Named::default()));
    let abandoned = Arc::new(AtomicBool::new(false));
    let (requests, to_flush) = mpsc::channel::<Flush>();
    let (flushed, to_name) = mpsc::channel::<Synced>();
    let (reply, answers) = mpsc::channel::<Flushed>();
    let (naming, gone, stopped) = (
        Arc::clone(&named),
        Arc::clone(&abandoned),
        Arc::clone(&abandoned),
    );
    let name_thread = std::thread::Builder::new()
        .name("name".into())
        .spawn_scoped(scope, move || {
            for synced in to_name {
                // Nothing more is named, nor flushed: the flushing thread stops
                // at its next request, finding this queue gone.
                if gone.load(Ordering::Acquire) {
                    return;
                }
                if reply
                    .send(name(target, synced, overwrite, &naming))
                    .is_err()
                {
                    return;
                }
            }
        })?;
    let flush_thread = std::thread::Builder::new()
        .name("flush".into())
        .spawn_scoped(scope, move || {
            let mut failed = None;
            for request in to_flush {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                let synced = flush_for(request, &named, &mut failed, &flush);
                if flushed.send(synced).is_err() {
                    return;
                }
            }
        })?;
    Ok(Worker::of(
        requests,
        answers,
        vec![name_thread, flush_thread],
        abandoned,
    ))
}

/// The flushing thread's part of `request`: one flush for a group's data and every
/// name given in full before it began; none once one `failed`, whose error it
/// keeps.
fn flush_for(
    request: Flush,
    named: &Mutex<Named>,
    failed: &mut Option<Errno>,
    flush: &impl Fn(&[PartFile], Unflushed) -> Result<(), Errno>,
) -> Synced {
    let (unflushed, named_before) = {
        let mut named = named.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut named.unflushed), named.groups)
    };
    let parts = match &request {
        Flush::Group(parts) => &parts[..],
        Flush::Names => &[],
    };
    let before = match *failed {
        Some(err) => Err(err),
        None => flush(parts, unflushed),
    };
    *failed = before.err();
    Synced {
        flush: request,
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
    use std::sync::atomic::AtomicUsize;

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
    fn every_group_is_named_and_an_answer_never_covers_its_own_group() {
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

    /// Asks for `groups` groups of `files` files each (`g<group>f<file>`), all made
    /// before the first is asked.
    fn ask_groups(flusher: &Flusher<'_>, target: &TargetDir, groups: usize, files: usize) {
        let made: Vec<Vec<PartFile>> = (0..groups)
            .map(|group| {
                let name = |file| format!("g{group}f{file}");
                (0..files).map(|file| sealed(target, &name(file))).collect()
            })
            .collect();
        for parts in made {
            assert!(flusher.ask(Flush::Group(parts)));
        }
    }

    #[test]
    fn a_flusher_dropped_with_groups_queued_names_none_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        let (started, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|scope| {
            // A slow disk: the drop comes while the first group is still flushed.
            let slow = |parts: &[PartFile], named: Unflushed| {
                started.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(100));
                let flushed = target.flush(None, parts, named);
                finished.fetch_add(1, Ordering::SeqCst);
                flushed
            };
            let flusher = start_with(scope, &target, false, slow).unwrap();
            ask_groups(&flusher, &target, 3, 50);
            while started.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            drop(flusher); // what a session that failed does; it waits for the threads
            let (started, finished) = (
                started.load(Ordering::SeqCst),
                finished.load(Ordering::SeqCst),
            );
            assert_eq!(started, finished, "the drop waited for the flush under way");
            assert_eq!(started, 1, "no flush after the drop");
            let named = std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|entry| {
                    !entry
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".xfer-")
                })
                .count();
            // The group being named when the drop came may land; the ones queued may not.
            assert!(named <= 50, "{named} files named after the drop");
        });
    }

    #[test]
    fn after_a_failed_flush_every_later_one_fails_and_nothing_more_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            // The second flush fails, as `syncfs` does when a write-back was lost;
            // the ones after it would say Ok again on a real filesystem.
            let flush = |_: &[PartFile], _: Unflushed| match calls.fetch_add(1, Ordering::SeqCst) {
                1 => Err(Errno::IO),
                _ => Ok(()),
            };
            let flusher = start_with(scope, &target, false, flush).unwrap();
            ask_groups(&flusher, &target, 3, 2);
            let first = flusher.answer().unwrap();
            assert!(first.before.is_ok() && first.results.iter().all(Result::is_ok));
            for _ in 1..3 {
                let failed = flusher.answer().unwrap();
                assert_eq!(failed.before, Err(Errno::IO));
                assert!(failed.results.iter().all(Result::is_err));
            }
            assert!(flusher.ask(Flush::Names));
            let last = flusher.answer().unwrap();
            // Group 0's names, given before the failure, are covered by it: the
            // disk thread answers them with the error, never ok.
            assert_eq!((last.before, last.named_before), (Err(Errno::IO), 3));
            assert_eq!(
                calls.load(Ordering::SeqCst),
                2,
                "no flush after the failed one"
            );
        });
        for group in 1..3 {
            assert!(!dir.path().join(format!("g{group}f0")).exists());
        }
        assert!(dir.path().join("g0f0").exists());
    }
}
