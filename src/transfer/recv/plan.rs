//! Deciding an offer: every entry's path checked, duplicates and paths another
//! session is receiving refused, files already there answered `same`, other
//! existing files and what will not fit refused, directories created, and
//! resumable data found, and (feature `delta`) the file an entry replaces chunked
//! as its basis. Each decision goes out in the plan as soon as it is made.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use indicatif::HumanBytes;

use super::claims::{CLAIM_KEYS, Claim, DirHold, KeyedSet};
use super::in_the_way;
use super::shared::{Destination, Shared};
use crate::error::refused;
use crate::escape::escape;
use crate::fs::Refusal;
use crate::fs::home::Footprint;
use crate::fs::path::check_path_bytes;
use crate::fs::quota::Reservation;
use crate::fs::sink::{Basis, Node, Placement, Resolver, TargetDir, node_footprint};
use crate::proto::delta::{MAX_PLAN_CHUNKS, MIN_DELTA_SIZE};
use crate::proto::hash::Hasher;
use crate::proto::message::{Decision, Entry, EntryKind, ErrorCode, Mirror, Signature};
use crate::proto::wire::FrameWriter;
use crate::transfer::Tally;
use crate::transfer::consumed::consumed;
use crate::transfer::offer::{ListWriter, server_keeps_no};
use crate::ui::report::{Change, FileOutcome, Reporter};

/// One entry of the offer, decided.
pub(crate) struct Planned<'c> {
    pub(crate) entry: Entry,
    /// Will data for this entry come? (An accepted file.)
    pub(crate) expects_data: bool,
    /// An accepted directory: its mode and time are applied at the end.
    pub(crate) accepted_dir: bool,
    /// Resumable data already here: its length and the hash state after it.
    pub(crate) resume_from: Option<Box<(u64, Hasher)>>,
    /// Keeps other sessions of this process off the same path until we are done.
    pub(crate) claim: Option<Claim<'c>>,
    /// An accepted directory (not in a dry run): held against another session's
    /// `--delete` until this session ends.
    pub(crate) _dir_hold: Option<DirHold<'c>>,
    /// Room held in the user's quota until the entry settles (a server's `put`);
    /// boxed, so that an entry without one costs a pointer.
    pub(crate) reservation: Option<Box<Reservation>>,
    /// What an existing file this entry replaces holds (it counts until replaced).
    pub(crate) replaces: Footprint,
    /// What this entry replaces is no regular file (a link, a special file, an
    /// empty or emptied directory): it counts nothing, and is replaced all the same.
    pub(crate) replaces_other: bool,
    /// A change of type (`in_the_way.rs`): a file or link in place of a directory,
    /// emptied first; or a directory made in place of a non-directory.
    pub(crate) type_change: bool,
    /// For a file or link in place of a directory: which directory the plan saw
    /// there (`TargetDir::dir_identity`), the only one it may empty later.
    pub(crate) dir_seen: Option<(u64, u64)>,
    /// The file this entry replaces, chunked, when the plan offered it as a basis.
    pub(crate) basis: Option<Box<Basis>>,
    /// An accepted entry without data (a link, a special file): made once the
    /// files settled.
    pub(crate) make: bool,
    /// A file that is final under its name (it verified, or was `same`): what a
    /// hard link to it may link.
    pub(crate) arrived: AtomicBool,
}

impl Planned<'_> {
    fn dir(entry: Entry) -> Self {
        Planned {
            accepted_dir: true,
            ..Planned::skipped(entry)
        }
    }

    fn skipped(entry: Entry) -> Self {
        Planned {
            entry,
            expects_data: false,
            accepted_dir: false,
            resume_from: None,
            claim: None,
            _dir_hold: None,
            reservation: None,
            replaces: Footprint::default(),
            replaces_other: false,
            type_change: false,
            dir_seen: None,
            basis: None,
            make: false,
            arrived: AtomicBool::new(false),
        }
    }

    /// Where this entry's data starts when the sender agrees to resume.
    pub(crate) fn resume_offset(&self) -> u64 {
        self.resume_from.as_ref().map_or(0, |resume| resume.0)
    }
}

/// Decides every offered entry and sends the plan. With `mirror` in force (every
/// xfer peer), a file of the offered size and time is `same` even where files are
/// replaced, as rsync's quick check; with a `mirror` member asking for it, a dry
/// run decides as a real run would without touching the disk: it creates no
/// directory, keeps no room, and looks for no partial data.
pub(crate) fn plan<'c, W: Write>(
    entries: Vec<Entry>,
    writer: &mut FrameWriter<W>,
    shared: &Shared<'c>,
    tally: &Tally,
    mirror: Option<&Mirror>,
) -> Result<Vec<Planned<'c>>> {
    let mut planned = Vec::with_capacity(entries.len());
    if let Destination::Stdout = shared.destination {
        check_stdout_offer(&entries)?;
    }
    let mut decisions = ListWriter::plan(writer, shared.transfer);
    match shared.destination {
        Destination::Stdout => {
            for entry in entries {
                decisions.push(&send_from(0, None, false))?;
                planned.push(Planned {
                    expects_data: true,
                    ..Planned::skipped(entry)
                });
            }
        }
        Destination::Dir(target) => {
            let dry_run = mirror.is_some_and(|mirror| mirror.dry_run);
            let mut decider =
                Decider::new((target, tally.reporter()), shared, entries.len(), dry_run);
            decider.twins = twins_of(&entries);
            for entry in consumed(entries) {
                let (mut item, decision) = decider.decide(entry, &planned, tally);
                if decider.dry_run {
                    dry_run_change(&item, &decision, tally);
                    // Nothing comes and nothing is made. A file that would come
                    // counts as there for the hard links decided after it.
                    if item.expects_data {
                        item.arrived.store(true, Ordering::Relaxed);
                    }
                    item.expects_data = false;
                    item.make = false;
                }
                planned.push(item);
                decisions.push(&decision)?;
            }
        }
    }
    decisions.finish_plan()?;
    Ok(planned)
}

/// By the index of each file the offer gives hard links, their paths.
fn twins_of(entries: &[Entry]) -> HashMap<u64, Vec<Vec<u8>>> {
    let mut twins: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for entry in entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Hardlink)
    {
        if let Some(of) = entry.extra().of {
            twins
                .entry(of)
                .or_default()
                .push(entry.path_bytes().into_owned());
        }
    }
    twins
}

/// The claims and reservations the disk thread releases, each as soon as its file
/// is done; entries without data keep theirs until they are made (`make.rs`).
pub(crate) fn hand_to_disk<'c>(planned: &mut [Planned<'c>]) -> Vec<Held<'c>> {
    planned
        .iter_mut()
        .map(|p| match p.make {
            true => (None, None),
            false => (p.claim.take(), p.reservation.take()),
        })
        .collect()
}

/// A path's claim and quota room, while its entry is on its way.
pub(crate) type Held<'c> = (Option<Claim<'c>>, Option<Box<Reservation>>);

/// The decision for a file: from its resume point, or from 0 (over a file it
/// `replaces`) with the basis's signature (which the plan carries; the basis itself
/// stays here).
fn file_decision(
    resume_from: Option<&(u64, Hasher)>,
    basis: Option<(Basis, Signature)>,
    replaces: bool,
) -> (Decision, Option<Box<Basis>>) {
    let mut decision = match resume_from {
        Some(resume) => send_from(resume.0, Some(&resume.1), replaces),
        None => send_from(0, None, replaces),
    };
    let basis = basis.map(|(basis, signature)| {
        if let Decision::Send { delta, .. } = &mut decision {
            *delta = Some(signature);
        }
        Box::new(basis)
    });
    (decision, basis)
}

/// A receiver writing to standard output takes exactly one file. The refusal is
/// worded for both sides: the sender reads it after `too_large`.
fn check_stdout_offer(entries: &[Entry]) -> Result<()> {
    let what = match entries {
        // A sparse entry's runs are hashed once written (section 16.4), which
        // standard output cannot be read back for.
        [entry] if entry.kind == EntryKind::File && entry.is_sparse() => {
            "a sparse file (its holes travel as holes)".to_string()
        }
        [entry] if entry.kind == EntryKind::File => return Ok(()),
        _ if entries.iter().any(|entry| entry.kind == EntryKind::Dir) => {
            format!("a directory ({} entries)", entries.len())
        }
        _ => format!("{} entries", entries.len()),
    };
    Err(refused(
        ErrorCode::TooLarge,
        format!(
            "--stdout takes one file, and this offer is {what}: send one file (a \
             directory as a stream: tar c DIR | xfer send - ...), or receive into a \
             directory instead of --stdout"
        ),
    ))
}

/// `send`, from `offset` (a resume's, after the prefix `prefix` hashed), in place of
/// something already there when `replaces`: a resumed file replaces the old
/// version as a whole one does.
fn send_from(offset: u64, prefix: Option<&Hasher>, replaces: bool) -> Decision {
    Decision::Send {
        offset,
        prefix_hash: prefix.map(|hasher| hasher.peek().to_hex()),
        delta: None,
        replaces,
        attrs: false,
    }
}

/// What a dry run shows of one decision on this side (refusals were tallied).
fn dry_run_change(item: &Planned, decision: &Decision, tally: &Tally) {
    let path = &item.entry.named();
    let Decision::Send { replaces, .. } = decision else {
        return;
    };
    let change = match item.entry.kind {
        // Said as it was decided (see `Decider::dir`).
        EntryKind::Dir if *replaces || item.type_change => return,
        EntryKind::Dir => Change::NewDir,
        EntryKind::File if item.type_change => Change::Replaced,
        EntryKind::File if *replaces => Change::Changed,
        EntryKind::File => Change::New,
        kind if *replaces => Change::ReplacedNode(kind),
        kind => Change::NewNode(kind),
    };
    tally.change(change, path, item.entry.size.unwrap_or(0), None);
}

/// What an entry accepted at `placement` replaces: a regular file's footprint, and
/// whether something else (a link, a special file) is there; `None` for `same`.
fn replaced(placement: Placement) -> Option<(Footprint, bool)> {
    match placement {
        Placement::Same => None,
        Placement::Free(Some(bytes)) => Some((Footprint { bytes, files: 1 }, false)),
        Placement::Free(None) => Some((Footprint::default(), false)),
        Placement::Taken | Placement::Dir => Some((Footprint::default(), true)),
    }
}

/// The state of deciding one offer for a directory.
struct Decider<'s, 'c> {
    /// The target directory's identity, for claims.
    within: (u64, u64),
    target: &'s TargetDir,
    resolver: Resolver<'s>,
    shared: &'s Shared<'c>,
    /// The session's voice, for what it says as it decides.
    reporter: &'s Reporter,
    /// Paths offered so far: a second entry with the same path is refused.
    seen: KeyedSet,
    /// Paths of the entries offered so far that are not directories: nothing may
    /// be offered below one.
    non_dirs: KeyedSet,
    /// Bytes the accepted files may still take, if the system says.
    free: Option<u64>,
    /// Chunks the plan's signatures may still list (see `MAX_PLAN_CHUNKS`).
    chunks_left: u64,
    /// `same` holds even where files are replaced (`mirror` in force).
    quick_check: bool,
    /// Decide only: touch nothing (section 17.4).
    dry_run: bool,
    /// By the index of a file the offer gives hard links, their paths.
    twins: HashMap<u64, Vec<Vec<u8>>>,
}

impl<'s, 'c> Decider<'s, 'c> {
    /// The state of deciding `count` entries into `target`.
    fn new(
        (target, reporter): (&'s TargetDir, &'s Reporter),
        shared: &'s Shared<'c>,
        count: usize,
        dry_run: bool,
    ) -> Self {
        Decider {
            within: target.identity(),
            target,
            resolver: target.resolver(),
            shared,
            reporter,
            // Sized once: a table grown step by step misses the cache as it
            // moves (the offer was checked against its limit already).
            seen: KeyedSet::with_capacity_and_hasher(count, Default::default()),
            non_dirs: KeyedSet::with_capacity_and_hasher(count, Default::default()),
            free: target.free_space(),
            chunks_left: MAX_PLAN_CHUNKS,
            // A dry run (a `mirror` member) and the real run after it decide
            // `same` alike, whatever else the offer asks; `--ignore-times` turns
            // the quick check off for both.
            quick_check: shared.mirror && !shared.mirroring.is_some_and(|asked| asked.ignore_times),
            dry_run,
            twins: HashMap::new(),
        }
    }

    fn decide(
        &mut self,
        entry: Entry,
        before: &[Planned<'c>],
        tally: &Tally,
    ) -> (Planned<'c>, Decision) {
        match self.decide_entry(&entry, before) {
            Ok(Decided::Make {
                claim,
                reservation,
                replaces,
                other,
                over_dir,
            }) => {
                let planned = Planned {
                    make: true,
                    claim: Some(claim),
                    reservation,
                    replaces,
                    replaces_other: other,
                    type_change: over_dir.is_some(),
                    dir_seen: over_dir,
                    ..Planned::skipped(entry)
                };
                (planned, send_from(0, None, replaces.files > 0 || other))
            }
            Ok(Decided::Dir {
                existed,
                attrs,
                replaced,
            }) => self.dir(entry, (existed, replaced), attrs, tally),
            Ok(Decided::Same { attrs }) => self.same(entry, attrs, tally),
            Ok(Decided::File {
                resume_from,
                claim,
                reservation,
                replaces,
                other,
                basis,
                over_dir,
            }) => {
                let replacing = replaces.files > 0 || other;
                let (decision, basis) = file_decision(resume_from.as_deref(), basis, replacing);
                let planned = Planned {
                    expects_data: true,
                    resume_from,
                    claim: Some(claim),
                    reservation,
                    replaces,
                    replaces_other: other,
                    type_change: over_dir.is_some(),
                    dir_seen: over_dir,
                    basis,
                    ..Planned::skipped(entry)
                };
                (planned, decision)
            }
            Err(refusal) => self.refused(entry, refusal, tally),
        }
    }

    /// A directory made (in a real run: `new dir` with `--itemize`; `replaced`,
    /// in both, in place of a non-directory) or there already, with `attrs` if its
    /// metadata differs from the offer's. One that replaced a non-directory is new
    /// to the plan (`replaces` says a directory exists already, section 17.3).
    fn dir(
        &self,
        entry: Entry,
        (existed, replaced): (bool, bool),
        attrs: bool,
        tally: &Tally,
    ) -> (Planned<'c>, Decision) {
        let path = entry.named();
        if replaced {
            tally.change(Change::ReplacedDir, &path, 0, None);
        } else if !existed && !self.dry_run {
            tally.change(Change::NewDir, &path, 0, None);
        }
        if attrs {
            tally.change(Change::DirAttrs, &path, 0, None);
        }
        let decision = Decision::Send {
            offset: 0,
            prefix_hash: None,
            delta: None,
            replaces: existed,
            attrs: attrs && self.shared.mirror,
        };
        let dir_hold = match self.dry_run {
            true => None,
            false => Some((self.shared.claims).hold_dir(self.within, &entry.path_bytes())),
        };
        let planned = Planned {
            type_change: replaced,
            _dir_hold: dir_hold,
            ..Planned::dir(entry)
        };
        (planned, decision)
    }

    /// An entry refused: an `unsent` one not sent, as the sender counts it (exit 10
    /// on both sides; a dry run shows it skipped); else a failure, in a dry run as
    /// in the real one (exit 6 on both sides), which it previews.
    fn refused(&self, entry: Entry, refusal: Refusal, tally: &Tally) -> (Planned<'c>, Decision) {
        let path = &entry.named();
        let unsent = entry.kind == EntryKind::Unsent && refusal.code == ErrorCode::Io;
        // An unsent entry is shown with the sender's reason, as the sender shows it
        // (a peer that gave none: the refusal).
        let reason = entry.extra().reason.as_deref().unwrap_or_default();
        match (unsent, self.dry_run) {
            (true, true) if reason.is_empty() => {
                tally.change(Change::Skipped, path, 0, Some(&refusal.to_string()));
            }
            (true, true) => tally.change(Change::Skipped, path, 0, Some(reason)),
            (true, false) => tally.not_sent(path, reason, false),
            (false, _) => tally.failed(path, refusal.code, refusal.to_string()),
        }
        let skip = Decision::Skip {
            code: refusal.code,
            message: refusal.message,
            attrs: false,
        };
        (Planned::skipped(entry), skip)
    }

    /// An entry already on the receiver: counted as delivered (and a file, as final
    /// for its hard links), with `attrs` if its metadata was (or in a dry run would
    /// be) brought up to the offer; in a dry run, a change to show.
    fn same(&self, entry: Entry, attrs: bool, tally: &Tally) -> (Planned<'c>, Decision) {
        let change = [Change::Same, Change::Attrs][usize::from(attrs)];
        let path = entry.named();
        match self.dry_run {
            true => tally.change(change, &path, 0, None),
            false => {
                if attrs {
                    tally.change(change, &path, 0, None);
                }
                tally.record(FileOutcome::Same {
                    path,
                    kind: entry.kind,
                    size: entry.size,
                    verified: None,
                });
            }
        }
        let message = match entry.kind {
            EntryKind::File => "already on the receiver (same size and time)",
            _ => "already on the receiver",
        };
        let skip = Decision::Skip {
            code: ErrorCode::Same,
            message: message.into(),
            attrs: attrs && self.shared.mirror,
        };
        let planned = Planned::skipped(entry);
        planned.arrived.store(true, Ordering::Relaxed);
        (planned, skip)
    }

    fn decide_entry(
        &mut self,
        entry: &Entry,
        before: &[Planned<'c>],
    ) -> Result<Decided<'c>, Refusal> {
        let shown = escape(&entry.shown_path()).into_owned();
        let bytes = entry.path_bytes();
        let components = check_path_bytes(&bytes, self.shared.settings.names)
            .map_err(|why| Refusal::new(ErrorCode::BadPath, format!("{shown}: {why}")))?;
        self.check_place(entry, &bytes, &shown)?;
        if entry.kind != EntryKind::File {
            return self.decide_other(entry, before, &shown, &components);
        }
        let claim = self.claim(entry, &shown)?;
        let placement = self.placement(entry, &components)?;
        let look = self.dir_in_the_way(entry, &components, placement)?;
        let over_dir = look.as_ref().map(|look| look.seen);
        let freed = look.as_ref().map(|look| look.freed);
        let Some((replaces, other)) = replaced(placement) else {
            let attrs = self.refresh(entry, (&components, before.len()), &shown);
            return Ok(Decided::Same { attrs });
        };
        if self.dry_run {
            // As the real run: resumed where a partial allows (its room checked),
            // else built by delta where an old version allows.
            let resume_from = self.resume_point(entry, &components, &shown)?;
            let partial = resume_from.as_ref().map(|resume| resume.0);
            let basis = self.dry_run_file(entry, &components, (replaces, partial), look)?;
            return Ok(Decided::File {
                resume_from,
                claim,
                reservation: None,
                replaces,
                other,
                basis,
                over_dir,
            });
        }
        self.make_parents(&components)?;
        let resume_from = self.resume_point(entry, &components, &shown)?;
        let partial = resume_from.as_ref().map(|resume| resume.0);
        // A regular file is there (no link, nothing else) and nothing is resumed.
        let replacing = replaces.files > 0 && resume_from.is_none();
        let basis = self.basis(entry, &components, replacing)?;
        let room = (partial, replaces, freed);
        let reservation = self.reserve_file(entry, &components, room, basis.as_ref())?;
        Ok(Decided::File {
            resume_from,
            claim,
            reservation,
            replaces,
            other,
            basis,
            over_dir,
        })
    }

    /// A dry run's checks of the file `entry`, which replaces `replaces` (and the
    /// directory of `look`, if any), resuming `partial` bytes if any: that it
    /// could be added and would fit, by the rule a real run admits it by
    /// ([`Decider::reserve_file`]); and unless it resumes, a basis, so the sender
    /// can say what a delta would move (17.4).
    fn dry_run_file(
        &mut self,
        entry: &Entry,
        components: &[&[u8]],
        (replaces, partial): (Footprint, Option<u64>),
        look: Option<in_the_way::Look>,
    ) -> Result<Option<(Basis, Signature)>, Refusal> {
        let making = "cannot create a temporary file";
        self.resolver.dry_run_may_add(components, making)?;
        let by_delta = partial.is_none() && replaces.files > 0;
        let basis = self.basis(entry, components, by_delta)?;
        let more = dry_run_needs(entry, (replaces, partial), look.as_ref(), basis.as_ref());
        if let Err(refusal) = self.check_room(entry, more) {
            if let Some((basis, _)) = &basis {
                // Its chunks go out in no plan: the budget gets them back.
                self.chunks_left += basis.chunks();
            }
            return Err(refusal);
        }
        if let Some(look) = look {
            look.accepted(self.shared);
        }
        Ok(basis)
    }

    /// Whether `placement` is a directory the file or link `entry` replaces, with
    /// what its regular files free: checked now that it may go (empty, or with
    /// `--delete` all it holds; a dry run finds what would go), emptied once the
    /// file verified (`disk.rs`) or before the link is made (`make.rs`), or now
    /// where the quota needs the room ([`Decider::reserve_over_dir`]).
    fn dir_in_the_way(
        &mut self,
        entry: &Entry,
        components: &[&[u8]],
        placement: Placement,
    ) -> Result<Option<in_the_way::Look>, Refusal> {
        if placement != Placement::Dir {
            return Ok(None);
        }
        let at = (components, &*entry.shown_path());
        in_the_way::look(self.shared, self.target, at).map(Some)
    }

    /// Room in the user's quota for the file `entry`, resuming `partial` bytes,
    /// replacing `replaces` (or the directory whose files free `freed`): built by
    /// delta from the old file (`basis`) that it may turn out to be (its size and
    /// time), the new file in the old one's place, the rest as its temporary is
    /// written ([`Decider::reserve_in_place`]); else the whole new file beside the
    /// old ([`Decider::reserve_over_dir`]), as any other delta writes it: where
    /// that cannot fit, refused now rather than once most of it crossed.
    fn reserve_file(
        &mut self,
        entry: &Entry,
        components: &[&[u8]],
        (partial, replaces, freed): (Option<u64>, Footprint, Option<Footprint>),
        basis: Option<&(Basis, Signature)>,
    ) -> Result<Option<Box<Reservation>>, Refusal> {
        let Some((basis, _)) = basis else {
            return self.reserve_over_dir(entry, components, (partial, replaces), freed);
        };
        let admitted = if basis.may_be(entry.size, entry.mtime) {
            self.reserve_in_place(entry, replaces)
        } else {
            self.reserve_quota(entry, None, replaces)
        };
        if admitted.is_err() && !basis.streamed() {
            // Its chunks go out in no plan: the budget gets them back.
            self.chunks_left += basis.chunks();
        }
        admitted
    }

    /// Room in the user's quota for the file `entry` rebuilt by delta from the
    /// regular file it replaces (`replaces`): admitted where the new file fits in
    /// the old one's place; its temporary's bytes beyond that are charged, and
    /// checked, as they are written (`Account::reserve_in_place`).
    fn reserve_in_place(
        &self,
        entry: &Entry,
        replaces: Footprint,
    ) -> Result<Option<Box<Reservation>>, Refusal> {
        let Some(account) = self.shared.quota else {
            return Ok(None);
        };
        let after = Footprint {
            bytes: entry.size.unwrap_or(0),
            files: 1,
        };
        let shown = entry.shown_path();
        Ok(Some(Box::new(
            account.reserve_in_place(&shown, replaces, after)?,
        )))
    }

    /// [`Decider::reserve_quota`] for a file that replaces a directory whose regular
    /// files free `freed`: where the quota has no room for the file beside them,
    /// but has once they are gone, they go now (as `rsync --delete` removes what
    /// a directory holds before it receives into it), each removal counted under
    /// the ledger's lock, and the file is admitted then.
    fn reserve_over_dir(
        &self,
        entry: &Entry,
        components: &[&[u8]],
        (partial, replaces): (Option<u64>, Footprint),
        freed: Option<Footprint>,
    ) -> Result<Option<Box<Reservation>>, Refusal> {
        let refusal = match self.reserve_quota(entry, partial, replaces) {
            Err(refusal) if refusal.code == ErrorCode::Quota => refusal,
            other => return other,
        };
        let (Some(freed), Some(account)) = (freed, self.shared.quota) else {
            return Err(refusal);
        };
        let needs = Footprint {
            bytes: entry.size.unwrap_or(0).saturating_sub(freed.bytes),
            files: 1u64.saturating_sub(freed.files),
        };
        if account.books().check(needs, &entry.shown_path()).is_err() {
            return Err(refusal);
        }
        let at = (components, &*entry.shown_path());
        // The plan's own look at it came a moment ago: no identity to hold it to.
        in_the_way::clear(self.shared, self.target, at, (None, None))?;
        self.reserve_quota(entry, partial, replaces)
    }

    /// The file `entry` will replace (`replacing`: a regular file is there, and no
    /// partial data is resumed), chunked as its basis, when feature `delta` is in
    /// force and a delta may pay: both versions large enough, and room left in the
    /// plan's budget of chunks.
    fn basis(
        &mut self,
        entry: &Entry,
        components: &[&[u8]],
        replacing: bool,
    ) -> Result<Option<(Basis, Signature)>, Refusal> {
        // A sparse file (feature meta) comes in runs, never as a delta.
        let worth_it = entry.size.is_some_and(|size| size >= MIN_DELTA_SIZE) && !entry.is_sparse();
        if !replacing || !self.shared.delta || !worth_it || self.chunks_left == 0 {
            return Ok(None);
        }
        let offered = entry.size.unwrap_or(0);
        if self.shared.delta_stream && !self.dry_run {
            // Cut during the data phase, its sums streamed (section 18.6); the
            // cutter keeps to the plan's budget of chunks.
            return Ok(self.resolver.stream_basis(components, offered));
        }
        let limits = (offered, self.chunks_left);
        let chunked = self
            .resolver
            .chunk_basis(&entry.shown_path(), components, limits)?;
        if let Some((basis, _)) = &chunked {
            self.chunks_left -= basis.chunks();
        }
        Ok(chunked)
    }

    /// Where a file's data starts: after resumable data found under its name (a
    /// sparse file never resumes, section 16.4; other partial data is discarded,
    /// but in a dry run), with the room the rest needs counted against the disk's
    /// free space (in a dry run too, which refuses what the real run would).
    fn resume_point(
        &mut self,
        entry: &Entry,
        components: &[&[u8]],
        shown: &str,
    ) -> Result<Option<Box<(u64, Hasher)>>, Refusal> {
        let mut resume_from = None;
        if let Some(size) = entry.size {
            // A sparse entry is never resumed (section 16.4).
            let settings = &self.shared.settings;
            if settings.resumes(size) && !entry.is_sparse() {
                let (path, hash) = (&entry.shown_path(), self.shared.transfer.hash);
                resume_from = self
                    .resolver
                    .find_partial(path, components, (size, hash), self.dry_run)?
                    .map(Box::new);
            } else if !settings.resume && !self.dry_run {
                // Small files never have partials: nothing to look for or discard.
                self.resolver.discard_partial(components, size);
            }
            let needed = size - resume_from.as_ref().map_or(0, |resume| resume.0);
            // A sparse file's holes take no room, and how much is data is not
            // said: a full disk then fails it with `io` as it is written.
            if !entry.is_sparse() {
                self.take_free_space(shown, needed)?;
            }
        }
        Ok(resume_from)
    }

    /// A path offered twice, or below something of this offer that is not a
    /// directory (a file `a/x` after a link `a`), is `bad_path`.
    fn check_place(&mut self, entry: &Entry, bytes: &[u8], shown: &str) -> Result<(), Refusal> {
        let key = CLAIM_KEYS.hash_one(bytes);
        if !self.seen.insert(key) {
            return Err(Refusal::new(
                ErrorCode::BadPath,
                format!("{shown}: offered twice"),
            ));
        }
        let mut parent = bytes;
        while let Some(slash) = parent.iter().rposition(|&b| b == b'/') {
            parent = &parent[..slash];
            if self.non_dirs.contains(&CLAIM_KEYS.hash_one(parent)) {
                return Err(Refusal::new(
                    ErrorCode::BadPath,
                    format!(
                        "{shown}: below {}, which is not a directory",
                        escape(&String::from_utf8_lossy(parent))
                    ),
                ));
            }
        }
        if entry.kind != EntryKind::Dir {
            self.non_dirs.insert(key);
        }
        Ok(())
    }

    /// What is at a file entry's final name. With `mirror` in force an offer is
    /// quick checked (`same`) even where files are replaced: only what changed is
    /// sent, as by rsync, and a dry run predicts the real run.
    fn placement(&mut self, entry: &Entry, components: &[&[u8]]) -> Result<Placement, Refusal> {
        let offered = (entry.size, entry.mtime, entry.mtime_ns.unwrap_or(0));
        let overwrite = self.shared.settings.overwrite;
        let path = &entry.shown_path();
        if self.quick_check && overwrite {
            let quick = self.resolver.probe_file(path, components, false, offered);
            if let Ok(Placement::Same) = quick {
                return Ok(Placement::Same);
            }
        }
        self.resolver
            .probe_file(path, components, overwrite, offered)
    }

    /// Whether a `same` file, link or special file holds other metadata than
    /// offered, and (not in a dry run) gives it the offered ones. Only where the
    /// sender may replace files (`--overwrite`, a `put -f` or `get -f`, a mirror's
    /// `--delete`): a receiver that keeps what it holds keeps its modes and owners
    /// too. What cannot be applied (a file of another owner, for a receiver that is
    /// not root) is said and leaves the entry `same`: it is delivered either way.
    /// `index`: the entry's in the offer.
    fn refresh(
        &mut self,
        entry: &Entry,
        (components, index): (&[&[u8]], usize),
        shown: &str,
    ) -> bool {
        if !self.shared.settings.overwrite {
            return false;
        }
        let refreshed = match entry.kind {
            EntryKind::File => {
                let twins = self
                    .twins
                    .get(&(index as u64))
                    .map_or(&[][..], Vec::as_slice);
                let names = self.shared.settings.names;
                let twins: Vec<Vec<&[u8]>> = (twins.iter())
                    .filter_map(|twin| check_path_bytes(twin, names).ok())
                    .collect();
                self.resolver
                    .refresh_same_file(shown, (components, &twins), entry, self.dry_run)
            }
            _ => self
                .resolver
                .refresh_same_node(shown, components, entry, self.dry_run),
        };
        refreshed.unwrap_or_else(|refusal| {
            super::shared::metadata_not_set(self.target, &refusal, self.reporter);
            false
        })
    }

    /// On a server (not in a dry run), makes the directories above the file or
    /// node `components` that are not there (an offer need not list them), so
    /// that they are charged before the entry is admitted, as the plan's
    /// directories are; `quota` if one does not fit. Elsewhere they are made as
    /// the entry is written, in the deepest directory there, which is let in
    /// first (`Resolver::let_in`: a read-only directory of this user's).
    fn make_parents(&mut self, components: &[&[u8]]) -> Result<(), Refusal> {
        match components.split_last() {
            _ if self.dry_run => Ok(()),
            Some((_, parents)) if self.shared.quota.is_some() => self.resolver.create_dir(parents),
            _ => {
                self.resolver.let_in(components);
                Ok(())
            }
        }
    }

    /// A dry run's quota check: whether `more` would fit, holding nothing.
    fn check_room(&self, entry: &Entry, more: Footprint) -> Result<(), Refusal> {
        match self.shared.quota {
            Some(account) => account.books().check(more, &entry.shown_path()),
            None => Ok(()),
        }
    }

    /// Decides an entry that is not a file: a directory is created now (not in a
    /// dry run); a link or a special file is made after the files (see `make.rs`).
    fn decide_other(
        &mut self,
        entry: &Entry,
        before: &[Planned<'c>],
        shown: &str,
        components: &[&[u8]],
    ) -> Result<Decided<'c>, Refusal> {
        match entry.kind {
            EntryKind::Dir => self.decide_dir(entry, shown, components),
            EntryKind::Symlink
            | EntryKind::Hardlink
            | EntryKind::Fifo
            | EntryKind::Socket
            | EntryKind::Char
            | EntryKind::Block => self.decide_node(entry, before, shown, components),
            EntryKind::Unsent => {
                let reason = entry.extra().reason.as_deref().unwrap_or_default();
                Err(Refusal::new(
                    ErrorCode::Io,
                    format!("{shown}: not sent: {}", escape(reason)),
                ))
            }
            EntryKind::File => unreachable!("files are decided by decide_entry"),
        }
    }

    /// Decides a directory: made now (not in a dry run) or there already; where
    /// files are replaced, made in place of a non-directory. That is looked for
    /// only once the walk met something else than a directory, so a directory
    /// there costs no more than before.
    fn decide_dir(
        &mut self,
        entry: &Entry,
        shown: &str,
        components: &[&[u8]],
    ) -> Result<Decided<'c>, Refusal> {
        let overwrite = self.shared.settings.overwrite;
        let existed = match self.resolver.probe_dir(components) {
            Ok(existed) => existed,
            Err(_) if overwrite && self.resolver.non_dir_at(components)? => {
                self.replace_non_dir(entry, shown, components)?;
                return Ok(Decided::Dir {
                    existed: false,
                    attrs: false,
                    replaced: true,
                });
            }
            // Where files are replaced, the directory would take its place.
            Err(refusal) if refusal.code == ErrorCode::Exists && !overwrite => {
                let hint = self.target.replace_hint();
                return Err(Refusal::new(
                    refusal.code,
                    format!("{} ({hint})", refusal.message),
                ));
            }
            Err(refusal) => return Err(refusal),
        };
        match (self.dry_run, existed) {
            (_, true) => {}
            (true, false) => {
                let making = "cannot create directory";
                self.resolver.dry_run_may_add(components, making)?;
                self.check_room(entry, Footprint::DIR)?;
            }
            (false, false) => {
                self.resolver.let_in(components);
                self.resolver.create_dir(components)?;
            }
        }
        let attrs = existed && self.resolver.dir_differs(components, entry);
        Ok(Decided::Dir {
            existed,
            attrs,
            replaced: false,
        })
    }

    /// Makes the directory `entry` in place of the file, link or special file
    /// there, which goes now (a dry run: only as far as the plan can see), as
    /// `rsync -a` replaces one; not while another session receives that path.
    fn replace_non_dir(
        &mut self,
        entry: &Entry,
        shown: &str,
        components: &[&[u8]],
    ) -> Result<(), Refusal> {
        let _claim = self.claim(entry, shown)?;
        if let Some(refusal) =
            in_the_way::excluded_in_the_way(self.shared, (&entry.path_bytes(), shown), false)
        {
            return Err(refusal);
        }
        if self.dry_run {
            // Removing it takes what adding a name takes: the real run's words.
            let removing = "cannot remove what is in the way";
            self.resolver.dry_run_may_add(components, removing)?;
            self.resolver.vacate(components);
            return Ok(());
        }
        self.resolver.let_in(components);
        self.resolver
            .remove_in_the_way(&entry.shown_path(), components)?;
        self.resolver.create_dir(components)
    }

    /// Decides a link or special file: one this receiver may not make is `denied`,
    /// one whose file was refused `not_found`; what is there already is `same`, or
    /// `exists` unless overwriting.
    fn decide_node(
        &mut self,
        entry: &Entry,
        before: &[Planned<'c>],
        shown: &str,
        components: &[&[u8]],
    ) -> Result<Decided<'c>, Refusal> {
        self.may_make(entry, shown)?;
        let file = self.linked_file(entry, before, shown)?;
        let claim = self.claim(entry, shown)?;
        let file_bytes = file.map(Entry::path_bytes);
        let names = self.shared.settings.names;
        let file_components = file_bytes
            .as_deref()
            .map(|bytes| check_path_bytes(bytes, names).unwrap_or_default());
        let node = Node {
            path: shown,
            components,
            entry,
            file: file_components.as_deref(),
            over_dir: false,
        };
        let mut placement = self
            .resolver
            .probe_node(&node, self.shared.settings.overwrite)?;
        let renewed = entry.extra().of.map(|of| before[of as usize].replaces);
        if let (Placement::Same, Some(old)) = (placement, renewed.filter(|old| old.files > 0)) {
            // A hard link of its file as it is, which a new file replaces (under
            // `--ignore-times`, every time): linked again once that arrived.
            placement = Placement::Free(Some(old.bytes));
        }
        let look = self.dir_in_the_way(entry, components, placement)?;
        let over_dir = look.as_ref().map(|look| look.seen);
        let Some((replaces, other)) = replaced(placement) else {
            let attrs = self.refresh(entry, (components, before.len()), shown);
            return Ok(Decided::Same { attrs });
        };
        if self.dry_run {
            self.resolver
                .dry_run_may_add(components, "cannot make it")?;
        }
        self.make_parents(components)?;
        let reservation = self.reserve_node(entry, before, replaces)?;
        if let Some(look) = look {
            look.accepted(self.shared);
        }
        Ok(Decided::Make {
            claim,
            reservation,
            replaces,
            other,
            over_dir,
        })
    }

    /// Room in the user's quota for the link or special file `entry` (a dry run
    /// only checks it), replacing `replaces`: one entry, and a hard link its
    /// file's bytes again, as the home's count does, a symbolic link its target's
    /// length (`node_footprint`).
    fn reserve_node(
        &self,
        entry: &Entry,
        before: &[Planned<'c>],
        replaces: Footprint,
    ) -> Result<Option<Box<Reservation>>, Refusal> {
        let size = entry
            .extra()
            .of
            .and_then(|of| before[of as usize].entry.size);
        let after = node_footprint(entry, size);
        Ok(match self.shared.quota {
            Some(_) if self.dry_run => {
                self.check_room(entry, after)?;
                None
            }
            Some(account) => Some(Box::new(account.reserve(
                &entry.shown_path(),
                replaces,
                after,
            )?)),
            None => None,
        })
    }

    /// `denied` for what this receiver does not make: special files on a server,
    /// device nodes unless running as root.
    fn may_make(&self, entry: &Entry, shown: &str) -> Result<(), Refusal> {
        let server = self.shared.quota.is_some();
        let root = rustix::process::geteuid().is_root();
        let denied = match entry.kind {
            kind if server => server_keeps_no(kind),
            EntryKind::Char | EntryKind::Block if !root => {
                Some("only a receiver running as root makes device nodes")
            }
            _ => None,
        };
        match denied {
            Some(why) => Err(Refusal::new(
                ErrorCode::Denied,
                format!("{shown}: a {}: {why}", entry.kind.name()),
            )),
            None => Ok(()),
        }
    }

    /// A hard link's file: its path, if it was accepted or is there already.
    fn linked_file<'p>(
        &self,
        entry: &Entry,
        before: &'p [Planned<'c>],
        shown: &str,
    ) -> Result<Option<&'p Entry>, Refusal> {
        let Some(of) = entry.extra().of else {
            return Ok(None);
        };
        let file = &before[of as usize];
        if file.expects_data || file.arrived.load(Ordering::Relaxed) {
            Ok(Some(&file.entry))
        } else {
            Err(Refusal::new(
                ErrorCode::NotFound,
                format!("{shown}: the file it is a hard link of was not accepted"),
            ))
        }
    }

    fn claim(&self, entry: &Entry, shown: &str) -> Result<Claim<'c>, Refusal> {
        self.shared
            .claims
            .claim(self.within, &entry.path_bytes())
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::Busy,
                    format!("{shown}: being received by another session"),
                )
            })
    }

    /// Counts `needed` bytes against the free space left on the target's disk.
    fn take_free_space(&mut self, shown: &str, needed: u64) -> Result<(), Refusal> {
        let Some(left) = self.free.as_mut() else {
            return Ok(());
        };
        *left = left.checked_sub(needed).ok_or_else(|| {
            Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "{shown}: needs {}, the receiver has {} free",
                    HumanBytes(needed),
                    HumanBytes(*left)
                ),
            )
        })?;
        Ok(())
    }

    /// Reserves the entry's room in the user's quota, if there is one: what it will
    /// hold once complete, less what its partial (of `partial` bytes) and the file it
    /// replaces hold already.
    fn reserve_quota(
        &self,
        entry: &Entry,
        partial: Option<u64>,
        replaces: Footprint,
    ) -> Result<Option<Box<Reservation>>, Refusal> {
        let Some(account) = self.shared.quota else {
            return Ok(None);
        };
        let before = Footprint {
            bytes: partial.unwrap_or(0) + replaces.bytes,
            files: u64::from(partial.is_some()) + replaces.files,
        };
        let after = Footprint {
            bytes: entry.size.unwrap_or(0),
            files: 1,
        };
        Ok(Some(Box::new(account.reserve(
            &entry.shown_path(),
            before,
            after,
        )?)))
    }
}

/// What a dry run finds the file `entry` needs in the quota, as a real run admits
/// it: built by delta from an old file (`basis`) it may turn out to be, the new
/// file in its place; else the new file beside the old, less the `partial` bytes
/// it resumes from. What a directory in the way (`look`) holds goes first where
/// the room is needed.
fn dry_run_needs(
    entry: &Entry,
    (replaces, partial): (Footprint, Option<u64>),
    look: Option<&in_the_way::Look>,
    basis: Option<&(Basis, Signature)>,
) -> Footprint {
    let size = entry.size.unwrap_or(0);
    let mut gone = look.map(|look| look.freed).unwrap_or_default();
    if basis.is_some_and(|(basis, _)| basis.may_be(entry.size, entry.mtime)) {
        gone += replaces;
    } else if let Some(len) = partial {
        gone += Footprint {
            bytes: len,
            files: 1,
        };
    }
    Footprint {
        bytes: size.saturating_sub(gone.bytes),
        files: 1u64.saturating_sub(gone.files),
    }
}

/// What was decided for an accepted entry.
enum Decided<'c> {
    /// `existed`: it was there already (it gets its mode and time only), with
    /// other metadata when `attrs`; `replaced`: made in place of a non-directory.
    Dir {
        existed: bool,
        attrs: bool,
        replaced: bool,
    },
    /// An entry without data, made after the files; `replaces` what is there
    /// (`other`: something that is no regular file).
    Make {
        claim: Claim<'c>,
        reservation: Option<Box<Reservation>>,
        replaces: Footprint,
        other: bool,
        /// It replaces this directory (see [`Planned::dir_seen`]).
        over_dir: Option<(u64, u64)>,
    },
    /// There already; with other metadata when `attrs` (a real run gave it the
    /// offered ones).
    Same { attrs: bool },
    File {
        resume_from: Option<Box<(u64, Hasher)>>,
        claim: Claim<'c>,
        reservation: Option<Box<Reservation>>,
        replaces: Footprint,
        other: bool,
        basis: Option<(Basis, Signature)>,
        /// It replaces this directory (see [`Planned::dir_seen`]).
        over_dir: Option<(u64, u64)>,
    },
}
