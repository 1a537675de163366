//! Trees of many small files: each arrives whole with its mode and time, nothing
//! hidden is left beside it (a small file is held unnamed until it is verified and
//! on disk, and never kept as partial data), an existing file is refused or
//! replaced exactly as a large one is, and a cut tree reruns to done.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::util::relay::{Faults, Relay};
use crate::util::*;

/// Sizes around the line between small files and resumable ones (64 KiB).
const SIZES: [usize; 7] = [0, 1, 4096, 65_535, 65_536, 65_537, 200_000];

/// A tree of `dirs` directories of `SIZES` files each, every file with its own
/// mode and time; returns the tree's root.
fn make_tree(parent: &Path, dirs: usize) -> std::path::PathBuf {
    let root = parent.join("tree");
    for d in 0..dirs {
        let dir = root.join(format!("d{d}")).join("deeper");
        fs::create_dir_all(&dir).unwrap();
        for (i, &len) in SIZES.iter().enumerate() {
            let file = write_in(&dir, &format!("f{i}"), &pattern(len, (d * 10 + i) as u64));
            let mode = [0o644, 0o600, 0o755, 0o444][i % 4];
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
            let time = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + i as u64);
            fs::File::options()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_modified(time))
                .or_else(|_| {
                    // A read-only file: make it writable for a moment to set its time.
                    fs::set_permissions(&file, fs::Permissions::from_mode(0o644))?;
                    let f = fs::File::options().write(true).open(&file)?;
                    f.set_modified(time)?;
                    fs::set_permissions(&file, fs::Permissions::from_mode(mode))
                })
                .unwrap();
        }
    }
    root
}

/// Every file of `src` is in `out` with the same bytes, mode and time, and `out`
/// holds nothing else (no temporary, no partial).
fn assert_same_tree(src: &Path, out: &Path) {
    assert_eq!(
        files_under(src),
        files_under(out),
        "the same names, nothing more"
    );
    for name in files_under(src) {
        let (a, b) = (src.join(&name), out.join(&name));
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{name:?}");
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert_eq!(ma.mode() & 0o777, mb.mode() & 0o777, "{name:?}");
        assert_eq!(ma.mtime(), mb.mtime(), "{name:?}");
    }
}

#[test]
fn a_tree_of_small_files_arrives_whole_with_modes_and_times_and_nothing_hidden() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = make_tree(src.path(), 20);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_same_tree(&tree, &out.path().join("tree"));
}

#[test]
fn a_small_file_in_the_way_is_refused_untouched_and_replaced_with_overwrite() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = make_tree(src.path(), 1);
    let theirs = out.path().join("tree/d0/deeper/f2");
    fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    fs::write(&theirs, b"theirs").unwrap();

    let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    let log = stderr_of(&sent);
    assert!(!sent.status.success(), "{log}");
    assert!(log.contains("already exists"), "{log}");
    let _ = receiver.exit_code();
    assert_eq!(fs::read(&theirs).unwrap(), b"theirs", "left untouched");
    assert_eq!(
        files_under(out.path()).len(),
        SIZES.len(),
        "the others arrived, and nothing hidden stayed"
    );

    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--overwrite"]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_same_tree(&tree, &out.path().join("tree"));
}

#[test]
fn a_cut_tree_keeps_only_partials_of_large_files_and_reruns_to_done() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tree = make_tree(src.path(), 8);
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--serve"]);
    let relay = Relay::start(receiver.port, Faults::cut_after(900_000));
    let cut = send(&[&tree], relay.port, KEY, &[]);
    assert_eq!(cut.status.code(), Some(3), "{}", stderr_of(&cut));
    receiver.wait_for_stderr("failed");
    for name in files_under(out.path()) {
        let name = name.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".xfer-") || name.ends_with(".partial"),
            "only partials stay hidden: {name}"
        );
        if name.ends_with(".partial") {
            assert_eq!(name, partial_name("f6", 200_000), "only of a large file");
        }
    }
    let rerun = send(&[&tree], receiver.port, KEY, &[]);
    assert!(rerun.status.success(), "{}", stderr_of(&rerun));
    assert_same_tree(&tree, &out.path().join("tree"));
    let _ = receiver.child.kill();
}
