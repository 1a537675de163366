//! The features of version 2 against a hostile peer and on a measured link:
//! sealed frames replayed or reordered, compressed frames that lie or explode, a
//! transfer compressed end to end, and `--limit-rate` holding its rate.

mod util;

use std::time::{Duration, Instant};

use serde_json::json;
use util::peer::{self, Initiator, Peer, SendEntry};
use util::relay::{Faults, Relay};
use util::{KEY, Receiver, files_under, pattern, send, stderr_of};

/// A sender that authenticated with `features` to a fresh receiver, and has sent
/// the offer of one file of `len` bytes named `f` and read the plan.
fn offered(features: &[&str], len: usize) -> (Receiver, Peer, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(out.path(), Some(KEY), &["--idle-timeout", "10"]);
    let mut sender = Peer::connect(("127.0.0.1", receiver.port)).unwrap();
    sender
        .initiate(&Initiator::new(KEY, "sender").features(features))
        .unwrap();
    let entry = SendEntry::file("f", vec![0; len]).to_json();
    sender.send_offer(&[vec![entry]]).unwrap();
    sender.read_plan(1).unwrap();
    (receiver, sender, out)
}

#[test]
fn a_replayed_or_reordered_sealed_frame_ends_the_session_with_mac_and_keeps_nothing() {
    for case in ["replay", "reorder", "drop"] {
        let (mut receiver, mut sender, out) = offered(&["aead"], 3 << 20);
        sender
            .send_control(&json!({"type":"data","index":0,"offset":0}))
            .unwrap();
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
        let (mut receiver, mut sender, out) = offered(&["zstd"], 1000);
        sender
            .send_control(&json!({"type":"data","index":0,"offset":0}))
            .unwrap();
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
fn limit_rate_holds_the_average_within_a_fifth() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // 6 MiB at 2 MiB/s: three seconds.
    std::fs::write(src.path().join("paced.bin"), pattern(6 << 20, 8)).unwrap();
    for side in ["send", "recv"] {
        let out = tempfile::tempdir_in(out.path()).unwrap();
        let recv_flags: &[&str] = if side == "recv" {
            &["--limit-rate", "2M"]
        } else {
            &[]
        };
        let send_flags: &[&str] = if side == "send" {
            &["--limit-rate", "2M"]
        } else {
            &[]
        };
        let mut receiver = Receiver::start(out.path(), Some(KEY), recv_flags);
        let started = Instant::now();
        let sent = send(
            &[&src.path().join("paced.bin")],
            receiver.port,
            KEY,
            send_flags,
        );
        let took = started.elapsed();
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0);
        assert!(
            took >= Duration::from_millis(2400) && took <= Duration::from_millis(3600),
            "{side}: 6 MiB at 2 MiB/s took {took:?}"
        );
    }
}
