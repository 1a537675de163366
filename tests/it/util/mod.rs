//! Helpers for end-to-end tests: run the real `xfer` binary on 127.0.0.1 with port 0,
//! with a bound on every wait. The independent version-2 peer of [`peer`] (written
//! from PROTOCOL.md alone, sharing no code with the crate) plays a hostile or
//! independent side; [`relay`] corrupts, cuts or slows a link; [`server`] runs
//! `xfer serve` on a site of keys, users and homes. Each helper has one name and one
//! home here, whichever test files use it.

#![allow(dead_code)] // the tests and benches/serve_soak.rs each use a different part of this

pub mod peer;
pub mod relay;
pub mod server;
pub mod site;
pub mod terminal;
pub mod tree;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peer::{Initiator, Peer};

/// Longest any single process or socket wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The key most tests share.
pub const KEY: &str = "test key: long enough not to warn";

pub fn xfer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xfer"));
    // Whoever runs the tests may have a key or a hash of their own in the environment.
    command
        .env_remove("XFER_KEY")
        .env_remove("XFER_HASH")
        .env("RUST_BACKTRACE", "1");
    command
}

/// Waits for `child` at most `limit`; kills it and fails the test on a hang.
pub fn wait_for(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command to completion with a bound, capturing its output.
pub fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xfer");
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let status = wait_for(&mut child, TIMEOUT);
    let output = Output {
        status,
        stdout: stdout.join().expect("reader"),
        stderr: stderr.join().expect("reader"),
    };
    assert_no_panic(&String::from_utf8_lossy(&output.stderr));
    output
}

/// Every process these tests run has RUST_BACKTRACE=1: any panic message fails the test.
pub fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked at") && !stderr.contains("stack backtrace"),
        "a panic: {stderr}"
    );
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// The JSON objects among the lines of `text` (`--json` events; other lines are
/// passed over).
pub fn events_in(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The `--json` events a command printed on stdout.
pub fn stdout_events(output: &Output) -> Vec<serde_json::Value> {
    events_in(&String::from_utf8_lossy(&output.stdout))
}

/// The `summary` event among the `--json` lines a command printed on stdout.
pub fn summary_event(output: &Output) -> serde_json::Value {
    stdout_events(output)
        .into_iter()
        .find(|event| event["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary event: {}", stderr_of(output)))
}

/// `reply` is an error frame with `code` (`case` names the check in a failure).
pub fn assert_error(reply: Option<serde_json::Value>, code: &str, case: &str) {
    let reply = reply.unwrap_or_else(|| panic!("{case}: closed without an error frame"));
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some(code)),
        "{case}: {reply}"
    );
}

/// `xfer send FILES 127.0.0.1:PORT` with `key`, to completion.
pub fn send(files: &[&Path], port: u16, key: &str, extra: &[&str]) -> Output {
    let mut command = xfer();
    command
        .arg("send")
        .args(files)
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .env("XFER_KEY", key);
    run(&mut command)
}

/// `xfer send PATH 127.0.0.1:PORT --limit-rate RATE` with [`KEY`], running (its
/// output dropped): a transfer slow enough to be cut in the middle.
pub fn send_paced(path: &Path, port: u16, rate: &str) -> Child {
    xfer()
        .args(["send", "--limit-rate", rate])
        .arg(path)
        .arg(format!("127.0.0.1:{port}"))
        .env("XFER_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn xfer send")
}

/// A running `xfer recv --listen 127.0.0.1:0`, its port, and its stderr so far.
pub struct Receiver {
    pub child: Child,
    pub port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Receiver {
    /// Starts a receiver into `dir` with `key` (None: no key at all) and extra flags.
    pub fn start(dir: &Path, key: Option<&str>, extra: &[&str]) -> Receiver {
        let mut command = xfer();
        command
            .args(["recv", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .args(extra);
        if let Some(key) = key {
            command.env("XFER_KEY", key);
        }
        Receiver::spawn(command)
    }

    /// Spawns a prepared `recv` command and waits for its `listening on` line.
    pub fn spawn(mut command: Command) -> Receiver {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn receiver");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let mut lines = BufReader::new(child.stderr.take().expect("piped"));
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                    let _ = port_tx.send(port);
                }
                collected.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let port = port_rx
            .recv_timeout(TIMEOUT)
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "receiver never said where it listens: {}",
                    stderr.lock().unwrap()
                )
            });
        Receiver {
            child,
            port,
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the receiver to exit (bounded) and returns its exit code.
    pub fn exit_code(&mut self) -> i32 {
        let status = wait_for(&mut self.child, TIMEOUT);
        // Let the stderr reader catch the last lines.
        std::thread::sleep(Duration::from_millis(50));
        assert_no_panic(&self.stderr());
        status.code().expect("exited, not killed")
    }

    /// Its stderr once it says `needle`, waiting for that (bounded: after
    /// [`TIMEOUT`], whatever it said; the caller asserts).
    pub fn wait_for_stderr(&self, needle: &str) -> String {
        let started = Instant::now();
        while !self.stderr().contains(needle) && started.elapsed() < TIMEOUT {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stderr()
    }

    /// What it printed on stdout, once it exited (a serving one is stopped first).
    pub fn stdout(&mut self) -> String {
        if self.is_running() {
            let _ = self.child.kill();
        }
        wait_for(&mut self.child, TIMEOUT);
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out).expect("read stdout");
        }
        out
    }

    /// Whether it is still running (a one-shot receiver waiting for its sender).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file below `dir`, relative, sorted (directories not listed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ---- The version-2 peer of `peer.rs`, pointed at the binary ------------------------

/// What the peer chooses as a sender in most tests: `aead` only, so frames are sealed
/// and MD5 is in force (an `xfer send --hash md5` chooses the same; without `--hash`
/// it chooses `blake3` too, and `zstd` only when it compresses).
pub const SENDER_FEATURES: &[&str] = &["aead"];
/// What a default `xfer` listener lists in `hello`.
pub const LISTENER_FEATURES: &[&str] = &["aead", "blake3", "zstd"];

/// The independent peer listening on 127.0.0.1 port 0 in a thread that accepts one
/// connection and runs `script` on it: the port, and the thread to join for what
/// `script` returns.
pub fn peer_listening<T: Send + 'static>(
    script: impl FnOnce(Peer) -> T + Send + 'static,
) -> (u16, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("bound").port();
    let thread = std::thread::spawn(move || script(Peer::accept(&listener).expect("accept")));
    (port, thread)
}

/// How a receiver without `meta` (an xfer before it: [`LISTENER_FEATURES`]) answers
/// the handshake.
pub fn receiver_without_meta() -> peer::Acceptor {
    peer::Acceptor::new(KEY, "receiver").features(LISTENER_FEATURES)
}

/// A receiver without `meta` ([`receiver_without_meta`]) that takes everything the
/// one sender that connects offers: its port, and the thread that returns what
/// arrived.
pub fn old_receiver_taking_all() -> (u16, std::thread::JoinHandle<peer::Received>) {
    peer_listening(|mut peer| {
        peer.accept_handshake(&receiver_without_meta())
            .expect("handshake");
        peer.receive_transfer(|_, _| peer::Decision::Send)
            .expect("a transfer")
    })
}

/// Connects to 127.0.0.1:`port` without saying anything (every read bounded).
pub fn peer_connect(port: u16) -> Peer {
    Peer::connect(("127.0.0.1", port)).expect("connect")
}

/// Connects to the listener on 127.0.0.1:`port` and authenticates as a sender with
/// [`KEY`], choosing `features` (frames are sealed when `aead` is among them).
pub fn peer_sender(port: u16, features: &[&str]) -> Peer {
    let mut peer = peer_connect(port);
    peer.initiate(&Initiator::new(KEY, "sender").features(features))
        .expect("authenticated");
    peer
}

/// `xfer send` with `args` of a directory holding one link (an entry without
/// data) to the independent peer as a receiver with `meta`; `answer` gets the
/// peer once the offer was read (raw: the peer knows no `meta` kinds), and what it
/// returns comes back beside the sender's output.
pub fn link_tree_to_meta_peer<T: Send + 'static>(
    args: &[&str],
    answer: impl FnOnce(&mut Peer, Vec<serde_json::Value>) -> T + Send + 'static,
) -> (Output, T) {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    std::os::unix::fs::symlink("x", tree.join("link")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer_side = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).unwrap();
        let acceptor = peer::Acceptor::new(KEY, "receiver").features(&["aead", "meta"]);
        peer.accept_handshake(&acceptor).unwrap();
        let mut offer = Vec::new();
        loop {
            let frame = peer.read_control().unwrap();
            match frame["type"].as_str() {
                Some("offer") => offer.extend(frame["entries"].as_array().unwrap().clone()),
                _ => break,
            }
        }
        answer(&mut peer, offer)
    });
    let sent = send(&[&tree], port, KEY, args);
    (sent, peer_side.join().unwrap())
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source` (any of
/// 127.0.0.0/8 works on Linux), so that a test can stand for many hosts: a listener
/// bounds connections in the handshake per address.
pub fn connect_from(source: Ipv4Addr, port: u16) -> TcpStream {
    try_connect_from(source, port).expect("connect from a loopback address")
}

/// [`connect_from`], for a caller that copes with a refusal (a relay thread).
pub fn try_connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType};
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    rustix::net::bind(&socket, &SocketAddrV4::new(source, 0))?;
    rustix::net::connect(&socket, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

// ---- Files, tools and terminals ----------------------------------------------------

/// Writes `content` to `dir/name` and returns that path.
pub fn write_in(dir: &Path, name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Writes `content` as `name` in `dir` an hour in the past: an older version of a
/// file, as a receiver holds one. (Written a moment before the new one, it would
/// have its size and time: `same` to the quick check, which sends nothing.)
pub fn write_older(dir: &Path, name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = write_in(dir, name, content);
    make_older(&path);
    path
}

/// Sets the modification time of the file at `path` an hour back (see
/// [`write_older`]).
pub fn make_older(path: &Path) {
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(an_hour_ago).unwrap();
}

/// `recv --listen 127.0.0.1:0 --overwrite --dir DIR` run as `nobody` (see
/// [`as_nobody`]), for what a receiver may not do on its own disk; `None` (and a
/// line saying the test skips) where that is not possible.
pub fn nobody_receiving(dir: &Path) -> Option<Receiver> {
    let mut command = xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--overwrite", "--dir"])
        .arg(dir)
        .env("XFER_KEY", KEY);
    let receiver = as_nobody(command).map(Receiver::spawn);
    if receiver.is_none() {
        eprintln!("SKIPPED: needs root and setpriv to run the receiver unprivileged");
    }
    receiver
}

/// Runs `command` as the unprivileged user `nobody` (the tests run as root, who
/// may write anything), or `None` where that is not possible.
pub fn as_nobody(command: Command) -> Option<Command> {
    setpriv(
        &["--reuid=65534", "--regid=65534", "--clear-groups"],
        command,
    )
}

/// Runs `command` as root without `CAP_SYS_ADMIN` (as in a container that drops
/// it: `trusted.*` attributes are hidden from it), or `None` where that is not
/// possible.
pub fn without_sys_admin(command: Command) -> Option<Command> {
    setpriv(
        &["--inh-caps=-sys_admin", "--bounding-set=-sys_admin"],
        command,
    )
}

/// `command` run through `setpriv` with `options`, as root only.
fn setpriv(options: &[&str], mut command: Command) -> Option<Command> {
    if !rustix::process::geteuid().is_root() || which("setpriv").is_none() {
        return None;
    }
    let mut wrapped = Command::new("setpriv");
    wrapped.args(options).arg("--");
    wrapped.arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    let _ = &mut command;
    Some(wrapped)
}

/// Where `tool` is on `$PATH`, if it is there.
pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.exists())
}

/// The name a receiver keeps partial data of `name` (offered with `size` bytes)
/// under: `.xfer-` and the first 32 hex digits of SHA-256(name 0x00 u64be(size)).
pub fn partial_name(name: &str, size: u64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0])
        .chain_update(size.to_be_bytes())
        .finalize();
    format!(".xfer-{}.partial", &peer::hex(&digest)[..32])
}

/// `text` without terminal escape sequences.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A tmpfs of `bytes` mounted on a directory, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts it on `dir` (made if missing, mode 0700), or says why it cannot
    /// (not root, no `mount`) and gives `None`.
    pub fn mount(dir: &Path, bytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("tmpfs")
            .arg(dir)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr);
                eprintln!("skipped: cannot mount a tmpfs (root only): {why}");
                None
            }
            Err(err) => {
                eprintln!("skipped: no mount: {err}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
