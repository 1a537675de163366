//! Nothing dropped in silence (issue 20, `PROTOCOL.md` section 16.5): a file the
//! sender cannot read, a directory it cannot list and a socket are named, counted in
//! the summary, `skip` events with `--json`, exit 10 on the sender and on the
//! receiver (which is told under `meta`), still one line with `-q`, and a rerun
//! moves nothing else. A peer without `meta` gets today's transfer; the sender
//! still counts what it left out.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{KEY, Receiver, as_nobody, old_receiver_taking_all, run, stderr_of, xfer};

/// A tree with two readable files, an unreadable file, a directory nobody may list
/// and a socket; readable by everyone else, so that an unprivileged sender meets
/// exactly those three.
struct Tree {
    _dir: tempfile::TempDir,
    tree: PathBuf,
    _socket: std::os::unix::net::UnixListener,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = dir.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), b"first").unwrap();
    std::fs::write(tree.join("z.txt"), b"last").unwrap();
    std::fs::write(tree.join("secret"), b"not for you").unwrap();
    std::fs::create_dir(tree.join("locked")).unwrap();
    std::fs::write(tree.join("locked/inside"), b"hidden").unwrap();
    let socket = std::os::unix::net::UnixListener::bind(tree.join("sock")).unwrap();
    for (name, mode) in [("secret", 0o000), ("locked", 0o000)] {
        let path = tree.join(name);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    Tree {
        _dir: dir,
        tree,
        _socket: socket,
    }
}

/// `xfer send TREE 127.0.0.1:PORT FLAGS` as a user who cannot read what is mode
/// 000 (nobody, when the tests run as root); `None` where that cannot be arranged.
fn send_unprivileged(tree: &Path, port: u16, flags: &[&str]) -> Option<Output> {
    let mut command = xfer();
    command
        .arg("send")
        .arg(tree)
        .arg(format!("127.0.0.1:{port}"))
        .args(flags)
        .env("XFER_KEY", KEY);
    let mut command: Command = if rustix::process::geteuid().is_root() {
        as_nobody(command)?
    } else {
        command
    };
    Some(run(&mut command))
}

fn skip_events(output: &Output) -> Vec<Value> {
    crate::util::stdout_events(output)
        .into_iter()
        .filter(|event| event["event"] == "skip")
        .collect()
}

#[test]
fn what_the_sender_cannot_send_is_said_counted_and_exits_10_on_both_sides() {
    let tree = tree();
    let out = tempfile::tempdir().unwrap();
    for round in ["first", "rerun"] {
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let Some(sent) = send_unprivileged(&tree.tree, receiver.port, &["--json"]) else {
            eprintln!("skipped: cannot run the sender as a user who may not read a file");
            return;
        };
        let said = stderr_of(&sent);
        assert_eq!(sent.status.code(), Some(10), "{round}: {said}");
        assert!(
            said.contains("3 of 6 entries not sent: 2 unreadable, 1 socket; see above"),
            "{round}: {said}"
        );
        for name in ["t/locked", "t/sock", "t/secret"] {
            assert!(said.contains(name), "{round}: {name}: {said}");
        }
        let mut skipped: Vec<String> = skip_events(&sent)
            .iter()
            .map(|event| event["path"].as_str().unwrap().to_string())
            .collect();
        skipped.sort();
        assert_eq!(skipped, ["t/locked", "t/secret", "t/sock"], "{round}");
        let summary = crate::util::summary_event(&sent);
        assert_eq!(summary["not_sent"], 3, "{round}: {summary}");
        assert_eq!(summary["exit_code"], 10, "{round}: {summary}");
        let files = if round == "first" { 2 } else { 0 };
        assert_eq!(summary["files"], files, "{round}: {summary}");
        // The receiver was told, and agrees.
        assert_eq!(receiver.exit_code(), 10, "{round}: {}", receiver.stderr());
        assert!(
            receiver
                .stderr()
                .contains("3 of 6 entries not sent: 2 unreadable, 1 socket"),
            "{round}: {}",
            receiver.stderr()
        );
    }
    let mut landed: Vec<_> = std::fs::read_dir(out.path().join("t"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    landed.sort();
    assert_eq!(landed, ["a.txt", "z.txt"]);
}

#[test]
fn quiet_still_says_in_one_line_how_many_were_not_sent() {
    let tree = tree();
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["-q"]);
    let Some(sent) = send_unprivileged(&tree.tree, receiver.port, &["-q"]) else {
        eprintln!("skipped: cannot run the sender as a user who may not read a file");
        return;
    };
    assert_eq!(sent.status.code(), Some(10));
    let said = stderr_of(&sent);
    assert_eq!(
        said.trim_end(),
        "xfer: 3 of 6 entries not sent: 2 unreadable, 1 socket",
        "exactly one line"
    );
    assert_eq!(receiver.exit_code(), 10);
    let heard = receiver.stderr();
    let heard: Vec<&str> = heard
        .lines()
        .filter(|line| !line.starts_with("listening on"))
        .collect();
    assert_eq!(
        heard,
        ["xfer: 3 of 6 entries not sent: 2 unreadable, 1 socket"]
    );
}

#[test]
fn a_peer_without_meta_gets_todays_transfer_and_the_sender_still_counts() {
    let tree = tree();
    let (port, old) = old_receiver_taking_all();
    let Some(sent) = send_unprivileged(&tree.tree, port, &["--json"]) else {
        eprintln!("skipped: cannot run the sender as a user who may not read a file");
        // Let the peer's accept end.
        drop(std::net::TcpStream::connect(("127.0.0.1", port)));
        let _ = old.join();
        return;
    };
    let received = old.join().unwrap();
    assert_eq!(sent.status.code(), Some(10), "{}", stderr_of(&sent));
    // Version 2 entries only: no unsent, no socket; the unreadable file is offered
    // and given up in place of its data, as before.
    let offered: Vec<&str> = received
        .entries
        .iter()
        .map(|entry| entry["path"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["t", "t/a.txt", "t/secret", "t/z.txt"]);
    assert!(
        received
            .entries
            .iter()
            .all(|entry| matches!(entry["kind"].as_str(), Some("file" | "dir"))),
        "{:?}",
        received.entries
    );
    assert_eq!(received.files.len(), 2);
    assert_eq!(skip_events(&sent).len(), 3);
    assert!(
        stderr_of(&sent).contains("3 of 6 entries not sent: 2 unreadable, 1 socket"),
        "{}",
        stderr_of(&sent)
    );
}
