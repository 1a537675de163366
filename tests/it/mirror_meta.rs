//! Mirroring trees as they are (issues 20 and 21 together): filters in a walk that
//! yields hard links, `--delete` beside links that arrive as links, and dry runs
//! and `--itemize` for links, hard links and special files.
//!
//! Decided: a hard link whose file a filter leaves out is offered as the file
//! itself (the filter judges names, and this name was kept); later kept names of
//! the same file link to it. Nothing left out by a filter is "not sent".

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::Path;
use std::process::Output;

use crate::mirror::{mirror as sent, names};
use crate::util::server::{Site, client, code};
use crate::util::stderr_of;
use crate::util::tree::snapshot;

fn inode(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

fn lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

pub(super) fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
}

#[test]
fn a_hard_link_whose_file_is_filtered_out_arrives_as_the_file() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a.tmp"), b"one file, three names\n").unwrap();
    fs::hard_link(tree.join("a.tmp"), tree.join("b.dat")).unwrap();
    fs::hard_link(tree.join("a.tmp"), tree.join("c.dat")).unwrap();
    fs::write(tree.join("d.dat"), b"alone\n").unwrap();

    // The first name is left out: the next kept one is the file, the last links it.
    let (out, recv_code, recv_err) = sent(root.path(), &[], &["--exclude", "*.tmp", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr_of(&out));
    assert_eq!(recv_code, 0, "{recv_err}");
    let dst = root.path().join("dst/tree");
    assert_eq!(
        names(&root.path().join("dst")),
        ["tree/b.dat", "tree/c.dat", "tree/d.dat"]
    );
    assert_eq!(
        fs::read(dst.join("b.dat")).unwrap(),
        b"one file, three names\n"
    );
    assert_eq!(inode(&dst.join("b.dat")), inode(&dst.join("c.dat")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("\"skip\""),
        "left out is not unsent: {stdout}"
    );
    assert!(!stderr_of(&out).contains("not sent"), "{}", stderr_of(&out));
    fs::remove_dir_all(root.path().join("dst")).unwrap();

    // A later name left out: the rest of the group is kept as it was.
    let (out, recv_code, recv_err) = sent(root.path(), &[], &["--exclude", "b.dat"]);
    assert_eq!(code(&out), 0, "{}", stderr_of(&out));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(
        names(&root.path().join("dst")),
        ["tree/a.tmp", "tree/c.dat", "tree/d.dat"]
    );
    assert_eq!(inode(&dst.join("a.tmp")), inode(&dst.join("c.dat")));
}

#[test]
fn a_get_of_a_hard_link_whose_file_is_filtered_out_gets_the_file() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/sub")).unwrap();
    fs::write(home.join("tree/a.tmp"), b"shared bytes\n").unwrap();
    fs::hard_link(home.join("tree/a.tmp"), home.join("tree/sub/b")).unwrap();
    fs::hard_link(home.join("tree/a.tmp"), home.join("tree/sub/c")).unwrap();
    fs::write(home.join("tree/z"), b"z\n").unwrap();
    let server = site.serve(&[]);
    let local = site.path().join("dl");
    fs::create_dir_all(&local).unwrap();
    let at = server.at("tree");
    let get = client(
        &site,
        "alice",
        &["get", "--exclude", "*.tmp", &at, local.to_str().unwrap()],
    );
    assert_eq!(code(&get), 0, "{}", stderr_of(&get));
    assert_eq!(names(&local), ["tree/sub/b", "tree/sub/c", "tree/z"]);
    assert_eq!(
        fs::read(local.join("tree/sub/b")).unwrap(),
        b"shared bytes\n"
    );
    assert_eq!(
        inode(&local.join("tree/sub/b")),
        inode(&local.join("tree/sub/c"))
    );
}

#[test]
fn delete_spares_links_that_arrive_and_removes_links_never_what_they_name() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join("inner")).unwrap();
    fs::write(outside.path().join("inner/precious"), b"keep me\n").unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    // An absolute link out of the tree, and one within it: data, sent as links.
    symlink(outside.path(), tree.join("out")).unwrap();
    symlink("a", tree.join("rel")).unwrap();
    let dst = root.path().join("dst/tree");
    fs::create_dir_all(&dst).unwrap();
    fs::write(dst.join("stale"), b"stale\n").unwrap();
    symlink(outside.path().join("inner"), dst.join("planted")).unwrap();

    let (out, recv_code, recv_err) = sent(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(code(&out), 0, "{}", stderr_of(&out));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(fs::read_link(dst.join("out")).unwrap(), outside.path());
    assert_eq!(fs::read_link(dst.join("rel")).unwrap(), Path::new("a"));
    assert!(fs::symlink_metadata(dst.join("planted")).is_err());
    assert!(!dst.join("stale").exists());
    assert_eq!(
        fs::read(outside.path().join("inner/precious")).unwrap(),
        b"keep me\n"
    );
    let said = lines(&out);
    for line in [
        "new      tree/a",
        "new link tree/out",
        "new link tree/rel",
        "deleted  tree/stale",
        "deleted  tree/planted",
    ] {
        assert!(said.iter().any(|l| l == line), "{line:?} in {said:?}");
    }

    // The link leaves the source: the receiver's link goes, what it named stays.
    fs::remove_file(tree.join("out")).unwrap();
    let (out, recv_code, recv_err) = sent(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(code(&out), 0, "{}", stderr_of(&out));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert!(fs::symlink_metadata(dst.join("out")).is_err());
    assert_eq!(
        fs::read(outside.path().join("inner/precious")).unwrap(),
        b"keep me\n"
    );
    // Its directory's time changed with it, and is made the source's.
    assert_eq!(lines(&out), ["attrs    tree/", "deleted  tree/out"]);
    assert_eq!(fs::read_link(dst.join("rel")).unwrap(), Path::new("a"));
}

#[test]
fn a_dry_run_makes_no_link_hard_link_or_special_and_lists_them() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"f\n").unwrap();
    fs::hard_link(tree.join("f"), tree.join("g")).unwrap();
    symlink("f", tree.join("l")).unwrap();
    mkfifo(&tree.join("p"));
    let dst = root.path().join("dst");
    fs::create_dir_all(dst.join("tree")).unwrap();
    fs::write(dst.join("tree/stale"), b"stale\n").unwrap();
    let before = (snapshot(&root.path().join("src")), snapshot(&dst));
    let expected = [
        "new      tree/f",
        "new hard link tree/g",
        "new link tree/l",
        "new special tree/p",
    ];

    let (out, recv_code, recv_err) = sent(
        root.path(),
        &["--overwrite"],
        &["-n", "--delete", "--specials"],
    );
    assert_eq!(code(&out), 0, "{}", stderr_of(&out));
    assert_eq!(recv_code, 0, "{recv_err}");
    let after = (snapshot(&root.path().join("src")), snapshot(&dst));
    assert_eq!(before, after, "a dry run makes nothing on either side");
    let said = lines(&out);
    for line in expected.iter().chain(&["deleted  tree/stale"]) {
        assert!(said.iter().any(|l| l == line), "{line:?} in {said:?}");
    }

    // The real run makes them, and says the same.
    let (out, recv_code, recv_err) = sent(
        root.path(),
        &["--overwrite"],
        &["-i", "--delete", "--specials"],
    );
    assert_eq!(code(&out), 0, "{}", stderr_of(&out));
    assert_eq!(recv_code, 0, "{recv_err}");
    let said = lines(&out);
    for line in expected.iter().chain(&["deleted  tree/stale"]) {
        assert!(said.iter().any(|l| l == line), "{line:?} in {said:?}");
    }
    let copy = dst.join("tree");
    assert_eq!(inode(&copy.join("f")), inode(&copy.join("g")));
    assert_eq!(fs::read_link(copy.join("l")).unwrap(), Path::new("f"));
    assert!(
        fs::symlink_metadata(copy.join("p"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    // Then a dry run finds everything there: nothing new, nothing to delete.
    let (out, _, _) = sent(
        root.path(),
        &["--overwrite"],
        &["-n", "--delete", "--specials"],
    );
    assert_eq!(code(&out), 0, "{}", stderr_of(&out));
    let said = lines(&out);
    assert!(
        !said
            .iter()
            .any(|l| l.starts_with("new") || l.starts_with("deleted")),
        "{said:?}"
    );
}

/// Decided: a dry run shows an entry the sender cannot send as skipped, with its
/// reason, on both sides, and still exits 0 (a real run exits 10 for it).
#[test]
fn a_dry_run_shows_what_cannot_be_sent_as_skipped_and_exits_0() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(tree.join("sock")).unwrap();
    fs::create_dir_all(root.path().join("dst")).unwrap();
    let before = snapshot(&root.path().join("dst"));

    let (out, recv_code, recv_err) = sent(root.path(), &[], &["-n", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr_of(&out));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(snapshot(&root.path().join("dst")), before);
    let events = crate::util::stdout_events(&out);
    let skipped = events
        .iter()
        .find(|e| e["event"] == "change" && e["path"] == "tree/sock")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(skipped["change"], "skipped", "{skipped}");
    assert!(
        skipped["message"].as_str().unwrap().starts_with("socket"),
        "{skipped}"
    );
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["dry_run"]["skipped"], 1, "{summary}");
    assert_eq!(summary["dry_run"]["new"], 1, "{summary}");

    // The real run sends the rest and says the socket was not sent: exit 10.
    let (out, recv_code, recv_err) = sent(root.path(), &[], &[]);
    assert_eq!(code(&out), 10, "{}", stderr_of(&out));
    assert_eq!(recv_code, 10, "{recv_err}");
    assert_eq!(names(&root.path().join("dst")), ["tree/a"]);
}

/// A link that replaces a link, and a file that replaces one, are `replaced` (the
/// plan's `replaces`), in a dry run and in a real run: a link counts nothing in a
/// quota, but it is replaced all the same.
#[test]
fn what_replaces_a_link_is_said_replaced_not_new() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"f\n").unwrap();
    fs::write(tree.join("was_link"), b"now a file\n").unwrap();
    symlink("f", tree.join("l")).unwrap();
    let dst = root.path().join("dst/tree");
    fs::create_dir_all(&dst).unwrap();
    fs::write(dst.join("f"), b"f\n").unwrap();
    symlink("elsewhere", dst.join("l")).unwrap();
    symlink("f", dst.join("was_link")).unwrap();
    for args in [&["-n", "-i"][..], &["-i"][..]] {
        let (out, recv_code, recv_err) = sent(root.path(), &["--overwrite", "-i"], args);
        assert_eq!(code(&out), 0, "{}", stderr_of(&out));
        assert_eq!(recv_code, 0, "{recv_err}");
        let said = lines(&out);
        let replaced = ["replaced link tree/l", "tree/was_link"];
        assert!(said.iter().any(|l| l == replaced[0]), "{args:?}: {said:?}");
        let file = said.iter().find(|l| l.ends_with(replaced[1])).unwrap();
        assert!(
            file.starts_with("changed") || file.starts_with("replaced"),
            "{said:?}"
        );
    }
    assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("f"));
    assert_eq!(fs::read(dst.join("was_link")).unwrap(), b"now a file\n");
    assert!(
        !fs::symlink_metadata(dst.join("was_link"))
            .unwrap()
            .is_symlink()
    );
}
