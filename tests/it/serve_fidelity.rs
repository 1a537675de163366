//! Issue 20 against `xfer serve`: a tree put into a home arrives as the server's
//! rules allow (links stored as links, even one whose target leaves the home;
//! setuid and setgid stripped, sticky kept; hard links kept; `user.*` attributes
//! kept; owners ignored; fifos and devices refused `denied`), `ls -l` shows links as
//! links, a `get` brings the tree back as it is stored (links and hard links; its
//! `user.*` attributes with `get -X` alone, never xfer's own, and said when an
//! older server sends none), a rerun sends nothing, and the quota counts exactly
//! what is on disk.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::fidelity::rich_tree;
use crate::util::peer::server::{MiniServer, ServerConfig};
use crate::util::server::{Server, Site, as_user, client, code, run_with_input, send_as};
use crate::util::site::check_home;
use crate::util::tree::{
    Check, assert_faithful, more_xattrs_than_an_entry_carries, set_xattr, xattrs_of,
};
use crate::util::{Tmpfs, stderr_of};

const QUOTA: u64 = 10 << 20;

/// What a server keeps: no setuid or setgid, no owners, directory times set last.
fn served() -> Check {
    Check::archive().xattrs().mode_mask(0o1777)
}

fn without_specials(root: &Path) -> PathBuf {
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
    // A get without -X carries no attributes: links, hard links, modes and times.
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

/// What `get -X` says when the offer carries no attributes (an older server).
const NONE_SENT: &str = "the server sent no extended attributes";

/// Names and values of extended attributes.
type Attributes = &'static [(&'static str, &'static [u8])];

/// The attributes a put with -X stores and a `get -X` brings back, by path below
/// the tree `t` (`""` is `t` itself); `plain` has none.
const ATTRIBUTES: [(&str, Attributes); 5] = [
    ("", &[("user.top", b"1")]),
    (
        "a",
        &[("user.colour", b"blue"), ("user.bytes", b"\x00\xff")],
    ),
    ("plain", &[]),
    ("sub", &[("user.purpose", b"scratch")]),
    ("sub/b", &[("user.note", b"")]),
];

/// `alice`'s tree `t` put with -X into a served home (`a` also named `a-again`), or
/// `None` where the filesystem takes no `user.*` attributes.
fn served_with_attributes() -> Option<(Site, Server, tempfile::TempDir)> {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let server = site.serve(&[]);
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    for name in ["a", "plain", "sub/b"] {
        std::fs::write(tree.join(name), name.as_bytes()).unwrap();
    }
    std::fs::hard_link(tree.join("a"), tree.join("a-again")).unwrap();
    for (path, attributes) in ATTRIBUTES {
        for (name, value) in attributes {
            if let Err(err) = set_xattr(&tree.join(path), name, value) {
                eprintln!("skipped: this filesystem takes no user.* attributes ({err})");
                return None;
            }
        }
    }
    let put = client(
        &site,
        "alice",
        &["send", "-X", tree.to_str().unwrap(), &server.at("")],
    );
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    Some((site, server, src))
}

/// `alice`'s `get ARGS t DIR` of the tree into a fresh download directory, which it
/// returns (after checking that it exited 0).
fn got(site: &Site, server: &Server, args: &[&str], dir: &str) -> (PathBuf, String) {
    let (copy, get) = got_from(site, &server.at("t"), args, dir);
    (copy, stderr_of(&get))
}

/// [`got`] from any server: `alice`'s `get ARGS AT DIR`, which must exit 0; where
/// `t` arrived, and what the client said.
fn got_from(site: &Site, at: &str, args: &[&str], dir: &str) -> (PathBuf, Output) {
    let dl = site.download_dir(dir);
    let mut command = vec!["get"];
    command.extend_from_slice(args);
    command.extend([at, dl.to_str().unwrap()]);
    let get = client(site, "alice", &command);
    assert_eq!(code(&get), 0, "{}", stderr_of(&get));
    (dl.join("t"), get)
}

/// The independent server, with `meta`, serving `alice` a home holding `t/a`
/// ("alpha\n"), its offers' entries carrying `xattrs` (asked or not) when given;
/// and where `t` is on it.
fn mini_serving_t(site: &Site, xattrs: Option<serde_json::Value>) -> (MiniServer, String) {
    let home = site.path().join("mini-home");
    crate::util::server::write(&home.join("t/a"), b"alpha\n");
    let mut config = ServerConfig::new("alice", Site::key_of("alice"), &home);
    config.features.push("meta".into());
    config.xattrs = xattrs;
    let mini = MiniServer::start(config);
    let at = format!("{}:t", mini.addr());
    (mini, at)
}

/// The attributes `ATTRIBUTES` gives `path`, as `xattrs_of` reads them.
fn expected(path: &str) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let (_, attributes) = ATTRIBUTES.iter().find(|(p, _)| *p == path).unwrap();
    attributes
        .iter()
        .map(|(name, value)| (name.as_bytes().to_vec(), value.to_vec()))
        .collect()
}

#[test]
fn get_x_brings_back_the_attributes_a_put_with_x_stored_and_get_alone_none() {
    let Some((site, server, _src)) = served_with_attributes() else {
        return;
    };
    let (copy, said) = got(&site, &server, &["-X"], "with");
    assert!(!said.contains(NONE_SENT), "{said}");
    for (path, _) in ATTRIBUTES {
        assert_eq!(xattrs_of(&copy.join(path)), expected(path), "{path:?}");
    }
    // The second name of `a` is the same file, with the same attributes.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(copy.join("a-again")).unwrap().nlink(), 2);
    assert_eq!(xattrs_of(&copy.join("a-again")), expected("a"));
    // Got again over what it holds (-f): a kept file and a directory lose one the
    // server's copy lacks, as after any transfer with -X (`a`, with two names, is
    // left as it is: refresh.rs).
    for path in ["", "sub", "plain", "sub/b"] {
        set_xattr(&copy.join(path), "user.stray", b"local").unwrap();
    }
    let (copy, said) = got(&site, &server, &["-X", "-f"], "with");
    assert!(!said.contains(NONE_SENT), "{said}");
    for (path, _) in ATTRIBUTES {
        assert_eq!(xattrs_of(&copy.join(path)), expected(path), "{path:?}");
    }

    let (copy, _) = got(&site, &server, &[], "without");
    for path in ["", "a", "a-again", "plain", "sub", "sub/b"] {
        assert!(xattrs_of(&copy.join(path)).is_empty(), "{path:?}");
    }
}

#[test]
fn get_x_never_brings_xfer_s_own_attributes() {
    let Some((site, server, _src)) = served_with_attributes() else {
        return;
    };
    let stored = site.home("alice").join("t/a");
    set_xattr(&stored, "user.xfer.partial", b"1").unwrap();
    set_xattr(&site.home("alice").join("t/sub"), "user.xfer.mark", b"2").unwrap();
    let (copy, said) = got(&site, &server, &["-X"], "dl");
    // Never offered: the client, which would not set them either, had none to drop.
    assert!(!said.contains("extended attributes not set"), "{said}");
    assert_eq!(xattrs_of(&copy.join("a")), expected("a"));
    assert_eq!(xattrs_of(&copy.join("sub")), expected("sub"));
    assert!(xattrs_of(&stored).contains_key(&b"user.xfer.partial"[..]));
}

#[test]
fn the_shell_s_get_x_brings_back_the_attributes() {
    let Some((site, server, _src)) = served_with_attributes() else {
        return;
    };
    let dl = site.download_dir("shell");
    let script = format!(
        "get -X t/sub/b {}\nget t/a {}\n",
        dl.display(),
        dl.display()
    );
    let mut shell = as_user(&site, "alice", &["shell", &server.addr()]);
    let ran = run_with_input(&mut shell, script.into_bytes());
    assert_eq!(code(&ran), 0, "{}", stderr_of(&ran));
    assert_eq!(xattrs_of(&dl.join("b")), expected("sub/b"));
    assert_eq!(std::fs::read(dl.join("a")).unwrap(), b"a");
    assert!(
        xattrs_of(&dl.join("a")).is_empty(),
        "a get without -X sets none"
    );
}

/// A server that does not know the member (the independent one, with `meta`, as
/// an older xfer has it) ignores it: the tree arrives without attributes, and the
/// client says so once (not with -q; a `no_xattrs` event with --json), exit 0.
#[test]
fn get_x_from_a_server_that_ignores_the_ask_says_none_came() {
    let site = Site::new();
    let (_mini, at) = mini_serving_t(&site, None);
    let get = |args: &[&str], dir: &str| {
        let (copy, get) = got_from(&site, &at, args, dir);
        assert_eq!(std::fs::read(copy.join("a")).unwrap(), b"alpha\n");
        get
    };
    let said = stderr_of(&get(&["-X"], "x"));
    assert_eq!(said.matches(NONE_SENT).count(), 1, "{said}");
    assert!(!stderr_of(&get(&[], "plain")).contains(NONE_SENT));
    assert!(!stderr_of(&get(&["-X", "-q"], "quiet")).contains(NONE_SENT));
    let json = get(&["-X", "--json"], "json");
    let events = crate::util::stdout_events(&json);
    let none: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "no_xattrs")
        .collect();
    assert_eq!(none.len(), 1, "{events:?}");
    assert!(none[0]["message"].as_str().unwrap().contains(NONE_SENT));
}

/// A server keeps no attributes but `user.*`, so a `get -X -f` over local copies it
/// keeps (a directory, a file found the same) makes their `user.*` ones the
/// server's and leaves the others alone: a root client's `trusted.*` stay (they
/// used to go, the server's copy not naming them).
#[test]
fn a_get_x_over_local_copies_changes_only_their_user_attributes() {
    let Some((site, server, _src)) = served_with_attributes() else {
        return;
    };
    let (copy, _) = got(&site, &server, &["-X"], "over");
    let (file, dir) = (copy.join("plain"), copy.join("sub"));
    for path in [&file, &dir] {
        if set_xattr(path, "trusted.keep", b"1").is_err() {
            eprintln!("skipped: needs root to set trusted.* attributes");
            return;
        }
        set_xattr(path, "user.stale", b"old").unwrap();
    }
    // Both are found the same (size and time) and refreshed in place: a file the
    // get replaces is a new file, with only what was offered, as with rsync -X.
    let (again, _) = got(&site, &server, &["-X", "-f"], "over");
    assert_eq!(again, copy);
    for (path, entry) in [(&file, "plain"), (&dir, "sub")] {
        let now = xattrs_of(path);
        assert_eq!(
            now.get(&b"trusted.keep"[..]),
            Some(&b"1".to_vec()),
            "{entry}"
        );
        assert!(!now.contains_key(&b"user.stale"[..]), "{entry}: {now:?}");
        let user: std::collections::BTreeMap<_, _> = now
            .into_iter()
            .filter(|(name, _)| name.starts_with(b"user."))
            .collect();
        assert_eq!(user, expected(entry), "{entry}");
    }
}

/// A server that offers attributes unasked (the independent one, with `meta`,
/// made to): a `get` without `-X` sets none of them on the client's files; with
/// `-X` they arrive. A root client would otherwise let any server set or remove
/// attributes of every namespace, `security.capability` too, on a plain get.
#[test]
fn a_get_without_x_sets_no_attribute_a_server_offers_unasked() {
    let site = Site::new();
    let unasked = serde_json::json!({"user.planted": "7a"});
    let (_mini, at) = mini_serving_t(&site, Some(unasked));
    let get = |args: &[&str], dir: &str| got_from(&site, &at, args, dir).0;
    let asked = get(&["-X"], "asked");
    let planted = |path: &Path| xattrs_of(path).get(&b"user.planted"[..]).cloned();
    if planted(&asked.join("a")).is_none() {
        eprintln!("skipped: this filesystem takes no user.* attributes");
        return;
    }
    assert_eq!(planted(&asked), Some(b"z".to_vec()), "the directory too");
    let plain = get(&[], "plain");
    assert_eq!(std::fs::read(plain.join("a")).unwrap(), b"alpha\n");
    assert_eq!(planted(&plain.join("a")), None, "set without -X");
    assert_eq!(planted(&plain), None, "set on the directory without -X");
}

/// Attributes set in a home by other means than a put (which keeps 4 096 bytes an
/// entry) can be more than an entry carries (1 MiB, section 16.1): a `get -X` gets
/// the first by name that fit, and the server's log says how many entries lost some.
#[test]
fn attributes_in_a_home_beyond_what_an_entry_carries_are_left_out_and_logged() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let Some(_home) = Tmpfs::mount(&site.home("alice"), 16 << 20) else {
        return;
    };
    let stored = site.home("alice").join("t/f");
    crate::util::server::write(&stored, b"data");
    let Some(expected) = more_xattrs_than_an_entry_carries(&stored) else {
        return;
    };
    let server = site.serve(&[]);
    // The client's directory must take 1 MiB of them too.
    let Some(_dl) = Tmpfs::mount(&site.download_dir("dl"), 16 << 20) else {
        return;
    };
    let (copy, _) = got(&site, &server, &["-X"], "dl");
    assert!(
        xattrs_of(&copy.join("f")) == expected,
        "the first 16 by name, whole"
    );
    let log = server.log();
    assert!(
        log.contains("entries whose extended attributes were not all sent: 1"),
        "{log}"
    );
}

/// A `get -X` holds every attribute it offers before the offer goes, and what a
/// home holds is bounded only by its quota (a put keeps 4 KiB of attributes on each
/// of as many entries as the quota lets it make): past 64 MiB to hold, the get is
/// refused `too_large` before anything is sent. 9 000 files with 3.9 KiB of
/// attributes each are 70 MB of hex.
#[test]
fn a_get_x_whose_attributes_pass_64_mib_is_refused_before_the_offer() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let many = site.home("alice").join("many");
    let value = vec![b'v'; 3_900];
    for i in 0..9_000 {
        let file = many.join(format!("f{i:04}"));
        crate::util::server::write(&file, b"x");
        if let Err(err) = set_xattr(&file, "user.v", &value) {
            eprintln!("skipped: this filesystem takes no 4 KiB attribute ({err})");
            return;
        }
    }
    let server = site.serve(&[]);
    let dl = site.download_dir("dl");
    let get = |path: &str| {
        let (at, to) = (server.at(path), dl.to_str().unwrap().to_string());
        client(&site, "alice", &["get", "-X", &at, &to])
    };
    let refused = get("many");
    let said = stderr_of(&refused);
    assert_eq!(code(&refused), 6, "{said}");
    assert!(said.contains("64 MiB"), "{said}");
    assert_eq!(
        std::fs::read_dir(&dl).unwrap().count(),
        0,
        "nothing arrived"
    );
    assert!(server.log().contains("64 MiB"), "{}", server.log());
    // One of the files is well within it, attributes and all.
    let one = get("many/f8999");
    assert_eq!(code(&one), 0, "{}", stderr_of(&one));
    assert_eq!(
        xattrs_of(&dl.join("f8999")).get(&b"user.v"[..]),
        Some(&value)
    );
}

/// A `get` naming a path inside another it names would offer the inner one twice
/// (each is walked whole), and a chain of them (`d00`, `d00/d01`, ...) made the
/// server build an offer growing with the square of the chain from a home holding
/// little: refused `bad_path`, naming both, before anything is offered.
#[test]
fn a_get_naming_a_path_inside_another_it_names_is_refused() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    crate::util::server::write(&home.join("photos/2024/a.jpg"), b"a");
    crate::util::server::write(&home.join("photos/b.jpg"), b"b");
    crate::util::server::write(&home.join("notes.txt"), b"n");
    let server = site.serve(&[]);
    let dl = site.download_dir("dl");
    let get = |paths: &[&str]| {
        let mut command = vec!["get".to_string()];
        command.extend(paths.iter().map(|path| server.at(path)));
        command.push(dl.to_str().unwrap().to_string());
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        client(&site, "alice", &command)
    };
    for paths in [
        &["photos", "notes.txt", "photos/2024"][..],
        &["photos/2024/a.jpg", "photos"],
    ] {
        let refused = get(paths);
        let said = stderr_of(&refused);
        assert_eq!(code(&refused), 6, "{paths:?}: {said}");
        assert!(
            said.contains("bad_path") && said.contains("lies inside photos"),
            "{said}"
        );
        assert_eq!(
            std::fs::read_dir(&dl).unwrap().count(),
            0,
            "nothing arrived"
        );
    }
    // Side by side is fine, and so is a name that only begins like another.
    crate::util::server::write(&home.join("photos2/c.jpg"), b"c");
    let fine = get(&["photos/2024", "photos/b.jpg", "photos2"]);
    assert_eq!(code(&fine), 0, "{}", stderr_of(&fine));
    assert_eq!(std::fs::read(dl.join("2024/a.jpg")).unwrap(), b"a");
    assert_eq!(std::fs::read(dl.join("photos2/c.jpg")).unwrap(), b"c");
}
