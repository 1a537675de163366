//! A served site for the quota, reload and partial tests: keys, a users file, a
//! root, and `xfer serve` on 127.0.0.1 port 0, as root or as an unprivileged user
//! (`setpriv`, uid and gid 65534, the site chowned to it); clients logged in with
//! the independent peer of `util::peer`, puts cut midway, and the walk of a home
//! from outside (every file at every depth, `lstat` sizes) that each test checks
//! against the quota and against what `usage` says.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::peer::{Initiator, Peer, SendEntry};
use crate::util::server::private;
use crate::util::{Receiver, TIMEOUT, xfer};

/// The uid and gid an unprivileged server runs as.
pub const NOBODY: u32 = 65534;

/// A temporary directory holding `keys/`, `users.toml` and the server's `root/`.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        Site {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    pub fn home(&self, user: &str) -> PathBuf {
        self.root().join(user)
    }

    pub fn key_of(user: &str) -> String {
        format!("{user}'s key, long enough for any test")
    }

    /// Writes a users file with one table per `(name, extra lines)`.
    pub fn users(&self, users: &[(&str, &str)]) {
        let mut text = String::new();
        for (name, extra) in users {
            let key = self.path().join("keys").join(format!("{name}.key"));
            private(&key, Site::key_of(name).as_bytes());
            text.push_str(&format!(
                "[users.{name}]\nkey_file = \"keys/{name}.key\"\n{extra}\n\n"
            ));
        }
        private(&self.path().join("users.toml"), text.as_bytes());
    }

    /// `xfer serve` on the site, as root.
    pub fn serve(&self) -> Server {
        let mut command = xfer();
        self.serve_args(&mut command);
        Server(Receiver::spawn(command))
    }

    /// `xfer serve` as uid/gid 65534 (the site chowned to it); `None` (with the
    /// reason printed) where `setpriv` is missing.
    pub fn serve_unprivileged(&self) -> Option<Server> {
        if Command::new("setpriv").arg("--version").output().is_err() {
            eprintln!("skipped: setpriv is missing, so the server cannot run unprivileged");
            return None;
        }
        chown_all(self.path());
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_xfer"));
        self.serve_args(&mut command);
        Some(Server(Receiver::spawn(command)))
    }

    fn serve_args(&self, command: &mut Command) {
        for var in [
            "XFER_KEY",
            "XFER_USER",
            "XFER_PASSWORD",
            "XFER_HASH",
            "XFER_COMPRESS",
        ] {
            command.env_remove(var);
        }
        command
            .arg("serve")
            .arg("--root")
            .arg(self.root())
            .args(["--listen", "127.0.0.1:0", "--users"])
            .arg(self.path().join("users.toml"))
            .current_dir("/");
    }
}

/// Makes `path` and everything beneath it belong to uid/gid 65534.
pub fn chown_all(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).expect("chown");
    if fs::symlink_metadata(path).expect("lstat").is_dir() {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_all(&entry.expect("entry").path());
        }
    }
}

/// A running `xfer serve`; killed when dropped.
pub struct Server(pub Receiver);

impl Server {
    pub fn port(&self) -> u16 {
        self.0.port
    }

    pub fn log(&self) -> String {
        self.0.stderr()
    }

    /// Waits (bounded) until the log holds `needle` at least `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return log;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "the server never logged {needle:?} {count} times: {log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP and waits for the `count`th reload.
    pub fn reload(&self, count: usize) {
        let status = Command::new("kill")
            .args(["-HUP", &self.0.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.wait_for_log("reloaded", count);
    }

    /// A request connection of the independent peer, logged in as `user`.
    pub fn login(&self, user: &str) -> Peer {
        let mut peer = Peer::connect(("127.0.0.1", self.port())).expect("connect");
        peer.set_timeout(TIMEOUT).expect("timeout");
        peer.initiate(&Initiator::client(Site::key_of(user), user))
            .expect("logged in");
        peer
    }

    /// `usage` as `user` says it: (bytes, files).
    pub fn usage(&self, user: &str) -> (u64, u64) {
        let usage = self.login(user).usage().expect("usage");
        (
            usage["bytes"].as_u64().expect("bytes"),
            usage["files"].as_u64().expect("files"),
        )
    }
}

/// A `put` by `peer` into `dir` of `entries`, cut after `sent` bytes of the
/// first file the plan accepts (the connection is dropped). Returns the plan.
pub fn cut_put(
    mut peer: Peer,
    dir: &str,
    overwrite: bool,
    entries: &[SendEntry],
    sent: usize,
) -> Vec<Value> {
    let plan = start_put(&mut peer, dir, overwrite, entries);
    if let Some(index) = plan.iter().position(|d| d["action"] == "send") {
        let offset = plan[index]["offset"].as_u64().unwrap_or(0) as usize;
        send_part(
            &mut peer,
            index as u64,
            &entries[index].content[offset..],
            offset,
            sent,
        );
    }
    drop(peer);
    plan
}

/// Sends the `put` request, the offer, and reads the plan.
pub fn start_put(peer: &mut Peer, dir: &str, overwrite: bool, entries: &[SendEntry]) -> Vec<Value> {
    peer.send_control(&json!({"type": "put", "dir": dir, "overwrite": overwrite}))
        .expect("put");
    peer.expect("ack").expect("ack");
    let offered: Vec<Value> = entries.iter().map(SendEntry::to_json).collect();
    peer.send_offer(&[offered]).expect("offer");
    peer.read_plan(entries.len()).expect("plan")
}

/// Sends `data` frames for entry `index` from `offset`: the first `sent` bytes of
/// `rest`, and nothing more (no `done`).
pub fn send_part(peer: &mut Peer, index: u64, rest: &[u8], offset: usize, sent: usize) {
    peer.send_control(&json!({"type": "data", "index": index, "offset": offset}))
        .expect("data");
    for piece in rest[..sent.min(rest.len())].chunks(64 << 10) {
        let payload = peer.data_payload(piece);
        peer.send_frame(&payload).expect("a data frame");
    }
}

/// Bytes and regular files beneath `dir` at every depth, from `lstat`, as root
/// (what vanishes while it is walked is left out).
pub fn on_disk(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(entries) = fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            let (bytes, files) = on_disk(&entry.path());
            total = (total.0 + bytes, total.1 + files);
        } else if meta.is_file() {
            total = (total.0 + meta.size(), total.1 + 1);
        }
    }
    total
}

/// The check after every test: what is on disk beneath `user`'s home is within
/// `quota` bytes and is exactly what `usage` reports.
#[track_caller]
pub fn check_home(site: &Site, server: &Server, user: &str, quota: u64) {
    check_dir(&site.home(user), server, user, quota);
}

/// [`check_home`] for a home `dir` not named after its user.
#[track_caller]
pub fn check_dir(dir: &Path, server: &Server, user: &str, quota: u64) {
    let disk = on_disk(dir);
    assert!(
        disk.0 <= quota,
        "{user} holds {} bytes on disk, quota {quota}",
        disk.0
    );
    assert_eq!(
        server.usage(user),
        disk,
        "{user}'s usage against the disk (bytes, files)"
    );
}

/// Sends the rest of entry `index` (after the first `sent` bytes, all of `content`
/// in this transfer), its `done`, and `end`; returns the receiver's answer for it.
pub fn finish_put(peer: &mut Peer, index: u64, path: &str, content: &[u8], sent: usize) -> Value {
    for piece in content[sent..].chunks(64 << 10) {
        let payload = peer.data_payload(piece);
        peer.send_frame(&payload).expect("a data frame");
    }
    peer.send_frame(&[]).expect("the empty frame");
    let done = peer.done_frame(index, path, content);
    peer.send_control(&done).expect("done");
    peer.send_end().expect("end");
    let mut answer = Value::Null;
    loop {
        let frame = peer.read_control().expect("an answer");
        match frame["type"].as_str() {
            Some("end") => return answer,
            _ => answer = frame,
        }
    }
}

/// The code of the error frame a request was answered with, if any.
pub fn remote_code<T: std::fmt::Debug>(result: crate::util::peer::PeerResult<T>) -> Option<String> {
    result
        .err()
        .and_then(|e| e.remote_code().map(str::to_owned))
}

/// A whole `put` into `dir` (replacing existing files with `overwrite`).
pub fn put(
    peer: &mut Peer,
    dir: &str,
    overwrite: bool,
    entries: &[SendEntry],
) -> crate::util::peer::PeerResult<crate::util::peer::SendReport> {
    peer.send_control(&json!({"type": "put", "dir": dir, "overwrite": overwrite}))?;
    peer.expect("ack")?;
    peer.send_transfer(entries)
}
