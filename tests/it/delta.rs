//! Feature `delta` (docs/PROTOCOL.md, "Feature `delta`"): a file the receiver holds in an
//! older version travels as instructions against it, so only the change crosses the
//! wire (counted by a relay, both ways), point to point and through `xfer serve` (put
//! and get), with MD5 and BLAKE3, sealed and in clear. The result is verified as a
//! whole file. `--whole-file` turns it off, a peer without the feature gets whole
//! files, a basis that changes is left alone, and hostile instructions or signatures
//! end the session without anything written.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use crate::util::peer::{Acceptor, Initiator, Peer, SendEntry};
use crate::util::relay::{Faults, Relay};
use crate::util::server::{Site, client, expect_exit};
use crate::util::{
    KEY, Receiver, files_under, pattern, peer_sender, send, stderr_of, stdout_events,
    summary_event, write_in, write_older,
};

/// The size of the files these tests update: large enough for a thousand chunks.
const SIZE: usize = 8 << 20;

/// An old version and a new one, and at most how many bytes may cross both ways.
struct Case {
    name: &'static str,
    old: Vec<u8>,
    new: Vec<u8>,
    bound: u64,
}

/// The four updates of the issue, scaled down: 64 KiB overwritten in the middle,
/// 100 bytes inserted at the start, 1 MiB appended, and the file cut short.
fn cases() -> Vec<Case> {
    let old = pattern(SIZE, 21);
    let mut overwritten = old.clone();
    overwritten[SIZE / 2..SIZE / 2 + (64 << 10)].copy_from_slice(&pattern(64 << 10, 22));
    let mut inserted = pattern(100, 23);
    inserted.extend_from_slice(&old);
    let mut appended = old.clone();
    appended.extend_from_slice(&pattern(1 << 20, 24));
    let truncated = old[..SIZE * 3 / 4].to_vec();
    // A signature of about a thousand chunks (16 KiB), a chunk or two around each
    // change, the handshake, offer, plan and answers: 128 KiB is generous.
    let overhead = 128 << 10;
    vec![
        Case {
            name: "overwritten",
            old: old.clone(),
            new: overwritten,
            bound: (64 << 10) + overhead,
        },
        Case {
            name: "inserted",
            old: old.clone(),
            new: inserted,
            bound: overhead,
        },
        Case {
            name: "appended",
            old: old.clone(),
            new: appended,
            bound: (1 << 20) + overhead,
        },
        Case {
            name: "truncated",
            old,
            new: truncated,
            bound: overhead,
        },
    ]
}

/// Sends `new` over `old` (held by a `recv --overwrite`) through a counting relay;
/// returns the bytes that crossed, both ways, once the receiver holds `new`.
fn update_point_to_point(old: &[u8], new: &[u8], send_flags: &[&str], recv_flags: &[&str]) -> u64 {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", new);
    write_older(dst.path(), "f", old);
    let mut flags = vec!["--overwrite"];
    flags.extend_from_slice(recv_flags);
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &flags);
    let relay = Relay::start(receiver.port, Faults::default());
    let sent = send(&[&file], relay.port, KEY, send_flags);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(
        fs::read(dst.path().join("f")).unwrap() == new,
        "the new version arrived"
    );
    assert_eq!(
        files_under(dst.path()),
        [Path::new("f")],
        "no temporaries left"
    );
    relay.both_ways()
}

#[test]
fn only_the_change_travels_for_overwritten_inserted_appended_and_truncated_files() {
    let configurations: [&[&str]; 2] = [&[], &["--hash", "blake3", "--no-encrypt"]];
    for flags in configurations {
        for case in cases() {
            let recv_flags: &[&str] = if flags.is_empty() {
                &[]
            } else {
                &["--hash", "blake3"]
            };
            let crossed = update_point_to_point(&case.old, &case.new, flags, recv_flags);
            assert!(
                crossed <= case.bound,
                "{} ({flags:?}): {crossed} bytes crossed, at most {} expected",
                case.name,
                case.bound
            );
        }
    }
}

#[test]
fn whole_file_on_either_side_sends_the_whole_file() {
    let case = &cases()[0];
    for (send_flags, recv_flags) in [(&["-W"][..], &[][..]), (&[][..], &["--whole-file"][..])] {
        let crossed = update_point_to_point(&case.old, &case.new, send_flags, recv_flags);
        assert!(
            crossed >= SIZE as u64,
            "{send_flags:?} {recv_flags:?}: only {crossed} bytes crossed"
        );
    }
}

#[test]
fn nothing_in_common_costs_about_a_whole_send() {
    let old = pattern(SIZE, 31);
    let new = pattern(SIZE, 32);
    let crossed = update_point_to_point(&old, &new, &[], &[]);
    let whole = update_point_to_point(&old, &new, &["-W"], &[]);
    assert!(
        crossed as f64 <= whole as f64 * 1.05,
        "a delta of unrelated data: {crossed} bytes, a whole send {whole}"
    );
}

/// A site whose user alice holds `old` as `f` in her home, with a quota.
fn site_with(old: &[u8]) -> Site {
    let site = Site::new();
    site.users(&[("alice", "quota = \"20 MiB\"")]);
    fs::create_dir_all(site.home("alice")).unwrap();
    write_older(&site.home("alice"), "f", old);
    site
}

#[test]
fn a_put_and_a_get_against_a_server_send_only_the_change() {
    for case in cases() {
        // put: the server holds the old version.
        let site = site_with(&case.old);
        let server = site.serve(&[]);
        let relay = Relay::start(server.port(), Faults::default());
        let local = site.local("f", &case.new);
        let to = format!("127.0.0.1:{}:", relay.port);
        let put = client(
            &site,
            "alice",
            &["send", "-f", local.to_str().unwrap(), &to],
        );
        expect_exit(&put, 0, "a put -f over an older version");
        assert!(fs::read(site.home("alice").join("f")).unwrap() == case.new);
        assert!(
            relay.both_ways() <= case.bound,
            "put, {}: {} bytes crossed",
            case.name,
            relay.both_ways()
        );
        // The quota holds the result, as a walk from outside counts it.
        assert_eq!(
            server.usage("alice"),
            (case.new.len() as u64, 1),
            "{}",
            case.name
        );
        assert_eq!(walked_bytes(&site.home("alice")), case.new.len() as u64);

        // get: the client holds the old version, the server the new one.
        let site = site_with(&case.new);
        let server = site.serve(&[]);
        let relay = Relay::start(server.port(), Faults::default());
        let downloads = site.download_dir("dl");
        fs::write(downloads.join("f"), &case.old).unwrap();
        let from = format!("127.0.0.1:{}:f", relay.port);
        let get = client(
            &site,
            "alice",
            &["get", "-f", "-i", &from, downloads.to_str().unwrap()],
        );
        expect_exit(&get, 0, "a get -f over an older version");
        assert!(fs::read(downloads.join("f")).unwrap() == case.new);
        // The receiving side's `-i` says the file was built by a delta.
        let said = String::from_utf8_lossy(&get.stdout);
        assert!(said.lines().any(|l| l == "delta    f"), "{said}");
        assert!(
            relay.both_ways() <= case.bound,
            "get, {}: {} bytes crossed",
            case.name,
            relay.both_ways()
        );
    }
}

/// Bytes of the regular files below `dir`, walked from outside.
fn walked_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|path| fs::symlink_metadata(dir.join(path)).unwrap().len())
        .sum()
}

#[test]
fn a_peer_without_delta_gets_whole_files_and_no_basis_in_the_plan() {
    let dst = tempfile::tempdir().unwrap();
    let old = pattern(1 << 20, 41);
    let new = pattern(1 << 20, 42);
    write_in(dst.path(), "f", &old);
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite"]);
    let mut peer = peer_sender(receiver.port, &["aead", "blake3", "zstd"]);
    let report = peer.send_transfer(&[SendEntry::file("f", new.clone())]);
    let report = report.expect("a whole-file transfer");
    assert!(report.delivered(0), "delivered");
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(fs::read(dst.path().join("f")).unwrap() == new);
}

/// A receiver holding `old` as `f`, and the test peer as a sender that chose
/// `delta` and offered `new` as `f`: the plan's decision for it.
fn offered_with_basis(old: &[u8], new: &[u8]) -> (tempfile::TempDir, Receiver, Peer, Value) {
    let dst = tempfile::tempdir().unwrap();
    write_in(dst.path(), "f", old);
    let receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite"]);
    let mut peer = peer_sender(receiver.port, &["delta"]);
    let entry = SendEntry::file("f", new.to_vec()).to_json();
    peer.send_offer(&[vec![entry]]).unwrap();
    let plan = peer.read_plan(1).unwrap();
    let decision = plan[0].clone();
    assert!(
        decision["delta"]["count"].as_u64().unwrap() > 0,
        "{decision}"
    );
    (dst, receiver, peer, decision)
}

/// A copy instruction (section 18.3).
pub(crate) fn copy(first: u32, count: u32) -> Vec<u8> {
    let mut op = vec![2];
    op.extend_from_slice(&first.to_be_bytes());
    op.extend_from_slice(&count.to_be_bytes());
    op
}

/// A literal instruction of `len` bytes, claimed (section 18.3).
pub(crate) fn literal(len: u32, bytes: &[u8]) -> Vec<u8> {
    let mut op = vec![1];
    op.extend_from_slice(&len.to_be_bytes());
    op.extend_from_slice(bytes);
    op
}

/// Sends entry 0 (`f`) as a delta of `frames`: its header, the frames, the empty
/// frame and a `done` for `result` (as far as the receiver lets it).
pub(crate) fn send_instructions(peer: &mut Peer, frames: &[Vec<u8>], result: &[u8]) {
    peer.send_control(&json!({"type": "data", "index": 0, "offset": 0, "delta": true}))
        .unwrap();
    for frame in frames {
        if peer.send_frame(frame).is_err() {
            break;
        }
    }
    let _ = peer.send_frame(&[]);
    let _ = peer.send_control(&peer.done_frame(0, "f", result));
}

/// [`send_instructions`], then the receiver's verdict: the session-level error, or
/// the entry's answer.
fn send_delta(peer: &mut Peer, frames: &[Vec<u8>], result: &[u8]) -> Value {
    send_instructions(peer, frames, result);
    peer.read_control().unwrap()
}

/// `said` ended the session (`protocol`, no index), the receiver failed, and `dir`
/// holds `f` with its `old` content and nothing else.
pub(crate) fn assert_ended_keeping_old(
    what: &str,
    said: &Value,
    receiver: &mut Receiver,
    dir: &Path,
    old: &[u8],
) {
    assert_eq!(said["type"], "error", "{what}: {said}");
    assert_eq!(said["code"], "protocol", "{what}: {said}");
    assert!(said.get("index").is_none(), "{what}: session-level");
    assert_ne!(receiver.exit_code(), 0, "{what}");
    assert!(
        fs::read(dir.join("f")).unwrap() == old,
        "{what}: old file kept"
    );
    assert_eq!(files_under(dir), [Path::new("f")], "{what}: nothing else");
}

/// Makes one hostile data frame, given the basis's chunk count.
type Instruction = fn(u32) -> Vec<u8>;

#[test]
fn hostile_instructions_end_the_session_and_leave_the_old_file() {
    let old = pattern(256 << 10, 51);
    let count_of = |decision: &Value| decision["delta"]["count"].as_u64().unwrap() as u32;
    let hostile: [(&str, Instruction); 4] = [
        ("a copy past the basis", |count| copy(count, 1)),
        ("a run that ends past it", |count| copy(0, count + 1)),
        ("a literal longer than its frame", |_| {
            literal(1000, b"short")
        }),
        ("an unknown instruction", |_| vec![7, 0, 0]),
    ];
    for (what, make) in hostile {
        let (dst, mut receiver, mut peer, decision) = offered_with_basis(&old, &old);
        let said = send_delta(&mut peer, &[make(count_of(&decision))], &old);
        assert_ended_keeping_old(what, &said, &mut receiver, dst.path(), &old);
    }
    // More bytes than the offered size: the whole basis twice over a file offered
    // with its size.
    let (dst, mut receiver, mut peer, decision) = offered_with_basis(&old, &old);
    let all = copy(0, count_of(&decision));
    let said = send_delta(&mut peer, &[all.clone(), all], &old);
    assert_eq!(said["code"], "protocol", "{said}");
    assert_ne!(receiver.exit_code(), 0);
    assert!(fs::read(dst.path().join("f")).unwrap() == old);
}

#[test]
fn a_basis_that_changes_before_it_is_read_fails_busy_and_is_left_alone() {
    let old = pattern(256 << 10, 61);
    let (dst, mut receiver, mut peer, decision) = offered_with_basis(&old, &old);
    // Someone rewrites the old file in place after the plan was made.
    let mut changed = old.clone();
    changed[1000] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(dst.path().join("f"), &changed).unwrap();
    let count = decision["delta"]["count"].as_u64().unwrap() as u32;
    let said = send_delta(&mut peer, &[copy(0, count)], &old);
    assert_eq!(said["type"], "error", "{said}");
    assert_eq!(said["index"], 0, "{said}");
    assert_eq!(said["code"], "busy", "{said}");
    peer.send_end().unwrap();
    peer.expect("end").unwrap();
    assert_ne!(receiver.exit_code(), 0);
    assert!(
        receiver.stderr().contains("changed while it was read"),
        "{}",
        receiver.stderr()
    );
    assert!(
        fs::read(dst.path().join("f")).unwrap() == changed,
        "left as it is"
    );
    assert_eq!(files_under(dst.path()), [Path::new("f")]);
}

/// A receiver that lists `delta` and answers the offer with `decision` for its
/// one file: the sender's last word (its session-level error, if it sent one).
fn sender_meets_plan(decision: Value) -> Option<Value> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).expect("accept");
        let receiver = Acceptor::new(KEY, "receiver").features(&["delta"]);
        peer.accept_handshake(&receiver).expect("handshake");
        let first = peer.read_control_raw().expect("offer");
        peer.read_offer_from(first).expect("a verified offer");
        peer.send_plan(&[vec![decision]]).unwrap();
        loop {
            match peer.read_control() {
                Ok(frame) if frame["type"] == "error" => return Some(frame),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    });
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", &pattern(256 << 10, 71));
    let sent = send(&[&file], port, KEY, &[]);
    assert!(!sent.status.success(), "refused: {}", stderr_of(&sent));
    fake.join().unwrap()
}

#[test]
fn a_hostile_signature_is_refused_before_anything_is_allocated_for_it() {
    let send = |delta: Value| json!({"action": "send", "offset": 0, "delta": delta});
    let hostile = [
        (
            "a huge chunk count",
            json!({"avg": 65536, "count": 1u64 << 60, "sums": "00".repeat(8)}),
        ),
        (
            "a count the sums do not match",
            json!({"avg": 65536, "count": 2, "sums": "00".repeat(8)}),
        ),
        ("no chunks", json!({"avg": 65536, "count": 0, "sums": ""})),
        (
            "an average that is no power of two",
            json!({"avg": 65535, "count": 1, "sums": "00".repeat(8)}),
        ),
        (
            "upper-case sums",
            json!({"avg": 65536, "count": 1, "sums": "AB".repeat(8)}),
        ),
    ];
    for (what, delta) in hostile {
        let said = sender_meets_plan(send(delta));
        let said = said.unwrap_or_else(|| panic!("{what}: no error frame"));
        assert_eq!(said["code"], "protocol", "{what}: {said}");
    }
}

/// A mirror tree: `src/tree` holds `big` (8 MiB, 64 KiB of it changed), `mid`
/// (512 KiB, one data frame's worth, 4 KiB changed) and `small` (new); `dst/tree`
/// holds the old `big` and `mid`, and `stale`, which the source lacks.
fn mirror_trees(root: &Path) -> Case {
    let case = cases().swap_remove(0);
    let old_mid = pattern(512 << 10, 25);
    let mut new_mid = old_mid.clone();
    new_mid[100 << 10..104 << 10].copy_from_slice(&pattern(4 << 10, 26));
    fs::create_dir_all(root.join("dst/tree")).unwrap();
    fs::create_dir_all(root.join("src/tree")).unwrap();
    // The old versions an hour older: a mirror's quick check (size and time)
    // must not find them `same` on a coarse file clock.
    for (name, old) in [("big", &case.old), ("mid", &old_mid)] {
        write_older(&root.join("dst/tree"), name, old);
    }
    write_in(&root.join("dst/tree"), "stale", b"stale\n");
    write_in(&root.join("src/tree"), "big", &case.new);
    write_in(&root.join("src/tree"), "mid", &new_mid);
    write_in(&root.join("src/tree"), "small", b"new\n");
    case
}

/// `xfer send src/tree --delete` with `flags` through a counting relay to `recv
/// --overwrite`; the sender's stdout and the bytes that crossed, both ways.
fn mirror_through_relay(root: &Path, flags: &[&str]) -> (String, u64) {
    crate::mirror::settle();
    let mut receiver = Receiver::start(&root.join("dst"), Some(KEY), &["--overwrite"]);
    let relay = Relay::start(receiver.port, Faults::default());
    let mut args = vec!["--delete", "-i"];
    args.extend_from_slice(flags);
    let sent = send(&[&root.join("src/tree")], relay.port, KEY, &args);
    assert!(sent.status.success(), "{flags:?}: {}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    (
        String::from_utf8_lossy(&sent.stdout).into_owned(),
        relay.both_ways(),
    )
}

#[test]
fn a_mirror_updates_by_delta_and_deletes_in_one_run() {
    let root = tempfile::tempdir().unwrap();
    let case = mirror_trees(root.path());
    let dst = root.path().join("dst");
    // A dry run says what would change, a changed file with what its delta would
    // move (the receiver chunks its basis for that: the signatures cross, about 17
    // KiB of hex, but no data), and nothing changes.
    let (dry, crossed) = mirror_through_relay(root.path(), &["--dry-run"]);
    for line in [
        "changed  tree/big  (delta ",
        "changed  tree/mid  (delta ",
        "new      tree/small",
    ] {
        assert!(
            dry.lines().any(|l| l.starts_with(line)),
            "{line:?} in {dry}"
        );
    }
    assert!(
        dry.lines().any(|l| l.starts_with("deleted  tree/stale")),
        "{dry}"
    );
    assert!(crossed < 64 << 10, "a dry run moved {crossed} bytes");
    // With --json the same, with what each file would move as a number.
    let (dry_json, _) = mirror_through_relay(root.path(), &["--dry-run", "--json"]);
    let moves = |path: &str| {
        let events = crate::util::events_in(&dry_json);
        let event = events
            .iter()
            .find(|e| e["event"] == "change" && e["path"] == path)
            .unwrap_or_else(|| panic!("no change event for {path} in {dry_json}"));
        event["bytes"].as_u64().expect("bytes, a number")
    };
    let big = fs::metadata(root.path().join("src/tree/big"))
        .unwrap()
        .len();
    assert!(
        moves("tree/big") > 0 && moves("tree/big") < big / 10,
        "{dry_json}"
    );
    let small = fs::metadata(root.path().join("src/tree/small"))
        .unwrap()
        .len();
    assert_eq!(moves("tree/small"), small);
    assert!(fs::read(dst.join("tree/big")).unwrap() == case.old);
    assert!(dst.join("tree/stale").exists());
    // The real run: both changed files go as deltas (`mid` fits one data frame,
    // and still only its change crosses), `small` whole, and `stale` is removed.
    let (real, crossed) = mirror_through_relay(root.path(), &[]);
    for line in [
        "delta    tree/big",
        "delta    tree/mid",
        "new      tree/small",
        "deleted  tree/stale",
    ] {
        assert!(real.lines().any(|l| l == line), "{line:?} in {real}");
    }
    let bound = case.bound + (16 << 10);
    assert!(
        crossed <= bound,
        "{crossed} bytes crossed, at most {bound} expected"
    );
    assert!(fs::read(dst.join("tree/big")).unwrap() == case.new);
    assert!(
        fs::read(dst.join("tree/mid")).unwrap()
            == fs::read(root.path().join("src/tree/mid")).unwrap()
    );
    assert_eq!(
        files_under(&dst),
        [
            Path::new("tree/big"),
            Path::new("tree/mid"),
            Path::new("tree/small")
        ]
    );
}

/// `xfer send -n --json FILE` to `recv --overwrite` holding `old`, through a
/// counting relay: the summary's `dry_run` object and the bytes that crossed; both
/// sides are checked unchanged.
fn dry_run_of(old: &[u8], new: &[u8]) -> (Value, u64) {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", new);
    write_older(dst.path(), "f", old);
    let (dry_run, both_ways) = dry_run_against(&file, dst.path(), &["--overwrite"]);
    assert!(fs::read(dst.path().join("f")).unwrap() == old);
    assert!(fs::read(&file).unwrap() == new);
    (dry_run, both_ways)
}

/// A dry run of `file` against a receiver started with `recv_flags` in `dst`, which
/// holds an older `f`: what its summary says, and the bytes both ways. It must
/// change nothing and show a delta for `f`.
fn dry_run_against(file: &Path, dst: &Path, recv_flags: &[&str]) -> (Value, u64) {
    let held = dst.join("f");
    // Older, so that a file of the same size is not taken for the same one (a dry
    // run's quick check), however close together the two were written.
    crate::util::make_older(&held);
    let mut receiver = Receiver::start(dst, Some(KEY), recv_flags);
    let relay = Relay::start(receiver.port, Faults::default());
    let sent = send(&[file], relay.port, KEY, &["-n", "--json"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(files_under(dst), [Path::new("f")]);
    let events = stdout_events(&sent);
    let changed = events
        .iter()
        .find(|e| e["change"] == "changed")
        .expect("a changed event");
    assert_eq!(changed["path"], "f");
    assert!(
        changed["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("delta ")),
        "{changed}"
    );
    (summary_event(&sent)["dry_run"].clone(), relay.both_ways())
}

#[test]
fn a_dry_run_says_what_a_delta_would_move_and_changes_nothing() {
    for case in cases() {
        let (dry, crossed) = dry_run_of(&case.old, &case.new);
        assert_eq!(dry["changed"], 1, "{}: {dry}", case.name);
        let expected = dry["bytes"].as_u64().unwrap();
        // What the real run moves, less the signature and the handshake; and no
        // data crossed in the dry run, only the plan's signature.
        assert!(
            expected <= case.bound,
            "{}: {expected} bytes expected, at most {} move",
            case.name,
            case.bound
        );
        let moved = update_point_to_point(&case.old, &case.new, &[], &[]);
        assert!(
            expected <= moved,
            "{}: {expected} expected, {moved} moved",
            case.name
        );
        assert!(crossed < 64 << 10, "{}: {crossed} bytes", case.name);
    }
    // A file with nothing in common would move about all of it.
    let (dry, _) = dry_run_of(&pattern(SIZE, 31), &pattern(SIZE, 32));
    let expected = dry["bytes"].as_u64().unwrap();
    assert!(
        expected >= SIZE as u64 && expected < SIZE as u64 * 101 / 100,
        "{expected}"
    );
}

/// A relay from a sender to 127.0.0.1:`target` that holds the receiver's plan (a
/// session in clear: the frame with a decision to send a delta, or a packed frame —
/// `zstd_control`, which a plan with sums is large enough for) until `before_plan` has run.
fn relay_holding_plan(target: u16, before_plan: impl FnOnce() + Send + 'static) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut sender, _) = listener.accept().unwrap();
        let mut receiver = std::net::TcpStream::connect(("127.0.0.1", target)).unwrap();
        let (mut to_receiver, mut from_receiver) =
            (receiver.try_clone().unwrap(), sender.try_clone().unwrap());
        std::thread::spawn(move || std::io::copy(&mut sender, &mut to_receiver));
        let mut before_plan = Some(before_plan);
        let mut buffer = vec![0; 1 << 16];
        while let Ok(read @ 1..) = receiver.read(&mut buffer) {
            let bytes = &buffer[..read];
            let packed = |window: &[u8]| window == [0x28, 0xb5, 0x2f, 0xfd];
            if (bytes.windows(9).any(|window| window == b"\"delta\":{")
                || bytes.windows(4).any(packed))
                && let Some(run) = before_plan.take()
            {
                run();
            }
            if from_receiver.write_all(bytes).is_err() {
                break;
            }
        }
        let _ = from_receiver.shutdown(std::net::Shutdown::Write);
    });
    port
}

#[test]
fn a_file_changed_while_the_plan_is_awaited_arrives_as_it_is_now() {
    let old = pattern(SIZE, 81);
    let mut new = old.clone();
    new[SIZE / 2..SIZE / 2 + 4096].copy_from_slice(&pattern(4096, 82));
    let mut edited = new.clone();
    edited[SIZE / 4..SIZE / 4 + (64 << 10)].copy_from_slice(&pattern(64 << 10, 83));
    // In place (same size), and by a save that renames over it.
    for rename in [false, true] {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let file = write_in(src.path(), "f", &new);
        write_older(dst.path(), "f", &old);
        let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite"]);
        let (path, dir, content) = (file.clone(), src.path().to_path_buf(), edited.clone());
        let edit = move || {
            // The sender has long cut its file by now.
            std::thread::sleep(std::time::Duration::from_millis(1000));
            if rename {
                let saved = write_in(&dir, "f.new", &content);
                fs::rename(saved, &path).unwrap();
            } else {
                use std::os::unix::fs::FileExt;
                let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.write_all_at(&content[SIZE / 4..SIZE / 4 + (64 << 10)], (SIZE / 4) as u64)
                    .unwrap();
            }
        };
        let port = relay_holding_plan(receiver.port, edit);
        let sent = send(&[&file], port, KEY, &["--no-encrypt", "--hash", "blake3"]);
        assert!(
            sent.status.success(),
            "rename {rename}: {}",
            stderr_of(&sent)
        );
        assert_eq!(
            receiver.exit_code(),
            0,
            "rename {rename}: {}",
            receiver.stderr()
        );
        assert!(
            fs::read(dst.path().join("f")).unwrap() == edited,
            "rename {rename}"
        );
    }
}

#[test]
fn a_dry_run_estimates_its_deltas_after_the_receiver_is_done_waiting() {
    use std::io::Write;
    // Long enough to cut that the estimate outlasts a receiver's idle timeout of a
    // second (a debug build cuts a little over 100 MiB a second); written a MiB
    // at a time, the same MiB over and over, one of them changed in the new one.
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (block, changed) = (pattern(1 << 20, 91), pattern(1 << 20, 92));
    let mut old = fs::File::create(dst.path().join("f")).unwrap();
    let mut new = fs::File::create(src.path().join("f")).unwrap();
    for at in 0..256 {
        old.write_all(&block).unwrap();
        new.write_all([&block, &changed][usize::from(at == 128)])
            .unwrap();
    }
    let recv_flags = ["--overwrite", "--idle-timeout", "1"];
    let (dry_run, _) = dry_run_against(&src.path().join("f"), dst.path(), &recv_flags);
    assert_eq!(dry_run["changed"], 1, "{dry_run}");
}

/// Bytes process `pid` has read so far, from files and sockets alike.
fn bytes_read_by(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let line = io.lines().find(|line| line.starts_with("rchar:"))?;
    line["rchar:".len()..].trim().parse().ok()
}

#[test]
fn a_server_answering_a_get_does_not_read_ahead_while_the_plan_is_withheld() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"200 MiB\"")]);
    fs::create_dir_all(site.home("alice")).unwrap();
    fs::write(site.home("alice").join("big"), pattern(64 << 20, 93)).unwrap();
    let server = site.serve(&[]);
    let pid = server.0.child.id();
    if bytes_read_by(pid).is_none() {
        eprintln!("skipped: /proc/{pid}/io cannot be read here");
        return;
    }
    let mut peer = Peer::connect(("127.0.0.1", server.port())).unwrap();
    let client = Initiator::client(Site::key_of("alice"), "alice").features(&["aead", "delta"]);
    let session = peer.initiate(&client).unwrap();
    assert!(session.in_force.iter().any(|feature| feature == "delta"));
    peer.send_control(&json!({"type": "get", "paths": ["big"]}))
        .unwrap();
    let (offer, _) = peer.read_control_raw().unwrap();
    assert_eq!(offer["type"], "offer", "{offer}");
    // A client that asks and withholds its plan: the server waits, reading nothing
    // (a sender that cut ahead would read all 64 MiB meanwhile).
    let before = bytes_read_by(pid).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let read = bytes_read_by(pid).unwrap() - before;
    assert!(read < 4 << 20, "the server read {read} bytes");
}
