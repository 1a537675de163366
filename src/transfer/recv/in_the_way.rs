//! A change of type on the receiving side, mirrored as `rsync -a` mirrors it, where
//! the receiver replaces files (`--overwrite`, a `put -f`, a `get -f`): a directory
//! offered where the receiver holds a file, a link or a special file takes its
//! place (`plan.rs` removes it when it makes the directory), and a file or link
//! offered where the receiver holds a directory takes the directory's place when
//! that is empty or, with `--delete`, once `--delete`'s rules let all it holds go
//! (`fs::sink::TargetDir::clear`; emptied once the file verified, replaced when it
//! is named). What goes from beneath such a directory is reported with what
//! `--delete` removes (`mirror.rs`).

use std::os::fd::OwnedFd;
use std::sync::PoisonError;

use super::shared::Shared;
use crate::escape::escape;
use crate::fs::Refusal;
use crate::fs::filter::Filter;
use crate::fs::ledger::Footprint;
use crate::fs::sink::{PartFile, Prune, Spare, TargetDir};
use crate::proto::message::{ErrorCode, KeptWhy, Removed};

/// Why `--delete` keeps `path` (a directory: `is_dir`) although the offer lacks
/// it: `filter` excludes it, or another session of this process is receiving it
/// (beneath the target of identity `within`).
pub(crate) fn kept(
    filter: &Filter,
    shared: &Shared<'_>,
    within: (u64, u64),
    path: &str,
    is_dir: bool,
) -> Option<Spare> {
    if filter.excluded(path.as_bytes(), is_dir) {
        return Some(Spare::Excluded);
    }
    if is_dir && shared.claims.dir_held(within, path.as_bytes()) {
        // Another session writes into it (its files may not be there yet).
        return Some(Spare::Kept(KeptWhy::Busy));
    }
    match shared.claims.claim(within, path.as_bytes()) {
        None => Some(Spare::Kept(KeptWhy::Busy)),
        Some(_) => None,
    }
}

/// The refusal of an entry whose name holds something (a directory: `is_dir`)
/// the filters exclude, under `--delete`: the user's word on it stands, whatever
/// took its name at the source (rsync lets it go). The rules travel with
/// `--dry-run` and `-I` too: they protect only where `--delete` removes.
/// `path`: its bytes, and as shown.
pub(crate) fn excluded_in_the_way(
    shared: &Shared<'_>,
    (path, shown): (&[u8], &str),
    is_dir: bool,
) -> Option<Refusal> {
    let mirroring = shared.mirroring?;
    if !(mirroring.delete && mirroring.filter.excluded(path, is_dir)) {
        return None;
    }
    let what = if is_dir {
        "the directory of that name"
    } else {
        "what holds that name"
    };
    Some(Refusal::new(
        ErrorCode::Exists,
        format!(
            "{shown}: {what} is one the filters exclude, which is never removed \
             (--delete-excluded lets it go); not replaced"
        ),
    ))
}

/// What the plan's look at a directory in the way found: it may go.
pub(crate) struct Look {
    /// What its regular files free.
    pub(crate) freed: Footprint,
    /// Which directory it was (see `TargetDir::dir_identity`): the only one the
    /// entry may replace later.
    pub(crate) seen: (u64, u64),
    /// In a dry run, what would go: reported only once the entry is accepted
    /// ([`Look::accepted`]), since a refused one removes nothing.
    found: Vec<Removed>,
}

impl Look {
    /// The entry that replaces the directory was accepted: in a dry run, what
    /// would go from inside is kept for the `deleted` report.
    pub(crate) fn accepted(self, shared: &Shared<'_>) {
        keep_for_report(shared, self.found);
    }
}

/// Keeps what went (or, in a dry run, would go) from directories in the way for the
/// `deleted` report (`mirror.rs`), ahead of what `--delete` removes.
fn keep_for_report(shared: &Shared<'_>, found: Vec<Removed>) {
    if let Some(mirroring) = shared.mirroring {
        (mirroring.cleared.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .extend(found);
    }
}

/// The plan's check that the directory at `components` (shown as `path`), which
/// the offered entry of that path replaces, may go (see `TargetDir::clear`):
/// nothing is removed; a dry run finds what would.
pub(crate) fn look(
    shared: &Shared<'_>,
    target: &TargetDir,
    at: (&[&[u8]], &str),
) -> Result<Look, Refusal> {
    let dry_run = shared.mirroring.is_some_and(|mirroring| mirroring.dry_run);
    // Taken first: a directory swapped in while it is looked at is not this one.
    let seen = target.dir_identity(at.0);
    let mut found = Vec::new();
    let freed = walk(
        shared,
        target,
        at,
        (None, None),
        (true, &mut |removed| {
            if dry_run {
                found.push(removed);
            }
        }),
    )?;
    Ok(Look { freed, seen, found })
}

/// Empties the directory at `components` (shown as `path`) that the offered entry
/// of that path replaces (see `TargetDir::clear`), found through `parent`, the
/// descriptor of the directory the entry is named in, where the caller holds one.
/// With `--delete`, only the directory the plan saw (`seen`, where known) is
/// emptied. What goes is kept for the `deleted` report.
pub(crate) fn clear(
    shared: &Shared<'_>,
    target: &TargetDir,
    at: (&[&[u8]], &str),
    (parent, seen): (Option<&OwnedFd>, Option<(u64, u64)>),
) -> Result<(), Refusal> {
    let mut found = Vec::new();
    let result = walk(
        shared,
        target,
        at,
        (parent, seen),
        (false, &mut |removed| found.push(removed)),
    );
    keep_for_report(shared, found);
    result.map(drop)
}

/// [`TargetDir::clear`] with `--delete`'s rules of this session; `only_look`:
/// nothing removed. What goes (or would) is said to `said`.
fn walk(
    shared: &Shared<'_>,
    target: &TargetDir,
    at: (&[&[u8]], &str),
    (parent, seen): (Option<&OwnedFd>, Option<(u64, u64)>),
    (only_look, said): (bool, &mut dyn FnMut(Removed)),
) -> Result<Footprint, Refusal> {
    // Set once the offer is read; a stand-in would keep everything (`since` 0).
    let default = Default::default();
    let mirroring = shared.mirroring.unwrap_or(&default);
    let within = target.identity();
    if let Some(refusal) = excluded_in_the_way(shared, (at.1.as_bytes(), &escape(at.1)), true)
        && target.dir_identity(at.0) != (0, 0)
    {
        return Err(refusal);
    }
    let keep = |child: &str, is_dir: bool| kept(&mirroring.filter, shared, within, child, is_dir);
    let rules = Prune {
        offered: &|_| false,
        offered_raw: &|_| false,
        keep: &keep,
        since: mirroring.since,
        dry_run: only_look,
        seen,
    };
    target.clear(at, parent, mirroring.delete, &rules, said)
}

/// Before the verified `part` of the file at `components` (shown as `path`) is
/// named: the directory the plan let it replace emptied, and the part allowed to
/// take that directory's place when it is named, so the directory stays until
/// then (`PartFile::replaces_dir`). Refused (the part then discarded) where
/// something came that must stay.
pub(crate) fn make_room(
    part: &mut PartFile,
    shared: &Shared<'_>,
    target: &TargetDir,
    (components, path): (&[&[u8]], &str),
    seen: Option<(u64, u64)>,
) -> Result<(), Refusal> {
    // The directory beside the part: the one its exchange replaces.
    clear(
        shared,
        target,
        (components, path),
        (Some(part.parent()), seen),
    )?;
    part.replaces_dir();
    Ok(())
}
