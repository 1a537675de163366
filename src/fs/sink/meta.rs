//! Applying offered metadata: exactly the permission bits (`mode & 0o777`, never
//! setuid, setgid or sticky, whatever the umask) and the modification time in whole
//! seconds, through a descriptor so no name is looked up again.

use std::os::fd::AsFd;

use rustix::fs::{Mode, Timespec, Timestamps};
use rustix::io::Errno;

/// Permission bits a receiver may set.
const PERMISSION_BITS: u64 = 0o777;

/// Applies `mode` and `mtime`, where given, to the file or directory `fd`, with
/// the bits of `keep` always set (a server keeps its own access to what it holds:
/// 0o700 for a directory, 0o600 for a file; 0 elsewhere).
pub(crate) fn apply(
    fd: impl AsFd,
    mode: Option<u64>,
    mtime: Option<i64>,
    keep: u32,
) -> Result<(), Errno> {
    if let Some(mode) = mode {
        let bits = (mode & PERMISSION_BITS) as u32 | keep;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(bits))?;
    }
    if let Some(seconds) = mtime {
        rustix::fs::futimens(&fd, &timestamps(seconds))?;
    }
    Ok(())
}

fn timestamps(mtime: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    }
}
