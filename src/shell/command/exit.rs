//! `exit` (also `quit`, `bye`): the end of the session; the loop in `shell/mod.rs`
//! says goodbye to the server.

use clap::Args;

/// end the session (also: quit, bye, Ctrl-D)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "exit")]
pub(crate) struct Exit {}
