//! `df`: the space and entries (files, directories, links) the user has used,
//! against the quota, in the line format of `crate::ui::listing` (the same as
//! `xfer usage`).

use anyhow::Result;
use clap::Args;

use crate::shell::session::Session;
use crate::ui::listing::usage_line;

/// show the space and entries (files, directories, links) used against the quota
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "df [-h]")]
pub(crate) struct Df {
    /// Sizes in KiB, MiB, GiB
    #[arg(short = 'h')]
    pub(crate) human: bool,
}

impl Df {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let usage = session.run(|client| client.usage())?;
        println!("{}", usage_line(&usage, self.human));
        Ok(())
    }
}
