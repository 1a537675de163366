//! What the user sees besides the data: progress bars ([`progress`]), warnings,
//! per-file outcomes and summaries as lines or JSON events ([`report`]), the
//! `ls -l` and usage lines of a remote listing ([`listing`]), and the
//! escaping of every untrusted name before it reaches a terminal ([`escape`]).

pub mod escape;
pub mod listing;
pub mod progress;
pub mod report;
