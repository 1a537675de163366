//! The last word of a failed session: [`end_session`] sends the peer an `error`
//! frame with the code the failure carries, then lingers (section 3) so that the
//! frame arrives instead of a reset; [`tell_peer`] is its first half, for callers
//! that hold only the writer. Owns only that; it must not decide outcomes (that is
//! the tally's).

use std::io::{Read, Write};

use crate::error::wire_code;
use crate::proto::message::Message;
use crate::proto::wire::{Connection, FrameWriter, Hangup};

/// Tells the peer why a session ended, with the code `err` carries, where the
/// connection still allows it (a failure the peer reported is not echoed back).
/// Whether an error frame was written.
pub(crate) fn tell_peer<W: Write>(writer: &mut FrameWriter<W>, err: &anyhow::Error) -> bool {
    let Some(code) = wire_code(err) else {
        return false;
    };
    let message = Message::error(code, format!("{err:#}"));
    writer
        .write_message(&message)
        .and_then(|()| writer.flush())
        .is_ok()
}

/// Ends a connection after the session-level failure `err`: every place that
/// detects a broken protocol, an idle peer or any other failure the peer should
/// hear of ends through here. The error frame goes out ([`tell_peer`]), then this
/// side stops writing and reads and drops what the peer still sends for up to a
/// second ([`Hangup::linger`]); the caller closes by dropping the connection.
pub(crate) fn end_session<R: Read, W: Write, C: Hangup>(
    conn: &mut Connection<R, W, C>,
    err: &anyhow::Error,
) {
    if tell_peer(&mut conn.writer, err) {
        conn.closer.linger();
    }
}
