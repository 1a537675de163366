//! What the two sides agree on in the handshake and what it means on the wire: the
//! protocol version, encryption (on by default; refused against `--no-encrypt`,
//! clear with one warning for a peer that cannot), BLAKE3 when asked, zstd that pays
//! on text and costs nothing on random data, and a server address given to a plain
//! receiver.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::util;
use crate::util::peer::{self, Peer};
use crate::util::relay::{Faults, Relay};
use crate::util::*;

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
fn a_version_1_peer_is_answered_version_and_the_receiver_keeps_waiting() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut old = peer_connect(receiver.port);
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
fn blake3_is_used_when_asked_and_required_by_the_side_that_asked() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), pattern(3 << 20, 7)).unwrap();
    let file = src.path().join("f");

    // The receiver asks: a sender that will not choose it is refused (exit 9).
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--hash", "blake3"]);
    let refused = send(&[&file], receiver.port, KEY, &["--hash", "md5"]);
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
        let log = receiver.wait_for_stderr("aead");
        assert!(log.contains("aead"), "{log}");
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

#[test]
fn compression_pays_on_text_and_costs_nothing_on_random_data() {
    let src = tempfile::tempdir().unwrap();
    let text: Vec<u8> = (0..200_000)
        .flat_map(|i| {
            format!(
                "2026-11-29 12:{:02}:{:02} INFO request {i} served in {} ms\n",
                i % 60,
                i % 53,
                i % 97
            )
            .into_bytes()
        })
        .collect();
    let random = pattern(8 << 20, 5);
    std::fs::write(src.path().join("log.txt"), &text).unwrap();
    std::fs::write(src.path().join("random.bin"), &random).unwrap();
    for (name, content, compressible) in [("log.txt", &text, true), ("random.bin", &random, false)]
    {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let relay = Relay::start(receiver.port, Faults::default());
        let sent = send(&[&src.path().join(name)], relay.port, KEY, &["--compress"]);
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0);
        assert_eq!(&std::fs::read(out.path().join(name)).unwrap(), content);
        let on_wire = relay.forwarded();
        if compressible {
            assert!(
                on_wire * 4 < content.len() as u64,
                "{name}: {on_wire} bytes sent"
            );
        } else {
            assert!(
                on_wire < content.len() as u64 + (64 << 10),
                "{name}: {on_wire} bytes sent"
            );
        }
    }
}

#[test]
fn compression_is_reported_as_bytes_before_and_after_on_both_sides() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let text = b"a line of a log that says the same thing again\n".repeat(80_000);
    let file = write_in(src.path(), "log.txt", &text);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&file], receiver.port, KEY, &["--compress", "--json"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let summary = summary_event(&sent);
    assert_eq!(summary["uncompressed_bytes"], text.len(), "{summary}");
    let after = summary["compressed_bytes"].as_u64().unwrap();
    assert!(after > 0 && after < text.len() as u64 / 10, "{summary}");
    assert_eq!(receiver.exit_code(), 0);
    // The receiver counts both ends of its decompressor: the same numbers.
    let log = receiver.stderr();
    assert!(log.contains("; compressed 3.59 MiB to "), "{log}");
    assert!(log.contains(":1)"), "{log}");

    // Without --compress nothing is said about it.
    std::fs::remove_file(out.path().join("log.txt")).unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let plain = send(&[&file], receiver.port, KEY, &["--json"]);
    assert!(plain.status.success(), "{}", stderr_of(&plain));
    assert!(summary_event(&plain).get("compressed_bytes").is_none());
    assert_eq!(receiver.exit_code(), 0);
    assert!(
        !receiver.stderr().contains("compressed"),
        "{}",
        receiver.stderr()
    );
}
