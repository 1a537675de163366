//! A reload of `xfer serve` compares the whole user (issue 18, finding 6): a
//! changed home, key or `read_only` ends the user's open connections before their
//! next request, with the reason in the log, so a session never goes on in a home
//! that moved (and was given to someone else); new limits apply at once.

use crate::util;
use crate::util::pattern;
use crate::util::peer::SendEntry;
use crate::util::server::Site;
use crate::util::server::write;
use crate::util::site::check_home;

/// Finding 6: alice's open session kept the home it opened at login after a reload
/// gave that directory to bob, and read and wrote his files.
#[test]
fn a_reload_that_moves_a_home_ends_the_sessions_in_the_old_one() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000"), ("bob", "quota = 1000000")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("mine.txt"), b"alice's\n");
    let mut held = server.login("alice");
    let names: Vec<_> = held
        .list("")
        .unwrap()
        .iter()
        .map(|i| i["name"].clone())
        .collect();
    assert_eq!(names, ["mine.txt"]);
    site.users(&[
        ("alice", "home = \"alice2\"\nquota = 1000000"),
        ("bob", "home = \"alice\"\nquota = 1000000"),
    ]);
    server.reload(1);
    let report = server
        .login("bob")
        .put(
            "",
            &[SendEntry::file("bobs-private.txt", b"bob's own\n".to_vec())],
        )
        .expect("bob's put");
    assert!(report.delivered(0), "{report:?}");
    // Alice's next request on her old connection is refused, never served from
    // the directory that is bob's now.
    let listed = held.list("");
    assert!(
        matches!(&listed, Err(err) if err.remote_code() == Some("auth") || err.is_closed()),
        "alice's old session listed {listed:?}"
    );
    assert!(held.get(&["bobs-private.txt"]).is_err());
    server.wait_for_log("alice logout: refused: home changed", 1);
    // A new login lands in her new home.
    let names = server.login("alice").list("").unwrap();
    assert!(names.is_empty(), "{names:?}");
    // Bob now lives in what was alice's home, her file and his in it.
    util::site::check_dir(&site.home("alice"), &server, "bob", 1_000_000);
    util::site::check_dir(&site.home("alice2"), &server, "alice", 1_000_000);
}

/// Limits changed by a reload apply to an open session at once; a changed
/// `read_only` ends it, saying so.
#[test]
fn new_limits_apply_at_once_and_a_changed_right_ends_the_session() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    let server = site.serve(&[]);
    let mut held = server.login("alice");
    site.users(&[("alice", "quota = 100000")]);
    server.reload(1);
    let report = held
        .put("", &[SendEntry::file("a", pattern(200_000, 1))])
        .expect("put");
    assert_eq!(report.plan[0]["code"], "quota", "{report:?}");
    site.users(&[("alice", "quota = 100000\nread_only = true")]);
    server.reload(2);
    assert!(held.list("").is_err());
    server.wait_for_log("alice logout: refused: read_only changed", 1);
    check_home(&site, &server, "alice", 100_000);
}
