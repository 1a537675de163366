//! What the parts of a receiving session share: where files go ([`Destination`]),
//! how offers are treated ([`Settings`]) and the borrowed state every part reads
//! ([`Shared`]). Plain data: it must not reach for the session's steps (`plan.rs`,
//! `data.rs`, `disk.rs`), which all read it.

use super::claims::Claims;
use crate::fs::quota::Account;
use crate::fs::sink::TargetDir;
use crate::proto::negotiated::Transfer;

/// Where received files go.
pub enum Destination {
    /// Into this directory, under their offered paths.
    Dir(TargetDir),
    /// The one file of the offer, to standard output.
    Stdout,
}

/// How a receiver treats what it is offered.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Replace existing files (atomically).
    pub overwrite: bool,
    /// Keep partial data of cut transfers, and continue from it.
    pub resume: bool,
}

/// What the parts of a session share.
pub struct Shared<'a> {
    pub transfer: &'a Transfer,
    pub destination: &'a Destination,
    pub claims: &'a Claims,
    pub settings: Settings,
    /// The user's quota, on a server.
    pub quota: Option<&'a Account>,
}
