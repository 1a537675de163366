//! An entry the receiver holds already (a file of the same size and time, a
//! directory) whose metadata differs from the sender's: the receiver makes it the
//! sender's (mode, time, owner when kept, extended attributes when kept), as
//! `rsync -a` does, and `--itemize` says `attrs` on both sides (rsync's
//! `.f...p...`), in `--json` too; a dry run says so and changes nothing. A peer
//! without the feature `mirror` gets the fix but no `attrs` in the plan.
//!
//! Decided: until now such a file was left as it was (`same`), its mode never
//! fixed; a user who mirrors expects the copy to carry the source's modes. Only
//! where the receiver lets its sender replace files (`--overwrite`, `put -f`,
//! `get -f`, `--delete`): one that keeps what it holds keeps its modes too. A file
//! with more than one link is left as it is (every link would change), unless
//! every name of it is sent, as hard links of it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::json;

use crate::mirror::mirror;
use crate::util::peer::{Acceptor, Peer};
use crate::util::server::{Server, Site, as_user, client, code};
use crate::util::tree::{set_mtime, set_xattr, xattrs_of};
use crate::util::{KEY, Receiver, peer_sender, run, stderr_of, stdout_events};

/// `src/tree` (a, sub/b) sent once, so that `dst/tree` holds the same.
fn synced(root: &Path) {
    fs::create_dir_all(root.join("src/tree/sub")).unwrap();
    fs::create_dir_all(root.join("dst")).unwrap();
    fs::write(root.join("src/tree/a"), b"a\n").unwrap();
    fs::write(root.join("src/tree/sub/b"), b"b\n").unwrap();
    set_mode(&root.join("src/tree/a"), 0o644);
    set_mode(&root.join("src/tree/sub"), 0o755);
    let (sent, recv_code, recv_err) = mirror(root, &[], &[]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
}

/// A receiver that lets its sender replace files, and a sender that mirrors: the
/// pair that brings a `same` file's metadata up to the sender's.
const OVERWRITE: &[&str] = &["--overwrite"];
const MIRROR_I: &[&str] = &["-i", "--delete"];

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_same_file_or_directory_with_another_mode_is_fixed_and_itemized() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    synced(root);
    set_mode(&root.join("src/tree/a"), 0o600);
    set_mode(&root.join("src/tree/sub"), 0o750);
    let (sent, recv_code, recv_err) = mirror(root, OVERWRITE, MIRROR_I);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(
        stdout_lines(&sent),
        ["attrs    tree/a", "attrs    tree/sub/"]
    );
    assert!(
        stderr_of(&sent).contains("2 already there"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(mode(&root.join("dst/tree/a")), 0o600);
    assert_eq!(mode(&root.join("dst/tree/sub")), 0o750);
    assert_eq!(fs::read(root.join("dst/tree/a")).unwrap(), b"a\n");
    // Nothing left to fix: nothing to say.
    let (again, _, _) = mirror(root, OVERWRITE, MIRROR_I);
    assert_eq!(code(&again), 0, "{}", stderr_of(&again));
    assert_eq!(stdout_lines(&again), Vec::<String>::new());
    // A directory whose time alone differs, in JSON, into a mirroring receiver.
    set_mtime(&root.join("src/tree/sub"), 1_600_000_000, 0);
    set_mode(&root.join("src/tree/sub/b"), 0o640);
    let (json, _, _) = mirror(root, &["--overwrite"], &["-i", "--json", "--delete"]);
    assert_eq!(code(&json), 0, "{}", stderr_of(&json));
    let changes: Vec<(String, String)> = stdout_events(&json)
        .iter()
        .filter(|e| e["event"] == "change")
        .map(|e| {
            (
                e["change"].as_str().unwrap().into(),
                e["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("attrs".to_string(), "tree/sub".to_string()),
            ("attrs".to_string(), "tree/sub/b".to_string())
        ]
    );
    let b = stdout_events(&json)
        .into_iter()
        .find(|e| e["event"] == "file" && e["path"] == "tree/sub/b")
        .expect("a file event");
    assert_eq!(b["status"], "same");
    assert_eq!(mode(&root.join("dst/tree/sub/b")), 0o640);
    let sub = fs::metadata(root.join("dst/tree/sub")).unwrap();
    assert_eq!(sub.mtime(), 1_600_000_000);
}

#[test]
fn a_dry_run_says_attrs_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    synced(root);
    set_mode(&root.join("src/tree/a"), 0o604);
    let (dry, _, _) = mirror(root, OVERWRITE, &["-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    let lines = stdout_lines(&dry);
    assert!(lines.iter().any(|l| l == "attrs    tree/a"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "same     tree/sub/b"),
        "{lines:?}"
    );
    assert!(
        stderr_of(&dry).contains("2 same, 1 with other attributes"),
        "{}",
        stderr_of(&dry)
    );
    assert_eq!(
        mode(&root.join("dst/tree/a")),
        0o644,
        "a dry run changes nothing"
    );
    let (json, _, _) = mirror(root, OVERWRITE, &["-n", "--json"]);
    let summary = stdout_events(&json)
        .into_iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary");
    // `same` counts what it always counted; `attrs` those of them to fix.
    assert_eq!(summary["dry_run"]["same"], 2, "{summary}");
    assert_eq!(summary["dry_run"]["attrs"], 1, "{summary}");
    assert_eq!(mode(&root.join("dst/tree/a")), 0o644);
}

/// A server whose user `alice` holds `tree/f` (mode 0644), put there from the
/// local `tree` this returns.
fn alice_holding_a_tree(site: &Site) -> (Server, PathBuf) {
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("f"), b"f\n").unwrap();
    set_mode(&local.join("f"), 0o644);
    let put = put_tree(site, &server, &[]);
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    (server, local)
}

/// `xfer send [extra] tree` into alice's home, as alice.
fn put_tree(site: &Site, server: &Server, extra: &[&str]) -> Output {
    let local = site.path().join("tree");
    let home = server.at("/");
    let mut args = vec!["send"];
    args.extend_from_slice(extra);
    args.extend([local.to_str().unwrap(), home.as_str()]);
    client(site, "alice", &args)
}

#[test]
fn a_server_fixes_what_a_put_finds_and_a_get_fixes_the_local_copy() {
    let site = Site::new();
    let (server, local) = alice_holding_a_tree(&site);
    // The server keeps its own read and write bits whatever was offered.
    set_mode(&local.join("f"), 0o640);
    let put = put_tree(&site, &server, &["-i", "-f", "--delete"]);
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    assert_eq!(stdout_lines(&put), ["attrs    tree/f"]);
    assert_eq!(mode(&site.home("alice").join("tree/f")), 0o640);
    // Back: the local copy's mode is changed here, and a get puts it right.
    let dl = site.path().join("dl");
    fs::create_dir_all(&dl).unwrap();
    let get = |extra: &[&str]| {
        let mut args = vec!["get"];
        args.extend_from_slice(extra);
        let tree = server.at("tree");
        args.extend([tree.as_str(), dl.to_str().unwrap()]);
        run(&mut as_user(&site, "alice", &args))
    };
    assert_eq!(code(&get(&[])), 0);
    set_mode(&dl.join("tree/f"), 0o600);
    let got = get(&["-i", "-f", "--delete"]);
    assert_eq!(code(&got), 0, "{}", stderr_of(&got));
    assert_eq!(stdout_lines(&got), ["attrs    tree/f"]);
    assert_eq!(mode(&dl.join("tree/f")), 0o640);
}

#[test]
fn extended_attributes_and_owners_are_fixed_when_kept() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    synced(root);
    let file = root.join("src/tree/a");
    if let Err(err) = set_xattr(&file, "user.colour", b"blue") {
        eprintln!("skipped: this filesystem takes no user.* attributes ({err})");
        return;
    }
    let (sent, recv_code, recv_err) = mirror(root, OVERWRITE, &["-i", "-X", "--delete"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(stdout_lines(&sent), ["attrs    tree/a"]);
    let copied = xattrs_of(&root.join("dst/tree/a"));
    assert_eq!(
        copied.get(&b"user.colour"[..]).map(Vec::as_slice),
        Some(&b"blue"[..])
    );
    // Without -X the attribute is not offered, so there is nothing to fix.
    let (plain, _, _) = mirror(root, OVERWRITE, MIRROR_I);
    assert_eq!(stdout_lines(&plain), Vec::<String>::new());

    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: owners can be given only as root");
        return;
    }
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    let (owned, _, _) = mirror(
        root,
        OVERWRITE,
        &["-i", "--owner", "--numeric-ids", "--delete"],
    );
    assert_eq!(code(&owned), 0, "{}", stderr_of(&owned));
    assert_eq!(stdout_lines(&owned), ["attrs    tree/a"]);
    let meta = fs::metadata(root.join("dst/tree/a")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
}

#[test]
fn a_peer_without_mirror_gets_the_fix_but_no_attrs_in_the_plan() {
    // Into `--overwrite` an offer without a `mirror` member replaces files rather
    // than finding them `same`: an existing directory is what gets `attrs`.
    for (features, said) in [(&["aead"][..], false), (&["aead", "mirror"][..], true)] {
        let out = tempfile::tempdir().unwrap();
        let there = out.path().join("d");
        fs::create_dir(&there).unwrap();
        set_mode(&there, 0o755);
        let mut receiver = Receiver::start(out.path(), Some(KEY), OVERWRITE);
        let mut peer = peer_sender(receiver.port, features);
        let entry = json!({"path":"d","kind":"dir","size":0,"mode":0o700,"mtime":1_700_000_000});
        peer.send_offer(&[vec![entry]]).unwrap();
        let decision = peer.read_plan(1).expect("a plan").remove(0);
        assert_eq!(decision["action"], "send", "{decision}");
        assert_eq!(
            decision.get("attrs").is_some(),
            said,
            "{features:?}: {decision}"
        );
        peer.send_end().unwrap();
        drop(peer);
        let _ = receiver.exit_code();
        assert_eq!(mode(&there), 0o700, "{features:?}");
    }
}

#[test]
fn a_receiver_without_overwrite_leaves_a_same_files_mode_alone() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    synced(root);
    set_mode(&root.join("src/tree/a"), 0o600);
    for send_extra in [&["-i"][..], &["-i", "-n"][..]] {
        let (sent, recv_code, recv_err) = mirror(root, &[], send_extra);
        assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
        assert_eq!(recv_code, 0, "{recv_err}");
        let lines = stdout_lines(&sent);
        assert!(!lines.iter().any(|l| l.starts_with("attrs")), "{lines:?}");
        assert_eq!(mode(&root.join("dst/tree/a")), 0o644, "{send_extra:?}");
    }
}

#[test]
fn a_same_file_with_another_link_is_left_as_it_is() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    synced(root);
    // `dst/tree/a` made a hard link to a file outside the target, same content,
    // size and time as the sender's `a`, but another mode.
    let secret = root.join("outside/secret");
    fs::create_dir_all(root.join("outside")).unwrap();
    fs::write(&secret, b"a\n").unwrap();
    set_mode(&secret, 0o600);
    let copy = root.join("dst/tree/a");
    fs::remove_file(&copy).unwrap();
    fs::hard_link(&secret, &copy).unwrap();
    for file in [&root.join("src/tree/a"), &secret] {
        set_mtime(file, 1_700_000_000, 0);
    }
    let (sent, recv_code, recv_err) = mirror(root, OVERWRITE, MIRROR_I);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    // `tree/` itself got a new time when `a` was replaced by the link.
    assert_eq!(stdout_lines(&sent), ["attrs    tree/"]);
    assert_eq!(mode(&secret), 0o600, "the file outside keeps its mode");
    // Not in silence: the receiver names it, the sender is told.
    assert!(
        recv_err.contains("tree/a: its mode, owner, time or attributes are left"),
        "{recv_err}"
    );
    assert!(
        stderr_of(&sent).contains("could not set the metadata on 1 entry"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(fs::read(&secret).unwrap(), b"a\n");
}

/// A file whose every name the offer sends, as hard links of it, gets the new
/// mode (`chmod 600` on a secret with a twin in the tree reaches the copy, as with
/// `rsync -aH`), in the dry run as in the real run; a third name outside the
/// offer still keeps it as it is.
#[test]
fn a_hard_linked_file_whose_every_name_is_sent_gets_its_new_mode() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    fs::create_dir_all(root.join("src/tree/sub")).unwrap();
    fs::create_dir_all(root.join("dst")).unwrap();
    fs::write(root.join("src/tree/a"), b"secret\n").unwrap();
    set_mode(&root.join("src/tree/a"), 0o644);
    fs::hard_link(root.join("src/tree/a"), root.join("src/tree/sub/twin")).unwrap();
    let (sent, recv_code, recv_err) = mirror(root, &[], &[]);
    assert_eq!(
        (code(&sent), recv_code),
        (0, 0),
        "{}{recv_err}",
        stderr_of(&sent)
    );
    let copy = root.join("dst/tree/a");
    assert_eq!(fs::metadata(&copy).unwrap().nlink(), 2);
    set_mode(&root.join("src/tree/a"), 0o600);
    let (dry, _, _) = mirror(root, OVERWRITE, &["-n", "--delete"]);
    assert_eq!(
        stdout_lines(&dry),
        ["attrs    tree/a", "same     tree/sub/twin"]
    );
    assert_eq!(mode(&copy), 0o644, "a dry run changes nothing");
    let (sent, recv_code, recv_err) = mirror(root, OVERWRITE, MIRROR_I);
    assert_eq!(
        (code(&sent), recv_code),
        (0, 0),
        "{}{recv_err}",
        stderr_of(&sent)
    );
    assert_eq!(stdout_lines(&sent), ["attrs    tree/a"]);
    assert!(
        !stderr_of(&sent).contains("could not set"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(mode(&copy), 0o600);
    assert_eq!(mode(&root.join("dst/tree/sub/twin")), 0o600);
    // A third name, outside what is sent: left as it is, and said.
    fs::hard_link(&copy, root.join("dst/elsewhere")).unwrap();
    set_mode(&root.join("src/tree/a"), 0o640);
    let (sent, recv_code, recv_err) = mirror(root, OVERWRITE, MIRROR_I);
    assert_eq!(
        (code(&sent), recv_code),
        (0, 0),
        "{}{recv_err}",
        stderr_of(&sent)
    );
    assert_eq!(mode(&root.join("dst/elsewhere")), 0o600);
    assert!(
        recv_err.contains("it has 3 names (hard links)"),
        "{recv_err}"
    );
}

#[test]
fn a_servers_same_file_never_gets_a_set_id_bit() {
    let site = Site::new();
    let (server, local) = alice_holding_a_tree(&site);
    let put = |extra: &[&str]| put_tree(&site, &server, extra);
    set_mode(&local.join("f"), 0o6755);
    let fixed = put(&["-i", "-f", "--delete"]);
    assert_eq!(code(&fixed), 0, "{}", stderr_of(&fixed));
    assert_eq!(stdout_lines(&fixed), ["attrs    tree/f"]);
    let there = site.home("alice").join("tree/f");
    assert_eq!(mode(&there), 0o755);
    // The set-id bits it may not set are no difference to fix again.
    let again = put(&["-i", "-f", "--delete"]);
    assert_eq!(code(&again), 0, "{}", stderr_of(&again));
    assert_eq!(stdout_lines(&again), Vec::<String>::new());
    assert_eq!(mode(&there), 0o755);
}

#[test]
fn a_same_file_whose_mode_cannot_be_set_stays_same_with_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    synced(root);
    set_mode(&root.join("src/tree/a"), 0o600);
    let dst = root.join("dst");
    let mut command = crate::util::xfer();
    command
        .args(["recv", "--overwrite", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&dst)
        .env("XFER_KEY", KEY);
    let Some(unprivileged) = crate::util::as_nobody(command) else {
        eprintln!("skipped: needs root and setpriv to run the receiver as nobody");
        return;
    };
    // The receiver may write the directories, but `a` stays root's.
    for dir in [root, &dst, &dst.join("tree"), &dst.join("tree/sub")] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    std::os::unix::fs::chown(dst.join("tree/sub/b"), Some(65534), Some(65534)).unwrap();
    let mut receiver = Receiver::spawn(unprivileged);
    let sent = crate::util::send(&[&root.join("src/tree")], receiver.port, KEY, MIRROR_I);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(stdout_lines(&sent), Vec::<String>::new());
    assert!(
        stderr_of(&sent).contains("2 already there"),
        "{}",
        stderr_of(&sent)
    );
    assert!(
        receiver
            .stderr()
            .contains("tree/a: cannot set its metadata"),
        "{}",
        receiver.stderr()
    );
    assert_eq!(mode(&dst.join("tree/a")), 0o644);
}

/// `(seconds, nanoseconds)` of the modification time of `path` itself.
fn own_mtime(path: &Path) -> (i64, i64) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.mtime(), meta.mtime_nsec())
}

/// A tree `src/tree` of a link `ln` (to `a`) and a FIFO `pipe` (0644) under
/// `root`, mirrored once into `dst` (with `-i --delete --specials`): the tree.
fn link_and_pipe_mirrored(root: &Path) -> PathBuf {
    let src = root.join("src/tree");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(root.join("dst")).unwrap();
    std::os::unix::fs::symlink("a", src.join("ln")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    set_mode(&src.join("pipe"), 0o644);
    let (first, _, recv_err) = mirror(root, OVERWRITE, &["-i", "--delete", "--specials"]);
    assert_eq!(code(&first), 0, "{}{recv_err}", stderr_of(&first));
    src
}

/// A link whose target is the same but whose own time differs, and a FIFO of
/// another mode, are made the sender's and itemized `attrs` on both sides, as
/// `rsync -a` does (`.L..t......`); a dry run says so and changes nothing, and a
/// rerun then has nothing to say.
#[test]
fn a_same_link_or_special_file_with_other_metadata_is_fixed_and_itemized() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let src = link_and_pipe_mirrored(root);
    let flags = ["-i", "--delete", "--specials"];
    set_mtime(&src.join("ln"), 1_600_000_000, 5);
    set_mtime(&src.join("pipe"), 1_600_000_000, 0);
    set_mode(&src.join("pipe"), 0o600);
    set_mtime(&src, 1_600_000_000, 0);
    let (ln, pipe) = (root.join("dst/tree/ln"), root.join("dst/tree/pipe"));
    let before = (own_mtime(&ln), own_mtime(&pipe), mode(&pipe));

    let (dry, _, _) = mirror(root, OVERWRITE, &["-i", "--delete", "--specials", "-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    let lines = stdout_lines(&dry);
    assert!(lines.iter().any(|l| l == "attrs    tree/ln"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "attrs    tree/pipe"), "{lines:?}");
    assert_eq!(
        (own_mtime(&ln), own_mtime(&pipe), mode(&pipe)),
        before,
        "a dry run changes nothing"
    );

    let mut receiver = Receiver::start(&root.join("dst"), Some(KEY), &["--overwrite", "-i"]);
    let sent = crate::util::send(&[&src], receiver.port, KEY, &flags);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let expected = ["attrs    tree/", "attrs    tree/ln", "attrs    tree/pipe"];
    assert_eq!(stdout_lines(&sent), expected);
    let mut received: Vec<String> = receiver.stdout().lines().map(str::to_string).collect();
    received.sort();
    assert_eq!(received, expected);
    assert_eq!(fs::read_link(&ln).unwrap(), Path::new("a"));
    assert_eq!(own_mtime(&ln), (1_600_000_000, 5));
    assert_eq!(own_mtime(&pipe), (1_600_000_000, 0));
    assert_eq!(mode(&pipe), 0o600);

    let (again, _, _) = mirror(root, OVERWRITE, &flags);
    assert_eq!(code(&again), 0, "{}", stderr_of(&again));
    assert_eq!(stdout_lines(&again), Vec::<String>::new());
}

#[test]
fn a_sender_ignores_attrs_on_a_new_directory_and_a_same_hard_link() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("f"), b"f").unwrap();
    fs::hard_link(tree.join("f"), tree.join("g")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer_side = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).unwrap();
        let features = ["aead", "meta", "mirror"];
        peer.accept_handshake(&Acceptor::new(KEY, "receiver").features(&features))
            .unwrap();
        while peer.read_control().unwrap()["type"] == "offer" {}
        // Section 17.3: `attrs` counts only on a directory that exists and on the
        // `same` of a file, link or special file (a hard link's metadata is its
        // file's); a hostile or confused receiver writes it elsewhere.
        let new_dir = json!({"action":"send","offset":0,"attrs":true});
        let same_file = json!({"action":"skip","code":"same","message":"there"});
        let same_link = json!({"action":"skip","code":"same","message":"there","attrs":true});
        peer.send_plan(&[vec![new_dir, same_file, same_link]])
            .unwrap();
        assert_eq!(peer.read_control().unwrap()["type"], "end");
        peer.send_end().unwrap();
    });
    let sent = crate::util::send(&[&tree], port, KEY, &["-i"]);
    peer_side.join().unwrap();
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(stdout_lines(&sent), ["new dir  t/"]);
}

/// A `same` link or special file with another name outside the tree (a `cp -al`
/// snapshot hard-links links and special files too) is left as it is, as a
/// `same` file with more than one link is: its metadata is the snapshot's too.
#[test]
fn a_same_link_or_special_file_with_more_than_one_name_is_left_as_it_is() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    fs::create_dir_all(root.join("snapshot")).unwrap();
    let src = link_and_pipe_mirrored(root);
    let flags = ["-i", "--delete", "--specials"];
    // link(2) of a link is of the link itself, as `cp -al` makes it.
    let (ln, pipe) = (root.join("dst/tree/ln"), root.join("dst/tree/pipe"));
    let (snap_ln, snap_pipe) = (root.join("snapshot/ln"), root.join("snapshot/pipe"));
    fs::hard_link(&ln, &snap_ln).unwrap();
    fs::hard_link(&pipe, &snap_pipe).unwrap();
    assert!(fs::symlink_metadata(&snap_ln).unwrap().is_symlink());
    set_mtime(&src.join("ln"), 1_600_000_000, 5);
    set_mtime(&src.join("pipe"), 1_600_000_000, 0);
    set_mode(&src.join("pipe"), 0o600);
    let before = (own_mtime(&snap_ln), own_mtime(&snap_pipe), mode(&snap_pipe));

    let (again, _, recv_err) = mirror(root, OVERWRITE, &flags);
    assert_eq!(code(&again), 0, "{}{recv_err}", stderr_of(&again));
    let lines = stdout_lines(&again);
    assert!(
        !lines
            .iter()
            .any(|l| l.ends_with("tree/ln") || l.ends_with("tree/pipe")),
        "{lines:?}"
    );
    assert_eq!(
        (own_mtime(&snap_ln), own_mtime(&snap_pipe), mode(&snap_pipe)),
        before,
        "the snapshot's names keep their metadata"
    );
}

/// An attribute the source no longer has goes from the receiver's copy too, as
/// with `rsync -aX`: from a file found the same (a dry run says `attrs` first and
/// removes nothing), from one whose source has no attribute left, and from a
/// directory.
#[test]
fn an_attribute_the_source_dropped_goes_from_the_copy_too() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    synced(root);
    let (src, dst) = (root.join("src/tree"), root.join("dst/tree"));
    for path in [src.join("a"), src.join("sub/b"), src.join("sub")] {
        if let Err(err) = set_xattr(&path, "user.keep", b"1") {
            eprintln!("skipped: this filesystem takes no user.* attributes ({err})");
            return;
        }
        set_xattr(&path, "user.gone", b"2").unwrap();
    }
    let (sent, _, recv_err) = mirror(root, OVERWRITE, &["-X", "--delete"]);
    assert_eq!(code(&sent), 0, "{}{recv_err}", stderr_of(&sent));
    assert_eq!(xattrs_of(&dst.join("sub/b")).len(), 2);
    for path in [src.join("a"), src.join("sub")] {
        remove_xattr(&path, "user.gone");
    }
    remove_xattr(&src.join("sub/b"), "user.gone");
    remove_xattr(&src.join("sub/b"), "user.keep");

    let (dry, _, _) = mirror(root, OVERWRITE, &["-i", "-X", "--delete", "-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    let said = stdout_lines(&dry);
    for line in [
        "attrs    tree/a",
        "attrs    tree/sub/b",
        "attrs    tree/sub/",
    ] {
        assert!(said.iter().any(|l| l == line), "{line} in {said:?}");
    }
    assert_eq!(
        xattrs_of(&dst.join("a")).len(),
        2,
        "a dry run removes nothing"
    );

    let (sent, recv_code, recv_err) = mirror(root, OVERWRITE, &["-i", "-X", "--delete"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    let only_keep: Vec<Vec<u8>> = vec![b"user.keep".to_vec()];
    assert_eq!(
        xattrs_of(&dst.join("a")).into_keys().collect::<Vec<_>>(),
        only_keep
    );
    assert_eq!(
        xattrs_of(&dst.join("sub")).into_keys().collect::<Vec<_>>(),
        only_keep
    );
    assert!(
        xattrs_of(&dst.join("sub/b")).is_empty(),
        "{:?}",
        xattrs_of(&dst.join("sub/b"))
    );
    // Then the copy is the source's: nothing more to do.
    let (again, _, _) = mirror(root, OVERWRITE, &["-i", "-X", "--delete"]);
    assert_eq!(stdout_lines(&again), Vec::<String>::new());
}

/// A root receiver removes an attribute of a namespace other than `user.*` that its
/// copy holds and the offer does not name only when the sender read every
/// namespace (saying `xattrs_all`): a sender that is not root, or root without
/// `CAP_SYS_ADMIN` (a container's), sees no `trusted.*` and cannot say that its
/// source lacks one (such senders used to have them removed); a second run finds
/// nothing to fix. `user.*` strays go either way.
#[test]
fn only_a_sender_that_read_every_namespace_has_trusted_attributes_removed() {
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = root.path();
    synced(root);
    let (copy, dir) = (root.join("dst/tree/a"), root.join("dst/tree/sub"));
    for path in [&copy, &dir] {
        if set_xattr(path, "trusted.keep", b"1").is_err() {
            eprintln!("skipped: needs root to set trusted.* attributes");
            return;
        }
        set_xattr(path, "user.stale", b"1").unwrap();
    }
    let names = |path: &Path| xattrs_of(path).into_keys().collect::<Vec<_>>();
    let send_as = |wrap: Wrap| {
        let sent = sent_through(
            wrap,
            &root.join("src/tree"),
            &root.join("dst"),
            &["-X", "-i"],
        );
        sent.map(|sent| stdout_lines(&sent))
    };
    let Some(said) = send_as(crate::util::as_nobody) else {
        eprintln!("skipped: needs root and setpriv to run the sender as nobody");
        return;
    };
    assert_eq!(said, ["attrs    tree/a", "attrs    tree/sub/"]);
    for path in [&copy, &dir] {
        assert_eq!(names(path), [b"trusted.keep".to_vec()], "{path:?}");
    }
    assert_eq!(send_as(crate::util::as_nobody), Some(vec![]));
    assert_eq!(send_as(crate::util::without_sys_admin), Some(vec![]));
    assert_eq!(names(&copy), [b"trusted.keep".to_vec()]);

    let said = send_as(Some).unwrap();
    assert_eq!(said, ["attrs    tree/a", "attrs    tree/sub/"]);
    for path in [&copy, &dir] {
        assert!(names(path).is_empty(), "{path:?}: {:?}", names(path));
    }
}

/// How a command is run as someone else (`util::as_nobody`, `util::without_sys_admin`,
/// or `Some` for as it is), `None` where that is not possible here.
type Wrap = fn(std::process::Command) -> Option<std::process::Command>;

/// `xfer send -X`-like: `what` sent with `args` by a sender run through `wrap` to a
/// receiver into `dst` that replaces files; both must succeed. `None` where the
/// sender cannot be run so.
fn sent_through(wrap: Wrap, what: &Path, dst: &Path, args: &[&str]) -> Option<Output> {
    let mut receiver = Receiver::start(dst, Some(KEY), OVERWRITE);
    let mut command = crate::util::xfer();
    command
        .arg("send")
        .arg(what)
        .arg(format!("127.0.0.1:{}", receiver.port))
        .args(args)
        .env("XFER_KEY", KEY);
    let sent = run(&mut wrap(command)?);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    Some(sent)
}

/// A delta that rebuilds its basis byte for byte (`--ignore-times` over a file that
/// did not change) keeps the basis, the same inode, and fixes its attributes in
/// place, as for a file found the same: from a sender that cannot read `trusted.*`,
/// the basis keeps its own.
#[test]
fn a_kept_basis_keeps_the_trusted_attributes_its_sender_could_not_see() {
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (root.path().join("src"), root.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let bytes: Vec<u8> = (0..256u32 << 10).map(|i| (i * 7919 % 251) as u8).collect();
    let (file, copy) = (src.join("big"), dst.join("big"));
    fs::write(&file, &bytes).unwrap();
    fs::write(&copy, &bytes).unwrap();
    set_mode(&file, 0o644);
    if set_xattr(&copy, "trusted.keep", b"1").is_err() {
        eprintln!("skipped: needs root to set trusted.* attributes");
        return;
    }
    set_xattr(&copy, "user.stale", b"1").unwrap();
    set_xattr(&file, "user.a", b"1").unwrap();
    set_mtime(&file, 1_700_000_000, 0);
    set_mtime(&copy, 1_700_000_000, 0);
    let inode = fs::metadata(&copy).unwrap().ino();
    let args = ["-X", "-I", "-i"];
    let Some(sent) = sent_through(crate::util::as_nobody, &file, &dst, &args) else {
        eprintln!("skipped: needs root and setpriv to run the sender as nobody");
        return;
    };
    let kept = fs::metadata(&copy).unwrap().ino() == inode;
    assert!(kept, "the basis was kept: {:?}", stdout_lines(&sent));
    let names: Vec<Vec<u8>> = xattrs_of(&copy).into_keys().collect();
    assert_eq!(names, [b"trusted.keep".to_vec(), b"user.a".to_vec()]);
}

/// An offer that does not say `xattrs_all` (an older or an independent sender's)
/// still has a root receiver set every attribute it names: only what it removes
/// keeps to `user.*`.
#[test]
fn an_offer_without_xattrs_all_still_sets_every_attribute_it_names() {
    let out = tempfile::tempdir().unwrap();
    let there = out.path().join("d");
    fs::create_dir(&there).unwrap();
    if set_xattr(&there, "trusted.old", b"1").is_err() {
        eprintln!("skipped: needs root to set trusted.* attributes");
        return;
    }
    set_xattr(&there, "user.stale", b"1").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), OVERWRITE);
    let mut peer = peer_sender(receiver.port, &["aead", "meta", "mirror"]);
    let xattrs = json!({"trusted.new": "32", "user.keep": "33"});
    let entry = json!({"path":"d","kind":"dir","size":0,"mode":0o755,"mtime":1_700_000_000,
        "xattrs": xattrs});
    peer.send_offer(&[vec![entry]]).unwrap();
    let decision = peer.read_plan(1).expect("a plan").remove(0);
    assert_eq!(decision["action"], "send", "{decision}");
    peer.send_end().unwrap();
    drop(peer);
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let held = xattrs_of(&there);
    let names: Vec<&[u8]> = held.keys().map(Vec::as_slice).collect();
    assert_eq!(names, [&b"trusted.new"[..], b"trusted.old", b"user.keep"]);
    assert_eq!(held[&b"trusted.new".to_vec()], b"2");
}

fn remove_xattr(path: &Path, name: &str) {
    rustix::fs::lremovexattr(path, name).unwrap();
}

/// A receiver that is not root may change an attribute of a file only while the
/// file is writable to it (the kernel's rule for `user.*`): a read-only copy found
/// the same still loses one its source dropped and takes a changed one, and the
/// next run finds it the same, instead of saying `attrs` for it every time.
#[test]
fn a_read_only_copy_at_an_unprivileged_receiver_follows_its_source_s_attributes() {
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (root.path().join("src/tree"), root.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    std::os::unix::fs::lchown(&dst, Some(65534), Some(65534)).unwrap();
    let file = src.join("ro");
    fs::write(&file, b"read only\n").unwrap();
    if let Err(err) = set_xattr(&file, "user.keep", b"1") {
        eprintln!("skipped: this filesystem takes no user.* attributes ({err})");
        return;
    }
    set_xattr(&file, "user.gone", b"2").unwrap();
    set_mode(&file, 0o444);
    let run_once = |extra: &[&str]| {
        let mut receiver = crate::util::nobody_receiving(&dst)?;
        let sent = crate::util::send(&[&src], receiver.port, KEY, extra);
        assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
        Some(sent)
    };
    if run_once(&["-X"]).is_none() {
        return;
    }
    let copy = dst.join("tree/ro");
    assert_eq!(xattrs_of(&copy).len(), 2);
    assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o777, 0o444);

    rustix::fs::lremovexattr(&file, "user.gone").unwrap();
    set_xattr(&file, "user.keep", b"changed").unwrap();
    let again = run_once(&["-X", "-i"]).unwrap();
    assert_eq!(stdout_lines(&again), ["attrs    tree/ro"]);
    let held = xattrs_of(&copy);
    assert_eq!(held.keys().collect::<Vec<_>>(), [&b"user.keep".to_vec()]);
    assert_eq!(held[&b"user.keep".to_vec()], b"changed");
    assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o777, 0o444);
    let third = run_once(&["-X", "-i"]).unwrap();
    assert_eq!(stdout_lines(&third), Vec::<String>::new());
}
