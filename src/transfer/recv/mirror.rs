//! A mirroring sender's requests on the receiving side (feature `mirror`, section 17
//! of `docs/PROTOCOL.md`): whether `--delete` is allowed here, and, once the data
//! phase is over, what the offered directories hold and the offer does not,
//! removed (or in a dry run only listed) and reported in the MACed `deleted` list,
//! after what went from directories that offered files or links replaced
//! (`in_the_way.rs`).

use std::collections::HashSet;
use std::io::Write;
use std::sync::PoisonError;

use anyhow::Result;

use super::in_the_way;
use super::plan::Planned;
use super::shared::{Destination, Mirroring, Shared};
use crate::error::{Kind, fail, refused};
use crate::escape::Named;
use crate::fs::filter::Filter;
use crate::fs::sink::{Prune, TargetDir};
use crate::proto::message::{ErrorCode, Mirror, Removed};
use crate::proto::wire::FrameWriter;
use crate::transfer::Tally;
use crate::transfer::offer::ListWriter;
use crate::ui::report::Change;

/// Checks what the sender asks: `--delete` only where files may be replaced
/// (`--overwrite`, or a `put -f`), and only into a directory; the rules must be
/// valid patterns, and `delete_excluded` comes only with `delete`. `denied`
/// refuses the whole offer, before anything happens. The filter returned is what
/// `--delete` spares: none with `--delete-excluded`.
fn accept(mirror: &Mirror, shared: &Shared<'_>) -> Result<Filter> {
    if mirror.delete && !shared.settings.overwrite {
        return Err(refused(
            ErrorCode::Denied,
            "the receiver does not let its sender delete: it replaces no files \
             (`xfer recv --overwrite` allows --delete)",
        ));
    }
    // Standard output carries the data: no listing of a dry run may go there.
    if (mirror.delete || mirror.dry_run) && matches!(shared.destination, Destination::Stdout) {
        return Err(refused(
            ErrorCode::Denied,
            "--delete and --dry-run need a directory; the receiver writes to standard output",
        ));
    }
    if mirror.delete_excluded && !mirror.delete {
        return Err(fail(Kind::Protocol, "delete_excluded without delete"));
    }
    let filter = Filter::from_wire(&mirror.rules).map_err(|why| fail(Kind::Protocol, why))?;
    // A client's `get` decides for its own directory; a sender asks in its offer.
    let unprotected = match shared.settings.asked {
        Some(_) => shared.settings.delete_excluded,
        None => mirror.delete_excluded,
    };
    Ok(match unprotected {
        true => Filter::default(),
        false => filter,
    })
}

impl Mirroring {
    /// What the offer's `mirror` member asks, if it is allowed here (see
    /// [`accept`]); a dry run is told to the tally.
    pub(crate) fn of(
        mirror: Option<&Mirror>,
        shared: &Shared<'_>,
        tally: &Tally,
    ) -> Result<Mirroring> {
        let offered = mirror.map_or((false, false), |mirror| (mirror.delete, mirror.dry_run));
        let since = session_start(offered.0);
        if shared.settings.asked.is_some_and(|asked| asked != offered) {
            // A server may not delete here unasked, nor ignore a dry run.
            return Err(fail(
                Kind::Protocol,
                format!(
                    "the server's offer says delete {}, dry run {}; this side asked {:?}",
                    offered.0, offered.1, shared.settings.asked
                ),
            ));
        }
        // A client's `get` decides for its own directory; a sender asks in its offer.
        let ignore_times = match shared.settings.asked {
            Some(_) => shared.settings.ignore_times,
            None => mirror.is_some_and(|mirror| mirror.ignore_times),
        };
        let Some(mirror) = mirror else {
            return Ok(Mirroring {
                since,
                ignore_times,
                ..Mirroring::default()
            });
        };
        let filter = accept(mirror, shared)?;
        if mirror.dry_run {
            tally.dry_run();
        }
        Ok(Mirroring {
            filter,
            since,
            delete: mirror.delete,
            dry_run: mirror.dry_run,
            report_kept: mirror.report_kept,
            ignore_times,
            cleared: Default::default(),
        })
    }

    /// After the data phase and the entries without data: with `--delete`, the
    /// deletions (a dry run: only found) and their report.
    pub(crate) fn prune<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        shared: &Shared<'_>,
        target: &TargetDir,
        planned: &[Planned],
        tally: &Tally,
    ) -> Result<()> {
        if !self.delete {
            return Ok(());
        }
        let cleared =
            std::mem::take(&mut *self.cleared.lock().unwrap_or_else(PoisonError::into_inner));
        prune_and_report(writer, shared, target, (planned, cleared), self, tally)
    }
}

/// The moment a session's deletions count from (see `fs::sink::Prune::since`),
/// on the clock the kernel stamps changes with (`beneath::change_clock`). A
/// precise clock with a margin for the lag (50 ms, as before) spared a file a
/// previous mirror had just written, and a quick "sync, change, sync" left it
/// behind without a word. But a change made just before the session may carry a
/// stamp at or after that clock's reading (of the same tick, or a precise stamp:
/// the kernel stamps a change precisely where the file's times were just looked
/// at, and the coarse clock can lag by more than a tick on a busy machine): with
/// `delete` the session begins once that clock has passed the precise time it
/// began at (a wait of about one tick, 4 ms here), so that such a file is not
/// taken for one changed during the run (it was kept, one run in five).
fn session_start(delete: bool) -> i128 {
    let now = crate::fs::beneath::change_clock();
    if !delete {
        return now;
    }
    let precise = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let began = i128::from(precise.tv_sec) * 1_000_000_000 + i128::from(precise.tv_nsec);
    // Bounded, should the clock be stepped back meanwhile: then a file changed
    // just before is kept, the safe way to be wrong.
    for _ in 0..100 {
        let later = crate::fs::beneath::change_clock();
        if later > began {
            return later;
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    now
}

/// Removes what the accepted directories of `planned` hold and the offer does not
/// (a dry run: only finds it), spares what the filter excludes and what another
/// session of this process is receiving, then sends the `deleted` report, which
/// begins with what was `cleared` from directories files or links replaced. What
/// was kept for safety is shown here, and listed in the report when the sender
/// asked (`report_kept`).
fn prune_and_report<W: Write>(
    writer: &mut FrameWriter<W>,
    shared: &Shared<'_>,
    target: &TargetDir,
    (planned, cleared): (&[Planned], Vec<Removed>),
    mirroring: &Mirroring,
    tally: &Tally,
) -> Result<()> {
    let (filter, since, dry_run) = (&mirroring.filter, mirroring.since, mirroring.dry_run);
    let (offered, offered_raw) = offered_paths(planned);
    let dirs: Vec<&str> = planned
        .iter()
        // A name that is not UTF-8 (`path_hex`) is never entered, nor removed: what
        // it holds beyond the offer is said kept (`spare_beneath_raw`).
        .filter(|item| item.accepted_dir && !item.entry.path.is_empty())
        .map(|item| item.entry.path.as_str())
        .collect();
    let within = target.identity();
    let keep = |path: &str, is_dir: bool| in_the_way::kept(filter, shared, within, path, is_dir);
    let rules = Prune {
        offered: &|path| offered.contains(path),
        offered_raw: &|path| offered_raw.contains(path),
        keep: &keep,
        since,
        dry_run,
        seen: None,
    };
    let mut report = ListWriter::deleted(writer, shared.transfer);
    let mut failed = None;
    let mut said = |removed: Removed| {
        let path = Named {
            text: removed.path.clone(),
            bytes: removed.bytes.clone(),
        };
        let why = removed.error.as_deref().filter(|_| removed.kept.is_none());
        tally.change(Change::of_removal(&removed), &path, 0, why);
        if removed.kept.is_some() && !mirroring.report_kept {
            return;
        }
        if failed.is_none() {
            failed = report.push(&removed).err();
        }
    };
    cleared.into_iter().for_each(&mut said);
    target.prune(&dirs, &rules, &mut said);
    for item in planned
        .iter()
        .filter(|item| item.accepted_dir && item.entry.path.is_empty())
    {
        target.spare_beneath_raw(&item.entry.path_bytes(), &rules, &mut said);
    }
    match failed {
        Some(err) => Err(err),
        None => report.finish_deleted(),
    }
}

/// The paths of the offer and every directory above one (whatever lies above an
/// offered path stays, offered itself or not); apart, as bytes, the names that are
/// not UTF-8 (`path_hex`, under `meta`) and what lies above them.
fn offered_paths<'p>(planned: &'p [Planned]) -> (HashSet<&'p str>, HashSet<Vec<u8>>) {
    let mut offered: HashSet<&str> = HashSet::with_capacity(planned.len());
    let mut offered_raw: HashSet<Vec<u8>> = HashSet::new();
    for item in planned {
        let mut path = item.entry.path.as_str();
        if path.is_empty() {
            let mut raw = item.entry.path_bytes().into_owned();
            while let Some(up) = raw.iter().rposition(|&b| b == b'/') {
                offered_raw.insert(raw.clone());
                raw.truncate(up);
            }
            offered_raw.insert(raw);
            continue;
        }
        offered.insert(path);
        while let Some((up, _)) = path.rsplit_once('/') {
            path = up;
            offered.insert(path);
        }
    }
    (offered, offered_raw)
}

#[cfg(test)]
mod tests {
    use super::session_start;

    /// A file written right before a mirror's session begins is older than it,
    /// never of the same tick (the kernel stamps changes with a 4 ms clock here).
    #[test]
    fn a_mirror_begins_after_the_tick_of_a_change_made_just_before() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("junk");
        for _ in 0..20 {
            std::fs::write(&file, b"j").unwrap();
            let stat = rustix::fs::lstat(&file).unwrap();
            let since = session_start(true);
            assert!(crate::fs::beneath::changed_at(&stat) < since);
        }
    }
}
