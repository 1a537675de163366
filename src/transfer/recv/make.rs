//! Making the entries without data (section 16): links, hard links and special files,
//! after every file of the offer settled (a hard link's file is final, and no link
//! made here can be met while files are written) and before directory modes and
//! times. One that cannot be made is answered with an indexed `error`, which the
//! sender counts as failed.

use std::io::Write;
use std::sync::atomic::Ordering;

use anyhow::Result;

use super::in_the_way;
use super::plan::Planned;
use super::shared::Shared;
use crate::escape::escape;
use crate::fs::Refusal;
use crate::fs::path::check_path_bytes;
use crate::fs::sink::{Node, TargetDir};
use crate::proto::message::{EntryKind, ErrorCode, Message};
use crate::proto::wire::FrameWriter;
use crate::transfer::Tally;
use crate::ui::report::Change;

/// Makes every accepted entry without data, in offer order.
pub(crate) fn make_all<W: Write>(
    planned: &mut [Planned],
    target: &TargetDir,
    shared: &Shared<'_>,
    writer: &mut FrameWriter<W>,
    tally: &Tally,
) -> Result<()> {
    let mut resolver = target.resolver();
    for index in 0..planned.len() {
        if !planned[index].make {
            continue;
        }
        let result = make_one(&mut resolver, planned, index, (shared, target));
        // The entry is final (or failed): its path and its room are free again.
        planned[index].claim = None;
        planned[index].reservation = None;
        let path = planned[index].entry.named();
        if result.is_ok() {
            let replaces = planned[index].replaces.files > 0 || planned[index].replaces_other;
            let change = Change::of_node(planned[index].entry.kind, replaces);
            tally.change(change, &path, 0, None);
        }
        if let Err(refusal) = result {
            tally.failed(&path, refusal.code, refusal.to_string());
            writer.write_message(&Message::Error {
                code: refusal.code,
                message: refusal.message,
                index: Some(index as u64),
            })?;
        }
    }
    Ok(())
}

fn make_one(
    resolver: &mut crate::fs::sink::Resolver<'_>,
    planned: &[Planned],
    index: usize,
    (shared, target): (&Shared<'_>, &TargetDir),
) -> Result<(), Refusal> {
    let (overwrite, names) = (shared.settings.overwrite, shared.settings.names);
    let entry = &planned[index].entry;
    let shown = escape(&entry.shown_path()).into_owned();
    let bytes = entry.path_bytes();
    let components = check_path_bytes(&bytes, names)
        .map_err(|why| Refusal::new(ErrorCode::BadPath, format!("{shown}: {why}")))?;
    let file_bytes = match entry.extra().of.map(|of| &planned[of as usize]) {
        Some(file) if !file.arrived.load(Ordering::Relaxed) => {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("{shown}: the file it is a hard link of did not arrive"),
            ));
        }
        Some(file) => Some(file.entry.path_bytes()),
        None => None,
    };
    let file = file_bytes
        .as_deref()
        .map(|bytes| check_path_bytes(bytes, names).unwrap_or_default());
    debug_assert!(entry.kind != EntryKind::File);
    let over_dir = planned[index].type_change;
    if over_dir {
        // The directory the plan let go, emptied now: the link takes its place.
        // Through the parent the node is named in (the resolver keeps it open).
        let parent = resolver.parent_dir(&components)?;
        let at = (&components[..], &*entry.shown_path());
        let seen = planned[index].dir_seen;
        in_the_way::clear(shared, target, at, (parent.as_deref(), seen))?;
    }
    let node = Node {
        path: &shown,
        components: &components,
        entry,
        file: file.as_deref(),
        over_dir,
    };
    resolver.make_node(&node, overwrite)
}
