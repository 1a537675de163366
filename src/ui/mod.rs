//! What the user sees besides the data: progress bars ([`progress`]), per-file
//! outcomes and summaries as lines or JSON events ([`report`]), and the `ls -l` and
//! usage lines of a remote listing ([`listing`]). It sits above `proto` (it shows
//! hashes, error codes and listing items) and below the sessions; the leaves it
//! builds on, `crate::escape` and `crate::stderr`, are what `error` and `key` use
//! instead, so that nothing low reaches up here.

pub(crate) mod listing;
pub(crate) mod progress;
pub(crate) mod report;
