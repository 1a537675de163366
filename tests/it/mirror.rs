//! `--delete` (issue 21): a mirror removes what the source lacks beneath the
//! directories sent, and nothing else: not outside the target, not through a link
//! planted in the tree or a target directory that is a link, not what a filter
//! excludes, not without the receiver's `--overwrite`, not for a read-only user;
//! a server gives the room back. Also `--itemize` lines and `--json` events, and
//! a peer without the feature `mirror` (exit 9 before anything happens).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::util::peer::{Acceptor, Decision};
use crate::util::server::{Server, Site, client, code, stdout_of};
use crate::util::site::check_home;
use crate::util::{
    KEY, LISTENER_FEATURES, Receiver, files_under, peer_listening, receiver_without_meta, send,
    stderr_of, stdout_events, summary_event,
};

/// A source tree `src/tree` (a, sub/b) and a receiving directory `dst` whose copy
/// of the tree holds what the source does not; everything made well before the
/// session starts (a mirror spares what changed since).
fn trees(root: &Path) {
    fs::create_dir_all(root.join("src/tree/sub")).unwrap();
    fs::write(root.join("src/tree/a"), b"a\n").unwrap();
    fs::write(root.join("src/tree/sub/b"), b"b\n").unwrap();
    fs::create_dir_all(root.join("dst/tree/old/deeper")).unwrap();
    fs::create_dir_all(root.join("dst/tree/sub")).unwrap();
    fs::write(root.join("dst/tree/stale"), b"stale\n").unwrap();
    fs::write(root.join("dst/tree/old/deeper/o"), b"o\n").unwrap();
    fs::write(root.join("dst/beside"), b"not in the tree\n").unwrap();
}

/// Lets a moment pass: what a mirror may remove must be older than its session.
pub(super) fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

/// `xfer send src/tree` with `send_extra` to `recv --dir dst` with `recv_extra`;
/// the sender's output and the receiver's exit code and stderr.
pub(super) fn mirror(
    root: &Path,
    recv_extra: &[&str],
    send_extra: &[&str],
) -> (Output, i32, String) {
    settle();
    let mut receiver = Receiver::start(&root.join("dst"), Some(KEY), recv_extra);
    let sent = send(&[&root.join("src/tree")], receiver.port, KEY, send_extra);
    let code = receiver.exit_code();
    (sent, code, receiver.stderr())
}

/// A serving receiver into `root/dst` that lets its senders replace files, with
/// `tree` mirrored to it once (which must succeed).
fn serving_a_first_copy(root: &Path, tree: &Path) -> Receiver {
    let receiver = Receiver::start(&root.join("dst"), Some(KEY), &["--overwrite", "--serve"]);
    let first = send(&[tree], receiver.port, KEY, &["--delete"]);
    assert_eq!(code(&first), 0, "{}", stderr_of(&first));
    receiver
}

pub(super) fn names(dir: &Path) -> Vec<String> {
    files_under(dir)
        .iter()
        .map(|path| path.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn delete_removes_what_the_source_lacks_and_nothing_outside_the_tree() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious"), b"keep me\n").unwrap();
    trees(root.path());
    // Links planted in the receiver's tree: removed themselves, never followed.
    symlink(outside.path(), root.path().join("dst/tree/link-to-dir")).unwrap();
    symlink(
        outside.path().join("precious"),
        root.path().join("dst/tree/sub/link"),
    )
    .unwrap();
    let (sent, recv_code, recv_err) = mirror(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(
        names(&root.path().join("dst")),
        ["beside", "tree/a", "tree/sub/b"]
    );
    assert!(!root.path().join("dst/tree/old").exists());
    assert!(fs::symlink_metadata(root.path().join("dst/tree/link-to-dir")).is_err());
    assert_eq!(
        fs::read(outside.path().join("precious")).unwrap(),
        b"keep me\n"
    );
    let stdout = String::from_utf8_lossy(&sent.stdout);
    for line in [
        "new      tree/a",
        "new      tree/sub/b",
        "deleted  tree/stale",
        "deleted  tree/old/deeper/o",
        "deleted  tree/old/deeper/",
        "deleted  tree/old/",
        "deleted  tree/link-to-dir",
        "deleted  tree/sub/link",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    // Deepest first: the file before its directories.
    let at = |needle: &str| stdout.find(needle).unwrap();
    assert!(at("deleted  tree/old/deeper/o") < at("deleted  tree/old/\n"));
    assert!(
        stderr_of(&sent).contains("deleted 6"),
        "{}",
        stderr_of(&sent)
    );
    // A second run has nothing to do: no file moves, nothing is deleted.
    let (again, _, _) = mirror(root.path(), &["--overwrite"], &["--delete", "-i", "--json"]);
    let events = stdout_events(&again);
    assert!(!events.iter().any(|e| e["event"] == "change"), "{events:?}");
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["same"], 2, "{summary}");
    assert_eq!(summary["files"], 0, "{summary}");
}

/// Stale names of one file in two directories of the tree both go in one run:
/// removing the first changes the file's `ctime`, which is the mirror's own doing,
/// not another session's change.
#[test]
fn every_stale_name_of_a_hard_linked_file_goes_in_one_run() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let dst = root.path().join("dst/tree");
    fs::hard_link(dst.join("stale"), dst.join("sub/twin")).unwrap();
    fs::hard_link(dst.join("old/deeper/o"), dst.join("zz-twin")).unwrap();
    fs::create_dir(dst.join("pp")).unwrap();
    fs::hard_link(dst.join("old/deeper/o"), dst.join("pp/twin")).unwrap();
    let (sent, recv_code, recv_err) = mirror(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(!stdout.contains("kept"), "{stdout}");
    assert_eq!(
        names(&root.path().join("dst")),
        ["beside", "tree/a", "tree/sub/b"]
    );
}

#[test]
fn json_carries_each_change_and_the_count() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let (sent, _, _) = mirror(root.path(), &["--overwrite"], &["--delete", "--json"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    let events = stdout_events(&sent);
    // A directory's say so (`dir`), as the text's trailing slash does.
    let deleted: Vec<(&str, bool)> = events
        .iter()
        .filter(|e| e["event"] == "change" && e["change"] == "deleted")
        .map(|e| (e["path"].as_str().unwrap(), e["dir"] == true))
        .collect();
    assert_eq!(
        deleted,
        [
            ("tree/old/deeper/o", false),
            ("tree/old/deeper", true),
            ("tree/old", true),
            ("tree/stale", false)
        ]
    );
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["deleted"], 4, "{summary}");
    assert_eq!(summary["ok"], true);
}

/// The offered directory's name is a link on the receiver: as `rsync -a` does
/// (without `--keep-dirlinks`), the link itself is replaced by a directory, and
/// where it pointed is never entered.
#[test]
fn a_target_that_is_a_link_is_never_entered() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious"), b"keep me\n").unwrap();
    trees(root.path());
    fs::remove_dir_all(root.path().join("dst/tree")).unwrap();
    symlink(outside.path(), root.path().join("dst/tree")).unwrap();
    let (sent, _, _) = mirror(root.path(), &["--overwrite"], &["--delete"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(names(outside.path()), ["precious"]);
    assert!(
        fs::symlink_metadata(root.path().join("dst/tree"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        names(&root.path().join("dst")),
        ["beside", "tree/a", "tree/sub/b"]
    );
    // Without the permission to replace, the link stays and is refused.
    fs::remove_dir_all(root.path().join("dst/tree")).unwrap();
    symlink(outside.path(), root.path().join("dst/tree")).unwrap();
    let (sent, _, _) = mirror(root.path(), &[], &[]);
    assert_eq!(code(&sent), 6, "the tree is refused: {}", stderr_of(&sent));
    assert_eq!(names(outside.path()), ["precious"]);
    assert!(
        fs::symlink_metadata(root.path().join("dst/tree"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn delete_spares_what_the_filters_exclude() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    fs::write(root.path().join("src/tree/x.tmp"), b"not sent\n").unwrap();
    fs::create_dir_all(root.path().join("dst/tree/cache/deep")).unwrap();
    fs::write(root.path().join("dst/tree/cache/deep/c"), b"c\n").unwrap();
    fs::write(root.path().join("dst/tree/sub/keep.tmp"), b"keep\n").unwrap();
    let (sent, recv_code, _) = mirror(
        root.path(),
        &["--overwrite"],
        &["--delete", "--exclude", "*.tmp", "--exclude", "cache/"],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0);
    assert_eq!(
        names(&root.path().join("dst")),
        [
            "beside",
            "tree/a",
            "tree/cache/deep/c",
            "tree/sub/b",
            "tree/sub/keep.tmp"
        ]
    );
}

#[test]
fn delete_without_overwrite_is_denied_before_anything_happens() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let before = names(&root.path().join("dst"));
    let (sent, recv_code, recv_err) = mirror(root.path(), &[], &["--delete"]);
    assert_eq!(code(&sent), 6, "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("--overwrite"),
        "{}",
        stderr_of(&sent)
    );
    assert_ne!(recv_code, 0, "{recv_err}");
    assert_eq!(
        names(&root.path().join("dst")),
        before,
        "nothing sent, nothing deleted"
    );
}

#[test]
fn delete_is_a_usage_error_for_a_single_file_or_a_stream() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let file = root.path().join("src/tree/a");
    let one = send(&[&file], 9, KEY, &["--delete"]);
    assert_eq!(code(&one), 2, "{}", stderr_of(&one));
    let stream = send(&[Path::new("-")], 9, KEY, &["--delete"]);
    assert_eq!(code(&stream), 2, "{}", stderr_of(&stream));
}

#[test]
fn a_peer_without_mirror_is_refused_before_anything_happens() {
    for flag in ["--delete", "--dry-run"] {
        let root = tempfile::tempdir().unwrap();
        trees(root.path());
        // The sender refuses instead of auth: no offer ever comes.
        let (port, old) =
            peer_listening(|mut peer| peer.accept_handshake(&receiver_without_meta()).is_err());
        let sent = send(&[&root.path().join("src/tree")], port, KEY, &[flag]);
        assert_eq!(code(&sent), 9, "{flag}: {}", stderr_of(&sent));
        assert!(stderr_of(&sent).contains("mirror"), "{}", stderr_of(&sent));
        assert!(old.join().unwrap(), "the old peer saw no transfer");
    }
}

#[test]
fn a_peer_that_cannot_be_offered_every_entry_is_not_asked_to_delete() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    // A link: a peer without `meta` cannot be offered it, and would lose its copy.
    symlink("a", root.path().join("src/tree/link")).unwrap();
    let (port, peer) = peer_listening(|mut peer| {
        let features = [LISTENER_FEATURES, &["mirror"]].concat();
        let receiver = Acceptor::new(KEY, "receiver").features(&features);
        peer.accept_handshake(&receiver).expect("handshake");
        peer.receive_transfer(|_, _| Decision::Send)
            .expect("a transfer")
    });
    let sent = send(&[&root.path().join("src/tree")], port, KEY, &["--delete"]);
    let received = peer.join().unwrap();
    let mirror = received
        .mirror
        .expect("the offer still says what it mirrors");
    assert_ne!(
        mirror.get("delete"),
        Some(&serde_json::json!(true)),
        "{mirror}"
    );
    let stderr = stderr_of(&sent);
    assert!(
        stderr.contains("not deleting anything: 1 entries cannot be offered to this peer"),
        "{stderr}"
    );
    assert!(stderr.contains("link"), "the link is said: {stderr}");
    assert!(
        received.files.contains_key("tree/a"),
        "{:?}",
        received.files
    );
}

#[test]
fn a_put_with_delete_gives_the_room_back_and_a_read_only_user_is_denied() {
    const QUOTA: u64 = 1_000_000;
    let site = Site::new();
    site.users(&[
        ("alice", &format!("quota = {QUOTA}")),
        ("guest", "read_only = true"),
    ]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/old")).unwrap();
    fs::write(home.join("tree/old/big"), vec![7u8; 600_000]).unwrap();
    fs::write(home.join("tree/a"), b"older a\n").unwrap();
    fs::write(home.join("outside"), b"stays\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(local.join("sub")).unwrap();
    fs::write(local.join("a"), b"a\n").unwrap();
    fs::write(local.join("sub/b"), vec![1u8; 500_000]).unwrap();
    let server = site.serve(&[]);
    settle();
    let tree = local.to_str().unwrap();
    // 600 000 beside 500 000 more would not fit: the first run, leaving sub/ out,
    // removes old/ and gives its room back, so that the second fits.
    let put = client(
        &site,
        "alice",
        &[
            "send",
            tree,
            &server.at("/"),
            "--delete",
            "--exclude",
            "sub/",
        ],
    );
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    assert_eq!(names(&home), ["outside", "tree/a"]);
    assert_eq!(
        fs::read(home.join("tree/a")).unwrap(),
        b"a\n",
        "--delete implies -f"
    );
    check_home(&site, &server, "alice", QUOTA);
    let put = client(&site, "alice", &["send", tree, &server.at("/"), "--delete"]);
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    assert_eq!(names(&home), ["outside", "tree/a", "tree/sub/b"]);
    check_home(&site, &server, "alice", QUOTA);
    let denied = client(&site, "guest", &["send", tree, &server.at("/"), "--delete"]);
    assert_eq!(code(&denied), 6, "{}", stderr_of(&denied));
    assert!(
        stderr_of(&denied).contains("denied"),
        "{}",
        stderr_of(&denied)
    );
}

#[test]
fn a_get_with_delete_and_filters_mirrors_the_server_into_a_local_directory() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/sub")).unwrap();
    fs::write(home.join("tree/a"), b"a\n").unwrap();
    fs::write(home.join("tree/x.tmp"), b"left out\n").unwrap();
    fs::write(home.join("tree/sub/b"), b"b\n").unwrap();
    let local = site.path().join("dl");
    fs::create_dir_all(local.join("tree/old")).unwrap();
    fs::write(local.join("tree/old/o"), b"o\n").unwrap();
    fs::write(local.join("tree/mine.tmp"), b"kept: excluded\n").unwrap();
    fs::write(local.join("beside"), b"beside\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let dl = local.to_str().unwrap();
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "--exclude", "*.tmp"];
        args.extend_from_slice(extra);
        let at = server.at("tree");
        args.extend_from_slice(&[&at, dl]);
        client(&site, "alice", &args)
    };
    let before = names(&local);
    let dry = get(&["--delete", "-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert_eq!(names(&local), before, "a dry run changes nothing");
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(stdout.contains("deleted  tree/old/o"), "{stdout}");
    assert!(stdout.contains("new      tree/a"), "{stdout}");
    let real = get(&["--delete", "-i"]);
    assert_eq!(code(&real), 0, "{}", stderr_of(&real));
    assert_eq!(
        names(&local),
        ["beside", "tree/a", "tree/mine.tmp", "tree/sub/b"]
    );
    let stdout = String::from_utf8_lossy(&real.stdout);
    assert!(stdout.contains("deleted  tree/old/\n"), "{stdout}");
}

#[test]
fn the_shell_puts_and_gets_with_delete_and_filters() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/old")).unwrap();
    fs::write(home.join("tree/old/o"), b"o\n").unwrap();
    fs::write(home.join("tree/keep.tmp"), b"excluded, kept\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("a"), b"a\n").unwrap();
    fs::write(local.join("x.tmp"), b"not sent\n").unwrap();
    let dl = site.path().join("dl");
    fs::create_dir_all(dl.join("tree/gone")).unwrap();
    fs::write(dl.join("tree/gone/g"), b"g\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let script = site.path().join("script.xfer");
    fs::write(
        &script,
        format!(
            "put --delete --exclude *.tmp {}\nget --delete tree {}\n",
            local.display(),
            dl.display()
        ),
    )
    .unwrap();
    let run = client(
        &site,
        "alice",
        &["shell", &server.addr(), "-b", script.to_str().unwrap()],
    );
    assert_eq!(code(&run), 0, "{}", stderr_of(&run));
    assert_eq!(names(&home), ["tree/a", "tree/keep.tmp"]);
    assert_eq!(names(&dl), ["tree/a", "tree/keep.tmp"]);
}

/// Another session's file, half written (a temporary) and, over an older copy,
/// claimed in the user's ledger, is not deleted by a mirror running meanwhile; the
/// file it then completes is whole.
#[test]
fn a_mirror_spares_what_another_session_is_writing() {
    use crate::util::pattern;
    use crate::util::site::{finish_put, put_begun};
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree")).unwrap();
    fs::write(home.join("tree/busy"), b"the older copy\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("a"), b"a\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let new = pattern(300_000, 3);
    let mut writer = put_begun(&server, "alice", "tree/busy", &new, 100_000);
    let mirror = client(
        &site,
        "alice",
        &[
            "send",
            local.to_str().unwrap(),
            &server.at("/"),
            "--delete",
            "-i",
        ],
    );
    assert_eq!(code(&mirror), 0, "{}", stderr_of(&mirror));
    let listed = String::from_utf8_lossy(&mirror.stdout);
    assert!(!listed.contains("deleted  tree/busy"), "{listed}");
    // Kept, and said why: the other session's file and its partial data.
    for line in [
        "kept     tree/busy  (another session is receiving or writing it)",
        "  (a temporary or partial file of xfer)",
    ] {
        assert!(listed.contains(line), "{line:?} in {listed}");
    }
    let answer = finish_put(&mut writer, 0, "tree/busy", &new, 100_000);
    assert_eq!(answer["type"], "ok", "{answer}");
    assert_eq!(fs::read(home.join("tree/busy")).unwrap(), new);
    assert_eq!(fs::read(home.join("tree/a")).unwrap(), b"a\n");
}

/// A session writing into a directory (its plan took it; its files there have
/// not come yet) keeps it from another session's `--delete`, which found it
/// stale: kept, said busy, and the first session's files arrive. It was removed,
/// and every file still to come there failed.
#[test]
fn a_mirror_keeps_a_directory_another_session_is_still_to_write_into() {
    let root = tempfile::tempdir().unwrap();
    let (slow, other) = (
        root.path().join("slow/site"),
        root.path().join("other/site"),
    );
    fs::create_dir_all(slow.join("sub")).unwrap();
    fs::write(slow.join("a"), vec![5u8; 3 << 20]).unwrap();
    fs::write(slow.join("sub/x"), b"x\n").unwrap();
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("other"), b"o\n").unwrap();
    let dst = root.path().join("dst");
    fs::create_dir_all(dst.join("site/sub")).unwrap();
    fs::write(dst.join("site/sub/old"), b"stale\n").unwrap();
    settle();
    let receiver = Receiver::start(&dst, Some(KEY), &["--overwrite", "--serve"]);
    let mut writer = crate::util::xfer()
        .arg("send")
        .arg(&slow)
        .arg(format!("127.0.0.1:{}", receiver.port))
        .args(["--limit-rate", "1M", "-q"])
        .env("XFER_KEY", KEY)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its plan is made once its first file is on its way.
    let started = std::time::Instant::now();
    while !fs::read_dir(dst.join("site")).unwrap().any(|entry| {
        entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".xfer-")
    }) && started.elapsed() < crate::util::TIMEOUT
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mirror = send(&[&other], receiver.port, KEY, &["--delete", "-i"]);
    assert_eq!(code(&mirror), 0, "{}", stderr_of(&mirror));
    let said = stdout_of(&mirror);
    assert!(
        said.contains("kept     site/sub/  (another session is receiving or writing it)"),
        "{said}"
    );
    let status = crate::util::wait_for(&mut writer, crate::util::TIMEOUT);
    assert!(status.success(), "{}", receiver.stderr());
    assert_eq!(fs::read(dst.join("site/sub/x")).unwrap(), b"x\n");
}

/// Alice's `send --delete` of a one-file `tree` (just `a`) into her home on a
/// server of `site`, run in a thread, returned once it is removing the 20 000
/// stale files it found in `stale` (made here: enough that removing them outlasts
/// another session's whole request): the server, and the mirror's thread.
fn mirror_under_way(site: &Site, stale: &Path) -> (Server, JoinHandle<Output>) {
    use crate::util::server::{as_user, eventually};
    fs::create_dir_all(stale).unwrap();
    for i in 0..20_000 {
        fs::write(stale.join(format!("f{i:05}")), b"stale\n").unwrap();
    }
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("a"), b"a\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let mut command = as_user(site, "alice", &["send", "--delete", "-q"]);
    command.arg(&local).arg(server.at("/"));
    let mirror = std::thread::spawn(move || crate::util::run(&mut command));
    // The mirror listed the directory and is removing what it found.
    eventually("the mirror deletes", || !stale.join("f00000").exists());
    (server, mirror)
}

/// A file another session replaces while a mirror is removing the rest of its
/// directory (after the mirror listed the directory, before it came to that name)
/// is that session's new file, made since the mirror began: it stays, whole, and
/// the quota still matches the disk.
#[test]
fn a_file_replaced_while_a_mirror_deletes_beside_it_stays() {
    use crate::util::peer::SendEntry;
    use crate::util::site::put;
    let site = Site::new();
    site.users(&[("alice", "")]);
    let stale = site.home("alice").join("tree");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("zzz"), b"the older copy\n").unwrap();
    let (server, mirror) = mirror_under_way(&site, &stale);
    let new = b"the other session's copy\n".to_vec();
    let mut other = server.login("alice");
    let report = put(
        &mut other,
        "tree",
        true,
        &[SendEntry::file("zzz", new.clone())],
    )
    .expect("the other put");
    assert!(report.delivered(0), "{report:?}");
    let mirror = mirror.join().unwrap();
    assert_eq!(code(&mirror), 0, "{}", stderr_of(&mirror));
    assert!(!stale.join("f19999").exists(), "the mirror ran to its end");
    assert_eq!(
        fs::read(stale.join("zzz")).unwrap(),
        new,
        "the other session's file"
    );
    check_home(&site, &server, "alice", u64::MAX);
}

/// While a mirror empties a stale directory on a server, another session may not
/// move that directory (or one above it) out of the tree: the `mv` is `busy`, so
/// the mirror never goes on removing what has become a path outside its tree.
#[test]
fn a_directory_a_mirror_is_emptying_cannot_be_moved_out_from_under_it() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let (server, mirror) = mirror_under_way(&site, &site.home("alice").join("tree/old"));
    for from in ["tree/old", "tree"] {
        let moved = client(&site, "alice", &["mv", &server.at(from), "kept"]);
        assert_eq!(code(&moved), 3, "mv {from}: {}", stderr_of(&moved));
        assert!(stderr_of(&moved).contains("busy"), "{}", stderr_of(&moved));
    }
    let mirror = mirror.join().unwrap();
    assert_eq!(code(&mirror), 0, "{}", stderr_of(&mirror));
    assert_eq!(names(&site.home("alice")), ["tree/a"]);
    check_home(&site, &server, "alice", u64::MAX);
}

/// "Sync, change, sync" at once into one `recv --serve`: what the first mirror
/// wrote is older than the second session, however soon that starts, and goes
/// when the source lost it.
#[test]
fn a_mirror_run_right_after_another_removes_what_the_first_one_wrote() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    settle();
    let tree = root.path().join("src/tree");
    let receiver = serving_a_first_copy(root.path(), &tree);
    assert!(root.path().join("dst/tree/a").exists());
    fs::remove_file(tree.join("a")).unwrap();
    let second = send(&[&tree], receiver.port, KEY, &["--delete", "-i"]);
    assert_eq!(code(&second), 0, "{}", stderr_of(&second));
    let listed = String::from_utf8_lossy(&second.stdout);
    assert!(listed.contains("deleted  tree/a"), "{listed}");
    assert_eq!(names(&root.path().join("dst")), ["beside", "tree/sub/b"]);
}

/// A hard-linked pair `a`, `b` of which the source keeps only `a`, changed: the
/// run that replaces `a` also removes `b`, although replacing `a` changed `b`'s
/// inode after the session began (its link count). It used to keep `b`, "changed
/// since the session began", until a second run; its dry run said `deleted`.
#[test]
fn a_stale_name_of_a_file_the_same_run_replaced_goes_in_that_run() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), b"one\n").unwrap();
    fs::hard_link(tree.join("a"), tree.join("b")).unwrap();
    let receiver = serving_a_first_copy(root.path(), &tree);
    settle();
    fs::remove_file(tree.join("b")).unwrap();
    fs::write(tree.join("a"), b"two, longer\n").unwrap();
    let dry = send(&[&tree], receiver.port, KEY, &["--delete", "-n"]);
    let real = send(&[&tree], receiver.port, KEY, &["--delete", "-i"]);
    assert_eq!(code(&real), 0, "{}", stderr_of(&real));
    let (dry, real) = (stdout_of(&dry), stdout_of(&real));
    assert!(dry.contains("deleted  tree/b"), "{dry}");
    assert!(
        real.contains("deleted  tree/b") && !real.contains("kept"),
        "{real}"
    );
    assert_eq!(names(&root.path().join("dst")), ["tree/a"]);
    assert_eq!(
        fs::read(root.path().join("dst/tree/a")).unwrap(),
        b"two, longer\n"
    );
}

/// A receiver's tree `dst/tree` made by `make` (in the receiver's directory) and
/// a source tree `src/tree` made by `source`, a moment apart; then one
/// `send --delete -i` (with `extra`) into `recv --overwrite`: its stdout, once
/// both succeeded.
fn one_mirror_run(
    root: &Path,
    (make, source): (impl FnOnce(&Path), impl FnOnce(&Path)),
    extra: &[&str],
) -> String {
    let (dst, tree) = (root.join("dst/tree"), root.join("src/tree"));
    fs::create_dir_all(&dst).unwrap();
    fs::create_dir_all(&tree).unwrap();
    make(&dst);
    source(&tree);
    settle();
    let mut receiver = Receiver::start(&root.join("dst"), Some(KEY), &["--overwrite"]);
    let flags: Vec<&str> = ["--delete", "-i"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let sent = send(&[&tree], receiver.port, KEY, &flags);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    stdout_of(&sent)
}

/// Every way the receiver takes a name from a hard-linked file, or gives it one,
/// changes its other names' ctime; each is the session's own doing, and a stale
/// other name goes in the same run: a file of 32 MiB or more (committed alone), a
/// file in the way of a directory, a directory a file replaces emptied of a
/// twin, a hard link made to a file already there.
#[test]
fn every_change_the_run_makes_to_a_twin_lets_its_stale_names_go() {
    let big = vec![3u8; 33 << 20];
    type Make<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Make, Make)> = vec![
        (
            "a file committed alone",
            Box::new(|dst: &Path| {
                fs::write(dst.join("a"), b"old").unwrap();
                fs::hard_link(dst.join("a"), dst.join("stale")).unwrap();
            }),
            Box::new(|tree: &Path| fs::write(tree.join("a"), &big).unwrap()),
        ),
        (
            "a file in the way of a directory",
            Box::new(|dst: &Path| {
                fs::write(dst.join("a"), b"old").unwrap();
                fs::hard_link(dst.join("a"), dst.join("stale")).unwrap();
            }),
            Box::new(|tree: &Path| {
                fs::create_dir(tree.join("a")).unwrap();
                fs::write(tree.join("a/in"), b"in").unwrap();
            }),
        ),
        (
            "a directory a file replaces",
            Box::new(|dst: &Path| {
                fs::create_dir(dst.join("a")).unwrap();
                fs::write(dst.join("a/f"), b"old").unwrap();
                fs::hard_link(dst.join("a/f"), dst.join("stale")).unwrap();
            }),
            Box::new(|tree: &Path| fs::write(tree.join("a"), b"a file now").unwrap()),
        ),
        (
            "a hard link made",
            Box::new(|dst: &Path| {
                fs::write(dst.join("a"), b"same").unwrap();
                fs::hard_link(dst.join("a"), dst.join("stale")).unwrap();
            }),
            Box::new(|tree: &Path| {
                fs::write(tree.join("a"), b"same").unwrap();
                fs::hard_link(tree.join("a"), tree.join("b")).unwrap();
            }),
        ),
    ];
    for (case, make, source) in cases {
        let root = tempfile::tempdir().unwrap();
        let same_time = |tree: &Path| {
            source(tree);
            // `a` is the same on both sides in the last case: size and time.
            if case == "a hard link made" {
                let stamp = fs::metadata(root.path().join("dst/tree/a"))
                    .unwrap()
                    .modified();
                let file = fs::File::options()
                    .write(true)
                    .open(tree.join("a"))
                    .unwrap();
                file.set_modified(stamp.unwrap()).unwrap();
            }
        };
        let said = one_mirror_run(root.path(), (&*make, same_time), &[]);
        assert!(
            said.contains("deleted  tree/stale") && !said.contains("kept"),
            "{case}: {said}"
        );
        assert!(!root.path().join("dst/tree/stale").exists(), "{case}");
    }
}

/// A directory of four names of one file moved at the source (`mv old new`): the
/// run makes the four new names side by side and removes the old ones, all in
/// that run. Two of the session's threads linking the one file at once used to
/// leave some old names kept, "changed since the session began".
#[test]
fn a_moved_directory_of_hard_links_leaves_no_stale_name() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(tree.join("old")).unwrap();
    fs::write(tree.join("m"), b"m\n").unwrap();
    for name in ["a", "b", "c", "d"] {
        fs::hard_link(tree.join("m"), tree.join("old").join(name)).unwrap();
    }
    let receiver = serving_a_first_copy(root.path(), &tree);
    fs::rename(tree.join("old"), tree.join("new")).unwrap();
    settle();
    let moved = send(&[&tree], receiver.port, KEY, &["--delete", "-i"]);
    assert_eq!(code(&moved), 0, "{}", stderr_of(&moved));
    let said = stdout_of(&moved);
    assert!(!said.contains("kept"), "{said}");
    assert_eq!(
        names(&root.path().join("dst")),
        [
            "tree/m",
            "tree/new/a",
            "tree/new/b",
            "tree/new/c",
            "tree/new/d"
        ]
    );
}

/// Another writer appends to the stale twin while the run that replaces its
/// other name is under way: that change is not the session's, and the twin
/// stays, said kept, with what was appended.
#[test]
fn a_twin_another_writer_changed_during_the_run_stays() {
    let root = tempfile::tempdir().unwrap();
    let stale = root.path().join("dst/tree/b");
    let appender = {
        let (stale, dir) = (stale.clone(), root.path().join("dst/tree"));
        std::thread::spawn(move || {
            // Once the run is writing `a`'s data, long before it can be named.
            let started = std::time::Instant::now();
            while !dir.exists()
                || !fs::read_dir(&dir).unwrap().any(|entry| {
                    entry
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".xfer-")
                })
            {
                assert!(
                    started.elapsed() < crate::util::TIMEOUT,
                    "the run never began"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut b = fs::OpenOptions::new().append(true).open(&stale).unwrap();
            std::io::Write::write_all(&mut b, b"appended").unwrap();
        })
    };
    let said = one_mirror_run(
        root.path(),
        (
            |dst: &Path| {
                fs::write(dst.join("a"), vec![1u8; 1 << 20]).unwrap();
                fs::hard_link(dst.join("a"), dst.join("b")).unwrap();
            },
            |tree: &Path| fs::write(tree.join("a"), vec![2u8; 3 << 20]).unwrap(),
        ),
        &["--limit-rate", "1M"],
    );
    appender.join().unwrap();
    assert!(
        said.contains("kept     tree/b  (changed since the session began)"),
        "{said}"
    );
    assert!(fs::read(&stale).unwrap().ends_with(b"appended"));
}

/// The same through a server, both ways: a `put --delete` and a `get --delete`
/// each remove the stale name in the run that replaced its twin, and the
/// server's books match its disk.
#[test]
fn a_server_mirror_removes_the_stale_twin_of_a_file_it_replaced_both_ways() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree")).unwrap();
    fs::write(home.join("tree/a"), b"old\n").unwrap();
    fs::hard_link(home.join("tree/a"), home.join("tree/b")).unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("a"), b"new a\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let tree = local.to_str().unwrap();
    let put = client(&site, "alice", &["send", tree, &server.at("/"), "--delete"]);
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    assert_eq!(names(&home), ["tree/a"]);
    check_home(&site, &server, "alice", 1_000_000);
    // The other way: a local copy with twins, the server's `tree` as the source.
    let copy = site.download_dir("copy");
    fs::create_dir_all(copy.join("tree")).unwrap();
    fs::write(copy.join("tree/a"), b"older\n").unwrap();
    fs::hard_link(copy.join("tree/a"), copy.join("tree/b")).unwrap();
    settle();
    let from = server.at("tree");
    let into = copy.to_str().unwrap();
    let get = client(&site, "alice", &["get", &from, into, "--delete", "-f"]);
    assert_eq!(code(&get), 0, "{}", stderr_of(&get));
    assert_eq!(names(&copy), ["tree/a"]);
    assert_eq!(fs::read(copy.join("tree/a")).unwrap(), b"new a\n");
}

/// A file written just before a mirror starts (`echo > junk; xfer send
/// --delete`) goes in that run: the session begins after the clock's tick in
/// which it was written, so it is never taken for a change made during the run
/// (it was, one run in five).
#[test]
fn a_file_written_just_before_a_mirror_goes_in_that_run() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    fs::write(tree.join("d/a"), b"a\n").unwrap();
    let receiver = serving_a_first_copy(root.path(), &tree);
    for round in 0..12 {
        let junk = root.path().join(format!("dst/tree/d/junk{round}"));
        fs::write(&junk, b"j\n").unwrap();
        let run = send(&[&tree], receiver.port, KEY, &["--delete", "-i"]);
        assert_eq!(code(&run), 0, "{}", stderr_of(&run));
        let said = stdout_of(&run);
        assert!(
            said.contains(&format!("deleted  tree/d/junk{round}")),
            "round {round}: {said}"
        );
        assert!(!junk.exists(), "round {round}: {said}");
    }
}

/// A receiver (the independent peer, listing `mirror`) that forges the report of
/// what it deleted, or leaves it out, is caught by the sender: nothing it claims is
/// shown as deleted.
#[test]
fn a_forged_or_missing_report_of_deletions_is_refused() {
    use crate::util::peer::Decision;
    use serde_json::json;
    for (forge, exit) in [(true, 5), (false, 8)] {
        let root = tempfile::tempdir().unwrap();
        trees(root.path());
        let (port, fake) = peer_listening(move |mut peer| {
            let receiver =
                Acceptor::new(KEY, "receiver").features(&["aead", "blake3", "zstd", "mirror"]);
            let session = peer.accept_handshake(&receiver).expect("handshake");
            assert!(session.has("mirror"));
            let first = peer.read_control_raw().expect("offer");
            assert_eq!(first.0["mirror"]["delete"], true, "{}", first.0);
            let entries = peer.read_offer_from(first).expect("a verified offer");
            let same = Decision::skip("same", "already there");
            let plan: Vec<_> = entries.iter().map(|_| same.to_json(peer.hash())).collect();
            peer.send_plan(&[plan]).unwrap();
            peer.expect("end").expect("the sender's end");
            if forge {
                peer.send_control(&json!({"type": "deleted",
                    "entries": [{"path": "tree/a", "kind": "file"}]}))
                    .unwrap();
                let forged = json!({"type": "deleted_end", "count": 1, "mac": "00".repeat(32)});
                peer.send_control(&forged).unwrap();
            }
            let _ = peer.send_end();
        });
        let sent = send(
            &[&root.path().join("src/tree")],
            port,
            KEY,
            &["--delete", "-i"],
        );
        assert_eq!(code(&sent), exit, "{}", stderr_of(&sent));
        assert!(!String::from_utf8_lossy(&sent.stdout).contains("deleted"));
        fake.join().unwrap();
    }
}

/// An entry the sender cannot send (a socket: offered as `unsent` under `meta`)
/// keeps the receiver's copy of that name: `--delete` removes only what the
/// source does not have.
#[test]
fn what_the_sender_could_not_send_is_not_deleted() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let _socket =
        std::os::unix::net::UnixListener::bind(root.path().join("src/tree/sock")).unwrap();
    fs::write(root.path().join("dst/tree/sock"), b"the receiver's copy\n").unwrap();
    let (sent, _, recv_err) = mirror(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(
        code(&sent),
        10,
        "not everything was sent: {}",
        stderr_of(&sent)
    );
    assert_eq!(
        fs::read(root.path().join("dst/tree/sock")).unwrap(),
        b"the receiver's copy\n",
        "{recv_err}"
    );
    assert!(
        !root.path().join("dst/tree/stale").exists(),
        "the rest is mirrored"
    );
}

/// Every path beneath `dir` (files, directories, links), relative, with what a
/// link points at: what a dry run must leave exactly as it was.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let shown = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            match fs::read_link(&path) {
                Ok(to) => all.push(format!("{shown} -> {}", to.display())),
                Err(_) if path.is_dir() => {
                    all.push(format!("{shown}/"));
                    stack.push(path);
                }
                Err(_) => all.push(shown),
            }
        }
    }
    all.sort();
    all
}

/// `--delete-excluded` (rsync's): with `--delete`, what the filters exclude goes on
/// the receiver too, a planted link itself and never what it points at; xfer's own
/// partial file stays. A dry run lists the same as `deleted` and changes nothing.
#[test]
fn delete_excluded_removes_what_the_filters_exclude_but_not_a_partial_nor_through_a_link() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious.tmp"), b"keep me\n").unwrap();
    trees(root.path());
    let dst = root.path().join("dst/tree");
    fs::write(root.path().join("src/tree/x.tmp"), b"not sent\n").unwrap();
    fs::create_dir_all(dst.join("cache/deep")).unwrap();
    fs::write(dst.join("cache/deep/c"), b"c\n").unwrap();
    fs::write(dst.join("sub/keep.tmp"), b"excluded\n").unwrap();
    symlink(outside.path(), dst.join("cache/link")).unwrap();
    let partial = crate::util::partial_name("tree/big", 1 << 20);
    fs::write(dst.join(&partial), b"a partial of xfer\n").unwrap();
    let flags = [
        "--delete",
        "--delete-excluded",
        "--exclude",
        "*.tmp",
        "--exclude",
        "cache/",
    ];
    let before = snapshot(&root.path().join("dst"));
    let dry_flags = [&flags[..], &["-n"]].concat();
    let (dry, recv_code, recv_err) = mirror(root.path(), &["--overwrite"], &dry_flags);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(
        snapshot(&root.path().join("dst")),
        before,
        "a dry run changes nothing"
    );
    let listed = String::from_utf8_lossy(&dry.stdout).into_owned();
    let real_flags = [&flags[..], &["-i"]].concat();
    let (real, recv_code, recv_err) = mirror(root.path(), &["--overwrite"], &real_flags);
    assert_eq!(code(&real), 0, "{}", stderr_of(&real));
    assert_eq!(recv_code, 0, "{recv_err}");
    let done = String::from_utf8_lossy(&real.stdout).into_owned();
    for line in [
        "deleted  tree/cache/deep/c",
        "deleted  tree/cache/link",
        "deleted  tree/cache/",
        "deleted  tree/sub/keep.tmp",
        "deleted  tree/stale",
    ] {
        assert!(
            listed.lines().any(|l| l == line),
            "dry run: {line:?} in {listed}"
        );
        assert!(
            done.lines().any(|l| l == line),
            "real run: {line:?} in {done}"
        );
    }
    assert_eq!(
        names(&root.path().join("dst")),
        [
            "beside".to_string(),
            format!("tree/{partial}"),
            "tree/a".to_string(),
            "tree/sub/b".to_string()
        ]
    );
    assert!(
        !root.path().join("dst/tree/x.tmp").exists(),
        "excluded: not sent"
    );
    assert_eq!(
        fs::read(outside.path().join("precious.tmp")).unwrap(),
        b"keep me\n"
    );
}

/// Without `--delete`, `--delete-excluded` is a usage error, on `send` and `get`,
/// before connecting (port 9 has no listener).
#[test]
fn delete_excluded_without_delete_is_a_usage_error() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let sent = send(
        &[&root.path().join("src/tree")],
        9,
        KEY,
        &["--delete-excluded", "--exclude", "*.tmp"],
    );
    assert_eq!(code(&sent), 2, "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("--delete"),
        "{}",
        stderr_of(&sent)
    );
    let mut get = crate::util::xfer();
    get.args(["get", "127.0.0.1:9:tree", "--delete-excluded"])
        .arg(root.path().join("dl"))
        .env("XFER_KEY", KEY);
    let got = crate::util::run(&mut get);
    assert_eq!(code(&got), 2, "{}", stderr_of(&got));
    assert!(!root.path().join("dl").exists());
}

/// Against `xfer serve`: a `put` and a `get` with `--delete --delete-excluded`
/// remove what the filters exclude on the receiving side (a dry run first, which
/// changes nothing); the shell's `put` does too.
#[test]
fn delete_excluded_into_and_from_a_server_and_in_the_shell() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree")).unwrap();
    fs::write(home.join("tree/server.tmp"), b"excluded on the server\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("a"), b"a\n").unwrap();
    fs::write(local.join("x.tmp"), b"not sent\n").unwrap();
    let dl = site.path().join("dl");
    fs::create_dir_all(dl.join("tree")).unwrap();
    fs::write(dl.join("tree/mine.tmp"), b"excluded here\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let flags = ["--delete", "--delete-excluded", "--exclude", "*.tmp"];
    let put = |extra: &[&str]| {
        let to = server.at("/");
        let mut args = vec!["send", local.to_str().unwrap(), &to];
        args.extend_from_slice(&flags);
        args.extend_from_slice(extra);
        client(&site, "alice", &args)
    };
    let (home_before, dl_before) = (snapshot(&home), snapshot(&dl));
    let dry = put(&["-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("deleted  tree/server.tmp"));
    assert_eq!(snapshot(&home), home_before, "a dry run changes nothing");
    let real = put(&[]);
    assert_eq!(code(&real), 0, "{}", stderr_of(&real));
    assert_eq!(names(&home), ["tree/a"]);
    let get = |extra: &[&str]| {
        let at = server.at("tree");
        let mut args = vec!["get", &at, dl.to_str().unwrap()];
        args.extend_from_slice(&flags);
        args.extend_from_slice(extra);
        client(&site, "alice", &args)
    };
    let dry = get(&["-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("deleted  tree/mine.tmp"));
    assert_eq!(snapshot(&dl), dl_before, "a dry run changes nothing");
    let real = get(&["-i"]);
    assert_eq!(code(&real), 0, "{}", stderr_of(&real));
    assert_eq!(names(&dl), ["tree/a"]);
    // The shell's put, with an excluded file back on the server.
    fs::write(home.join("tree/again.tmp"), b"excluded\n").unwrap();
    settle();
    let script = site.path().join("script.xfer");
    let line = format!(
        "put --delete --delete-excluded --exclude *.tmp {}\n",
        local.display()
    );
    fs::write(&script, line).unwrap();
    let run = client(
        &site,
        "alice",
        &["shell", &server.addr(), "-b", script.to_str().unwrap()],
    );
    assert_eq!(code(&run), 0, "{}", stderr_of(&run));
    assert_eq!(names(&home), ["tree/a"]);
}

/// Puts, in `dir`, a file whose name is not UTF-8 (`caf\xe9`) and a partial file
/// of xfer; returns the partial's name.
fn plant_kept(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    fs::write(dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), b"odd\n").unwrap();
    let partial = crate::util::partial_name("tree/big", 1 << 20);
    fs::write(dir.join(&partial), b"a partial of xfer\n").unwrap();
    partial
}

/// `--delete` keeps a name that is not UTF-8 and xfer's partial file, and says so:
/// `kept` lines with `-i` (and the reason), a count by reason in the summary on
/// stderr, `change` events with `reason` and a `kept` count with `--json`; the
/// receiver's own log counts them too.
#[test]
fn what_delete_keeps_for_safety_is_listed_and_counted() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let partial = plant_kept(&root.path().join("dst/tree"));
    let (sent, recv_code, recv_err) = mirror(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    let stdout = String::from_utf8_lossy(&sent.stdout);
    for line in [
        format!("kept     tree/{partial}  (a temporary or partial file of xfer)"),
        "kept     tree/caf\u{fffd}  (a name that is not UTF-8, which --delete never removes)"
            .to_string(),
        "deleted  tree/stale".to_string(),
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    let said = "deleted 4, kept 2 not deleted: 1 xfer temporary, 1 not UTF-8";
    assert!(stderr_of(&sent).contains(said), "{}", stderr_of(&sent));
    assert!(recv_err.contains(said), "the receiver's log: {recv_err}");
    let dst = root.path().join("dst/tree");
    assert!(dst.join(&partial).exists());
    assert_eq!(
        fs::read_dir(&dst).unwrap().count(),
        4,
        "a, sub, the partial, caf\\xe9"
    );
    // Again, with --json: the kept ones once more, nothing else to delete.
    let (json, _, _) = mirror(root.path(), &["--overwrite"], &["--delete", "--json"]);
    let events = stdout_events(&json);
    let kept: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "change" && e["change"] == "kept")
        .map(|e| (e["path"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    let partial_path = format!("tree/{partial}");
    assert_eq!(
        kept,
        [
            (partial_path.as_str(), "temporary"),
            ("tree/caf\u{fffd}", "not_utf8")
        ]
    );
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["kept"], 2, "{summary}");
    assert_eq!(summary["kept_reasons"]["not_utf8"], 1, "{summary}");
    assert_eq!(summary["deleted"], 0, "{summary}");
    // Without -i: no line, the count only.
    let (plain, _, _) = mirror(root.path(), &["--overwrite"], &["--delete"]);
    assert!(
        plain.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&plain.stdout)
    );
    assert!(
        stderr_of(&plain).contains("kept 2 not deleted"),
        "{}",
        stderr_of(&plain)
    );
}

/// A `get --delete` keeps the same in the local directory, and says so there; a
/// dry run lists them and counts them in its line.
#[test]
fn a_get_with_delete_lists_what_it_keeps_locally() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree")).unwrap();
    fs::write(home.join("tree/a"), b"a\n").unwrap();
    let dl = site.path().join("dl");
    fs::create_dir_all(dl.join("tree")).unwrap();
    let partial = plant_kept(&dl.join("tree"));
    let server = site.serve(&[]);
    settle();
    let at = server.at("tree");
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "--delete", &at, dl.to_str().unwrap()];
        args.extend_from_slice(extra);
        client(&site, "alice", &args)
    };
    let dry = get(&["-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        stdout.contains(&format!("kept     tree/{partial}")),
        "{stdout}"
    );
    assert!(
        stderr_of(&dry).contains("would delete 0, would have kept 2 not deleted"),
        "{}",
        stderr_of(&dry)
    );
    let real = get(&["-i"]);
    assert_eq!(code(&real), 0, "{}", stderr_of(&real));
    let stdout = String::from_utf8_lossy(&real.stdout);
    assert!(stdout.contains("kept     tree/caf\u{fffd}"), "{stdout}");
    assert!(
        stderr_of(&real).contains("kept 2 not deleted"),
        "{}",
        stderr_of(&real)
    );
    assert_eq!(fs::read_dir(dl.join("tree")).unwrap().count(), 3);
}

/// A sender that does not ask for `kept` items (an older xfer: the independent
/// peer, with a `mirror` member of `delete` alone) gets a report of what was
/// removed only; the receiver still says in its own log what it kept.
#[test]
fn an_older_sender_gets_no_kept_items() {
    use crate::util::peer::{SendEntry, mac_offer, transcript_bytes};
    use crate::util::peer_sender;
    use serde_json::json;
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    plant_kept(&root.path().join("dst/tree"));
    settle();
    let mut receiver = Receiver::start(&root.path().join("dst"), Some(KEY), &["--overwrite"]);
    let mut peer = peer_sender(receiver.port, &["aead", "mirror"]);
    let entries = [SendEntry::dir("tree"), SendEntry::dir("tree/sub")];
    let offer = json!({"type": "offer", "mirror": {"delete": true},
        "entries": entries.iter().map(SendEntry::to_json).collect::<Vec<_>>()});
    let payload = peer.send_control(&offer).unwrap();
    let ks = peer.session().unwrap().ks;
    let mac = mac_offer(&ks, peer.t, &transcript_bytes(&[payload]));
    let end = json!({"type": "offer_end", "count": 2, "mac": crate::util::peer::hex(&mac)});
    peer.send_control(&end).unwrap();
    let plan = peer.read_plan(2).unwrap();
    assert_eq!(plan[0]["action"], "send", "{plan:?}");
    peer.send_end().unwrap();
    let mut items = Vec::new();
    loop {
        let frame = peer.read_control().unwrap();
        match frame["type"].as_str().unwrap() {
            "deleted" => items.extend(frame["entries"].as_array().unwrap().iter().cloned()),
            "deleted_end" => break,
            other => panic!("{other}: {frame}"),
        }
    }
    let paths: Vec<&str> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "tree/old/deeper/o",
            "tree/old/deeper",
            "tree/old",
            "tree/stale"
        ],
        "removed only: {items:?}"
    );
    assert!(items.iter().all(|i| i.get("kept").is_none()), "{items:?}");
    assert_eq!(peer.read_control().unwrap()["type"], "end");
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(
        receiver.stderr().contains("kept 2 not deleted"),
        "{}",
        receiver.stderr()
    );
}

/// A name that is not UTF-8 which the sender offers (as `path_hex`, under `meta`)
/// is the offer's, not a name `--delete` keeps: no `kept` line for it.
#[test]
fn an_offered_name_that_is_not_utf8_is_not_said_kept() {
    use std::os::unix::ffi::OsStrExt;
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    fs::write(root.path().join("src/tree").join(odd), b"sent\n").unwrap();
    fs::write(root.path().join("dst/tree").join(odd), b"older\n").unwrap();
    let (sent, recv_code, recv_err) = mirror(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(!stdout.contains("kept"), "{stdout}");
    assert!(!stderr_of(&sent).contains("kept"), "{}", stderr_of(&sent));
    assert_eq!(
        fs::read(root.path().join("dst/tree").join(odd)).unwrap(),
        b"sent\n"
    );
}

/// A directory whose name is not UTF-8 is never looked into to remove anything (a
/// mirror reads paths as text), but what it holds beyond the offer is not kept in
/// silence: each is said `kept` on both sides, counted, and stays.
#[test]
fn what_a_directory_named_not_in_utf8_holds_beyond_the_offer_is_said_kept() {
    use std::os::unix::ffi::OsStrExt;
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let odd = std::ffi::OsStr::from_bytes(b"dir\xff");
    fs::create_dir(root.path().join("src/tree").join(odd)).unwrap();
    fs::write(root.path().join("src/tree").join(odd).join("in"), b"in\n").unwrap();
    let (sent, _, _) = mirror(root.path(), &["--overwrite"], &[]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    let there = root.path().join("dst/tree").join(odd);
    fs::write(there.join("extra"), b"stale\n").unwrap();
    fs::create_dir(there.join("sub")).unwrap();
    let (sent, recv_code, recv_err) = mirror(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    let stdout = String::from_utf8_lossy(&sent.stdout);
    for name in ["tree/dir\u{FFFD}/extra", "tree/dir\u{FFFD}/sub/"] {
        let line = format!("kept     {name}  (a name that is not UTF-8");
        assert!(stdout.contains(&line), "{line} in {stdout}");
    }
    assert!(
        stderr_of(&sent).contains("kept 2 not deleted"),
        "{}",
        stderr_of(&sent)
    );
    assert!(recv_err.contains("kept 2 not deleted"), "{recv_err}");
    assert!(there.join("extra").exists() && there.join("sub").is_dir());
    assert!(there.join("in").exists());
}

/// The independent peer as a receiver: xfer's offer carries `delete_excluded` and
/// `report_kept` in its `mirror` member; `kept` items of a verified report are
/// listed as kept with their reason (a code it does not know too), and an item
/// both failed and kept is refused.
#[test]
fn a_sender_reads_kept_items_of_an_independent_receiver() {
    use crate::util::peer::{Decision, hex, mac_deleted, transcript_bytes};
    use serde_json::json;
    for both in [false, true] {
        let root = tempfile::tempdir().unwrap();
        trees(root.path());
        let (port, fake) = peer_listening(move |mut peer| {
            let receiver =
                Acceptor::new(KEY, "receiver").features(&["aead", "blake3", "zstd", "mirror"]);
            peer.accept_handshake(&receiver).expect("handshake");
            let first = peer.read_control_raw().expect("offer");
            let mirror = first.0["mirror"].clone();
            let entries = peer.read_offer_from(first).expect("a verified offer");
            let same = Decision::skip("same", "already there");
            let plan: Vec<_> = entries.iter().map(|_| same.to_json(peer.hash())).collect();
            peer.send_plan(&[plan]).unwrap();
            peer.expect("end").expect("the sender's end");
            let mut items = vec![
                json!({"path": "tree/.xfer-0123.partial", "kind": "file", "kept": "temporary"}),
                json!({"path": "tree/odd", "kind": "other", "kept": "some_new_reason"}),
                json!({"path": "tree/stale", "kind": "file"}),
            ];
            if both {
                items[2]["error"] = json!("cannot");
                items[2]["kept"] = json!("busy");
            }
            let payload = peer
                .send_control(&json!({"type": "deleted", "entries": items}))
                .unwrap();
            let ks = peer.session().unwrap().ks;
            let mac = mac_deleted(&ks, peer.t, &transcript_bytes(&[payload]));
            let end = json!({"type": "deleted_end", "count": 3, "mac": hex(&mac)});
            peer.send_control(&end).unwrap();
            let _ = peer.send_end();
            mirror
        });
        let sent = send(
            &[&root.path().join("src/tree")],
            port,
            KEY,
            &["--delete", "--delete-excluded", "--exclude", "*.tmp", "-i"],
        );
        let mirror = fake.join().unwrap();
        assert_eq!(mirror["delete"], true, "{mirror}");
        assert_eq!(mirror["delete_excluded"], true, "{mirror}");
        assert_eq!(mirror["report_kept"], true, "{mirror}");
        let stdout = String::from_utf8_lossy(&sent.stdout);
        if both {
            assert_eq!(code(&sent), 8, "{}", stderr_of(&sent));
            assert!(!stdout.contains("kept"), "{stdout}");
            continue;
        }
        assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
        for line in [
            "kept     tree/.xfer-0123.partial  (a temporary or partial file of xfer)",
            "kept     tree/odd  (the receiver keeps it)",
            "deleted  tree/stale",
        ] {
            assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
        }
        let said = "deleted 1, kept 2 not deleted: 1 xfer temporary, 1 for other reasons";
        assert!(stderr_of(&sent).contains(said), "{}", stderr_of(&sent));
    }
}

/// A new user's finding: a deletion the receiver could not make (a directory it
/// may not write) left the mirror different from its source, yet both sides
/// exited 0 and the summary said `ok`. Now both exit 7 (a local I/O error, as
/// rsync exits 23), the entry is named, and the rest of the mirror is done.
#[test]
fn a_deletion_that_fails_fails_the_run_on_both_sides() {
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(tree.join("ro")).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    let dst = root.path().join("dst");
    // The receiver's own directory; `tree/ro` in it is root's, and holds a file
    // the source no longer has.
    fs::create_dir_all(dst.join("tree/ro")).unwrap();
    fs::write(dst.join("tree/ro/gone"), b"gone\n").unwrap();
    fs::write(dst.join("tree/stale"), b"stale\n").unwrap();
    // And one of its own it cannot even open (a review found it kept silently).
    fs::create_dir_all(dst.join("tree/locked")).unwrap();
    fs::write(dst.join("tree/locked/x"), b"x\n").unwrap();
    for dir in [&dst, &dst.join("tree"), &dst.join("tree/locked")] {
        std::os::unix::fs::lchown(dir, Some(65534), Some(65534)).unwrap();
    }
    fs::set_permissions(
        dst.join("tree/locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    // Made well before the session (a mirror spares what changed since it began).
    std::thread::sleep(Duration::from_millis(100));
    let Some(mut receiver) = crate::util::nobody_receiving(&dst) else {
        return;
    };
    let sent = send(&[&tree], receiver.port, KEY, &["--delete", "--json"]);
    assert_eq!(code(&sent), 7, "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("2 entries could not be deleted"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(summary_event(&sent)["ok"], false);
    assert_eq!(receiver.exit_code(), 7, "{}", receiver.stderr());
    assert!(dst.join("tree/ro/gone").exists(), "it could not go");
    assert!(dst.join("tree/locked").exists(), "nor could that");
    assert!(
        !dst.join("tree/stale").exists(),
        "the rest of the mirror was done"
    );
    assert_eq!(fs::read(dst.join("tree/a")).unwrap(), b"a\n");
}

/// A mount point in the receiver's tree that the source lacks: its removal fails
/// with the kernel's own EBUSY, which is no other session's claim (a review found it
/// said "kept: another session is receiving or writing it", exit 0): it fails the
/// run (7), naming it, and nothing of the mounted filesystem's root goes.
#[test]
fn a_mount_point_delete_cannot_remove_fails_the_run_and_is_not_called_busy() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    let dst = root.path().join("dst");
    let mount_point = dst.join("tree/mnt");
    fs::create_dir_all(&mount_point).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "xfer-test"])
        .arg(&mount_point)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!("SKIPPED: needs root to mount a tmpfs");
        return;
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut receiver = Receiver::start(&dst, Some(KEY), &["--overwrite"]);
    let sent = send(&[&tree], receiver.port, KEY, &["--delete"]);
    let receiver_code = receiver.exit_code();
    let unmounted = std::process::Command::new("umount")
        .arg(&mount_point)
        .status()
        .unwrap();
    assert!(unmounted.success());
    assert_eq!(code(&sent), 7, "{}", stderr_of(&sent));
    assert_eq!(receiver_code, 7, "{}", receiver.stderr());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&sent.stdout),
        stderr_of(&sent)
    );
    assert!(said.contains("tree/mnt") && said.contains("busy"), "{said}");
    assert!(!said.contains("another session"), "{said}");
    assert!(mount_point.is_dir());
    assert_eq!(fs::read(dst.join("tree/a")).unwrap(), b"a\n");
}
