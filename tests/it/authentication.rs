//! Who may talk: a wrong key is refused and no data goes to a listener that cannot
//! prove the key; keys come from `keygen`, key files (CRLF or LF, never a FIFO) or
//! `$XFER_KEY`, and a side started without one prints one that works; short keys are
//! warned about. Users and passwords of `xfer serve` are in `serve_users.rs`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util;
use crate::util::peer::{Acceptor, Peer, kind, make_hello};
use crate::util::*;

#[test]
fn wrong_key_is_refused_and_the_receiver_keeps_waiting() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("secret.txt");
    std::fs::write(&file, b"for key holders only").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);

    let refused = send(&[&file], receiver.port, "a different key, also long", &[]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("authentication failed"),
        "{}",
        stderr_of(&refused)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        receiver.is_running(),
        "a failed handshake must not end a one-shot receiver"
    );
    assert!(files_under(out.path()).is_empty());

    let sent = send(&[&file], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
    assert_eq!(
        std::fs::read(out.path().join("secret.txt")).unwrap(),
        b"for key holders only"
    );
}

#[test]
fn a_listener_that_cannot_prove_the_key_gets_no_data() {
    // A fake receiver that does not know the key: it answers with a made-up proof.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).expect("accept");
        let pretender = Acceptor::new("not the key", "receiver").features(LISTENER_FEATURES);
        peer.send_control(&make_hello(&pretender).0).unwrap();
        let auth = peer.read_control().expect("auth");
        assert_eq!(kind(&auth), "auth");
        peer.send_control(&json!({"type":"auth_ok","mac":"cd".repeat(32)}))
            .unwrap();
        // Whatever comes next must not be an offer (nor anything sealed or clear
        // that could carry one): the initiator closes, sending nothing.
        peer.read_control().ok()
    });
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    std::fs::write(&file, b"data").unwrap();
    let sent = send(&[&file], port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(4), "{}", stderr_of(&sent));
    let after = fake.join().unwrap();
    assert!(after.is_none(), "{after:?}");
}

#[test]
fn a_receiver_without_a_key_prints_one_that_works() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), None, &[]);
    let told = receiver.stderr();
    let key = told
        .lines()
        .find_map(|line| line.trim().strip_prefix("XFER_KEY="))
        .unwrap_or_else(|| panic!("no key printed: {told}"))
        .to_string();
    assert!(key.len() >= 32, "{key}");
    assert!(
        told.contains(&format!("XFER_KEY={key} xfer send FILE...")),
        "{told}"
    );
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let sent = send(&[&src.path().join("f")], receiver.port, &key, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
}

#[test]
fn keygen_writes_a_private_key_file_that_both_sides_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("xfer.key");
    let made = run(xfer().arg("keygen").arg(&key_file));
    assert!(made.status.success(), "{}", stderr_of(&made));
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = run(xfer().arg("keygen").arg(&key_file));
    assert_eq!(again.status.code(), Some(1), "never replaces a key");

    let printed = run(xfer().arg("keygen"));
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(printed.trim().len(), 64);

    let out = tempfile::tempdir().unwrap();
    let key_arg = key_file.to_str().unwrap();
    let mut receiver = Receiver::start(out.path(), None, &["--key-file", key_arg]);
    assert!(
        !receiver.stderr().contains("generated"),
        "{}",
        receiver.stderr()
    );
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let mut command = xfer();
    command
        .args(["send", "--key-file", key_arg])
        .arg(dir.path().join("f"))
        .arg(format!("127.0.0.1:{}", receiver.port));
    let sent = run(&mut command);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
}

#[test]
fn short_keys_get_a_warning() {
    let out = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(out.path(), Some("short"), &[]);
    assert!(
        receiver.stderr().contains("only 5 bytes"),
        "{}",
        receiver.stderr()
    );
}

#[test]
fn a_listening_sender_without_a_key_prints_one_for_the_receiver() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let mut command = xfer();
    command
        .args(["send", "--listen", "127.0.0.1:0"])
        .arg(src.path().join("f"));
    let mut sender = Receiver::spawn(command);
    let told = sender.stderr();
    let key = told
        .lines()
        .find_map(|line| line.trim().strip_prefix("XFER_KEY="))
        .unwrap_or_else(|| panic!("{told}"))
        .to_string();
    assert!(
        told.contains(&format!("XFER_KEY={key} xfer recv ")),
        "{told}"
    );
    let out = tempfile::tempdir().unwrap();
    let mut command = xfer();
    command
        .args(["recv", &format!("127.0.0.1:{}", sender.port), "--dir"])
        .arg(out.path())
        .env("XFER_KEY", &key);
    assert!(run(&mut command).status.success());
    assert_eq!(sender.exit_code(), 0);
}

#[test]
fn a_key_file_that_is_a_fifo_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("key");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let file = write_in(dir.path(), "f", b"x");
    let started = Instant::now();
    let output = run(xfer()
        .arg("send")
        .arg(&file)
        .args(["127.0.0.1:1", "--key-file"])
        .arg(&fifo));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output).contains("named pipe"),
        "{}",
        stderr_of(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn crlf_and_lf_key_files_are_the_same_key() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", b"x");
    let lf = write_in(src.path(), "lf.key", format!("{KEY}\n").as_bytes());
    let crlf = write_in(src.path(), "crlf.key", format!("{KEY}\r\n").as_bytes());
    let mut command = xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--dir"])
        .arg(out.path())
        .arg("--key-file")
        .arg(&lf);
    let mut receiver = Receiver::spawn(command);
    let sent = run(xfer()
        .arg("send")
        .arg(&file)
        .arg(format!("127.0.0.1:{}", receiver.port))
        .arg("--key-file")
        .arg(&crlf));
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0);
}

#[test]
fn keygen_makes_a_missing_parent_directory_private() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys/alice.key");
    let made = run(xfer().arg("keygen").arg(&key_file));
    assert!(made.status.success(), "{}", stderr_of(&made));
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode(&dir.path().join("keys")) & 0o777, 0o700);
    assert_eq!(mode(&key_file) & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim().len(), 64);
}

/// The refusal a client prints against a server with alice (a key) and bob (a
/// password for `realm`), for `args` and the environment `env`.
fn refusal(
    server: &util::server::Server,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut command = xfer();
    util::server::clean_env(&mut command);
    command.arg("ls").arg(server.addr()).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = run(&mut command);
    (out.status.code(), stderr_of(&out))
}

/// A server in realm files.example.org with alice (a key file) and bob (a password).
fn alice_and_bob() -> (util::server::Site, util::server::Server) {
    let site = util::server::Site::new();
    site.key_file("alice");
    let mut passwd = xfer();
    util::server::clean_env(&mut passwd);
    passwd
        .args(["passwd", "bob", "--realm", "files.example.org"])
        .env("XFER_PASSWORD", BOBS_PASSWORD);
    let bob = String::from_utf8(run(&mut passwd).stdout).unwrap();
    site.write_users(&format!(
        "[users.alice]\nkey_file = \"keys/alice.key\"\n\n{bob}"
    ));
    let server = site.serve(&["--realm", "files.example.org"]);
    (site, server)
}

const BOBS_PASSWORD: &str = "bob's long passphrase";

#[test]
fn a_server_refusing_a_login_names_the_user_and_the_next_step() {
    let (site, server) = alice_and_bob();
    let alice_key = site.key_file("alice");
    let alice_key = alice_key.to_str().unwrap();

    // alice forgets --user: her key is tried for no user.
    let (code, said) = refusal(&server, &["--key-file", alice_key], &[]);
    assert_eq!(code, Some(4), "{said}");
    assert!(
        said.contains("with no user name (no --user given)")
            && said.contains("add --user NAME")
            && said.contains("--password")
            && !said.contains("wrong key on one side"),
        "{said}"
    );
    // A wrong key for a named user: the name, and --password as the other way in.
    let (code, said) = refusal(
        &server,
        &["--user", "bob"],
        &[("XFER_KEY", "0123456789abcdef")],
    );
    assert_eq!(code, Some(4), "{said}");
    assert!(
        said.contains("refused user bob with $XFER_KEY")
            && said.contains("if bob logs in with a password, add --password"),
        "{said}"
    );
    // A wrong password: the realm the server uses, and how the key must be made.
    let (code, said) = refusal(
        &server,
        &["--user", "bob", "--password"],
        &[("XFER_PASSWORD", "not bob's passphrase")],
    );
    assert_eq!(code, Some(4), "{said}");
    assert!(
        said.contains("refused user bob with the password")
            && said.contains("realm \"files.example.org\"")
            && said.contains("xfer passwd bob --realm files.example.org"),
        "{said}"
    );
}

#[test]
fn xfer_password_without_the_flag_says_add_password() {
    let (_site, server) = alice_and_bob();
    // No key at all, or a key that is refused.
    let password = [("XFER_PASSWORD", BOBS_PASSWORD)];
    let (code, said) = refusal(&server, &["--user", "bob"], &password);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("add --password"), "{said}");
    let with_key = [password[0], ("XFER_KEY", "0123456789abcdef")];
    let (code, said) = refusal(&server, &["--user", "bob"], &with_key);
    assert_eq!(code, Some(4), "{said}");
    assert!(said.contains("add --password"), "{said}");
    // With it, bob is in.
    let (code, said) = refusal(&server, &["--user", "bob", "--password"], &password);
    assert_eq!(code, Some(0), "{said}");
}

/// Every client command's `--json` summary gives the exit code the process exits
/// with when it cannot log in: 4 for a refused key, 3 for nobody listening (it
/// said 1 for all of them, while `send --json` was right).
#[test]
fn a_client_that_cannot_log_in_says_its_real_exit_code_in_json() {
    let (site, server) = alice_and_bob();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("127.0.0.1:{}", free.local_addr().unwrap().port());
    drop(free);
    let into = site.download_dir("d");
    let into = into.to_str().unwrap();
    for (address, wrong_key, expected) in [(server.addr(), true, 4), (nobody, false, 3)] {
        let commands: [Vec<String>; 7] = [
            vec!["get".into(), format!("{address}:x"), into.into()],
            vec!["ls".into(), address.clone()],
            vec!["ls".into(), "--usage".into(), address.clone()],
            vec!["mkdir".into(), format!("{address}:d")],
            vec!["rm".into(), format!("{address}:d")],
            vec!["mv".into(), format!("{address}:a"), format!("{address}:b")],
            vec![
                "send".into(),
                "/etc/hostname".into(),
                format!("{address}:x"),
            ],
        ];
        for args in commands {
            let mut command = xfer();
            util::server::clean_env(&mut command);
            command.args(&args).args(["--json", "--user", "alice"]);
            command.env("XFER_KEY", if wrong_key { "0123456789abcdef" } else { "k" });
            let out = run(&mut command);
            let summary = summary_event(&out);
            assert_eq!(
                out.status.code(),
                Some(expected),
                "{args:?}: {}",
                stderr_of(&out)
            );
            assert_eq!(summary["exit_code"], expected, "{args:?}: {summary}");
            assert_eq!(summary["ok"], false, "{args:?}: {summary}");
        }
    }
}
