//! Bytes changed on the way, by a relay or a forging peer: a flipped bit in data or in
//! a control frame, an offer edited or a feature list downgraded in transit, replayed
//! or reordered sealed frames, compressed frames that lie about their size, a wrong
//! digest or MAC, a plan offset past the end, a stream that ends early. Each ends in
//! the documented exit code and never in a wrong file.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util;
use crate::util::peer::{self, ALL_FEATURES, Acceptor, Initiator, Peer, SendEntry, hex, kind};
use crate::util::relay::{Faults, Relay};
use crate::util::*;

/// A sender that authenticated with `features` to a fresh receiver, has sent the
/// offer of one file of `len` bytes named `f`, read the plan and sent the file's
/// data header: the next frames are its data.
fn sending(features: &[&str], len: usize) -> (Receiver, Peer, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(out.path(), Some(KEY), &["--idle-timeout", "10"]);
    let mut sender = Peer::connect(("127.0.0.1", receiver.port)).unwrap();
    sender
        .initiate(&Initiator::new(KEY, "sender").features(features))
        .unwrap();
    let entry = SendEntry::file("f", vec![0; len]).to_json();
    sender.send_offer(&[vec![entry]]).unwrap();
    sender.read_plan(1).unwrap();
    sender
        .send_control(&json!({"type":"data","index":0,"offset":0}))
        .unwrap();
    (receiver, sender, out)
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

#[test]
fn a_replayed_or_reordered_sealed_frame_ends_the_session_with_mac_and_keeps_nothing() {
    for case in ["replay", "reorder", "drop"] {
        let (mut receiver, mut sender, out) = sending(&["aead"], 3 << 20);
        let first = sender.seal_next(&pattern(1 << 20, 1));
        let second = sender.seal_next(&pattern(1 << 20, 2));
        let third = sender.seal_next(&pattern(1 << 20, 3));
        sender.send_wire(&first).unwrap();
        match case {
            "replay" => sender.send_wire(&first).unwrap(),
            "reorder" => {
                sender.send_wire(&third).unwrap();
                sender.send_wire(&second).unwrap();
            }
            _ => sender.send_wire(&third).unwrap(),
        }
        let reply = sender.read_control();
        assert!(
            matches!(&reply, Ok(frame) if frame["code"] == "mac"),
            "{case}: {reply:?}"
        );
        assert_eq!(receiver.exit_code(), 5, "{case}");
        assert!(files_under(out.path()).is_empty(), "{case}: nothing kept");
    }
}

#[test]
fn compressed_frames_that_lie_or_explode_are_refused_at_the_cost_of_one_frame() {
    let bombs: [(&str, Vec<u8>); 5] = [
        // Declares 1 GiB: refused before a byte is inflated.
        (
            "a bomb",
            [&[1u8][..], &peer::zstd_rle_bomb(Some(1 << 30), 1 << 30)].concat(),
        ),
        (
            "no size",
            [&[1u8][..], &peer::zstd_frame_unsized(&[7; 1000])].concat(),
        ),
        (
            "lying size",
            [&[1u8][..], &peer::zstd_rle_bomb(Some(1000), 2000)].concat(),
        ),
        (
            "trailing bytes",
            [&[1u8][..], &peer::zstd_frame(&[7; 1000]), b"junk"].concat(),
        ),
        ("flag 2", [&[2u8][..], &[7; 1000]].concat()),
    ];
    for (case, payload) in bombs {
        let (mut receiver, mut sender, out) = sending(&["zstd"], 1000);
        sender.send_frame(&payload).unwrap();
        let reply = sender.read_control();
        assert!(
            matches!(&reply, Ok(frame) if frame["code"] == "protocol"),
            "{case}: {reply:?}"
        );
        assert_eq!(receiver.exit_code(), 8, "{case}");
        assert!(files_under(out.path()).is_empty(), "{case}");
    }
}

#[test]
fn an_offer_edited_on_the_way_is_refused_with_mac_before_anything_is_created() {
    for features in [&[][..], &ALL_FEATURES[..]] {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let mut sender = peer_connect(receiver.port);
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

#[test]
fn a_plan_offset_past_the_end_of_the_file_is_a_protocol_error_not_a_panic() {
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", b"twelve bytes");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let liar = std::thread::spawn(move || {
        let mut receiver = Peer::accept(&listener).unwrap();
        receiver
            .accept_handshake(&Acceptor::new(KEY, "receiver").features(&["aead"]))
            .unwrap();
        let first = receiver.read_control_raw().unwrap();
        receiver.read_offer_from(first).unwrap();
        let plan = json!({"action":"send","offset":1000,"prefix_hash":"00".repeat(16)});
        receiver.send_plan(&[vec![plan]]).unwrap();
        receiver.read_control().ok()
    });
    let sent = send(&[&file], port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(8), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("does not fit"),
        "{}",
        stderr_of(&sent)
    );
    let told = liar.join().unwrap().expect("the sender said why");
    assert_eq!(told["code"], "protocol");
}

/// A `done` whose size is not the offered one, under a MAC that verifies, is the
/// sender's own word that its file changed (or could not be read) while it was
/// sent: still a per-entry `checksum`, as the protocol says, but the receiver says
/// what happened rather than only "size mismatch", which reads as damage.
#[test]
fn an_authentic_done_of_another_size_says_the_senders_file_changed() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = crate::util::Receiver::start(out.path(), Some(crate::util::KEY), &[]);
    let mut peer = crate::util::peer_sender(receiver.port, &["aead"]);
    let entry = serde_json::json!({"path": "grew", "kind": "file", "size": 4, "mode": 420});
    peer.send_offer(&[vec![entry]]).unwrap();
    peer.read_plan(1).expect("plan");
    peer.send_control(&serde_json::json!({"type": "data", "index": 0, "offset": 0}))
        .unwrap();
    peer.send_frame(b"abcd").unwrap();
    peer.send_frame(b"").unwrap();
    peer.send_control(&peer.done_frame(0, "grew", b"abcde"))
        .unwrap();
    let answer = peer.read_control().expect("an answer");
    assert_eq!(answer["code"], "checksum", "{answer}");
    peer.send_end().unwrap();
    let _ = receiver.exit_code();
    let said = receiver.stderr();
    assert!(
        said.contains("grew: the sender ended it at 5 bytes, not the 4 offered"),
        "{said}"
    );
    assert!(crate::util::files_under(out.path()).is_empty());
}
