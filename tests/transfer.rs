//! End-to-end: the real binary sending to itself on loopback, and a raw peer written
//! from PROTOCOL.md sending to it and receiving from it.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;
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
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut peer = RawPeer {
            stream,
            session: [0; 32],
        };
        peer.send(&json!({"type":"hello","version":1,"role":"receiver","nonce":"ab".repeat(32)}));
        let auth = peer.read().expect("auth");
        assert_eq!(auth["type"], "auth");
        peer.send(&json!({"type":"auth_ok","mac":"cd".repeat(32)}));
        // Whatever comes next must not be an offer.
        peer.read()
    });
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    std::fs::write(&file, b"data").unwrap();
    let sent = send(&[&file], port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(4), "{}", stderr_of(&sent));
    let after = fake.join().unwrap();
    assert!(
        after.as_ref().is_none_or(|frame| frame["type"] == "error"),
        "{after:?}"
    );
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
    ];
    let mut peer = RawPeer::sender(receiver.port, KEY);
    let entries: Vec<_> = hostile
        .iter()
        .map(|path| json!({"path":path,"kind":"file","size":4,"mode":420,"mtime":0}))
        .collect();
    peer.send(&json!({"type":"offer","entries":entries}));
    let plan = peer.read().expect("plan");
    let decisions = plan["entries"].as_array().unwrap();
    assert_eq!(decisions.len(), hostile.len());
    for (path, decision) in hostile.iter().zip(decisions) {
        assert_eq!(decision["action"], "skip", "{path:?}");
        assert_eq!(decision["code"], "bad_path", "{path:?}");
        let message = decision["message"].as_str().unwrap();
        assert!(
            !message.chars().any(char::is_control),
            "raw control characters in {message:?}"
        );
    }
    peer.send(&json!({"type":"end"}));
    assert_eq!(peer.read().expect("end")["type"], "end");
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
        let mut peer = RawPeer::sender(receiver.port, KEY);
        peer.send(
            &json!({"type":"offer","entries":[{"path":"big.bin","kind":"file","size":1_000_000}]}),
        );
        assert_eq!(peer.read().expect("plan")["entries"][0]["action"], "send");
        peer.send(&json!({"type":"data","index":0,"offset":0}));
        peer.send_raw_frame(&pattern(300_000, 2));
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
    let mut peer = RawPeer::sender(receiver.port, KEY);
    let content = pattern(250_000, 3);
    peer.send(&json!({"type":"offer","entries":[
        {"path":"docs","kind":"dir","size":null,"mode":493},
        {"path":"docs/hello.txt","kind":"file","size":13,"mode":384,"mtime":1_000_000_000},
        {"path":"data.bin","kind":"file","size":content.len(),"future_field":true}
    ]}));
    let plan = peer.read().expect("plan");
    for decision in plan["entries"].as_array().unwrap() {
        assert_eq!(decision["action"], "send", "{plan}");
    }
    peer.send_file(1, "docs/hello.txt", b"hello, world\n");
    peer.send_file(2, "data.bin", &content);
    peer.send(&json!({"type":"end"}));
    let mut oks = Vec::new();
    loop {
        let frame = peer.read().expect("ack or end");
        match frame["type"].as_str() {
            Some("ok") => oks.push(frame),
            Some("end") => break,
            other => panic!("unexpected {other:?}: {frame}"),
        }
    }
    assert_eq!(oks.len(), 2);
    assert_eq!(
        oks[0]["mac"],
        peer.file_mac("xfer/1 ok", 1, b"hello, world\n", "docs/hello.txt")
    );
    assert_eq!(
        oks[1]["mac"],
        peer.file_mac("xfer/1 ok", 2, &content, "data.bin")
    );
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let hello = out.path().join("docs/hello.txt");
    assert_eq!(std::fs::read(&hello).unwrap(), b"hello, world\n");
    assert_eq!(
        std::fs::metadata(&hello).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(out.path().join("data.bin")).unwrap(), content);
}

#[test]
fn wrong_md5_or_wrong_mac_is_refused_and_not_kept() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = RawPeer::sender(receiver.port, KEY);
    peer.send(&json!({"type":"offer","entries":[
        {"path":"bad-md5","kind":"file","size":5},
        {"path":"bad-mac","kind":"file","size":5},
        {"path":"given-up","kind":"file","size":5},
        {"path":"good","kind":"file","size":5}
    ]}));
    peer.read().expect("plan");
    peer.send(&json!({"type":"data","index":0,"offset":0}));
    peer.send_raw_frame(b"12345");
    peer.send_raw_frame(&[]);
    let mac = peer.file_mac("xfer/1 done", 0, b"12345", "bad-md5");
    peer.send(&json!({"type":"done","index":0,"size":5,"md5":md5_hex(b"54321"),"mac":mac}));
    peer.send(&json!({"type":"data","index":1,"offset":0}));
    peer.send_raw_frame(b"12345");
    peer.send_raw_frame(&[]);
    let wrong_mac = peer.file_mac("xfer/1 done", 1, b"12345", "another-name");
    peer.send(&json!({"type":"done","index":1,"size":5,"md5":md5_hex(b"12345"),"mac":wrong_mac}));
    peer.send(&json!({"type":"error","index":2,"code":"io","message":"source vanished"}));
    peer.send_file(3, "good", b"12345");
    peer.send(&json!({"type":"end"}));
    let replies: Vec<_> = (0..4).map(|_| peer.read().expect("reply")).collect();
    assert_eq!(
        (replies[0]["type"].as_str(), replies[0]["code"].as_str()),
        (Some("error"), Some("checksum"))
    );
    assert_eq!(
        (replies[1]["type"].as_str(), replies[1]["code"].as_str()),
        (Some("error"), Some("mac"))
    );
    assert_eq!(replies[2]["type"], "ok");
    assert_eq!(replies[3]["type"], "end");
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
        let key = KEY.as_bytes().to_vec();
        let fake = std::thread::spawn(move || {
            let mut peer = RawPeer::accept_as_receiver(&listener, &key);
            let offer = peer.read().expect("offer");
            assert_eq!(offer["entries"][0]["path"], "hello.txt");
            peer.send(&json!({"type":"plan","entries":[{"action":"send","offset":0}]}));
            assert_eq!(peer.read().expect("data")["type"], "data");
            let mut content = Vec::new();
            loop {
                let mut prefix = [0; 4];
                std::io::Read::read_exact(&mut peer.stream, &mut prefix).unwrap();
                let len = u32::from_be_bytes(prefix) as usize;
                if len == 0 {
                    break;
                }
                let mut chunk = vec![0; len];
                std::io::Read::read_exact(&mut peer.stream, &mut chunk).unwrap();
                content.extend_from_slice(&chunk);
            }
            let done = peer.read().expect("done");
            assert_eq!(done["md5"], md5_hex(&content));
            assert_eq!(
                done["mac"],
                peer.file_mac("xfer/1 done", 0, &content, "hello.txt")
            );
            let ok_mac = if forge {
                "00".repeat(32)
            } else {
                peer.file_mac("xfer/1 ok", 0, &content, "hello.txt")
            };
            peer.send(&json!({"type":"ok","index":0,"mac":ok_mac}));
            assert_eq!(peer.read().expect("end")["type"], "end");
            peer.send(&json!({"type":"end"}));
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
}

#[test]
fn end_before_all_planned_data_is_a_protocol_error() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = RawPeer::sender(receiver.port, KEY);
    peer.send(&json!({"type":"offer","entries":[
        {"path":"a","kind":"file","size":1},
        {"path":"b","kind":"file","size":1}
    ]}));
    peer.read().expect("plan");
    peer.send_file(1, "b", b"b");
    peer.send(&json!({"type":"end"}));
    assert_eq!(peer.read().expect("ok for b")["type"], "ok");
    let error = peer.read().expect("error");
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("protocol"))
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("end before entry 0"),
        "{error}"
    );
    assert_eq!(receiver.exit_code(), 8);
    assert_eq!(files_under(out.path()), vec![std::path::PathBuf::from("b")]);
}
