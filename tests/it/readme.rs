//! The README's commands run as written. The serve walkthrough (between the
//! `<!-- walkthrough` and `<!-- /walkthrough -->` markers of "Serving several users")
//! is taken block by block: the users file is written where its first line says,
//! every shell line runs with the real binary first on `PATH`, the `xfer serve` line
//! starts the server, and the output block is what the server must print. Only the
//! paths (`/etc/xfer`, `/srv/xfer`, `/run`), the port and the host are changed, so a
//! README that drifts from the binary fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::server::{Server, clean_env};
use crate::util::{Receiver, run, stderr_of};

/// The README, as the repository holds it.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The fenced code blocks of `text`, in order: `(language, body)`.
fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => open = Some((language.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The text between the walkthrough markers.
fn walkthrough(readme: &str) -> &str {
    let start = readme
        .find("<!-- walkthrough")
        .expect("a walkthrough marker");
    let end = readme.find("<!-- /walkthrough -->").expect("an end marker");
    &readme[start..end]
}

/// A shell with the binary under test first on `PATH`, in `dir`, with a clean
/// environment but for `$HOME` and the password a user would type.
fn shell(dir: &Path, line: &str) -> Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_xfer"))
        .parent()
        .expect("a directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("sh");
    clean_env(&mut command);
    command
        .args(["-c", line])
        .env("PATH", path)
        .env("HOME", dir)
        .env("XFER_PASSWORD", "bob's long and secret passphrase")
        .current_dir(dir);
    command
}

/// What the walkthrough's paths, port and host become in `dir`.
struct Places {
    dir: PathBuf,
    port: Option<u16>,
    pid: Option<u32>,
}

impl Places {
    fn apply(&self, text: &str) -> String {
        let dir = self.dir.display();
        let mut text = text
            .replace("/etc/xfer", &format!("{dir}/etc/xfer"))
            .replace("/srv/xfer", &format!("{dir}/srv/xfer"))
            .replace("/run/", &format!("{dir}/run/"))
            .replace("--listen 9000", "--listen 127.0.0.1:0");
        if let Some(port) = self.port {
            text = text
                .replace("files.example.org:9000", &format!("127.0.0.1:{port}"))
                .replace("[::]:9000", &format!("127.0.0.1:{port}"));
        }
        if let Some(pid) = self.pid {
            text = text.replace("4242", &pid.to_string());
        }
        text
    }
}

#[test]
fn the_serve_walkthrough_runs_as_written() {
    let readme = readme();
    let blocks = code_blocks(walkthrough(&readme));
    assert!(blocks.len() >= 5, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let mut places = Places {
        dir: dir.path().to_path_buf(),
        port: None,
        pid: None,
    };
    let mut server: Option<Server> = None;
    for (language, body) in blocks {
        match language.as_str() {
            "toml" => {
                let body = places.apply(&body);
                let first = body.lines().next().unwrap_or_default();
                let path = first
                    .strip_prefix("# ")
                    .expect("a users file names its path");
                std::fs::write(path, &body).unwrap();
            }
            "sh" => {
                for line in body.lines().filter(|l| !l.trim().is_empty()) {
                    let line = places.apply(line);
                    if line.starts_with("xfer serve ") {
                        let started =
                            Server(Receiver::spawn(shell(dir.path(), &format!("exec {line}"))));
                        places.port = Some(started.port());
                        places.pid = Some(started.0.child.id());
                        server = Some(started);
                        continue;
                    }
                    let out = run(&mut shell(dir.path(), &line));
                    assert!(out.status.success(), "{line}: {}", stderr_of(&out));
                    if line.starts_with("kill -HUP") {
                        let server = server.as_ref().expect("a server to signal");
                        let log = server.wait_for_log("reloaded", 1);
                        assert!(log.contains("3 users"), "{log}");
                    }
                }
            }
            // What the server prints, line by line.
            "" => {
                let server = server.as_ref().expect("output comes from the server");
                for line in body.lines() {
                    server.wait_for_log(&places.apply(line), 1);
                }
            }
            other => panic!("a {other:?} block in the walkthrough"),
        }
    }
    let server = server.expect("the walkthrough starts a server");
    let home = dir.path().join("srv/xfer/alice/inbox/hello.txt");
    assert_eq!(std::fs::read(home).unwrap(), b"hello\n");
    // Every login of the walkthrough was let in.
    assert!(!server.log().contains("rejected"), "{}", server.log());
}

#[test]
fn the_completions_and_man_pages_install_as_written() {
    let readme = readme();
    let section = &readme[readme
        .find("### `xfer completions SHELL`")
        .expect("the section")..];
    let (_, body) = code_blocks(section)
        .into_iter()
        .find(|(language, _)| language == "sh")
        .expect("a sh block");
    let home = tempfile::tempdir().unwrap();
    for line in body.lines() {
        let out = run(&mut shell(home.path(), line));
        assert!(out.status.success(), "{line}: {}", stderr_of(&out));
    }
    let completions = home
        .path()
        .join(".local/share/bash-completion/completions/xfer");
    assert!(std::fs::metadata(completions).unwrap().len() > 0);
    assert!(
        home.path()
            .join(".local/share/man/man1/xfer-serve.1")
            .exists()
    );
}

/// The README says which kinds replace a directory as the code does (PROTOCOL
/// 17.3): files, links, special files and hard links, in the `--delete` row and in
/// "Keeping a copy up to date" (`type_change.rs` tests each).
#[test]
fn the_readme_names_every_kind_that_replaces_a_directory() {
    let readme = readme();
    let delete_row = readme
        .lines()
        .find(|line| line.starts_with("| `--delete` |"))
        .expect("the --delete row");
    assert!(
        delete_row.contains("a file, link, special file or hard link and the receiver a directory"),
        "{delete_row}"
    );
    let keeping = readme
        .split("## Keeping a copy up to date")
        .nth(1)
        .expect("the section");
    assert!(
        keeping.contains(
            "- a file, link, special file or hard link where the receiver holds a directory"
        ),
        "the section names every kind"
    );
}
