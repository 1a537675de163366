//! End-to-end: standard input and output, tar pipelines, directory trees with their
//! metadata, JSON events, broken pipes, and many small files over a slow link.

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::relay::{Faults, Relay};
use util::*;

/// `xfer send - 127.0.0.1:PORT` fed `input` on stdin.
fn send_stdin(port: u16, input: Vec<u8>, extra: &[&str]) -> std::process::Output {
    let mut child = xfer()
        .args(["send", "-", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("XFER_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, &input);
    });
    let status = wait_for(&mut child, TIMEOUT);
    feeder.join().unwrap();
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

#[test]
fn standard_input_of_any_length_arrives_byte_exact() {
    for (len, name) in [(0, None), (24 * 1024 * 1024 + 3, Some("stream.bin"))] {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let content = pattern(len, 7);
        let extra: Vec<&str> = name.map(|n| vec!["--name", n]).unwrap_or_default();
        let sent = send_stdin(receiver.port, content.clone(), &extra);
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
        let landed = out.path().join(name.unwrap_or("stdin"));
        assert_eq!(std::fs::read(landed).unwrap(), content, "{len} bytes");
    }
}

/// A tree with nested and empty directories, modes 755 and 600, an old mtime and a
/// symbolic link.
fn make_tree(root: &Path) -> PathBuf {
    let tree = root.join("tree");
    std::fs::create_dir_all(tree.join("nested/deeper")).unwrap();
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    std::fs::write(tree.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        tree.join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(tree.join("nested/secret"), b"private").unwrap();
    std::fs::set_permissions(
        tree.join("nested/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(tree.join("nested/deeper/big.bin"), pattern(3 << 20, 9)).unwrap();
    std::os::unix::fs::symlink("script.sh", tree.join("link")).unwrap();
    let old = std::fs::File::open(tree.join("nested/deeper/big.bin")).unwrap();
    old.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    // Directory times last, as a receiver must.
    let nested = std::fs::File::open(tree.join("nested")).unwrap();
    nested
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(999_999_999))
        .unwrap();
    tree
}

#[test]
fn a_tree_arrives_with_modes_times_and_empty_dirs_and_links_are_skipped() {
    let src = tempfile::tempdir().unwrap();
    let tree = make_tree(src.path());
    let single = src.path().join("single.txt");
    std::fs::write(&single, b"beside the tree").unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree, &single], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("skipping symbolic link"),
        "{}",
        stderr_of(&sent)
    );
    assert!(
        stderr_of(&sent).contains("tree/link"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());

    let got = out.path().join("tree");
    assert_eq!(
        files_under(&got),
        ["nested/deeper/big.bin", "nested/secret", "script.sh"].map(PathBuf::from)
    );
    assert!(got.join("empty").is_dir());
    assert!(!got.join("link").exists() && std::fs::symlink_metadata(got.join("link")).is_err());
    let mode = |p: &str| std::fs::metadata(got.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("script.sh"), 0o755);
    assert_eq!(mode("nested/secret"), 0o600);
    let mtime = |p: &str| std::fs::metadata(got.join(p)).unwrap().mtime();
    assert_eq!(mtime("nested/deeper/big.bin"), 1_000_000_000);
    assert_eq!(
        mtime("nested"),
        999_999_999,
        "directory time set after its contents"
    );
    assert_eq!(
        std::fs::read(got.join("nested/deeper/big.bin")).unwrap(),
        pattern(3 << 20, 9)
    );
    assert_eq!(
        std::fs::read(out.path().join("single.txt")).unwrap(),
        b"beside the tree"
    );
}

#[test]
fn follow_symlinks_sends_what_links_point_at() {
    let src = tempfile::tempdir().unwrap();
    let tree = make_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &["--follow-symlinks"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    let link = out.path().join("tree/link");
    assert!(
        !std::fs::symlink_metadata(&link).unwrap().is_symlink(),
        "never creates links"
    );
    assert_eq!(std::fs::read(link).unwrap(), b"#!/bin/sh\necho hi\n");
}

/// Runs a shell pipeline with `$XFER` set, bounded in time.
fn shell(script: &str, dir: &Path) -> std::process::Output {
    let mut command = std::process::Command::new("bash");
    command
        .args(["-c", script])
        .current_dir(dir)
        .env("XFER", env!("CARGO_BIN_EXE_xfer"))
        .env("XFER_KEY", KEY);
    run(&mut command)
}

#[test]
fn a_tar_pipeline_through_xfer_rebuilds_the_tree() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("bash");
    command
        .args(["-c", "\"$XFER\" recv --listen 127.0.0.1:0 --stdout | tar x -C \"$OUT\"; echo \"status ${PIPESTATUS[*]}\" >&2"])
        .env("XFER", env!("CARGO_BIN_EXE_xfer"))
        .env("XFER_KEY", KEY)
        .env("OUT", out.path());
    let mut receiver = Receiver::spawn(command);
    let sent = shell(
        &format!(
            "set -o pipefail; tar c tree | \"$XFER\" send - 127.0.0.1:{} --name tree.tar",
            receiver.port
        ),
        src.path(),
    );
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    assert!(
        receiver.stderr().contains("status 0 0"),
        "{}",
        receiver.stderr()
    );
    let diff = run(std::process::Command::new("diff")
        .arg("-r")
        .arg(src.path().join("tree"))
        .arg(out.path().join("tree")));
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

#[test]
fn stdout_mode_refuses_an_offer_of_two_files() {
    let src = tempfile::tempdir().unwrap();
    let (a, b) = (src.path().join("a"), src.path().join("b"));
    std::fs::write(&a, b"a").unwrap();
    std::fs::write(&b, b"b").unwrap();
    let mut command = xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--stdout"])
        .env("XFER_KEY", KEY);
    let mut receiver = Receiver::spawn(command);
    let sent = send(&[&a, &b], receiver.port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("takes exactly one file"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(receiver.exit_code(), 6);
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(receiver.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(stdout.is_empty(), "nothing on stdout");
}

#[test]
fn a_broken_stdout_pipe_ends_both_sides_cleanly() {
    let out = tempfile::tempdir().unwrap();
    let head = out.path().join("head");
    let mut command = std::process::Command::new("bash");
    command
        .args(["-c", "\"$XFER\" recv --listen 127.0.0.1:0 --stdout | head -c 10 > \"$HEAD\"; echo \"status ${PIPESTATUS[*]}\" >&2"])
        .env("XFER", env!("CARGO_BIN_EXE_xfer"))
        .env("XFER_KEY", KEY)
        .env("HEAD", &head)
        .env("RUST_BACKTRACE", "1");
    let mut receiver = Receiver::spawn(command);
    let sent = send_stdin(receiver.port, pattern(64 << 20, 11), &[]);
    assert!(
        !sent.status.success(),
        "the sender learns it did not complete"
    );
    assert_eq!(sent.status.code(), Some(7), "{}", stderr_of(&sent));
    receiver.exit_code();
    let told = receiver.stderr();
    assert!(told.contains("status 7 0"), "{told}");
    assert!(told.contains("standard output"), "{told}");
    assert!(
        !told.contains("panicked") && !stderr_of(&sent).contains("panicked"),
        "{told}"
    );
    assert_eq!(std::fs::read(&head).unwrap(), pattern(10, 11));
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn json_events_are_one_object_per_line_on_both_sides() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), b"hello, world\n").unwrap();
    std::fs::write(src.path().join("b.txt"), b"new").unwrap();
    std::fs::write(out.path().join("b.txt"), b"old").unwrap();
    // Same size as the new b.txt: with the same mtime too, version 2 would answer
    // `same` (already delivered); another mtime makes it an existing file that differs.
    std::fs::File::options()
        .write(true)
        .open(out.path().join("b.txt"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--json"]);
    let sent = send(
        &[&src.path().join("a.txt"), &src.path().join("b.txt")],
        receiver.port,
        KEY,
        &["--json"],
    );
    assert_eq!(sent.status.code(), Some(6));
    assert_eq!(receiver.exit_code(), 6);

    let events = json_lines(&sent.stdout);
    let a = events
        .iter()
        .find(|e| e["event"] == "file" && e["path"] == "a.txt")
        .unwrap();
    assert_eq!(
        (a["status"].as_str(), a["size"].as_u64()),
        (Some("ok"), Some(13))
    );
    assert_eq!(a["md5"], "22c3683b094136c3398391ae71b20f04");
    // Version 2 names the hash, and gives its digest whatever it is.
    assert_eq!(
        (a["hash"].as_str(), a["digest"].as_str()),
        (Some("md5"), Some("22c3683b094136c3398391ae71b20f04"))
    );
    let b = events
        .iter()
        .find(|e| e["event"] == "file" && e["path"] == "b.txt")
        .unwrap();
    assert_eq!(
        (b["status"].as_str(), b["code"].as_str()),
        (Some("failed"), Some("exists"))
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], false);
    assert_eq!(
        (summary["files"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(summary["bytes"], 13);
    assert!(summary["seconds"].as_f64().is_some() && summary["bytes_per_sec"].as_u64().is_some());
    assert_eq!(summary["exit_code"], 6);
    assert_eq!(
        (summary["same"].as_u64(), summary["resumed"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (summary["hash"].as_str(), summary["encrypted"].as_bool()),
        (Some("md5"), Some(true))
    );

    let mut stdout = Vec::new();
    std::io::Read::read_to_end(receiver.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let events = json_lines(&stdout);
    assert_eq!(events[0]["event"], "listening");
    assert_eq!(events[0]["address"], format!("127.0.0.1:{}", receiver.port));
    assert_eq!(events.last().unwrap()["event"], "summary");
    assert_eq!(events.iter().filter(|e| e["event"] == "file").count(), 2);
}

#[test]
fn plain_output_has_no_bar_and_no_carriage_returns() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), pattern(1 << 20, 5)).unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&src.path().join("f")], receiver.port, KEY, &[]);
    assert!(sent.status.success());
    assert_eq!(receiver.exit_code(), 0);
    for text in [stderr_of(&sent), receiver.stderr()] {
        assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
    }
    assert!(sent.stdout.is_empty(), "stdout stays clean");
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(xfer().args(["completions", shell]));
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("follow-symlinks"),
            "{shell}"
        );
    }
    let man = run(xfer().arg("man"));
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH xfer"));
}

#[test]
fn a_thousand_small_files_over_a_slow_link_cost_no_round_trip_each() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("many");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..1000 {
        std::fs::write(tree.join(format!("{i:04}")), pattern(100 + i, i as u64)).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    // 10 ms each way: a 20 ms round trip.
    let relay = Relay::start(
        receiver.port,
        Faults {
            delay: Duration::from_millis(10),
            ..Faults::default()
        },
    );
    let started = Instant::now();
    let sent = send(&[&tree], relay.port, KEY, &["--quiet"]);
    let elapsed = started.elapsed();
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    assert_eq!(files_under(&out.path().join("many")).len(), 1000);
    eprintln!("1000 files over a 20 ms round trip: {elapsed:?}");
    // One round trip per file would be 1000 x 20 ms = 20 s; the protocol needs a
    // handful in all. The bound is loose on purpose: it only catches per-file trips.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}
