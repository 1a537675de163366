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
use crate::fs::Refusal;
use crate::fs::filter::Filter;
use crate::fs::ledger::Footprint;
use crate::fs::sink::{PartFile, Prune, TargetDir};

/// Why `--delete` keeps `path` (a directory: `is_dir`) although the offer lacks
/// it: `filter` excludes it, or another session of this process is receiving it
/// (beneath the target of identity `within`).
pub(crate) fn kept(
    filter: &Filter,
    shared: &Shared<'_>,
    within: (u64, u64),
    path: &str,
    is_dir: bool,
) -> Option<&'static str> {
    if filter.excluded(path, is_dir) {
        return Some("a filter excludes it, which protects it from --delete");
    }
    match shared.claims.claim(within, path.as_bytes()) {
        None => Some("another session is receiving it"),
        Some(_) => None,
    }
}

/// Empties the directory at `components` (shown as `path`) that the offered file
/// or link of that path replaces (see `TargetDir::clear`), found through `parent`,
/// the descriptor of the directory the entry is named in, where the caller holds
/// one; with `only_look`, finds only whether it may (the plan's check). What goes
/// (in a dry run, what would) is kept for the `deleted` report; what its regular
/// files free is returned.
pub(crate) fn clear(
    shared: &Shared<'_>,
    target: &TargetDir,
    (components, path): (&[&[u8]], &str),
    parent: Option<&OwnedFd>,
    only_look: bool,
) -> Result<Footprint, Refusal> {
    // Set once the offer is read; a stand-in would keep everything (`since` 0).
    let default = Default::default();
    let mirroring = shared.mirroring.unwrap_or(&default);
    let within = target.identity();
    let keep = |child: &str, is_dir: bool| kept(&mirroring.filter, shared, within, child, is_dir);
    let rules = Prune {
        offered: &|_| false,
        keep: &keep,
        since: mirroring.since,
        dry_run: only_look,
    };
    // A real session's look finds what its commit removes, and reports then; a dry
    // run's look reports what would go only if all of it may (else it is refused,
    // as the real run's look refuses it, and nothing goes).
    let report = !only_look || mirroring.dry_run;
    let mut found = Vec::new();
    let result = target.clear(
        (components, path),
        parent,
        mirroring.delete,
        &rules,
        &mut |removed| {
            if report {
                found.push(removed);
            }
        },
    );
    if only_look && result.is_err() {
        return result;
    }
    let mut cleared = mirroring
        .cleared
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    cleared.extend(found);
    result
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
) -> Result<(), Refusal> {
    // The directory beside the part: the one its exchange replaces.
    clear(
        shared,
        target,
        (components, path),
        Some(part.parent()),
        false,
    )?;
    part.replaces_dir();
    Ok(())
}
