//! What the sender reads: the paths named on the command line turned into offer
//! entries, each remembering where its bytes come from.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::error::{Classify, Kind};
use crate::escape::escape_path;
use crate::frame::{Entry, EntryKind};

/// One offered entry and where its content lives.
#[derive(Debug, Clone)]
pub struct Source {
    pub entry: Entry,
    pub origin: Origin,
}

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A regular file on disk.
    File(PathBuf),
    /// A directory: no bytes, only its existence and metadata.
    Dir,
}

impl Source {
    /// Opens the entry's content for reading (files only).
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        match &self.origin {
            Origin::File(path) => {
                let file = File::open(path)
                    .with_context(|| format!("cannot open {}", escape_path(path)))
                    .classify(Kind::Io)?;
                Ok(Box::new(file))
            }
            Origin::Dir => bail!("a directory has no content to read"),
        }
    }

    /// The local path this entry came from, for messages.
    pub fn shown(&self) -> String {
        match &self.origin {
            Origin::File(path) => escape_path(path),
            Origin::Dir => crate::escape::escape(&self.entry.path).into_owned(),
        }
    }
}

/// Turns command-line paths into offer entries, each named by its last component.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<Source>> {
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", escape_path(path)))
            .classify(Kind::Io)?;
        if !meta.is_file() {
            bail!("{} is not a regular file", escape_path(path));
        }
        sources.push(Source {
            entry: Entry {
                path: name_of(path)?,
                kind: EntryKind::File,
                size: Some(meta.len()),
                mode: Some(meta.mode() & 0o777),
                mtime: Some(meta.mtime()),
            },
            origin: Origin::File(path.clone()),
        });
    }
    Ok(sources)
}

/// The name an entry travels under: the path's last component, which must be UTF-8
/// (the protocol carries UTF-8 paths).
fn name_of(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name to send it under", escape_path(path)))?;
    match name.to_str() {
        Some(name) => Ok(name.to_string()),
        None => bail!(
            "{} is not valid UTF-8; the protocol carries UTF-8 names",
            escape_path(path)
        ),
    }
}
