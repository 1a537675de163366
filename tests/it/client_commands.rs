//! The client's commands against `xfer serve`, one-shot and in `xfer shell`: `get`
//! (local files kept unless forced, a file past a size limit failed alone), `send HOST:PORT[:DIR]` into missing directories,
//! awkward operands (spaces, quotes, colons), IPv6 addresses, long and JSON listings,
//! and the shell at a terminal, in a script and from standard input.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::util;
use crate::util::server::*;
use crate::util::terminal::Terminal;
use crate::util::*;

/// A server on `root` with one key, and extra flags.
fn server(root: &Path, extra: &[&str]) -> Receiver {
    let mut command = xfer();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .args(extra)
        .env("XFER_KEY", KEY);
    Receiver::spawn(command)
}

/// Runs a script through `xfer shell -b FILE`.
fn script(address: &str, text: &str, cwd: &Path) -> std::process::Output {
    let file = cwd.join("script.xfer");
    std::fs::write(&file, text).unwrap();
    util::run(
        xfer()
            .args(["shell", address, "--user", "bob", "-b"])
            .arg(&file)
            .current_dir(cwd)
            .env("XFER_KEY", KEY),
    )
}

#[test]
fn get_keeps_local_files_unless_forced() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("a.txt"), b"the server's\n");
    let dl = site.download_dir("alice");
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "--json"];
        let at = server.at("a.txt");
        args.push(&at);
        args.push(dl.to_str().unwrap());
        args.extend_from_slice(extra);
        client(&site, "alice", &args)
    };
    expect_exit(&get(&[]), 0, "the first get");
    // The same file again: already there.
    let again = get(&[]);
    expect_exit(&again, 0, "the same file again");
    let summary: Value = serde_json::from_str(stdout_of(&again).lines().last().unwrap()).unwrap();
    assert_eq!(
        (summary["same"].as_u64(), summary["files"].as_u64()),
        (Some(1), Some(0)),
        "{summary}"
    );
    // A different local file of that name is kept...
    fs::write(dl.join("a.txt"), b"mine, longer than theirs\n").unwrap();
    let refused = get(&[]);
    expect_exit(&refused, 6, "a local file in the way");
    assert_eq!(
        fs::read(dl.join("a.txt")).unwrap(),
        b"mine, longer than theirs\n"
    );
    // ... unless -f.
    expect_exit(&get(&["-f"]), 0, "get -f");
    assert_eq!(fs::read(dl.join("a.txt")).unwrap(), b"the server's\n");
}

#[test]
fn a_put_makes_a_missing_directory_replaces_only_with_f_and_slash_is_the_home() {
    let site = Site::new();
    site.users(&[("alice", ""), ("guest", "read_only = true")]);
    let server = site.serve(&[]);
    let report = site.local("report.pdf", b"%PDF quarterly\n");
    let put = send_as(&site, "alice", &[&report], &server.at("/inbox/2026"));
    expect_exit(&put, 0, "a put into a directory that is not there yet");
    let home = site.home("alice");
    assert_eq!(
        fs::read(home.join("inbox/2026/report.pdf")).unwrap(),
        b"%PDF quarterly\n"
    );
    let ls = client(&site, "alice", &["ls", &server.at("/")]);
    expect_exit(&ls, 0, "ls of /");
    assert_eq!(lines(&ls), ["inbox"]);
    // A changed file is replaced only with -f (--overwrite).
    fs::write(&report, b"%PDF revised\n").unwrap();
    let again = send_as(&site, "alice", &[&report], &server.at("inbox/2026"));
    expect_refused(&again, "exists", "a put over an existing file");
    let forced = client(
        &site,
        "alice",
        &[
            "send",
            "-f",
            report.to_str().unwrap(),
            &server.at("inbox/2026"),
        ],
    );
    expect_exit(&forced, 0, "a put -f over an existing file");
    assert_eq!(
        fs::read(home.join("inbox/2026/report.pdf")).unwrap(),
        b"%PDF revised\n"
    );
    // A read-only user is refused the put, and no directory is made for it.
    let put = send_as(&site, "guest", &[&report], &server.at("inbox"));
    expect_refused(&put, "denied", "a read-only user's put");
    assert!(!site.home("guest").join("inbox").exists());
}

#[test]
fn paths_with_spaces_quotes_and_colons_work_as_operands() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    // A directory with such names inside, put whole (`xfer send DIR HOST:PORT:DIR`).
    let local = site.path().join("local/my dir");
    write(&local.join("a: b.txt"), b"a colon\n");
    write(&local.join("it's \"quoted\": c.txt"), b"quotes\n");
    expect_exit(
        &client(&site, "alice", &["mkdir", &server.at("in: box")]),
        0,
        "mkdir",
    );
    assert!(home.join("in: box").is_dir());
    let put = send_as(&site, "alice", &[&local], &server.at("in: box"));
    expect_exit(&put, 0, "send");
    let remote = "in: box/my dir/a: b.txt";
    assert_eq!(fs::read(home.join(remote)).unwrap(), b"a colon\n");
    let ls = client(&site, "alice", &["ls", &server.at(remote)]);
    expect_exit(&ls, 0, "ls of the file");
    assert_eq!(lines(&ls), ["a: b.txt"]);
    let ls = client(&site, "alice", &["ls", &server.at("in: box/my dir")]);
    assert_eq!(lines(&ls), ["a: b.txt", "it's \"quoted\": c.txt"]);
    let dl = site.download_dir("odd");
    let quoted = "in: box/my dir/it's \"quoted\": c.txt";
    // Two gets: one naming the file and the directory that holds it is refused
    // (it would offer the file twice).
    for path in [quoted, "in: box/my dir"] {
        let get = client(
            &site,
            "alice",
            &["get", &server.at(path), dl.to_str().unwrap()],
        );
        expect_exit(&get, 0, "get");
    }
    assert_eq!(
        fs::read(dl.join("it's \"quoted\": c.txt")).unwrap(),
        b"quotes\n"
    );
    assert_eq!(fs::read(dl.join("my dir/a: b.txt")).unwrap(), b"a colon\n");
    let stdout = client(&site, "alice", &["get", &server.at(quoted), "--stdout"]);
    expect_exit(&stdout, 0, "get --stdout");
    assert_eq!(stdout.stdout, b"quotes\n");
    let mv = client(
        &site,
        "alice",
        &["mv", &server.at(remote), "in: box/moved: 'a' \"b\".txt"],
    );
    expect_exit(&mv, 0, "mv");
    assert!(home.join("in: box/moved: 'a' \"b\".txt").is_file());
    for path in [
        "in: box/moved: 'a' \"b\".txt",
        quoted,
        "in: box/my dir",
        "in: box",
    ] {
        expect_exit(&client(&site, "alice", &["rm", &server.at(path)]), 0, path);
    }
    assert!(names_in(&home).is_empty());
}

#[test]
fn an_ipv6_server_is_reached_with_brackets() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no ::1 on this machine: skipped");
        return;
    }
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve_on("[::1]:0", &[]);
    server.wait_for_log("listening on [::1]:", 1);
    let at = |path: &str| format!("[::1]:{}:{path}", server.port());
    expect_exit(
        &client(&site, "alice", &["mkdir", &at("v6 dir:x")]),
        0,
        "mkdir over IPv6",
    );
    let file = site.local("six.txt", b"over IPv6\n");
    let put = client(
        &site,
        "alice",
        &["send", file.to_str().unwrap(), &at("v6 dir:x")],
    );
    expect_exit(&put, 0, "send over IPv6");
    let ls = client(&site, "alice", &["ls", &at("v6 dir:x")]);
    expect_exit(&ls, 0, "ls over IPv6");
    assert_eq!(lines(&ls), ["six.txt"]);
    let dl = site.download_dir("six");
    let get = client(
        &site,
        "alice",
        &["get", &at("v6 dir:x/six.txt"), dl.to_str().unwrap()],
    );
    expect_exit(&get, 0, "get over IPv6");
    assert_eq!(fs::read(dl.join("six.txt")).unwrap(), b"over IPv6\n");
    let ls = client(&site, "alice", &["ls", &format!("[::1]:{}", server.port())]);
    assert_eq!(lines(&ls), ["v6 dir:x"]);
}

#[test]
fn long_and_json_listings_show_kind_mode_size_and_time() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    write(&home.join("b.bin"), &pattern(12_345, 1));
    fs::set_permissions(home.join("b.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::File::options()
        .write(true)
        .open(home.join("b.bin"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    fs::create_dir(home.join("a dir")).unwrap();
    fs::set_permissions(home.join("a dir"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", home.join("c link")).unwrap();
    fs::File::open(home.join("a dir"))
        .unwrap()
        .set_modified(when)
        .unwrap();

    let ls = client(&site, "alice", &["ls", "-l", &server.addr()]);
    expect_exit(&ls, 0, "ls -l");
    let lines = lines(&ls);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        format!("drwxr-x--- {:>12} 2023-11-14 22:13 a dir", 0)
    );
    assert_eq!(
        lines[1],
        format!("-rw-r----- {:>12} 2023-11-14 22:13 b.bin", 12_345)
    );
    assert!(
        lines[2].starts_with('l') && lines[2].ends_with(" c link -> /etc/passwd"),
        "{}",
        lines[2]
    );
    let human = client(&site, "alice", &["ls", "-l", "-h", &server.at("b.bin")]);
    assert_eq!(
        stdout_of(&human),
        format!("-rw-r----- {:>12} 2023-11-14 22:13 b.bin\n", "12.06 KiB")
    );

    let json = client(&site, "alice", &["ls", "--json", &server.addr()]);
    expect_exit(&json, 0, "ls --json");
    let items: Vec<Value> = stdout_of(&json)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(items.len(), 3);
    for item in &items {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        keys.retain(|key| !(*key == "target" && item["kind"] == "symlink"));
        assert_eq!(keys, ["kind", "mode", "mtime", "name", "size"], "{item}");
    }
    assert_eq!(
        items[0],
        serde_json::json!({"name": "a dir", "kind": "dir", "size": 0, "mode": 0o750, "mtime": 1_700_000_000})
    );
    assert_eq!(
        items[1],
        serde_json::json!({"name": "b.bin", "kind": "file", "size": 12_345, "mode": 0o640, "mtime": 1_700_000_000})
    );
    assert_eq!(
        (
            items[2]["name"].as_str(),
            items[2]["kind"].as_str(),
            items[2]["target"].as_str()
        ),
        (Some("c link"), Some("symlink"), Some("/etc/passwd"))
    );
    assert_eq!(items[2]["size"], 0);
    // A refused listing prints nothing on stdout.
    let missing = client(&site, "alice", &["ls", "--json", &server.at("missing")]);
    expect_refused(&missing, "not_found", "ls of a missing path");
}

#[test]
fn at_a_terminal_the_shell_prompts_completes_recalls_shows_progress_and_resumes() {
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("photos/2024")).unwrap();
    std::fs::write(root.path().join("photos/2024/a.jpg"), b"jpeg").unwrap();
    let big = pattern(48 << 20, 3);
    std::fs::write(root.path().join("big.bin"), &big).unwrap();
    // Slow enough that a bar shows and Ctrl-C lands mid-file; idle connections
    // are dropped after 2 s.
    let srv = server(root.path(), &["--limit-rate", "16M", "--idle-timeout", "2"]);
    let address = format!("127.0.0.1:{}", srv.port);
    let home_dir = home.path().to_str().unwrap();
    let mut term = Terminal::spawn(
        env!("CARGO_BIN_EXE_xfer"),
        &["shell", &address, "--user", "alice"],
        &[("XFER_KEY", KEY), ("HOME", home_dir)],
        local.path(),
    );
    term.wait_for("alice@127.0.0.1:/> ");

    // Completion of a remote name: `cd pho<Tab>` becomes `cd photos/`.
    term.type_in("cd pho\t");
    term.wait_for("cd photos/");
    term.type_in("\r");
    term.wait_for("alice@127.0.0.1:/photos> ");

    // History: the last command comes back with the up arrow.
    term.type_in("pwd\r");
    term.wait_for_count("\r\n/photos\r\n", 1);
    term.type_in("\x1b[A\r");
    term.wait_for_count("\r\n/photos\r\n", 2);

    // A progress bar, then Ctrl-C: the bar is cleared, the partial is kept.
    term.type_in("get /big.bin\r");
    term.wait_for("big.bin");
    let start = Instant::now();
    loop {
        let partial = std::fs::read_dir(local.path())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"));
        if partial && start.elapsed() > Duration::from_millis(800) {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "the download never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let screen = term.wait_for("ETA");
    assert!(screen.contains("MiB"), "a bar with sizes: {screen:?}");
    term.type_in("\x03");
    term.wait_for("interrupted");
    term.wait_for_count("alice@127.0.0.1:/photos> ", 4);
    assert!(
        !local.path().join("big.bin").exists(),
        "nothing under the final name"
    );

    // The same get again resumes (the server dropped the idle connection meanwhile,
    // so this also logs in again, transparently).
    std::thread::sleep(Duration::from_secs(3));
    term.type_in("get /big.bin\r");
    let screen = term.wait_for("received 1 file");
    assert!(screen.contains("1 resumed"), "{screen:?}");
    assert_eq!(std::fs::read(local.path().join("big.bin")).unwrap(), big);

    // Ctrl-C at the prompt clears the line; Ctrl-D ends the session. (Each key
    // waits for the prompt it is typed at, as a person would.)
    term.wait_for_empty_prompt("alice@127.0.0.1:/photos> ");
    term.type_in("ls nothing-here");
    term.wait_for("ls nothing-here");
    term.type_in("\x03");
    term.wait_for_empty_prompt("alice@127.0.0.1:/photos> ");
    term.type_in("\x04");
    let status = wait_for(&mut term.child, TIMEOUT);
    assert!(status.success());
    let history =
        std::fs::read_to_string(home.path().join(".local/share/xfer/shell_history")).unwrap();
    assert!(history.contains("get /big.bin"), "{history}");
    assert!(!history.contains(KEY), "no key in the history");
}

#[test]
fn a_script_runs_every_command_echoed_and_stops_at_the_first_failure() {
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("up.txt"), b"uploaded").unwrap();
    std::fs::write(local.path().join("it's a file.txt"), b"quoted").unwrap();
    let srv = server(root.path(), &[]);
    let address = format!("127.0.0.1:{}", srv.port);
    let output = script(
        &address,
        "# make a place and fill it\n\
         mkdir docs/old\n\
         \n\
         cd docs\n\
         put up.txt\n\
         put \"it's a file.txt\" old\n\
         ls -l\n\
         rename up.txt old/moved.txt\n\
         -rm no-such-file\n\
         get old/moved.txt fetched/here\n\
         df -h\n\
         lcd ..\n\
         lpwd\n\
         cd /\n\
         cd ..\n\
         ls docs/old\n\
         rm docs/old\n\
         get docs/old/moved.txt\n",
        local.path(),
    );
    let out = String::from_utf8_lossy(&output.stdout);
    let err = stderr_of(&output);
    // Stops at `rm docs/old` (not empty: denied, exit 6); the get never runs.
    assert_eq!(output.status.code(), Some(6), "{out}\n{err}");
    assert!(out.contains("bob@127.0.0.1:/> mkdir docs/old"), "{out}");
    assert!(out.contains("bob@127.0.0.1:/docs> put up.txt"), "{out}");
    assert!(out.contains("bob@127.0.0.1:/> rm docs/old"), "{out}");
    assert!(!out.contains("get docs/old"), "stopped before: {out}");
    assert!(
        !out.contains("script.xfer") && !out.contains("# make"),
        "{out}"
    );
    assert!(err.contains("no-such-file"), "a - line may fail: {err}");
    assert!(
        out.contains("moved.txt") && out.contains("it's a file.txt"),
        "{out}"
    );
    assert!(out.contains("used "), "df: {out}");
    // The last operand of a get, naming nothing on the server, is made locally.
    assert_eq!(
        std::fs::read(local.path().join("fetched/here/moved.txt")).unwrap(),
        b"uploaded"
    );
    assert!(out.contains("bob@127.0.0.1:/> cd .."), "{out}");
    assert_eq!(
        std::fs::read(root.path().join("docs/old/moved.txt")).unwrap(),
        b"uploaded"
    );
    assert_eq!(
        std::fs::read(root.path().join("docs/old/it's a file.txt")).unwrap(),
        b"quoted"
    );
    assert!(!err.contains('\r'), "no progress bars in a script: {err:?}");
}

#[test]
fn commands_from_standard_input_are_a_script_too() {
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("d")).unwrap();
    std::fs::write(root.path().join("d/f.txt"), b"fetched").unwrap();
    let srv = server(root.path(), &[]);
    let mut child = xfer()
        .args([
            "shell",
            &format!("127.0.0.1:{}", srv.port),
            "--user",
            "carol",
        ])
        .current_dir(local.path())
        .env("XFER_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"help get\nget -f d\nexit\nls\n")
        .unwrap();
    assert!(wait_for(&mut child, TIMEOUT).success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("get [-f] [-X] PATH... [LOCAL]"), "{out}");
    assert!(!out.contains("> ls"), "exit ends the script: {out}");
    assert_eq!(
        std::fs::read(local.path().join("d/f.txt")).unwrap(),
        b"fetched"
    );
}

/// Every shell command with its operands, as `shell --help` and `help` list them.
const SHELL_COMMANDS: [&str; 14] = [
    "ls [-l] [-h] [-R] [PATH]",
    "cd PATH",
    "pwd",
    "get [-f] [-X] PATH... [LOCAL]",
    "put [-f] FILE... [DIR]",
    "mkdir PATH",
    "rm [-r] PATH...",
    "rename OLD NEW",
    "df [-h]",
    "lcd PATH",
    "lls [-l] [-h] [PATH]",
    "lpwd",
    "help [COMMAND]",
    "exit",
];

#[test]
fn the_shell_help_lists_every_command() {
    let output = util::run(xfer().args(["shell", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    for command in SHELL_COMMANDS {
        assert!(help.contains(&format!("  {command} ")), "{command}: {help}");
    }
    let page =
        String::from_utf8_lossy(&util::run(xfer().args(["man", "shell"])).stdout).into_owned();
    assert!(page.contains("rename OLD NEW"), "{page}");
}

#[test]
fn help_lists_every_command_and_explains_one_with_its_flags() {
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let srv = server(root.path(), &[]);
    let address = format!("127.0.0.1:{}", srv.port);
    let output = script(
        &address,
        "help\nhelp ls\nls --help\n-lss\n-ls -x\ncd\npwd\n",
        local.path(),
    );
    let out = String::from_utf8_lossy(&output.stdout);
    let err = stderr_of(&output);
    // `cd` without its operand is a usage error (exit 2): the script stops there.
    assert_eq!(output.status.code(), Some(2), "{out}\n{err}");
    for command in SHELL_COMMANDS {
        assert!(out.contains(&format!("  {command} ")), "{command}: {out}");
    }
    // `help ls` and `ls --help` both show ls's flags, the same way.
    let flags = out.matches("Usage: ls [-l] [-h] [-R] [PATH]").count();
    assert_eq!(flags, 2, "{out}");
    assert_eq!(out.matches("  -l  ").count(), 2, "{out}");
    assert_eq!(out.matches("  -h  ").count(), 2, "{out}");
    assert!(err.contains("unknown command lss (did you mean"), "{err}");
    assert!(
        err.contains("ls: unknown option -x; `help ls` explains"),
        "{err}"
    );
    assert!(err.contains("usage: cd PATH; `help cd` explains"), "{err}");
    assert!(!out.contains("> pwd"), "stopped at cd: {out}");
}

#[test]
fn remote_paths_are_taken_as_people_type_them() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    let note = site.local("note.txt", b"a note\n");
    let run = |args: &[&str], what: &str| {
        let output = client(&site, "alice", args);
        expect_exit(&output, 0, what);
        output
    };
    run(
        &["send", note.to_str().unwrap(), &server.at("inbox/")],
        "send into inbox/",
    );
    assert_eq!(fs::read(home.join("inbox/note.txt")).unwrap(), b"a note\n");
    run(&["mkdir", &server.at("new//deep/")], "mkdir new//deep/");
    assert!(home.join("new/deep").is_dir());
    let ls = run(&["ls", &server.at("./inbox")], "ls ./inbox");
    assert_eq!(lines(&ls), ["note.txt"]);
    let dl = site.download_dir("alice");
    run(
        &["get", &server.at("inbox/"), dl.to_str().unwrap()],
        "get inbox/",
    );
    assert_eq!(fs::read(dl.join("inbox/note.txt")).unwrap(), b"a note\n");
    // NEW with the server's prefix, and NEW from the home, as the shell's rename.
    run(
        &[
            "mv",
            &server.at("inbox/note.txt"),
            &server.at("new/./g.txt"),
        ],
        "mv with a remote prefix on NEW",
    );
    assert!(home.join("new/g.txt").is_file());
    run(&["mv", &server.at("/new/g.txt"), "/h.txt"], "mv to /h.txt");
    assert!(home.join("h.txt").is_file());
    // `mv file dir`, as in a shell, is told how to move into the directory.
    let into_dir = client(&site, "alice", &["mv", &server.at("h.txt"), "new"]);
    expect_exit(&into_dir, 6, "mv onto a directory");
    assert!(
        stderr_of(&into_dir)
            .contains("a directory: to move into it, name the path inside it, new/h.txt"),
        "{}",
        stderr_of(&into_dir)
    );
    let other = format!("127.0.0.2:{}:x", server.port());
    let elsewhere = client(&site, "alice", &["mv", &server.at("h.txt"), &other]);
    expect_exit(&elsewhere, 2, "mv to another server");
    assert!(stderr_of(&elsewhere).contains("within one home"));
    run(&["rm", &server.at("new/deep/")], "rm new/deep/");
    assert!(!home.join("new/deep").exists());
    run(&["rm", &server.at("inbox/")], "rm inbox/ (empty now)");
    assert!(!home.join("inbox").exists());
    // The shell starts in the directory its address names.
    let mut shell = as_user(&site, "alice", &["shell", &server.at("new/"), "-b", "-"]);
    let output = run_with_input(&mut shell, b"pwd\n".to_vec());
    expect_exit(&output, 0, "shell HOST:PORT:new/");
    assert!(
        stdout_of(&output).contains("alice@127.0.0.1:/new> pwd\n/new"),
        "{}",
        stdout_of(&output)
    );
    let mut shell = as_user(&site, "alice", &["shell", &server.at("nowhere"), "-b", "-"]);
    let output = run_with_input(&mut shell, b"pwd\n".to_vec());
    expect_exit(&output, 6, "shell HOST:PORT:nowhere");
    assert!(
        stderr_of(&output).contains("no such directory"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn rm_r_removes_a_tree_one_entry_at_a_time_and_gives_the_room_back() {
    let site = Site::new();
    site.users(&[("alice", "quota = \"1 MiB\"")]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    let tree = site.local("work/a/deep/x.bin", &[7; 1000]);
    site.local("work/a/y.txt", b"y");
    site.local("work/a/a", b"a file named as its directory");
    site.local("one.txt", b"1");
    site.local("two.txt", b"2");
    let work = tree
        .ancestors()
        .nth(3)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let local = site.path().join("local");
    let up = client(
        &site,
        "alice",
        &[
            "send",
            &work,
            local.join("one.txt").to_str().unwrap(),
            local.join("two.txt").to_str().unwrap(),
            &server.addr(),
        ],
    );
    expect_exit(&up, 0, "the upload");
    let usage = |what: &str| {
        let output = client(&site, "alice", &["ls", "--usage", "--json", &server.addr()]);
        expect_exit(&output, 0, what);
        let usage: Value = serde_json::from_str(&stdout_of(&output)).unwrap();
        (
            usage["bytes"].as_u64().unwrap(),
            usage["files"].as_u64().unwrap(),
        )
    };
    // Five files and three directories (`work`, `work/a`, `work/a/deep`).
    assert_eq!(usage("before"), (1000 + 1 + 29 + 2 + 3 * 4096, 8));
    // Without -r a directory must be empty; with it, all inside goes.
    let plain = client(&site, "alice", &["rm", &server.at("work/a/")]);
    expect_refused(&plain, "not empty", "rm of a full directory");
    let rm = client(&site, "alice", &["rm", "-r", &server.at("work/a/")]);
    expect_exit(&rm, 0, "rm -r work/a/");
    assert_eq!(names_in(&home.join("work")), Vec::<String>::new());
    // `work` itself stays: two files and a directory.
    assert_eq!(
        usage("after rm -r"),
        (2 + 4096, 3),
        "the room is given back"
    );
    // Several paths at once.
    let rm = client(
        &site,
        "alice",
        &["rm", &server.at("one.txt"), &server.at("/two.txt")],
    );
    expect_exit(&rm, 0, "rm of two files");
    assert_eq!(names_in(&home), ["work"]);
    // The shell's rm -r, and never the home.
    let mut shell = as_user(&site, "alice", &["shell", &server.addr(), "-b", "-"]);
    let output = run_with_input(&mut shell, b"rm -r work\n-rm -r /\nls\n".to_vec());
    expect_exit(&output, 0, "the shell's rm -r");
    assert!(names_in(&home).is_empty(), "{:?}", names_in(&home));
    assert!(stderr_of(&output).contains("the home itself cannot be removed"));
    assert_eq!(usage("at last"), (0, 0));
    // A link inside is removed itself, never followed (a new user could upload
    // links and not remove them); mv moves one, itself.
    let outside = site.local("outside/keep.txt", b"kept");
    fs::create_dir_all(home.join("t")).unwrap();
    std::os::unix::fs::symlink(outside.parent().unwrap(), home.join("t/link")).unwrap();
    std::os::unix::fs::symlink(outside.parent().unwrap(), home.join("t/other")).unwrap();
    let mv = client(
        &site,
        "alice",
        &["mv", &server.at("t/other"), &server.at("moved")],
    );
    expect_exit(&mv, 0, "mv of a link");
    assert_eq!(
        fs::read_link(home.join("moved")).unwrap(),
        outside.parent().unwrap()
    );
    let rm = client(&site, "alice", &["rm", &server.at("moved")]);
    expect_exit(&rm, 0, "rm of a link");
    let rm = client(&site, "alice", &["rm", "-r", &server.at("t")]);
    expect_exit(&rm, 0, "rm -r of a directory holding a link");
    assert!(names_in(&home).is_empty(), "{:?}", names_in(&home));
    assert_eq!(fs::read(&outside).unwrap(), b"kept");
    assert_eq!(usage("after the links"), (0, 0));
}

#[test]
fn ls_r_lists_the_tree_and_lls_l_lists_long() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    write(&site.home("alice").join("photos/2024/a.jpg"), b"jpeg");
    write(&site.home("alice").join("photos/b.jpg"), b"jpg");
    let ls = client(&site, "alice", &["ls", "-R", &server.at("photos/")]);
    expect_exit(&ls, 0, "ls -R");
    assert_eq!(lines(&ls), ["2024", "2024/a.jpg", "b.jpg"]);
    let long = client(&site, "alice", &["ls", "-lR", &server.addr()]);
    expect_exit(&long, 0, "ls -lR");
    let long = lines(&long);
    assert!(
        long[0].starts_with('d') && long[0].ends_with(" photos"),
        "{long:?}"
    );
    assert!(
        long[2].starts_with("-rw") && long[2].ends_with(" photos/2024/a.jpg"),
        "{long:?}"
    );
    // The shell's lls -l: the same long lines, of local files.
    let local = site.local("here/x.txt", b"12345");
    fs::create_dir(local.parent().unwrap().join("sub")).unwrap();
    let mut shell = as_user(&site, "alice", &["shell", &server.addr(), "-b", "-"]);
    shell.current_dir(local.parent().unwrap());
    let output = run_with_input(&mut shell, b"lls -l\nlls\nls -R photos\n".to_vec());
    expect_exit(&output, 0, "lls -l");
    let out = stdout_of(&output);
    let long: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" x.txt") || l.ends_with(" sub"))
        .collect();
    assert_eq!(long.len(), 2, "{out}");
    assert!(
        long[0].starts_with("drwx") && long[1].starts_with("-rw"),
        "{out}"
    );
    assert!(long[1].contains("            5 "), "{out}");
    assert!(out.contains("\nsub/\nx.txt\n"), "{out}");
    // The shell's ls -R: the tree, as xfer ls -R lists it.
    assert!(
        out.contains("ls -R photos\n2024/\n2024/a.jpg\nb.jpg\n"),
        "{out}"
    );
}

#[test]
fn the_shell_reconnects_after_an_idle_timeout_without_asking_for_the_password_again() {
    // The password of PROTOCOL.md's password vector, and the key it gives alice.
    const PASSWORD: &str = "correct horse battery staple";
    const ALICE_KEY: &str = "e6d7419a2eb2552f49341a33fccb746c7614b9b219b7886415f035064bfeffd9";
    let site = Site::new();
    site.write_users(&format!("[users.alice]\nkey = \"{ALICE_KEY}\"\n"));
    let server = site.serve(&["--realm", "files.example.org", "--idle-timeout", "1"]);
    write(&site.home("alice").join("hello.txt"), b"hello\n");
    let local = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut term = Terminal::spawn(
        env!("CARGO_BIN_EXE_xfer"),
        &["shell", &server.addr(), "--user", "alice", "--password"],
        &[("HOME", home.path().to_str().unwrap())],
        local.path(),
    );
    term.wait_for("password for alice: ");
    term.type_in(&format!("{PASSWORD}\r"));
    term.wait_for_empty_prompt("alice@127.0.0.1:/> ");
    term.type_in("ls\r");
    term.wait_for("hello.txt");
    term.wait_for_empty_prompt("alice@127.0.0.1:/> ");
    // The server drops the idle connection; the next command logs in again with
    // the key kept in memory, asking nothing.
    std::thread::sleep(Duration::from_millis(2500));
    term.type_in("ls\r");
    let screen = term.wait_for_count("hello.txt", 2);
    assert_eq!(
        screen.matches("password for alice").count(),
        1,
        "{screen:?}"
    );
    term.type_in("\x04");
    assert!(wait_for(&mut term.child, TIMEOUT).success());
}

/// A file from before 1970 is listed with its date, by `ls -l`, `ls --json` (negative
/// seconds) and the shell's `lls -l`, not with a row of dashes as if it had none.
#[test]
fn listings_show_a_time_before_1970() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let server = site.serve(&[]);
    let old = site.home("alice").join("old.txt");
    write(&old, b"1950");
    // 1950-03-04 05:06:07 UTC
    util::tree::set_mtime(&old, -625_776_833, 0);
    let ls = client(&site, "alice", &["ls", "-l", &server.addr()]);
    expect_exit(&ls, 0, "ls -l");
    assert_eq!(
        lines(&ls),
        [format!("-rw-r--r-- {:>12} 1950-03-04 05:06 old.txt", 4)]
    );
    let json = client(&site, "alice", &["ls", "--json", &server.addr()]);
    let item: Value = serde_json::from_str(stdout_of(&json).trim()).unwrap();
    assert_eq!(item["mtime"], -625_776_833, "{item}");

    let local = site.local("here/old.txt", b"1950");
    util::tree::set_mtime(&local, -625_776_833, 0);
    let mut shell = as_user(&site, "alice", &["shell", &server.addr(), "-b", "-"]);
    shell.current_dir(local.parent().unwrap());
    let output = run_with_input(&mut shell, b"lls -l\n".to_vec());
    expect_exit(&output, 0, "lls -l");
    assert!(
        stdout_of(&output).contains(" 1950-03-04 05:06 old.txt"),
        "{}",
        stdout_of(&output)
    );
}

/// `xfer get` past a file size limit (`ulimit -f`) fails that file with `io` and
/// goes on, as a receiver does, instead of dying of SIGXFSZ (reviewer helper-77:
/// exit 153, the handler was installed for `recv` and `serve` only).
#[test]
fn a_get_past_a_file_size_limit_fails_that_file_and_goes_on() {
    let site = Site::new();
    site.users(&[("alice", "")]);
    let dir = site.home("alice").join("d");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("big.bin"), pattern(3 << 20, 21)).unwrap();
    fs::write(dir.join("small.txt"), b"fits").unwrap();
    let server = site.serve(&[]);
    let dl = site.download_dir("limited");
    let mut get = as_user(&site, "alice", &["get", &server.at("d")]);
    get.arg(&dl);
    // SAFETY: `setrlimit` is async-signal-safe, all a child may call before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut get, || {
            let limit = rustix::process::Rlimit {
                current: Some(1 << 20),
                maximum: Some(1 << 20),
            };
            rustix::process::setrlimit(rustix::process::Resource::Fsize, limit)
                .map_err(std::io::Error::from)
        });
    }
    let got = run(&mut get);
    expect_exit(&got, 7, "get past the limit");
    assert!(stderr_of(&got).contains("too large"), "{}", stderr_of(&got));
    assert_eq!(fs::read(dl.join("d/small.txt")).unwrap(), b"fits");
    assert!(!dl.join("d/big.bin").exists());
}
