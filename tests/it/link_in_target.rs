//! A directory on the receiving side that is a symbolic link (where a tree's
//! directory arrives, or on the way to it): xfer never follows it, and says so once
//! for the directory, with what to do, not once per entry beneath it; those
//! entries count as not delivered in the summary. Nothing is written through the
//! link, point to point and into a server. (Where files may be replaced, the link
//! itself is replaced by the directory, as `rsync -a` does: `type_change.rs`.)

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::util::server::{Site, client, code};
use crate::util::tree::snapshot;
use crate::util::{KEY, Receiver, send, stderr_of, stdout_events, summary_event};

/// `tree/` with a file, a directory and two files in it: five entries.
fn tree(root: &Path) -> std::path::PathBuf {
    let tree = root.join("src/tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    fs::write(tree.join("sub/b"), b"b\n").unwrap();
    fs::write(tree.join("sub/c"), b"c\n").unwrap();
    tree
}

/// A directory outside every target, with something in it, for links to lead to.
fn elsewhere(root: &Path) -> std::path::PathBuf {
    let outside = root.join("elsewhere");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"precious\n").unwrap();
    outside
}

/// The lines of `text` that refuse an entry.
fn refusals(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("is a symbolic link here"))
        .collect()
}

#[test]
fn a_link_where_a_directory_arrives_is_refused_once_point_to_point() {
    let root = tempfile::tempdir().unwrap();
    let tree = tree(root.path());
    let outside = elsewhere(root.path());
    let before = snapshot(&outside);
    // The whole tree's directory, then one beneath it.
    let dst = root.path().join("dst");
    fs::create_dir_all(&dst).unwrap();
    symlink(&outside, dst.join("tree")).unwrap();
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert_eq!(code(&sent), 6, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 6, "{}", receiver.stderr());
    let stderr = stderr_of(&sent);
    let said = refusals(&stderr);
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].starts_with("xfer: tree: refused by the receiver: tree: is a symbolic link here"),
        "{stderr}"
    );
    assert!(said[0].contains("remove the link"), "{stderr}");
    assert!(
        stderr.contains("xfer: tree: and 4 entries beneath it, refused as it was"),
        "{stderr}"
    );
    assert!(stderr.contains("5 of 5 entries not delivered"), "{stderr}");
    let log = receiver.stderr();
    assert_eq!(refusals(&log).len(), 1, "{log}");
    assert!(log.contains("5 of 5 entries not received"), "{log}");
    assert_eq!(
        snapshot(&outside),
        before,
        "nothing written through the link"
    );
    // --json: every entry still has its event, and the summary counts them all.
    let receiver = Receiver::start(&dst, Some(KEY), &[]);
    let json = send(&[&tree], receiver.port, KEY, &["--json"]);
    drop(receiver);
    let failed = stdout_events(&json)
        .iter()
        .filter(|e| e["event"] == "file" && e["status"] == "failed")
        .count();
    assert_eq!(failed, 5, "{}", String::from_utf8_lossy(&json.stdout));
    assert_eq!(summary_event(&json)["failed"], 5);

    fs::remove_file(dst.join("tree")).unwrap();
    fs::create_dir(dst.join("tree")).unwrap();
    symlink(&outside, dst.join("tree/sub")).unwrap();
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert_eq!(code(&sent), 6, "{}", stderr_of(&sent));
    receiver.exit_code();
    let stderr = stderr_of(&sent);
    let said = refusals(&stderr);
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].starts_with("xfer: tree/sub: refused by the receiver: tree/sub: is a symbolic"),
        "{stderr}"
    );
    assert!(stderr.contains("3 of 5 entries not delivered"), "{stderr}");
    assert_eq!(fs::read(dst.join("tree/a")).unwrap(), b"a\n");
    assert_eq!(
        snapshot(&outside),
        before,
        "nothing written through the link"
    );
}

#[test]
fn a_link_where_a_directory_arrives_is_refused_once_by_a_server() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    let tree = tree(site.path());
    let outside = elsewhere(site.path());
    let before = snapshot(&outside);
    fs::create_dir_all(home.join("up")).unwrap();
    symlink(&outside, home.join("up/tree")).unwrap();
    let server = site.serve(&[]);
    for dry_run in [false, true] {
        let mut args = vec!["send", tree.to_str().unwrap()];
        let at = server.at("up");
        args.push(&at);
        if dry_run {
            args.push("-n");
        }
        let sent = client(&site, "alice", &args);
        assert_eq!(code(&sent), 6, "{}", stderr_of(&sent));
        let stderr = stderr_of(&sent);
        assert_eq!(refusals(&stderr).len(), 1, "dry run {dry_run}: {stderr}");
        assert!(
            stderr.contains("xfer: tree: and 4 entries beneath it, refused as it was"),
            "{stderr}"
        );
    }
    let log = server.wait_for_log("would be refused", 1);
    assert_eq!(refusals(&log).len(), 2, "one per run: {log}");
    assert_eq!(
        snapshot(&outside),
        before,
        "nothing written through the link"
    );
}
