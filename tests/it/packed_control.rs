//! Packed list frames (`zstd_control`, docs/PROTOCOL.md section 19): the offer and
//! plan of a large tree cross the wire compressed between two xfers and with an
//! independent implementation of the section, go as JSON to a peer that does not
//! list the feature, and a packed frame that breaks the section's rules is refused.

use std::path::Path;

use serde_json::{Value, json};

use crate::util::peer::{Initiator, SendEntry, mac_offer, transcript_bytes, type_first};
use crate::util::relay::{Faults, Relay};
use crate::util::server::Site;
use crate::util::*;

/// A tree of `files` small files in directories of 100, named as projects name them.
fn tree(parent: &Path, files: usize) -> std::path::PathBuf {
    let root = parent.join("project");
    for i in 0..files {
        let dir = root.join(format!("src/module_{:03}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("component_{i:05}.rs")), i.to_string()).unwrap();
    }
    root
}

/// The features of a current xfer's sender that this module's peers choose.
const PACKING: &[&str] = &["aead", "zstd_control"];

/// `json` packed as section 19 wants it (its `type` first).
fn packed(json: &Value) -> Vec<u8> {
    zstd::bulk::compress(&type_first(json), 3).unwrap()
}

#[test]
fn an_unchanged_tree_costs_its_offer_and_plan_packed() {
    let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = tree(src.path(), 3000);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let first = send(&[&root], receiver.port, KEY, &[]);
    assert!(first.status.success(), "{}", stderr_of(&first));
    // Again, through a relay that counts: every file is `same`, so what crosses is
    // the handshake, the offer of 3 030 entries and a plan that skips them all.
    let relay = Relay::start(receiver.port, Faults::default());
    let again = send(&[&root], relay.port, KEY, &["--json"]);
    assert!(again.status.success(), "{}", stderr_of(&again));
    assert_eq!(summary_event(&again)["same"], 3000);
    // As JSON the offer is ~380 KB (~130 bytes an entry) and the plan ~270 KB;
    // packed, 25 KB and under 1 KB here.
    let (offer, plan) = (relay.forwarded(), relay.returned());
    assert!(offer < 60_000, "the offer crossed in {offer} bytes");
    assert!(plan < 12_000, "the plan crossed in {plan} bytes");
    let _ = receiver.child.kill();
}

#[test]
fn a_peer_without_the_feature_gets_a_large_offer_as_json() {
    let src = tempfile::tempdir().unwrap();
    let root = tree(src.path(), 600);
    let (port, old) = old_receiver_taking_all();
    let sent = send(&[&root], port, KEY, &[]);
    let received = old.join().unwrap();
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(received.files.len(), 600);
    assert_eq!(
        received.files["project/src/module_005/component_00512.rs"],
        b"512"
    );
}

#[test]
fn an_independent_sender_packs_its_offer_and_reads_the_packed_plan() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = peer_sender(receiver.port, PACKING);
    peer.pack_lists = true;
    let entries: Vec<SendEntry> = (0..300)
        .map(|i| SendEntry::file(&format!("files/f{i:03}.txt"), format!("file {i}")))
        .collect();
    let report = peer.send_transfer(&entries).expect("a transfer");
    assert!(
        (0..300).all(|i| report.delivered(i)),
        "{:?}",
        report.answers
    );
    assert!(peer.unpacked >= 1, "the plan of 300 decisions came packed");
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let content = std::fs::read(out.path().join("files/f123.txt")).unwrap();
    assert_eq!(content, b"file 123");
}

#[test]
fn a_packed_frame_that_breaks_section_19_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let offer = json!({"type":"offer","entries":[{"path":"x","kind":"file","size":1}]});
    // A packed frame that is no list frame.
    let mut peer = peer_sender(receiver.port, PACKING);
    peer.send_frame(&packed(&json!({"type":"end"}))).unwrap();
    assert_error(peer.read_control().ok(), "protocol", "a packed end");
    // A packed offer whose MAC was taken over the packed bytes, not the JSON.
    let mut peer = peer_sender(receiver.port, PACKING);
    let bytes = packed(&offer);
    peer.send_frame(&bytes).unwrap();
    let ks = peer.session().expect("a session").ks;
    let mac = mac_offer(&ks, 0, &transcript_bytes(&[&bytes]));
    let end = json!({"type":"offer_end","count":1,"mac":crate::util::peer::hex(&mac)});
    peer.send_control(&end).unwrap();
    assert_error(peer.read_control().ok(), "mac", "a MAC over packed bytes");
    // A packed frame from a peer that did not choose the feature is not JSON.
    let mut peer = peer_sender(receiver.port, &["aead"]);
    peer.send_frame(&packed(&offer)).unwrap();
    assert_error(
        peer.read_control().ok(),
        "protocol",
        "packed without the feature",
    );
    // The receiver goes on serving, and nothing was written.
    assert!(receiver.is_running());
    assert!(files_under(out.path()).is_empty());
    let _ = receiver.child.kill();
}

#[test]
fn a_server_refuses_a_packed_request() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let mut peer = peer_connect(server.port());
    let client = Initiator::client(Site::key_of("alice"), "alice").features(PACKING);
    peer.initiate(&client).expect("authenticated");
    peer.send_frame(&packed(&json!({"type":"list","path":""})))
        .unwrap();
    assert_error(
        peer.read_control().ok(),
        "protocol",
        "a packed list request",
    );
    let mut again = server.login("alice");
    assert!(again.list("").is_ok(), "the server goes on serving");
}
