//! A head start for deltas (feature `delta`): while the receiver reads its old
//! versions for the plan, the sender cuts and sums the files that may get one, with
//! the chunk size the receiver takes from the offered size (docs/PROTOCOL.md, section
//! 18.5), and hashes them in the same read. When the plan comes, cutting stops after
//! the chunk at hand; what was cut is the [`Head`] of its file, from which the delta
//! starts (`delta.rs`) instead of reading and cutting it again. A plan that offers no
//! basis, or one cut another way, leaves the head unused.
//!
//! Only files that could get a delta are cut (regular, re-readable, not sparse, of a
//! known size of at least [`MIN_DELTA_SIZE`]), one after the other, in offer order,
//! and no more chunks than [`MAX_HEAD_CHUNKS`] in all, so a head costs at most a few
//! MiB whatever the offer.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::piece::{Head, ToSend};
use crate::fs::input::Outbox;
use crate::proto::delta::{Also, Chunking, MIN_DELTA_SIZE, chunk_and_sum_also};
use crate::proto::hash::HashKind;
use crate::proto::message::EntryKind;

/// The nice value of the cutting threads (the lowest priority).
const NICEST: i32 = 19;
/// Most chunks all heads may list together: 16 bytes each, 4 MiB in all.
const MAX_HEAD_CHUNKS: u64 = 1 << 18;

/// The heads being cut while the plan is awaited.
pub(super) struct Precut {
    stop: AtomicBool,
    heads: Mutex<HashMap<u64, Head>>,
}

impl Precut {
    pub(super) fn new() -> Precut {
        Precut {
            stop: AtomicBool::new(false),
            heads: Mutex::new(HashMap::new()),
        }
    }

    /// Cuts the files of `outbox` that may get a delta until [`Precut::stop`], on
    /// the calling thread (and the summing one it starts), at the lowest priority:
    /// this work is a guess, and where cores are short (a receiver on the same
    /// machine) the receiver's reading of its basis, which the plan waits for,
    /// goes first.
    pub(super) fn run(&self, outbox: &dyn Outbox, hash: HashKind) {
        let this_thread = rustix::thread::gettid();
        let _ = rustix::process::setpriority_process(Some(this_thread), NICEST);
        let mut chunks_left = MAX_HEAD_CHUNKS;
        for (index, size) in candidates(outbox) {
            if self.stop.load(Ordering::Relaxed) || chunks_left == 0 {
                return;
            }
            let Ok(input) = outbox.open(index) else {
                continue; // the reading thread says why, if the plan wants it
            };
            let Some(identity) = input.identity() else {
                continue;
            };
            let chunking = Chunking::for_size(size);
            let mut hasher = hash.hasher();
            let also = Also {
                stop: &self.stop,
                whole: &mut hasher,
            };
            let cut = chunk_and_sum_also(input.take(size), chunking, chunks_left, Some(also));
            let Ok(Some((ends, sums))) = cut else {
                continue;
            };
            chunks_left -= ends.len() as u64;
            let head = Head {
                identity,
                chunking,
                ends,
                sums,
                hasher,
            };
            self.heads
                .lock()
                .expect("no thread panics holding it")
                .insert(index as u64, head);
        }
    }

    /// Stops the cutting after the chunk at hand.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Gives each entry the plan sends as a delta its head, if it was cut the way
    /// the receiver cut its basis; the others are dropped.
    pub(super) fn hand_out(self, to_send: &mut [ToSend]) {
        let mut heads = self
            .heads
            .into_inner()
            .expect("no thread panics holding it");
        for item in to_send {
            if let Some(wanted) = item.delta.as_deref_mut() {
                let head = heads.remove(&item.index);
                wanted.head = head.filter(|head| head.chunking == wanted.chunking);
            }
        }
    }
}

/// The entries that may get a delta, with their offered sizes, in offer order.
fn candidates(outbox: &dyn Outbox) -> impl Iterator<Item = (usize, u64)> + '_ {
    outbox
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.kind == EntryKind::File && !entry.is_sparse())
        .filter_map(|(index, entry)| Some((index, entry.size?)))
        .filter(move |&(index, size)| size >= MIN_DELTA_SIZE && outbox.rereadable(index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::delta::{MAX_CHUNKS, chunk_and_sum, tests::noise};

    #[test]
    fn a_head_cut_to_the_end_is_the_files_chunks_and_hash() {
        let data = noise(3 << 20, 3);
        let chunking = Chunking::for_size(data.len() as u64);
        let stop = AtomicBool::new(false);
        let mut whole = HashKind::Blake3.hasher();
        let also = Also {
            stop: &stop,
            whole: &mut whole,
        };
        let (ends, sums) = chunk_and_sum_also(&data[..], chunking, MAX_CHUNKS, Some(also))
            .unwrap()
            .unwrap();
        assert_eq!(
            (ends.clone(), sums),
            chunk_and_sum(&data[..], chunking, MAX_CHUNKS)
                .unwrap()
                .unwrap()
        );
        assert_eq!(*ends.last().unwrap(), data.len() as u64);
        let mut alone = HashKind::Blake3.hasher();
        alone.update(&data);
        assert_eq!(whole.finish(), alone.finish());
    }

    #[test]
    fn a_stopped_cut_keeps_whole_chunks_and_hashes_just_them() {
        let data = noise(3 << 20, 4);
        let chunking = Chunking::for_size(data.len() as u64);
        let stop = AtomicBool::new(true);
        let mut whole = HashKind::Blake3.hasher();
        let also = Also {
            stop: &stop,
            whole: &mut whole,
        };
        let (ends, sums) = chunk_and_sum_also(&data[..], chunking, MAX_CHUNKS, Some(also))
            .unwrap()
            .unwrap();
        // Stopped before it began: the chunk at hand, and nothing after it.
        assert_eq!((ends.len(), sums.len()), (1, 1));
        let (all, _) = chunk_and_sum(&data[..], chunking, MAX_CHUNKS)
            .unwrap()
            .unwrap();
        assert_eq!(ends[0], all[0]);
        let mut alone = HashKind::Blake3.hasher();
        alone.update(&data[..ends[0] as usize]);
        assert_eq!(whole.finish(), alone.finish());
    }
}
