//! The receiver's session: read and verify the offer, answer it with a plan, receive
//! each accepted file into the destination while hashing it, verify it, make it
//! durable and only then acknowledge it.
//!
//! Per-entry problems (an unsafe name, an existing file, a full disk, a bad checksum)
//! are answered for that entry and the session goes on; a peer that breaks the
//! protocol ends the session, and is told why. `plan.rs` decides the offer;
//! `data.rs`, on the socket thread, reads frames and hashes as they arrive (small
//! files whole, handed on in batches: `small.rs`); `disk.rs`, on a thread of its
//! own, writes and acknowledges, while `flusher.rs`, on two more, makes groups of
//! files durable under their names; `delta.rs` builds a file from a delta's
//! instructions and its basis, whose sums `cutter.rs` streams when they were not in
//! the plan; then `make.rs` makes the entries without data (links, special files)
//! and `mirror.rs` removes what a mirroring sender's `--delete` asks. The
//! filesystem is reached only through `fs::sink`.

mod claims;
mod cutter;
mod data;
mod delta;
mod disk;
mod flusher;
mod in_the_way;
mod jobs;
mod make;
mod maker;
mod mirror;
mod plan;
mod shared;
mod small;
mod worker;

use std::io::{Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};

use anyhow::Result;

pub(crate) use self::claims::Claims;
use self::disk::Givers;
use self::plan::Planned;
pub(crate) use self::shared::{Destination, Settings};
use self::shared::{Mirroring, Shared};
use self::small::Batch;
use super::Tally;
use super::offer::{Offered, read_offer};
use crate::error::{Classify, Kind, fail, said_by_peer};
use crate::fs::quota::Account;
use crate::fs::sink::{Basis, TargetDir};
use crate::pool::Pool;
use crate::proto::message::{Dropped, Message};
use crate::proto::negotiated::Feature;
use crate::proto::wire::{Connection, FrameReader, FrameWriter, Hangup, data_buffer};

/// Buffers in flight between the socket thread and the disk thread. Each can hold
/// the largest frame a peer may send, but only what a frame fills costs memory.
const POOL_BUFFERS: usize = 4;

/// Runs one transfer as the receiver on `conn` (a transfer connection's only one,
/// or one `put` or `get` of a request connection). `Ok` once the transfer
/// completed; per-entry failures are in the tally. A session-level failure ends the
/// connection, and is told to the peer where the connection still allows it.
pub(crate) fn session<R: Read, W: Write + Send, C: Hangup>(
    conn: &mut Connection<R, W, C>,
    destination: &Destination,
    claims: &Claims,
    settings: Settings,
    quota: Option<&Account>,
    tally: &mut Tally,
) -> Result<()> {
    let transfer = conn.negotiated.upcoming_transfer();
    // A session of its own on the directory: what it cannot apply is counted apart
    // from any other session writing there at once, and told to its own sender.
    let own = match destination {
        Destination::Dir(target) => {
            Some(Destination::Dir(target.for_session().classify(Kind::Io)?))
        }
        Destination::Stdout => None,
    };
    let destination = own.as_ref().unwrap_or(destination);
    let shared = Shared {
        transfer: &transfer,
        destination,
        claims,
        settings,
        quota,
        delta: conn.negotiated.has(Feature::Delta),
        delta_stream: conn.negotiated.has(Feature::Delta)
            && conn.negotiated.has(Feature::DeltaStream),
        mirror: conn.negotiated.has(Feature::Mirror),
        mirroring: None,
    };
    let receiving = crate::fs::descriptors::Receiving::begin();
    let giving_back = GiveBack(match destination {
        Destination::Dir(target) => Some(target),
        Destination::Stdout => None,
    });
    let result = receive(conn, &shared, tally);
    drop((receiving, giving_back));
    // What it could not apply is said whether or not the session completed: the
    // files of a cut session that arrived were applied (and kept) all the same. A
    // server's sessions say nothing: their clients are told (or were cut).
    if let (Destination::Dir(target), None) = (destination, quota) {
        tally
            .reporter()
            .not_applied_here(&target.unapplied().counts(usize::MAX));
    }
    tally.squeezed(conn.reader.take_squeezed());
    // A refusal in place of the offer (a `get` the server would not serve) began
    // no transfer; anything else did.
    if !matches!(&result, Err(err) if said_by_peer(err) && tally.summary_offered() == 0) {
        conn.negotiated.begin_transfer();
    }
    if let Err(err) = &result {
        super::tell::end_session(conn, err);
    }
    result.map_err(|err| tally.resumable(err, "kept"))
}

/// Gives back the directories its session's target lent it (`fs::sink::loosen`)
/// however the session ends: failed, or unwinding from a panic.
struct GiveBack<'t>(Option<&'t TargetDir>);

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        if let Some(target) = self.0 {
            target.leave_dirs();
        }
    }
}

fn receive<R: Read, W: Write + Send, C>(
    conn: &mut Connection<R, W, C>,
    shared: &Shared<'_>,
    tally: &mut Tally,
) -> Result<()> {
    let mirroring = conn.negotiated.has(Feature::Mirror);
    let Connection { reader, writer, .. } = conn;
    let Offered {
        mut entries,
        mirror,
        xattrs_all,
    } = read_offer(reader, shared.transfer, mirroring)?;
    tally.offered(entries.len(), "received");
    if let (Destination::Dir(target), false) = (shared.destination, xattrs_all) {
        target.offer_names_user_xattrs_only();
    }
    shared.settings.drop_unasked_xattrs(&mut entries);
    if shared.settings.xattrs_unheard(&entries) {
        tally.reporter().no_xattrs_sent();
    }
    let asked = Mirroring::of(mirror.as_ref(), shared, tally)?;
    let shared = &Shared {
        mirroring: Some(&asked),
        ..*shared
    };
    let mut planned = plan::plan(entries, writer, shared, tally, mirror.as_ref())?;
    writer.flush()?;

    let total = planned
        .iter()
        .filter(|p| p.expects_data)
        .map(|p| p.entry.size.map(|size| size - p.resume_offset()))
        .sum::<Option<u64>>();
    tally.reporter_mut().start_bar(total);
    data_phase(reader, writer, &mut planned, shared, tally)?;
    let mut dropped = None;
    if let Destination::Dir(target) = shared.destination {
        finish_tree(&mut planned, target, &asked, writer, shared, tally)?;
        dropped = Some(target.unapplied().counts(planned.len())).filter(Dropped::any);
    }
    writer.write_message(&Message::End { dropped })?;
    writer.flush()
}

/// Receives every accepted file: this thread reads frames, a disk thread writes,
/// commits and answers.
fn data_phase<R: Read, W: Write + Send>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    planned: &mut [Planned<'_>],
    shared: &Shared<'_>,
    tally: &Tally,
) -> Result<()> {
    // The disk thread releases each path, and settles its quota, as soon as its
    // file is done; entries without data keep theirs until they are made.
    let claims = plan::hand_to_disk(planned);
    let planned = &*planned;
    let disk_writer: &mut FrameWriter<W> = writer;
    let (read_result, disk_result) = std::thread::scope(|scope| {
        let (mut pool, buffers) = Pool::with(POOL_BUFFERS, data_buffer);
        let (mut batch, arenas) = Batch::new();
        let unanswered = Arc::new(AtomicBool::new(false));
        let givers = Givers {
            buffers,
            arenas,
            unanswered: unanswered.clone(),
        };
        let (jobs, queue) = mpsc::channel();
        let disk = std::thread::Builder::new()
            .name("disk".into())
            .spawn_scoped(scope, move || {
                disk::run(queue, givers, disk_writer, planned, claims, shared, tally)
            });
        let disk = match disk {
            Ok(disk) => disk,
            Err(err) => {
                return (
                    Err(anyhow::Error::new(err).context("cannot start a thread")),
                    Ok(()),
                );
            }
        };
        let cutter = start_cutter(scope, planned, &jobs, shared);
        let buffers = (&mut pool, &mut batch);
        let read = data::read_entries(reader, planned, buffers, &jobs, shared, tally, &unanswered);
        // Whatever is still being cut is needed no more (a failed session).
        for basis in planned.iter().filter_map(|item| item.basis.as_deref()) {
            basis.stop_cutting();
        }
        drop(jobs); // the disk thread commits what is left and returns
        if let Some(cutter) = cutter {
            let _ = cutter.join();
        }
        let written = disk
            .join()
            .unwrap_or_else(|_| Err(fail(Kind::Io, "the disk thread panicked")));
        (read, written)
    });
    first_failure(disk_result, read_result)
}

/// Why the data phase failed, of what the disk thread and the socket thread say:
/// why the disk thread stopped (standard output closed, answers that could not
/// be written) explains why we did; but where the sender went (the write found the
/// connection lost, not our own timeout), what the reader heard says more than our
/// broken pipe: the sender's own error frame, or how the connection ended.
fn first_failure(written: Result<()>, read: Result<()>) -> Result<()> {
    match (written, read) {
        (Err(unwritten), Err(heard)) if crate::error::connection_lost(&unwritten) => Err(heard),
        (Err(err), _) | (Ok(()), Err(err)) => Err(err),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Starts the cutter (`cutter.rs`) when the plan streams a basis's sums.
fn start_cutter<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    planned: &'scope [Planned<'_>],
    jobs: &mpsc::Sender<disk::Job>,
    shared: &'scope Shared<'_>,
) -> Option<std::thread::ScopedJoinHandle<'scope, ()>> {
    let Destination::Dir(target) = shared.destination else {
        return None;
    };
    let streamed = planned.iter().filter_map(|item| item.basis.as_deref());
    if !streamed.clone().any(|basis| basis.streamed()) {
        return None;
    }
    let to_disk = jobs.clone();
    let cutting = move || cutter::run(planned, target, &to_disk, shared);
    let started = std::thread::Builder::new()
        .name("cutter".into())
        .spawn_scoped(scope, cutting);
    if started.is_err() {
        // No thread to cut with: every basis ends at once, without sums (the
        // sender then sends literals).
        streamed.for_each(Basis::stop_cutting);
        cutter::run(planned, target, jobs, shared);
    }
    started.ok()
}

/// Once the files settled: links and special files made (their errors answered
/// before the `deleted` report, so that no entry is outstanding when it comes),
/// then what `--delete` removes, then directory modes and times (what could not be
/// applied is said by `session`). A dry run makes, removes and applies nothing.
fn finish_tree<W: Write>(
    planned: &mut [plan::Planned],
    target: &TargetDir,
    asked: &Mirroring,
    writer: &mut FrameWriter<W>,
    shared: &Shared<'_>,
    tally: &Tally,
) -> Result<()> {
    if !asked.dry_run {
        make::make_all(planned, target, shared, writer, tally)?;
    }
    asked.prune(writer, shared, target, planned, tally)?;
    if !asked.dry_run {
        // Their own modes first, then the offered ones where there are.
        target.leave_dirs();
        disk::finish_dirs(planned, target, shared.settings.names, tally.reporter());
    }
    Ok(())
}
