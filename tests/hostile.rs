//! End-to-end against hostile peers: a raw-socket client that sends what no honest
//! peer would, before and after authenticating, and a relay that corrupts the link.
//! For every case: the documented error on the wire (where the connection still
//! allows it), no file under a final name unless verified, no panic, and a serving
//! receiver that keeps serving with its threads and memory back to normal.

mod util;

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::peer::{Acceptor, Decision, MAX_FRAME, Peer, TAG_LEN, kind, parse_control};
use util::relay::{Faults, Relay};
use util::*;

/// `Threads` and `VmRSS` (KiB) of a process, from /proc.
fn threads_and_rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

/// Waits until the receiver's thread count is back to `baseline` (plus `slack`).
fn threads_settle(pid: u32, baseline: u64, slack: u64) -> u64 {
    let started = Instant::now();
    loop {
        let (threads, _) = threads_and_rss(pid);
        if threads <= baseline + slack || started.elapsed() > TIMEOUT {
            return threads;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After the hostile part: an honest sender still gets a file through.
fn honest_transfer_works(port: u16, out: &Path, name: &str) {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join(name);
    std::fs::write(&file, pattern(100_000, 77)).unwrap();
    let sent = send(&[&file], port, KEY, &["--quiet"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(std::fs::read(out.join(name)).unwrap(), pattern(100_000, 77));
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Connects, takes the `hello`, sends `bytes`, returns the first reply (or `None`
/// when the receiver just closed) and the acceptor's nonce.
fn pre_auth(port: u16, bytes: impl Fn(&str) -> Vec<u8>) -> Option<Value> {
    let mut peer = peer_connect(port);
    let hello = peer.read_hello().expect("hello");
    let nonce = hello["nonce"].as_str().unwrap().to_string();
    if peer.send_wire(&bytes(&nonce)).is_err() {
        return None;
    }
    let reply = peer.read_control().ok();
    // Whatever it said, it then hangs up.
    assert!(
        peer.expect_close().is_ok(),
        "the connection is closed after {reply:?}"
    );
    reply
}

/// Asserts that a read found the connection closed, with no frame before.
fn assert_closed(read: Result<Option<Vec<u8>>, util::peer::PeerError>) {
    match read {
        Ok(None) => {}
        Err(err) if err.is_closed() => {}
        other => panic!("expected a close, got {other:?}"),
    }
}

fn auth_with(version: u64, role: &str, nonce: &str, mac: &str) -> Vec<u8> {
    frame(
        json!({"type":"auth","version":version,"role":role,"nonce":nonce,"mac":mac})
            .to_string()
            .as_bytes(),
    )
}

#[test]
fn garbage_before_authentication_is_refused_and_the_receiver_keeps_serving() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(
        out.path(),
        Some(KEY),
        &["--serve", "--handshake-timeout", "2"],
    );
    let pid = receiver.child.id();
    honest_transfer_works(receiver.port, out.path(), "warm-up.bin");
    let (baseline_threads, baseline_rss) = threads_and_rss(pid);

    let good_nonce = "5a".repeat(32);
    let good_mac = "00".repeat(32);
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    type Case = (
        &'static str,
        Box<dyn Fn(&str) -> Vec<u8>>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "4 GiB length prefix",
            Box::new(|_| vec![0xff; 4]),
            Some("protocol"),
        ),
        (
            "one byte over 4096",
            Box::new(|_| frame(&[b' '; 4097])),
            Some("protocol"),
        ),
        ("empty frame", Box::new(|_| frame(b"")), Some("protocol")),
        (
            "invalid UTF-8",
            Box::new(|_| frame(b"{\"type\":\"auth\xff\xfe\"}")),
            Some("protocol"),
        ),
        (
            "invalid JSON",
            Box::new(|_| frame(b"{type: auth")),
            Some("protocol"),
        ),
        (
            "JSON nested 2000 deep",
            Box::new(move |_| frame(deep.as_bytes())),
            Some("protocol"),
        ),
        (
            "unknown type",
            Box::new(|_| frame(br#"{"type":"teleport"}"#)),
            Some("protocol"),
        ),
        (
            "auth without fields",
            Box::new(|_| frame(br#"{"type":"auth","version":2}"#)),
            Some("protocol"),
        ),
        (
            "hello from the initiator",
            Box::new(|n| {
                frame(
                    json!({"type":"hello","version":2,"role":"sender","nonce":n})
                        .to_string()
                        .as_bytes(),
                )
            }),
            Some("protocol"),
        ),
        // Version 2 answers a nonce that is not 64 lowercase hex digits `auth`
        // (PROTOCOL.md section 4, step 4); version 1 said `protocol`.
        (
            "nonce too short",
            Box::new(|_| auth_with(2, "sender", &"5a".repeat(31), &"00".repeat(32))),
            Some("auth"),
        ),
        (
            "nonce not hex",
            Box::new(|_| auth_with(2, "sender", &"zz".repeat(32), &"00".repeat(32))),
            Some("auth"),
        ),
        (
            "acceptor's nonce echoed",
            Box::new(|n| auth_with(2, "sender", n, &"00".repeat(32))),
            Some("auth"),
        ),
        (
            "MAC of 31 bytes",
            {
                let n = good_nonce.clone();
                Box::new(move |_| auth_with(2, "sender", &n, &"00".repeat(31)))
            },
            Some("auth"),
        ),
        (
            "MAC of 33 bytes",
            {
                let n = good_nonce.clone();
                Box::new(move |_| auth_with(2, "sender", &n, &"00".repeat(33)))
            },
            Some("auth"),
        ),
        (
            "MAC upper case",
            {
                let n = good_nonce.clone();
                Box::new(move |_| auth_with(2, "sender", &n, &"AB".repeat(32)))
            },
            Some("auth"),
        ),
        (
            "MAC not hex",
            {
                let n = good_nonce.clone();
                Box::new(move |_| auth_with(2, "sender", &n, &"zz".repeat(32)))
            },
            Some("auth"),
        ),
        (
            "wrong MAC",
            {
                let (n, m) = (good_nonce.clone(), good_mac.clone());
                Box::new(move |_| auth_with(2, "sender", &n, &m))
            },
            Some("auth"),
        ),
        (
            "higher version",
            {
                let n = good_nonce.clone();
                Box::new(move |_| auth_with(3, "sender", &n, &"00".repeat(32)))
            },
            Some("version"),
        ),
        (
            "same role",
            {
                let n = good_nonce.clone();
                Box::new(move |_| auth_with(2, "receiver", &n, &"00".repeat(32)))
            },
            Some("role"),
        ),
        (
            "version 1, an old peer",
            {
                let n = good_nonce.clone();
                Box::new(move |_| auth_with(1, "sender", &n, &"00".repeat(32)))
            },
            Some("version"),
        ),
        (
            "a user name that is not one",
            {
                let n = good_nonce.clone();
                Box::new(move |_| {
                    frame(
                        json!({"type":"auth","version":2,"role":"sender","nonce":n,
                               "user":"-rf","mac":"00".repeat(32)})
                        .to_string()
                        .as_bytes(),
                    )
                })
            },
            Some("protocol"),
        ),
        (
            "features that are not names",
            {
                let n = good_nonce.clone();
                Box::new(move |_| {
                    frame(
                        json!({"type":"auth","version":2,"role":"sender","nonce":n,
                               "features":["AEAD"],"mac":"00".repeat(32)})
                        .to_string()
                        .as_bytes(),
                    )
                })
            },
            Some("protocol"),
        ),
    ];
    for (name, bytes, code) in &cases {
        let reply = pre_auth(receiver.port, bytes);
        match code {
            Some(code) => {
                let reply =
                    reply.unwrap_or_else(|| panic!("{name}: closed without an error frame"));
                assert_eq!(
                    (reply["type"].as_str(), reply["code"].as_str()),
                    (Some("error"), Some(*code)),
                    "{name}: {reply}"
                );
                assert!(
                    !reply["message"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .any(char::is_control),
                    "{name}"
                );
            }
            None => assert!(reply.is_none(), "{name}: {reply:?}"),
        }
    }

    // A peer that connects and says nothing is cut off at the handshake deadline,
    // without a frame.
    let mut staller = peer_connect(receiver.port);
    let started = Instant::now();
    assert_eq!(kind(&staller.read_hello().expect("hello")), "hello");
    assert_closed(staller.read_wire());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "{waited:?}"
    );

    honest_transfer_works(receiver.port, out.path(), "after.bin");
    assert!(receiver.is_running());
    let threads = threads_settle(pid, baseline_threads, 0);
    let (_, rss) = threads_and_rss(pid);
    assert!(
        threads <= baseline_threads,
        "threads {threads}, were {baseline_threads}"
    );
    assert!(
        rss < baseline_rss + 8 * 1024,
        "RSS {rss} KiB, was {baseline_rss} KiB"
    );
    let log = receiver.stderr();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        files_under(out.path()),
        [PathBuf::from("after.bin"), PathBuf::from("warm-up.bin")]
    );
}

#[test]
fn two_hundred_tricklers_do_not_stop_a_real_transfer() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(
        out.path(),
        Some(KEY),
        &["--serve", "--handshake-timeout", "6"],
    );
    let pid = receiver.child.id();
    // After a first session, so every long-lived thread of the receiver exists.
    honest_transfer_works(receiver.port, out.path(), "warm-up.bin");
    let (baseline_threads, _) = threads_and_rss(pid);
    let port = receiver.port;
    // From 25 loopback addresses, 8 each (a listener's bound on connections in the
    // handshake from one address), as from many hosts: all 200 are in the handshake
    // at once. From one address, all but 8 would be told `busy` at once.
    let tricklers: Vec<_> = (0..200)
        .map(|i| {
            let source = Ipv4Addr::new(127, 0, 0, 2 + i / 8);
            std::thread::spawn(move || {
                let mut stream = connect_from(source, port);
                // One byte of a plausible auth frame every second, until cut off.
                let bytes = frame(&[b'{'; 200]);
                for byte in bytes {
                    std::thread::sleep(Duration::from_secs(1));
                    if stream.write_all(&[byte]).is_err() {
                        return true;
                    }
                }
                false
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    honest_transfer_works(port, out.path(), "through.bin");
    // The tricklers hold their connections for 6 s: a transfer they delayed would wait that long.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let cut_off = tricklers
        .into_iter()
        .map(|t| t.join().unwrap_or(false))
        .filter(|&cut| cut)
        .count();
    assert_eq!(cut_off, 200, "every trickler was cut off at the deadline");
    assert!(receiver.is_running());
    let threads = threads_settle(pid, baseline_threads, 0);
    assert!(
        threads <= baseline_threads,
        "threads {threads}, were {baseline_threads}"
    );
    assert!(!receiver.stderr().contains("panicked"));
}

/// An authenticated sender's session on a serving receiver, sealed as an `xfer`
/// sender's would be: sends `entries` as one offer (with its `offer_end`), returns
/// the peer and the plan, its `plan_end` verified.
fn offer(port: u16, entries: Value) -> (Peer, Vec<Value>) {
    let entries = entries.as_array().expect("a list of entries").clone();
    let mut peer = peer_sender(port, SENDER_FEATURES);
    peer.send_offer(std::slice::from_ref(&entries)).unwrap();
    let plan = peer.read_plan(entries.len()).expect("plan");
    (peer, plan)
}

fn data_header(index: u64) -> Value {
    json!({"type":"data","index":index,"offset":0})
}

fn assert_error(reply: Option<Value>, code: &str, case: &str) {
    let reply = reply.unwrap_or_else(|| panic!("{case}: closed without an error frame"));
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some(code)),
        "{case}: {reply}"
    );
}

#[test]
fn lies_and_misbehaviour_after_authentication_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let port = receiver.port;
    std::fs::write(out.path().join("exists"), b"old").unwrap();

    // Fewer bytes than offered, and a `done` that says so: that entry fails.
    let (mut peer, _) = offer(port, json!([{"path":"short","kind":"file","size":10}]));
    peer.send_file(0, "short", b"12345", 0).unwrap();
    assert_error(
        peer.read_control().ok(),
        "checksum",
        "fewer bytes than size",
    );

    // More bytes than offered: the whole session ends.
    let (mut peer, _) = offer(port, json!([{"path":"long","kind":"file","size":5}]));
    peer.send_control(&data_header(0)).unwrap();
    peer.send_frame(b"0123456789").unwrap();
    assert_error(peer.read_control().ok(), "protocol", "more bytes than size");

    // Absurd sizes: refused in the plan, or the offer is malformed.
    let (_, plan) = offer(port, json!([{"path":"huge","kind":"file","size":u64::MAX}]));
    assert_eq!(plan[0]["code"], "too_large", "{plan:?}");
    for size in [json!(-1), json!("5"), json!(1.5)] {
        let mut peer = peer_sender(port, SENDER_FEATURES);
        peer.send_offer(&[vec![json!({"path":"x","kind":"file","size":size})]])
            .unwrap();
        assert_error(
            peer.read_control().ok(),
            "protocol",
            &format!("size {size}"),
        );
    }

    // A data frame over 16 MiB: refused before anything is allocated for it. (A
    // sealed frame's limit counts its tag: the prefix says one byte more than that.)
    let (mut peer, _) = offer(port, json!([{"path":"big","kind":"file","size":100}]));
    peer.send_control(&data_header(0)).unwrap();
    let over = u32::try_from(MAX_FRAME + TAG_LEN + 1).unwrap();
    let _ = peer.send_wire(&over.to_be_bytes());
    assert_error(
        peer.read_control().ok(),
        "protocol",
        "data frame over 16 MiB",
    );

    // Data for a skipped entry, for an entry out of range, twice for one entry, and
    // (version 2: data goes in the plan's order) for a later entry first.
    let (mut peer, plan) = offer(port, json!([{"path":"exists","kind":"file","size":3}]));
    assert_eq!(plan[0]["code"], "exists");
    peer.send_control(&data_header(0)).unwrap();
    assert_error(
        peer.read_control().ok(),
        "protocol",
        "data for a skipped entry",
    );
    let (mut peer, _) = offer(port, json!([{"path":"a","kind":"file","size":1}]));
    peer.send_control(&data_header(7)).unwrap();
    assert_error(peer.read_control().ok(), "protocol", "index out of range");
    let (mut peer, _) = offer(port, json!([{"path":"twice","kind":"file","size":1}]));
    peer.send_file(0, "twice", b"1", 0).unwrap();
    assert_eq!(kind(&peer.read_control().expect("ok")), "ok");
    peer.send_control(&data_header(0)).unwrap();
    assert_error(peer.read_control().ok(), "protocol", "the same index twice");
    let (mut peer, _) = offer(
        port,
        json!([{"path":"first","kind":"file","size":1},{"path":"second","kind":"file","size":1}]),
    );
    peer.send_file(1, "second", b"2", 0).unwrap();
    assert_error(peer.read_control().ok(), "protocol", "a later entry first");

    // Two entries with one path: the second is refused.
    let (_, plan) = offer(
        port,
        json!([{"path":"dup","kind":"file","size":1},{"path":"dup","kind":"file","size":1}]),
    );
    assert_eq!(plan[0]["action"], "send");
    assert_eq!(plan[1]["code"], "bad_path");

    // A connection closed in the middle of a control frame, and one in the middle of data.
    let (mut peer, _) = offer(port, json!([{"path":"cut","kind":"file","size":1000}]));
    let wire = peer.seal_next(data_header(0).to_string().as_bytes());
    let _ = peer.send_wire(&wire[..10]);
    drop(peer);
    let (mut peer, _) = offer(port, json!([{"path":"cut2","kind":"file","size":1000}]));
    peer.send_control(&data_header(0)).unwrap();
    let wire = peer.seal_next(&[7; 500]);
    let _ = peer.send_wire(&wire[..300]);
    drop(peer);

    std::thread::sleep(Duration::from_millis(300));
    honest_transfer_works(port, out.path(), "honest.bin");
    let finished: Vec<PathBuf> = files_under(out.path())
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".xfer-"))
        .collect();
    assert_eq!(
        finished,
        ["exists", "honest.bin", "twice"].map(PathBuf::from),
        "only verified files"
    );
    assert_eq!(std::fs::read(out.path().join("exists")).unwrap(), b"old");
    assert!(receiver.is_running());
    assert!(
        !receiver.stderr().contains("panicked"),
        "{}",
        receiver.stderr()
    );
}

#[test]
fn a_receiver_that_never_acknowledges_fails_the_sender_with_exit_8() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).expect("accept");
        let receiver = Acceptor::new(KEY, "receiver").features(LISTENER_FEATURES);
        peer.accept_handshake(&receiver).expect("handshake");
        let first = peer.read_control_raw().expect("offer");
        let entries = peer.read_offer_from(first).expect("a verified offer");
        let plan = vec![Decision::Send.to_json(peer.hash()); entries.len()];
        peer.send_plan(&[plan]).unwrap();
        // Take everything, acknowledge nothing, say end.
        loop {
            let payload = peer.read_frame().expect("a frame").expect("no close");
            if parse_control(&payload).is_ok_and(|frame| kind(&frame) == "end") {
                break;
            }
        }
        peer.send_end().unwrap();
    });
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data").unwrap();
    let sent = send(&[&src.path().join("f")], port, KEY, &[]);
    fake.join().unwrap();
    // Version 2 makes a receiver's `end` while an entry is outstanding a protocol
    // error (PROTOCOL.md section 5), so 8; version 1 counted it a failed file, 5.
    assert_eq!(sent.status.code(), Some(8), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("unanswered"),
        "{}",
        stderr_of(&sent)
    );
}

/// Sends a 1 MiB file through a relay that flips one bit at `offset`, the sender run
/// with `extra` flags. Returns both exit codes; the receiver's is `None` if it is
/// still waiting for a sender (a flip in the handshake fails authentication, which
/// does not end a one-shot receiver).
fn send_with_flip(
    offset: u64,
    extra: &[&str],
) -> (i32, Option<i32>, tempfile::TempDir, Vec<u8>, String) {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let content = pattern(1 << 20, 31);
    let file = src.path().join("flip.bin");
    std::fs::write(&file, &content).unwrap();
    // A mode and a time of its own, to check they arrive unchanged.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000))
        .unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--idle-timeout", "5"]);
    let relay = Relay::start(
        receiver.port,
        Faults {
            flip_at: Some(offset),
            ..Faults::default()
        },
    );
    let flags = [&["--idle-timeout", "5"], extra].concat();
    let sent = send(&[&file], relay.port, KEY, &flags);
    let started = Instant::now();
    // After a failed handshake the receiver rightly goes on waiting: no need to wait long.
    let patience = if stderr_of(&sent).contains("handshake") {
        1
    } else {
        15
    };
    while receiver.is_running() && started.elapsed() < Duration::from_secs(patience) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let receiver_code = if receiver.is_running() {
        None
    } else {
        Some(receiver.exit_code())
    };
    let log = format!("{}\n{}", stderr_of(&sent), receiver.stderr());
    (
        sent.status.code().unwrap(),
        receiver_code,
        out,
        content,
        log,
    )
}

#[test]
fn a_flipped_bit_in_the_data_ends_in_exit_5_and_nothing_kept() {
    // In clear, the flip reaches the file's bytes and the content hash catches it.
    let (sender, receiver, out, _, log) = send_with_flip(600_000, &["--no-encrypt"]);
    assert_eq!((sender, receiver), (5, Some(5)), "{log}");
    assert!(
        files_under(out.path()).is_empty(),
        "{:?}",
        files_under(out.path())
    );
    assert!(!log.contains("panicked"), "{log}");

    // Encrypted (the default), the sealed frame that holds it does not open: the
    // connection ends (`mac`), and nothing of the file in flight is kept, not even
    // as partial data: the peer is tampering.
    let (sender, receiver, out, _, log) = send_with_flip(600_000, &[]);
    assert_eq!((sender, receiver), (5, Some(5)), "{log}");
    assert!(
        files_under(out.path()).is_empty(),
        "{:?}",
        files_under(out.path())
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_flipped_bit_in_a_control_frame_never_makes_a_wrong_file() {
    // Offsets from the sender's first byte, laid out for a transfer in clear: its
    // auth frame (0..209), the offer (..320), offer_end (..427), the data header
    // (..467), the first data frame's length. Encrypted, the same offsets land in
    // the auth frame and then in sealed frames.
    let offsets = [
        10, 60, 140, 190, 215, 250, 275, 290, 305, 340, 380, 440, 455, 468,
    ];
    let source_mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    for extra in [&["--no-encrypt"][..], &[]] {
        for offset in offsets {
            let (sender, receiver, out, content, log) = send_with_flip(offset, extra);
            let case = format!("offset {offset} {extra:?}");
            assert!(!log.contains("panicked"), "{case}: {log}");
            let files = files_under(out.path());
            for file in &files {
                assert!(
                    file == Path::new("flip.bin") || file.to_string_lossy().starts_with(".xfer-"),
                    "{case}: a file under another name: {file:?}"
                );
            }
            if files.contains(&PathBuf::from("flip.bin")) {
                let landed = out.path().join("flip.bin");
                assert_eq!(std::fs::read(&landed).unwrap(), content, "{case}");
                // Version 2 binds modes and times too (mac_offer): they arrive intact.
                let meta = std::fs::metadata(&landed).unwrap();
                use std::os::unix::fs::MetadataExt;
                assert_eq!(
                    (meta.mode() & 0o7777, meta.modified().unwrap()),
                    (0o640, source_mtime),
                    "{case}"
                );
            }
            if sender != 0 {
                assert!(log.contains("xfer: "), "{case}: a clear error: {log}");
            }
            eprintln!("bit flipped at {case}: sender exit {sender}, receiver exit {receiver:?}");
            if receiver.is_none() {
                // 9: a flip that turns `version` into another is refused `version`.
                assert!(
                    [4, 8, 9].contains(&sender),
                    "{case}: only a failed handshake leaves it waiting: {log}"
                );
                assert!(log.contains("handshake"), "{case}: {log}");
            }
        }
    }
}
