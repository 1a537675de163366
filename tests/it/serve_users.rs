//! Who may log in to `xfer serve` and what the server says about them: the users file
//! (a bad one stops the start, SIGHUP reloads it, a removed user loses open
//! connections), unknown users indistinguishable from wrong keys, passwords and
//! `passwd`, read-only users, and the log lines and JSON events naming each user.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util;
use crate::util::peer::{Initiator, Peer, PeerError};
use crate::util::server::*;
use crate::util::{TIMEOUT, run, stderr_of, wait_for, xfer};

/// Starts `xfer serve` on the site's users file and expects it to refuse: a
/// non-zero exit, before listening, with one line on stderr naming `names`.
#[track_caller]
fn refuses_to_start(site: &Site, why: &str, names: &str) {
    let out = site.serve_refused();
    let stderr = stderr_of(&out);
    assert_ne!(code(&out), 0, "{why}: started anyway: {stderr}");
    assert!(!stderr.contains("listening on"), "{why}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{why}: one line: {stderr}");
    assert!(stderr.contains(names), "{why}: names {names}: {stderr}");
}

/// The password of PROTOCOL.md's password vector, its realm, and the key it gives alice.
const PASSWORD: &str = "correct horse battery staple";

const REALM: &str = "files.example.org";

const ALICE_PASSWORD_KEY: &str = "e6d7419a2eb2552f49341a33fccb746c7614b9b219b7886415f035064bfeffd9";

/// Inline keys of the form `xfer keygen` prints.
const KEY_A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const KEY_B: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

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
    // The client names the user it logged in as; otherwise it says the same.
    assert_eq!(
        stderr_of(&unknown).replace("carol", "alice"),
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
        // The keys stand for well-formed inline keys: each case is refused for its own reason.
        let text = text
            .replace("a long enough key", KEY_A)
            .replace("another long key", KEY_B);
        let site = Site::new();
        site.write_users(&text);
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

#[test]
fn sighup_reads_the_users_file_again() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    // `xfer ls` of the home as `user` exits `code`.
    let expect_ls = |user: &str, code: i32, what: &str| {
        expect_exit(&client(&site, user, &["ls", &server.addr()]), code, what);
    };
    expect_ls("alice", 0, "alice");
    expect_ls("bob", 4, "bob, unknown yet");

    // Bob is added.
    site.users(&[("alice", ""), ("bob", "")]);
    server.hangup();
    server.wait_for_log("reloaded", 1);
    expect_ls("bob", 0, "bob, added");
    assert!(site.home("bob").is_dir(), "bob's home made on reload");
    expect_ls("alice", 0, "alice, kept");

    // Alice is removed.
    site.users(&[("bob", "")]);
    server.hangup();
    server.wait_for_log("reloaded", 2);
    expect_ls("alice", 4, "alice, removed");
    expect_ls("bob", 0, "bob, kept");

    // A malformed file is reported and changes nothing.
    site.write_users(&format!(
        "[users.carol]\nkey = \"{KEY_A}\"\nquota = \"lots\"\n"
    ));
    server.hangup();
    let log = server.wait_for_log("not reloaded", 1);
    let line = log.lines().find(|l| l.contains("not reloaded")).unwrap();
    assert!(
        line.contains("users.toml") && line.contains("quota"),
        "{line}"
    );
    expect_ls("bob", 0, "bob, still");
    expect_ls("alice", 4, "alice, still gone");

    // So is a file others may read.
    site.users(&[("alice", ""), ("bob", "")]);
    fs::set_permissions(site.users_file(), fs::Permissions::from_mode(0o644)).unwrap();
    server.hangup();
    server.wait_for_log("not reloaded", 2);
    expect_ls("alice", 4, "alice, not back");
    expect_ls("bob", 0, "bob, still");
}

#[test]
fn a_user_removed_by_a_reload_loses_their_open_connections() {
    let site = Site::new();
    site.users(&[("alice", ""), ("bob", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("secret.txt"), b"alice's secret\n");
    let mut held = server.login("alice");
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

/// A scripted `xfer shell` of alice's: runs `before`, waits until its output holds
/// `shown` (the session is open), lets `reload` change the users and reloads the
/// server, then runs `after`; its exit code, standard output and standard error.
fn shell_across_a_reload(
    site: &Site,
    server: &crate::util::server::Server,
    (before, shown): (&str, &str),
    reload: impl FnOnce(),
    after: &str,
) -> (Option<i32>, String, String) {
    let mut shell = as_user(site, "alice", &["shell", &server.addr(), "-b", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xfer shell");
    let mut input = shell.stdin.take().expect("piped");
    input.write_all(before.as_bytes()).unwrap();
    let mut stdout = shell.stdout.take().expect("piped");
    let mut seen = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(&seen).contains(shown) && Instant::now() < deadline {
        let mut byte = [0; 1];
        if stdout.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        seen.push(byte[0]);
    }
    reload();
    server.hangup();
    server.wait_for_log("reloaded", 1);
    input.write_all(after.as_bytes()).unwrap();
    drop(input);
    let status = wait_for(&mut shell, TIMEOUT);
    let mut said = String::from_utf8_lossy(&seen).to_string();
    stdout.read_to_string(&mut said).unwrap();
    let mut stderr = String::new();
    let mut err = shell.stderr.take().unwrap();
    err.read_to_string(&mut stderr).unwrap();
    (status.code(), said, stderr)
}

/// A shell whose session a reload ended hears the server's reason, not "wrong key"
/// (found in the second new-user trial), and logs in again at once, into the home
/// the reload gave the user (it ended the shell with exit 4, "authentication
/// failed", before); the command is not run again there.
#[test]
fn a_shell_ended_by_a_reload_says_why_and_logs_in_again_without_running_the_command() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let moved = || {
        write(&site.root().join("elsewhere/moved.txt"), b"here\n");
        site.users(&[("alice", "home = \"elsewhere\"")]);
    };
    let (code, listed, stderr) =
        shell_across_a_reload(&site, &server, ("pwd\n", "/\n"), moved, "ls\n");
    // Said why (not "wrong key"), logged in again into the new home, and did not
    // run the `ls` there, whose path was worked out in the old one: the script
    // stops (exit 3); the next command would run in the new home.
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("the server ended this session")
            && stderr.contains("home changed")
            && stderr.contains("logged in again, into the home: the command did not run"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong key"), "{stderr}");
    assert!(!listed.contains("moved.txt"), "{listed}");
    server.wait_for_log("alice login", 2);
}

/// The dangerous case of the above (reviewer helper-76): `cd sub`, a reload that
/// moves the home to one that has a `sub/f` too, then `rm f`. The `rm`, its path
/// worked out in the old home, is not run in the new one (it removed
/// `elsewhere/sub/f` when the shell ran it again there), nor in the old.
#[test]
fn a_shell_ended_by_a_reload_does_not_run_the_command_again_in_the_new_home() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    write(&site.home("alice").join("sub/f"), b"old home\n");
    write(&site.root().join("elsewhere/sub/f"), b"new home\n");
    let server = site.serve(&[]);
    let moved = || {
        site.users(&[("alice", "home = \"elsewhere\"")]);
    };
    let (code, _, stderr) =
        shell_across_a_reload(&site, &server, ("cd sub\npwd\n", "/sub\n"), moved, "rm f\n");
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("the command did not run"), "{stderr}");
    assert!(site.root().join("elsewhere/sub/f").exists(), "{stderr}");
    assert!(site.home("alice").join("sub/f").exists(), "{stderr}");
}

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
    let put = send_as(&site, "reader", &[&new], &server.addr());
    expect_refused(&put, "denied", "put");
    let put = send_as(&site, "reader", &[&new], &server.at("dir"));
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

#[test]
fn the_server_logs_each_request_with_its_peer_user_and_outcome() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("a.txt"), b"a\n");
    expect_exit(&client(&site, "alice", &["ls", &server.addr()]), 0, "ls");
    refused_ls_and_mkdir(&site, &server);
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
    refused_ls_and_mkdir(&site, &server);
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
    let (site, server) = served_after_a_put(&["-q"]);
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
    let (_site, server) = served_after_a_put(&["--json"]);
    let events = server.json_events();
    let session = events
        .iter()
        .find(|e| e["event"] == "session")
        .unwrap_or_else(|| panic!("no session event: {events:?}"));
    assert_eq!(session["user"], "alice", "{session}");
    assert_eq!(session["action"], "put .", "{session}");
}

/// Alice's `ls nope` (refused: exit 6) and `mkdir d` (exit 0), for the server to log.
fn refused_ls_and_mkdir(site: &Site, server: &Server) {
    let nope = client(site, "alice", &["ls", &server.at("nope")]);
    expect_exit(&nope, 6, "ls nope");
    expect_exit(
        &client(site, "alice", &["mkdir", &server.at("d")]),
        0,
        "mkdir",
    );
}

/// A server run with `flags` for alice, who has just put `a.txt` (`a` and a newline)
/// into her home.
fn served_after_a_put(flags: &[&str]) -> (Site, Server) {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(flags);
    let file = site.local("a.txt", b"a\n");
    let put = send_as(&site, "alice", &[&file], &server.addr());
    expect_exit(&put, 0, "put");
    (site, server)
}

/// The users-file table `xfer passwd USER --realm REALM` prints for `password`.
fn passwd_table(user: &str, realm: &str, password: &str) -> String {
    let mut command = xfer();
    clean_env(&mut command);
    command
        .args(["passwd", user, "--realm", realm])
        .env("XFER_PASSWORD", password);
    let out = run(&mut command);
    expect_exit(&out, 0, "passwd");
    stdout_of(&out)
}

/// `xfer ls` of the server's home as `user` with `password` ($XFER_PASSWORD).
fn ls_with_password(server: &Server, user: &str, password: &str) -> std::process::Output {
    let mut command = xfer();
    clean_env(&mut command);
    command
        .args(["ls", &server.addr(), "--user", user, "--password"])
        .env("XFER_PASSWORD", password);
    run(&mut command)
}

#[test]
fn the_server_says_its_realm_its_users_and_its_pid_at_start_and_reload() {
    let site = Site::new();
    site.key_file("alice");
    let bob = passwd_table("bob", REALM, PASSWORD);
    assert!(bob.contains(&format!("realm = \"{REALM}\"")), "{bob}");
    site.write_users(&format!(
        "[users.alice]\nkey_file = \"keys/alice.key\"\n\n{bob}"
    ));
    let server = site.serve(&["--realm", REALM]);
    let log = server.log();
    let pid = server.0.child.id();
    assert!(
        log.contains(&format!("realm \"{REALM}\""))
            && log.contains("2 users (1 with a key, 1 with a password)")
            && log.contains(&format!("pid {pid}; `kill -HUP {pid}` reads")),
        "{log}"
    );
    expect_exit(&ls_with_password(&server, "bob", PASSWORD), 0, "bob");

    site.write_users(&format!(
        "[users.alice]\nkey_file = \"keys/alice.key\"\n[users.carol]\nkey = \"{KEY_A}\"\n\n{bob}"
    ));
    server.hangup();
    let log = server.wait_for_log("reloaded", 1);
    let line = log.lines().find(|l| l.contains("reloaded")).unwrap();
    assert!(
        line.contains("3 users (2 with a key, 1 with a password)")
            && line.contains(&format!("realm \"{REALM}\"")),
        "{line}"
    );
}

#[test]
fn a_password_key_made_for_another_realm_stops_the_server_with_its_line() {
    let site = Site::new();
    let bob = passwd_table("bob", "elsewhere.example.org", PASSWORD);
    site.write_users(&format!("[users.alice]\nkey = \"{KEY_A}\"\n\n{bob}"));
    // `xfer passwd` starts with a blank line (for `>>`): bob's table starts at line
    // 5, and its realm is on line 7.
    refuses_to_start(&site, "another realm", "line 7");
    refuses_to_start(
        &site,
        "another realm",
        "realm \"elsewhere.example.org\", but this server's realm is",
    );
    refuses_to_start(&site, "another realm", "xfer passwd bob --realm");
}

#[test]
fn an_inline_key_that_xfer_did_not_make_is_refused_with_its_line() {
    let site = Site::new();
    let placeholder = "[users.alice]\nkey_file = \"keys/alice.key\"\n\n[users.guest]\n\
                       key = \"a-long-random-key-for-guest-made-with-xfer-keygen\"\nhome = \"public\"\n";
    site.key_file("alice");
    for (why, key) in [
        (
            "the README's old placeholder",
            "a-long-random-key-for-guest-made-with-xfer-keygen",
        ),
        ("a paste marker", "<paste the output of xfer keygen>"),
        ("a short key", "hunter2"),
        ("upper-case hex", &KEY_A.to_uppercase()),
        ("63 digits", &KEY_A[1..]),
    ] {
        site.write_users(
            &placeholder.replace("a-long-random-key-for-guest-made-with-xfer-keygen", key),
        );
        refuses_to_start(
            &site,
            why,
            "users.toml: user \"guest\": line 5: key is not a key",
        );
        refuses_to_start(&site, why, "64 lowercase hex digits");
        refuses_to_start(&site, why, "xfer keygen");
        let err = stderr_of(&site.serve_refused());
        assert!(
            !err.contains(key),
            "the refused key is never printed: {err}"
        );
    }
    // What keygen prints is a key; so at a reload, where a bad one is refused too.
    site.write_users(
        &placeholder.replace("a-long-random-key-for-guest-made-with-xfer-keygen", KEY_A),
    );
    let server = site.serve(&[]);
    let mut command = xfer();
    clean_env(&mut command);
    command
        .args(["ls", &server.addr(), "--user", "guest"])
        .env("XFER_KEY", KEY_A);
    expect_exit(&run(&mut command), 0, "guest with a keygen key");
    site.write_users(placeholder);
    server.hangup();
    let log = server.wait_for_log("not reloaded", 1);
    assert!(log.contains("line 5: key is not a key"), "{log}");
}

#[test]
fn a_pid_file_names_the_server_for_kill_hup_and_goes_when_it_stops() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let pid_file = site.path().join("xfer.pid");
    let mut server = site.serve(&["--pid-file", pid_file.to_str().unwrap()]);
    let written = fs::read_to_string(&pid_file).expect("the pid file");
    assert_eq!(written, format!("{}\n", server.0.child.id()));
    // `kill -HUP $(cat PATH)`, as --help says.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -HUP $(cat '{}')", pid_file.display()))
        .status()
        .expect("sh");
    assert!(status.success());
    server.wait_for_log("reloaded", 1);
    let status = Command::new("kill")
        .args(["-TERM", &server.0.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(server.0.exit_code(), 0);
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}

#[test]
fn sighup_to_a_server_without_users_says_there_is_nothing_to_reload() {
    let site = Site::new();
    let mut command = xfer();
    clean_env(&mut command);
    command
        .arg("serve")
        .arg("--root")
        .arg(site.root())
        .args(["--listen", "127.0.0.1:0", "--key-file"])
        .arg(site.key_file("alice"));
    let mut server = Server(util::Receiver::spawn(command));
    assert!(
        server.log().contains("one key, any user name"),
        "{}",
        server.log()
    );
    server.hangup();
    let log = server.wait_for_log("nothing to reload", 1);
    assert!(log.contains("--users"), "{log}");
    assert!(server.is_running(), "{log}");
}

#[test]
fn kill_hup_meant_for_a_server_stops_neither_a_receiver_nor_a_sender_mid_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = util::Receiver::start(dir.path(), Some(util::KEY), &[]);
    let hangup = |pid: u32| {
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    hangup(receiver.child.id());
    std::thread::sleep(Duration::from_millis(300));
    assert!(receiver.is_running(), "SIGHUP killed a receiver");
    // A sender streaming its standard input gets SIGHUP between two writes.
    let mut sender = xfer()
        .args(["send", "-", &format!("127.0.0.1:{}", receiver.port)])
        .args(["--name", "hup.txt"])
        .env("XFER_KEY", util::KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xfer send");
    let mut stdin = sender.stdin.take().expect("piped");
    stdin.write_all(b"before the hangup\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    hangup(sender.id());
    std::thread::sleep(Duration::from_millis(100));
    stdin.write_all(b"after it\n").unwrap();
    drop(stdin);
    let status = wait_for(&mut sender, TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "the sender died of SIGHUP: {status:?}"
    );
    assert_eq!(receiver.exit_code(), 0);
    assert_eq!(
        fs::read(dir.path().join("hup.txt")).unwrap(),
        b"before the hangup\nafter it\n"
    );
}
