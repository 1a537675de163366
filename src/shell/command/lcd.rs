//! `lcd`: the local directory, which is this process's working directory.

use anyhow::{Context, Result};
use clap::{Args, ValueHint};

use crate::error::{Classify, Kind};
use crate::escape::escape_path;
use crate::shell::session::Session;
use crate::shell::words::expand_home;

/// change the local directory
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "lcd PATH")]
pub(crate) struct Lcd {
    /// The local directory (~ is your home)
    #[arg(value_name = "PATH", value_hint = ValueHint::DirPath)]
    pub(crate) path: String,
}

impl Lcd {
    pub(crate) fn run(self, _session: &mut Session) -> Result<()> {
        let path = expand_home(&self.path);
        std::env::set_current_dir(&path)
            .with_context(|| format!("lcd {}", escape_path(&path)))
            .classify(Kind::Io)?;
        Ok(())
    }
}
