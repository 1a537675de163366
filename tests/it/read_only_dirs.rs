//! A tree with read-only directories, mirrored by a receiver that is not root
//! (a Go module cache, a `chmod -R a-w` archive): the first run made them with
//! their modes at the end; every later run must add and remove names in them.
//! As rsync does, the receiver gives a directory of its own user its owner's bits
//! while it changes names there, and its mode back after, also when the session
//! fails; its dry run predicts what the real run does; never the target
//! directory itself, nor a directory of another user's.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{KEY, TIMEOUT, nobody_receiving, send, stderr_of, wait_for, xfer};

const NOBODY: u32 = 65534;

/// A source tree `tree/` whose `locked/` and `locked/sub/` are read-only, and the
/// receiver's directory `dst/`, both `nobody`'s, in a fresh temporary directory.
fn site() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let locked = root.path().join("tree/locked");
    fs::create_dir_all(locked.join("sub")).unwrap();
    fs::write(locked.join("a"), b"a\n").unwrap();
    fs::write(locked.join("sub/s"), b"s\n").unwrap();
    fs::create_dir(root.path().join("dst")).unwrap();
    chown_all(root.path());
    set_mode(&locked.join("sub"), 0o555);
    set_mode(&locked, 0o555);
    root
}

fn chown_all(dir: &Path) {
    std::os::unix::fs::lchown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match fs::symlink_metadata(&path).unwrap().is_dir() {
            true => chown_all(&path),
            false => std::os::unix::fs::lchown(&path, Some(NOBODY), Some(NOBODY)).unwrap(),
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Runs `change` on the source directory `dir` with its owner's bits, then gives
/// it its mode back, as its user would.
fn inside(dir: &Path, change: impl FnOnce(&Path)) {
    let was = mode(dir);
    set_mode(dir, was | 0o700);
    change(dir);
    chown_all(dir);
    set_mode(dir, was);
}

/// Every path beneath `dir` with its mode and content (what changed on disk).
fn snapshot(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let shown = path.strip_prefix(dir).unwrap().display().to_string();
            let content = match path.is_dir() {
                true => {
                    stack.push(path.clone());
                    Vec::new()
                }
                false => fs::read(&path).unwrap(),
            };
            all.push((shown, mode(&path), content));
        }
    }
    all.sort();
    all
}

/// One send of `tree` to a receiver run as `nobody` into `dst`: the sender's
/// output and the receiver's exit code; `None` where that cannot run.
fn mirror(site: &Path, extra: &[&str]) -> Option<(Output, i32)> {
    let mut receiver = nobody_receiving(&site.join("dst"))?;
    let sent = send(&[&site.join("tree")], receiver.port, KEY, extra);
    Some((sent, receiver.exit_code()))
}

/// The first copy of `tree` into `dst` (it must succeed), or `None` where a
/// receiver cannot run as `nobody` (said).
fn first_copy(site: &Path) -> Option<()> {
    let (first, code) = mirror(site, &[])?;
    assert_eq!(
        (code, first.status.code()),
        (0, Some(0)),
        "{}",
        stderr_of(&first)
    );
    Some(())
}

/// A dry run with `extra`, which must change nothing, then the real run; both
/// must succeed on both sides. Their outputs, dry first.
fn dry_then_real(site: &Path, extra: &[&str]) -> (Output, Output) {
    let dst = site.join("dst");
    let before = snapshot(&dst);
    let dry_args: Vec<&str> = ["-n"].iter().chain(extra).copied().collect();
    let mut outputs = Vec::new();
    for args in [&dry_args[..], extra] {
        let (sent, code) = mirror(site, args).unwrap();
        assert_eq!(
            (code, sent.status.code()),
            (0, Some(0)),
            "{}",
            stderr_of(&sent)
        );
        if outputs.is_empty() {
            assert_eq!(snapshot(&dst), before, "the dry run wrote");
        }
        outputs.push(sent);
    }
    let real = outputs.pop().unwrap();
    (outputs.pop().unwrap(), real)
}

fn lines_starting(output: &Output, kinds: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| kinds.iter().any(|kind| line.starts_with(kind)))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn new_files_arrive_in_read_only_directories_of_the_receivers_own_which_keep_their_modes() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let locked = site.path().join("dst/tree/locked");
    assert_eq!((mode(&locked), mode(&locked.join("sub"))), (0o555, 0o555));
    let source = site.path().join("tree/locked");
    inside(&source, |dir| fs::write(dir.join("b"), b"b\n").unwrap());
    inside(&source.join("sub"), |dir| {
        fs::write(dir.join("t"), b"t\n").unwrap()
    });
    let (dry, real) = dry_then_real(site.path(), &["-i"]);
    let new = ["new      tree/locked/b", "new      tree/locked/sub/t"];
    assert_eq!(lines_starting(&dry, &["new"]), new);
    assert_eq!(lines_starting(&real, &["new"]), new);
    assert_eq!(fs::read(locked.join("b")).unwrap(), b"b\n");
    assert_eq!(fs::read(locked.join("sub/t")).unwrap(), b"t\n");
    assert_eq!((mode(&locked), mode(&locked.join("sub"))), (0o555, 0o555));
}

#[test]
fn delete_removes_from_read_only_directories_of_its_own_as_its_dry_run_says() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let source = site.path().join("tree/locked");
    inside(&source, |dir| fs::remove_file(dir.join("a")).unwrap());
    // On the receiver, a read-only directory the source never had, holding more.
    let dst = site.path().join("dst/tree/locked");
    inside(&dst, |dir| {
        fs::create_dir_all(dir.join("old/deeper")).unwrap();
        fs::write(dir.join("old/deeper/x"), b"x\n").unwrap();
        set_mode(&dir.join("old/deeper"), 0o500);
        set_mode(&dir.join("old"), 0o555);
    });
    chown_all(&site.path().join("dst"));
    // Older than the session (a mirror spares what changed since it began).
    std::thread::sleep(Duration::from_millis(100));
    let kinds = ["deleted", "kept"];
    let (dry, real) = dry_then_real(site.path(), &["-i", "--delete"]);
    let deleted = [
        "deleted  tree/locked/a",
        "deleted  tree/locked/old/",
        "deleted  tree/locked/old/deeper/",
        "deleted  tree/locked/old/deeper/x",
    ];
    assert_eq!(lines_starting(&real, &kinds), deleted);
    assert_eq!(lines_starting(&dry, &kinds), deleted);
    assert!(!dst.join("a").exists() && !dst.join("old").exists());
    assert_eq!((mode(&dst), mode(&dst.join("sub"))), (0o555, 0o555));
}

#[test]
fn a_session_cut_in_a_read_only_directory_gives_it_its_mode_back() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let source = site.path().join("tree/locked");
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    inside(&source, |dir| fs::write(dir.join("big"), &big).unwrap());
    let mut receiver = nobody_receiving(&site.path().join("dst")).unwrap();
    let mut sender = xfer()
        .arg("send")
        .arg(site.path().join("tree"))
        .arg(format!("127.0.0.1:{}", receiver.port))
        .args(["--limit-rate", "512K", "-q"])
        .env("XFER_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Cut once its data is under way: the directory holds its partial by then.
    let dst = site.path().join("dst/tree/locked");
    wait_for_partial(&dst);
    assert!(has_partial(&dst), "no partial: {}", receiver.stderr());
    assert_eq!(
        mode(&dst) & 0o700,
        0o700,
        "given its owner's bits meanwhile"
    );
    sender.kill().unwrap();
    wait_for(&mut sender, TIMEOUT);
    assert_ne!(receiver.exit_code(), 0);
    assert_eq!(mode(&dst), 0o555, "{}", receiver.stderr());
    // The next run resumes the partial there and leaves the mode as offered.
    let (resumed, code) = mirror(site.path(), &[]).unwrap();
    assert_eq!(code, 0, "{}", stderr_of(&resumed));
    assert_eq!(fs::read(dst.join("big")).unwrap(), big);
    assert!(!has_partial(&dst));
    assert_eq!(mode(&dst), 0o555);
}

/// Waits (bounded) until `dir` holds a partial file.
fn wait_for_partial(dir: &Path) {
    let started = Instant::now();
    while !has_partial(dir) && started.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for each of `senders` and asserts it succeeded (saying what it and the
/// `receiver` said where not).
fn both_succeed(senders: [&mut std::process::Child; 2], receiver: &crate::util::Receiver) {
    for sender in senders {
        let status = wait_for(sender, TIMEOUT);
        let mut said = String::new();
        std::io::Read::read_to_string(sender.stderr.as_mut().unwrap(), &mut said).unwrap();
        assert!(status.success(), "{said}\n{}", receiver.stderr());
    }
}

fn has_partial(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().any(|entry| {
        let name = entry.unwrap().file_name();
        name.to_string_lossy().starts_with(".xfer-")
    })
}

/// What the user named as the target, read-only, stays so: the receiver says
/// at once that it cannot write there (as rsync fails), and loosens nothing.
#[test]
fn a_read_only_target_directory_is_not_loosened() {
    let site = site();
    let dst = site.path().join("dst");
    set_mode(&dst, 0o555);
    let mut command = xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0", "--overwrite", "--dir"])
        .arg(&dst)
        .env("XFER_KEY", KEY);
    let Some(mut command) = crate::util::as_nobody(command) else {
        return;
    };
    let refused = crate::util::run(&mut command);
    assert_ne!(refused.status.code(), Some(0));
    let said = "Permission denied (os error 13) (the receiver needs to create files there)";
    assert!(
        stderr_of(&refused).contains(said),
        "{}",
        stderr_of(&refused)
    );
    assert_eq!(mode(&dst), 0o555);
}

/// A read-only directory of another user's in the receiver's tree stays as it
/// is: the receiver could not give it its mode back.
#[test]
fn a_read_only_directory_of_another_user_is_not_loosened() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let dst = site.path().join("dst/tree/locked");
    std::os::unix::fs::lchown(&dst, Some(0), Some(0)).unwrap();
    let source = site.path().join("tree/locked");
    inside(&source, |dir| fs::write(dir.join("b"), b"b\n").unwrap());
    let (real, code) = mirror(site.path(), &[]).unwrap();
    assert_ne!(code, 0);
    let said = "tree/locked/b: cannot create a temporary file: Permission denied";
    assert!(stderr_of(&real).contains(said), "{}", stderr_of(&real));
    assert_eq!(mode(&dst), 0o555);
    assert!(!dst.join("b").exists());
}

/// `recv --listen 127.0.0.1:0 EXTRA --dir dst` as `nobody` (where a test that
/// needs it got this far, that works).
fn nobody_listening(site: &Path, extra: &[&str]) -> crate::util::Receiver {
    let mut command = xfer();
    command
        .args(["recv", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--dir")
        .arg(site.join("dst"))
        .env("XFER_KEY", KEY);
    crate::util::Receiver::spawn(crate::util::as_nobody(command).unwrap())
}

/// `xfer send` of `what` to 127.0.0.1:`port`, paced so that it takes a while.
fn slow_send(what: &[&Path], port: u16, extra: &[&str]) -> std::process::Child {
    xfer()
        .arg("send")
        .args(what)
        .arg(format!("127.0.0.1:{port}"))
        .args(["--limit-rate", "1M", "-q"])
        .args(extra)
        .env("XFER_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two sessions of one serving receiver write into the same read-only directory
/// at once: the first to end must not give it its mode back while the other
/// still writes there (the other failed `cannot rename into place`).
#[test]
fn two_sessions_in_one_read_only_directory_both_arrive_and_the_last_gives_its_mode_back() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let source = site.path().join("tree/locked");
    let small: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 241) as u8).collect();
    let large: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 239) as u8).collect();
    inside(&source, |dir| fs::write(dir.join("large"), &large).unwrap());
    fs::write(site.path().join("small"), &small).unwrap();
    let receiver = nobody_listening(site.path(), &["--serve", "--overwrite"]);
    // The first names no directory (only the file, into `locked`); the second
    // offers `locked` with its mode.
    let name = ["--name", "tree/locked/small"];
    let mut first = slow_send(&[&site.path().join("small")], receiver.port, &name);
    std::thread::sleep(Duration::from_millis(500));
    let mut second = slow_send(&[&site.path().join("tree")], receiver.port, &[]);
    both_succeed([&mut first, &mut second], &receiver);
    let dst = site.path().join("dst/tree/locked");
    assert_eq!(fs::read(dst.join("small")).unwrap(), small);
    assert_eq!(fs::read(dst.join("large")).unwrap(), large);
    assert_eq!(mode(&dst), 0o555, "{}", receiver.stderr());
    assert!(!has_partial(&dst));
}

/// A receiver interrupted (SIGINT) in the middle of a file in a read-only
/// directory gives it its mode back before it exits 130.
#[test]
fn an_interrupted_receiver_gives_read_only_directories_their_modes_back() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let source = site.path().join("tree/locked");
    let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    inside(&source, |dir| fs::write(dir.join("big"), &big).unwrap());
    let mut sender = xfer()
        .args(["send", "--listen", "127.0.0.1:0", "--limit-rate", "512K"])
        .arg(site.path().join("tree"))
        .env("XFER_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its first line says where it listens.
    let mut first = String::new();
    let mut said = std::io::BufReader::new(sender.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut said, &mut first).unwrap();
    let port = first.trim().rsplit(':').next().unwrap().to_string();
    let mut command = xfer();
    command
        .args(["recv", &format!("127.0.0.1:{port}"), "--overwrite", "--dir"])
        .arg(site.path().join("dst"))
        .env("XFER_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut receiver = crate::util::as_nobody(command).unwrap().spawn().unwrap();
    let dst = site.path().join("dst/tree/locked");
    wait_for_partial(&dst);
    assert_eq!(
        mode(&dst) & 0o700,
        0o700,
        "given its owner's bits meanwhile"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(receiver.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    assert_eq!(wait_for(&mut receiver, TIMEOUT).code(), Some(130));
    assert_eq!(mode(&dst), 0o555);
    let _ = sender.kill();
    wait_for(&mut sender, TIMEOUT);
}

/// A listening receiver signalled twice in a row (an impatient Ctrl-C, Ctrl-C)
/// exits at once, but gives the read-only directory it writes in its mode back
/// first, as the graceful stop the first signal asked for would have.
#[test]
fn a_receiver_signalled_twice_still_gives_read_only_directories_their_modes_back() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let source = site.path().join("tree/locked");
    let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    inside(&source, |dir| fs::write(dir.join("big"), &big).unwrap());
    let mut receiver = nobody_listening(site.path(), &["--overwrite"]);
    let mut sender = slow_send(&[&site.path().join("tree")], receiver.port, &[]);
    let dst = site.path().join("dst/tree/locked");
    wait_for_partial(&dst);
    assert_eq!(
        mode(&dst) & 0o700,
        0o700,
        "given its owner's bits meanwhile"
    );
    let pid = rustix::process::Pid::from_raw(receiver.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    // The second once the first was heard (two at once are one signal).
    receiver.wait_for_stderr("interrupt again to exit at once");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = wait_for(&mut receiver.child, TIMEOUT);
    assert_eq!(status.code(), Some(130), "{}", receiver.stderr());
    assert_eq!(mode(&dst), 0o555, "{}", receiver.stderr());
    let _ = sender.kill();
    wait_for(&mut sender, TIMEOUT);
}

/// A read-only setgid directory whose group its owner is not in: a change of mode
/// would lose the setgid bit for good, so it is not loosened, and what would go
/// in it fails as before.
#[test]
fn a_setgid_directory_of_a_group_its_owner_is_not_in_is_not_loosened() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let dst = site.path().join("dst/tree/locked");
    std::os::unix::fs::lchown(&dst, Some(NOBODY), Some(0)).unwrap();
    set_mode(&dst, 0o2555);
    // Only the file, into `locked`: the offer says nothing of the directory's mode.
    let file = site.path().join("b");
    fs::write(&file, b"b\n").unwrap();
    let mut receiver = nobody_receiving(&site.path().join("dst")).unwrap();
    let sent = send(&[&file], receiver.port, KEY, &["--name", "tree/locked/b"]);
    assert_ne!(receiver.exit_code(), 0);
    let said = "tree/locked/b: cannot create a temporary file: Permission denied";
    assert!(stderr_of(&sent).contains(said), "{}", stderr_of(&sent));
    assert_eq!(mode(&dst), 0o2555);
}

/// The sweep of partial files no sender came back for reaches into read-only
/// directories of the receiver's own too, and leaves their modes as they were.
#[test]
fn a_stale_partial_in_a_read_only_directory_is_swept() {
    let site = site();
    if first_copy(site.path()).is_none() {
        return;
    }
    let dst = site.path().join("dst/tree/locked");
    let partial = dst.join(crate::util::partial_name("gone", 5 << 20));
    inside(&dst, |_| {
        fs::write(&partial, b"left behind").unwrap();
        crate::util::make_older(&partial);
    });
    let receiver = nobody_listening(site.path(), &["--keep-partial", "0"]);
    let said = receiver.wait_for_stderr("removed 1 partial file");
    assert!(said.contains("removed 1 partial file"), "{said}");
    assert!(!partial.exists());
    assert_eq!(mode(&dst), 0o555);
}

/// The same, where the read-only directory is new: the session that made it and
/// another one writing into it too, each offering its read-only mode. The first
/// to end must not apply that mode while the other still writes there.
#[test]
fn two_sessions_making_the_same_read_only_directory_both_arrive() {
    let site = site();
    let source = site.path().join("tree/locked");
    let large: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 239) as u8).collect();
    inside(&source, |dir| fs::write(dir.join("large"), &large).unwrap());
    // A second source tree with the same names, `tree/locked/` read-only too.
    let other = site.path().join("other/tree/locked");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("o"), b"o\n").unwrap();
    chown_all(&site.path().join("other"));
    set_mode(&other, 0o555);
    if crate::util::as_nobody(xfer()).is_none() {
        eprintln!("SKIPPED: needs root and setpriv to run the receiver unprivileged");
        return;
    }
    let receiver = nobody_listening(site.path(), &["--serve", "--overwrite"]);
    let mut first = slow_send(&[&site.path().join("tree")], receiver.port, &[]);
    std::thread::sleep(Duration::from_millis(700));
    let mut second = slow_send(&[&site.path().join("other/tree")], receiver.port, &[]);
    both_succeed([&mut second, &mut first], &receiver);
    let dst = site.path().join("dst/tree/locked");
    assert_eq!(fs::read(dst.join("large")).unwrap(), large);
    assert_eq!(fs::read(dst.join("o")).unwrap(), b"o\n");
    assert_eq!(mode(&dst), 0o555, "{}", receiver.stderr());
    assert!(!has_partial(&dst));
}
