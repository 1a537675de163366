//! The sender's answer thread: reads `ok` and per-entry `error` frames until the
//! receiver's `end`, checks each against what is outstanding, verifies each `ok`'s
//! MAC against what was sent, and tallies the outcome as it comes. Streamed sums
//! (feature `delta_stream`) come among them and go to `sums.rs`.

use std::io::Read;
use std::sync::atomic::Ordering;

use anyhow::Result;

use super::sums::SumsFrame;
use super::{Outstanding, Pending, Report, Sent};
use crate::error::{Kind, fail, peer_error};
use crate::escape::{Named, escape_said};
use crate::proto::message::{self, EntryKind, ErrorCode, Message, Removed};
use crate::proto::negotiated::FileFacts;
use crate::proto::wire::FrameReader;
use crate::transfer::Tally;
use crate::transfer::offer::read_removed;
use crate::ui::report::{Change, FileOutcome};

/// Reads answers until the receiver's `end`. An answer for an entry that is not
/// outstanding, twice, or an `end` while entries are, breaks the protocol. A
/// mirroring receiver's report of what it removed comes between its last answer
/// and its `end`, and only then.
pub(crate) fn read<R: Read>(
    reader: &mut FrameReader<R>,
    report: &Report<'_>,
    pending: &Pending,
) -> Result<()> {
    let (transfer, tally) = (report.transfer, report.tally);
    let entries = report.outbox.entries();
    let mut removed = None;
    while let Some((index, answer)) = next_answer(reader, pending, report, &mut removed)? {
        let Some(outstanding) = outstanding(pending, index, &answer)? else {
            continue; // counted when it failed here; the refusal was expected
        };
        let sending = outstanding.facts.is_none() && !outstanding.made;
        if matches!(answer, Answer::Refused(..)) && sending {
            // Refused while its data goes out: the rest of it stays here.
            pending.refused.fetch_max(index + 1, Ordering::SeqCst);
        }
        let entry = &entries[index as usize];
        let path = entry.named();
        match (answer, outstanding.facts) {
            (Answer::Ok(mac, kept), Some(sent)) => {
                let facts = FileFacts {
                    index,
                    size: sent.size,
                    hash: &sent.digest,
                    path: &entry.path_bytes(),
                };
                if transfer.verify_ok(facts, &mac) {
                    verified(report, path, &outstanding, sent, kept);
                } else {
                    let why = "the receiver's acknowledgement does not verify (forged ok?)";
                    tally.failed(&path, ErrorCode::Mac, why.into());
                }
            }
            (Answer::Ok(..), None) => {
                // Still unanswered, as far as this side can tell: counted so.
                pending.lock().insert(index, outstanding);
                return Err(fail(
                    Kind::Protocol,
                    format!("ok for entry {index} before its done"),
                ));
            }
            (Answer::Refused(code, message), _) => tally.failed(
                &path,
                code,
                format!("the receiver reported {code}: {}", escape_said(&message)),
            ),
        }
    }
    if report.deleting && removed.is_none() {
        return Err(fail(
            Kind::Protocol,
            "the receiver ended without saying what it deleted",
        ));
    }
    made_ones(report, pending);
    Ok(())
}

/// What entry `index` was waiting for, taken now that `answer` came: `None` when
/// this side failed it already. An answer for an entry not waiting, or an `ok` for
/// one without data (answered only when it fails), breaks the protocol.
fn outstanding(pending: &Pending, index: u64, answer: &Answer) -> Result<Option<Outstanding>> {
    let Some(outstanding) = pending.lock().remove(&index) else {
        return Err(fail(
            Kind::Protocol,
            format!("an answer for entry {index}, which is not waiting for one"),
        ));
    };
    if outstanding.made && matches!(answer, Answer::Ok(..)) {
        return Err(fail(
            Kind::Protocol,
            format!("ok for entry {index}, which has no data"),
        ));
    }
    Ok((!outstanding.failed_here).then_some(outstanding))
}

/// Shows and counts a file the receiver acknowledged; one it `kept` (a delta that
/// rebuilt its old file, which stayed) counts as already there, as it does there.
fn verified(report: &Report<'_>, path: Named, outstanding: &Outstanding, sent: Sent, kept: bool) {
    if kept && outstanding.delta {
        return report.tally.record(FileOutcome::Same {
            path,
            kind: EntryKind::File,
            size: Some(sent.size),
            verified: Some((report.transfer.hash, sent.digest)),
        });
    }
    let change = match (outstanding.delta, outstanding.replaces) {
        (true, _) => Change::Delta,
        (false, true) => Change::Replaced,
        (false, false) => Change::New,
    };
    report.tally.change(change, &path, sent.size, None);
    report.tally.record(FileOutcome::Verified {
        path,
        size: sent.size,
        moved: outstanding.moved,
        digest: sent.digest,
        hash: report.transfer.hash,
        resumed_at: outstanding.resumed_at,
    });
}

/// At the receiver's `end`: the entries without data still waiting were made (one
/// that failed was answered), shown with `--itemize`.
fn made_ones(report: &Report<'_>, pending: &Pending) {
    let entries = report.outbox.entries();
    let mut made: Vec<(u64, bool)> = pending
        .lock()
        .iter()
        .filter(|(_, outstanding)| outstanding.made)
        .map(|(index, outstanding)| (*index, outstanding.replaces))
        .collect();
    made.sort_unstable();
    for (index, replaces) in made {
        let entry = &entries[index as usize];
        let change = Change::of_node(entry.kind, replaces);
        report.tally.change(change, &entry.named(), 0, None);
    }
}

/// Shows and counts what the receiver removed (its report verified).
fn tally_removed(tally: &Tally, removed: &[Removed]) {
    for item in removed {
        let path = Named::from(item.path.as_str());
        let why = item.error.as_deref().filter(|_| item.kept.is_none());
        let why = why.map(escape_said);
        tally.change(Change::of_removal(item), &path, 0, why.as_deref());
    }
}

/// Reads, verifies and tallies a mirroring receiver's report of what it removed,
/// whose `first` frame was read; allowed once, only when deletion was asked, and
/// only once every entry was answered (entries without data are answered only
/// when they fail, before the report). Returns how many items it held.
fn read_report<R: Read>(
    reader: &mut FrameReader<R>,
    pending: &Pending,
    report: &Report<'_>,
    again: bool,
    first: &[u8],
) -> Result<usize> {
    let all_answered = pending.writer_done.load(Ordering::SeqCst)
        && pending.lock().values().all(|outstanding| outstanding.made);
    if !report.deleting || again || !all_answered {
        return Err(fail(
            Kind::Protocol,
            "a report of deleted entries out of place",
        ));
    }
    let items = read_removed(reader, report.transfer, first)?;
    tally_removed(report.tally, &items);
    Ok(items.len())
}

/// The receiver's answer for one entry: `ok` with its MAC, or an `error`.
enum Answer {
    /// Its MAC, and whether the receiver kept its old file (a delta of it alone).
    Ok(String, bool),
    Refused(ErrorCode, String),
}

/// Reads the receiver's next frame that is not a `sums` frame (feature
/// `delta_stream`: those go to the streams as they come, until the report of
/// deleted entries, `reported`), with its payload when it is `deleted`.
fn read_answer<R: Read>(
    reader: &mut FrameReader<R>,
    pending: &Pending,
    report: &Report<'_>,
    reported: bool,
) -> Result<(Message, Vec<u8>)> {
    loop {
        let payload = reader.read_payload()?.ok_or_else(|| {
            let when = match pending.writer_done.load(Ordering::SeqCst) {
                true => "while we waited for the receiver's answers",
                false => "while we were sending",
            };
            fail(
                Kind::Network,
                format!("the peer closed the connection {when}"),
            )
        })?;
        let answer = message::decode(payload).map_err(|err| fail(Kind::Protocol, err))?;
        pending.heard_now();
        match answer {
            // Feature `delta_stream`: the next sums of a streamed basis.
            Message::Sums {
                index,
                sums,
                end,
                mac,
            } if !reported => {
                let mac = mac.as_deref();
                let frame = SumsFrame {
                    index,
                    sums: &sums,
                    end,
                    mac,
                };
                report.streams.receive(frame)?;
            }
            Message::Deleted { .. } => return Ok((answer, payload.to_vec())),
            answer => return Ok((answer, Vec::new())),
        }
    }
}

/// Reads the next answer and the entry it is for; `None` at the receiver's `end`,
/// which may come only after every entry was answered.
fn next_answer<R: Read>(
    reader: &mut FrameReader<R>,
    pending: &Pending,
    report: &Report<'_>,
    removed: &mut Option<usize>,
) -> Result<Option<(u64, Answer)>> {
    let (answer, first) = read_answer(reader, pending, report, removed.is_some())?;
    if let Message::Deleted { .. } = answer {
        *removed = Some(read_report(
            reader,
            pending,
            report,
            removed.is_some(),
            &first,
        )?);
        return next_answer(reader, pending, report, removed);
    }
    if removed.is_some() && !matches!(answer, Message::End { .. }) {
        return Err(fail(Kind::Protocol, "an answer after the deleted report"));
    }
    match answer {
        Message::Ok { index, mac, kept } => Ok(Some((index, Answer::Ok(mac, kept)))),
        Message::Error {
            index: Some(index),
            code,
            message,
        } => Ok(Some((index, Answer::Refused(code, message)))),
        Message::Error {
            index: None,
            code,
            message,
        } => Err(peer_error(code, &message)),
        Message::End { dropped } => ended(pending, report, dropped),
        other => Err(fail(
            Kind::Protocol,
            format!("unexpected frame from the receiver: {other}"),
        )),
    }
}

/// The receiver's `end`, which may come only once every entry was answered and
/// every streamed basis ended; what it says it could not apply is said here.
fn ended(
    pending: &Pending,
    report: &Report<'_>,
    dropped: Option<message::Dropped>,
) -> Result<Option<(u64, Answer)>> {
    if let Some(index) = report.streams.unended() {
        return Err(fail(
            Kind::Protocol,
            format!("the receiver ended the transfer before the sums of entry {index}"),
        ));
    }
    // Entries without data are answered only when they fail.
    let waiting = pending.lock().values().filter(|o| !o.made).count();
    if !pending.writer_done.load(Ordering::SeqCst) || waiting > 0 {
        return Err(fail(
            Kind::Protocol,
            format!(
                "the receiver ended the transfer with {} unanswered",
                crate::ui::report::plural(waiting, "file")
            ),
        ));
    }
    if let Some(dropped) = dropped {
        let offered = report.outbox.entries().len() as u64;
        if let Some((kind, count)) = dropped.kinds().into_iter().find(|(_, n)| *n > offered) {
            return Err(fail(
                Kind::Protocol,
                format!(
                    "the receiver says {kind} of {count} entries were not kept, of {offered} offered"
                ),
            ));
        }
        report.tally.reporter().not_kept(&dropped);
    }
    Ok(None)
}
