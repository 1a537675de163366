//! Feature `delta` (`docs/PROTOCOL.md`, "Feature `delta`"): what both sides compute alike.
//! Content-defined chunking (FastCDC 2020 from the `fastcdc` crate, normalisation
//! level 1, its gear table), the 8-byte chunk sums a receiver lists in its plan as one
//! hex string (the *signature*), and the instructions a sender's data frames carry
//! instead of raw bytes: a literal, or a copy of a run of the basis's chunks.
//!
//! Chunk boundaries depend only on content, so 100 bytes inserted at the start of a
//! file move every boundary by 100 bytes and leave every chunk after the first as it
//! was: moved data is found without any rolling search. Nothing here touches files
//! or sockets; [`Chunker`] reads from whatever it is given.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::hex::{hex, unhex_into};
use crate::proto::cut;
use crate::proto::hash::Hasher;

/// Smallest average chunk, as a power of two (8 KiB).
const MIN_AVG_BITS: u32 = 13;
/// Largest average chunk (4 MiB, FastCDC's own limit).
const MAX_AVG_BITS: u32 = 22;
/// A file is cut into about 2^this chunks: the average is the smallest power of
/// two at least `size >> 14` (an integer division), where `size` is the offered
/// size of the new version. Measured on 1 GiB (64 KiB chunks, 13 377 of them):
/// 1 MiB overwritten in the middle costs 214 KB of signature and 1.22 MB of
/// instructions.
const TARGET_CHUNK_BITS: u32 = 14;
/// Most chunks one signature may list (a hostile count is refused before anything is
/// allocated for it). Honest signatures stay far below: a chunk is at least a quarter
/// of the average, so about 2^16 at most.
pub(crate) const MAX_CHUNKS: u64 = 1 << 18;
/// Most chunks the signatures of one plan may list together: 8 MiB of sums on the
/// sender, 8 MiB of chunk ends on the receiver, whatever the offer.
pub(crate) const MAX_PLAN_CHUNKS: u64 = 1 << 20;
/// Bytes of a chunk's sum (the first bytes of its BLAKE3 hash).
pub(crate) const SUM_LEN: usize = 8;
/// Files smaller than this (the basis or the new version) go whole: a signature
/// would save nothing worth its round of reading.
pub(crate) const MIN_DELTA_SIZE: u64 = 64 << 10;

/// Instruction opcodes.
pub(crate) const OP_LITERAL: u8 = 0x01;
const OP_COPY: u8 = 0x02;
/// Feature `delta_stream`: no copy follows in this entry (section 18.6).
pub(crate) const OP_NO_MORE_COPIES: u8 = 0x03;
/// Most sums one `sums` frame may carry (section 18.6).
pub(crate) const MAX_FRAME_SUMS: usize = 4096;
/// Bytes before a literal's content: opcode and `u32be` length.
pub(crate) const LITERAL_HEADER: usize = 5;
/// Bytes of a copy: opcode, `u32be` first chunk, `u32be` number of chunks.
pub(crate) const COPY_LEN: usize = 9;

/// The chunking parameters of one basis: the average chunk size (a power of two),
/// the minimum a quarter of it, the maximum four times it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunking {
    bits: u32,
}

impl Chunking {
    /// The parameters xfer's receiver uses when the new version is offered with
    /// `size` bytes: a sender can tell them from its own offer, and cut its file
    /// before the plan comes.
    pub(crate) fn for_size(size: u64) -> Chunking {
        let wanted = (size >> TARGET_CHUNK_BITS).max(1).next_power_of_two();
        Chunking {
            bits: wanted.trailing_zeros().clamp(MIN_AVG_BITS, MAX_AVG_BITS),
        }
    }

    /// The parameters named by a plan's `avg`: a power of two from 8 KiB to 4 MiB.
    pub(crate) fn from_avg(avg: u64) -> Option<Chunking> {
        let bits = avg.trailing_zeros();
        (avg.is_power_of_two() && (MIN_AVG_BITS..=MAX_AVG_BITS).contains(&bits))
            .then_some(Chunking { bits })
    }

    pub(crate) fn avg(self) -> usize {
        1 << self.bits
    }

    pub(crate) fn max(self) -> usize {
        self.cut_params().max
    }

    fn cut_params(self) -> cut::CutParams {
        cut::CutParams::for_avg_bits(self.bits)
    }

    /// The length of the chunk that starts at `bytes[0]`, where `bytes` holds
    /// [`Chunking::max`] bytes or everything up to the end of the data.
    pub(crate) fn cut(self, bytes: &[u8]) -> usize {
        cut::cut(bytes, self.cut_params())
    }
}

/// A chunk's sum: the first [`SUM_LEN`] bytes of its BLAKE3 hash, big-endian.
pub(crate) fn chunk_sum(bytes: &[u8]) -> u64 {
    let hash = blake3::hash(bytes);
    let mut first = [0; SUM_LEN];
    first.copy_from_slice(&hash.as_bytes()[..SUM_LEN]);
    u64::from_be_bytes(first)
}

/// The signature string: every sum in basis order, as lowercase hex.
pub(crate) fn sums_hex(sums: &[u64]) -> String {
    let bytes: Vec<u8> = sums.iter().flat_map(|sum| sum.to_be_bytes()).collect();
    hex(&bytes)
}

/// Decodes a signature string of `count` sums; `None` unless it is exactly
/// `16 * count` lowercase hex digits. The caller checks `count` against its limits
/// first: nothing is allocated before the length agrees.
pub(crate) fn parse_sums(text: &str, count: u64) -> Option<Vec<u64>> {
    let count = usize::try_from(count).ok()?;
    if count.checked_mul(2 * SUM_LEN) != Some(text.len()) {
        return None;
    }
    let mut bytes = vec![0; count * SUM_LEN];
    if !unhex_into(text, &mut bytes) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(SUM_LEN)
            .map(|sum| u64::from_be_bytes(sum.try_into().expect("chunks of SUM_LEN")))
            .collect(),
    )
}

/// Decodes the sums of one `sums` frame (feature `delta_stream`): `None` unless it
/// is a whole number of sums, at most [`MAX_FRAME_SUMS`], of 16 lowercase hex
/// digits each. The length is checked before anything is allocated.
pub(crate) fn parse_frame_sums(text: &str) -> Option<Vec<u64>> {
    let digits = 2 * SUM_LEN;
    if text.len() % digits != 0 || text.len() / digits > MAX_FRAME_SUMS {
        return None;
    }
    parse_sums(text, (text.len() / digits) as u64)
}

/// Bytes a chunker reads ahead, besides the largest chunk.
const READ_AHEAD: usize = 4 << 20;

/// Cuts a stream into chunks as it reads it, holding at most the largest chunk and
/// [`READ_AHEAD`] bytes.
pub(crate) struct Chunker<R> {
    input: R,
    chunking: Chunking,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    pub(crate) fn new(input: R, chunking: Chunking) -> Self {
        Chunker {
            input,
            chunking,
            buffer: vec![0; chunking.max() + READ_AHEAD],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end.
    pub(crate) fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill(self.chunking.max())?;
        if self.start == self.end {
            return Ok(None);
        }
        let len = self.chunking.cut(&self.buffer[self.start..self.end]);
        let chunk = &self.buffer[self.start..self.start + len];
        self.start += len;
        Ok(Some(chunk))
    }

    /// Up to `len` bytes as they come, not cut into chunks (for data that will go as
    /// a literal anyway), or `None` at the end.
    pub(crate) fn next_raw(&mut self, len: usize) -> io::Result<Option<&[u8]>> {
        self.fill(1)?;
        if self.start == self.end {
            return Ok(None);
        }
        let len = len.min(self.end - self.start);
        let raw = &self.buffer[self.start..self.start + len];
        self.start += len;
        Ok(Some(raw))
    }

    /// The bytes read ahead and not yet handed out, handed out now.
    pub(crate) fn drain(&mut self) -> &[u8] {
        let ahead = &self.buffer[self.start..self.end];
        self.start = self.end;
        ahead
    }

    /// Reads until at least `want` bytes are buffered or the input ended.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        if self.end - self.start >= want || self.eof {
            return Ok(());
        }
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.buffer.len() {
            match self.input.read(&mut self.buffer[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Bytes of chunks handed to the summing thread at a time.
const SUM_BATCH: usize = 1 << 20;

/// Where each chunk ends, and its sum.
pub(crate) type Chunked = (Vec<u64>, Vec<u64>);

/// What a cutting pass does besides cutting and summing: a flag that stops it after
/// the chunk being cut (the chunks cut so far are kept), and a hasher fed every
/// byte cut, in order (the whole-file hash of what the chunks cover).
pub(crate) struct Also<'a> {
    pub(crate) stop: &'a AtomicBool,
    pub(crate) whole: &'a mut Hasher,
}

/// Cuts all of `input` into chunks and sums them: where each chunk ends, and its
/// sum; `None` once there are more than `limit` chunks. A second thread sums while
/// this one reads and cuts (each takes about as long), so a basis is ready in about
/// half the time.
pub(crate) fn chunk_and_sum<R: Read>(
    input: R,
    chunking: Chunking,
    limit: u64,
) -> io::Result<Option<Chunked>> {
    chunk_and_sum_also(input, chunking, limit, None)
}

/// [`chunk_and_sum`], and what `also` asks: stopped early, the chunks cut so far.
pub(crate) fn chunk_and_sum_also<R: Read>(
    input: R,
    chunking: Chunking,
    limit: u64,
    also: Option<Also<'_>>,
) -> io::Result<Option<Chunked>> {
    let (stop, mut whole) = match also {
        Some(Also { stop, whole }) => (Some(stop), Some(whole)),
        None => (None, None),
    };
    let (mut ends, mut sums, mut end) = (Vec::new(), Vec::new(), 0);
    let on_batch = |bytes: &[u8], lens: &[usize]| {
        if let Some(whole) = whole.as_deref_mut() {
            whole.update(bytes);
        }
        ends.extend(ends_of(&mut end, lens));
        sums.extend(sums_of(bytes, lens));
    };
    let within = cut_and_sum(input, (chunking, limit, stop), on_batch)?;
    Ok(within.then_some((ends, sums)))
}

/// Where chunks of `lens` bytes end, the first after `end`, which moves on.
fn ends_of<'a>(end: &'a mut u64, lens: &'a [usize]) -> impl Iterator<Item = u64> + 'a {
    lens.iter().map(move |&len| {
        *end += len as u64;
        *end
    })
}

/// Each chunk's sum, of chunks of `lens` bytes back to back in `bytes`.
fn sums_of<'a>(bytes: &'a [u8], lens: &'a [usize]) -> impl Iterator<Item = u64> + 'a {
    lens.iter().scan(0, move |at, &len| {
        let sum = chunk_sum(&bytes[*at..*at + len]);
        *at += len;
        Some(sum)
    })
}

/// Cuts `input` on this thread while another hands each batch of chunks (their
/// bytes back to back, and their lengths) to `on_batch`; `false` past `limit`
/// chunks.
fn cut_and_sum<R: Read>(
    input: R,
    (chunking, limit, stop): (Chunking, u64, Option<&AtomicBool>),
    mut on_batch: impl FnMut(&[u8], &[usize]) + Send,
) -> io::Result<bool> {
    let (batches, to_sum) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<usize>)>(1);
    std::thread::scope(|scope| {
        let summer = scope.spawn(move || {
            for (bytes, lens) in to_sum {
                on_batch(&bytes, &lens);
            }
        });
        let within = cut_all(input, (chunking, limit, stop), &batches);
        drop(batches);
        summer.join().expect("summing never panics");
        within
    })
}

/// Cuts and sums all of `input` as [`chunk_and_sum`] does, but hands each batch
/// to `each` as it is summed (where its chunks end, counted from the start of
/// `input`, and their sums) instead of keeping them: a streamed basis (feature
/// `delta_stream`). Stops after the chunk at hand once `stop` is set, and before
/// a chunk past `limit`; every chunk handed over is a chunk of `input` either way.
pub(crate) fn stream_sums<R: Read>(
    input: R,
    chunking: Chunking,
    (limit, stop): (u64, &AtomicBool),
    mut each: impl FnMut(Vec<u64>, Vec<u64>) + Send,
) -> io::Result<()> {
    let mut end = 0;
    let on_batch = |bytes: &[u8], lens: &[usize]| {
        each(
            ends_of(&mut end, lens).collect(),
            sums_of(bytes, lens).collect(),
        );
    };
    cut_and_sum(input, (chunking, limit, Some(stop)), on_batch).map(drop)
}

/// Cuts `input`, handing the chunks to `batches` a few MiB at a time; `false` (and
/// the chunks past the last batch kept back) once there are more than `limit`.
fn cut_all<R: Read>(
    input: R,
    (chunking, limit, stop): (Chunking, u64, Option<&AtomicBool>),
    batches: &std::sync::mpsc::SyncSender<(Vec<u8>, Vec<usize>)>,
) -> io::Result<bool> {
    let mut chunker = Chunker::new(input, chunking);
    let mut count = 0u64;
    let (mut bytes, mut lens) = (Vec::with_capacity(SUM_BATCH + chunking.max()), Vec::new());
    while let Some(chunk) = chunker.next_chunk()? {
        if count >= limit {
            return Ok(false);
        }
        count += 1;
        bytes.extend_from_slice(chunk);
        lens.push(chunk.len());
        if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            break;
        }
        if bytes.len() >= SUM_BATCH {
            let batch = (std::mem::take(&mut bytes), std::mem::take(&mut lens));
            if batches.send(batch).is_err() {
                break;
            }
            bytes.reserve(SUM_BATCH + chunking.max());
        }
    }
    let _ = batches.send((bytes, lens));
    Ok(true)
}

/// One instruction of a delta entry's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    /// These bytes come next in the result.
    Literal(&'a [u8]),
    /// Chunks `first .. first + count` of the basis come next.
    Copy { first: u32, count: u32 },
    /// Feature `delta_stream`: only literals follow in this entry.
    NoMoreCopies,
}

/// A copy instruction.
pub(crate) fn copy_op(first: u32, count: u32) -> [u8; COPY_LEN] {
    let mut op = [OP_COPY; COPY_LEN];
    op[1..5].copy_from_slice(&first.to_be_bytes());
    op[5..].copy_from_slice(&count.to_be_bytes());
    op
}

/// The header of a literal of `len` bytes (its bytes follow).
pub(crate) fn literal_header(len: u32) -> [u8; LITERAL_HEADER] {
    let mut op = [OP_LITERAL; LITERAL_HEADER];
    op[1..].copy_from_slice(&len.to_be_bytes());
    op
}

/// Takes one data frame's payload apart into instructions. A frame holds whole
/// instructions only; the error says what is wrong (the caller ends the session).
pub(crate) fn ops(frame: &[u8]) -> impl Iterator<Item = Result<Op<'_>, String>> {
    let mut rest = frame;
    std::iter::from_fn(move || {
        let (&opcode, after) = rest.split_first()?;
        let op = match opcode {
            OP_LITERAL => literal(after),
            OP_COPY => copy(after),
            OP_NO_MORE_COPIES => Ok((Op::NoMoreCopies, after)),
            other => Err(format!("unknown delta instruction 0x{other:02x}")),
        };
        match op {
            Ok((op, after)) => {
                rest = after;
                Some(Ok(op))
            }
            Err(why) => {
                rest = &[];
                Some(Err(why))
            }
        }
    })
}

fn be_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (word, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*word), rest))
}

fn literal(after: &[u8]) -> Result<(Op<'_>, &[u8]), String> {
    let (len, rest) = be_u32(after).ok_or("a literal's length is cut off")?;
    let len = len as usize;
    if len == 0 {
        return Err("an empty literal".into());
    }
    if len > rest.len() {
        return Err(format!(
            "a literal of {len} bytes in a frame with {} left",
            rest.len()
        ));
    }
    let (bytes, rest) = rest.split_at(len);
    Ok((Op::Literal(bytes), rest))
}

fn copy(after: &[u8]) -> Result<(Op<'_>, &[u8]), String> {
    let (first, rest) = be_u32(after).ok_or("a copy is cut off")?;
    let (count, rest) = be_u32(rest).ok_or("a copy is cut off")?;
    if count == 0 {
        return Err("a copy of no chunks".into());
    }
    Ok((Op::Copy { first, count }, rest))
}

/// The basis of docs/PROTOCOL.md 18.4's vectors: the first 65 536 bytes of the
/// BLAKE3 extended output (XOF) of the 17 ASCII bytes `xfer delta vector` (plain
/// hashing mode). The vectors' tests and the fuzz target's delta basis start here.
pub(crate) fn vector_basis() -> Vec<u8> {
    let mut out = vec![0; 65536];
    blake3::Hasher::new()
        .update(b"xfer delta vector")
        .finalize_xof()
        .fill(&mut out);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use md5::Digest as _;

    #[test]
    fn the_average_for_an_offered_size_is_the_one_the_spec_gives() {
        // docs/PROTOCOL.md, section 18.5.
        let vectors: [(u64, usize); 8] = [
            (0, 8192),
            ((1 << 27) - 1, 8192),
            (1 << 30, 65536),
            ((1 << 30) + 1, 65536),
            ((1 << 30) + 16384, 131072),
            (1 << 36, 4194304),
            (u64::MAX, 4194304),
            (1 << 27, 8192),
        ];
        for (size, avg) in vectors {
            assert_eq!(Chunking::for_size(size).avg(), avg, "size {size}");
        }
    }

    /// Deterministic bytes that look random to the chunker (xorshift).
    pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn boundaries(data: &[u8], chunking: Chunking) -> Vec<usize> {
        let mut chunker = Chunker::new(data, chunking);
        let mut out = Vec::new();
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            out.push(chunk.len());
        }
        out
    }

    #[test]
    fn the_gear_table_is_the_md5_one_the_document_describes() {
        let (gear, gear_ls) = fastcdc::v2020::get_gear_with_seed(0);
        for i in 0..=255u8 {
            let digest = md5::Md5::digest([i; 64]);
            let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
            assert_eq!(gear[usize::from(i)], expected, "GEAR[{i}]");
            assert_eq!(gear_ls[usize::from(i)], expected << 1, "GEAR_LS[{i}]");
        }
        // The values the document quotes.
        assert_eq!(gear[0], 0x3b5d3c7d207e37dc);
        assert_eq!(gear[1], 0x784d68ba91123086);
        assert_eq!(gear[255], 0xaabd2b2a451504e1);
        let masks = fastcdc::v2020::MASKS;
        assert_eq!(
            (masks[12], masks[14]),
            (0x0000d90103530000, 0x0000d90313530000)
        );
        assert_eq!(
            (masks[21], masks[23]),
            (0x0000d91767537000, 0x0000d93777537000)
        );
    }

    #[test]
    fn chunk_sizes_scale_with_the_basis_and_stay_in_range() {
        assert_eq!(Chunking::for_size(0).avg(), 8 << 10);
        assert_eq!(Chunking::for_size(100 << 20).avg(), 8 << 10);
        assert_eq!(Chunking::for_size(1 << 30).avg(), 64 << 10);
        assert_eq!(Chunking::for_size((1 << 30) + (1 << 14)).avg(), 128 << 10);
        assert_eq!(Chunking::for_size(100 << 30).avg(), 4 << 20);
        assert_eq!(Chunking::for_size(u64::MAX).avg(), 4 << 20);
        assert_eq!(Chunking::from_avg(65536), Some(Chunking { bits: 16 }));
        for bad in [0, 4096, 65535, 65537, 8 << 20, u64::MAX] {
            assert_eq!(Chunking::from_avg(bad), None, "{bad}");
        }
    }

    #[test]
    fn chunking_a_stream_equals_chunking_it_whole_and_survives_an_insert() {
        let chunking = Chunking::from_avg(8192).unwrap();
        let data = noise(3 << 20, 7);
        let sizes = boundaries(&data, chunking);
        assert_eq!(sizes.iter().sum::<usize>(), data.len());
        assert!(sizes.iter().all(|&n| n <= chunking.max()));
        assert!(
            sizes[..sizes.len() - 1]
                .iter()
                .all(|&n| n >= chunking.cut_params().min)
        );
        let mut inserted = vec![9; 100];
        inserted.extend_from_slice(&data);
        let moved = boundaries(&inserted, chunking);
        // Everything after the first couple of chunks is cut where it was.
        assert_eq!(sizes[3..], moved[moved.len() - (sizes.len() - 3)..]);
    }

    #[test]
    fn chunking_and_summing_in_two_threads_gives_what_one_does() {
        let chunking = Chunking::from_avg(8192).unwrap();
        let data = noise(10 << 20, 9);
        let (ends, sums) = chunk_and_sum(&data[..], chunking, MAX_CHUNKS)
            .unwrap()
            .unwrap();
        let mut chunker = Chunker::new(&data[..], chunking);
        let (mut at, mut k) = (0, 0);
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            at += chunk.len() as u64;
            assert_eq!((ends[k], sums[k]), (at, chunk_sum(chunk)));
            k += 1;
        }
        assert_eq!(k, ends.len());
        assert_eq!(k, sums.len());
        assert_eq!(chunk_and_sum(&data[..], chunking, 10).unwrap(), None);
    }

    #[test]
    fn signatures_round_trip_and_malformed_ones_are_refused() {
        let sums = [0x0123_4567_89ab_cdef, 0, u64::MAX];
        let text = sums_hex(&sums);
        assert_eq!(text, "0123456789abcdef0000000000000000ffffffffffffffff");
        assert_eq!(parse_sums(&text, 3), Some(sums.to_vec()));
        assert_eq!(parse_sums(&text, 2), None);
        assert_eq!(parse_sums(&text, u64::MAX), None);
        assert_eq!(parse_sums(&text.to_uppercase(), 3), None);
        assert_eq!(parse_sums(&text[..47], 3), None);
    }

    #[test]
    fn a_sums_frame_holds_up_to_4096_whole_sums() {
        assert_eq!(parse_frame_sums(""), Some(vec![]));
        assert_eq!(
            parse_frame_sums("0123456789abcdefffffffffffffffff"),
            Some(vec![0x0123_4567_89ab_cdef, u64::MAX])
        );
        let full = "0".repeat(16 * MAX_FRAME_SUMS);
        assert_eq!(parse_frame_sums(&full).map(|sums| sums.len()), Some(4096));
        for bad in [
            "0".repeat(16 * (MAX_FRAME_SUMS + 1)),
            "0".repeat(15),
            "0123456789ABCDEF".into(),
            "0123456789abcdeg".into(),
        ] {
            assert_eq!(parse_frame_sums(&bad), None, "{bad:.20}");
        }
    }

    #[test]
    fn an_end_of_copies_is_one_byte_among_other_instructions() {
        let mut frame = copy_op(0, 1).to_vec();
        frame.push(OP_NO_MORE_COPIES);
        frame.extend_from_slice(&literal_header(1));
        frame.push(b'x');
        let parsed: Vec<_> = ops(&frame).collect::<Result<_, _>>().unwrap();
        let expected = [
            Op::Copy { first: 0, count: 1 },
            Op::NoMoreCopies,
            Op::Literal(b"x"),
        ];
        assert_eq!(parsed, expected);
    }

    #[test]
    fn streaming_the_sums_gives_the_chunks_cutting_all_at_once_does() {
        let chunking = Chunking::from_avg(8192).unwrap();
        let data = noise(5 << 20, 11);
        let (ends, sums) = chunk_and_sum(&data[..], chunking, MAX_CHUNKS)
            .unwrap()
            .unwrap();
        let (mut streamed_ends, mut streamed_sums) = (Vec::new(), Vec::new());
        let stop = AtomicBool::new(false);
        stream_sums(&data[..], chunking, (MAX_CHUNKS, &stop), |e, s| {
            streamed_ends.extend(e);
            streamed_sums.extend(s);
        })
        .unwrap();
        assert_eq!((streamed_ends, streamed_sums), (ends.clone(), sums));
        // Stopped before it began: the chunk at hand, and nothing after it.
        let stop = AtomicBool::new(true);
        let mut kept = Vec::new();
        stream_sums(&data[..], chunking, (MAX_CHUNKS, &stop), |e, _| {
            kept.extend(e)
        })
        .unwrap();
        assert_eq!(kept, ends[..1]);
        // At the limit, the chunks before it.
        let mut kept = Vec::new();
        let stop = AtomicBool::new(false);
        stream_sums(&data[..], chunking, (3, &stop), |e, _| kept.extend(e)).unwrap();
        assert!(kept.len() <= 3 && ends.starts_with(&kept), "{kept:?}");
    }

    #[test]
    fn instructions_round_trip_and_hostile_ones_are_refused() {
        let mut frame = literal_header(3).to_vec();
        frame.extend_from_slice(b"abc");
        frame.extend_from_slice(&copy_op(7, 2));
        let parsed: Vec<_> = ops(&frame).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            parsed,
            [Op::Literal(b"abc"), Op::Copy { first: 7, count: 2 }]
        );
        let lying = [OP_LITERAL, 0xff, 0xff, 0xff, 0xff, b'x'];
        let why = ops(&lying).next().unwrap().unwrap_err();
        assert!(
            why.contains("4294967295 bytes in a frame with 1 left"),
            "{why}"
        );
        for bad in [
            &[OP_LITERAL, 0, 0, 0, 0][..],
            &[OP_LITERAL, 0, 0][..],
            &[OP_COPY, 0, 0, 0, 1, 0, 0, 0, 0][..],
            &[OP_COPY, 0, 0, 0, 1][..],
            &[0x04][..],
        ] {
            let results: Vec<_> = ops(bad).collect();
            assert_eq!(results.len(), 1, "{bad:?}");
            assert!(results[0].is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod vectors {
    //! The vectors of docs/PROTOCOL.md, "Feature `delta`": computed here and
    //! checked against the values the document gives.
    use super::*;

    pub(crate) use super::vector_basis as basis;

    /// The new version of the vectors: 16 ASCII bytes, then the basis's first 60 000.
    pub(crate) fn new_version() -> Vec<u8> {
        let mut out = b"0123456789abcdef".to_vec();
        out.extend_from_slice(&basis()[..60000]);
        out
    }

    /// The instructions a sender that looks up every chunk sends for `new`.
    fn instructions(sums: &[u64], new: &[u8], chunking: Chunking) -> Vec<u8> {
        let mut out = Vec::new();
        let mut run: Option<(u32, u32)> = None;
        let mut chunker = Chunker::new(new, chunking);
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            match sums.iter().position(|sum| *sum == chunk_sum(chunk)) {
                Some(k) => {
                    let k = k as u32;
                    run = match run {
                        Some((first, count)) if first + count == k => Some((first, count + 1)),
                        Some((first, count)) => {
                            out.extend_from_slice(&copy_op(first, count));
                            Some((k, 1))
                        }
                        None => Some((k, 1)),
                    };
                }
                None => {
                    if let Some((first, count)) = run.take() {
                        out.extend_from_slice(&copy_op(first, count));
                    }
                    out.extend_from_slice(&literal_header(chunk.len() as u32));
                    out.extend_from_slice(chunk);
                }
            }
        }
        if let Some((first, count)) = run {
            out.extend_from_slice(&copy_op(first, count));
        }
        out
    }

    /// The document's chunks of the basis: offset, length, sum.
    const CHUNKS: [(usize, usize, u64); 6] = [
        (0, 2839, 0xffcb059b5eb1f7e3),
        (2839, 15381, 0x77b5b296134d41a6),
        (18220, 15482, 0x56479bfc68d4feb3),
        (33702, 9292, 0x4bdab579b1c46d25),
        (42994, 9769, 0x018171363a3a6464),
        (52763, 12773, 0xf97d6e863f6f0762),
    ];
    const PLAN: &str = r#"{"type":"plan","entries":[{"action":"send","offset":0,"delta":{"avg":8192,"count":6,"sums":"ffcb059b5eb1f7e377b5b296134d41a656479bfc68d4feb34bdab579b1c46d25018171363a3a6464f97d6e863f6f0762"}}]}"#;

    #[test]
    fn the_documents_vectors_hold() {
        let chunking = Chunking::from_avg(8192).unwrap();
        let basis = basis();
        assert_eq!(
            crate::hex::hex(&basis[..8]),
            "432669ec8998ccdf",
            "the first bytes of the basis"
        );
        let mut chunker = Chunker::new(&basis[..], chunking);
        let mut found = Vec::new();
        let mut offset = 0;
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            found.push((offset, chunk.len(), chunk_sum(chunk)));
            offset += chunk.len();
        }
        assert_eq!(found, CHUNKS);
        let sums: Vec<u64> = CHUNKS.iter().map(|chunk| chunk.2).collect();
        assert!(PLAN.contains(&sums_hex(&sums)));
        assert_eq!(PLAN.len(), 193);
        let decoded = crate::proto::message::decode(PLAN.as_bytes()).unwrap();
        let encoded = crate::proto::message::encode(&decoded);
        assert_eq!(&encoded[4..], PLAN.as_bytes());

        let new = new_version();
        let stream = instructions(&sums, &new, chunking);
        let shape: Vec<String> = ops(&stream)
            .map(|op| match op.unwrap() {
                Op::Literal(bytes) => format!("literal {}", bytes.len()),
                Op::Copy { first, count } => format!("copy {first} {count}"),
                Op::NoMoreCopies => "no more copies".into(),
            })
            .collect();
        assert_eq!(shape, ["literal 2855", "copy 1 4", "literal 7237"]);
        assert_eq!(stream.len(), 5 + 2855 + 9 + 5 + 7237);
        assert_eq!(
            blake3::hash(&stream).to_hex().as_str(),
            "be179a8ac69db94491e18116b4adeac88010567f20a80e1f5ab50b24b8462f8d"
        );
        assert_eq!(
            crate::hex::hex(&<md5::Md5 as md5::Digest>::digest(&new)),
            "f28ddab0074f58d5e2c3247c4cf28fd8"
        );
        assert_eq!(
            blake3::hash(&new).to_hex().as_str(),
            "b176fa9deebbfe9f04b4697f2e8b2378832a981914206c9c77a6119e524aeab3"
        );

        let key = crate::proto::handshake::tests::vector_session_key('A');
        let md5 = crate::proto::hash::HashKind::Md5;
        let t = crate::proto::negotiated::Transfer::for_tests(*key.bytes(), 0, md5);
        let mut mac = t.plan_mac();
        mac.frame(PLAN.as_bytes());
        assert_eq!(
            mac.finish_hex(),
            "240f269f5811f9623c094cd44d5d760688eed6238bd478229fa5d5a79bbf5a8c"
        );
    }

    /// Section 18.6's vectors: the same basis streamed (feature `delta_stream`).
    const STREAMED_PLAN: &str = r#"{"type":"plan","entries":[{"action":"send","offset":0,"delta":{"avg":8192,"stream":true}}]}"#;

    #[test]
    fn the_streamed_vectors_hold() {
        let key = crate::proto::handshake::tests::vector_session_key('A');
        let md5 = crate::proto::hash::HashKind::Md5;
        let t = crate::proto::negotiated::Transfer::for_tests(*key.bytes(), 0, md5);
        let mut mac = t.plan_mac();
        mac.frame(STREAMED_PLAN.as_bytes());
        assert_eq!(
            (STREAMED_PLAN.len(), mac.finish_hex().as_str()),
            (
                91,
                "177b098fac99a5d74d5f3f6ad392ec56c7b9be610c71a84135d4f8f93120aa6e"
            )
        );
        let sums: Vec<u64> = CHUNKS.iter().map(|chunk| chunk.2).collect();
        let mut sums_mac = t.sums_mac(0);
        sums_mac.sums(&sums);
        let mac = sums_mac.finish_hex();
        let first = crate::proto::message::Message::Sums {
            index: 0,
            sums: sums_hex(&sums[..4]),
            end: false,
            mac: None,
        };
        let last = crate::proto::message::Message::Sums {
            index: 0,
            sums: sums_hex(&sums[4..]),
            end: true,
            mac: Some(mac.clone()),
        };
        let first = crate::proto::message::encode(&first);
        let last = crate::proto::message::encode(&last);
        assert_eq!(
            (
                crate::hex::hex(&first[..4]),
                std::str::from_utf8(&first[4..]).unwrap()
            ),
            (
                "00000063".to_string(),
                r#"{"type":"sums","index":0,"sums":"ffcb059b5eb1f7e377b5b296134d41a656479bfc68d4feb34bdab579b1c46d25"}"#
            )
        );
        assert_eq!(
            (
                crate::hex::hex(&last[..4]),
                std::str::from_utf8(&last[4..]).unwrap()
            ),
            (
                "00000097".to_string(),
                r#"{"type":"sums","index":0,"sums":"018171363a3a6464f97d6e863f6f0762","end":true,"mac":"6c9689c153c56cc65849455bc448fe2f7535877861f251412fd79457e241299e"}"#
            )
        );
        assert_eq!(
            mac,
            "6c9689c153c56cc65849455bc448fe2f7535877861f251412fd79457e241299e"
        );
    }
}
