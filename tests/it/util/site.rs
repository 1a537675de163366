//! What the quota, reload and partial tests do on a site of `util::server`: puts
//! made, cut midway and finished with the independent peer of `util::peer`, and
//! the walk of a home from outside (every entry at every depth, from `lstat`, by
//! the quota's rule) that each test checks against the quota and against what
//! `usage` says.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::util::peer::{Peer, SendEntry};
use crate::util::server::{Server, Site};

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

/// Another session of `user`: a `put` (overwriting) of one file at `path` of the
/// home holding `content`, planned `send` (asserted) and its first `sent` bytes
/// written; [`finish_put`] with the same `sent` completes it.
pub fn put_begun(server: &Server, user: &str, path: &str, content: &[u8], sent: usize) -> Peer {
    let mut writer = server.login(user);
    let entries = [SendEntry::file(path, content.to_vec())];
    let plan = start_put(&mut writer, "", true, &entries);
    assert_eq!(plan[0]["action"], "send", "{plan:?}");
    send_part(&mut writer, 0, content, 0, sent);
    writer
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

/// What a quota counts beneath `dir` at every depth, from `lstat`, as root (what
/// vanishes while it is walked is left out), worked out here from the rule alone:
/// every entry is one (regular files, directories, links, special files), and its
/// bytes are a file's size, 4096 for a directory (whatever its own size), a link's
/// `lstat` size (its target's length), nothing for a special file.
pub fn on_disk(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(entries) = fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let kind = meta.file_type();
        let bytes = if kind.is_dir() {
            let (bytes, files) = on_disk(&entry.path());
            total = (total.0 + bytes, total.1 + files);
            4096
        } else if kind.is_file() || kind.is_symlink() {
            meta.size()
        } else {
            0
        };
        total = (total.0 + bytes, total.1 + 1);
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
/// in this transfer), its `done`, and `end`; returns the receiver's answer for it,
/// which must be followed by the receiver's `end`.
pub fn finish_put(peer: &mut Peer, index: u64, path: &str, content: &[u8], sent: usize) -> Value {
    send_rest(peer, index, path, content, sent).expect("the rest of the entry");
    let mut answer = Value::Null;
    loop {
        let frame = peer.read_control().expect("an answer");
        match frame["type"].as_str() {
            Some("end") => return answer,
            _ => answer = frame,
        }
    }
}

/// [`finish_put`] where a reload ends the session: the receiver answers the entry,
/// then ends the session with an error frame of its own (`auth`) and closes, so
/// what is still sent after may find the connection gone. Returns the entry's
/// answer and the session's error frame.
pub fn finish_put_ended(
    peer: &mut Peer,
    index: u64,
    path: &str,
    content: &[u8],
    sent: usize,
) -> (Value, Value) {
    let _ = send_rest(peer, index, path, content, sent);
    let answer = peer.read_control().expect("an answer");
    let ended = peer.read_control().expect("the session's error frame");
    (answer, ended)
}

fn send_rest(
    peer: &mut Peer,
    index: u64,
    path: &str,
    content: &[u8],
    sent: usize,
) -> crate::util::peer::PeerResult<()> {
    for piece in content[sent..].chunks(64 << 10) {
        let payload = peer.data_payload(piece);
        peer.send_frame(&payload)?;
    }
    peer.send_frame(&[])?;
    let done = peer.done_frame(index, path, content);
    peer.send_control(&done)?;
    peer.send_end()
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
