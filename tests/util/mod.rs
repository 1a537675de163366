//! Helpers for end-to-end tests: run the real `xfer` binary on 127.0.0.1 with port 0,
//! with a bound on every wait, and a raw protocol peer written from PROTOCOL.md
//! alone (it shares no code with the crate) to play a hostile or independent side.

#![allow(dead_code)] // each test binary uses a different part of this

pub mod peer;
pub mod relay;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use peer::{Initiator, Peer};
use serde_json::{Value, json};
use sha2::Sha256;

/// Longest any single process or socket wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The key most tests share.
pub const KEY: &str = "test key: long enough not to warn";

pub fn xfer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xfer"));
    command.env_remove("XFER_KEY").env("RUST_BACKTRACE", "1");
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

/// What an initiating `xfer send` chooses from a default listener's `hello`: `aead`
/// only (no `blake3` unless `--hash blake3`, no `zstd` unless it compresses).
pub const SENDER_FEATURES: &[&str] = &["aead"];
/// What a default `xfer` listener lists in `hello`.
pub const LISTENER_FEATURES: &[&str] = &["aead", "blake3", "zstd"];

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

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source` (any of
/// 127.0.0.0/8 works on Linux), so that a test can stand for many hosts: a listener
/// bounds connections in the handshake per address.
pub fn connect_from(source: Ipv4Addr, port: u16) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let socket =
        rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("a socket");
    rustix::net::bind(&socket, &SocketAddrV4::new(source, 0)).expect("bind the source");
    rustix::net::connect(&socket, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

// ---- A raw peer, written from PROTOCOL.md alone -------------------------------

type HmacSha256 = Hmac<Sha256>;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

pub fn labelled_mac(key: &[u8], label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(label.as_bytes());
    mac.update(&[0]);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// One end of a connection that speaks frames by hand.
pub struct RawPeer {
    pub stream: TcpStream,
    /// The session key, once authenticated.
    pub session: [u8; 32],
}

impl RawPeer {
    pub fn connect(port: u16) -> RawPeer {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        RawPeer {
            stream,
            session: [0; 32],
        }
    }

    /// Accepts one connection on `listener` and plays a listening receiver's half of
    /// the handshake with `key`, checking the initiator's proof.
    pub fn accept_as_receiver(listener: &std::net::TcpListener, key: &[u8]) -> RawPeer {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut peer = RawPeer {
            stream,
            session: [0; 32],
        };
        let na = [7u8; 32];
        peer.send(&json!({"type":"hello","version":1,"role":"receiver","nonce":hex(&na)}));
        let auth = peer.read().expect("auth");
        let ni = unhex(auth["nonce"].as_str().unwrap());
        let mac = |label: &str| labelled_mac(key, label, &[&na, &ni]);
        assert_eq!(auth["mac"], hex(&mac("xfer/1 initiator")));
        peer.send(&json!({"type":"auth_ok","mac":hex(&mac("xfer/1 acceptor"))}));
        peer.session = mac("xfer/1 session");
        peer
    }

    /// Connects and authenticates as an initiating sender with `key`.
    pub fn sender(port: u16, key: &str) -> RawPeer {
        let mut peer = RawPeer::connect(port);
        peer.authenticate(key.as_bytes(), "sender")
            .expect("authenticated");
        peer
    }

    /// The initiator's half of the handshake; `Err` holds the frame that ended it.
    pub fn authenticate(&mut self, key: &[u8], role: &str) -> Result<(), Value> {
        let hello = self.read().expect("hello");
        assert_eq!(hello["type"], "hello", "{hello}");
        let na = unhex(hello["nonce"].as_str().unwrap());
        let ni: Vec<u8> = (0..32).map(|i| i as u8 ^ 0x5a).collect();
        let mac_i = labelled_mac(key, "xfer/1 initiator", &[&na, &ni]);
        self.send(
            &json!({"type":"auth","version":1,"role":role,"nonce":hex(&ni),"mac":hex(&mac_i)}),
        );
        let reply = self.read().expect("auth reply");
        if reply["type"] != "auth_ok" {
            return Err(reply);
        }
        let mac_a = labelled_mac(key, "xfer/1 acceptor", &[&na, &ni]);
        assert_eq!(reply["mac"], hex(&mac_a), "the acceptor's proof");
        self.session = labelled_mac(key, "xfer/1 session", &[&na, &ni]);
        Ok(())
    }

    pub fn send(&mut self, message: &Value) {
        let payload = serde_json::to_vec(message).unwrap();
        self.send_raw_frame(&payload);
    }

    pub fn send_raw_frame(&mut self, payload: &[u8]) {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        self.stream.write_all(&bytes).unwrap();
    }

    /// Writes, ignoring failures (the peer may have hung up on purpose).
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads one control frame; `None` when the peer closed (or reset) the connection.
    pub fn read(&mut self) -> Option<Value> {
        let mut prefix = [0; 4];
        self.stream.read_exact(&mut prefix).ok()?;
        let mut payload = vec![0; u32::from_be_bytes(prefix) as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(serde_json::from_slice(&payload).expect("peer sent JSON"))
    }

    /// Reads one frame of any kind, raw; `None` when the peer closed.
    pub fn read_any(&mut self) -> Option<Vec<u8>> {
        let mut prefix = [0; 4];
        self.stream.read_exact(&mut prefix).ok()?;
        let mut payload = vec![0; u32::from_be_bytes(prefix) as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(payload)
    }

    pub fn file_mac(&self, label: &str, index: u64, content: &[u8], path: &str) -> String {
        let md5 = Md5::digest(content);
        hex(&labelled_mac(
            &self.session,
            label,
            &[
                &index.to_be_bytes(),
                &(content.len() as u64).to_be_bytes(),
                &md5,
                path.as_bytes(),
            ],
        ))
    }

    /// Sends one whole file for entry `index` as the protocol says: data, frames, done.
    pub fn send_file(&mut self, index: u64, path: &str, content: &[u8]) {
        self.send(&json!({"type":"data","index":index,"offset":0}));
        for chunk in content.chunks(100_000) {
            self.send_raw_frame(chunk);
        }
        self.send_raw_frame(&[]);
        let mac = self.file_mac("xfer/1 done", index, content, path);
        self.send(&json!({"type":"done","index":index,"size":content.len(),"md5":md5_hex(content),"mac":mac}));
    }
}
