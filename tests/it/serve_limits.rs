//! The bounds `xfer serve` keeps per user and for itself: quotas of bytes and files
//! (up front, for streams, shared by sessions, shown by `usage`, given back by `rm`),
//! `--max-sessions`, the idle timeout, the server's memory under many uploads, the
//! length of its log lines, and a client killed mid-put.

use std::fs;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::server::*;
use crate::util::{TIMEOUT, files_under, pattern, run, stderr_of, wait_for};

/// The server's peak resident memory so far, in MiB.
fn peak_rss_mib(server: &Server) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", server.0.child.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

#[test]
fn a_put_that_does_not_fit_the_quota_is_refused_up_front() {
    let site = Site::new();
    site.users(&[("alice", "quota = 100000")]);
    let server = site.serve(&[]);
    let big = site.local("big.bin", &pattern(150_000, 1));
    let small = site.local("small.txt", b"small enough\n");
    let put = send_as(&site, "alice", &[&big, &small], &server.addr());
    expect_exit(&put, 6, "a put over the quota");
    // The refusal gives the numbers and where to look.
    for said in [
        "over the quota: needs 146.48 KiB, the home holds 0 B of 97.66 KiB",
        "`xfer ls --usage`",
    ] {
        assert!(stderr_of(&put).contains(said), "{}", stderr_of(&put));
    }
    // Nothing of the big file (not even a partial); the small one arrived.
    assert_eq!(names_in(&site.home("alice")), ["small.txt"]);
    assert_eq!(
        fs::read(site.home("alice").join("small.txt")).unwrap(),
        b"small enough\n"
    );
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(13), Some(1))
    );
}

#[test]
fn a_stream_that_crosses_the_quota_fails_and_leaves_nothing() {
    let site = Site::new();
    site.users(&[("alice", "quota = 100000")]);
    let server = site.serve(&[]);
    let mut command = as_user(
        &site,
        "alice",
        &["send", "-", &server.addr(), "--name", "stream.bin"],
    );
    let put = run_with_input(&mut command, pattern(300_000, 2));
    expect_exit(&put, 6, "a stream over the quota");
    assert!(stderr_of(&put).contains("quota"), "{}", stderr_of(&put));
    // No partial, no temporary: nothing at all.
    eventually("the server cleans up", || {
        names_in(&site.home("alice")).is_empty()
    });
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(0), Some(0))
    );
    // The quota was given back: a stream that fits arrives.
    let mut command = as_user(
        &site,
        "alice",
        &["send", "-", &server.addr(), "--name", "fits.bin"],
    );
    let put = run_with_input(&mut command, pattern(90_000, 3));
    expect_exit(&put, 0, "a stream under the quota");
    assert_eq!(
        fs::read(site.home("alice").join("fits.bin")).unwrap(),
        pattern(90_000, 3)
    );
}

#[test]
fn two_sessions_of_one_user_share_one_quota() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"1 MiB\"")]);
    let server = site.serve(&[]);
    let files: Vec<PathBuf> = (0..2)
        .map(|i| site.local(&format!("part{i}.bin"), &pattern(700_000, 10 + i)))
        .collect();
    // Slowed down so that both sessions hold their reservations at once.
    let puts: Vec<_> = files
        .iter()
        .map(|file| {
            let mut command = as_user(
                &site,
                "alice",
                &[
                    "send",
                    file.to_str().unwrap(),
                    &server.addr(),
                    "--limit-rate",
                    "1M",
                ],
            );
            std::thread::spawn(move || run(&mut command))
        })
        .collect();
    let outputs: Vec<Output> = puts.into_iter().map(|t| t.join().unwrap()).collect();
    let mut codes: Vec<i32> = outputs.iter().map(code).collect();
    codes.sort();
    assert_eq!(codes, [0, 6], "{outputs:?}");
    let refused = outputs.iter().find(|o| code(o) == 6).unwrap();
    assert!(
        stderr_of(refused).contains("quota"),
        "{}",
        stderr_of(refused)
    );
    let home = names_in(&site.home("alice"));
    assert_eq!(home.len(), 1, "{home:?}");
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(700_000), Some(1))
    );
}

#[test]
fn usage_shows_bytes_and_entries_against_the_quota() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"1 MiB\"\nmax_files = 10"), ("bob", "")]);
    let server = site.serve(&[]);
    let a = site.local("a.bin", &pattern(1000, 1));
    // With the directory `d` (4096 bytes), half of 1 MiB.
    let b = site.local("d/b.bin", &pattern(519_192, 2));
    let put = send_as(&site, "alice", &[&a, b.parent().unwrap()], &server.addr());
    expect_exit(&put, 0, "alice's put");
    let usage = client(&site, "alice", &["ls", "--usage", &server.addr()]);
    expect_exit(&usage, 0, "ls --usage");
    assert_eq!(
        stdout_of(&usage),
        "used 524288 bytes of 1048576 bytes (50% used), 3 entries of 10 (30% used)\n"
    );
    let human = client(&site, "alice", &["ls", "--usage", "-h", &server.addr()]);
    assert_eq!(
        stdout_of(&human),
        "used 512.00 KiB of 1.00 MiB (50% used), 3 entries of 10 (30% used)\n"
    );
    let json = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let json: Value = serde_json::from_str(stdout_of(&json).trim()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"bytes": 524288, "files": 3, "quota_bytes": 1048576, "quota_files": 10})
    );
    // Without a quota.
    let usage = client(&site, "bob", &["ls", "--usage", &server.addr()]);
    assert_eq!(stdout_of(&usage), "used 0 bytes (no quota), 0 entries\n");
    let json = client(&site, "bob", &["ls", "--usage", "--json", &server.addr()]);
    let json: Value = serde_json::from_str(stdout_of(&json).trim()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"bytes": 0, "files": 0, "quota_bytes": null, "quota_files": null})
    );
}

#[test]
fn removing_a_file_gives_its_room_back_to_the_quota() {
    let site = Site::new();
    site.users(&[("alice", "quota = 100000\nmax_files = 2")]);
    let server = site.serve(&[]);
    let first = site.local("first.bin", &pattern(80_000, 1));
    let put = send_as(&site, "alice", &[&first], &server.addr());
    expect_exit(&put, 0, "the first put");
    let rm = client(&site, "alice", &["rm", &server.at("first.bin")]);
    expect_exit(&rm, 0, "rm");
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(0), Some(0)),
        "usage after removing the only file"
    );
    // The room is really free again: 80 000 + 80 000 > 100 000 only if rm kept counting.
    let second = site.local("second.bin", &pattern(80_000, 2));
    let put = send_as(&site, "alice", &[&second], &server.addr());
    expect_exit(&put, 0, "a put that fits once the first file is gone");
}

#[test]
fn a_put_past_max_files_is_refused_and_directories_count_too() {
    let site = Site::new();
    site.users(&[("alice", "max_files = 3")]);
    let server = site.serve(&[]);
    let dir = site.path().join("local/three");
    for name in ["a", "b", "c"] {
        write(&dir.join(name), name.as_bytes());
    }
    let put = send_as(&site, "alice", &[&dir], &server.addr());
    expect_exit(
        &put,
        6,
        "a directory and three files for a quota of three entries",
    );
    assert!(stderr_of(&put).contains("quota"), "{}", stderr_of(&put));
    assert_eq!(files_under(&site.home("alice")).len(), 2);
    let usage = client(&site, "alice", &["ls", "--usage", &server.addr()]);
    assert!(
        stdout_of(&usage).ends_with(", 3 entries of 3 (100% used)\n"),
        "{}",
        stdout_of(&usage)
    );
    // A directory is an entry: mkdir is refused as a file would be, until one goes.
    let mkdir = client(&site, "alice", &["mkdir", &server.at("more")]);
    expect_refused(&mkdir, "quota", "a directory past max_files");
    assert!(!site.home("alice").join("more").exists());
    expect_exit(
        &client(&site, "alice", &["rm", &server.at("three/b")]),
        0,
        "rm",
    );
    expect_exit(
        &client(&site, "alice", &["mkdir", &server.at("more")]),
        0,
        "mkdir once a file went",
    );
    let d = site.local("d.txt", b"d");
    let put = send_as(&site, "alice", &[&d], &server.at("more"));
    expect_refused(&put, "quota", "a file past max_files");
}

#[test]
fn many_uploads_at_once_keep_the_servers_memory_small() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&[]);
    // One upload first: the later ones then get memory the allocator recycles, and
    // zeroes in full (buffers sized for the largest possible frame once made eight
    // uploads cost 170 MiB, 32 clients 1 GiB).
    let first = site.local("first.bin", &pattern(4 << 20, 0));
    let put = send_as(&site, "alice", &[&first], &server.addr());
    expect_exit(&put, 0, "the first upload");
    let mut uploads: Vec<_> = (1..=8u64)
        .map(|i| {
            let file = site.local(&format!("up{i}.bin"), &pattern(6 << 20, i));
            let user = ["alice", "bob"][i as usize % 2];
            // Slowed down, so that all eight are in flight together.
            let args = [
                "send",
                file.to_str().unwrap(),
                &server.addr(),
                "--limit-rate",
                "4M",
            ];
            as_user(&site, user, &args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for upload in &mut uploads {
        assert!(wait_for(upload, TIMEOUT).success(), "an upload failed");
    }
    let peak = peak_rss_mib(&server);
    assert!(peak < 100, "eight uploads took the server to {peak} MiB");
}

#[test]
fn max_sessions_turns_away_a_users_extra_connections_as_busy() {
    let site = Site::new();
    site.users(&[("alice", "max_sessions = 1"), ("bob", "")]);
    let server = site.serve(&[]);
    let mut held = server.login("alice");
    let busy = client(&site, "alice", &["ls", &server.addr()]);
    expect_exit(&busy, 3, "alice's second connection");
    assert!(stderr_of(&busy).contains("busy"), "{}", stderr_of(&busy));
    // Someone else is not affected.
    expect_exit(&client(&site, "bob", &["ls", &server.addr()]), 0, "bob");
    // Once the first is gone, alice may come back.
    held.bye().expect("closed");
    drop(held);
    eventually("alice's slot is free again", || {
        code(&client(&site, "alice", &["ls", &server.addr()])) == 0
    });
}

/// Finding 7 of the attack on `serve` (a design question): a user without
/// `max_sessions` could hold every one of the server's `--max-conns` connections
/// with idle logins, and everyone else was turned away `busy` until the idle
/// timeout. Now such a user may hold half of them (rounded up): with `--max-conns
/// 4`, bob holds 2, his third is `busy` (exit 3), and alice still logs in.
#[test]
fn one_user_cannot_hold_every_connection_slot() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&["--max-conns", "4"]);
    let held: Vec<_> = (0..2).map(|_| server.login("bob")).collect();
    let third = client(&site, "bob", &["ls", &server.addr()]);
    expect_exit(&third, 3, "bob's third connection");
    assert!(
        stderr_of(&third).contains("limit of 2 connections"),
        "{}",
        stderr_of(&third)
    );
    let alice = client(&site, "alice", &["ls", &server.addr()]);
    expect_exit(&alice, 0, "alice while bob holds 2 of 4 connections");
    // The users file may say otherwise: max_sessions is anything the admin sets.
    site.users(&[("alice", ""), ("bob", "max_sessions = 3")]);
    server.reload(1);
    expect_exit(
        &client(&site, "bob", &["ls", &server.addr()]),
        0,
        "bob's third, allowed",
    );
    drop(held);
}

/// Finding 5 of the attack on `serve`: the server logged a request with every
/// path it names, whole: one `get` of 200 000 names was a 1.5 MB log line, and a
/// path refused for being too long was logged twice over, in full. Now a line
/// names the first few paths, each cut short, then how many more; and so does a
/// `--json` event.
#[test]
fn a_request_naming_many_paths_makes_a_bounded_log_line() {
    const BOUND: usize = 4 << 10; // bytes
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    let long = "x".repeat(5000);
    let many: Vec<String> = (0..200_000).map(|i| format!("f{i}")).collect();
    for json in [false, true] {
        let server = site.serve(if json { &["--json"] } else { &[] });
        let mut peer = server.login("alice");
        peer.send_control(&json!({"type": "get", "paths": many}))
            .expect("the request");
        let answer = peer.read_control().expect("an answer");
        assert_eq!(answer["code"], "not_found", "{answer}");
        let refused = peer.remove(&long).expect_err("a path too long");
        assert!(refused.to_string().contains("bad_path"), "{refused}");
        peer.bye().expect("closed");
        let lines: Vec<String> = if json {
            let events = server.json_events();
            events.iter().map(Value::to_string).collect()
        } else {
            server.wait_for_log("alice remove", 1);
            server.log().lines().map(str::to_string).collect()
        };
        let get = lines
            .iter()
            .find(|l| l.contains("get f0 f1 f2 and 199997 more"));
        let get = get.unwrap_or_else(|| panic!("json {json}: no get named: {lines:?}"));
        assert!(
            get.len() < BOUND,
            "json {json}: a get logged in {} bytes",
            get.len()
        );
        let remove = lines.iter().find(|l| l.contains("remove xxxx"));
        let remove = remove.unwrap_or_else(|| panic!("json {json}: no remove: {lines:?}"));
        assert!(remove.contains('…'), "json {json}: {remove}");
        assert!(
            remove.len() < BOUND,
            "json {json}: a remove logged in {} bytes",
            remove.len()
        );
    }
}

#[test]
fn an_idle_connection_is_closed_with_timeout() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&["--idle-timeout", "1"]);
    let mut peer = server.login("alice");
    peer.list("").expect("a listing");
    let start = Instant::now();
    let frame = peer.read_control().expect("an error frame");
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("error"), Some("timeout")),
        "{frame}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(peer.expect_close().is_ok());
}

#[test]
fn a_client_killed_mid_put_leaves_the_server_serving_and_no_file() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"100 MiB\""), ("bob", "")]);
    let mut server = site.serve(&[]);
    let home = site.home("alice");
    let big = site.local("big.bin", &pattern(8 << 20, 3));
    let mut command = as_user(
        &site,
        "alice",
        &[
            "send",
            big.to_str().unwrap(),
            &server.addr(),
            "--limit-rate",
            "1M",
        ],
    );
    let mut sender = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    eventually("some of the file has arrived", || {
        fs::read_dir(&home)
            .unwrap()
            .any(|e| e.unwrap().metadata().unwrap().len() > 0)
    });
    sender.kill().expect("kill");
    let _ = sender.wait();
    server.wait_for_log("alice put .: received 0 files", 1);
    assert!(server.is_running());

    // Others are served, and so is alice herself.
    let small = site.local("small.txt", b"still served\n");
    let put = send_as(&site, "bob", &[&small], &server.addr());
    expect_exit(&put, 0, "bob's put after the cut");
    assert_eq!(
        fs::read(site.home("bob").join("small.txt")).unwrap(),
        b"still served\n"
    );
    let ls = client(&site, "alice", &["ls", &server.addr()]);
    expect_exit(&ls, 0, "alice's ls after the cut");
    assert!(
        lines(&ls).is_empty(),
        "the partial file is not listed: {:?}",
        lines(&ls)
    );
    assert!(!home.join("big.bin").exists(), "never under its final name");
    for name in names_in(&home) {
        assert!(
            name.starts_with(".xfer-"),
            "only xfer's own partial files: {name}"
        );
    }
    // Sent again, it arrives whole.
    let again = send_as(&site, "alice", &[&big], &server.addr());
    expect_exit(&again, 0, "the rerun");
    assert!(fs::read(home.join("big.bin")).unwrap() == pattern(8 << 20, 3));
    assert_eq!(names_in(&home), ["big.bin"]);
    // And the quota counts it once.
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(8 << 20), Some(1))
    );
}
