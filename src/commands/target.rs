//! The local directory a download or a receiver writes into (`recv --dir`, `get`'s
//! LOCAL_DIR): made if missing, refused plainly when a file has its name, then
//! opened and locked against a second writer. Nothing here receives anything.

use std::path::Path;

use anyhow::{Context, Result};

use crate::error::{Classify, Kind, fail};
use crate::escape::escape_path;
use crate::fs::sink::{DirLock, TargetDir};

/// Makes `dir` (and parents) unless it is there, opens and locks it; `named` is
/// how the user gave it (`--dir`, `the local directory`), for the messages.
pub(crate) fn open_target(dir: &Path, named: &str) -> Result<(TargetDir, DirLock)> {
    if dir.exists() && !dir.is_dir() {
        return Err(fail(
            Kind::Io,
            format!(
                "{named} {} is a file, not a directory: name a directory (it is made if missing)",
                escape_path(dir)
            ),
        ));
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {named} {}", escape_path(dir)))
        .classify(Kind::Io)?;
    let target = TargetDir::open(dir)?;
    let lock = target.lock(dir)?;
    Ok((target, lock))
}
