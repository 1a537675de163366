//! The sender's side of a delta (feature `delta`), on the reading thread: cuts the
//! file into chunks with the receiver's parameters, looks each up among the sums of
//! the receiver's basis, and sends a copy of the basis's chunks for every one found,
//! the bytes of every other as a literal. Runs of consecutive chunks become one copy.
//! The whole-file hash covers every byte read, as for a whole file.
//!
//! Data with nothing in common costs little: after [`BACKOFF_AFTER`] bytes without a
//! match, ever longer stretches go as literals without being chunked, each followed
//! by a few probes (content-defined boundaries fall back into step after a chunk or
//! two, wherever chunking starts again).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::piece::{BUFFER, CHUNK, Piece, Wanted};
use crate::fs::input::Input;
use crate::pool::Pool;
use crate::proto::delta::{COPY_LEN, Chunker, LITERAL_HEADER, chunk_sum, copy_op, literal_header};
use crate::proto::hash::Hasher;
use crate::proto::wire::DATA_HEADROOM;

/// Bytes without a match after which chunking backs off.
const BACKOFF_AFTER: u64 = 8 << 20;
/// Chunks looked up after each stretch sent without chunking.
const PROBES: u32 = 4;
/// The longest stretch sent without chunking.
const MAX_SKIP: u64 = 256 << 20;
/// A frame goes out once it stands for this many bytes of the file, even if it is
/// not full (a long copy is a few bytes): the receiver builds while we read on.
const FRAME_COVERS: u64 = 16 << 20;

/// Sends a file as instructions against `wanted`, never reading past `expected`
/// bytes. Returns how far it read and the read error that cut it short, if one did;
/// `None` when the session is over.
/// The whole-file hash runs on a thread of its own, fed a batch at a time: it
/// costs about what cutting and looking up do, and the two overlap.
pub(super) fn send(
    input: &mut dyn Input,
    against: (&Wanted, Option<u64>),
    hasher: &mut Hasher,
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    stop: &AtomicBool,
) -> Option<(u64, Option<io::Error>)> {
    let mut whole = std::mem::replace(hasher, hasher.kind().hasher());
    let (batches, to_hash) = mpsc::sync_channel::<Vec<u8>>(1);
    let (result, whole) = std::thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            for batch in to_hash {
                whole.update(&batch);
            }
            whole
        });
        let mut batch = Vec::with_capacity(2 * HASH_BATCH);
        // A stretch sent without chunking can be megabytes: it is cut into
        // batches, so what waits for the hashing thread stays a few MiB.
        let mut feed = |bytes: &[u8], last: bool| {
            for piece in bytes.chunks(HASH_BATCH) {
                batch.extend_from_slice(piece);
                if batch.len() >= HASH_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(2 * HASH_BATCH));
                    let _ = batches.send(full);
                }
            }
            if last {
                let _ = batches.send(std::mem::take(&mut batch));
            }
        };
        let result = encode(input, against, &mut feed, pool, pieces, stop);
        feed(&[], true);
        drop(batches);
        (result, hashing.join().expect("hashing never panics"))
    });
    *hasher = whole;
    result
}

/// Bytes handed to the hashing thread at a time.
const HASH_BATCH: usize = 1 << 20;

/// Encodes the file as instructions; `feed` gets every byte read, in order.
fn encode(
    input: &mut dyn Input,
    (wanted, expected): (&Wanted, Option<u64>),
    feed: &mut dyn FnMut(&[u8], bool),
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    stop: &AtomicBool,
) -> Option<(u64, Option<io::Error>)> {
    let mut found = HashMap::with_capacity(wanted.sums.len());
    for (index, sum) in wanted.sums.iter().enumerate() {
        found.entry(*sum).or_insert(index as u32);
    }
    let limited = Read::take(input, expected.unwrap_or(u64::MAX));
    let mut chunker = Chunker::new(limited, wanted.chunking);
    let mut out = Instructions {
        frame: None,
        pool,
        pieces,
    };
    let mut state = Matching::default();
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        let (next, looked_up) = if state.probes_left == 0 && state.missed >= BACKOFF_AFTER {
            let skip = (state.missed / 2).min(MAX_SKIP);
            state.probes_left = PROBES;
            let skip = usize::try_from(skip).unwrap_or(usize::MAX);
            (chunker.next_raw(skip), false)
        } else {
            state.probes_left = state.probes_left.saturating_sub(1);
            (chunker.next_chunk(), true)
        };
        let bytes = match next {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(err) => {
                out.finish(&mut state)?;
                return Some((state.sent, Some(err)));
            }
        };
        feed(bytes, false);
        state.sent += bytes.len() as u64;
        let sum = looked_up.then(|| chunk_sum(bytes));
        match sum.and_then(|sum| found.get(&sum)) {
            Some(&first) => {
                state.missed = 0;
                state.probes_left = 0;
                out.copy(&mut state, first, bytes.len() as u64)?;
            }
            None => {
                state.missed += bytes.len() as u64;
                out.literal(&mut state, bytes)?;
            }
        }
    }
    out.finish(&mut state)?;
    Some((state.sent, None))
}

/// Where matching stands.
#[derive(Default)]
struct Matching {
    /// Bytes read so far.
    sent: u64,
    /// Bytes since the last chunk found in the basis.
    missed: u64,
    /// Chunks still to look up before the next stretch without chunking.
    probes_left: u32,
    /// The run of basis chunks not yet written out: first chunk, how many.
    run: Option<(u32, u32)>,
    /// File bytes the frame being filled stands for (its pending run included).
    covered: u64,
}

/// The data frame being filled with instructions.
struct Instructions<'a> {
    /// A pool buffer and how many instruction bytes it holds after its headroom.
    frame: Option<(Vec<u8>, usize)>,
    pool: &'a mut Pool,
    pieces: &'a mpsc::Sender<Piece>,
}

impl Instructions<'_> {
    /// Adds chunk `index` of the basis (`len` bytes of the file) to the run.
    fn copy(&mut self, state: &mut Matching, index: u32, len: u64) -> Option<()> {
        state.run = match state.run {
            Some((first, count)) if first.checked_add(count) == Some(index) => {
                Some((first, count + 1))
            }
            Some(run) => {
                self.put_run(state, run)?;
                Some((index, 1))
            }
            None => Some((index, 1)),
        };
        state.covered += len;
        if state.covered >= FRAME_COVERS {
            self.flush_run(state)?;
            self.send(state)?;
        }
        Some(())
    }

    /// Adds literal bytes, after the pending run.
    fn literal(&mut self, state: &mut Matching, mut bytes: &[u8]) -> Option<()> {
        self.flush_run(state)?;
        while !bytes.is_empty() {
            let room = self.room(state, LITERAL_HEADER + 1)?;
            let n = (room - LITERAL_HEADER).min(bytes.len());
            let len = u32::try_from(n).expect("a frame is far below 4 GiB");
            self.put(&literal_header(len));
            self.put(&bytes[..n]);
            state.covered += n as u64;
            bytes = &bytes[n..];
        }
        Some(())
    }

    /// Writes out the pending run.
    fn flush_run(&mut self, state: &mut Matching) -> Option<()> {
        match state.run.take() {
            Some(run) => self.put_run(state, run),
            None => Some(()),
        }
    }

    fn put_run(&mut self, state: &mut Matching, (first, count): (u32, u32)) -> Option<()> {
        self.room(state, COPY_LEN)?;
        self.put(&copy_op(first, count));
        Some(())
    }

    /// Room left in the frame, sending it first when it has less than `needed`.
    fn room(&mut self, state: &mut Matching, needed: usize) -> Option<usize> {
        let left = self.frame.as_ref().map_or(0, |(_, used)| CHUNK - used);
        if left >= needed {
            return Some(left);
        }
        self.send(state)?;
        let buffer = self.pool.take()?;
        debug_assert_eq!(buffer.len(), BUFFER);
        self.frame = Some((buffer, 0));
        Some(CHUNK)
    }

    fn put(&mut self, bytes: &[u8]) {
        let (buffer, used) = self.frame.as_mut().expect("room() made one");
        let at = DATA_HEADROOM + *used;
        buffer[at..at + bytes.len()].copy_from_slice(bytes);
        *used += bytes.len();
    }

    /// Sends the frame, if it holds anything.
    fn send(&mut self, state: &mut Matching) -> Option<()> {
        match self.frame.take() {
            Some((buffer, len)) if len > 0 => {
                let covered = std::mem::take(&mut state.covered);
                let piece = Piece::Chunk {
                    buffer,
                    len,
                    covered,
                };
                self.pieces.send(piece).ok()
            }
            Some((buffer, _)) => {
                self.pool.put_back(buffer);
                Some(())
            }
            None => Some(()),
        }
    }

    /// Writes out the pending run and sends the last frame.
    fn finish(&mut self, state: &mut Matching) -> Option<()> {
        self.flush_run(state)?;
        self.send(state)
    }
}
