//! Issue 20, at the level a user sees: a tree with links (relative, absolute,
//! dangling, looping), times with nanoseconds in 1901, 1969 and 2100, the modes
//! 4755, 2775 and 1777, two hard-link groups, `user.*` attributes and (as root) a
//! fifo, a device and a foreign owner arrives as it left, checked from outside by
//! `util::tree` (an `lstat` walk of both trees); a rerun sends nothing. An older
//! peer (the independent one, without `meta`) still gets version 2's offer,
//! hostile `meta` values are refused without harm, and attributes beyond what an
//! entry carries are left out and said.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::util::peer::{Acceptor, Decision, Peer};
use crate::util::tree::{
    Check, assert_faithful, more_xattrs_than_an_entry_carries, set_mtime, set_xattr, xattrs_of,
};
use crate::util::{
    KEY, Receiver, Tmpfs, files_under, link_tree_to_meta_peer, peer_sender, send, stderr_of,
    write_in,
};

/// 1901-06-01T00:00:00Z, 1969-12-31T23:59:59.5Z and 2100-01-01T00:00:00Z.
const Y1901: i64 = -2_163_801_600;
const Y1969: i64 = -1;
const Y2100: i64 = 4_102_444_800;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The tree of the "done when", under `root/tree`. Whatever needs root (a
/// device, a foreign owner) is made only as root.
pub fn rich_tree(root: &Path) -> PathBuf {
    let tree = root.join("tree");
    for dir in ["bin", "shared", "team", "links", "groups"] {
        std::fs::create_dir_all(tree.join(dir)).unwrap();
    }
    std::fs::write(tree.join("bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    chmod(&tree.join("bin/tool"), 0o4755);
    chmod(&tree.join("team"), 0o2775);
    chmod(&tree.join("shared"), 0o1777);
    std::fs::write(tree.join("team/notes.txt"), b"notes").unwrap();
    std::os::unix::fs::symlink("../bin/tool", tree.join("links/relative")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", tree.join("links/absolute")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", tree.join("links/dangling")).unwrap();
    std::os::unix::fs::symlink("looping", tree.join("links/looping")).unwrap();
    std::fs::write(tree.join("groups/one"), b"first group").unwrap();
    std::fs::hard_link(tree.join("groups/one"), tree.join("groups/one-again")).unwrap();
    std::fs::hard_link(tree.join("groups/one"), tree.join("team/one-third")).unwrap();
    std::fs::write(tree.join("groups/two"), b"second group").unwrap();
    std::fs::hard_link(tree.join("groups/two"), tree.join("groups/two-again")).unwrap();
    // A filesystem without user attributes: the comparison then has none either.
    let _ = set_xattr(
        &tree.join("team/notes.txt"),
        "user.comment",
        b"\x00binary\xff",
    );
    let _ = set_xattr(&tree.join("shared"), "user.purpose", b"scratch");
    if is_root() {
        make_node(&tree.join("fifo"), libc::S_IFIFO, 0);
        make_node(&tree.join("null"), libc::S_IFCHR, libc::makedev(1, 3));
        std::os::unix::fs::chown(tree.join("team/notes.txt"), Some(12345), Some(12345)).unwrap();
        std::os::unix::fs::lchown(tree.join("links/relative"), Some(12345), Some(54321)).unwrap();
    }
    set_mtime(&tree.join("bin/tool"), Y1901, 123_456_789);
    set_mtime(&tree.join("team/notes.txt"), Y1969, 500_000_000);
    set_mtime(&tree.join("groups/two"), Y2100, 999_999_999);
    set_mtime(&tree.join("links/relative"), Y1969, 1);
    // Directory times last, as a receiver sets them.
    for dir in ["bin", "shared", "team", "links", "groups", ""] {
        set_mtime(&tree.join(dir), 1_600_000_000, 42);
    }
    tree
}

fn make_node(path: &Path, kind: libc::mode_t, device: libc::dev_t) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mknod(c_path.as_ptr(), kind | 0o640, device) };
    assert_eq!(rc, 0, "mknod {path:?}: {}", std::io::Error::last_os_error());
}

/// What a copy is compared on: everything, owners as root.
fn archive() -> Check {
    let check = Check::archive().xattrs();
    if is_root() { check.owners() } else { check }
}

#[test]
fn a_tree_arrives_as_it_left_and_a_rerun_sends_nothing() {
    let src = tempfile::tempdir().unwrap();
    let tree = rich_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let sent = send(&[&tree], receiver.port, KEY, &["-a"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_faithful(&tree, &out.path().join("tree"), &archive());

    let again = send(&[&tree], receiver.port, KEY, &["-a", "--json"]);
    assert!(again.status.success(), "{}", stderr_of(&again));
    let summary = crate::util::summary_event(&again);
    assert_eq!(summary["bytes"], 0, "{summary}");
    assert_eq!(summary["files"], 0, "{summary}");
    assert_faithful(&tree, &out.path().join("tree"), &archive());
    receiver.child.kill().unwrap();
}

/// A fifo carries no attributes in an offer (section 16.1 refuses the member on
/// one, and the offer with it): one that has some (as root, `trusted.*`, or the
/// label SELinux gives every file) is still sent with `-a -X`, without them, and
/// the sender says so, naming it. It used to make the receiver refuse the whole
/// offer, then to drop them in silence.
#[test]
fn a_fifo_with_attributes_is_sent_without_them() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("f"), b"file").unwrap();
    crate::mirror_meta::mkfifo(&tree.join("pipe"));
    if set_xattr(&tree.join("pipe"), "trusted.x", b"1").is_err() {
        eprintln!("skipped: needs root to set trusted.* attributes");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &["-a", "-X"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let pipe = fs::symlink_metadata(out.path().join("t/pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
    let said = stderr_of(&sent);
    assert!(
        // One, or two where SELinux labels every file.
        said.contains("t/pipe: ")
            && said.contains("extended attributes not sent: an offer carries none"),
        "{said}"
    );
    assert_eq!(fs::read(out.path().join("t/f")).unwrap(), b"file");
}

/// A file with capabilities (`setcap cap_net_raw+ep`, a `ping`) and a foreign
/// owner keeps both with `-a`: the owner is given first, since a change of owner
/// clears `security.capability` (given after it, it lost them, in silence, on
/// every run), also when a rerun brings a copy that lost them up to date.
#[test]
fn capabilities_survive_a_change_of_owner() {
    if !is_root() {
        eprintln!("skipped: needs root to give owners and capabilities");
        return;
    }
    // VFS_CAP_REVISION_2 with the effective bit; permitted: cap_net_raw (13).
    let cap: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect();
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    fs::create_dir(&tree).unwrap();
    let ping = tree.join("ping");
    fs::write(&ping, b"not really ping").unwrap();
    std::os::unix::fs::chown(&ping, Some(1234), Some(1234)).unwrap();
    if set_xattr(&ping, "security.capability", &cap).is_err() {
        eprintln!("skipped: this filesystem holds no capabilities");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("t/ping");
    for round in 0..2 {
        let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
        let sent = send(&[&tree], receiver.port, KEY, &["-a"]);
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
        let held = xattrs_of(&copy);
        assert_eq!(
            held.get(b"security.capability".as_slice()),
            Some(&cap),
            "round {round}"
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&fs::metadata(&copy).unwrap()),
            1234
        );
        // The second round finds a copy that lost them, the same otherwise.
        let c_path = std::ffi::CString::new(copy.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and name.
        unsafe { libc::lremovexattr(c_path.as_ptr(), c"security.capability".as_ptr()) };
    }
    // Dropped at the source (`setcap -r`): dropped from the copy (a privilege,
    // not a label the receiving system gave it).
    set_xattr(&copy, "security.capability", &cap).unwrap();
    let c_path = std::ffi::CString::new(ping.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and name.
    unsafe { libc::lremovexattr(c_path.as_ptr(), c"security.capability".as_ptr()) };
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
    let sent = send(&[&tree], receiver.port, KEY, &["-a"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(
        xattrs_of(&copy).get(b"security.capability".as_slice()),
        None
    );
}

/// A link's attributes (as root, `trusted.*`) that changed, appeared or went at
/// the source do so on the copy on the next run, said `attrs`; the run after
/// finds nothing to do. They were set only when the link was made.
#[test]
fn a_links_changed_attributes_reach_its_copy() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    fs::create_dir(&tree).unwrap();
    std::os::unix::fs::symlink("target", tree.join("l")).unwrap();
    if set_xattr(&tree.join("l"), "trusted.a", b"1").is_err() {
        eprintln!("skipped: needs root to set trusted.* attributes");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = || {
        let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
        let sent = send(&[&tree], receiver.port, KEY, &["-a", "-i"]);
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
        String::from_utf8_lossy(&sent.stdout).into_owned()
    };
    run();
    set_xattr(&tree.join("l"), "trusted.a", b"2").unwrap();
    set_xattr(&tree.join("l"), "trusted.b", b"new").unwrap();
    assert!(run().contains("attrs    t/l"));
    assert_eq!(
        xattrs_of(&out.path().join("t/l")),
        xattrs_of(&tree.join("l"))
    );
    assert!(!run().contains("attrs"));
    // Removed at the source, one and then the last: removed from the copy.
    for gone in ["trusted.b", "trusted.a"] {
        let c_path = std::ffi::CString::new(tree.join("l").as_os_str().as_encoded_bytes());
        let c_name = std::ffi::CString::new(gone).unwrap();
        // SAFETY: NUL-terminated path and name.
        unsafe { libc::lremovexattr(c_path.unwrap().as_ptr(), c_name.as_ptr()) };
        assert!(run().contains("attrs    t/l"), "{gone}");
        let (copy, source) = (
            xattrs_of(&out.path().join("t/l")),
            xattrs_of(&tree.join("l")),
        );
        assert_eq!(copy, source, "{gone}");
    }
}

/// A POSIX ACL with an entry for user 1234 (`rwx`), as the kernel stores one.
fn acl_granting_1234() -> Vec<u8> {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 7, 1234),
        (4, 4, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    acl
}

/// With `-a` as root, ACLs follow the source as `rsync -aA` makes them: one the
/// source revoked goes from the copy kept in place, and a new file does not keep
/// the ACL it inherited from its directory's default ACL where the source's file
/// has none (access revoked at the source stayed granted on the copy). A label
/// (`security.*`) the receiving system gave still stays.
#[test]
fn acls_the_source_does_not_have_go_from_the_copy() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    fs::create_dir_all(tree.join("d")).unwrap();
    fs::write(tree.join("f"), b"f").unwrap();
    if !is_root()
        || set_xattr(
            &tree.join("f"),
            "system.posix_acl_access",
            &acl_granting_1234(),
        )
        .is_err()
    {
        eprintln!("skipped: needs root and a filesystem with POSIX ACLs");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = || {
        let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
        let sent = send(&[&tree], receiver.port, KEY, &["-a"]);
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    };
    run();
    let access = b"system.posix_acl_access".as_slice();
    assert!(xattrs_of(&out.path().join("t/f")).contains_key(access));
    // Revoked at the source; the copy's directory hands new files an ACL.
    let c_path = std::ffi::CString::new(tree.join("f").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and name.
    unsafe { libc::lremovexattr(c_path.as_ptr(), c"system.posix_acl_access".as_ptr()) };
    let copy_dir = out.path().join("t/d");
    set_xattr(&copy_dir, "system.posix_acl_default", &acl_granting_1234()).unwrap();
    let labelled = set_xattr(&out.path().join("t/f"), "security.xfer_test", b"label").is_ok();
    fs::write(tree.join("d/new"), b"new").unwrap();
    crate::mirror_meta::mkfifo(&tree.join("d/pipe"));
    run();
    assert!(
        !xattrs_of(&copy_dir.join("pipe")).contains_key(access),
        "a fifo's too"
    );
    let f = xattrs_of(&out.path().join("t/f"));
    assert!(!f.contains_key(access), "{f:?}");
    assert!(!xattrs_of(&copy_dir.join("new")).contains_key(access));
    if labelled {
        assert!(f.contains_key(b"security.xfer_test".as_slice()), "{f:?}");
    }
}

/// An attribute whose name is not UTF-8 cannot travel (an offer names attributes
/// as JSON text): the sender says so, naming the file, instead of dropping it in
/// silence; the file and its other attributes arrive.
#[test]
fn an_attribute_named_in_bytes_that_are_not_utf8_is_said_not_sent() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    fs::create_dir(&tree).unwrap();
    let file = tree.join("a");
    fs::write(&file, b"a").unwrap();
    let flags = rustix::fs::XattrFlags::empty();
    if rustix::fs::setxattr(&file, &b"user.\xff\xfe"[..], b"v", flags).is_err() {
        eprintln!("skipped: this filesystem takes no user.* attributes");
        return;
    }
    set_xattr(&file, "user.ok", b"1").unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &["-X"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(
        stderr_of(&sent).contains("t/a: 1 extended attributes not sent: their names are not UTF-8"),
        "{}",
        stderr_of(&sent)
    );
    let held = xattrs_of(&out.path().join("t/a"));
    assert_eq!(held.keys().collect::<Vec<_>>(), [&b"user.ok".to_vec()]);
}

#[test]
fn a_receiver_that_is_not_root_keeps_what_it_may_and_says_once_what_it_dropped() {
    let src = tempfile::tempdir().unwrap();
    let tree = rich_tree(src.path());
    for special in ["fifo", "null"] {
        let _ = std::fs::remove_file(tree.join(special));
    }
    let out = tempfile::tempdir().unwrap();
    let mut command = crate::util::xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--json", "--dir"])
        .arg(out.path())
        .env("XFER_KEY", KEY);
    let Some(command) = crate::util::as_nobody(command) else {
        eprintln!("skipped: needs root and setpriv to run a receiver as nobody");
        return;
    };
    std::os::unix::fs::chown(out.path(), Some(65534), Some(65534)).unwrap();
    let mut receiver = Receiver::spawn(command);
    let sent = send(&[&tree], receiver.port, KEY, &["-X", "--owner"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let said = receiver.stderr();
    assert_eq!(said.matches("note: owners not kept").count(), 1, "{said}");
    assert!(said.contains("not root"), "{said}");
    assert_faithful(&tree, &out.path().join("tree"), &Check::archive().xattrs());
    // Every entry but the three hard links carried an owner: the sender, whose
    // data all arrived (exit 0), hears it from the receiver, once.
    let heard = stderr_of(&sent);
    let owners = "note: the receiver did not keep owners on 14 entries: not root, or a server";
    assert_eq!(heard.matches(owners).count(), 1, "{heard}");
    assert_eq!(heard.matches("note: the receiver").count(), 1, "{heard}");
    // With `--json` the receiver says it as the sender does: one `not_kept` event.
    let mut printed = String::new();
    let stdout = receiver.child.stdout.as_mut().unwrap();
    std::io::Read::read_to_string(stdout, &mut printed).unwrap();
    let events = crate::util::events_in(&printed);
    let not_kept: Vec<_> = events.iter().filter(|e| e["event"] == "not_kept").collect();
    assert_eq!(not_kept.len(), 1, "{events:?}");
    assert_eq!(
        (&not_kept[0]["side"], &not_kept[0]["owners"]),
        (&"receiver".into(), &14.into())
    );
}

#[test]
fn links_are_never_followed_or_written_through_when_overwriting() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("victim"), b"from the sender").unwrap();
    std::os::unix::fs::symlink("elsewhere", tree.join("link")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), b"keep me").unwrap();
    // What is at the names already: a link out of the tree where a file comes, and
    // a file where a link comes.
    std::fs::create_dir(out.path().join("tree")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("precious"),
        out.path().join("tree/victim"),
    )
    .unwrap();
    std::fs::write(out.path().join("tree/link"), b"a file").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(
        std::fs::read(outside.path().join("precious")).unwrap(),
        b"keep me"
    );
    assert_eq!(
        std::fs::read(out.path().join("tree/victim")).unwrap(),
        b"from the sender"
    );
    assert_eq!(
        std::fs::read_link(out.path().join("tree/link")).unwrap(),
        PathBuf::from("elsewhere")
    );
    assert_eq!(files_under(out.path()).len(), 2, "no temporaries left");
}

#[test]
fn an_existing_different_link_is_refused_without_overwrite() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::os::unix::fs::symlink("new-target", tree.join("link")).unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir(out.path().join("tree")).unwrap();
    std::os::unix::fs::symlink("old-target", out.path().join("tree/link")).unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert!(stderr_of(&sent).contains("exists"), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 6, "{}", receiver.stderr());
    assert_eq!(
        std::fs::read_link(out.path().join("tree/link")).unwrap(),
        PathBuf::from("old-target")
    );
}

#[test]
fn without_hard_links_each_name_arrives_as_its_own_file() {
    let src = tempfile::tempdir().unwrap();
    let tree = rich_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(
        &[&tree],
        receiver.port,
        KEY,
        &["--no-hard-links", "--specials"],
    );
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    use std::os::unix::fs::MetadataExt;
    let copy = out.path().join("tree");
    let one = std::fs::metadata(copy.join("groups/one")).unwrap();
    let again = std::fs::metadata(copy.join("groups/one-again")).unwrap();
    assert_ne!(one.ino(), again.ino());
    assert_eq!(
        std::fs::read(copy.join("groups/one-again")).unwrap(),
        b"first group"
    );
    assert_faithful(
        &tree,
        &copy,
        &Check::archive().no_hard_links().mode_mask(0o7777),
    );
}

/// The independent peer, without `meta`, receiving what `xfer send` offers.
fn offer_to_an_older_peer(
    tree: &Path,
    flags: &'static [&'static str],
) -> (Vec<Value>, std::process::Output) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer_side = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).unwrap();
        peer.accept_handshake(&Acceptor::new(KEY, "receiver").features(&["aead"]))
            .unwrap();
        peer.receive_transfer(|_, _| Decision::Send).unwrap()
    });
    let sent = send(&[tree], port, KEY, flags);
    let received = peer_side.join().unwrap();
    (received.entries, sent)
}

#[test]
fn an_older_peer_gets_version_2_offers() {
    let src = tempfile::tempdir().unwrap();
    let tree = rich_tree(src.path());
    let (entries, sent) = offer_to_an_older_peer(&tree, &["-a"]);
    for entry in &entries {
        let kind = entry["kind"].as_str().unwrap();
        assert!(kind == "file" || kind == "dir", "{entry}");
        for member in ["mtime_ns", "target", "of", "uid", "xattrs", "sparse"] {
            assert!(entry.get(member).is_none(), "{member} in {entry}");
        }
        assert!(entry["mode"].as_u64().unwrap() <= 0o777, "{entry}");
        assert!(
            entry.get("mtime").is_none_or(|m| m.as_u64().is_some()),
            "{entry}"
        );
    }
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    // A hard link goes as a copy of its file, as before; links are not sent.
    assert!(paths.contains(&"tree/groups/one-again"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("tree/links/")),
        "{paths:?}"
    );
    let stderr = stderr_of(&sent);
    assert!(stderr.contains("links/relative"), "{stderr}");
    assert_ne!(
        sent.status.code(),
        Some(0),
        "links not sent are said: {stderr}"
    );
}

/// Starts a receiver, offers `entries` from the independent peer under `meta`, and
/// returns the peer's view of the answer and the receiver's exit code.
fn hostile_offer(entries: Vec<Value>) -> (Result<Vec<Value>, String>, i32, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = peer_sender(receiver.port, &["aead", "meta"]);
    let count = entries.len();
    peer.send_offer(&[entries]).unwrap();
    let plan = peer.read_plan(count).map_err(|err| format!("{err:?}"));
    if plan.is_ok() {
        peer.send_end().unwrap();
        let _ = peer.read_control();
    }
    (plan, receiver.exit_code(), out)
}

#[test]
fn hostile_meta_values_are_refused_without_harm() {
    let file = json!({"path":"f","kind":"file","size":4,"mode":420,"mtime":0});
    let dir = json!({"path":"d","kind":"dir","size":0});
    for (what, entries) in [
        (
            "a hard link to a later entry",
            vec![
                json!({"path":"h","kind":"hardlink","size":0,"of":1}),
                file.clone(),
            ],
        ),
        (
            "a hard link to a directory",
            vec![
                dir.clone(),
                json!({"path":"h","kind":"hardlink","size":0,"of":0}),
            ],
        ),
        (
            "a link target with NUL",
            vec![json!({"path":"l","kind":"symlink","size":0,"target":"/etc\u{0}x"})],
        ),
        (
            "a mode over 0o7777",
            vec![json!({"path":"f","kind":"file","size":4,"mode":0o10755})],
        ),
    ] {
        let (plan, code, out) = hostile_offer(entries);
        let err = plan.expect_err(what);
        assert!(err.contains("protocol"), "{what}: {err}");
        assert_eq!(code, 8, "{what}");
        assert!(
            files_under(out.path()).is_empty(),
            "{what}: nothing written"
        );
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "{what}");
    }
    // xfer's own attribute is never set from an offer: the entry arrives without it.
    let marked = json!({"path":"d","kind":"dir","size":0,"xattrs":{"user.xfer.partial":"31","user.fine":"31"}});
    let (plan, code, out) = hostile_offer(vec![marked]);
    assert_eq!(plan.unwrap()[0]["action"], "send");
    assert_eq!(code, 0);
    let xattrs = xattrs_of(&out.path().join("d"));
    assert!(
        !xattrs.contains_key(&b"user.xfer.partial"[..]),
        "{xattrs:?}"
    );
    assert_eq!(
        xattrs.get(&b"user.fine"[..]).map(Vec::as_slice),
        Some(&b"1"[..])
    );
}

#[test]
fn a_hard_link_whose_file_did_not_arrive_is_answered_not_found_before_end() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut peer = peer_sender(receiver.port, &["aead", "meta"]);
    peer.send_offer(&[vec![
        json!({"path":"f","kind":"file","size":4,"mode":420,"mtime":0}),
        json!({"path":"h","kind":"hardlink","size":0,"of":0}),
    ]])
    .unwrap();
    let plan = peer.read_plan(2).unwrap();
    assert_eq!(
        (&plan[0]["action"], &plan[1]["action"]),
        (&json!("send"), &json!("send"))
    );
    // The sender gives the file up in place of its data.
    peer.send_control(&json!({"type":"error","index":0,"code":"io","message":"gave up"}))
        .unwrap();
    peer.send_end().unwrap();
    let mut answers = Vec::new();
    loop {
        let frame = peer.read_control().expect("an answer");
        if frame["type"] == "end" {
            break;
        }
        answers.push(frame);
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["type"], "error");
    assert_eq!(answers[0]["index"], 1);
    assert_eq!(answers[0]["code"], "not_found");
    assert_ne!(receiver.exit_code(), 0);
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing made"
    );
}

#[test]
fn a_sender_counts_a_link_the_receiver_could_not_make_as_failed() {
    let (sent, offer) = link_tree_to_meta_peer(&[], |peer, offer| {
        let send = json!({"action":"send","offset":0});
        peer.send_plan(&[vec![send; offer.len()]]).unwrap();
        peer.send_control(&json!({"type":"error","index":1,"code":"denied","message":"not here"}))
            .unwrap();
        assert_eq!(peer.read_control().unwrap()["type"], "end");
        peer.send_end().unwrap();
        offer
    });
    assert_eq!(offer[1]["kind"], "symlink", "{offer:?}");
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("not here"),
        "{}",
        stderr_of(&sent)
    );
    assert!(
        stderr_of(&sent).contains("1 of 2 entries"),
        "{}",
        stderr_of(&sent)
    );
}

#[test]
fn a_link_offered_above_a_file_keeps_the_file_out_of_it() {
    let (plan, code, out) = hostile_offer(vec![
        json!({"path":"a","kind":"symlink","size":0,"target":"/tmp"}),
        json!({"path":"a/x","kind":"file","size":0}),
    ]);
    let plan = plan.unwrap();
    assert_eq!(plan[1]["code"], "bad_path", "{plan:?}");
    assert_ne!(code, 0);
    assert_eq!(
        std::fs::read_link(out.path().join("a")).unwrap(),
        PathBuf::from("/tmp")
    );
}

/// A receiving directory with a default ACL (which masks a new file's mode in
/// place of the umask: here owner rwx, group and others nothing): small files and
/// a large one still land with the modes offered. A review found a build that
/// trusted the mode given at creation land them 0600.
#[test]
fn modes_arrive_exact_under_a_default_acl() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let modes = [("a", 0o644, 10), ("b", 0o640, 10), ("c", 0o755, 40 << 20)];
    for (name, mode, size) in modes {
        fs::write(tree.join(name), vec![b'x'; size]).unwrap();
        fs::set_permissions(tree.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    let dst = tempfile::tempdir().unwrap();
    // system.posix_acl_default, version 2: USER_OBJ rwx, GROUP_OBJ -, OTHER -.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(1u16, 7u16), (4, 0), (0x20, 0)] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(u32::MAX.to_le_bytes());
    }
    let flags = rustix::fs::XattrFlags::empty();
    if let Err(err) = rustix::fs::setxattr(dst.path(), "system.posix_acl_default", &acl, flags) {
        eprintln!("SKIPPED: this filesystem takes no default ACL ({err})");
        return;
    }
    let mut receiver = Receiver::start(dst.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    for (name, mode, _) in modes {
        let landed = fs::metadata(dst.path().join("tree").join(name)).unwrap();
        assert_eq!(landed.permissions().mode() & 0o777, mode, "{name}");
    }
}

/// A second run's `file` events with status `same` say what is not a file: a
/// link and a hard link are `kind` `symlink` and `hardlink` (a file has no `kind`).
#[test]
fn same_events_say_which_entries_are_links() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("a"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("a", tree.join("l")).unwrap();
    fs::hard_link(tree.join("a"), tree.join("h")).unwrap();
    let out = tempfile::tempdir().unwrap();
    for run in 0..2 {
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let sent = send(&[&tree], receiver.port, KEY, &["--json"]);
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
        if run == 0 {
            continue;
        }
        let events = crate::util::stdout_events(&sent);
        let kind_of = |path: &str| {
            let event = events
                .iter()
                .find(|e| e["event"] == "file" && e["path"] == path)
                .unwrap_or_else(|| panic!("no file event for {path}: {events:?}"));
            assert_eq!(event["status"], "same", "{event}");
            event.get("kind").cloned()
        };
        assert_eq!(kind_of("tree/a"), None);
        assert_eq!(kind_of("tree/l"), Some(json!("symlink")));
        assert_eq!(kind_of("tree/h"), Some(json!("hardlink")));
    }
}

/// A file holding more attributes than an entry may carry (section 16.1: 1 MiB of
/// values): 20 of 64 KiB, on a tmpfs, which takes them. The session goes on, the
/// first 16 by name arrive whole, and the sender says how many it left out. (It
/// used to offer all 20, and the receiver refused the whole offer as `protocol`.)
#[test]
fn attributes_beyond_what_an_entry_carries_are_left_out_and_said() {
    let root = tempfile::tempdir().unwrap();
    let (src, out) = (root.path().join("src"), root.path().join("out"));
    let Some(_src_mount) = Tmpfs::mount(&src, 16 << 20) else {
        return;
    };
    let Some(_out_mount) = Tmpfs::mount(&out, 16 << 20) else {
        return;
    };
    let file = write_in(&src, "f", b"data");
    let Some(expected) = more_xattrs_than_an_entry_carries(&file) else {
        return;
    };
    let mut receiver = Receiver::start(&out, Some(KEY), &[]);
    let sent = send(&[&file], receiver.port, KEY, &["-X"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent)
            .contains("f: 4 extended attributes not sent: an entry carries at most 1 MiB"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(
        xattrs_of(&out.join("f")) == expected,
        "the first 16 by name, whole"
    );
}

/// A second run of the same send changes nothing, so it touches nothing: the
/// directories it finds as offered keep their change times (each got its mode and
/// time again on every run, which a backup that goes by change times took for a
/// change of every directory).
#[test]
fn a_run_that_changes_nothing_leaves_the_directories_change_times_alone() {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("sub/deeper/f"), b"f\n").unwrap();
    std::fs::set_permissions(tree.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let run = || {
        let mut receiver = crate::util::Receiver::start(&out, Some(crate::util::KEY), &[]);
        let sent = crate::util::send(&[&tree], receiver.port, crate::util::KEY, &[]);
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
        assert!(sent.status.success());
    };
    run();
    let changed = || {
        ["tree", "tree/sub", "tree/sub/deeper"].map(|dir| {
            let meta = std::fs::metadata(out.join(dir)).unwrap();
            (meta.ctime(), meta.ctime_nsec(), meta.mode(), meta.mtime())
        })
    };
    let before = changed();
    std::thread::sleep(std::time::Duration::from_millis(20));
    run();
    assert_eq!(changed(), before);
    assert_eq!(before[1].2 & 0o7777, 0o750);
}
