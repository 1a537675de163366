//! A thread of the disk thread's that answers its requests one by one, in the
//! order they came: the disk thread hands work over, goes on with its own, and
//! collects each answer later (the thread that makes every other batch of small
//! files, `maker.rs`). It ends when its handle is dropped, which closes its queue.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::Scope;

/// The asking end of a worker thread taking `Q`s and answering `A`s.
pub(crate) struct Worker<Q, A> {
    requests: Sender<Q>,
    answers: Receiver<A>,
}

impl<Q: Send, A: Send> Worker<Q, A> {
    /// Starts a thread named `name` in `scope` that makes its state with `init`
    /// and then answers each request with `answer`, until the handle is dropped.
    pub(crate) fn start<'scope, S>(
        scope: &'scope Scope<'scope, '_>,
        name: &str,
        init: impl FnOnce() -> S + Send + 'scope,
        mut answer: impl FnMut(&mut S, Q) -> A + Send + 'scope,
    ) -> std::io::Result<Worker<Q, A>>
    where
        Q: 'scope,
        A: 'scope,
    {
        let (requests, queue) = mpsc::channel::<Q>();
        let (reply, answers) = mpsc::channel();
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
        Ok(Worker { requests, answers })
    }

    /// Hands `request` over; `false` when the thread is gone.
    pub(crate) fn ask(&self, request: Q) -> bool {
        self.requests.send(request).is_ok()
    }

    /// Waits for the answer to the oldest request not yet collected; `None` when
    /// the thread is gone.
    pub(crate) fn answer(&self) -> Option<A> {
        self.answers.recv().ok()
    }
}
