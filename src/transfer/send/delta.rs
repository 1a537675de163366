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
//!
//! A streamed basis (feature `delta_stream`) gets its sums from `sums.rs` as they
//! arrive: a chunk is decided once [`LOOKAHEAD`] more of them are known, or all.
//! With nothing found after [`GIVE_UP_AFTER`] bytes it is given up instead of backed
//! off from: an end of copies (`0x03`), then the rest read straight into frames of
//! one literal each, as a whole send reads ([`send_literals`]).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::piece::{BUFFER, CHUNK, Halt, Head, Piece, Wanted};
use super::sums::Streams;
use crate::fs::input::Input;
use crate::pool::Pool;
use crate::proto::delta::{
    COPY_LEN, Chunker, LITERAL_HEADER, OP_NO_MORE_COPIES, chunk_sum, copy_op, literal_header,
};
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
/// bytes, starting from its head when one was cut before the plan came (and the
/// file has not changed since); stops at a frame's end once the receiver refused it
/// (`halt`: every frame holds whole instructions, so what went is a valid start).
/// Returns how far it read and the read error that cut it short, if one did;
/// `None` when the session is over.
/// The whole-file hash runs on a thread of its own, fed a batch at a time: it
/// costs about what cutting and looking up do, and the two overlap.
pub(super) fn send(
    input: &mut dyn Input,
    against: (&Wanted, Option<u64>),
    hasher: &mut Hasher,
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    halt: Halt<'_>,
) -> Option<(u64, Option<io::Error>)> {
    // A file changed since its head was cut is cut again, as without a head.
    let head = (against.0.head.as_ref()).filter(|head| input.identity() == Some(head.identity));
    let mut whole = match head {
        // The head's hasher has its bytes already.
        Some(head) => head.hasher.clone(),
        None => std::mem::replace(hasher, hasher.kind().hasher()),
    };
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
        let result = encode(input, (against, head), &mut feed, pool, pieces, halt);
        if let Some((streams, index)) = &against.0.stream {
            streams.done_with(*index);
        }
        feed(&[], true);
        drop(batches);
        (result, hashing.join().expect("hashing never panics"))
    });
    *hasher = whole;
    let (sent, error, given_up) = result?;
    if !given_up || error.is_some() {
        return Some((sent, error));
    }
    let left = against.1.map_or(u64::MAX, |size| size.saturating_sub(sent));
    send_literals(input, (sent, left), hasher, pool, pieces, halt)
}

/// The rest of a file whose basis was given up (at most `left` bytes after the
/// `sent` so far), as one literal per data frame read straight into it and hashed
/// on this thread: what a whole send costs, plus five bytes a frame.
fn send_literals(
    input: &mut dyn Input,
    (mut sent, left): (u64, u64),
    hasher: &mut Hasher,
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    halt: Halt<'_>,
) -> Option<(u64, Option<io::Error>)> {
    let mut input = Read::take(input, left);
    loop {
        if halt.refused() {
            return Some((sent, None));
        }
        let mut buffer = pool.take()?;
        let room = &mut buffer[DATA_HEADROOM + LITERAL_HEADER..DATA_HEADROOM + CHUNK];
        let n = match read_full(&mut input, room, halt.stop) {
            Some(Ok(0)) => {
                pool.put_back(buffer);
                return Some((sent, None));
            }
            Some(Ok(n)) => n,
            Some(Err(err)) => {
                pool.put_back(buffer);
                return Some((sent, Some(err)));
            }
            None => return None,
        };
        hasher.update(&room[..n]);
        let len = u32::try_from(n).expect("a frame is far below 4 GiB");
        buffer[DATA_HEADROOM..DATA_HEADROOM + LITERAL_HEADER].copy_from_slice(&literal_header(len));
        sent += n as u64;
        let piece = Piece::Chunk {
            buffer,
            len: LITERAL_HEADER + n,
            covered: n as u64,
        };
        pieces.send(piece).ok()?;
    }
}

/// Reads until `buf` is full or the input ends: how much; `None` once `stop` is set.
fn read_full(
    input: &mut impl Read,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> Option<io::Result<usize>> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Some(Err(err)),
        }
    }
    Some(Ok(filled))
}

/// Bytes handed to the hashing thread at a time.
const HASH_BATCH: usize = 1 << 20;

/// Encodes the file as instructions: first the chunks of its head, if it has one,
/// then the rest as it is read and cut; `feed` gets every byte read after the head,
/// in order. Returns how far it read, the read error that cut it short, and
/// whether it gave a streamed basis up (the rest of the file then goes raw).
fn encode(
    input: &mut dyn Input,
    ((wanted, expected), head): ((&Wanted, Option<u64>), Option<&Head>),
    feed: &mut dyn FnMut(&[u8], bool),
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    halt: Halt<'_>,
) -> Option<(u64, Option<io::Error>, bool)> {
    let stop = halt.stop;
    let mut lookup = Lookup::of(wanted);
    let mut out = Instructions::new(pool, pieces);
    let mut state = Matching::default();
    if let Some(head) = head {
        let buffer = &mut vec![0; wanted.chunking.max()];
        let found = &lookup.found;
        if let Err(err) = from_head(input, head, (found, buffer), (&mut out, &mut state), stop)? {
            out.finish(&mut state)?;
            return Some((state.sent, Some(err), false));
        }
    }
    let left = expected.map_or(u64::MAX, |size| size.saturating_sub(state.sent));
    let mut chunker = Chunker::new(Read::take(input, left), wanted.chunking);
    while !halt.refused() {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        let (next, looked_up) = match state.next_step(lookup.stream.is_some()) {
            Step::Chunk => (chunker.next_chunk(), true),
            Step::Raw(len) => (chunker.next_raw(len), false),
        };
        let bytes = match next {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(err) => {
                out.finish(&mut state)?;
                return Some((state.sent, Some(err), false));
            }
        };
        feed(bytes, false);
        let found = match looked_up {
            true => lookup.find(chunk_sum(bytes), stop)?,
            false => None,
        };
        match found {
            Some(first) => out.matched(&mut state, first, bytes.len() as u64)?,
            None => out.unmatched(&mut state, bytes)?,
        }
        if lookup.stream.is_some() && state.gives_up() {
            // The rest goes raw (see `send_literals`), after what was read ahead.
            let ahead = chunker.drain();
            feed(ahead, false);
            out.give_up(&mut state, ahead)?;
            return Some((state.sent, None, true));
        }
    }
    out.finish(&mut state)?;
    Some((state.sent, None, false))
}

/// Bytes of a streamed basis's sums (feature `delta_stream`) held ahead of the
/// chunk being decided, counted in chunks of its average size: a chunk moved up to
/// this far ahead is still found, and a shift (an insert, a deletion) of any size.
/// The first decision of a file waits for the receiver to cut this much, and a
/// basis given up costs it this much cutting besides [`GIVE_UP_AFTER`]: 16 MiB
/// rather than 32 halves both (measured on 1 GiB with nothing in common, under
/// load: CPU of both sides 1.04x, 1.21x, 0.99x a whole send against 1.14x, 1.14x,
/// 1.09x with 32 MiB and 16 MiB).
const LOOKAHEAD: u64 = 16 << 20;
/// Bytes looked up without any match in a streamed basis after which a sender
/// gives it up: an end of copies, then literals without cutting. As long as the
/// back-off of a listed basis waits ([`BACKOFF_AFTER`]).
const GIVE_UP_AFTER: u64 = 8 << 20;
/// The stretch read at a time once a streamed basis was given up.
const RAW_STRETCH: usize = 1 << 20;

/// Where each sum of the basis first stands, as far as they are known: all of
/// them at once when the plan listed them; as they arrive when streamed, at
/// least [`LOOKAHEAD`] ahead of the chunk being decided, or all.
struct Lookup<'a> {
    found: HashMap<u64, u32>,
    /// The streamed sums, this entry's index, how many arrived and whether that
    /// was all.
    stream: Option<(&'a Streams, u64)>,
    known: u64,
    ended: bool,
    /// Chunks decided so far, and how many sums to hold ahead of them.
    decided: u64,
    ahead: u64,
}

impl<'a> Lookup<'a> {
    fn of(wanted: &'a Wanted) -> Lookup<'a> {
        Lookup {
            found: first_chunk_of(&wanted.sums),
            stream: (wanted.stream.as_ref()).map(|(streams, index)| (&**streams, *index)),
            known: wanted.sums.len() as u64,
            ended: wanted.stream.is_none(),
            decided: 0,
            ahead: (LOOKAHEAD / wanted.chunking.avg() as u64).max(1),
        }
    }

    /// The first chunk of the basis with this sum, once enough sums are known to
    /// say; `None` when the session is over.
    fn find(&mut self, sum: u64, stop: &AtomicBool) -> Option<Option<u32>> {
        let want = self.decided + self.ahead;
        if let Some((streams, index)) = self.stream
            && !self.ended
            && self.known < want
        {
            let (sums, ended) = streams.take(index, want, stop)?;
            for sum in sums {
                self.found.entry(sum).or_insert(self.known as u32);
                self.known += 1;
            }
            self.ended = ended;
        }
        self.decided += 1;
        Some(self.found.get(&sum).copied())
    }
}

/// Sends the chunks of a head: a copy for each found in the basis, the others as
/// literals read again from `input` (into `buffer`), which it leaves at the head's
/// end. Its bytes are not fed to the hash: the head's hasher has them. `None` when
/// the session is over; the read error that cut it short, if one did (a change of
/// the file counts as one).
fn from_head(
    input: &mut dyn Input,
    head: &Head,
    (found, buffer): (&HashMap<u64, u32>, &mut [u8]),
    (out, state): (&mut Instructions<'_>, &mut Matching),
    stop: &AtomicBool,
) -> Option<io::Result<()>> {
    let mut start = 0;
    for (&end, sum) in head.ends.iter().zip(&head.sums) {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        let len = end - start;
        start = end;
        if let Some(&first) = found.get(sum) {
            if let Err(err) = input.skip(len) {
                return Some(Err(err));
            }
            out.matched(state, first, len)?;
        } else {
            let bytes = &mut buffer[..len as usize];
            if let Err(err) = input.read_exact(bytes) {
                return Some(Err(err));
            }
            // The head's hash has the bytes as they were cut: others would make
            // the file fail its check at the receiver for no reason it could give.
            if chunk_sum(bytes) != *sum {
                return Some(Err(io::Error::other("it changed while it was read")));
            }
            out.unmatched(state, bytes)?;
        }
    }
    // Chunks found in the basis were skipped, not read: a change while the head
    // was sent would go unseen.
    if input.identity() != Some(head.identity) {
        return Some(Err(io::Error::other("it changed while it was read")));
    }
    Some(Ok(()))
}

/// Where each sum first stands in the basis.
fn first_chunk_of(sums: &[u64]) -> HashMap<u64, u32> {
    let mut found = HashMap::with_capacity(sums.len());
    for (index, sum) in sums.iter().enumerate() {
        found.entry(*sum).or_insert(index as u32);
    }
    found
}

/// The bytes of instructions a delta of `input` (at most `expected` bytes of it)
/// against `wanted` would take, as a dry run shows them: every chunk cut and looked
/// up (no stretch skipped), a run of consecutive copies counted once.
pub(super) fn expected_size(
    input: &mut dyn Input,
    wanted: &Wanted,
    expected: Option<u64>,
) -> io::Result<u64> {
    let found = first_chunk_of(&wanted.sums);
    let limited = Read::take(input, expected.unwrap_or(u64::MAX));
    let mut chunker = Chunker::new(limited, wanted.chunking);
    let (mut bytes, mut run_ends_at) = (0, None);
    while let Some(chunk) = chunker.next_chunk()? {
        match found.get(&chunk_sum(chunk)) {
            Some(&first) => {
                if run_ends_at != Some(first) {
                    bytes += COPY_LEN as u64;
                }
                run_ends_at = first.checked_add(1);
            }
            None => {
                bytes += (LITERAL_HEADER + chunk.len()) as u64;
                run_ends_at = None;
            }
        }
    }
    Ok(bytes)
}

/// How the next bytes of the file are read.
enum Step {
    /// Cut a chunk and look it up.
    Chunk,
    /// Up to this many bytes, not cut: they go as literals.
    Raw(usize),
}

impl Matching {
    /// What comes next: a chunk, or (backing off after [`BACKOFF_AFTER`] bytes
    /// without a match) a stretch sent without chunking. A streamed basis backs
    /// off only once something matched (before that, it is given up), and once
    /// given up everything goes raw.
    fn next_step(&mut self, streamed: bool) -> Step {
        if self.given_up {
            return Step::Raw(RAW_STRETCH);
        }
        let backs_off = !streamed || self.matched_once;
        if backs_off && self.probes_left == 0 && self.missed >= BACKOFF_AFTER {
            let skip = (self.missed / 2).min(MAX_SKIP);
            self.probes_left = PROBES;
            return Step::Raw(usize::try_from(skip).unwrap_or(usize::MAX));
        }
        self.probes_left = self.probes_left.saturating_sub(1);
        Step::Chunk
    }

    /// Whether a streamed basis is to be given up now: [`GIVE_UP_AFTER`] bytes
    /// looked up and nothing found.
    fn gives_up(&self) -> bool {
        !self.given_up && !self.matched_once && self.missed >= GIVE_UP_AFTER
    }
}

/// Where matching stands.
#[derive(Default)]
struct Matching {
    /// Some chunk was found in the basis.
    matched_once: bool,
    /// An end of copies went out: the rest goes raw.
    given_up: bool,
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

impl<'a> Instructions<'a> {
    fn new(pool: &'a mut Pool, pieces: &'a mpsc::Sender<Piece>) -> Instructions<'a> {
        Instructions {
            frame: None,
            pool,
            pieces,
        }
    }

    /// A chunk of `len` bytes of the file that is chunk `first` of the basis.
    fn matched(&mut self, state: &mut Matching, first: u32, len: u64) -> Option<()> {
        state.sent += len;
        state.missed = 0;
        state.probes_left = 0;
        state.matched_once = true;
        self.copy(state, first, len)
    }

    /// Bytes of the file found nowhere in the basis (or not looked up).
    fn unmatched(&mut self, state: &mut Matching, bytes: &[u8]) -> Option<()> {
        state.sent += bytes.len() as u64;
        state.missed += bytes.len() as u64;
        self.literal(state, bytes)
    }

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

    /// Gives a streamed basis up: says that no copy follows, then sends what was
    /// read `ahead` as literals, and the last frame.
    fn give_up(&mut self, state: &mut Matching, ahead: &[u8]) -> Option<()> {
        self.flush_run(state)?;
        self.room(state, 1)?;
        self.put(&[OP_NO_MORE_COPIES]);
        state.given_up = true;
        self.unmatched(state, ahead)?;
        self.finish(state)
    }

    /// Writes out the pending run and sends the last frame.
    fn finish(&mut self, state: &mut Matching) -> Option<()> {
        self.flush_run(state)?;
        self.send(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::delta::tests::noise;
    use crate::proto::delta::{Chunking, MAX_CHUNKS, Op, chunk_and_sum, ops};
    use crate::proto::hash::HashKind;
    use crate::transfer::send::piece::Head;

    /// A head of the first `chunks` chunks (all of them: `usize::MAX`) of `cut`,
    /// as the file was when it was cut, and whether the file sent is the one it was
    /// cut from (or another one: the file was replaced since).
    struct HeadOf<'a> {
        cut: &'a [u8],
        chunks: usize,
        same_file: bool,
    }

    /// Sends `new` against `old` as the receiver would have chunked it, with `head`
    /// cut beforehand; the result rebuilt from the instructions, the hash `done`
    /// would carry, the literal bytes and the read error that cut it short, if one
    /// did.
    fn rebuilt(old: &[u8], new: &[u8], head: Option<HeadOf>) -> Rebuilt {
        let chunking = Chunking::for_size(new.len() as u64);
        let (old_ends, old_sums) = chunk_and_sum(old, chunking, MAX_CHUNKS).unwrap().unwrap();
        let mut input = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut input, new).unwrap();
        std::io::Seek::rewind(&mut input).unwrap();
        let other = tempfile::tempfile().unwrap();
        let head = head.map(|head| {
            let cut = head.cut;
            let (mut ends, mut sums) = chunk_and_sum(cut, chunking, MAX_CHUNKS).unwrap().unwrap();
            ends.truncate(head.chunks);
            sums.truncate(head.chunks);
            let mut hasher = HashKind::Blake3.hasher();
            hasher.update(&cut[..ends.last().map_or(0, |&end| end as usize)]);
            let of = if head.same_file { &input } else { &other };
            Head {
                identity: of.identity().unwrap(),
                chunking,
                ends,
                sums,
                hasher,
            }
        });
        let wanted = Wanted {
            chunking,
            sums: old_sums,
            head,
            stream: None,
        };
        let (mut pool, giver) = Pool::new(4, BUFFER);
        let (pieces, from_sender) = mpsc::channel();
        let mut hasher = HashKind::Blake3.hasher();
        let stop = AtomicBool::new(false);
        let mut result = Vec::new();
        let mut literal = 0;
        let error = std::thread::scope(|scope| {
            let receiver = scope.spawn(|| {
                for piece in from_sender {
                    let Piece::Chunk { buffer, len, .. } = piece else {
                        continue;
                    };
                    for op in ops(&buffer[DATA_HEADROOM..DATA_HEADROOM + len]) {
                        match op.unwrap() {
                            Op::Literal(bytes) => {
                                literal += bytes.len();
                                result.extend_from_slice(bytes);
                            }
                            Op::Copy { first, count } => {
                                let start = match first {
                                    0 => 0,
                                    k => old_ends[k as usize - 1] as usize,
                                };
                                let end = old_ends[(first + count) as usize - 1] as usize;
                                result.extend_from_slice(&old[start..end]);
                            }
                            Op::NoMoreCopies => unreachable!("a basis the plan listed"),
                        }
                    }
                    giver.give(buffer);
                }
            });
            let against = (&wanted, Some(new.len() as u64));
            let halt = Halt::only(&stop);
            let sent = send(&mut input, against, &mut hasher, &mut pool, &pieces, halt);
            let (sent, error) = sent.unwrap();
            if error.is_none() {
                assert_eq!(sent, new.len() as u64);
            }
            drop(pieces);
            receiver.join().unwrap();
            error.map(|err| err.to_string())
        });
        (result, hasher.finish().to_hex().to_string(), literal, error)
    }

    type Rebuilt = (Vec<u8>, String, usize, Option<String>);

    /// Version 1 and version 2 of a file: three changes, one far in.
    fn old_and_new() -> (Vec<u8>, Vec<u8>) {
        let old = noise(3 << 20, 21);
        let mut new = old.clone();
        new[1 << 20..(1 << 20) + 5000].copy_from_slice(&noise(5000, 22));
        new.splice(100..100, noise(300, 23));
        new.extend_from_slice(&noise(70_000, 24));
        (old, new)
    }

    #[test]
    fn a_head_cut_before_the_plan_gives_the_same_result_as_cutting_it_then() {
        let (old, new) = old_and_new();
        let whole = blake3::hash(&new).to_hex().to_string();
        for chunks in [None, Some(0), Some(1), Some(40), Some(usize::MAX)] {
            let head = chunks.map(|chunks| HeadOf {
                cut: &new,
                chunks,
                same_file: true,
            });
            let (result, hash, literal, error) = rebuilt(&old, &new, head);
            assert_eq!(error, None);
            assert!(result == new, "head {chunks:?}: the result differs");
            assert_eq!(hash, whole, "head {chunks:?}");
            // Three changes of at most 70 000 bytes, each in a chunk or two of 8 KiB
            // to 32 KiB: the rest is copied.
            assert!(
                literal < 300_000,
                "head {chunks:?}: {literal} literal bytes"
            );
        }
    }

    #[test]
    fn a_head_of_a_file_replaced_since_is_not_used() {
        let (old, new) = old_and_new();
        // Cut from what the file was before a save replaced it.
        let head = HeadOf {
            cut: &old,
            chunks: usize::MAX,
            same_file: false,
        };
        let (result, hash, _, error) = rebuilt(&old, &new, Some(head));
        assert_eq!(error, None);
        assert!(result == new, "the result is not the file as it is now");
        assert_eq!(hash, blake3::hash(&new).to_hex().to_string());
    }

    #[test]
    fn a_head_whose_literals_read_again_differ_is_a_read_error() {
        let (old, new) = old_and_new();
        // Changed in place after it was cut, with nothing in its identity to tell.
        let mut before = new.clone();
        before[50_000..60_000].copy_from_slice(&noise(10_000, 25));
        let head = HeadOf {
            cut: &before,
            chunks: usize::MAX,
            same_file: true,
        };
        let (_, _, _, error) = rebuilt(&old, &new, Some(head));
        assert_eq!(error.as_deref(), Some("it changed while it was read"));
    }

    /// A file whose identity changes once it has been asked for it: edited while
    /// its head is sent.
    struct EditedDuringSend {
        file: std::fs::File,
        asked: std::sync::atomic::AtomicBool,
    }

    impl Read for EditedDuringSend {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.file.read(buf)
        }
    }

    impl Input for EditedDuringSend {
        fn identity(&self) -> Option<crate::fs::input::Identity> {
            let asked_before = self.asked.swap(true, Ordering::SeqCst);
            self.file.identity().filter(|_| !asked_before)
        }
    }

    #[test]
    fn a_file_changed_while_its_head_is_sent_is_a_read_error() {
        let data = noise(1 << 20, 26);
        let chunking = Chunking::for_size(data.len() as u64);
        let (ends, sums) = chunk_and_sum(&data[..], chunking, MAX_CHUNKS)
            .unwrap()
            .unwrap();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let mut hasher = HashKind::Blake3.hasher();
        hasher.update(&data);
        let head = Head {
            identity: file.identity().unwrap(),
            chunking,
            ends,
            sums: sums.clone(),
            hasher,
        };
        // The same file as the basis: every chunk of the head is a copy, skipped.
        let wanted = Wanted {
            chunking,
            sums,
            head: Some(head),
            stream: None,
        };
        let mut input = EditedDuringSend {
            file,
            asked: AtomicBool::new(false),
        };
        let (mut pool, _giver) = Pool::new(4, BUFFER);
        let (pieces, _from_sender) = mpsc::channel();
        let mut hasher = HashKind::Blake3.hasher();
        let stop = AtomicBool::new(false);
        let against = (&wanted, Some(data.len() as u64));
        let halt = Halt::only(&stop);
        let sent = send(&mut input, against, &mut hasher, &mut pool, &pieces, halt);
        let error = sent.unwrap().1.map(|err| err.to_string());
        assert_eq!(error.as_deref(), Some("it changed while it was read"));
    }
}
