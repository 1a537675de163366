//! `-I` / `--ignore-times` (docs/PROTOCOL.md 17.1, `ignore_times`): where the
//! receiver replaces files, a file of the offered size and modification time is
//! sent again instead of being skipped by the quick check, through the delta, so an
//! unchanged file costs its chunks' sums; without `-I` it stays. Point to point,
//! into and out of `xfer serve` (`send -f`, `get -f`, the shell's `put`/`get`), in a
//! dry run (which predicts the real run), into a receiver that replaces nothing
//! (which ignores it) and to a peer without `mirror` (nothing new on the wire).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::delta::{copy, literal, send_instructions};
use crate::util::peer::{self, Peer, SendEntry};
use crate::util::relay::{Faults, Relay};
use crate::util::server::{Site, as_user, client, expect_exit, run_with_input, stdout_of};
use crate::util::{
    KEY, Receiver, files_under, old_receiver_taking_all, pattern, peer_listening, peer_sender,
    receiver_without_meta, send, stderr_of,
};

/// The one modification time both sides' files are given: the quick check cannot
/// tell them apart.
fn the_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Writes `content` as `dir/name` with [`the_time`] as its modification time.
fn write_at_the_time(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(the_time()).unwrap();
    path
}

/// The sender's version and the receiver's: the same size, other bytes.
const NEW: &[u8] = b"the sender's version\n";
const OLD: &[u8] = b"the older receiver's\n";

#[test]
fn ignore_times_resends_a_file_of_the_same_size_and_time_that_the_quick_check_keeps() {
    assert_eq!(NEW.len(), OLD.len());
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = write_at_the_time(src.path(), "f", NEW);
    // Large enough for a delta: same size and time, one 4 KiB stretch other.
    let big_new = pattern(256 << 10, 61);
    let mut big_old = big_new.clone();
    big_old[100 << 10..104 << 10].copy_from_slice(&pattern(4 << 10, 62));
    let big = write_at_the_time(src.path(), "big", &big_new);
    write_at_the_time(dst.path(), "f", OLD);
    write_at_the_time(dst.path(), "big", &big_old);
    let mut serving = Receiver::start(dst.path(), Some(KEY), &["--overwrite", "--serve"]);

    let quick = send(&[&file, &big], serving.port, KEY, &["-i"]);
    assert!(quick.status.success(), "{}", stderr_of(&quick));
    assert_eq!(stdout_of(&quick).trim(), "", "nothing itemized");
    assert!(
        stderr_of(&quick).contains("2 already there"),
        "{}",
        stderr_of(&quick)
    );
    assert_eq!(
        fs::read(dst.path().join("f")).unwrap(),
        OLD,
        "quick check: kept"
    );
    assert!(fs::read(dst.path().join("big")).unwrap() == big_old);

    let forced = send(&[&file, &big], serving.port, KEY, &["-I", "-i"]);
    assert!(forced.status.success(), "{}", stderr_of(&forced));
    let itemized = stdout_of(&forced);
    assert!(itemized.lines().any(|l| l == "replaced f"), "{itemized}");
    assert!(itemized.lines().any(|l| l == "delta    big"), "{itemized}");
    assert_eq!(
        fs::read(dst.path().join("f")).unwrap(),
        NEW,
        "-I: sent again"
    );
    assert!(fs::read(dst.path().join("big")).unwrap() == big_new);
    let time = fs::metadata(dst.path().join("f"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(time, the_time(), "the offered time applied");
    drop(serving.child.kill());
}

/// What one send of `new` as `f` over `old` (with the same time) into
/// `recv --overwrite -i` through a counting relay came to.
struct Crossed {
    /// Bytes that crossed, both ways.
    bytes: u64,
    /// Whether `f` is still the receiver's old file (its inode).
    same_inode: bool,
    /// What the receiver itemized.
    itemized: String,
    /// The sender's summary.
    said: String,
}

fn crossed_for(old: &[u8], new: &[u8], flags: &[&str]) -> Crossed {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = write_at_the_time(src.path(), "f", new);
    let inode = fs::metadata(write_at_the_time(dst.path(), "f", old))
        .unwrap()
        .ino();
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite", "-i"]);
    let relay = Relay::start(receiver.port, Faults::default());
    let sent = send(&[&file], relay.port, KEY, flags);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(fs::read(dst.path().join("f")).unwrap() == new);
    Crossed {
        bytes: relay.both_ways(),
        same_inode: fs::metadata(dst.path().join("f")).unwrap().ino() == inode,
        itemized: receiver.stdout(),
        said: stderr_of(&sent),
    }
}

#[test]
fn an_unchanged_8_mib_file_costs_a_small_fraction_of_it_with_ignore_times() {
    const SIZE: usize = 8 << 20;
    let content = pattern(SIZE, 63);
    let skipped = crossed_for(&content, &content, &[]);
    let ignored = crossed_for(&content, &content, &["-I"]);
    let whole = crossed_for(&content, &content, &["-I", "-W"]);
    let (quick, delta, all) = (skipped.bytes, ignored.bytes, whole.bytes);
    eprintln!("8 MiB unchanged: quick check {quick} B, -I {delta} B, -I -W {all} B");
    assert!(quick < 16 << 10, "the quick check: {quick} bytes");
    // About a thousand sums of 8 KiB chunks (16 KiB of hex) and one copy.
    assert!(delta < SIZE as u64 / 64, "-I: {delta} bytes crossed");
    assert!(delta > quick, "-I read and compared: {delta} vs {quick}");
    assert!(all >= SIZE as u64, "-I -W sends it whole: {all} bytes");
    // The delta rebuilt the old file: it stays, nothing is rewritten or itemized.
    assert!(skipped.same_inode && ignored.same_inode, "kept");
    assert_eq!(ignored.itemized.trim(), "", "nothing changed");
    // The sender hears it was kept (`kept` in the `ok`) and counts it as there.
    assert!(ignored.said.contains("1 already there"), "{}", ignored.said);
    assert!(!ignored.said.contains("sent 1 file"), "{}", ignored.said);
    // Sent whole, it is received as any file: a new one in its place.
    assert!(!whole.same_inode);
    assert_eq!(whole.itemized.trim(), "replaced f");
    // A file that did change is rebuilt as a new file.
    let mut changed = content.clone();
    changed[SIZE / 2] ^= 1;
    let rebuilt = crossed_for(&content, &changed, &["-I"]);
    assert!(!rebuilt.same_inode);
    assert_eq!(rebuilt.itemized.trim(), "delta    f");
    assert!(rebuilt.said.contains("sent 1 file"), "{}", rebuilt.said);
}

#[test]
fn a_dry_run_with_ignore_times_lists_the_file_and_changes_nothing() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = write_at_the_time(src.path(), "f", NEW);
    write_at_the_time(dst.path(), "f", OLD);
    let before = fs::metadata(dst.path().join("f")).unwrap();
    let mut serving = Receiver::start(dst.path(), Some(KEY), &["--overwrite", "--serve"]);

    let quick = send(&[&file], serving.port, KEY, &["-n"]);
    assert!(quick.status.success(), "{}", stderr_of(&quick));
    assert!(
        stdout_of(&quick).contains("same     f"),
        "{}",
        stdout_of(&quick)
    );
    let dry = send(&[&file], serving.port, KEY, &["-n", "-I"]);
    assert!(dry.status.success(), "{}", stderr_of(&dry));
    assert!(
        stdout_of(&dry).contains("changed  f"),
        "{}",
        stdout_of(&dry)
    );
    let said = "dry run: would send 0 new files and 1 changed";
    assert!(stderr_of(&dry).contains(said), "{}", stderr_of(&dry));
    let after = fs::metadata(dst.path().join("f")).unwrap();
    assert_eq!(
        fs::read(dst.path().join("f")).unwrap(),
        OLD,
        "nothing written"
    );
    assert_eq!((after.ino(), after.mtime()), (before.ino(), before.mtime()));

    // The real run does what the dry run said.
    let real = send(&[&file], serving.port, KEY, &["-I", "-i"]);
    assert!(real.status.success(), "{}", stderr_of(&real));
    assert_eq!(stdout_of(&real).trim(), "replaced f");
    assert_eq!(fs::read(dst.path().join("f")).unwrap(), NEW);
    drop(serving.child.kill());
}

#[test]
fn ignore_times_into_a_receiver_that_replaces_nothing_leaves_the_file() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = write_at_the_time(src.path(), "f", NEW);
    let other = write_at_the_time(src.path(), "g", b"longer than the receiver's g\n");
    write_at_the_time(dst.path(), "f", OLD);
    write_at_the_time(dst.path(), "g", b"short\n");
    let mut serving = Receiver::start(dst.path(), Some(KEY), &["--serve"]);
    let without = send(&[&file, &other], serving.port, KEY, &[]);
    let with = send(&[&file, &other], serving.port, KEY, &["-I"]);
    // The same answers as without -I: `f` same, `g` refused `exists` (exit 6).
    assert_eq!(with.status.code(), without.status.code());
    assert_eq!(with.status.code(), Some(6), "{}", stderr_of(&with));
    assert!(
        stderr_of(&with).contains("g: already exists"),
        "{}",
        stderr_of(&with)
    );
    assert!(
        stderr_of(&with).contains("1 already there"),
        "{}",
        stderr_of(&with)
    );
    assert_eq!(fs::read(dst.path().join("f")).unwrap(), OLD);
    assert_eq!(fs::read(dst.path().join("g")).unwrap(), b"short\n");
    drop(serving.child.kill());
}

#[test]
fn a_put_and_a_get_with_ignore_times_resend_files_of_the_same_size_and_time() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    write_at_the_time(&home, "f", OLD);
    let local = write_at_the_time(&site.path().join("local"), "f", NEW);
    let server = site.serve(&[]);
    let to = server.at("");
    let path = local.to_str().unwrap();

    let put = client(&site, "alice", &["send", "-f", path, &to]);
    expect_exit(&put, 0, "a put -f");
    assert_eq!(fs::read(home.join("f")).unwrap(), OLD, "quick check: kept");
    let put = client(&site, "alice", &["send", "-f", "-I", path, &to]);
    expect_exit(&put, 0, "a put -f -I");
    assert_eq!(fs::read(home.join("f")).unwrap(), NEW, "-I: sent again");

    // get: the client holds the other bytes now.
    let downloads = site.download_dir("dl");
    write_at_the_time(&downloads, "f", OLD);
    let dl = downloads.to_str().unwrap();
    let from = server.at("f");
    let get = client(&site, "alice", &["get", "-f", &from, dl]);
    expect_exit(&get, 0, "a get -f");
    assert_eq!(
        fs::read(downloads.join("f")).unwrap(),
        OLD,
        "quick check: kept"
    );
    let get = client(&site, "alice", &["get", "-f", "-I", "-i", &from, dl]);
    expect_exit(&get, 0, "a get -f -I");
    assert_eq!(stdout_of(&get).trim(), "replaced f");
    assert_eq!(
        fs::read(downloads.join("f")).unwrap(),
        NEW,
        "-I: received again"
    );
}

#[test]
fn the_shells_put_and_get_take_ignore_times() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    write_at_the_time(&home, "f", OLD);
    let local = site.path().join("local");
    write_at_the_time(&local, "f", NEW);
    let server = site.serve(&[]);
    let mut shell = as_user(&site, "alice", &["shell", &server.addr(), "-b", "-"]);
    shell.current_dir(&local);
    let output = run_with_input(&mut shell, b"put -I f\n".to_vec());
    expect_exit(&output, 2, "put -I without -f");
    assert!(
        stderr_of(&output).contains("add -f"),
        "{}",
        stderr_of(&output)
    );
    let mut shell = as_user(&site, "alice", &["shell", &server.addr(), "-b", "-"]);
    shell.current_dir(&local);
    let output = run_with_input(&mut shell, b"put -f f\nput -f -I f\n".to_vec());
    expect_exit(&output, 0, "put -f, then put -f -I");
    assert_eq!(fs::read(home.join("f")).unwrap(), NEW);

    write_at_the_time(&local, "f", OLD);
    let mut shell = as_user(&site, "alice", &["shell", &server.addr(), "-b", "-"]);
    shell.current_dir(&local);
    let output = run_with_input(&mut shell, b"get -f f\n".to_vec());
    expect_exit(&output, 0, "get -f");
    assert_eq!(fs::read(local.join("f")).unwrap(), OLD, "quick check: kept");
    let mut shell = as_user(&site, "alice", &["shell", &server.addr(), "-b", "-"]);
    shell.current_dir(&local);
    let output = run_with_input(&mut shell, b"get -f --ignore-times f\n".to_vec());
    expect_exit(&output, 0, "get -f --ignore-times");
    assert_eq!(fs::read(local.join("f")).unwrap(), NEW);
}

#[test]
fn without_mirror_the_offer_carries_nothing_new_and_an_overwriting_peer_takes_all() {
    let src = tempfile::tempdir().unwrap();
    let file = write_at_the_time(src.path(), "f", NEW);
    // The first offer frame holds no `mirror` member for a peer without it.
    let (port, first) = peer_listening(|mut peer| {
        peer.accept_handshake(&receiver_without_meta())
            .expect("handshake");
        peer.read_control().expect("the first offer frame")
    });
    let _ = send(&[&file], port, KEY, &["-I"]);
    let first = first.join().unwrap();
    assert_eq!(first["type"], "offer", "{first}");
    assert!(first.get("mirror").is_none(), "{first}");
    // Such a peer answers `send` where it overwrites: the file arrives.
    let (port, received) = old_receiver_taking_all();
    let sent = send(&[&file], port, KEY, &["-I"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let received: peer::Received = received.join().unwrap();
    assert_eq!(received.files["f"], NEW);
}

/// A receiver (`recv --overwrite -i`) holding `old` as `f`, written at
/// [`the_time`], and the test peer as a sender with `delta` that offered `f` with
/// `size` bytes and `mtime`: the plan's basis has `count` chunks.
fn offered_over(old: &[u8], size: usize, mtime: u64) -> (tempfile::TempDir, Receiver, Peer, u32) {
    let dst = tempfile::tempdir().unwrap();
    write_at_the_time(dst.path(), "f", old);
    let receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite", "-i"]);
    let mut peer = peer_sender(receiver.port, &["delta"]);
    let entry = SendEntry {
        mtime: Some(mtime),
        size: Some(size as u64),
        ..SendEntry::file("f", Vec::new())
    };
    peer.send_offer(&[vec![entry.to_json()]]).unwrap();
    let plan = peer.read_plan(1).unwrap();
    let count = plan[0]["delta"]["count"].as_u64().expect("a basis") as u32;
    (dst, receiver, peer, count)
}

/// Sends `frames` as entry 0's delta with a `done` for `result`, then `end`: the
/// entry's answer.
fn answered(peer: &mut Peer, frames: &[Vec<u8>], result: &[u8]) -> Value {
    send_instructions(peer, frames, result);
    let said = peer.read_control().unwrap();
    peer.send_end().unwrap();
    peer.expect("end").unwrap();
    said
}

#[test]
fn a_delta_that_rebuilds_the_old_file_keeps_it_where_size_and_time_are_its_own() {
    let old = pattern(256 << 10, 64);
    let same_time = the_time()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let later = 1_700_000_100;
    let (dst, mut receiver, mut peer, count) = offered_over(&old, old.len(), same_time);
    let inode = fs::metadata(dst.path().join("f")).unwrap().ino();
    // Every chunk in order, in two copies: the old file, byte for byte.
    let said = answered(&mut peer, &[copy(0, 1), copy(1, count - 1)], &old);
    assert_eq!(said["type"], "ok", "{said}");
    assert_eq!(said["kept"], true, "{said}");
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let kept = fs::metadata(dst.path().join("f")).unwrap();
    assert_eq!(kept.ino(), inode, "the old file stays");
    assert_eq!(kept.mtime(), same_time as i64);
    assert!(fs::read(dst.path().join("f")).unwrap() == old);
    assert_eq!(receiver.stdout().trim(), "", "nothing changed");
    assert!(
        receiver.stderr().contains("1 already there"),
        "{}",
        receiver.stderr()
    );
    // Offered with another time (only touched at the source), the same
    // instructions are written as they are read: a new file, as rsync makes.
    let (dst, mut receiver, mut peer, count) = offered_over(&old, old.len(), later);
    let inode = fs::metadata(dst.path().join("f")).unwrap().ino();
    let said = answered(&mut peer, &[copy(0, 1), copy(1, count - 1)], &old);
    assert_eq!(said["type"], "ok", "{said}");
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let rewritten = fs::metadata(dst.path().join("f")).unwrap();
    assert_ne!(rewritten.ino(), inode, "a new file");
    assert_eq!(rewritten.mtime(), later as i64, "with the offered time");
    assert!(fs::read(dst.path().join("f")).unwrap() == old);
    assert_eq!(receiver.stdout().trim(), "delta    f");

    // Its first chunks only, where the whole is offered: refused (`checksum`,
    // which says how much arrived: where the last chunk starts), the old file kept.
    let (dst, mut receiver, mut peer, count) = offered_over(&old, old.len(), later);
    let said = answered(&mut peer, &[copy(0, count - 1)], &old);
    assert_eq!(said["code"], "checksum", "{said}");
    assert_ne!(receiver.exit_code(), 0);
    assert!(fs::read(dst.path().join("f")).unwrap() == old);
    assert_eq!(
        files_under(dst.path()),
        [Path::new("f")],
        "nothing else left"
    );
    let message = said["message"].as_str().unwrap();
    let arrived: usize = message
        .rsplit(", ")
        .next()
        .and_then(|last| last.strip_suffix(" arrived"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    // Offered with that size (the same chunks: the chunk size follows the
    // offered size, 8 KiB up to 128 MiB), the same copies build a shorter file:
    // what was held back is written, into a new file.
    let (dst, mut receiver, mut peer, again) = offered_over(&old, arrived, later);
    assert_eq!(again, count);
    let inode = fs::metadata(dst.path().join("f")).unwrap().ino();
    let said = answered(&mut peer, &[copy(0, count - 1)], &old[..arrived]);
    assert_eq!(said["type"], "ok", "{said}");
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_ne!(fs::metadata(dst.path().join("f")).unwrap().ino(), inode);
    assert!(fs::read(dst.path().join("f")).unwrap() == old[..arrived]);
    assert_eq!(receiver.stdout().trim(), "delta    f");
    // The whole file and a literal after it: held back, then written.
    let mut longer = old.clone();
    longer.extend_from_slice(b"more");
    let (dst, mut receiver, mut peer, count) = offered_over(&old, longer.len(), later);
    let said = answered(&mut peer, &[copy(0, count), literal(4, b"more")], &longer);
    assert_eq!(said["type"], "ok", "{said}");
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(fs::read(dst.path().join("f")).unwrap() == longer);
}

/// Found with `-I`: a file of the tree with a second name there is sent again (a
/// new file: one with several names is never a basis), and the second name, a
/// hard link of the old file, was `same` to the plan and stayed with the old
/// one, the pair split until the next run. It happened without `-I` too, to a
/// hard-linked file that changed.
#[test]
fn hard_links_in_the_tree_stay_linked_when_their_file_is_sent_again() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    write_at_the_time(&tree, "a", NEW);
    fs::hard_link(tree.join("a"), tree.join("b")).unwrap();
    let mut serving = Receiver::start(dst.path(), Some(KEY), &["--overwrite", "--serve"]);
    let first = send(&[&tree], serving.port, KEY, &[]);
    assert!(first.status.success(), "{}", stderr_of(&first));
    let inode = |name: &str| fs::metadata(dst.path().join("t").join(name)).unwrap().ino();
    assert_eq!(inode("a"), inode("b"));

    let dry = send(&[&tree], serving.port, KEY, &["-I", "-n"]);
    let listed = stdout_of(&dry);
    assert!(listed.contains("replaced hard link t/b"), "{listed}");
    let again = send(&[&tree], serving.port, KEY, &["-I", "-i"]);
    assert!(again.status.success(), "{}", stderr_of(&again));
    assert_eq!(stdout_of(&again), "replaced t/a\nreplaced hard link t/b\n");
    assert_eq!(inode("a"), inode("b"), "still one file");

    // A change, without -I: both names hold the new bytes.
    fs::write(tree.join("a"), b"changed, and longer than before\n").unwrap();
    let changed = send(&[&tree], serving.port, KEY, &[]);
    assert!(changed.status.success(), "{}", stderr_of(&changed));
    assert_eq!(inode("a"), inode("b"), "still one file");
    let b = fs::read(dst.path().join("t/b")).unwrap();
    assert_eq!(b, b"changed, and longer than before\n");
    drop(serving.child.kill());
}

#[test]
fn an_unchanged_file_put_and_got_with_ignore_times_stays_and_the_quota_holds() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"20 MiB\"")]);
    let home = site.home("alice");
    let content = pattern(1 << 20, 65);
    write_at_the_time(&home, "big", &content);
    let local = write_at_the_time(&site.path().join("local"), "big", &content);
    let server = site.serve(&[]);
    let inode = |path: &Path| fs::metadata(path).unwrap().ino();
    let before = inode(&home.join("big"));
    let relay = Relay::start(server.port(), Faults::default());
    let to = format!("127.0.0.1:{}:", relay.port);
    let put = client(
        &site,
        "alice",
        &["send", "-f", "-I", local.to_str().unwrap(), &to],
    );
    expect_exit(&put, 0, "a put -f -I of an unchanged file");
    let said = stderr_of(&put);
    // Gone through the delta (the relay saw its fingerprints), kept, and counted as
    // already there on both sides.
    assert!(said.contains("1 already there"), "{said}");
    assert_eq!(inode(&home.join("big")), before, "kept on the server");
    assert!(fs::read(home.join("big")).unwrap() == content);
    assert!(relay.both_ways() < 64 << 10, "{} bytes", relay.both_ways());
    assert_eq!(
        server.usage("alice"),
        (1 << 20, 1),
        "the quota counts it once"
    );

    let downloads = site.download_dir("dl");
    let there = write_at_the_time(&downloads, "big", &content);
    let before = inode(&there);
    let from = server.at("big");
    let dl = downloads.to_str().unwrap();
    let dry = client(&site, "alice", &["get", "-f", "-I", "-n", &from, dl]);
    expect_exit(&dry, 0, "a get -f -I -n");
    assert!(
        stdout_of(&dry).contains("changed  big"),
        "{}",
        stdout_of(&dry)
    );
    let get = client(
        &site,
        "alice",
        &["get", "-f", "-I", "-i", &from, downloads.to_str().unwrap()],
    );
    expect_exit(&get, 0, "a get -f -I of an unchanged file");
    assert_eq!(stdout_of(&get).trim(), "", "nothing changed here");
    assert!(
        stderr_of(&get).contains("1 already there"),
        "{}",
        stderr_of(&get)
    );
    assert_eq!(inode(&there), before, "kept here");
}

/// The `--json` file events of `out` (one JSON object per line) for `path`.
fn file_events(out: &str, path: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "file" && event["path"] == path)
        .collect()
}

#[test]
fn a_kept_file_is_reported_same_with_the_hash_it_was_verified_by_on_both_sides() {
    let content = pattern(256 << 10, 77);
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = write_at_the_time(src.path(), "f", &content);
    write_at_the_time(dst.path(), "f", &content);
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &["--overwrite", "--json"]);
    let sent = send(&[&file], receiver.port, KEY, &["-I", "--json"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let digest = blake3::hash(&content).to_hex().to_string();
    for (side, out) in [
        ("sender", stdout_of(&sent)),
        ("receiver", receiver.stdout()),
    ] {
        let events = file_events(&out, "f");
        assert_eq!(events.len(), 1, "{side}: {out}");
        let event = &events[0];
        assert_eq!(event["status"], "same", "{side}: {event}");
        assert_eq!(event["hash"], "blake3", "{side}: {event}");
        assert_eq!(event["digest"], digest.as_str(), "{side}: {event}");
    }
}
