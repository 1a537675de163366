//! A minimal server for the requests of section 9, built on [`Peer`] and written
//! from PROTOCOL.md alone: one user with one key, one home directory, `aead`
//! required. It answers `list`, `usage`, `get` and (unless read-only) `put`,
//! `mkdir`, `remove` and `rename`, resolving every path one component at a time
//! without following a symlink, so that tests can run the real client against an
//! independent server. It is for tests on loopback: no quotas, no session limits,
//! no resume, one thread per connection, and nothing here may reach into the crate.

use std::collections::HashSet;
use std::fs::{self, File, Metadata, Permissions};
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{
    ALL_FEATURES, Acceptor, DEFAULT_FRAME_ENTRIES, Decision, Keys, Peer, PeerError, PeerResult,
    Refusal, SendEntry, Side, Store, check_path, escape, field_str, field_u64, groups_of, kind,
};

/// How long the server waits for a request before it sends `timeout` and closes.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10);
/// The prefix of the server's temporary files; a peer may not name such a file.
pub const TEMP_PREFIX: &str = ".xfer-peer-part-";

/// Who may connect and what they reach.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The one user name.
    pub user: String,
    /// Its key `K`.
    pub key: Vec<u8>,
    /// Its home: every path of a request is relative to it.
    pub home: PathBuf,
    /// When set, `put`, `mkdir`, `remove` and `rename` are `denied`.
    pub read_only: bool,
    /// `hello.features` (`aead` is required whatever this lists).
    pub features: Vec<String>,
    /// The `realm` of `hello`, if any.
    pub realm: Option<String>,
    /// How long a connection may sit idle.
    pub idle: Duration,
    /// Entries per listing, offer or plan frame the server sends.
    pub frame_entries: usize,
    /// When set, every file and directory a `get` offers carries this `xattrs`
    /// object, asked or not (a faulty or hostile server).
    pub xattrs: Option<Value>,
}

impl ServerConfig {
    /// A writable home for `user` with `key`, every feature listed, no realm.
    pub fn new(user: &str, key: impl AsRef<[u8]>, home: &Path) -> ServerConfig {
        ServerConfig {
            user: user.to_owned(),
            key: key.as_ref().to_vec(),
            home: home.to_path_buf(),
            read_only: false,
            features: ALL_FEATURES.iter().map(|f| f.to_string()).collect(),
            realm: None,
            idle: DEFAULT_IDLE,
            frame_entries: DEFAULT_FRAME_ENTRIES,
            xattrs: None,
        }
    }
}

/// A running minimal server on 127.0.0.1; stops accepting when dropped.
pub struct MiniServer {
    /// The port it listens on.
    pub port: u16,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl MiniServer {
    /// Binds 127.0.0.1:0 and serves `config` on a thread, each connection on its own.
    pub fn start(config: ServerConfig) -> MiniServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("a bound address").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, outcomes, config) = (stop.clone(), outcomes.clone(), Arc::new(config));
            std::thread::spawn(move || accept_loop(&listener, &config, &stop, &outcomes))
        };
        MiniServer {
            port,
            stop,
            outcomes,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How each finished connection ended: `ok`, or the error that ended it.
    pub fn outcomes(&self) -> Vec<String> {
        self.outcomes.lock().expect("not poisoned").clone()
    }
}

impl Drop for MiniServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    config: &Arc<ServerConfig>,
    stop: &AtomicBool,
    outcomes: &Arc<Mutex<Vec<String>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let (config, outcomes) = (config.clone(), outcomes.clone());
        std::thread::spawn(move || {
            let outcome = stream
                .set_nonblocking(false)
                .map_err(PeerError::from)
                .and_then(|()| Peer::from_stream(stream, Side::Acceptor))
                .and_then(|peer| serve(peer, &config));
            let line = match outcome {
                Ok(()) => "ok".to_owned(),
                Err(err) => err.to_string(),
            };
            outcomes.lock().expect("not poisoned").push(line);
        });
    }
}

/// One connection: the handshake as `server` with `aead` required, then requests
/// until `bye`, a close, or an error that ends the connection.
fn serve(mut peer: Peer, config: &ServerConfig) -> PeerResult<()> {
    let acceptor = Acceptor {
        role: "server".to_owned(),
        keys: Keys::PerUser(vec![(config.user.clone(), config.key.clone())]),
        features: config.features.clone(),
        realm: config.realm.clone(),
        require: vec!["aead".to_owned()],
    };
    peer.accept_handshake(&acceptor)?;
    peer.set_timeout(config.idle)?;
    peer.frame_entries = config.frame_entries;
    loop {
        let request = match peer.next_control() {
            Ok((request, _)) => request,
            Err(PeerError::Closed) => return Ok(()),
            Err(err) => return Err(err),
        };
        match kind(&request) {
            "list" => list(&mut peer, config, &request)?,
            "usage" => usage(&mut peer, config)?,
            "mkdir" => {
                let path = string(&mut peer, &request, "path")?;
                let result = writable(config).and_then(|()| mkdir(&config.home, &path));
                ack_or_error(&mut peer, result)?;
            }
            "remove" => {
                let path = string(&mut peer, &request, "path")?;
                let result = writable(config).and_then(|()| remove(&config.home, &path));
                ack_or_error(&mut peer, result)?;
            }
            "rename" => {
                let from = string(&mut peer, &request, "from")?;
                let to = string(&mut peer, &request, "to")?;
                ack_or_error(&mut peer, rename(config, &from, &to))?;
            }
            "put" => put(&mut peer, config, &request)?,
            "get" => get(&mut peer, config, &request)?,
            "bye" => {
                peer.close();
                return Ok(());
            }
            other => {
                let why = format!("unknown request {:?}", escape(other));
                return Err(peer.close_with_error("protocol", &why));
            }
        }
    }
}

/// The string field `key` of a request; anything else ends the connection (`protocol`).
fn string(peer: &mut Peer, request: &Value, key: &str) -> PeerResult<String> {
    match field_str(request, key) {
        Some(value) => Ok(value.to_owned()),
        None => Err(peer.close_with_error("protocol", &format!("{key} is not a string"))),
    }
}

fn ack_or_error(peer: &mut Peer, result: Result<(), Refusal>) -> PeerResult<()> {
    match result {
        Ok(()) => peer.send_control(&json!({"type": "ack"})).map(drop),
        Err(refusal) => peer.send_error(None, &refusal.code, &refusal.message),
    }
}

fn writable(config: &ServerConfig) -> Result<(), Refusal> {
    match config.read_only {
        true => Err(Refusal::new("denied", "read-only user")),
        false => Ok(()),
    }
}

fn bad_path(path: &str, allow_home: bool) -> Result<(), Refusal> {
    check_path(path, allow_home).map_err(|why| Refusal::new("bad_path", why))
}

fn io_refusal(err: io::Error) -> Refusal {
    Refusal::new("io", err.to_string())
}

/// What a name below the home is, seen without following a symlink.
enum Node {
    Missing,
    File(Metadata),
    Dir(Metadata),
    /// A symlink, fifo, device or socket.
    Other(Metadata),
}

fn node(path: &Path) -> Result<Node, Refusal> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(Node::File(meta)),
        Ok(meta) if meta.file_type().is_dir() => Ok(Node::Dir(meta)),
        Ok(meta) => Ok(Node::Other(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Node::Missing),
        Err(err) => Err(io_refusal(err)),
    }
}

/// Resolves a checked path below `home` one component at a time: its full name
/// and what is there. `not_found` when a component before the last is missing or
/// is not a directory (a file, a symlink).
fn resolve(home: &Path, rel: &str) -> Result<(PathBuf, Node), Refusal> {
    let mut full = home.to_path_buf();
    if rel.is_empty() {
        let found = node(&full)?;
        return Ok((full, found));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        full.push(part);
        let found = node(&full)?;
        if i + 1 == parts.len() {
            return Ok((full, found));
        }
        if !matches!(found, Node::Dir(_)) {
            return Err(Refusal::new(
                "not_found",
                format!("{:?} is not a directory", escape(part)),
            ));
        }
    }
    unreachable!("a non-empty path has a last component")
}

fn mtime_of(meta: &Metadata) -> Option<u64> {
    let modified = meta.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// An `ITEM` of a listing.
fn item(name: &str, found: &Node) -> Value {
    let (kind, meta) = match found {
        Node::File(meta) => ("file", meta),
        Node::Dir(meta) => ("dir", meta),
        Node::Other(meta) => ("other", meta),
        Node::Missing => unreachable!("only what exists is listed"),
    };
    let size = if kind == "file" { meta.len() } else { 0 };
    let mut item = json!({"name": name, "kind": kind, "size": size, "mode": meta.permissions().mode() & 0o777});
    if let Some(mtime) = mtime_of(meta) {
        item["mtime"] = json!(mtime);
    }
    item
}

/// The children of `dir` whose names are UTF-8, sorted by name, as found.
fn children(dir: &Path) -> Result<Vec<(String, Node)>, Refusal> {
    let mut out = Vec::new();
    for child in fs::read_dir(dir).map_err(io_refusal)? {
        let child = child.map_err(io_refusal)?;
        if let Ok(name) = child.file_name().into_string() {
            let found = node(&child.path())?;
            out.push((name, found));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn list(peer: &mut Peer, config: &ServerConfig, request: &Value) -> PeerResult<()> {
    let path = string(peer, request, "path")?;
    let items = (|| {
        bad_path(&path, true)?;
        match resolve(&config.home, &path)? {
            (_, Node::Missing) => Err(Refusal::new("not_found", "no such path")),
            (full, Node::Dir(_)) => Ok(children(&full)?
                .iter()
                .map(|(name, found)| item(name, found))
                .collect()),
            (_, found) => Ok(vec![item(
                path.rsplit('/').next().unwrap_or_default(),
                &found,
            )]),
        }
    })();
    let items: Vec<Value> = match items {
        Ok(items) => items,
        Err(refusal) => return peer.send_error(None, &refusal.code, &refusal.message),
    };
    let groups = groups_of(&items, peer.frame_entries);
    for (i, group) in groups.iter().enumerate() {
        let mut frame = json!({"type": "listing", "entries": group});
        if i + 1 < groups.len() {
            frame["more"] = json!(true);
        }
        peer.send_control(&frame)?;
    }
    Ok(())
}

fn usage(peer: &mut Peer, config: &ServerConfig) -> PeerResult<()> {
    fn tally(dir: &Path, bytes: &mut u64, files: &mut u64) {
        let Ok(children) = children(dir) else { return };
        for (name, found) in children {
            match found {
                Node::File(meta) => {
                    *bytes += meta.len();
                    *files += 1;
                }
                Node::Dir(_) => tally(&dir.join(name), bytes, files),
                _ => {}
            }
        }
    }
    let (mut bytes, mut files) = (0, 0);
    tally(&config.home, &mut bytes, &mut files);
    let answer = json!({"type": "usage", "bytes": bytes, "files": files, "quota_bytes": null, "quota_files": null});
    peer.send_control(&answer).map(drop)
}

/// Makes `rel` and its missing parents; `exists` where something that is not a directory is in the way.
fn mkdir(home: &Path, rel: &str) -> Result<(), Refusal> {
    bad_path(rel, false)?;
    let mut full = home.to_path_buf();
    for part in rel.split('/') {
        full.push(part);
        match node(&full)? {
            Node::Missing => fs::create_dir(&full).map_err(io_refusal)?,
            Node::Dir(_) => {}
            _ => {
                return Err(Refusal::new(
                    "exists",
                    format!("{:?} is not a directory", escape(part)),
                ));
            }
        }
    }
    Ok(())
}

fn remove(home: &Path, rel: &str) -> Result<(), Refusal> {
    bad_path(rel, false)?;
    match resolve(home, rel)? {
        (_, Node::Missing) => Err(Refusal::new("not_found", "no such path")),
        (full, Node::File(_)) => fs::remove_file(full).map_err(io_refusal),
        (full, Node::Dir(_)) => {
            let empty = fs::read_dir(&full).map_err(io_refusal)?.next().is_none();
            if !empty {
                return Err(Refusal::new("denied", "a directory that is not empty"));
            }
            fs::remove_dir(full).map_err(io_refusal)
        }
        (_, Node::Other(_)) => Err(Refusal::new("denied", "not a regular file or directory")),
    }
}

fn rename(config: &ServerConfig, from: &str, to: &str) -> Result<(), Refusal> {
    bad_path(from, false)?;
    bad_path(to, false)?;
    if to.len() > from.len() && to.starts_with(from) && to.as_bytes()[from.len()] == b'/' {
        return Err(Refusal::new(
            "bad_path",
            "the target lies inside the source",
        ));
    }
    writable(config)?;
    let source = match resolve(&config.home, from)? {
        (_, Node::Missing) => return Err(Refusal::new("not_found", "no such path")),
        (_, Node::Other(_)) => {
            return Err(Refusal::new("denied", "not a regular file or directory"));
        }
        (full, _) => full,
    };
    match resolve(&config.home, to)? {
        (target, Node::Missing) => fs::rename(source, target).map_err(io_refusal),
        _ => Err(Refusal::new("exists", "the target exists")),
    }
}

fn put(peer: &mut Peer, config: &ServerConfig, request: &Value) -> PeerResult<()> {
    let dir = string(peer, request, "dir")?;
    let target = (|| {
        bad_path(&dir, true)?;
        writable(config)?;
        match resolve(&config.home, &dir)? {
            (full, Node::Dir(_)) => Ok(full),
            _ => Err(Refusal::new("not_found", "not a directory")),
        }
    })();
    let target = match target {
        Ok(target) => target,
        Err(refusal) => return peer.send_error(None, &refusal.code, &refusal.message),
    };
    peer.send_control(&json!({"type": "ack"}))?;
    let mut store = PutStore {
        dir: target.clone(),
        seen: HashSet::new(),
    };
    let received = peer.receive_transfer_into(&mut store)?;
    // Directories get their mode and mtime after everything inside them arrived.
    for (entry, decision) in received.entries.iter().zip(&received.plan).rev() {
        if field_str(entry, "kind") == Some("dir") && field_str(decision, "action") == Some("send")
        {
            let full = target.join(field_str(entry, "path").unwrap_or_default());
            let _ = apply_mode_and_mtime(&full, entry);
        }
    }
    Ok(())
}

/// Sets `mode & 0o777` and `mtime` of `entry`, where it has them, on `path`.
fn apply_mode_and_mtime(path: &Path, entry: &Value) -> io::Result<()> {
    if let Some(mode) = field_u64(entry, "mode") {
        fs::set_permissions(path, Permissions::from_mode((mode & 0o777) as u32))?;
    }
    if let Some(mtime) = field_u64(entry, "mtime") {
        File::open(path)?.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))?;
    }
    Ok(())
}

/// The receiving half of `put`: plans each entry against the disk (section 6) and
/// writes each verified file under a temporary name, then renames it.
struct PutStore {
    dir: PathBuf,
    seen: HashSet<String>,
}

impl PutStore {
    fn plan(&mut self, entry: &Value) -> Result<(), Refusal> {
        let path = field_str(entry, "path").unwrap_or_default();
        bad_path(path, false)?;
        if path.split('/').any(|part| part.starts_with(TEMP_PREFIX)) {
            return Err(Refusal::new(
                "bad_path",
                "a name the server uses for its own files",
            ));
        }
        if !self.seen.insert(path.to_owned()) {
            return Err(Refusal::new("bad_path", "offered twice"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let mut full = self.dir.clone();
        for part in &parts[..parts.len() - 1] {
            full.push(part);
            if !matches!(node(&full)?, Node::Missing | Node::Dir(_)) {
                return Err(Refusal::new(
                    "bad_path",
                    "its way meets something that is not a directory",
                ));
            }
        }
        full.push(parts[parts.len() - 1]);
        let found = node(&full)?;
        if field_str(entry, "kind") == Some("dir") {
            return match found {
                Node::Missing => fs::create_dir_all(&full).map_err(io_refusal),
                Node::Dir(_) => Ok(()),
                _ => Err(Refusal::new("bad_path", "not a directory")),
            };
        }
        match found {
            Node::Missing => Ok(()),
            Node::Other(_) => Err(Refusal::new("bad_path", "a symlink or special file")),
            Node::File(meta)
                if field_u64(entry, "size") == Some(meta.len())
                    && field_u64(entry, "mtime").is_some_and(|t| Some(t) == mtime_of(&meta)) =>
            {
                Err(Refusal::new("same", "already there"))
            }
            _ => Err(Refusal::new("exists", "the name is taken")),
        }
    }
}

impl Store for PutStore {
    fn decide(&mut self, _index: u64, entry: &Value) -> Decision {
        match self.plan(entry) {
            Ok(()) => Decision::Send,
            Err(refusal) => Decision::Skip(refusal.code, refusal.message),
        }
    }

    fn keep(&mut self, index: u64, entry: &Value, content: &[u8]) -> Result<(), (String, String)> {
        let full = self.dir.join(field_str(entry, "path").unwrap_or_default());
        let parent = full.parent().expect("a path below the target has a parent");
        let temp = parent.join(format!("{TEMP_PREFIX}{index}"));
        let written = (|| {
            fs::create_dir_all(parent)?;
            fs::write(&temp, content)?;
            apply_mode_and_mtime(&temp, entry)?;
            File::open(&temp)?.sync_all()?;
            fs::rename(&temp, &full)
        })();
        written.map_err(|err| {
            let _ = fs::remove_file(&temp);
            ("io".to_owned(), err.to_string())
        })
    }
}

fn get(peer: &mut Peer, config: &ServerConfig, request: &Value) -> PeerResult<()> {
    let paths: Option<Vec<String>> = request
        .get("paths")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().map(|p| p.as_str().map(str::to_owned)).collect());
    let Some(paths) = paths else {
        return Err(peer.close_with_error("protocol", "paths is not a list of strings"));
    };
    let mut entries = match offer_for(&config.home, &paths) {
        Ok(entries) => entries,
        Err(refusal) => return peer.send_error(None, &refusal.code, &refusal.message),
    };
    for entry in &mut entries {
        entry.xattrs.clone_from(&config.xattrs);
    }
    peer.send_transfer(&entries).map(drop)
}

/// The offer of a `get`, checked whole first: each path under its last component,
/// a directory with everything inside it (symlinks and other entries left out).
fn offer_for(home: &Path, paths: &[String]) -> Result<Vec<SendEntry>, Refusal> {
    if paths.is_empty() {
        return Err(Refusal::new("bad_path", "no path"));
    }
    let mut lasts = HashSet::new();
    for path in paths {
        bad_path(path, false)?;
        if !lasts.insert(path.rsplit('/').next().unwrap_or_default()) {
            return Err(Refusal::new(
                "bad_path",
                "two paths with the same last component",
            ));
        }
    }
    let mut found = Vec::new();
    for path in paths {
        match resolve(home, path)? {
            (_, Node::Missing) => return Err(Refusal::new("not_found", "no such path")),
            (_, Node::Other(_)) => {
                return Err(Refusal::new("denied", "not a regular file or directory"));
            }
            (full, node) => found.push((
                path.rsplit('/').next().unwrap_or_default().to_owned(),
                full,
                node,
            )),
        }
    }
    let mut entries = Vec::new();
    for (name, full, node) in found {
        add_entry(&mut entries, name, &full, &node)?;
    }
    Ok(entries)
}

fn add_entry(
    entries: &mut Vec<SendEntry>,
    name: String,
    full: &Path,
    found: &Node,
) -> Result<(), Refusal> {
    let (mut entry, meta) = match found {
        Node::File(meta) => match fs::read(full) {
            Ok(content) => (SendEntry::file(&name, content), meta),
            Err(_) => {
                let promised = SendEntry::file(&name, Vec::new()).unreadable();
                (
                    SendEntry {
                        size: Some(meta.len()),
                        ..promised
                    },
                    meta,
                )
            }
        },
        Node::Dir(meta) => (SendEntry::dir(&name), meta),
        _ => return Ok(()),
    };
    entry.mode = Some(meta.permissions().mode() & 0o777);
    entry.mtime = mtime_of(meta);
    let is_dir = entry.dir;
    entries.push(entry);
    if is_dir {
        for (child, node) in children(full)? {
            add_entry(
                entries,
                format!("{name}/{child}"),
                &full.join(&child),
                &node,
            )?;
        }
    }
    Ok(())
}
