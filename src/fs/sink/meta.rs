//! Applying offered metadata: exactly the permission bits (`mode & 0o777`, never
//! setuid, setgid or sticky, whatever the umask) and the modification time in whole
//! seconds, through a descriptor so no name is looked up again.

use std::os::fd::AsFd;

use rustix::fs::{Mode, Timespec, Timestamps};
use rustix::io::Errno;

/// Permission bits a receiver may set.
const PERMISSION_BITS: u64 = 0o777;

/// Applies `mode` and `mtime`, where given, to the file or directory `fd`.
pub fn apply(fd: impl AsFd, mode: Option<u64>, mtime: Option<u64>) -> Result<(), Errno> {
    if let Some(mode) = mode {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode((mode & PERMISSION_BITS) as u32))?;
    }
    if let Some(mtime) = mtime {
        let seconds = i64::try_from(mtime).map_err(|_| Errno::INVAL)?;
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
