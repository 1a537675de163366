//! `xfer recv -i`: a plain receiver lists what it changes, one line per entry on
//! stdout (new, replaced, delta, new dir, new link, new hard link, deleted), the same
//! lines the sender's `-i` prints, whichever side connects and while serving;
//! `change` events with `--json`; nothing without `-i`.
//!
//! Decided: a receiver lists `new dir` for each directory it creates, in every real
//! run (so `get -i` does too); a serving receiver prints its lines as they come, one
//! whole line at a time (`--json` says which peer each concerns).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::mirror::settle;
use crate::util::server::code;
use crate::util::tree::set_mtime;
use crate::util::{KEY, Receiver, events_in, pattern, run, send, stderr_of, stdout_events, xfer};

/// The size of the file that travels as a delta (above `MIN_DELTA_SIZE`).
const BIG: usize = 256 << 10;

/// `src/tree` (a, c, big, sub/b, link -> a, h a hard link to a) and `dst/tree`
/// holding an older c and big, and `old`, which a mirror deletes, itself with
/// another time (`attrs`).
fn trees(root: &Path) {
    let src = root.join("src/tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a"), b"a\n").unwrap();
    fs::write(src.join("c"), b"new c\n").unwrap();
    fs::write(src.join("sub/b"), b"b\n").unwrap();
    let old_big = pattern(BIG, 7);
    let mut big = old_big.clone();
    big[BIG / 2..BIG / 2 + 100].copy_from_slice(&pattern(100, 8));
    fs::write(src.join("big"), &big).unwrap();
    std::os::unix::fs::symlink("a", src.join("link")).unwrap();
    fs::hard_link(src.join("a"), src.join("h")).unwrap();
    let dst = root.join("dst/tree");
    fs::create_dir_all(&dst).unwrap();
    fs::write(dst.join("c"), b"old c, longer\n").unwrap();
    fs::write(dst.join("big"), &old_big).unwrap();
    // Same size: another time, or the quick check would call it the same file.
    set_mtime(&dst.join("big"), 1_000_000_000, 0);
    fs::write(dst.join("old"), b"gone after a mirror\n").unwrap();
    set_mtime(&dst, 1_000_000_000, 0);
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The trees of [`trees`] mirrored with `-i` on both sides, which agree: what the
/// receiver listed.
fn mirrored_itemized(root: &Path) -> String {
    trees(root);
    settle();
    let mut receiver = Receiver::start(&root.join("dst"), Some(KEY), &["--overwrite", "-i"]);
    let sent = send(
        &[&root.join("src/tree")],
        receiver.port,
        KEY,
        &["--delete", "-i"],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let listed = receiver.stdout();
    let sender_listed = String::from_utf8_lossy(&sent.stdout);
    assert_eq!(sorted_lines(&listed), sorted_lines(&sender_listed));
    listed
}

#[test]
fn a_receiver_with_itemize_lists_what_it_changes_as_the_sender_does() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let listed = mirrored_itemized(root);
    assert_eq!(
        sorted_lines(&listed),
        [
            // The tree there already, its time made the sender's.
            "attrs    tree/",
            "deleted  tree/old",
            "delta    tree/big",
            "new      tree/a",
            "new      tree/sub/b",
            "new dir  tree/sub/",
            "new hard link tree/h",
            "new link tree/link",
            "replaced tree/c",
        ],
        "{listed}"
    );
    let (src, dst) = (root.join("src/tree"), root.join("dst/tree"));
    for name in ["a", "c", "big", "sub/b"] {
        assert_eq!(
            fs::read(dst.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap()
        );
    }
    assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("a"));
    let (a, h) = (dst.join("a"), dst.join("h"));
    assert_eq!(
        fs::metadata(a).unwrap().ino(),
        fs::metadata(h).unwrap().ino()
    );
    assert!(!dst.join("old").exists());
}

#[test]
fn a_receiver_lists_nothing_when_nothing_changed_or_without_itemize() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    mirrored_itemized(root);
    let (src, dst) = (root.join("src/tree"), root.join("dst/tree"));
    // Nothing changed: nothing listed; without -i nothing on stdout at all.
    for flags in [&["-i"][..], &[]] {
        let mut receiver = Receiver::start(&root.join("dst"), Some(KEY), flags);
        let sent = send(&[&src], receiver.port, KEY, &[]);
        assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
        assert_eq!(receiver.stdout(), "");
    }
    fs::write(src.join("a"), b"a, again\n").unwrap();
    let mut receiver = Receiver::start(&root.join("dst"), Some(KEY), &["--overwrite"]);
    let sent = send(&[&src], receiver.port, KEY, &[]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(receiver.stdout(), "", "no -i, no lines");
    assert_eq!(fs::read(dst.join("a")).unwrap(), b"a, again\n");
}

#[test]
fn a_serving_receiver_lists_the_changes_of_every_session() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    let mut receiver = Receiver::start(
        dst.path(),
        Some(KEY),
        &["--serve", "--overwrite", "--itemize"],
    );
    fs::write(&file, b"first\n").unwrap();
    let sent = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    fs::write(&file, b"second, longer\n").unwrap();
    let sent = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert!(receiver.is_running(), "{}", receiver.stderr());
    assert_eq!(receiver.stdout(), "new      f\nreplaced f\n");
    assert_eq!(fs::read(dst.path().join("f")).unwrap(), b"second, longer\n");

    // With --json each change is an event that says which peer it concerns.
    let dst = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--serve", "-i", "--json"]);
    let sent = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    let events = events_in(&receiver.stdout());
    let change = events
        .iter()
        .find(|event| event["event"] == "change")
        .unwrap_or_else(|| panic!("no change event: {events:?}"));
    assert_eq!(
        (&change["change"], &change["path"]),
        (&"new".into(), &"f".into())
    );
    let peer = change["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "{change}");
    assert_eq!(fs::read(dst.path().join("f")).unwrap(), b"second, longer\n");
}

#[test]
fn a_receiver_connecting_to_a_listening_sender_itemizes_in_json() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/f"), b"f\n").unwrap();
    let mut command = xfer();
    command
        .args(["send", "--listen", "127.0.0.1:0"])
        .arg(src.path().join("d"))
        .env("XFER_KEY", KEY);
    let mut sender = Receiver::spawn(command);
    let received = run(xfer()
        .args([
            "recv",
            &format!("127.0.0.1:{}", sender.port),
            "-i",
            "--json",
        ])
        .arg("--dir")
        .arg(dst.path())
        .env("XFER_KEY", KEY));
    assert_eq!(code(&received), 0, "{}", stderr_of(&received));
    assert_eq!(sender.exit_code(), 0, "{}", sender.stderr());
    let changes: Vec<(String, String)> = stdout_events(&received)
        .iter()
        .filter(|event| event["event"] == "change")
        .map(|event| {
            assert_eq!(event["dry_run"], false, "{event}");
            let word = event["change"].as_str().unwrap().to_string();
            (word, event["path"].as_str().unwrap().to_string())
        })
        .collect();
    let expected = [("new dir", "d"), ("new", "d/f")].map(|(a, b)| (a.into(), b.into()));
    assert_eq!(changes, expected);
    assert_eq!(fs::read(dst.path().join("d/f")).unwrap(), b"f\n");
}

#[test]
fn itemize_with_stdout_is_refused_before_listening() {
    let out = run(xfer().args(["recv", "--listen", "127.0.0.1:0", "--stdout", "-i"]));
    assert_eq!(code(&out), 2, "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("--stdout") && err.contains("--itemize"),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}
