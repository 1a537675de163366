//! What a receiver could not apply (owners, setuid/setgid, attributes, times, the
//! metadata of what it held already) reaches the person who ran `xfer send`: the
//! receiver's `end` carries the counts (docs/PROTOCOL.md 16.3), and the sender says
//! a note per kind, a `not_kept` event with `--json`, nothing with `-q`, and still
//! exits 0. An older receiver that sends no counts leaves it silent; hostile counts
//! are `protocol`, never a panic; two sessions of one listener each hear their own.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::util::peer::Peer;
use crate::util::{
    KEY, Receiver, link_tree_to_meta_peer, peer_sender, send, stderr_of, stdout_events,
};

/// A receiver listening as nobody (`--serve`) into a directory of nobody's, or
/// `None`, said, where the test cannot run one (not root, no setpriv).
fn nobody_receiver(out: &Path) -> Option<Receiver> {
    let mut command = crate::util::xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--serve", "--dir"])
        .arg(out)
        .env("XFER_KEY", KEY);
    let Some(command) = crate::util::as_nobody(command) else {
        eprintln!("skipped: needs root and setpriv to run a receiver as nobody");
        return None;
    };
    std::os::unix::fs::chown(out, Some(65534), Some(65534)).unwrap();
    Some(Receiver::spawn(command))
}

/// Asserts that the line of `log` saying `what` begins with the session's peer.
fn assert_names_the_peer(log: &str, what: &str) {
    let line = log
        .lines()
        .find(|line| line.contains(what))
        .unwrap_or_else(|| panic!("no line says {what:?}: {log}"));
    assert!(line.starts_with("xfer: warning: 127.0.0.1:"), "{log}");
}

/// `root/NAME`: a directory holding a file, the two sent with their owners.
fn small_tree(root: &Path, name: &str) -> std::path::PathBuf {
    let tree = root.join(name);
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("x"), b"x").unwrap();
    tree
}

/// A session of the independent peer that offers files of one byte named `paths`,
/// each with an owner (uid and gid 12345), sends the first (its name as its
/// bytes) and reads its `ok`: the session then waits, its `end` not sent.
fn first_of_owned_files(port: u16, paths: &[&str]) -> Peer {
    let mut sender = peer_sender(port, &["aead", "meta"]);
    let owned = |path: &&str| {
        json!({"path":path,"kind":"file","size":1,"mode":420,"mtime":1_700_000_000,
            "uid":12345,"gid":12345})
    };
    sender
        .send_offer(&[paths.iter().map(owned).collect()])
        .unwrap();
    let plan = sender.read_plan(paths.len()).unwrap();
    assert_eq!(plan[0]["action"], "send", "{plan:?}");
    sender
        .send_file(0, paths[0], &paths[0].as_bytes()[..1], 0)
        .unwrap();
    assert_eq!(sender.read_control().unwrap()["type"], "ok");
    sender
}

fn not_kept(output: &Output) -> Vec<Value> {
    let events = stdout_events(output);
    events
        .into_iter()
        .filter(|event| event["event"] == "not_kept")
        .collect()
}

#[test]
fn a_sender_hears_what_a_receiver_that_is_not_root_dropped_as_an_event_and_not_under_quiet() {
    let out = tempfile::tempdir().unwrap();
    let Some(mut receiver) = nobody_receiver(out.path()) else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let tree = small_tree(src.path(), "a");
    let sent = send(&[&tree], receiver.port, KEY, &["--owner", "--json"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let events = not_kept(&sent);
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["side"], "receiver", "{event}");
    assert_eq!(event["owners"], 2, "{event}");
    assert_eq!(event["set_id"], 0, "{event}");
    let heard = stderr_of(&sent);
    let note = "note: the receiver did not keep owners on 2 entries";
    assert_eq!(heard.matches(note).count(), 1, "{heard}");

    let tree = small_tree(src.path(), "b");
    let quiet = send(&[&tree], receiver.port, KEY, &["--owner", "-q"]);
    assert!(quiet.status.success(), "{}", stderr_of(&quiet));
    assert!(
        !stderr_of(&quiet).contains("note:"),
        "{}",
        stderr_of(&quiet)
    );
    receiver.child.kill().unwrap();
}

#[test]
fn two_sessions_into_one_listener_are_each_told_only_their_own() {
    let out = tempfile::tempdir().unwrap();
    let Some(mut receiver) = nobody_receiver(out.path()) else {
        return;
    };
    // The first session: one file with an owner, applied (and dropped) before its
    // `ok`; the session then waits, its `end` not sent yet.
    let mut first = first_of_owned_files(receiver.port, &["f"]);

    // The second session, all of it meanwhile: two entries with owners.
    let src = tempfile::tempdir().unwrap();
    let tree = small_tree(src.path(), "b");
    let second = send(&[&tree], receiver.port, KEY, &["--owner", "--json"]);
    assert!(second.status.success(), "{}", stderr_of(&second));
    let events = not_kept(&second);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["owners"], 2, "{events:?}");

    first.send_end().unwrap();
    let end = first.read_control().unwrap();
    assert_eq!(end["type"], "end", "{end}");
    assert_eq!(end["dropped"], json!({"owners": 1}), "{end}");
    receiver.child.kill().unwrap();
}

/// A `send -a` of a directory holding a link (no data) to the independent peer as
/// the receiver, which plans everything and answers the sender's `end` with `end`
/// (the frame's bytes as given).
fn against_a_receiver_ending_with(end: String) -> Output {
    let answer = move |peer: &mut Peer, offer: Vec<Value>| {
        let send = json!({"action":"send","offset":0});
        peer.send_plan(&[vec![send; offer.len()]]).unwrap();
        assert_eq!(peer.read_control().unwrap()["type"], "end");
        peer.send_frame(end.as_bytes()).unwrap();
        // What the sender says back (a `protocol` error), if anything.
        let _ = peer.read_control();
    };
    link_tree_to_meta_peer(&["-a", "--json"], answer).0
}

#[test]
fn an_older_receiver_that_sends_no_counts_leaves_the_sender_silent() {
    let sent = against_a_receiver_ending_with(json!({"type":"end"}).to_string());
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert!(not_kept(&sent).is_empty(), "{}", stderr_of(&sent));
    assert!(!stderr_of(&sent).contains("note:"), "{}", stderr_of(&sent));
}

#[test]
fn counts_of_kinds_a_sender_does_not_know_are_ignored_and_the_others_said() {
    let end = json!({"type":"end","dropped":{"times":2,"owners":0,"later_kind":99,
        "nested":{"a":[1]}}});
    let sent = against_a_receiver_ending_with(end.to_string());
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let heard = stderr_of(&sent);
    let note = "note: the receiver did not keep times on 2 entries";
    assert_eq!(heard.matches(note).count(), 1, "{heard}");
    assert_eq!(heard.matches("note:").count(), 1, "{heard}");
    let events = not_kept(&sent);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["times"], 2, "{events:?}");
    assert!(events[0].get("later_kind").is_none(), "{events:?}");
}

#[test]
fn hostile_counts_from_a_receiver_are_a_protocol_error_not_a_panic() {
    let hostile = [
        json!({"owners": 3}), // more than the 2 entries offered
        json!({"owners": 18_446_744_073_709_551_615_u64}),
        json!({"owners": -1}),
        json!({"owners": 1.0}),
        json!({"owners": "1"}),
        json!({"owners": null}),
        json!(7),
        json!([1]),
        Value::Null,
    ];
    for dropped in hostile {
        let end = json!({"type":"end","dropped":dropped}).to_string();
        let sent = against_a_receiver_ending_with(end);
        let heard = stderr_of(&sent);
        assert_eq!(sent.status.code(), Some(8), "{dropped}: {heard}");
        assert!(!heard.contains("panicked"), "{dropped}: {heard}");
        assert!(!heard.contains("note:"), "{dropped}: {heard}");
        assert!(not_kept(&sent).is_empty(), "{dropped}: {heard}");
    }
    // A number beyond u64, and a key twice, written by hand.
    for end in [
        r#"{"type":"end","dropped":{"owners":18446744073709551616}}"#,
        r#"{"type":"end","dropped":{"owners":1,"owners":1}}"#,
    ] {
        let sent = against_a_receiver_ending_with(end.to_string());
        assert_eq!(sent.status.code(), Some(8), "{end}: {}", stderr_of(&sent));
    }
}

#[test]
fn a_directory_the_receiver_may_not_change_is_told_to_the_sender() {
    let out = tempfile::tempdir().unwrap();
    let Some(mut receiver) = nobody_receiver(out.path()) else {
        return;
    };
    // Root's directory, there already: nobody may merge into it (it is writable
    // to all) but not change its mode or time.
    let theirs = out.path().join("d");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("d");
    std::fs::create_dir(&tree).unwrap();
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o750)).unwrap();
    let sent = send(&[&tree], receiver.port, KEY, &["--json"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let heard = stderr_of(&sent);
    let note = "note: the receiver could not set the metadata on 1 entry";
    assert_eq!(heard.matches(note).count(), 1, "{heard}");
    assert!(heard.contains("the receiver names each"), "{heard}");
    assert_eq!(not_kept(&sent)[0]["metadata"], 1, "{heard}");
    let mode = std::fs::metadata(&theirs).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777, "left as it was");
    // A listener serves sessions at once: its warning says whose it is.
    // Once its stderr reader has caught the line (the sender may end first).
    let log = receiver.wait_for_stderr("cannot set its metadata");
    assert_names_the_peer(&log, "cannot set its metadata");
    receiver.child.kill().unwrap();
}

#[test]
fn a_serving_receiver_names_the_session_whose_notes_it_says() {
    let out = tempfile::tempdir().unwrap();
    let Some(mut receiver) = nobody_receiver(out.path()) else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let tree = small_tree(src.path(), "a");
    let sent = send(&[&tree], receiver.port, KEY, &["--owner"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let log = receiver.wait_for_stderr("owners not kept");
    // Sessions of a listener run at once: its note says whose it is, as its other
    // lines of a session do.
    assert_names_the_peer(&log, "note: owners not kept on 2 entries");
    receiver.child.kill().unwrap();
}

/// An owner the receiver could not give but that what it made has already (a user's
/// own files sent to their own account elsewhere) was not lost: only the others count.
#[test]
fn an_owner_the_receiver_gives_by_being_it_is_not_counted_as_dropped() {
    let out = tempfile::tempdir().unwrap();
    let Some(mut receiver) = nobody_receiver(out.path()) else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let tree = small_tree(src.path(), "mine");
    std::fs::write(tree.join("roots"), b"r").unwrap();
    for own in [tree.as_path(), &tree.join("x")] {
        std::os::unix::fs::lchown(own, Some(65534), Some(65534)).unwrap();
    }
    let sent = send(&[&tree], receiver.port, KEY, &["--owner", "--json"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let events = not_kept(&sent);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["owners"], 1, "only root's file: {events:?}");
    let heard = stderr_of(&sent);
    let note = "note: the receiver did not keep owners on 1 entry";
    assert_eq!(heard.matches(note).count(), 1, "{heard}");
    receiver.child.kill().unwrap();
}

/// A session cut after some files arrived still says what it could not apply to
/// them (they were applied and stay): the receiver's note comes without an `end`.
#[test]
fn a_cut_session_still_says_what_it_could_not_apply_to_what_arrived() {
    let out = tempfile::tempdir().unwrap();
    let Some(mut receiver) = nobody_receiver(out.path()) else {
        return;
    };
    let sender = first_of_owned_files(receiver.port, &["f", "g"]);
    drop(sender); // cut before the second file
    let said = receiver.wait_for_stderr("note: owners not kept on 1 entry");
    assert!(said.contains("not root"), "{said}");
    assert_eq!(std::fs::read(out.path().join("f")).unwrap(), b"f");
    receiver.child.kill().unwrap();
}

/// A time the target filesystem cannot hold is clamped by the kernel without an
/// error (ext4: up to 2446 with large inodes, 2038 with small ones): the copy does
/// not have it, and both sides say so (it used to go unsaid, and arrive again on
/// every run). Sent from tmpfs, which holds it, into the test's temporary directory.
#[test]
fn a_time_the_target_filesystem_clamps_is_said_on_both_sides() {
    let Ok(src) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm to hold a time past 2446");
        return;
    };
    let file = src.path().join("far");
    std::fs::write(&file, b"far\n").unwrap();
    // 2500-01-01, which tmpfs holds.
    let far = std::time::UNIX_EPOCH + std::time::Duration::from_secs(16_725_225_600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(far)
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let kept = std::fs::metadata(out.path().join("far"))
        .unwrap()
        .modified()
        .unwrap();
    if kept == far {
        eprintln!("skipped: the target filesystem holds 2500 (no clamp to see)");
        return;
    }
    let said = "note: times not kept on 1 entry: the filesystem cannot hold them";
    assert!(receiver.stderr().contains(said), "{}", receiver.stderr());
    let told = "the receiver did not keep times on 1 entry";
    assert!(stderr_of(&sent).contains(told), "{}", stderr_of(&sent));
}
