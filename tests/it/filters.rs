//! Filters (issue 21): `--exclude` (repeatable), `--include` (re-includes),
//! `--exclude-from FILE` and `--gitignore`, with gitignore semantics (`**`,
//! negation, directory-only patterns, anchoring), checked on what arrives; what is
//! left out is not a failure. An invalid pattern is a usage error.

use std::fs;
use std::path::Path;

use crate::util::server::code;
use crate::util::{KEY, Receiver, files_under, send, stderr_of};

fn names(dir: &Path) -> Vec<String> {
    files_under(dir)
        .iter()
        .map(|path| path.to_string_lossy().into_owned())
        .collect()
}

fn tree(root: &Path, files: &[&str]) {
    for file in files {
        let path = root.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, file.as_bytes()).unwrap();
    }
}

fn sent_with(root: &Path, extra: &[&str]) -> Vec<String> {
    let dst = root.join("dst");
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let sent = send(&[&root.join("t")], receiver.port, KEY, extra);
    assert_eq!(code(&sent), 0, "{extra:?}: {}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    let got = names(&dst);
    fs::remove_dir_all(&dst).unwrap();
    got
}

#[test]
fn double_star_negation_directory_and_anchored_patterns() {
    let root = tempfile::tempdir().unwrap();
    tree(
        root.path(),
        &[
            "t/a.log",
            "t/keep.log",
            "t/src/main.rs",
            "t/src/cache/x",
            "t/deep/er/cache/y",
            "t/build/out",
            "t/docs/build",
            "t/top.txt",
            "t/docs/top.txt",
        ],
    );
    fs::write(root.path().join("rules"), "# comment\n/top.txt\n").unwrap();
    let rules = root.path().join("rules");
    let got = sent_with(
        root.path(),
        &[
            "--exclude",
            "*.log",
            "--include",
            "keep.log",
            "--exclude",
            "**/cache/**",
            "--exclude",
            "build/",
            "--exclude-from",
            rules.to_str().unwrap(),
        ],
    );
    assert_eq!(
        got,
        [
            "t/deep/er/cache", // `**/cache/**` leaves out what is inside, not the directory
            "t/docs/build",    // `build/` is for directories: a file of that name goes
            "t/docs/top.txt",  // `/top.txt` is anchored to the tree's top
            "t/keep.log",
            "t/src/cache",
            "t/src/main.rs",
        ]
        .into_iter()
        .filter(|name| !name.ends_with("cache"))
        .collect::<Vec<_>>()
    );
}

#[test]
fn gitignore_files_in_the_tree_are_honoured() {
    let root = tempfile::tempdir().unwrap();
    tree(
        root.path(),
        &[
            "t/a.o",
            "t/b.c",
            "t/target/debug/x",
            "t/sub/a.o",
            "t/sub/keep.o",
            "t/sub/notes.md",
        ],
    );
    fs::write(root.path().join("t/.gitignore"), "*.o\ntarget/\n").unwrap();
    fs::write(root.path().join("t/sub/.gitignore"), "!keep.o\n").unwrap();
    fs::write(root.path().join("t/sub/.ignore"), "*.md\n").unwrap();
    let got = sent_with(root.path(), &["--gitignore"]);
    assert_eq!(
        got,
        [
            "t/.gitignore",
            "t/b.c",
            "t/sub/.gitignore",
            "t/sub/.ignore",
            "t/sub/keep.o"
        ]
    );
    // Without --gitignore everything goes.
    assert_eq!(sent_with(root.path(), &[]).len(), 9);
}

#[test]
fn an_invalid_pattern_is_a_usage_error() {
    let root = tempfile::tempdir().unwrap();
    tree(root.path(), &["t/a"]);
    let sent = send(&[&root.path().join("t")], 9, KEY, &["--exclude", "[z-a]"]);
    assert_eq!(code(&sent), 2, "{}", stderr_of(&sent));
    assert!(stderr_of(&sent).contains("[z-a]"), "{}", stderr_of(&sent));
}

#[test]
fn an_exclude_from_file_that_cannot_be_read_is_a_usage_error() {
    let root = tempfile::tempdir().unwrap();
    tree(root.path(), &["t/a"]);
    let missing = root.path().join("no-such-rules");
    let sent = send(
        &[&root.path().join("t")],
        9,
        KEY,
        &["--exclude-from", missing.to_str().unwrap()],
    );
    assert_eq!(code(&sent), 2, "{}", stderr_of(&sent));
    assert!(
        stderr_of(&sent).contains("no-such-rules"),
        "{}",
        stderr_of(&sent)
    );
}
