//! Threads of the disk thread's that answer its requests one by one, in the order
//! they came: the disk thread hands work over, goes on with its own, and collects
//! each answer later (the thread that makes every other batch of small files,
//! `maker.rs`; the two that commit groups of files, `flusher.rs`). Dropping the
//! handle raises its stop flag, closes the queue and waits for the threads to
//! finish what they hold, so that nothing they make outlives the session's claims
//! on the paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::{Scope, ScopedJoinHandle};

/// The asking end of worker threads taking `Q`s and answering `A`s.
pub(crate) struct Worker<'scope, Q, A> {
    requests: Option<Sender<Q>>,
    answers: Receiver<A>,
    threads: Vec<ScopedJoinHandle<'scope, ()>>,
    /// Raised when the handle is dropped, for threads that should stop at their
    /// next request rather than work through the queue (see `flusher.rs`).
    stop: Arc<AtomicBool>,
}

impl<'scope, Q: Send + 'scope, A: Send + 'scope> Worker<'scope, Q, A> {
    /// Starts a thread named `name` in `scope` that makes its state with `init`
    /// and then answers each request with `answer`, until the handle is dropped.
    pub(crate) fn start<S>(
        scope: &'scope Scope<'scope, '_>,
        name: &str,
        init: impl FnOnce() -> S + Send + 'scope,
        mut answer: impl FnMut(&mut S, Q) -> A + Send + 'scope,
    ) -> std::io::Result<Worker<'scope, Q, A>> {
        let (requests, queue) = mpsc::channel::<Q>();
        let (reply, answers) = mpsc::channel();
        let thread =
            std::thread::Builder::new()
                .name(name.into())
                .spawn_scoped(scope, move || {
                    let mut state = init();
                    for request in queue {
                        if reply.send(answer(&mut state, request)).is_err() {
                            return;
                        }
                    }
                })?;
        let stop = Arc::new(AtomicBool::new(false));
        Ok(Worker::of(requests, answers, vec![thread], stop))
    }

    /// The handle of threads started elsewhere that take `requests` and answer
    /// through `answers`, and may watch `stop`.
    pub(crate) fn of(
        requests: Sender<Q>,
        answers: Receiver<A>,
        threads: Vec<ScopedJoinHandle<'scope, ()>>,
        stop: Arc<AtomicBool>,
    ) -> Worker<'scope, Q, A> {
        Worker {
            requests: Some(requests),
            answers,
            threads,
            stop,
        }
    }

    /// Hands `request` over; `false` when the threads are gone.
    pub(crate) fn ask(&self, request: Q) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|requests| requests.send(request).is_ok())
    }

    /// Waits for the answer to the oldest request not yet collected; `None` when
    /// the threads are gone.
    pub(crate) fn answer(&self) -> Option<A> {
        self.answers.recv().ok()
    }

    /// The oldest answer not yet collected, if it is there already (`Ok(None)`: not
    /// yet); `Err` when the threads are gone.
    pub(crate) fn answer_ready(&self) -> Result<Option<A>, ()> {
        match self.answers.try_recv() {
            Ok(answer) => Ok(Some(answer)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(()),
        }
    }
}

impl<Q, A> Drop for Worker<'_, Q, A> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.requests = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
