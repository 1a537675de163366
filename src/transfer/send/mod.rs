//! The sender's session: offer everything, read the authenticated plan, then stream
//! each accepted file while a second thread reads and verifies the receiver's
//! answers as they arrive. No per-file round trips.
//!
//! Three threads share the work: `stream.rs` reads and hashes files one chunk ahead
//! of the socket (small files packed several to a buffer); this thread writes
//! frames; `answers.rs` reads `ok` and `error` frames. The filesystem is reached
//! only through the [`Outbox`], the terminal only through the [`Tally`].

mod answers;
mod delta;
mod piece;
mod precut;
mod stream;
mod sums;
mod unplanned;
mod view;
mod walking;

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::HumanBytes;

use self::piece::{BUFFER, Halt, Packed, Piece, ToSend, Wanted, slot};
use self::precut::Precut;
use self::sums::Streams;
pub(crate) use self::unplanned::all_new;
use self::view::PlainView;
pub(crate) use self::walking::{Offering, Walking};
use super::Tally;
use super::consumed::consumed;
use super::offer::{Head, read_plan, write_offer};
use crate::error::{Kind, fail, kind_of};
use crate::escape::{Named, escape_said};
use crate::fs::input::Outbox;
use crate::fs::input::UNREADABLE;
use crate::pool::{Giver, Pool};
use crate::proto::delta::{Chunking, MAX_CHUNKS, parse_sums};
use crate::proto::hash::{Digest, HashKind};
use crate::proto::message::{
    Decision, Entry, EntryKind, ErrorCode, Message, Mirror, Role, Signature,
};
use crate::proto::negotiated::{Feature, FileFacts, Transfer};
use crate::proto::wire::{Connection, FrameReader, FrameWriter, Hangup};
use crate::ui::report::{Change, FileOutcome, Reporter};

/// Buffers in flight between the reading thread and the socket: 8 measured 3.45 s
/// against 3.48 s for 4, not worth twice the memory.
const POOL_BUFFERS: usize = 4;
/// Entries [`Pending`] makes room for at once: about what the receiver's groups in
/// flight leave unanswered (a few thousand); a larger tree grows the table as
/// needed, rather than holding room for all of it (100 MB for a million files).
const OUTSTANDING_ROOM: usize = 8192;
/// How often the socket thread, waiting for the reading thread, looks up to see
/// whether the receiver ended the session.
const LOOK_UP: Duration = Duration::from_millis(200);
/// How long the answer thread, having found the receiver at fault, waits for the
/// writer to stop before it cuts the connection.
const WRITER_GRACE: Duration = Duration::from_secs(1);

/// What the sender knows about an entry whose data header went out and which the
/// receiver has not answered yet: its facts once its `done` left.
pub(super) struct Outstanding {
    facts: Option<Sent>,
    /// The receiver's file of this name is replaced (`--itemize` says so).
    replaces: bool,
    resumed_at: Option<u64>,
    /// How far into the file its data went out (from its start, prefix included).
    position: u64,
    /// Bytes of it that went out in this session (not a resumed prefix, not the
    /// holes of a sparse file).
    moved: u64,
    /// This side failed the entry already (it changed or could not be read while
    /// sent); the receiver's refusal of its `done` is expected and not counted again.
    failed_here: bool,
    /// Its data goes as a delta, which a receiver never keeps for resuming.
    delta: bool,
    /// An entry without data (a link, a special file) the receiver makes: it is
    /// answered only if making it failed.
    made: bool,
}

/// An entry without data the receiver makes (its index), and whether it replaces
/// what is there.
type Made = (u64, bool);

/// What `done` said about an entry.
#[derive(Clone, Copy)]
pub(super) struct Sent {
    size: u64,
    digest: Digest,
}

/// Entries between their data header and the receiver's answer, by index (the
/// writer adds to it, the answer thread takes from it), and whether the writer has
/// sent its `end` (after which a receiver's `end` is due).
#[derive(Default)]
struct Pending {
    entries: Mutex<HashMap<u64, Outstanding>>,
    writer_done: AtomicBool,
    /// The session is over (an error on either side): the other threads stop.
    stop: AtomicBool,
    /// One more than the index of the last file the receiver refused while its
    /// data was going out (0: none): the rest of it is neither read nor written.
    refused: AtomicU64,
    /// Files to send whose data header (or the error giving one up) went out.
    started: AtomicUsize,
    /// The writer returned (done, or stopped): it no longer writes, so the answer
    /// thread may leave the connection to the session's last word.
    writer_stopped: AtomicBool,
    /// When the receiver's last frame arrived, if one did (its idle clock).
    heard: Mutex<Option<Instant>>,
}

impl Outstanding {
    /// A file whose data goes out from `offset`.
    fn data_from(offset: u64, resumed_at: Option<u64>) -> Outstanding {
        Outstanding {
            facts: None,
            replaces: false,
            resumed_at,
            position: offset,
            moved: 0,
            failed_here: false,
            made: false,
            delta: false,
        }
    }
}

impl Pending {
    /// Nothing outstanding but the entries without data the receiver makes (each
    /// with whether it replaces what is there), with room for the `to_send` more,
    /// up to [`OUTSTANDING_ROOM`]. Room made once: grown by doubling, the table of
    /// 10 000 small files touched twice its final size in fresh pages (about 750
    /// page faults, 5-15 ms where fresh memory is dear).
    fn awaiting(made: &[Made], to_send: usize) -> Pending {
        let pending = Pending::default();
        let room = (made.len() + to_send).min(OUTSTANDING_ROOM);
        pending.lock().reserve(room);
        pending.lock().extend(made.iter().map(|&(index, replaces)| {
            let outstanding = Outstanding {
                replaces,
                made: true,
                ..Outstanding::data_from(0, None)
            };
            (index, outstanding)
        }));
        pending
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Outstanding>> {
        self.entries
            .lock()
            .expect("no panics while holding the lock")
    }

    /// Notes that a frame from the receiver just arrived.
    fn heard_now(&self) {
        *self.heard.lock().expect("no panics while holding the lock") = Some(Instant::now());
    }

    /// After a failure on the answer thread: stop the writer, and give it
    /// [`WRITER_GRACE`] to notice, so that the session can still tell the receiver
    /// why; a writer that cannot (blocked on a receiver that takes nothing) is cut.
    fn stop_writer(&self, closer: &impl Hangup) {
        self.stop.store(true, Ordering::SeqCst);
        let until = Instant::now() + WRITER_GRACE;
        while !self.writer_stopped.load(Ordering::SeqCst) {
            if Instant::now() >= until {
                closer.close();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs one transfer as the sender on `conn` (a transfer connection's only one, or
/// one `put` or `get` of a request connection): the offer of `outbox`, the plan,
/// the data, the answers. `Ok` once the transfer completed; per-entry failures are
/// in the tally (see [`Tally::verdict`]). An error ends the connection.
pub(crate) fn session<R: Read + Send, W: Write, C: Hangup + Sync>(
    conn: &mut Connection<R, W, C>,
    outbox: &dyn Outbox,
    tally: &mut Tally,
) -> Result<()> {
    offering_session(conn, Offering::Walked(outbox), tally)
}

/// [`session`] of what `offering` says: a walk done, or one under way.
pub(crate) fn offering_session<R: Read + Send, W: Write, C: Hangup + Sync>(
    conn: &mut Connection<R, W, C>,
    offering: Offering<'_>,
    tally: &mut Tally,
) -> Result<()> {
    let result = send(conn, offering, tally);
    if let Err(err) = &result {
        super::tell::end_session(conn, err);
    }
    // What went out of unanswered files, counting what an earlier run left at the
    // receiver of a resumed one: not all of it went out in this run.
    const AT_THE_RECEIVER: &str = "of files not yet acknowledged went to the receiver \
        (in this run or earlier ones), which keeps what of it arrived";
    result.map_err(|err| tally.resumable(err, AT_THE_RECEIVER))
}

fn send<R: Read + Send, W: Write, C: Hangup + Sync>(
    conn: &mut Connection<R, W, C>,
    offering: Offering<'_>,
    tally: &mut Tally,
) -> Result<()> {
    let transfer = conn.negotiated.begin_transfer();
    let delta = conn.negotiated.has(Feature::Delta);
    let streaming = delta && conn.negotiated.has(Feature::DeltaStream);
    let Connection {
        reader,
        writer,
        closer,
        ..
    } = conn;
    let mut walked = None;
    let (outbox, offered) = walking::walk_and_offer(offering, writer, &transfer, &mut walked)?;
    let asked = outbox.mirror();
    // A peer without `meta` is offered what version 2 carries; the rest is said.
    let view = (!transfer.meta).then(|| PlainView::of(outbox)).flatten();
    let left_out = view.as_ref().map_or(&[][..], |view| &view.left_out[..]);
    let outbox: &dyn Outbox = view.as_ref().map_or(outbox, |view| view);
    let entries = outbox.entries();
    let mirroring = conn.negotiated.has(Feature::Mirror);
    let mirror = mirror_options(asked, mirroring, left_out.len(), tally.reporter())?;
    let mirror = mirror.as_deref();
    let dry_run = mirror.is_some_and(|mirror| mirror.dry_run);
    count_offer(tally, entries.len(), left_out, dry_run);
    if !offered {
        offer(writer, &transfer, outbox, mirror)?;
    }
    writer.flush()?;
    // No cutting ahead for a server's `get` (`precut.rs`), or when sums stream.
    let cut = delta && !streaming && !dry_run && conn.negotiated.role() != Role::Server;
    let (plan, precut) = plan_while_cutting(reader, &transfer, outbox, (delta, cut))?;
    let streams = streams_of(&plan, &transfer, dry_run, closer.idle_timeout())?;
    let deltas = Deltas::of(delta, streaming, &streams);
    let (mut to_send, mut made) = follow_plan(outbox, plan, deltas, tally, mirroring)?;
    precut.hand_out(&mut to_send);
    let estimates = set_aside_for_dry_run(dry_run, &mut to_send, &mut made);
    let to_go = left_to_send(entries, &to_send);
    tally.reporter_mut().start_bar(to_go);
    let tally = &*tally;
    let report = Report {
        transfer: &transfer,
        outbox,
        tally,
        deleting: mirror.is_some_and(|mirror| mirror.delete),
        streams: &streams,
    };
    let work = Work {
        to_send: &to_send,
        made: &made,
    };
    let result = data_and_answers(reader, writer, &*closer, &report, work);
    tally.squeezed(writer.take_squeezed());
    if result.is_ok() {
        estimate_deltas(outbox, &estimates, tally, transfer.hash);
    }
    result
}

/// Offers every entry of `outbox`, with what a mirroring sender asks (`mirror`).
fn offer<W: Write>(
    writer: &mut FrameWriter<W>,
    transfer: &Transfer,
    outbox: &dyn Outbox,
    mirror: Option<&Mirror>,
) -> Result<()> {
    // Only a peer with `meta` hears of attributes.
    let head = Head::new(mirror, transfer.meta && outbox.xattrs_all());
    write_offer(writer, transfer, head, outbox.entries())
}

/// The plan's streamed bases (feature `delta_stream`), whose sums the answer
/// thread will hear, in plan order; never in a dry run (section 18.6), which has
/// no data phase to stream them in. The limits count the listed signatures too.
/// Sums awaited for `idle` in vain give the receiver up.
fn streams_of(
    plan: &[Decision],
    transfer: &Transfer,
    dry_run: bool,
    idle: Option<Duration>,
) -> Result<Arc<Streams>> {
    let mut streamed = Vec::new();
    let mut listed = 0u64;
    for (index, decision) in plan.iter().enumerate() {
        let Decision::Send {
            delta: Some(basis), ..
        } = decision
        else {
            continue;
        };
        match basis.stream {
            true => streamed.push(index as u64),
            false => listed = listed.saturating_add(basis.count.unwrap_or(0)),
        }
    }
    if dry_run && !streamed.is_empty() {
        return Err(fail(
            Kind::Protocol,
            "the plan of a dry run streams a basis's sums",
        ));
    }
    Ok(Arc::new(Streams::new(transfer, &streamed, listed, idle)))
}

/// What the plan's bases may be: listed (feature `delta` in force), and streamed
/// (`delta_stream` too: their sums come from these streams).
#[derive(Clone, Copy)]
struct Deltas<'a> {
    listed: bool,
    streamed: Option<&'a Arc<Streams>>,
}

impl<'a> Deltas<'a> {
    fn of(delta: bool, streaming: bool, streams: &'a Arc<Streams>) -> Deltas<'a> {
        Deltas {
            listed: delta,
            streamed: streaming.then_some(streams),
        }
    }
}

/// In a dry run, section 17.4: no data, straight to `end`, and the receiver makes
/// nothing; the files the plan offers a basis for, whose deltas are estimated once
/// `end` has been said (see [`estimate_deltas`]).
fn set_aside_for_dry_run(
    dry_run: bool,
    to_send: &mut Vec<ToSend>,
    made: &mut Vec<Made>,
) -> Vec<ToSend> {
    if !dry_run {
        return Vec::new();
    }
    made.clear();
    let mut estimates = std::mem::take(to_send);
    estimates.retain(|item| item.delta.is_some() || item.offset > 0);
    estimates
}

/// Shows what a delta of each of `estimates` would move: the files read and cut
/// after `end`, so the receiver, done, waits for nothing while they are.
fn estimate_deltas(outbox: &dyn Outbox, estimates: &[ToSend], tally: &Tally, hash: HashKind) {
    for item in estimates {
        dry_run_file(outbox, item, tally, Some(hash));
    }
}

/// Waits for the plan (waiting on the receiver: the idle timeout holds), which reads
/// its old versions for deltas meanwhile (`delta`: the feature is in force); with
/// `cut`, ours are cut at the same time.
fn plan_while_cutting<R: Read>(
    reader: &mut FrameReader<R>,
    transfer: &Transfer,
    outbox: &dyn Outbox,
    (delta, cut): (bool, bool),
) -> Result<(Vec<Decision>, Precut)> {
    let precut = Precut::new();
    let plan = std::thread::scope(|scope| {
        if cut {
            let cutting = || precut.run(outbox, transfer.hash);
            // Without the thread, the deltas are cut after the plan as before.
            let _ = std::thread::Builder::new()
                .name("precut".into())
                .spawn_scoped(scope, cutting);
        }
        let plan = read_plan(reader, transfer, outbox.entries().len(), delta);
        precut.stop();
        plan
    })?;
    Ok((plan, precut))
}

/// Counts the entries under the operands: those offered, and those this peer
/// cannot be offered (`left_out`, already said). A dry run counts apart.
fn count_offer(
    tally: &mut Tally,
    offered: usize,
    left_out: &[(Named, String, bool)],
    dry_run: bool,
) {
    if dry_run {
        tally.dry_run();
    }
    tally.offered(offered + left_out.len(), "delivered");
    for (path, why, said) in left_out {
        not_sent(tally, path, why, *said);
    }
}

/// What the outbox asks of a mirroring receiver, if the peer can take it: one
/// that cannot was refused in the handshake already (the feature is required then),
/// so this only guards against doing less than asked.
/// `--delete` is withheld when `left_out` entries cannot be offered to this peer
/// (said through `reporter`, which names the peer where this process serves several).
fn mirror_options<'m>(
    asked: Option<&'m Mirror>,
    in_force: bool,
    left_out: usize,
    reporter: &Reporter,
) -> Result<Option<Cow<'m, Mirror>>> {
    match asked {
        // Without `mirror` a receiver that replaces files sends them all anyway
        // (version 2): `--ignore-times` alone needs nothing of the peer.
        Some(mirror) if !in_force && !mirror.delete && !mirror.dry_run => Ok(None),
        Some(_) if !in_force => Err(crate::error::refused(
            ErrorCode::Feature,
            "the peer cannot mirror (--delete, --dry-run): it lacks the feature `mirror`",
        )),
        Some(mirror) if mirror.delete && left_out > 0 => {
            Ok(Some(Cow::Owned(without_delete(mirror, left_out, reporter))))
        }
        mirror => Ok(mirror.map(Cow::Borrowed)),
    }
}

/// `--delete` withheld, said once: `left_out` entries cannot be offered to this
/// peer, and their copies on the receiver would go (rsync also deletes nothing
/// after an I/O error on the sending side).
fn without_delete(mirror: &Mirror, left_out: usize, reporter: &Reporter) -> Mirror {
    reporter.note(&format!(
        "not deleting anything: {left_out} entries cannot be offered to this peer, and \
         their copies on the receiver would be lost"
    ));
    Mirror {
        delete: false,
        ..mirror.clone()
    }
}

/// What the answer thread needs besides the connection.
pub(super) struct Report<'a> {
    transfer: &'a Transfer,
    outbox: &'a dyn Outbox,
    tally: &'a Tally,
    /// The receiver reports what it removed before its `end` (section 17.3).
    deleting: bool,
    /// The bases whose sums the receiver streams (feature `delta_stream`).
    streams: &'a Streams,
}

/// The bytes still to send, if every size is known: a resumed file's prefix is
/// already there.
fn left_to_send(entries: &[Entry], to_send: &[ToSend]) -> Option<u64> {
    to_send
        .iter()
        .map(|item| {
            entries[item.index as usize]
                .size
                .map(|size| size - item.offset)
        })
        .sum()
}

/// Writes the data of `to_send` on this thread while another reads the receiver's
/// answers. A receiver at fault stops the writer and leaves the connection open for
/// the session to say why; a writer that fails cuts the connection. Once everything
/// went out, a receiver silent for the idle timeout is given up (section 5).
fn data_and_answers<R: Read + Send, W: Write, C: Hangup + Sync>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    closer: &C,
    report: &Report<'_>,
    work: Work<'_>,
) -> Result<()> {
    let (transfer, outbox, tally) = (report.transfer, report.outbox, report.tally);
    let Work { to_send, made } = work;
    let idle = closer.idle_timeout();
    // While this side streams, a silent receiver is not idle.
    let _streaming = closer.without_read_timeout();
    let pending = Pending::awaiting(made, to_send.len());
    let (finished, answers_over) = mpsc::channel::<()>();
    let result = std::thread::scope(|scope| {
        let pending = &pending;
        let answers = std::thread::Builder::new()
            .name("answers".into())
            .spawn_scoped(scope, move || {
                let _finished = finished; // dropped on return: the writer hears it
                let result = answers::read(reader, report, pending);
                if result.is_err() {
                    pending.stop_writer(closer);
                }
                result
            });
        let answers = match answers {
            Ok(answers) => answers,
            Err(err) => return Err(thread_failed(err)),
        };
        let written = write_data(writer, transfer, to_send, outbox, pending, tally, scope);
        let written = sums_came(report.streams, idle).and(written);
        let stopped_by_answers = pending.stop.swap(true, Ordering::SeqCst);
        pending.writer_stopped.store(true, Ordering::SeqCst);
        let waited = match &written {
            Ok(()) => await_answers(&answers_over, pending, closer, idle),
            Err(_) if stopped_by_answers => Ok(()),
            Err(_) => {
                closer.close(); // wakes the answer thread
                Ok(())
            }
        };
        let answered = answers
            .join()
            .unwrap_or_else(|_| Err(fail(Kind::Protocol, "the answer thread panicked")));
        first_failure(written, waited, answered, report.streams.stalled())
    });
    if let Err(err) = &result {
        ended_early(err, &pending, (outbox, to_send.len()), tally);
    }
    result
}

/// Counts what a data phase that ended with `err` left: the files unanswered, of
/// the `planned` many, and what went out of them.
fn ended_early(
    err: &anyhow::Error,
    pending: &Pending,
    (outbox, planned): (&dyn Outbox, usize),
    tally: &Tally,
) {
    let (kept, whole, in_flight) = cut_short(pending, outbox);
    let unstarted = planned.saturating_sub(pending.started.load(Ordering::SeqCst));
    // Only a connection that went leaves partial data to resume: a receiver that
    // ended the session itself said why (one writing to its standard output, whose
    // output failed, keeps nothing).
    if kind_of(err) == Some(Kind::Network) {
        tally.kept(kept);
    }
    tally.left_over(whole, in_flight + unstarted);
}

/// Which failure of the data phase the session reports: of what was `written`, the
/// wait for the answers and the answers: our idle verdicts first (sums that
/// `stalled`, or a receiver that took nothing we wrote: the answer thread then
/// only saw us close); then the receiver's own account of a failure, which
/// explains more than our broken pipe.
fn first_failure(
    written: Result<()>,
    waited: Result<()>,
    answered: Result<()>,
    stalled: bool,
) -> Result<()> {
    let timed_out = written
        .as_ref()
        .is_err_and(|err| crate::error::wire_code(err) == Some(ErrorCode::Timeout));
    match stalled || timed_out {
        true => written.and(waited).and(answered),
        false => waited.and(answered).and(written),
    }
}

/// Waits for the answer thread to finish; with an idle timeout, a receiver that
/// sends nothing for that long once everything went out is given up: reading
/// stops (which ends the answer thread) and the session tells it `timeout`.
fn await_answers<C: Hangup>(
    answers_over: &mpsc::Receiver<()>,
    pending: &Pending,
    closer: &C,
    idle: Option<Duration>,
) -> Result<()> {
    let Some(idle) = idle else {
        return Ok(());
    };
    let all_sent = Instant::now();
    loop {
        let heard = *pending
            .heard
            .lock()
            .expect("no panics while holding the lock");
        let last = heard.map_or(all_sent, |heard| heard.max(all_sent));
        let left = (last + idle).saturating_duration_since(Instant::now());
        if left.is_zero() {
            closer.stop_reading();
            return Err(crate::proto::wire::net(std::io::ErrorKind::TimedOut.into()));
        }
        match answers_over.recv_timeout(left) {
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// `Ok` unless the reading thread gave the receiver up, silent for `idle` while it
/// waited for the sums of a streamed basis (it then ended early, maybe inside a
/// file, and `end` must not go out).
fn sums_came(streams: &Streams, idle: Option<Duration>) -> Result<()> {
    match streams.stalled() {
        false => Ok(()),
        true => Err(fail(
            Kind::Network,
            format!(
                "the receiver sent no sums of its old copy for {} s (the idle timeout)",
                idle.map_or(0, |idle| idle.as_secs())
            ),
        )),
    }
}

/// What the files not answered when the session ended left at the receiver: the
/// bytes of theirs that went out, whether their `done` went too or not, which the
/// receiver keeps for a rerun to resume (a cut after every byte was written, while
/// waiting for the answers, leaves as much to resume as one in the middle); how
/// many went out whole, `done` and all, which a rerun may find there; and how many
/// there are (whole, partly sent, or with only their header out).
fn cut_short(pending: &Pending, outbox: &dyn Outbox) -> (u64, usize, usize) {
    let pending = pending.lock();
    let unanswered = pending
        .iter()
        .filter(|(_, outstanding)| !outstanding.failed_here && !outstanding.made);
    let (mut kept, mut whole, mut in_flight) = (0, 0, 0);
    for (&index, outstanding) in unanswered {
        in_flight += 1;
        // A stream (standard input, a pipe) cannot be read again: its receiver
        // keeps nothing of it to resume from, and a rerun could not send the rest.
        // Nor is a sparse file resumed (section 16.4), nor a delta kept.
        let index = index as usize;
        if outbox.rereadable(index) && !outbox.entries()[index].is_sparse() && !outstanding.delta {
            kept += outstanding.position;
        }
        whole += usize::from(outstanding.facts.is_some());
    }
    (kept, whole, in_flight)
}

/// What the data phase does: send these files' data, and hear whether these entries
/// without data were made.
#[derive(Clone, Copy)]
struct Work<'a> {
    to_send: &'a [ToSend],
    /// Each entry the receiver makes, and whether it replaces what is there.
    made: &'a [Made],
}

/// Reads the plan's decisions: reports skips and files already there, checks what
/// a decision may say, and lists the files whose data goes out and the entries
/// without data the receiver will make (each with whether it replaces something).
/// In a dry run (`tally` says) each entry is a change to show, never a failure. A
/// basis offered (feature `delta` in force) is decoded here; `read_plan` checked its
/// size. The plan's memory goes back as the list of files to send grows.
fn follow_plan(
    outbox: &dyn Outbox,
    plan: Vec<Decision>,
    delta: Deltas<'_>,
    tally: &Tally,
    mirroring: bool,
) -> Result<(Vec<ToSend>, Vec<Made>)> {
    let entries = outbox.entries();
    let dry_run = tally.summary().dry_run.is_some();
    let mut to_send = Vec::with_capacity(plan.len());
    let mut made = Vec::new();
    for (index, (entry, decision)) in entries.iter().zip(consumed(plan)).enumerate() {
        let decision = &decision;
        if not_for_data(entry, decision, index, tally)? {
            continue;
        }
        let (offset, prefix_hash, (basis, replaces, attrs)) = match decision {
            Decision::Skip {
                code,
                message,
                attrs,
            } => {
                skipped(entry, (*code, *attrs), message, tally, dry_run);
                continue;
            }
            Decision::Send {
                offset,
                prefix_hash,
                delta: basis,
                replaces,
                attrs,
            } => (*offset, prefix_hash, (basis, *replaces, *attrs)),
        };
        match entry.kind {
            EntryKind::File => {
                let planned = (offset, prefix_hash, replaces);
                let item = file_to_send(outbox, index, planned, (basis.as_ref(), delta))?;
                // A delta or a resume is estimated after `end` (`estimate_deltas`).
                if dry_run && item.delta.is_none() && item.offset == 0 {
                    dry_run_file(outbox, &item, tally, None);
                }
                to_send.push(item);
            }
            kind => {
                let prefix = prefix_hash.is_some() || basis.is_some();
                without_data(kind, index, offset, prefix)?;
                let path = &entry.named();
                if kind == EntryKind::Dir {
                    planned_dir(path, mirroring, (replaces, attrs), tally);
                } else {
                    if dry_run {
                        tally.change(Change::of_node(kind, replaces), path, 0, None);
                    }
                    made.push((index as u64, replaces));
                }
            }
        }
    }
    Ok((to_send, made))
}

/// Shows what the plan says of a directory under `mirror`: that it is new, or
/// there already with other metadata (`attrs`; ignored on a new one, section 17.3).
fn planned_dir(path: &Named, mirroring: bool, (replaces, attrs): (bool, bool), tally: &Tally) {
    if mirroring && !replaces {
        tally.change(Change::NewDir, path, 0, None);
    }
    if mirroring && replaces && attrs {
        tally.change(Change::DirAttrs, path, 0, None);
    }
}

/// A `send` for entry `index` of `kind`, which has no data: from offset 0, without
/// a prefix hash or a basis (`prefix`), and never for an entry that was not sent.
fn without_data(kind: EntryKind, index: usize, offset: u64, prefix: bool) -> Result<()> {
    if kind == EntryKind::Unsent {
        return Err(fail(
            Kind::Protocol,
            format!("the plan asks for entry {index}, which was not sent"),
        ));
    }
    if offset != 0 || prefix {
        return Err(fail(
            Kind::Protocol,
            format!("the plan resumes entry {index} without data at {offset}"),
        ));
    }
    Ok(())
}

/// An entry whose decision moves no data, checked: an `unsent` one is counted
/// here whatever the receiver says (it may not ask for it), and a sparse file is
/// never resumed. `true` when the entry is done with.
fn not_for_data(entry: &Entry, decision: &Decision, index: usize, tally: &Tally) -> Result<bool> {
    if entry.kind == EntryKind::Unsent {
        if matches!(decision, Decision::Send { .. }) {
            return Err(fail(
                Kind::Protocol,
                format!("the plan asks for entry {index}, which was not sent"),
            ));
        }
        let reason = entry.extra().reason.as_deref().unwrap_or_default();
        not_sent(tally, &entry.named(), reason, true);
        return Ok(true);
    }
    if entry.is_sparse() && matches!(decision, Decision::Send { offset, .. } if *offset > 0) {
        return Err(fail(
            Kind::Protocol,
            format!("the plan resumes entry {index}, which is sparse"),
        ));
    }
    Ok(false)
}

/// What a dry run shows of a file it would send: new, or changed; where the plan
/// offers a basis, with the bytes a delta against it would move (the file read and
/// cut as the delta would; counted in the summary instead of the file's size);
/// where it resumes partial data whose prefix matches ours (hashed with `hash`, as
/// the real run checks it; given for such a file), with the rest.
fn dry_run_file(outbox: &dyn Outbox, item: &ToSend, tally: &Tally, hash: Option<HashKind>) {
    let position = item.index as usize;
    let entry = &outbox.entries()[position];
    let (path, size) = (entry.named(), entry.size.unwrap_or(0));
    let change = [Change::New, Change::Changed][usize::from(item.replaces)];
    let expected = item.delta.as_deref().and_then(|wanted| {
        let mut input = outbox.open(position).ok()?;
        delta::expected_size(&mut *input, wanted, entry.size).ok()
    });
    let resumed = hash
        .filter(|_| item.offset > 0)
        .and_then(|hash| stream::open_at_resume_point(outbox, item, &mut hash.hasher()).ok())
        .map(|(_, start)| start)
        .filter(|start| *start > 0);
    match (expected, resumed) {
        (Some(bytes), _) => {
            let note = format!("delta {} of {}", HumanBytes(bytes), HumanBytes(size));
            tally.change(Change::Changed, &path, bytes, Some(&note));
        }
        (None, Some(start)) => {
            let note = format!("resumes at {} of {}", HumanBytes(start), HumanBytes(size));
            tally.change(change, &path, size - start, Some(&note));
        }
        (None, None) => tally.change(change, &path, size, None),
    }
}

/// A file the plan accepts, from its `offset` (with `prefix_hash`), if that fits
/// it (section 6); a resume the source cannot honour starts at 0. A basis, with what
/// the section on feature `delta` asks (`delta`: the feature is in force).
fn file_to_send(
    outbox: &dyn Outbox,
    index: usize,
    (offset, prefix_hash, replaces): (u64, &Option<String>, bool),
    (basis, delta): (Option<&Signature>, Deltas<'_>),
) -> Result<ToSend> {
    let entry = &outbox.entries()[index];
    let fits = match entry.size {
        Some(size) => offset <= size,
        None => offset == 0,
    };
    if !fits || (offset > 0) != prefix_hash.is_some() {
        return Err(fail(
            Kind::Protocol,
            format!("the plan resumes entry {index} at {offset}, which does not fit it"),
        ));
    }
    let wanted = basis
        .map(|basis| wanted(index, entry, offset, basis, delta))
        .transpose()?;
    let resumable = offset > 0 && outbox.rereadable(index);
    Ok(ToSend {
        replaces,
        index: index as u64,
        offset: if resumable { offset } else { 0 },
        prefix_hash: prefix_hash.clone().filter(|_| resumable),
        // A stream cannot be read for a delta: it goes whole.
        delta: wanted.filter(|_| outbox.rereadable(index)),
    })
}

/// Counts an entry this side does not send (`said`: a warning named it); a dry run
/// shows it skipped, and it does not change a dry run's exit code.
fn not_sent(tally: &Tally, path: &Named, reason: &str, said: bool) {
    match tally.summary().dry_run.is_some() {
        true => tally.change(Change::Skipped, path, 0, Some(reason)),
        false => tally.not_sent(path, reason, said),
    }
}

/// Shows and counts an entry the plan skips (`code`, and whether the receiver
/// said `attrs`): an entry already there (`same`, with an `attrs` change when its
/// metadata was, or in a dry run would be, brought up to the offer), or a refusal,
/// which fails a dry run as it would fail the real one.
fn skipped(
    entry: &Entry,
    (code, attrs): (ErrorCode, bool),
    message: &str,
    tally: &Tally,
    dry_run: bool,
) {
    // `attrs` counts only on the `same` of a file, link or special file (section
    // 17.3): a hard link's metadata is its file's.
    let attrs = attrs && !matches!(entry.kind, EntryKind::Dir | EntryKind::Hardlink);
    let same = [Change::Same, Change::Attrs][usize::from(attrs)];
    let path = entry.named();
    match code {
        ErrorCode::Same if dry_run => tally.change(same, &path, 0, None),
        ErrorCode::Same => {
            if attrs {
                tally.change(same, &path, 0, None);
            }
            tally.record(FileOutcome::Same {
                path,
                kind: entry.kind,
                size: entry.size,
                verified: None,
            });
        }
        _ => tally.failed(
            &path,
            code,
            format!("refused by the receiver: {}", escape_said(message)),
        ),
    }
}

/// The socket side of the data phase: starts the reading thread and writes what it
/// hands over, in order, then `end`.
fn write_data<'scope, 'env, W: Write>(
    writer: &mut FrameWriter<W>,
    transfer: &'env Transfer,
    to_send: &'env [ToSend],
    outbox: &'env dyn Outbox,
    pending: &'env Pending,
    tally: &Tally,
    scope: &'scope std::thread::Scope<'scope, 'env>,
) -> Result<()> {
    let (mut pool, giver) = Pool::new(POOL_BUFFERS, BUFFER);
    let (pieces, from_reader) = mpsc::channel();
    // If this thread stops early, dropping `giver` and `from_reader` stops the reader.
    let stop = &pending.stop;
    std::thread::Builder::new()
        .name("read files".into())
        .spawn_scoped(scope, move || {
            let halt = (stop, &pending.refused);
            stream::read_files(to_send, outbox, transfer.hash, &mut pool, &pieces, halt)
        })
        .map_err(thread_failed)?;
    let frames = Frames {
        transfer,
        entries: outbox.entries(),
        pending,
        tally,
        giver,
        current: std::cell::Cell::new(0),
    };
    let mut in_file = false;
    loop {
        if pending.stop.load(Ordering::SeqCst) {
            // The receiver ended the session (its answer thread says why). A file's
            // data is ended first, so that the error frame after it is read as one.
            if in_file {
                writer.write_end_of_data()?;
            }
            return Err(fail(Kind::Network, "the receiver ended the transfer"));
        }
        match from_reader.recv_timeout(LOOK_UP) {
            Ok(piece) => {
                in_file = match &piece {
                    Piece::Start { .. } | Piece::Run { .. } => true,
                    Piece::End { .. } | Piece::GaveUp { .. } | Piece::Packed { .. } => false,
                    Piece::Chunk { .. } => in_file,
                };
                frames.write(writer, piece)?;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            // The reading thread waits (for a receiver's sums, a slow disk): what is
            // written goes out, so that a receiver waiting for a `data` header or a
            // `done` to move on hears it (it may be what it needs to send more sums).
            Err(mpsc::RecvTimeoutError::Timeout) => writer.flush()?,
        }
    }
    write_end(writer, pending, in_file)
}

/// Sends `end` once the reading thread handed over everything; if it ended inside
/// a file instead (it gave up waiting for sums), ends that file's data and no
/// `end` says the transfer is complete.
fn write_end<W: Write>(
    writer: &mut FrameWriter<W>,
    pending: &Pending,
    in_file: bool,
) -> Result<()> {
    if in_file {
        writer.write_end_of_data()?;
        return Err(fail(Kind::Network, "reading stopped inside a file"));
    }
    // Before `end` leaves: a receiver's `end` can only come after it.
    pending.writer_done.store(true, Ordering::SeqCst);
    writer.write_message(&Message::End { dropped: None })?;
    writer.flush()
}

/// Whether a data frame of `len` bytes standing for `covered` bytes of the file is
/// sent at once rather than left in the write buffer: a frame of mostly copies of
/// the basis, a few bytes that let the receiver build much of the file. Left to
/// fill the buffer, they would wait for the next literal (in a file changed in one
/// place, half the file later) while the receiver idles, and it would then build
/// everything it waited for after the sender had read the whole file: 1 GiB with 1
/// MiB overwritten in the middle took 2.4 s instead of 2.0 (medians of 5).
fn goes_at_once(len: usize, covered: u64) -> bool {
    covered > 2 * len as u64
}

/// What the socket thread needs to turn the reading thread's pieces into frames,
/// note what is outstanding, and hand the buffers back.
struct Frames<'a> {
    transfer: &'a Transfer,
    entries: &'a [Entry],
    pending: &'a Pending,
    tally: &'a Tally,
    giver: Giver,
    /// The entry whose data is going out.
    current: std::cell::Cell<u64>,
}

impl Frames<'_> {
    /// The `data` header of entry `index`, from `offset` (`resumed`: after a prefix
    /// the receiver kept), or as a `delta`; the entry is outstanding from here.
    fn start<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        index: u64,
        (offset, resumed): (u64, bool),
        (replaces, delta): (bool, bool),
    ) -> Result<()> {
        let resumed_at = resumed.then_some(offset);
        let path = &*self.entries[index as usize].shown_path();
        self.tally.reporter().current_file(path, resumed_at);
        self.current.set(index);
        self.pending.started.fetch_add(1, Ordering::SeqCst);
        let outstanding = Outstanding {
            replaces,
            delta,
            ..Outstanding::data_from(offset, resumed_at)
        };
        self.pending.lock().insert(index, outstanding);
        writer.write_message(&Message::Data {
            index,
            offset,
            delta,
        })
    }

    fn write<W: Write>(&self, writer: &mut FrameWriter<W>, piece: Piece) -> Result<()> {
        match piece {
            Piece::Start {
                index,
                offset,
                resumed,
                replaces,
                delta,
            } => self.start(writer, index, (offset, resumed), (replaces, delta)),
            Piece::Chunk {
                buffer,
                len,
                covered,
            } => self.chunk(writer, buffer, len, covered),
            Piece::Run { index, offset } => {
                // The run before it ends with the empty frame (section 16.4).
                writer.write_end_of_data()?;
                if let Some(outstanding) = self.pending.lock().get_mut(&index) {
                    outstanding.position = offset;
                }
                writer.write_message(&Message::Data {
                    index,
                    offset,
                    delta: false,
                })
            }
            Piece::End {
                index,
                size,
                digest,
                local_failure,
            } => {
                writer.write_end_of_data()?;
                let done = self.done(index, Sent { size, digest }, local_failure);
                writer.write_message(&done)
            }
            Piece::Packed { mut buffer, files } => {
                for file in files {
                    self.write_packed(writer, &mut buffer, file)?;
                }
                self.giver.give(buffer);
                Ok(())
            }
            Piece::GaveUp { index, why, code } => self.gave_up(writer, index, why, code),
        }
    }

    /// The `error` that gives entry `index` up: the file could not be read.
    fn gave_up<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        index: u64,
        why: String,
        code: ErrorCode,
    ) -> Result<()> {
        self.pending.started.fetch_add(1, Ordering::SeqCst);
        // Not sent, like a file the walk could not read: exit 10, not 7.
        let path = &self.entries[index as usize].named();
        self.tally
            .not_sent(path, &format!("{UNREADABLE}: {why}"), false);
        let message = match code {
            ErrorCode::Io => format!("the sender cannot read it: {why}"),
            _ => why,
        };
        writer.write_message(&Message::Error {
            code,
            message,
            index: Some(index),
        })
    }

    /// Writes one data frame of `len` bytes, standing for `covered` bytes of the file.
    fn chunk<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        mut buffer: Vec<u8>,
        len: usize,
        covered: u64,
    ) -> Result<()> {
        let index = self.current.get();
        if Halt::of(&self.pending.stop, &self.pending.refused, index).refused() {
            // Refused already: the reading thread stops, and what it read ahead
            // stays here (whole frames: a delta's hold whole instructions).
            self.giver.give(buffer);
            return Ok(());
        }
        writer.write_data(&mut buffer, len)?;
        if goes_at_once(len, covered) {
            writer.flush()?;
        }
        if let Some(outstanding) = self.pending.lock().get_mut(&index) {
            outstanding.position += covered;
            outstanding.moved += len as u64;
        }
        self.tally.reporter().advance(covered);
        self.giver.give(buffer);
        Ok(())
    }

    /// Writes one file of a [`Piece::Packed`] (its bytes in its slot of `buffer`) as
    /// the pieces it stands for. One that was read in full is outstanding with what
    /// its answer needs from the start: one lock of what the answer thread shares,
    /// not three.
    fn write_packed<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        buffer: &mut [u8],
        file: Packed,
    ) -> Result<()> {
        let Packed {
            index,
            offset,
            replaces,
            at,
            len,
            size,
            digest,
            local_failure,
        } = file;
        let resumed_at = (offset > 0).then_some(offset);
        let path = &*self.entries[index as usize].shown_path();
        self.tally.reporter().current_file(path, resumed_at);
        self.current.set(index);
        self.pending.started.fetch_add(1, Ordering::SeqCst);
        let sent = Sent { size, digest };
        let read = local_failure.is_none();
        let outstanding = Outstanding {
            facts: read.then_some(sent),
            replaces,
            moved: len as u64,
            ..Outstanding::data_from(offset, resumed_at)
        };
        self.pending.lock().insert(index, outstanding);
        let header = Message::Data {
            index,
            offset,
            delta: false,
        };
        writer.write_message(&header)?;
        if len > 0 {
            writer.write_data_in(&mut buffer[at..at + slot(len)], len)?;
            self.tally.reporter().advance(len as u64);
        }
        writer.write_end_of_data()?;
        let done = match local_failure {
            None => self.done_message(index, sent),
            Some(why) => self.done(index, sent, Some(why)),
        };
        writer.write_message(&done)
    }

    /// The `done` for an entry whose data is complete. Its facts are stored before
    /// it leaves, so its answer always finds them (unless the receiver already
    /// failed the entry, which it may do early).
    fn done(&self, index: u64, sent: Sent, local_failure: Option<String>) -> Message {
        let waiting = match self.pending.lock().get_mut(&index) {
            Some(outstanding) => {
                outstanding.facts = Some(sent);
                outstanding.failed_here = local_failure.is_some();
                true
            }
            None => false,
        };
        if let (Some(why), true) = (local_failure, waiting) {
            // The receiver will refuse this `done` (its size is not the offered
            // one); our own reason is the one worth showing.
            let path = self.entries[index as usize].named();
            self.tally.failed(&path, ErrorCode::Io, why);
        }
        self.done_message(index, sent)
    }

    /// The `done` message for entry `index`, with its MAC.
    fn done_message(&self, index: u64, sent: Sent) -> Message {
        let entry = &self.entries[index as usize];
        let facts = FileFacts {
            index,
            size: sent.size,
            hash: &sent.digest,
            path: &entry.path_bytes(),
        };
        Message::Done {
            index,
            size: sent.size,
            hash: sent.digest.to_hex(),
            mac: self.transfer.done_mac(facts),
        }
    }
}

/// Decodes the basis a decision offers for entry `index` (feature `delta`): only under
/// feature `delta`, for a file of known size planned from offset 0, with valid
/// parameters and exactly `count` sums; or, streamed (`delta_stream` in force too),
/// with neither `count` nor `sums`.
fn wanted(
    index: usize,
    entry: &Entry,
    offset: u64,
    basis: &Signature,
    delta: Deltas<'_>,
) -> Result<Box<Wanted>> {
    let refuse = |why: &str| {
        fail(
            Kind::Protocol,
            format!("the plan's basis for entry {index} {why}"),
        )
    };
    if !delta.listed {
        return Err(refuse("needs feature delta, which is not in force"));
    }
    if offset != 0 || entry.size.is_none() || entry.is_sparse() {
        return Err(refuse("is for an entry that cannot take one"));
    }
    let chunking = Chunking::from_avg(basis.avg)
        .ok_or_else(|| refuse(&format!("has an average chunk size of {}", basis.avg)))?;
    let (sums, stream) = match (basis.stream, &basis.count, &basis.sums, delta.streamed) {
        (true, None, None, Some(streams)) => (Vec::new(), Some((streams.clone(), index as u64))),
        (true, ..) => {
            return Err(refuse(
                "is streamed with a count or sums, or without feature delta_stream",
            ));
        }
        (false, Some(count), Some(sums), _) => (listed_sums(*count, sums).map_err(refuse)?, None),
        (false, ..) => return Err(refuse("lacks its count or sums")),
    };
    Ok(Box::new(Wanted {
        chunking,
        sums,
        head: None,
        stream,
    }))
}

/// The sums a plan lists for a basis: `count` of them (1 … 2^18), exactly its
/// count of 16 hex digits each.
fn listed_sums(count: u64, sums: &str) -> Result<Vec<u64>, &'static str> {
    if count == 0 || count > MAX_CHUNKS {
        return Err("claims no chunks, or too many");
    }
    parse_sums(sums, count).ok_or("has sums that are not its count of 16 hex digits each")
}

fn thread_failed(err: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(err).context("cannot start a thread")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::delta::{COPY_LEN, LITERAL_HEADER};

    #[test]
    fn frames_of_copies_go_at_once_and_literals_wait_to_fill_the_buffer() {
        // One copy standing for 16 MiB, and a few copies with a short literal.
        assert!(goes_at_once(COPY_LEN, 16 << 20));
        assert!(goes_at_once(
            3 * COPY_LEN + LITERAL_HEADER + 100,
            (4 << 20) + 100
        ));
        // A frame of one literal, and a whole file's frame.
        assert!(!goes_at_once(1 << 20, (1 << 20) - LITERAL_HEADER as u64));
        assert!(!goes_at_once(4096, 4096));
    }

    /// What `mirror_options` makes of `asked` for a peer with the feature `mirror`
    /// or without (`in_force`), with `left_out` entries it cannot be offered.
    fn options_for(asked: &Mirror, in_force: bool, left_out: usize) -> Result<Option<Mirror>> {
        let reporter = Reporter::new(crate::ui::report::Style::quiet());
        let options = mirror_options(Some(asked), in_force, left_out, &reporter)?;
        Ok(options.map(Cow::into_owned))
    }

    #[test]
    fn delete_is_withheld_when_entries_cannot_be_offered_and_nothing_else_changes() {
        let asked = Mirror {
            delete: true,
            delete_excluded: true,
            ..Mirror::default()
        };
        let kept = options_for(&asked, true, 0).unwrap().unwrap();
        assert_eq!(kept, asked);
        let withheld = options_for(&asked, true, 3).unwrap().unwrap();
        assert!(!withheld.delete);
        assert_eq!(
            Mirror {
                delete: true,
                ..withheld
            },
            asked
        );
        // A peer that cannot mirror is refused a delete, not sent a plain copy.
        assert!(options_for(&asked, false, 0).is_err());
        let dry_run = Mirror {
            dry_run: true,
            ..Mirror::default()
        };
        assert!(options_for(&dry_run, false, 0).is_err());
        // What needs nothing of the peer goes to one without the feature as a copy.
        assert_eq!(options_for(&Mirror::default(), false, 5).unwrap(), None);
    }
}
