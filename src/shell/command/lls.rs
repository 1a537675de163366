//! `lls`: a local directory's names, sorted, directories with a `/`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueHint};

use crate::error::{Classify, Kind};
use crate::escape::{escape, escape_path};
use crate::shell::session::Session;
use crate::shell::words::expand_home;

/// list a local directory
#[derive(Debug, Args, PartialEq, Eq)]
#[command(override_usage = "lls [PATH]")]
pub(crate) struct Lls {
    /// The local directory (default: the current one)
    #[arg(value_name = "PATH", value_hint = ValueHint::DirPath)]
    pub(crate) path: Option<String>,
}

impl Lls {
    pub(crate) fn run(self, _session: &mut Session) -> Result<()> {
        let path = self
            .path
            .map_or_else(|| PathBuf::from("."), |p| expand_home(&p));
        let mut names: Vec<(String, bool)> = std::fs::read_dir(&path)
            .with_context(|| format!("lls {}", escape_path(&path)))
            .classify(Kind::Io)?
            .filter_map(|entry| entry.ok())
            .map(|entry| {
                let dir = entry.file_type().is_ok_and(|t| t.is_dir());
                (entry.file_name().to_string_lossy().into_owned(), dir)
            })
            .collect();
        names.sort();
        let mut out = std::io::stdout().lock();
        for (name, dir) in names {
            writeln!(out, "{}{}", escape(&name), if dir { "/" } else { "" })?;
        }
        Ok(())
    }
}
