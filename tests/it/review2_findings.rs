//! Review of the server's quota ledger as changed by the attack's fixes (writes
//! made under the ledger's lock, a reload forgetting the ledger of a home no user
//! has, `rm -r` removing partials): each test is a finding that failed on the code
//! it was found on: one user's stalled disk (a frozen filesystem) holds up no other
//! user's login and no later reload. Each checks what a user sees, never only the
//! server's counters.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::pattern;
use crate::util::peer::{Initiator, Peer};
use crate::util::server::{Server, Site};
use crate::util::site::{put_begun, send_part};

/// An ext4 image mounted on a directory through a loop device, unmounted (and
/// unfrozen first, should a test have left it frozen) when dropped.
struct LoopMount(PathBuf);

impl LoopMount {
    /// Mounts a fresh 64 MiB ext4 image `image` on `dir`, or says why it cannot
    /// (not root, no loop devices) and gives `None`.
    fn mount(image: &Path, dir: &Path) -> Option<LoopMount> {
        std::fs::create_dir_all(dir).expect("the mount point");
        let made = Command::new("truncate")
            .args(["-s", "64M"])
            .arg(image)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("mkfs.ext4")
                .arg("-q")
                .arg(image)
                .status()
                .is_ok_and(|s| s.success());
        let mounted = made
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(image)
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount an ext4 image on a loop device (root only)");
            return None;
        }
        Some(LoopMount(dir.to_path_buf()))
    }

    /// Freezes the filesystem (`fsfreeze`): every write to it waits, as on a
    /// stalled disk, until the guard is dropped.
    fn freeze(&self) -> Option<Frozen<'_>> {
        let frozen = Command::new("fsfreeze").arg("-f").arg(&self.0).status();
        if !frozen.is_ok_and(|s| s.success()) {
            eprintln!("skipped: fsfreeze refused");
            return None;
        }
        Some(Frozen(self))
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        // Thawed already, as a rule: then fsfreeze says so, which is no news.
        let thaw = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
        drop(thaw);
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A frozen filesystem, thawed when dropped.
struct Frozen<'m>(&'m LoopMount);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.0.0).status();
    }
}

/// `usage` as `user`, given up after `limit`: how long it took, or why it failed.
fn usage_within(server: &Server, user: &str, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut peer = Peer::connect(("127.0.0.1", server.port())).map_err(|e| format!("{e:?}"))?;
    peer.set_timeout(limit).map_err(|e| format!("{e:?}"))?;
    peer.initiate(&Initiator::client(Site::key_of(user), user))
        .map_err(|e| format!("login: {e:?}"))?;
    peer.usage().map_err(|e| format!("usage: {e:?}"))?;
    Ok(start.elapsed())
}

/// Finding 1: the ledger's lock is now held across each `write(2)` of an upload
/// (`PartFile::write_all`, and across creating its part file), and a reload
/// (`Server::follow_users`) takes every ledger's lock while it holds the map of
/// ledgers, which every login takes (`Server::ledger_of`). So one user's disk
/// that stalls mid-upload (frozen here with `fsfreeze`; an NFS home, a dying
/// disk, writeback throttling), and then any reload, stop every login of every
/// user, on every disk, until that disk moves again. Before the reload bob logs
/// in at once; after it he waited for alice's disk. Fixed: a reload takes the
/// ledgers out of the map before it waits for any of their locks.
#[test]
fn a_stalled_disk_of_one_user_and_a_reload_stop_no_other_login() {
    while_alices_disk_stalls(7, |_, server| {
        let limit = Duration::from_secs(5);
        let before = usage_within(server, "bob", limit);
        assert!(before.is_ok(), "bob before the reload: {before:?}");

        server.hangup();
        std::thread::sleep(Duration::from_secs(1));
        let after = usage_within(server, "bob", limit);
        assert!(
            after.is_ok(),
            "bob after a reload, while alice's disk is stalled: {after:?} (before: {before:?})"
        );
    });
}

/// Alice's disk frozen (a loop-mounted ext4 as her home) while the server writes
/// her upload, bob a user beside her: `then` runs meanwhile. Nothing runs where
/// a loop device or `fsfreeze` cannot be had (said on stderr).
fn while_alices_disk_stalls(seed: u64, then: impl FnOnce(&Site, &Server)) {
    let site = Site::new();
    site.users(&[("alice", "quota = 10000000"), ("bob", "quota = 10000000")]);
    let image = site.path().join("alice.img");
    let Some(disk) = LoopMount::mount(&image, &site.home("alice")) else {
        return;
    };
    let server = site.serve(&[]);
    let content = pattern(2_000_000, seed);
    let mut writer = put_begun(&server, "alice", "a.bin", &content, 0);
    let Some(_frozen) = disk.freeze() else {
        return;
    };
    // Alice's upload goes on; the server's write to her disk waits.
    send_part(&mut writer, 0, &content, 0, 1_000_000);
    std::thread::sleep(Duration::from_millis(500));
    then(&site, &server);
}

/// Finding 2 (what finding 1's fix leaves): the reload thread itself still waits
/// for the ledger's lock of a user whose disk stalled mid-upload (in
/// `Server::follow_users`, then in `recount_homes`), and reloads are read one
/// after the other by that thread: a second reload, one that takes a key away,
/// is not read until alice's disk moves. Bob, removed from the users file, still
/// logs in.
#[test]
fn a_stalled_disk_of_one_user_holds_up_no_later_reload() {
    while_alices_disk_stalls(8, |site, server| {
        // A first reload (nothing changed) meets alice's ledger, held by the write.
        server.hangup();
        std::thread::sleep(Duration::from_secs(1));
        // The second takes bob's key away.
        site.users(&[("alice", "quota = 10000000")]);
        server.hangup();
        std::thread::sleep(Duration::from_secs(2));
        let bob = usage_within(server, "bob", Duration::from_secs(5));
        assert!(
            bob.is_err(),
            "bob, removed from the users file by a reload 2 s ago, still served: {bob:?}"
        );
    });
}
