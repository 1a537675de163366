//! What trying xfer as a new user and as an attacker found, each case against the
//! real binary: a peer aiming at the receiver's temporaries, read-only sources that
//! must resume, reruns that must finish the job, two receivers on one directory,
//! lying plans, a flood of stalled connections, pipelines that pause, values and
//! key files that used to hang or panic, the usage errors and hints a newcomer
//! meets, and the progress bar on a small terminal.

mod util;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use util::peer::{Acceptor, Initiator, Peer, SendEntry};
use util::relay::{Faults, Relay};
use util::{KEY, Receiver, TIMEOUT, files_under, pattern, run, send, stderr_of, wait_for, xfer};

fn write(dir: &Path, name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn a_peer_cannot_name_the_receivers_temporary_files() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
    let mut sender = Peer::connect(("127.0.0.1", receiver.port)).unwrap();
    sender.initiate(&Initiator::new(KEY, "sender")).unwrap();
    let report = sender
        .send_transfer(&[
            SendEntry::file(
                ".xfer-0123456789abcdef0123456789abcdef.partial",
                b"evil".to_vec(),
            ),
            SendEntry::file("sub/.xfer-0011223344556677.part", b"evil".to_vec()),
            SendEntry::file("fine.txt", b"fine".to_vec()),
        ])
        .unwrap();
    assert_eq!(report.code(0), Some("bad_path"));
    assert_eq!(report.code(1), Some("bad_path"));
    assert!(report.delivered(2));
    assert_eq!(receiver.exit_code(), 6);
    assert_eq!(files_under(out.path()), [Path::new("fine.txt")]);
}

/// Runs `command` as the unprivileged user `nobody` (the tests run as root, who
/// may write anything), or `None` where that is not possible.
fn as_nobody(mut command: Command) -> Option<Command> {
    if !rustix::process::geteuid().is_root() || which("setpriv").is_none() {
        return None;
    }
    let mut wrapped = Command::new("setpriv");
    wrapped.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
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

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.exists())
}

#[test]
fn a_read_only_file_cut_halfway_resumes_for_an_unprivileged_receiver() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::Builder::new()
        .prefix("xfer-ro-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        out.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let content = pattern(8 << 20, 11);
    let file = write(src.path(), "readonly.bin", &content);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let recv_command = || {
        let mut command = xfer();
        command
            .args(["recv", "--listen", "127.0.0.1:0", "--dir"])
            .arg(out.path())
            .env("XFER_KEY", KEY);
        command
    };
    let Some(first) = as_nobody(recv_command()) else {
        eprintln!("SKIPPED: needs root and setpriv to run the receiver unprivileged");
        return;
    };
    let mut receiver = Receiver::spawn(first);
    let relay = Relay::start(
        receiver.port,
        Faults {
            cut_after: Some(3 << 20),
            ..Faults::default()
        },
    );
    let cut = send(&[&file], relay.port, KEY, &[]);
    assert_ne!(cut.status.code(), Some(0));
    let _ = receiver.exit_code();
    let mut again = Receiver::spawn(as_nobody(recv_command()).unwrap());
    let resumed = send(&[&file], again.port, KEY, &[]);
    let log = stderr_of(&resumed);
    assert!(resumed.status.success(), "{log}");
    assert!(log.contains("1 resumed"), "{log}");
    assert_eq!(again.exit_code(), 0, "{}", again.stderr());
    let landed = out.path().join("readonly.bin");
    assert_eq!(std::fs::read(&landed).unwrap(), content);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&landed).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o444);
}

#[test]
fn a_rerun_of_a_cut_multi_file_send_finishes_the_job() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = src.path().join("batch");
    std::fs::create_dir(&tree).unwrap();
    write(&tree, "1.bin", &pattern(1 << 20, 1));
    write(&tree, "2.bin", &pattern(1 << 20, 2));
    write(&tree, "3.bin", &pattern(6 << 20, 3));
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let relay = Relay::start(
        receiver.port,
        Faults {
            cut_after: Some(4 << 20),
            ..Faults::default()
        },
    );
    let cut = send(&[&tree], relay.port, KEY, &[]);
    assert_eq!(cut.status.code(), Some(3), "{}", stderr_of(&cut));
    // Until the receiver has seen the cut, its session still holds the paths (a
    // rerun then would be told busy: try again later).
    let started = Instant::now();
    while !receiver.stderr().contains("failed") && started.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rerun = send(&[&tree], receiver.port, KEY, &[]);
    let log = stderr_of(&rerun);
    assert!(rerun.status.success(), "{log}");
    assert!(log.contains("2 already there, 1 resumed"), "{log}");
    for (name, seed, len) in [
        ("1.bin", 1, 1 << 20),
        ("2.bin", 2, 1 << 20),
        ("3.bin", 3, 6 << 20),
    ] {
        assert_eq!(
            std::fs::read(out.path().join("batch").join(name)).unwrap(),
            pattern(len, seed)
        );
    }
    let _ = receiver.child.kill();
}

#[test]
fn a_second_receiver_on_the_same_directory_is_refused_naming_the_first() {
    let out = tempfile::tempdir().unwrap();
    let first = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let second = run(xfer()
        .args(["recv", "--listen", "127.0.0.1:0", "--dir"])
        .arg(out.path())
        .env("XFER_KEY", KEY));
    let log = stderr_of(&second);
    assert_eq!(second.status.code(), Some(7), "{log}");
    assert!(
        log.contains(&format!("process {}", first.child.id())),
        "{log}"
    );
    assert!(
        !log.contains("listening"),
        "refused before listening: {log}"
    );
}

#[test]
fn a_plan_offset_past_the_end_of_the_file_is_a_protocol_error_not_a_panic() {
    let src = tempfile::tempdir().unwrap();
    let file = write(src.path(), "f", b"twelve bytes");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let liar = std::thread::spawn(move || {
        let mut receiver = Peer::accept(&listener).unwrap();
        receiver
            .accept_handshake(&Acceptor::new(KEY, "receiver").features(&["aead"]))
            .unwrap();
        let first = receiver.read_control_raw().unwrap();
        receiver.read_offer_from(first).unwrap();
        let plan = json!({"action":"send","offset":1000,"prefix_hash":"00".repeat(16)});
        receiver.send_plan(&[vec![plan]]).unwrap();
        receiver.read_control().ok()
    });
    let sent = send(&[&file], port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(8), "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("does not fit"),
        "{}",
        stderr_of(&sent)
    );
    let told = liar.join().unwrap().expect("the sender said why");
    assert_eq!(told["code"], "protocol");
}

#[test]
fn a_thousand_stalled_connections_do_not_lock_out_an_honest_sender() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = write(src.path(), "honest.txt", b"got through");
    let receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    // 1 000 connections from 127.0.0.1 that never say a word.
    let stalled: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", receiver.port)).ok())
        .collect();
    assert!(stalled.len() >= 990, "{} connected", stalled.len());
    std::thread::sleep(Duration::from_millis(1200));
    // An honest sender from another address gets through at once.
    let started = Instant::now();
    let sent = send_from("127.0.0.2", &file, receiver.port);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read(out.path().join("honest.txt")).unwrap(),
        b"got through"
    );
    drop(stalled);
}

/// `xfer send FILE` to 127.0.0.1:`port`, arriving from the local address `from`:
/// through a relay that connects from a socket bound there.
fn send_from(from: &'static str, file: &Path, port: u16) -> std::process::Output {
    let listener = TcpListener::bind((from, 0)).unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let Ok(server) = connect_from(from, port) else {
            return;
        };
        let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (mut client, mut server) = (client, server);
        std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
        let _ = std::io::copy(&mut server, &mut client);
    });
    let mut command = xfer();
    command
        .arg("send")
        .arg(file)
        .arg(format!("{from}:{relay_port}"))
        .env("XFER_KEY", KEY);
    run(&mut command)
}

/// A connection to 127.0.0.1:`port` from the local address `from`.
fn connect_from(from: &str, port: u16) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None)?;
    bind(&fd, &std::net::SocketAddr::new(from.parse().unwrap(), 0))?;
    connect(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    Ok(TcpStream::from(fd))
}

#[test]
fn a_pipeline_whose_producer_pauses_is_not_cut_and_an_idle_timeout_is_honoured() {
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let mut sender = xfer()
        .args([
            "send",
            "-",
            &format!("127.0.0.1:{}", receiver.port),
            "--name",
            "paused",
        ])
        .env("XFER_KEY", KEY)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sender.stdin.take().unwrap();
    stdin.write_all(b"before the pause\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stdin.write_all(b"after it\n").unwrap();
    drop(stdin);
    assert!(wait_for(&mut sender, TIMEOUT).success());
    assert_eq!(receiver.exit_code(), 0);
    assert_eq!(
        std::fs::read(out.path().join("paused")).unwrap(),
        b"before the pause\nafter it\n"
    );

    // Whoever asks for an idle timeout gets it, and the peer is told `timeout`.
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--idle-timeout", "1"]);
    let mut sender = xfer()
        .args(["send", "-", &format!("127.0.0.1:{}", receiver.port)])
        .env("XFER_KEY", KEY)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sender.stdin.take().unwrap();
    stdin.write_all(b"then silence").unwrap();
    let started = Instant::now();
    assert_eq!(receiver.exit_code(), 3, "{}", receiver.stderr());
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(stdin);
    let status = wait_for(&mut sender, TIMEOUT);
    assert_eq!(status.code(), Some(3));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut sender.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("gave up waiting"), "{log}");
}

#[test]
fn numeric_values_past_their_bounds_are_usage_errors_not_panics() {
    for args in [
        &["send", "x", "127.0.0.1:1", "--wait", "18446744073709551615"][..],
        &[
            "send",
            "x",
            "127.0.0.1:1",
            "--handshake-timeout",
            "18446744073709551615",
        ],
        &[
            "send",
            "x",
            "127.0.0.1:1",
            "--idle-timeout",
            "18446744073709551616",
        ],
        &[
            "recv",
            "--listen",
            "0",
            "--keep-partial",
            "18446744073709551615",
        ],
        &[
            "recv",
            "--listen",
            "0",
            "--max-conns",
            "18446744073709551615",
        ],
        &[
            "send",
            "x",
            "127.0.0.1:1",
            "--limit-rate",
            "99999999999999999999999",
        ],
        &[
            "send",
            "x",
            "127.0.0.1:1",
            "--compress=18446744073709551615",
        ],
    ] {
        let output = run(xfer().args(args));
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
}

#[test]
fn a_key_file_that_is_a_fifo_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("key");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let file = write(dir.path(), "f", b"x");
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
    let file = write(src.path(), "f", b"x");
    let lf = write(src.path(), "lf.key", format!("{KEY}\n").as_bytes());
    let crlf = write(src.path(), "crlf.key", format!("{KEY}\r\n").as_bytes());
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
fn usage_errors_and_local_problems_are_said_before_any_connection() {
    let src = tempfile::tempdir().unwrap();
    let file = write(src.path(), "f", b"x");
    let f = file.to_str().unwrap();
    for (args, code, says) in [
        (&["send", "-", f, "127.0.0.1:1"][..], 2, "alone"),
        (&["send", f, f, "127.0.0.1:1"], 2, "same name"),
        (
            &["send", f, "127.0.0.1:1", "--name", "a", "--follow-symlinks"],
            3,
            "--wait",
        ),
        (&["recv", "9000"], 2, "--listen 9000"),
        (&["send", "/nonexistent/x", "127.0.0.1:1"], 7, "cannot read"),
    ] {
        let output = run(xfer().args(args).env("XFER_KEY", KEY));
        let log = stderr_of(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {log}");
        assert!(log.contains(says), "{args:?}: {log}");
        if says == "alone" {
            // A command line error, with the subcommand's own usage line.
            let usage = format!("Usage: xfer {}", args[0]);
            assert!(log.contains(&usage), "{args:?}: {log}");
        }
    }
    // An unreadable source and an unwritable target, for a user who cannot.
    let secret = write(src.path(), "secret", b"root only");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut command = xfer();
    command
        .arg("send")
        .arg(&secret)
        .arg("127.0.0.1:1")
        .env("XFER_KEY", KEY);
    if let Some(mut unprivileged) = as_nobody(command) {
        let output = run(&mut unprivileged);
        assert_eq!(output.status.code(), Some(7), "{}", stderr_of(&output));
        let target = tempfile::tempdir().unwrap();
        let mut command = xfer();
        command
            .args(["recv", "--listen", "127.0.0.1:0", "--dir"])
            .arg(target.path())
            .env("XFER_KEY", KEY);
        let output = run(&mut as_nobody(command).unwrap());
        let log = stderr_of(&output);
        assert_eq!(output.status.code(), Some(7), "{log}");
        assert!(log.contains("cannot write into"), "{log}");
        assert!(!log.contains("listening"), "{log}");
    }
}

#[test]
fn hints_say_the_next_step_once() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = write(src.path(), "f", b"new and different");
    // Nobody listening.
    let refused = send(&[&file], 1, KEY, &[]);
    assert!(stderr_of(&refused).contains("start the receiver first, or add --wait 30"));
    // An existing file.
    std::fs::write(out.path().join("f"), b"old").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let exists = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(exists.status.code(), Some(6));
    assert!(
        stderr_of(&exists).contains("--overwrite"),
        "{}",
        stderr_of(&exists)
    );
    let _ = receiver.exit_code();
    // A wrong key names where the key came from, never the key.
    let receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let wrong = send(
        &[&file],
        receiver.port,
        "another key, also long enough",
        &[],
    );
    let log = stderr_of(&wrong);
    assert_eq!(wrong.status.code(), Some(4), "{log}");
    assert!(log.contains("$XFER_KEY"), "{log}");
    assert!(!log.contains("another key"), "{log}");
    assert_eq!(log.lines().count(), 1, "one message: {log}");
    drop(receiver);
}

#[test]
fn quiet_prints_nothing_but_errors() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = src.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    write(&tree, "f", b"x");
    std::os::unix::fs::symlink("f", tree.join("link")).unwrap();
    let mut command = xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "-q", "--dir"])
        .arg(out.path())
        .env("XFER_KEY", KEY);
    // Port 0: the address must still be said, or nobody could connect.
    let mut receiver = Receiver::spawn(command);
    let sent = send(&[&tree], receiver.port, KEY, &["-q"]);
    assert!(sent.status.success());
    assert_eq!(stderr_of(&sent), "", "no warning, no summary");
    assert_eq!(receiver.exit_code(), 0);
    assert_eq!(
        receiver.stderr().lines().count(),
        1,
        "{}",
        receiver.stderr()
    );
}

#[test]
fn help_and_man_pages_end_with_examples_and_exit_codes() {
    let subcommands = [
        "send",
        "recv",
        "serve",
        "get",
        "ls",
        "mkdir",
        "rm",
        "mv",
        "shell",
        "keygen",
        "passwd",
        "completions",
        "man",
    ];
    let every = std::iter::once(None).chain(subcommands.iter().map(Some));
    for subcommand in every {
        let mut command = xfer();
        command.args(subcommand).arg("--help");
        let help = String::from_utf8(run(&mut command).stdout).unwrap();
        assert!(help.contains("Examples:"), "{subcommand:?}: {help}");
        assert!(
            help.contains("Exit codes:") && help.contains("9  incompatible"),
            "{subcommand:?}: {help}"
        );
        // No line of the table wraps at 100 columns.
        assert!(
            help.lines().all(|line| line.chars().count() <= 100),
            "{subcommand:?}: {help}"
        );
    }
    let usage = String::from_utf8(run(xfer().args(["send", "--help"])).stdout).unwrap();
    assert!(
        usage.contains("xfer send [OPTIONS] FILE... HOST:PORT"),
        "{usage}"
    );
    let page = String::from_utf8(run(xfer().args(["man", "send"])).stdout).unwrap();
    assert!(page.contains(".TH xfer-send 1"), "{page}");
    assert!(page.contains("\"xfer-send 0.1.0\""), "a version: {page}");
    // Examples and exit codes are sections, their lines as written.
    assert!(page.contains(".SH \"EXAMPLES\"\n.nf\n"), "{page}");
    assert!(page.contains(".SH \"EXIT STATUS\"\n.nf\n"), "{page}");
    assert!(
        page.contains("\\&  9  incompatible peer"),
        "one code a line: {page}"
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(
        run(xfer().args(["man", "--dir"]).arg(dir.path()))
            .status
            .success()
    );
    for page in ["xfer.1", "xfer-send.1", "xfer-recv.1", "xfer-keygen.1"] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
}

/// Runs `script` in a pseudo-terminal of `cols` columns; returns what it printed.
fn in_terminal(script: &str, cols: u16) -> String {
    let output = run(Command::new("script").args([
        "-qfec",
        &format!("stty cols {cols} rows 24; {script}"),
        "/dev/null",
    ]));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_progress_bar_fits_a_narrow_terminal_and_says_when_it_resumed() {
    if which("script").is_none() {
        eprintln!("SKIPPED: needs script(1) for a pseudo-terminal");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let name = "a-file-with-a-rather-long-name-for-a-narrow-terminal.bin";
    let content = pattern(24 << 20, 5);
    let file = write(src.path(), name, &content);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve", "--limit-rate", "32M"]);
    let xfer = env!("CARGO_BIN_EXE_xfer");
    let command = format!(
        "XFER_KEY='{KEY}' {xfer} send {} 127.0.0.1:{}",
        file.display(),
        receiver.port
    );
    let screen = in_terminal(&command, 50);
    let bars: Vec<String> = screen
        .split(['\r', '\n'])
        .map(strip_ansi)
        .filter(|line| line.contains('%'))
        .collect();
    assert!(!bars.is_empty(), "a bar was drawn: {screen:?}");
    for bar in &bars {
        assert!(bar.chars().count() <= 50, "{bar:?} in {screen:?}");
    }
    assert!(screen.contains("sent 1 file"), "{screen:?}");

    // A resumed file says so on the bar and in the summary.
    std::fs::remove_file(out.path().join(name)).unwrap();
    let partial = out.path().join(partial_name(name, content.len() as u64));
    std::fs::write(&partial, &content[..8 << 20]).unwrap();
    let screen = in_terminal(&command, 120);
    assert!(
        screen.contains("resumed at 8.00 MiB, prefix verified"),
        "{screen:?}"
    );
    assert!(screen.contains("1 resumed"), "{screen:?}");
    assert_eq!(std::fs::read(out.path().join(name)).unwrap(), content);
    let _ = receiver.child.kill();
}

/// The name a receiver keeps partial data of `name` (offered with `size` bytes)
/// under: `.xfer-` and the first 32 hex digits of SHA-256(name 0x00 u64be(size)).
fn partial_name(name: &str, size: u64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0])
        .chain_update(size.to_be_bytes())
        .finalize();
    format!(".xfer-{}.partial", &util::peer::hex(&digest)[..32])
}

/// `text` without terminal escape sequences.
fn strip_ansi(text: &str) -> String {
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
