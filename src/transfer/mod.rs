//! Transfers (`PROTOCOL.md` section 5): the sender's session ([`send`]) and the
//! receiver's ([`recv`]), the authenticated offer and plan they open with
//! ([`offer`]), the [`Tally`] that decides what a session adds up to ([`tally`]) and
//! the error frame a failed session ends with ([`tell`]).
//!
//! A session runs on a negotiated connection and never sees a command line: the
//! one-shot commands, `serve` and the shell all start them with plain values. What a
//! sender reads comes through an `fs::input::Outbox`; what a receiver writes goes to
//! a `recv::Destination`. Both sit at the filesystem edge (`fs`), below this layer.

mod consumed;
pub(crate) mod offer;
pub(crate) mod recv;
pub(crate) mod send;
pub(crate) mod tally;
pub(crate) mod tell;

pub(crate) use tally::Tally;
pub(crate) use tell::end_session;
