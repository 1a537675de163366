//! The sender's answer thread: reads `ok` and per-entry `error` frames until the
//! receiver's `end`, checks each against what is outstanding, verifies each `ok`'s
//! MAC against what was sent, and tallies the outcome as it comes.

use std::io::Read;
use std::sync::atomic::Ordering;

use anyhow::Result;

use super::{Outstanding, Pending};
use crate::error::{Kind, fail, peer_error};
use crate::escape::escape;
use crate::fs::input::Outbox;
use crate::proto::message::{ErrorCode, Message};
use crate::proto::negotiated::{FileFacts, Transfer};
use crate::proto::wire::FrameReader;
use crate::transfer::Tally;
use crate::ui::report::FileOutcome;

/// Reads answers until the receiver's `end`. An answer for an entry that is not
/// outstanding, twice, or an `end` while entries are, breaks the protocol.
pub(crate) fn read<R: Read>(
    reader: &mut FrameReader<R>,
    transfer: &Transfer,
    outbox: &dyn Outbox,
    pending: &Pending,
    tally: &Tally,
) -> Result<()> {
    let entries = outbox.entries();
    while let Some((index, answer)) = next_answer(reader, pending)? {
        let Some(outstanding) = outstanding(pending, index, &answer)? else {
            continue; // counted when it failed here; the refusal was expected
        };
        let entry = &entries[index as usize];
        let path = &*entry.shown_path();
        match (answer, outstanding.facts) {
            (Answer::Ok(mac), Some(sent)) => {
                let facts = FileFacts {
                    index,
                    size: sent.size,
                    hash: &sent.digest,
                    path: &entry.path_bytes(),
                };
                if transfer.verify_ok(facts, &mac) {
                    tally.record(FileOutcome::Verified {
                        path: path.to_string(),
                        size: sent.size,
                        moved: outstanding.moved,
                        digest: sent.digest,
                        hash: transfer.hash,
                        resumed_at: outstanding.resumed_at,
                    });
                } else {
                    let why = "the receiver's acknowledgement does not verify (forged ok?)";
                    tally.failed(path, ErrorCode::Mac, why.into());
                }
            }
            (Answer::Ok(_), None) => {
                return Err(fail(
                    Kind::Protocol,
                    format!("ok for entry {index} before its done"),
                ));
            }
            (Answer::Refused(code, message), _) => tally.failed(
                path,
                code,
                format!("the receiver reported {code}: {}", escape(&message)),
            ),
        }
    }
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
    if outstanding.made && matches!(answer, Answer::Ok(_)) {
        return Err(fail(
            Kind::Protocol,
            format!("ok for entry {index}, which has no data"),
        ));
    }
    Ok((!outstanding.failed_here).then_some(outstanding))
}

/// The receiver's answer for one entry: `ok` with its MAC, or an `error`.
enum Answer {
    Ok(String),
    Refused(ErrorCode, String),
}

/// Reads the next answer and the entry it is for; `None` at the receiver's `end`,
/// which may come only after every entry was answered.
fn next_answer<R: Read>(
    reader: &mut FrameReader<R>,
    pending: &Pending,
) -> Result<Option<(u64, Answer)>> {
    let answer = reader.expect_message("the receiver's answers")?;
    pending.heard_now();
    match answer {
        Message::Ok { index, mac } => Ok(Some((index, Answer::Ok(mac)))),
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
        Message::End => {
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
            Ok(None)
        }
        other => Err(fail(
            Kind::Protocol,
            format!("unexpected frame from the receiver: {other}"),
        )),
    }
}
