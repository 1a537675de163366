//! Open files as a budget the whole process shares. A receiver keeps each verified
//! small file open, unnamed, until its group is made durable (`transfer/recv/disk.rs`),
//! so one session may hold a thousand descriptors; a server running several sessions
//! must not let them together reach the process's limit, or every other file,
//! socket and session of the process fails with "too many open files".
//!
//! The rule: in steady state the receiving sessions of a process hold at most half
//! of its open-file limit in waiting files. A session holds up to four shares (two
//! for the group it fills and the groups being committed, and a batch of small
//! files on each of two threads), so a share is an eighth of the limit divided
//! among the sessions running now. Shares follow the count as it changes, but files
//! opened under a larger share stay open until their group commits (at most 100 ms
//! idle, or full): when many sessions start at once the process may briefly hold
//! more than half, never the whole limit while sessions number fewer than an
//! eighth of it. The limit itself is first raised to the hard one, as servers
//! commonly do: the soft limit of 1 024 most shells and services start with is a
//! relic of `select`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::process::{Resource, getrlimit, setrlimit};

/// Receiving sessions running now.
static RECEIVING: AtomicUsize = AtomicUsize::new(0);
/// The soft open-file limit once raised; `usize::MAX` when there is none.
static LIMIT: OnceLock<usize> = OnceLock::new();

/// Raises the soft open-file limit to the hard one (if that fails, the soft one
/// stays), and remembers what it is. Called once at start; later calls only read it.
pub(crate) fn raise_limit() -> usize {
    *LIMIT.get_or_init(|| {
        let mut limit = getrlimit(Resource::Nofile);
        // Linux refuses an unlimited soft limit for open files: its ceiling is nr_open.
        let ceiling = limit.maximum.or_else(nr_open);
        if limit.current != ceiling {
            let raised = rustix::process::Rlimit {
                current: ceiling,
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                limit = getrlimit(Resource::Nofile);
            }
        }
        limit
            .current
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
    })
}

/// The most descriptors the kernel lets any process have (`fs.nr_open`).
fn nr_open() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/fs/nr_open").ok()?;
    text.trim().parse().ok()
}

/// A receiving session while it runs: counted in every share.
pub(crate) struct Receiving(());

impl Receiving {
    #[must_use = "a session is counted only while its guard lives"]
    pub(crate) fn begin() -> Receiving {
        RECEIVING.fetch_add(1, Ordering::Relaxed);
        Receiving(())
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        RECEIVING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Files one receiving session may hold open in one group or batch now, at most
/// `most`: an eighth of the limit shared by the sessions running (never less than
/// one, so every session goes on, one file at a time if it must).
pub(crate) fn share(most: usize) -> usize {
    let sessions = RECEIVING.load(Ordering::Relaxed).max(1);
    share_of(raise_limit(), sessions, most)
}

fn share_of(limit: usize, sessions: usize, most: usize) -> usize {
    (limit / 8 / sessions).clamp(1, most.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_shrinks_with_the_sessions_and_never_reaches_zero() {
        assert_eq!(share_of(20_000, 1, 1024), 1024);
        assert_eq!(share_of(1024, 1, 1024), 128);
        assert_eq!(share_of(1024, 4, 1024), 32);
        assert_eq!(share_of(128, 6, 1024), 2);
        assert_eq!(share_of(16, 100, 1024), 1);
        assert_eq!(share_of(usize::MAX, 3, 128), 128);
    }

    #[test]
    fn the_limit_is_raised_to_the_hard_one() {
        let limit = raise_limit();
        let now = getrlimit(Resource::Nofile);
        let hard = now.maximum.map_or(usize::MAX, |n| n as usize);
        assert!(limit <= hard);
        // (This raises the limit of the whole test binary, which only helps it.)
        // An unlimited hard limit is reached only as far as nr_open.
        if now.maximum.is_some() {
            assert_eq!(now.current, now.maximum, "soft raised to hard");
            assert_eq!(Some(limit as u64), now.current);
        }
    }
}
