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
        write_id(path)
            .with_context(|| format!("cannot write the pid file {}", escape_path(path)))
            .classify(Kind::Io)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

/// Writes our id into `path` only if it is, or becomes, a regular file of one
/// name that is ours: a pid file is often put where others may write (`/tmp`),
/// and a server run as root must not truncate what a link planted there names
/// (`/etc/shadow`), nor write into a file someone else could then edit to aim
/// the admin's `kill -HUP` elsewhere. Nothing is cut before that is checked.
fn write_id(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        // Not through a link; a FIFO fails at once instead of waiting for a reader.
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|err| match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.is_file() => std::io::Error::other(format!(
                "it is {}, not a regular file; remove it",
                crate::escape::describe(meta.file_type())
            )),
            _ => err,
        })?;
    let meta = file.metadata()?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    if !meta.is_file() || meta.nlink() != 1 || !ours {
        return Err(std::io::Error::other(
            "it is not a regular file of one name owned by the server's user; remove it",
        ));
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
