//! What a review of `-I`/`--ignore-times` and the receiver's "a delta that rebuilds
//! the old file byte for byte keeps it" (a52407c..3c65eba) found, one test per
//! finding: a kept or rebuilt file holds what was sent and verified, gets the
//! metadata a new file would, and is flushed before its `ok`. A test still ignored
//! names why (a finding being fixed elsewhere, or a limit PROTOCOL.md states).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use serde_json::{Value, json};

use crate::delta::{copy, literal};
use crate::util::peer::{Peer, SendEntry};
use crate::util::server::{Site, client, expect_exit};
use crate::util::tree::{set_mtime, set_xattr, xattrs_of};
use crate::util::{KEY, Receiver, pattern, peer_sender, send, stderr_of, write_in};

/// The whole second `f` is set to before it is offered with [`offered_over`].
const OFFERED_TIME: u64 = 1_700_000_000;

/// A receiver (`recv --overwrite`) into `dir`, which holds `f`, and the test peer
/// as a sender with `delta` that offered `f` with `size` bytes: the plan's chunk
/// count. `f` is given [`OFFERED_TIME`] and offered with it, as `-I` offers an
/// unchanged file, so that where `size` is `f`'s too its first bytes are held back
/// (the case of the findings below); the later writes go through a mapping whose
/// page is dirty already, and do not change the time again.
fn offered_over(dir: &Path, size: usize) -> (Receiver, Peer, u32) {
    set_mtime(&dir.join("f"), OFFERED_TIME as i64, 0);
    let receiver = Receiver::start(dir, Some(KEY), &["--overwrite", "-i"]);
    let mut peer = peer_sender(receiver.port, &["delta"]);
    let entry = SendEntry {
        size: Some(size as u64),
        mtime: Some(OFFERED_TIME),
        ..SendEntry::file("f", Vec::new())
    };
    peer.send_offer(&[vec![entry.to_json()]]).unwrap();
    let plan = peer.read_plan(1).unwrap();
    let count = plan[0]["delta"]["count"].as_u64().expect("a basis") as u32;
    (receiver, peer, count)
}

/// A shared, writable mapping of the file at `path`, whose first page this
/// process dirtied already: writing it again changes the file's bytes without
/// any change to its size, mtime or ctime (no page fault, so no
/// `file_update_time`), as any program that edits a file through `mmap` does.
struct Mapped {
    at: *mut u8,
    len: usize,
    _file: fs::File,
}

impl Mapped {
    fn new(path: &Path) -> Mapped {
        use std::os::fd::AsRawFd;
        let file = fs::File::options()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a fresh shared mapping of a file this test owns, unmapped in drop.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED, "mmap");
        let mapped = Mapped {
            at: at.cast(),
            len,
            _file: file,
        };
        // The first write faults, and the kernel updates the file's times then.
        let first = mapped.byte(0);
        mapped.set(0, first);
        mapped
    }

    fn byte(&self, at: usize) -> u8 {
        assert!(at < self.len);
        // SAFETY: inside the mapping.
        unsafe { self.at.add(at).read_volatile() }
    }

    fn set(&self, at: usize, value: u8) {
        assert!(at < self.len);
        // SAFETY: inside the mapping.
        unsafe { self.at.add(at).write_volatile(value) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.at.cast(), self.len) };
    }
}

/// ctime, mtime, size and inode of `path`: what the receiver's basis stamp holds.
fn stamp(path: &Path) -> (i64, i64, i64, i64, u64, u64) {
    let meta = fs::metadata(path).unwrap();
    let (c, cn) = (meta.ctime(), meta.ctime_nsec());
    (
        c,
        cn,
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len(),
        meta.ino(),
    )
}

/// One race of a receiver holding `old` as `f` against a program that holds `f`
/// mapped: the test peer offers `new` and sends `before` (delta frames), the
/// program writes `f`'s first byte through its mapping, then the peer sends
/// `after` and the empty frame and `done` for `new`. The receiver's answer and
/// what `f` holds then, or `None` when the kernel wrote the page back meanwhile
/// (any `syncfs` on the filesystem does), which the next write then stamped: a
/// race this test did not get to run.
fn raced(
    old: &[u8],
    new: &[u8],
    before: &[Vec<u8>],
    after: &[Vec<u8>],
) -> Option<(Value, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_in(dir.path(), "f", old);
    let mapped = Mapped::new(&path);
    let (mut receiver, mut peer, count) = offered_over(dir.path(), new.len());
    let stamped = stamp(&path);
    peer.send_control(&json!({"type": "data", "index": 0, "offset": 0, "delta": true}))
        .unwrap();
    let with_count = |frames: &[Vec<u8>]| -> Vec<Vec<u8>> {
        // `copy(k, u32::MAX)` stands for "every chunk from k on".
        frames
            .iter()
            .map(|frame| {
                (0..4)
                    .find(|&first| frame == &copy(first, u32::MAX))
                    .map_or_else(|| frame.clone(), |first| copy(first, count - first))
            })
            .collect()
    };
    for frame in with_count(before) {
        peer.send_frame(&frame).unwrap();
    }
    // The receiver hashed what it copied; now the program writes again.
    sleep(Duration::from_millis(300));
    mapped.set(0, old[0] ^ 0xff);
    let unseen = stamp(&path) == stamped;
    for frame in with_count(after) {
        peer.send_frame(&frame).unwrap();
    }
    peer.send_frame(&[]).unwrap();
    peer.send_control(&peer.done_frame(0, "f", new)).unwrap();
    let said: Value = peer.read_control().unwrap();
    peer.send_end().unwrap();
    let _ = peer.expect("end");
    let _ = receiver.exit_code();
    drop(mapped);
    unseen.then(|| (said, fs::read(&path).unwrap()))
}

/// Runs [`raced`] until the race ran unseen by a stat (a few tries), and checks
/// that an `ok` means `f` holds what was sent.
fn assert_ok_means_sent(old: &[u8], new: &[u8], before: &[Vec<u8>], after: &[Vec<u8>]) {
    // Under load (the whole suite, other work on the machine) the kernel writes
    // dirty pages back early and often: eight tries were all written back once.
    for _ in 0..40 {
        let Some((said, there)) = raced(old, new, before, after) else {
            continue;
        };
        assert!(
            said["type"] != "ok" || there == new,
            "answered {said}, yet f is not what the sender sent (byte 0: {:#x}, sent {:#x})",
            there[0],
            new[0]
        );
        return;
    }
    panic!("inconclusive: the page was written back during every try");
}

/// Finding 1 (kept basis): the result's hash is taken as the basis is read for
/// the copies, and the old file is kept later, trusting the stamp (inode, size,
/// mtime, ctime) alone for "still the same bytes". Before d450641 the bytes hashed
/// were the bytes written into the new file, so a basis changed under the
/// receiver could only fail `checksum` or `busy`; now a change the stamp does not
/// see (a write through a shared mapping to a page already dirty) is answered
/// `ok` and the name keeps bytes the sender never sent. (Passes at a52407c.)
///
/// Left as a known limit (docs/PROTOCOL.md 18.5): catching it would take a flush
/// of every basis before it is read; a new file in its place would have lost that
/// program's write instead.
#[test]
#[ignore = "known limit (PROTOCOL 18.5): an mmap write to dirtied pages between hashing and keeping is not seen"]
fn a_basis_changed_through_mmap_after_it_was_hashed_is_not_kept_as_ok() {
    let old = pattern(256 << 10, 91);
    assert_ok_means_sent(&old, &old, &[copy(0, u32::MAX)], &[]);
}

/// Finding 1's second face where the result has the basis's size, so its first
/// chunk is held back: the old file is all zeros (every chunk but the last as long
/// as the others), and the instructions copy chunk 0, then the rest out of order
/// (chunks 2.. and then 1), which makes the same bytes. The program writes chunk 0
/// between the hold-back and the departure that reads it again: the result must
/// not be answered `ok` with that byte in it.
#[test]
fn held_back_bytes_of_a_result_of_the_basis_size_are_hashed_as_written() {
    let old = vec![0u8; 256 << 10];
    let (before, after) = ([copy(0, 1)], [copy(2, u32::MAX), copy(1, 1)]);
    assert_ok_means_sent(&old, &old, &before, &after);
}

/// Finding 1, second face (held back, then departed): the bytes held back are
/// hashed when copied, and read from the basis a second time to be written when a
/// later instruction departs from the basis. A change between the two reads that
/// the stamp does not see lands in the new file, which verifies (the hash is of
/// the first read) and is renamed into place: `ok` for bytes nobody sent. Before
/// d450641 every copied byte was read once, hashed and written from the same
/// buffer. (Passes at a52407c.) Since 22caf7c a result of another size than the
/// basis is never held back, so this one is written as it is read; the test keeps
/// that path to the same promise, and the one above holds the held-back path to it.
#[test]
fn bytes_held_back_and_written_later_are_the_bytes_that_were_hashed() {
    let old = pattern(256 << 10, 92);
    let mut new = old.clone();
    new.extend_from_slice(b"more");
    let (before, after) = ([copy(0, u32::MAX)], [literal(4, b"more")]);
    assert_ok_means_sent(&old, &new, &before, &after);
}

/// Writes `content` as `dir/name`, its modification time 1_700_000_000 s and
/// `nanos`.
fn write_at(dir: &Path, name: &str, content: &[u8], nanos: i64) -> std::path::PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = write_in(dir, name, content);
    set_mtime(&path, 1_700_000_000, nanos);
    path
}

/// Finding 2 (quota): `-I` is sold as "an unchanged file costs its fingerprints
/// and stays", yet the plan reserves the whole size of every file it sends, as
/// for a temporary that will be written, for the whole session. A home more than
/// half full can no longer run `send -f -I` over what it holds: the second file,
/// unchanged, is refused `quota` (exit 6) though nothing would have been written.
/// (The same sum is taken from a plain receiver's free disk space.)
#[test]
fn ignore_times_over_unchanged_files_in_a_home_more_than_half_full_succeeds() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"3 MiB\"")]);
    let home = site.home("alice");
    let local = site.path().join("local");
    let (a, b) = (pattern(1 << 20, 93), pattern(1 << 20, 94));
    write_at(&home, "a", &a, 0);
    write_at(&home, "b", &b, 0);
    let sent = [write_at(&local, "a", &a, 0), write_at(&local, "b", &b, 0)];
    let inodes = |dir: &Path| ["a", "b"].map(|name| fs::metadata(dir.join(name)).unwrap().ino());
    let before = inodes(&home);
    let server = site.serve(&[]);
    let to = server.at("");
    let paths = sent.map(|path| path.to_str().unwrap().to_string());
    let quick = client(&site, "alice", &["send", "-f", &paths[0], &paths[1], &to]);
    expect_exit(&quick, 0, "the quick check: both there");
    let forced = client(
        &site,
        "alice",
        &["send", "-f", "-I", &paths[0], &paths[1], &to],
    );
    assert_eq!(inodes(&home), before, "both kept, whatever was said");
    expect_exit(&forced, 0, "send -f -I over two unchanged files");
}

/// Finding 3 (metadata of a kept file): PROTOCOL 18.5 says the kept file gets
/// "the offered metadata ... as it would a new file", and README that it is
/// "the same file". A new file (what the same command makes of a file whose
/// content changed) holds only the offered extended attributes and exactly the
/// offered time; the kept one keeps an attribute the source does not have and
/// nanoseconds the source does not have (`meta::differs` compares times with
/// `same_nanos`, made for the quick check, and `xattr::apply` only adds). So
/// `send -I -X` leaves a tree that depends on which files changed, where
/// `rsync -aIX` leaves the source's.
#[test]
fn a_kept_file_ends_with_the_metadata_a_rebuilt_one_gets() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let same = pattern(256 << 10, 95);
    let mut changed = same.clone();
    changed[1000] ^= 1;
    let files = [
        write_at(src.path(), "kept", &same, 0),
        write_at(src.path(), "rebuilt", &changed, 0),
    ];
    for (name, content) in [("kept", &same), ("rebuilt", &same)] {
        let path = write_at(dst.path(), name, content, 500_000_000);
        set_xattr(&path, "user.stale", b"not at the source").unwrap();
    }
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite", "-i"]);
    let sent = send(&[&files[0], &files[1]], receiver.port, KEY, &["-I", "-X"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let look = |name: &str| {
        let path = dst.path().join(name);
        let meta = fs::metadata(&path).unwrap();
        (xattrs_of(&path).len(), meta.mtime(), meta.mtime_nsec())
    };
    assert_eq!(look("rebuilt"), (0, 1_700_000_000, 0), "as sent");
    assert_eq!(look("kept"), look("rebuilt"), "the kept file, as a new one");
}

/// The flushing system calls `recv --overwrite` made while `f` (written with
/// `old`) was sent `-I` as `new` (both at the same time), traced by strace; `None`
/// (with the reason printed) where strace is missing or cannot trace.
fn flushes_receiving(old: &[u8], new: &[u8]) -> Option<Vec<String>> {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is missing");
        return None;
    }
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = write_at(src.path(), "f", new, 0);
    write_at(dst.path(), "f", old, 0);
    let trace = src.path().join("trace");
    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs,sync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_xfer"))
        .args(["recv", "--listen", "127.0.0.1:0", "--overwrite", "--dir"])
        .arg(dst.path())
        .env("XFER_KEY", KEY);
    let mut receiver = Receiver::spawn(strace);
    let sent = send(&[&file], receiver.port, KEY, &["-I"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    if receiver.exit_code() != 0 {
        eprintln!("skipped: strace could not trace: {}", receiver.stderr());
        return None;
    }
    let traced = fs::read_to_string(&trace).unwrap_or_default();
    Some(traced.lines().map(str::to_string).collect())
}

/// Finding 4 (durability): PROTOCOL.md version 2 (shared) says `ok` is sent only
/// once the file "was flushed to disk", and docs/PROTOCOL.md section 6 "flushed to
/// stable storage". A kept basis is answered `ok` with no flush at all (18.5: "not
/// flushed again"), though nothing says it ever was: a file another program just
/// wrote, still in the page cache, is acknowledged to the sender as delivered,
/// and a crash then loses it; its new mode and time are not flushed either. The
/// same receiver flushes a rebuilt file (checked first, so that the trace is
/// known to see flushes).
#[test]
fn a_kept_file_is_flushed_before_its_ok() {
    let old = pattern(1 << 20, 96);
    let mut changed = old.clone();
    changed[1 << 19] ^= 1;
    let Some(rebuilt) = flushes_receiving(&old, &changed) else {
        return;
    };
    assert!(!rebuilt.is_empty(), "a rebuilt file is flushed");
    let kept = flushes_receiving(&old, &old).expect("traced once already");
    assert!(!kept.is_empty(), "the kept file was never flushed");
}
