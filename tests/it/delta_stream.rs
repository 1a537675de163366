//! Feature `delta_stream` (docs/PROTOCOL.md, section 18.6): the receiver plans a
//! basis with `"stream":true` at once and streams its sums beside the data; the
//! sender copies only chunks whose sums it heard, and gives up a basis with
//! nothing in common (opcode `0x03`). Checked against the independent test peer on
//! either side: xfer's receiver streams what an independent sender can verify and
//! build from, xfer's sender finds moved data and gives up unrelated data against
//! an independent receiver, and hostile frames either way end the session with
//! nothing written. (Point to point and through `xfer serve`, xfer to xfer, the
//! updates of `delta.rs` run with this feature in force; a peer without it gets
//! section 18's plan, as `delta.rs` checks with the test peer.)

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use crate::delta::{assert_ended_keeping_old, copy, literal, send_instructions};
use crate::util::peer::{Acceptor, Peer, hex, labelled_mac, parse_control, unhex};
use crate::util::{KEY, Receiver, files_under, pattern, peer_sender, send, stderr_of, write_in};

const FEATURES: [&str; 2] = ["delta", "delta_stream"];

/// A chunk of a basis: where it starts, its length and its sum.
type Chunk = (usize, usize, [u8; 8]);

/// What a fake receiver sends once its plan is out, made from its session.
type Frames = fn(&Peer) -> Vec<Value>;

/// The chunks of `data` as section 18.2 cuts them with average `avg`.
fn chunks(data: &[u8], avg: u32) -> Vec<Chunk> {
    use fastcdc::v2020::{FastCDC, Normalization};
    FastCDC::with_level(data, avg / 4, avg, avg * 4, Normalization::Level1)
        .map(|chunk| {
            let bytes = &data[chunk.offset..chunk.offset + chunk.length];
            let sum = blake3::hash(bytes).as_bytes()[..8].try_into().unwrap();
            (chunk.offset, chunk.length, sum)
        })
        .collect()
}

/// The `mac` of the last `sums` frame of entry `index`: over all its sums, raw.
fn sums_mac(peer: &Peer, index: u64, sums: &[u8]) -> String {
    let ks = peer.session().expect("authenticated").ks;
    let parts: [&[u8]; 3] = [&peer.t.to_be_bytes(), &index.to_be_bytes(), sums];
    hex(&labelled_mac(&ks, "xfer/2 sums", &parts))
}

/// The next control frame that is not a `sums` frame (those come whenever the
/// receiver has them).
fn next_answer(peer: &mut Peer) -> Value {
    loop {
        let frame = peer.read_control().expect("a frame");
        if frame["type"] != "sums" {
            return frame;
        }
    }
}

/// A receiver holding `old` as `f`, and the test peer as a sender choosing both
/// features that offered `new` as `f`: the plan's decision for it.
fn offered_streamed(
    old: &[u8],
    new: &[u8],
    features: &[&str],
) -> (tempfile::TempDir, Receiver, Peer, Value) {
    let dst = tempfile::tempdir().unwrap();
    write_in(dst.path(), "f", old);
    let receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite"]);
    let mut peer = peer_sender(receiver.port, features);
    let entry = crate::util::peer::SendEntry::file("f", new.to_vec()).to_json();
    peer.send_offer(&[vec![entry]]).unwrap();
    let decision = peer.read_plan(1).unwrap().remove(0);
    (dst, receiver, peer, decision)
}

/// Sends entry 0 as a delta of `frames`, then the empty frame and a `done` for
/// `result`; the receiver's verdict (skipping sums frames).
fn send_delta(peer: &mut Peer, frames: &[Vec<u8>], result: &[u8]) -> Value {
    send_instructions(peer, frames, result);
    next_answer(peer)
}

#[test]
fn a_receiver_plans_at_once_and_streams_sums_an_independent_sender_can_verify() {
    let old = pattern(3 << 20, 81);
    let mut new = old.clone();
    new[1 << 20..(1 << 20) + 5000].copy_from_slice(&pattern(5000, 82));
    let (dst, mut receiver, mut peer, decision) = offered_streamed(&old, &new, &FEATURES);
    assert_eq!(decision["delta"], json!({"avg": 8192, "stream": true}));
    // The sums, in frames of 1 to 4096, the last with `end` and the MAC.
    let mut sums = Vec::new();
    let mac = loop {
        let frame = peer.expect("sums").unwrap();
        assert_eq!(frame["index"], 0, "{frame}");
        sums.extend(unhex(frame["sums"].as_str().unwrap()).unwrap());
        if frame["end"] == true {
            break frame["mac"].as_str().unwrap().to_string();
        }
    };
    assert_eq!(mac, sums_mac(&peer, 0, &sums), "the MAC covers every sum");
    let basis = chunks(&old, 8192);
    let expected: Vec<u8> = basis.iter().flat_map(|chunk| chunk.2).collect();
    assert!(
        sums == expected,
        "the sums are the basis's chunks, in order"
    );
    // Built from them: the chunks the new version shares, and literals.
    let mut frame = Vec::new();
    for (offset, len, sum) in chunks(&new, 8192) {
        match basis.iter().position(|chunk| chunk.2 == sum) {
            Some(k) => frame.extend(copy(k as u32, 1)),
            None => frame.extend(literal(len as u32, &new[offset..offset + len])),
        }
    }
    let said = send_delta(&mut peer, &[frame], &new);
    assert_eq!(said["type"], "ok", "{said}");
    peer.send_end().unwrap();
    peer.expect("end").unwrap();
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(fs::read(dst.path().join("f")).unwrap() == new);
    assert_eq!(files_under(dst.path()), [Path::new("f")]);
}

#[test]
fn hostile_instructions_against_a_streamed_basis_end_the_session_and_leave_the_old_file() {
    let old = pattern(1 << 20, 83);
    let hostile: [(&str, &[&str], Vec<u8>); 4] = [
        (
            "a copy of a chunk whose sum was not sent",
            &FEATURES,
            copy(1 << 20, 1),
        ),
        (
            "a copy after the end of copies",
            &FEATURES,
            [vec![3], copy(0, 1)].concat(),
        ),
        ("a second end of copies", &FEATURES, vec![3, 3]),
        (
            "an end of copies against a listed basis",
            &["delta"],
            vec![3],
        ),
    ];
    for (what, features, frame) in hostile {
        let (dst, mut receiver, mut peer, _) = offered_streamed(&old, &old, features);
        let said = send_delta(&mut peer, &[frame], &old);
        assert_ended_keeping_old(what, &said, &mut receiver, dst.path(), &old);
    }
}

#[test]
fn an_end_of_copies_stops_the_cutting_and_the_rest_goes_as_literals() {
    let old = pattern(4 << 20, 84);
    let new = pattern(4 << 20, 85);
    let (dst, mut receiver, mut peer, _) = offered_streamed(&old, &new, &FEATURES);
    let frames: Vec<Vec<u8>> = [
        vec![vec![3]],
        new.chunks(1 << 20)
            .map(|part| literal(part.len() as u32, part))
            .collect(),
    ]
    .concat();
    let said = send_delta(&mut peer, &frames, &new);
    assert_eq!(said["type"], "ok", "{said}");
    peer.send_end().unwrap();
    // Every sums frame of the basis came before the receiver's end, the last
    // with `end`.
    peer.expect("end").unwrap();
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(fs::read(dst.path().join("f")).unwrap() == new);
}

/// A receiver listing both features, on the port returned, that plans `decision`
/// for the one file it is offered and then hands its session to `then`.
fn fake_receiver<T: Send + 'static>(
    decision: Value,
    then: impl FnOnce(&mut Peer) -> T + Send + 'static,
) -> (u16, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).expect("accept");
        let receiver = Acceptor::new(KEY, "receiver").features(&FEATURES);
        peer.accept_handshake(&receiver).expect("handshake");
        let first = peer.read_control_raw().expect("offer");
        peer.read_offer_from(first).expect("a verified offer");
        peer.send_plan(&[vec![decision]]).unwrap();
        then(&mut peer)
    });
    (port, fake)
}

/// The decision that promises a basis's sums (18.6), chunks of 8 KiB.
fn streamed() -> Value {
    json!({"action": "send", "offset": 0, "delta": {"avg": 8192, "stream": true}})
}

/// A [`fake_receiver`] planning `decision` that then sends `frames` (built from the
/// session); the sender's last word, if it was an error, and its exit status.
fn sender_meets(content: &[u8], decision: Value, frames: Frames) -> (Option<Value>, bool) {
    let (port, fake) = fake_receiver(decision, move |peer| {
        for frame in frames(peer) {
            if peer.send_control(&frame).is_err() {
                break;
            }
        }
        last_error(peer)
    });
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", content);
    let sent = send(&[&file], port, KEY, &[]);
    (fake.join().unwrap(), sent.status.success())
}

/// Reads what the sender sends (data frames among it) until its error frame, or
/// the end of the connection.
fn last_error(peer: &mut Peer) -> Option<Value> {
    loop {
        match peer.read_frame() {
            Ok(Some(payload)) => match parse_control(&payload) {
                Ok(frame) if frame["type"] == "error" => return Some(frame),
                _ => continue,
            },
            _ => return None,
        }
    }
}

fn sums_frame(index: u64, sums: &str) -> Value {
    json!({"type": "sums", "index": index, "sums": sums})
}

#[test]
fn hostile_sums_frames_end_the_senders_session() {
    let content = pattern(256 << 10, 86);
    let promise = streamed();
    let hostile: [(&str, Frames, &str); 6] = [
        (
            "sums for an index not planned with stream",
            |_| vec![sums_frame(1, &"00".repeat(8))],
            "protocol",
        ),
        (
            "sums after the end",
            |peer| {
                let end = json!({"type": "sums", "index": 0, "sums": "", "end": true, "mac": sums_mac(peer, 0, &[])});
                vec![end, sums_frame(0, &"00".repeat(8))]
            },
            "protocol",
        ),
        (
            "4097 sums in one frame",
            |_| vec![sums_frame(0, &"00".repeat(8 * 4097))],
            "protocol",
        ),
        (
            "more sums than a basis may have",
            |_| vec![sums_frame(0, &"00".repeat(8 * 4096)); 65],
            "protocol",
        ),
        (
            "an empty frame without end",
            |_| vec![sums_frame(0, "")],
            "protocol",
        ),
        (
            "a bad MAC",
            |peer| {
                let wrong = sums_mac(peer, 0, &[1; 8]);
                vec![
                    json!({"type": "sums", "index": 0, "sums": "00".repeat(8), "end": true, "mac": wrong}),
                ]
            },
            "mac",
        ),
    ];
    for (what, frames, code) in hostile {
        let (said, succeeded) = sender_meets(&content, promise.clone(), frames);
        let said = said.unwrap_or_else(|| panic!("{what}: no error frame"));
        assert_eq!(said["code"], code, "{what}: {said}");
        assert!(!succeeded, "{what}: the sender failed");
    }
    // A plan that streams and lists at once is refused before any data.
    let both = json!({"action": "send", "offset": 0,
        "delta": {"avg": 8192, "stream": true, "count": 1, "sums": "00".repeat(8)}});
    let (said, _) = sender_meets(&content, both, |_| Vec::new());
    assert_eq!(said.unwrap()["code"], "protocol");
}

/// What xfer's sender sent an independent receiver that streamed a basis's sums
/// (all at once, before reading any data): the file built from the instructions,
/// the literal bytes among them, the copies, and whether copies were ended.
struct Heard {
    built: Vec<u8>,
    literal: usize,
    copies: usize,
    ended_copies: bool,
}

fn against_independent_receiver(basis: Vec<u8>, new: &[u8]) -> Heard {
    let (port, fake) = fake_receiver(streamed(), move |peer| {
        let chunks = chunks(&basis, 8192);
        let sums: Vec<u8> = chunks.iter().flat_map(|chunk| chunk.2).collect();
        for part in sums.chunks(8 * 4096) {
            peer.send_control(&sums_frame(0, &hex(part))).unwrap();
        }
        let mac = sums_mac(peer, 0, &sums);
        let end = json!({"type": "sums", "index": 0, "sums": "", "end": true, "mac": mac});
        peer.send_control(&end).unwrap();
        let header = peer.expect("data").unwrap();
        assert_eq!(header["delta"], true, "{header}");
        let mut heard = Heard {
            built: Vec::new(),
            literal: 0,
            copies: 0,
            ended_copies: false,
        };
        while let Some(frame) = peer.read_frame().unwrap().filter(|frame| !frame.is_empty()) {
            apply(&frame, (&basis, &chunks), &mut heard);
        }
        let done = peer.expect("done").unwrap();
        let hash = peer.hash().digest(&heard.built);
        assert_eq!(done["hash"], hex(&hash));
        peer.send_ok(0, heard.built.len() as u64, &hash, "f")
            .unwrap();
        peer.expect("end").unwrap();
        peer.send_end().unwrap();
        heard
    });
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", new);
    let sent = send(&[&file], port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    fake.join().unwrap()
}

/// Applies one data frame's instructions (section 18.3, and 18.6's end of copies).
fn apply(frame: &[u8], (basis, chunks): (&[u8], &[Chunk]), heard: &mut Heard) {
    let word = |at: usize| u32::from_be_bytes(frame[at..at + 4].try_into().unwrap()) as usize;
    let mut at = 0;
    while at < frame.len() {
        match frame[at] {
            1 => {
                let len = word(at + 1);
                heard.built.extend_from_slice(&frame[at + 5..at + 5 + len]);
                heard.literal += len;
                at += 5 + len;
            }
            2 => {
                assert!(!heard.ended_copies, "a copy after the end of copies");
                let (first, count) = (word(at + 1), word(at + 5));
                let start = chunks[first].0;
                let (offset, len, _) = chunks[first + count - 1];
                heard.built.extend_from_slice(&basis[start..offset + len]);
                heard.copies += 1;
                at += 9;
            }
            3 => {
                heard.ended_copies = true;
                at += 1;
            }
            other => panic!("instruction {other:#04x}"),
        }
    }
}

#[test]
fn a_sender_finds_moved_data_in_streamed_sums() {
    let old = pattern(6 << 20, 87);
    let mut new = pattern(100, 88);
    new.extend_from_slice(&old);
    let heard = against_independent_receiver(old, &new);
    assert!(heard.built == new, "the instructions build the new version");
    assert!(!heard.ended_copies);
    assert!(heard.literal < 64 << 10, "{} literal bytes", heard.literal);
}

#[test]
fn a_sender_ends_copies_for_a_basis_with_nothing_in_common() {
    let old = pattern(24 << 20, 89);
    let new = pattern(24 << 20, 90);
    let heard = against_independent_receiver(old, &new);
    assert!(heard.built == new, "the instructions build the new version");
    assert!(heard.ended_copies, "an end of copies (0x03)");
    assert_eq!((heard.copies, heard.literal), (0, new.len()));
}

#[test]
fn a_sender_without_delta_stream_gets_section_18s_plan_and_no_sums_frames() {
    let old = pattern(1 << 20, 91);
    let (dst, mut receiver, mut peer, decision) = offered_streamed(&old, &old, &["delta"]);
    let count = decision["delta"]["count"].as_u64().expect("a listed count");
    assert_eq!(
        decision["delta"]["sums"].as_str().unwrap().len() as u64,
        16 * count
    );
    assert!(decision["delta"].get("stream").is_none(), "{decision}");
    peer.send_control(&json!({"type": "data", "index": 0, "offset": 0, "delta": true}))
        .unwrap();
    peer.send_frame(&copy(0, count as u32)).unwrap();
    peer.send_frame(&[]).unwrap();
    peer.send_control(&peer.done_frame(0, "f", &old)).unwrap();
    // The very next frame is the answer: nothing is streamed to this peer.
    assert_eq!(peer.read_control().unwrap()["type"], "ok");
    peer.send_end().unwrap();
    peer.expect("end").unwrap();
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(fs::read(dst.path().join("f")).unwrap() == old);
}

#[test]
fn a_receiver_that_never_sends_the_sums_it_promised_is_given_up_at_the_idle_timeout() {
    // Connected and silent: no sums, no answer, until the sender hangs up.
    let (port, fake) = fake_receiver(streamed(), last_error);
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", &pattern(256 << 10, 87));
    let started = std::time::Instant::now();
    let sent = send(&[&file], port, KEY, &["--idle-timeout", "2"]);
    let waited = started.elapsed();
    assert_eq!(sent.status.code(), Some(3), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("sent no sums of its old copy for 2 s"),
        "{}",
        stderr_of(&sent)
    );
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    let _ = fake.join();
}

#[test]
fn hard_linked_old_copies_are_replaced_whole_and_their_other_names_keep_them() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Over the 32 MiB a group of files may hold: each is renamed into place as
    // soon as it is complete, so `y`'s old copy loses a name before it is read.
    let old = pattern(33 << 20, 88);
    crate::util::write_older(dst.path(), "x", &old);
    fs::hard_link(dst.path().join("x"), dst.path().join("y")).unwrap();
    fs::hard_link(dst.path().join("x"), dst.path().join("keep")).unwrap();
    let mut news = Vec::new();
    for (name, byte) in [("x", 1u8), ("y", 2)] {
        let mut new = old.clone();
        new[1000..1007].fill(byte);
        news.push((write_in(src.path(), name, &new), new));
    }
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite"]);
    let sent = send(&[&news[0].0, &news[1].0], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    for (path, new) in &news {
        let name = path.file_name().unwrap();
        assert!(fs::read(dst.path().join(name)).unwrap() == *new, "{name:?}");
    }
    assert!(
        fs::read(dst.path().join("keep")).unwrap() == old,
        "the third name"
    );
}

#[test]
fn a_sender_waiting_for_sums_has_sent_what_it_wrote() {
    // 18.6: a sender that waits for sums has flushed every frame it wrote; here
    // the entry's `data` header must reach a receiver that sends no sums at all.
    let (port, fake) = fake_receiver(streamed(), |peer| {
        peer.set_timeout(std::time::Duration::from_secs(2)).unwrap();
        let header = peer.expect("data");
        let _ = last_error(peer);
        header
    });
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", &pattern(1 << 20, 89));
    let sent = send(&[&file], port, KEY, &["--idle-timeout", "4"]);
    assert_eq!(sent.status.code(), Some(3), "{}", stderr_of(&sent));
    let header = fake.join().unwrap().expect("the data header within 2 s");
    assert_eq!(
        (header["index"].as_u64(), header["delta"].as_bool()),
        (Some(0), Some(true))
    );
}
