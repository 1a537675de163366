//! What a cut leaves behind and how a rerun continues: the partial file under its
//! hidden name, only the rest sent again once the prefix verifies, a changed source
//! or `--no-resume` starting over, SIGINT keeping the partial, multi-file reruns,
//! read-only sources for an unprivileged receiver, and downloads from `xfer serve`
//! resumed where they stopped. Nothing is ever kept under the final name unverified.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::relay::{Faults, Relay};
use crate::util::server::*;
use crate::util::*;

/// A relay for one connection to 127.0.0.1:`target` that forwards everything from
/// the client but only the first `limit` bytes from the server, then cuts both
/// sides (the relay of `util::relay` cuts the other direction only).
fn relay_cutting_downloads(target: u16, limit: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let server = TcpStream::connect(("127.0.0.1", target)).expect("connect");
        let (mut from_client, mut to_server) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_client, &mut to_server);
            let _ = to_server.shutdown(Shutdown::Write);
        });
        let (mut from_server, mut to_client) = (server, client);
        let mut left = limit;
        let mut buf = vec![0; 64 << 10];
        while left > 0 {
            let n = match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n.min(left as usize),
            };
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = to_client.shutdown(Shutdown::Both);
        let _ = from_server.shutdown(Shutdown::Both);
    });
    port
}

/// `xfer get big.bin` through a relay that cuts the download after 4 MiB: exit 3,
/// nothing under the final name, partial data kept.
fn cut_download(site: &Site, server: &Server, dl: &Path) {
    let relay = relay_cutting_downloads(server.port(), 4 << 20);
    let cut = client(
        site,
        "alice",
        &[
            "get",
            &format!("127.0.0.1:{relay}:big.bin"),
            dl.to_str().unwrap(),
        ],
    );
    expect_exit(&cut, 3, "a download cut by the network");
    assert!(!dl.join("big.bin").exists(), "nothing under the final name");
    let kept: u64 = fs::read_dir(dl)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(kept > 0, "partial data kept: {:?}", names_in(dl));
}

/// Sends `file` through a relay with `faults`; returns the exit code and the bytes the
/// relay forwarded from sender to receiver. Starts a fresh one-shot receiver each time,
/// so a resume also survives the receiver's restart.
fn send_through(file: &Path, out: &Path, faults: Faults) -> (i32, u64) {
    let mut receiver = Receiver::start(out, Some(KEY), &[]);
    let relay = Relay::start(receiver.port, faults);
    let sent = send(&[file], relay.port, KEY, &[]);
    let code = sent.status.code().unwrap();
    let receiver_code = receiver.exit_code();
    assert_eq!(
        code,
        receiver_code,
        "{} / {}",
        stderr_of(&sent),
        receiver.stderr()
    );
    (code, relay.forwarded())
}

#[test]
fn a_read_only_file_cut_halfway_resumes_for_an_unprivileged_receiver() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::Builder::new()
        .prefix("xfer-ro-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        out.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let content = pattern(8 << 20, 11);
    let file = write_in(src.path(), "readonly.bin", &content);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let recv_command = || {
        let mut command = xfer();
        command
            .args(["recv", "--listen", "127.0.0.1:0", "--dir"])
            .arg(out.path())
            .env("XFER_KEY", KEY);
        command
    };
    let Some(first) = as_nobody(recv_command()) else {
        eprintln!("SKIPPED: needs root and setpriv to run the receiver unprivileged");
        return;
    };
    let mut receiver = Receiver::spawn(first);
    let relay = Relay::start(receiver.port, Faults::cut_after(3 << 20));
    let cut = send(&[&file], relay.port, KEY, &[]);
    assert_ne!(cut.status.code(), Some(0));
    let _ = receiver.exit_code();
    let mut again = Receiver::spawn(as_nobody(recv_command()).unwrap());
    let resumed = send(&[&file], again.port, KEY, &[]);
    let log = stderr_of(&resumed);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("1 resumed"), "{log}");
    assert_eq!(again.exit_code(), 0, "{}", again.stderr());
    let landed = out.path().join("readonly.bin");
    assert_eq!(std::fs::read(&landed).unwrap(), content);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&landed).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o444);
}

#[test]
fn a_rerun_of_a_cut_multi_file_send_finishes_the_job() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = src.path().join("batch");
    std::fs::create_dir(&tree).unwrap();
    write_in(&tree, "1.bin", &pattern(1 << 20, 1));
    write_in(&tree, "2.bin", &pattern(1 << 20, 2));
    write_in(&tree, "3.bin", &pattern(6 << 20, 3));
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let relay = Relay::start(receiver.port, Faults::cut_after(4 << 20));
    let cut = send(&[&tree], relay.port, KEY, &[]);
    assert_eq!(cut.status.code(), Some(3), "{}", stderr_of(&cut));
    // Until the receiver has seen the cut, its session still holds the paths (a
    // rerun then would be told busy: try again later).
    receiver.wait_for_stderr("failed");
    let rerun = send(&[&tree], receiver.port, KEY, &[]);
    let log = stderr_of(&rerun);
    assert!(rerun.status.success(), "{log}");
    assert!(
        log.contains("2 already there (same size and time), 1 resumed ("),
        "{log}"
    );
    for (name, seed, len) in [
        ("1.bin", 1, 1 << 20),
        ("2.bin", 2, 1 << 20),
        ("3.bin", 3, 6 << 20),
    ] {
        assert_eq!(
            std::fs::read(out.path().join("batch").join(name)).unwrap(),
            pattern(len, seed)
        );
    }
    let _ = receiver.child.kill();
}

#[test]
fn a_cut_transfer_resumes_with_only_the_rest() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = 20 << 20;
    let file = src.path().join("resume.bin");
    std::fs::write(&file, pattern(size, 42)).unwrap();
    let cut_at = 7 << 20;

    let (code, forwarded) = send_through(&file, out.path(), Faults::cut_after(cut_at));
    assert_eq!(code, 3);
    assert_eq!(forwarded, cut_at);
    assert!(
        !out.path().join("resume.bin").exists(),
        "nothing under the final name"
    );

    let (code, forwarded) = send_through(&file, out.path(), Faults::default());
    assert_eq!(code, 0);
    let rest = (size as u64) - cut_at;
    eprintln!("resumed run moved {forwarded} bytes for the {rest} bytes left");
    // The receiver writes only whole data frames (1 MiB from xfer's sender): the
    // frame in flight at the cut is lost and sent again.
    assert!(
        forwarded >= rest && forwarded < rest + (1 << 20) + (64 << 10),
        "moved {forwarded}, {rest} were left"
    );
    assert_eq!(
        std::fs::read(out.path().join("resume.bin")).unwrap(),
        pattern(size, 42)
    );
    assert_eq!(
        files_under(out.path()).len(),
        1,
        "the partial became the file"
    );
}

#[test]
fn a_source_changed_between_runs_restarts_from_zero_and_verifies() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = 6 << 20;
    let file = src.path().join("changing.bin");
    std::fs::write(&file, pattern(size, 1)).unwrap();
    let (code, _) = send_through(&file, out.path(), Faults::cut_after(2 << 20));
    assert_eq!(code, 3);
    // Same size, other bytes: the receiver's prefix no longer matches.
    std::fs::write(&file, pattern(size, 2)).unwrap();
    let (code, forwarded) = send_through(&file, out.path(), Faults::default());
    assert_eq!(code, 0);
    assert!(forwarded >= size as u64, "restarted from 0: {forwarded}");
    assert_eq!(
        std::fs::read(out.path().join("changing.bin")).unwrap(),
        pattern(size, 2)
    );
}

#[test]
fn no_resume_starts_over_and_old_partials_are_swept() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = 4 << 20;
    let file = src.path().join("f.bin");
    std::fs::write(&file, pattern(size, 5)).unwrap();
    let (code, _) = send_through(&file, out.path(), Faults::cut_after(1 << 20));
    assert_eq!(code, 3);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--no-resume"]);
    let relay = Relay::start(receiver.port, Faults::default());
    assert!(send(&[&file], relay.port, KEY, &[]).status.success());
    assert_eq!(receiver.exit_code(), 0);
    assert!(
        relay.forwarded() >= size as u64,
        "sent whole: {}",
        relay.forwarded()
    );
    assert_eq!(files_under(out.path()).len(), 1, "partial discarded");

    // A partial nobody came back for, two hours old, and a fresh one.
    std::fs::create_dir(out.path().join("sub")).unwrap();
    let old = out.path().join("sub/.xfer-0123456789abcdef.partial");
    std::fs::write(&old, b"stale").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let fresh = out.path().join(".xfer-fedcba9876543210.partial");
    std::fs::write(&fresh, b"fresh").unwrap();
    let receiver = Receiver::start(out.path(), Some(KEY), &["--keep-partial", "1"]);
    let started = Instant::now();
    while old.exists() && started.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!old.exists(), "{}", receiver.stderr());
    assert!(fresh.exists());
}

#[test]
fn sigint_mid_transfer_keeps_the_partial_and_exits_3() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("slow.bin");
    std::fs::write(&file, pattern(8 << 20, 3)).unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    // A relay that stalls after 3 MiB and then holds the connection open: a
    // stalled transfer, with whole frames of data to keep (the session, cut after
    // the grace, keeps them; an empty partial would be removed).
    let relay = Relay::start(
        receiver.port,
        Faults {
            stall_after: Some(3 << 20),
            ..Faults::default()
        },
    );
    let port = relay.port;
    let file_for_sender = file.clone();
    let sender =
        std::thread::spawn(move || send(&[&file_for_sender], port, KEY, &["--timeout", "30"]));
    let started = Instant::now();
    while relay.forwarded() < 3 << 20 && started.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(receiver.child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    assert_eq!(receiver.exit_code(), 3, "{}", receiver.stderr());
    assert!(receiver.stderr().contains("cut"), "{}", receiver.stderr());
    assert!(!receiver.stderr().contains("panicked"));
    let left = files_under(out.path());
    assert!(
        matches!(left.as_slice(), [p] if p.to_string_lossy().ends_with(".partial")),
        "{left:?}"
    );
    assert!(fs::metadata(out.path().join(&left[0])).unwrap().len() > 0);
    drop(relay);
    let sent = sender.join().unwrap();
    assert_eq!(sent.status.code(), Some(3), "{}", stderr_of(&sent));
}

/// A sender stopped with Ctrl-C (SIGINT) says what its user does next.
#[test]
fn an_interrupted_sender_says_a_rerun_resumes() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("slow.bin");
    std::fs::write(&file, pattern(8 << 20, 5)).unwrap();
    let _receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let relay = Relay::start(
        _receiver.port,
        Faults {
            stall_after: Some(1 << 20),
            ..Faults::default()
        },
    );
    let mut sender = xfer()
        .arg("send")
        .arg(&file)
        .arg(format!("127.0.0.1:{}", relay.port))
        .env("XFER_KEY", KEY)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn xfer send");
    let started = Instant::now();
    while relay.forwarded() < 1 << 20 && started.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(sender.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = wait_for(&mut sender, TIMEOUT);
    let mut said = String::new();
    sender
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(said.contains("rerun the same command to resume"), "{said}");
}

#[test]
fn a_download_cut_midway_resumes_where_it_stopped() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let content = pattern(8 << 20, 7);
    write(&site.home("alice").join("big.bin"), &content);
    let dl = site.download_dir("alice");

    // Cut once, then fetched again with --no-resume: from the start.
    cut_download(&site, &server, &dl);
    let fresh = client(
        &site,
        "alice",
        &[
            "get",
            &server.at("big.bin"),
            dl.to_str().unwrap(),
            "--no-resume",
        ],
    );
    expect_exit(&fresh, 0, "the rerun with --no-resume");
    assert!(
        !stderr_of(&fresh).contains("resumed"),
        "{}",
        stderr_of(&fresh)
    );
    assert!(
        fs::read(dl.join("big.bin")).unwrap() == content,
        "byte-exact"
    );
    assert_eq!(names_in(&dl), ["big.bin"], "the partial data was dropped");

    // Cut again, then fetched again: it continues where it stopped.
    fs::remove_file(dl.join("big.bin")).unwrap();
    cut_download(&site, &server, &dl);
    let again = client(
        &site,
        "alice",
        &["get", &server.at("big.bin"), dl.to_str().unwrap()],
    );
    expect_exit(&again, 0, "the rerun");
    assert!(
        stderr_of(&again).contains("1 resumed"),
        "{}",
        stderr_of(&again)
    );
    assert!(
        fs::read(dl.join("big.bin")).unwrap() == content,
        "byte-exact"
    );
    assert_eq!(names_in(&dl), ["big.bin"], "no partial left behind");
}

#[test]
fn a_connection_dropped_mid_file_leaves_nothing_under_the_final_name() {
    for resume in [true, false] {
        let out = tempfile::tempdir().unwrap();
        let flags: &[&str] = if resume { &[] } else { &["--no-resume"] };
        let mut receiver = Receiver::start(out.path(), Some(KEY), flags);
        let mut peer = peer_sender(receiver.port, SENDER_FEATURES);
        peer.send_offer(&[vec![
            json!({"path":"big.bin","kind":"file","size":1_000_000}),
        ]])
        .unwrap();
        assert_eq!(peer.read_plan(1).expect("plan")[0]["action"], "send");
        peer.send_control(&json!({"type":"data","index":0,"offset":0}))
            .unwrap();
        peer.send_frame(&pattern(300_000, 2)).unwrap();
        drop(peer);
        assert_eq!(receiver.exit_code(), 3, "{}", receiver.stderr());
        let left: Vec<String> = files_under(out.path())
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if resume {
            // Only hidden partial data, kept for a rerun to resume from.
            assert!(
                matches!(left.as_slice(), [one] if one.starts_with(".xfer-") && one.ends_with(".partial")),
                "{left:?}"
            );
            let kept = std::fs::metadata(out.path().join(&left[0])).unwrap().len();
            assert_eq!(kept, 300_000);
        } else {
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

/// Sends `file` (`size` bytes) to a fresh receiver into `out` through a relay that
/// cuts after 5 MiB; returns what the sender and the receiver said, and the bytes
/// of the partial file kept.
fn cut_at_5_mib(file: &Path, size: u64, out: &Path) -> (String, String, u64) {
    let mut receiver = Receiver::start(out, Some(KEY), &[]);
    let relay = Relay::start(receiver.port, Faults::cut_after(5 << 20));
    let cut = send(&[file], relay.port, KEY, &[]);
    let said = stderr_of(&cut);
    assert_eq!(cut.status.code(), Some(3), "{said}");
    assert_eq!(receiver.exit_code(), 3);
    let name = file.file_name().unwrap().to_str().unwrap();
    let kept = fs::metadata(out.join(partial_name(name, size)))
        .unwrap()
        .len();
    (said, receiver.stderr(), kept)
}

/// `4.00 MiB` for a whole number of MiB.
fn mib(bytes: u64) -> String {
    format!("{}.00 MiB", bytes >> 20)
}

#[test]
fn a_cut_says_a_rerun_resumes_it_and_the_rerun_counts_only_the_bytes_it_moved() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size: u64 = 12 << 20;
    let file = src.path().join("report.bin");
    fs::write(&file, pattern(size as usize, 7)).unwrap();

    // Cut: both sides say what was kept and that the same command resumes it.
    let (said, log, kept) = cut_at_5_mib(&file, size, out.path());
    assert!(said.contains("connection lost ("), "{said}");
    assert!(
        said.contains("rerun the same command to resume: "),
        "{said}"
    );
    assert!(
        kept > 0 && kept % (1 << 20) == 0,
        "whole frames kept: {kept}"
    );
    assert!(
        log.contains("received 0 files, 0 B in ")
            && log.contains(&format!("; {} kept as partial data", mib(kept)))
            && log.contains(&format!(
                "rerun the same command to resume: {} kept",
                mib(kept)
            )),
        "{log}"
    );

    // The rerun: `bytes` and the rate count what moved; the prefix counts apart.
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let rerun = send(&[&file], receiver.port, KEY, &["--json"]);
    assert!(rerun.status.success(), "{}", stderr_of(&rerun));
    let summary = summary_event(&rerun);
    assert_eq!(summary["resumed"], 1, "{summary}");
    assert_eq!(summary["resumed_bytes"], kept, "{summary}");
    assert_eq!(summary["bytes"], size - kept, "{summary}");
    let seconds = summary["seconds"].as_f64().unwrap();
    let rate = summary["bytes_per_sec"].as_u64().unwrap() as f64;
    let moved_rate = (size - kept) as f64 / seconds;
    assert!(
        (rate - moved_rate).abs() <= moved_rate / 100.0 + 1.0,
        "{summary}"
    );
    assert_eq!(receiver.exit_code(), 0);
    let log = receiver.stderr();
    assert!(
        log.contains(&format!("received 1 file, {} in ", mib(size - kept)))
            && log.contains(&format!("; 1 resumed ({} kept)", mib(kept))),
        "{log}"
    );
    assert_eq!(
        fs::read(out.path().join("report.bin")).unwrap(),
        pattern(size as usize, 7)
    );
}

/// Partial data of a new version cut while it replaced an old one: a rerun resumes
/// it, and says `replaced` on both sides (the sender said `new`, as if nothing had
/// been there); a dry run before it says what the rerun does (`resumes at`, the
/// rest in its total) instead of a delta against the old version that the rerun
/// does not make, and leaves the partial data where it is.
#[test]
fn a_resume_over_an_old_version_is_replaced_and_a_dry_run_predicts_it() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let size = 20 << 20;
    let file = src.path().join("resume.bin");
    fs::write(&file, pattern(size, 42)).unwrap();
    let old = out.path().join("resume.bin");
    fs::write(&old, pattern(size, 43)).unwrap();
    make_older(&old);

    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
    let relay = Relay::start(receiver.port, Faults::cut_after(7 << 20));
    let cut = send(&[&file], relay.port, KEY, &["-W"]);
    assert_eq!(code(&cut), 3, "{}", stderr_of(&cut));
    assert_eq!(receiver.exit_code(), 3, "{}", receiver.stderr());
    let partial = || {
        fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .map(|e| e.metadata().unwrap().len())
    };
    let kept = partial().expect("partial data kept");
    assert!(kept > 0 && kept < size as u64);
    let mib = |bytes: u64| format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64);

    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
    let dry = send(&[&file], receiver.port, KEY, &["-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let said = String::from_utf8_lossy(&dry.stdout).into_owned();
    let line = format!(
        "changed  resume.bin  (resumes at {} of 20.00 MiB)",
        mib(kept)
    );
    assert_eq!(said.lines().collect::<Vec<_>>(), [line.as_str()], "{said}");
    let total = format!("1 changed ({})", mib(size as u64 - kept));
    assert!(stderr_of(&dry).contains(&total), "{}", stderr_of(&dry));
    assert_eq!(partial(), Some(kept), "a dry run leaves the partial data");

    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite", "-i"]);
    let rerun = send(&[&file], receiver.port, KEY, &["-i"]);
    assert_eq!(code(&rerun), 0, "{}", stderr_of(&rerun));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(
        String::from_utf8_lossy(&rerun.stdout),
        "replaced resume.bin\n"
    );
    assert_eq!(receiver.stdout(), "replaced resume.bin\n");
    assert!(
        stderr_of(&rerun).contains("1 resumed"),
        "{}",
        stderr_of(&rerun)
    );
    assert_eq!(fs::read(&old).unwrap(), pattern(size, 42));
    assert_eq!(partial(), None);
}

/// Waits until a `.partial` is under `dir`, then sends SIGINT to `child`; what it
/// said on stderr, and its exit code.
fn interrupt_once_partial(child: &mut std::process::Child, dir: &Path) -> (String, Option<i32>) {
    let started = Instant::now();
    while !files_under(dir)
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".partial"))
    {
        assert!(started.elapsed() < TIMEOUT, "no partial data arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(child)
}

/// Sends SIGINT to `child` and waits for it: what it said on stderr, and its exit
/// code.
fn interrupt(child: &mut std::process::Child) -> (String, Option<i32>) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = wait_for(child, TIMEOUT);
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    (said, status.code())
}

/// A receiving side stopped with Ctrl-C (a `get`, a `recv HOST:PORT`) keeps the
/// partial data itself, and says so: not that "the peer" keeps it.
#[test]
fn an_interrupted_receiving_side_says_it_keeps_the_partial_data_itself() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("big.bin"), &pattern(8 << 20, 9));
    let dl = site.download_dir("alice");
    let mut get = as_user(
        &site,
        "alice",
        &["get", &server.at("big.bin"), dl.to_str().unwrap()],
    );
    let mut get = get
        .args(["--limit-rate", "1M"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn xfer get");
    let (said, code) = interrupt_once_partial(&mut get, &dl);
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("kept here"), "{said}");
    assert!(!said.contains("the peer keeps"), "{said}");

    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("slow.bin");
    std::fs::write(&file, pattern(8 << 20, 4)).unwrap();
    let mut sender = xfer()
        .args(["send", file.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--limit-rate", "1M", "-q"])
        .env("XFER_KEY", KEY)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn xfer send --listen");
    let mut first = String::new();
    let mut stderr = std::io::BufReader::new(sender.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    let port = first.trim().rsplit(':').next().unwrap().to_string();
    let mut recv = xfer()
        .args(["recv", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(out.path())
        .env("XFER_KEY", KEY)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn xfer recv HOST:PORT");
    let (said, code) = interrupt_once_partial(&mut recv, out.path());
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("kept here"), "{said}");
    let _ = sender.kill();
    let _ = sender.wait();
}

/// A `get --stdout` stopped with Ctrl-C keeps nothing to resume from (what it
/// wrote went to standard output): it does not promise partial data "kept here"
/// that a rerun would resume.
#[test]
fn an_interrupted_get_to_standard_output_promises_no_partial_data() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("big.bin"), &pattern(8 << 20, 3));
    let mut get = as_user(&site, "alice", &["get", &server.at("big.bin"), "--stdout"]);
    let mut get = get
        .args(["--limit-rate", "1M"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn xfer get --stdout");
    let mut stdout = get.stdout.take().unwrap();
    let mut first = [0u8; 4096];
    stdout.read_exact(&mut first).expect("some data on stdout");
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let (said, code) = interrupt(&mut get);
    let _ = drain.join();
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("interrupted"), "{said}");
    assert!(!said.contains("kept here"), "{said}");
    assert!(!said.contains("rerun"), "{said}");
}

/// `get --no-resume` keeps nothing of an interrupted file (it lands in an unnamed
/// temporary), so Ctrl-C does not promise a rerun that resumes, and leaves nothing.
#[test]
fn an_interrupted_get_without_resume_promises_no_partial_data() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("big.bin"), &pattern(8 << 20, 4));
    let into = site.path().join("into");
    fs::create_dir(&into).unwrap();
    let mut get = as_user(&site, "alice", &["get", &server.at("big.bin")]);
    let mut get = get
        .arg(&into)
        .args(["--limit-rate", "1M", "--no-resume"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn xfer get --no-resume");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (said, code) = interrupt(&mut get);
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("nothing is kept to resume from"), "{said}");
    assert_eq!(
        fs::read_dir(&into).unwrap().count(),
        0,
        "nothing left in {into:?}"
    );
}

/// A listener stopped by a signal whose session outlasts the grace cuts it, and
/// the session still ends as any cut one does: its summary (text and `--json`)
/// says what it kept, exactly what lies on disk, before the listener exits 3.
/// Before, the process exited with the session running and said nothing of it.
#[test]
fn a_session_a_stopped_listener_cuts_says_what_it_kept() {
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "big.bin", &pattern(40 << 20, 5));
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--json"]);
    let mut sender = send_paced(&file, receiver.port, "4M");
    std::thread::sleep(Duration::from_millis(1500));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(receiver.child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    assert_eq!(receiver.exit_code(), 3, "{}", receiver.stderr());
    let _ = wait_for(&mut sender, TIMEOUT);
    assert!(
        receiver.stderr().contains("1 running session cut"),
        "{}",
        receiver.stderr()
    );
    let events = events_in(&receiver.stdout());
    let summary = events
        .iter()
        .find(|event| event["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {events:?}"));
    let partials: Vec<u64> = files_under(out.path())
        .iter()
        .filter(|path| path.to_string_lossy().ends_with(".partial"))
        .map(|path| fs::metadata(out.path().join(path)).unwrap().len())
        .collect();
    assert_eq!(partials.len(), 1, "{partials:?}");
    assert!(partials[0] > 0, "{partials:?}");
    assert_eq!(summary["kept_bytes"], partials[0], "{summary}");
    assert_eq!(summary["ok"], false, "{summary}");
    // Cut by this side, which it says, not that the peer closed the connection.
    let error = summary["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("cut: this side was stopped"), "{summary}");
}

/// The same of an upload to `xfer serve`: the server's log line says it cut the
/// session (it said `failed: the peer closed the connection in the middle of a
/// file`: tester helper-78), and the same of a `get` it serves.
#[test]
fn a_server_stopped_by_a_signal_logs_the_sessions_it_cut_as_cut() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let local = site.local("up.bin", &pattern(40 << 20, 7));
    std::fs::create_dir_all(site.home("alice")).unwrap();
    std::fs::write(site.home("alice").join("down.bin"), pattern(40 << 20, 8)).unwrap();
    let mut server = site.serve(&[]);
    let get_to = site.download_dir("down");
    let (to, from) = (server.addr(), server.at("down.bin"));
    let up = ["send", "--limit-rate", "4M", local.to_str().unwrap(), &to];
    let down = ["get", "--limit-rate", "4M", &from, get_to.to_str().unwrap()];
    let transfers = [&up[..], &down[..]];
    let mut clients: Vec<_> = transfers
        .iter()
        .map(|args| {
            as_user(&site, "alice", args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.0.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let _ = server.0.exit_code();
    for client in &mut clients {
        let _ = wait_for(client, TIMEOUT);
    }
    let log = server.log();
    let cut = log.matches("cut: this side was stopped").count();
    assert_eq!(cut, 2, "{log}");
    assert!(!log.contains("the peer closed the connection"), "{log}");
}

/// A resumed file cut again: the sender's advice counts the prefix an earlier run
/// left as well as what went out in this one, and says so, instead of calling it
/// all "sent" (it said "10.00 MiB sent" when this run moved 5).
#[test]
fn a_resumed_file_cut_again_is_not_said_to_be_sent_whole_in_this_run() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Far more than the socket buffers hold after the second cut (at 10 MiB): with
    // 16 MiB, a loaded machine let the sender write all of it before the relay
    // cut, and it rightly said it was waiting for the answers.
    let size: u64 = 64 << 20;
    let file = src.path().join("twice.bin");
    fs::write(&file, pattern(size as usize, 8)).unwrap();
    let (_, _, first) = cut_at_5_mib(&file, size, out.path());
    let (said, _, second) = cut_at_5_mib(&file, size, out.path());
    assert!(second > first, "{first} then {second}");
    // What went out may exceed what the receiver kept (the relay cut it short).
    let advice = said
        .split("rerun the same command to resume: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no advice in {said}"));
    let went: f64 = advice.split(' ').next().unwrap().parse().unwrap();
    assert!(went * 1048576.0 >= second as f64, "{said}");
    assert!(
        advice.contains(
            " MiB of files not yet acknowledged went to the receiver (in this run or earlier ones)"
        ),
        "{said}"
    );
    assert!(!said.contains(" sent;"), "{said}");
    // Cut in the middle of its data: not "while we waited for the answers".
    assert!(!said.contains("while we waited"), "{said}");
}
