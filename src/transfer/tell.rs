//! The last word of a failed session: [`tell_peer`] sends the peer an `error` frame
//! with the code the failure carries. Owns only that; it must not decide outcomes
//! (that is the tally's).

use crate::error::wire_code;
use crate::proto::message::Message;
use crate::proto::wire::FrameWriter;

/// Tells the peer why a session ended, with the code `err` carries, where the
/// connection still allows it (a failure the peer reported is not echoed back).
pub fn tell_peer<W: std::io::Write>(writer: &mut FrameWriter<W>, err: &anyhow::Error) {
    if let Some(code) = wire_code(err) {
        let message = Message::error(code, format!("{err:#}"));
        let _ = writer.write_message(&message).and_then(|()| writer.flush());
    }
}
