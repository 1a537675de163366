//! Issue 20 against `xfer serve`: a tree put into a home arrives as the server's
//! rules allow (links stored as links, even one whose target leaves the home;
//! setuid and setgid stripped, sticky kept; hard links kept; `user.*` attributes
//! kept; owners ignored; fifos and devices refused `denied`), `ls -l` shows links as
//! links, a `get` brings the tree back as it is stored (links and hard links; no
//! attributes), a rerun sends nothing, and the quota counts exactly what is on disk.

use std::path::Path;

use crate::fidelity::rich_tree;
use crate::util::server::{Site, client, code, send_as};
use crate::util::site::check_home;
use crate::util::stderr_of;
use crate::util::tree::{Check, assert_faithful, xattrs_of};

const QUOTA: u64 = 10 << 20;

/// What a server keeps: no setuid or setgid, no owners, directory times set last.
fn served() -> Check {
    Check::archive().xattrs().mode_mask(0o1777)
}

fn without_specials(root: &Path) -> std::path::PathBuf {
    let tree = rich_tree(root);
    for special in ["fifo", "null"] {
        let _ = std::fs::remove_file(tree.join(special));
    }
    tree
}

#[test]
fn a_tree_put_into_a_home_keeps_what_the_server_allows_and_comes_back_by_get() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let server = site.serve(&[]);
    let src = tempfile::tempdir().unwrap();
    let tree = without_specials(src.path());
    let tree_arg = tree.to_str().unwrap();
    let put = client(&site, "alice", &["send", "-a", tree_arg, &server.at("")]);
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    // What the server did not keep, its client hears (the server's log is not the
    // user's): the two set-id entries, and as root the owners sent that are not the
    // server's own (the two entries the tree gives to other users; root's entries
    // are the server's user's anyway, as the server, running as root, makes them).
    let heard = stderr_of(&put);
    let set_id = "note: the receiver did not keep setuid/setgid on 2 entries";
    assert_eq!(heard.matches(set_id).count(), 1, "{heard}");
    if rustix::process::geteuid().is_root() {
        let owners = "note: the receiver did not keep owners on 2 entries";
        assert_eq!(heard.matches(owners).count(), 1, "{heard}");
    }
    let stored = site.home("alice").join("tree");
    assert_faithful(&tree, &stored, &served());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(stored.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/tool"), 0o755, "setuid stripped");
    assert_eq!(mode("team"), 0o775, "setgid stripped");
    assert_eq!(mode("shared"), 0o1777, "sticky kept");
    assert_eq!(
        std::fs::read_link(stored.join("links/absolute")).unwrap(),
        Path::new("/etc/hostname"),
        "a link out of the home is stored as a link"
    );
    check_home(&site, &server, "alice", QUOTA);

    let again = client(
        &site,
        "alice",
        &["send", "-a", tree_arg, &server.at(""), "--json"],
    );
    assert_eq!(code(&again), 0, "{}", stderr_of(&again));
    let summary = crate::util::summary_event(&again);
    assert_eq!(summary["bytes"], 0, "{summary}");
    // The files are the same and left alone; the directories get their metadata
    // again, the setgid one without its bit.
    let events = crate::util::stdout_events(&again);
    let not_kept: Vec<_> = events.iter().filter(|e| e["event"] == "not_kept").collect();
    assert_eq!(not_kept.len(), 1, "{events:?}");
    assert_eq!(not_kept[0]["set_id"], 1, "{events:?}");
    check_home(&site, &server, "alice", QUOTA);

    let ls = client(&site, "alice", &["ls", "-l", &server.at("tree/links")]);
    assert_eq!(code(&ls), 0, "{}", stderr_of(&ls));
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(listing.contains("relative -> ../bin/tool"), "{listing}");
    assert!(
        listing.lines().all(|line| line.starts_with('l')),
        "{listing}"
    );

    let dl = site.download_dir("dl");
    let get = client(
        &site,
        "alice",
        &["get", &server.at("tree"), dl.to_str().unwrap()],
    );
    assert_eq!(code(&get), 0, "{}", stderr_of(&get));
    // A get carries no attributes (it has no -X): links, hard links, modes and times.
    assert_faithful(&stored, &dl.join("tree"), &Check::archive());
    let again = client(
        &site,
        "alice",
        &["get", &server.at("tree"), dl.to_str().unwrap()],
    );
    assert_eq!(code(&again), 0, "{}", stderr_of(&again));
}

#[test]
fn a_server_refuses_special_files_and_plants_no_xfer_attribute() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let server = site.serve(&[]);
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    let c_path = std::ffi::CString::new(tree.join("pipe").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    std::fs::write(tree.join("f"), b"data").unwrap();
    crate::util::tree::set_xattr(&tree.join("f"), "user.xfer.partial", b"1").unwrap();
    let put = client(
        &site,
        "alice",
        &[
            "send",
            "--specials",
            "-X",
            tree.to_str().unwrap(),
            &server.at(""),
        ],
    );
    assert_eq!(code(&put), 6, "{}", stderr_of(&put));
    assert!(
        stderr_of(&put).contains("a server keeps no special files"),
        "{}",
        stderr_of(&put)
    );
    let home = site.home("alice");
    assert!(std::fs::symlink_metadata(home.join("t/pipe")).is_err());
    assert_eq!(std::fs::read(home.join("t/f")).unwrap(), b"data");
    assert!(
        xattrs_of(&home.join("t/f")).is_empty(),
        "xfer's own mark is never sent"
    );
    check_home(&site, &server, "alice", QUOTA);
}

#[test]
fn hard_links_count_each_name_against_the_quota() {
    let site = Site::new();
    // Room for the directory (4096 bytes) and the file twice over, not three times.
    site.users(&[("alice", "quota = 6596")]);
    let server = site.serve(&[]);
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("a"), vec![7u8; 1000]).unwrap();
    std::fs::hard_link(tree.join("a"), tree.join("b")).unwrap();
    std::fs::hard_link(tree.join("a"), tree.join("c")).unwrap();
    let put = send_as(&site, "alice", &[&tree], &server.at(""));
    assert_eq!(code(&put), 6, "{}", stderr_of(&put));
    assert!(stderr_of(&put).contains("quota"), "{}", stderr_of(&put));
    check_home(&site, &server, "alice", 6596);
    let home = site.home("alice");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(home.join("t/a")).unwrap().nlink(), 2);
}
