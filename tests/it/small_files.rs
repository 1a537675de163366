//! Trees of many small files: each arrives whole with its mode and time, nothing
//! hidden is left beside it (a small file is held unnamed until it is verified and
//! on disk, and never kept as partial data), an existing file is refused or
//! replaced exactly as a large one is, and a cut tree reruns to done.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::util::peer::kind;
use crate::util::relay::{Faults, Relay};
use crate::util::*;
use serde_json::json;

/// Sizes around the line between small files and resumable ones (64 KiB).
const SIZES: [usize; 7] = [0, 1, 4096, 65_535, 65_536, 65_537, 200_000];

/// A tree of `dirs` directories of `SIZES` files each, every file with its own
/// mode and time; returns the tree's root.
fn make_tree(parent: &Path, dirs: usize) -> std::path::PathBuf {
    let root = parent.join("tree");
    for d in 0..dirs {
        let dir = root.join(format!("d{d}")).join("deeper");
        fs::create_dir_all(&dir).unwrap();
        for (i, &len) in SIZES.iter().enumerate() {
            let file = write_in(&dir, &format!("f{i}"), &pattern(len, (d * 10 + i) as u64));
            let mode = [0o644, 0o600, 0o755, 0o444][i % 4];
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
            let time = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + i as u64);
            fs::File::options()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_modified(time))
                .or_else(|_| {
                    // A read-only file: make it writable for a moment to set its time.
                    fs::set_permissions(&file, fs::Permissions::from_mode(0o644))?;
                    let f = fs::File::options().write(true).open(&file)?;
                    f.set_modified(time)?;
                    fs::set_permissions(&file, fs::Permissions::from_mode(mode))
                })
                .unwrap();
        }
    }
    root
}

/// Every file of `src` is in `out` with the same bytes, mode and time, and `out`
/// holds nothing else (no temporary, no partial).
fn assert_same_tree(src: &Path, out: &Path) {
    assert_eq!(
        files_under(src),
        files_under(out),
        "the same names, nothing more"
    );
    for name in files_under(src) {
        let (a, b) = (src.join(&name), out.join(&name));
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{name:?}");
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert_eq!(ma.mode() & 0o777, mb.mode() & 0o777, "{name:?}");
        assert_eq!(ma.mtime(), mb.mtime(), "{name:?}");
    }
}

#[test]
fn a_tree_of_small_files_arrives_whole_with_modes_and_times_and_nothing_hidden() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = make_tree(src.path(), 20);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_same_tree(&tree, &out.path().join("tree"));
}

#[test]
fn a_small_file_in_the_way_is_refused_untouched_and_replaced_with_overwrite() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = make_tree(src.path(), 1);
    let theirs = out.path().join("tree/d0/deeper/f2");
    fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    fs::write(&theirs, b"theirs").unwrap();

    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    let log = stderr_of(&sent);
    assert!(!sent.status.success(), "{log}");
    assert!(log.contains("already exists"), "{log}");
    let _ = receiver.exit_code();
    assert_eq!(fs::read(&theirs).unwrap(), b"theirs", "left untouched");
    assert_eq!(
        files_under(out.path()).len(),
        SIZES.len(),
        "the others arrived, and nothing hidden stayed"
    );

    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_same_tree(&tree, &out.path().join("tree"));
}

#[test]
fn a_cut_tree_keeps_only_partials_of_large_files_and_reruns_to_done() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = make_tree(src.path(), 8);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let relay = Relay::start(receiver.port, Faults::cut_after(900_000));
    let cut = send(&[&tree], relay.port, KEY, &[]);
    assert_eq!(cut.status.code(), Some(3), "{}", stderr_of(&cut));
    receiver.wait_for_stderr("failed");
    for name in files_under(out.path()) {
        let name = name.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".xfer-") || name.ends_with(".partial"),
            "only partials stay hidden: {name}"
        );
        if name.ends_with(".partial") {
            assert_eq!(name, partial_name("f6", 200_000), "only of a large file");
        }
    }
    let rerun = send(&[&tree], receiver.port, KEY, &[]);
    assert!(rerun.status.success(), "{}", stderr_of(&rerun));
    assert_same_tree(&tree, &out.path().join("tree"));
    let _ = receiver.child.kill();
}

/// Small files travel packed on the sender and batched on the receiver: a file
/// that fails on the way fails alone, and the files around it arrive.
#[test]
fn a_small_file_that_grows_while_sent_fails_alone_and_its_neighbours_arrive() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    fs::create_dir(&tree).unwrap();
    for i in 0..40u64 {
        write_in(
            &tree,
            &format!("f{i:02}"),
            &pattern(100 + i as usize * 50, i),
        );
    }
    // A file of the kernel's says it is empty and then reads as more: it is packed
    // with the tree's files, as the first of them.
    let grows = Path::new("/proc/self/status");
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[grows, &tree], receiver.port, KEY, &[]);
    assert!(!sent.status.success(), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("grew while it was being sent"),
        "{}",
        stderr_of(&sent)
    );
    receiver.exit_code();
    assert!(!out.path().join("status").exists(), "the file that grew");
    assert_same_tree(&tree, &out.path().join("tree"));
}

#[test]
fn a_small_file_that_fails_its_hash_among_many_is_refused_alone() {
    let out = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = peer_sender(receiver.port, SENDER_FEATURES);
    let content = |i: u64| pattern(1000 + i as usize, i);
    let offer: Vec<serde_json::Value> = (0..50u64)
        .map(|i| json!({"path": format!("f{i:02}"), "kind": "file", "size": 1000 + i}))
        .collect();
    peer.send_offer(&[offer]).unwrap();
    peer.read_plan(50).unwrap();
    for i in 0..50u64 {
        let path = format!("f{i:02}");
        if i != 17 {
            peer.send_file(i, &path, &content(i), 0).unwrap();
            continue;
        }
        // The bytes of another file, under the hash of its own.
        peer.send_control(&json!({"type": "data", "index": i, "offset": 0}))
            .unwrap();
        let wrong = peer.data_payload(&pattern(1017, 99));
        peer.send_frame(&wrong).unwrap();
        peer.send_frame(&[]).unwrap();
        let done = peer.done_frame(i, &path, &content(i));
        peer.send_control(&done).unwrap();
    }
    peer.send_end().unwrap();
    let mut answers = std::collections::BTreeMap::new();
    loop {
        let frame = peer.read_control().unwrap();
        if kind(&frame) == "end" {
            break;
        }
        let index = frame["index"].as_u64().unwrap();
        let said = frame["code"].as_str().unwrap_or(kind(&frame)).to_string();
        answers.insert(index, said);
    }
    assert_eq!(answers.len(), 50);
    for (index, said) in answers {
        let path = out.path().join(format!("f{index:02}"));
        if index == 17 {
            assert_eq!(said, "checksum");
            assert!(!path.exists());
        } else {
            assert_eq!(said, "ok", "{index}");
            assert_eq!(fs::read(&path).unwrap(), content(index));
        }
    }
    assert_eq!(
        files_under(out.path()).len(),
        49,
        "nothing else, nothing hidden"
    );
}

#[test]
fn more_data_than_offered_amid_small_files_ends_the_session_and_keeps_only_verified_files() {
    let out = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = peer_sender(receiver.port, SENDER_FEATURES);
    let offer: Vec<serde_json::Value> = (0..10u64)
        .map(|i| json!({"path": format!("f{i}"), "kind": "file", "size": 100}))
        .collect();
    peer.send_offer(&[offer]).unwrap();
    peer.read_plan(10).unwrap();
    for i in 0..5u64 {
        peer.send_file(i, &format!("f{i}"), &pattern(100, i), 0)
            .unwrap();
    }
    peer.send_control(&json!({"type": "data", "index": 5, "offset": 0}))
        .unwrap();
    let long = peer.data_payload(&pattern(101, 5));
    peer.send_frame(&long).unwrap();
    let mut said = Vec::new();
    while let Ok(frame) = peer.read_control() {
        said.push(frame["code"].as_str().unwrap_or(kind(&frame)).to_string());
    }
    assert_eq!(
        said.last().map(String::as_str),
        Some("protocol"),
        "{said:?}"
    );
    // What verified before is kept (and acknowledged if the connection still
    // allowed it); nothing of the rest is there, not even hidden.
    assert!(said.iter().filter(|s| *s == "ok").count() <= 5, "{said:?}");
    for i in 0..5u64 {
        assert_eq!(
            fs::read(out.path().join(format!("f{i}"))).unwrap(),
            pattern(100, i)
        );
    }
    assert_eq!(files_under(out.path()).len(), 5);
}

/// `recv --serve` allowed only 256 open files (soft and hard, so it cannot raise
/// them), six senders of 400 small files each at once: every file of every tree
/// arrives. Each session used to hold up to a quarter of the limit in unnamed files
/// waiting for their group's flush, so three sessions ran the process out of
/// descriptors and most files failed "too many open files". (The budget is half the
/// limit for waiting files; each session's own descriptors (its socket, the
/// target's handles, the directories its threads hold open) come out of the other
/// half: at 128, six sessions peaked at 96 and a loaded run now and then at 128.)
#[test]
fn concurrent_trees_of_small_files_share_a_low_open_file_limit() {
    let Some(prlimit) = which("prlimit") else {
        eprintln!("SKIPPED: needs prlimit(1) to lower the open-file limit");
        return;
    };
    let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut command = std::process::Command::new(prlimit);
    command
        .args(["--nofile=256:256", env!("CARGO_BIN_EXE_xfer")])
        .args(["recv", "--listen", "127.0.0.1:0", "--serve", "--dir"])
        .arg(out.path())
        .env_remove("XFER_HASH")
        .env("XFER_KEY", KEY);
    let mut receiver = Receiver::spawn(command);
    let trees: Vec<_> = (0..6)
        .map(|t| {
            let tree = src.path().join(format!("t{t}"));
            fs::create_dir_all(&tree).unwrap();
            for f in 0..400 {
                write_in(
                    &tree,
                    &format!("f{f}"),
                    &pattern(1000 + f, (t * 1000 + f) as u64),
                );
            }
            tree
        })
        .collect();
    let port = receiver.port;
    let senders: Vec<_> = trees
        .iter()
        .cloned()
        .map(|tree| std::thread::spawn(move || send(&[&tree], port, KEY, &[])))
        .collect();
    for sender in senders {
        let output = sender.join().unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
    }
    for tree in &trees {
        let name = tree.file_name().unwrap();
        assert_same_tree(tree, &out.path().join(name));
    }
    assert!(
        !receiver.stderr().contains("open files"),
        "{}",
        receiver.stderr()
    );
    let _ = receiver.child.kill();
}

/// A receiver whose sender vanishes while files are on their way still commits
/// what arrived whole and verified, and its summary counts every file it left
/// on disk: answers it can no longer write do not stop the counting (it said
/// 1 111 received of 1 876 on disk before).
#[test]
fn a_receiver_cut_off_counts_every_file_it_left_on_disk() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("many");
    fs::create_dir(&tree).unwrap();
    for i in 0..4000 {
        write_in(&tree, &format!("{i:05}"), &pattern(4096, i));
    }
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut sender = send_paced(&tree, receiver.port, "4M");
    std::thread::sleep(Duration::from_millis(1500));
    sender.kill().unwrap();
    let _ = wait_for(&mut sender, TIMEOUT);
    assert_ne!(receiver.exit_code(), 0);
    let said = format!("{}{}", receiver.stdout(), receiver.stderr());
    let counted: usize = said
        .split("received ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no count of received files in: {said}"));
    let on_disk = files_under(out.path());
    assert!(
        on_disk.len() > 100 && on_disk.len() < 4000,
        "{}",
        on_disk.len()
    );
    assert_eq!(counted, on_disk.len(), "{said}");
    for file in on_disk {
        let i: u64 = file.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let content = fs::read(out.path().join(&file)).unwrap();
        assert_eq!(content, pattern(4096, i), "{}", file.display());
    }
}
