//! End-to-end: the real binary sending to itself on loopback, and the independent
//! version-2 peer of `util::peer` (written from PROTOCOL.md) sending to it and
//! receiving from it.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};
use util::peer::{
    Acceptor, Decision, Peer, decode_data, hex, hex_matches, kind, mac_done, mac_ok, make_hello,
};
use util::*;

#[test]
fn files_of_every_size_arrive_byte_exact_in_one_session() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = [
        ("empty", Vec::new()),
        ("one", vec![b'x']),
        ("multi-mb.bin", pattern(5 * 1024 * 1024 + 7, 1)),
        ("text.txt", b"hello, world\n".to_vec()),
    ];
    for (name, content) in &files {
        std::fs::write(src.path().join(name), content).unwrap();
    }
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let paths: Vec<_> = files
        .iter()
        .map(|(name, _)| src.path().join(name))
        .collect();
    let refs: Vec<_> = paths.iter().map(|p| p.as_path()).collect();
    let sent = send(&refs, receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    for (name, content) in &files {
        assert_eq!(
            &std::fs::read(out.path().join(name)).unwrap(),
            content,
            "{name}"
        );
    }
    assert_eq!(
        files_under(out.path()).len(),
        files.len(),
        "no temporary files left"
    );
    // The summary names every file with its MD5.
    let summary = stderr_of(&sent);
    assert!(summary.contains("sent 4 files"), "{summary}");
    assert!(
        summary.contains("22c3683b094136c3398391ae71b20f04  text.txt"),
        "{summary}"
    );
    assert!(
        receiver.stderr().contains("received 4 files"),
        "{}",
        receiver.stderr()
    );
}

#[test]
fn wrong_key_is_refused_and_the_receiver_keeps_waiting() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("secret.txt");
    std::fs::write(&file, b"for key holders only").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);

    let refused = send(&[&file], receiver.port, "a different key, also long", &[]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("authentication failed"),
        "{}",
        stderr_of(&refused)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        receiver.is_running(),
        "a failed handshake must not end a one-shot receiver"
    );
    assert!(files_under(out.path()).is_empty());

    let sent = send(&[&file], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    assert_eq!(
        std::fs::read(out.path().join("secret.txt")).unwrap(),
        b"for key holders only"
    );
}

#[test]
fn a_listener_that_cannot_prove_the_key_gets_no_data() {
    // A fake receiver that does not know the key: it answers with a made-up proof.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).expect("accept");
        let pretender = Acceptor::new("not the key", "receiver").features(LISTENER_FEATURES);
        peer.send_control(&make_hello(&pretender).0).unwrap();
        let auth = peer.read_control().expect("auth");
        assert_eq!(kind(&auth), "auth");
        peer.send_control(&json!({"type":"auth_ok","mac":"cd".repeat(32)}))
            .unwrap();
        // Whatever comes next must not be an offer (nor anything sealed or clear
        // that could carry one): the initiator closes, sending nothing.
        peer.read_control().ok()
    });
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    std::fs::write(&file, b"data").unwrap();
    let sent = send(&[&file], port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(4), "{}", stderr_of(&sent));
    let after = fake.join().unwrap();
    assert!(after.is_none(), "{after:?}");
}

#[test]
fn hostile_paths_are_all_refused_and_nothing_is_written() {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("target");
    std::fs::create_dir(&out).unwrap();
    let mut receiver = Receiver::start(&out, Some(KEY), &[]);
    let hostile = [
        "../x",
        "/abs",
        "a/../../x",
        "C:/x",
        "c:x",
        "a\\b",
        "\\\\?\\C:\\x",
        "ctl\u{1}x",
        "esc\u{1b}[31m",
        "bidi\u{202e}txt",
        "a//b",
        "./x",
        "",
        "a/",
        // The receiver's own temporaries (version 2, PROTOCOL.md section 6).
        ".xfer-0123456789abcdef0123456789abcdef.partial",
        "sub/.xfer-0123456789abcdef0123456789abcdef.part",
    ];
    let mut peer = peer_sender(receiver.port, SENDER_FEATURES);
    let entries: Vec<Value> = hostile
        .iter()
        .map(|path| json!({"path":path,"kind":"file","size":4,"mode":420,"mtime":0}))
        .collect();
    peer.send_offer(&[entries]).unwrap();
    let decisions = peer.read_plan(hostile.len()).expect("plan");
    for (path, decision) in hostile.iter().zip(&decisions) {
        assert_eq!(decision["action"], "skip", "{path:?}");
        assert_eq!(decision["code"], "bad_path", "{path:?}");
        let message = decision["message"].as_str().unwrap();
        assert!(
            !message.chars().any(char::is_control),
            "raw control characters in {message:?}"
        );
    }
    peer.send_end().unwrap();
    assert_eq!(kind(&peer.read_control().expect("end")), "end");
    assert_eq!(receiver.exit_code(), 6);
    assert_eq!(
        files_under(parent.path()),
        Vec::<std::path::PathBuf>::new(),
        "nothing anywhere"
    );
    assert!(
        !receiver.stderr().contains('\u{1b}'),
        "escapes never reach the terminal raw"
    );
}

#[test]
fn an_existing_file_is_refused_with_exit_6_and_left_unchanged() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("same.txt"), b"new content").unwrap();
    std::fs::write(src.path().join("other.txt"), b"other").unwrap();
    std::fs::write(out.path().join("same.txt"), b"old content").unwrap();
    // Same size as the new one: with the same mtime too, version 2 would call it
    // `same` (already delivered); another mtime makes it a file that differs.
    std::fs::File::options()
        .write(true)
        .open(out.path().join("same.txt"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(
        &[&src.path().join("same.txt"), &src.path().join("other.txt")],
        receiver.port,
        KEY,
        &[],
    );
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("already exists"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(receiver.exit_code(), 6);
    assert_eq!(
        std::fs::read(out.path().join("same.txt")).unwrap(),
        b"old content"
    );
    assert_eq!(
        std::fs::read(out.path().join("other.txt")).unwrap(),
        b"other",
        "the rest still arrives"
    );
}

#[test]
fn overwrite_replaces_an_existing_file() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"new").unwrap();
    std::fs::write(out.path().join("f"), b"old and longer").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
    let sent = send(&[&src.path().join("f")], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    assert_eq!(std::fs::read(out.path().join("f")).unwrap(), b"new");
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

#[test]
fn an_independent_sender_is_received_and_acknowledged_with_a_valid_mac() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = peer_sender(receiver.port, SENDER_FEATURES);
    let content = pattern(250_000, 3);
    // Version 2: a directory's size is 0 (null is only for a stream).
    peer.send_offer(&[vec![
        json!({"path":"docs","kind":"dir","size":0,"mode":493}),
        json!({"path":"docs/hello.txt","kind":"file","size":13,"mode":384,"mtime":1_000_000_000}),
        json!({"path":"data.bin","kind":"file","size":content.len(),"future_field":true}),
    ]])
    .unwrap();
    let plan = peer.read_plan(3).expect("plan");
    for decision in &plan {
        assert_eq!(decision["action"], "send", "{plan:?}");
    }
    peer.send_file(1, "docs/hello.txt", b"hello, world\n", 0)
        .unwrap();
    peer.send_file(2, "data.bin", &content, 0).unwrap();
    peer.send_end().unwrap();
    let mut oks = Vec::new();
    loop {
        let frame = peer.read_control().expect("ack or end");
        match kind(&frame) {
            "ok" => oks.push(frame),
            "end" => break,
            other => panic!("unexpected {other:?}: {frame}"),
        }
    }
    assert_eq!(oks.len(), 2);
    let session = peer.session().expect("authenticated").clone();
    let expected_ok = |index: u64, content: &[u8], path: &str| {
        let hash = session.hash().digest(content);
        hex(&mac_ok(
            &session.ks,
            0,
            index,
            content.len() as u64,
            &hash,
            path,
        ))
    };
    assert_eq!(oks[0]["index"], 1);
    assert_eq!(
        oks[0]["mac"],
        expected_ok(1, b"hello, world\n", "docs/hello.txt")
    );
    assert_eq!(oks[1]["index"], 2);
    assert_eq!(oks[1]["mac"], expected_ok(2, &content, "data.bin"));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let hello = out.path().join("docs/hello.txt");
    assert_eq!(std::fs::read(&hello).unwrap(), b"hello, world\n");
    let meta = std::fs::metadata(&hello).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mtime(), 1_000_000_000);
    assert_eq!(
        std::fs::metadata(out.path().join("docs"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(std::fs::read(out.path().join("data.bin")).unwrap(), content);
}

#[test]
fn wrong_md5_or_wrong_mac_is_refused_and_not_kept() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = peer_sender(receiver.port, SENDER_FEATURES);
    peer.send_offer(&[vec![
        json!({"path":"bad-md5","kind":"file","size":5}),
        json!({"path":"bad-mac","kind":"file","size":5}),
        json!({"path":"given-up","kind":"file","size":5}),
        json!({"path":"good","kind":"file","size":5}),
    ]])
    .unwrap();
    peer.read_plan(4).expect("plan");
    assert_eq!(peer.hash(), util::peer::HashKind::Md5, "MD5 unless blake3");
    let data = |peer: &mut Peer, index: u64| {
        peer.send_control(&json!({"type":"data","index":index,"offset":0}))
            .unwrap();
        peer.send_frame(b"12345").unwrap();
        peer.send_frame(&[]).unwrap();
    };
    // The MAC is right for what was sent; the hash claims other content.
    data(&mut peer, 0);
    let mut done = peer.done_frame(0, "bad-md5", b"12345");
    done["hash"] = json!(hex(&peer.hash().digest(b"54321")));
    peer.send_control(&done).unwrap();
    // The hash is right; the MAC is for another name.
    data(&mut peer, 1);
    let done = peer.done_frame(1, "another-name", b"12345");
    peer.send_control(&done).unwrap();
    peer.send_error(Some(2), "io", "source vanished").unwrap();
    peer.send_file(3, "good", b"12345", 0).unwrap();
    peer.send_end().unwrap();
    let replies: Vec<_> = (0..4)
        .map(|_| peer.read_control().expect("reply"))
        .collect();
    assert_eq!(
        (replies[0]["type"].as_str(), replies[0]["code"].as_str()),
        (Some("error"), Some("checksum")),
        "{replies:?}"
    );
    assert_eq!(
        (replies[1]["type"].as_str(), replies[1]["code"].as_str()),
        (Some("error"), Some("mac")),
        "{replies:?}"
    );
    assert_eq!(replies[2]["type"], "ok", "{replies:?}");
    assert_eq!(replies[3]["type"], "end", "{replies:?}");
    assert_eq!(receiver.exit_code(), 5);
    assert_eq!(
        files_under(out.path()),
        vec![std::path::PathBuf::from("good")]
    );
}

#[test]
fn an_independent_receiver_gets_the_file_and_the_sender_checks_its_ok() {
    for forge in [false, true] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = std::thread::spawn(move || {
            let mut peer = Peer::accept(&listener).expect("accept");
            let receiver = Acceptor::new(KEY, "receiver").features(LISTENER_FEATURES);
            let session = peer.accept_handshake(&receiver).expect("handshake");
            let first = peer.read_control_raw().expect("offer");
            let entries = peer.read_offer_from(first).expect("a verified offer");
            assert_eq!(entries[0]["path"], "hello.txt");
            peer.send_plan(&[vec![Decision::Send.to_json(peer.hash())]])
                .unwrap();
            assert_eq!(kind(&peer.read_control().expect("data")), "data");
            let mut content = Vec::new();
            loop {
                let payload = peer.read_frame().unwrap().expect("a data frame");
                if payload.is_empty() {
                    break;
                }
                let bytes = if session.has("zstd") {
                    decode_data(&payload).expect("a valid data frame")
                } else {
                    payload
                };
                content.extend_from_slice(&bytes);
            }
            let done = peer.read_control().expect("done");
            let hash = session.hash().digest(&content);
            let size = content.len() as u64;
            assert_eq!(done["hash"], hex(&hash));
            assert!(hex_matches(
                done["mac"].as_str(),
                &mac_done(&session.ks, 0, 0, size, &hash, "hello.txt")
            ));
            let ok_mac = if forge {
                "00".repeat(32)
            } else {
                hex(&mac_ok(&session.ks, 0, 0, size, &hash, "hello.txt"))
            };
            peer.send_control(&json!({"type":"ok","index":0,"mac":ok_mac}))
                .unwrap();
            assert_eq!(kind(&peer.read_control().expect("end")), "end");
            // A sender that caught a forged ok may be gone already.
            let _ = peer.send_end();
            content
        });
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("hello.txt");
        std::fs::write(&file, b"hello, world\n").unwrap();
        let sent = send(&[&file], port, KEY, &[]);
        assert_eq!(fake.join().unwrap(), b"hello, world\n");
        let expected = if forge { 5 } else { 0 };
        assert_eq!(
            sent.status.code(),
            Some(expected),
            "forge={forge}: {}",
            stderr_of(&sent)
        );
    }
}

#[test]
fn a_receiver_without_a_key_prints_one_that_works() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), None, &[]);
    let told = receiver.stderr();
    let key = told
        .lines()
        .find_map(|line| line.trim().strip_prefix("XFER_KEY="))
        .unwrap_or_else(|| panic!("no key printed: {told}"))
        .to_string();
    assert!(key.len() >= 32, "{key}");
    assert!(
        told.contains(&format!("XFER_KEY={key} xfer send FILE...")),
        "{told}"
    );
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let sent = send(&[&src.path().join("f")], receiver.port, &key, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
}

#[test]
fn keygen_writes_a_private_key_file_that_both_sides_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("xfer.key");
    let made = run(xfer().arg("keygen").arg(&key_file));
    assert!(made.status.success(), "{}", stderr_of(&made));
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = run(xfer().arg("keygen").arg(&key_file));
    assert_eq!(again.status.code(), Some(1), "never replaces a key");

    let printed = run(xfer().arg("keygen"));
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(printed.trim().len(), 64);

    let out = tempfile::tempdir().unwrap();
    let key_arg = key_file.to_str().unwrap();
    let mut receiver = Receiver::start(out.path(), None, &["--key-file", key_arg]);
    assert!(
        !receiver.stderr().contains("generated"),
        "{}",
        receiver.stderr()
    );
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let mut command = xfer();
    command
        .args(["send", "--key-file", key_arg])
        .arg(dir.path().join("f"))
        .arg(format!("127.0.0.1:{}", receiver.port));
    let sent = run(&mut command);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
}

#[test]
fn short_keys_get_a_warning() {
    let out = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(out.path(), Some("short"), &[]);
    assert!(
        receiver.stderr().contains("only 5 bytes"),
        "{}",
        receiver.stderr()
    );
}

#[test]
fn exit_codes_for_usage_missing_files_and_refused_connections() {
    let usage = run(xfer().args(["send", "only-one-operand"]));
    assert_eq!(usage.status.code(), Some(2));
    let usage = run(xfer().args(["send", "-", "file", "127.0.0.1:9"]));
    assert_eq!(usage.status.code(), Some(2), "standard input must be alone");
    let missing = run(xfer()
        .args(["send", "/nonexistent/file", "127.0.0.1:9"])
        .env("XFER_KEY", KEY));
    assert_eq!(missing.status.code(), Some(7), "{}", stderr_of(&missing));
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let refused = send(&[&src.path().join("f")], port, KEY, &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("cannot connect"),
        "{}",
        stderr_of(&refused)
    );
    let no_key = run(xfer()
        .arg("send")
        .arg(src.path().join("f"))
        .arg("127.0.0.1:9"));
    assert_eq!(no_key.status.code(), Some(1));
    assert!(
        stderr_of(&no_key).contains("no key"),
        "{}",
        stderr_of(&no_key)
    );
    // New in version 2: 9, a peer without what this side requires.
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--no-encrypt"]);
    let clear_only = send(&[&src.path().join("f")], receiver.port, KEY, &["--encrypt"]);
    assert_eq!(
        clear_only.status.code(),
        Some(9),
        "{}",
        stderr_of(&clear_only)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        receiver.is_running(),
        "a failed handshake is not its session"
    );
    assert!(files_under(out.path()).is_empty());
}

#[test]
fn end_before_all_planned_data_is_a_protocol_error() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = peer_sender(receiver.port, SENDER_FEATURES);
    peer.send_offer(&[vec![
        json!({"path":"a","kind":"file","size":1}),
        json!({"path":"b","kind":"file","size":1}),
    ]])
    .unwrap();
    peer.read_plan(2).expect("plan");
    // Version 2 takes data only in the plan's order (an entry skipped over is itself
    // a protocol error), so the entry left out is the last one.
    peer.send_file(0, "a", b"a", 0).unwrap();
    peer.send_end().unwrap();
    assert_eq!(kind(&peer.read_control().expect("ok for a")), "ok");
    let error = peer.read_control().expect("error");
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("protocol"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("entry 1") && message.contains("end"),
        "{error}"
    );
    assert_eq!(receiver.exit_code(), 8);
    assert_eq!(files_under(out.path()), vec![std::path::PathBuf::from("a")]);
}
