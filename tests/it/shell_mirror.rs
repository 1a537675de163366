//! The shell's `put` and `get` take the mirror flags of the command line: `-i`
//! (one line per change, `attrs` included), `--exclude-from FILE` read as `send`
//! and `get` read it, and on `put` `--gitignore`; checked at a terminal, with
//! what arrives looked at from outside.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::mirror::names;
use crate::util::server::Site;
use crate::util::terminal::Terminal;

const PROMPT: &str = "alice@127.0.0.1:/> ";

#[test]
fn at_a_terminal_put_and_get_itemize_and_read_exclude_files_and_gitignore() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let home = site.home("alice");
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
    let mut term = Terminal::spawn(
        env!("CARGO_BIN_EXE_xfer"),
        &[
            "shell",
            &server.addr(),
            "--user",
            "alice",
            "--key-file",
            key_file.to_str().unwrap(),
        ],
        &[("HOME", site.path().to_str().unwrap())],
        &local,
    );
    term.wait_for(PROMPT);

    term.type_in("put -i --gitignore --exclude-from ex.txt tree\r");
    term.wait_for("new      tree/a");
    let screen = term.wait_for("sent 2 files");
    assert!(screen.contains("new dir  tree/"), "{screen:?}");
    assert!(screen.contains("new      tree/.gitignore"), "{screen:?}");
    assert_eq!(names(&home), ["tree/.gitignore", "tree/a"]);

    // The same file with another mode, put where it may replace files: put says
    // `attrs`, and the server has it.
    fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
    term.wait_for_empty_prompt(PROMPT);
    term.type_in("put -i -f --delete --gitignore --exclude-from ex.txt tree\r");
    term.wait_for("attrs    tree/a");
    term.wait_for("2 already there");
    let mode = fs::metadata(home.join("tree/a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    // Back, leaving out by the same file what only the server has.
    fs::write(home.join("tree/keep.tmp"), b"server only\n").unwrap();
    term.wait_for_empty_prompt(PROMPT);
    term.type_in("get -i --exclude-from ex.txt tree dl\r");
    let screen = term.wait_for("received 2 files");
    assert!(screen.contains("new      tree/a"), "{screen:?}");
    assert_eq!(names(&local.join("dl")), ["tree/.gitignore", "tree/a"]);

    // A file that cannot be read is a usage error, and nothing moves.
    term.wait_for_empty_prompt(PROMPT);
    term.type_in("get --exclude-from missing.txt tree elsewhere\r");
    term.wait_for("--exclude-from missing.txt");
    assert!(!local.join("elsewhere").exists());

    // The help says so.
    term.wait_for_empty_prompt(PROMPT);
    term.type_in("help put\r");
    let screen = term.wait_for("Honour the");
    let help = &screen[screen.rfind("help put").unwrap()..];
    for flag in ["--gitignore", "--exclude-from <FILE>", "-i, --itemize"] {
        assert!(help.contains(flag), "{flag} in {help:?}");
    }
    term.wait_for_empty_prompt(PROMPT);
    term.type_in("exit\r");
}
