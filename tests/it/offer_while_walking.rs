//! `xfer send` to a receiver it connects to walks its operands while it connects
//! and offers each entry as the walk finds it. What the walk may run ahead of the
//! session is bounded, so a tree larger than that must still arrive whole when the
//! receiver is late, when the receiver is an older peer (offered only once the
//! walk ended), and with a mirror (whose first frame waits for the whole walk).

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::util::{
    KEY, Receiver, TIMEOUT, old_receiver_taking_all, send, stderr_of, wait_for, xfer,
};

/// More entries than the walk may hand on before the session takes them (64
/// batches of 128): the walk must wait for the session, not hold it all twice.
const ENTRIES: usize = 9000;

/// `tree/dNN/fNNNN`: [`ENTRIES`] empty files in 30 directories, and `tree/last`
/// holding the only bytes, found last.
fn big_tree(root: &Path) -> std::path::PathBuf {
    let tree = root.join("tree");
    for index in 0..ENTRIES {
        let dir = tree.join(format!("d{:02}", index % 30));
        if index < 30 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("f{index:04}")), b"").unwrap();
    }
    fs::write(tree.join("last"), b"the last entry the walk finds\n").unwrap();
    tree
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => count_files(&path),
                false => 1,
            }
        })
        .sum()
}

#[test]
fn a_large_tree_arrives_whole_when_the_receiver_listens_only_after_the_walk() {
    let root = tempfile::tempdir().unwrap();
    let tree = big_tree(root.path());
    let out = root.path().join("out");
    fs::create_dir(&out).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sender = xfer()
        .args(["send", "-q", "--wait", "30"])
        .arg(&tree)
        .arg(format!("127.0.0.1:{port}"))
        .env("XFER_KEY", KEY)
        .spawn()
        .unwrap();
    // Long enough for the walk to fill what it may hand on, and wait.
    std::thread::sleep(Duration::from_millis(1500));
    let mut command = xfer();
    command
        .args(["recv", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(&out)
        .env("XFER_KEY", KEY);
    let mut receiver = Receiver::spawn(command);
    assert!(wait_for(&mut sender, TIMEOUT).success());
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(count_files(&out.join("tree")), ENTRIES + 1);
    assert_eq!(
        fs::read(out.join("tree/last")).unwrap(),
        b"the last entry the walk finds\n"
    );
}

#[test]
fn a_large_tree_goes_whole_to_a_receiver_without_meta() {
    let root = tempfile::tempdir().unwrap();
    let tree = big_tree(root.path());
    let (port, received) = old_receiver_taking_all();
    let sent = send(&[&tree], port, KEY, &["-q"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let received = received.join().unwrap();
    // The 30 directories, the files, `tree` itself and `last`.
    assert_eq!(received.entries.len(), ENTRIES + 32);
    assert_eq!(received.entries[0]["path"], "tree");
    assert_eq!(
        received.files["tree/last"],
        b"the last entry the walk finds\n"
    );
}

#[test]
fn a_mirror_of_a_large_tree_is_offered_once_walked_and_deletes_what_the_source_lacks() {
    let root = tempfile::tempdir().unwrap();
    let tree = big_tree(root.path());
    let out = root.path().join("out");
    fs::create_dir_all(out.join("tree/d00")).unwrap();
    fs::write(out.join("tree/d00/stale"), b"stale\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut receiver = Receiver::start(&out, Some(KEY), &["--overwrite", "-q"]);
    let sent = send(&[&tree], receiver.port, KEY, &["--delete", "-q"]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(!out.join("tree/d00/stale").exists());
    assert_eq!(count_files(&out.join("tree")), ENTRIES + 1);
}

/// `xfer send TREE HOST:PORT` that meets a server (a `put` into the home, no
/// `:DIR`): the offer goes out as the walk finds it there too, and arrives whole.
#[test]
fn a_large_tree_put_into_a_home_without_a_directory_arrives_whole() {
    use crate::util::server::{Site, send_as};
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let tree = big_tree(site.path());
    let sent = send_as(&site, "alice", &[&tree], &server.addr());
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    let home = site.home("alice");
    assert_eq!(count_files(&home.join("tree")), ENTRIES + 1);
    assert_eq!(
        fs::read(home.join("tree/last")).unwrap(),
        b"the last entry the walk finds\n"
    );
}

/// The offer goes out while the walk is still under way: a walk held up in the
/// middle (an ignore file that is a named pipe, read with `--gitignore`, holds it
/// until something is written there) has already offered the entries found before,
/// and the receiver reads them in a frame; the rest comes once the walk goes on.
#[test]
fn entries_found_before_a_stalled_walk_are_offered_before_it_goes_on() {
    use crate::util::peer::{self, Peer};
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("t");
    // 2 000 names first (more than a frame of the offer holds), then `z`, whose
    // ignore file stalls the walk.
    fs::create_dir_all(tree.join("a")).unwrap();
    for index in 0..2000 {
        fs::write(tree.join(format!("a/f{index:04}")), b"").unwrap();
    }
    fs::create_dir_all(tree.join("z")).unwrap();
    let fifo = tree.join("z/.gitignore");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (first_frame, first) = std::sync::mpsc::channel();
    let peer_side = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener).unwrap();
        let acceptor = peer::Acceptor::new(KEY, "receiver").features(&["aead", "meta"]);
        peer.accept_handshake(&acceptor).unwrap();
        let frame = peer.read_control().unwrap();
        first_frame.send(frame.clone()).unwrap();
        let mut offered = frame["entries"].as_array().unwrap().len();
        loop {
            let frame = peer.read_control().unwrap();
            match frame["type"].as_str() {
                Some("offer") => offered += frame["entries"].as_array().unwrap().len(),
                _ => return (frame, offered),
            }
        }
    });
    let sender = xfer()
        .args(["send", "-q", "--gitignore"])
        .arg(&tree)
        .arg(format!("127.0.0.1:{port}"))
        .env("XFER_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stopped however the test ends: a walk that never offers waits on the pipe.
    let mut sender = KilledWhenDropped(sender);
    let frame = first.recv_timeout(Duration::from_secs(10));
    let frame = frame.expect("an offer frame while the walk waits");
    assert_eq!(frame["type"], "offer", "{frame}");
    assert_eq!(frame["more"], true, "{frame}");
    std::fs::write(&fifo, b"# nothing ignored\n").unwrap();
    let (end, offered) = peer_side.join().unwrap();
    assert_eq!(end["type"], "offer_end", "{end}");
    // `t`, `a`, its 2 000 files, `z` and its ignore file (not sent: not a file).
    assert_eq!(offered, 2004);
    assert!(wait_for(&mut sender.0, TIMEOUT).code().is_some());
}

/// A child process killed when this goes, so that a failed test leaves none behind.
struct KilledWhenDropped(std::process::Child);

impl Drop for KilledWhenDropped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory named on the command line that cannot be listed is said at once,
/// before any connection (exit 7), as an unreadable file is: the send used to
/// connect, offer it as not sent and exit 10 (or 3 where nobody listened).
#[test]
fn a_directory_operand_that_cannot_be_listed_fails_before_connecting() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let secret = root.path().join("secret");
    fs::create_dir_all(secret.join("deep")).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let mut command = xfer();
    command
        .arg("send")
        .arg(&secret)
        .arg("127.0.0.1:1") // nobody listens: a connection attempt would say so
        .env("XFER_KEY", KEY);
    let Some(mut command) = crate::util::as_nobody(command) else {
        eprintln!("SKIPPED: needs root and setpriv to read as nobody");
        return;
    };
    let refused = crate::util::run(&mut command);
    let said = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(7), "{said}");
    assert!(
        said.contains("cannot read") && said.contains("Permission denied"),
        "{said}"
    );
    assert!(!said.contains("connect"), "{said}");
}
