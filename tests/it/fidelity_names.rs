//! Names as the filesystem holds them (issue 20, `PROTOCOL.md` section 16.3): bytes
//! that are not UTF-8, backslash, newline, tab, U+200B and U+202E arrive point to
//! point; `recv --safe-names` and `xfer serve` refuse them (`bad_path`, said on both
//! sides); a peer without `meta` gets the UTF-8 ones and the sender counts the rest.

use std::path::Path;

use crate::util::server::{Site, expect_exit, send_as};
use crate::util::tree::{Check, assert_faithful, raw};
use crate::util::{
    KEY, Receiver, events_in, old_receiver_taking_all, send, stderr_of, stdout_events,
};

/// The odd names, as raw bytes, each a file holding its own name.
const ODD: &[&[u8]] = &[
    b"caf\xe9 latin-1",
    b"back\\slash",
    b"new\nline",
    b"tab\there",
    "zero\u{200B}width".as_bytes(),
    "evil\u{202E}gpj.exe".as_bytes(),
];

/// A tree `names/` holding a plain file, the odd names, and one odd directory.
fn odd_tree(root: &Path) -> std::path::PathBuf {
    let tree = root.join("names");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("plain.txt"), b"plain").unwrap();
    for name in ODD {
        std::fs::write(raw(&tree, name), name).unwrap();
    }
    let dir = raw(&tree, b"dir\xff");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("inside"), b"inside").unwrap();
    tree
}

/// Names and content only: the other properties have tests of their own.
fn names_and_bytes() -> Check {
    Check {
        mode_mask: 0,
        mtimes: false,
        dir_mtimes: false,
        owners: false,
        hard_links: false,
        xattrs: false,
        blocks_slack: None,
    }
}

#[test]
fn odd_names_arrive_point_to_point_and_a_rerun_sends_nothing() {
    let src = tempfile::tempdir().unwrap();
    let tree = odd_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    for round in ["first", "rerun"] {
        let mut receiver = Receiver::start(out.path(), Some(KEY), &[]);
        let sent = send(&[&tree], receiver.port, KEY, &["--json"]);
        assert!(sent.status.success(), "{round}: {}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{round}: {}", receiver.stderr());
        let summary = crate::util::summary_event(&sent);
        let moved = if round == "first" { 8 } else { 0 };
        assert_eq!(summary["files"], moved, "{round}: {summary}");
        // Shown escaped, never raw: no newline or U+202E inside a line.
        let said = receiver.stderr();
        assert!(!said.contains('\u{202E}'), "{said}");
        assert!(said.contains("new\\u{a}line") || round == "rerun", "{said}");
    }
    assert_faithful(&tree, &out.path().join("names"), &names_and_bytes());
}

/// The odd tree sent to a receiver with `--safe-names`: both exit 6 (refused); the
/// sender's output, the receiver (exited) and its directory.
fn sent_to_safe_names() -> (std::process::Output, Receiver, tempfile::TempDir) {
    let src = tempfile::tempdir().unwrap();
    let tree = odd_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--safe-names"]);
    let sent = send(&[&tree], receiver.port, KEY, &[]);
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 6, "{}", receiver.stderr());
    (sent, receiver, out)
}

#[test]
fn safe_names_refuses_them_and_both_sides_say_bad_path() {
    let (sent, receiver, out) = sent_to_safe_names();
    for said in [stderr_of(&sent), receiver.stderr()] {
        assert!(
            said.contains("bad_path") || said.contains("backslash"),
            "{said}"
        );
        assert!(said.contains("not UTF-8"), "{said}");
        assert!(said.contains("U+202E"), "{said}");
    }
    let landed: Vec<_> = std::fs::read_dir(out.path().join("names"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(landed, ["plain.txt"], "only the plain name arrived");
}

#[test]
fn a_server_always_refuses_them() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let tree = odd_tree(site.path());
    let put = send_as(&site, "alice", &[&tree], &server.addr());
    expect_exit(&put, 6, "odd names into a home");
    let said = stderr_of(&put);
    assert!(said.contains("not UTF-8"), "{said}");
    // It points at no switch the server's user could turn.
    assert!(said.contains("(a server always does;"), "{said}");
    assert!(said.contains("control character U+000A"), "{said}");
    let home = site.home("alice").join("names");
    let landed: Vec<_> = std::fs::read_dir(home)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(landed, ["plain.txt"], "only the plain name arrived");
}

/// `--json` events name a path that is not UTF-8 by its bytes too (`path_hex`, as
/// the protocol does): `path` alone, with U+FFFD where the bytes were, cannot find
/// the file. On both sides, in a first run (new), a rerun (same), a dry run, and for
/// what `--delete` keeps because its name is not UTF-8; never on a UTF-8 name.
#[test]
fn json_events_give_the_bytes_of_a_name_that_is_not_utf8() {
    let src = tempfile::tempdir().unwrap();
    let tree = odd_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let run = |sender: &[&str], receiver: &[&str]| {
        let mut receiving = vec!["--json", "-i"];
        receiving.extend_from_slice(receiver);
        let mut receiver = Receiver::start(out.path(), Some(KEY), &receiving);
        let mut sending = vec!["--json", "-i"];
        sending.extend_from_slice(sender);
        let sent = send(&[&tree], receiver.port, KEY, &sending);
        assert!(sent.status.success(), "{}", stderr_of(&sent));
        assert_eq!(receiver.exit_code(), 0, "{}", receiver.stderr());
        let mut received = String::new();
        let stdout = receiver.child.stdout.as_mut().unwrap();
        std::io::Read::read_to_string(stdout, &mut received).unwrap();
        [stdout_events(&sent), events_in(&received)]
    };
    let latin = named_events(&run(&[], &[]), "first run");
    assert_eq!(latin["change"], ["new", "new", "new dir"], "first run");
    assert_eq!(latin["file"], ["ok", "ok"], "first run");
    let again = named_events(&run(&[], &[]), "rerun");
    assert_eq!(again["file"], ["same", "same"], "rerun");
    std::fs::write(raw(&tree, b"caf\xe9 latin-1"), b"changed, and longer").unwrap();
    let dry = named_events(&run(&["-n"], &["--overwrite"]), "dry run");
    assert_eq!(dry["change"], ["changed", "same"], "dry run");
    std::fs::write(raw(&out.path().join("names"), b"extra\xfe"), b"x").unwrap();
    let mirrored = named_events(&run(&["--delete"], &["--overwrite"]), "--delete");
    assert!(
        mirrored["change"].contains(&"kept".to_string()),
        "{mirrored:?}"
    );
}

/// What a receiver refuses (`--safe-names`) is a `failed` file event on both sides:
/// one of a name that is not UTF-8 names its bytes.
#[test]
fn a_refused_name_that_is_not_utf8_is_named_by_its_bytes_in_failed_events() {
    let src = tempfile::tempdir().unwrap();
    let tree = odd_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(out.path(), Some(KEY), &["--safe-names", "--json"]);
    let sent = send(&[&tree], receiver.port, KEY, &["--json"]);
    assert_eq!(sent.status.code(), Some(6), "{}", stderr_of(&sent));
    assert_eq!(receiver.exit_code(), 6, "{}", receiver.stderr());
    let mut received = String::new();
    let stdout = receiver.child.stdout.as_mut().unwrap();
    std::io::Read::read_to_string(stdout, &mut received).unwrap();
    let said = named_events(&[stdout_events(&sent), events_in(&received)], "refused");
    // The latin-1 file, the directory and what is inside it.
    assert_eq!(said["file"], ["failed", "failed", "failed"], "{said:?}");
}

/// Checks every `file`, `skip` and `change` event of `sides` (the sender's, the
/// receiver's): one whose `path` holds U+FFFD carries the `path_hex` of the name it
/// stands for (but the sender's `deleted` and `kept`), and only such a one has
/// `path_hex`. Returns, per event kind, what
/// the receiver's events of names that are not UTF-8 said (`change`, or `status`).
fn named_events(
    sides: &[Vec<serde_json::Value>; 2],
    round: &str,
) -> std::collections::HashMap<String, Vec<String>> {
    let names: std::collections::HashMap<String, String> = [
        &b"names/caf\xe9 latin-1"[..],
        b"names/dir\xff",
        b"names/dir\xff/inside",
        b"names/extra\xfe",
    ]
    .iter()
    .map(|bytes| (String::from_utf8_lossy(bytes).into_owned(), hex(bytes)))
    .collect();
    let mut said = std::collections::HashMap::<String, Vec<String>>::new();
    for (side, events) in ["sender", "receiver"].iter().zip(sides) {
        for event in events {
            let kind = event["event"].as_str().unwrap_or_default();
            if !["file", "skip", "change"].contains(&kind) {
                continue;
            }
            let path = event["path"].as_str().unwrap();
            // The sender names what the receiver removed or kept as its report
            // does: as text.
            let change = event["change"].as_str().unwrap_or_default();
            let reported = *side == "sender" && ["deleted", "kept"].contains(&change);
            let expected = names.get(path).map(String::as_str).filter(|_| !reported);
            assert_eq!(
                event["path_hex"].as_str(),
                expected,
                "{round}, {side}: {event}"
            );
            if expected.is_some() && *side == "receiver" {
                let word = match kind {
                    "change" => &event["change"],
                    _ => &event["status"],
                };
                let word = word.as_str().unwrap_or(kind).to_string();
                said.entry(kind.to_string()).or_default().push(word);
            }
        }
    }
    for words in said.values_mut() {
        words.sort();
    }
    said
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_peer_without_meta_gets_the_utf8_names_and_the_sender_counts_the_rest() {
    let src = tempfile::tempdir().unwrap();
    let tree = odd_tree(src.path());
    let (port, old) = old_receiver_taking_all();
    let sent = send(&[&tree], port, KEY, &["--json"]);
    let received = old.join().unwrap();
    assert_eq!(sent.status.code(), Some(10), "{}", stderr_of(&sent));
    let mut names: Vec<&String> = received.files.keys().collect();
    names.sort();
    // What version 2 carries: UTF-8 names, control characters included.
    assert_eq!(
        names,
        [
            "names/back\\slash",
            "names/evil\u{202E}gpj.exe",
            "names/new\nline",
            "names/plain.txt",
            "names/tab\there",
            "names/zero\u{200B}width",
        ]
    );
    let skips: Vec<serde_json::Value> = crate::util::stdout_events(&sent)
        .into_iter()
        .filter(|event| event["event"] == "skip")
        .collect();
    // The latin-1 file and the directory (whose file then has nowhere to go).
    assert_eq!(skips.len(), 3, "{skips:?}");
    assert!(
        skips.iter().all(|skip| skip["reason"]
            .as_str()
            .unwrap()
            .starts_with("name not UTF-8")),
        "{skips:?}"
    );
    let mut named: Vec<&str> = skips
        .iter()
        .filter_map(|skip| skip["path_hex"].as_str())
        .collect();
    named.sort_unstable();
    let mut expected = [
        hex(b"names/caf\xe9 latin-1"),
        hex(b"names/dir\xff"),
        hex(b"names/dir\xff/inside"),
    ];
    expected.sort_unstable();
    assert_eq!(named, expected, "each names its bytes: {skips:?}");
    assert!(
        stderr_of(&sent).contains("3 of 10 entries not sent: 3 names not UTF-8"),
        "{}",
        stderr_of(&sent)
    );
}

/// The receiver's refusal names the path escaped once, as every message does: the
/// sender does not escape that escape again (`new\\u{a}line`).
#[test]
fn a_refusal_from_the_receiver_is_shown_escaped_once() {
    let (sent, _receiver, _out) = sent_to_safe_names();
    let said = stderr_of(&sent);
    let line = said
        .lines()
        .find(|line| line.contains("control character U+000A"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        line.contains("refused by the receiver: names/new\\u{a}line: control"),
        "{line}"
    );
    assert!(!line.contains("\\\\"), "{line}");
}
