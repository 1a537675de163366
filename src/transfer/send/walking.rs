//! An offer whose walk is still under way. `xfer send` to a receiver (or a
//! server's home) it connects to walks its operands on a thread of its own while
//! it connects, and offers each entry as the walk finds it: the receiver reads
//! and checks the offer while the tree is still being walked, instead of after it
//! (10 000 files: the walk took 17-25 ms before the first frame went, and reading
//! the offer 4-5 ms after the last). Only to a peer with `meta`, to whom no entry is left out of the
//! offer, and without a mirror (`--delete`, `--dry-run`, `--ignore-times`),
//! whose first frame names rules the walk is still finding in ignore files;
//! otherwise the session waits for the whole walk and offers it as before.

use std::io::Write;

use anyhow::Result;

use super::super::offer::{Head, ListWriter};
use crate::fs::input::Outbox;
use crate::proto::message::Entry;
use crate::proto::negotiated::Transfer;
use crate::proto::wire::FrameWriter;

/// A walk under way (see the module). Never one whose offer asks for a mirror:
/// its first frame is written before the walk ends.
pub(crate) trait Walking: Sync {
    /// The entries found since last asked, in offer order, once there are some;
    /// `None` once the walk ended and every entry was given.
    fn more(&self) -> Option<Vec<Entry>>;
    /// The walk, once [`Walking::more`] said it ended: every entry it gave and
    /// where each one's bytes are; or why it failed.
    fn walked(&self) -> Result<Box<dyn Outbox>>;
    /// Whether the entries' `xattrs` objects name attributes of every namespace
    /// (see [`Outbox::xattrs_all`]), known before the walk.
    fn xattrs_all(&self) -> bool;
}

/// What a session offers: a walk done, or one under way.
#[derive(Clone, Copy)]
pub(crate) enum Offering<'a> {
    Walked(&'a dyn Outbox),
    Walking(&'a dyn Walking),
}

/// The outbox of `offering` once its walk ended; whether its offer went out
/// already, entry by entry as the walk found them (to a peer with `meta`, see the
/// module). `walked` keeps the outbox of a walk that was under way.
pub(super) fn walk_and_offer<'a, W: Write>(
    offering: Offering<'a>,
    writer: &mut FrameWriter<W>,
    transfer: &Transfer,
    walked: &'a mut Option<Box<dyn Outbox>>,
) -> Result<(&'a dyn Outbox, bool)> {
    let walking = match offering {
        Offering::Walked(outbox) => return Ok((outbox, false)),
        Offering::Walking(walking) => walking,
    };
    if !transfer.meta {
        return Ok((&**walked.insert(walking.walked()?), false));
    }
    let head = Head::new(None, walking.xattrs_all());
    let mut offer = ListWriter::offer(writer, transfer, head);
    while let Some(entries) = walking.more() {
        for entry in &entries {
            offer.push(entry)?;
        }
    }
    // A walk that failed (an operand gone since it was looked at) ends no offer:
    // the receiver plans nothing of it.
    let outbox = walked.insert(walking.walked()?);
    offer.finish_offer()?;
    Ok((&**outbox, true))
}
