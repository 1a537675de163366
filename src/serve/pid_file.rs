//! `xfer serve --pid-file PATH`: the server's process id in a file, written at
//! start and removed at exit, so that `kill -HUP $(cat PATH)` reaches this server
//! and no other xfer (`pidof xfer` would name every one on the machine). Owns only
//! the file; what SIGHUP does is `serve`'s.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::{Classify, Kind};
use crate::escape::escape_path;

/// The written file, removed when dropped (when the server stops).
pub(crate) struct PidFile(PathBuf);

impl PidFile {
    /// [`PidFile::write`] when a path is given (`--pid-file`).
    pub(crate) fn write_if(path: Option<&Path>) -> Result<Option<PidFile>> {
        path.map(PidFile::write).transpose()
    }

    /// Writes this process's id and a newline to `path`, replacing what was there.
    pub(crate) fn write(path: &Path) -> Result<PidFile> {
        std::fs::File::create(path)
            .and_then(|mut file| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", escape_path(path)))
            .classify(Kind::Io)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
