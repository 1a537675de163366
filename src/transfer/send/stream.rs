//! The sender's reading thread: every accepted file in turn, read into pool buffers
//! and hashed in the same pass, one chunk ahead of the socket. A file that cannot be
//! opened is given up (the socket thread sends its `error`); one that fails or
//! changes size while read ends with a `done` the receiver must refuse. A file the
//! receiver holds an older version of goes as a delta (`delta.rs`).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::delta;
use super::piece::{BUFFER, CHUNK, Halt, Packed, Piece, ToSend, Wanted, slot};
use crate::fs::input::{Input, Outbox};
use crate::pool::Pool;
use crate::proto::hash::{HashKind, Hasher};
use crate::proto::wire::DATA_HEADROOM;

/// How often a reader waiting on a silent stream looks up to see whether the
/// session has ended meanwhile.
const LOOK_UP: Duration = Duration::from_millis(200);

/// Reads every entry of `to_send` into `pieces`; stops early when the socket thread
/// hangs up or `stop` is set (the session ended), and stops reading a file once
/// `refused` names it (see [`Halt`]).
pub(crate) fn read_files(
    to_send: &[ToSend],
    outbox: &dyn Outbox,
    hash: HashKind,
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    (stop, refused): (&AtomicBool, &AtomicU64),
) {
    let mut packer = Packer::default();
    let mut out = Out {
        pool,
        pieces,
        stop,
        refused,
        packer: &mut packer,
    };
    for item in to_send {
        if read_file(item, outbox, hash, &mut out).is_none() {
            return;
        }
    }
    let _ = out.flush();
}

/// Where the reading thread's work goes: buffers from `pool`, pieces to the socket
/// thread (whole files packed first), until `stop`.
struct Out<'a> {
    pool: &'a mut Pool,
    pieces: &'a mpsc::Sender<Piece>,
    stop: &'a AtomicBool,
    /// One more than the index of the last entry the receiver refused while its
    /// data was going out (0: none), set by the answer thread.
    refused: &'a AtomicU64,
    packer: &'a mut Packer,
}

impl<'a> Out<'a> {
    /// Hands on the packed files, if any, before anything else goes.
    fn flush(&mut self) -> Option<()> {
        self.packer.flush(self.pool, self.pieces)
    }

    /// Sends a piece after the packed files before it; `None` once the socket
    /// thread is gone.
    fn send(&mut self, piece: Piece) -> Option<()> {
        self.flush()?;
        self.pieces.send(piece).ok()
    }

    /// When reading entry `index` stops early.
    fn halt(&self, index: u64) -> Halt<'a> {
        Halt::of(self.stop, self.refused, index)
    }

    /// Reads entry `index`'s data after its [`Piece::Start`] (from `start`, or as
    /// a delta against the basis `delta` wants) and hands it on, then its
    /// [`Piece::End`]; `None` when the session is over.
    fn send_data(
        &mut self,
        input: &mut dyn Input,
        (index, expected, start): (u64, Option<u64>, u64),
        delta: Option<&Wanted>,
        mut hasher: Hasher,
        shown: impl Fn() -> String,
    ) -> Option<()> {
        let halt = self.halt(index);
        let (pool, pieces, stop) = (&mut *self.pool, self.pieces, self.stop);
        let read = match delta {
            Some(wanted) => {
                let against = (wanted, expected);
                delta::send(input, against, &mut hasher, pool, pieces, halt)?
            }
            None => send_chunks(input, expected, start, &mut hasher, pool, pieces, halt)?,
        };
        let end = match halt.refused() {
            // What went out is the receiver's to drop: a `done` of it ends the entry.
            true => Piece::End {
                index,
                size: read.0,
                digest: hasher.finish(),
                local_failure: None,
            },
            false => end_piece(index, input, expected, read, hasher, stop, shown),
        };
        pieces.send(end).ok()
    }
}

/// Reads one file into `out`; `None` when the session is over.
fn read_file(item: &ToSend, outbox: &dyn Outbox, hash: HashKind, out: &mut Out<'_>) -> Option<()> {
    let (index, position) = (item.index, item.index as usize);
    let entry = &outbox.entries()[position];
    if let (true, Some(size)) = (entry.is_sparse(), entry.size) {
        out.flush()?;
        let halt = out.halt(item.index);
        return read_runs(item, size, outbox, hash, out.pool, out.pieces, halt);
    }
    let expected = entry.size;
    let mut hasher = hash.hasher();
    let (mut input, start) = match open_at_resume_point(outbox, item, &mut hasher) {
        Ok(opened) => opened,
        Err(err) => return out.send(Piece::gave_up(index, &err)),
    };
    let delta = item.delta.as_deref().filter(|_| start == 0);
    if let (None, Some(size)) = (delta, expected)
        && size - start.min(size) <= CHUNK as u64
    {
        let shown = || outbox.shown(position);
        let at = (index, start, size, item.replaces);
        return out.pack(&mut *input, at, hasher, shown);
    }
    let start_piece = Piece::Start {
        index,
        offset: start,
        resumed: start > 0,
        delta: delta.is_some(),
        replaces: item.replaces,
    };
    out.send(start_piece)?;
    let shown = || outbox.shown(position);
    out.send_data(&mut *input, (index, expected, start), delta, hasher, shown)
}

/// The [`Piece::End`] of entry `index`, read to `sent` or cut short by
/// `read_error`, with the size its `done` says (see [`final_size`]).
fn end_piece(
    index: u64,
    input: &mut dyn Input,
    expected: Option<u64>,
    (sent, read_error): (u64, Option<io::Error>),
    hasher: Hasher,
    stop: &AtomicBool,
    shown: impl Fn() -> String,
) -> Piece {
    let (size, local_failure) = match read_error {
        Some(err) => (sent, Some(format!("cannot read {}: {err}", shown()))),
        None => final_size(input, expected, sent, stop, shown),
    };
    Piece::End {
        index,
        size,
        digest: hasher.finish(),
        local_failure,
    }
}

/// Reads a sparse entry of `size` bytes as runs of data, skipping its holes
/// (`SEEK_DATA`, `SEEK_HOLE`): a hole is neither read nor hashed, so a 2 GiB hole
/// costs a few system calls. Its hash is section 16.4's: each run's offset and
/// length before its bytes, then the size. Never resumed: it starts at its first
/// run. `None` when the session is over.
fn read_runs(
    item: &ToSend,
    size: u64,
    outbox: &dyn Outbox,
    hash: HashKind,
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    halt: Halt<'_>,
) -> Option<()> {
    let index = item.index;
    let position = index as usize;
    let mut input = match outbox.open(position) {
        Ok(input) => input,
        Err(err) => return pieces.send(Piece::gave_up(index, &err)).ok(),
    };
    let mut hasher = hash.hasher();
    let read_error = send_runs(item, size, &mut *input, &mut hasher, pool, pieces, halt)?;
    hasher.runs_end(size);
    let local_failure = match read_error {
        // Refused: what went out is the receiver's to drop.
        _ if halt.refused() => None,
        Some(err) => Some(format!("cannot read {}: {err}", outbox.shown(position))),
        None if input.len_now().is_some_and(|now| now != size) => Some(format!(
            "{} changed size while it was being sent; send it again",
            outbox.shown(position)
        )),
        None => None,
    };
    pieces
        .send(Piece::End {
            index,
            // A size the receiver must refuse when this side failed.
            size: if local_failure.is_some() {
                size.wrapping_add(1)
            } else {
                size
            },
            digest: hasher.finish(),
            local_failure,
        })
        .ok()
}

/// Sends `item`'s runs, each header and its data, hashing as section 16.4 says;
/// returns the read error that cut them short, if one did; `None` when the session
/// is over. A refusal (`halt`) ends them where they are.
fn send_runs(
    item: &ToSend,
    size: u64,
    input: &mut dyn Input,
    hasher: &mut Hasher,
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    halt: Halt<'_>,
) -> Option<Option<io::Error>> {
    let index = item.index;
    let mut at = 0;
    let mut first = true;
    loop {
        let run = match input.next_run(at, size) {
            Ok(Some(run)) => run,
            // Every sparse entry has a run: an all-hole file, one empty run at 0.
            Ok(None) if first => 0..0,
            Ok(None) => return Some(None),
            Err(err) => return Some(Some(err)),
        };
        let offset = run.start;
        let header = match first {
            true => Piece::Start {
                index,
                offset,
                resumed: false,
                delta: false,
                replaces: item.replaces,
            },
            false => Piece::Run { index, offset },
        };
        pieces.send(header).ok()?;
        first = false;
        hasher.run_header(offset, run.end - offset);
        let (end, read_error) =
            send_chunks(input, Some(run.end), offset, hasher, pool, pieces, halt)?;
        // A read error; or it shrank while read (the hash said a longer run), or
        // was refused; or it was all hole.
        if read_error.is_some() || end < run.end || run.is_empty() {
            return Some(read_error);
        }
        at = end;
    }
}

/// Sends a file's bytes from `sent` on, one chunk at a time, hashing each; never
/// past the offered size (`expected`), nor once the receiver refused it (`halt`).
/// Returns how far it read and the read error that cut it short, if one did;
/// `None` when the session is over.
fn send_chunks(
    input: &mut dyn Input,
    expected: Option<u64>,
    mut sent: u64,
    hasher: &mut Hasher,
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
    halt: Halt<'_>,
) -> Option<(u64, Option<io::Error>)> {
    loop {
        if halt.refused() {
            return Some((sent, None));
        }
        let mut buffer = pool.take()?;
        debug_assert_eq!(buffer.len(), BUFFER);
        let room = &mut buffer[DATA_HEADROOM..DATA_HEADROOM + CHUNK];
        let limit = match expected {
            // Never send past the offered size; a file that grew is caught later.
            Some(size) => room
                .len()
                .min(usize::try_from(size - sent).unwrap_or(usize::MAX)),
            None => room.len(),
        };
        let n = match fill(input, &mut room[..limit], halt) {
            Ok(Some(0)) => {
                pool.put_back(buffer);
                return Some((sent, None));
            }
            Ok(Some(n)) => n,
            Ok(None) => return None,
            Err(err) => {
                pool.put_back(buffer);
                return Some((sent, Some(err)));
            }
        };
        hasher.update(&room[..n]);
        sent += n as u64;
        let covered = n as u64;
        pieces
            .send(Piece::Chunk {
                buffer,
                len: n,
                covered,
            })
            .ok()?;
    }
}

/// Files that each fit one chunk, read back to back into one buffer until it is
/// full or holds [`PACK_FILES`]; then handed on as one [`Piece::Packed`].
#[derive(Default)]
struct Packer {
    buffer: Option<Vec<u8>>,
    /// Bytes of the buffer taken by the slots so far.
    used: usize,
    files: Vec<Packed>,
}

/// Files packed into one buffer, at most: the socket thread gets work every few
/// dozen files even when they are tiny.
const PACK_FILES: usize = 64;

impl Packer {
    /// Hands on what is packed; a buffer taken for nothing goes back to the pool.
    fn flush(&mut self, pool: &mut Pool, pieces: &mpsc::Sender<Piece>) -> Option<()> {
        self.used = 0;
        let Some(buffer) = self.buffer.take() else {
            return Some(());
        };
        if self.files.is_empty() {
            pool.put_back(buffer);
            return Some(());
        }
        let files = std::mem::take(&mut self.files);
        pieces.send(Piece::Packed { buffer, files }).ok()
    }
}

impl Out<'_> {
    /// Reads the rest of a file that fits one chunk (`size` bytes, from `start`;
    /// `replaces` a file on the receiver) into the packed buffer, hashing it, with
    /// the size its `done` says (see [`final_size`]); `None` when the session is over.
    fn pack(
        &mut self,
        input: &mut dyn Input,
        (index, start, size, replaces): (u64, u64, u64, bool),
        mut hasher: Hasher,
        shown: impl Fn() -> String,
    ) -> Option<()> {
        let want = usize::try_from(size.saturating_sub(start)).expect("at most one chunk");
        if self.packer.used + slot(want) > BUFFER {
            self.flush()?;
        }
        if self.packer.buffer.is_none() {
            self.packer.buffer = Some(self.pool.take()?);
        }
        let (at, stop) = (self.packer.used, self.stop);
        let buffer = self.packer.buffer.as_mut().expect("just taken");
        let room = &mut buffer[at + DATA_HEADROOM..at + DATA_HEADROOM + want];
        let (n, error) = match fill(input, room, Halt::only(stop)) {
            Ok(Some(n)) => (n, None),
            Ok(None) => return None,
            Err(err) => (0, Some(err)),
        };
        hasher.update(&room[..n]);
        let sent = start + n as u64;
        let (size, local_failure) = match error {
            Some(err) => (sent, Some(format!("cannot read {}: {err}", shown()))),
            None => final_size(input, Some(size), sent, stop, shown),
        };
        self.packer.used += slot(n);
        self.packer.files.push(Packed {
            index,
            offset: start,
            replaces,
            at,
            len: n,
            size,
            digest: hasher.finish(),
            local_failure,
        });
        if self.packer.files.len() >= PACK_FILES {
            self.flush()?;
        }
        Some(())
    }
}

/// The size `done` says for a file read in full (`sent` bytes), and why it no
/// longer matches the offered one (`expected`): a file that grew is said one byte
/// larger, a size the receiver must refuse; one that shrank, as it is.
fn final_size(
    input: &mut dyn Input,
    expected: Option<u64>,
    sent: u64,
    stop: &AtomicBool,
    shown: impl Fn() -> String,
) -> (u64, Option<String>) {
    match expected {
        Some(size) if size == sent => {
            if fill(input, &mut [0; 1], Halt::only(stop)).is_ok_and(|n| n > Some(0)) {
                let why = format!("{} grew while it was being sent; send it again", shown());
                (sent + 1, Some(why))
            } else {
                (sent, None)
            }
        }
        Some(_) => (
            sent,
            Some(format!(
                "{} shrank while it was being sent; send it again",
                shown()
            )),
        ),
        None => (sent, None),
    }
}

/// Opens a source where its data should start: after the receiver's prefix if that
/// matches ours (the prefix then already in `hasher`), else at 0.
pub(super) fn open_at_resume_point(
    outbox: &dyn Outbox,
    item: &ToSend,
    hasher: &mut Hasher,
) -> anyhow::Result<(Box<dyn Input>, u64)> {
    let position = item.index as usize;
    let mut input = outbox.open(position)?;
    let Some(prefix_hash) = item.prefix_hash.as_deref().filter(|_| item.offset > 0) else {
        return Ok((input, 0));
    };
    let copied = hasher.update_from(&mut input, item.offset);
    if copied.is_ok_and(|n| n == item.offset) && hasher.peek().to_hex() == prefix_hash {
        return Ok((input, item.offset));
    }
    // The receiver holds different bytes: start over.
    *hasher = hasher.kind().hasher();
    Ok((outbox.open(position)?, 0))
}

/// Reads into `buf`: until it is full or the input ends for a file, so frames stay
/// full-sized; for a stream, what is there once bytes come, so that a producer that
/// pauses (for hours, as with `nc`) does not hold back what it already wrote.
/// `Ok(None)`: the session ended while the stream was silent; `Ok(Some(0))` for
/// one the receiver refused meanwhile, as at its end (the caller asks `halt` which).
fn fill(input: &mut dyn Input, buf: &mut [u8], halt: Halt<'_>) -> io::Result<Option<usize>> {
    while !input.ready(LOOK_UP) {
        if halt.stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if halt.refused() {
            return Ok(Some(0));
        }
    }
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
        if !input.ready(Duration::ZERO) {
            break;
        }
    }
    Ok(Some(filled))
}
