//! The receiver's side of a delta (feature `delta`), on the socket thread: reads an
//! entry's instructions, builds the new version from literals and the basis's chunks
//! into pool buffers, hashes it as it goes and hands it to the disk thread, which
//! writes it into a fresh temporary exactly as it writes a whole file. The result is
//! then verified like any other file (`data.rs`).
//!
//! A hostile instruction (a copy past the basis, a literal longer than its frame,
//! more bytes than the offered size) ends the session; a basis that changed makes
//! the entry fail `busy` and leaves the old file as it is. A streamed basis (feature
//! `delta_stream`) may be copied from only as far as its sums went out, never after
//! the sender's end of copies (`0x03`, which also stops its cutting), and is opened
//! only at its first copy.
//!
//! Where the offered size and time are the basis's, while the instructions copy the basis
//! from its first chunk on, in order, and nothing else, the bytes are hashed but
//! not written: a result that is the whole basis ends up [`Built::identical`], and
//! the disk thread keeps the old file (an `--ignore-times` run over a file that did
//! not change). The first instruction that departs from that (or a result that is
//! only a prefix of the basis) writes what was held back, read from the basis
//! again and hashed again from the start: the hash then covers the bytes written,
//! so a basis changed between the two reads fails the check instead of landing
//! unverified (a write through a shared mapping can change bytes and no time).

use std::io::Read;
use std::ops::Range;
use std::sync::mpsc;

use anyhow::Result;

use super::disk::{Job, disk_gone};
use super::plan::Planned;
use super::shared::{Destination, Shared};
use crate::error::{Kind, fail};
use crate::fs::Refusal;
use crate::fs::path::check_path_bytes;
use crate::fs::sink::{Basis, BasisReader};
use crate::pool::Pool;
use crate::proto::delta::{LITERAL_HEADER, OP_LITERAL, Op, ops};
use crate::proto::hash::{Digest, Hasher};
use crate::proto::wire::{Data, FrameReader};
use crate::transfer::Tally;

/// Bytes of the result handed to the disk thread at a time.
const PIECE: usize = 1 << 20;

/// What building a result came to: its size, its hash, why it cannot be kept even
/// if it verifies (the basis changed), for a delta the bytes of instructions that
/// moved (what the sender counts too; copied chunks did not move), and whether the
/// result is the basis itself, every chunk copied in order and nothing else
/// (nothing of it was written: the old file stays, once it verifies).
pub(super) struct Built {
    pub(super) size: u64,
    pub(super) digest: Digest,
    pub(super) failure: Option<Refusal>,
    pub(super) moved: Option<u64>,
    pub(super) identical: bool,
}

/// Reads entry `index`'s instructions up to the empty frame and builds the result.
pub(super) fn build<R: Read>(
    reader: &mut FrameReader<R>,
    (index, item): (usize, &Planned),
    hasher: Hasher,
    pool: &mut Pool,
    jobs: &mpsc::Sender<Job>,
    (shared, tally): (&Shared<'_>, &Tally),
) -> Result<Built> {
    let basis = item
        .basis
        .as_deref()
        .expect("the caller checked that the plan offered a basis");
    // A streamed basis is opened at the first copy: one without copies is not
    // read at all, and may change meanwhile.
    let source = (!basis.streamed()).then(|| open_basis(item, basis, shared));
    let mut result = Building {
        index,
        limit: item.entry.size,
        basis,
        source,
        opening: (item, shared),
        no_more_copies: false,
        held_back: likely_the_basis(item, basis).then_some(0),
        piece: None,
        size: 0,
        moved: 0,
        hasher,
        pool,
        jobs,
        tally,
    };
    loop {
        let mut frame = result.pool.take().ok_or_else(disk_gone)?;
        let range = match reader.read_data(&mut frame)? {
            Data::End => {
                result.pool.put_back(frame);
                break;
            }
            Data::Bytes(range) => range,
        };
        result.moved += range.len() as u64;
        if let Some(bytes) = lone_literal(&frame, range.clone()) {
            // Most frames after an end of copies: handed on as they came.
            result.write_held_back()?;
            result.pass_on(frame, bytes)?;
            continue;
        }
        let applied = ops(&frame[range]).try_for_each(|op| {
            let op = op.map_err(|why| fail(Kind::Protocol, format!("entry {index}: {why}")))?;
            result.apply(op)
        });
        result.pool.put_back(frame);
        applied?;
    }
    result.finish()
}

/// Whether the result is likely the basis itself, so worth holding back: offered
/// with its size and time (only `-I` sends such a file). An edited file of the same
/// size is written as it is read, once, not read again at its first difference.
fn likely_the_basis(item: &Planned, basis: &Basis) -> bool {
    basis.may_be(item.entry.size, item.entry.mtime)
}

/// Where the literal bytes are when a frame (its content at `range`) is one
/// literal and nothing else.
fn lone_literal(frame: &[u8], range: Range<usize>) -> Option<Range<usize>> {
    let content = &frame[range.clone()];
    let header = content.get(..LITERAL_HEADER)?;
    let len = u32::from_be_bytes(header[1..].try_into().expect("four bytes")) as usize;
    let whole = header[0] == OP_LITERAL && len > 0 && len == content.len() - LITERAL_HEADER;
    whole.then(|| range.start + LITERAL_HEADER..range.end)
}

/// Opens the basis again, where the result may be built from it.
fn open_basis(item: &Planned, basis: &Basis, shared: &Shared<'_>) -> Result<BasisReader, Refusal> {
    let Destination::Dir(target) = shared.destination else {
        unreachable!("a basis is offered only for a directory");
    };
    let path = item.entry.shown_path();
    let bytes = item.entry.path_bytes();
    let components =
        check_path_bytes(&bytes, shared.settings.names).expect("planned paths passed the policy");
    target.resolver().open_basis(&path, &components, basis)
}

/// A result being built.
struct Building<'a, 'p> {
    index: usize,
    limit: Option<u64>,
    basis: &'a Basis,
    /// The basis to copy from, or why the result cannot be kept (then instructions
    /// are still read and checked, but nothing is built); `None` until a streamed
    /// basis is first copied from.
    source: Option<Result<BasisReader, Refusal>>,
    /// What opening the basis takes.
    opening: (&'a Planned<'a>, &'a Shared<'a>),
    /// The sender said no copy follows (feature `delta_stream`).
    no_more_copies: bool,
    /// While the result is the basis's first bytes, copied chunk by chunk from the
    /// first: the next chunk that keeps it so. Those bytes are hashed, not written
    /// (see [`Building::write_held_back`]); `None` once anything else came.
    held_back: Option<u32>,
    /// The pool buffer being filled, and how far.
    piece: Option<(Vec<u8>, usize)>,
    size: u64,
    /// Bytes of instructions received.
    moved: u64,
    hasher: Hasher,
    pool: &'p mut Pool,
    jobs: &'a mpsc::Sender<Job>,
    tally: &'a Tally,
}

impl Building<'_, '_> {
    fn apply(&mut self, op: Op<'_>) -> Result<()> {
        match (&op, self.held_back) {
            (Op::Copy { first, count }, Some(next)) if *first == next => {
                self.held_back = Some(next.saturating_add(*count));
            }
            (Op::NoMoreCopies, _) => {}
            _ => self.write_held_back()?,
        }
        match op {
            Op::Literal(bytes) => {
                self.grow(bytes.len() as u64)?;
                let mut rest = bytes;
                while !rest.is_empty() {
                    let room = self.room()?;
                    let n = room.len().min(rest.len());
                    room[..n].copy_from_slice(&rest[..n]);
                    self.filled(n)?;
                    rest = &rest[n..];
                }
            }
            Op::Copy { first, count } => {
                let (start, len) = self.range(first, count)?;
                self.grow(len)?;
                self.copy(start, len)?;
            }
            Op::NoMoreCopies => {
                if !self.basis.streamed() || self.no_more_copies {
                    let why = match self.no_more_copies {
                        true => "a second end of copies (0x03)",
                        false => "an end of copies (0x03) against a basis listed in the plan",
                    };
                    return Err(fail(Kind::Protocol, format!("entry {}: {why}", self.index)));
                }
                self.no_more_copies = true;
                self.basis.stop_cutting();
            }
        }
        Ok(())
    }

    /// The bytes of the basis chunks a copy names: chunks of the basis (for a
    /// streamed one, whose sums went out already), and never after the sender
    /// said no copy follows.
    fn range(&self, first: u32, count: u32) -> Result<(u64, u64)> {
        let index = self.index;
        if self.no_more_copies {
            return Err(fail(
                Kind::Protocol,
                format!("entry {index}: a copy after the end of copies (0x03)"),
            ));
        }
        self.basis.range(first, count).ok_or_else(|| {
            let chunks = self.basis.chunks();
            let of = match self.basis.streamed() {
                true => format!("when {chunks} sums of its basis were sent"),
                false => format!("of a basis of {chunks} chunks"),
            };
            fail(
                Kind::Protocol,
                format!("entry {index}: a copy of chunks {first}..+{count} {of}"),
            )
        })
    }

    /// A frame that is one literal at `bytes`: the piece being filled goes first,
    /// then the frame itself, hashed, to the disk thread (no copy).
    fn pass_on(&mut self, frame: Vec<u8>, bytes: Range<usize>) -> Result<()> {
        self.grow(bytes.len() as u64)?;
        self.hand_over()?;
        if matches!(self.source, Some(Err(_))) {
            self.pool.put_back(frame);
            return Ok(());
        }
        self.hasher.update(&frame[bytes.clone()]);
        self.tally.reporter().advance(bytes.len() as u64);
        let job = Job::Write {
            buffer: frame,
            range: bytes,
        };
        self.jobs.send(job).map_err(|_| disk_gone())
    }

    /// Counts `n` more bytes of result; past the offered size breaks the protocol.
    fn grow(&mut self, n: u64) -> Result<()> {
        self.size += n;
        if self.limit.is_some_and(|limit| self.size > limit) {
            return Err(fail(
                Kind::Protocol,
                format!(
                    "instructions for entry {} make more than its offered size",
                    self.index
                ),
            ));
        }
        Ok(())
    }

    /// Copies `len` bytes of the basis from `start` into the result.
    fn copy(&mut self, mut start: u64, len: u64) -> Result<()> {
        let end = start + len;
        if self.source.is_none() {
            let (item, shared) = self.opening;
            self.source = Some(open_basis(item, self.basis, shared));
        }
        while start < end {
            self.room()?;
            let (Some(Ok(source)), Some((buffer, used))) = (&self.source, &mut self.piece) else {
                return Ok(()); // failed already: nothing more is built
            };
            let room = &mut buffer[*used..PIECE];
            let n = room
                .len()
                .min(usize::try_from(end - start).unwrap_or(usize::MAX));
            if let Err(refusal) = source.read_at(&mut room[..n], start) {
                self.source = Some(Err(refusal));
                return Ok(());
            }
            self.filled(n)?;
            start += n as u64;
        }
        Ok(())
    }

    /// Room left in the piece being filled (a fresh one if none is).
    fn room(&mut self) -> Result<&mut [u8]> {
        if self.piece.is_none() {
            let mut buffer = self.pool.take().ok_or_else(disk_gone)?;
            if buffer.len() < PIECE {
                buffer.resize(PIECE, 0);
            }
            self.piece = Some((buffer, 0));
        }
        let (buffer, used) = self.piece.as_mut().expect("just made");
        Ok(&mut buffer[*used..PIECE])
    }

    /// `n` bytes of the piece were filled; a full piece goes to the disk thread.
    fn filled(&mut self, n: usize) -> Result<()> {
        let (_, used) = self.piece.as_mut().expect("room() made one");
        *used += n;
        if *used == PIECE {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hashes the piece and hands it to the disk thread (unless the result failed;
    /// while it is the basis's first bytes, it is only hashed).
    fn hand_over(&mut self) -> Result<()> {
        let Some((buffer, used)) = self.piece.take() else {
            return Ok(());
        };
        if matches!(self.source, Some(Err(_))) || used == 0 {
            self.pool.put_back(buffer);
            return Ok(());
        }
        self.hasher.update(&buffer[..used]);
        self.tally.reporter().advance(used as u64);
        if self.held_back.is_some() {
            self.pool.put_back(buffer);
            return Ok(());
        }
        self.jobs
            .send(Job::Write {
                buffer,
                range: 0..used,
            })
            .map_err(|_| disk_gone())
    }

    /// The result departs from the basis's first bytes (or ends before the
    /// basis does): what was held back of it is read from the basis again,
    /// hashed once more from the start (the bytes written are what the hash must
    /// cover, not the ones read before) and handed to the disk thread.
    fn write_held_back(&mut self) -> Result<()> {
        if self.held_back.is_none() {
            return Ok(());
        }
        self.hand_over()?;
        self.held_back = None;
        self.hasher = self.hasher.kind().hasher();
        let mut start = 0;
        while start < self.size {
            let Some(Ok(source)) = &self.source else {
                return Ok(()); // nothing copied, or failed already
            };
            let mut buffer = self.pool.take().ok_or_else(disk_gone)?;
            let len = (self.size - start).min(PIECE as u64) as usize;
            if buffer.len() < len {
                buffer.resize(len, 0);
            }
            if let Err(refusal) = source.read_at(&mut buffer[..len], start) {
                self.pool.put_back(buffer);
                self.source = Some(Err(refusal));
                return Ok(());
            }
            self.hasher.update(&buffer[..len]);
            let job = Job::Write {
                buffer,
                range: 0..len,
            };
            self.jobs.send(job).map_err(|_| disk_gone())?;
            start += len as u64;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Built> {
        // Only the whole basis, copied in order, is the old file itself.
        if self.size != self.basis.size() {
            self.write_held_back()?;
        }
        self.hand_over()?;
        let failure = match &self.source {
            Some(Ok(source)) => source.check_unchanged().err(),
            Some(Err(refusal)) => Some(refusal.clone()),
            None => None,
        };
        let identical = self.held_back.is_some() && matches!(self.source, Some(Ok(_)));
        Ok(Built {
            size: self.size,
            digest: self.hasher.finish(),
            failure,
            moved: Some(self.moved),
            identical,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::delta::{copy_op, literal_header};

    #[test]
    fn only_a_frame_that_is_one_literal_is_handed_on_as_it_came() {
        let mut frame = vec![0; 3];
        frame.extend_from_slice(&literal_header(4));
        frame.extend_from_slice(b"abcd");
        assert_eq!(lone_literal(&frame, 3..frame.len()), Some(8..12));
        // A literal and something after it, a shorter claim, a copy, a stub.
        let mut more = frame.clone();
        more.extend_from_slice(&copy_op(0, 1));
        assert_eq!(lone_literal(&more, 3..more.len()), None);
        assert_eq!(lone_literal(&frame, 3..frame.len() - 1), None);
        let copy = copy_op(0, 1);
        assert_eq!(lone_literal(&copy, 0..copy.len()), None);
        assert_eq!(lone_literal(&[1, 0, 0], 0..3), None);
        assert_eq!(lone_literal(&literal_header(0), 0..5), None);
    }
}
