//! Deciding an offer: every entry's path checked, duplicates and paths another
//! session is receiving refused, files already there answered `same`, other
//! existing files and what will not fit refused, directories created, and
//! resumable data found, and (feature `delta`) the file an entry replaces chunked
//! as its basis. Each decision goes out in the plan as soon as it is made.

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
use crate::fs::path::check_path;
use crate::fs::quota::Reservation;
use crate::fs::sink::{Basis, Placement, Resolver};
use crate::proto::delta::{MAX_PLAN_CHUNKS, MIN_DELTA_SIZE};
use crate::proto::hash::Hasher;
use crate::proto::message::{Decision, Entry, EntryKind, ErrorCode, Signature};
use crate::proto::wire::FrameWriter;
use crate::transfer::Tally;
use crate::transfer::offer::ListWriter;
use crate::ui::report::FileOutcome;

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
    /// The file this entry replaces, chunked, when the plan offered it as a basis.
    pub(crate) basis: Option<Box<Basis>>,
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
            basis: None,
        }
    }

    /// Where this entry's data starts when the sender agrees to resume.
    pub(crate) fn resume_offset(&self) -> u64 {
        self.resume_from.as_ref().map_or(0, |resume| resume.0)
    }
}

/// Decides every offered entry and sends the plan.
pub(crate) fn plan<'c, W: Write>(
    entries: Vec<Entry>,
    writer: &mut FrameWriter<W>,
    shared: &Shared<'c>,
    tally: &Tally,
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
                chunks_left: MAX_PLAN_CHUNKS,
            };
            for entry in entries {
                let (item, decision) = decider.decide(entry, tally);
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
        delta: None,
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
    /// Chunks the plan's signatures may still list (see `MAX_PLAN_CHUNKS`).
    chunks_left: u64,
}

impl<'c> Decider<'_, 'c> {
    fn decide(&mut self, entry: Entry, tally: &Tally) -> (Planned<'c>, Decision) {
        match self.decide_entry(&entry) {
            Ok(Decided::Dir) => {
                let planned = Planned {
                    accepted_dir: true,
                    ..Planned::skipped(entry)
                };
                (planned, send_from(0, None))
            }
            Ok(Decided::Same) => {
                tally.record(FileOutcome::Same {
                    path: entry.path.clone(),
                    size: entry.size,
                });
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
                basis,
            }) => {
                let mut decision = match &resume_from {
                    Some(resume) => send_from(resume.0, Some(&resume.1)),
                    None => send_from(0, None),
                };
                let basis = basis.map(|(basis, signature)| {
                    if let Decision::Send { delta, .. } = &mut decision {
                        *delta = Some(signature);
                    }
                    Box::new(basis)
                });
                let planned = Planned {
                    expects_data: true,
                    resume_from,
                    claim: Some(claim),
                    reservation,
                    replaces,
                    basis,
                    ..Planned::skipped(entry)
                };
                (planned, decision)
            }
            Err(refusal) => {
                tally.failed(&entry.path, refusal.code, refusal.to_string());
                let skip = Decision::Skip {
                    code: refusal.code,
                    message: refusal.message,
                };
                (Planned::skipped(entry), skip)
            }
        }
    }

    fn decide_entry(&mut self, entry: &Entry) -> Result<Decided<'c>, Refusal> {
        let shown = escape(&entry.path);
        let components = check_path(&entry.path)
            .map_err(|why| Refusal::new(ErrorCode::BadPath, format!("{shown}: {why}")))?;
        if !self.seen.insert(CLAIM_KEYS.hash_one(&entry.path)) {
            return Err(Refusal::new(
                ErrorCode::BadPath,
                format!("{shown}: offered twice"),
            ));
        }
        if entry.kind != EntryKind::File {
            return self.decide_other(entry, &shown, &components);
        }
        let settings = self.shared.settings;
        let claim = self.claim(entry, &shown)?;
        let placement = self.resolver.probe_file(
            &entry.path,
            &components,
            settings.overwrite,
            (entry.size, entry.mtime),
        )?;
        let replaces = match placement {
            Placement::Same => return Ok(Decided::Same),
            Placement::Free(Some(bytes)) => Footprint { bytes, files: 1 },
            Placement::Free(None) => Footprint::default(),
        };
        let mut resume_from = None;
        if let Some(size) = entry.size {
            if settings.resume {
                resume_from = self
                    .resolver
                    .find_partial(&entry.path, &components, size, self.shared.transfer.hash)?
                    .map(Box::new);
            } else {
                self.resolver.discard_partial(&components, size);
            }
            let needed = size - resume_from.as_ref().map_or(0, |resume| resume.0);
            self.take_free_space(&shown, needed)?;
        }
        let partial = resume_from.as_ref().map(|resume| resume.0);
        let reservation = self.reserve_quota(entry, partial, replaces)?;
        let basis = match (&resume_from, placement) {
            (None, Placement::Free(Some(_))) => self.basis(entry, &components)?,
            _ => None,
        };
        Ok(Decided::File {
            resume_from,
            claim,
            reservation,
            replaces,
            basis,
        })
    }

    /// Keeps other sessions of this process off `entry`'s path until it is done.
    fn claim(&self, entry: &Entry, shown: &str) -> Result<Claim<'c>, Refusal> {
        self.shared
            .claims
            .claim(self.within, &entry.path)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::Busy,
                    format!("{shown}: being received by another session"),
                )
            })
    }

    /// The file `entry` will replace, chunked as its basis, when feature `delta` is
    /// in force and a delta may pay: both versions large enough, and room left in
    /// the plan's budget of chunks.
    fn basis(
        &mut self,
        entry: &Entry,
        components: &[&str],
    ) -> Result<Option<(Basis, Signature)>, Refusal> {
        // A sparse file (feature meta) comes in runs, never as a delta.
        let worth_it =
            entry.size.is_some_and(|size| size >= MIN_DELTA_SIZE) && entry.sparse != Some(true);
        if !self.shared.delta || !worth_it || self.chunks_left == 0 {
            return Ok(None);
        }
        let chunked = self
            .resolver
            .chunk_basis(&entry.path, components, self.chunks_left)?;
        if let Some((basis, _)) = &chunked {
            self.chunks_left -= basis.chunks();
        }
        Ok(chunked)
    }

    /// Decides an entry that is not a file: a directory is created now.
    fn decide_other(
        &mut self,
        entry: &Entry,
        shown: &str,
        components: &[&str],
    ) -> Result<Decided<'c>, Refusal> {
        match entry.kind {
            EntryKind::Dir => {
                self.resolver.create_dir(components)?;
                Ok(Decided::Dir)
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
            &entry.path,
            before,
            after,
        )?)))
    }
}

/// What was decided for an accepted entry.
enum Decided<'c> {
    Dir,
    Same,
    File {
        resume_from: Option<Box<(u64, Hasher)>>,
        claim: Claim<'c>,
        reservation: Option<Box<Reservation>>,
        replaces: Footprint,
        basis: Option<(Basis, Signature)>,
    },
}
