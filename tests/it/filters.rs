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

/// Each form of pattern the filter cannot compile, or that can never match, is a
/// usage error naming the pattern and why, before connecting (port 9 has no
/// listener), on `send` and on `get`.
#[test]
fn every_bad_pattern_form_is_a_usage_error_on_send_and_get() {
    let root = tempfile::tempdir().unwrap();
    tree(root.path(), &["t/a"]);
    let rules = root.path().join("rules");
    fs::write(&rules, "# a comment\n\n*.o\n[abc\n").unwrap();
    let from = format!("{}: line 4 \"[abc\"", rules.display());
    let cases: [(&[&str], &str); 7] = [
        (
            &["--exclude", "[abc"],
            "--exclude \"[abc\": unclosed character class",
        ),
        (
            &["--exclude", "[z-a]"],
            "--exclude \"[z-a]\": invalid range",
        ),
        (&["--exclude", "x\\"], "--exclude \"x\\\": dangling '\\'"),
        (
            &["--exclude", ""],
            "--exclude \"\": an empty pattern matches nothing",
        ),
        (&["--exclude", "#x"], "is a comment in gitignore syntax"),
        (&["--include", "/"], "--include \"/\": it names nothing"),
        (&["--exclude-from", rules.to_str().unwrap()], &from),
    ];
    let dl = root.path().join("dl");
    for (flags, said) in cases {
        let sent = send(&[&root.path().join("t")], 9, KEY, flags);
        assert_eq!(code(&sent), 2, "{flags:?}: {}", stderr_of(&sent));
        assert!(
            stderr_of(&sent).contains(said),
            "{flags:?}: {}",
            stderr_of(&sent)
        );
        let mut get = crate::util::xfer();
        get.args(["get", "127.0.0.1:9:t"])
            .arg(&dl)
            .args(flags)
            .env("XFER_KEY", KEY);
        let got = crate::util::run(&mut get);
        assert_eq!(code(&got), 2, "get {flags:?}: {}", stderr_of(&got));
        assert!(
            stderr_of(&got).contains(said),
            "get {flags:?}: {}",
            stderr_of(&got)
        );
        assert!(!dl.exists(), "nothing made for {flags:?}");
    }
}

/// A `.gitignore` with a bad line keeps git's leniency: the line is skipped, the
/// rest still applies, and one notice names the file, the line and why.
#[test]
fn a_bad_line_of_a_gitignore_is_skipped_with_one_notice_and_the_rest_applies() {
    let root = tempfile::tempdir().unwrap();
    tree(root.path(), &["t/a.o", "t/b.c", "t/c.log"]);
    fs::write(root.path().join("t/.gitignore"), "*.o\n[z-a]\n*.log\nx\\\n").unwrap();
    let dst = root.path().join("dst");
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let sent = send(
        &[&root.path().join("t")],
        receiver.port,
        KEY,
        &["--gitignore"],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(names(&dst), ["t/.gitignore", "t/b.c"]);
    let stderr = stderr_of(&sent);
    let notices: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(notices.len(), 1, "{stderr}");
    for part in [
        "t/.gitignore: ignored, as git ignores them",
        "line 2 \"[z-a]\" (invalid range; 'z' > 'a')",
        "line 4 \"x\\\\\" (dangling '\\')",
    ] {
        assert!(notices[0].contains(part), "{part:?} in {stderr}");
    }
}

/// `--include` of a file beneath a directory an `--exclude` leaves out can never
/// apply (the directory is not entered): the run goes on, with a warning saying
/// what to write instead.
#[test]
fn an_include_beneath_an_excluded_directory_gets_a_warning() {
    let root = tempfile::tempdir().unwrap();
    tree(root.path(), &["t/a", "t/logs/app.log", "t/logs/keep.log"]);
    let dst = root.path().join("dst");
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let flags = ["--exclude", "logs/", "--include", "logs/keep.log"];
    let sent = send(&[&root.path().join("t")], receiver.port, KEY, &flags);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(names(&dst), ["t/a"]);
    assert!(
        stderr_of(&sent).contains(
            "warning: --include \"logs/keep.log\" cannot apply: the directory logs/ is excluded"
        ),
        "{}",
        stderr_of(&sent)
    );
    // `-q` silences it, as every warning.
    let dst = root.path().join("quiet");
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let quiet = ["-q", "--exclude", "logs/", "--include", "logs/keep.log"];
    let sent = send(&[&root.path().join("t")], receiver.port, KEY, &quiet);
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert!(
        !stderr_of(&sent).contains("warning"),
        "{}",
        stderr_of(&sent)
    );
    // Written as the warning says, it applies.
    let flags = ["--exclude", "logs/*", "--include", "logs/keep.log"];
    assert_eq!(sent_with(root.path(), &flags), ["t/a", "t/logs/keep.log"]);
}

/// A name that is not UTF-8 is matched as its bytes, as git and rsync match it: `?`
/// is one byte (`caf?` leaves out `caf\xe9`), and the name is never read as the
/// three bytes of U+FFFD (`caf???` must not match it).
#[test]
fn a_name_that_is_not_utf8_is_matched_as_its_bytes() {
    let root = tempfile::tempdir().unwrap();
    let t = root.path().join("t");
    tree(root.path(), &["t/cafe", "t/other"]);
    for name in [&b"caf\xe9"[..], b"caf\xe9\xe9"] {
        fs::write(crate::util::tree::raw(&t, name), b"x").unwrap();
    }
    let one = "caf\u{fffd}";
    let two = "caf\u{fffd}\u{fffd}";
    assert_eq!(
        sent_with(root.path(), &["--exclude", "caf?"]),
        [format!("t/{two}"), "t/other".into()]
    );
    assert_eq!(
        sent_with(root.path(), &["--exclude", "caf???"]),
        [
            "t/cafe".to_string(),
            format!("t/{one}"),
            format!("t/{two}"),
            "t/other".into()
        ]
    );
    fs::write(t.join(".gitignore"), "caf??\n").unwrap();
    assert_eq!(
        sent_with(root.path(), &["--gitignore"]),
        [
            "t/.gitignore".to_string(),
            "t/cafe".into(),
            format!("t/{one}"),
            "t/other".into()
        ]
    );
}

/// An rsync habit, `--exclude /t/cache/` while sending `t`: rules match below the
/// directory sent, so it names `t/t/cache/` and protects nothing from `--delete`.
/// A warning says so, and what to write; the run goes on as told.
#[test]
fn a_rule_naming_the_directory_sent_gets_a_warning_saying_what_to_write() {
    let root = tempfile::tempdir().unwrap();
    tree(root.path(), &["t/a", "t/cache/p"]);
    let dst = root.path().join("dst");
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let sent = send(
        &[&root.path().join("t")],
        receiver.port,
        KEY,
        &["--exclude", "/t/cache/"],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(names(&dst), ["t/a", "t/cache/p"]);
    let said = stderr_of(&sent);
    assert!(
        said.contains("warning: the rule \"/t/cache/\" is matched below each directory sent")
            && said.contains("for t/cache/ write \"/cache/\""),
        "{said}"
    );
    // Written as it says, it leaves the directory out.
    let dst = root.path().join("dst2");
    let mut receiver = Receiver::start(&dst, Some(KEY), &[]);
    let sent = send(
        &[&root.path().join("t")],
        receiver.port,
        KEY,
        &["--exclude", "/cache/"],
    );
    assert_eq!(code(&sent), 0, "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
    assert_eq!(names(&dst), ["t/a"]);
    assert!(
        !stderr_of(&sent).contains("warning"),
        "{}",
        stderr_of(&sent)
    );
}
