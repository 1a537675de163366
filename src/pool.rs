//! A fixed set of reusable buffers passed between two threads: one takes a free
//! buffer, fills it and hands it on; the other uses it and gives it back. Memory
//! stays at `count * size` bytes whatever flows through, and nothing is allocated
//! per chunk.

use std::sync::mpsc::{self, Receiver, Sender};

/// The taking end of a pool (lives in the thread that fills buffers).
pub(crate) struct Pool {
    free: Receiver<Vec<u8>>,
    /// Buffers taken but not filled, kept here rather than sent around.
    stash: Vec<Vec<u8>>,
}

/// The giving-back end (lives in the thread that empties buffers). When every
/// giver is gone, [`Pool::take`] stops waiting: nobody would give anything back.
pub(crate) struct Giver(Sender<Vec<u8>>);

impl Pool {
    /// `count` buffers of `size` bytes each.
    pub(crate) fn new(count: usize, size: usize) -> (Pool, Giver) {
        Pool::with(count, || vec![0; size])
    }

    /// `count` buffers, each made by `make`.
    pub(crate) fn with(count: usize, make: impl Fn() -> Vec<u8>) -> (Pool, Giver) {
        let (back, free) = mpsc::channel();
        let stash = (0..count).map(|_| make()).collect();
        (Pool { free, stash }, Giver(back))
    }

    /// A free buffer, waiting for one to come back if all are in use; `None` once
    /// the other side is gone.
    pub(crate) fn take(&mut self) -> Option<Vec<u8>> {
        self.stash.pop().or_else(|| self.free.recv().ok())
    }

    /// Returns a buffer this side took but did not fill.
    pub(crate) fn put_back(&mut self, buffer: Vec<u8>) {
        self.stash.push(buffer);
    }
}

impl Giver {
    pub(crate) fn give(&self, buffer: Vec<u8>) {
        // The pool may be gone (its thread finished); then the buffer is just freed.
        let _ = self.0.send(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_not_reallocated() {
        let (mut pool, giver) = Pool::new(2, 8);
        let a = pool.take().unwrap();
        let a_ptr = a.as_ptr();
        let b = pool.take().unwrap();
        giver.give(a);
        let again = pool.take().unwrap();
        assert_eq!(again.as_ptr(), a_ptr);
        assert_eq!(again.len(), 8);
        pool.put_back(b);
        assert!(pool.take().is_some(), "a put-back buffer is free again");
    }

    #[test]
    fn take_stops_waiting_when_the_giver_is_gone() {
        let (mut pool, giver) = Pool::new(1, 8);
        let only = pool.take().unwrap();
        drop((giver, only));
        assert!(pool.take().is_none());
    }
}
