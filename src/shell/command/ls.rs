//! `ls`: a remote directory's names, or its long listing. The line formats are
//! `crate::ui::listing`'s, the same as `xfer ls`.

use anyhow::Result;
use clap::Args;

use crate::client::path::resolve;
use crate::shell::session::Session;
use crate::ui::listing::print_items;

/// list a remote directory (-l: long, -h: human sizes, -R: everything beneath too)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "ls [-l] [-h] [-R] [PATH]")]
pub(crate) struct Ls {
    /// Long listing: kind and permissions, size, time (UTC) and name
    #[arg(short)]
    pub(crate) long: bool,
    /// Sizes in KiB, MiB, GiB (with -l)
    #[arg(short = 'h')]
    pub(crate) human: bool,
    /// Everything beneath too, each entry as its path relative to PATH, a
    /// directory before its contents (as `xfer ls -R`)
    #[arg(short = 'R')]
    pub(crate) recursive: bool,
    /// The directory (default: the current one)
    #[arg(value_name = "PATH")]
    pub(crate) path: Option<String>,
}

impl Ls {
    pub(crate) fn run(self, session: &mut Session) -> Result<()> {
        let path = resolve(&session.cwd, self.path.as_deref().unwrap_or(""));
        let items = if self.recursive {
            session.run(|client| client.list_tree(&path))?
        } else {
            session.run(|client| client.list(&path))?
        };
        print_items(&mut std::io::stdout().lock(), &items, self.long, self.human)?;
        Ok(())
    }
}
