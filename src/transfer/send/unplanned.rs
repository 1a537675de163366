//! A dry run no receiver can plan: a `put` into a directory of a server that is
//! not there yet, which a real run would make first (`client::put_on`). The
//! directory being empty, every entry offered would be new, so this side lists
//! them alone, as the plan of an empty directory would. It sees only the outbox's
//! entries and shows only through the tally; it must not reach for the wire.

use crate::fs::input::Outbox;
use crate::proto::message::{EntryKind, ErrorCode};
use crate::transfer::offer::server_keeps_no;
use crate::transfer::tally::Tally;
use crate::ui::report::Change;

/// Shows and counts every entry of `outbox` as a dry run into an empty directory
/// of a server would: files and directories new, links new, special files refused
/// (a server keeps none), and what this side cannot send skipped with its reason.
pub(crate) fn all_new(outbox: &dyn Outbox, tally: &mut Tally) {
    let entries = outbox.entries();
    tally.dry_run();
    tally.offered(entries.len(), "delivered");
    for entry in entries {
        let path = &entry.named();
        match entry.kind {
            EntryKind::File => tally.change(Change::New, path, entry.size.unwrap_or(0), None),
            EntryKind::Dir => tally.change(Change::NewDir, path, 0, None),
            // What this side cannot send shows as skipped, as in any dry run.
            EntryKind::Unsent => {
                let reason = entry.extra().reason.as_deref().unwrap_or_default();
                tally.change(Change::Skipped, path, 0, Some(reason));
            }
            // What a server keeps none of, it would refuse (`denied`), as its plan does.
            kind => match server_keeps_no(kind) {
                Some(why) => {
                    let why = format!("{}: a {}: {why}", path.text, kind.name());
                    let said = format!("refused by the receiver: {why}");
                    tally.failed(path, ErrorCode::Denied, said);
                }
                None => tally.change(Change::NewNode(kind), path, 0, None),
            },
        }
    }
}
