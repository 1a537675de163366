//! Removing abandoned temporaries: `.xfer-*.part` and `.xfer-*.partial` files last
//! modified longer ago than the receiver keeps partial data, anywhere beneath the
//! target directory, following no links; and a `.xfer-*.part` directory (left by a
//! crash in the middle of a change of type) with all it holds, once it and all of
//! that are as old (`beneath::remove_stale_dir`). Only the receiver that holds the
//! directory's lock sweeps (see `TargetDir::lock`), so it never removes a file
//! another live receiver is writing.

use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType};

use crate::fs::beneath;
use crate::fs::path::{is_reserved_bytes, is_stale_exchange_dir};

/// How often a serving receiver or the server looks for abandoned partial files.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Seconds since the epoch before which a temporary counts as abandoned, for files
/// kept `age`; `None` when that lies before the epoch (nothing is that old).
pub(crate) fn cutoff(age: Duration) -> Option<i64> {
    let cutoff = SystemTime::now().checked_sub(age)?;
    Some(
        cutoff
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// Runs `sweep` in a thread of its own, since a large tree takes a while: now, and
/// then every hour while `repeat`. `removed` hears of each sweep that removed
/// something. The one sweeping thread of `recv --serve` and of `xfer serve`.
pub(crate) fn in_background(
    repeat: bool,
    sweep: impl Fn() -> usize + Send + 'static,
    removed: impl Fn(usize) + Send + 'static,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("sweep".into())
        .spawn(move || {
            loop {
                let count = sweep();
                if count > 0 {
                    removed(count);
                }
                if !repeat {
                    break;
                }
                std::thread::sleep(SWEEP_EVERY);
            }
        })
        .map_err(|err| anyhow::Error::new(err).context("cannot start a thread"))?;
    Ok(())
}

/// Removes stale temporaries beneath `dir` older than `cutoff` (seconds since the
/// epoch); returns how many.
pub(crate) fn sweep(dir: OwnedFd, cutoff: i64) -> usize {
    sweep_dir(dir, cutoff, 0)
}

fn sweep_dir(dir: OwnedFd, cutoff: i64, depth: usize) -> usize {
    let mut removed = 0;
    for (name, stat) in beneath::children(&dir) {
        match beneath::kind(&stat) {
            // Only an exchange of ours names a directory so (`beneath::rename_over_dir`).
            FileType::Directory
                if is_stale_exchange_dir(name.to_bytes(), stat.st_ctime, cutoff) =>
            {
                let mut gone = |_: &rustix::fs::Stat| removed += 1;
                beneath::remove_stale_dir((&dir, &name, depth), cutoff, &mut |_| true, &mut gone);
            }
            FileType::Directory if depth < beneath::MAX_DEPTH => {
                if let Ok(child) = beneath::open_dir(&dir, name.as_c_str()) {
                    removed += sweep_dir(child, cutoff, depth + 1);
                }
            }
            FileType::RegularFile
                if is_reserved_bytes(name.to_bytes()) && stat.st_mtime < cutoff =>
            {
                // A partial being written now has a fresh mtime; this one was left behind.
                let unlink = || rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
                let gone = match unlink() {
                    // In a read-only directory of this user's (`loosen.rs`), never
                    // the target itself.
                    Err(rustix::io::Errno::ACCESS) if depth > 0 => {
                        super::lent::briefly_loosened(&dir, unlink)
                    }
                    other => other,
                };
                removed += usize::from(gone.is_ok());
            }
            _ => {}
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exchange_directory_goes_once_its_change_time_is_past_the_cutoff_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join(".xfer-0123456789abcdef.part");
        let users = dir.path().join(".xfer-my-notes.partial");
        for made in [&ours, &users] {
            std::fs::create_dir_all(made.join("sub")).unwrap();
            std::fs::write(made.join("sub/x"), b"x").unwrap();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let open = || {
            let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY;
            rustix::fs::open(dir.path(), flags, rustix::fs::Mode::empty()).unwrap()
        };
        // Changed just now: not yet, whatever its times say.
        assert_eq!(sweep(open(), now - 3600), 0);
        assert!(ours.join("sub/x").exists());
        // Past the cutoff: ours goes with all it holds (counted: the file, `sub` and
        // itself); the user's stays.
        assert_eq!(sweep(open(), now + 3600), 3);
        assert!(!ours.exists());
        assert!(users.join("sub/x").exists());
    }
}
