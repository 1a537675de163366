//! Partials of `xfer serve` are ours or nothing (issue 18, finding 7): something
//! planted under the name of a user's next partial — a hard link to another user's
//! file, a file the server did not make — is never offered to resume from (its
//! length is not told), never truncated or written; a fresh temporary is used.
//! And a partial keeps no directory from `rm` or `rm -r`: what `ls` shows empty
//! is empty, and the partial's room comes back (unless an upload into it runs).

use std::fs;

use sha2::{Digest, Sha256};

use crate::util;
use crate::util::pattern;
use crate::util::peer::SendEntry;
use crate::util::server::write;
use crate::util::server::{Site, client, code, names_in};
use crate::util::site::{check_home, cut_put, on_disk, put_begun};
use crate::util::stderr_of;

const QUOTA: u64 = 1_000_000;

/// The name the server keeps partial data of `name` offered with `size` bytes under.
fn partial_name(name: &str, size: u64) -> String {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0])
        .chain_update(size.to_be_bytes())
        .finalize();
    format!(".xfer-{}.partial", &util::peer::hex(&digest)[..32])
}

/// Finding 7: a hard link to bob's file under alice's next partial's name was
/// taken as her partial: its length offered, then the shared inode rewritten.
#[test]
fn a_hard_link_under_a_partials_name_is_never_resumed_or_written() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000"), ("bob", "")]);
    let bobs = pattern(100_000, 1);
    write(&site.home("bob").join("secret"), &bobs);
    fs::create_dir_all(site.home("alice")).unwrap();
    let planted = site.home("alice").join(partial_name("f", 300_000));
    fs::hard_link(site.home("bob").join("secret"), &planted).unwrap();
    let server = site.serve(&[]);
    // And a plain file, one link, that the server never made (planted once it runs:
    // one left from before its start, unmarked, it removes at once as a complete
    // file a killed server sealed and never named).
    let foreign = site.home("alice").join(partial_name("g", 300_000));
    fs::write(&foreign, pattern(50_000, 2)).unwrap();
    let alices = pattern(300_000, 3);
    let report = server
        .login("alice")
        .put(
            "",
            &[
                SendEntry::file("f", alices.clone()),
                SendEntry::file("g", alices.clone()),
            ],
        )
        .expect("put");
    for decision in &report.plan {
        assert_eq!(decision["offset"], 0, "a length was disclosed: {report:?}");
    }
    assert!(report.delivered(0) && report.delivered(1), "{report:?}");
    assert_eq!(fs::read(site.home("bob").join("secret")).unwrap(), bobs);
    assert_eq!(fs::read(&planted).unwrap(), bobs, "left alone");
    assert_eq!(
        fs::read(&foreign).unwrap(),
        pattern(50_000, 2),
        "left alone"
    );
    assert_eq!(fs::read(site.home("alice").join("f")).unwrap(), alices);
    check_home(&site, &server, "alice", 1_000_000);
}

/// A partial the server made itself is still resumed after a cut.
#[test]
fn the_servers_own_partial_is_resumed() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    let server = site.serve(&[]);
    let content = pattern(300_000, 4);
    util::site::cut_put(
        server.login("alice"),
        "",
        false,
        &[SendEntry::file("f", content.clone())],
        200_000,
    );
    server.wait_for_log("alice put .:", 1);
    check_home(&site, &server, "alice", 1_000_000);
    let report = server
        .login("alice")
        .put("", &[SendEntry::file("f", content.clone())])
        .expect("put");
    assert!(report.plan[0]["offset"].as_u64().unwrap() > 0, "{report:?}");
    assert!(report.delivered(0), "{report:?}");
    assert_eq!(fs::read(site.home("alice").join("f")).unwrap(), content);
    check_home(&site, &server, "alice", 1_000_000);
}

/// Finding 2 of the attack on `serve`: a partial left by a cut upload is
/// invisible to `ls`, refused by `rm` (a reserved name), and kept its directory
/// from `rm -r`, which answered "not empty (`rm -r` removes it ...)" to the very
/// `rm -r` it was: the partial held its share of the quota until
/// `--keep-partial`, with no way for the user to get it back. Now the directory
/// goes with the partials in it, at any depth, and their room comes back.
#[test]
fn rm_r_removes_a_directory_holding_a_partial_and_gives_its_room_back() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let server = site.serve(&[]);
    for (n, path) in ["d/big.bin", "d/sub/deeper.bin"].into_iter().enumerate() {
        let entry = SendEntry::file(path, pattern(400_000, 3 + n as u64));
        cut_put(server.login("alice"), "", false, &[entry], 200_000);
        server.wait_for_log("alice put .:", n + 1);
    }
    for dir in ["d", "d/sub"] {
        let partials = names_in(&site.home("alice").join(dir));
        assert!(
            partials.iter().any(|n| n.ends_with(".partial")),
            "the cut left a partial in {dir}: {partials:?}"
        );
    }
    let removed = client(&site, "alice", &["rm", "-r", &server.at("d")]);
    assert_eq!(code(&removed), 0, "rm -r d: {}", stderr_of(&removed));
    assert!(!site.home("alice").join("d").exists(), "d is gone");
    assert_eq!(on_disk(&site.home("alice")), (0, 0));
    check_home(&site, &server, "alice", QUOTA);
}

/// Plain `rm` of a directory that `ls` shows empty removes it, with the partial
/// of a cut upload into it (the user cannot see or name it, and removing the
/// directory gives that upload up); one that holds a file says `rm -r` removes
/// it, which then does. A directory an upload is being written into right now
/// is `busy`, and keeps its partial.
#[test]
fn rm_of_a_directory_that_looks_empty_removes_the_partial_in_it() {
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let server = site.serve(&[]);
    let entry = SendEntry::file("d/big.bin", pattern(400_000, 5));
    cut_put(server.login("alice"), "", false, &[entry], 200_000);
    server.wait_for_log("alice put .:", 1);
    let ls = client(&site, "alice", &["ls", &server.at("d")]);
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout).trim(),
        "",
        "d looks empty"
    );
    let rm = client(&site, "alice", &["rm", &server.at("d")]);
    assert_eq!(code(&rm), 0, "rm d: {}", stderr_of(&rm));
    assert!(!site.home("alice").join("d").exists(), "d is gone");
    check_home(&site, &server, "alice", QUOTA);

    let content = pattern(400_000, 6);
    let mut writer = put_begun(&server, "alice", "e/big.bin", &content, 100_000);
    let at = server.at("e");
    for args in [vec!["rm", &at], vec!["rm", "-r", &at]] {
        let busy = client(&site, "alice", &args);
        assert_ne!(code(&busy), 0, "{args:?} while an upload writes into e");
        assert!(stderr_of(&busy).contains("busy"), "{}", stderr_of(&busy));
    }
    assert!(site.home("alice").join("e").is_dir(), "e stays");
    drop(writer.bye());
    drop(writer);

    std::fs::create_dir_all(site.home("alice").join("f")).expect("f");
    write(&site.home("alice").join("f/seen.txt"), b"seen");
    let rm = client(&site, "alice", &["rm", &server.at("f")]);
    assert_ne!(code(&rm), 0);
    assert!(stderr_of(&rm).contains("rm -r"), "{}", stderr_of(&rm));
}

/// A server killed in the middle of a delta leaves its temporary (a
/// `.xfer-<random>.part`, which nothing ever resumes) in the home, counted in the
/// quota, and one killed between sealing a complete file and naming it leaves it
/// under its partial's name, unmarked. The server started again removes both at
/// once, whatever their age (no session of the new server has them open): the
/// quota gets its room back, and the partial data of a cut whole upload, which a
/// client may resume, stays.
#[test]
fn a_restarted_server_removes_the_temporaries_a_killed_one_left() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let old = pattern(3_000_000, 61);
    let local = site.local("big.bin", &old);
    let mut server = site.serve(&[]);
    let first = client(
        &site,
        "alice",
        &["send", local.to_str().unwrap(), &server.addr()],
    );
    assert_eq!(code(&first), 0, "{}", stderr_of(&first));
    // A resumable partial of another file, as a cut upload leaves it (marked as
    // the server's); and a complete file a killed server sealed (its mark taken
    // off) but had not named yet, which nothing resumes (tester helper-78: 62 of
    // them stayed, counted in the quota, through a restart and a rerun).
    let home = site.home("alice");
    let resumable = home.join(partial_name("other.bin", 400_000));
    fs::write(&resumable, pattern(100_000, 62)).unwrap();
    rustix::fs::setxattr(
        &resumable,
        "user.xfer.partial",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let sealed = home.join(partial_name("done.bin", 100_000));
    fs::write(&sealed, pattern(100_000, 64)).unwrap();
    let changed = [&old[..1_000_000], &pattern(2_000_000, 63)[..]].concat();
    fs::write(&local, &changed).unwrap();
    let mut delta = crate::util::server::as_user(&site, "alice", &["send", "-f"]);
    delta
        .args(["--limit-rate", "200K"])
        .arg(&local)
        .arg(server.addr());
    let mut delta = delta.spawn().unwrap();
    let temporary = || {
        names_in(&home)
            .into_iter()
            .find(|name| name.ends_with(".part"))
    };
    crate::util::server::eventually("the delta's temporary", || temporary().is_some());
    server.0.child.kill().unwrap();
    let _ = server.0.child.wait();
    let _ = delta.kill();
    let _ = delta.wait();
    assert!(
        temporary().is_some(),
        "the killed server left its temporary"
    );

    let server = site.serve(&[]);
    crate::util::server::eventually("the temporary removed", || temporary().is_none());
    crate::util::server::eventually("the sealed file removed", || !sealed.exists());
    assert!(resumable.exists(), "a resumable partial stays");
    assert_eq!(fs::read(home.join("big.bin")).unwrap(), old);
    check_home(&site, &server, "alice", u64::MAX);
}
