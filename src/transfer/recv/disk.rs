//! The receiver's disk thread: it writes each arriving file where it goes (a part
//! file, or standard output), has verified files made durable in groups (a flush
//! for the group's data, its names, a flush for the names; on the flushing
//! threads, `flusher.rs`, while this one writes the next groups), and only then
//! sends their acknowledgements, so an `ok` always means "durable under its final
//! name". It owns the writing half of the connection while data flows.
//!
//! Grouping is what makes many small files cheap: 10 000 files cost a dozen
//! filesystem flushes instead of 20 000 fsyncs. One flush serves two groups (the
//! names of one and the data of a later one), since `syncfs` flushes the whole
//! filesystem, other people's writes included, and on a busy disk that is most of
//! the cost: 10 000 files of 4 KiB spent 2.6 s of 6.2 s in 20 flushes here. A
//! large file is committed as soon as it is complete, and an idle moment commits
//! whatever is waiting, flushing its names at once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::io::Errno;

use super::claims::Claim;
use super::flusher::{self, Flush, Flushed, Flusher};
use super::in_the_way;
pub(crate) use super::jobs::{Arrived, Job, SmallFile, disk_gone};
use super::maker::{self, Helper, Made, make_all};
use super::plan::Planned;
use super::shared::{Destination, Shared};
use crate::error::{Classify, Kind};
use crate::escape::Named;
use crate::fs::Refusal;
use crate::fs::home::Footprint;
use crate::fs::path::{Names, check_path_bytes};
use crate::fs::quota::Reservation;
use crate::fs::sink::{PartFile, Resolver, Resume, StdoutSink, TargetDir};
use crate::pool::Giver;
use crate::proto::hash::{Digest, Hasher};
use crate::proto::message::{EntryKind, ErrorCode, Message};
use crate::proto::negotiated::FileFacts;
use crate::proto::wire::FrameWriter;
use crate::transfer::Tally;
use crate::ui::report::{Change, FileOutcome, Reporter};

/// Files made durable together, at most. Measured with 10 000 files of 4 KiB:
/// each group costs two filesystem flushes (about 3 ms here), and 256 per group
/// spent 0.3 s of 1.1 s flushing.
const GROUP_FILES: usize = 1024;
/// Bytes made durable together, at most; a file this large is committed alone.
const GROUP_BYTES: u64 = 32 << 20;
/// A group waiting this long without new work is committed anyway.
const GROUP_WAIT: Duration = Duration::from_millis(100);
/// Files unanswered this long are made durable, named and answered, however busy
/// the connection: a slow, steady stream of small files (or one large file
/// streaming behind them) would otherwise leave them unnamed and unanswered for
/// minutes, and a cut would lose them all (a small file is never resumed). At full
/// speed a group fills far sooner (1 024 files of 4 KiB in about 20 ms here), and
/// this costs one wait for the flushes a second.
const GROUP_AGE: Duration = Duration::from_secs(1);
/// Groups the flushing threads hold at most: one being named while the next
/// one's data is flushed, and one more so that a slow flush does not stop the
/// disk thread at once. Measured with 200 000 files of 1-2 KiB (medians of 3, a
/// fresh filesystem each run): 6.2 s with one thread flushing and naming one
/// group at a time, 5.7 s with these two threads and three groups (one, two or
/// three made no difference the noise let one see with 10 000 files of 4 KiB).
const GROUPS_IN_FLIGHT: usize = 3;

/// Descriptors a group may hold open (unnamed files stay open until linked in):
/// [`GROUP_FILES`], or less where this session's share of what the process may
/// open is small (`fs::descriptors`: shared by every session the process runs).
/// The group being filled and the [`GROUPS_IN_FLIGHT`] hold two shares between
/// them.
fn group_descriptors() -> usize {
    let groups = GROUPS_IN_FLIGHT + 1;
    (crate::fs::descriptors::share(GROUP_FILES * groups / 2) * 2 / groups).max(1)
}

/// A sparse entry being written (section 16.4): its hash so far, and where the
/// run being written starts and has reached.
struct Runs {
    hasher: Hasher,
    start: u64,
    at: u64,
}

impl Runs {
    /// Hashes the run just written, read back from `landing`: its offset and
    /// length come before its bytes, and its length is known only now.
    fn close_run(&mut self, landing: &mut Landing) {
        self.hasher.run_header(self.start, self.at - self.start);
        let range = self.start..self.at;
        let hasher = &mut self.hasher;
        landing.on_part(|part| part.hash_back(range, hasher));
    }
}

/// A verified file waiting for its group to be made durable.
struct Waiting {
    index: usize,
    part: PartFile,
    arrived: Arrived,
}

/// What goes back to the socket thread: data buffers and small-file arenas for its
/// pools, and word that answers can no longer be written (the sender takes none:
/// gone, or stalled past the idle timeout), on which it stops reading.
pub(crate) struct Givers {
    pub(crate) buffers: Giver,
    pub(crate) arenas: Giver,
    pub(crate) unanswered: Arc<AtomicBool>,
}

/// Runs the disk thread until the socket thread hangs up, then commits what is left.
/// An error here (standard output closed) ends the session. Groups are made durable
/// by flushing threads of its own (`flusher.rs`), up to [`GROUPS_IN_FLIGHT`] at a
/// time, while this one writes the next.
pub(crate) fn run<W: Write>(
    jobs: Receiver<Job>,
    giver: Givers,
    writer: &mut FrameWriter<W>,
    planned: &[Planned],
    holds: Vec<Holds<'_>>,
    shared: &Shared<'_>,
    tally: &Tally,
) -> Result<()> {
    std::thread::scope(|scope| {
        let flusher = match shared.destination {
            Destination::Dir(target) => {
                let overwrite = shared.settings.overwrite;
                let started = flusher::start(scope, target, overwrite);
                Some(started.context("cannot start a thread")?)
            }
            Destination::Stdout => None,
        };
        let answers = Answers {
            flusher,
            planned,
            holds: RefCell::new(holds),
            shared,
            tally,
            lost: RefCell::new(None),
            ending: RefCell::new(None),
            unanswered: &giver.unanswered,
        };
        // Without a helper (standard output, or no thread to be had) the disk
        // thread makes every small file itself.
        let helper = match shared.destination {
            Destination::Dir(target) => maker::start(scope, target, planned, shared).ok(),
            Destination::Stdout => None,
        };
        let worked = work(&jobs, &giver, writer, &answers, helper);
        let lost = answers.lost.borrow_mut().take();
        worked.and(lost.map_or(Ok(()), Err))
        // The helper went at the end of `work`, and `answers` goes here: each waits
        // for its threads to end, before the claims in `answers` are let go.
    })
}

/// [`run`]'s loop: every job in turn, an idle moment or the end committing all.
fn work<W: Write>(
    jobs: &Receiver<Job>,
    giver: &Givers,
    writer: &mut FrameWriter<W>,
    answers: &Answers<'_, '_, '_>,
    helper: Option<Helper<'_>>,
) -> Result<()> {
    let mut desk = Desk {
        resolver: match answers.shared.destination {
            Destination::Dir(target) => Some(target.resolver()),
            Destination::Stdout => None,
        },
        open: None,
        runs: None,
        group: Group::default(),
        helper,
        helping: false,
    };
    loop {
        let job = match jobs.recv_timeout(GROUP_WAIT) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                desk.take_helped(answers, writer, giver)?;
                answers.commit(&mut desk.group, writer, true)?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                desk.keep_cut_file(answers.tally);
                desk.take_helped(answers, writer, giver)?;
                return answers.commit(&mut desk.group, writer, true);
            }
        };
        if !matches!(job, Job::Small { .. } | Job::Sums { .. }) {
            // Everything else after the small files before it (sums, which no
            // file waits for, go at once).
            desk.take_helped(answers, writer, giver)?;
        }
        desk.apply(job, answers, writer, giver)?;
        if desk
            .group
            .since
            .is_some_and(|since| since.elapsed() >= GROUP_AGE)
        {
            // Everything made durable, named and answered, at most once a second.
            answers.commit(&mut desk.group, writer, true)?;
        }
        let ending = answers.ending.borrow_mut().take();
        if let Some(refusal) = ending {
            return desk.end_for_good(refusal, answers, writer, giver);
        }
    }
}

/// What the disk thread keeps between jobs: the resolver names are reached with
/// (none for standard output), the entry being written and the group of verified
/// files waiting to be made durable.
struct Desk<'t, 's> {
    resolver: Option<Resolver<'t>>,
    open: Option<(usize, Landing)>,
    /// The open entry's runs, when it is sparse.
    runs: Option<Runs>,
    group: Group,
    /// Makes every other batch of small files (`maker.rs`).
    helper: Option<Helper<'s>>,
    /// The helper is making a batch, which comes before any other work.
    helping: bool,
}

impl Desk<'_, '_> {
    /// Ends the session after `refusal`, which leaves it nothing to do (a reload
    /// took its user's rights to the home): the files received so far are
    /// committed as ever (naming one after the reload is refused, as a write is)
    /// and answered, then the session's error frame, `auth` as for a request after
    /// a reload, stops the sender, which would otherwise send everything left only
    /// to have each file refused.
    fn end_for_good<W: Write>(
        &mut self,
        refusal: Refusal,
        answers: &Answers<'_, '_, '_>,
        writer: &mut FrameWriter<W>,
        giver: &Givers,
    ) -> Result<()> {
        self.take_helped(answers, writer, giver)?;
        answers.commit(&mut self.group, writer, true)?;
        Err(crate::error::refused(ErrorCode::Auth, refusal.message))
    }

    /// Writes the next bytes of the open entry, charged to its quota first if it
    /// is a stream.
    fn write(&mut self, bytes: &[u8], answers: &Answers<'_, '_, '_>) -> Result<()> {
        let Some((index, landing)) = &mut self.open else {
            return Ok(());
        };
        answers.charge_stream(*index, landing, bytes.len() as u64);
        if let Some(runs) = &mut self.runs {
            runs.at += bytes.len() as u64;
        }
        landing.write(bytes)
    }

    /// Drops the open entry's data, which must not be kept (the socket thread
    /// found its data untrustworthy); one answered already was settled then.
    fn discard(&mut self, answers: &Answers<'_, '_, '_>) {
        self.runs = None;
        if let Some((index, landing)) = self.open.take()
            && !matches!(landing, Landing::Refused)
        {
            landing.discard();
            answers.settle(index, Settled::Unchanged);
        }
    }

    /// Answers the open entry at once if its part file could not be made or
    /// written (a full disk, a file size limit, a quota a stream outgrew): its data
    /// is dropped from here on, and a sender that hears this early stops sending it
    /// (section 5 lets a receiver answer before `done`), where it would otherwise
    /// stream the rest of a file of any size for nothing.
    fn answer_failed<W: Write>(
        &mut self,
        answers: &Answers<'_, '_, '_>,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        match &mut self.open {
            Some((index, landing)) => match landing.take_refusal() {
                Some(refusal) => answers.refuse(*index, refusal, writer),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Ends the open sparse entry's run and starts the next at `offset`.
    fn next_run(&mut self, offset: u64) {
        if let (Some(runs), Some((_, landing))) = (&mut self.runs, &mut self.open) {
            runs.close_run(landing);
            landing.on_part(|part| part.seek_to(offset));
            (runs.start, runs.at) = (offset, offset);
        }
    }

    /// Ends the open sparse entry at `size` bytes (the holes after its last run);
    /// its hash, unless it could not be written.
    fn seal_runs(&mut self, size: u64) -> Option<Digest> {
        let (mut runs, (_, landing)) = (self.runs.take()?, self.open.as_mut()?);
        runs.close_run(landing);
        landing.on_part(|part| part.set_len(size));
        runs.hasher.runs_end(size);
        matches!(landing, Landing::Part(Ok(_))).then(|| runs.hasher.finish())
    }

    /// The session ended with a file still open (the connection was cut): its data
    /// stays as partial data, and the summary says how much.
    fn keep_cut_file(&mut self, tally: &Tally) {
        if let Some((_, landing)) = self.open.take()
            && let Settled::Partial(bytes) = landing.left_behind()
        {
            tally.kept(bytes);
        }
    }

    /// Opens where entry `index`'s data goes, from `offset` (or built from a delta).
    fn open(
        &mut self,
        index: usize,
        start: (u64, bool),
        answers: &Answers<'_, '_, '_>,
    ) -> Result<()> {
        let item = &answers.planned[index];
        let offset = start.0;
        let mut landing = open_landing(item, start, self.resolver.as_mut(), answers.shared)?;
        self.runs = item.entry.is_sparse().then(|| {
            landing.on_part(|part| part.seek_to(offset));
            Runs {
                hasher: answers.shared.transfer.hash.hasher(),
                start: offset,
                at: offset,
            }
        });
        self.open = Some((index, landing));
        Ok(())
    }

    /// Makes the small files of a [`Job::Small`] (see `maker.rs`): hands the batch
    /// to the helper when it is free, else makes it here while the helper makes the
    /// one before, and then places both in order.
    fn small<W: Write>(
        &mut self,
        (arena, files): (Vec<u8>, Vec<SmallFile>),
        answers: &Answers<'_, '_, '_>,
        writer: &mut FrameWriter<W>,
        giver: &Givers,
    ) -> Result<()> {
        if let (Some(helper), false) = (&self.helper, self.helping) {
            self.helping = helper.ask((arena, files));
            return match self.helping {
                true => Ok(()),
                false => Err(helper_gone()),
            };
        }
        let resolver = self
            .resolver
            .as_mut()
            .expect("small files go into a directory");
        let made = make_all(&arena, files, resolver, answers.planned, answers.shared);
        giver.arenas.give(arena);
        self.take_helped(answers, writer, giver)?;
        self.place(made, answers, writer)
    }

    /// Takes the batch the helper made, if it is making one, and places it.
    fn take_helped<W: Write>(
        &mut self,
        answers: &Answers<'_, '_, '_>,
        writer: &mut FrameWriter<W>,
        giver: &Givers,
    ) -> Result<()> {
        let Some(helper) = self.helper.as_ref().filter(|_| self.helping) else {
            return Ok(());
        };
        self.helping = false;
        let (arena, made) = helper.answer().ok_or_else(helper_gone)?;
        giver.arenas.give(arena);
        self.place(made, answers, writer)
    }

    /// Puts made small files in the group (or answers why one was refused).
    fn place<W: Write>(
        &mut self,
        made: Vec<Made>,
        answers: &Answers<'_, '_, '_>,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        for (index, made) in made {
            match made {
                Ok((arrived, part)) => {
                    answers.join_group(index, (arrived, part), &mut self.group, writer)?;
                }
                Err(refusal) => answers.refuse(index, refusal, writer)?,
            }
        }
        Ok(())
    }

    /// Does one job of the socket thread's; an error ends the session.
    fn apply<W: Write>(
        &mut self,
        job: Job,
        answers: &Answers<'_, '_, '_>,
        writer: &mut FrameWriter<W>,
        giver: &Givers,
    ) -> Result<()> {
        match job {
            Job::Open {
                index,
                offset,
                delta,
            } => {
                self.open(index, (offset, delta), answers)?;
                self.answer_failed(answers, writer)?;
            }
            Job::Write { buffer, range } => {
                self.write(&buffer[range], answers)?;
                giver.buffers.give(buffer);
                self.answer_failed(answers, writer)?;
            }
            Job::Small { arena, files } => self.small((arena, files), answers, writer, giver)?,
            Job::Run { offset } => {
                self.next_run(offset);
                self.answer_failed(answers, writer)?;
            }
            Job::Seal { size, reply } => {
                let _ = reply.send(self.seal_runs(size));
            }
            Job::Discard => self.discard(answers),
            Job::Sums {
                index,
                ends,
                sums,
                mac,
            } => {
                let item = &answers.planned[index];
                answers.write(writer, |writer| {
                    send_sums(writer, item, index, (ends, sums), mac)
                });
            }
            Job::GaveUp { index, outcome } => {
                answers.tally.record(*outcome);
                answers.settle(index, Settled::Unchanged);
            }
            Job::Close { index, verdict } => {
                let (_, landing) = self
                    .open
                    .take()
                    .expect("the socket thread opens before it closes");
                answers.close(index, verdict, landing, &mut self.group, writer)?;
            }
        }
        Ok(())
    }
}

/// Records the next chunks of entry `index`'s streamed basis, then sends their
/// sums: a copy may name a chunk from the moment its sum leaves, never before.
fn send_sums<W: Write>(
    writer: &mut FrameWriter<W>,
    item: &Planned,
    index: usize,
    (ends, sums): (Vec<u64>, Vec<u64>),
    mac: Option<String>,
) -> Result<()> {
    if let Some(basis) = &item.basis {
        basis.record(&ends);
    }
    writer.write_message(&Message::Sums {
        index: index as u64,
        sums: crate::proto::delta::sums_hex(&sums),
        end: mac.is_some(),
        mac,
    })?;
    writer.flush()
}

/// Verified files waiting to be made durable together, their bytes and the
/// descriptors they hold; the groups the flushing threads are committing; and the
/// files of the groups before, under their final names, waiting for the flush
/// that makes those names durable.
#[derive(Default)]
struct Group {
    files: Vec<Waiting>,
    /// When the oldest file not yet answered joined (in `files`, in flight or
    /// named and waiting for the flush of its name).
    since: Option<Instant>,
    bytes: u64,
    descriptors: usize,
    /// Groups asked to be committed and not yet answered, oldest first.
    in_flight: VecDeque<Vec<(usize, Arrived)>>,
    /// Named files by the number of their group, oldest first.
    named: VecDeque<(usize, Vec<(usize, Arrived)>)>,
    /// The number of the oldest group in flight: groups are numbered from 0 in
    /// the order asked, and this many answers were taken.
    numbered: usize,
}

/// What an entry holds until it is done: its claim on its path (released just
/// before its answer) and its room in the user's quota (settled when its fate on
/// disk is known).
pub(crate) type Holds<'c> = (Option<Claim<'c>>, Option<Box<Reservation>>);

/// What an entry left on disk, for its quota.
enum Settled {
    /// Nothing changed (given up before data, or removed again).
    Unchanged,
    /// Partial data of this many bytes stays for a later session.
    Partial(u64),
    /// The whole file of this many bytes is in place.
    Whole(u64),
}

/// Answering entries: what that needs besides the writer.
struct Answers<'a, 'c, 's> {
    /// Makes groups durable (none for standard output). First, so that it is
    /// dropped first: its threads have stopped naming files before the claims on
    /// their paths (`holds`) are let go.
    flusher: Option<Flusher<'s>>,
    planned: &'a [Planned<'c>],
    holds: RefCell<Vec<Holds<'c>>>,
    shared: &'a Shared<'a>,
    tally: &'a Tally,
    /// Why answers could not be written (the connection failed): kept for the
    /// end, while what arrived whole is still committed and counted.
    lost: RefCell<Option<anyhow::Error>>,
    /// A refusal after which nothing of the session can succeed, answered
    /// already: the session ends with it after the job at hand.
    ending: RefCell<Option<Refusal>>,
    /// Set with `lost`: the socket thread stops reading (see [`Givers`]).
    unanswered: &'a AtomicBool,
}

/// The flushing threads stopped; they have nothing to say why (a panic).
fn flusher_gone() -> anyhow::Error {
    crate::error::fail(Kind::Io, "the flushing threads stopped")
}

/// The helper thread stopped; it has nothing to say why (a panic).
fn helper_gone() -> anyhow::Error {
    crate::error::fail(Kind::Io, "the thread making small files stopped")
}

impl Answers<'_, '_, '_> {
    /// Handles a closed entry: answers a failure or a stream at once, and places a
    /// file that arrived (see [`Answers::place_arrived`]).
    fn close<W: Write>(
        &self,
        index: usize,
        verdict: Result<Arrived, Refusal>,
        landing: Landing,
        group: &mut Group,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        let answer = match (verdict, landing) {
            // Answered when it failed; what the sender sent after that is dropped.
            (_, Landing::Refused) => return Ok(()),
            (Err(refusal), landing) => {
                // What failed verification is removed; what the sender gave up on
                // is kept for a later session to resume.
                if matches!(refusal.code, ErrorCode::Checksum | ErrorCode::Mac) {
                    landing.discard();
                    self.settle(index, Settled::Unchanged);
                } else {
                    self.settle(index, landing.left_behind());
                }
                Err(refusal)
            }
            (Ok(_), Landing::Part(Err(refusal))) => return self.refuse(index, refusal, writer),
            (Ok(arrived), Landing::Stdout(_)) => Ok(arrived),
            (Ok(arrived), Landing::Part(Ok(part))) if arrived.kept => {
                part.discard(); // empty: nothing of a result that is the old file
                let kept = self.keep_old(index).map(|()| arrived);
                self.settle(index, Settled::Unchanged);
                kept
            }
            (Ok(arrived), Landing::Part(Ok(part))) => {
                return self.place_arrived(index, (arrived, part), group, writer);
            }
        };
        self.answer_now(writer, index, answer);
        Ok(())
    }

    /// Places a file that arrived whole and verified: commits a large one alone and
    /// answers it, puts a small one in the group; answers at once why it could not.
    fn place_arrived<W: Write>(
        &self,
        index: usize,
        (arrived, mut part): (Arrived, PartFile),
        group: &mut Group,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        let entry = &self.planned[index].entry;
        if let Err(refusal) = self.make_room(index, &mut part) {
            part.discard();
            return self.refuse(index, refusal, writer);
        }
        if arrived.size >= GROUP_BYTES {
            // Alone: fsync of the file itself, no group to wait for.
            let result = part.commit(entry, self.shared.settings.overwrite);
            self.settle(index, settled_by(&result, arrived.size));
            self.answer_now(writer, index, result.map(|()| arrived));
            return Ok(());
        }
        if let Err(refusal) = part.seal(entry) {
            return self.refuse(index, refusal, writer);
        }
        self.join_group(index, (arrived, part), group, writer)
    }

    /// Answers entry `index` with `refusal` at once, having changed nothing of its
    /// quota's; `Ok` so that a caller can return it.
    fn refuse<W: Write>(
        &self,
        index: usize,
        refusal: Refusal,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        self.settle(index, Settled::Unchanged);
        self.answer_now(writer, index, Err(refusal));
        Ok(())
    }

    /// A delta that rebuilt the old file byte for byte ([`Arrived::kept`]): the old
    /// file stays (the same inode, durable already), given the offered metadata
    /// (said as `attrs` where that changed it), unless it changed since it was read
    /// (`busy`, as any basis).
    fn keep_old(&self, index: usize) -> Result<(), Refusal> {
        let item = &self.planned[index];
        let Destination::Dir(target) = self.shared.destination else {
            unreachable!("a basis is offered only for a directory");
        };
        let basis = item.basis.as_deref().expect("a delta has its basis");
        let (path, bytes) = (item.entry.named(), item.entry.path_bytes());
        let components = check_path_bytes(&bytes, self.shared.settings.names)
            .expect("planned paths passed the policy");
        let attrs = target
            .resolver()
            .keep_basis(&path, &components, basis, &item.entry)?;
        if attrs {
            self.tally.change(Change::Attrs, &path, 0, None);
        }
        Ok(())
    }

    /// A verified file that replaces a directory: the directory emptied now, and
    /// replaced when the file is named (`in_the_way.rs`).
    fn make_room(&self, index: usize, part: &mut PartFile) -> Result<(), Refusal> {
        let item = &self.planned[index];
        let Destination::Dir(target) = self.shared.destination else {
            return Ok(());
        };
        if !item.type_change {
            return Ok(());
        }
        let bytes = item.entry.path_bytes();
        let components = check_path_bytes(&bytes, self.shared.settings.names)
            .expect("planned paths passed the policy");
        let at = (&components[..], &*item.entry.shown_path());
        in_the_way::make_room(part, self.shared, target, at, item.dir_seen)
    }

    /// Puts a sealed file in the group, which is committed once it is full.
    fn join_group<W: Write>(
        &self,
        index: usize,
        (arrived, part): (Arrived, PartFile),
        group: &mut Group,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        group.descriptors += usize::from(part.holds_descriptor());
        group.since.get_or_insert_with(Instant::now);
        group.files.push(Waiting {
            index,
            part,
            arrived,
        });
        group.bytes += arrived.size;
        if group.files.len() >= GROUP_FILES
            || group.bytes >= GROUP_BYTES
            || group.descriptors >= group_descriptors()
        {
            self.commit(group, writer, false)?;
        }
        Ok(())
    }

    /// Hands the waiting group to the flushing threads (`flusher.rs`), which hold
    /// at most [`GROUPS_IN_FLIGHT`]: the answers already there are taken first, and
    /// the oldest is waited for when that many are out. With `all` (an idle
    /// moment, the end) it waits for every group and flushes the last names too.
    fn commit<W: Write>(
        &self,
        group: &mut Group,
        writer: &mut FrameWriter<W>,
        all: bool,
    ) -> Result<()> {
        let Some(flusher) = &self.flusher else {
            return Ok(()); // only part files wait in groups
        };
        if !group.files.is_empty() {
            while let Some(flushed) = flusher.answer_ready().map_err(|()| flusher_gone())? {
                self.take_answer(group, flushed, writer)?;
            }
            while group.in_flight.len() >= GROUPS_IN_FLIGHT {
                self.collect(flusher, group, writer)?;
            }
            let (done, parts): (Vec<_>, Vec<_>) = std::mem::take(&mut group.files)
                .into_iter()
                .map(|waiting| ((waiting.index, waiting.arrived), waiting.part))
                .unzip();
            group.bytes = 0;
            group.descriptors = 0;
            if !flusher.ask(Flush::Group(parts)) {
                return Err(flusher_gone());
            }
            group.in_flight.push_back(done);
        }
        if all {
            while !group.in_flight.is_empty() {
                self.collect(flusher, group, writer)?;
            }
            if !group.named.is_empty() {
                let flushed = match flusher.ask(Flush::Names) {
                    true => flusher.answer().ok_or_else(flusher_gone)?,
                    false => return Err(flusher_gone()),
                };
                self.answer_named(group, flushed.before, flushed.named_before, writer)?;
            }
            group.since = None; // every file so far answered
        }
        self.write(writer, FrameWriter::flush);
        Ok(())
    }

    /// Waits for the oldest group the flushing threads hold (see
    /// [`Answers::take_answer`]).
    fn collect<W: Write>(
        &self,
        flusher: &Flusher<'_>,
        group: &mut Group,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        let flushed = flusher.answer().ok_or_else(flusher_gone)?;
        self.take_answer(group, flushed, writer)
    }

    /// The answer for the oldest group in flight: the names its flush covered are
    /// durable now and are answered; its own files are named (or answered with why
    /// not).
    fn take_answer<W: Write>(
        &self,
        group: &mut Group,
        flushed: Flushed,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        let Flushed {
            before,
            named_before,
            results,
        } = flushed;
        let done = group.in_flight.pop_front().ok_or_else(flusher_gone)?;
        self.answer_named(group, before, named_before, writer)?;
        let mut named = Vec::with_capacity(done.len());
        for ((index, arrived), result) in done.into_iter().zip(results) {
            match result {
                Ok(()) => named.push((index, arrived)),
                Err(refusal) => {
                    self.settle(index, Settled::Unchanged);
                    self.send(writer, index, Err(refusal));
                }
            }
        }
        group.named.push_back((group.numbered, named));
        group.numbered += 1;
        Ok(())
    }

    /// Answers the named files of every group numbered below `named_before`, once
    /// the flush that covered their names is over (`flushed`).
    fn answer_named<W: Write>(
        &self,
        group: &mut Group,
        flushed: Result<(), Errno>,
        named_before: usize,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        let covered = group
            .named
            .iter()
            .take_while(|(number, _)| *number < named_before)
            .count();
        for (index, arrived) in group.named.drain(..covered).flat_map(|(_, files)| files) {
            let path = &self.planned[index].entry.path;
            let result = flushed
                .map(|()| arrived)
                .map_err(|err| Refusal::io(path, "cannot flush its name to disk", err));
            let settled = match &result {
                Ok(_) => Settled::Whole(arrived.size),
                Err(_) => Settled::Unchanged,
            };
            self.settle(index, settled);
            self.send(writer, index, result);
        }
        Ok(())
    }

    /// Settles entry `index`'s quota with what it left on disk (nothing to do
    /// without a quota).
    fn settle(&self, index: usize, settled: Settled) {
        let Some(reservation) = self.holds.borrow_mut()[index].1.take() else {
            return;
        };
        let replaced = self.planned[index].replaces;
        let after = match settled {
            Settled::Unchanged => replaced,
            Settled::Partial(bytes) => Footprint {
                bytes: replaced.bytes + bytes,
                files: replaced.files + 1,
            },
            Settled::Whole(bytes) => Footprint { bytes, files: 1 },
        };
        reservation.settle(after);
    }

    /// Charges the bytes of a stream (size unknown when planned) to the quota as
    /// they arrive; one that crosses it fails with `quota`, and nothing of it stays.
    fn charge_stream(&self, index: usize, landing: &mut Landing, bytes: u64) {
        let entry = &self.planned[index].entry;
        if entry.size.is_some() {
            return; // reserved whole when planned
        }
        if let Some(reservation) = &mut self.holds.borrow_mut()[index].1
            && let Err(refusal) = reservation.charge(&entry.shown_path(), bytes)
        {
            std::mem::replace(landing, Landing::Part(Err(refusal))).discard();
        }
    }

    /// Answers entry `index` and flushes (see [`Answers::write`] for a write that
    /// fails).
    fn answer_now<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        index: usize,
        outcome: Result<Arrived, Refusal>,
    ) {
        self.send(writer, index, outcome);
        self.write(writer, FrameWriter::flush);
    }

    /// Tallies entry `index` and sends its `ok` (with its MAC) or `error`, unless
    /// writing failed before (see [`Answers::write`]).
    fn send<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        index: usize,
        outcome: Result<Arrived, Refusal>,
    ) {
        let entry = &self.planned[index].entry;
        let (path, bytes) = (entry.named(), entry.path_bytes());
        // The file is final (or gone) now: another session may take its path, and
        // whoever sees this acknowledgement finds it there.
        self.holds.borrow_mut()[index].0 = None;
        let transfer = self.shared.transfer;
        let reply = match outcome {
            Ok(arrived) => {
                self.planned[index].arrived.store(true, Ordering::Relaxed);
                let facts = FileFacts {
                    index: index as u64,
                    size: arrived.size,
                    hash: &arrived.digest,
                    path: &bytes,
                };
                let mac = transfer.ok_mac(facts);
                let kept = arrived.kept;
                self.tally_arrived(index, path, arrived);
                Message::Ok {
                    index: index as u64,
                    mac,
                    kept,
                }
            }
            Err(mut refusal) => {
                if refusal.ends_session {
                    self.ending
                        .borrow_mut()
                        .get_or_insert_with(|| refusal.clone());
                }
                if matches!(self.shared.destination, Destination::Stdout) {
                    refusal.message.push_str(
                        "; the bytes already written to standard output are NOT verified: discard them",
                    );
                }
                self.tally.failed(&path, refusal.code, refusal.to_string());
                Message::Error {
                    code: refusal.code,
                    message: refusal.message,
                    index: Some(index as u64),
                }
            }
        };
        self.write(writer, |writer| writer.write_message(&reply));
    }

    /// Writes to the sender unless writing failed before; a failure is kept (see
    /// `lost`) and nothing more is written: the files that arrived whole are still
    /// committed and counted, so that the summary says what is on disk.
    fn write<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        write: impl FnOnce(&mut FrameWriter<W>) -> Result<()>,
    ) {
        let mut lost = self.lost.borrow_mut();
        if lost.is_none()
            && let Err(err) = write(writer)
        {
            *lost = Some(err);
            // A sender that takes no answers gets no more of our time either.
            self.unanswered.store(true, Ordering::SeqCst);
        }
    }
}

impl Answers<'_, '_, '_> {
    /// Tallies entry `index`, which arrived and verified: new, replaced or built by
    /// a delta; one whose delta was the old file itself stayed, as a `same` one.
    fn tally_arrived(&self, index: usize, path: Named, arrived: Arrived) {
        if arrived.kept {
            return self.tally.record(FileOutcome::Same {
                path,
                kind: EntryKind::File,
                size: Some(arrived.size),
                verified: Some((self.shared.transfer.hash, arrived.digest)),
            });
        }
        let item = &self.planned[index];
        let replaced = item.replaces.files > 0 || item.replaces_other;
        let change = match (arrived.delta, replaced) {
            (true, _) => Change::Delta,
            (false, false) => Change::New,
            (false, true) => Change::Replaced,
        };
        self.tally.change(change, &path, arrived.size, None);
        self.tally.record(FileOutcome::Verified {
            path,
            size: arrived.size,
            moved: arrived.moved,
            digest: arrived.digest,
            hash: self.shared.transfer.hash,
            resumed_at: arrived.resumed_at,
        });
    }
}

/// Where entry `item`'s data starting at `offset` (or built from a delta) goes.
fn open_landing(
    item: &Planned,
    (offset, delta): (u64, bool),
    resolver: Option<&mut Resolver<'_>>,
    shared: &Shared<'_>,
) -> Result<Landing> {
    Ok(match resolver {
        Some(resolver) => {
            let path = item.entry.shown_path();
            let bytes = item.entry.path_bytes();
            let components = check_path_bytes(&bytes, shared.settings.names)
                .expect("planned paths passed the policy");
            let resume = match item.entry.size {
                // A sparse entry or a delta goes to a fresh temporary: it is never
                // resumed.
                Some(_) if item.entry.is_sparse() || delta => None,
                Some(size) if shared.settings.resumes(size) => Some(Resume { size, offset }),
                _ => None,
            };
            Landing::Part(resolver.create_part(&path, &components, resume))
        }
        None => Landing::Stdout(
            StdoutSink::open()
                .context("cannot write to standard output")
                .classify(Kind::Io)?,
        ),
    })
}

/// Where one file's bytes go while it arrives.
enum Landing {
    /// A part file in the target directory, or why there is none (its data is
    /// then read and dropped, to stay in step with the sender).
    Part(Result<PartFile, Refusal>),
    /// Standard output: a write failure there ends the session.
    Stdout(StdoutSink),
    /// A part file that failed and whose entry is answered already (see
    /// `Desk::answer_failed`): the rest of its data is read and dropped.
    Refused,
}

impl Landing {
    /// Writes the next bytes. A part file that cannot be written becomes the
    /// refusal for its entry (the rest of its data is dropped); standard output
    /// that cannot be written ends the session.
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Landing::Part(Ok(part)) => {
                if let Err(refusal) = part.write_all(bytes) {
                    // Not kept for resuming: the disk is full or failing.
                    std::mem::replace(self, Landing::Part(Err(refusal))).discard();
                }
                Ok(())
            }
            Landing::Part(Err(_)) | Landing::Refused => Ok(()),
            Landing::Stdout(out) => out
                .write_all(bytes)
                .context("cannot write to standard output")
                .classify(Kind::Io),
        }
    }

    /// The refusal of a part file that failed, which is to be answered now: the
    /// landing is [`Landing::Refused`] from here on. `None` for any other landing.
    fn take_refusal(&mut self) -> Option<Refusal> {
        if !matches!(self, Landing::Part(Err(_))) {
            return None;
        }
        match std::mem::replace(self, Landing::Refused) {
            Landing::Part(Err(refusal)) => Some(refusal),
            _ => None,
        }
    }

    /// Does `step` to the part file, which becomes the entry's refusal if it fails.
    fn on_part(&mut self, step: impl FnOnce(&mut PartFile) -> Result<(), Refusal>) {
        if let Landing::Part(Ok(part)) = self
            && let Err(refusal) = step(part)
        {
            std::mem::replace(self, Landing::Part(Err(refusal))).discard();
        }
    }

    /// Drops data that must not be kept, not even for resuming.
    fn discard(self) {
        if let Landing::Part(Ok(part)) = self {
            part.discard();
        }
    }

    /// What dropping this landing leaves on disk.
    fn left_behind(self) -> Settled {
        match &self {
            Landing::Part(Ok(part)) => part
                .left_behind()
                .map_or(Settled::Unchanged, Settled::Partial),
            _ => Settled::Unchanged,
        }
    }
}

/// What a commit's result leaves on disk.
fn settled_by(result: &Result<(), Refusal>, size: u64) -> Settled {
    match result {
        Ok(()) => Settled::Whole(size),
        Err(_) => Settled::Unchanged,
    }
}

/// Directory modes and times last: writing their contents changed the times, and a
/// read-only mode would have stopped the writing. Deepest first.
pub(crate) fn finish_dirs(
    planned: &[Planned],
    target: &TargetDir,
    names: Names,
    reporter: &Reporter,
) {
    let mut resolver = target.resolver();
    let dirs = planned.iter().rev().filter(|p| p.accepted_dir);
    for item in dirs {
        let bytes = item.entry.path_bytes();
        let Ok(components) = check_path_bytes(&bytes, names) else {
            continue; // refused when planned
        };
        if let Err(refusal) =
            resolver.finish_dir(&item.entry.shown_path(), &components, &item.entry)
        {
            super::shared::metadata_not_set(target, &refusal, reporter);
        }
    }
}
