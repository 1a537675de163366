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
//!
//! The kernel's table of a process's descriptors grows by doubling as they are
//! opened, and in a process of several threads each growth waits for an RCU grace
//! period (8 to 16 ms on this VM), during which every thread that opens a file
//! waits too: six of them on the way to the four thousand files one session may
//! hold stopped both cores for 30 ms of a 250 ms run of 10 000 files of 4 KiB. So
//! the table is grown once at start, while the process has one thread and the
//! kernel need not wait, to what one session holds at most: 258 ms became 220.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Resource, getrlimit, setrlimit};

/// Receiving sessions running now.
static RECEIVING: AtomicUsize = AtomicUsize::new(0);
/// The soft open-file limit once raised; `usize::MAX` when there is none.
static LIMIT: OnceLock<usize> = OnceLock::new();

/// The descriptor table [`raise_limit`] makes room for at most: what one session
/// holds (four groups of 1 024 waiting files and two batches, `transfer/recv`),
/// rounded up to the power of two the kernel would grow to (64 KiB of its memory).
const TABLE: usize = 8192;

/// Raises the soft open-file limit to the hard one (if that fails, the soft one
/// stays), grows the descriptor table to use it (see the module's doc), and
/// remembers the limit. Called once at start, before any other thread exists;
/// later calls only read it.
pub(crate) fn raise_limit() -> usize {
    *LIMIT.get_or_init(|| {
        let limit = raise_soft_limit();
        grow_table(limit / 2);
        limit
    })
}

/// [`raise_limit`]'s raising: the soft limit it leaves (`usize::MAX` for none).
fn raise_soft_limit() -> usize {
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
}

/// Makes the descriptor table hold `wanted` descriptors (at most [`TABLE`]) by
/// placing one at the last of them and closing it again: the table never shrinks.
/// Where that fails the table grows as files are opened, as before.
fn grow_table(wanted: usize) {
    let last = wanted.clamp(1, TABLE) - 1;
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    if let Ok(root) = rustix::fs::open("/", flags, Mode::empty()) {
        let _placed = rustix::io::fcntl_dupfd_cloexec(&root, last as i32);
    }
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

    /// The size of this process's descriptor table (`FDSize` in its status).
    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with("FDSize:"))
            .unwrap();
        line["FDSize:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn the_descriptor_table_is_grown_to_what_a_session_holds() {
        let limit = raise_limit();
        assert!(table_size() >= (limit / 2).min(TABLE), "{}", table_size());
        // Growing it again (as a later call would) changes nothing.
        let before = table_size();
        grow_table(limit / 2);
        assert_eq!(table_size(), before);
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
