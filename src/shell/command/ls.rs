//! `ls`: a remote directory's names, or its long listing. The line formats are
//! `crate::ui::listing`'s, the same as `xfer ls`.

use std::io::Write;

use anyhow::Result;
use clap::Args;

use crate::client::path::resolve;
use crate::shell::session::Session;
use crate::ui::listing::{long_line, short_line};

/// list a remote directory (-l: long, -h: human sizes)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "ls [-l] [-h] [PATH]")]
pub(crate) struct Ls {
    /// Long listing: kind and permissions, size, time (UTC) and name
    #[arg(short)]
    pub(crate) long: bool,
    /// Sizes in KiB, MiB, GiB (with -l)
    #[arg(short = 'h')]
    pub(crate) human: bool,
    /// The directory (default: the current one)
    #[arg(value_name = "PATH")]
    pub(crate) path: Option<String>,
}

impl Ls {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let path = resolve(&session.cwd, self.path.as_deref().unwrap_or(""));
        let items = session.run(|client| client.list(&path))?;
        let mut out = std::io::stdout().lock();
        for item in &items {
            if self.long {
                writeln!(out, "{}", long_line(item, self.human))?;
            } else {
                writeln!(out, "{}", short_line(item))?;
            }
        }
        Ok(())
    }
}
