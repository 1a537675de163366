//! A thread of the disk thread's that answers its requests one by one, in the
//! order they came: the disk thread hands work over, goes on with its own, and
//! collects each answer later (the thread that makes every other batch of small
//! files, `maker.rs`). Dropping its handle closes its queue and waits for it to
//! finish what it holds, so that nothing it makes outlives the session's claims
//! on the paths.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{Scope, ScopedJoinHandle};

/// The asking end of a worker thread taking `Q`s and answering `A`s.
pub(crate) struct Worker<'scope, Q, A> {
    requests: Option<Sender<Q>>,
    answers: Receiver<A>,
    thread: Option<ScopedJoinHandle<'scope, ()>>,
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
        Ok(Worker {
            requests: Some(requests),
            answers,
            thread: Some(thread),
        })
    }

    /// Hands `request` over; `false` when the thread is gone.
    pub(crate) fn ask(&self, request: Q) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|requests| requests.send(request).is_ok())
    }

    /// Waits for the answer to the oldest request not yet collected; `None` when
    /// the thread is gone.
    pub(crate) fn answer(&self) -> Option<A> {
        self.answers.recv().ok()
    }
}

impl<Q, A> Drop for Worker<'_, Q, A> {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
