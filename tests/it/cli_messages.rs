//! What the command line says: usage errors before any connection (numbers past their
//! bounds too), exit codes, hints once, `--quiet`, help and man pages with examples,
//! completions, the progress bar in a narrow terminal, plain output without bars,
//! `--json` events one object per line, and names escaped so they cannot trick a
//! terminal.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Runs `script` in a pseudo-terminal of `cols` columns; returns what it printed.
fn in_terminal(script: &str, cols: u16) -> String {
    let output = run(Command::new("script").args([
        "-qfec",
        &format!("stty cols {cols} rows 24; {script}"),
        "/dev/null",
    ]));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
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
fn usage_errors_and_local_problems_are_said_before_any_connection() {
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "f", b"x");
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
    let secret = write_in(src.path(), "secret", b"root only");
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
    let file = write_in(src.path(), "f", b"new and different");
    // Nobody listening.
    let refused = send(&[&file], 1, KEY, &[]);
    assert!(stderr_of(&refused).contains("start the receiver first, or add --wait 30"));
    // An existing file.
    std::fs::write(out.path().join("f"), b"old").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let exists = send(&[&file], receiver.port, KEY, &[]);
    assert_eq!(exists.status.code(), Some(6));
    // The sender's `-f` (`--overwrite`) cannot help here: the receiver decides.
    let log = stderr_of(&exists);
    assert!(
        log.contains("the receiver decides, and keeps it: `xfer recv --overwrite` replaces files"),
        "{log}"
    );
    assert!(!log.contains("; --overwrite"), "{log}");
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
    write_in(&tree, "f", b"x");
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
fn each_subcommand_help_shows_only_its_own_flags_and_exit_codes() {
    let help = |subcommand: &str| {
        let output = run(xfer().args([subcommand, "--help"]));
        String::from_utf8(output.stdout).unwrap()
    };
    for request in ["ls", "mkdir", "rm", "mv"] {
        let help = help(request);
        for other in [
            "--hash",
            "--limit-rate",
            "--compress",
            "every file was delivered",
            "5  verification",
        ] {
            assert!(
                !help.contains(other),
                "{request} --help shows {other}: {help}"
            );
        }
        assert!(
            help.contains("0  done") && help.contains("--user"),
            "{help}"
        );
    }
    assert!(help("rm").contains("-r, --recursive"), "{}", help("rm"));
    for transfer in ["get", "shell"] {
        let help = help(transfer);
        assert!(
            help.contains("--hash") && help.contains("--limit-rate"),
            "{help}"
        );
        assert!(help.contains("every file was delivered"), "{help}");
    }
    for local in ["keygen", "passwd", "completions", "man"] {
        let help = help(local);
        assert!(
            !help.contains("3  network") && !help.contains("--user"),
            "{local}: {help}"
        );
    }
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
        let local = matches!(
            subcommand,
            Some(&("keygen" | "passwd" | "completions" | "man"))
        );
        assert!(
            help.contains("Exit codes:") && (local || help.contains("9  incompatible")),
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
    let file = write_in(src.path(), name, &content);
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

#[test]
fn json_events_are_one_object_per_line_on_both_sides() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), b"hello, world\n").unwrap();
    std::fs::write(src.path().join("b.txt"), b"new").unwrap();
    std::fs::write(out.path().join("b.txt"), b"old").unwrap();
    // Same size as the new b.txt: with the same mtime too, version 2 would answer
    // `same` (already delivered); another mtime makes it an existing file that differs.
    std::fs::File::options()
        .write(true)
        .open(out.path().join("b.txt"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--json"]);
    // With MD5 (not the default), a file event also carries the digest as `md5`.
    let sent = send(
        &[&src.path().join("a.txt"), &src.path().join("b.txt")],
        receiver.port,
        KEY,
        &["--json", "--hash", "md5"],
    );
    assert_eq!(sent.status.code(), Some(6));
    assert_eq!(receiver.exit_code(), 6);

    let events = json_lines(&sent.stdout);
    let a = events
        .iter()
        .find(|e| e["event"] == "file" && e["path"] == "a.txt")
        .unwrap();
    assert_eq!(
        (a["status"].as_str(), a["size"].as_u64()),
        (Some("ok"), Some(13))
    );
    assert_eq!(a["md5"], "22c3683b094136c3398391ae71b20f04");
    // Version 2 names the hash, and gives its digest whatever it is.
    assert_eq!(
        (a["hash"].as_str(), a["digest"].as_str()),
        (Some("md5"), Some("22c3683b094136c3398391ae71b20f04"))
    );
    let b = events
        .iter()
        .find(|e| e["event"] == "file" && e["path"] == "b.txt")
        .unwrap();
    assert_eq!(
        (b["status"].as_str(), b["code"].as_str()),
        (Some("failed"), Some("exists"))
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], false);
    assert_eq!(
        (summary["files"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(summary["bytes"], 13);
    assert!(summary["seconds"].as_f64().is_some() && summary["bytes_per_sec"].as_u64().is_some());
    assert_eq!(summary["exit_code"], 6);
    assert_eq!(
        (summary["same"].as_u64(), summary["resumed"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (summary["hash"].as_str(), summary["encrypted"].as_bool()),
        (Some("md5"), Some(true))
    );

    let mut stdout = Vec::new();
    std::io::Read::read_to_end(receiver.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let events = json_lines(&stdout);
    assert_eq!(events[0]["event"], "listening");
    assert_eq!(events[0]["address"], format!("127.0.0.1:{}", receiver.port));
    assert_eq!(events.last().unwrap()["event"], "summary");
    assert_eq!(events.iter().filter(|e| e["event"] == "file").count(), 2);
}

#[test]
fn plain_output_has_no_bar_and_no_carriage_returns() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), pattern(1 << 20, 5)).unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&src.path().join("f")], receiver.port, KEY, &[]);
    assert!(sent.status.success());
    assert_eq!(receiver.exit_code(), 0);
    for text in [stderr_of(&sent), receiver.stderr()] {
        assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
    }
    assert!(sent.stdout.is_empty(), "stdout stays clean");
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(xfer().args(["completions", shell]));
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("follow-symlinks"),
            "{shell}"
        );
    }
    let man = run(xfer().arg("man"));
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH xfer"));
}

#[test]
fn exit_codes_for_usage_missing_files_and_refused_connections() {
    let usage = run(xfer().args(["send", "only-one-operand"]));
    assert_eq!(usage.status.code(), Some(2));
    let usage = run(xfer().args(["send", "-", "file", "127.0.0.1:9"]));
    assert_eq!(usage.status.code(), Some(2), "standard input must be alone");
    let missing = run(xfer()
        .args(["send", "/nonexistent/file", "127.0.0.1:9"])
        .env("XFER_KEY", KEY));
    assert_eq!(missing.status.code(), Some(7), "{}", stderr_of(&missing));
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let refused = send(&[&src.path().join("f")], port, KEY, &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("cannot connect"),
        "{}",
        stderr_of(&refused)
    );
    let no_key = run(xfer()
        .arg("send")
        .arg(src.path().join("f"))
        .arg("127.0.0.1:9"));
    assert_eq!(no_key.status.code(), Some(1));
    assert!(
        stderr_of(&no_key).contains("no key"),
        "{}",
        stderr_of(&no_key)
    );
    // New in version 2: 9, a peer without what this side requires.
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--no-encrypt"]);
    let clear_only = send(&[&src.path().join("f")], receiver.port, KEY, &["--encrypt"]);
    assert_eq!(
        clear_only.status.code(),
        Some(9),
        "{}",
        stderr_of(&clear_only)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        receiver.is_running(),
        "a failed handshake is not its session"
    );
    assert!(files_under(out.path()).is_empty());
}

#[test]
fn a_serving_receiver_reports_each_session_as_one_json_event() {
    use std::io::BufRead;
    let out = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"reported").unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve", "--json"]);
    let stdout = receiver.child.stdout.take().unwrap();
    let (lines, events) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    assert!(
        send(&[&src.path().join("f")], receiver.port, KEY, &[])
            .status
            .success()
    );
    let session = loop {
        let line = events.recv_timeout(TIMEOUT).expect("a session event");
        let event: serde_json::Value =
            serde_json::from_str(&line).expect("one JSON object per line");
        assert_ne!(
            event["event"], "summary",
            "serving processes report sessions, not summaries"
        );
        if event["event"] == "session" {
            break event;
        }
    };
    assert_eq!(session["ok"], true);
    assert_eq!(
        (session["files"].as_u64(), session["bytes"].as_u64()),
        (Some(1), Some(8))
    );
    assert!(
        session["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{session}"
    );
    // README's table: every session event has `action`.
    assert_eq!(session["action"], "received", "{session}");
}

#[test]
fn names_that_would_trick_a_terminal_are_escaped_on_both_sides() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("red\u{1b}[31malert"), b"x").unwrap();
    std::fs::write(tree.join("txt.exe\u{202e}"), b"x").unwrap();
    std::fs::write(tree.join("fine"), b"x").unwrap();
    let out = tempfile::tempdir().unwrap();
    // A plain receiver takes such names (tests/it/fidelity_names.rs); this one
    // refuses them, and both sides name them in their refusals.
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--safe-names"]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 6);
    for told in [stderr_of(&sent), receiver.stderr()] {
        assert!(
            !told.contains('\u{1b}') && !told.contains('\u{202e}'),
            "{told:?}"
        );
        assert!(
            told.contains("\\u{1b}") && told.contains("\\u{202e}"),
            "{told}"
        );
    }
    assert_eq!(files_under(out.path()), [PathBuf::from("tree/fine")]);
}

#[test]
fn slips_with_compress_levels_and_file_targets_are_named() {
    let src = tempfile::tempdir().unwrap();
    let file = write_in(src.path(), "doc.txt", b"x");
    let f = file.to_str().unwrap();
    for args in [
        &["send", f, "127.0.0.1:1", "--compress", "19"][..],
        &["send", "--compress", "19", f, "127.0.0.1:1"],
    ] {
        let output = run(xfer()
            .args(args)
            .env("XFER_KEY", KEY)
            .current_dir(src.path()));
        let log = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {log}");
        assert!(log.contains("--compress=19"), "{args:?}: {log}");
        assert!(!log.contains("invalid address"), "{args:?}: {log}");
    }
    let output = run(xfer()
        .args(["recv", "--listen", "127.0.0.1:0", "--dir", "doc.txt"])
        .env("XFER_KEY", KEY)
        .current_dir(src.path()));
    let log = stderr_of(&output);
    assert_eq!(output.status.code(), Some(7), "{log}");
    assert!(
        log.contains("--dir doc.txt is a file, not a directory"),
        "{log}"
    );
    assert!(
        !log.contains("File exists") && !log.contains("listening"),
        "{log}"
    );
}

#[test]
fn a_directory_sent_to_stdout_is_refused_saying_stdout_takes_one_file() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    write_in(&src.path().join("d"), "a", b"a");
    write_in(&src.path().join("d"), "b", b"b");
    let mut command = xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--stdout"])
        .env("XFER_KEY", KEY);
    let mut receiver = Receiver::spawn(command);
    let sent = send(&[&src.path().join("d")], receiver.port, KEY, &[]);
    let said = "--stdout takes one file, and this offer is a directory (3 entries)";
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert!(stderr_of(&sent).contains(said), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 6);
    assert!(receiver.stderr().contains(said), "{}", receiver.stderr());
}

#[test]
fn serve_help_and_its_man_page_list_the_users_file_and_a_safe_kill_hup() {
    let help = String::from_utf8(run(xfer().args(["serve", "--help"])).stdout).unwrap();
    let page = String::from_utf8(run(xfer().args(["man", "serve"])).stdout).unwrap();
    for (what, text) in [("--help", &help), ("man", &page)] {
        for field in [
            "key_file = ",
            "key = ",
            "realm = ",
            "home = ",
            "quota = ",
            "max_files = ",
            "read_only = ",
            "max_sessions = ",
            "64 lowercase hex digits",
            "--pid-file",
            "kill -HUP $(cat /run/xfer.pid)",
        ] {
            assert!(text.contains(field), "{what} lacks {field:?}: {text}");
        }
        // It would kill every other xfer on the machine.
        assert!(!text.contains("pidof"), "{what}: {text}");
        // The output flags speak of the server's log, not of send and recv.
        assert!(!text.contains("recv --stdout"), "{what}: {text}");
    }
    assert!(page.contains(".SH \"USERS FILE\"\n.nf\n"), "{page}");
}

#[test]
fn the_generated_key_hint_names_the_address_the_receiver_is_reachable_at() {
    let out = tempfile::tempdir().unwrap();
    let bound = Receiver::start(out.path(), None, &[]);
    let log = bound.stderr();
    assert!(
        log.contains(&format!("xfer send FILE... 127.0.0.1:{}\n", bound.port)),
        "{log}"
    );
    drop(bound);
    // Bound to every address: the host's name is what a peer can dial.
    let mut command = xfer();
    command
        .args(["recv", "--listen", "0.0.0.0:0", "--dir"])
        .arg(out.path());
    let wildcard = Receiver::spawn(command);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let log = wildcard.stderr();
    assert!(
        log.contains(&format!(
            "xfer send FILE... {}:{}\n",
            host.trim(),
            wildcard.port
        )),
        "{log}"
    );
}

/// The rate a bar line shows (`7.95 MiB/s`), in MiB/s.
fn bar_rate(bar: &str) -> Option<f64> {
    let words: Vec<&str> = bar.split_whitespace().collect();
    let at = words.iter().position(|word| *word == "MiB/s")?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

#[test]
fn after_a_resume_the_bar_keeps_the_whole_name_and_rates_only_the_rest() {
    if which("script").is_none() {
        eprintln!("SKIPPED: needs script(1) for a pseudo-terminal");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let name = "big-file.bin";
    let content = pattern(40 << 20, 9);
    let file = write_in(src.path(), name, &content);
    let partial = out.path().join(partial_name(name, content.len() as u64));
    std::fs::write(&partial, &content[..24 << 20]).unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let command = format!(
        "XFER_KEY='{KEY}' {} send --limit-rate 8M {} 127.0.0.1:{}",
        env!("CARGO_BIN_EXE_xfer"),
        file.display(),
        receiver.port
    );
    let screen = in_terminal(&command, 120);
    assert!(
        screen.contains("big-file.bin: resumed at 24.00 MiB, prefix verified"),
        "{screen:?}"
    );
    let bars: Vec<String> = screen
        .split(['\r', '\n'])
        .map(strip_ansi)
        .filter(|line| line.contains(" ETA "))
        // The note's line, padded to the width, runs into the first bar's.
        .map(|line| match line.split_once("prefix verified") {
            Some((_, bar)) => bar.trim_start().to_string(),
            None => line,
        })
        .collect();
    assert!(!bars.is_empty(), "a bar was drawn: {screen:?}");
    for bar in &bars {
        assert!(bar.chars().count() <= 120, "{bar:?}");
        assert!(bar.starts_with("big-file.bin "), "the whole name: {bar:?}");
    }
    // 16 MiB at 8 MiB/s: the rate is the rest's, not dragged down by the prefix.
    let last = bars.iter().rev().find_map(|bar| bar_rate(bar));
    assert!(
        last.is_some_and(|rate| (4.0..16.0).contains(&rate)),
        "{last:?} in {bars:?}"
    );
    assert_eq!(std::fs::read(out.path().join(name)).unwrap(), content);
    let _ = receiver.child.kill();
}
