//! Removing abandoned temporaries: `.xfer-*.part` and `.xfer-*.partial` files last
//! modified longer ago than the receiver keeps partial data, anywhere beneath the
//! target directory, following no links. Only the receiver that holds the
//! directory's lock sweeps (see `TargetDir::lock`), so it never removes a file
//! another live receiver is writing.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType};

use crate::fs::beneath;
use crate::fs::path::is_reserved_bytes;

/// Removes stale temporaries beneath `dir` older than `cutoff` (seconds since the
/// epoch); returns how many.
pub fn sweep(dir: OwnedFd, cutoff: i64) -> usize {
    sweep_dir(dir, cutoff, 0)
}

fn sweep_dir(dir: OwnedFd, cutoff: i64, depth: usize) -> usize {
    let mut removed = 0;
    for (name, stat) in beneath::children(&dir) {
        match beneath::kind(&stat) {
            FileType::Directory if depth < beneath::MAX_DEPTH => {
                if let Ok(child) = beneath::open_dir(&dir, name.as_c_str()) {
                    removed += sweep_dir(child, cutoff, depth + 1);
                }
            }
            FileType::RegularFile
                if is_reserved_bytes(name.to_bytes()) && stat.st_mtime < cutoff =>
            {
                // A partial being written now has a fresh mtime; this one was left behind.
                removed += usize::from(rustix::fs::unlinkat(&dir, &name, AtFlags::empty()).is_ok());
            }
            _ => {}
        }
    }
    removed
}
