//! Quotas of `xfer serve` that cannot be overshot (issue 18): cut overwrites that
//! used to pile up partials outside the quota, a `remove` or `rename` of a path
//! another session is writing (now `busy`), directories offered with mode 0000 to
//! a server that is not root, trees deeper than the count walks, `mkdir ""`, and a
//! first login that counts a large home without holding up other users. After
//! every test the home is walked from outside and must hold at most the quota,
//! exactly what `usage` says.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::util;
use crate::util::pattern;
use crate::util::peer::SendEntry;
use crate::util::server::Site;
use crate::util::server::write;
use crate::util::site::{
    check_home, cut_put, finish_put, on_disk, remote_code, send_part, start_put,
};

const QUOTA: u64 = 1_000_000;

/// Finding 1: resending existing files with `-f` and cutting each run used to leave
/// a partial per size, outside the quota (309% used).
#[test]
fn cut_overwrites_never_pile_up_partials_past_the_quota() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    for i in 0..3 {
        write(
            &site.home("alice").join(format!("f{i}")),
            &pattern(250_000, i),
        );
    }
    let server = site.serve(&[]);
    for run in 0..4u64 {
        let size = 240_000 - run as usize * 1000;
        let entry = SendEntry::file("f0", pattern(size, 10 + run));
        let plan = cut_put(server.login("alice"), "", true, &[entry], size / 2);
        server.wait_for_log("alice put .:", run as usize + 1);
        let disk = on_disk(&site.home("alice"));
        assert!(
            disk.0 <= QUOTA,
            "after cut {run}: {disk:?} on disk, plan {plan:?}"
        );
    }
    check_home(&site, &server, "alice", QUOTA);
}

/// A user with `f` (500 000 bytes) of a 1 MB quota overwrites it in one session
/// and is halfway when `act` runs in another; returns `act`'s outcome and the
/// overwrite's answer.
fn race_an_overwrite(
    act: impl FnOnce(&util::server::Server) -> Option<String>,
) -> (
    Site,
    util::server::Server,
    Option<String>,
    serde_json::Value,
) {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    write(&site.home("alice").join("f"), &pattern(500_000, 1));
    let server = site.serve(&[]);
    let mut writer = server.login("alice");
    let new = pattern(500_000, 2);
    let plan = start_put(&mut writer, "", true, &[SendEntry::file("f", new.clone())]);
    assert_eq!(plan[0]["action"], "send", "{plan:?}");
    send_part(&mut writer, 0, &new, 0, 250_000);
    let outcome = act(&server);
    let answer = finish_put(&mut writer, 0, "f", &new, 250_000);
    (site, server, outcome, answer)
}

/// Finding 2: a `remove` of a file being overwritten gave its bytes back twice.
#[test]
fn a_remove_of_a_path_being_written_is_busy() {
    let (site, server, outcome, answer) =
        race_an_overwrite(|server| remote_code(server.login("alice").remove("f")));
    assert_eq!(outcome.as_deref(), Some("busy"));
    assert_eq!(answer["type"], "ok", "{answer}");
    assert_eq!(
        fs::read(site.home("alice").join("f")).unwrap(),
        pattern(500_000, 2)
    );
    // Once the write settled, the remove goes through.
    server
        .login("alice")
        .remove("f")
        .expect("removed after the write");
    check_home(&site, &server, "alice", QUOTA);
    // And the quota still holds: 1 MB more does not fit, 600 kB does once.
    let mut peer = server.login("alice");
    let report = peer
        .put(
            "",
            &[
                SendEntry::file("a", pattern(600_000, 3)),
                SendEntry::file("b", pattern(600_000, 4)),
            ],
        )
        .expect("put");
    assert!(report.delivered(0) && !report.delivered(1), "{report:?}");
    check_home(&site, &server, "alice", QUOTA);
}

/// Finding 3: a `rename` of a file being overwritten, likewise.
#[test]
fn a_rename_of_a_path_being_written_or_of_its_directory_is_busy() {
    let (site, server, outcome, answer) =
        race_an_overwrite(|server| remote_code(server.login("alice").rename("f", "g")));
    assert_eq!(outcome.as_deref(), Some("busy"));
    assert_eq!(answer["type"], "ok", "{answer}");
    check_home(&site, &server, "alice", QUOTA);
    // A directory above a path being written is claimed too.
    let mut writer = server.login("alice");
    let content = pattern(100_000, 5);
    start_put(
        &mut writer,
        "",
        false,
        &[SendEntry::dir("d"), SendEntry::file("d/x", content.clone())],
    );
    send_part(&mut writer, 1, &content, 0, 50_000);
    assert_eq!(
        remote_code(server.login("alice").rename("d", "e")).as_deref(),
        Some("busy")
    );
    assert_eq!(
        remote_code(server.login("alice").remove("d")).as_deref(),
        Some("busy")
    );
    let answer = finish_put(&mut writer, 1, "d/x", &content, 50_000);
    assert_eq!(answer["type"], "ok", "{answer}");
    server
        .login("alice")
        .rename("d", "e")
        .expect("renamed after the write");
    assert_eq!(fs::read(site.home("alice").join("e/x")).unwrap(), content);
    // The directory a put writes into is held from its `ack` on, before any offer.
    let mut putting = server.login("alice");
    putting
        .send_control(&serde_json::json!({"type": "put", "dir": "e"}))
        .unwrap();
    putting.expect("ack").unwrap();
    assert_eq!(
        remote_code(server.login("alice").rename("e", "e2")).as_deref(),
        Some("busy")
    );
    drop(putting);
    util::server::eventually("the put's directory is let go", || {
        server.login("alice").rename("e", "e2").is_ok()
    });
    check_home(&site, &server, "alice", QUOTA);
}

/// Finding 4: a directory offered with mode 0000 to a server that is not root
/// dropped out of the count (1.8 MB on disk, quota 1 MB). The server keeps the
/// owner's bits; the others are applied as offered.
#[test]
fn a_directory_offered_mode_0000_stays_counted_on_an_unprivileged_server() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let Some(server) = site.serve_unprivileged() else {
        return;
    };
    let mut peer = server.login("alice");
    let report = peer
        .put(
            "",
            &[
                SendEntry::dir("locked").mode(0o000),
                SendEntry::file("locked/a", pattern(600_000, 1)).mode(0o004),
            ],
        )
        .expect("put");
    assert!(report.delivered(1), "{report:?}");
    let mode = |p: &str| {
        fs::metadata(site.home("alice").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("locked"), 0o700);
    assert_eq!(mode("locked/a"), 0o604);
    // A cut upload (which used to trigger a recount), then 600 kB more.
    cut_put(
        server.login("alice"),
        "",
        false,
        &[SendEntry::file("b", pattern(300_000, 2))],
        100_000,
    );
    server.wait_for_log("alice put .:", 2);
    let report = server
        .login("alice")
        .put("", &[SendEntry::file("c", pattern(600_000, 3))])
        .expect("put");
    assert!(!report.delivered(0), "600 kB more was taken: {report:?}");
    check_home(&site, &server, "alice", QUOTA);
}

/// Finding 5: a file deeper than the count walks was never counted again. Paths
/// deeper than 256 components are refused `bad_path` at plan time (and by
/// `mkdir`); 256 are kept and counted (the directories too, 4096 bytes each).
#[test]
fn paths_deeper_than_the_count_are_refused_and_the_deepest_kept_are_counted() {
    // 255 directories take 1 044 480 bytes of the quota.
    let quota = 2_000_000;
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {quota}"))]);
    let server = site.serve(&[]);
    let dirs = |n: usize| vec!["d"; n].join("/");
    let too_deep = format!("{}/f", dirs(257));
    let deepest = format!("{}/g", dirs(255));
    let mut peer = server.login("alice");
    let report = peer
        .put(
            "",
            &[
                SendEntry::file(&too_deep, pattern(600_000, 1)),
                SendEntry::file(&deepest, pattern(300_000, 2)),
            ],
        )
        .expect("put");
    assert_eq!(report.plan[0]["code"], "bad_path", "{report:?}");
    assert!(report.delivered(1), "{report:?}");
    assert_eq!(
        remote_code(peer.mkdir(&dirs(257))).as_deref(),
        Some("bad_path")
    );
    // Into a directory 255 deep, only one more component fits.
    let report = peer
        .put(&dirs(255), &[SendEntry::file("x/y", b"two deep".to_vec())])
        .expect("put");
    assert_eq!(report.plan[0]["code"], "bad_path", "{report:?}");
    // A cut upload, then a server restarted: the deepest file still counts.
    cut_put(
        server.login("alice"),
        "",
        false,
        &[SendEntry::file("b", pattern(300_000, 3))],
        100_000,
    );
    server.wait_for_log("alice put .:", 3);
    drop(server);
    let server = site.serve(&[]);
    let report = server
        .login("alice")
        .put("", &[SendEntry::file("c", pattern(800_000, 4))])
        .expect("put");
    assert!(!report.delivered(0), "800 kB more was taken: {report:?}");
    check_home(&site, &server, "alice", quota);
}

/// The bytes of the longest path beneath `dir`, as `find` walks it (it reaches
/// paths longer than a system call takes; `std::fs` by path would skip them).
fn longest_path(dir: &std::path::Path) -> usize {
    let found = std::process::Command::new("find")
        .arg(dir)
        .args(["-mindepth", "1", "-printf", "%P\\n"])
        .output()
        .expect("find");
    let listed = String::from_utf8(found.stdout).expect("UTF-8 names");
    listed.lines().map(str::len).max().unwrap_or(0)
}

/// A `put` into a directory whose path was near 4096 bytes made paths in the home
/// longer than any request may name: `ls -R`, `get` and `rm -r` of the tree then
/// failed `bad_path`, and the files (and their room in the quota) could be reached
/// or removed by nobody but the administrator; so could what a `rename` moved
/// below such a directory. Both are refused `bad_path` now, and everything kept
/// stays nameable, so removable.
#[test]
fn paths_longer_than_a_request_may_name_are_never_made() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let server = site.serve(&[]);
    let name = "n".repeat(250);
    let near = vec![name.as_str(); 16].join("/"); // 4 015 bytes
    let mut peer = server.login("alice");
    peer.mkdir(&near).expect("mkdir");
    let too_long = format!("{name}/f");
    let entries = [
        SendEntry::file("short", b"fits".to_vec()),
        SendEntry::file(&too_long, b"too long".to_vec()),
    ];
    let report = peer.put(&near, &entries).expect("put");
    assert!(report.delivered(0), "{report:?}");
    assert_eq!(report.plan[1]["code"], "bad_path", "{report:?}");
    let tree = format!("t/{name}/f");
    let report = peer
        .put("", &[SendEntry::file(&tree, b"moved".to_vec())])
        .expect("put");
    assert!(report.delivered(0), "{report:?}");
    let moved = peer.rename("t", &format!("{near}/t"));
    assert_eq!(remote_code(moved).as_deref(), Some("bad_path"));
    assert_eq!(fs::read(site.home("alice").join(&tree)).unwrap(), b"moved");
    let longest = longest_path(&site.home("alice"));
    assert!(longest <= 4096, "a path of {longest} bytes in the home");
    for path in [
        tree.clone(),
        format!("t/{name}"),
        "t".into(),
        format!("{near}/short"),
    ] {
        peer.remove(&path)
            .expect("every entry kept can be removed by request");
    }
    check_home(&site, &server, "alice", QUOTA);
}

/// Links and hard links were not held to the depth and length files are: a hard
/// link 257 components deep was made and charged, but no count made again (at a
/// reload, by the hourly sweep) reaches that deep, so its file's bytes left the
/// count: 1.5 MB beyond what `usage` said after one reload, and as much again at
/// each round of hard link, `rm` of the file and reload. Both kinds are refused
/// `bad_path` there now, and at a path longer than a request may name.
#[test]
fn links_and_hard_links_are_held_to_the_depth_and_length_files_are() {
    let quota = 10_000_000;
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {quota}"))]);
    let server = site.serve(&[]);
    let deep = vec!["d"; 253].join("/");
    let name = "n".repeat(250);
    let near = vec![name.as_str(); 16].join("/"); // 4 015 bytes
    let mut peer = server.login("alice");
    peer.mkdir(&deep).expect("mkdir");
    peer.mkdir(&near).expect("mkdir");
    let big = site.local("tree/big", &pattern(1_500_000, 7));
    let tree = big.parent().expect("tree").to_path_buf();
    fs::create_dir_all(tree.join("z/y")).unwrap();
    fs::hard_link(&big, tree.join("z/y/h")).unwrap();
    std::os::unix::fs::symlink("target", tree.join("z/y/l")).unwrap();
    std::os::unix::fs::symlink("target", tree.join("k".repeat(250))).unwrap();
    let deeper = util::server::send_as(&site, "alice", &[&tree], &server.at(&deep));
    let longer = util::server::send_as(&site, "alice", &[&tree], &server.at(&near));
    peer.remove(&format!("{deep}/tree/big")).expect("rm");
    server.reload(1);
    server.wait_for_log("counted", 1);
    check_home(&site, &server, "alice", quota);
    util::server::expect_exit(&deeper, 6, "the links 257 deep refused");
    util::server::expect_exit(&longer, 6, "the entries past 4096 bytes refused");
    let home = site.home("alice");
    assert_eq!(
        depth_below(&home),
        256,
        "nothing deeper than the count walks"
    );
    let longest = longest_path(&home);
    assert!(longest <= 4096, "a path of {longest} bytes in the home");
}

/// How many components the deepest entry beneath `dir` has.
fn depth_below(dir: &std::path::Path) -> usize {
    let found = std::process::Command::new("find")
        .arg(dir)
        .args(["-mindepth", "1", "-printf", "%d\\n"])
        .output()
        .expect("find");
    let listed = String::from_utf8(found.stdout).expect("digits");
    listed
        .lines()
        .filter_map(|d| d.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Finding 8: `""` names the home only for `list` and as `put`'s directory.
#[test]
fn mkdir_of_the_empty_path_is_a_bad_path() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let server = site.serve(&[]);
    assert_eq!(
        remote_code(server.login("alice").mkdir("")).as_deref(),
        Some("bad_path")
    );
    check_home(&site, &server, "alice", QUOTA);
}

/// Also seen: the first login counted the home under a lock every user shared, so
/// one large home held up every other user's login.
#[test]
fn counting_a_large_home_holds_up_only_its_own_user() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}")), ("bob", "")]);
    // Many entries, cheap to make: symbolic links (each one looked at, none counted).
    for d in 0..60 {
        let dir = site.home("bob").join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            std::os::unix::fs::symlink("x", dir.join(format!("l{f}"))).unwrap();
        }
    }
    let server = site.serve(&[]);
    let (bob, alice) = std::thread::scope(|scope| {
        let bob = scope.spawn(|| {
            let mut peer = server.login("bob");
            let started = Instant::now();
            peer.list("").expect("bob's listing");
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let mut peer = server.login("alice");
        peer.list("").expect("alice's listing");
        let alice = started.elapsed();
        (bob.join().unwrap(), alice)
    });
    eprintln!("bob's first request took {bob:?}, alice's login and request {alice:?}");
    if bob < Duration::from_millis(100) {
        eprintln!("skipped: counting bob's home took too little time to tell ({bob:?})");
        return;
    }
    assert!(
        alice * 4 < bob,
        "alice waited for bob's count: {alice:?} against {bob:?}"
    );
    check_home(&site, &server, "alice", QUOTA);
    assert_eq!(server.usage("bob"), on_disk(&site.home("bob")));
}

/// A mirror whose new file fits the quota only once its stale files are gone: the
/// file is refused (`--delete` removes what the source lacks only after the rest
/// arrived), the stale file goes, and the client says to run it again, which then
/// completes; the home never holds more than the quota.
#[test]
fn a_mirror_that_fits_only_after_its_deletions_says_to_run_again() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    let home = site.home("alice");
    write(&home.join("tree/stale"), &pattern(700_000, 1));
    let local = site.local("tree/new", &pattern(500_000, 2));
    let tree = local.parent().unwrap().to_str().unwrap().to_string();
    let server = site.serve(&[]);
    let mirror = || {
        let args = ["send", "--delete", &tree, &server.at("/")];
        crate::util::server::client(&site, "alice", &args)
    };
    let first = mirror();
    let said = util::stderr_of(&first);
    assert_eq!(first.status.code(), Some(6), "{said}");
    assert!(said.contains("over the quota"), "{said}");
    assert!(
        said.contains("1 file refused over the quota before --delete made room")
            && said.contains("run the same command again to send it"),
        "{said}"
    );
    assert_eq!(
        crate::util::server::names_in(&home.join("tree")),
        Vec::<String>::new()
    );
    let second = mirror();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        util::stderr_of(&second)
    );
    assert!(!util::stderr_of(&second).contains("run the same command again"));
    assert_eq!(crate::util::server::names_in(&home.join("tree")), ["new"]);
    check_home(&site, &server, "alice", 1_000_000);
}

/// The same mirror with `--json`: the summary event says how many files a run
/// again would send (`run_again`), as the text does in words; the second run's
/// has none.
#[test]
fn a_mirror_that_fits_only_after_its_deletions_says_run_again_in_json() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    write(&site.home("alice").join("tree/stale"), &pattern(700_000, 1));
    let local = site.local("tree/new", &pattern(500_000, 2));
    let tree = local.parent().unwrap().to_str().unwrap().to_string();
    let server = site.serve(&[]);
    let mirror = |dry: bool| {
        let mut args = vec!["send", "--json", "--delete", &tree];
        if dry {
            args.push("-n");
        }
        let at = server.at("/");
        args.push(&at);
        crate::util::server::client(&site, "alice", &args)
    };
    // A dry run deletes nothing: nothing to run again for.
    let dry = mirror(true);
    let summary = util::summary_event(&dry);
    assert!(summary.get("run_again").is_none(), "{summary}");
    let first = mirror(false);
    assert_eq!(first.status.code(), Some(6), "{}", util::stderr_of(&first));
    let summary = util::summary_event(&first);
    assert_eq!(summary["run_again"], 1, "{summary}");
    let second = mirror(false);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        util::stderr_of(&second)
    );
    let summary = util::summary_event(&second);
    assert!(summary.get("run_again").is_none(), "{summary}");
}
