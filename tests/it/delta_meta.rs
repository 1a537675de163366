//! Feature `delta` beside feature `meta` (docs/PROTOCOL.md sections 16 and 18): a
//! basis is only a regular file reached without following links, so a link sitting
//! where the old version was (one a `meta` transfer delivered, say) is replaced and
//! never read through, and one in place of a parent directory is refused and never
//! walked; a name that is not UTF-8 finds its basis by its bytes; a sparse
//! file goes in runs, never as a delta, and keeps its holes over an older dense
//! version (a sender refuses a basis offered for one, `protocol`); a put over a link in a home of `xfer serve` replaces the link; both sides
//! count a delta's instructions, not the file, as the bytes moved (as meta counts a
//! sparse file's data, not its holes); a file small enough to go whole in one piece
//! (issue 21's small-file path) still goes as a delta when it has a basis. Bytes are
//! counted by a relay, both ways; files are checked from outside.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::json;

use crate::util::peer::{Acceptor, Peer};
use crate::util::relay::{Faults, Relay};
use crate::util::server::{Site, client, expect_exit};
use crate::util::tree::raw;
use crate::util::{
    KEY, Receiver, files_under, pattern, send, stderr_of, summary_event, write_older,
};

/// The size of the files these tests update.
const SIZE: usize = 8 << 20;
/// Generous room for the handshake, offer, plan, a signature of about a thousand
/// chunks and a chunk or two around a change.
const OVERHEAD: u64 = 128 << 10;

/// `old` with 64 KiB in the middle overwritten.
fn changed(old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    new[SIZE / 2..SIZE / 2 + (64 << 10)].copy_from_slice(&pattern(64 << 10, 62));
    new
}

/// Sends `file` through a counting relay to a `recv --overwrite` into `dst`;
/// returns the bytes that crossed, both ways.
fn send_over(file: &Path, dst: &Path) -> u64 {
    let mut receiver = Receiver::start(dst, Some(KEY), &["--overwrite"]);
    let relay = Relay::start(receiver.port, Faults::default());
    let sent = send(&[file], relay.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    relay.both_ways()
}

#[test]
fn a_link_where_the_old_version_was_is_replaced_and_never_read_as_a_basis() {
    let old = pattern(SIZE, 61);
    let new = changed(&old);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    fs::write(&file, &new).unwrap();
    // Outside the target, the old version; in it, `f` is a link to it.
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = outside.path().join("old");
    fs::write(&elsewhere, &old).unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&elsewhere, dst.path().join("f")).unwrap();

    let crossed = send_over(&file, dst.path());
    // Read through the link, the old version would have made this a delta of a
    // few hundred KiB; it went whole.
    assert!(
        crossed >= SIZE as u64,
        "only {crossed} bytes crossed: the link's target was taken as the basis"
    );
    let arrived = dst.path().join("f");
    assert_link_replaced_not_followed(&arrived, &new, &elsewhere, &old);
    assert_eq!(
        files_under(dst.path()),
        [Path::new("f")],
        "no temporaries left"
    );
}

#[test]
fn a_name_that_is_not_utf8_is_updated_by_a_delta() {
    // Such a name travels inside a tree (a single operand needs a UTF-8 name).
    let name: &[u8] = b"caf\xe9 old\xff";
    let old = pattern(SIZE, 63);
    let new = changed(&old);
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(raw(&tree, name), &new).unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir(dst.path().join("tree")).unwrap();
    let held = raw(&dst.path().join("tree"), name);
    fs::write(&held, &old).unwrap();
    // An hour older, as an older version is (same size and time would be `same`).
    crate::util::make_older(&held);

    let crossed = send_over(&tree, dst.path());
    assert!(
        crossed <= (64 << 10) + OVERHEAD,
        "{crossed} bytes crossed: the old version under the same bytes was not the basis"
    );
    assert!(
        fs::read(raw(&dst.path().join("tree"), name)).unwrap() == new,
        "the new version arrived under the same bytes"
    );
    assert_eq!(
        files_under(dst.path()),
        [raw(Path::new("tree"), name)],
        "no temporaries left, no second name"
    );
}

#[test]
fn a_sparse_file_over_an_older_dense_version_goes_in_runs_and_keeps_its_holes() {
    const MIB: u64 = 1 << 20;
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    // The old version, dense; the new one holds the same first 4 MiB (a delta
    // would find them) and then 60 MiB of hole.
    let old = pattern(SIZE, 64);
    write_older(dst.path(), "f", &old);
    let file = src.path().join("f");
    {
        use std::os::unix::fs::FileExt;
        let sparse = fs::File::create(&file).unwrap();
        sparse.set_len(64 * MIB).unwrap();
        sparse.write_all_at(&old[..4 << 20], 0).unwrap();
    }
    let allocated = |path: &Path| fs::metadata(path).unwrap().blocks() * 512;
    if allocated(&file) > 8 * MIB {
        eprintln!("skipped: the temporary filesystem keeps no holes");
        return;
    }

    send_over(&file, dst.path());
    let arrived = dst.path().join("f");
    assert!(
        fs::read(&arrived).unwrap() == fs::read(&file).unwrap(),
        "the same bytes, holes read as zeros"
    );
    // Built from a delta, the 60 MiB of zeros would have been written out.
    assert!(
        allocated(&arrived) <= allocated(&file) + MIB,
        "{} bytes allocated for a file that holds {} of data",
        allocated(&arrived),
        allocated(&file)
    );
    assert_eq!(
        files_under(dst.path()),
        [Path::new("f")],
        "no temporaries left"
    );
}

#[test]
fn a_put_over_a_link_in_a_home_replaces_it_and_never_reads_what_it_points_to() {
    let old = pattern(SIZE, 65);
    let new = changed(&old);
    let site = Site::new();
    site.users(&[("alice", "quota = \"20 MiB\"")]);
    fs::create_dir_all(site.home("alice")).unwrap();
    // Outside the home, the old version; in it, a link to it (as a `meta` put of
    // a link leaves one).
    let elsewhere = site.local("elsewhere", &old);
    std::os::unix::fs::symlink(&elsewhere, site.home("alice").join("f")).unwrap();
    let server = site.serve(&[]);
    let relay = Relay::start(server.port(), Faults::default());
    let local = site.local("f", &new);
    let to = format!("127.0.0.1:{}:", relay.port);
    let put = client(
        &site,
        "alice",
        &["send", "-f", local.to_str().unwrap(), &to],
    );
    expect_exit(&put, 0, "a put -f over a link");
    assert!(
        relay.both_ways() >= SIZE as u64,
        "only {} bytes crossed: the link's target was taken as the basis",
        relay.both_ways()
    );
    let arrived = site.home("alice").join("f");
    assert_link_replaced_not_followed(&arrived, &new, &elsewhere, &old);
    assert_eq!(
        server.usage("alice"),
        (new.len() as u64, 1),
        "the quota holds the file"
    );
}

#[test]
fn both_sides_count_a_deltas_instructions_as_the_bytes_moved() {
    let old = pattern(SIZE, 66);
    let new = changed(&old);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    fs::write(&file, &new).unwrap();
    let dst = tempfile::tempdir().unwrap();
    write_older(dst.path(), "f", &old);
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite", "--json"]);
    let sent = send(&[&file], receiver.port, KEY, &["--json"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let mut printed = String::new();
    let mut stdout = receiver.child.stdout.take().unwrap();
    std::io::Read::read_to_string(&mut stdout, &mut printed).unwrap();
    let received = printed
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "summary")
        .expect("the receiver's summary");
    let moved = summary_event(&sent)["bytes"].as_u64().unwrap();
    assert_eq!(received["bytes"].as_u64(), Some(moved), "{received}");
    // The 64 KiB that changed moved (with a chunk or two around it), not the file.
    assert!(
        ((64 << 10)..=(64 << 10) + OVERHEAD).contains(&moved),
        "{moved} bytes said to have moved"
    );
    assert!(fs::read(dst.path().join("f")).unwrap() == new);
}

#[test]
fn a_link_in_place_of_a_parent_directory_is_never_walked_for_a_basis() {
    let old = pattern(SIZE, 67);
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("d");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("f"), changed(&old)).unwrap();
    // Outside the target, a directory holding the old version; in the target, `d`
    // is a link to it.
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("f"), &old).unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dst.path().join("d")).unwrap();

    // A receiver that replaces no files refuses the link's name.
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &[]);
    let relay = Relay::start(receiver.port, Faults::default());
    let sent = send(&[&tree], relay.port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("d: refused by the receiver: d: is a symbolic link here"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(receiver.exit_code(), 6, "{}", receiver.stderr());
    // No signature of what the link leads to went out with the plan: that of 8 MiB
    // lists about a thousand chunks, 16 KiB of hex; everything here took about 1.3 KiB.
    assert!(
        relay.both_ways() < 8 << 10,
        "{} bytes crossed",
        relay.both_ways()
    );
    assert!(
        fs::symlink_metadata(dst.path().join("d"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is left as it is"
    );
    // One that replaces files replaces the link itself with a directory, as
    // `rsync -a` does: the file arrives whole, with no basis read through the link.
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite"]);
    let relay = Relay::start(receiver.port, Faults::default());
    let sent = send(&[&tree], relay.port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(0), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(
        relay.both_ways() >= SIZE as u64,
        "{} bytes crossed",
        relay.both_ways()
    );
    assert!(fs::symlink_metadata(dst.path().join("d")).unwrap().is_dir());
    assert_eq!(fs::read(dst.path().join("d/f")).unwrap(), changed(&old));
    assert!(
        fs::read(outside.path().join("f")).unwrap() == old,
        "untouched"
    );
}

#[test]
fn a_sender_refuses_a_basis_offered_for_a_sparse_file() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).expect("accept");
        let receiver = Acceptor::new(KEY, "receiver").features(&["delta", "meta"]);
        peer.accept_handshake(&receiver).expect("handshake");
        let first = peer.read_control_raw().expect("offer");
        let offered = peer.read_offer_from(first).expect("a verified offer");
        let basis = json!({"avg": 65536, "count": 1, "sums": "00".repeat(8)});
        let decision = json!({"action": "send", "offset": 0, "delta": basis});
        peer.send_plan(&[vec![decision]]).unwrap();
        let said = loop {
            match peer.read_control() {
                Ok(frame) if frame["type"] == "error" => break Some(frame),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        (offered, said)
    });
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    {
        use std::os::unix::fs::FileExt;
        let sparse = fs::File::create(&file).unwrap();
        sparse.set_len(64 << 20).unwrap();
        sparse.write_all_at(&pattern(1 << 20, 68), 0).unwrap();
    }
    let sent = send(&[&file], port, KEY, &[]);
    assert!(!sent.status.success(), "refused: {}", stderr_of(&sent));
    let (offered, said) = fake.join().unwrap();
    if offered[0]["sparse"] != true {
        eprintln!("skipped: the temporary filesystem keeps no holes");
        return;
    }
    let said = said.expect("an error frame");
    assert_eq!(said["code"], "protocol", "{said}");
}

#[test]
fn a_file_under_a_chunk_with_an_older_version_still_goes_as_a_delta() {
    // Files up to 1 MiB go in one piece when sent whole; one with a basis must not.
    let old = pattern(512 << 10, 69);
    let mut new = old.clone();
    new[200 << 10..(200 << 10) + 4096].copy_from_slice(&pattern(4096, 70));
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    fs::write(&file, &new).unwrap();
    let dst = tempfile::tempdir().unwrap();
    write_older(dst.path(), "f", &old);

    let crossed = send_over(&file, dst.path());
    assert!(
        crossed < 128 << 10,
        "{crossed} bytes crossed for 4 KiB changed in 512 KiB"
    );
    assert!(fs::read(dst.path().join("f")).unwrap() == new);
    assert_eq!(
        files_under(dst.path()),
        [Path::new("f")],
        "no temporaries left"
    );
}

/// The link that stood at `arrived` was replaced by the new version, and the file it
/// pointed to (`elsewhere`) still holds `old`: it was neither read as a basis nor
/// written through.
fn assert_link_replaced_not_followed(arrived: &Path, new: &[u8], elsewhere: &Path, old: &[u8]) {
    assert!(
        fs::symlink_metadata(arrived).unwrap().file_type().is_file(),
        "the link was replaced by the file"
    );
    assert!(fs::read(arrived).unwrap() == new, "the new version arrived");
    assert!(
        fs::read(elsewhere).unwrap() == old,
        "what the link pointed to is untouched"
    );
}
