//! `lls`: a local directory's names, sorted, directories with a `/`; with `-l`, the
//! long lines of `ls -l` (`crate::ui::listing`'s format, links not followed).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueHint};

use crate::error::{Classify, Kind};
use crate::escape::escape_path;
use crate::proto::message::Item;
use crate::shell::session::Session;
use crate::shell::words::expand_home;
use crate::ui::listing::{local_item, print_items};

/// list a local directory (-l: long, -h: human sizes)
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "lls [-l] [-h] [PATH]")]
pub(crate) struct Lls {
    /// Long listing: kind and permissions, size, time (UTC) and name
    #[arg(short)]
    pub(crate) long: bool,
    /// Sizes in KiB, MiB, GiB (with -l)
    #[arg(short = 'h')]
    pub(crate) human: bool,
    /// The local directory (default: the current one)
    #[arg(value_name = "PATH", value_hint = ValueHint::DirPath)]
    pub(crate) path: Option<String>,
}

impl Lls {
    pub(crate) fn run(self, _session: &mut Session) -> Result<()> {
        let path = self
            .path
            .map_or_else(|| PathBuf::from("."), |p| expand_home(&p));
        let mut items: Vec<Item> = std::fs::read_dir(&path)
            .with_context(|| format!("lls {}", escape_path(&path)))
            .classify(Kind::Io)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let metadata = std::fs::symlink_metadata(entry.path()).ok()?;
                let name = entry.file_name().to_string_lossy().into_owned();
                Some(local_item(name, &metadata))
            })
            .collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        print_items(&mut std::io::stdout().lock(), &items, self.long, self.human)?;
        Ok(())
    }
}
