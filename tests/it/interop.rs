//! The protocol as PROTOCOL.md writes it. The independent peer of `tests/it/util/peer`
//! (sharing no code with the crate) is checked against the document's vectors and
//! against itself and its minimal server; then the real binary meets it in both
//! roles and in every feature mode, as a sender, a receiver, a client and a server.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};
use std::{fs, thread};

use serde_json::{Value, json};

use crate::util;
use crate::util::peer::server::{MiniServer, ServerConfig};
use crate::util::peer::{
    Acceptor, Decision, Initiator, Peer, PeerError, PeerResult, SendEntry, decode_data, hex,
    hex_matches, kind, mac_done, mac_ok, make_hello, *,
};
use crate::util::server::*;
use crate::util::*;

fn vector_a() -> Transcript {
    Transcript {
        na: std::array::from_fn(|i| i as u8),
        ni: std::array::from_fn(|i| i as u8 + 32),
        user: String::new(),
        hello_features: vec![],
        auth_features: vec![],
    }
}

/// The key of vectors A and B.
const K: &[u8] = b"correct horse battery staple";

fn vector_b() -> Transcript {
    Transcript {
        user: "alice".into(),
        hello_features: vec!["aead".into(), "blake3".into(), "zstd".into()],
        auth_features: vec!["blake3".into(), "aead".into()],
        ..vector_a()
    }
}

const OFFER: &[u8] = br#"{"type":"offer","entries":[{"path":"docs/hello.txt","kind":"file","size":13,"mode":420,"mtime":1700000000}]}"#;

const PLAN: &[u8] = br#"{"type":"plan","entries":[{"action":"send","offset":0}]}"#;

const HELLO: &[u8] = b"hello, world\n";

/// Runs `acceptor` on a thread with the accepted connection and `initiator` here
/// with the connecting one; returns both results.
fn loopback<A: Send + 'static, I>(
    acceptor: impl FnOnce(Peer) -> A + Send + 'static,
    initiator: impl FnOnce(Peer) -> I,
) -> (I, A) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let thread = thread::spawn(move || acceptor(Peer::accept(&listener).expect("accept")));
    let mine = initiator(Peer::connect(("127.0.0.1", port)).expect("connect"));
    (mine, thread.join().expect("the acceptor thread"))
}

/// Plays an initiator that sends `auth` as `edit` leaves it (computed honestly
/// for `cfg` first) and returns what the acceptor (with `acceptor`) answered.
fn answer_to(
    acceptor: Acceptor,
    cfg: Initiator,
    edit: impl FnOnce(&mut Value),
) -> (Option<String>, Option<String>) {
    let (answer, refused) = loopback(
        move |mut peer| {
            peer.accept_handshake(&acceptor)
                .err()
                .and_then(|e| e.refused_code().map(str::to_owned))
        },
        move |mut peer| {
            let hello = peer.read_hello().expect("hello");
            let hello = check_hello(&hello, &cfg.role).expect("a good hello");
            let (mut auth, _, _) = make_auth(&cfg, &hello).expect("an auth");
            edit(&mut auth);
            peer.send_control(&auth).expect("sent");
            match peer.read_control() {
                Ok(frame) if kind(&frame) == "error" => {
                    field_str(&frame, "code").map(str::to_owned)
                }
                Ok(frame) => Some(kind(&frame).to_owned()),
                Err(err) => panic!("no answer: {err}"),
            }
        },
    );
    (answer, refused)
}

fn unhex32(text: &str) -> [u8; 32] {
    unhex_n(text).expect("a vector is 64 hex digits")
}

/// A sender (initiator) and a receiver (acceptor) with these features.
fn transfer(
    features: &'static [&'static str],
    entries: Vec<SendEntry>,
    tune: fn(&mut Peer),
    decide: fn(u64, &Value) -> Decision,
) -> (SendReport, Received, u64) {
    let (report, received) = loopback(
        move |mut peer| {
            peer.accept_handshake(&Acceptor::new(K, "receiver").features(features))
                .expect("accepted");
            peer.frame_entries = 2;
            let received = peer.receive_transfer(decide).expect("received");
            assert_eq!(peer.t, 1);
            received
        },
        move |mut peer| {
            peer.initiate(&Initiator::new(K, "sender").features(features))
                .expect("authenticated");
            tune(&mut peer);
            let report = peer.send_transfer(&entries).expect("sent");
            (report, peer.t)
        },
    );
    (report.0, received, report.1)
}

fn compressible(len: usize) -> Vec<u8> {
    b"all work and no play makes jack a dull boy. "
        .iter()
        .cycle()
        .take(len)
        .copied()
        .collect()
}

fn home() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("a temporary home");
    fs::write(home.path().join("a.txt"), "alpha\n").expect("write");
    fs::create_dir_all(home.path().join("docs/sub")).expect("mkdir");
    fs::write(home.path().join("docs/b.txt"), "beta\n").expect("write");
    fs::write(home.path().join("docs/sub/c.bin"), pattern(200_000, 5)).expect("write");
    std::os::unix::fs::symlink("/etc/passwd", home.path().join("link")).expect("symlink");
    std::os::unix::fs::symlink("/etc", home.path().join("docs/sub/out")).expect("symlink");
    home
}

fn names(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or("?").to_owned(),
                i["kind"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// The code of the error frame a request was answered with, if any.
fn remote_code<T>(result: PeerResult<T>) -> Option<String> {
    result
        .err()
        .and_then(|e| e.remote_code().map(str::to_owned))
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
fn the_independent_peer_sends_to_xfer_in_every_feature_mode() {
    let modes: [&[&str]; 5] = [
        &[],
        &["aead"],
        &["blake3"],
        &["zstd"],
        &["aead", "blake3", "zstd"],
    ];
    for features in modes {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let mut sender = peer_connect(receiver.port);
        sender
            .initiate(
                &Initiator::new(KEY, "sender")
                    .features(features)
                    .user("alice"),
            )
            .expect("authenticated");
        let big = pattern(3 << 20, 3);
        let text = b"compressible line of text\n".repeat(20_000);
        let report = sender
            .send_transfer(&[
                SendEntry::dir("d").mode(0o750),
                SendEntry::file("d/big.bin", big.clone())
                    .mode(0o640)
                    .mtime(1_600_000_000),
                SendEntry::file("d/text.txt", text.clone()),
                SendEntry::file("empty", Vec::new()),
            ])
            .unwrap_or_else(|err| panic!("{features:?}: {err}"));
        for index in 1..4 {
            assert!(
                report.delivered(index),
                "{features:?}: entry {index}: {report:?}"
            );
        }
        assert_eq!(
            receiver.exit_code(),
            0,
            "{features:?}: {}",
            receiver.stderr()
        );
        assert_eq!(std::fs::read(out.path().join("d/big.bin")).unwrap(), big);
        assert_eq!(std::fs::read(out.path().join("d/text.txt")).unwrap(), text);
        assert_eq!(std::fs::read(out.path().join("empty")).unwrap(), b"");
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(out.path().join("d/big.bin")).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o777, meta.mtime()),
            (0o640, 1_600_000_000)
        );
        let dir_mode = std::fs::metadata(out.path().join("d"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o750, "{features:?}");
    }
}

#[test]
fn xfer_sends_to_the_independent_peer_in_every_mode() {
    for (flags, expected) in [
        // A sender chooses zstd only when it compresses, blake3 whenever it is listed.
        (&[][..], &["aead", "blake3"][..]),
        (&["--no-encrypt"], &["blake3"]),
        (&["--hash", "md5"], &["aead"]),
        (
            &["--hash", "blake3", "--compress"],
            &["aead", "blake3", "zstd"],
        ),
    ] {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.txt"), b"hello, world\n".repeat(50_000)).unwrap();
        std::fs::write(src.path().join("b.bin"), pattern(2 << 20, 9)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer_side = std::thread::spawn(move || {
            let mut acceptor = Peer::accept(&listener).unwrap();
            let session = acceptor
                .accept_handshake(
                    &util::peer::Acceptor::new(KEY, "receiver").features(&ALL_FEATURES),
                )
                .unwrap();
            let received = acceptor
                .receive_transfer(|_, _| util::peer::Decision::Send)
                .unwrap();
            (session.in_force.clone(), received)
        });
        let sent = send(
            &[&src.path().join("a.txt"), &src.path().join("b.bin")],
            port,
            KEY,
            flags,
        );
        assert!(sent.status.success(), "{flags:?}: {}", stderr_of(&sent));
        let (mut in_force, received) = peer_side.join().unwrap();
        in_force.sort();
        assert_eq!(in_force, expected, "{flags:?}");
        assert_eq!(received.files.len(), 2, "{flags:?}");
        assert_eq!(received.files["a.txt"], b"hello, world\n".repeat(50_000));
        assert_eq!(received.files["b.bin"], pattern(2 << 20, 9));
    }
}

#[test]
fn xfer_client_commands_work_against_the_minimal_server() {
    let site = Site::new();
    let home = site.path().join("mini-home");
    write(&home.join("a.txt"), b"alpha\n");
    write(&home.join("docs/b.txt"), b"beta\n");
    write(&home.join("docs/sub/c.bin"), &pattern(300_000, 5));
    std::os::unix::fs::symlink("/etc", home.join("docs/out")).unwrap();
    let mini = MiniServer::start(ServerConfig::new("alice", Site::key_of("alice"), &home));
    ls_lists_with_kinds_and_usage(&site, &mini);
    get_brings_a_tree_without_its_link(&site, &mini);
    send_mkdir_mv_and_rm_change_the_home(&site, &mini, &home);
}

/// `ls`, `ls --json` (a link is `other`) and `ls --usage` (no quota).
fn ls_lists_with_kinds_and_usage(site: &Site, mini: &MiniServer) {
    let at = |path: &str| format!("{}:{path}", mini.addr());
    let ls = client(site, "alice", &["ls", &mini.addr()]);
    expect_exit(&ls, 0, "ls");
    assert_eq!(lines(&ls), ["a.txt", "docs"]);
    let ls = client(site, "alice", &["ls", "--json", &at("docs")]);
    expect_exit(&ls, 0, "ls --json docs");
    let kinds: Vec<(String, String)> = lines(&ls)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["name"].as_str().unwrap().into(),
                v["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("b.txt", "file"), ("out", "other"), ("sub", "dir")]
            .map(|(n, k)| (n.to_owned(), k.to_owned()))
    );
    let usage = client(site, "alice", &["ls", "--usage", &mini.addr()]);
    expect_exit(&usage, 0, "ls --usage");
    assert!(
        stdout_of(&usage).contains("no quota"),
        "{}",
        stdout_of(&usage)
    );
}

/// `get` of a file and a tree brings no link; a missing name is `not_found`.
fn get_brings_a_tree_without_its_link(site: &Site, mini: &MiniServer) {
    let at = |path: &str| format!("{}:{path}", mini.addr());
    let dl = site.download_dir("mini");
    let get = client(
        site,
        "alice",
        &["get", &at("a.txt"), &at("docs"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 0, "get");
    assert_eq!(fs::read(dl.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(
        fs::read(dl.join("docs/sub/c.bin")).unwrap(),
        pattern(300_000, 5)
    );
    assert!(!dl.join("docs/out").exists(), "no symlink offered");
    let missing = client(
        site,
        "alice",
        &["get", &at("missing"), dl.to_str().unwrap()],
    );
    expect_refused(&missing, "not_found", "get of a missing file");
}

/// `mkdir`, `send` into a directory and into the home, `mv`, `rm`, and `rm` of a
/// full directory refused.
fn send_mkdir_mv_and_rm_change_the_home(site: &Site, mini: &MiniServer, home: &std::path::Path) {
    let at = |path: &str| format!("{}:{path}", mini.addr());
    expect_exit(
        &client(site, "alice", &["mkdir", &at("in/box")]),
        0,
        "mkdir",
    );
    let up = site.local("up.bin", &pattern(100_000, 6));
    let put = client(
        site,
        "alice",
        &["send", up.to_str().unwrap(), &at("in/box")],
    );
    expect_exit(&put, 0, "send into a directory");
    assert_eq!(
        fs::read(home.join("in/box/up.bin")).unwrap(),
        pattern(100_000, 6)
    );
    let put = client(site, "alice", &["send", up.to_str().unwrap(), &mini.addr()]);
    expect_exit(&put, 0, "send into the home");
    assert!(home.join("up.bin").is_file());
    expect_exit(
        &client(site, "alice", &["mv", &at("in/box/up.bin"), "in/moved.bin"]),
        0,
        "mv",
    );
    assert!(home.join("in/moved.bin").is_file());
    expect_exit(
        &client(site, "alice", &["rm", &at("in/moved.bin")]),
        0,
        "rm",
    );
    assert!(!home.join("in/moved.bin").exists());
    expect_refused(
        &client(site, "alice", &["rm", &at("docs")]),
        "denied",
        "rm of a full directory",
    );
}

#[test]
fn the_independent_client_works_against_xfer_serve() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    let mut peer = server.login("alice");

    puts_a_tree_and_makes_directories(&mut peer, &home);
    lists_and_counts_usage(&mut peer);
    gets_and_refused_requests_keep_t_right(&mut peer);
    renames_and_removes_are_refused_as_section_9_says(&mut peer, &home);
    malformed_paths_are_bad_paths(&mut peer);
    peer.remove("in/box/d/b.bin").expect("remove a file");
    peer.remove("in/box/d").expect("remove an empty directory");
    assert!(!home.join("in/box/d").exists());
    let got = peer.get(&["in/a2.txt"]).expect("a get after all that");
    assert_eq!(got.files["a2.txt"], b"alpha\n");
    peer.bye().expect("the server closes after bye");
    server.wait_for_log("alice bye", 1);
}

/// What alice puts into `in/box`: a file with a mode and time, a directory, a file
/// in it, and a name that climbs out.
fn alices_upload() -> [SendEntry; 4] {
    [
        SendEntry::file("a.txt", &b"alpha\n"[..])
            .mode(0o640)
            .mtime(1_600_000_000),
        SendEntry::dir("d"),
        SendEntry::file("d/b.bin", pattern(300_000, 1)),
        SendEntry::file("../escape", &b"no"[..]),
    ]
}

/// `mkdir` (twice, and of a bad path), then a put whose climbing name alone is refused.
fn puts_a_tree_and_makes_directories(peer: &mut Peer, home: &std::path::Path) {
    peer.mkdir("in/box").expect("mkdir");
    peer.mkdir("in/box")
        .expect("mkdir of an existing directory");
    assert_eq!(
        remote_code(peer.mkdir("in/../x")).as_deref(),
        Some("bad_path")
    );
    let upload = alices_upload();
    let report = peer.put("in/box", &upload).expect("a put");
    assert!(
        report.delivered(0) && report.delivered(2),
        "{:?}",
        report.answers
    );
    assert_eq!(report.code(3), Some("bad_path"));
    assert_eq!(peer.t, 1);
    let a = home.join("in/box/a.txt");
    assert_eq!(fs::read(&a).unwrap(), b"alpha\n");
    let meta = fs::metadata(&a).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        meta.modified().unwrap(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    );
    assert_eq!(
        fs::read(home.join("in/box/d/b.bin")).unwrap(),
        pattern(300_000, 1)
    );
}

/// `list` shows what was put, with size, mode and time; `usage` counts it, the
/// directories too.
fn lists_and_counts_usage(peer: &mut Peer) {
    let items = peer.list("in/box").expect("a listing");
    assert_eq!(item_names(&items), ["a.txt", "d"]);
    assert_eq!(
        (items[0]["size"].as_u64(), items[0]["mode"].as_u64()),
        (Some(6), Some(0o640))
    );
    assert_eq!(items[0]["mtime"], 1_600_000_000);
    assert_eq!(
        (items[1]["kind"].as_str(), items[1]["size"].as_u64()),
        (Some("dir"), Some(0))
    );
    // Two files, and three directories (`in`, `in/box`, `in/box/d`) of 4096 each.
    let usage = peer.usage().expect("usage");
    assert_eq!(usage["bytes"], 300_006 + 3 * 4096);
    assert_eq!(usage["files"], 5);
    assert_eq!(usage["quota_bytes"], 1_000_000);
    assert_eq!(usage["quota_files"], Value::Null);
}

/// Refused gets and puts begin no transfer; the next ones still verify.
fn gets_and_refused_requests_keep_t_right(peer: &mut Peer) {
    assert_eq!(
        remote_code(peer.get(&["missing"])).as_deref(),
        Some("not_found")
    );
    assert_eq!(
        remote_code(peer.get(&["in/box/a.txt", "in/box/missing"])).as_deref(),
        Some("not_found")
    );
    assert_eq!(remote_code(peer.get(&[])).as_deref(), Some("bad_path"));
    assert_eq!(
        remote_code(peer.get(&["in/box/a.txt", "in/a.txt"])).as_deref(),
        Some("bad_path"),
        "two paths with one last component"
    );
    assert_eq!(peer.t, 1);
    let got = peer.get(&["in/box/a.txt", "in/box/d"]).expect("a get");
    assert_eq!(peer.t, 2);
    assert_eq!(got.files["a.txt"], b"alpha\n");
    assert_eq!(got.files["d/b.bin"], pattern(300_000, 1));
    // A refused put too.
    assert_eq!(
        remote_code(peer.put("nowhere", &alices_upload()[..1])).as_deref(),
        Some("not_found")
    );
    let again = peer
        .put("in/box", &[SendEntry::file("c.txt", &b"gamma"[..])])
        .expect("a put");
    assert!(again.delivered(0), "{:?}", again.answers);
    assert_eq!(peer.t, 3);
}

/// A rename, then renames, removes and mkdirs refused with their codes.
fn renames_and_removes_are_refused_as_section_9_says(peer: &mut Peer, home: &std::path::Path) {
    peer.rename("in/box/a.txt", "in/a2.txt").expect("rename");
    assert!(home.join("in/a2.txt").is_file() && !home.join("in/box/a.txt").exists());
    assert_eq!(
        remote_code(peer.rename("in/missing", "x")).as_deref(),
        Some("not_found")
    );
    assert_eq!(
        remote_code(peer.rename("in", "in/box/in")).as_deref(),
        Some("bad_path")
    );
    assert_eq!(
        remote_code(peer.rename("in/a2.txt", "in/box/c.txt")).as_deref(),
        Some("exists")
    );
    assert_eq!(
        remote_code(peer.remove("in/box/d")).as_deref(),
        Some("denied")
    );
    assert_eq!(remote_code(peer.remove("")).as_deref(), Some("bad_path"));
    assert_eq!(
        remote_code(peer.remove("in/box/missing")).as_deref(),
        Some("not_found")
    );
    assert_eq!(
        remote_code(peer.rename("in/a2.txt", "nodir/x.txt")).as_deref(),
        Some("not_found")
    );
    assert_eq!(
        remote_code(peer.mkdir("in/a2.txt")).as_deref(),
        Some("exists")
    );
    assert_eq!(
        remote_code(peer.mkdir("in/a2.txt/sub")).as_deref(),
        Some("exists")
    );
}

/// Malformed paths and the server's own partial files are bad paths.
fn malformed_paths_are_bad_paths(peer: &mut Peer) {
    for path in [
        "a//b",
        "a/./b",
        "a/",
        "a\\b",
        "a\nb",
        "a\u{202e}b",
        ".xfer-1.part",
        "in/.xfer-2.partial",
    ] {
        assert_eq!(
            remote_code(peer.list(path)).as_deref(),
            Some("bad_path"),
            "{path:?}"
        );
        assert_eq!(
            remote_code(peer.remove(path)).as_deref(),
            Some("bad_path"),
            "{path:?}"
        );
    }
}

#[test]
fn handshake_vector_a() {
    let a = vector_a();
    assert_eq!(a.context(), b"\n\n");
    assert_eq!(
        hex(&a.mac_i(K)),
        "8683e208edca1e864bfb96d28a781c7ff1d5571d7ca04c28170559e9e2e05f93"
    );
    assert_eq!(
        hex(&a.mac_a(K)),
        "ee7625cf706383dc0def64ee12c791a0a6896332ab090b31b87b78b69cb40c0e"
    );
    assert_eq!(
        hex(&a.ks(K)),
        "10778f85122eeae399886248699d6cc50aff22972a803a65ac17b801c91288d0"
    );
    assert!(a.in_force().is_empty());
}

#[test]
fn handshake_vector_b() {
    let b = vector_b();
    assert_eq!(b.context(), b"alice\naead,blake3,zstd\nblake3,aead");
    assert_eq!(
        hex(&b.mac_i(K)),
        "7086731cc62bcdc68205b503036c248fb4e7e82b8e5b54406256c94e9da0bb25"
    );
    assert_eq!(
        hex(&b.mac_a(K)),
        "bec9e6011836e7c52e0fc821fd7aededdfa6510aa95b37b87d371a6c23820ca5"
    );
    assert_eq!(
        hex(&b.ks(K)),
        "f18212535663ed800c035c9996697600f714a0cc308d6c18c9c800b75c23ac01"
    );
    assert_eq!(b.in_force(), ["blake3", "aead"]);
    assert_eq!(HashKind::for_features(&b.in_force()), HashKind::Blake3);
}

#[test]
fn offer_and_plan_mac_vectors() {
    assert_eq!((OFFER.len(), PLAN.len()), (108, 56));
    let ks = vector_a().ks(K);
    let offer = mac_offer(&ks, 0, &transcript_bytes(&[OFFER]));
    assert_eq!(
        hex(&offer),
        "4078936cf7e838d0cb741a9b551d8fad5e980536dbae660e19811fa6b53c824e"
    );
    let plan = mac_plan(&ks, 0, &transcript_bytes(&[PLAN]));
    assert_eq!(
        hex(&plan),
        "89d96bb0840a0670f7fc8683aa9f47739efe5f16edeaf78e7c70e1441ff160b9"
    );
    // The offer parses as one valid entry.
    let frame = parse_control(OFFER).expect("the vector is a control frame");
    check_offer(frame["entries"].as_array().expect("entries")).expect("a valid offer");
}

#[test]
fn done_and_ok_mac_vectors_with_md5() {
    let ks = vector_a().ks(K);
    let h = HashKind::Md5.digest(HELLO);
    assert_eq!(hex(&h), "22c3683b094136c3398391ae71b20f04");
    let done = mac_done(&ks, 0, 0, 13, &h, "docs/hello.txt");
    let ok = mac_ok(&ks, 0, 0, 13, &h, "docs/hello.txt");
    assert_eq!(
        hex(&done),
        "d8c9d055443b07c00b2c072613c3a55c96eff37fe4af77e5b2109f1903a0a507"
    );
    assert_eq!(
        hex(&ok),
        "bc9fb6cc91a5e681991c54d07f28ad68a59a025386e5e4d65f4439105b804505"
    );
}

#[test]
fn done_and_ok_mac_vectors_with_blake3() {
    let ks = vector_b().ks(K);
    let h = HashKind::Blake3.digest(HELLO);
    assert_eq!(
        hex(&h),
        "623a5460d841b6d1c13d080e85500e0043fd4ba4a8ba9c1aa9b4f6e0d212276c"
    );
    let done = mac_done(&ks, 1, 0, 13, &h, "docs/hello.txt");
    let ok = mac_ok(&ks, 1, 0, 13, &h, "docs/hello.txt");
    assert_eq!(
        hex(&done),
        "479127f38cce2cd95a63f814c727f8089e7964bab5ddc5d9ba0003fe231b3bfb"
    );
    assert_eq!(
        hex(&ok),
        "d563a5945586d2bed2f379f32d15b577ea11be5078dde818d6b9bdf84f156379"
    );
}

#[test]
fn sealing_vectors_and_what_does_not_open() {
    let (k_i, k_a) = aead_keys(&vector_b().ks(K));
    assert_eq!(
        hex(&k_i),
        "9dbb87fc7549dbfd331647891462fbb8b76162fa98ed04eff1a8bbe4c01b581c"
    );
    assert_eq!(
        hex(&k_a),
        "0142ece723f8e51381ed6083a2108eba41b7c52d054dc1b2fdfdc9e2fc46cc9a"
    );
    let end = seal_frame(&k_i, 0, br#"{"type":"end"}"#);
    assert_eq!(
        hex(&end),
        "0000001e3f301bf9595052cbf50d81882238a36c8c747a13ca4dbb80b1bcc04a7344"
    );
    let empty = seal_frame(&k_a, 1, b"");
    assert_eq!(hex(&empty), "0000001027362703abc618e85dd62cfcd39349b0");

    let prefix = |w: &[u8]| [w[0], w[1], w[2], w[3]];
    assert_eq!(
        open_frame(&k_i, 0, prefix(&end), &end[4..]).as_deref(),
        Some(&br#"{"type":"end"}"#[..])
    );
    assert_eq!(
        open_frame(&k_a, 1, prefix(&empty), &empty[4..]),
        Some(vec![])
    );
    // Another counter (a replay), the other direction's key, a flipped bit, an
    // edited length prefix: none opens.
    assert_eq!(open_frame(&k_i, 1, prefix(&end), &end[4..]), None);
    assert_eq!(open_frame(&k_a, 0, prefix(&end), &end[4..]), None);
    let mut flipped = end.clone();
    flipped[10] ^= 1;
    assert_eq!(open_frame(&k_i, 0, prefix(&flipped), &flipped[4..]), None);
    assert_eq!(open_frame(&k_i, 0, [0, 0, 0, 0x1f], &end[4..]), None);
}

#[test]
fn password_key_vector() {
    let key = password_key("correct horse battery staple", "files.example.org", "alice");
    assert_eq!(
        key,
        b"e6d7419a2eb2552f49341a33fccb746c7614b9b219b7886415f035064bfeffd9"
    );
}

#[test]
fn hex_is_decoded_strictly() {
    assert_eq!(unhex("00ff7a"), Some(vec![0, 255, 0x7a]));
    for bad in ["00FF", "0", "0g", " 00", "00 "] {
        assert_eq!(unhex(bad), None, "{bad:?}");
    }
    assert!(unhex_n::<32>(&"ab".repeat(31)).is_none());
    assert!(hex_matches(Some("0102"), &[1, 2]));
    assert!(
        !hex_matches(Some("01"), &[1, 2]),
        "never a truncated comparison"
    );
}

#[test]
fn control_frames_are_parsed_strictly() {
    assert!(parse_control(br#"{"type":"end","extra":[1,{"a":null}]}"#).is_ok());
    for bad in [
        &br#"{"type":"end","type":"end"}"#[..],
        br#"{"type":"x","a":{"b":1,"b":2}}"#,
        br#"{"kind":"end"}"#,
        br#"["type"]"#,
        br#"{"type":7}"#,
        b"{\"type\":\"end\"",
        b"\xff",
    ] {
        assert!(
            parse_control(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let numbers = parse_control(
        br#"{"type":"x","a":2,"b":2.0,"c":-1,"d":18446744073709551616,"e":18446744073709551615}"#,
    )
    .expect("valid JSON");
    assert_eq!(field_u64(&numbers, "a"), Some(2));
    for not_a_number in ["b", "c", "d"] {
        assert_eq!(field_u64(&numbers, not_a_number), None, "{not_a_number}");
    }
    assert_eq!(field_u64(&numbers, "e"), Some(u64::MAX));
}

#[test]
fn user_names_realms_feature_lists_and_paths_are_checked_strictly() {
    for good in ["alice", "a", "Bob_2.x-y", &"a".repeat(64)] {
        assert!(valid_user(good), "{good:?}");
    }
    for bad in [
        "",
        ".alice",
        "-alice",
        "al ice",
        "al/ice",
        "élise",
        &"a".repeat(65),
    ] {
        assert!(!valid_user(bad), "{bad:?}");
    }
    assert!(valid_realm("files.example.org") && !valid_realm("") && !valid_realm("a\nb"));
    assert!(!valid_realm(&"r".repeat(256)));
    let ok = parse_features(Some(&json!(["aead", "x_1"]))).expect("well formed");
    assert_eq!(ok, ["aead", "x_1"]);
    assert_eq!(parse_features(None), Ok(vec![]));
    for bad in [
        json!(["aead", "aead"]),
        json!(["AEAD"]),
        json!([""]),
        json!("aead"),
        json!([1]),
        Value::Null,
    ] {
        assert!(parse_features(Some(&bad)).is_err(), "{bad}");
    }
    let seventeen: Vec<String> = (0..17).map(|i| format!("f{i}")).collect();
    assert!(parse_features(Some(&json!(seventeen))).is_err());

    for good in ["a", "docs/hello.txt", "a b/c.d", "…/x"] {
        assert_eq!(check_path(good, false), Ok(()), "{good:?}");
    }
    assert_eq!(check_path("", true), Ok(()));
    let long_component = "x".repeat(256);
    let long_path = ["y"; 2049].join("/");
    for bad in [
        "",
        "/etc",
        "a//b",
        "a/./b",
        "../x",
        "a/..",
        "a\\b",
        "a\0b",
        "a\u{7}b",
        "a\u{85}b",
        "evil\u{202e}txt",
        "zero\u{200b}width",
        "C:x",
        &long_component,
        &long_path,
    ] {
        assert!(check_path(bad, false).is_err(), "{bad:?}");
    }
}

#[test]
fn zstd_payloads_are_decoded_as_section_11_says() {
    let text = pattern(300_000, 1)
        .iter()
        .map(|b| b % 4)
        .collect::<Vec<u8>>();
    // What this peer sends decodes back, and the library's frame declares its size.
    assert_eq!(
        zstd_declared_size(&zstd_frame(&text)),
        Ok(Some(text.len() as u64))
    );
    assert_eq!(decode_data(&data_zstd(&text)).as_deref(), Ok(&text[..]));
    assert_eq!(decode_data(&data_raw(b"abc")).as_deref(), Ok(&b"abc"[..]));
    // Frames that carry no bytes are allowed and end nothing.
    assert_eq!(decode_data(&[0]), Ok(vec![]));
    assert_eq!(decode_data(&data_zstd(b"")), Ok(vec![]));
    // A hand-made frame that tells the truth decodes, as a library-made one does.
    let honest = zstd_frame_by_hand(Some(text.len() as u64), &text);
    assert_eq!(
        decode_data(&[&[1u8][..], &honest].concat()).as_deref(),
        Ok(&text[..])
    );
    let honest_bomb = zstd_rle_bomb(Some(1 << 20), 1 << 20);
    assert_eq!(
        decode_data(&[&[1u8][..], &honest_bomb].concat()).map(|v| v.len()),
        Ok(1 << 20)
    );

    let flagged = |frame: Vec<u8>| [&[1u8][..], &frame].concat();
    let mut trailing = data_zstd(b"abc");
    trailing.push(0);
    let mut skippable = vec![1, 0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0];
    skippable.extend_from_slice(b"abcd");
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("no flag", vec![]),
        ("flag 2", vec![2, 1, 2, 3]),
        ("no declared size", flagged(zstd_frame_unsized(&text))),
        (
            "no declared size, by hand",
            flagged(zstd_frame_by_hand(None, b"abc")),
        ),
        (
            "declares over 16 MiB",
            flagged(zstd_frame_by_hand(Some((16 << 20) + 1), b"abc")),
        ),
        (
            "declares more than it holds",
            flagged(zstd_frame_by_hand(Some(10), b"abc")),
        ),
        (
            "declares less than it holds",
            flagged(zstd_frame_by_hand(Some(2), b"abc")),
        ),
        ("a bomb", flagged(zstd_rle_bomb(Some(1 << 20), 1 << 30))),
        ("trailing bytes", trailing),
        ("two frames", [data_zstd(b"a"), zstd_frame(b"b")].concat()),
        ("a skippable frame", skippable),
        ("not zstd", vec![1, 1, 2, 3, 4, 5, 6]),
        ("cut short", flagged(zstd_frame(&text)[..20].to_vec())),
    ];
    for (what, payload) in hostile {
        assert!(decode_data(&payload).is_err(), "{what} was accepted");
    }
}

#[test]
fn handshake_without_aead_agrees_on_the_session() {
    let (initiator, acceptor) = loopback(
        |mut peer| {
            let session =
                peer.accept_handshake(&Acceptor::new(K, "receiver").features(&["blake3"]));
            (
                session.expect("accepted"),
                peer.read_control().expect("a frame"),
            )
        },
        |mut peer| {
            let session = peer.initiate(
                &Initiator::new(K, "sender")
                    .user("alice")
                    .features(&["zstd"]),
            );
            peer.send_control(&json!({"type": "end"})).expect("sent");
            (session.expect("authenticated"), peer.sealed())
        },
    );
    let ((mine, sealed), (theirs, frame)) = (initiator, acceptor);
    assert_eq!(mine.ks, theirs.ks);
    assert_eq!(mine.transcript, theirs.transcript);
    assert!(mine.in_force.is_empty() && !sealed);
    assert_eq!(theirs.transcript.user, "alice");
    assert_eq!(frame, json!({"type": "end"}));
}

#[test]
fn handshake_with_aead_seals_every_frame_after_it() {
    let (wire, (session, frames)) = loopback(
        |mut peer| {
            let cfg = Acceptor::new(K, "sender")
                .features(&ALL_FEATURES)
                .realm("here");
            let session = peer.accept_handshake(&cfg).expect("accepted");
            assert!(peer.sealed());
            let frames = (
                peer.read_frame().expect("frame 0"),
                peer.read_frame().expect("frame 1"),
            );
            peer.send_frame(b"").expect("sent");
            (session, frames)
        },
        |mut peer| {
            let cfg = Initiator::new(K, "receiver").features(&["aead", "blake3", "other"]);
            let session = peer.initiate(&cfg).expect("authenticated");
            assert_eq!(session.in_force, ["aead", "blake3"]);
            peer.send_control(&json!({"type": "end"})).expect("sent");
            peer.send_frame(b"").expect("sent");
            let (_, k_a) = aead_keys(&session.ks);
            let wire = peer.read_wire().expect("read").expect("a frame");
            assert_eq!(wire, seal_frame(&k_a, 0, b""), "sealed with k_A, counter 0");
            wire
        },
    );
    assert_eq!(wire.len(), 4 + TAG_LEN);
    assert!(session.has("aead") && session.hash() == HashKind::Blake3);
    assert_eq!(frames.0.as_deref(), Some(&br#"{"type":"end"}"#[..]));
    assert_eq!(frames.1, Some(vec![]));
}

#[test]
fn a_password_initiator_meets_an_acceptor_that_stores_only_k() {
    let key = password_key("hunter2 but longer", "realm.test", "bob");
    let ((), session) = loopback(
        move |mut peer| {
            let cfg = Acceptor {
                keys: Keys::PerUser(vec![("bob".into(), key)]),
                ..Acceptor::new("", "receiver").realm("realm.test")
            };
            peer.accept_handshake(&cfg).expect("accepted")
        },
        |mut peer| {
            let cfg = Initiator::new("", "sender")
                .user("bob")
                .password("hunter2 but longer");
            peer.initiate(&cfg).expect("authenticated");
        },
    );
    assert_eq!(session.transcript.user, "bob");
}

#[test]
fn the_acceptor_refuses_auth_in_the_order_of_section_4() {
    let acceptor = || {
        Acceptor::new(K, "receiver")
            .features(&["aead", "blake3"])
            .require(&["blake3"])
    };
    let honest = || {
        Initiator::new(K, "sender")
            .user("alice")
            .features(&["blake3"])
    };
    let code = |edit: fn(&mut Value)| answer_to(acceptor(), honest(), edit);
    let same = |(a, r): (Option<String>, Option<String>)| {
        assert_eq!(a, r, "what was sent is what was refused");
        a.unwrap_or_default()
    };

    assert_eq!(code(|_| {}), (Some("auth_ok".to_owned()), None));
    assert_eq!(same(code(|a| a["version"] = json!(1))), "version");
    assert_eq!(same(code(|a| a["version"] = json!(2.0))), "protocol");
    assert_eq!(same(code(|a| a["type"] = json!("hello"))), "protocol");
    // Step 1 comes before step 3: version 1 with a bad user is `version`.
    assert_eq!(
        same(code(|a| {
            a["version"] = json!(1);
            a["user"] = json!("");
        })),
        "version"
    );
    assert_eq!(same(code(|a| a["role"] = json!("client"))), "role");
    assert_eq!(same(code(|a| a["role"] = json!("receiver"))), "role");
    // Step 2 before step 3.
    assert_eq!(
        same(code(|a| {
            a["role"] = json!("server");
            a["user"] = json!(".x");
        })),
        "role"
    );
    assert_eq!(same(code(|a| a["user"] = json!(""))), "protocol");
    assert_eq!(same(code(|a| a["user"] = Value::Null)), "protocol");
    assert_eq!(
        same(code(|a| a["features"] = json!(["Blake3"]))),
        "protocol"
    );
    // Step 3 before step 4.
    assert_eq!(
        same(code(|a| {
            a["features"] = json!(["x", "x"]);
            a["nonce"] = json!("00");
        })),
        "protocol"
    );
    assert_eq!(
        same(code(|a| {
            let upper = field_str(a, "nonce").expect("a nonce").to_uppercase();
            a["nonce"] = json!(upper);
        })),
        "auth"
    );
    // A downgrade (a relay dropping a feature) or an edited user breaks mac_I.
    assert_eq!(same(code(|a| a["features"] = json!([]))), "auth");
    assert_eq!(same(code(|a| a["user"] = json!("mallory"))), "auth");
    assert_eq!(
        same(code(|a| {
            let upper = field_str(a, "mac").expect("a mac").to_uppercase();
            a["mac"] = json!(upper);
        })),
        "auth"
    );
    // Step 6 only after mac_I verified.
    let without_blake3 = Initiator::new(K, "sender").features(&["aead"]);
    assert_eq!(
        same(answer_to(acceptor(), without_blake3, |_| {})),
        "feature"
    );
    let wrong_key = Initiator::new("another key", "sender").features(&["aead"]);
    assert_eq!(same(answer_to(acceptor(), wrong_key, |_| {})), "auth");
}

#[test]
fn the_acceptor_checks_per_user_keys_and_its_own_nonce() {
    let per_user = || Acceptor {
        keys: Keys::PerUser(vec![("alice".into(), K.to_vec())]),
        ..Acceptor::new("", "sender")
    };
    let alice = Initiator::new(K, "receiver").user("alice");
    assert_eq!(
        answer_to(per_user(), alice, |_| {}).0.as_deref(),
        Some("auth_ok")
    );
    let bob = Initiator::new(K, "receiver").user("bob");
    assert_eq!(
        answer_to(per_user(), bob, |_| {}).0.as_deref(),
        Some("auth")
    );
    let nobody = Initiator::new(K, "receiver");
    assert_eq!(
        answer_to(per_user(), nobody, |_| {}).0.as_deref(),
        Some("auth")
    );

    // An initiator that echoes the acceptor's nonce is refused.
    let (answer, _) = loopback(
        |mut peer| {
            peer.accept_handshake(&Acceptor::new(K, "receiver"))
                .err()
                .map(|e| e.to_string())
        },
        |mut peer| {
            let hello = peer.read_hello().expect("hello");
            let mut transcript = vector_a();
            transcript.na = unhex32(field_str(&hello, "nonce").expect("a nonce"));
            transcript.ni = transcript.na;
            let auth = json!({"type": "auth", "version": 2, "role": "sender",
                "nonce": hex(&transcript.ni), "mac": hex(&transcript.mac_i(K))});
            peer.send_control(&auth).expect("sent");
            peer.read_control().expect("an answer")
        },
    );
    assert_eq!(answer["code"], "auth");
}

#[test]
fn the_initiator_answers_a_bad_hello_and_checks_mac_a() {
    // The acceptor side is played by hand: a hello edited by `edit`, then the
    // initiator's answer.
    fn against(edit: fn(&mut Value), cfg: Initiator) -> (Value, Option<String>) {
        let (refused, answer) = loopback(
            move |mut peer| {
                let (mut hello, _) = make_hello(&Acceptor::new(K, "receiver").features(&["aead"]));
                edit(&mut hello);
                peer.send_control(&hello).expect("sent");
                peer.read_control().expect("an answer")
            },
            move |mut peer| {
                peer.initiate(&cfg)
                    .err()
                    .and_then(|e| e.refused_code().map(str::to_owned))
            },
        );
        (answer, refused)
    }
    let sender = || Initiator::new(K, "sender");
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str); 9] = [
        (|h| h["version"] = json!(1), "version"),
        (|h| h["version"] = json!("2"), "protocol"),
        (|h| h["role"] = json!("sender"), "role"),
        (|h| h["realm"] = json!(""), "protocol"),
        (|h| h["realm"] = json!("a\u{1b}b"), "protocol"),
        (|h| h["features"] = json!(["aead", "aead"]), "protocol"),
        (|h| h["nonce"] = json!("ab"), "auth"),
        (|h| h["nonce"] = Value::Null, "protocol"),
        (
            |h| {
                h["role"] = json!("client");
                h["nonce"] = json!("ab");
            },
            "role",
        ),
    ];
    for (edit, expected) in cases {
        let (answer, refused) = against(edit, sender());
        assert_eq!(answer["code"], expected, "{answer}");
        assert_eq!(refused.as_deref(), Some(expected));
    }
    // A client requires aead: a hello without it is answered `feature`.
    let (answer, _) = against(
        |h| h["features"] = json!([]),
        Initiator::client(K, "alice").features(&["aead"]),
    );
    assert_eq!(answer["code"], "role", "the role pair is checked first");
    let (answer, _) = against(
        |h| {
            h["features"] = json!([]);
            h["role"] = json!("server");
        },
        Initiator::client(K, "alice"),
    );
    assert_eq!(answer["code"], "feature");

    // A wrong mac_A: the initiator closes without a word.
    let (result, closed) = loopback(
        |mut peer| {
            let cfg = Acceptor::new(K, "receiver");
            let (hello, _) = make_hello(&cfg);
            peer.send_control(&hello).expect("sent");
            peer.read_control().expect("auth");
            peer.send_control(&json!({"type": "auth_ok", "mac": "00".repeat(32)}))
                .expect("sent");
            peer.expect_close().is_ok()
        },
        |mut peer| {
            peer.initiate(&Initiator::new(K, "sender"))
                .err()
                .map(|e| e.to_string())
        },
    );
    assert_eq!(result.as_deref(), Some("mac_A did not verify"));
    assert!(closed);
}

#[test]
fn tampered_unsealed_and_replayed_frames_do_not_open() {
    let (_, results) = loopback(
        |mut peer| {
            let cfg = Acceptor::new(K, "receiver").features(&["aead"]);
            peer.accept_handshake(&cfg).expect("accepted");
            let first = peer.read_control().expect("frame 0 opens");
            let replay = peer.read_frame().err().map(|e| e.to_string());
            (first, replay)
        },
        |mut peer| {
            peer.initiate(&Initiator::new(K, "sender").features(&["aead"]))
                .expect("authenticated");
            let wire = peer.seal_next(br#"{"type":"end"}"#);
            peer.send_wire(&wire).expect("sent");
            peer.send_wire(&wire).expect("sent again");
        },
    );
    assert_eq!(results.0, json!({"type": "end"}));
    assert_eq!(results.1.as_deref(), Some("a sealed frame did not open"));

    let tampers: [fn(&mut Vec<u8>); 2] = [
        |w| *w.last_mut().expect("a tag") ^= 1,
        |w| *w = frame_bytes(br#"{"type":"end"}"#),
    ];
    for tamper in tampers {
        let (_, error) = loopback(
            |mut peer| {
                peer.accept_handshake(&Acceptor::new(K, "receiver").features(&["aead"]))
                    .expect("accepted");
                peer.read_frame().err().map(|e| e.to_string())
            },
            move |mut peer| {
                peer.initiate(&Initiator::new(K, "sender").features(&["aead"]))
                    .expect("authenticated");
                let mut wire = peer.seal_next(br#"{"type":"end"}"#);
                tamper(&mut wire);
                peer.send_wire(&wire).expect("sent");
            },
        );
        assert_eq!(error.as_deref(), Some("a sealed frame did not open"));
    }
}

#[test]
fn a_transfer_with_aead_zstd_and_blake3() {
    let entries = vec![
        SendEntry::dir("d").mode(0o755),
        SendEntry::file("d/a.txt", &b"hello, world\n"[..])
            .mode(0o644)
            .mtime(1_700_000_000),
        SendEntry::file("d/big.txt", compressible(700_000)),
        SendEntry::file("d/empty", Vec::new()),
        SendEntry::file("noise.bin", pattern(300_000, 7)),
        SendEntry::file("d/sub/late.txt", &b"parents need not be offered"[..]),
    ];
    for compress in [Compress::Auto, Compress::Always, Compress::Never] {
        let tune: fn(&mut Peer) = match compress {
            Compress::Auto => |p| p.chunk = 64 << 10,
            Compress::Always => |p| p.compress = Compress::Always,
            Compress::Never => |p| {
                p.compress = Compress::Never;
                p.frame_entries = 1;
            },
        };
        let (report, received, t) = transfer(
            &["aead", "zstd", "blake3"],
            entries.clone(),
            tune,
            |_, _| Decision::Send,
        );
        assert_eq!(t, 1);
        assert_eq!(report.plan.len(), entries.len());
        for (i, entry) in entries.iter().enumerate().skip(1) {
            assert!(
                report.delivered(i as u64),
                "{compress:?}: entry {i}: {:?}",
                report.answers.get(&(i as u64))
            );
            assert_eq!(
                received.files[&entry.path], entry.content,
                "{compress:?}: {}",
                entry.path
            );
        }
        assert!(
            !report.answers.contains_key(&0),
            "a directory has no data and no answer"
        );
        assert_eq!(received.entries[1]["mode"], 0o644);
        assert!(received.failed.is_empty());
    }
}

#[test]
fn a_transfer_without_features_with_skips_and_a_given_up_file() {
    let entries = vec![
        SendEntry::file("a", &b"first"[..]),
        SendEntry::file("b", &b"second"[..]).unreadable(),
        SendEntry::file("c", &b"third"[..]),
        SendEntry::file("d", &b"fourth"[..]),
    ];
    let decide = |i: u64, _: &Value| match i {
        2 => Decision::skip("exists", "already here"),
        3 => Decision::skip("same", "same size and mtime"),
        _ => Decision::Send,
    };
    let (report, received, _) = transfer(&[], entries, |_| {}, decide);
    assert!(report.delivered(0));
    assert_eq!(
        report.code(1),
        None,
        "the receiver does not answer a given-up entry"
    );
    assert_eq!(
        (report.code(2), report.code(3)),
        (Some("exists"), Some("same"))
    );
    assert_eq!(received.files.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(received.failed[&1]["code"], "io");
}

#[test]
fn a_stream_of_unknown_size_and_an_empty_offer() {
    let stream = vec![SendEntry::stream("stdin", compressible(100_000))];
    let (report, received, _) = transfer(
        &["zstd"],
        stream,
        |p| p.chunk = 30_000,
        |_, _| Decision::Resume(b"x".to_vec()),
    );
    assert!(report.delivered(0));
    assert_eq!(
        report.plan[0]["offset"], 0,
        "a stream is always planned from 0"
    );
    assert_eq!(received.files["stdin"], compressible(100_000));
    assert_eq!(received.entries[0]["size"], Value::Null);

    let (report, received, t) = transfer(&[], vec![], |_| {}, |_, _| Decision::Send);
    assert!(report.plan.is_empty() && received.entries.is_empty() && t == 1);
}

#[test]
fn resume_sends_from_the_planned_offset_only_when_the_prefix_matches() {
    let content = pattern(10_000, 3);
    let (report, seen) = loopback(
        |mut peer| {
            peer.accept_handshake(&Acceptor::new(K, "receiver").features(&["blake3"]))
                .expect("accepted");
            let first = peer.read_control_raw().expect("an offer");
            let entries = peer.read_offer_from(first).expect("a valid offer");
            let good = Decision::Resume(pattern(10_000, 3)[..4000].to_vec());
            let bad = Decision::Resume(vec![0; 4000]);
            let plan = [good.to_json(peer.hash()), bad.to_json(peer.hash())];
            assert_eq!(
                plan[0]["prefix_hash"].as_str().map(str::len),
                Some(64),
                "BLAKE3"
            );
            peer.send_plan(&[vec![plan[0].clone()], vec![plan[1].clone()]])
                .expect("sent");
            let mut seen = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                let data = peer.expect("data").expect("a data header");
                let mut content = if data["offset"] == 4000 {
                    pattern(10_000, 3)[..4000].to_vec()
                } else {
                    vec![]
                };
                while let Some(bytes) = peer
                    .read_frame()
                    .expect("a frame")
                    .filter(|b| !b.is_empty())
                {
                    content.extend_from_slice(&bytes);
                }
                let done = peer.expect("done").expect("done");
                let path = field_str(entry, "path").expect("a path");
                let hash = HashKind::Blake3.digest(&content);
                let ks = peer.session().expect("a session").ks;
                assert_eq!(
                    done["mac"],
                    hex(&mac_done(&ks, 0, i as u64, 10_000, &hash, path))
                );
                peer.send_ok(i as u64, content.len() as u64, &hash, path)
                    .expect("sent");
                seen.push((data["offset"].clone(), content));
            }
            peer.expect("end").expect("the sender's end");
            peer.send_end().expect("sent");
            seen
        },
        move |mut peer| {
            peer.initiate(&Initiator::new(K, "sender").features(&["blake3"]))
                .expect("authenticated");
            peer.frame_entries = 1;
            let entries = [
                SendEntry::file("one", content.clone()),
                SendEntry::file("two", content),
            ];
            peer.send_transfer(&entries).expect("sent")
        },
    );
    assert!(report.delivered(0) && report.delivered(1));
    assert_eq!(seen[0].0, 4000);
    assert_eq!(seen[1].0, 0, "a prefix that does not match: from 0");
    assert!(seen.iter().all(|(_, c)| *c == pattern(10_000, 3)));
}

#[test]
fn a_forged_offer_or_a_lying_done_is_refused() {
    // offer_end with a MAC over other bytes: the receiver answers `mac` and closes.
    let (answer, error) = loopback(
        |mut peer| {
            peer.accept_handshake(&Acceptor::new(K, "receiver").features(&["aead"]))
                .expect("accepted");
            peer.receive_transfer(|_, _| Decision::Send)
                .err()
                .map(|e| e.to_string())
        },
        |mut peer| {
            peer.initiate(&Initiator::new(K, "sender").features(&["aead"]))
                .expect("authenticated");
            let entry = SendEntry::file("x", &b"x"[..]).mode(0o4755).to_json();
            peer.send_control(&json!({"type": "offer", "entries": [entry]}))
                .expect("sent");
            let honest = SendEntry::file("x", &b"x"[..]).mode(0o644).to_json();
            let w = transcript_bytes(&[serde_json::to_vec(
                &json!({"type": "offer", "entries": [honest]}),
            )
            .expect("json")]);
            let ks = peer.session().expect("a session").ks;
            peer.send_control(
                &json!({"type": "offer_end", "count": 1, "mac": hex(&mac_offer(&ks, 0, &w))}),
            )
            .expect("sent");
            peer.read_control().expect("an answer")
        },
    );
    assert_eq!(answer["code"], "mac");
    assert_eq!(error.as_deref(), Some("mac_offer did not verify"));

    // A done whose size is not the offered one is a per-entry `checksum`; a wrong
    // mac_done a per-entry `mac`; the transfer goes on.
    let (answers, received) = loopback(
        |mut peer| {
            peer.accept_handshake(&Acceptor::new(K, "receiver"))
                .expect("accepted");
            peer.receive_transfer(|_, _| Decision::Send)
                .expect("the transfer ends well")
        },
        |mut peer| {
            peer.initiate(&Initiator::new(K, "sender"))
                .expect("authenticated");
            let offer = vec![
                SendEntry::file("a", &b"aaaa"[..]).to_json(),
                SendEntry::file("b", &b"bbbb"[..]).to_json(),
            ];
            peer.send_offer(&[offer]).expect("sent");
            peer.read_plan(2).expect("a plan");
            peer.send_control(&json!({"type": "data", "index": 0, "offset": 0}))
                .expect("sent");
            peer.send_frame(b"aaa").expect("sent");
            peer.send_frame(b"").expect("sent");
            let short = peer.done_frame(0, "a", b"aaa");
            peer.send_control(&short).expect("sent");
            peer.send_control(&json!({"type": "data", "index": 1, "offset": 0}))
                .expect("sent");
            peer.send_frame(b"bbbb").expect("sent");
            peer.send_frame(b"").expect("sent");
            let mut forged = peer.done_frame(1, "b", b"bbbb");
            forged["mac"] = json!("00".repeat(32));
            peer.send_control(&forged).expect("sent");
            peer.send_end().expect("sent");
            let answers = [
                peer.read_control().expect("an answer"),
                peer.read_control().expect("an answer"),
            ];
            assert_eq!(peer.read_control().expect("end")["type"], "end");
            answers
        },
    );
    assert_eq!(
        (answers[0]["index"].clone(), answers[0]["code"].clone()),
        (json!(0), json!("checksum"))
    );
    assert_eq!(
        (answers[1]["index"].clone(), answers[1]["code"].clone()),
        (json!(1), json!("mac"))
    );
    assert!(received.files.is_empty() && received.failed.len() == 2);
}

#[test]
fn a_client_lists_gets_and_puts_against_the_minimal_server() {
    let home = home();
    let server = MiniServer::start(ServerConfig {
        frame_entries: 2,
        ..ServerConfig::new("alice", K, home.path())
    });
    let mut client = Peer::connect(server.addr()).expect("connect");
    let session = client
        .initiate(&Initiator::client(K, "alice"))
        .expect("authenticated");
    assert!(client.sealed() && session.hash() == HashKind::Blake3);

    lists_with_kinds_and_refusals(&mut client);
    gets_a_tree_without_its_link(&mut client);
    puts_into_a_new_directory(&mut client, home.path());
    renames_and_removes(&mut client, home.path());
    client.bye().expect("the server closes");
    drop(server);
}

/// The root, one file, and what a listing refuses.
fn lists_with_kinds_and_refusals(client: &mut Peer) {
    let root = client.list("").expect("a listing");
    let expected = [("a.txt", "file"), ("docs", "dir"), ("link", "other")];
    assert_eq!(
        names(&root),
        expected.map(|(n, k)| (n.to_owned(), k.to_owned()))
    );
    assert_eq!(root[0]["size"], 6);
    assert_eq!(
        names(&client.list("docs/b.txt").expect("one item")),
        [("b.txt".to_owned(), "file".to_owned())]
    );
    for (path, code) in [
        ("nope", "not_found"),
        ("a.txt/x", "not_found"),
        ("link/x", "not_found"),
        ("../x", "bad_path"),
    ] {
        assert_eq!(
            remote_code(client.list(path)).as_deref(),
            Some(code),
            "{path}"
        );
    }
}

/// A get of a file and a tree (no symlink offered); refused gets begin no transfer.
fn gets_a_tree_without_its_link(client: &mut Peer) {
    let got = client.get(&["a.txt", "docs"]).expect("a get");
    assert_eq!(client.t, 1);
    let paths: Vec<&str> = got
        .entries
        .iter()
        .filter_map(|e| field_str(e, "path"))
        .collect();
    assert_eq!(
        paths,
        ["a.txt", "docs", "docs/b.txt", "docs/sub", "docs/sub/c.bin"],
        "no symlink offered"
    );
    assert_eq!(got.files["docs/sub/c.bin"], pattern(200_000, 5));
    assert_eq!(got.files["a.txt"], b"alpha\n");
    for (paths, code) in [
        (&["link"][..], "denied"),
        (&[][..], "bad_path"),
        (&["a.txt", "docs/sub/../a.txt"][..], "bad_path"),
        (&["a.txt", "x/a.txt"][..], "bad_path"),
        (&["a.txt", "missing"][..], "not_found"),
    ] {
        let refused = remote_code(client.get(paths));
        assert_eq!(refused.as_deref(), Some(code), "{paths:?}");
    }
    assert_eq!(client.t, 1, "a refused get begins no transfer");
}

/// `mkdir`, a put with two bad names refused alone, and the same put again.
fn puts_into_a_new_directory(client: &mut Peer, home: &std::path::Path) {
    client.mkdir("in/box").expect("mkdir");
    client
        .mkdir("in/box")
        .expect("mkdir of an existing directory");
    assert_eq!(
        remote_code(client.mkdir("a.txt/x")).as_deref(),
        Some("exists")
    );
    let upload = [
        SendEntry::file("x.txt", &b"xray"[..])
            .mode(0o600)
            .mtime(1_600_000_000),
        SendEntry::dir("y"),
        SendEntry::file("y/z.bin", compressible(300_000)),
        SendEntry::file("bad/../name", &b"no"[..]),
        SendEntry::file("x.txt", &b"twice"[..]),
    ];
    let report = client.put("in/box", &upload).expect("a put");
    assert_eq!(client.t, 2);
    assert!(
        report.delivered(0) && report.delivered(2),
        "{:?}",
        report.answers
    );
    assert_eq!(
        (report.code(3), report.code(4)),
        (Some("bad_path"), Some("bad_path"))
    );
    let on_disk = home.join("in/box");
    assert_eq!(
        fs::read(on_disk.join("y/z.bin")).expect("written"),
        compressible(300_000)
    );
    let meta = fs::metadata(on_disk.join("x.txt")).expect("written");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );

    // The same put again: `same` for the file with an mtime, `exists` for the other.
    let again = client.put("in/box", &upload[..3]).expect("a put");
    assert_eq!(
        (again.code(0), again.code(2)),
        (Some("same"), Some("exists"))
    );
    assert_eq!(
        remote_code(client.put("nowhere", &upload[..1])).as_deref(),
        Some("not_found")
    );
    assert_eq!(client.t, 3, "a refused put begins no transfer");
}

/// Usage, a rename, and the renames and removes the server refuses.
fn renames_and_removes(client: &mut Peer, home: &std::path::Path) {
    let usage = client.usage().expect("usage");
    assert_eq!(usage["files"], 5);
    assert_eq!(usage["quota_bytes"], Value::Null);
    client.rename("in/box/x.txt", "in/x.txt").expect("rename");
    assert_eq!(
        remote_code(client.rename("in", "in/box/in")).as_deref(),
        Some("bad_path")
    );
    assert_eq!(
        remote_code(client.rename("in/x.txt", "a.txt")).as_deref(),
        Some("exists")
    );
    assert_eq!(
        remote_code(client.rename("link", "link2")).as_deref(),
        Some("denied")
    );
    assert_eq!(
        remote_code(client.remove("in/box")).as_deref(),
        Some("denied"),
        "not empty"
    );
    assert_eq!(remote_code(client.remove("")).as_deref(), Some("bad_path"));
    client.remove("in/x.txt").expect("remove");
    assert!(!home.join("in/x.txt").exists());
}

#[test]
fn the_minimal_server_requires_aead_a_known_user_and_a_writable_home() {
    let home = home();
    let server = MiniServer::start(ServerConfig {
        read_only: true,
        idle: Duration::from_secs(1),
        ..ServerConfig::new("alice", K, home.path())
    });
    let refused = |cfg: Initiator| {
        let mut peer = Peer::connect(server.addr()).expect("connect");
        peer.initiate(&cfg)
            .err()
            .and_then(|e| e.remote_code().map(str::to_owned))
    };
    assert_eq!(
        refused(
            Initiator::new(K, "client")
                .user("alice")
                .features(&["blake3"])
        )
        .as_deref(),
        Some("feature")
    );
    assert_eq!(
        refused(Initiator::new(K, "client").features(&["aead"])).as_deref(),
        Some("auth")
    );
    assert_eq!(
        refused(Initiator::client("wrong", "alice")).as_deref(),
        Some("auth")
    );
    assert_eq!(
        refused(
            Initiator::client(K, "alice")
                .features(&["aead"])
                .require(&[])
        ),
        None
    );
    // Our own initiator refuses the pair first; sent anyway, the server says `role`.
    let mut peer = Peer::connect(server.addr()).expect("connect");
    let refusal = peer
        .initiate(&Initiator::new(K, "sender").features(&["aead"]))
        .err();
    assert_eq!(
        refusal.as_ref().and_then(PeerError::refused_code),
        Some("role")
    );
    let mut peer = Peer::connect(server.addr()).expect("connect");
    let hello = check_hello(&peer.read_hello().expect("hello"), "client").expect("a good hello");
    let (mut auth, _, _) = make_auth(&Initiator::client(K, "alice"), &hello).expect("an auth");
    auth["role"] = json!("sender");
    peer.send_control(&auth).expect("sent");
    assert_eq!(peer.read_control().expect("an answer")["code"], "role");

    let mut client = Peer::connect(server.addr()).expect("connect");
    client
        .initiate(&Initiator::client(K, "alice"))
        .expect("authenticated");
    let code = |r: PeerResult<()>| r.err().and_then(|e| e.remote_code().map(str::to_owned));
    assert_eq!(code(client.mkdir("new")).as_deref(), Some("denied"));
    assert_eq!(
        code(client.put("", &[]).map(drop)).as_deref(),
        Some("denied")
    );
    assert_eq!(client.list("docs").expect("still serving").len(), 2);
    // Idle past the server's timeout: it says `timeout` and closes.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        client.read_control().expect("an error frame")["code"],
        "timeout"
    );
    assert!(client.read_control().is_err());
}
