//! The [`Tally`] of one session: each entry's outcome shown at once and counted, and,
//! at the end, what the session adds up to (fine, or the kind of its first
//! failure). It shows through a `ui` reporter and must not reach for the wire.

use std::sync::Mutex;

use anyhow::Result;

use indicatif::HumanBytes;

use crate::error::{ErrorCode, Kind, fail, kind_of};
use crate::escape::Named;
use crate::proto::compress::Squeezed;
use crate::proto::negotiated::{Feature, Negotiated};
use crate::ui::report::{
    Change, DryRun, FileOutcome, Json, LIST_FILES_UP_TO, Reporter, Summary, not_sent_breakdown,
    not_sent_kind,
};

/// The outcomes of one session's entries as they happen: each is shown at once,
/// counted, and, at the end, decides the session's result.
pub(crate) struct Tally {
    reporter: Reporter,
    summary: Mutex<Summary>,
    first_failure: Mutex<Option<ErrorCode>>,
    /// How many entries the session's offer had, and what they were to be.
    offered: Mutex<(usize, &'static str)>,
    /// Failures said among the ancestors of the entry last recorded: one beneath
    /// them failing for the same reason (a link in place of a directory refuses
    /// everything beneath it) is counted, not said again.
    said: Mutex<Vec<Said>>,
}

/// Whether `beneath` (a failure of an entry beneath the one that failed with
/// `above`) says the same: the same words, or those of `above` without the hint in
/// parentheses that only the entry itself carries (`(... --overwrite replaces
/// files)`).
fn same_reason(above: &str, beneath: &str) -> bool {
    above == beneath
        || above.match_indices(" (").any(|(at, _)| {
            let (head, tail) = beneath.split_at_checked(at).unwrap_or(("", ""));
            head == &above[..at]
                && above.len() > beneath.len()
                && above.ends_with(tail)
                && above[..above.len() - tail.len()].ends_with(')')
        })
}

/// A failure said on its own line, and how many entries beneath it failed for the
/// same reason since.
struct Said {
    path: String,
    why: String,
    beneath: usize,
}

impl Tally {
    pub(crate) fn new(reporter: Reporter, negotiated: &Negotiated) -> Tally {
        Tally {
            reporter,
            summary: Mutex::new(Summary {
                hash: negotiated.hash(),
                encrypted: negotiated.has(Feature::Aead),
                ..Summary::default()
            }),
            first_failure: Mutex::new(None),
            offered: Mutex::new((0, "delivered")),
            said: Mutex::new(Vec::new()),
        }
    }

    /// How many entries the session's offer had (0 until it arrived).
    pub(crate) fn summary_offered(&self) -> usize {
        self.offered
            .lock()
            .expect("no panics while holding the lock")
            .0
    }

    /// The session's offer had `entries` entries, each to be `verb` (`delivered`,
    /// `received`): what [`Tally::verdict`] counts against.
    pub(crate) fn offered(&self, entries: usize, verb: &'static str) {
        *self
            .offered
            .lock()
            .expect("no panics while holding the lock") = (entries, verb);
    }

    pub(crate) fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    pub(crate) fn reporter_mut(&mut self) -> &mut Reporter {
        &mut self.reporter
    }

    /// Shows and counts one entry's outcome.
    pub(crate) fn record(&self, outcome: FileOutcome) {
        let said_above = self.said_above(&outcome);
        let mut summary = self
            .summary
            .lock()
            .expect("no panics while holding the lock");
        self.reporter
            .file(&outcome, summary.dry_run.is_some(), said_above);
        match outcome {
            FileOutcome::Verified {
                path,
                size,
                moved,
                digest,
                resumed_at,
                ..
            } => {
                // A resumed prefix was kept, not moved: it counts apart, and not
                // in the rate; nor do the holes of a sparse file.
                let kept = resumed_at.unwrap_or(0).min(size);
                summary.verified += 1;
                summary.bytes += moved.min(size - kept);
                summary.resumed += usize::from(resumed_at.is_some());
                summary.resumed_bytes += kept;
                if summary.listed.len() < LIST_FILES_UP_TO {
                    summary.listed.push((path.text, digest));
                }
            }
            FileOutcome::Same { .. } => summary.same += 1,
            FileOutcome::NotSent { reason, .. } => {
                let kind = not_sent_kind(&reason);
                match summary.not_sent.iter_mut().find(|(known, _)| known == kind) {
                    Some((_, n)) => *n += 1,
                    None => summary.not_sent.push((kind.to_string(), 1)),
                }
            }
            FileOutcome::Failed { code, .. } => {
                summary.failed += 1;
                summary.over_quota += usize::from(code == ErrorCode::Quota);
                self.first_failure
                    .lock()
                    .expect("no panics while holding the lock")
                    .get_or_insert(code);
            }
        }
    }

    /// Whether `outcome` is a failure an ancestor's line said already (same words);
    /// one not said is remembered for what lies beneath it. Failures passed by (the
    /// walk is depth first, parents first) say how many beneath them they covered.
    fn said_above(&self, outcome: &FileOutcome) -> bool {
        let path = outcome.path();
        let mut said = self.said.lock().expect("no panics while holding the lock");
        let passed = said
            .iter()
            .position(|above| !is_beneath(path, &above.path))
            .map_or_else(Vec::new, |at| said.split_off(at));
        let repeated = match outcome {
            FileOutcome::Failed { why, .. } => {
                match said.iter_mut().find(|a| same_reason(&a.why, why)) {
                    Some(above) => {
                        above.beneath += 1;
                        true
                    }
                    None => {
                        let (path, why) = (path.to_string(), why.clone());
                        said.push(Said {
                            path,
                            why,
                            beneath: 0,
                        });
                        false
                    }
                }
            }
            _ => false,
        };
        drop(said);
        self.say_beneath(passed);
        repeated
    }

    /// Says how many entries beneath each of `passed` failed as it did, if any.
    fn say_beneath(&self, passed: Vec<Said>) {
        if passed.iter().all(|above| above.beneath == 0) {
            return;
        }
        let dry_run = self.summary().dry_run.is_some();
        for above in passed.into_iter().filter(|above| above.beneath > 0) {
            self.reporter
                .failed_beneath(&above.path, above.beneath, dry_run);
        }
    }

    /// This session only plans (`--dry-run`): its changes are counted apart; what
    /// the other side would refuse fails it as it would fail the real run.
    pub(crate) fn dry_run(&self) {
        self.summary
            .lock()
            .expect("no panics while holding the lock")
            .dry_run = Some(DryRun::default());
    }

    /// Shows and counts one entry's change: every one in a dry run; in a real run,
    /// with `--itemize`, those that change the receiver. `size` is what a file to
    /// send holds; `note` says why an entry is skipped or kept.
    pub(crate) fn change(&self, change: Change, path: &Named, size: u64, note: Option<&str>) {
        let dry_run = {
            let mut summary = self
                .summary
                .lock()
                .expect("no panics while holding the lock");
            match change {
                Change::Deleted | Change::DeletedDir => summary.deleted += 1,
                Change::NotDeleted { .. } => summary.not_deleted += 1,
                Change::Kept { why, .. } => {
                    match summary.kept_for.iter_mut().find(|(w, _)| *w == why) {
                        Some((_, n)) => *n += 1,
                        None => summary.kept_for.push((why, 1)),
                    }
                }
                _ => {}
            }
            if let Some(dry) = summary.dry_run.as_mut() {
                match change {
                    Change::New => (dry.new, dry.bytes) = (dry.new + 1, dry.bytes + size),
                    // No files: the real run's summary counts files only.
                    Change::NewNode(_) | Change::ReplacedNode(_) => dry.other += 1,
                    Change::Changed | Change::Replaced => {
                        (dry.changed, dry.bytes) = (dry.changed + 1, dry.bytes + size);
                    }
                    Change::Same => dry.same += 1,
                    // A `same` file with other metadata is still `same`, as in a
                    // real run's summary: `attrs` counts it too.
                    Change::Attrs => (dry.same, dry.attrs) = (dry.same + 1, dry.attrs + 1),
                    Change::DirAttrs => dry.attrs += 1,
                    Change::Skipped => dry.skipped += 1,
                    _ => {}
                }
            }
            summary.dry_run.is_some()
        };
        let style = self.reporter.style();
        let listed = match change {
            Change::Same | Change::Skipped | Change::Changed => dry_run,
            Change::NotDeleted { .. } => true,
            // Said in the summary; listed as a deletion is.
            Change::Kept { .. } => dry_run || style.itemize || style.json != Json::Off,
            // No other event tells a JSON reader what went.
            Change::Deleted | Change::DeletedDir if style.json != Json::Off => true,
            _ => dry_run || style.itemize,
        };
        if listed {
            // What a dry run would move of a file, as a number for scripts (the
            // note says it in words).
            let moves = matches!(change, Change::New | Change::Changed | Change::Replaced);
            let bytes = (dry_run && moves).then_some(size);
            self.reporter.change(change, path, (note, bytes), dry_run);
        }
    }

    /// Counts what compression made of the session's data (`None`: none was
    /// compressed).
    pub(crate) fn squeezed(&self, squeezed: Option<Squeezed>) {
        if let Some(squeezed) = squeezed {
            self.summary
                .lock()
                .expect("no panics while holding the lock")
                .compression = Some(squeezed);
        }
    }

    /// Counts the bytes of a cut file kept as partial data for a rerun.
    pub(crate) fn kept(&self, bytes: u64) {
        self.summary
            .lock()
            .expect("no panics while holding the lock")
            .kept += bytes;
    }

    /// Counts the files of a session that ended early which went out whole,
    /// unanswered, and all it left unanswered (those, partly sent, not begun).
    pub(crate) fn left_over(&self, unacknowledged: usize, unfinished: usize) {
        let mut summary = self
            .summary
            .lock()
            .expect("no panics while holding the lock");
        summary.unacknowledged += unacknowledged;
        summary.unfinished += unfinished;
    }

    /// A connection lost while data of a file had moved: the error says so, and that
    /// a rerun resumes it from the `moved` bytes (`kept`, or what went out); one
    /// lost (or timed out) after files went out whole but unanswered, that a rerun
    /// finishes the job.
    pub(crate) fn resumable(&self, err: anyhow::Error, moved: &str) -> anyhow::Error {
        if kind_of(&err) != Some(Kind::Network) {
            return err;
        }
        let (kept, unacknowledged) = {
            let summary = self
                .summary
                .lock()
                .expect("no panics while holding the lock");
            (summary.kept, summary.unacknowledged)
        };
        let advice = match (kept, unacknowledged) {
            (0, 0) => return err,
            (0, files) => format!(
                "{err:#}; rerun the same command to finish: {} went out whole, \
                 unacknowledged (a rerun finds those that arrived already there)",
                crate::ui::report::plural(files, "file")
            ),
            // A timeout (ours, or the peer's frame) is said as it is: no connection
            // was lost.
            (kept, _) if !crate::error::connection_lost(&err) => format!(
                "{err:#}; rerun the same command to resume: {} {moved}",
                HumanBytes(kept)
            ),
            (kept, _) => format!(
                "connection lost ({err:#}); rerun the same command to resume: {} {moved}",
                HumanBytes(kept)
            ),
        };
        fail(Kind::Network, advice)
    }

    /// An entry the sender did not send; `said`: a warning named it already.
    pub(crate) fn not_sent(&self, path: &Named, reason: &str, said: bool) {
        self.record(FileOutcome::NotSent {
            path: path.clone(),
            reason: reason.to_string(),
            said,
        });
    }

    /// A failed entry.
    pub(crate) fn failed(&self, path: &Named, code: ErrorCode, why: String) {
        self.record(FileOutcome::Failed {
            path: path.clone(),
            code,
            why,
        });
    }

    pub(crate) fn summary(&self) -> Summary {
        self.summary
            .lock()
            .expect("no panics while holding the lock")
            .clone()
    }

    /// What a completed session adds up to: fine if no entry failed, else the kind
    /// of the first failure, with a count; entries that were not sent, and nothing
    /// else wrong, are [`Kind::NotSent`] (exit 10).
    pub(crate) fn verdict(&self) -> Result<()> {
        let (entries, verb) = *self
            .offered
            .lock()
            .expect("no panics while holding the lock");
        let first = *self
            .first_failure
            .lock()
            .expect("no panics while holding the lock");
        let summary = self.summary();
        let not_sent = summary.not_sent_total();
        match first {
            None if not_sent == 0 && summary.not_deleted == 0 => Ok(()),
            // A mirror that could not delete what it had to differs from its
            // source: as rsync's exit 23, not a success (a local I/O error, on the
            // receiver and as its `io` on the sender).
            None if not_sent == 0 => Err(fail(
                Kind::Io,
                format!(
                    "{} could not be deleted{}",
                    crate::ui::report::entries(summary.not_deleted),
                    if self.reporter.style().quiet {
                        ""
                    } else {
                        "; see above"
                    }
                ),
            )),
            // Above, each was named (unless --quiet silenced the names).
            None => Err(fail(
                Kind::NotSent,
                format!(
                    "{not_sent} of {entries} entries not sent: {}{}",
                    not_sent_breakdown(&summary.not_sent),
                    if self.reporter.style().quiet {
                        ""
                    } else {
                        "; see above"
                    }
                ),
            )),
            Some(code) => Err(fail(
                Kind::of_code(code),
                match summary.dry_run {
                    Some(_) => format!("{} of {entries} entries would be refused", summary.failed),
                    None => format!("{} of {entries} entries not {verb}", summary.failed),
                } + &match not_sent {
                    0 => String::new(),
                    n => format!(", {n} not sent"),
                },
            )),
        }
    }

    /// Shows the summary of `result`; `what` names the session in a server's log.
    pub(crate) fn finish(&self, what: &str, result: &Result<()>) {
        let passed =
            std::mem::take(&mut *self.said.lock().expect("no panics while holding the lock"));
        self.say_beneath(passed);
        self.reporter.finish(what, &self.summary(), result);
    }
}

/// Is `path` inside the directory `dir` (both as shown, `/`-separated)?
fn is_beneath(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}
