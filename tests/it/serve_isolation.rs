//! Homes of `xfer serve` that users cannot leave or share: another user's files, `..`,
//! symlinks in a home (leaves, never followed), a home swapped for a symlink, a
//! single-key server's private root, names like `c:x`, and two sessions writing
//! one path.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde_json::Value;

use crate::util::peer::SendEntry;
use crate::util::server::*;
use crate::util::{Receiver, files_under, pattern, run, stderr_of, xfer};

/// Alice with a secret and a directory in her home, bob with one file of his own.
fn alice_and_bob(site: &Site) {
    write(&site.home("alice").join("secret.txt"), b"alice's secret\n");
    write(&site.home("alice").join("docs/plan.txt"), b"alice's plan\n");
    write(&site.home("bob").join("own.txt"), b"bob's own file\n");
}

#[test]
fn two_users_cannot_see_or_touch_each_others_files() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    // Bob's home exists already, open to other local accounts.
    fs::create_dir_all(site.home("bob")).unwrap();
    fs::set_permissions(site.home("bob"), fs::Permissions::from_mode(0o755)).unwrap();
    let server = site.serve(&[]);
    let mode = |user| fs::metadata(site.home(user)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("alice"), 0o700, "a new home is private");
    assert_eq!(mode("bob"), 0o755, "an existing home is left as it is");
    assert!(
        server
            .log()
            .contains("the home of bob (bob) is open to other local accounts (mode 755)"),
        "{}",
        server.log()
    );
    // Alice puts her files through the server.
    let secret = site.local("secret.txt", b"alice's secret\n");
    let plan = site.local("docs/plan.txt", b"alice's plan\n");
    let docs = plan.parent().unwrap().to_path_buf();
    let put = send_as(&site, "alice", &[&secret, &docs], &server.addr());
    expect_exit(&put, 0, "alice's put");
    write(&site.home("bob").join("own.txt"), b"bob's own file\n");
    let alice_before = snapshot(&site.home("alice"));
    assert_eq!(alice_before.len(), 2);

    bob_cannot_list_his_way_out(&site, &server);
    bob_cannot_take_or_put_through_her_paths(&site, &server);

    // Bob's own home shows only his file, and hers is as she left it.
    let ls = client(&site, "bob", &["ls", &server.addr()]);
    expect_exit(&ls, 0, "bob's ls");
    assert_eq!(lines(&ls), ["own.txt"]);
    assert_eq!(snapshot(&site.home("alice")), alice_before);
    assert!(site.home("bob").join("own.txt").exists());
}

/// Alice's home, as an absolute path, and her secret's.
fn alice_paths(site: &Site) -> (String, String) {
    let alice_abs = site.home("alice").to_str().unwrap().to_string();
    let secret_abs = format!("{alice_abs}/secret.txt");
    (alice_abs, secret_abs)
}

/// Bob's `ls` of her paths, relative, absolute or through `..`, finds nothing.
fn bob_cannot_list_his_way_out(site: &Site, server: &Server) {
    let (alice_abs, secret_abs) = alice_paths(site);
    let alice_abs = alice_abs.as_str();
    // The client takes `..` as the shell does, never above the home, and a leading
    // `/` as the home (the server, strict, refuses both: tests/it/interop.rs):
    // these paths are looked for inside his home.
    for path in [
        "../alice",
        "../alice/secret.txt",
        "/alice",
        "./../alice",
        "own.txt/../../alice",
        alice_abs,
        &secret_abs,
        "/etc",
    ] {
        let ls = client(site, "bob", &["ls", &server.at(path)]);
        expect_refused(&ls, "not_found", &format!("bob's ls {path}"));
        assert!(!stdout_of(&ls).contains("secret"), "{path}: {ls:?}");
    }
    for path in ["..", "../..", "/.."] {
        let ls = client(site, "bob", &["ls", &server.at(path)]);
        expect_exit(&ls, 0, &format!("bob's ls {path}: his home"));
        assert_eq!(lines(&ls), ["own.txt"], "{path}");
    }
}

/// Nor can he get, remove or rename what is hers, nor put into her home: those
/// paths name places inside his own.
fn bob_cannot_take_or_put_through_her_paths(site: &Site, server: &Server) {
    let (alice_abs, secret_abs) = alice_paths(site);
    let alice_abs = alice_abs.as_str();
    let dl = site.download_dir("bob");
    for path in ["../alice/secret.txt", &secret_abs, "../alice"] {
        let get = client(
            site,
            "bob",
            &["get", &server.at(path), dl.to_str().unwrap()],
        );
        expect_refused(&get, "not_found", &format!("bob's get {path}"));
        let rm = client(site, "bob", &["rm", &server.at(path)]);
        expect_refused(&rm, "not_found", &format!("bob's rm {path}"));
        let mv = client(site, "bob", &["mv", &server.at(path), "mine.txt"]);
        expect_refused(&mv, "not_found", &format!("bob's mv {path}"));
    }
    assert!(names_in(&dl).is_empty(), "{:?}", names_in(&dl));
    let mv = client(
        site,
        "bob",
        &["mv", &server.at("own.txt"), "../alice/own.txt"],
    );
    expect_refused(&mv, "not_found", "bob's mv into ../alice/: his alice/");
    let mkdir = client(site, "bob", &["mkdir", &server.at("../alice/planted")]);
    expect_exit(&mkdir, 0, "bob's mkdir ../alice/planted: in his home");
    assert!(site.home("bob").join("alice/planted").is_dir());
    let mine = site.local("planted.txt", b"bob was here");
    let put = send_as(site, "bob", &[&mine], &server.at("../alice"));
    expect_exit(&put, 0, "bob's put into ../alice: his alice/");
    assert!(site.home("bob").join("alice/planted.txt").is_file());
    fs::remove_dir_all(site.home("bob").join("alice")).unwrap();
    // Her home's absolute path names a directory inside his own, made for the put.
    let put = send_as(site, "bob", &[&mine], &server.at(alice_abs));
    expect_exit(&put, 0, "bob's put into /…/alice, inside his home");
    let inside = site.home("bob").join(alice_abs.trim_start_matches('/'));
    assert_eq!(
        fs::read(inside.join("planted.txt")).unwrap(),
        b"bob was here"
    );
    fs::remove_dir_all(
        site.home("bob")
            .join(alice_abs.trim_start_matches('/').split('/').next().unwrap()),
    )
    .unwrap();
}

#[test]
fn a_symlink_in_a_home_is_a_leaf_that_is_never_followed() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&[]);
    alice_and_bob(&site);
    let bob = site.home("bob");
    let link = |target: &str, name: &str| {
        std::os::unix::fs::symlink(target, bob.join(name)).expect("symlink");
    };
    link("../alice", "to_alice");
    link(site.home("alice").to_str().unwrap(), "to_alice_abs");
    link("../alice/secret.txt", "secret_link");
    link("/etc", "etc");
    fs::create_dir(bob.join("stuff")).unwrap();
    fs::write(bob.join("stuff/mine.txt"), b"mine").unwrap();
    std::os::unix::fs::symlink("../../alice", bob.join("stuff/inside_link")).unwrap();
    let alice_before = snapshot(&site.home("alice"));

    links_are_listed_as_links(&site, &server);
    reads_never_follow_a_link(&site, &server);
    writes_never_follow_a_link(&site, &server);

    // Nothing of hers moved, and the links are still links.
    assert_eq!(snapshot(&site.home("alice")), alice_before);
    for name in ["to_alice", "to_alice_abs", "secret_link", "etc"] {
        let meta = fs::symlink_metadata(bob.join(name)).unwrap();
        assert!(meta.file_type().is_symlink(), "{name}");
    }
    assert!(!bob.join("stolen.txt").exists() && !bob.join("renamed").exists());

    // His own links move and go as links, never followed: hers untouched.
    let mv = client(
        &site,
        "bob",
        &["mv", &server.at("secret_link"), "moved_link"],
    );
    expect_exit(&mv, 0, "mv of a link");
    let moved = fs::symlink_metadata(bob.join("moved_link")).unwrap();
    assert!(moved.file_type().is_symlink());
    for name in ["moved_link", "to_alice"] {
        let rm = client(&site, "bob", &["rm", &server.at(name)]);
        expect_exit(&rm, 0, &format!("rm of the link {name}"));
        assert!(fs::symlink_metadata(bob.join(name)).is_err(), "{name}");
    }
    assert_eq!(snapshot(&site.home("alice")), alice_before);
}

/// `ls -l` shows bob's links as links (issue 20: `name -> target`), `ls --json`
/// one item for the link itself.
fn links_are_listed_as_links(site: &Site, server: &Server) {
    let ls = client(site, "bob", &["ls", "-l", &server.addr()]);
    expect_exit(&ls, 0, "ls -l");
    for line in lines(&ls) {
        let expected_kind = if line.ends_with(" own.txt") {
            '-'
        } else if line.ends_with(" stuff") {
            'd'
        } else {
            assert!(line.contains(" -> "), "{line}");
            'l'
        };
        assert!(line.starts_with(expected_kind), "{line}");
    }
    let json = client(site, "bob", &["ls", "--json", &server.at("to_alice")]);
    expect_exit(&json, 0, "ls --json of a symlink");
    let item: Value = serde_json::from_str(lines(&json)[0].as_str()).unwrap();
    assert_eq!(
        (
            item["name"].as_str(),
            item["kind"].as_str(),
            item["target"].as_str()
        ),
        (Some("to_alice"), Some("symlink"), Some("../alice"))
    );
    assert_eq!(item["size"], 0);
    assert_eq!(lines(&json).len(), 1, "one item for the link itself");
}

/// Neither `ls` nor `get` follows a link; a directory with a link inside comes
/// with the link as a link.
fn reads_never_follow_a_link(site: &Site, server: &Server) {
    for path in [
        "to_alice/secret.txt",
        "to_alice_abs/docs",
        "etc/passwd",
        "to_alice/docs/plan.txt",
    ] {
        let ls = client(site, "bob", &["ls", &server.at(path)]);
        expect_refused(&ls, "not_found", &format!("ls {path}"));
        assert!(!stdout_of(&ls).contains("plan"), "{path}");
    }
    let dl = site.download_dir("bob");
    for (path, why) in [
        ("to_alice", "denied"),
        ("to_alice_abs", "denied"),
        ("secret_link", "denied"),
        ("etc", "denied"),
        ("to_alice/secret.txt", "not_found"),
        ("etc/passwd", "not_found"),
    ] {
        let get = client(
            site,
            "bob",
            &["get", &server.at(path), dl.to_str().unwrap()],
        );
        expect_refused(&get, why, &format!("get {path}"));
    }
    assert!(names_in(&dl).is_empty(), "{:?}", names_in(&dl));
    // A directory with a link inside: the link comes as a link (issue 20), what it
    // points at stays where it is.
    let get = client(
        site,
        "bob",
        &["get", &server.at("stuff"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 0, "get stuff");
    assert_eq!(
        fs::read_link(dl.join("stuff/inside_link")).unwrap(),
        PathBuf::from("../../alice")
    );
    assert!(!dl.join("stuff/inside_link/secret.txt").exists());
    fs::remove_file(dl.join("stuff/inside_link")).unwrap();
    assert_eq!(files_under(&dl), [PathBuf::from("stuff/mine.txt")]);
}

/// Neither `put`, `mkdir`, `rm` nor `mv` goes through a link or replaces one.
fn writes_never_follow_a_link(site: &Site, server: &Server) {
    let planted = site.local("planted.txt", b"bob was here");
    for dir in ["to_alice", "to_alice_abs", "to_alice/docs", "etc"] {
        let put = send_as(site, "bob", &[&planted], &server.at(dir));
        // Refused as not found, or (when the client then tries to make the
        // directory) as a link it will not follow: either way, exit 6.
        expect_exit(&put, 6, &format!("put into {dir}"));
    }
    // A local directory named like the link, with a file inside, into the home.
    let local_dir = site.path().join("local/as_link/to_alice");
    write(&local_dir.join("planted.txt"), b"bob was here");
    let put = send_as(site, "bob", &[&local_dir], &server.addr());
    expect_exit(&put, 6, "a directory over a symlink");
    // A file named like a link to her file.
    let same_name = site.local("named/secret_link", b"overwritten?");
    let put = send_as(site, "bob", &[&same_name], &server.addr());
    expect_exit(&put, 6, "a file onto a symlink");
    for path in ["to_alice/new", "etc/new", "to_alice"] {
        let mkdir = client(site, "bob", &["mkdir", &server.at(path)]);
        expect_refused(&mkdir, "exists", &format!("mkdir {path}"));
    }
    for (path, why) in [
        ("to_alice/secret.txt", "not_found"),
        ("to_alice/docs", "not_found"),
    ] {
        let rm = client(site, "bob", &["rm", &server.at(path)]);
        expect_refused(&rm, why, &format!("rm {path}"));
    }
    for (from, to, why) in [
        ("to_alice/secret.txt", "stolen.txt", "not_found"),
        ("own.txt", "to_alice/own.txt", "not_found"),
        ("own.txt", "to_alice", "exists"),
    ] {
        let mv = client(site, "bob", &["mv", &server.at(from), to]);
        expect_refused(&mv, why, &format!("mv {from} {to}"));
    }
}

#[test]
fn a_home_swapped_for_a_symlink_never_exposes_another_home() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&[]);
    alice_and_bob(&site);
    let alice_before = snapshot(&site.home("alice"));
    // A connection bob opened before the swap.
    let mut held = server.login("bob");
    assert_eq!(item_names(&held.list("").expect("a listing")), ["own.txt"]);

    fs::rename(site.home("bob"), site.root().join("bob.old")).unwrap();
    std::os::unix::fs::symlink("alice", site.home("bob")).unwrap();

    // The open connection keeps the old directory, or fails; never hers.
    match held.list("") {
        Ok(items) => assert_eq!(item_names(&items), ["own.txt"]),
        Err(err) => assert!(!err.to_string().contains("secret"), "{err}"),
    }
    if let Ok(got) = held.get(&["secret.txt"]) {
        panic!(
            "bob fetched through the swapped home: {:?}",
            got.files.keys()
        );
    }
    // New logins: an error, never her files.
    let ls = client(&site, "bob", &["ls", &server.addr()]);
    assert_ne!(code(&ls), 0, "{ls:?}");
    assert!(!stdout_of(&ls).contains("secret"), "{ls:?}");
    let dl = site.download_dir("bob");
    let get = client(
        &site,
        "bob",
        &["get", &server.at("secret.txt"), dl.to_str().unwrap()],
    );
    assert_ne!(code(&get), 0, "{get:?}");
    assert!(names_in(&dl).is_empty());
    let planted = site.local("planted.txt", b"bob was here");
    let put = send_as(&site, "bob", &[&planted], &server.addr());
    assert_ne!(code(&put), 0, "{put:?}");
    for args in [
        vec!["mkdir", "planted_dir"],
        vec!["rm", "secret.txt"],
        vec!["mv", "secret.txt", "gone.txt"],
    ] {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args[1] = server.at(&args[1]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = client(&site, "bob", &refs);
        assert_ne!(code(&out), 0, "{args:?}: {out:?}");
    }
    assert_eq!(snapshot(&site.home("alice")), alice_before);
    // Alice herself is unaffected.
    let ls = client(&site, "alice", &["ls", &server.addr()]);
    expect_exit(&ls, 0, "alice's ls");
    assert_eq!(lines(&ls), ["docs", "secret.txt"]);
}

#[test]
fn a_single_key_server_makes_its_root_private() {
    let site = Site::new();
    let root = site.path().join("new/root");
    let mut command = xfer();
    clean_env(&mut command);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(&root)
        .arg("--key-file")
        .arg(site.key_file("alice"));
    let server = Server(Receiver::spawn(command));
    let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the root is the one home here");
    drop(server);
}

#[test]
fn two_sessions_cannot_write_one_path_at_once() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let big = site.local("same.bin", &pattern(4 << 20, 9));
    let mut command = as_user(
        &site,
        "alice",
        &[
            "send",
            big.to_str().unwrap(),
            &server.addr(),
            "--limit-rate",
            "2M",
        ],
    );
    let first = std::thread::spawn(move || run(&mut command));
    let home = site.home("alice");
    eventually("the first upload has begun", || {
        fs::read_dir(&home).unwrap().next().is_some()
    });
    let mut peer = server.login("alice");
    let report = peer
        .put("", &[SendEntry::file("same.bin", pattern(4 << 20, 9))])
        .unwrap_or_else(|err| panic!("a put: {err}: {}", server.log()));
    assert_eq!(
        report.code(0),
        Some("busy"),
        "{:?} {:?}",
        report.plan,
        report.answers
    );
    let first = first.join().unwrap();
    expect_exit(&first, 0, "the first upload");
    assert!(fs::read(home.join("same.bin")).unwrap() == pattern(4 << 20, 9));
}

#[test]
fn a_file_named_with_a_letter_and_a_colon_travels_only_inside_its_directory() {
    // PROTOCOL.md section 6: a path starting with a letter and a colon looks like a
    // Windows drive, and a receiver refuses it (on every system, so that a file
    // cannot arrive on one and be refused on another). Fetched alone, the file would
    // arrive under that name; inside its directory it arrives as `my dir/a: b.txt`.
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("my dir/a: b.txt"), b"a colon\n");
    let ls = client(&site, "alice", &["ls", &server.at("my dir/a: b.txt")]);
    expect_exit(&ls, 0, "ls");
    let dl = site.download_dir("drive");
    let get = client(
        &site,
        "alice",
        &["get", &server.at("my dir/a: b.txt"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 6, "get of the file alone");
    assert!(stderr_of(&get).contains("drive"), "{}", stderr_of(&get));
    let get = client(
        &site,
        "alice",
        &["get", &server.at("my dir"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 0, "get of its directory");
    assert_eq!(fs::read(dl.join("my dir/a: b.txt")).unwrap(), b"a colon\n");
}
