//! The shell's `put` and `get` take the mirror flags of the command line: `-i`
//! (one line per change, `attrs` included), `--exclude-from FILE` read as `send`
//! and `get` read it, and on `put` `--gitignore`; checked at a terminal, with
//! what arrives looked at from outside.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::mirror::names;
use crate::util::server::{Server, Site};
use crate::util::terminal::Terminal;

const PROMPT: &str = "alice@127.0.0.1:/> ";

/// A shell of `alice` at its prompt, started in `local`, which holds `tree` (`a`,
/// `x.tmp`, a `.gitignore` of `*.log` and `debug.log`) and `ex.txt` (`*.tmp`).
struct AtThePrompt {
    site: Site,
    _server: Server,
    local: PathBuf,
    term: Terminal,
}

impl AtThePrompt {
    fn start() -> AtThePrompt {
        let site = Site::new();
        site.users(&[("alice", "")]);
        let server = site.serve(&[]);
        let local = site.path().join("local");
        let tree = local.join("tree");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("a"), b"a\n").unwrap();
        fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(tree.join("x.tmp"), b"excluded by the file\n").unwrap();
        fs::write(tree.join(".gitignore"), b"*.log\n").unwrap();
        fs::write(tree.join("debug.log"), b"ignored by the tree\n").unwrap();
        fs::write(local.join("ex.txt"), b"# leave out scratch files\n*.tmp\n").unwrap();
        let key_file = site.key_file("alice");
        let shell = [
            "shell",
            &server.addr(),
            "--user",
            "alice",
            "--key-file",
            key_file.to_str().unwrap(),
        ];
        let home = [("HOME", site.path().to_str().unwrap())];
        let term = Terminal::spawn(env!("CARGO_BIN_EXE_xfer"), &shell, &home, &local);
        term.wait_for(PROMPT);
        AtThePrompt {
            site,
            _server: server,
            local,
            term,
        }
    }

    /// Types `line` in once the prompt is back, empty.
    fn type_in(&mut self, line: &str) {
        self.term.wait_for_empty_prompt(PROMPT);
        self.term.type_in(&format!("{line}\r"));
    }
}

#[test]
fn at_a_terminal_put_itemizes_and_reads_exclude_files_and_gitignore() {
    let mut shell = AtThePrompt::start();
    let home = shell.site.home("alice");
    shell
        .term
        .type_in("put -i --gitignore --exclude-from ex.txt tree\r");
    shell.term.wait_for("new      tree/a");
    let screen = shell.term.wait_for("sent 2 files");
    assert!(screen.contains("new dir  tree/"), "{screen:?}");
    assert!(screen.contains("new      tree/.gitignore"), "{screen:?}");
    assert_eq!(names(&home), ["tree/.gitignore", "tree/a"]);

    // The same file with another mode, put where it may replace files: put says
    // `attrs`, and the server has it.
    let a = shell.local.join("tree/a");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o640)).unwrap();
    shell.type_in("put -i -f --delete --gitignore --exclude-from ex.txt tree");
    shell.term.wait_for("attrs    tree/a");
    shell.term.wait_for("2 already there");
    let mode = fs::metadata(home.join("tree/a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    shell.type_in("exit");
}

/// The shell's `put` warns of a rule naming the directory sent, as `xfer send`
/// does (`--exclude /tree/x.tmp` matches below `tree/`), and sends as told.
#[test]
fn at_a_terminal_put_warns_of_a_rule_naming_the_directory_sent() {
    let mut shell = AtThePrompt::start();
    shell.term.type_in("put --exclude /tree/x.tmp tree\r");
    let screen = shell.term.wait_for("sent 4 files");
    assert!(
        screen.contains("the rule \"/tree/x.tmp\" is matched below each directory sent"),
        "{screen:?}"
    );
    assert!(shell.site.home("alice").join("tree/x.tmp").exists());
    shell.type_in("exit");
}

#[test]
fn at_a_terminal_get_leaves_out_what_the_exclude_file_says() {
    let mut shell = AtThePrompt::start();
    let there = shell.site.home("alice").join("tree");
    fs::create_dir_all(&there).unwrap();
    fs::write(there.join("a"), b"a\n").unwrap();
    fs::write(there.join(".gitignore"), b"*.log\n").unwrap();
    fs::write(there.join("keep.tmp"), b"server only\n").unwrap();
    shell.term.type_in("get -i --exclude-from ex.txt tree dl\r");
    let screen = shell.term.wait_for("received 2 files");
    assert!(screen.contains("new      tree/a"), "{screen:?}");
    assert_eq!(
        names(&shell.local.join("dl")),
        ["tree/.gitignore", "tree/a"]
    );
    shell.type_in("exit");
}

#[test]
fn at_a_terminal_a_missing_exclude_file_moves_nothing_and_help_names_the_flags() {
    let mut shell = AtThePrompt::start();
    shell
        .term
        .type_in("get --exclude-from missing.txt tree elsewhere\r");
    shell.term.wait_for("--exclude-from missing.txt");
    assert!(!shell.local.join("elsewhere").exists());

    shell.type_in("help put");
    let screen = shell.term.wait_for("Honour the");
    let help = &screen[screen.rfind("help put").unwrap()..];
    for flag in ["--gitignore", "--exclude-from <FILE>", "-i, --itemize"] {
        assert!(help.contains(flag), "{flag} in {help:?}");
    }
    shell.type_in("exit");
}

#[test]
fn at_a_terminal_a_dry_run_get_makes_no_local_directory() {
    let mut shell = AtThePrompt::start();
    let there = shell.site.home("alice").join("tree");
    fs::create_dir_all(&there).unwrap();
    fs::write(there.join("a"), b"a\n").unwrap();
    shell.term.type_in("get -n tree dl\r");
    let screen = shell.term.wait_for("would receive 1 new file");
    assert!(screen.contains("new      tree/a"), "{screen:?}");
    assert!(screen.contains("does not exist yet"), "{screen:?}");
    assert!(!shell.local.join("dl").exists(), "no local directory made");
    shell.type_in("exit");
}
