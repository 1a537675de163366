//! The two authenticated lists that open every transfer (`PROTOCOL.md` section 5):
//! the sender's offer and the receiver's plan. Each goes out as as many frames as it
//! needs (a tree of 200 000 entries never becomes one giant frame), followed by an
//! `offer_end` or `plan_end` with the count and a MAC over the frames exactly as they
//! crossed the wire. The reading side checks the MAC and the count before it acts on
//! anything the list says.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::io::{Read, Write};

use anyhow::Result;
use serde::Serialize;

use crate::error::{Kind, fail, peer_error, refused};
use crate::proto::delta::MAX_PLAN_CHUNKS;
use crate::proto::entry::check_entry;
use crate::proto::message::{
    self, Decision, Entry, EntryKind, ErrorCode, Message, Mirror, Removed,
};
use crate::proto::negotiated::{FramesMac, Transfer};
use crate::proto::wire::{FrameReader, FrameWriter};

/// JSON bytes of entries per offer or plan frame, about: large enough that the
/// frame overhead does not matter, small enough that neither side holds much, and
/// that the reading side decodes one frame while the next is written (10 000
/// entries were one frame of 1 MiB, decoded only once all of it had come).
const FRAME_TARGET: usize = 64 << 10;
pub(crate) use crate::proto::entry::MAX_OFFER_ENTRIES;

/// Why a server refuses an entry of `kind` whatever its name (`denied`): it keeps
/// no special files and no device nodes; `None` for what it keeps. The plan of a
/// `put` says it, and so does a dry run into a directory the server has not yet.
pub(crate) fn server_keeps_no(kind: EntryKind) -> Option<&'static str> {
    match kind {
        EntryKind::Fifo | EntryKind::Socket => Some("a server keeps no special files"),
        EntryKind::Char | EntryKind::Block => Some("a server keeps no device nodes"),
        _ => None,
    }
}

/// Writes a list (offer or plan) as frames of `{"type":TYPE,"entries":[...],"more":true}`
/// as its items come, and the closing `*_end` frame.
pub(crate) struct ListWriter<'a, W: Write> {
    writer: &'a mut FrameWriter<W>,
    kind: &'static str,
    /// Offers and plans are authenticated by their closing frame; listings are not
    /// (on a request connection every frame is sealed anyway).
    mac: Option<FramesMac>,
    payload: Vec<u8>,
    in_frame: usize,
    count: u64,
    /// JSON members (`"mirror":{…},`) that open the first frame only.
    opening: Option<Vec<u8>>,
}

impl<'a, W: Write> ListWriter<'a, W> {
    /// A plan for `transfer`, decision by decision; see [`ListWriter::finish_plan`].
    pub(crate) fn plan(writer: &'a mut FrameWriter<W>, transfer: &Transfer) -> Self {
        ListWriter::new(writer, "plan", Some(transfer.plan_mac()))
    }

    /// An offer for `transfer` whose first frame says `head`, entry by entry; see
    /// [`ListWriter::finish_offer`].
    pub(crate) fn offer(
        writer: &'a mut FrameWriter<W>,
        transfer: &Transfer,
        head: Head<'_>,
    ) -> Self {
        let mut list = ListWriter::new(writer, "offer", Some(transfer.offer_mac()));
        if head.mirror.is_some() || head.xattrs_all {
            // The first frame is opened already; open it again with the members in it.
            let mut opening = Vec::new();
            if let Some(mirror) = head.mirror {
                opening.extend_from_slice(br#""mirror":"#);
                serde_json::to_writer(&mut opening, mirror).expect("mirror options serialise");
                opening.push(b',');
            }
            if head.xattrs_all {
                opening.extend_from_slice(br#""xattrs_all":true,"#);
            }
            list.opening = Some(opening);
            list.open_frame();
        }
        list
    }

    /// A listing (section 9), item by item; see [`ListWriter::finish_listing`].
    pub(crate) fn listing(writer: &'a mut FrameWriter<W>) -> Self {
        ListWriter::new(writer, "listing", None)
    }

    fn new(writer: &'a mut FrameWriter<W>, kind: &'static str, mac: Option<FramesMac>) -> Self {
        let mut list = ListWriter {
            writer,
            kind,
            mac,
            payload: Vec::with_capacity(FRAME_TARGET + 4096),
            in_frame: 0,
            count: 0,
            opening: None,
        };
        list.open_frame();
        list
    }

    /// A mirroring receiver's report of what it removed (section 17.3), item by
    /// item; see [`ListWriter::finish_deleted`].
    pub(crate) fn deleted(writer: &'a mut FrameWriter<W>, transfer: &Transfer) -> Self {
        ListWriter::new(writer, "deleted", Some(transfer.deleted_mac()))
    }

    fn open_frame(&mut self) {
        self.payload.clear();
        self.payload
            .extend_from_slice(format!(r#"{{"type":"{}","#, self.kind).as_bytes());
        if let Some(opening) = self.opening.take() {
            self.payload.extend_from_slice(&opening);
        }
        self.payload.extend_from_slice(br#""entries":["#);
        self.in_frame = 0;
    }

    /// Adds one item; a frame goes out whenever enough have collected.
    pub(crate) fn push(&mut self, item: &impl Serialize) -> Result<()> {
        if self.in_frame > 0 {
            self.payload.push(b',');
        }
        serde_json::to_writer(&mut self.payload, item).expect("entries serialise to JSON");
        self.in_frame += 1;
        self.count += 1;
        if self.payload.len() >= FRAME_TARGET {
            self.payload.extend_from_slice(br#"],"more":true}"#);
            self.send_frame()?;
            self.open_frame();
        }
        Ok(())
    }

    /// Sends the frame at once: its reader decodes it while the next is made (an
    /// offer's while the walk goes on, `send/walking.rs`).
    fn send_frame(&mut self) -> Result<()> {
        if let Some(mac) = &mut self.mac {
            mac.frame(&self.payload);
        }
        self.writer.write_payload(&self.payload)?;
        self.writer.flush()
    }

    /// Ends an offer: its last frame and `offer_end`.
    pub(crate) fn finish_offer(self) -> Result<()> {
        self.finish(|count, mac| Message::OfferEnd { count, mac })
    }

    /// Ends a plan: its last frame and `plan_end`.
    pub(crate) fn finish_plan(self) -> Result<()> {
        self.finish(|count, mac| Message::PlanEnd { count, mac })
    }

    /// Ends a report of what was removed: its last frame and `deleted_end`.
    pub(crate) fn finish_deleted(self) -> Result<()> {
        self.finish(|count, mac| Message::DeletedEnd { count, mac })
    }

    /// Ends a listing: its last frame.
    pub(crate) fn finish_listing(mut self) -> Result<()> {
        self.payload.extend_from_slice(b"]}");
        self.send_frame()
    }

    /// The last frame (possibly with no entries: at least one frame always goes)
    /// and the `*_end` frame.
    fn finish(mut self, end: impl FnOnce(u64, String) -> Message) -> Result<()> {
        self.payload.extend_from_slice(b"]}");
        self.send_frame()?;
        let mac = self.mac.take().expect("offers and plans have a MAC");
        self.writer
            .write_message(&end(self.count, mac.finish_hex()))
    }
}

/// Sends the offer of `entries` for `transfer`, with what a mirroring sender asks
/// (`mirror`, section 17) in its first frame.
pub(crate) fn write_offer<W: Write>(
    writer: &mut FrameWriter<W>,
    transfer: &Transfer,
    head: Head<'_>,
    entries: impl IntoIterator<Item = impl Borrow<Entry>>,
) -> Result<()> {
    let mut list = ListWriter::offer(writer, transfer, head);
    for entry in entries {
        list.push(entry.borrow())?;
    }
    list.finish_offer()
}

/// What an offer's first frame says besides its entries.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Head<'a> {
    /// What a mirroring sender asks (section 17).
    pub(crate) mirror: Option<&'a Mirror>,
    /// Under `meta`: the entries' `xattrs` objects name attributes of every
    /// namespace, not only `user.*` (docs/PROTOCOL.md 16.1.1).
    pub(crate) xattrs_all: bool,
}

impl<'a> Head<'a> {
    pub(crate) fn new(mirror: Option<&'a Mirror>, xattrs_all: bool) -> Self {
        Head { mirror, xattrs_all }
    }
}

/// Sends the plan of `decisions` for `transfer` (the receiver's plan goes out
/// through `transfer::recv::plan`; this whole-plan form is for tests).
#[cfg(test)]
pub(crate) fn write_plan<'d, W: Write>(
    writer: &mut FrameWriter<W>,
    transfer: &Transfer,
    decisions: impl IntoIterator<Item = &'d Decision>,
) -> Result<()> {
    let mut list = ListWriter::plan(writer, transfer);
    for decision in decisions {
        list.push(decision)?;
    }
    list.finish_plan()
}

/// An offer as read: its entries, what a mirroring sender asks (section 17), and
/// whether its attributes are of every namespace (`xattrs_all`, under `meta`).
#[derive(Debug)]
pub(crate) struct Offered {
    pub(crate) entries: Vec<Entry>,
    pub(crate) mirror: Option<Mirror>,
    pub(crate) xattrs_all: bool,
}

/// Reads an offer: its frames, then `offer_end`, whose MAC and count must hold
/// before any entry is returned; then the rules on what an offer may contain.
/// A whole-offer error frame from the sender ends it. A `mirror` member counts
/// only with `mirroring` (the feature in force), `xattrs_all` only under `meta`,
/// and either only in the first frame.
pub(crate) fn read_offer<R: Read>(
    reader: &mut FrameReader<R>,
    transfer: &Transfer,
    mirroring: bool,
) -> Result<Offered> {
    let heard = std::cell::RefCell::new(Heard::default());
    let mut entries = read_list(
        reader,
        transfer.offer_mac(),
        "offer",
        (MAX_OFFER_ENTRIES, 0, &too_many_entries),
        |message| match message {
            Message::Offer {
                entries,
                more,
                mirror,
                xattrs_all,
            } => {
                let mirror = mirror.filter(|_| mirroring);
                heard
                    .borrow_mut()
                    .frame(mirror, xattrs_all && transfer.meta);
                Ok((entries, more))
            }
            other => Err(other),
        },
        |_| Ok(()),
        |message| match message {
            Message::OfferEnd { count, mac } => Ok((count, mac)),
            other => Err(other),
        },
    )?;
    let heard = heard.into_inner();
    if heard.misplaced {
        return Err(fail(
            Kind::Protocol,
            "`mirror` and `xattrs_all` are allowed in the first offer frame only",
        ));
    }
    check_offer(&mut entries, transfer.meta)?;
    if let Some(mirror) = &heard.mirror {
        check_mirror(mirror, &entries)?;
    }
    Ok(Offered {
        entries,
        mirror: heard.mirror,
        xattrs_all: heard.xattrs_all,
    })
}

/// What an offer's frames said besides their entries, as they are read: a member
/// that counts only in the first frame found in a later one makes it `misplaced`.
#[derive(Default)]
struct Heard {
    frames: u64,
    mirror: Option<Mirror>,
    xattrs_all: bool,
    misplaced: bool,
}

impl Heard {
    /// One more frame, with the members that count (see [`read_offer`]).
    fn frame(&mut self, mirror: Option<Mirror>, xattrs_all: bool) {
        self.frames += 1;
        self.misplaced |= (mirror.is_some() || xattrs_all) && self.frames > 1;
        if mirror.is_some() {
            self.mirror = mirror;
        }
        self.xattrs_all |= xattrs_all;
    }
}

/// The refusal of an offer over [`MAX_OFFER_ENTRIES`].
fn too_many_entries() -> anyhow::Error {
    refused(
        ErrorCode::TooLarge,
        format!(
            "the offer has over {MAX_OFFER_ENTRIES} entries; send the tree in parts, \
             or as one stream: tar c DIR | xfer send - HOST:PORT"
        ),
    )
}

/// Most filter rule sets, and rule lines in all, an offer may carry: a tree with a
/// `.gitignore` in each of 10 000 directories still fits; a hostile sender cannot
/// make the receiver compile more.
pub(crate) const MAX_RULE_SETS: usize = 10_000;
pub(crate) const MAX_RULE_LINES: usize = 100_000;
/// Longest rule line, in bytes (a path's limit).
pub(crate) const MAX_RULE_LINE: usize = 4096;

/// What mirror options may not say: too many rules, a rule too long, `--delete`
/// for a stream, or a dry run of one.
fn check_mirror(mirror: &Mirror, entries: &[Entry]) -> Result<()> {
    let lines: usize = mirror.rules.iter().map(|set| set.lines.len()).sum();
    if mirror.rules.len() > MAX_RULE_SETS || lines > MAX_RULE_LINES {
        return Err(fail(
            Kind::Protocol,
            format!(
                "the offer carries {} rule sets and {lines} rule lines (at most \
                 {MAX_RULE_SETS} and {MAX_RULE_LINES})",
                mirror.rules.len()
            ),
        ));
    }
    let too_long = mirror
        .rules
        .iter()
        .flat_map(|set| set.lines.iter().chain([&set.dir]))
        .any(|line| line.len() > MAX_RULE_LINE || line.contains(['\n', '\r', '\0']));
    if too_long {
        return Err(fail(
            Kind::Protocol,
            format!("a filter rule over {MAX_RULE_LINE} bytes, or with a line break or NUL"),
        ));
    }
    let is_stream = entries.iter().any(|entry| entry.size.is_none());
    if mirror.delete && is_stream {
        return Err(fail(Kind::Protocol, "`delete` with a stream"));
    }
    Ok(())
}

/// Most items a report of removed entries may hold, and bytes of paths in all:
/// what a sender holds until the report's MAC verifies.
pub(crate) const MAX_REMOVED: usize = MAX_OFFER_ENTRIES;
pub(crate) const MAX_REMOVED_BYTES: usize = 128 << 20;

/// Reads the rest of a mirroring receiver's report of what it removed, whose first
/// frame (`first`, as it crossed the wire) was read already, and its `deleted_end`:
/// nothing is returned before the MAC and the count hold.
pub(crate) fn read_removed<R: Read>(
    reader: &mut FrameReader<R>,
    transfer: &Transfer,
    first: &[u8],
) -> Result<Vec<Removed>> {
    let mut mac = transfer.deleted_mac();
    let mut removed = Vec::new();
    let mut bytes = 0usize;
    let mut payload = first.to_vec();
    loop {
        mac.frame(&payload);
        let (items, more) =
            match message::decode(&payload).map_err(|err| fail(Kind::Protocol, err))? {
                Message::Deleted { entries, more } => (entries, more),
                other => return Err(unexpected("a deleted frame", &other)),
            };
        bytes += removed_report_bytes(&items, removed.len())?;
        if bytes > MAX_REMOVED_BYTES {
            return Err(removed_over_limits());
        }
        removed.extend(items);
        if !more {
            break;
        }
        payload = reader
            .read_payload()?
            .ok_or_else(|| closed("the report of removed entries"))?
            .to_vec();
    }
    match reader.expect_message("deleted_end")? {
        Message::DeletedEnd {
            count,
            mac: claimed,
        } => {
            if !mac.verify(&claimed) {
                return Err(refused(
                    ErrorCode::Mac,
                    "the report of removed entries does not verify (tampered on the way?)",
                ));
            }
            if count != removed.len() as u64 {
                return Err(fail(
                    Kind::Protocol,
                    format!("deleted_end counts {count}; {} arrived", removed.len()),
                ));
            }
            Ok(removed)
        }
        other => Err(unexpected("deleted_end", &other)),
    }
}

/// Reads a list of frames (an offer or a plan) and its closing frame: at most
/// `limit` items (more is `too_many`), each frame fed to `mac`, which must verify,
/// and a count that must match. `items` and `end` take the list's frames apart.
/// Room for `expected` items is made at once (a plan has one decision per offered
/// entry), not by doubling, which copies and touches fresh pages twice over.
fn read_list<R: Read, T>(
    reader: &mut FrameReader<R>,
    mut mac: FramesMac,
    name: &str,
    (limit, expected, too_many): (usize, usize, &dyn Fn() -> anyhow::Error),
    items: impl Fn(Message) -> Result<(Vec<T>, bool), Message>,
    check: impl Fn(&[T]) -> Result<()>,
    end: impl Fn(Message) -> Result<(u64, String), Message>,
) -> Result<Vec<T>> {
    let mut list = Vec::with_capacity(expected);
    loop {
        let payload = reader
            .read_payload()?
            .ok_or_else(|| closed(&format!("the {name}")))?;
        mac.frame(payload);
        let message = message::decode(payload).map_err(|err| fail(Kind::Protocol, err))?;
        match items(message) {
            Ok((more_items, more)) => {
                if list.len() + more_items.len() > limit {
                    return Err(too_many());
                }
                check(&more_items)?;
                list.extend(more_items);
                if !more {
                    break;
                }
            }
            Err(other) => return Err(unexpected(&format!("a {name} frame"), &other)),
        }
    }
    match end(reader.expect_message(&format!("{name}_end"))?) {
        Ok((count, claimed)) => {
            if !mac.verify(&claimed) {
                return Err(refused(
                    ErrorCode::Mac,
                    format!("the {name}'s MAC does not verify (tampered on the way?)"),
                ));
            }
            if count != list.len() as u64 {
                return Err(fail(
                    Kind::Protocol,
                    format!("{name}_end counts {count}; {} arrived", list.len()),
                ));
            }
            Ok(list)
        }
        Err(other) => Err(unexpected(&format!("{name}_end"), &other)),
    }
}

/// What an offer may not contain: an entry that breaks its kind's rules (section
/// 16 under `meta`), a stream of unknown size beside other entries, a hard link to
/// anything but an earlier file of known size, or a directory after something
/// inside it.
fn check_offer(entries: &mut [Entry], meta: bool) -> Result<()> {
    for (index, entry) in entries.iter_mut().enumerate() {
        check_entry(entry, meta)
            .map_err(|why| fail(Kind::Protocol, format!("offer entry {index}: {why}")))?;
    }
    check_hard_links(entries)?;
    let is_stream = |entry: &Entry| entry.kind == EntryKind::File && entry.size.is_none();
    if entries.len() > 1 && entries.iter().any(is_stream) {
        return Err(fail(
            Kind::Protocol,
            "an entry of unknown size must be the only entry of its offer",
        ));
    }
    if let Some(index) = entries
        .iter()
        .position(|entry| entry.kind == EntryKind::Dir && entry.size != Some(0))
    {
        return Err(fail(
            Kind::Protocol,
            format!("directory entry {index} has a size other than 0"),
        ));
    }
    // The paths' bytes (`path_hex` decoded; borrowed for the usual UTF-8 ones).
    let paths: Vec<_> = entries.iter().map(Entry::path_bytes).collect();
    let dirs: HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.kind == EntryKind::Dir)
        .map(|(index, _)| (&*paths[index], index))
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    for (index, path) in paths.iter().enumerate() {
        let mut parent: &[u8] = path;
        while let Some(slash) = parent.iter().rposition(|&byte| byte == b'/') {
            parent = &parent[..slash];
            if dirs.get(parent).is_some_and(|&dir| dir > index) {
                return Err(fail(
                    Kind::Protocol,
                    format!("the offer lists entry {index} before its directory"),
                ));
            }
        }
    }
    Ok(())
}

/// A hard link's `of` names an earlier entry that is a file of known size.
fn check_hard_links(entries: &[Entry]) -> Result<()> {
    for (index, entry) in entries.iter().enumerate() {
        let Some(of) = entry.extra().of else { continue };
        let linked = usize::try_from(of)
            .ok()
            .filter(|&of| of < index)
            .map(|of| &entries[of]);
        if !linked.is_some_and(|file| file.kind == EntryKind::File && file.size.is_some()) {
            return Err(fail(
                Kind::Protocol,
                format!("offer entry {index}: a hard link to {of}, which is not an earlier file"),
            ));
        }
    }
    Ok(())
}

/// The bytes `items` add to a report of removed entries of which `so_far` items came
/// before; an item both failed and kept, or a report over its limits, is refused.
fn removed_report_bytes(items: &[Removed], so_far: usize) -> Result<usize> {
    if items
        .iter()
        .any(|item| item.error.is_some() && item.kept.is_some())
    {
        return Err(fail(
            Kind::Protocol,
            "an item of the report of removed entries both failed and was kept",
        ));
    }
    if so_far + items.len() > MAX_REMOVED {
        return Err(removed_over_limits());
    }
    Ok(items
        .iter()
        .map(|item| item.path.len() + item.error.as_ref().map_or(0, String::len))
        .sum())
}

fn removed_over_limits() -> anyhow::Error {
    fail(
        Kind::Protocol,
        format!(
            "the report of removed entries is over {MAX_REMOVED} items or {MAX_REMOVED_BYTES} bytes"
        ),
    )
}

/// Reads a plan of `offered` decisions: its frames, then `plan_end`, whose MAC and
/// count must hold before any decision is returned. An error frame in its place is
/// the receiver refusing the whole offer.
pub(crate) fn read_plan<R: Read>(
    reader: &mut FrameReader<R>,
    transfer: &Transfer,
    offered: usize,
    delta: bool,
) -> Result<Vec<Decision>> {
    let listed = std::cell::Cell::new(0u64);
    let within_budget =
        |decisions: &[Decision]| signatures_within_budget(decisions, &listed, delta);
    let too_many = || {
        fail(
            Kind::Protocol,
            format!("the plan has more decisions than the {offered} entries offered"),
        )
    };
    let decisions = read_list(
        reader,
        transfer.plan_mac(),
        "plan",
        (offered, offered, &too_many),
        |message| match message {
            Message::Plan { entries, more } => Ok((entries, more)),
            other => Err(other),
        },
        within_budget,
        |message| match message {
            Message::PlanEnd { count, mac } => Ok((count, mac)),
            other => Err(other),
        },
    )?;
    if decisions.len() != offered {
        return Err(fail(
            Kind::Protocol,
            format!(
                "the plan has {} decisions for {offered} entries",
                decisions.len()
            ),
        ));
    }
    Ok(decisions)
}

/// Feature `delta`: the signatures of one plan list at most MAX_PLAN_CHUNKS chunks,
/// checked frame by frame (`listed` so far), so a hostile plan cannot make us hold more.
fn signatures_within_budget(
    decisions: &[Decision],
    listed: &std::cell::Cell<u64>,
    delta: bool,
) -> Result<()> {
    for decision in decisions {
        let Decision::Send {
            delta: Some(basis), ..
        } = decision
        else {
            continue;
        };
        let digits = basis.sums.as_ref().map_or(0, String::len) as u64;
        let claimed = (digits / 16).max(basis.count.unwrap_or(0));
        listed.set(listed.get().saturating_add(claimed));
        if !delta || listed.get() > MAX_PLAN_CHUNKS {
            return Err(fail(
                Kind::Protocol,
                format!(
                    "the plan's signatures list over {MAX_PLAN_CHUNKS} chunks \
                     (or feature delta is not in force)"
                ),
            ));
        }
    }
    Ok(())
}

fn closed(waiting_for: &str) -> anyhow::Error {
    fail(
        Kind::Network,
        format!("the peer closed the connection while we waited for {waiting_for}"),
    )
}

fn unexpected(expected: &str, got: &Message) -> anyhow::Error {
    match got {
        Message::Error { code, message, .. } => peer_error(*code, message),
        other => fail(Kind::Protocol, format!("expected {expected}, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;
    use crate::proto::hash::HashKind;
    use crate::proto::message::Extra;
    use std::io::Cursor;

    fn transfer() -> Transfer {
        Transfer::for_tests([5; 32], 0, HashKind::Md5)
    }

    fn file(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            size: Some(1),
            mode: None,
            mtime: None,
            ..Entry::default()
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            kind: EntryKind::Dir,
            size: Some(0),
            ..file(path)
        }
    }

    fn written(entries: &[Entry]) -> Vec<u8> {
        let mut writer = FrameWriter::new(Vec::new());
        write_offer(&mut writer, &transfer(), Head::default(), entries).unwrap();
        writer.flush().unwrap();
        writer.get_ref().clone()
    }

    fn read_back(bytes: Vec<u8>) -> Result<Vec<Entry>> {
        read_offer(&mut FrameReader::new(Cursor::new(bytes)), &transfer(), true)
            .map(|offered| offered.entries)
    }

    #[test]
    fn a_large_offer_spans_frames_and_reads_back_whole() {
        let entries: Vec<Entry> = (0..40_000)
            .map(|i| file(&format!("some/rather/long/directory/name/file-{i:08}.dat")))
            .collect();
        let bytes = written(&entries);
        let frames = bytes
            .windows(15)
            .filter(|w| w == br#"{"type":"offer""#)
            .count();
        assert!(frames > 1, "{frames} frames");
        assert_eq!(read_back(bytes).unwrap(), entries);
        assert_eq!(read_back(written(&[])).unwrap(), []);
    }

    #[test]
    fn an_edited_offer_fails_its_mac_before_anything_is_returned() {
        let mut entry = file("docs/hello.txt");
        entry.mode = Some(0o644);
        let bytes = written(&[entry]);
        let at = bytes.windows(3).position(|w| w == b"420").unwrap();
        let mut edited = bytes.clone();
        edited[at..at + 3].copy_from_slice(b"493"); // 0o755
        let err = read_back(edited).unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Verification));
        assert_eq!(crate::error::wire_code(&err), Some(ErrorCode::Mac));
    }

    #[test]
    fn offers_that_break_the_rules_are_protocol_errors() {
        let stream = Entry {
            size: None,
            ..file("stdin")
        };
        for entries in [
            vec![stream.clone(), file("b")],
            vec![file("d/x"), dir("d")],
            vec![dir("a"), file("a/b/c"), dir("a/b")],
        ] {
            let err = read_back(written(&entries)).unwrap_err();
            assert_eq!(kind_of(&err), Some(Kind::Protocol), "{entries:?}");
        }
        assert!(read_back(written(&[stream])).is_ok());
        assert!(read_back(written(&[dir("a"), dir("a/b"), file("a/b/c"), file("x/y")])).is_ok());
    }

    fn read_back_meta(entries: &[Entry]) -> Result<Vec<Entry>> {
        let mut t = transfer();
        t.meta = true;
        let mut writer = FrameWriter::new(Vec::new());
        write_offer(&mut writer, &t, Head::default(), entries).unwrap();
        writer.flush().unwrap();
        read_offer(
            &mut FrameReader::new(Cursor::new(writer.get_ref().clone())),
            &t,
            false,
        )
        .map(|offered| offered.entries)
    }

    fn hard_link(path: &str, of: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Hardlink,
            size: Some(0),
            extra: Some(Box::new(Extra {
                of: Some(of),
                ..Extra::default()
            })),
            ..Entry::default()
        }
    }

    #[test]
    fn a_hard_link_names_an_earlier_file_of_known_size() {
        let stream = Entry {
            size: None,
            ..file("s")
        };
        assert!(read_back_meta(&[file("a"), hard_link("b", 0)]).is_ok());
        for entries in [
            vec![hard_link("b", 1), file("a")],
            vec![hard_link("b", 0)],
            vec![dir("a"), hard_link("b", 0)],
            vec![file("a"), hard_link("b", 1)],
            vec![file("a"), hard_link("b", u64::MAX)],
            vec![stream, hard_link("b", 0)],
            vec![file("a"), hard_link("b", 0), hard_link("c", 1)],
        ] {
            let err = read_back_meta(&entries).unwrap_err();
            assert_eq!(kind_of(&err), Some(Kind::Protocol), "{entries:?}");
        }
        // Without meta a hard link is a kind nobody knows.
        let err = read_back(written(&[file("a"), hard_link("b", 0)])).unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Protocol));
    }

    #[test]
    fn a_wrong_count_is_a_protocol_error() {
        let mut writer = FrameWriter::new(Vec::new());
        let t = transfer();
        let payload = br#"{"type":"offer","entries":[]}"#;
        let mut mac = t.offer_mac();
        mac.frame(payload);
        writer.write_payload(payload).unwrap();
        writer
            .write_message(&Message::OfferEnd {
                count: 1,
                mac: mac.finish_hex(),
            })
            .unwrap();
        writer.flush().unwrap();
        let err = read_back(writer.get_ref().clone()).unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Protocol));
    }

    #[test]
    fn a_plan_round_trips_and_must_match_the_offer() {
        let decisions: Vec<Decision> = (0..30_000)
            .map(|i| Decision::Skip {
                code: ErrorCode::Exists,
                message: format!("entry {i} already exists on the receiver"),
                attrs: false,
            })
            .collect();
        let mut writer = FrameWriter::new(Vec::new());
        write_plan(&mut writer, &transfer(), &decisions).unwrap();
        writer.flush().unwrap();
        let bytes = writer.get_ref().clone();
        let read = |offered| {
            read_plan(
                &mut FrameReader::new(Cursor::new(bytes.clone())),
                &transfer(),
                offered,
                false,
            )
        };
        assert_eq!(read(30_000).unwrap(), decisions);
        assert_eq!(kind_of(&read(29_999).unwrap_err()), Some(Kind::Protocol));
        assert_eq!(kind_of(&read(30_001).unwrap_err()), Some(Kind::Protocol));
        let other_t = Transfer::for_tests([5; 32], 1, HashKind::Md5);
        let err = read_plan(
            &mut FrameReader::new(Cursor::new(bytes)),
            &other_t,
            30_000,
            false,
        );
        assert_eq!(kind_of(&err.unwrap_err()), Some(Kind::Verification));
    }
}

/// The section 17 vectors of `docs/PROTOCOL.md`: an offer frame with a `mirror`
/// member, and a report of one removed file.
#[cfg(test)]
mod mirror_vectors {
    use super::*;
    use crate::proto::handshake::tests::vector_session_key;
    use crate::proto::hash::HashKind;
    use crate::proto::message::{ItemKind, RuleSet};
    use std::io::Cursor;

    const OFFER: &str = r#"{"type":"offer","mirror":{"delete":true,"rules":[{"dir":"","lines":["*.tmp","!keep.tmp"]}]},"entries":[{"path":"site","kind":"dir","size":0,"mode":493,"mtime":1700000000},{"path":"site/index.html","kind":"file","size":13,"mode":420,"mtime":1700000000}]}"#;
    const DELETED: &str =
        r#"{"type":"deleted","entries":[{"path":"site/old.html","kind":"file"}]}"#;

    fn transfer() -> Transfer {
        Transfer::for_tests(*vector_session_key('A').bytes(), 0, HashKind::Md5)
    }

    fn entry(path: &str, kind: EntryKind, size: u64, mode: u64) -> Entry {
        Entry {
            path: path.into(),
            kind,
            size: Some(size),
            mode: Some(mode),
            mtime: Some(1_700_000_000),
            ..Entry::default()
        }
    }

    /// Writes the offer of `entries` with `mirror` and checks it against the
    /// vector: the one frame's `payload` and its `mac_offer` (hex); then reads it
    /// back, which must give the same mirror and entries.
    fn check_offer_vector(mirror: &Mirror, entries: &[Entry], payload: &str, mac_hex: &str) {
        let mut writer = FrameWriter::new(Vec::new());
        let head = Head {
            mirror: Some(mirror),
            ..Head::default()
        };
        write_offer(&mut writer, &transfer(), head, entries).unwrap();
        writer.flush().unwrap();
        let bytes = writer.get_ref().clone();
        assert_eq!(&bytes[..4], (payload.len() as u32).to_be_bytes());
        assert_eq!(&bytes[4..4 + payload.len()], payload.as_bytes());
        let mut mac = transfer().offer_mac();
        mac.frame(payload.as_bytes());
        assert_eq!(mac.finish_hex(), mac_hex);
        let read = read_offer(&mut FrameReader::new(Cursor::new(bytes)), &transfer(), true);
        let offered = read.unwrap();
        assert_eq!(offered.mirror.as_ref(), Some(mirror));
        assert_eq!(offered.entries, entries);
    }

    #[test]
    fn the_offer_asking_ignore_times_matches_the_protocol_vector() {
        const IGNORE_TIMES: &str = r#"{"type":"offer","mirror":{"ignore_times":true},"entries":[{"path":"site/index.html","kind":"file","size":13,"mode":420,"mtime":1700000000}]}"#;
        assert_eq!(IGNORE_TIMES.len(), 140);
        let mirror = Mirror {
            ignore_times: true,
            ..Mirror::default()
        };
        let entries = [entry("site/index.html", EntryKind::File, 13, 0o644)];
        let mac = "709d6b597c9f87bbd62fed22aa49244451fa95e38dc4ff9955e905c3aeda17ca";
        check_offer_vector(&mirror, &entries, IGNORE_TIMES, mac);
        // A receiver that does not know a member of `mirror` ignores it (as an
        // xfer before `ignore_times` did): the offer reads as one without it.
        let unknown = IGNORE_TIMES.replace("ignore_times", "a_later_member");
        let mut frame = (unknown.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(unknown.as_bytes());
        let mut mac = transfer().offer_mac();
        mac.frame(unknown.as_bytes());
        let end = format!(
            r#"{{"type":"offer_end","count":1,"mac":"{}"}}"#,
            mac.finish_hex()
        );
        frame.extend_from_slice(&(end.len() as u32).to_be_bytes());
        frame.extend_from_slice(end.as_bytes());
        let read = read_offer(&mut FrameReader::new(Cursor::new(frame)), &transfer(), true);
        assert_eq!(read.unwrap().mirror, Some(Mirror::default()));
    }

    #[test]
    fn the_offer_saying_xattrs_all_matches_the_protocol_vector() {
        const XATTRS_ALL: &str = r#"{"type":"offer","mirror":{"delete":true},"xattrs_all":true,"entries":[{"path":"v","kind":"dir","size":0,"mode":493,"mtime":1700000000,"xattrs":{"trusted.x":"31"}}]}"#;
        const MAC: &str = "26305df8eeb9a18ad050627d921867d431c008fa81cfcc2c3b91060f91d0a3b0";
        let mut meta = transfer();
        meta.meta = true;
        let mirror = Mirror {
            delete: true,
            ..Mirror::default()
        };
        let mut dir = entry("v", EntryKind::Dir, 0, 0o755);
        dir.extra_mut().xattrs = Some([("trusted.x".to_string(), "31".to_string())].into());
        let mut writer = FrameWriter::new(Vec::new());
        let head = Head::new(Some(&mirror), true);
        write_offer(&mut writer, &meta, head, [&dir]).unwrap();
        writer.flush().unwrap();
        let bytes = writer.get_ref().clone();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let payload = std::str::from_utf8(&bytes[4..4 + len]).unwrap();
        let mut mac = meta.offer_mac();
        mac.frame(payload.as_bytes());
        let mac = mac.finish_hex();
        assert_eq!((payload, &mac[..]), (XATTRS_ALL, MAC));
        let read = read_offer(&mut FrameReader::new(Cursor::new(bytes)), &meta, true);
        let offered = read.unwrap();
        assert!(offered.xattrs_all);
        assert_eq!((offered.mirror, offered.entries), (Some(mirror), vec![dir]));
        let document = include_str!("../../docs/PROTOCOL.md");
        for value in [XATTRS_ALL, MAC, &format!("{len:08x}")] {
            assert!(document.contains(value), "{value} is in section 16.1.1");
        }
    }

    #[test]
    fn the_offer_with_mirror_matches_the_protocol_vector() {
        let mirror = Mirror {
            delete: true,
            dry_run: false,
            rules: vec![RuleSet {
                dir: String::new(),
                lines: vec!["*.tmp".into(), "!keep.tmp".into()],
            }],
            delete_excluded: false,
            report_kept: false,
            ignore_times: false,
        };
        let entries = [
            entry("site", EntryKind::Dir, 0, 0o755),
            entry("site/index.html", EntryKind::File, 13, 0o644),
        ];
        assert_eq!(OFFER.len(), 253);
        let mac = "51412f146fe480059b450246eddcf1205b120c36f888951cb7a12191906d8773";
        check_offer_vector(&mirror, &entries, OFFER, mac);
    }

    #[test]
    fn the_report_of_removed_entries_matches_the_protocol_vector() {
        let mut writer = FrameWriter::new(Vec::new());
        let mut list = ListWriter::deleted(&mut writer, &transfer());
        let removed = Removed {
            path: "site/old.html".into(),
            kind: ItemKind::File,
            error: None,
            kept: None,
            bytes: None,
        };
        list.push(&removed).unwrap();
        list.finish_deleted().unwrap();
        writer.flush().unwrap();
        let bytes = writer.get_ref().clone();
        assert_eq!(DELETED.len(), 69);
        assert_eq!(&bytes[4..4 + DELETED.len()], DELETED.as_bytes());
        let mut mac = transfer().deleted_mac();
        mac.frame(DELETED.as_bytes());
        assert_eq!(
            mac.finish_hex(),
            "6d7f32b81f52ad1183f055be5e17148245e3337451ecab62245ef3c20b62e5e4"
        );
        let mut reader = FrameReader::new(Cursor::new(bytes));
        let first = reader.read_payload().unwrap().unwrap().to_vec();
        let read = read_removed(&mut reader, &transfer(), &first).unwrap();
        assert_eq!(read, [removed]);
    }

    #[test]
    fn a_report_with_a_kept_item_matches_the_protocol_vector() {
        const KEPT: &str = concat!(
            r#"{"type":"deleted","entries":[{"path":"site/old.html","kind":"file"},"#,
            r#"{"path":"site/.xfer-0123456789abcdef.part","kind":"file","kept":"temporary"}]}"#
        );
        let mut writer = FrameWriter::new(Vec::new());
        let mut list = ListWriter::deleted(&mut writer, &transfer());
        let items = [
            Removed {
                path: "site/old.html".into(),
                kind: ItemKind::File,
                error: None,
                kept: None,
                bytes: None,
            },
            Removed {
                path: "site/.xfer-0123456789abcdef.part".into(),
                kind: ItemKind::File,
                error: None,
                kept: Some(crate::proto::message::KeptWhy::Temporary),
                bytes: None,
            },
        ];
        for item in &items {
            list.push(item).unwrap();
        }
        list.finish_deleted().unwrap();
        writer.flush().unwrap();
        let bytes = writer.get_ref().clone();
        assert_eq!(KEPT.len(), 146);
        assert_eq!(&bytes[..4], 146u32.to_be_bytes());
        assert_eq!(&bytes[4..4 + KEPT.len()], KEPT.as_bytes());
        let mut mac = transfer().deleted_mac();
        mac.frame(KEPT.as_bytes());
        assert_eq!(
            mac.finish_hex(),
            "91ce80545a3e213c44826aa6ad41b46727ec3e09b08ce06b58978749c5841f00"
        );
        let mut reader = FrameReader::new(Cursor::new(bytes));
        let first = reader.read_payload().unwrap().unwrap().to_vec();
        assert_eq!(
            read_removed(&mut reader, &transfer(), &first).unwrap(),
            items
        );
    }

    #[test]
    fn a_forged_report_or_a_misplaced_mirror_is_refused() {
        let mut writer = FrameWriter::new(Vec::new());
        writer.write_payload(DELETED.as_bytes()).unwrap();
        writer
            .write_message(&Message::DeletedEnd {
                count: 1,
                mac: "00".repeat(32),
            })
            .unwrap();
        writer.flush().unwrap();
        let mut reader = FrameReader::new(Cursor::new(writer.get_ref().clone()));
        let first = reader.read_payload().unwrap().unwrap().to_vec();
        let err = read_removed(&mut reader, &transfer(), &first).unwrap_err();
        assert_eq!(crate::error::wire_code(&err), Some(ErrorCode::Mac));
        // `mirror` in a second offer frame.
        let t = transfer();
        let frames = [
            r#"{"type":"offer","entries":[],"more":true}"#,
            r#"{"type":"offer","mirror":{"delete":true},"entries":[]}"#,
        ];
        let bytes = offer_bytes(&t, &frames);
        let read = read_offer(&mut FrameReader::new(Cursor::new(bytes.clone())), &t, true);
        assert_eq!(
            crate::error::kind_of(&read.unwrap_err()),
            Some(Kind::Protocol)
        );
        // Without the feature in force the member is ignored, as by an older peer.
        let read = read_offer(&mut FrameReader::new(Cursor::new(bytes)), &t, false);
        assert_eq!(read.unwrap().mirror, None);
    }

    /// The offer frames `frames`, MAC'd for `t` and closed.
    fn offer_bytes(t: &Transfer, frames: &[&str]) -> Vec<u8> {
        let mut mac = t.offer_mac();
        let mut writer = FrameWriter::new(Vec::new());
        for frame in frames {
            mac.frame(frame.as_bytes());
            writer.write_payload(frame.as_bytes()).unwrap();
        }
        let end = Message::OfferEnd {
            count: 0,
            mac: mac.finish_hex(),
        };
        writer.write_message(&end).unwrap();
        writer.flush().unwrap();
        writer.get_ref().clone()
    }

    #[test]
    fn xattrs_all_counts_under_meta_in_the_first_frame_only() {
        let mut meta = transfer();
        meta.meta = true;
        let read = |t: &Transfer, bytes: Vec<u8>| {
            read_offer(&mut FrameReader::new(Cursor::new(bytes)), t, true)
        };
        let mut writer = FrameWriter::new(Vec::new());
        let head = Head {
            xattrs_all: true,
            ..Head::default()
        };
        write_offer(&mut writer, &meta, head, std::iter::empty::<Entry>()).unwrap();
        writer.flush().unwrap();
        let written = writer.get_ref().clone();
        assert!(
            String::from_utf8_lossy(&written)
                .contains(r#"{"type":"offer","xattrs_all":true,"entries":[]}"#)
        );
        assert!(read(&meta, written.clone()).unwrap().xattrs_all);
        // Without `meta` it is an unknown member; absent, it is `false`.
        assert!(!read(&transfer(), written).unwrap().xattrs_all);
        let plain = offer_bytes(&meta, &[r#"{"type":"offer","entries":[]}"#]);
        assert!(!read(&meta, plain).unwrap().xattrs_all);
        let second = [
            r#"{"type":"offer","entries":[],"more":true}"#,
            r#"{"type":"offer","xattrs_all":true,"entries":[]}"#,
        ];
        let err = read(&meta, offer_bytes(&meta, &second)).unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Protocol));
        // `false` is absent, wherever it is.
        let second = second.map(|frame| frame.replace("true,\"entries", "false,\"entries"));
        let second = [second[0].as_str(), second[1].as_str()];
        assert!(!read(&meta, offer_bytes(&meta, &second)).unwrap().xattrs_all);
        let not_a_flag = [r#"{"type":"offer","xattrs_all":null,"entries":[]}"#];
        let err = read(&meta, offer_bytes(&meta, &not_a_flag)).unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Protocol));
    }

    #[test]
    fn hostile_mirror_options_are_protocol_errors() {
        let set = |dir: &str, line: &str| RuleSet {
            dir: dir.into(),
            lines: vec![line.into()],
        };
        let file = [entry("a", EntryKind::File, 1, 0o644)];
        let stream = [Entry {
            size: None,
            ..entry("s", EntryKind::File, 0, 0o644)
        }];
        let too_many = Mirror {
            rules: (0..=MAX_RULE_SETS).map(|_| set("", "x")).collect(),
            ..Mirror::default()
        };
        let long = Mirror {
            rules: vec![set("", &"x".repeat(MAX_RULE_LINE + 1))],
            ..Mirror::default()
        };
        let broken = Mirror {
            rules: vec![set("", "a\nb")],
            ..Mirror::default()
        };
        let delete_a_stream = Mirror {
            delete: true,
            ..Mirror::default()
        };
        for (mirror, entries) in [
            (&too_many, &file[..]),
            (&long, &file[..]),
            (&broken, &file[..]),
            (&delete_a_stream, &stream[..]),
        ] {
            let err = check_mirror(mirror, entries).unwrap_err();
            assert_eq!(crate::error::kind_of(&err), Some(Kind::Protocol));
        }
        assert!(check_mirror(&delete_a_stream, &file).is_ok());
    }
}
