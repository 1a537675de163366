//! A quota of `xfer serve` counts every entry, not only files: each directory is
//! 4096 bytes and one of `max_files`, each symbolic link its target's length and
//! one. Made until refused (by `mkdir`, by a put of empty directories, by a deep
//! chain, by two clients at once), given back by `rm -r` and `--delete` so that as
//! much fits again, and always checked from outside: the home is walked on disk
//! (`site::on_disk`, which adds up the rule itself) and never trusted to the
//! server's own report, which must then equal it, before and after a restart.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::util::peer::SendEntry;
use crate::util::server::{Server, Site, client, expect_exit, expect_refused, send_as, stdout_of};
use crate::util::site::{check_home, on_disk, remote_code};
use crate::util::stderr_of;

/// 64 KiB: room for 16 directories and nothing else.
const QUOTA: u64 = 64 << 10;
const DIR: u64 = 4096;

/// Asserts what is on disk beneath `user`'s home, counted from outside, is within
/// `quota` bytes and `entries` entries, equals `xfer ls --usage --json`, and equals
/// it again after the server restarts (the first count); returns the count and the
/// restarted server.
#[track_caller]
fn checked_through_a_restart(
    site: &Site,
    server: Server,
    user: &str,
    (quota, entries): (u64, u64),
) -> ((u64, u64), Server) {
    let disk = on_disk(&site.home(user));
    assert!(disk.0 <= quota, "{disk:?} on disk, quota {quota} bytes");
    assert!(disk.1 <= entries, "{disk:?} on disk, max {entries} entries");
    assert_eq!(usage_by_ls(site, &server, user), disk, "ls --usage");
    drop(server);
    let server = site.serve(&[]);
    assert_eq!(usage_by_ls(site, &server, user), disk, "after a restart");
    (disk, server)
}

/// `xfer ls --usage --json` as `user`: (bytes, entries).
fn usage_by_ls(site: &Site, server: &Server, user: &str) -> (u64, u64) {
    let output = client(site, user, &["ls", "--usage", "--json", &server.addr()]);
    expect_exit(&output, 0, "ls --usage");
    let usage: Value = serde_json::from_str(stdout_of(&output).trim()).unwrap();
    (
        usage["bytes"].as_u64().unwrap(),
        usage["files"].as_u64().unwrap(),
    )
}

/// `mkdir` of `paths` one after the other on one connection, until the first
/// refusal: how many went through, and the code of that refusal.
fn mkdir_until_refused(server: &Server, user: &str, paths: &[String]) -> (usize, Option<String>) {
    let mut peer = server.login(user);
    for (made, path) in paths.iter().enumerate() {
        if let Some(code) = remote_code(peer.mkdir(path)) {
            return (made, Some(code));
        }
    }
    (paths.len(), None)
}

/// A local tree `name` of `count` empty directories, or of one chain of them.
fn local_dirs(site: &Site, name: &str, count: usize, chain: bool) -> std::path::PathBuf {
    let root = site.path().join("local").join(name);
    fs::create_dir_all(&root).unwrap();
    for i in 0..count {
        let path = match chain {
            true => (0..=i).map(|_| "c").collect::<Vec<_>>().join("/"),
            false => format!("e{i:02}"),
        };
        fs::create_dir_all(root.join(path)).unwrap();
    }
    root
}

fn depth_below(dir: &Path) -> usize {
    match fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
    {
        Some(child) => 1 + depth_below(&child.path()),
        None => 0,
    }
}

#[test]
fn mkdir_makes_directories_until_the_quota_and_never_past_it() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"64 KiB\"")]);
    let server = site.serve(&[]);
    let names: Vec<String> = (0..40).map(|i| format!("d{i:02}")).collect();
    let (made, refused) = mkdir_until_refused(&server, "alice", &names);
    assert_eq!((made, refused.as_deref()), (16, Some("quota")));
    assert_eq!(on_disk(&site.home("alice")), (QUOTA, 16));
    assert!(!site.home("alice").join("d16").exists());
    // The command line says so: exit 6, quota, and nothing made.
    let mkdir = client(&site, "alice", &["mkdir", &server.at("more")]);
    expect_refused(&mkdir, "over the quota", "mkdir past the quota");
    let said = stderr_of(&mkdir);
    assert!(
        said.contains("the home holds 64.00 KiB of 64.00 KiB"),
        "{said}"
    );
    assert!(!site.home("alice").join("more").exists());
    // `rm` of four gives room for four; a chain of 30 stops after four, which stay.
    for name in &names[..4] {
        server.login("alice").remove(name).expect("rm");
    }
    let chain = (1..=30).map(|n| vec!["c"; n].join("/")).collect::<Vec<_>>();
    let deep = client(&site, "alice", &["mkdir", &server.at(&chain[29])]);
    expect_refused(&deep, "quota", "a chain of 30 directories");
    assert_eq!(depth_below(&site.home("alice").join("c")), 3);
    check_home(&site, &server, "alice", QUOTA);
    let (disk, _server) = checked_through_a_restart(&site, server, "alice", (QUOTA, 16));
    assert_eq!(disk, (QUOTA, 16));
}

#[test]
fn a_put_of_empty_directories_or_of_a_deep_chain_stops_at_the_quota() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"64 KiB\"")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    // `flat` and 40 empty directories in it: `flat` and 15 of them fit.
    let flat = local_dirs(&site, "flat", 40, false);
    let put = send_as(&site, "alice", &[&flat], &server.addr());
    expect_refused(&put, "quota", "40 empty directories into 64 KiB");
    assert_eq!(fs::read_dir(home.join("flat")).unwrap().count(), 15);
    check_home(&site, &server, "alice", QUOTA);
    // A file beneath a directory that did not fit is refused too, and not written.
    let with_file = site.path().join("local/flat/e39/inside.txt");
    fs::write(&with_file, b"a file in a directory that did not fit").unwrap();
    let again = send_as(&site, "alice", &[&flat], &server.addr());
    expect_refused(&again, "quota", "a file beneath a refused directory");
    assert!(!home.join("flat/e39").exists());
    check_home(&site, &server, "alice", QUOTA);
    // Room back with `rm -r`, then a chain of 40: 16 levels fit, no more.
    let rm = client(&site, "alice", &["rm", "-r", &server.at("flat")]);
    expect_exit(&rm, 0, "rm -r");
    assert_eq!(on_disk(&home), (0, 0), "rm -r gave everything back");
    let chain = local_dirs(&site, "chain", 40, true);
    let put = send_as(&site, "alice", &[&chain], &server.addr());
    expect_refused(&put, "quota", "a chain of 41 directories into 64 KiB");
    assert_eq!(depth_below(&home.join("chain")), 15);
    let (disk, _server) = checked_through_a_restart(&site, server, "alice", (QUOTA, 16));
    assert_eq!(disk, (QUOTA, 16));
}

#[test]
fn max_files_bounds_directories_and_links_as_it_bounds_files() {
    let site = Site::new();
    site.users(&[("alice", "max_files = 50")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    // 30 directories and 30 links, each link's target 40 bytes long.
    let tree = site.path().join("local/mixed");
    for i in 0..30 {
        fs::create_dir_all(tree.join(format!("d{i:02}"))).unwrap();
        let target = format!("{:0>40}", i);
        std::os::unix::fs::symlink(&target, tree.join(format!("l{i:02}"))).unwrap();
    }
    let put = send_as(&site, "alice", &[&tree], &server.addr());
    expect_refused(&put, "quota", "61 entries for a quota of 50");
    let disk = on_disk(&home);
    assert_eq!(disk.1, 50, "{disk:?}");
    // `mixed` and its 30 directories, then the links while they fit: 19.
    let links = fs::read_dir(home.join("mixed"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_symlink())
        .count();
    assert_eq!(links, 19);
    assert_eq!(
        disk.0,
        31 * DIR + 19 * 40,
        "a link counts its target's length"
    );
    // A directory is refused as a file would be.
    let mkdir = client(&site, "alice", &["mkdir", &server.at("one-more")]);
    expect_refused(&mkdir, "quota", "mkdir past max_files");
    // Ten links removed: ten fit again, and the rest is still refused.
    for i in 0..10 {
        let rm = client(
            &site,
            "alice",
            &["rm", &server.at(&format!("mixed/l{i:02}"))],
        );
        expect_exit(&rm, 0, "rm of a link");
    }
    assert_eq!(on_disk(&home).1, 40);
    let put = send_as(&site, "alice", &[&tree], &server.addr());
    expect_refused(&put, "quota", "the links again");
    assert_eq!(on_disk(&home).1, 50);
    check_home(&site, &server, "alice", u64::MAX);
    let (disk, _server) = checked_through_a_restart(&site, server, "alice", (u64::MAX, 50));
    assert_eq!(disk.1, 50);
}

#[test]
fn rm_r_and_delete_give_directories_back_and_as_many_fit_again() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"64 KiB\"")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    // `tree` and 12 directories with a link each (13 + 12 * 7 bytes of links).
    let tree = site.path().join("local/tree");
    for i in 0..12 {
        fs::create_dir_all(tree.join(format!("d{i:02}"))).unwrap();
        std::os::unix::fs::symlink("../file", tree.join(format!("d{i:02}/link"))).unwrap();
    }
    let put = send_as(&site, "alice", &[&tree], &server.addr());
    expect_exit(&put, 0, "13 directories and 12 links");
    assert_eq!(on_disk(&home), (13 * DIR + 12 * 7, 25));
    // Two more directories fit beside them, a third does not.
    let more: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
    let (made, refused) = mkdir_until_refused(&server, "alice", &more);
    assert_eq!((made, refused.as_deref()), (2, Some("quota")));
    // `--delete` of eight directories (and their links) gives eight back.
    for i in 0..8 {
        fs::remove_dir_all(tree.join(format!("d{i:02}"))).unwrap();
    }
    let mirror = client(
        &site,
        "alice",
        &["send", "--delete", tree.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&mirror, 0, "--delete");
    assert_eq!(on_disk(&home), (7 * DIR + 4 * 7, 11));
    let again: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
    let (made, refused) = mkdir_until_refused(&server, "alice", &again);
    assert_eq!((made, refused.as_deref()), (8, Some("quota")));
    check_home(&site, &server, "alice", QUOTA);
    // `rm -r` of the tree gives back its five directories and four links: room
    // for six directories.
    let rm = client(&site, "alice", &["rm", "-r", &server.at("tree")]);
    expect_exit(&rm, 0, "rm -r");
    let (made, _) = mkdir_until_refused(&server, "alice", &again[8..]);
    assert_eq!(made, 6);
    let (disk, _server) = checked_through_a_restart(&site, server, "alice", (QUOTA, 16));
    assert_eq!(disk, (QUOTA, 16));
}

#[test]
fn two_clients_making_directories_at_once_share_one_quota() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"64 KiB\"")]);
    let server = site.serve(&[]);
    let made: usize = std::thread::scope(|scope| {
        let clients: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|who| {
                let server = &server;
                scope.spawn(move || {
                    let mut peer = server.login("alice");
                    let mut made = 0;
                    for i in 0..40 {
                        match remote_code(peer.mkdir(&format!("{who}{i:02}"))) {
                            None => made += 1,
                            Some(code) => assert_eq!(code, "quota"),
                        }
                    }
                    made
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    });
    assert_eq!(made, 16, "between them, as many as the quota holds");
    assert_eq!(on_disk(&site.home("alice")), (QUOTA, 16));
    check_home(&site, &server, "alice", QUOTA);
    checked_through_a_restart(&site, server, "alice", (QUOTA, 16));
}

#[test]
fn changes_of_type_give_back_what_they_replace() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"64 KiB\"")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    // On the server: `t/a` a link, `t/b` a directory holding a directory and a link.
    let tree = site.path().join("local/t");
    fs::create_dir_all(tree.join("b/inner")).unwrap();
    std::os::unix::fs::symlink("somewhere", tree.join("a")).unwrap();
    std::os::unix::fs::symlink("x", tree.join("b/inner/l")).unwrap();
    let put = send_as(&site, "alice", &[&tree], &server.addr());
    expect_exit(&put, 0, "the first tree");
    assert_eq!(on_disk(&home), (3 * DIR + 9 + 1, 5));
    // Then `a` becomes a directory and `b` a link, with `-f --delete`.
    fs::remove_file(tree.join("a")).unwrap();
    fs::create_dir(tree.join("a")).unwrap();
    fs::remove_dir_all(tree.join("b")).unwrap();
    std::os::unix::fs::symlink("elsewhere", tree.join("b")).unwrap();
    let args = [
        "send",
        "-f",
        "--delete",
        tree.to_str().unwrap(),
        &server.addr(),
    ];
    let put = client(&site, "alice", &args);
    expect_exit(&put, 0, "the changes of type");
    assert!(fs::symlink_metadata(home.join("t/b")).unwrap().is_symlink());
    assert!(home.join("t/a").is_dir());
    assert_eq!(on_disk(&home), (2 * DIR + 9, 3));
    check_home(&site, &server, "alice", QUOTA);
    // And back, which fills the room freed exactly.
    let (made, refused) = mkdir_until_refused(&server, "alice", &names(20));
    assert_eq!((made, refused.as_deref()), (13, Some("quota")));
    checked_through_a_restart(&site, server, "alice", (QUOTA, 16));
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("n{i:02}")).collect()
}

/// An offer need not list the directories above a file (the independent peer's
/// does not): the server makes them while planning, charged before the file is
/// admitted, and refuses the file `quota` in the plan where they do not fit.
#[test]
fn directories_an_offer_does_not_list_are_charged_before_its_file() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"64 KiB\"")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    let (made, _) = mkdir_until_refused(&server, "alice", &names(15));
    assert_eq!(made, 15);
    let mut peer = server.login("alice");
    let report = peer
        .put("", &[SendEntry::file("p/q/f", b"1".to_vec())])
        .expect("put");
    assert_eq!(report.plan[0]["code"], "quota", "{report:?}");
    assert!(home.join("p").is_dir() && !home.join("p/q").exists());
    assert_eq!(on_disk(&home), (QUOTA, 16));
    // Three directories removed: `q` and the file fit, and arrive.
    for name in ["n00", "n01", "n02"] {
        peer.remove(name).expect("rm");
    }
    let report = peer
        .put("", &[SendEntry::file("p/q/f", b"1".to_vec())])
        .expect("put");
    assert!(report.delivered(0), "{report:?}");
    assert_eq!(on_disk(&home), (14 * DIR + 1, 15));
    assert_eq!(fs::read(home.join("p/q/f")).unwrap(), b"1");
    check_home(&site, &server, "alice", QUOTA);
}
