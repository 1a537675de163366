//! Sparse files (issue 20, `PROTOCOL.md` section 16.4): holes found with
//! `SEEK_DATA`/`SEEK_HOLE` stay holes on the receiver (`du` within 1 MiB), the bytes
//! are identical (checked with `cmp` from outside), a rerun sends nothing, a peer
//! without `meta` gets the file dense, and runs that lie are `protocol` and leave
//! nothing behind.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::util::peer::{HashKind, Peer, hex, kind, mac_done, parse_control};
use crate::util::server::{Server, Site, client, expect_exit, send_as};
use crate::util::{
    KEY, Receiver, files_under, old_receiver_taking_all, partial_name, pattern, peer_sender, send,
    stderr_of, summary_event,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A file of `size` bytes that is a hole but for `data` at `at`.
fn sparse_file(path: &Path, size: u64, at: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    file.write_all_at(data, at).unwrap();
}

/// Bytes allocated on disk (`du`).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Whether the filesystem under `dir` keeps holes at all (tmpfs and ext4 do).
fn keeps_holes(dir: &Path) -> bool {
    let probe = dir.join("probe");
    sparse_file(&probe, 64 * MIB, 0, b"x");
    let kept = allocated(&probe) < MIB;
    std::fs::remove_file(probe).unwrap();
    kept
}

/// `cmp` from outside: identical bytes, holes read as zeros.
fn same_bytes(a: &Path, b: &Path) -> bool {
    Command::new("cmp")
        .arg(a)
        .arg(b)
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn holes_stay_holes_the_bytes_are_identical_and_a_rerun_sends_nothing() {
    let src = tempfile::tempdir().unwrap();
    if !keeps_holes(src.path()) {
        eprintln!("skipped: the temporary filesystem keeps no holes");
        return;
    }
    let tree = src.path().join("sparse");
    std::fs::create_dir(&tree).unwrap();
    sparse_file(&tree.join("hole"), 2 * GIB, 0, b"");
    sparse_file(
        &tree.join("middle"),
        2 * GIB,
        GIB,
        &pattern(MIB as usize, 7),
    );
    sparse_file(&tree.join("ends"), 10 * MIB, 0, b"head");
    std::fs::write(tree.join("dense"), pattern(100_000, 3)).unwrap();
    let out = tempfile::tempdir().unwrap();
    for round in ["first", "rerun"] {
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let sent = send(&[&tree], receiver.port, KEY, &["--json"]);
        assert!(sent.status.success(), "{round}: {}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{round}: {}", receiver.stderr());
        let summary = summary_event(&sent);
        let files = if round == "first" { 4 } else { 0 };
        assert_eq!(summary["files"], files, "{round}: {summary}");
        // What moved is the data (whole blocks of it), not 4 GiB of holes.
        let moved = summary["bytes"].as_u64().unwrap();
        assert!(moved < 2 * MIB, "{round}: {moved} bytes moved");
    }
    for name in ["hole", "middle", "ends", "dense"] {
        let (from, to) = (tree.join(name), out.path().join("sparse").join(name));
        assert!(same_bytes(&from, &to), "{name}: the bytes differ");
        let (used, kept) = (allocated(&from), allocated(&to));
        assert!(
            kept <= used + MIB && used <= kept + MIB,
            "{name}: {used} bytes allocated in the source, {kept} in the copy"
        );
    }
    assert!(allocated(&out.path().join("sparse/hole")) < MIB);
}

#[test]
fn a_peer_without_meta_gets_a_sparse_file_dense() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("holes.bin");
    let data = pattern(MIB as usize, 11);
    sparse_file(&file, 8 * MIB, 3 * MIB, &data);
    let (port, old) = old_receiver_taking_all();
    let sent = send(&[&file], port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let received = old.join().unwrap();
    assert_eq!(
        received.entries[0].get("sparse"),
        None,
        "{:?}",
        received.entries
    );
    let mut expected = vec![0; 8 * MIB as usize];
    expected[3 * MIB as usize..4 * MIB as usize].copy_from_slice(&data);
    assert!(
        received.files["holes.bin"] == expected,
        "dense and identical"
    );
}

/// Section 16.4's hash of a sparse entry: each run's offset, length and bytes, then
/// the size.
fn run_hash(hash: HashKind, runs: &[(u64, &[u8])], size: u64) -> Vec<u8> {
    let mut input = Vec::new();
    for (offset, bytes) in runs {
        input.extend_from_slice(&offset.to_be_bytes());
        input.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        input.extend_from_slice(bytes);
    }
    input.extend_from_slice(&size.to_be_bytes());
    hash.digest(&input)
}

/// An independent sender with `meta` (the test peer lists what it is told to)
/// offering one sparse file `path` of `size` bytes; the plan read.
fn sparse_sender(port: u16, path: &str, size: u64) -> Peer {
    let mut peer = peer_sender(port, &["aead", "meta"]);
    let entry = json!({"path": path, "kind": "file", "size": size, "sparse": true});
    peer.send_offer(&[vec![entry]]).unwrap();
    let plan = peer.read_plan(1).expect("plan");
    assert_eq!(plan[0], json!({"action":"send","offset":0}), "{plan:?}");
    peer
}

fn run(peer: &mut Peer, offset: u64, bytes: &[u8]) {
    peer.send_control(&json!({"type":"data","index":0,"offset":offset}))
        .unwrap();
    if !bytes.is_empty() {
        peer.send_frame(bytes).unwrap();
    }
    peer.send_frame(&[]).unwrap();
}

fn done(peer: &Peer, path: &str, size: u64, hash: &[u8]) -> Value {
    let ks = peer.session().expect("a session").ks;
    let mac = mac_done(&ks, 0, 0, size, hash, path);
    json!({"type":"done","index":0,"size":size,"hash":hex(hash),"mac":hex(&mac)})
}

#[test]
fn an_independent_sender_s_runs_are_written_at_their_offsets_and_verified() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let size = 5 * MIB;
    let mut peer = sparse_sender(receiver.port, "runs.bin", size);
    let (first, second) = (pattern(1000, 1), pattern(70_000, 2));
    run(&mut peer, 4096, &first);
    run(&mut peer, 3 * MIB, &second);
    let hash = run_hash(peer.hash(), &[(4096, &first), (3 * MIB, &second)], size);
    peer.send_control(&done(&peer, "runs.bin", size, &hash))
        .unwrap();
    let answer = peer.read_control().expect("an answer");
    assert_eq!(kind(&answer), "ok", "{answer}");
    peer.send_control(&json!({"type":"end"})).unwrap();
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let landed = std::fs::read(out.path().join("runs.bin")).unwrap();
    let mut expected = vec![0; size as usize];
    expected[4096..5096].copy_from_slice(&first);
    expected[3 * MIB as usize..3 * MIB as usize + 70_000].copy_from_slice(&second);
    assert!(landed == expected);
}

#[test]
fn a_sparse_file_is_never_resumed_and_cannot_go_to_standard_output() {
    let out = tempfile::tempdir().unwrap();
    // What an earlier, cut dense transfer of the same name and size left behind.
    let size = 3 * MIB;
    std::fs::write(out.path().join(partial_name("again.bin", size)), [7; 1000]).unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    // The plan says offset 0 (sparse_sender checks it), and the runs arrive.
    let mut peer = sparse_sender(receiver.port, "again.bin", size);
    let data = pattern(5000, 4);
    run(&mut peer, MIB, &data);
    let hash = run_hash(peer.hash(), &[(MIB, &data)], size);
    peer.send_control(&done(&peer, "again.bin", size, &hash))
        .unwrap();
    assert_eq!(kind(&peer.read_control().expect("an answer")), "ok");
    peer.send_control(&json!({"type":"end"})).unwrap();
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let landed = std::fs::read(out.path().join("again.bin")).unwrap();
    assert!(landed[..MIB as usize].iter().all(|&byte| byte == 0));
    assert_eq!(&landed[MIB as usize..MIB as usize + 5000], &data[..]);

    // Standard output cannot be read back for a run's hash: refused, said.
    let src = tempfile::tempdir().unwrap();
    if !keeps_holes(src.path()) {
        eprintln!("skipped: the temporary filesystem keeps no holes");
        return;
    }
    let file = src.path().join("holes.bin");
    sparse_file(&file, 64 * MIB, MIB, b"data");
    let mut command = crate::util::xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--stdout"])
        .env("XFER_KEY", KEY);
    let mut receiver = Receiver::spawn(command);
    let sent = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert!(stderr_of(&sent).contains("sparse"), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 6, "{}", receiver.stderr());
}

#[test]
fn a_sparse_file_put_on_a_server_keeps_its_holes_and_a_rerun_sends_nothing() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let local = site.path().join("local-holes");
    std::fs::create_dir(&local).unwrap();
    if !keeps_holes(&local) {
        eprintln!("skipped: the site's filesystem keeps no holes");
        return;
    }
    let file = local.join("disk.img");
    sparse_file(&file, GIB, 512 * MIB, &pattern(MIB as usize, 5));
    let put = send_as(&site, "alice", &[&file], &server.addr());
    expect_exit(&put, 0, "a sparse put");
    let stored = site.home("alice").join("disk.img");
    assert!(same_bytes(&file, &stored), "the bytes differ");
    assert!(
        allocated(&stored) < 2 * MIB,
        "{} allocated",
        allocated(&stored)
    );
    let again = client(
        &site,
        "alice",
        &["send", file.to_str().unwrap(), &server.addr(), "--json"],
    );
    expect_exit(&again, 0, "the rerun");
    assert_eq!(summary_event(&again)["same"], 1);
}

/// Reads frames up to the receiver's session-level error; its code.
fn refusal(peer: &mut Peer) -> Option<String> {
    loop {
        let payload = peer.read_frame().ok()??;
        if let Ok(frame) = parse_control(&payload)
            && kind(&frame) == "error"
        {
            return frame["code"].as_str().map(str::to_string);
        }
    }
}

/// What a lying sender does after the plan.
type Lie = fn(&mut Peer);

#[test]
fn runs_that_lie_are_protocol_and_leave_nothing() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let port = receiver.port;
    let cases: [(&str, Lie); 4] = [
        ("an offset going back", |peer| {
            run(peer, 1000, b"0123456789");
            run(peer, 1005, b"abc");
        }),
        ("a run past the size", |peer| run(peer, 4000, &[7; 200])),
        ("a run starting past the size", |peer| {
            run(peer, 5000, b"");
        }),
        ("a second header on an entry that is not sparse", |peer| {
            run(peer, 0, b"0123");
            run(peer, 10, b"x");
        }),
    ];
    for (case, lie) in cases {
        let mut peer = if case.contains("not sparse") {
            let mut peer = peer_sender(port, &["aead", "meta"]);
            let entry = json!({"path": "lie", "kind": "file", "size": 4096});
            peer.send_offer(&[vec![entry]]).unwrap();
            peer.read_plan(1).expect("plan");
            peer
        } else {
            sparse_sender(port, "lie", 4096)
        };
        lie(&mut peer);
        assert_eq!(refusal(&mut peer).as_deref(), Some("protocol"), "{case}");
    }
    // A `path_hex` that spells a UTF-8 name: one spelling per name.
    let mut peer = peer_sender(port, &["aead", "meta"]);
    let entry = json!({"path_hex": hex(b"lie"), "kind": "file", "size": 1});
    peer.send_offer(&[vec![entry]]).unwrap();
    assert_eq!(
        refusal(&mut peer).as_deref(),
        Some("protocol"),
        "lying path_hex"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(receiver.is_running());
    assert_eq!(files_under(out.path()), Vec::<std::path::PathBuf>::new());
}

/// A server with one user, alice, and her home, where its filesystem keeps holes
/// (`None`, said, where it does not).
fn alice_served_with_holes() -> Option<(Site, Server, std::path::PathBuf)> {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    std::fs::create_dir_all(&home).unwrap();
    if !keeps_holes(&home) {
        eprintln!("skipped: the site's filesystem keeps no holes");
        return None;
    }
    Some((site, server, home))
}

/// A `get` from a server sends a sparse file as runs too: its holes stay holes in
/// the local copy and cost nothing on the wire, as they do for a `send`.
#[test]
fn a_sparse_file_got_from_a_server_keeps_its_holes() {
    let Some((site, server, home)) = alice_served_with_holes() else {
        return;
    };
    let stored = home.join("disk.img");
    sparse_file(&stored, GIB, 512 * MIB, &pattern(MIB as usize, 6));
    let local = site.download_dir("holes");
    let got = client(
        &site,
        "alice",
        &[
            "get",
            &server.at("disk.img"),
            local.to_str().unwrap(),
            "--json",
        ],
    );
    expect_exit(&got, 0, "a sparse get");
    let copy = local.join("disk.img");
    assert!(same_bytes(&stored, &copy), "the bytes differ");
    assert!(allocated(&copy) < 2 * MIB, "{} allocated", allocated(&copy));
    let bytes = summary_event(&got)["bytes"].as_u64().unwrap();
    assert!(bytes < 2 * MIB, "{bytes} bytes moved for 1 MiB of data");
}

/// `get --stdout` takes a sparse file of a server as it took any file before
/// `get` sent runs: dense, every byte on standard output (a receiver writing there
/// cannot hash runs, so the server must not send them), not refused as "a sparse
/// file" with advice for `send`.
#[test]
fn a_sparse_file_got_to_standard_output_comes_whole() {
    let Some((site, server, home)) = alice_served_with_holes() else {
        return;
    };
    let stored = home.join("holey.img");
    let data = pattern(MIB as usize, 7);
    sparse_file(&stored, 8 * MIB, 3 * MIB, &data);
    let got = client(
        &site,
        "alice",
        &["get", &server.at("holey.img"), "--stdout"],
    );
    expect_exit(&got, 0, "a sparse get --stdout");
    assert_eq!(got.stdout.len() as u64, 8 * MIB);
    assert_eq!(
        got.stdout,
        std::fs::read(&stored).unwrap(),
        "the bytes differ"
    );
}

/// A sparse file cut on its way: its receiver keeps nothing of it (a sparse entry
/// is never resumed), and the sender says nothing is kept for a rerun either (it
/// said "64.00 MiB kept as partial data", holes counted as sent).
#[test]
fn a_sparse_file_cut_on_its_way_is_not_said_to_be_kept() {
    let src = tempfile::tempdir().unwrap();
    if !keeps_holes(src.path()) {
        eprintln!("skipped: the temporary filesystem keeps no holes");
        return;
    }
    let file = src.path().join("holes.bin");
    sparse_file(&file, 64 * MIB, 0, &pattern(12 << 20, 5));
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let relay = crate::util::relay::Relay::start(
        receiver.port,
        crate::util::relay::Faults::cut_after(5 * MIB),
    );
    let cut = send(&[&file], relay.port, KEY, &[]);
    let said = stderr_of(&cut);
    assert_eq!(cut.status.code(), Some(3), "{said}");
    assert_eq!(receiver.exit_code(), 3, "{}", receiver.stderr());
    assert!(!said.contains("kept"), "{said}");
    assert!(!said.contains("resume"), "{said}");
    assert_eq!(files_under(out.path()), Vec::<std::path::PathBuf>::new());
}
