//! Packed control frames (`zstd_control`, docs/PROTOCOL.md section 19): the offer and
//! plan of a large tree cross the wire compressed between two xfers, and go as JSON
//! to a peer that does not list the feature.

use std::path::Path;

use crate::util::relay::{Faults, Relay};
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

#[test]
fn a_mirrored_tree_costs_its_offer_and_plan_packed() {
    let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = tree(src.path(), 3000);
    let receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
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
    let mut receiver = receiver;
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
