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
//! reading at most [`MAX_HEAD_BYTES`] and keeping at most [`MAX_HEAD_MEMORY`] in
//! all (each chunk's end and sum, and each head's hasher), so the guess costs a
//! bounded read and a few MiB whatever the offer. A server answering a `get` does
//! not cut ahead: a client could ask and withhold its plan to keep it reading.

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
/// Most bytes all heads may keep together.
const MAX_HEAD_MEMORY: u64 = 4 << 20;
/// What each chunk of a head keeps: its end and its sum.
const CHUNK_COST: u64 = 16;
/// What each head keeps besides its chunks, its hasher mostly (a boxed BLAKE3 hasher
/// is about 1.9 KiB): at most 2048 heads, however small the files.
const HEAD_COST: u64 = 2 << 10;
/// Most bytes of files the heads may cover together: the cutting stops there.
const MAX_HEAD_BYTES: u64 = 1 << 30;

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
        let (mut memory_left, mut bytes_left) = (MAX_HEAD_MEMORY, MAX_HEAD_BYTES);
        for (index, size) in candidates(outbox) {
            let chunks_left = memory_left.saturating_sub(HEAD_COST) / CHUNK_COST;
            if self.stop.load(Ordering::Relaxed) || chunks_left == 0 || bytes_left == 0 {
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
            // A head cut short by the budget ends where it stopped reading: its
            // chunks are still the file's bytes, which is all the delta needs.
            let budget = size.min(bytes_left);
            bytes_left -= budget; // read, whether or not a head comes of it
            let input = input.take(budget);
            let cut = chunk_and_sum_also(input, chunking, chunks_left, Some(also));
            let Ok(Some((ends, sums))) = cut else {
                continue;
            };
            memory_left -= HEAD_COST + CHUNK_COST * ends.len() as u64;
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

    /// `count` offered files, each the same file on disk.
    struct Same {
        file: tempfile::NamedTempFile,
        entries: Vec<crate::proto::message::Entry>,
    }

    impl Outbox for Same {
        fn entries(&self) -> &[crate::proto::message::Entry] {
            &self.entries
        }
        fn open(&self, _: usize) -> anyhow::Result<Box<dyn crate::fs::input::Input>> {
            Ok(Box::new(self.file.reopen()?))
        }
        fn rereadable(&self, _: usize) -> bool {
            true
        }
        fn shown(&self, index: usize) -> String {
            format!("local #{index}")
        }
    }

    #[test]
    fn many_small_files_get_no_more_heads_than_the_memory_allows() {
        let data = noise(MIN_DELTA_SIZE as usize, 5);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let entry = crate::proto::message::Entry {
            path: "f".into(),
            kind: EntryKind::File,
            size: Some(data.len() as u64),
            ..Default::default()
        };
        let same = Same {
            file,
            entries: vec![entry; 3000],
        };
        let precut = Precut::new();
        precut.run(&same, HashKind::Blake3);
        let heads = precut.heads.into_inner().unwrap();
        let kept: u64 = (heads.values())
            .map(|head| HEAD_COST + CHUNK_COST * head.ends.len() as u64)
            .sum();
        assert!(heads.len() > 1000 && heads.len() < 2048, "{}", heads.len());
        assert!(kept <= MAX_HEAD_MEMORY, "{kept}");
    }

    /// Cuts `data` as a head is cut, told to stop beforehand or not: the chunk
    /// ends and sums, and the hash of the bytes they cover.
    fn cut_head(data: &[u8], stopped: bool) -> (Vec<u64>, Vec<u64>, String) {
        let chunking = Chunking::for_size(data.len() as u64);
        let stop = AtomicBool::new(stopped);
        let mut whole = HashKind::Blake3.hasher();
        let also = Also {
            stop: &stop,
            whole: &mut whole,
        };
        let (ends, sums) = chunk_and_sum_also(data, chunking, MAX_CHUNKS, Some(also))
            .unwrap()
            .unwrap();
        (ends, sums, whole.finish().to_hex().to_string())
    }

    #[test]
    fn a_head_cut_to_the_end_is_the_files_chunks_and_hash() {
        let data = noise(3 << 20, 3);
        let chunking = Chunking::for_size(data.len() as u64);
        let (ends, sums, hash) = cut_head(&data, false);
        assert_eq!(
            (ends.clone(), sums),
            chunk_and_sum(&data[..], chunking, MAX_CHUNKS)
                .unwrap()
                .unwrap()
        );
        assert_eq!(*ends.last().unwrap(), data.len() as u64);
        assert_eq!(hash, blake3::hash(&data).to_hex().to_string());
    }

    #[test]
    fn a_stopped_cut_keeps_whole_chunks_and_hashes_just_them() {
        let data = noise(3 << 20, 4);
        let chunking = Chunking::for_size(data.len() as u64);
        let (ends, sums, hash) = cut_head(&data, true);
        // Stopped before it began: the chunk at hand, and nothing after it.
        assert_eq!((ends.len(), sums.len()), (1, 1));
        let (all, _) = chunk_and_sum(&data[..], chunking, MAX_CHUNKS)
            .unwrap()
            .unwrap();
        assert_eq!(ends[0], all[0]);
        let covered = &data[..ends[0] as usize];
        assert_eq!(hash, blake3::hash(covered).to_hex().to_string());
    }

    #[test]
    fn a_head_goes_only_to_a_plan_that_chunks_as_it_was_cut() {
        let file = tempfile::tempfile().unwrap();
        let identity = crate::fs::input::Input::identity(&file).unwrap();
        let cut_with = Chunking::for_size(1 << 20);
        let precut = Precut::new();
        for index in [0, 1] {
            let head = Head {
                identity,
                chunking: cut_with,
                ends: vec![1 << 20],
                sums: vec![7],
                hasher: HashKind::Blake3.hasher(),
            };
            precut.heads.lock().unwrap().insert(index, head);
        }
        // Entry 0's plan chunks as we cut; entry 1's with another average (a
        // receiver other than xfer's): its head is dropped and the file cut again.
        let other = Chunking::from_avg(cut_with.avg() as u64 * 2).unwrap();
        let item = |index, chunking| ToSend {
            index,
            offset: 0,
            prefix_hash: None,
            replaces: true,
            delta: Some(Box::new(super::super::piece::Wanted {
                chunking,
                sums: vec![7],
                head: None,
                stream: None,
            })),
        };
        let mut to_send = [item(0, cut_with), item(1, other)];
        precut.hand_out(&mut to_send);
        let given = |item: &ToSend| item.delta.as_ref().unwrap().head.is_some();
        assert!(given(&to_send[0]));
        assert!(!given(&to_send[1]));
    }
}
