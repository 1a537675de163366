//! Protocol version 2 end to end, against the real binary: what an older or
//! hostile peer is told (a version-1 `auth`, an offer edited on the way, a feature
//! list downgraded by a relay), a sender giving up one file while the next still
//! arrives, BLAKE3 negotiated and required, and the independent peer of
//! `tests/util/peer.rs` sending to and receiving from xfer in every feature mode.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::peer::{self, Initiator, Peer, SendEntry};
use util::{KEY, Receiver, TIMEOUT, files_under, pattern, send, stderr_of, xfer};

const ALL: [&str; 3] = ["aead", "blake3", "zstd"];

fn connect(port: u16) -> Peer {
    Peer::connect(("127.0.0.1", port)).expect("connect")
}

#[test]
fn a_version_1_peer_is_answered_version_and_the_receiver_keeps_waiting() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut old = connect(receiver.port);
    let hello = old.read_hello().expect("hello");
    assert_eq!(hello["version"], 2);
    // A version-1 auth: version 1, its own labels, no user, no features.
    let na = peer::unhex(hello["nonce"].as_str().unwrap()).unwrap();
    let ni = [0x5a; 32];
    let mac = peer::labelled_mac(KEY.as_bytes(), "xfer/1 initiator", &[&na, &ni]);
    old.send_control(&json!({"type":"auth","version":1,"role":"sender","nonce":peer::hex(&ni),"mac":peer::hex(&mac)}))
        .unwrap();
    let reply = old.read_control().expect("an answer");
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("version"))
    );
    assert!(
        old.read_frame().map_or(true, |frame| frame.is_none()),
        "closed after"
    );
    // Not its session: the one-shot receiver still takes a real sender.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a"), b"after the old peer").unwrap();
    let sent = send(&[&src.path().join("a")], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    assert!(
        receiver.stderr().contains("version"),
        "{}",
        receiver.stderr()
    );
}

#[test]
fn an_offer_edited_on_the_way_is_refused_with_mac_before_anything_is_created() {
    for features in [&[][..], &ALL[..]] {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let mut sender = connect(receiver.port);
        sender
            .initiate(&Initiator::new(KEY, "sender").features(features))
            .expect("authenticated");
        let entry =
            json!({"path":"dir/hello.txt","kind":"file","size":13,"mode":420,"mtime":1700000000});
        let honest = serde_json::to_vec(&json!({"type":"offer","entries":[entry]})).unwrap();
        let mac = peer::mac_offer(
            &sender.session().unwrap().ks,
            0,
            &peer::transcript_bytes(&[&honest]),
        );
        // The same frame with the mode edited (420 -> 511: 0o644 -> 0o777).
        let edited = String::from_utf8(honest.clone())
            .unwrap()
            .replace("420", "511");
        sender.send_frame(edited.as_bytes()).unwrap();
        sender
            .send_control(&json!({"type":"offer_end","count":1,"mac":peer::hex(&mac)}))
            .unwrap();
        let reply = sender.read_control().expect("an answer");
        assert_eq!(reply["code"], "mac", "{features:?}: {reply}");
        assert_eq!(receiver.exit_code(), 5, "{features:?}");
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "{features:?}: nothing planned, created or written"
        );
    }
}

/// A relay that rewrites the `features` of the first frame from the listener (the
/// `hello`), as an attacker downgrading the connection would.
fn downgrading_relay(target: u16, keep: &'static [&'static str]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let mut prefix = [0; 4];
            if server.read_exact(&mut prefix).is_err() {
                continue;
            }
            let mut payload = vec![0; u32::from_be_bytes(prefix) as usize];
            if server.read_exact(&mut payload).is_err() {
                continue;
            }
            let mut hello: Value = serde_json::from_slice(&payload).unwrap();
            hello["features"] = json!(keep);
            let edited = serde_json::to_vec(&hello).unwrap();
            let _ = client.write_all(&(edited.len() as u32).to_be_bytes());
            let _ = client.write_all(&edited);
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
            std::thread::spawn(move || std::io::copy(&mut server, &mut client));
        }
    });
    port
}

#[test]
fn a_feature_list_downgraded_on_the_way_fails_the_handshake_on_both_sides() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("secret.txt"), b"not for eavesdroppers").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    // The attacker strips `aead` so that the transfer would go in clear.
    let relay = downgrading_relay(receiver.port, &["blake3", "zstd"]);
    let sent = send(&[&src.path().join("secret.txt")], relay, KEY, &[]);
    assert_eq!(sent.status.code(), Some(4), "{}", stderr_of(&sent));
    assert!(
        receiver.is_running(),
        "a failed handshake is not its session"
    );
    drop(receiver);
    assert_eq!(files_under(out.path()).len(), 0);
}

#[test]
fn a_sender_gives_up_a_file_it_cannot_read_and_the_next_still_arrives() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let vanishing = pattern(300_000, 1);
    std::fs::write(tree.join("a.bin"), &vanishing).unwrap();
    std::fs::write(tree.join("b.bin"), b"still arrives").unwrap();
    // Resumable data the receiver holds for a.bin from an earlier, cut transfer.
    std::fs::create_dir(out.path().join("tree")).unwrap();
    let partial = out
        .path()
        .join("tree")
        .join(partial_name("a.bin", vanishing.len() as u64));
    std::fs::write(&partial, &vanishing[..100_000]).unwrap();
    // The sender listens; a.bin disappears after it was offered-to-be.
    let mut command = xfer();
    command
        .args(["send", "--listen", "127.0.0.1:0", "--json"])
        .arg(&tree)
        .env("XFER_KEY", KEY);
    let mut sender = Receiver::spawn(command);
    std::fs::remove_file(tree.join("a.bin")).unwrap();
    let received = util::run(
        xfer()
            .args(["recv", &format!("127.0.0.1:{}", sender.port), "--dir"])
            .arg(out.path())
            .env("XFER_KEY", KEY),
    );
    let log = stderr_of(&received);
    assert_eq!(received.status.code(), Some(7), "{log}");
    assert!(log.contains("the sender gave up on it"), "{log}");
    assert!(!log.contains("checksum"), "not a checksum failure: {log}");
    assert_eq!(sender.exit_code(), 7);
    assert_eq!(
        std::fs::read(out.path().join("tree/b.bin")).unwrap(),
        b"still arrives"
    );
    assert_eq!(
        std::fs::read(&partial).unwrap(),
        &vanishing[..100_000],
        "the partial is kept for a later session"
    );
    assert!(!out.path().join("tree/a.bin").exists());
}

/// The name a receiver keeps partial data of `name` (offered with `size` bytes)
/// under: `.xfer-` and the first 32 hex digits of SHA-256(name 0x00 u64be(size)).
fn partial_name(name: &str, size: u64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0])
        .chain_update(size.to_be_bytes())
        .finalize();
    format!(".xfer-{}.partial", &peer::hex(&digest)[..32])
}

#[test]
fn blake3_is_used_when_asked_and_required_by_the_side_that_asked() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), pattern(3 << 20, 7)).unwrap();
    let file = src.path().join("f");

    // The receiver asks: a sender that does not choose it is refused (exit 9).
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--hash", "blake3"]);
    let refused = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(refused.status.code(), Some(9), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("blake3"),
        "{}",
        stderr_of(&refused)
    );
    let sent = send(
        &[&file],
        receiver.port,
        KEY,
        &["--hash", "blake3", "--json"],
    );
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    let events: Vec<Value> = String::from_utf8_lossy(&sent.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let file_event = events.iter().find(|e| e["event"] == "file").unwrap();
    assert_eq!(file_event["hash"], "blake3");
    assert_eq!(
        file_event["digest"],
        peer::hex(blake3::hash(&pattern(3 << 20, 7)).as_bytes())
    );
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(
        (summary["hash"].as_str(), summary["encrypted"].as_bool()),
        (Some("blake3"), Some(true))
    );

    // The sender asks of a listener that does not offer it: refused before auth.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer_side = std::thread::spawn(move || {
        let mut acceptor = Peer::accept(&listener).unwrap();
        acceptor.accept_handshake(&util::peer::Acceptor::new(KEY, "receiver").features(&["aead"]))
    });
    let refused = send(&[&file], port, KEY, &["--hash", "blake3"]);
    assert_eq!(refused.status.code(), Some(9), "{}", stderr_of(&refused));
    let err = peer_side.join().unwrap().unwrap_err();
    assert_eq!(err.remote_code(), Some("feature"));
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
        let mut sender = connect(receiver.port);
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
        // A sender chooses zstd only when it compresses.
        (&[][..], &["aead"][..]),
        (&["--no-encrypt"], &[]),
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
                .accept_handshake(&util::peer::Acceptor::new(KEY, "receiver").features(&ALL))
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

/// A relay that forwards both ways and keeps a copy of everything it saw.
fn capturing_relay(target: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0; 64 << 10];
                    while let Ok(n) = from.read(&mut buffer) {
                        if n == 0 || to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buffer[..n]);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn by_default_the_wire_carries_neither_the_content_nor_the_names() {
    let name = "quarterly-salaries-2026.csv";
    let content = b"alice;123456\nbob;654321\n".repeat(1000);
    for (flags, sealed) in [(&[][..], true), (&["--no-encrypt"][..], false)] {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join(name), &content).unwrap();
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let (relay, seen) = capturing_relay(receiver.port);
        let sent = send(&[&src.path().join(name)], relay, KEY, flags);
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0);
        assert_eq!(std::fs::read(out.path().join(name)).unwrap(), content);
        let wire = seen.lock().unwrap().clone();
        assert!(wire.len() > content.len(), "the relay saw the transfer");
        assert_eq!(
            contains(&wire, name.as_bytes()),
            !sealed,
            "{flags:?}: the name"
        );
        assert_eq!(
            contains(&wire, b"alice;123456"),
            !sealed,
            "{flags:?}: the content"
        );
        let log = stderr_of(&sent);
        assert_eq!(log.contains("not encrypted"), !sealed, "{log}");
    }
}

#[test]
fn encrypt_against_no_encrypt_is_refused_on_both_sides_with_a_clear_line() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    for (recv_flag, send_flag) in [("--no-encrypt", "--encrypt"), ("--encrypt", "--no-encrypt")] {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[recv_flag]);
        let sent = send(&[&src.path().join("f")], receiver.port, KEY, &[send_flag]);
        let log = stderr_of(&sent);
        assert_eq!(sent.status.code(), Some(9), "{send_flag}: {log}");
        assert!(log.contains("aead"), "{log}");
        assert_eq!(log.lines().count(), 1, "one line: {log}");
        // The receiver logs the refusal and keeps waiting for a sender it can serve.
        let start = Instant::now();
        while !receiver.stderr().contains("aead") && start.elapsed() < TIMEOUT {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(receiver.stderr().contains("aead"), "{}", receiver.stderr());
        assert!(receiver.is_running());
    }
}

#[test]
fn a_peer_that_cannot_encrypt_gets_the_transfer_in_clear_with_one_warning() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"plain").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer_side = std::thread::spawn(move || {
        let mut acceptor = Peer::accept(&listener).unwrap();
        acceptor
            .accept_handshake(&util::peer::Acceptor::new(KEY, "receiver"))
            .unwrap();
        acceptor
            .receive_transfer(|_, _| util::peer::Decision::Send)
            .unwrap()
    });
    let sent = send(&[&src.path().join("f")], port, KEY, &[]);
    let log = stderr_of(&sent);
    assert!(sent.status.success(), "{log}");
    assert_eq!(log.matches("warning").count(), 1, "{log}");
    assert!(log.contains("in clear"), "{log}");
    assert_eq!(peer_side.join().unwrap().files["f"], b"plain");
}

#[test]
fn a_tree_whose_offer_needs_several_frames_goes_in_one_session_and_reruns_to_done() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Paths of about 3 KiB (12 directories of 250-byte names), so that 600 files
    // need an offer of several 1 MiB frames.
    let mut deep = src.path().join("many");
    for level in 0..12 {
        deep = deep.join(format!("{level:02}{}", "d".repeat(248)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    for file in 0..600u32 {
        std::fs::write(deep.join(format!("{file:04}")), file.to_be_bytes()).unwrap();
    }
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&src.path().join("many")], receiver.port, KEY, &["-q"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    let landed = files_under(out.path());
    assert_eq!(landed.len(), 600);
    let sample = out.path().join(&landed[123]);
    assert_eq!(std::fs::read(sample).unwrap(), 123u32.to_be_bytes());
    // A rerun finds everything there already and finishes the job at once.
    let mut again = Receiver::start(out.path(), Some(KEY), &[]);
    let rerun = send(&[&src.path().join("many")], again.port, KEY, &[]);
    assert!(rerun.status.success(), "{}", stderr_of(&rerun));
    assert!(
        stderr_of(&rerun).contains("600 already there"),
        "{}",
        stderr_of(&rerun)
    );
    assert_eq!(again.exit_code(), 0);
}

#[test]
fn a_server_address_given_to_a_plain_receiver_is_refused_before_it_is_used_up() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("a.txt");
    std::fs::write(&file, b"hello").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    // HOST:PORT:DIR is for servers: refused in the handshake, before `auth_ok`.
    let wrong = util::run(
        xfer()
            .arg("send")
            .arg(&file)
            .arg(format!("127.0.0.1:{}:inbox", receiver.port))
            .env("XFER_KEY", KEY),
    );
    assert_eq!(wrong.status.code(), Some(8), "{}", stderr_of(&wrong));
    assert!(
        stderr_of(&wrong).contains("not a server"),
        "{}",
        stderr_of(&wrong)
    );
    // So the one-shot receiver still takes its sender.
    let right = send(&[&file], receiver.port, KEY, &[]);
    assert!(right.status.success(), "{}", stderr_of(&right));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(std::fs::read(out.path().join("a.txt")).unwrap(), b"hello");
}
