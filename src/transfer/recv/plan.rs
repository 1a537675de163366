//! Deciding an offer: every entry's path checked, duplicates and paths another
//! session is receiving refused, files already there answered `same`, other
//! existing files and what will not fit refused, directories created, and
//! resumable data found. Each decision goes out in the plan as soon as it is made.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::io::Write;

use anyhow::Result;
use indicatif::HumanBytes;

use super::claims::{CLAIM_KEYS, Claim};
use super::shared::{Destination, Shared};
use crate::error::refused;
use crate::escape::escape;
use crate::fs::Refusal;
use crate::fs::home::Footprint;
use crate::fs::path::check_path_bytes;
use crate::fs::quota::Reservation;
use crate::fs::sink::{Placement, Resolver};
use crate::proto::hash::Hasher;
use crate::proto::message::{Decision, Entry, EntryKind, ErrorCode, Mirror};
use crate::proto::wire::FrameWriter;
use crate::transfer::Tally;
use crate::transfer::offer::ListWriter;
use crate::ui::report::{Change, FileOutcome};

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
    /// Room held in the user's quota until the entry settles (a server's `put`);
    /// boxed, so that an entry without one costs a pointer.
    pub(crate) reservation: Option<Box<Reservation>>,
    /// What an existing file this entry replaces holds (it counts until replaced).
    pub(crate) replaces: Footprint,
}

impl Planned<'_> {
    fn skipped(entry: Entry) -> Self {
        Planned {
            entry,
            expects_data: false,
            accepted_dir: false,
            resume_from: None,
            claim: None,
            reservation: None,
            replaces: Footprint::default(),
        }
    }

    /// Where this entry's data starts when the sender agrees to resume.
    pub(crate) fn resume_offset(&self) -> u64 {
        self.resume_from.as_ref().map_or(0, |resume| resume.0)
    }
}

/// Decides every offered entry and sends the plan. With a `mirror` member, a file
/// of the offered size and time is `same` even where files are replaced, and a dry
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
                decisions.push(&send_from(0, None))?;
                planned.push(Planned {
                    expects_data: true,
                    ..Planned::skipped(entry)
                });
            }
        }
        Destination::Dir(target) => {
            let mut decider = Decider {
                within: target.identity(),
                resolver: target.resolver(),
                shared,
                seen: HashSet::new(),
                free: target.free_space(),
                quick_check: mirror.is_some(),
                dry_run: mirror.is_some_and(|mirror| mirror.dry_run),
            };
            for entry in entries {
                let (mut item, decision) = decider.decide(entry, tally);
                if decider.dry_run {
                    dry_run_change(&item, &decision, tally);
                    item.expects_data = false;
                }
                planned.push(item);
                decisions.push(&decision)?;
            }
        }
    }
    decisions.finish_plan()?;
    Ok(planned)
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

fn send_from(offset: u64, prefix: Option<&Hasher>) -> Decision {
    Decision::Send {
        offset,
        prefix_hash: prefix.map(|hasher| hasher.peek().to_hex()),
        replaces: false,
    }
}

/// `send_from(0)` for what replaces, or stands beside, something already there.
fn send_over(replaces: bool) -> Decision {
    Decision::Send {
        offset: 0,
        prefix_hash: None,
        replaces,
    }
}

/// What a dry run shows of one decision on this side (refusals were tallied).
fn dry_run_change(item: &Planned, decision: &Decision, tally: &Tally) {
    let path = &item.entry.shown_path();
    match decision {
        Decision::Send { replaces, .. } if item.entry.kind == EntryKind::Dir => {
            if !replaces {
                tally.change(Change::NewDir, path, 0, None);
            }
        }
        Decision::Send { replaces, .. } => {
            let change = if *replaces {
                Change::Changed
            } else {
                Change::New
            };
            tally.change(change, path, item.entry.size.unwrap_or(0), None);
        }
        Decision::Skip { .. } => {}
    }
}

/// The state of deciding one offer for a directory.
struct Decider<'s, 'c> {
    /// The target directory's identity, for claims.
    within: (u64, u64),
    resolver: Resolver<'s>,
    shared: &'s Shared<'c>,
    /// Paths offered so far: a second entry with the same path is refused.
    seen: HashSet<u64>,
    /// Bytes the accepted files may still take, if the system says.
    free: Option<u64>,
    /// `same` holds even where files are replaced (a mirroring sender's offer).
    quick_check: bool,
    /// Decide only: touch nothing (section 16).
    dry_run: bool,
}

impl<'c> Decider<'_, 'c> {
    fn decide(&mut self, entry: Entry, tally: &Tally) -> (Planned<'c>, Decision) {
        match self.decide_entry(&entry) {
            Ok(Decided::Dir { existed }) => {
                let planned = Planned {
                    accepted_dir: true,
                    ..Planned::skipped(entry)
                };
                (planned, send_over(existed))
            }
            Ok(Decided::Same) => {
                self.tally_same(&entry, tally);
                let skip = Decision::Skip {
                    code: ErrorCode::Same,
                    message: "already on the receiver (same size and time)".into(),
                };
                (Planned::skipped(entry), skip)
            }
            Ok(Decided::File {
                resume_from,
                claim,
                reservation,
                replaces,
            }) => {
                let decision = match &resume_from {
                    Some(resume) => send_from(resume.0, Some(&resume.1)),
                    None => send_over(replaces.files > 0),
                };
                let planned = Planned {
                    expects_data: true,
                    resume_from,
                    claim: Some(claim),
                    reservation,
                    replaces,
                    ..Planned::skipped(entry)
                };
                (planned, decision)
            }
            Err(refusal) if entry.kind == EntryKind::Unsent && refusal.code == ErrorCode::Io => {
                // Not sent, as the sender counts it: exit 10 on both sides.
                let reason = entry.reason.as_deref().unwrap_or_default();
                tally.not_sent(&entry.shown_path(), reason, false);
                let skip = Decision::Skip {
                    code: refusal.code,
                    message: refusal.message,
                };
                (Planned::skipped(entry), skip)
            }
            Err(refusal) => {
                self.tally_refused(&entry, &refusal, tally);
                let skip = Decision::Skip {
                    code: refusal.code,
                    message: refusal.message,
                };
                (Planned::skipped(entry), skip)
            }
        }
    }

    /// An entry refused: in a dry run a change to show, else a failure.
    fn tally_refused(&self, entry: &Entry, refusal: &Refusal, tally: &Tally) {
        let why = refusal.to_string();
        match self.dry_run {
            true => tally.change(Change::Skipped, &entry.shown_path(), 0, Some(&why)),
            false => tally.failed(&entry.shown_path(), refusal.code, why),
        }
    }

    /// A file already here: in a dry run a change to show, else delivered.
    fn tally_same(&self, entry: &Entry, tally: &Tally) {
        match self.dry_run {
            true => tally.change(Change::Same, &entry.shown_path(), 0, None),
            false => tally.record(FileOutcome::Same {
                path: entry.shown_path().into_owned(),
                size: entry.size,
            }),
        }
    }

    fn decide_entry(&mut self, entry: &Entry) -> Result<Decided<'c>, Refusal> {
        let shown = escape(&entry.shown_path()).into_owned();
        let bytes = entry.path_bytes();
        let components = check_path_bytes(&bytes, self.shared.settings.names)
            .map_err(|why| Refusal::new(ErrorCode::BadPath, format!("{shown}: {why}")))?;
        if !self.seen.insert(CLAIM_KEYS.hash_one(&*bytes)) {
            return Err(Refusal::new(
                ErrorCode::BadPath,
                format!("{shown}: offered twice"),
            ));
        }
        if entry.kind != EntryKind::File {
            return self.decide_other(entry, &shown, &components);
        }
        let settings = self.shared.settings;
        let claim = self.claim(&bytes, &shown)?;
        let replaces = match self.placement(entry, &components)? {
            Placement::Same => return Ok(Decided::Same),
            Placement::Free(Some(bytes)) => Footprint { bytes, files: 1 },
            Placement::Free(None) => Footprint::default(),
        };
        let mut resume_from = None;
        if self.dry_run {
            self.check_quota(entry, replaces)?;
            return Ok(Decided::File {
                resume_from,
                claim,
                reservation: None,
                replaces,
            });
        }
        if let Some(size) = entry.size {
            if settings.resume {
                resume_from = self
                    .resolver
                    .find_partial(
                        &entry.shown_path(),
                        &components,
                        size,
                        self.shared.transfer.hash,
                    )?
                    .map(Box::new);
            } else {
                self.resolver.discard_partial(&components, size);
            }
            let needed = size - resume_from.as_ref().map_or(0, |resume| resume.0);
            self.take_free_space(&shown, needed)?;
        }
        let partial = resume_from.as_ref().map(|resume| resume.0);
        let reservation = self.reserve_quota(entry, partial, replaces)?;
        Ok(Decided::File {
            resume_from,
            claim,
            reservation,
            replaces,
        })
    }

    /// Keeps other sessions of this process off `path` until the entry settles.
    fn claim(&self, path: &[u8], shown: &str) -> Result<Claim<'c>, Refusal> {
        self.shared.claims.claim(self.within, path).ok_or_else(|| {
            Refusal::new(
                ErrorCode::Busy,
                format!("{shown}: being received by another session"),
            )
        })
    }

    /// What is at a file entry's final name. A mirroring sender's offer is quick
    /// checked (`same`) even where files are replaced: a mirror sends what changed.
    fn placement(&mut self, entry: &Entry, components: &[&[u8]]) -> Result<Placement, Refusal> {
        let offered = (entry.size, entry.mtime);
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

    /// A dry run's quota check: whether the entry would fit, holding nothing.
    fn check_quota(&self, entry: &Entry, replaces: Footprint) -> Result<(), Refusal> {
        let (Some(size), Some(account)) = (entry.size, self.shared.quota) else {
            return Ok(());
        };
        let more = Footprint {
            bytes: size.saturating_sub(replaces.bytes),
            files: 1 - replaces.files.min(1),
        };
        account.books().check(more, &entry.shown_path())
    }

    /// Decides an entry that is not a file: a directory is created now.
    fn decide_other(
        &mut self,
        entry: &Entry,
        shown: &str,
        components: &[&[u8]],
    ) -> Result<Decided<'c>, Refusal> {
        match entry.kind {
            EntryKind::Dir => {
                let existed = self.resolver.probe_dir(components)?;
                if !self.dry_run && !existed {
                    self.resolver.create_dir(components)?;
                }
                Ok(Decided::Dir { existed })
            }
            EntryKind::Unsent => {
                let reason = entry.reason.as_deref().unwrap_or_default();
                Err(Refusal::new(
                    ErrorCode::Io,
                    format!("{shown}: not sent: {}", escape(reason)),
                ))
            }
            other => Err(Refusal::new(
                ErrorCode::Denied,
                format!("{shown}: this receiver does not make {}s", other.name()),
            )),
        }
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

/// What was decided for an accepted entry.
enum Decided<'c> {
    /// `existed`: it was there already (it gets its mode and time only).
    Dir {
        existed: bool,
    },
    Same,
    File {
        resume_from: Option<Box<(u64, Hasher)>>,
        claim: Claim<'c>,
        reservation: Option<Box<Reservation>>,
        replaces: Footprint,
    },
}
