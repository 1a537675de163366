//! A change of type on the receiving side, mirrored as `rsync -a` mirrors it: where
//! the receiver replaces files, a directory takes the place of a file, a link or a
//! special file, and a file, link, special file or hard link takes the place of a
//! directory that is empty, or with `--delete` of one whose entries `--delete`
//! would remove (a filter's exclusion keeps them, and the directory; on a server,
//! another upload's claim beneath it makes it `busy`); a link planted inside leads
//! nowhere; without the permission nothing changes; a dry run changes nothing and
//! predicts what the real run does.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::mirror::{mirror, names, settle};
use crate::util::server::{Site, client, code};
use crate::util::site::check_home;
use crate::util::stderr_of;

/// The source `src/tree`: `x` a file, `d/f` a file in a directory.
fn source(root: &Path) {
    fs::create_dir_all(root.join("src/tree/d")).unwrap();
    fs::write(root.join("src/tree/x"), b"x is a file now\n").unwrap();
    fs::write(root.join("src/tree/d/f"), b"f\n").unwrap();
}

/// The receiver's `dst/tree`, of the other types: `x` a directory holding
/// `inside` (when `holding`), `d` a file.
fn other_types(root: &Path, holding: &[&str]) {
    fs::create_dir_all(root.join("dst/tree/x")).unwrap();
    for name in holding {
        fs::write(root.join("dst/tree/x").join(name), b"old\n").unwrap();
    }
    fs::write(root.join("dst/tree/d"), b"d was a file\n").unwrap();
}

/// Every path beneath `dir` with its kind and content, to compare trees.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let shown = path.strip_prefix(dir).unwrap().display().to_string();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else {
                String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned()
            };
            all.push((shown, what));
        }
    }
    all.sort();
    all
}

fn lines(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn with_overwrite_a_file_replaces_an_empty_directory_and_a_directory_a_file() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &[]);
    let (sent, recv_code, recv_err) = mirror(root.path(), &["--overwrite", "-i"], &["-i"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    let dst = root.path().join("dst/tree");
    assert_eq!(fs::read(dst.join("x")).unwrap(), b"x is a file now\n");
    assert_eq!(fs::read(dst.join("d/f")).unwrap(), b"f\n");
    let stdout = lines(&sent);
    assert!(stdout.contains("replaced tree/x\n"), "{stdout}");
    // The sender reads the plan, where the directory is new.
    assert!(stdout.contains("new dir  tree/d/\n"), "{stdout}");
    assert!(
        recv_err.is_empty() || !recv_err.contains("error"),
        "{recv_err}"
    );
}

#[test]
fn without_overwrite_both_are_refused_and_nothing_changes() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &[]);
    let before = snapshot(&root.path().join("dst"));
    let (sent, _, recv_err) = mirror(root.path(), &[], &[]);
    assert_ne!(code(&sent), 0);
    assert_eq!(snapshot(&root.path().join("dst")), before);
    let err = stderr_of(&sent);
    assert!(
        err.contains("tree/x: a directory of that name exists (") && err.contains("--overwrite"),
        "{err}"
    );
    assert!(
        err.contains("tree/d: exists and is not a directory"),
        "{err}"
    );
    assert!(!recv_err.contains("panicked"), "{recv_err}");
}

#[test]
fn a_directory_holding_entries_needs_delete_and_then_goes_with_them() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &["inside", "more"]);
    fs::create_dir_all(root.path().join("dst/tree/x/deeper")).unwrap();
    fs::write(root.path().join("dst/tree/x/deeper/o"), b"o\n").unwrap();
    let before = snapshot(&root.path().join("dst/tree/x"));
    let (sent, _, _) = mirror(root.path(), &["--overwrite"], &[]);
    assert_ne!(code(&sent), 0);
    let err = stderr_of(&sent);
    assert!(
        err.contains("tree/x: a directory of that name holds entries"),
        "{err}"
    );
    assert!(err.contains("--delete replaces it"), "{err}");
    assert_eq!(snapshot(&root.path().join("dst/tree/x")), before);

    let (sent, recv_code, recv_err) =
        mirror(root.path(), &["--overwrite"], &["--delete", "-i", "--json"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(
        names(&root.path().join("dst")),
        ["tree/d/f", "tree/x"],
        "the directory went with what it held"
    );
    let events = crate::util::stdout_events(&sent);
    let deleted: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "change" && e["change"] == "deleted")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        deleted,
        [
            "tree/x/deeper/o",
            "tree/x/deeper",
            "tree/x/inside",
            "tree/x/more"
        ]
    );
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["deleted"], 4, "{summary}");
}

#[test]
fn an_excluded_entry_keeps_its_directory_and_the_file_is_refused_saying_why() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &["keep.me", "other"]);
    let (sent, _, _) = mirror(
        root.path(),
        &["--overwrite"],
        &["--delete", "--exclude", "keep.me"],
    );
    assert_ne!(code(&sent), 0);
    let err = stderr_of(&sent);
    assert!(
        err.contains("tree/x: the directory of that name holds tree/x/keep.me, which --delete keeps (a filter excludes it"),
        "{err}"
    );
    let x = root.path().join("dst/tree/x");
    assert_eq!(fs::read(x.join("keep.me")).unwrap(), b"old\n");
    assert!(x.is_dir());
    // The rest of the offer went through.
    assert_eq!(fs::read(root.path().join("dst/tree/d/f")).unwrap(), b"f\n");
}

/// The source made a file of a directory the filters exclude (`--exclude x/`):
/// the directory stays with all it holds and the file is refused saying why, in
/// the dry run as in the real run (rsync would let it go); `--delete-excluded`
/// lets it go.
#[test]
fn an_excluded_directory_is_not_replaced_by_a_file_of_its_name() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &["inside"]);
    let x = root.path().join("dst/tree/x");
    let before = snapshot(&root.path().join("dst"));
    let excluded = ["--delete", "--exclude", "x/"];
    let dry: Vec<&str> = excluded.iter().copied().chain(["-n"]).collect();
    for flags in [&dry[..], &excluded[..]] {
        let (sent, recv_code, _) = mirror(root.path(), &["--overwrite"], flags);
        assert_eq!((code(&sent), recv_code), (6, 6), "{}", stderr_of(&sent));
        let err = stderr_of(&sent);
        assert!(
            err.contains("tree/x: the directory of that name is one the filters exclude"),
            "{err}"
        );
        assert_eq!(fs::read(x.join("inside")).unwrap(), b"old\n");
    }
    assert_eq!(
        before_of(&snapshot(&root.path().join("dst")), "tree/x"),
        before_of(&before, "tree/x")
    );
    let with: Vec<&str> = excluded
        .iter()
        .copied()
        .chain(["--delete-excluded"])
        .collect();
    let (sent, recv_code, _) = mirror(root.path(), &["--overwrite"], &with);
    assert_eq!((code(&sent), recv_code), (0, 0), "{}", stderr_of(&sent));
    assert_eq!(fs::read(&x).unwrap(), b"x is a file now\n");
}

/// The other way: a file the filters exclude (`--exclude data --include data/`:
/// the file `data`, not the directory) is not removed to make the directory the
/// source has of that name; the directory is refused saying why.
#[test]
fn an_excluded_file_is_not_replaced_by_a_directory_of_its_name() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("src/tree/data")).unwrap();
    fs::write(root.path().join("src/tree/data/f"), b"f\n").unwrap();
    fs::create_dir_all(root.path().join("dst/tree")).unwrap();
    let data = root.path().join("dst/tree/data");
    fs::write(&data, b"keep-me\n").unwrap();
    let flags = ["--delete", "-i", "--exclude", "data", "--include", "data/"];
    let (sent, recv_code, _) = mirror(root.path(), &["--overwrite"], &flags);
    assert_eq!((code(&sent), recv_code), (6, 6), "{}", stderr_of(&sent));
    let err = stderr_of(&sent);
    assert!(
        err.contains("tree/data: what holds that name is one the filters exclude"),
        "{err}"
    );
    assert_eq!(fs::read(&data).unwrap(), b"keep-me\n");
    // Without --delete the rules protect nothing there (they travel with a dry
    // run and -I too): the directory replaces the file, as predicted.
    let flags = ["-n", "--exclude", "data", "--include", "data/"];
    let (dry, recv_code, _) = mirror(root.path(), &["--overwrite"], &flags);
    assert_eq!((code(&dry), recv_code), (0, 0), "{}", stderr_of(&dry));
    let (real, recv_code, _) = mirror(root.path(), &["--overwrite"], &flags[1..]);
    assert_eq!((code(&real), recv_code), (0, 0), "{}", stderr_of(&real));
    assert_eq!(fs::read(data.join("f")).unwrap(), b"f\n");
}

#[test]
fn a_link_planted_in_the_directory_is_removed_itself_and_the_outside_is_untouched() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious"), b"keep me\n").unwrap();
    source(root.path());
    other_types(root.path(), &[]);
    symlink(outside.path(), root.path().join("dst/tree/x/to-dir")).unwrap();
    symlink(
        outside.path().join("precious"),
        root.path().join("dst/tree/x/to-file"),
    )
    .unwrap();
    let (sent, recv_code, recv_err) = mirror(root.path(), &["--overwrite"], &["--delete", "-i"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(
        fs::read(root.path().join("dst/tree/x")).unwrap(),
        b"x is a file now\n"
    );
    assert_eq!(names(outside.path()), ["precious"]);
    assert_eq!(
        fs::read(outside.path().join("precious")).unwrap(),
        b"keep me\n"
    );
    let stdout = lines(&sent);
    assert!(stdout.contains("deleted  tree/x/to-dir\n"), "{stdout}");
    assert!(stdout.contains("deleted  tree/x/to-file\n"), "{stdout}");
}

#[test]
fn a_dry_run_lists_the_changes_of_type_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &["inside"]);
    let before = snapshot(&root.path().join("dst"));
    let (sent, recv_code, recv_err) = mirror(
        root.path(),
        &["--overwrite", "-i"],
        &["--delete", "--dry-run"],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    assert_eq!(snapshot(&root.path().join("dst")), before);
    let stdout = lines(&sent);
    for line in [
        "changed  tree/x",
        "new dir  tree/d/",
        "new      tree/d/f",
        "deleted  tree/x/inside",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    // Without --delete, the dry run refuses as the real run would.
    let (sent, _, _) = mirror(root.path(), &["--overwrite"], &["--dry-run"]);
    assert_ne!(code(&sent), 0);
    assert!(
        stderr_of(&sent).contains("holds entries"),
        "{}",
        stderr_of(&sent)
    );
    assert_eq!(snapshot(&root.path().join("dst")), before);
}

#[test]
fn a_put_replaces_types_with_f_and_delete_and_the_quota_gets_the_room_back() {
    const QUOTA: u64 = 1_000_000;
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/x/deeper")).unwrap();
    fs::write(home.join("tree/x/big"), vec![7u8; 600_000]).unwrap();
    fs::write(home.join("tree/x/deeper/o"), b"o\n").unwrap();
    fs::write(home.join("tree/d"), vec![3u8; 1000]).unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(local.join("d")).unwrap();
    fs::write(local.join("x"), vec![1u8; 300_000]).unwrap();
    fs::write(local.join("d/f"), b"f\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let tree = local.to_str().unwrap();
    let before = snapshot(&home);
    let to = server.at("/");
    // Without -f nothing is replaced; with -f alone the directory holding entries
    // stays (the file is refused), and the file becomes a directory.
    for extra in [&[][..], &["-f"][..]] {
        let mut args = vec!["send", tree, &to];
        args.extend_from_slice(extra);
        let put = client(&site, "alice", &args);
        assert_eq!(code(&put), 6, "{}", stderr_of(&put));
        assert_eq!(
            snapshot(&home.join("tree/x")),
            before_of(&before, "tree/x/")
        );
        check_home(&site, &server, "alice", QUOTA);
    }
    assert_eq!(fs::read(home.join("tree/x/big")).unwrap().len(), 600_000);
    // -f alone replaced the file with a directory, and gave its room back.
    assert_eq!(fs::read(home.join("tree/d/f")).unwrap(), b"f\n");
    // A dry run says what would happen and changes nothing.
    let before = snapshot(&home);
    let dry = client(
        &site,
        "alice",
        &["send", tree, &server.at("/"), "--delete", "-n"],
    );
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert_eq!(snapshot(&home), before, "a dry run changes nothing");
    let stdout = lines(&dry);
    assert!(stdout.contains("deleted  tree/x/big\n"), "{stdout}");
    let put = client(
        &site,
        "alice",
        &["send", tree, &server.at("/"), "--delete", "-i"],
    );
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    assert_eq!(names(&home), ["tree/d/f", "tree/x"]);
    assert_eq!(fs::read(home.join("tree/x")).unwrap().len(), 300_000);
    let stdout = lines(&put);
    assert!(stdout.contains("replaced tree/x\n"), "{stdout}");
    assert!(stdout.contains("deleted  tree/x/deeper/o\n"), "{stdout}");
    assert!(stderr_of(&put).contains("deleted 3"), "{}", stderr_of(&put));
    check_home(&site, &server, "alice", QUOTA);
}

/// The entries of `snapshot` beneath `prefix`, relative to it.
fn before_of(snapshot: &[(String, String)], prefix: &str) -> Vec<(String, String)> {
    snapshot
        .iter()
        .filter_map(|(path, what)| Some((path.strip_prefix(prefix)?.to_string(), what.clone())))
        .collect()
}

#[test]
fn a_get_replaces_types_with_f_and_delete_and_refuses_without() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/d")).unwrap();
    fs::write(home.join("tree/x"), b"x is a file now\n").unwrap();
    fs::write(home.join("tree/d/f"), b"f\n").unwrap();
    let dl = site.path().join("dl");
    fs::create_dir_all(dl.join("tree/x")).unwrap();
    fs::write(dl.join("tree/x/inside"), b"old\n").unwrap();
    fs::write(dl.join("tree/d"), b"d was a file\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let get = |extra: &[&str]| {
        let at = server.at("tree");
        let mut args = vec!["get"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&at, dl.to_str().unwrap()]);
        client(&site, "alice", &args)
    };
    let before = snapshot(&dl);
    let got = get(&[]);
    assert_eq!(code(&got), 6, "{}", stderr_of(&got));
    assert_eq!(snapshot(&dl), before, "without -f nothing changes");
    let stderr = stderr_of(&got);
    assert!(
        stderr.contains("tree/x: a directory of that name exists ("),
        "{stderr}"
    );
    let dry = get(&["-f", "--delete", "-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert_eq!(snapshot(&dl), before, "a dry run changes nothing");
    let listed = lines(&dry);
    assert!(listed.contains("replaced tree/d/\n"), "{listed}");
    assert!(listed.contains("deleted  tree/x/inside\n"), "{listed}");
    let got = get(&["-f"]);
    assert_eq!(code(&got), 6, "{}", stderr_of(&got));
    assert!(
        stderr_of(&got).contains("--delete replaces it"),
        "{}",
        stderr_of(&got)
    );
    assert_eq!(fs::read(dl.join("tree/x/inside")).unwrap(), b"old\n");
    fs::remove_dir_all(dl.join("tree/d")).unwrap();
    fs::write(dl.join("tree/d"), b"d was a file\n").unwrap();
    let got = get(&["-f", "--delete", "-i"]);
    assert_eq!(code(&got), 0, "{}", stderr_of(&got));
    assert_eq!(names(&dl), ["tree/d/f", "tree/x"]);
    let stdout = lines(&got);
    // The receiving side knows both were changes of type.
    assert!(stderr_of(&got).contains("deleted 1"), "{}", stderr_of(&got));
    assert!(stdout.contains("replaced tree/x\n"), "{stdout}");
    assert!(stdout.contains("replaced tree/d/\n"), "{stdout}");
    assert!(stdout.contains("deleted  tree/x/inside\n"), "{stdout}");
}

#[test]
fn the_shell_puts_over_a_directory_with_delete() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/x")).unwrap();
    fs::write(home.join("tree/x/inside"), b"old\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("x"), b"x is a file now\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let script = site.path().join("script.xfer");
    fs::write(&script, format!("put --delete {}\n", local.display())).unwrap();
    let run = client(
        &site,
        "alice",
        &["shell", &server.addr(), "-b", script.to_str().unwrap()],
    );
    assert_eq!(code(&run), 0, "{}", stderr_of(&run));
    assert_eq!(names(&home), ["tree/x"]);
    assert_eq!(fs::read(home.join("tree/x")).unwrap(), b"x is a file now\n");
}

/// A link and a large file (received as resumable partial data, committed alone)
/// each take the place of a directory; the receiver's own `-i` says `replaced`
/// for both changes of type, the directory with its `/`.
#[test]
fn a_link_and_a_large_file_replace_directories_and_the_receiver_lists_them() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    let big = crate::util::pattern(3 << 20, 7);
    fs::write(root.path().join("src/tree/big"), &big).unwrap();
    symlink("x", root.path().join("src/tree/link")).unwrap();
    other_types(root.path(), &["inside"]);
    fs::create_dir_all(root.path().join("dst/tree/big/sub")).unwrap();
    fs::write(root.path().join("dst/tree/big/sub/s"), b"s\n").unwrap();
    fs::create_dir_all(root.path().join("dst/tree/link")).unwrap();
    fs::write(root.path().join("dst/tree/link/l"), b"l\n").unwrap();
    let (sent, recv_code, recv_err) =
        mirror(root.path(), &["--overwrite", "-i"], &["--delete", "-i"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    let dst = root.path().join("dst/tree");
    assert_eq!(fs::read(dst.join("big")).unwrap(), big);
    assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("x"));
    assert_eq!(
        names(&root.path().join("dst")),
        ["tree/big", "tree/d/f", "tree/link", "tree/x"]
    );
    let stdout = lines(&sent);
    for line in [
        "replaced tree/big",
        "replaced link tree/link",
        "deleted  tree/big/sub/s",
        "deleted  tree/link/l",
        "deleted  tree/x/inside",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    assert!(
        stderr_of(&sent).contains("deleted 4"),
        "{}",
        stderr_of(&sent)
    );
}

#[test]
fn the_receiver_lists_a_change_of_type_as_replaced() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &[]);
    settle();
    let mut receiver = crate::util::Receiver::start(
        &root.path().join("dst"),
        Some(crate::util::KEY),
        &["--overwrite", "-i"],
    );
    let sent = crate::util::send(
        &[&root.path().join("src/tree")],
        receiver.port,
        crate::util::KEY,
        &[],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    let listed = receiver.stdout();
    assert!(listed.lines().any(|l| l == "replaced tree/x"), "{listed}");
    assert!(listed.lines().any(|l| l == "replaced tree/d/"), "{listed}");
}

/// Another session's `put` is writing into the directory a file would replace:
/// the directory stays, the file is refused saying why, and the other session's
/// file arrives whole.
#[test]
fn a_directory_another_session_writes_into_stays() {
    use crate::util::pattern;
    use crate::util::site::{finish_put, put_begun};
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/x")).unwrap();
    fs::write(home.join("tree/x/busy"), b"the older copy\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("x"), b"x is a file now\n").unwrap();
    let server = site.serve(&[]);
    settle();
    let new = pattern(300_000, 3);
    let mut writer = put_begun(&server, "alice", "tree/x/busy", &new, 100_000);
    let put = client(
        &site,
        "alice",
        &["send", local.to_str().unwrap(), &server.at("/"), "--delete"],
    );
    // `busy` (exit 3: try again later), as the ledger's rule says.
    assert_eq!(code(&put), 3, "{}", stderr_of(&put));
    let err = stderr_of(&put);
    assert!(
        err.contains("tree/x: tree/x/busy is being written by a session"),
        "{err}"
    );
    assert!(home.join("tree/x").is_dir());
    let answer = finish_put(&mut writer, 0, "tree/x/busy", &new, 100_000);
    assert_eq!(answer["type"], "ok", "{answer}");
    assert_eq!(fs::read(home.join("tree/x/busy")).unwrap(), new);
}

/// A put planned into an empty directory (its data not sent yet) holds a claim
/// beneath it: a change of type by another session is `busy` and the directory
/// stays, and the first put's file arrives.
#[test]
fn a_directory_with_a_claim_beneath_it_is_not_replaced() {
    use crate::util::pattern;
    use crate::util::site::{finish_put, put_begun};
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/x")).unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("x"), b"x is a file now\n").unwrap();
    let server = site.serve(&[]);
    settle();
    // Planned, not one byte of its data sent yet.
    let new = pattern(300_000, 5);
    let mut writer = put_begun(&server, "alice", "tree/x/new", &new, 0);
    let put = client(
        &site,
        "alice",
        &["send", local.to_str().unwrap(), &server.at("/"), "--delete"],
    );
    assert_eq!(code(&put), 3, "{}", stderr_of(&put));
    let err = stderr_of(&put);
    assert!(
        err.contains("tree/x: tree/x/new is being written by a session"),
        "{err}"
    );
    assert!(home.join("tree/x").is_dir());
    let answer = finish_put(&mut writer, 0, "tree/x/new", &new, 0);
    assert_eq!(answer["type"], "ok", "{answer}");
    assert_eq!(fs::read(home.join("tree/x/new")).unwrap(), new);
}

/// The parent of a directory a file replaces is renamed, and another directory put
/// in its place, while the file arrives: the file's own directory is emptied and
/// replaced, and the other directory's entries are untouched.
#[test]
fn a_parent_swapped_during_the_transfer_does_not_lose_the_other_directory() {
    use crate::util::relay::{Faults, Relay};
    use crate::util::{KEY, Receiver, send};
    use std::time::{Duration, Instant};
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("src/tree/p")).unwrap();
    fs::write(root.path().join("src/tree/p/x"), vec![9u8; 2_000_000]).unwrap();
    fs::create_dir_all(root.path().join("dst/tree/p/x")).unwrap();
    fs::write(root.path().join("dst/tree/p/x/old"), b"old\n").unwrap();
    // The other directory, made before the session: older than it.
    fs::create_dir_all(root.path().join("dst/other/x")).unwrap();
    fs::write(root.path().join("dst/other/x/precious"), b"keep me\n").unwrap();
    settle();
    let mut receiver = Receiver::start(&root.path().join("dst"), Some(KEY), &["--overwrite"]);
    let relay = Relay::start(
        receiver.port,
        Faults {
            throttle: Some(1_000_000),
            ..Faults::default()
        },
    );
    let port = relay.port;
    let src = root.path().join("src/tree");
    let sender = std::thread::spawn(move || send(&[&src], port, KEY, &["--delete"]));
    // Once data flows, the part file is open in `tree/p`.
    let started = Instant::now();
    while relay.forwarded() < 400_000 {
        assert!(started.elapsed() < Duration::from_secs(20), "no data came");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dst = root.path().join("dst");
    fs::rename(dst.join("tree/p"), dst.join("p-old")).unwrap();
    fs::rename(dst.join("other"), dst.join("tree/p")).unwrap();
    let sent = sender.join().unwrap();
    let recv_code = receiver.exit_code();
    assert_eq!(
        fs::read(dst.join("tree/p/x/precious")).unwrap(),
        b"keep me\n"
    );
    assert_eq!(fs::read(dst.join("p-old/x")).unwrap().len(), 2_000_000);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{}", receiver.stderr());
}

/// A directory under a temporary name, as a crash between the exchange and the
/// removal of a change of type leaves it, is swept only by its own change time
/// (the exchange's rename sets it; no sender can): one whose times a sender set two
/// hours back stays, and so does a user's own directory that merely starts with
/// `.xfer-` and ends in `.partial` (a review found the sweep taking such a tree).
/// The removal itself: `fs::sink::sweep`'s unit test.
#[test]
fn only_a_directory_an_exchange_left_long_ago_is_swept() {
    use crate::util::tree::set_mtime;
    use crate::util::{KEY, Receiver};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let out = tempfile::tempdir().unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    let seconds = two_hours_ago.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let ours = out.path().join("tree/.xfer-0123456789abcdef.part");
    let users = out.path().join("tree/.xfer-my-notes.partial");
    for dir in [&ours, &users] {
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/notes"), b"precious\n").unwrap();
        for path in [dir.join("sub/notes"), dir.join("sub"), dir.to_path_buf()] {
            set_mtime(&path, seconds, 0);
        }
    }
    // A stale temporary file beside them, which the sweep does take: its line says
    // the sweep ran, and took that one alone.
    let stale = out.path().join("tree/.xfer-aaaaaaaaaaaaaaaa.part");
    fs::write(&stale, b"left\n").unwrap();
    set_mtime(&stale, seconds, 0);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--keep-partial", "1"]);
    let src = tempfile::tempdir().unwrap();
    let file = crate::util::write_in(src.path(), "f", b"f\n");
    assert!(
        crate::util::send(&[&file], receiver.port, KEY, &[])
            .status
            .success()
    );
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let log = receiver.stderr();
    assert!(log.contains("removed 1 partial file"), "{log}");
    assert!(!stale.exists());
    for dir in [&ours, &users] {
        assert_eq!(
            fs::read(dir.join("sub/notes")).unwrap(),
            b"precious\n",
            "{dir:?}"
        );
    }
}

/// A dry run of a change of type that the real run refuses (a filter keeps an entry
/// of the directory) refuses it too, and predicts no deletion beneath it.
#[test]
fn a_dry_run_refused_change_of_type_predicts_no_deletion() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &["a", "b.tmp"]);
    let before = snapshot(&root.path().join("dst"));
    for dry in [&["-n"][..], &[]] {
        let mut args = vec!["--delete", "--exclude", "*.tmp"];
        args.extend_from_slice(dry);
        let (sent, _, recv_err) = mirror(root.path(), &["--overwrite"], &args);
        assert_eq!(code(&sent), 6, "{}", stderr_of(&sent));
        let err = stderr_of(&sent);
        assert!(
            err.contains(
                "tree/x: the directory of that name holds tree/x/b.tmp, which --delete keeps"
            ),
            "{err}"
        );
        assert!(!lines(&sent).contains("tree/x/a"), "{}", lines(&sent));
        assert!(!err.contains("would delete 1"), "{err}");
        assert!(!recv_err.contains("would delete 1"), "{recv_err}");
        assert_eq!(
            before_of(&snapshot(&root.path().join("dst")), "tree/x/"),
            before_of(&before, "tree/x/")
        );
    }
}

/// A directory of 600 KB becomes a 500 KB file on a server with a 1 MiB quota: the
/// room its contents free is counted (they go before the file is written), so the
/// dry run and the real run both accept it and the home's count stays right.
#[test]
fn a_file_replacing_a_directory_may_use_the_room_its_contents_free() {
    const QUOTA: u64 = 1 << 20;
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/x")).unwrap();
    fs::write(home.join("tree/x/big"), vec![7u8; 600_000]).unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("x"), vec![1u8; 500_000]).unwrap();
    let server = site.serve(&[]);
    settle();
    let tree = local.to_str().unwrap();
    let to = server.at("/");
    let before = snapshot(&home);
    let dry = client(&site, "alice", &["send", tree, &to, "-f", "--delete", "-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert!(
        lines(&dry).contains("deleted  tree/x/big\n"),
        "{}",
        lines(&dry)
    );
    assert_eq!(snapshot(&home), before, "a dry run changes nothing");
    let put = client(&site, "alice", &["send", tree, &to, "-f", "--delete"]);
    assert_eq!(code(&put), 0, "{}", stderr_of(&put));
    assert_eq!(fs::read(home.join("tree/x")).unwrap(), vec![1u8; 500_000]);
    check_home(&site, &server, "alice", QUOTA);
}

/// Without `--overwrite`, a file in place of an offered directory is refused with
/// the hint, and the entries beneath it are folded into one line, on both sides.
#[test]
fn entries_beneath_a_file_in_the_way_fold_into_one_line() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    for name in ["g", "h"] {
        fs::write(root.path().join("src/tree/d").join(name), b"more\n").unwrap();
    }
    other_types(root.path(), &[]);
    let (sent, _, recv_err) = mirror(root.path(), &[], &[]);
    assert_ne!(code(&sent), 0);
    for err in [stderr_of(&sent), recv_err] {
        assert!(
            err.contains("tree/d: exists and is not a directory (") && err.contains("--overwrite"),
            "{err}"
        );
        assert!(
            err.contains("tree/d: and 3 entries beneath it, refused as it was"),
            "{err}"
        );
        assert!(!err.contains("tree/d/f"), "{err}");
    }
}

/// Without `--delete`, a directory holding only a temporary of xfer is refused
/// saying so, without advising `--delete` (which keeps temporaries too).
#[test]
fn a_directory_holding_only_a_temporary_is_refused_without_advising_delete() {
    let root = tempfile::tempdir().unwrap();
    source(root.path());
    other_types(root.path(), &[".xfer-0123456789abcdef.part"]);
    let before = snapshot(&root.path().join("dst/tree/x"));
    let (sent, _, _) = mirror(root.path(), &["--overwrite"], &[]);
    assert_eq!(code(&sent), 6, "{}", stderr_of(&sent));
    let err = stderr_of(&sent);
    assert!(!err.contains("--delete replaces it"), "{err}");
    assert!(
        err.contains(
            "tree/x: the directory of that name holds tree/x/.xfer-0123456789abcdef.part, \
             which --delete keeps too (a temporary or partial file of xfer); not replaced"
        ),
        "{err}"
    );
    assert_eq!(snapshot(&root.path().join("dst/tree/x")), before);

    // Beside other entries, deeper down: still not what --delete would replace.
    fs::remove_file(root.path().join("dst/tree/x/.xfer-0123456789abcdef.part")).unwrap();
    fs::write(root.path().join("dst/tree/x/a"), b"a\n").unwrap();
    fs::create_dir(root.path().join("dst/tree/x/sub")).unwrap();
    let partial = "dst/tree/x/sub/.xfer-00112233445566778899aabbccddeeff.partial";
    fs::write(root.path().join(partial), b"p").unwrap();
    let (sent, _, _) = mirror(root.path(), &["--overwrite"], &[]);
    let err = stderr_of(&sent);
    assert!(!err.contains("--delete replaces it"), "{err}");
    assert!(
        err.contains("holds tree/x/sub/.xfer-00112233445566778899aabbccddeeff.partial, which --delete keeps too"),
        "{err}"
    );
}

/// A special file and a hard link replace directories holding entries with
/// `--delete`, as a file does (README, PROTOCOL 17.3).
#[test]
fn a_special_file_and_a_hard_link_replace_directories_holding_entries() {
    use super::mirror_meta::mkfifo;
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"f\n").unwrap();
    fs::hard_link(tree.join("f"), tree.join("g")).unwrap();
    mkfifo(&tree.join("p"));
    for name in ["g", "p"] {
        let dir = root.path().join("dst/tree").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("inside"), b"old\n").unwrap();
    }
    settle();
    let (sent, recv_code, recv_err) = mirror(
        root.path(),
        &["--overwrite"],
        &["--delete", "--specials", "-i"],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(recv_code, 0, "{recv_err}");
    let copy = root.path().join("dst/tree");
    let inode = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(path).unwrap().ino()
    };
    assert_eq!(inode(&copy.join("f")), inode(&copy.join("g")));
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(copy.join("p"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let stdout = lines(&sent);
    assert!(stdout.contains("deleted  tree/g/inside\n"), "{stdout}");
    assert!(stdout.contains("deleted  tree/p/inside\n"), "{stdout}");
}

/// A file too large for the quota even once the directory it replaces is gone:
/// the dry run refuses it as the real run does, predicts no deletion, and the real
/// run removes nothing.
#[test]
fn a_change_of_type_the_quota_refuses_deletes_nothing_and_the_dry_run_says_so() {
    const QUOTA: u64 = 1 << 20;
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/x")).unwrap();
    fs::write(home.join("tree/x/small"), vec![7u8; 100_000]).unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("x"), vec![1u8; 2_000_000]).unwrap();
    let server = site.serve(&[]);
    settle();
    let tree = local.to_str().unwrap();
    let to = server.at("/");
    let before = snapshot(&home);
    for dry in [&["-n"][..], &[]] {
        let mut args = vec!["send", tree, &to, "-f", "--delete"];
        args.extend_from_slice(dry);
        let put = client(&site, "alice", &args);
        assert_eq!(code(&put), 6, "{}", stderr_of(&put));
        let err = stderr_of(&put);
        assert!(err.contains("tree/x: over the quota"), "{err}");
        assert!(!lines(&put).contains("tree/x/small"), "{}", lines(&put));
        assert!(!err.contains("would delete 1"), "{err}");
        assert_eq!(snapshot(&home), before);
    }
    check_home(&site, &server, "alice", QUOTA);
}

/// A directory in the way that the receiver may not open (mode 000, its own) is no
/// empty one: a file sent in its place is refused saying so, in the dry run as in
/// the real run (a review found it called "appeared during the transfer", and the
/// dry run predicting success). Nothing changes.
#[test]
fn a_directory_in_the_way_the_receiver_cannot_open_is_refused_alike_in_a_dry_run() {
    use crate::util::tree::snapshot;
    use crate::util::{KEY, send};
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("x"), b"now a file\n").unwrap();
    let dst = root.path().join("dst");
    fs::create_dir_all(dst.join("tree/x")).unwrap();
    fs::write(dst.join("tree/x/inside"), b"inside\n").unwrap();
    for dir in [dst.clone(), dst.join("tree"), dst.join("tree/x")] {
        std::os::unix::fs::lchown(&dir, Some(65534), Some(65534)).unwrap();
    }
    fs::set_permissions(dst.join("tree/x"), fs::Permissions::from_mode(0o000)).unwrap();
    settle();
    let before = snapshot(&dst);
    let held = snapshot(&dst.join("tree/x"));
    let receiver = || crate::util::nobody_receiving(&dst);
    let Some(mut dry_receiver) = receiver() else {
        return;
    };
    let said = "tree/x: cannot open the directory in the way: Permission denied";
    let dry = send(&[&tree], dry_receiver.port, KEY, &["--delete", "-n"]);
    dry_receiver.exit_code();
    assert_eq!(snapshot(&dst), before, "a dry run changes nothing");
    let mut real_receiver = receiver().unwrap();
    let real = send(&[&tree], real_receiver.port, KEY, &["--delete"]);
    real_receiver.exit_code();
    for (run, output) in [("dry", &dry), ("real", &real)] {
        assert_eq!(code(output), 7, "{run}: {}", stderr_of(output));
        assert!(
            stderr_of(output).contains(said),
            "{run}: {}",
            stderr_of(output)
        );
    }
    // The real run leaves the directory in the way as it was (it may still make
    // `tree`'s own time the sender's, as a mirror does for any directory sent).
    assert_eq!(snapshot(&dst.join("tree/x")), held);
}
