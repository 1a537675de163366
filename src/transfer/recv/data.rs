//! The receiver's socket thread: for each accepted file, in the plan's order, reads
//! its `data` header (or the sender's `error` giving it up), its data frames (hashing
//! them as they arrive; for a delta, `delta.rs` builds the bytes from instructions)
//! and its `done`, checks size, hash and MAC, and hands bytes and verdict to the disk
//! thread; then the sender's `end`.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use anyhow::Result;

use super::delta::{self, Built};
use super::jobs::{Arrived, Job, SmallFile, disk_gone};
use super::plan::Planned;
use super::shared::Shared;
use super::small::Batch;
use crate::error::{Kind, fail, kind_of, peer_error};
use crate::escape::{escape, escape_said};
use crate::fs::Refusal;
use crate::pool::Pool;
use crate::proto::hash::{Digest, Hasher};
use crate::proto::message::{ErrorCode, Message};
use crate::proto::negotiated::FileFacts;
use crate::proto::wire::{Data, FrameReader};
use crate::transfer::Tally;
use crate::ui::report::FileOutcome;

/// Reads every accepted file's data, then `end`. Anything out of the plan's order,
/// or beyond a file's offered size, breaks the protocol and ends the session.
/// Small files are read whole and handed on in batches (`small.rs`); whatever of a
/// batch arrived complete is handed on even when the session fails.
pub(crate) fn read_entries<R: Read>(
    reader: &mut FrameReader<R>,
    planned: &[Planned],
    (pool, batch): (&mut Pool, &mut Batch),
    jobs: &mpsc::Sender<Job>,
    shared: &Shared<'_>,
    tally: &Tally,
    unanswered: &AtomicBool,
) -> Result<()> {
    let read = read_all(
        reader,
        planned,
        (pool, batch),
        (jobs, unanswered),
        shared,
        tally,
    );
    let flushed = batch.flush(jobs);
    read.and(flushed)
}

/// Whether reading stops before the next entry: the disk thread could not answer
/// (it says why: `Ok`), or a stopped listener cut the session (what arrived is
/// committed and answered; nothing more is read).
fn read_no_more(unanswered: &AtomicBool) -> Option<Result<()>> {
    if unanswered.load(Ordering::SeqCst) {
        return Some(Ok(()));
    }
    crate::net::listen::cutting().then(|| Err(fail(Kind::Network, "the session was cut")))
}

/// [`read_entries`] but for the last batch.
fn read_all<R: Read>(
    reader: &mut FrameReader<R>,
    planned: &[Planned],
    (pool, batch): (&mut Pool, &mut Batch),
    (jobs, unanswered): (&mpsc::Sender<Job>, &AtomicBool),
    shared: &Shared<'_>,
    tally: &Tally,
) -> Result<()> {
    let mut expected = (0..planned.len()).filter(|&i| planned[i].expects_data);
    loop {
        if let Some(end) = read_no_more(unanswered) {
            return end;
        }
        if reader.buffered() == 0 {
            // The next frame waits on the sender: the disk thread need not.
            batch.flush(jobs)?;
        }
        let start = read_start(reader, expected.next())?;
        if !matches!(&start, Start::Data { index, offset, delta } if Batch::takes(&planned[*index], (*offset, *delta), shared))
        {
            // Anything else goes to the disk thread after the files before it.
            batch.flush(jobs)?;
        }
        if let Start::GaveUp { index, .. }
        | Start::Data {
            index,
            delta: false,
            ..
        } = start
        {
            stop_cutting(&planned[index]);
        }
        match start {
            Start::End => return Ok(()),
            Start::GaveUp { index, why } => gave_up(&planned[index], index, why, jobs)?,
            Start::Data {
                index,
                offset,
                delta,
            } => {
                let file = Incoming {
                    index,
                    item: &planned[index],
                    offset,
                    delta,
                };
                if Batch::takes(file.item, (offset, delta), shared) {
                    receive_small(reader, &file, batch, jobs, shared, tally)?;
                } else {
                    receive_file(reader, &file, pool, jobs, shared, tally)?;
                }
                stop_cutting(&planned[index]);
            }
        }
    }
}

/// The sender could not read entry `index` (`item`): not sent, as the sender
/// counts it; said through the disk thread, so outcomes are reported in entry
/// order.
fn gave_up(item: &Planned, index: usize, why: String, jobs: &mpsc::Sender<Job>) -> Result<()> {
    let outcome = FileOutcome::NotSent {
        path: item.entry.named(),
        reason: why,
        said: false,
    };
    jobs.send(Job::GaveUp {
        index,
        outcome: Box::new(outcome),
    })
    .map_err(|_| disk_gone())
}

/// Entry `item`'s data ended (or never came, or is not a delta): its streamed
/// basis needs no more sums.
fn stop_cutting(item: &Planned) {
    if let Some(basis) = &item.basis {
        basis.stop_cutting();
    }
}

/// What the sender sends where the next expected entry's data (or the end) is due.
enum Start {
    End,
    Data {
        index: usize,
        offset: u64,
        delta: bool,
    },
    /// The sender could not read the entry at all.
    GaveUp {
        index: usize,
        why: String,
    },
}

/// Reads the frame that starts entry `next` (or, with none left, ends the data).
fn read_start<R: Read>(reader: &mut FrameReader<R>, next: Option<usize>) -> Result<Start> {
    let waiting_for = match next {
        Some(index) => format!("the data of entry {index}"),
        None => "the sender's end".to_string(),
    };
    match (reader.expect_message(&waiting_for)?, next) {
        (Message::End { .. }, None) => Ok(Start::End),
        (
            Message::Data {
                index,
                offset,
                delta,
            },
            Some(next),
        ) if index == next as u64 => Ok(Start::Data {
            index: next,
            offset,
            delta,
        }),
        (
            Message::Error {
                index: Some(index),
                message,
                ..
            },
            Some(next),
        ) if index == next as u64 => Ok(Start::GaveUp {
            index: next,
            why: format!(
                "{}: the sender gave up on it: {}",
                crate::fs::input::UNREADABLE,
                escape_said(&message)
            ),
        }),
        (
            Message::Error {
                index: None,
                code,
                message,
            },
            _,
        ) => Err(peer_error(code, &message)),
        (other, _) => Err(fail(
            Kind::Protocol,
            format!("expected {waiting_for}, got {}", describe(&other)),
        )),
    }
}

/// One entry whose data has begun, from `offset` (or, `delta`, as instructions).
struct Incoming<'a> {
    index: usize,
    item: &'a Planned<'a>,
    offset: u64,
    delta: bool,
}

/// Checks where a file's data starts against the plan: from 0, from the offset the
/// plan offered to resume at, or as a delta against the basis it offered.
fn check_start(file: &Incoming<'_>) -> Result<()> {
    let Incoming {
        index,
        item,
        offset,
        delta,
    } = *file;
    if delta && (offset != 0 || item.basis.is_none()) {
        return Err(fail(
            Kind::Protocol,
            format!("a delta for entry {index}, for which the plan offered no basis"),
        ));
    }
    let resume_offset = item.resume_offset();
    if offset != 0 && offset != resume_offset {
        return Err(fail(
            Kind::Protocol,
            format!(
                "data for entry {index} from offset {offset}; the plan said {resume_offset} or 0"
            ),
        ));
    }
    Ok(())
}

/// Receives one file's data frames and `done`, and hands the disk thread its verdict.
fn receive_file<R: Read>(
    reader: &mut FrameReader<R>,
    file: &Incoming<'_>,
    pool: &mut Pool,
    jobs: &mpsc::Sender<Job>,
    shared: &Shared<'_>,
    tally: &Tally,
) -> Result<()> {
    let Incoming {
        index,
        item,
        offset,
        delta,
    } = *file;
    if item.entry.is_sparse() && !delta {
        return receive_runs(reader, file, pool, jobs, shared, tally)
            .inspect_err(|err| discard_untrusted(jobs, err));
    }
    check_start(file)?;
    let resumed_at = (offset > 0).then_some(offset);
    tally
        .reporter()
        .current_file(&item.entry.shown_path(), resumed_at);
    // Continue the prefix's hash, or start over when the sender starts over.
    let hasher = match &item.resume_from {
        Some(resume) if offset > 0 => resume.1.clone(),
        _ => shared.transfer.hash.hasher(),
    };
    jobs.send(Job::Open {
        index,
        offset,
        delta,
    })
    .map_err(|_| disk_gone())?;
    let data = if delta {
        let parts = (shared, tally);
        delta::build(reader, (index, item), hasher, pool, jobs, parts)
    } else {
        read_data(reader, file, hasher, pool, jobs, tally).map(|(size, digest)| Built {
            size,
            digest,
            failure: None,
            moved: None,
            identical: false,
        })
    };
    let data = data
        .and_then(|built| Ok((built, read_done(reader, index)?)))
        .inspect_err(|err| discard_untrusted(jobs, err));
    let (built, claimed) = data?;
    let verdict =
        claimed.and_then(|claimed| verdict_of(built, (index, item, resumed_at), &claimed, shared));
    jobs.send(Job::Close { index, verdict })
        .map_err(|_| disk_gone())
}

/// Receives a small file (see `small.rs`): its data frames into the batch's arena,
/// hashed as they arrive, then its `done`; the file joins the batch with its
/// verdict. The disk thread hears nothing of it before.
fn receive_small<R: Read>(
    reader: &mut FrameReader<R>,
    file: &Incoming<'_>,
    batch: &mut Batch,
    jobs: &mpsc::Sender<Job>,
    shared: &Shared<'_>,
    tally: &Tally,
) -> Result<()> {
    let Incoming { index, item, .. } = *file;
    check_start(file)?;
    tally
        .reporter()
        .current_file(&item.entry.shown_path(), None);
    let mut hasher = shared.transfer.hash.hasher();
    let size = item.entry.size.unwrap_or(0);
    let bytes = batch.read_file(reader, (index, size), &mut hasher, tally)?;
    let claimed = read_done(reader, index)?;
    let built = Built {
        size: bytes.len() as u64,
        digest: hasher.finish(),
        failure: None,
        moved: None,
        identical: false,
    };
    let verdict =
        claimed.and_then(|claimed| verdict_of(built, (index, item, None), &claimed, shared));
    batch.push(
        SmallFile {
            index,
            bytes,
            verdict,
        },
        jobs,
    )
}

/// The verdict on a file whose data is in (`built`), against what its `done` claimed;
/// a delta (the only one that counts what moved itself) counts as moved the
/// instructions that came, as its sender does, and is said to be one.
fn verdict_of(
    built: Built,
    (index, item, resumed_at): (usize, &Planned, Option<u64>),
    claimed: &Claimed,
    shared: &Shared<'_>,
) -> Result<Arrived, Refusal> {
    if let Some(refusal) = built.failure {
        return Err(refusal);
    }
    let Built { size, digest, .. } = built;
    verify(index, item, size, digest, claimed, shared, resumed_at).map(|arrived| Arrived {
        moved: built.moved.unwrap_or(arrived.moved),
        delta: built.moved.is_some(),
        kept: built.identical,
        ..arrived
    })
}

/// After `err` inside an entry's data: a frame that does not open was tampered
/// with, one that breaks the protocol cannot be trusted, so nothing of the entry
/// is kept, not even for resuming (a cut keeps what arrived).
fn discard_untrusted(jobs: &mpsc::Sender<Job>, err: &anyhow::Error) {
    if matches!(kind_of(err), Some(Kind::Verification | Kind::Protocol)) {
        let _ = jobs.send(Job::Discard);
    }
}

/// Receives a sparse entry's runs (section 16.4), each written at its offset and
/// hashed by the disk thread once its length is known, then its `done`. A run
/// going back, or past the offered size, breaks the protocol.
fn receive_runs<R: Read>(
    reader: &mut FrameReader<R>,
    file: &Incoming<'_>,
    pool: &mut Pool,
    jobs: &mpsc::Sender<Job>,
    shared: &Shared<'_>,
    tally: &Tally,
) -> Result<()> {
    let Incoming { index, item, .. } = *file;
    let size = item.entry.size.unwrap_or(0);
    let frames = Frames {
        index,
        limit: Some(size),
    };
    tally
        .reporter()
        .current_file(&item.entry.shown_path(), None);
    let mut start = file.offset;
    let mut moved = 0;
    let mut job = Job::Open {
        index,
        offset: start,
        delta: false,
    };
    loop {
        if start > size {
            return Err(fail(
                Kind::Protocol,
                format!("a run of entry {index} starts at {start}, past its offered size"),
            ));
        }
        jobs.send(job).map_err(|_| disk_gone())?;
        let end = frames.read(reader, start, None, pool, jobs, tally)?;
        moved += end - start;
        match reader.expect_message("the next run or done")? {
            Message::Data {
                index: next,
                offset,
                delta: false,
            } if next == index as u64 => {
                if offset < end {
                    return Err(fail(
                        Kind::Protocol,
                        format!("a run of entry {index} goes back to {offset}, before {end}"),
                    ));
                }
                (start, job) = (offset, Job::Run { offset });
            }
            other => return close_runs(other, file, moved, jobs, shared),
        }
    }
}

/// Ends a sparse entry at the frame after its last run (`moved` bytes of data in
/// all): its `done` (its length set and its hash checked) or the sender giving it up.
fn close_runs(
    message: Message,
    file: &Incoming<'_>,
    moved: u64,
    jobs: &mpsc::Sender<Job>,
    shared: &Shared<'_>,
) -> Result<()> {
    let Incoming { index, item, .. } = *file;
    let size = item.entry.size.unwrap_or(0);
    let verdict = match done_or_given_up(message, index)? {
        Ok(claimed) => match sealed(jobs, size)? {
            Some(digest) => verify(index, item, size, digest, &claimed, shared, None)
                .map(|arrived| Arrived { moved, ..arrived }),
            // The disk's refusal is the answer; this verdict is not read.
            None => Ok(Arrived {
                size,
                moved,
                digest: shared.transfer.hash.hasher().finish(),
                resumed_at: None,
                delta: false,
                kept: false,
            }),
        },
        Err(refusal) => Err(refusal),
    };
    jobs.send(Job::Close { index, verdict })
        .map_err(|_| disk_gone())
}

/// Asks the disk thread to end the open sparse entry at `size` bytes, and waits
/// for its hash (`None`: it could not be written, and its answer says why).
fn sealed(jobs: &mpsc::Sender<Job>, size: u64) -> Result<Option<Digest>> {
    let (reply, digest) = mpsc::channel();
    jobs.send(Job::Seal { size, reply })
        .map_err(|_| disk_gone())?;
    digest.recv().map_err(|_| disk_gone())
}

/// Reads the `done` that ends entry `index`'s data, or the sender's `error` giving
/// it up midway: then the data so far stays for a later session, and the entry is
/// answered as the sender's failure.
fn read_done<R: Read>(
    reader: &mut FrameReader<R>,
    index: usize,
) -> Result<Result<Claimed, Refusal>> {
    match reader.expect_message("done")? {
        Message::Data { index: again, .. } if again == index as u64 => Err(fail(
            Kind::Protocol,
            format!("a second data header for entry {index}, which is not sparse"),
        )),
        other => done_or_given_up(other, index),
    }
}

/// The frame after an entry's data, where its `done` is due: the `done`, or the
/// sender's `error` giving it up midway (the entry is then answered as the
/// sender's failure).
fn done_or_given_up(message: Message, index: usize) -> Result<Result<Claimed, Refusal>> {
    match message {
        Message::Done {
            index: done_index,
            size,
            hash,
            mac,
        } if done_index == index as u64 => Ok(Ok(Claimed { size, hash, mac })),
        Message::Error {
            index: Some(failed),
            code,
            message,
        } if failed == index as u64 => {
            let code = if code == ErrorCode::Unknown {
                ErrorCode::Io
            } else {
                code
            };
            let why = format!("the sender gave up on it: {}", escape_said(&message));
            Ok(Err(Refusal::new(code, why)))
        }
        Message::Error {
            index: None,
            code,
            message,
        } => Err(peer_error(code, &message)),
        other => Err(fail(
            Kind::Protocol,
            format!("expected done for entry {index}, got {}", describe(&other)),
        )),
    }
}

/// A frame's type, and the index it names, for messages.
fn describe(message: &Message) -> String {
    match message {
        Message::Data { index, .. }
        | Message::Error {
            index: Some(index), ..
        } => {
            format!("{message} for entry {index}")
        }
        other => other.to_string(),
    }
}

/// Reads one entry's data frames into pool buffers for the disk thread, hashing
/// as they arrive. Returns the size (counted from the start of the file) and hash.
fn read_data<R: Read>(
    reader: &mut FrameReader<R>,
    file: &Incoming<'_>,
    mut hasher: Hasher,
    pool: &mut Pool,
    jobs: &mpsc::Sender<Job>,
    tally: &Tally,
) -> Result<(u64, Digest)> {
    let Incoming { index, item, .. } = *file;
    let frames = Frames {
        index,
        limit: item.entry.size,
    };
    let received = frames.read(reader, file.offset, Some(&mut hasher), pool, jobs, tally)?;
    Ok((received, hasher.finish()))
}

/// The data frames of one entry's data (or one run of it), up to the empty frame.
struct Frames {
    index: usize,
    /// Past this byte is a session-level `protocol` (the offered size).
    limit: Option<u64>,
}

impl Frames {
    /// Reads them into pool buffers for the disk thread, hashing them as they
    /// arrive when given a hasher; `from` is where they start in the file.
    /// Returns where they end.
    fn read<R: Read>(
        &self,
        reader: &mut FrameReader<R>,
        from: u64,
        mut hasher: Option<&mut Hasher>,
        pool: &mut Pool,
        jobs: &mpsc::Sender<Job>,
        tally: &Tally,
    ) -> Result<u64> {
        let mut received = from;
        loop {
            let mut buffer = pool.take().ok_or_else(disk_gone)?;
            let range = match reader.read_data(&mut buffer)? {
                Data::End => {
                    pool.put_back(buffer);
                    return Ok(received);
                }
                Data::Bytes(range) => range,
            };
            let n = range.len() as u64;
            if self.limit.is_some_and(|size| received + n > size) {
                return Err(fail(
                    Kind::Protocol,
                    format!("more data for entry {} than its offered size", self.index),
                ));
            }
            if let Some(hasher) = hasher.as_deref_mut() {
                hasher.update(&buffer[range.clone()]);
            }
            received += n;
            tally.reporter().advance(n);
            jobs.send(Job::Write { buffer, range })
                .map_err(|_| disk_gone())?;
        }
    }
}

/// Why a file whose `done` names another size than arrived or was offered is
/// refused (`checksum`, as the protocol says). A `done` whose MAC verifies is the
/// sender's own word: its file changed or could not be read while it was sent
/// (xfer's sender says so, and why), which is no damage on the way.
fn size_mismatch(
    index: usize,
    item: &Planned,
    size: u64,
    claimed: &Claimed,
    shared: &Shared<'_>,
) -> String {
    let offered = item.entry.size;
    let authentic = || {
        let digest = shared.transfer.hash.parse(&claimed.hash)?;
        let path = item.entry.path_bytes();
        let facts = FileFacts {
            index: index as u64,
            size: claimed.size,
            hash: &digest,
            path: &path,
        };
        Some(shared.transfer.verify_done(facts, &claimed.mac))
    };
    match offered {
        Some(offered) if claimed.size != offered && authentic() == Some(true) => format!(
            "the sender ended it at {} bytes, not the {offered} offered: its file changed \
             or could not be read while it was sent (the sender says why); nothing \
             kept, send it again",
            claimed.size
        ),
        _ => format!(
            "size mismatch: offered {}, the sender says {}, {size} arrived",
            offered.map_or("unknown".to_string(), |size| size.to_string()),
            claimed.size
        ),
    }
}

/// What the sender's `done` says.
struct Claimed {
    size: u64,
    hash: String,
    mac: String,
}

/// Checks what arrived against the offer and the sender's `done`: size, hash, MAC.
fn verify(
    index: usize,
    item: &Planned,
    size: u64,
    digest: Digest,
    claimed: &Claimed,
    shared: &Shared<'_>,
    resumed_at: Option<u64>,
) -> Result<Arrived, Refusal> {
    let path = item.entry.path_bytes();
    // Escaped only for a refusal: most files verify.
    let shown = || escape(&item.entry.shown_path()).into_owned();
    let hash = shared.transfer.hash;
    let checksum = |why: String| Refusal::new(ErrorCode::Checksum, format!("{}: {why}", shown()));
    let offered = item.entry.size;
    if claimed.size != size || offered.is_some_and(|offered| offered != size) {
        return Err(checksum(size_mismatch(index, item, size, claimed, shared)));
    }
    if hash.parse(&claimed.hash) != Some(digest) {
        return Err(checksum(format!(
            "{hash} mismatch: the sender says {}, what arrived has {}",
            escape(&claimed.hash),
            digest.to_hex()
        )));
    }
    let facts = FileFacts {
        index: index as u64,
        size,
        hash: &digest,
        path: &path,
    };
    if !shared.transfer.verify_done(facts, &claimed.mac) {
        return Err(Refusal::new(
            ErrorCode::Mac,
            format!("{}: the sender's MAC does not verify", shown()),
        ));
    }
    Ok(Arrived {
        size,
        moved: size - resumed_at.unwrap_or(0).min(size),
        digest,
        resumed_at,
        delta: false,
        kept: false,
    })
}
