//! The harness of the `xfer serve` tests: a [`Site`] (keys, a users file, a root and
//! local files in one temporary directory), the [`Server`] running on it, clients run
//! as one of its users, and what their output says. Every wait is bounded.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::peer::{Initiator, Peer};
use super::{Receiver, TIMEOUT, files_under, run, stderr_of, wait_for, xfer};

// ---- A site: keys, a users file, a root, and a server on it -------------------

/// A temporary directory holding `keys/`, `users.toml`, the server's `root/` and
/// whatever local files a test needs.
pub struct Site {
    dir: tempfile::TempDir,
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

    pub fn users_file(&self) -> PathBuf {
        self.path().join("users.toml")
    }

    /// The key of `user` (the bytes of their key file).
    pub fn key_of(user: &str) -> String {
        format!("{user}'s key, long enough for any test")
    }

    /// `keys/USER.key` (mode 0600), written the first time it is asked for.
    pub fn key_file(&self, user: &str) -> PathBuf {
        let path = self.path().join("keys").join(format!("{user}.key"));
        if !path.exists() {
            private(&path, Site::key_of(user).as_bytes());
        }
        path
    }

    /// Writes the users file (mode 0600) as given.
    pub fn write_users(&self, text: &str) -> PathBuf {
        let path = self.users_file();
        private(&path, text.as_bytes());
        path
    }

    /// Writes a users file with one table per `(name, extra lines)`, each user with
    /// their key file.
    pub fn users(&self, users: &[(&str, &str)]) -> PathBuf {
        let mut text = String::new();
        for (name, extra) in users {
            self.key_file(name);
            text.push_str(&format!(
                "[users.{name}]\nkey_file = \"keys/{name}.key\"\n{extra}\n\n"
            ));
        }
        self.write_users(&text)
    }

    /// `xfer serve --root root --listen 127.0.0.1:0 --users users.toml EXTRA`, once
    /// it says where it listens.
    pub fn serve(&self, extra: &[&str]) -> Server {
        self.serve_on("127.0.0.1:0", extra)
    }

    /// [`Site::serve`] listening on `listen`.
    pub fn serve_on(&self, listen: &str, extra: &[&str]) -> Server {
        Server(Receiver::spawn(self.serve_command(xfer(), listen, extra)))
    }

    /// [`Site::serve`] run to completion, for a server that refuses to start.
    pub fn serve_refused(&self) -> Output {
        run(&mut self.serve_command(xfer(), "127.0.0.1:0", &[]))
    }

    /// `xfer serve` as uid/gid 65534 (the site chowned to it), for what only an
    /// unprivileged server shows; `None` (with the reason printed) where `setpriv`
    /// is missing.
    pub fn serve_unprivileged(&self) -> Option<Server> {
        if Command::new("setpriv").arg("--version").output().is_err() {
            eprintln!("skipped: setpriv is missing, so the server cannot run unprivileged");
            return None;
        }
        chown_all(self.path());
        let mut setpriv = Command::new("setpriv");
        setpriv
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_xfer"));
        let command = self.serve_command(setpriv, "127.0.0.1:0", &[]);
        Some(Server(Receiver::spawn(command)))
    }

    /// `xfer serve` under `prlimit --fsize=BYTES` (a write past BYTES fails with
    /// `EFBIG`, as a full disk fails one); `None` (with the reason printed) where
    /// `prlimit` is missing.
    pub fn serve_with_file_size_limit(&self, bytes: u64) -> Option<Server> {
        if Command::new("prlimit").arg("--version").output().is_err() {
            eprintln!("skipped: prlimit is missing, so no file-size limit can be set");
            return None;
        }
        let mut prlimit = Command::new("prlimit");
        prlimit
            .arg(format!("--fsize={bytes}"))
            .arg(env!("CARGO_BIN_EXE_xfer"));
        let command = self.serve_command(prlimit, "127.0.0.1:0", &[]);
        Some(Server(Receiver::spawn(command)))
    }

    /// `command` made to run `serve` on this site (`command` is xfer, or a wrapper
    /// whose last argument is xfer).
    fn serve_command(&self, mut command: Command, listen: &str, extra: &[&str]) -> Command {
        clean_env(&mut command);
        command
            .arg("serve")
            .arg("--root")
            .arg(self.root())
            .args(["--listen", listen, "--users"])
            .arg(self.users_file())
            .args(extra)
            // Key files are relative to the users file, not to where the server runs.
            .current_dir("/");
        command
    }

    /// A local file (parents created) with `content`.
    pub fn local(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.path().join("local").join(name);
        write(&path, content);
        path
    }

    /// A fresh local directory to download into.
    pub fn download_dir(&self, name: &str) -> PathBuf {
        let path = self.path().join("downloads").join(name);
        fs::create_dir_all(&path).expect("mkdir");
        path
    }
}

/// A running `xfer serve`; killed when dropped.
pub struct Server(pub Receiver);

impl Server {
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// `127.0.0.1:PORT:PATH`.
    pub fn at(&self, path: &str) -> String {
        format!("127.0.0.1:{}:{path}", self.port())
    }

    /// Everything the server wrote on stderr so far.
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

    /// Sends the server SIGHUP (read the users file again).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.0.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Sends SIGHUP and waits for the `count`th reload.
    pub fn reload(&self, count: usize) {
        self.hangup();
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

    pub fn is_running(&mut self) -> bool {
        self.0.is_running()
    }

    /// Stops a server started with `--json` and returns the events it printed.
    pub fn json_events(mut self) -> Vec<Value> {
        // Let the last request's events out first.
        std::thread::sleep(Duration::from_millis(200));
        self.0.child.kill().expect("kill");
        let mut stdout = String::new();
        let mut pipe = self.0.child.stdout.take().expect("piped");
        pipe.read_to_string(&mut stdout).expect("read");
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect()
    }
}

// ---- Running clients ----------------------------------------------------------

/// No key, user or password from the environment of whoever runs the tests.
pub fn clean_env(command: &mut Command) {
    for var in [
        "XFER_KEY",
        "XFER_USER",
        "XFER_PASSWORD",
        "XFER_HASH",
        "XFER_COMPRESS",
    ] {
        command.env_remove(var);
    }
}

/// `xfer ARGS --user USER --key-file keys/USER.key`, to completion.
pub fn client(site: &Site, user: &str, args: &[&str]) -> Output {
    run(&mut as_user(site, user, args))
}

/// `xfer send PATHS TO` as `user` (TO: a server's address, or `HOST:PORT:DIR`), to
/// completion.
pub fn send_as(site: &Site, user: &str, paths: &[&Path], to: &str) -> Output {
    let mut command = as_user(site, user, &["send"]);
    command.args(paths).arg(to);
    run(&mut command)
}

/// The command [`client`] runs, to adjust before running it.
pub fn as_user(site: &Site, user: &str, args: &[&str]) -> Command {
    let mut command = xfer();
    clean_env(&mut command);
    command
        .args(args)
        .arg("--user")
        .arg(user)
        .arg("--key-file")
        .arg(site.key_file(user))
        .current_dir(site.path());
    command
}

/// Runs `command` with `input` on its standard input, to completion (bounded).
pub fn run_with_input(command: &mut Command, input: Vec<u8>) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xfer");
    let mut stdin = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        all
    });
    let err = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        all
    });
    let status = wait_for(&mut child, TIMEOUT);
    let _ = feeder.join();
    Output {
        status,
        stdout: out.join().expect("reader"),
        stderr: err.join().expect("reader"),
    }
}

pub fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts the exit code, showing both outputs when it differs.
#[track_caller]
pub fn expect_exit(output: &Output, expected: i32, what: &str) {
    assert_eq!(
        code(output),
        expected,
        "{what}: stdout: {} stderr: {}",
        stdout_of(output),
        stderr_of(output)
    );
}

/// Asserts a refusal by the server: exit 6 and `reason` (a code) on stderr.
#[track_caller]
pub fn expect_refused(output: &Output, reason: &str, what: &str) {
    expect_exit(output, 6, what);
    assert!(
        stderr_of(output).contains(reason),
        "{what}: expected {reason}: {}",
        stderr_of(output)
    );
}

/// The lines of `xfer ls` output.
pub fn lines(output: &Output) -> Vec<String> {
    stdout_of(output).lines().map(str::to_owned).collect()
}

// ---- The independent peer as a client -----------------------------------------

/// The names of listing items.
pub fn item_names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

// ---- Files --------------------------------------------------------------------

pub fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

/// A file only its owner may read (what the server asks of keys and users files).
pub fn private(path: &Path, content: &[u8]) {
    write(path, content);
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Every name directly in `dir`, hidden ones included, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file below `dir` with its content, for before/after comparisons.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let content = fs::read(dir.join(&p)).unwrap_or_default();
            (p, content)
        })
        .collect()
}

/// Waits (bounded) until `check` holds.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < TIMEOUT, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The uid and gid an unprivileged server runs as.
pub const NOBODY: u32 = 65534;

/// Makes `path` and everything beneath it belong to uid/gid 65534.
pub fn chown_all(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).expect("chown");
    if fs::symlink_metadata(path).expect("lstat").is_dir() {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_all(&entry.expect("entry").path());
        }
    }
}
