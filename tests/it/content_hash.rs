//! Which content hash verifies the files: BLAKE3 by default whenever both sides have
//! the feature `blake3`, MD5 against a peer without it (the independent peer, an
//! older xfer) and whenever either side gives `--hash md5`, and exit 9 for `--hash
//! blake3` against a peer without it. `$XFER_HASH` means what the flag means. The
//! digests are checked from outside, with the `blake3` and `md5` crates.

use std::net::TcpListener;
use std::process::Output;

use crate::util::peer::server::{MiniServer, ServerConfig};
use crate::util::peer::{self, Acceptor, HashKind, Peer};
use crate::util::server::{Site, as_user, client, code, stdout_of};
use crate::util::*;

/// The file every test sends: long enough for several data frames.
fn content() -> Vec<u8> {
    pattern((2 << 20) + 11, 21)
}

/// `(hash, digest)` of the `file` event for `name` among a command's `--json` lines.
fn file_hash(stdout: &[u8], name: &str) -> (String, String) {
    let event = crate::util::events_in(&String::from_utf8_lossy(stdout))
        .into_iter()
        .find(|event| {
            event["event"] == "file"
                && event["path"]
                    .as_str()
                    .is_some_and(|path| path.ends_with(name))
        })
        .unwrap_or_else(|| {
            panic!(
                "no file event for {name}: {}",
                String::from_utf8_lossy(stdout)
            )
        });
    assert_eq!(event["status"], "ok", "{event}");
    (
        event["hash"].as_str().unwrap_or_default().to_string(),
        event["digest"].as_str().unwrap_or_default().to_string(),
    )
}

/// What a file event must say for `data` verified with `kind`, computed here.
fn expected(kind: HashKind, data: &[u8]) -> (String, String) {
    let name = match kind {
        HashKind::Md5 => "md5",
        HashKind::Blake3 => "blake3",
    };
    (name.to_string(), peer::hex(&kind.digest(data)))
}

/// `xfer send f` (with `send_extra`) to `xfer recv` (with `recv_extra` and the
/// environment `recv_env`), both with `--json`; the file arrived whole and both
/// sides name the same hash, which is returned with its digest.
fn transfer(
    send_extra: &[&str],
    recv_extra: &[&str],
    recv_env: &[(&str, &str)],
) -> (String, String) {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f.bin", &content());
    let mut command = xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--json", "--dir"])
        .arg(out.path())
        .args(recv_extra)
        .env("XFER_KEY", KEY)
        .envs(recv_env.iter().copied());
    let mut receiver = Receiver::spawn(command);
    let mut args = vec!["--json"];
    args.extend_from_slice(send_extra);
    let sent = send(&[&file], receiver.port, KEY, &args);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(std::fs::read(out.path().join("f.bin")).unwrap(), content());
    let mut received = Vec::new();
    std::io::Read::read_to_end(receiver.child.stdout.as_mut().unwrap(), &mut received).unwrap();
    let sender_side = file_hash(&sent.stdout, "f.bin");
    assert_eq!(
        file_hash(&received, "f.bin"),
        sender_side,
        "both sides agree"
    );
    sender_side
}

#[test]
fn two_xfers_verify_with_blake3_by_default() {
    let blake3 = expected(HashKind::Blake3, &content());
    assert_eq!(transfer(&[], &[], &[]), blake3);
    // The human summary says so too.
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f.bin", &content());
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let summary = stderr_of(&sent);
    assert!(
        summary.contains("all verified (BLAKE3 + MAC, encrypted)"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("{}  f.bin", blake3.1)),
        "{summary}"
    );
}

#[test]
fn md5_on_either_side_gives_md5_by_flag_or_environment() {
    let md5 = expected(HashKind::Md5, &content());
    assert_eq!(transfer(&["--hash", "md5"], &[], &[]), md5, "the sender");
    assert_eq!(transfer(&[], &["--hash", "md5"], &[]), md5, "the receiver");
    assert_eq!(
        transfer(&[], &[], &[("XFER_HASH", "md5")]),
        md5,
        "$XFER_HASH"
    );
    // The flag wins over the environment, as for every other flag.
    let blake3 = expected(HashKind::Blake3, &content());
    assert_eq!(
        transfer(&[], &["--hash", "blake3"], &[("XFER_HASH", "md5")]),
        blake3
    );
}

#[test]
fn a_listener_given_md5_does_not_list_blake3() {
    let out = tempfile::tempdir().unwrap();
    let listed = |receiver: &Receiver| -> Vec<String> {
        let hello = peer_connect(receiver.port).read_hello().expect("hello");
        serde_json::from_value(hello["features"].clone()).expect("a list")
    };
    for (extra, env, lists) in [
        (&[][..], None, true),
        (&["--hash", "md5"][..], None, false),
        (&[][..], Some("md5"), false),
        (&["--hash", "blake3"][..], None, true),
    ] {
        let mut command = xfer();
        command
            .args(["recv", "--listen", "127.0.0.1:0", "--serve", "--dir"])
            .arg(out.path())
            .args(extra)
            .env("XFER_KEY", KEY);
        if let Some(hash) = env {
            command.env("XFER_HASH", hash);
        }
        let receiver = Receiver::spawn(command);
        let features = listed(&receiver);
        assert_eq!(
            features.contains(&"blake3".to_string()),
            lists,
            "{extra:?} {env:?}: {features:?}"
        );
    }
    // A listening sender too: `recv HOST:PORT` then gets MD5 from it.
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f.bin", &content());
    let mut command = xfer();
    command
        .arg("send")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--hash", "md5", "--json"])
        .env("XFER_KEY", KEY);
    let mut sender = Receiver::spawn(command);
    let received = run(xfer()
        .arg("recv")
        .arg(format!("127.0.0.1:{}", sender.port))
        .args(["--json", "--dir"])
        .arg(out.path())
        .env("XFER_KEY", KEY));
    assert!(received.status.success(), "{}", stderr_of(&received));
    assert_eq!(sender.exit_code(), 0, "{}", sender.stderr());
    assert_eq!(
        file_hash(&received.stdout, "f.bin"),
        expected(HashKind::Md5, &content())
    );
}

/// What the peer put in force and received whole, or why it failed.
type PeerSide = Result<(Vec<String>, Vec<u8>), String>;

/// `xfer send f` with `extra` (and `env`) to the independent peer listing `features`:
/// the sender's output, and what the peer put in force and received whole.
fn to_the_peer(
    features: &'static [&'static str],
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Output, PeerSide) {
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f.bin", &content());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer_side = std::thread::spawn(move || {
        let mut acceptor = Peer::accept(&listener).unwrap();
        let session = acceptor
            .accept_handshake(&Acceptor::new(KEY, "receiver").features(features))
            .map_err(|err| format!("{err:?} {:?}", err.remote_code()))?;
        let received = acceptor
            .receive_transfer(|_, _| peer::Decision::Send)
            .map_err(|err| format!("{err:?}"))?;
        let file = received.files.get("f.bin").cloned().unwrap_or_default();
        Ok((session.in_force.clone(), file))
    });
    let mut command = xfer();
    command
        .arg("send")
        .arg(&file)
        .arg(format!("127.0.0.1:{port}"))
        .arg("--json")
        .args(extra)
        .env("XFER_KEY", KEY)
        .envs(env.iter().copied());
    let sent = run(&mut command);
    (sent, peer_side.join().unwrap())
}

#[test]
fn against_a_peer_without_blake3_the_default_is_md5_and_works() {
    let (sent, peer) = to_the_peer(&["aead"], &[], &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let (in_force, file) = peer.expect("the peer received");
    assert_eq!(in_force, ["aead"]);
    assert_eq!(file, content(), "verified by the peer with MD5");
    assert_eq!(
        file_hash(&sent.stdout, "f.bin"),
        expected(HashKind::Md5, &content())
    );
    // The same peer listing blake3 gets it, unless the sender says md5.
    let (sent, peer) = to_the_peer(&["aead", "blake3"], &[], &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(peer.expect("the peer received").0, ["aead", "blake3"]);
    let (sent, peer) = to_the_peer(&["aead", "blake3"], &["--hash", "md5"], &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(peer.expect("the peer received").0, ["aead"]);
    assert_eq!(file_hash(&sent.stdout, "f.bin").0, "md5");
}

#[test]
fn blake3_asked_for_against_a_peer_without_it_exits_9() {
    for (extra, env) in [
        (&["--hash", "blake3"][..], &[][..]),
        (&[][..], &[("XFER_HASH", "blake3")][..]),
    ] {
        let (sent, peer) = to_the_peer(&["aead"], extra, env);
        assert_eq!(code(&sent), 9, "{extra:?} {env:?}: {}", stderr_of(&sent));
        assert!(stderr_of(&sent).contains("blake3"), "{}", stderr_of(&sent));
        let err = peer.expect_err("refused");
        assert!(err.contains("feature"), "{err}");
    }
    // A listener that insists refuses a sender that says md5.
    let out = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f.bin", b"x");
    let receiver = Receiver::start(out.path(), Some(KEY), &["--hash", "blake3", "--serve"]);
    let refused = send(&[&file], receiver.port, KEY, &["--hash", "md5"]);
    assert_eq!(code(&refused), 9, "{}", stderr_of(&refused));
    assert!(!out.path().join("f.bin").exists());
}

/// `xfer ARGS --json` as alice, with `env`; it must succeed.
fn as_alice(site: &Site, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = as_user(site, "alice", args);
    command.arg("--json").envs(env.iter().copied());
    let output = run(&mut command);
    assert_eq!(code(&output), 0, "{args:?}: {}", stderr_of(&output));
    output
}

#[test]
fn a_server_connection_uses_blake3_unless_the_client_says_md5() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let local = site.local("f.bin", &content());
    let blake3 = expected(HashKind::Blake3, &content());
    let md5 = expected(HashKind::Md5, &content());
    let local_arg = local.to_str().unwrap();
    let put = as_alice(&site, &["send", local_arg, &server.at("in")], &[]);
    assert_eq!(file_hash(&put.stdout, "f.bin"), blake3, "put");
    // Touched, so that the put again is not `same` (the quick check), and sent
    // whole: a delta would keep the unchanged file and verify no hash of its own.
    let touched = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let handle = std::fs::File::options().write(true).open(&local).unwrap();
    handle.set_modified(touched).unwrap();
    let put = as_alice(
        &site,
        &[
            "send",
            "-f",
            "-W",
            "--hash",
            "md5",
            local_arg,
            &server.at("in"),
        ],
        &[],
    );
    assert_eq!(file_hash(&put.stdout, "f.bin"), md5, "put --hash md5");
    assert_eq!(
        std::fs::read(site.home("alice").join("in/f.bin")).unwrap(),
        content()
    );
    let remote = server.at("in/f.bin");
    for (i, (args, env, hash)) in [
        (&[][..], &[][..], &blake3),
        (&["--hash", "md5"][..], &[][..], &md5),
        (&[][..], &[("XFER_HASH", "md5")][..], &md5),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = site.download_dir(&format!("get{i}"));
        let mut get = vec!["get"];
        get.extend_from_slice(args);
        get.extend([remote.as_str(), dir.to_str().unwrap()]);
        let got = as_alice(&site, &get, env);
        assert_eq!(&file_hash(&got.stdout, "f.bin"), hash, "{args:?} {env:?}");
        assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), content());
    }
    // The shell: its --hash holds for every transfer of the session.
    for (args, says) in [
        (&[][..], "BLAKE3 + MAC"),
        (&["--hash", "md5"][..], "MD5 + MAC"),
    ] {
        let dir = site.download_dir(&format!("shell{}", args.len()));
        let mut shell = as_user(&site, "alice", &["shell", &server.addr(), "-b", "-"]);
        shell.args(args);
        let script = format!(
            "get in/f.bin {}\nput {local_arg} up{}\n",
            dir.display(),
            args.len()
        );
        let output = crate::util::server::run_with_input(&mut shell, script.into_bytes());
        assert_eq!(code(&output), 0, "{}", stderr_of(&output));
        let said = format!("{}{}", stdout_of(&output), stderr_of(&output));
        assert_eq!(said.matches(says).count(), 2, "{args:?}: {said}");
        assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), content());
    }
}

#[test]
fn a_server_without_blake3_gets_md5_unless_blake3_is_insisted_on() {
    let site = Site::new();
    let home = site.path().join("mini-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("f.bin"), content()).unwrap();
    let mut config = ServerConfig::new("alice", Site::key_of("alice"), &home);
    config.features = vec!["aead".into()];
    let mini = MiniServer::start(config);
    let at = format!("{}:f.bin", mini.addr());
    let dir = site.download_dir("dl");
    let got = as_alice(&site, &["get", &at, dir.to_str().unwrap()], &[]);
    assert_eq!(
        file_hash(&got.stdout, "f.bin"),
        expected(HashKind::Md5, &content())
    );
    assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), content());
    let refused = client(
        &site,
        "alice",
        &["get", "-f", "--hash", "blake3", &at, dir.to_str().unwrap()],
    );
    assert_eq!(code(&refused), 9, "{}", stderr_of(&refused));
}

#[test]
fn the_help_says_blake3_is_the_default() {
    for command in ["send", "recv", "get", "shell"] {
        let help = stdout_of(&run(xfer().args([command, "--help"])));
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            help.contains("[default: blake3 whenever the"),
            "{command}: {help}"
        );
        assert!(!help.contains("md5 (the default)"), "{command}: {help}");
    }
}
