//! Partials of `xfer serve` are ours or nothing (issue 18, finding 7): something
//! planted under the name of a user's next partial — a hard link to another user's
//! file, a file the server did not make — is never offered to resume from (its
//! length is not told), never truncated or written; a fresh temporary is used.

use std::fs;

use sha2::{Digest, Sha256};

use crate::util;
use crate::util::pattern;
use crate::util::peer::SendEntry;
use crate::util::server::Site;
use crate::util::server::write;
use crate::util::site::check_home;

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
    // And a plain file, one link, that the server never made.
    let foreign = site.home("alice").join(partial_name("g", 300_000));
    fs::write(&foreign, pattern(50_000, 2)).unwrap();
    let server = site.serve(&[]);
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
