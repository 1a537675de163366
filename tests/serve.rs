//! End-to-end tests of `xfer serve` and the client commands that talk to it (`send
//! HOST:PORT[:DIR]`, `get`, `ls`, `mkdir`, `rm`, `mv`), run against the real binary
//! on 127.0.0.1 with port 0: homes that users cannot leave (`..`, absolute paths,
//! planted symlinks, a home swapped for a symlink), quotas (up front, streams,
//! sessions sharing one account, file counts), read-only users, failed logins that
//! say nothing about which users exist, the users file and its reload on SIGHUP,
//! resumed downloads, interoperation with the independent peer and minimal server of
//! `tests/util/peer`, passwords, awkward names, listings, and clients that vanish.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use util::peer::server::{MiniServer, ServerConfig};
use util::peer::{Initiator, Peer, PeerError, PeerResult, SendEntry};
use util::{Receiver, TIMEOUT, files_under, pattern, run, stderr_of, wait_for, xfer};

// ---- A site: keys, a users file, a root, and a server on it -------------------

/// The password of PROTOCOL.md's password vector, its realm, and the key it gives alice.
const PASSWORD: &str = "correct horse battery staple";
const REALM: &str = "files.example.org";
const ALICE_PASSWORD_KEY: &str = "e6d7419a2eb2552f49341a33fccb746c7614b9b219b7886415f035064bfeffd9";

/// A temporary directory holding `keys/`, `users.toml`, the server's `root/` and
/// whatever local files a test needs.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    fn home(&self, user: &str) -> PathBuf {
        self.root().join(user)
    }

    fn users_file(&self) -> PathBuf {
        self.path().join("users.toml")
    }

    /// The key of `user` (the bytes of their key file).
    fn key_of(user: &str) -> String {
        format!("{user}'s key, long enough for any test")
    }

    /// `keys/USER.key` (mode 0600), written the first time it is asked for.
    fn key_file(&self, user: &str) -> PathBuf {
        let path = self.path().join("keys").join(format!("{user}.key"));
        if !path.exists() {
            private(&path, Site::key_of(user).as_bytes());
        }
        path
    }

    /// Writes the users file (mode 0600) as given.
    fn write_users(&self, text: &str) -> PathBuf {
        let path = self.users_file();
        private(&path, text.as_bytes());
        path
    }

    /// Writes a users file with one table per `(name, extra lines)`, each user with
    /// their key file.
    fn users(&self, users: &[(&str, &str)]) -> PathBuf {
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
    fn serve(&self, extra: &[&str]) -> Server {
        self.serve_on("127.0.0.1:0", extra)
    }

    /// [`Site::serve`] listening on `listen`.
    fn serve_on(&self, listen: &str, extra: &[&str]) -> Server {
        let mut command = xfer();
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
        Server(Receiver::spawn(command))
    }

    /// A local file (parents created) with `content`.
    fn local(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.path().join("local").join(name);
        write(&path, content);
        path
    }

    /// A fresh local directory to download into.
    fn download_dir(&self, name: &str) -> PathBuf {
        let path = self.path().join("downloads").join(name);
        fs::create_dir_all(&path).expect("mkdir");
        path
    }
}

/// A running `xfer serve`; killed when dropped.
struct Server(Receiver);

impl Server {
    fn port(&self) -> u16 {
        self.0.port
    }

    /// `127.0.0.1:PORT`.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// `127.0.0.1:PORT:PATH`.
    fn at(&self, path: &str) -> String {
        format!("127.0.0.1:{}:{path}", self.port())
    }

    /// Everything the server wrote on stderr so far.
    fn log(&self) -> String {
        self.0.stderr()
    }

    /// Waits (bounded) until the log holds `needle` at least `count` times.
    fn wait_for_log(&self, needle: &str, count: usize) -> String {
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
    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.0.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn is_running(&mut self) -> bool {
        self.0.is_running()
    }

    /// Stops a server started with `--json` and returns the events it printed.
    fn json_events(mut self) -> Vec<Value> {
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
fn clean_env(command: &mut Command) {
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
fn client(site: &Site, user: &str, args: &[&str]) -> Output {
    run(&mut as_user(site, user, args))
}

/// The command [`client`] runs, to adjust before running it.
fn as_user(site: &Site, user: &str, args: &[&str]) -> Command {
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
fn run_with_input(command: &mut Command, input: Vec<u8>) -> Output {
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

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts the exit code, showing both outputs when it differs.
#[track_caller]
fn expect_exit(output: &Output, expected: i32, what: &str) {
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
fn expect_refused(output: &Output, reason: &str, what: &str) {
    expect_exit(output, 6, what);
    assert!(
        stderr_of(output).contains(reason),
        "{what}: expected {reason}: {}",
        stderr_of(output)
    );
}

/// The lines of `xfer ls` output.
fn lines(output: &Output) -> Vec<String> {
    stdout_of(output).lines().map(str::to_owned).collect()
}

// ---- The independent peer as a client -----------------------------------------

/// A request connection of the independent peer, logged in as `user` with their key.
fn login(server: &Server, user: &str) -> Peer {
    let mut peer = Peer::connect(("127.0.0.1", server.port())).expect("connect");
    peer.initiate(&Initiator::client(Site::key_of(user), user))
        .expect("logged in");
    peer
}

/// The code of the error frame a request was answered with, if any.
fn remote_code<T>(result: PeerResult<T>) -> Option<String> {
    result
        .err()
        .and_then(|e| e.remote_code().map(str::to_owned))
}

/// The names of listing items.
fn item_names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

// ---- Files --------------------------------------------------------------------

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

/// A file only its owner may read (what the server asks of keys and users files).
fn private(path: &Path, content: &[u8]) {
    write(path, content);
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Every name directly in `dir`, hidden ones included, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file below `dir` with its content, for before/after comparisons.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let content = fs::read(dir.join(&p)).unwrap_or_default();
            (p, content)
        })
        .collect()
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < TIMEOUT, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alice with a secret and a directory in her home, bob with one file of his own.
fn alice_and_bob(site: &Site) {
    write(&site.home("alice").join("secret.txt"), b"alice's secret\n");
    write(&site.home("alice").join("docs/plan.txt"), b"alice's plan\n");
    write(&site.home("bob").join("own.txt"), b"bob's own file\n");
}

// ---- 1. Homes ------------------------------------------------------------------

#[test]
fn two_users_cannot_see_or_touch_each_others_files() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    // Bob's home exists already, open to other local accounts.
    fs::create_dir_all(site.home("bob")).unwrap();
    fs::set_permissions(site.home("bob"), fs::Permissions::from_mode(0o755)).unwrap();
    let server = site.serve(&[]);
    let mode = |user| fs::metadata(site.home(user)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("alice"), 0o700, "a new home is private");
    assert_eq!(mode("bob"), 0o755, "an existing home is left as it is");
    assert!(
        server
            .log()
            .contains("the home of bob (bob) is open to other local accounts (mode 755)"),
        "{}",
        server.log()
    );
    // Alice puts her files through the server.
    let secret = site.local("secret.txt", b"alice's secret\n");
    let plan = site.local("docs/plan.txt", b"alice's plan\n");
    let docs = plan.parent().unwrap().to_path_buf();
    let put = client(
        &site,
        "alice",
        &[
            "send",
            secret.to_str().unwrap(),
            docs.to_str().unwrap(),
            &server.addr(),
        ],
    );
    expect_exit(&put, 0, "alice's put");
    write(&site.home("bob").join("own.txt"), b"bob's own file\n");
    let alice_before = snapshot(&site.home("alice"));
    assert_eq!(alice_before.len(), 2);
    let alice_abs = site.home("alice");
    let alice_abs = alice_abs.to_str().unwrap();
    let secret_abs = format!("{alice_abs}/secret.txt");

    // Bob cannot list his way out: every escape is a bad path. (A leading `/` is
    // his home, as in the shell: those paths are looked for inside it, and are not
    // there.)
    let refusal = |path: &str| {
        if path.starts_with('/') {
            "not_found"
        } else {
            "bad_path"
        }
    };
    for path in [
        "../alice",
        "../alice/secret.txt",
        "/alice",
        "..",
        "../..",
        "./../alice",
        "own.txt/../../alice",
        alice_abs,
        &secret_abs,
        "/etc",
    ] {
        let ls = client(&site, "bob", &["ls", &server.at(path)]);
        expect_refused(&ls, refusal(path), &format!("bob's ls {path}"));
        assert!(!stdout_of(&ls).contains("secret"), "{path}: {ls:?}");
    }
    // Nor get, remove or rename what is hers, nor put into her home.
    let dl = site.download_dir("bob");
    for path in ["../alice/secret.txt", &secret_abs, "../alice"] {
        let get = client(
            &site,
            "bob",
            &["get", &server.at(path), dl.to_str().unwrap()],
        );
        expect_refused(&get, refusal(path), &format!("bob's get {path}"));
        let rm = client(&site, "bob", &["rm", &server.at(path)]);
        expect_refused(&rm, refusal(path), &format!("bob's rm {path}"));
        let mv = client(&site, "bob", &["mv", &server.at(path), "mine.txt"]);
        expect_refused(&mv, refusal(path), &format!("bob's mv {path}"));
    }
    assert!(names_in(&dl).is_empty(), "{:?}", names_in(&dl));
    let mv = client(
        &site,
        "bob",
        &["mv", &server.at("own.txt"), "../alice/own.txt"],
    );
    expect_refused(&mv, "bad_path", "bob's mv into alice's home");
    let mkdir = client(&site, "bob", &["mkdir", &server.at("../alice/planted")]);
    expect_refused(&mkdir, "bad_path", "bob's mkdir in alice's home");
    let mine = site.local("planted.txt", b"bob was here");
    let put = client(
        &site,
        "bob",
        &["send", mine.to_str().unwrap(), &server.at("../alice")],
    );
    expect_refused(&put, "bad_path", "bob's put into ../alice");
    // Her home's absolute path names a directory inside his own, made for the put.
    let put = client(
        &site,
        "bob",
        &["send", mine.to_str().unwrap(), &server.at(alice_abs)],
    );
    expect_exit(&put, 0, "bob's put into /…/alice, inside his home");
    let inside = site.home("bob").join(alice_abs.trim_start_matches('/'));
    assert_eq!(
        fs::read(inside.join("planted.txt")).unwrap(),
        b"bob was here"
    );
    fs::remove_dir_all(
        site.home("bob")
            .join(alice_abs.trim_start_matches('/').split('/').next().unwrap()),
    )
    .unwrap();
    // Bob's own home shows only his file, and hers is as she left it.
    let ls = client(&site, "bob", &["ls", &server.addr()]);
    expect_exit(&ls, 0, "bob's ls");
    assert_eq!(lines(&ls), ["own.txt"]);
    assert_eq!(snapshot(&site.home("alice")), alice_before);
    assert!(site.home("bob").join("own.txt").exists());
}

#[test]
fn a_symlink_in_a_home_is_a_leaf_that_is_never_followed() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&[]);
    alice_and_bob(&site);
    let bob = site.home("bob");
    let link = |target: &str, name: &str| {
        std::os::unix::fs::symlink(target, bob.join(name)).expect("symlink");
    };
    link("../alice", "to_alice");
    link(site.home("alice").to_str().unwrap(), "to_alice_abs");
    link("../alice/secret.txt", "secret_link");
    link("/etc", "etc");
    fs::create_dir(bob.join("stuff")).unwrap();
    fs::write(bob.join("stuff/mine.txt"), b"mine").unwrap();
    std::os::unix::fs::symlink("../../alice", bob.join("stuff/inside_link")).unwrap();
    let alice_before = snapshot(&site.home("alice"));

    // Listed as leaves of another kind.
    let ls = client(&site, "bob", &["ls", "-l", &server.addr()]);
    expect_exit(&ls, 0, "ls -l");
    for line in lines(&ls) {
        let name = line.rsplit(' ').next().unwrap().to_owned();
        let expected_kind = match name.as_str() {
            "own.txt" => '-',
            "stuff" => 'd',
            _ => '?',
        };
        assert!(line.starts_with(expected_kind), "{line}");
    }
    let json = client(&site, "bob", &["ls", "--json", &server.at("to_alice")]);
    expect_exit(&json, 0, "ls --json of a symlink");
    let item: Value = serde_json::from_str(lines(&json)[0].as_str()).unwrap();
    assert_eq!(
        (item["name"].as_str(), item["kind"].as_str()),
        (Some("to_alice"), Some("other"))
    );
    assert_eq!(item["size"], 0);
    assert_eq!(lines(&json).len(), 1, "one item for the link itself");

    // Never followed: not by list, get, put, mkdir, rm or mv.
    for path in [
        "to_alice/secret.txt",
        "to_alice_abs/docs",
        "etc/passwd",
        "to_alice/docs/plan.txt",
    ] {
        let ls = client(&site, "bob", &["ls", &server.at(path)]);
        expect_refused(&ls, "not_found", &format!("ls {path}"));
        assert!(!stdout_of(&ls).contains("plan"), "{path}");
    }
    let dl = site.download_dir("bob");
    for (path, why) in [
        ("to_alice", "denied"),
        ("to_alice_abs", "denied"),
        ("secret_link", "denied"),
        ("etc", "denied"),
        ("to_alice/secret.txt", "not_found"),
        ("etc/passwd", "not_found"),
    ] {
        let get = client(
            &site,
            "bob",
            &["get", &server.at(path), dl.to_str().unwrap()],
        );
        expect_refused(&get, why, &format!("get {path}"));
    }
    assert!(names_in(&dl).is_empty(), "{:?}", names_in(&dl));
    // A directory with a link inside: the link is left out.
    let get = client(
        &site,
        "bob",
        &["get", &server.at("stuff"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 0, "get stuff");
    assert_eq!(files_under(&dl), [PathBuf::from("stuff/mine.txt")]);
    // Put through a link, or onto one.
    let planted = site.local("planted.txt", b"bob was here");
    for dir in ["to_alice", "to_alice_abs", "to_alice/docs", "etc"] {
        let put = client(
            &site,
            "bob",
            &["send", planted.to_str().unwrap(), &server.at(dir)],
        );
        // Refused as not found, or (when the client then tries to make the
        // directory) as a link it will not follow: either way, exit 6.
        expect_exit(&put, 6, &format!("put into {dir}"));
    }
    // A local directory named like the link, with a file inside, into the home.
    let local_dir = site.path().join("local/as_link/to_alice");
    write(&local_dir.join("planted.txt"), b"bob was here");
    let put = client(
        &site,
        "bob",
        &["send", local_dir.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&put, 6, "a directory over a symlink");
    // A file named like a link to her file.
    let same_name = site.local("named/secret_link", b"overwritten?");
    let put = client(
        &site,
        "bob",
        &["send", same_name.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&put, 6, "a file onto a symlink");
    for path in ["to_alice/new", "etc/new", "to_alice"] {
        let mkdir = client(&site, "bob", &["mkdir", &server.at(path)]);
        expect_refused(&mkdir, "exists", &format!("mkdir {path}"));
    }
    for (path, why) in [
        ("to_alice/secret.txt", "not_found"),
        ("to_alice/docs", "not_found"),
        ("to_alice", "denied"),
        ("secret_link", "denied"),
    ] {
        let rm = client(&site, "bob", &["rm", &server.at(path)]);
        expect_refused(&rm, why, &format!("rm {path}"));
    }
    for (from, to, why) in [
        ("to_alice/secret.txt", "stolen.txt", "not_found"),
        ("secret_link", "stolen.txt", "denied"),
        ("to_alice", "renamed", "denied"),
        ("own.txt", "to_alice/own.txt", "not_found"),
        ("own.txt", "to_alice", "exists"),
    ] {
        let mv = client(&site, "bob", &["mv", &server.at(from), to]);
        expect_refused(&mv, why, &format!("mv {from} {to}"));
    }
    // Nothing of hers moved, and the links are still links.
    assert_eq!(snapshot(&site.home("alice")), alice_before);
    for name in ["to_alice", "to_alice_abs", "secret_link", "etc"] {
        let meta = fs::symlink_metadata(bob.join(name)).unwrap();
        assert!(meta.file_type().is_symlink(), "{name}");
    }
    assert!(!bob.join("stolen.txt").exists() && !bob.join("renamed").exists());
}

#[test]
fn a_home_swapped_for_a_symlink_never_exposes_another_home() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&[]);
    alice_and_bob(&site);
    let alice_before = snapshot(&site.home("alice"));
    // A connection bob opened before the swap.
    let mut held = login(&server, "bob");
    assert_eq!(item_names(&held.list("").expect("a listing")), ["own.txt"]);

    fs::rename(site.home("bob"), site.root().join("bob.old")).unwrap();
    std::os::unix::fs::symlink("alice", site.home("bob")).unwrap();

    // The open connection keeps the old directory, or fails; never hers.
    match held.list("") {
        Ok(items) => assert_eq!(item_names(&items), ["own.txt"]),
        Err(err) => assert!(!err.to_string().contains("secret"), "{err}"),
    }
    if let Ok(got) = held.get(&["secret.txt"]) {
        panic!(
            "bob fetched through the swapped home: {:?}",
            got.files.keys()
        );
    }
    // New logins: an error, never her files.
    let ls = client(&site, "bob", &["ls", &server.addr()]);
    assert_ne!(code(&ls), 0, "{ls:?}");
    assert!(!stdout_of(&ls).contains("secret"), "{ls:?}");
    let dl = site.download_dir("bob");
    let get = client(
        &site,
        "bob",
        &["get", &server.at("secret.txt"), dl.to_str().unwrap()],
    );
    assert_ne!(code(&get), 0, "{get:?}");
    assert!(names_in(&dl).is_empty());
    let planted = site.local("planted.txt", b"bob was here");
    let put = client(
        &site,
        "bob",
        &["send", planted.to_str().unwrap(), &server.addr()],
    );
    assert_ne!(code(&put), 0, "{put:?}");
    for args in [
        vec!["mkdir", "planted_dir"],
        vec!["rm", "secret.txt"],
        vec!["mv", "secret.txt", "gone.txt"],
    ] {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args[1] = server.at(&args[1]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = client(&site, "bob", &refs);
        assert_ne!(code(&out), 0, "{args:?}: {out:?}");
    }
    assert_eq!(snapshot(&site.home("alice")), alice_before);
    // Alice herself is unaffected.
    let ls = client(&site, "alice", &["ls", &server.addr()]);
    expect_exit(&ls, 0, "alice's ls");
    assert_eq!(lines(&ls), ["docs", "secret.txt"]);
}

// ---- 2. Quotas -----------------------------------------------------------------

#[test]
fn a_put_that_does_not_fit_the_quota_is_refused_up_front() {
    let site = Site::new();
    site.users(&[("alice", "quota = 100000")]);
    let server = site.serve(&[]);
    let big = site.local("big.bin", &pattern(150_000, 1));
    let small = site.local("small.txt", b"small enough\n");
    let put = client(
        &site,
        "alice",
        &[
            "send",
            big.to_str().unwrap(),
            small.to_str().unwrap(),
            &server.addr(),
        ],
    );
    expect_exit(&put, 6, "a put over the quota");
    assert!(stderr_of(&put).contains("quota"), "{}", stderr_of(&put));
    // Nothing of the big file (not even a partial); the small one arrived.
    assert_eq!(names_in(&site.home("alice")), ["small.txt"]);
    assert_eq!(
        fs::read(site.home("alice").join("small.txt")).unwrap(),
        b"small enough\n"
    );
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(13), Some(1))
    );
}

#[test]
fn a_stream_that_crosses_the_quota_fails_and_leaves_nothing() {
    let site = Site::new();
    site.users(&[("alice", "quota = 100000")]);
    let server = site.serve(&[]);
    let mut command = as_user(
        &site,
        "alice",
        &["send", "-", &server.addr(), "--name", "stream.bin"],
    );
    let put = run_with_input(&mut command, pattern(300_000, 2));
    expect_exit(&put, 6, "a stream over the quota");
    assert!(stderr_of(&put).contains("quota"), "{}", stderr_of(&put));
    // No partial, no temporary: nothing at all.
    eventually("the server cleans up", || {
        names_in(&site.home("alice")).is_empty()
    });
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(0), Some(0))
    );
    // The quota was given back: a stream that fits arrives.
    let mut command = as_user(
        &site,
        "alice",
        &["send", "-", &server.addr(), "--name", "fits.bin"],
    );
    let put = run_with_input(&mut command, pattern(90_000, 3));
    expect_exit(&put, 0, "a stream under the quota");
    assert_eq!(
        fs::read(site.home("alice").join("fits.bin")).unwrap(),
        pattern(90_000, 3)
    );
}

#[test]
fn two_sessions_of_one_user_share_one_quota() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"1 MiB\"")]);
    let server = site.serve(&[]);
    let files: Vec<PathBuf> = (0..2)
        .map(|i| site.local(&format!("part{i}.bin"), &pattern(700_000, 10 + i)))
        .collect();
    // Slowed down so that both sessions hold their reservations at once.
    let puts: Vec<_> = files
        .iter()
        .map(|file| {
            let mut command = as_user(
                &site,
                "alice",
                &[
                    "send",
                    file.to_str().unwrap(),
                    &server.addr(),
                    "--limit-rate",
                    "1M",
                ],
            );
            std::thread::spawn(move || run(&mut command))
        })
        .collect();
    let outputs: Vec<Output> = puts.into_iter().map(|t| t.join().unwrap()).collect();
    let mut codes: Vec<i32> = outputs.iter().map(code).collect();
    codes.sort();
    assert_eq!(codes, [0, 6], "{outputs:?}");
    let refused = outputs.iter().find(|o| code(o) == 6).unwrap();
    assert!(
        stderr_of(refused).contains("quota"),
        "{}",
        stderr_of(refused)
    );
    let home = names_in(&site.home("alice"));
    assert_eq!(home.len(), 1, "{home:?}");
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(700_000), Some(1))
    );
}

#[test]
fn usage_shows_bytes_and_files_against_the_quota() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"1 MiB\"\nmax_files = 10"), ("bob", "")]);
    let server = site.serve(&[]);
    let a = site.local("a.bin", &pattern(1000, 1));
    let b = site.local("d/b.bin", &pattern(523_288, 2));
    let put = client(
        &site,
        "alice",
        &[
            "send",
            a.to_str().unwrap(),
            b.parent().unwrap().to_str().unwrap(),
            &server.addr(),
        ],
    );
    expect_exit(&put, 0, "alice's put");
    let usage = client(&site, "alice", &["ls", "--usage", &server.addr()]);
    expect_exit(&usage, 0, "ls --usage");
    assert_eq!(
        stdout_of(&usage),
        "used 524288 bytes of 1048576 bytes (50% used), 2 files of 10\n"
    );
    let human = client(&site, "alice", &["ls", "--usage", "-h", &server.addr()]);
    assert_eq!(
        stdout_of(&human),
        "used 512.00 KiB of 1.00 MiB (50% used), 2 files of 10\n"
    );
    let json = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let json: Value = serde_json::from_str(stdout_of(&json).trim()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"bytes": 524288, "files": 2, "quota_bytes": 1048576, "quota_files": 10})
    );
    // Without a quota.
    let usage = client(&site, "bob", &["ls", "--usage", &server.addr()]);
    assert_eq!(stdout_of(&usage), "used 0 bytes (no quota), 0 files\n");
    let json = client(&site, "bob", &["ls", "--usage", "--json", &server.addr()]);
    let json: Value = serde_json::from_str(stdout_of(&json).trim()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"bytes": 0, "files": 0, "quota_bytes": null, "quota_files": null})
    );
}

#[test]
fn removing_a_file_gives_its_room_back_to_the_quota() {
    let site = Site::new();
    site.users(&[("alice", "quota = 100000\nmax_files = 2")]);
    let server = site.serve(&[]);
    let first = site.local("first.bin", &pattern(80_000, 1));
    let put = client(
        &site,
        "alice",
        &["send", first.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&put, 0, "the first put");
    let rm = client(&site, "alice", &["rm", &server.at("first.bin")]);
    expect_exit(&rm, 0, "rm");
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(0), Some(0)),
        "usage after removing the only file"
    );
    // The room is really free again: 80 000 + 80 000 > 100 000 only if rm kept counting.
    let second = site.local("second.bin", &pattern(80_000, 2));
    let put = client(
        &site,
        "alice",
        &["send", second.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&put, 0, "a put that fits once the first file is gone");
}

#[test]
fn max_files_is_enforced() {
    let site = Site::new();
    site.users(&[("alice", "max_files = 2")]);
    let server = site.serve(&[]);
    let dir = site.path().join("local/three");
    for name in ["a", "b", "c"] {
        write(&dir.join(name), name.as_bytes());
    }
    let put = client(
        &site,
        "alice",
        &["send", dir.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&put, 6, "three files for a quota of two");
    assert!(stderr_of(&put).contains("quota"), "{}", stderr_of(&put));
    assert_eq!(files_under(&site.home("alice")).len(), 2);
    let usage = client(&site, "alice", &["ls", "--usage", &server.addr()]);
    assert!(
        stdout_of(&usage).ends_with(", 2 files of 2\n"),
        "{}",
        stdout_of(&usage)
    );
    // Directories are not files: mkdir still works, another file does not.
    expect_exit(
        &client(&site, "alice", &["mkdir", &server.at("more/dirs")]),
        0,
        "mkdir",
    );
    let d = site.local("d.txt", b"d");
    let put = client(
        &site,
        "alice",
        &["send", d.to_str().unwrap(), &server.at("more")],
    );
    expect_refused(&put, "quota", "a third file");
}

// ---- 3. Read-only users --------------------------------------------------------

#[test]
fn a_read_only_user_reads_and_changes_nothing() {
    let site = Site::new();
    site.users(&[("reader", "read_only = true")]);
    let server = site.serve(&[]);
    let home = site.home("reader");
    write(&home.join("report.txt"), b"to be read\n");
    write(&home.join("dir/inner.txt"), b"inner\n");
    let before = snapshot(&home);

    let ls = client(&site, "reader", &["ls", &server.addr()]);
    expect_exit(&ls, 0, "ls");
    assert_eq!(lines(&ls), ["dir", "report.txt"]);
    let dl = site.download_dir("reader");
    let get = client(
        &site,
        "reader",
        &[
            "get",
            &server.at("report.txt"),
            &server.at("dir"),
            dl.to_str().unwrap(),
        ],
    );
    expect_exit(&get, 0, "get");
    assert_eq!(fs::read(dl.join("report.txt")).unwrap(), b"to be read\n");
    assert_eq!(fs::read(dl.join("dir/inner.txt")).unwrap(), b"inner\n");

    let new = site.local("new.txt", b"new");
    let put = client(
        &site,
        "reader",
        &["send", new.to_str().unwrap(), &server.addr()],
    );
    expect_refused(&put, "denied", "put");
    let put = client(
        &site,
        "reader",
        &["send", new.to_str().unwrap(), &server.at("dir")],
    );
    expect_refused(&put, "denied", "put into a directory");
    let mut stream = as_user(&site, "reader", &["send", "-", &server.addr()]);
    expect_refused(
        &run_with_input(&mut stream, b"streamed".to_vec()),
        "denied",
        "a stream",
    );
    for (args, what) in [
        (vec!["mkdir", "newdir"], "mkdir"),
        (vec!["mkdir", "dir"], "mkdir of an existing directory"),
        (vec!["rm", "report.txt"], "rm"),
        (vec!["rm", "dir/inner.txt"], "rm inside"),
        (vec!["mv", "report.txt", "renamed.txt"], "mv"),
    ] {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args[1] = server.at(&args[1]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_refused(&client(&site, "reader", &refs), "denied", what);
    }
    assert_eq!(snapshot(&home), before);
    assert_eq!(names_in(&home), ["dir", "report.txt"]);
}

// ---- 4. Failed logins ----------------------------------------------------------

#[test]
fn an_unknown_user_is_indistinguishable_from_a_wrong_key() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let wrong = site.path().join("keys/wrong.key");
    private(&wrong, b"a key that belongs to nobody here");
    let attempt = |user: &str| {
        let mut command = xfer();
        clean_env(&mut command);
        command
            .args(["ls", &server.addr(), "--user", user, "--key-file"])
            .arg(&wrong);
        run(&mut command)
    };
    let unknown = attempt("carol");
    let wrong_key = attempt("alice");
    expect_exit(&unknown, 4, "an unknown user");
    expect_exit(&wrong_key, 4, "a wrong key");
    assert_eq!(
        stderr_of(&unknown),
        stderr_of(&wrong_key),
        "the client says the same"
    );
    assert!(stdout_of(&unknown).is_empty() && stdout_of(&wrong_key).is_empty());

    // On the wire: the same error frame in place of auth_ok, within the deadline.
    let refusal = |initiator: Initiator| {
        let start = Instant::now();
        let mut peer = Peer::connect(("127.0.0.1", server.port())).expect("connect");
        let Err(err) = peer.initiate(&initiator) else {
            panic!("logged in without the right key");
        };
        let elapsed = start.elapsed();
        let frame = match &err {
            PeerError::Remote(frame) => frame.clone(),
            other => panic!("expected an error frame, got {other}"),
        };
        assert!(peer.expect_close().is_ok(), "closed after the refusal");
        (frame, elapsed)
    };
    let key = b"a key that belongs to nobody here";
    let (unknown, t_unknown) = refusal(Initiator::client(key, "carol"));
    let (wrong_key, t_wrong) = refusal(Initiator::client(key, "alice"));
    let (nobody, t_nobody) = refusal(
        Initiator::new(key, "client")
            .features(&["aead", "blake3", "zstd"])
            .require(&["aead"]),
    );
    for frame in [&unknown, &wrong_key, &nobody] {
        assert_eq!(frame["code"], "auth", "{frame}");
    }
    assert_eq!(unknown, wrong_key, "the same frame, message included");
    assert_eq!(unknown, nobody, "no user at all: the same frame");
    for elapsed in [t_unknown, t_wrong, t_nobody] {
        assert!(elapsed < util::peer::HANDSHAKE_DEADLINE, "{elapsed:?}");
    }
    // The right key still works, and the log does not say who exists.
    let ok = client(&site, "alice", &["ls", &server.addr()]);
    expect_exit(&ok, 0, "alice");
    let log = server.log();
    let rejected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rejected"))
        .map(|l| l.split_once(": rejected").unwrap().1)
        .collect();
    assert_eq!(rejected.len(), 5, "{log}");
    assert!(rejected.iter().all(|l| *l == rejected[0]), "{log}");
}

// ---- 5. The users file ---------------------------------------------------------

/// Starts `xfer serve` on the site's users file and expects it to refuse: a
/// non-zero exit, before listening, with one line on stderr naming `names`.
#[track_caller]
fn refuses_to_start(site: &Site, why: &str, names: &str) {
    let mut command = xfer();
    clean_env(&mut command);
    command
        .arg("serve")
        .arg("--root")
        .arg(site.root())
        .args(["--listen", "127.0.0.1:0", "--users"])
        .arg(site.users_file())
        .current_dir(site.path());
    let out = run(&mut command);
    let stderr = stderr_of(&out);
    assert_ne!(code(&out), 0, "{why}: started anyway: {stderr}");
    assert!(!stderr.contains("listening on"), "{why}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{why}: one line: {stderr}");
    assert!(stderr.contains(names), "{why}: names {names}: {stderr}");
}

#[test]
fn a_bad_users_file_stops_the_server_from_starting() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "a home escaping the root",
            "[users.a]\nkey = \"a long enough key\"\nhome = \"../x\"\n",
            "../x",
        ),
        (
            "an absolute home",
            "[users.a]\nkey = \"a long enough key\"\nhome = \"/etc\"\n",
            "/etc",
        ),
        (
            "a home of ..",
            "[users.a]\nkey = \"a long enough key\"\nhome = \"a/../..\"\n",
            "home",
        ),
        (
            "two users sharing a home",
            "[users.a]\nkey = \"a long enough key\"\nhome = \"h\"\n[users.b]\nkey = \"another long key\"\nhome = \"h\"\n",
            "share a home",
        ),
        (
            "a home inside another",
            "[users.a]\nkey = \"a long enough key\"\n[users.b]\nkey = \"another long key\"\nhome = \"a/b\"\n",
            "share a home",
        ),
        (
            "an unknown field",
            "[users.a]\nkey = \"a long enough key\"\ncolour = \"red\"\n",
            "colour",
        ),
        (
            "a malformed quota",
            "[users.a]\nkey = \"a long enough key\"\nquota = \"12 parsecs\"\n",
            "quota",
        ),
        (
            "a negative quota",
            "[users.a]\nkey = \"a long enough key\"\nquota = -1\n",
            "line 3",
        ),
        (
            "a fractional quota",
            "[users.a]\nkey = \"a long enough key\"\nquota = 1.5\n",
            "line 3",
        ),
        ("no key", "[users.a]\nhome = \"a\"\n", "no key"),
        (
            "a bad user name",
            "[users.\".a\"]\nkey = \"a long enough key\"\n",
            "user name",
        ),
        (
            "a missing key file",
            "[users.a]\nkey_file = \"keys/none.key\"\n",
            "keys/none.key",
        ),
        ("not TOML", "[users.a\n", "line 1"),
    ];
    for (why, text, detail) in cases {
        let site = Site::new();
        site.write_users(text);
        refuses_to_start(&site, why, "users.toml");
        refuses_to_start(&site, why, detail);
    }
    // A users file that group or others may read.
    let site = Site::new();
    site.users(&[("alice", "")]);
    fs::set_permissions(site.users_file(), fs::Permissions::from_mode(0o640)).unwrap();
    refuses_to_start(&site, "a group-readable users file", "users.toml");
    fs::set_permissions(site.users_file(), fs::Permissions::from_mode(0o604)).unwrap();
    refuses_to_start(&site, "a world-readable users file", "users.toml");
    // A key file that group or others may read.
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    fs::set_permissions(site.key_file("bob"), fs::Permissions::from_mode(0o640)).unwrap();
    refuses_to_start(&site, "a group-readable key file", "keys/bob.key");
    refuses_to_start(&site, "a group-readable key file", "users.toml");
    // A missing users file.
    let site = Site::new();
    refuses_to_start(&site, "no users file", "users.toml");
}

// ---- 6. SIGHUP -----------------------------------------------------------------

#[test]
fn sighup_reads_the_users_file_again() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    expect_exit(&client(&site, "alice", &["ls", &server.addr()]), 0, "alice");
    expect_exit(
        &client(&site, "bob", &["ls", &server.addr()]),
        4,
        "bob, unknown yet",
    );

    // Bob is added.
    site.users(&[("alice", ""), ("bob", "")]);
    server.hangup();
    server.wait_for_log("reloaded", 1);
    expect_exit(
        &client(&site, "bob", &["ls", &server.addr()]),
        0,
        "bob, added",
    );
    assert!(site.home("bob").is_dir(), "bob's home made on reload");
    expect_exit(
        &client(&site, "alice", &["ls", &server.addr()]),
        0,
        "alice, kept",
    );

    // Alice is removed.
    site.users(&[("bob", "")]);
    server.hangup();
    server.wait_for_log("reloaded", 2);
    expect_exit(
        &client(&site, "alice", &["ls", &server.addr()]),
        4,
        "alice, removed",
    );
    expect_exit(
        &client(&site, "bob", &["ls", &server.addr()]),
        0,
        "bob, kept",
    );

    // A malformed file is reported and changes nothing.
    site.write_users("[users.carol]\nkey = \"carol's key, long enough\"\nquota = \"lots\"\n");
    server.hangup();
    let log = server.wait_for_log("not reloaded", 1);
    let line = log.lines().find(|l| l.contains("not reloaded")).unwrap();
    assert!(
        line.contains("users.toml") && line.contains("quota"),
        "{line}"
    );
    expect_exit(
        &client(&site, "bob", &["ls", &server.addr()]),
        0,
        "bob, still",
    );
    expect_exit(
        &client(&site, "alice", &["ls", &server.addr()]),
        4,
        "alice, still gone",
    );

    // So is a file others may read.
    site.users(&[("alice", ""), ("bob", "")]);
    fs::set_permissions(site.users_file(), fs::Permissions::from_mode(0o644)).unwrap();
    server.hangup();
    server.wait_for_log("not reloaded", 2);
    expect_exit(
        &client(&site, "alice", &["ls", &server.addr()]),
        4,
        "alice, not back",
    );
    expect_exit(
        &client(&site, "bob", &["ls", &server.addr()]),
        0,
        "bob, still",
    );
}

#[test]
fn a_user_removed_by_a_reload_loses_their_open_connections() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("secret.txt"), b"alice's secret\n");
    let mut held = login(&server, "alice");
    assert_eq!(
        item_names(&held.list("").expect("a listing")),
        ["secret.txt"]
    );
    site.users(&[("bob", "")]);
    server.hangup();
    server.wait_for_log("reloaded", 1);
    // Her connection was idle when she was removed: its next request is refused.
    let after = held.list("");
    assert!(
        matches!(&after, Err(err) if err.remote_code() == Some("auth") || err.is_closed()),
        "a removed user's request was served: {after:?}"
    );
    let get = held.get(&["secret.txt"]);
    assert!(
        get.is_err(),
        "a removed user fetched {:?}",
        get.map(|g| g.files)
    );
}

// ---- 7. A download resumed after a cut ----------------------------------------

/// A relay for one connection to 127.0.0.1:`target` that forwards everything from
/// the client but only the first `limit` bytes from the server, then cuts both
/// sides (the relay of `util::relay` cuts the other direction only).
fn relay_cutting_downloads(target: u16, limit: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let server = TcpStream::connect(("127.0.0.1", target)).expect("connect");
        let (mut from_client, mut to_server) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_client, &mut to_server);
            let _ = to_server.shutdown(Shutdown::Write);
        });
        let (mut from_server, mut to_client) = (server, client);
        let mut left = limit;
        let mut buf = vec![0; 64 << 10];
        while left > 0 {
            let n = match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n.min(left as usize),
            };
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = to_client.shutdown(Shutdown::Both);
        let _ = from_server.shutdown(Shutdown::Both);
    });
    port
}

#[test]
fn a_download_cut_midway_resumes_where_it_stopped() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let content = pattern(8 << 20, 7);
    write(&site.home("alice").join("big.bin"), &content);
    let dl = site.download_dir("alice");

    // Cut once, then fetched again with --no-resume: from the start.
    cut_download(&site, &server, &dl);
    let fresh = client(
        &site,
        "alice",
        &[
            "get",
            &server.at("big.bin"),
            dl.to_str().unwrap(),
            "--no-resume",
        ],
    );
    expect_exit(&fresh, 0, "the rerun with --no-resume");
    assert!(
        !stderr_of(&fresh).contains("resumed"),
        "{}",
        stderr_of(&fresh)
    );
    assert!(
        fs::read(dl.join("big.bin")).unwrap() == content,
        "byte-exact"
    );
    assert_eq!(names_in(&dl), ["big.bin"], "the partial data was dropped");

    // Cut again, then fetched again: it continues where it stopped.
    fs::remove_file(dl.join("big.bin")).unwrap();
    cut_download(&site, &server, &dl);
    let again = client(
        &site,
        "alice",
        &["get", &server.at("big.bin"), dl.to_str().unwrap()],
    );
    expect_exit(&again, 0, "the rerun");
    assert!(
        stderr_of(&again).contains("1 resumed"),
        "{}",
        stderr_of(&again)
    );
    assert!(
        fs::read(dl.join("big.bin")).unwrap() == content,
        "byte-exact"
    );
    assert_eq!(names_in(&dl), ["big.bin"], "no partial left behind");
}

/// `xfer get big.bin` through a relay that cuts the download after 4 MiB: exit 3,
/// nothing under the final name, partial data kept.
fn cut_download(site: &Site, server: &Server, dl: &Path) {
    let relay = relay_cutting_downloads(server.port(), 4 << 20);
    let cut = client(
        site,
        "alice",
        &[
            "get",
            &format!("127.0.0.1:{relay}:big.bin"),
            dl.to_str().unwrap(),
        ],
    );
    expect_exit(&cut, 3, "a download cut by the network");
    assert!(!dl.join("big.bin").exists(), "nothing under the final name");
    let kept: u64 = fs::read_dir(dl)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(kept > 0, "partial data kept: {:?}", names_in(dl));
}

#[test]
fn get_keeps_local_files_unless_forced() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("a.txt"), b"the server's\n");
    let dl = site.download_dir("alice");
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "--json"];
        let at = server.at("a.txt");
        args.push(&at);
        args.push(dl.to_str().unwrap());
        args.extend_from_slice(extra);
        client(&site, "alice", &args)
    };
    expect_exit(&get(&[]), 0, "the first get");
    // The same file again: already there.
    let again = get(&[]);
    expect_exit(&again, 0, "the same file again");
    let summary: Value = serde_json::from_str(stdout_of(&again).lines().last().unwrap()).unwrap();
    assert_eq!(
        (summary["same"].as_u64(), summary["files"].as_u64()),
        (Some(1), Some(0)),
        "{summary}"
    );
    // A different local file of that name is kept...
    fs::write(dl.join("a.txt"), b"mine, longer than theirs\n").unwrap();
    let refused = get(&[]);
    expect_exit(&refused, 6, "a local file in the way");
    assert_eq!(
        fs::read(dl.join("a.txt")).unwrap(),
        b"mine, longer than theirs\n"
    );
    // ... unless -f.
    expect_exit(&get(&["-f"]), 0, "get -f");
    assert_eq!(fs::read(dl.join("a.txt")).unwrap(), b"the server's\n");
}

// ---- 8. Interoperation ----------------------------------------------------------

#[test]
fn xfer_client_commands_work_against_the_minimal_server() {
    let site = Site::new();
    let home = site.path().join("mini-home");
    write(&home.join("a.txt"), b"alpha\n");
    write(&home.join("docs/b.txt"), b"beta\n");
    write(&home.join("docs/sub/c.bin"), &pattern(300_000, 5));
    std::os::unix::fs::symlink("/etc", home.join("docs/out")).unwrap();
    let mini = MiniServer::start(ServerConfig::new("alice", Site::key_of("alice"), &home));
    let at = |path: &str| format!("{}:{path}", mini.addr());

    let ls = client(&site, "alice", &["ls", &mini.addr()]);
    expect_exit(&ls, 0, "ls");
    assert_eq!(lines(&ls), ["a.txt", "docs"]);
    let ls = client(&site, "alice", &["ls", "--json", &at("docs")]);
    expect_exit(&ls, 0, "ls --json docs");
    let kinds: Vec<(String, String)> = lines(&ls)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["name"].as_str().unwrap().into(),
                v["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("b.txt", "file"), ("out", "other"), ("sub", "dir")]
            .map(|(n, k)| (n.to_owned(), k.to_owned()))
    );
    let usage = client(&site, "alice", &["ls", "--usage", &mini.addr()]);
    expect_exit(&usage, 0, "ls --usage");
    assert!(
        stdout_of(&usage).contains("no quota"),
        "{}",
        stdout_of(&usage)
    );

    let dl = site.download_dir("mini");
    let get = client(
        &site,
        "alice",
        &["get", &at("a.txt"), &at("docs"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 0, "get");
    assert_eq!(fs::read(dl.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(
        fs::read(dl.join("docs/sub/c.bin")).unwrap(),
        pattern(300_000, 5)
    );
    assert!(!dl.join("docs/out").exists(), "no symlink offered");
    let missing = client(
        &site,
        "alice",
        &["get", &at("missing"), dl.to_str().unwrap()],
    );
    expect_refused(&missing, "not_found", "get of a missing file");

    expect_exit(
        &client(&site, "alice", &["mkdir", &at("in/box")]),
        0,
        "mkdir",
    );
    let up = site.local("up.bin", &pattern(100_000, 6));
    let put = client(
        &site,
        "alice",
        &["send", up.to_str().unwrap(), &at("in/box")],
    );
    expect_exit(&put, 0, "send into a directory");
    assert_eq!(
        fs::read(home.join("in/box/up.bin")).unwrap(),
        pattern(100_000, 6)
    );
    let put = client(
        &site,
        "alice",
        &["send", up.to_str().unwrap(), &mini.addr()],
    );
    expect_exit(&put, 0, "send into the home");
    assert!(home.join("up.bin").is_file());
    expect_exit(
        &client(
            &site,
            "alice",
            &["mv", &at("in/box/up.bin"), "in/moved.bin"],
        ),
        0,
        "mv",
    );
    assert!(home.join("in/moved.bin").is_file());
    expect_exit(
        &client(&site, "alice", &["rm", &at("in/moved.bin")]),
        0,
        "rm",
    );
    assert!(!home.join("in/moved.bin").exists());
    expect_refused(
        &client(&site, "alice", &["rm", &at("docs")]),
        "denied",
        "rm of a full directory",
    );
}

#[test]
fn the_independent_client_works_against_xfer_serve() {
    let site = Site::new();
    site.users(&[("alice", "quota = 1000000")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    let mut peer = login(&server, "alice");

    peer.mkdir("in/box").expect("mkdir");
    peer.mkdir("in/box")
        .expect("mkdir of an existing directory");
    assert_eq!(
        remote_code(peer.mkdir("in/../x")).as_deref(),
        Some("bad_path")
    );
    let upload = [
        SendEntry::file("a.txt", &b"alpha\n"[..])
            .mode(0o640)
            .mtime(1_600_000_000),
        SendEntry::dir("d"),
        SendEntry::file("d/b.bin", pattern(300_000, 1)),
        SendEntry::file("../escape", &b"no"[..]),
    ];
    let report = peer.put("in/box", &upload).expect("a put");
    assert!(
        report.delivered(0) && report.delivered(2),
        "{:?}",
        report.answers
    );
    assert_eq!(report.code(3), Some("bad_path"));
    assert_eq!(peer.t, 1);
    let a = home.join("in/box/a.txt");
    assert_eq!(fs::read(&a).unwrap(), b"alpha\n");
    let meta = fs::metadata(&a).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        meta.modified().unwrap(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    );
    assert_eq!(
        fs::read(home.join("in/box/d/b.bin")).unwrap(),
        pattern(300_000, 1)
    );

    let items = peer.list("in/box").expect("a listing");
    assert_eq!(item_names(&items), ["a.txt", "d"]);
    assert_eq!(
        (items[0]["size"].as_u64(), items[0]["mode"].as_u64()),
        (Some(6), Some(0o640))
    );
    assert_eq!(items[0]["mtime"], 1_600_000_000);
    assert_eq!(
        (items[1]["kind"].as_str(), items[1]["size"].as_u64()),
        (Some("dir"), Some(0))
    );
    let usage = peer.usage().expect("usage");
    assert_eq!(usage["bytes"], 300_006);
    assert_eq!(usage["files"], 2);
    assert_eq!(usage["quota_bytes"], 1_000_000);
    assert_eq!(usage["quota_files"], Value::Null);

    // A refused get begins no transfer: the next one still verifies (t is right).
    assert_eq!(
        remote_code(peer.get(&["missing"])).as_deref(),
        Some("not_found")
    );
    assert_eq!(
        remote_code(peer.get(&["in/box/a.txt", "in/box/missing"])).as_deref(),
        Some("not_found")
    );
    assert_eq!(remote_code(peer.get(&[])).as_deref(), Some("bad_path"));
    assert_eq!(
        remote_code(peer.get(&["in/box/a.txt", "in/a.txt"])).as_deref(),
        Some("bad_path"),
        "two paths with one last component"
    );
    assert_eq!(peer.t, 1);
    let got = peer.get(&["in/box/a.txt", "in/box/d"]).expect("a get");
    assert_eq!(peer.t, 2);
    assert_eq!(got.files["a.txt"], b"alpha\n");
    assert_eq!(got.files["d/b.bin"], pattern(300_000, 1));
    // A refused put too.
    assert_eq!(
        remote_code(peer.put("nowhere", &upload[..1])).as_deref(),
        Some("not_found")
    );
    let again = peer
        .put("in/box", &[SendEntry::file("c.txt", &b"gamma"[..])])
        .expect("a put");
    assert!(again.delivered(0), "{:?}", again.answers);
    assert_eq!(peer.t, 3);

    peer.rename("in/box/a.txt", "in/a2.txt").expect("rename");
    assert!(home.join("in/a2.txt").is_file() && !a.exists());
    assert_eq!(
        remote_code(peer.rename("in/missing", "x")).as_deref(),
        Some("not_found")
    );
    assert_eq!(
        remote_code(peer.rename("in", "in/box/in")).as_deref(),
        Some("bad_path")
    );
    assert_eq!(
        remote_code(peer.rename("in/a2.txt", "in/box/c.txt")).as_deref(),
        Some("exists")
    );
    assert_eq!(
        remote_code(peer.remove("in/box/d")).as_deref(),
        Some("denied")
    );
    assert_eq!(remote_code(peer.remove("")).as_deref(), Some("bad_path"));
    assert_eq!(
        remote_code(peer.remove("in/box/missing")).as_deref(),
        Some("not_found")
    );
    assert_eq!(
        remote_code(peer.rename("in/a2.txt", "nodir/x.txt")).as_deref(),
        Some("not_found")
    );
    assert_eq!(
        remote_code(peer.mkdir("in/a2.txt")).as_deref(),
        Some("exists")
    );
    assert_eq!(
        remote_code(peer.mkdir("in/a2.txt/sub")).as_deref(),
        Some("exists")
    );
    // Malformed paths and the server's own partial files are bad paths.
    for path in [
        "a//b",
        "a/./b",
        "a/",
        "a\\b",
        "a\nb",
        "a\u{202e}b",
        ".xfer-1.part",
        "in/.xfer-2.partial",
    ] {
        assert_eq!(
            remote_code(peer.list(path)).as_deref(),
            Some("bad_path"),
            "{path:?}"
        );
        assert_eq!(
            remote_code(peer.remove(path)).as_deref(),
            Some("bad_path"),
            "{path:?}"
        );
    }
    peer.remove("in/box/d/b.bin").expect("remove a file");
    peer.remove("in/box/d").expect("remove an empty directory");
    assert!(!home.join("in/box/d").exists());
    let got = peer.get(&["in/a2.txt"]).expect("a get after all that");
    assert_eq!(got.files["a2.txt"], b"alpha\n");
    peer.bye().expect("the server closes after bye");
    server.wait_for_log("alice bye", 1);
}

// ---- 9. Passwords --------------------------------------------------------------

#[test]
fn a_password_logs_in_and_a_wrong_one_does_not() {
    let site = Site::new();
    site.write_users(&format!("[users.alice]\nkey = \"{ALICE_PASSWORD_KEY}\"\n"));
    let server = site.serve(&["--realm", REALM]);
    write(&site.home("alice").join("hello.txt"), b"hello\n");
    let with_password = |password: &str| {
        let mut command = xfer();
        clean_env(&mut command);
        command
            .args(["ls", &server.addr(), "--user", "alice", "--password"])
            .env("XFER_PASSWORD", password);
        run(&mut command)
    };
    let ok = with_password(PASSWORD);
    expect_exit(&ok, 0, "the right password");
    assert_eq!(lines(&ok), ["hello.txt"]);
    let wrong = with_password("correct horse battery stable");
    expect_exit(&wrong, 4, "a wrong password");
    assert!(stdout_of(&wrong).is_empty());
    // The independent peer derives the same key from the hello's realm.
    let mut peer = Peer::connect(("127.0.0.1", server.port())).expect("connect");
    peer.initiate(&Initiator::client(b"", "alice").password(PASSWORD))
        .expect("logged in with the password");
    assert_eq!(
        item_names(&peer.list("").expect("a listing")),
        ["hello.txt"]
    );
}

/// Runs `xfer passwd alice --realm REALM` at a pseudo-terminal (`script`), typing
/// `first` and `second` at its two prompts; `None` without `script`.
fn passwd_at_a_terminal(first: &str, second: &str) -> Option<(i32, String)> {
    if Command::new("script").arg("--version").output().is_err() {
        return None;
    }
    let inner = format!(
        "'{}' passwd alice --realm {REALM}",
        env!("CARGO_BIN_EXE_xfer")
    );
    let mut command = Command::new("script");
    clean_env(&mut command);
    let mut child = command
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn script");
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let (chunks, arrived) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if chunks.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + TIMEOUT;
    for (prompt, answer) in [("new password for alice: ", first), ("again: ", second)] {
        while !seen.contains(prompt) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = arrived.recv_timeout(left).expect("a prompt");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .expect("typed");
    }
    let status = wait_for(&mut child, TIMEOUT);
    while let Ok(chunk) = arrived.recv_timeout(Duration::from_millis(500)) {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    Some((status.code().expect("exited"), seen.replace('\r', "")))
}

#[test]
fn passwd_prints_the_key_line_of_a_password() {
    let Some((code, output)) = passwd_at_a_terminal(PASSWORD, PASSWORD) else {
        eprintln!("no `script` for a pseudo-terminal: skipped");
        return;
    };
    assert_eq!(code, 0, "{output}");
    assert!(
        !output.contains(PASSWORD),
        "the password is not echoed: {output}"
    );
    let line = format!("key = \"{ALICE_PASSWORD_KEY}\"");
    assert!(output.lines().any(|l| l == line), "{output}");
    // The lines it prints are a users file that logs alice in with the password.
    let site = Site::new();
    let table = output
        .lines()
        .skip_while(|l| !l.starts_with("[users.alice]"))
        .collect::<Vec<_>>()
        .join("\n");
    site.write_users(&format!("{table}\n"));
    let server = site.serve(&["--realm", REALM]);
    let mut command = xfer();
    clean_env(&mut command);
    command
        .args(["ls", &server.addr(), "--user", "alice", "--password"])
        .env("XFER_PASSWORD", PASSWORD);
    expect_exit(&run(&mut command), 0, "a login with the password");
    // From a script, $XFER_PASSWORD gives the same line.
    let mut command = xfer();
    clean_env(&mut command);
    command
        .args(["passwd", "alice", "--realm", REALM])
        .env("XFER_PASSWORD", PASSWORD);
    let scripted = run(&mut command);
    expect_exit(&scripted, 0, "passwd with $XFER_PASSWORD");
    assert!(
        stdout_of(&scripted).lines().any(|l| l == line),
        "{scripted:?}"
    );

    let Some((code, output)) = passwd_at_a_terminal(PASSWORD, "something else entirely") else {
        return;
    };
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("differ") && !output.contains("key ="),
        "{output}"
    );
}

// ---- 10. Awkward names and IPv6 -------------------------------------------------

#[test]
fn a_single_key_server_makes_its_root_private() {
    let site = Site::new();
    let root = site.path().join("new/root");
    let mut command = xfer();
    clean_env(&mut command);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(&root)
        .arg("--key-file")
        .arg(site.key_file("alice"));
    let server = Server(Receiver::spawn(command));
    let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the root is the one home here");
    drop(server);
}

#[test]
fn a_put_makes_a_missing_directory_replaces_only_with_f_and_slash_is_the_home() {
    let site = Site::new();
    site.users(&[("alice", ""), ("guest", "read_only = true")]);
    let server = site.serve(&[]);
    let report = site.local("report.pdf", b"%PDF quarterly\n");
    let put = client(
        &site,
        "alice",
        &["send", report.to_str().unwrap(), &server.at("/inbox/2026")],
    );
    expect_exit(&put, 0, "a put into a directory that is not there yet");
    let home = site.home("alice");
    assert_eq!(
        fs::read(home.join("inbox/2026/report.pdf")).unwrap(),
        b"%PDF quarterly\n"
    );
    let ls = client(&site, "alice", &["ls", &server.at("/")]);
    expect_exit(&ls, 0, "ls of /");
    assert_eq!(lines(&ls), ["inbox"]);
    // A changed file is replaced only with -f (--overwrite).
    fs::write(&report, b"%PDF revised\n").unwrap();
    let again = client(
        &site,
        "alice",
        &["send", report.to_str().unwrap(), &server.at("inbox/2026")],
    );
    expect_refused(&again, "exists", "a put over an existing file");
    let forced = client(
        &site,
        "alice",
        &[
            "send",
            "-f",
            report.to_str().unwrap(),
            &server.at("inbox/2026"),
        ],
    );
    expect_exit(&forced, 0, "a put -f over an existing file");
    assert_eq!(
        fs::read(home.join("inbox/2026/report.pdf")).unwrap(),
        b"%PDF revised\n"
    );
    // A read-only user is refused the put, and no directory is made for it.
    let put = client(
        &site,
        "guest",
        &["send", report.to_str().unwrap(), &server.at("inbox")],
    );
    expect_refused(&put, "denied", "a read-only user's put");
    assert!(!site.home("guest").join("inbox").exists());
}

#[test]
fn paths_with_spaces_quotes_and_colons_work_as_operands() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    // A directory with such names inside, put whole (`xfer send DIR HOST:PORT:DIR`).
    let local = site.path().join("local/my dir");
    write(&local.join("a: b.txt"), b"a colon\n");
    write(&local.join("it's \"quoted\": c.txt"), b"quotes\n");
    expect_exit(
        &client(&site, "alice", &["mkdir", &server.at("in: box")]),
        0,
        "mkdir",
    );
    assert!(home.join("in: box").is_dir());
    let put = client(
        &site,
        "alice",
        &["send", local.to_str().unwrap(), &server.at("in: box")],
    );
    expect_exit(&put, 0, "send");
    let remote = "in: box/my dir/a: b.txt";
    assert_eq!(fs::read(home.join(remote)).unwrap(), b"a colon\n");
    let ls = client(&site, "alice", &["ls", &server.at(remote)]);
    expect_exit(&ls, 0, "ls of the file");
    assert_eq!(lines(&ls), ["a: b.txt"]);
    let ls = client(&site, "alice", &["ls", &server.at("in: box/my dir")]);
    assert_eq!(lines(&ls), ["a: b.txt", "it's \"quoted\": c.txt"]);
    let dl = site.download_dir("odd");
    let quoted = "in: box/my dir/it's \"quoted\": c.txt";
    let get = client(
        &site,
        "alice",
        &[
            "get",
            &server.at(quoted),
            &server.at("in: box/my dir"),
            dl.to_str().unwrap(),
        ],
    );
    expect_exit(&get, 0, "get");
    assert_eq!(
        fs::read(dl.join("it's \"quoted\": c.txt")).unwrap(),
        b"quotes\n"
    );
    assert_eq!(fs::read(dl.join("my dir/a: b.txt")).unwrap(), b"a colon\n");
    let stdout = client(&site, "alice", &["get", &server.at(quoted), "--stdout"]);
    expect_exit(&stdout, 0, "get --stdout");
    assert_eq!(stdout.stdout, b"quotes\n");
    let mv = client(
        &site,
        "alice",
        &["mv", &server.at(remote), "in: box/moved: 'a' \"b\".txt"],
    );
    expect_exit(&mv, 0, "mv");
    assert!(home.join("in: box/moved: 'a' \"b\".txt").is_file());
    for path in [
        "in: box/moved: 'a' \"b\".txt",
        quoted,
        "in: box/my dir",
        "in: box",
    ] {
        expect_exit(&client(&site, "alice", &["rm", &server.at(path)]), 0, path);
    }
    assert!(names_in(&home).is_empty());
}

#[test]
fn a_file_named_with_a_letter_and_a_colon_travels_only_inside_its_directory() {
    // PROTOCOL.md section 6: a path starting with a letter and a colon looks like a
    // Windows drive, and a receiver refuses it (on every system, so that a file
    // cannot arrive on one and be refused on another). Fetched alone, the file would
    // arrive under that name; inside its directory it arrives as `my dir/a: b.txt`.
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("my dir/a: b.txt"), b"a colon\n");
    let ls = client(&site, "alice", &["ls", &server.at("my dir/a: b.txt")]);
    expect_exit(&ls, 0, "ls");
    let dl = site.download_dir("drive");
    let get = client(
        &site,
        "alice",
        &["get", &server.at("my dir/a: b.txt"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 6, "get of the file alone");
    assert!(stderr_of(&get).contains("drive"), "{}", stderr_of(&get));
    let get = client(
        &site,
        "alice",
        &["get", &server.at("my dir"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 0, "get of its directory");
    assert_eq!(fs::read(dl.join("my dir/a: b.txt")).unwrap(), b"a colon\n");
}

#[test]
fn an_ipv6_server_is_reached_with_brackets() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no ::1 on this machine: skipped");
        return;
    }
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve_on("[::1]:0", &[]);
    server.wait_for_log("listening on [::1]:", 1);
    let at = |path: &str| format!("[::1]:{}:{path}", server.port());
    expect_exit(
        &client(&site, "alice", &["mkdir", &at("v6 dir:x")]),
        0,
        "mkdir over IPv6",
    );
    let file = site.local("six.txt", b"over IPv6\n");
    let put = client(
        &site,
        "alice",
        &["send", file.to_str().unwrap(), &at("v6 dir:x")],
    );
    expect_exit(&put, 0, "send over IPv6");
    let ls = client(&site, "alice", &["ls", &at("v6 dir:x")]);
    expect_exit(&ls, 0, "ls over IPv6");
    assert_eq!(lines(&ls), ["six.txt"]);
    let dl = site.download_dir("six");
    let get = client(
        &site,
        "alice",
        &["get", &at("v6 dir:x/six.txt"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 0, "get over IPv6");
    assert_eq!(fs::read(dl.join("six.txt")).unwrap(), b"over IPv6\n");
    let ls = client(&site, "alice", &["ls", &format!("[::1]:{}", server.port())]);
    assert_eq!(lines(&ls), ["v6 dir:x"]);
}

// ---- 11. Listings ----------------------------------------------------------------

#[test]
fn long_and_json_listings_show_kind_mode_size_and_time() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    write(&home.join("b.bin"), &pattern(12_345, 1));
    fs::set_permissions(home.join("b.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::File::options()
        .write(true)
        .open(home.join("b.bin"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    fs::create_dir(home.join("a dir")).unwrap();
    fs::set_permissions(home.join("a dir"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", home.join("c link")).unwrap();
    fs::File::open(home.join("a dir"))
        .unwrap()
        .set_modified(when)
        .unwrap();

    let ls = client(&site, "alice", &["ls", "-l", &server.addr()]);
    expect_exit(&ls, 0, "ls -l");
    let lines = lines(&ls);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        format!("drwxr-x--- {:>12} 2023-11-14 22:13 a dir", 0)
    );
    assert_eq!(
        lines[1],
        format!("-rw-r----- {:>12} 2023-11-14 22:13 b.bin", 12_345)
    );
    assert!(
        lines[2].starts_with('?') && lines[2].ends_with(" c link"),
        "{}",
        lines[2]
    );
    let human = client(&site, "alice", &["ls", "-l", "-h", &server.at("b.bin")]);
    assert_eq!(
        stdout_of(&human),
        format!("-rw-r----- {:>12} 2023-11-14 22:13 b.bin\n", "12.06 KiB")
    );

    let json = client(&site, "alice", &["ls", "--json", &server.addr()]);
    expect_exit(&json, 0, "ls --json");
    let items: Vec<Value> = stdout_of(&json)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(items.len(), 3);
    for item in &items {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(keys, ["kind", "mode", "mtime", "name", "size"], "{item}");
    }
    assert_eq!(
        items[0],
        serde_json::json!({"name": "a dir", "kind": "dir", "size": 0, "mode": 0o750, "mtime": 1_700_000_000})
    );
    assert_eq!(
        items[1],
        serde_json::json!({"name": "b.bin", "kind": "file", "size": 12_345, "mode": 0o640, "mtime": 1_700_000_000})
    );
    assert_eq!(
        (items[2]["name"].as_str(), items[2]["kind"].as_str()),
        (Some("c link"), Some("other"))
    );
    assert_eq!(items[2]["size"], 0);
    // A refused listing prints nothing on stdout.
    let missing = client(&site, "alice", &["ls", "--json", &server.at("missing")]);
    expect_refused(&missing, "not_found", "ls of a missing path");
}

// ---- 12. A client that vanishes ------------------------------------------------

#[test]
fn a_client_killed_mid_put_leaves_the_server_serving_and_no_file() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"100 MiB\""), ("bob", "")]);
    let mut server = site.serve(&[]);
    let home = site.home("alice");
    let big = site.local("big.bin", &pattern(8 << 20, 3));
    let mut command = as_user(
        &site,
        "alice",
        &[
            "send",
            big.to_str().unwrap(),
            &server.addr(),
            "--limit-rate",
            "1M",
        ],
    );
    let mut sender = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    eventually("some of the file has arrived", || {
        fs::read_dir(&home)
            .unwrap()
            .any(|e| e.unwrap().metadata().unwrap().len() > 0)
    });
    sender.kill().expect("kill");
    let _ = sender.wait();
    server.wait_for_log("alice put .: received 0 files", 1);
    assert!(server.is_running());

    // Others are served, and so is alice herself.
    let small = site.local("small.txt", b"still served\n");
    let put = client(
        &site,
        "bob",
        &["send", small.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&put, 0, "bob's put after the cut");
    assert_eq!(
        fs::read(site.home("bob").join("small.txt")).unwrap(),
        b"still served\n"
    );
    let ls = client(&site, "alice", &["ls", &server.addr()]);
    expect_exit(&ls, 0, "alice's ls after the cut");
    assert!(
        lines(&ls).is_empty(),
        "the partial file is not listed: {:?}",
        lines(&ls)
    );
    assert!(!home.join("big.bin").exists(), "never under its final name");
    for name in names_in(&home) {
        assert!(
            name.starts_with(".xfer-"),
            "only xfer's own partial files: {name}"
        );
    }
    // Sent again, it arrives whole.
    let again = client(
        &site,
        "alice",
        &["send", big.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&again, 0, "the rerun");
    assert!(fs::read(home.join("big.bin")).unwrap() == pattern(8 << 20, 3));
    assert_eq!(names_in(&home), ["big.bin"]);
    // And the quota counts it once.
    let usage = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
    let usage: Value = serde_json::from_str(stdout_of(&usage).trim()).unwrap();
    assert_eq!(
        (usage["bytes"].as_u64(), usage["files"].as_u64()),
        (Some(8 << 20), Some(1))
    );
}

/// The server's peak resident memory so far, in MiB.
fn peak_rss_mib(server: &Server) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", server.0.child.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

#[test]
fn many_uploads_at_once_keep_the_servers_memory_small() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&[]);
    // One upload first: the later ones then get memory the allocator recycles, and
    // zeroes in full (buffers sized for the largest possible frame once made eight
    // uploads cost 170 MiB, 32 clients 1 GiB).
    let first = site.local("first.bin", &pattern(4 << 20, 0));
    let put = client(
        &site,
        "alice",
        &["send", first.to_str().unwrap(), &server.addr()],
    );
    expect_exit(&put, 0, "the first upload");
    let mut uploads: Vec<_> = (1..=8u64)
        .map(|i| {
            let file = site.local(&format!("up{i}.bin"), &pattern(6 << 20, i));
            let user = ["alice", "bob"][i as usize % 2];
            // Slowed down, so that all eight are in flight together.
            let args = [
                "send",
                file.to_str().unwrap(),
                &server.addr(),
                "--limit-rate",
                "4M",
            ];
            as_user(&site, user, &args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for upload in &mut uploads {
        assert!(wait_for(upload, TIMEOUT).success(), "an upload failed");
    }
    let peak = peak_rss_mib(&server);
    assert!(peak < 100, "eight uploads took the server to {peak} MiB");
}

// ---- Limits of a connection ------------------------------------------------------

#[test]
fn max_sessions_turns_away_a_users_extra_connections_as_busy() {
    let site = Site::new();
    site.users(&[("alice", "max_sessions = 1"), ("bob", "")]);
    let server = site.serve(&[]);
    let mut held = login(&server, "alice");
    let busy = client(&site, "alice", &["ls", &server.addr()]);
    expect_exit(&busy, 3, "alice's second connection");
    assert!(stderr_of(&busy).contains("busy"), "{}", stderr_of(&busy));
    // Someone else is not affected.
    expect_exit(&client(&site, "bob", &["ls", &server.addr()]), 0, "bob");
    // Once the first is gone, alice may come back.
    held.bye().expect("closed");
    drop(held);
    eventually("alice's slot is free again", || {
        code(&client(&site, "alice", &["ls", &server.addr()])) == 0
    });
}

#[test]
fn an_idle_connection_is_closed_with_timeout() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&["--idle-timeout", "1"]);
    let mut peer = login(&server, "alice");
    peer.list("").expect("a listing");
    let start = Instant::now();
    let frame = peer.read_control().expect("an error frame");
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("error"), Some("timeout")),
        "{frame}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(peer.expect_close().is_ok());
}

#[test]
fn two_sessions_cannot_write_one_path_at_once() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let big = site.local("same.bin", &pattern(4 << 20, 9));
    let mut command = as_user(
        &site,
        "alice",
        &[
            "send",
            big.to_str().unwrap(),
            &server.addr(),
            "--limit-rate",
            "2M",
        ],
    );
    let first = std::thread::spawn(move || run(&mut command));
    let home = site.home("alice");
    eventually("the first upload has begun", || {
        fs::read_dir(&home).unwrap().next().is_some()
    });
    let mut peer = login(&server, "alice");
    let report = peer
        .put("", &[SendEntry::file("same.bin", pattern(4 << 20, 9))])
        .unwrap_or_else(|err| panic!("a put: {err}: {}", server.log()));
    assert_eq!(
        report.code(0),
        Some("busy"),
        "{:?} {:?}",
        report.plan,
        report.answers
    );
    let first = first.join().unwrap();
    expect_exit(&first, 0, "the first upload");
    assert!(fs::read(home.join("same.bin")).unwrap() == pattern(4 << 20, 9));
}

// ---- The server's log ------------------------------------------------------------

#[test]
fn the_server_logs_each_request_with_its_peer_user_and_outcome() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("a.txt"), b"a\n");
    expect_exit(&client(&site, "alice", &["ls", &server.addr()]), 0, "ls");
    expect_exit(
        &client(&site, "alice", &["ls", &server.at("nope")]),
        6,
        "ls nope",
    );
    expect_exit(
        &client(&site, "alice", &["mkdir", &server.at("d")]),
        0,
        "mkdir",
    );
    let log = server.wait_for_log("alice mkdir d: done", 1);
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {log}"))
            .to_owned()
    };
    for (needle, tail) in [
        ("alice list .:", "alice list .: 1 entry"),
        (
            "alice list nope:",
            "alice list nope: refused: nope: no such file or directory (not_found)",
        ),
        ("alice mkdir d:", "alice mkdir d: done"),
    ] {
        let line = line(needle);
        let rest = line
            .strip_prefix("xfer: 127.0.0.1:")
            .expect("xfer: PEER: ...");
        let (port, rest) = rest.split_once(": ").unwrap();
        assert!(port.parse::<u16>().is_ok(), "{line}");
        assert_eq!(rest, tail);
    }

    // With --json: one event per request on stdout.
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&["--json"]);
    expect_exit(
        &client(&site, "alice", &["ls", &server.at("nope")]),
        6,
        "ls nope",
    );
    expect_exit(
        &client(&site, "alice", &["mkdir", &server.at("d")]),
        0,
        "mkdir",
    );
    let events = server.json_events();
    let requests: Vec<&Value> = events.iter().filter(|e| e["event"] == "request").collect();
    let find = |action: &str| {
        *requests
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {events:?}"))
    };
    let refused = find("list nope");
    assert_eq!(
        (refused["user"].as_str(), refused["ok"].as_bool()),
        (Some("alice"), Some(false))
    );
    assert!(
        refused["error"].as_str().unwrap().contains("not_found"),
        "{refused}"
    );
    assert!(refused["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let done = find("mkdir d");
    assert_eq!(
        (done["user"].as_str(), done["ok"].as_bool()),
        (Some("alice"), Some(true))
    );
}

#[test]
fn a_quiet_server_logs_only_refusals() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&["-q"]);
    let file = site.local("a.txt", b"a\n");
    expect_exit(
        &client(
            &site,
            "alice",
            &["send", file.to_str().unwrap(), &server.addr()],
        ),
        0,
        "put",
    );
    let dl = site.download_dir("q");
    expect_exit(
        &client(
            &site,
            "alice",
            &["get", &server.at("a.txt"), dl.to_str().unwrap()],
        ),
        0,
        "get",
    );
    expect_exit(&client(&site, "alice", &["ls", &server.addr()]), 0, "ls");
    expect_exit(
        &client(&site, "alice", &["ls", &server.at("nope")]),
        6,
        "ls nope",
    );
    let log = server.wait_for_log("refused", 1);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("listening on"))
        .collect();
    assert_eq!(lines.len(), 1, "only the refusal: {log}");
}

#[test]
fn json_transfer_events_name_their_user_and_action() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&["--json"]);
    let file = site.local("a.txt", b"a\n");
    expect_exit(
        &client(
            &site,
            "alice",
            &["send", file.to_str().unwrap(), &server.addr()],
        ),
        0,
        "put",
    );
    let events = server.json_events();
    let session = events
        .iter()
        .find(|e| e["event"] == "session")
        .unwrap_or_else(|| panic!("no session event: {events:?}"));
    assert_eq!(session["user"], "alice", "{session}");
    assert_eq!(session["action"], "put .", "{session}");
}
