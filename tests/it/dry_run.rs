//! `--dry-run` (issue 21): the handshake, the offer and the plan, then nothing:
//! both trees (names, kinds, sizes, modes, times, contents) are the same before
//! and after, on a plain receiver and on a server, and the lines say what would be
//! sent (new, changed, same), deleted and skipped; exit 0.
//!
//! Decided: a dry run makes no directory either, on either side. Into a server
//! directory not there yet (a real run makes it), the client lists everything as
//! new on its own and says why; a `get` into a local directory not there yet plans
//! into an empty stand-in. A receiver's lines and log say it was a dry run (`would
//! receive`, `would delete N`), and a refused dry run does not end in a summary of
//! what it would do.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::server::{Site, as_user, client, code};
use crate::util::tree::snapshot;
use crate::util::{KEY, Receiver, events_in, run, send, stderr_of, summary_event};

/// A source tree and a receiving directory that differ in every way a run can see.
fn trees(root: &Path) {
    fs::create_dir_all(root.join("src/tree/newdir")).unwrap();
    fs::write(root.join("src/tree/new"), b"new\n").unwrap();
    fs::write(root.join("src/tree/changed"), b"the new version\n").unwrap();
    fs::write(root.join("src/tree/same"), b"same\n").unwrap();
    fs::write(root.join("src/tree/newdir/f"), b"f\n").unwrap();
    fs::create_dir_all(root.join("dst/tree/gone")).unwrap();
    fs::write(root.join("dst/tree/changed"), b"old\n").unwrap();
    fs::write(root.join("dst/tree/gone/x"), b"x\n").unwrap();
    fs::write(root.join("dst/tree/stale"), b"stale\n").unwrap();
    symlink("/etc", root.join("dst/tree/link")).unwrap();
    // `same` by size and time.
    fs::copy(root.join("src/tree/same"), root.join("dst/tree/same")).unwrap();
    let mtime = fs::metadata(root.join("src/tree/same"))
        .unwrap()
        .modified()
        .unwrap();
    fs::File::options()
        .write(true)
        .open(root.join("dst/tree/same"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn a_dry_run_changes_nothing_on_either_side_and_says_what_would() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let before = (
        snapshot(&root.path().join("src")),
        snapshot(&root.path().join("dst")),
    );
    let mut receiver = Receiver::start(&root.path().join("dst"), Some(KEY), &["--overwrite"]);
    let sent = send(
        &[&root.path().join("src/tree")],
        receiver.port,
        KEY,
        &["-n", "--delete"],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let after = (
        snapshot(&root.path().join("src")),
        snapshot(&root.path().join("dst")),
    );
    assert_eq!(before, after, "nothing changed on either side");
    let stdout = String::from_utf8_lossy(&sent.stdout);
    for line in [
        "new      tree/new",
        "changed  tree/changed",
        "same     tree/same",
        "new dir  tree/newdir/",
        "new      tree/newdir/f",
        "deleted  tree/stale",
        "deleted  tree/gone/x",
        "deleted  tree/gone/",
        "deleted  tree/link",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    assert!(
        stderr_of(&sent).contains("dry run: would send 2 new files and 1 changed"),
        "{}",
        stderr_of(&sent)
    );
    // Without --overwrite the changed file would be refused, and --delete denied:
    // without --delete the dry run fails as the real run would (exit 6), and says
    // which entry and why.
    let mut receiver = Receiver::start(&root.path().join("dst"), Some(KEY), &[]);
    let sent = send(
        &[&root.path().join("src/tree")],
        receiver.port,
        KEY,
        &["--dry-run", "--json"],
    );
    assert_eq!(code(&sent), 6, "{}", stderr_of(&sent));
    // The receiver previews its own outcome too (a `get -n` is such a receiver).
    assert_eq!(receiver.exit_code(), 6, "{}", receiver.stderr());
    assert!(
        receiver.stderr().contains("would be refused"),
        "{}",
        receiver.stderr()
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&sent.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let refused = events
        .iter()
        .find(|e| e["status"] == "failed")
        .expect("a failed file event");
    assert_eq!(refused["path"], "tree/changed");
    assert_eq!(refused["code"], "exists");
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["failed"], 1, "{summary}");
    assert!(summary["dry_run"].is_object(), "{summary}");
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("would be refused"),
        "{summary}"
    );
    assert_eq!(before.1, snapshot(&root.path().join("dst")));
}

/// A directory where the source now has a file (and a file where it has a
/// directory): with `--delete` the receiver replaces one with the other, as
/// `rsync -a --delete` does, and a dry run lists it and changes nothing; without
/// `--delete` a directory holding entries stays, and both runs say so with what
/// to do, instead of a harmless "skipped" (exit 6 on both).
#[test]
fn a_dry_run_fails_where_a_directory_and_a_file_changed_places_as_the_real_run_does() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("src/tree/was_file")).unwrap();
    fs::write(root.path().join("src/tree/was_file/inner"), b"in\n").unwrap();
    fs::write(root.path().join("src/tree/was_dir"), b"now a file\n").unwrap();
    fs::create_dir_all(root.path().join("dst/tree/was_dir")).unwrap();
    fs::write(root.path().join("dst/tree/was_dir/old"), b"old\n").unwrap();
    fs::write(root.path().join("dst/tree/was_file"), b"a file\n").unwrap();
    let mut outcomes = Vec::new();
    for args in [&["-n"][..], &[][..]] {
        let mut receiver = Receiver::start(&root.path().join("dst"), Some(KEY), &["--overwrite"]);
        let sent = send(&[&root.path().join("src/tree")], receiver.port, KEY, args);
        receiver.exit_code();
        let stderr = stderr_of(&sent);
        assert!(stderr.contains("--delete replaces it"), "{stderr}");
        outcomes.push(code(&sent));
    }
    assert_eq!(outcomes, [6, 6], "the dry run predicts the real run's exit");
    // The directory holding entries is not replaced (the other change is made).
    let dst = root.path().join("dst/tree");
    assert_eq!(fs::read(dst.join("was_dir/old")).unwrap(), b"old\n");
    assert_eq!(fs::read(dst.join("was_file/inner")).unwrap(), b"in\n");
}

#[test]
fn a_dry_run_into_a_server_changes_nothing() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/gone")).unwrap();
    fs::write(home.join("tree/gone/x"), b"x\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(local.join("sub")).unwrap();
    fs::write(local.join("sub/b"), b"b\n").unwrap();
    let server = site.serve(&[]);
    std::thread::sleep(Duration::from_millis(200));
    let before = snapshot(&home);
    let usage = server.usage("alice");
    let run = client(
        &site,
        "alice",
        &[
            "send",
            local.to_str().unwrap(),
            &server.at("/"),
            "-n",
            "--delete",
        ],
    );
    assert_eq!(code(&run), 0, "{}", stderr_of(&run));
    assert_eq!(snapshot(&home), before);
    assert_eq!(server.usage("alice"), usage);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("new dir  tree/sub/"), "{stdout}");
    assert!(stdout.contains("deleted  tree/gone"), "{stdout}");
}

#[test]
fn a_dry_run_into_a_server_directory_not_there_yet_makes_it_not_and_lists_all_as_new() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    let local = site.path().join("tree");
    fs::create_dir_all(local.join("sub")).unwrap();
    fs::write(local.join("a"), b"a\n").unwrap();
    fs::write(local.join("sub/b"), b"bb\n").unwrap();
    let server = site.serve(&[]);
    let before = snapshot(&home);
    let tree = local.to_str().unwrap();
    let dry = client(
        &site,
        "alice",
        &["send", tree, &server.at("new/dir"), "-n", "--delete"],
    );
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert_eq!(snapshot(&home), before, "no directory made");
    let stdout = String::from_utf8_lossy(&dry.stdout);
    for line in [
        "new dir  tree/",
        "new      tree/a",
        "new dir  tree/sub/",
        "new      tree/sub/b",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    let stderr = stderr_of(&dry);
    assert!(
        stderr.contains("the server has no directory new/dir yet; a real run makes it"),
        "{stderr}"
    );
    assert!(
        stderr.contains("dry run: would send 2 new files and 0 changed (5 B)"),
        "{stderr}"
    );
    // The real run makes it; the log does not call the first answer a failure.
    let real = client(&site, "alice", &["send", tree, &server.at("new/dir")]);
    assert_eq!(code(&real), 0, "{}", stderr_of(&real));
    assert_eq!(fs::read(home.join("new/dir/tree/sub/b")).unwrap(), b"bb\n");
    let log = server.wait_for_log("received 2 files", 1);
    assert!(
        log.contains("alice put new/dir: no such directory yet (answered not_found"),
        "{log}"
    );
    assert!(!log.contains("refused"), "{log}");
    // A fifo with --specials: the server keeps none, so the dry run fails as the
    // real run would, and still makes nothing.
    crate::mirror_meta::mkfifo(&local.join("pipe"));
    let to = server.at("other/dir");
    let dry = client(&site, "alice", &["send", tree, &to, "-n", "--specials"]);
    assert_eq!(code(&dry), 6, "{}", stderr_of(&dry));
    assert!(
        stderr_of(&dry).contains("a server keeps no special files"),
        "{}",
        stderr_of(&dry)
    );
    assert!(!home.join("other").exists());
}

#[test]
fn a_dry_run_get_into_a_local_directory_not_there_yet_makes_nothing() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree/sub")).unwrap();
    fs::write(home.join("tree/a"), b"a\n").unwrap();
    fs::write(home.join("tree/sub/b"), b"b\n").unwrap();
    let server = site.serve(&[]);
    let local = site.path().join("dl/x");
    let temp = site.path().join("tmp");
    fs::create_dir(&temp).unwrap();
    let mut get = as_user(
        &site,
        "alice",
        &[
            "get",
            &server.at("tree"),
            local.to_str().unwrap(),
            "-n",
            "--delete",
        ],
    );
    let dry = run(get.env("TMPDIR", &temp));
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert!(!site.path().join("dl").exists(), "no local directory made");
    assert_eq!(
        fs::read_dir(&temp).unwrap().count(),
        0,
        "nothing left behind"
    );
    let stdout = String::from_utf8_lossy(&dry.stdout);
    for line in ["new dir  tree/", "new      tree/a", "new      tree/sub/b"] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    let stderr = stderr_of(&dry);
    assert!(
        stderr.contains("does not exist yet; a real run makes it"),
        "{stderr}"
    );
    assert!(
        stderr.contains("dry run: would receive 2 new files and 0 changed (4 B)"),
        "{stderr}"
    );
    // A temporary directory that cannot be used fails no dry run the real run passes.
    let dry = run(get.env("TMPDIR", site.path().join("nowhere")));
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    assert!(!site.path().join("dl").exists(), "no local directory made");
}

#[test]
fn a_receiver_says_a_dry_run_was_one_in_its_lines_log_and_summary() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    let before = snapshot(&root.path().join("dst"));
    let tree = root.path().join("src/tree");
    // Serving: each line and the log line say it; nothing was deleted.
    let dst = root.path().join("dst");
    let mut serving = Receiver::start(&dst, Some(KEY), &["--overwrite", "--serve", "-i"]);
    let sent = send(&[&tree], serving.port, KEY, &["-n", "--delete"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    let log = serving.wait_for_stderr(": ok");
    assert!(
        log.contains("dry run: would receive 2 new files and 1 changed")
            && log.contains("would delete 4; nothing was received, written or deleted: ok"),
        "{log}"
    );
    assert!(!log.contains("deleted 4"), "{log}");
    let stdout = serving.stdout();
    assert!(
        stdout
            .lines()
            .any(|l| l == "deleted  tree/stale  (dry run)"),
        "{stdout}"
    );
    assert_eq!(snapshot(&dst), before);
    // One-shot, with --json: no top-level `deleted`, the count in `dry_run`.
    let mut receiver = Receiver::start(&dst, Some(KEY), &["--overwrite", "--json"]);
    let sent = send(&[&tree], receiver.port, KEY, &["-n", "--delete"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let events = events_in(&receiver.stdout());
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary event");
    assert_eq!(summary["deleted"], serde_json::Value::Null, "{summary}");
    assert_eq!(summary["dry_run"]["deleted"], 4, "{summary}");
    let deleted = events
        .iter()
        .filter(|e| e["change"] == "deleted" && e["dry_run"] == true)
        .count();
    assert_eq!(deleted, 4);
    // One-shot, plain: `would receive`.
    let mut receiver = Receiver::start(&dst, Some(KEY), &["--overwrite"]);
    let sent = send(&[&tree], receiver.port, KEY, &["-n", "--delete", "--json"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(summary_event(&sent)["deleted"], serde_json::Value::Null);
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(
        receiver
            .stderr()
            .contains("dry run: would receive 2 new files and 1 changed"),
        "{}",
        receiver.stderr()
    );
    assert_eq!(snapshot(&dst), before);
}

#[test]
fn a_refused_dry_run_ends_without_a_summary_of_what_it_would_do() {
    let root = tempfile::tempdir().unwrap();
    trees(root.path());
    // --delete into a receiver that replaces nothing: denied, before any plan.
    let mut receiver = Receiver::start(&root.path().join("dst"), Some(KEY), &[]);
    let sent = send(
        &[&root.path().join("src/tree")],
        receiver.port,
        KEY,
        &["-n", "--delete"],
    );
    assert_eq!(code(&sent), 6, "{}", stderr_of(&sent));
    let _ = receiver.exit_code();
    let stderr = stderr_of(&sent);
    assert!(stderr.contains("denied"), "{stderr}");
    assert!(!stderr.contains("would send"), "{stderr}");
    assert!(
        stderr.contains("dry run failed (see the error)"),
        "{stderr}"
    );
    let receiver = Receiver::start(&root.path().join("dst"), Some(KEY), &[]);
    let json = send(
        &[&root.path().join("src/tree")],
        receiver.port,
        KEY,
        &["-n", "--delete", "--json"],
    );
    assert_eq!(code(&json), 6, "{}", stderr_of(&json));
    assert_eq!(summary_event(&json)["ok"], false);
}

/// The `put` into a directory not there yet, as `--quiet` and `--json` log it: not
/// at all, and as a refusal (`ok` false) whose `detail` says what it is.
#[test]
fn a_put_into_a_directory_not_there_yet_is_no_failure_in_a_quiet_or_json_log() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("a"), b"a\n").unwrap();
    let tree = local.to_str().unwrap();
    let quiet = site.serve(&["-q"]);
    let sent = client(&site, "alice", &["send", tree, &quiet.at("q/new")]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!quiet.log().contains("q/new"), "{}", quiet.log());
    drop(quiet);
    let json = site.serve(&["--json"]);
    let sent = client(&site, "alice", &["send", tree, &json.at("j/new")]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    let events = json.json_events();
    let put = events
        .iter()
        .find(|e| e["event"] == "request" && e["action"] == "put j/new")
        .expect("the first put's event");
    assert_eq!(put["ok"], false, "{put}");
    assert!(
        put["error"].as_str().unwrap().contains("not_found"),
        "{put}"
    );
    assert!(
        put["detail"]
            .as_str()
            .unwrap()
            .starts_with("no such directory yet"),
        "{put}"
    );
    assert!(site.home("alice").join("j/new/tree/a").exists());
}

/// A fifo and a link are no files: a dry run's summary counts them apart, as the
/// real run's `sent 1 file` does, instead of `3 new files`.
#[test]
fn a_dry_run_counts_links_and_special_files_apart_from_files() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    crate::mirror_meta::mkfifo(&tree.join("pipe"));
    symlink("a", tree.join("link")).unwrap();
    let dst = root.path().join("dst");
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &["-n", "--specials"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let words = "1 new file and 0 changed (2 B), 2 links or special files, 0 same";
    for (side, stderr) in [
        ("sender", stderr_of(&sent)),
        ("receiver", receiver.stderr()),
    ] {
        assert!(stderr.contains(words), "{side}: {stderr}");
    }
    let receiver = Receiver::start(&dst, Some(KEY), &[]);
    let json = send(
        &[&tree],
        receiver.port,
        KEY,
        &["-n", "--specials", "--json"],
    );
    let dry_run = &summary_event(&json)["dry_run"];
    assert_eq!(
        (dry_run["new"].as_u64(), dry_run["other"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(!dst.join("tree").exists());
}

/// A server's log of a dry run: its refusals say they were a dry run's, and the
/// `put` into a directory not there yet does not claim the client makes it.
#[test]
fn a_servers_log_of_a_dry_run_says_so_in_its_refusals_and_makes_no_claim_of_a_mkdir() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("there/tree")).unwrap();
    fs::write(home.join("there/tree/a"), b"the old one\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("a"), b"new\n").unwrap();
    let tree = local.to_str().unwrap();
    let server = site.serve(&[]);
    let before = snapshot(&home);
    let dry = client(&site, "alice", &["send", tree, &server.at("there"), "-n"]);
    assert_eq!(code(&dry), 6, "{}", stderr_of(&dry));
    let log = server.wait_for_log("would be refused", 1);
    let refusal = log
        .lines()
        .find(|l| l.contains("alice put there: tree/a: already exists"))
        .unwrap_or_else(|| panic!("the refusal in {log}"));
    assert!(refusal.ends_with("(dry run)"), "{refusal}");
    let dry = client(&site, "alice", &["send", tree, &server.at("new"), "-n"]);
    assert_eq!(code(&dry), 0, "{}", stderr_of(&dry));
    let log = server.wait_for_log("alice put new: no such directory yet", 1);
    let line = log
        .lines()
        .find(|l| l.contains("alice put new: no such directory yet"))
        .unwrap();
    assert!(line.contains("a dry run makes nothing"), "{line}");
    drop(server);
    // --json: the refusal's event says it too.
    let server = site.serve(&["--json"]);
    let dry = client(&site, "alice", &["send", tree, &server.at("there"), "-n"]);
    assert_eq!(code(&dry), 6, "{}", stderr_of(&dry));
    let events = server.json_events();
    let refused = events
        .iter()
        .find(|e| e["event"] == "file" && e["status"] == "failed")
        .unwrap_or_else(|| panic!("a failed file event in {events:?}"));
    assert_eq!(refused["dry_run"], true, "{refused}");
    assert_eq!(snapshot(&home), before);
}

/// `--json`: a dry run into a directory not there yet (a server's, or the local one
/// of a `get`) says so in an event too, not only in a line on stderr.
#[test]
fn a_dry_run_into_a_directory_not_there_yet_says_so_in_a_json_event() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree")).unwrap();
    fs::write(home.join("tree/a"), b"a\n").unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("b"), b"b\n").unwrap();
    let server = site.serve(&[]);
    let before = snapshot(&home);
    let put = client(
        &site,
        "alice",
        &[
            "send",
            local.to_str().unwrap(),
            &server.at("new/dir"),
            "-n",
            "--json",
        ],
    );
    let into = site.path().join("dl/x");
    let get = client(
        &site,
        "alice",
        &[
            "get",
            &server.at("tree"),
            into.to_str().unwrap(),
            "-n",
            "--json",
        ],
    );
    for (run, side, path) in [
        (put, "server", "new/dir"),
        (get, "local", into.to_str().unwrap()),
    ] {
        assert_eq!(code(&run), 0, "{side}: {}", stderr_of(&run));
        let events = crate::util::stdout_events(&run);
        let notice = events
            .iter()
            .find(|e| e["event"] == "not_there_yet")
            .unwrap_or_else(|| panic!("{side}: no not_there_yet event in {events:?}"));
        assert_eq!(notice["side"], side, "{notice}");
        assert_eq!(notice["path"], path, "{notice}");
        assert_eq!(notice["dry_run"], true, "{notice}");
        assert!(
            notice["message"]
                .as_str()
                .unwrap()
                .contains("a real run makes it"),
            "{notice}"
        );
    }
    assert_eq!(snapshot(&home), before);
    assert!(!site.path().join("dl").exists());
}

/// A dry run `put` into a server path a real run cannot make a directory of (a
/// file, a link, or either on the way to it): the server answers `not_found` as
/// for a directory not there yet, but the dry run finds out without writing, and
/// fails as the real run then does, with its message and exit code.
#[test]
fn a_dry_run_put_where_the_server_cannot_make_the_directory_fails_as_the_real_run() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("d")).unwrap();
    fs::write(home.join("d/f"), b"a file\n").unwrap();
    let nowhere = site.path().join("nowhere");
    symlink(&nowhere, home.join("d/dangling")).unwrap();
    let local = site.path().join("tree");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("a"), b"a\n").unwrap();
    let tree = local.to_str().unwrap();
    let server = site.serve(&[]);
    let before = snapshot(&home);
    for target in ["d/f", "d/f/x", "d/dangling", "d/dangling/x/y"] {
        let at = server.at(target);
        let dry = client(&site, "alice", &["send", tree, &at, "-n", "--delete"]);
        assert_eq!(
            snapshot(&home),
            before,
            "{target}: the dry run wrote nothing"
        );
        let real = client(&site, "alice", &["send", tree, &at, "--delete"]);
        assert_eq!(
            (code(&dry), code(&real)),
            (6, 6),
            "{target}: {}",
            stderr_of(&dry)
        );
        let failure = |run: &std::process::Output| {
            stderr_of(run)
                .lines()
                .find(|l| l.starts_with("xfer: the peer reported exists: d/"))
                .map(str::to_string)
        };
        assert!(failure(&real).is_some(), "{target}: {}", stderr_of(&real));
        assert_eq!(
            failure(&dry),
            failure(&real),
            "{target}: {}",
            stderr_of(&dry)
        );
        assert!(
            !stderr_of(&dry).contains("a real run makes it"),
            "{target}: {}",
            stderr_of(&dry)
        );
        assert!(
            stderr_of(&dry).contains("a real run fails"),
            "{target}: {}",
            stderr_of(&dry)
        );
    }
    assert_eq!(snapshot(&home), before);
    assert!(!nowhere.exists(), "nothing made through the link");
}

/// A `get -n` into a local directory a real run cannot make (a dangling link in
/// its place or on the way, a parent the user may not write): the dry run fails
/// as the real run does, instead of saying a real run makes it.
#[test]
fn a_dry_run_get_where_the_local_directory_cannot_be_made_fails_as_the_real_run() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    fs::create_dir_all(home.join("tree")).unwrap();
    fs::write(home.join("tree/a"), b"a\n").unwrap();
    let server = site.serve(&[]);
    let nowhere = site.path().join("nowhere");
    symlink(&nowhere, site.path().join("dangling")).unwrap();
    let from = server.at("tree");
    let outcome = |command: &mut std::process::Command| {
        let run = run(command);
        let error = stderr_of(&run)
            .lines()
            .find(|l| {
                l.starts_with("xfer: cannot create the local directory")
                    || l.contains("is a file, not a directory")
            })
            .map(str::to_string);
        (code(&run), error, stderr_of(&run))
    };
    fs::write(site.path().join("a_file"), b"not a directory\n").unwrap();
    for into in ["dangling", "dangling/sub", "a_file/sub", "a_file"] {
        let local = site.path().join(into);
        let local = local.to_str().unwrap();
        let dry = outcome(&mut as_user(&site, "alice", &["get", &from, local, "-n"]));
        assert!(!dry.2.contains("a real run makes it"), "{into}: {}", dry.2);
        let real = outcome(&mut as_user(&site, "alice", &["get", &from, local]));
        assert!(real.1.is_some(), "{into}: {}", real.2);
        assert_eq!((dry.0, &dry.1), (real.0, &real.1), "{into}: {}", dry.2);
        assert!(!nowhere.exists(), "{into}: nothing made through the link");
    }
    // A parent its user may not write: only an unprivileged user sees it.
    crate::util::server::chown_all(site.path());
    let read_only = site.path().join("ro");
    fs::create_dir(&read_only).unwrap();
    let local = read_only.join("x");
    let local = local.to_str().unwrap();
    let unprivileged = |args: &[&str]| {
        let mut command = crate::util::as_nobody(as_user(&site, "alice", args))?;
        command.current_dir(site.path());
        Some(command)
    };
    let Some(mut dry) = unprivileged(&["get", &from, local, "-n"]) else {
        eprintln!("skipped the read-only parent: not root, or no setpriv");
        return;
    };
    let dry = outcome(&mut dry);
    let real = outcome(&mut unprivileged(&["get", &from, local]).unwrap());
    assert!(real.1.is_some(), "read-only: {}", real.2);
    assert_eq!((dry.0, &dry.1), (real.0, &real.1), "read-only: {}", dry.2);
    assert!(!dry.2.contains("a real run makes it"), "{}", dry.2);
    assert_eq!(fs::read_dir(&read_only).unwrap().count(), 0);
}

/// A receiver that may not write where entries would arrive (a directory of its
/// tree it does not own): the dry run refuses them as the real run fails them,
/// with the same exit code, instead of listing `new dir` and `new`.
#[test]
fn a_dry_run_into_a_directory_its_receiver_may_not_write_fails_as_the_real_run() {
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    fs::write(tree.join("sub/b"), b"b\n").unwrap();
    symlink("a", tree.join("link")).unwrap();
    fs::create_dir_all(tree.join("d")).unwrap();
    fs::write(tree.join("d/f"), b"f\n").unwrap();
    let dst = root.path().join("dst");
    // The receiver's own directory, holding a `tree/` that is root's (0755), and
    // in it a file `d` where a directory arrives (a change of type it may not make).
    fs::create_dir_all(dst.join("tree")).unwrap();
    fs::write(dst.join("tree/d"), b"old\n").unwrap();
    std::os::unix::fs::lchown(&dst, Some(65534), Some(65534)).unwrap();
    let before = snapshot(&dst);
    let receiver = || crate::util::nobody_receiving(&dst);
    let Some(mut dry_receiver) = receiver() else {
        return;
    };
    let dry = send(&[&tree], dry_receiver.port, KEY, &["-n"]);
    dry_receiver.exit_code();
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(!stdout.contains("new dir  tree/sub/"), "{stdout}");
    let stderr = stderr_of(&dry);
    for said in [
        "tree/sub: cannot create directory: Permission denied",
        "tree/a: cannot create a temporary file: Permission denied",
        "tree/link: cannot make it: Permission denied",
        "tree/d: cannot remove what is in the way: Permission denied",
    ] {
        assert!(stderr.contains(said), "{said:?} in {stderr}");
    }
    assert_eq!(snapshot(&dst), before);
    let mut real_receiver = receiver().unwrap();
    let real = send(&[&tree], real_receiver.port, KEY, &[]);
    real_receiver.exit_code();
    assert_ne!(code(&real), 0, "{}", stderr_of(&real));
    let said = "tree/d: cannot remove what is in the way: Permission denied";
    assert!(stderr_of(&real).contains(said), "{}", stderr_of(&real));
    assert_eq!(code(&dry), code(&real), "{stderr}\n{}", stderr_of(&real));
}

/// A new user's finding: without `--delete`, a `send` into `recv --overwrite` sent
/// every unchanged file again (the quick check held only for a mirror's offer)
/// while its dry run called them `same`. Now the real run skips them as the dry
/// run says, and leaves them untouched (the same inode).
#[test]
fn a_plain_send_into_an_overwriting_receiver_sends_only_what_changed_as_its_dry_run_says() {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    for name in ["a", "b", "c"] {
        fs::write(tree.join(name), format!("{name}\n")).unwrap();
    }
    let dst = root.path().join("dst");
    fs::create_dir_all(&dst).unwrap();
    let mut serving = Receiver::start(&dst, Some(KEY), &["--overwrite", "--serve"]);
    assert!(send(&[&tree], serving.port, KEY, &[]).status.success());
    let inode = |name: &str| fs::metadata(dst.join("tree").join(name)).unwrap().ino();
    let before = (inode("a"), inode("b"));
    fs::write(tree.join("c"), "c, longer now\n").unwrap();

    let dry = send(&[&tree], serving.port, KEY, &["-n"]);
    let listed = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        listed.contains("same     tree/a") && listed.contains("changed  tree/c"),
        "{listed}"
    );
    let real = send(&[&tree], serving.port, KEY, &["-i"]);
    assert!(real.status.success(), "{}", stderr_of(&real));
    let itemized = String::from_utf8_lossy(&real.stdout).into_owned();
    assert_eq!(itemized.trim(), "replaced tree/c", "{itemized}");
    assert!(
        stderr_of(&real).contains("2 already there"),
        "{}",
        stderr_of(&real)
    );
    assert_eq!(
        (inode("a"), inode("b")),
        before,
        "unchanged files left alone"
    );
    assert_eq!(fs::read(dst.join("tree/c")).unwrap(), b"c, longer now\n");
    drop(serving.child.kill());
}

/// An entry the sender cannot send is `skipped` in a dry run with the same reason
/// on both sides (the receiver's line once repeated the path and ended in the
/// refusal's code: `skipped  t/fifo  (t/fifo: not sent: named pipe: ... (io))`),
/// in `--json` too.
#[test]
fn a_skipped_entry_says_the_same_reason_on_both_sides() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("t");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), b"a").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tree.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let line = "skipped  t/fifo  (named pipe: --specials sends fifos, sockets and devices)";
    let dst = root.path().join("dst");
    let mut receiver = Receiver::start(&dst, Some(KEY), &["-i"]);
    let sent = send(&[&tree], receiver.port, KEY, &["-n"]);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let sender_said = String::from_utf8_lossy(&sent.stdout).into_owned();
    assert!(sender_said.lines().any(|l| l == line), "{sender_said}");
    let receiver_said = receiver.stdout();
    assert!(receiver_said.lines().any(|l| l == line), "{receiver_said}");
    let mut receiver = Receiver::start(&dst, Some(KEY), &["--json"]);
    let sent = send(&[&tree], receiver.port, KEY, &["-n", "--json"]);
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let skipped = |text: &str| {
        events_in(text)
            .into_iter()
            .find(|e| e["event"] == "change" && e["change"] == "skipped")
            .map(|e| e["message"].clone())
    };
    let reason = "named pipe: --specials sends fifos, sockets and devices";
    assert_eq!(
        skipped(&String::from_utf8_lossy(&sent.stdout)),
        Some(reason.into())
    );
    assert_eq!(skipped(&receiver.stdout()), Some(reason.into()));
}

/// A file the receiver's disk has no room for is refused by a dry run as by the
/// real run (`too_large`, exit 6 on both sides, the file named): a dry run used to
/// say it would send it and exit 0.
#[test]
fn a_dry_run_refuses_what_the_disk_has_no_room_for_as_the_real_run() {
    let root = tempfile::tempdir().unwrap();
    let small = root.path().join("small");
    fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "xfer-test"])
        .arg(&small)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let tree = root.path().join("t");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("big"), crate::util::pattern(2 << 20, 7)).unwrap();
    let mut runs = Vec::new();
    for flags in [&["-n"][..], &[][..]] {
        let mut receiver = Receiver::start(&small, Some(KEY), &[]);
        let sent = send(&[&tree], receiver.port, KEY, flags);
        runs.push((flags, code(&sent), receiver.exit_code(), stderr_of(&sent)));
    }
    let held = small.join("t/big").exists();
    let unmounted = std::process::Command::new("umount").arg(&small).status();
    assert!(unmounted.is_ok_and(|status| status.success()));
    for (flags, sent, received, said) in runs {
        assert_eq!((sent, received), (6, 6), "{flags:?}: {said}");
        assert!(
            said.contains("t/big: needs 2.00 MiB, the receiver has"),
            "{flags:?}: {said}"
        );
    }
    assert!(!held);
}

/// An append-only directory (`chattr +a`) takes new names but lets none go, not
/// even for root, which the permission bits do not say: the dry run says `kept`
/// with the real run's error, and exits 7 as it does.
#[test]
fn a_dry_run_sees_that_an_append_only_directory_lets_nothing_go() {
    pinned_stays(
        |dst| {
            let append_only = dst.join("tree/ao");
            fs::create_dir_all(&append_only).unwrap();
            fs::write(append_only.join("gone"), b"gone\n").unwrap();
            vec![("a", append_only)]
        },
        &["kept     tree/ao/gone  (Operation not permitted (os error 1))"],
    );
}

/// An immutable file or directory (`chattr +i`) cannot be removed, not even by
/// root: the dry run says so as the real run does, where it used to list them
/// `deleted` and exit 0 before a real run that kept them and exited 7.
#[test]
fn a_dry_run_sees_that_an_immutable_file_or_directory_stays() {
    pinned_stays(
        |dst| {
            let (file, dir) = (dst.join("tree/imm"), dst.join("tree/immdir"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(&file, b"imm\n").unwrap();
            vec![("i", file), ("i", dir)]
        },
        &[
            "kept     tree/imm  (Operation not permitted (os error 1))",
            "kept     tree/immdir/  (Operation not permitted (os error 1))",
        ],
    );
}

/// A mirror of `src/tree` (just `a`) into `dst`, whose `tree` holds what
/// `make_pinned` makes and pins (`chattr +FLAG` on each path it returns), with
/// `--delete`: first a dry run (which changes nothing), then the real run; both
/// exit 7 and say `kept` for exactly the lines `kept` (sorted), and the pinned
/// entries stay.
fn pinned_stays(make_pinned: impl FnOnce(&Path) -> Vec<(&'static str, PathBuf)>, kept: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    let dst = root.path().join("dst");
    let pinned = make_pinned(&dst);
    let chattr = |flag: String, path: &Path| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(path)
            .status()
            .is_ok_and(|status| status.success())
    };
    // Lifted again whatever happens, or the temporary directory could not go.
    struct Lift(Vec<(&'static str, PathBuf)>);
    impl Drop for Lift {
        fn drop(&mut self) {
            for (flag, path) in &self.0 {
                let _ = std::process::Command::new("chattr")
                    .arg(format!("-{flag}"))
                    .arg(path)
                    .status();
            }
        }
    }
    let _lift = Lift(pinned.clone());
    for (flag, path) in &pinned {
        if !chattr(format!("+{flag}"), path) {
            eprintln!("SKIPPED: needs chattr, root and a filesystem with chattr +{flag}");
            return;
        }
    }
    // Made well before the session (a mirror spares what changed since it began).
    std::thread::sleep(Duration::from_millis(100));
    let before = snapshot(&dst);
    let mut outcomes = Vec::new();
    for flags in [&["-n", "-i", "--delete"][..], &["-i", "--delete"]] {
        let mut receiver = Receiver::start(&dst, Some(KEY), &["--overwrite"]);
        let sent = send(&[&tree], receiver.port, KEY, flags);
        assert_eq!(receiver.exit_code(), 7, "{}", receiver.stderr());
        let text = String::from_utf8_lossy(&sent.stdout).into_owned();
        let mut said: Vec<String> = (text.lines())
            .filter(|line| line.starts_with("kept"))
            .map(str::to_string)
            .collect();
        said.sort();
        outcomes.push((code(&sent), said));
        if flags[0] == "-n" {
            assert_eq!(snapshot(&dst), before, "a dry run changes nothing");
        }
    }
    let expected: Vec<String> = kept.iter().map(|line| line.to_string()).collect();
    assert_eq!(outcomes[1], (7, expected), "the real run");
    assert_eq!(
        outcomes[0], outcomes[1],
        "the dry run says what the real run does"
    );
    for (_, path) in &pinned {
        assert!(path.exists(), "{}", path.display());
    }
}

/// What `--delete` could not remove in the real run (a directory of the tree its
/// receiver may not write) is what its dry run says it could not remove, with the
/// same exit code (7): the dry run used to list it `deleted` and exit 0.
#[test]
fn a_dry_run_says_what_delete_could_not_remove_as_the_real_run() {
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tree = root.path().join("src/tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), b"a\n").unwrap();
    let dst = root.path().join("dst");
    // The receiver's own tree, but `tree/ro` is root's and holds a file the source
    // lacks.
    fs::create_dir_all(dst.join("tree/ro")).unwrap();
    fs::write(dst.join("tree/ro/gone"), b"gone\n").unwrap();
    fs::write(dst.join("tree/stale"), b"stale\n").unwrap();
    for dir in [&dst, &dst.join("tree")] {
        std::os::unix::fs::lchown(dir, Some(65534), Some(65534)).unwrap();
    }
    // Made well before the session (a mirror spares what changed since it began).
    std::thread::sleep(Duration::from_millis(100));
    let before = snapshot(&dst);
    let Some(mut dry_receiver) = crate::util::nobody_receiving(&dst) else {
        return;
    };
    let dry = send(&[&tree], dry_receiver.port, KEY, &["-n", "-i", "--delete"]);
    assert_eq!(dry_receiver.exit_code(), 7, "{}", dry_receiver.stderr());
    assert_eq!(snapshot(&dst), before);
    let mut real_receiver = crate::util::nobody_receiving(&dst).unwrap();
    let real = send(&[&tree], real_receiver.port, KEY, &["-i", "--delete"]);
    assert_eq!(real_receiver.exit_code(), 7, "{}", real_receiver.stderr());
    assert_eq!(code(&real), 7, "{}", stderr_of(&real));
    assert_eq!(code(&dry), 7, "{}", stderr_of(&dry));
    let lines = |output: &std::process::Output| -> Vec<String> {
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut lines: Vec<String> = (text.lines())
            .filter(|l| l.starts_with("deleted") || l.starts_with("kept"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(
        lines(&real),
        [
            "deleted  tree/stale",
            "kept     tree/ro/gone  (Permission denied (os error 13))"
        ]
    );
    assert_eq!(lines(&dry), lines(&real), "{}", stderr_of(&dry));
    assert!(
        stderr_of(&dry).contains("would delete 1, 1 could not be deleted;"),
        "{}",
        stderr_of(&dry)
    );
    assert!(dst.join("tree/ro/gone").exists());
}

/// At a terminal a dry run prints its lines and draws no progress bar: it moves
/// no bytes, and an empty `100% 0 B/0 B` bar was redrawn under every line.
#[test]
fn a_dry_run_at_a_terminal_draws_no_empty_progress_bar() {
    use crate::util::terminal::Terminal;
    use crate::util::{TIMEOUT, wait_for};
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
    for stale in ["s1", "s2", "s3"] {
        crate::util::server::write(&home.join("tree").join(stale), b"stale\n");
    }
    let local = site.path().join("tree");
    crate::util::server::write(&local.join("new.txt"), b"new\n");
    let server = site.serve(&[]);
    let key_file = site.key_file("alice");
    let args = [
        "send",
        "-n",
        "--delete",
        local.to_str().unwrap(),
        &server.at("/"),
        "--user",
        "alice",
        "--key-file",
        key_file.to_str().unwrap(),
    ];
    let mut term = Terminal::spawn(env!("CARGO_BIN_EXE_xfer"), &args, &[], site.path());
    assert!(wait_for(&mut term.child, TIMEOUT).success());
    let screen = term.wait_for("would delete 3");
    assert!(screen.contains("deleted  tree/s3"), "{screen:?}");
    assert!(!screen.contains("0 B/0 B"), "{screen:?}");
}
