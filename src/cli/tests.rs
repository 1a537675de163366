//! Parser tests: what each command line becomes, and which are usage errors.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::client::options::{Encryption, Hashing};
use crate::net::{Link, ListenAddr};
use crate::units;

fn parse(args: &[&str]) -> Result<Invocation, clap::Error> {
    Cli::try_parse_checked(std::iter::once("xfer").chain(args.iter().copied()))
}

fn send(args: &[&str]) -> crate::commands::send::SendOptions {
    match parse(args).unwrap() {
        Invocation::Send(options) => options,
        other => panic!("not send: {other:?}"),
    }
}

fn recv(args: &[&str]) -> crate::commands::recv::RecvOptions {
    match parse(args).unwrap() {
        Invocation::Recv(options) => options,
        other => panic!("not recv: {other:?}"),
    }
}

#[test]
fn send_takes_files_then_the_address() {
    let options = send(&[
        "send",
        "a.txt",
        "dir/b.bin",
        "[::1]:9000",
        "--key-file",
        "k",
    ]);
    assert_eq!(
        options.files,
        [PathBuf::from("a.txt"), PathBuf::from("dir/b.bin")]
    );
    let Link::Connect { to, wait } = &options.peering.link else {
        panic!("connect")
    };
    assert_eq!((to.to_string(), wait.as_secs()), ("[::1]:9000".into(), 0));
    assert_eq!(options.peering.auth.key_file, Some(PathBuf::from("k")));
    assert_eq!(options.peering.security.hash, Hashing::Preferred);
    assert_eq!(options.peering.security.encryption, Encryption::Preferred);
    assert_eq!(options.compress, None);
}

#[test]
fn usage_errors_exit_2_before_anything_runs() {
    for args in [
        &["send", "host:9000"][..],
        &["send", "a.txt", "host"],
        &["send", "a", "host:0"],
        &["send", "-", "file", "host:1"],
        &["send", "a", "b", "host:1", "--name", "x"],
        &["send", "a", "host:1", "--name", ""],
        &["send", "a", "host:1", "--name", "../x"],
        &["send", "-", "host:1", "--name", "a//b"],
        &["send", "-", "--listen", "0", "--serve"],
        &["send", "a", "host:1", "--user", ".bad"],
        &["send", "a", "host:1", "--user", ""],
        &["send", "a", "host:1", "--password"],
        &["send", "a", "host:1", "--encrypt", "--no-encrypt"],
        &["send", "a", "host:1", "--hash", "sha1"],
        &["send", "a", "host:1", "--compress=0"],
        &["send", "a", "host:1", "--compress=20"],
        &["send", "a", "host:1", "--limit-rate", "10"],
        &["recv"],
        &["recv", "9000"],
        &["recv", "host:1", "--listen", "0"],
        &["recv", "host:1", "--serve"],
        &["recv", "--listen", "0", "--wait", "3"],
        &["recv", "--listen", "0", "--timeout", "0"],
        &["recv", "--listen", "0", "--stdout", "-i"],
        &["send", "a", "host:1", "--serve"],
        &["send", "a"],
    ] {
        let err = parse(args).map(|_| ()).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    }
}

#[test]
fn recv_itemizes_only_when_asked() {
    assert!(!recv(&["recv", "--listen", "0"]).peering.style.itemize);
    let serving = recv(&["recv", "--listen", "0", "--serve", "-i"]);
    assert!(serving.peering.style.itemize && serving.peering.style.serving);
    assert!(recv(&["recv", "host:1", "--itemize"]).peering.style.itemize);
}

#[test]
fn recv_hints_at_listen_for_a_bare_port() {
    let err = parse(&["recv", "9000"]).unwrap_err().to_string();
    assert!(err.contains("--listen 9000"), "{err}");
}

#[test]
fn every_numeric_flag_takes_its_bounds_and_refuses_beyond() {
    let max = units::MAX_SECS.to_string();
    let past = (units::MAX_SECS + 1).to_string();
    let huge = u64::MAX.to_string();
    let max_count = units::MAX_COUNT.to_string();
    let past_count = (units::MAX_COUNT + 1).to_string();
    let max_hours = (units::MAX_SECS / 3600).to_string();
    let past_hours = (units::MAX_SECS / 3600 + 1).to_string();
    let cases: &[(&[&str], &str, bool, &str, &str)] = &[
        (&["send", "a", "h:1"], "--wait", true, &max, &past),
        (&["send", "a", "h:1"], "--idle-timeout", false, &max, &past),
        (
            &["send", "a", "h:1"],
            "--handshake-timeout",
            false,
            &max,
            &past,
        ),
        (
            &["recv", "--listen", "0"],
            "--keep-partial",
            true,
            &max_hours,
            &past_hours,
        ),
        (
            &["recv", "--listen", "0"],
            "--max-conns",
            false,
            &max_count,
            &past_count,
        ),
        (
            &["recv", "--listen", "0"],
            "--max-pending-per-address",
            false,
            &max_count,
            &past_count,
        ),
    ];
    for (base, flag, zero_ok, largest, one_past) in cases {
        let with = |value: &str| {
            let mut args = base.to_vec();
            args.extend([*flag, value]);
            parse(&args).map(|_| ())
        };
        assert_eq!(with("0").is_ok(), *zero_ok, "{flag} 0");
        assert!(with(largest).is_ok(), "{flag} {largest}");
        for bad in [*one_past, huge.as_str(), "18446744073709551616", "-1", "x"] {
            assert_eq!(with(bad).unwrap_err().exit_code(), 2, "{flag} {bad}");
        }
    }
    assert!(parse(&["send", "a", "h:1", "--compress=19"]).is_ok());
    assert!(parse(&["send", "a", "h:1", "--limit-rate", "18446744073709551615"]).is_ok());
    assert!(parse(&["send", "a", "h:1", "--limit-rate", "18446744073709551616"]).is_err());
}

#[test]
fn recv_defaults_and_flags() {
    let options = recv(&["recv", "--listen", "0"]);
    let Link::Listen { at, serve } = &options.peering.link else {
        panic!("listen")
    };
    assert_eq!(*at, ListenAddr::AllInterfaces(0));
    assert!(serve.once);
    assert_eq!(serve.max_sessions, 16);
    assert_eq!(serve.max_handshakes_per_address, 32);
    assert_eq!(options.dir, PathBuf::from("."));
    assert!(!options.settings.overwrite && options.settings.resume);
    assert_eq!(options.keep_partial.as_secs(), 24 * 3600);
    assert_eq!(options.peering.timeouts.handshake.as_secs(), 10);
    assert_eq!(options.peering.timeouts.idle, None);

    let options = recv(&[
        "recv",
        "--listen",
        "127.0.0.1:9000",
        "-d",
        "out",
        "--overwrite",
        "--serve",
        "-q",
        "--hash",
        "blake3",
        "--encrypt",
        "--idle-timeout",
        "30",
    ]);
    assert_eq!(options.dir, PathBuf::from("out"));
    assert!(options.settings.overwrite && options.peering.style.quiet);
    assert_eq!(options.peering.security.hash, Hashing::Blake3);
    assert_eq!(options.peering.security.encryption, Encryption::Required);
    assert_eq!(options.peering.timeouts.idle, Some(Duration::from_secs(30)));
}

#[test]
fn either_side_may_listen() {
    let options = send(&["send", "a", "b", "--listen", "9000", "--serve"]);
    assert_eq!(options.files.len(), 2);
    assert!(matches!(options.peering.link, Link::Listen { .. }));
    let options = recv(&["recv", "host:9000", "--wait", "5", "-d", "out"]);
    let Link::Connect { to, wait } = options.peering.link else {
        panic!("connect")
    };
    assert_eq!((to.to_string(), wait.as_secs()), ("host:9000".into(), 5));
}

#[test]
fn compress_takes_its_level_only_with_an_equals_sign() {
    assert_eq!(send(&["send", "a", "h:1", "--compress"]).compress, Some(3));
    assert_eq!(
        send(&["send", "a", "h:1", "--compress=9"]).compress,
        Some(9)
    );
    // A following operand is never taken for a level; one that names no file is
    // a usage error pointing at `--compress=5`.
    let err = parse(&["send", "--compress", "5", "h:1"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    assert!(err.to_string().contains("--compress=5"), "{err}");
    let err = parse(&["send", "a", "h:1", "--compress", "19"]).unwrap_err();
    assert!(err.to_string().contains("--compress=19"), "{err}");
    assert!(!err.to_string().contains("invalid address"), "{err}");
}

#[test]
fn the_key_itself_is_never_an_argument() {
    assert!(parse(&["recv", "--listen", "0", "--key", "secret"]).is_err());
    assert!(parse(&["send", "a", "h:1", "--password=secret"]).is_err());
}

#[test]
fn keygen_path_is_optional() {
    assert!(matches!(
        parse(&["keygen"]).unwrap(),
        Invocation::Keygen(None)
    ));
    assert!(matches!(
        parse(&["keygen", "k"]).unwrap(),
        Invocation::Keygen(Some(_))
    ));
}

#[test]
fn send_stream_and_tree_flags() {
    let options = send(&["send", "-", "h:1", "--name", "backup.tar", "--json"]);
    assert_eq!(options.files, [PathBuf::from("-")]);
    assert_eq!(options.walk.name.as_deref(), Some("backup.tar"));
    assert!(!options.walk.follow_symlinks);
    let options = send(&[
        "send",
        "dir",
        "h:1",
        "--follow-symlinks",
        "--limit-rate",
        "2M",
    ]);
    assert!(options.walk.follow_symlinks);
    assert_eq!(options.peering.limit_rate, Some(2 << 20));
}

#[test]
fn archive_turns_on_everything_that_applies() {
    let plain = send(&["send", "dir", "h:1"]).walk;
    assert!(!plain.xattrs && !plain.owner && !plain.specials && !plain.no_hard_links);
    let archive = send(&["send", "dir", "h:1", "-a", "--no-hard-links"]).walk;
    assert!(archive.xattrs && archive.owner && archive.specials && archive.no_hard_links);
    let some = send(&["send", "dir", "h:1", "-X", "--owner", "--numeric-ids"]).walk;
    assert!(some.xattrs && some.owner && some.numeric_ids && !some.specials);
}

#[test]
fn stdout_excludes_what_only_a_directory_needs() {
    assert!(parse(&["recv", "--listen", "0", "--stdout"]).is_ok());
    for flag in ["--serve", "--overwrite"] {
        assert!(
            parse(&["recv", "--listen", "0", "--stdout", flag]).is_err(),
            "{flag}"
        );
    }
    assert!(parse(&["recv", "--listen", "0", "--stdout", "--dir", "x"]).is_err());
}

#[test]
fn completions_and_man_take_known_names() {
    assert!(parse(&["completions", "bash"]).is_ok());
    assert!(parse(&["completions", "tcsh"]).is_err());
    assert!(parse(&["man", "send"]).is_ok());
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn ignore_times_reaches_the_sender_and_a_get_clients_own_settings() {
    assert!(!send(&["send", "a", "h:1"]).ignore_times);
    assert!(send(&["send", "-I", "a", "h:1"]).ignore_times);
    assert!(send(&["send", "--ignore-times", "-f", "a", "h:1:dir"]).ignore_times);
    // Asking for it needs nothing of the peer (`mirror` is not insisted on).
    assert!(!send(&["send", "-I", "a", "h:1"]).peering.security.mirror);
    match parse(&["get", "-f", "-I", "h:1:f"]).unwrap() {
        // The client applies it itself: nothing goes into its request.
        Invocation::Get(get) => {
            assert!(get.settings.ignore_times && get.client.mirror.is_none());
        }
        other => panic!("not get: {other:?}"),
    }
    assert!(
        parse(&["recv", "--listen", "9000", "-I"]).is_err(),
        "the sender asks"
    );
    // Where this side knows nothing is replaced, -I without -f is a usage error.
    for args in [
        &["send", "-I", "a", "h:1:dir"][..],
        &["get", "-I", "h:1:f"],
        &["get", "-I", "--stdout", "h:1:f"],
    ] {
        let err = parse(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
        assert!(err.to_string().contains("add -f"), "{args:?}: {err}");
    }
    assert!(send(&["send", "-I", "--delete", "d", "h:1:dir"]).ignore_times);
    assert!(parse(&["get", "-I", "--delete", "h:1:d"]).is_ok());
}

#[test]
fn whole_file_turns_delta_off_on_every_command_that_moves_files() {
    let on = send(&["send", "a", "h:1"]);
    assert!(!on.peering.security.whole_file);
    let off = send(&["send", "-W", "a", "h:1"]);
    assert!(off.peering.security.whole_file);
    let put = send(&["send", "--whole-file", "-f", "a", "h:1:dir"]);
    assert!(put.peering.security.whole_file);
    let receiver = recv(&["recv", "--listen", "9000", "-W"]);
    assert!(receiver.peering.security.whole_file);
    match parse(&["get", "-W", "h:1:f"]).unwrap() {
        Invocation::Get(get) => assert!(get.client.whole_file),
        other => panic!("not get: {other:?}"),
    }
    match parse(&["get", "h:1:f"]).unwrap() {
        Invocation::Get(get) => assert!(!get.client.whole_file),
        other => panic!("not get: {other:?}"),
    }
    match parse(&["shell", "--whole-file", "h:1"]).unwrap() {
        Invocation::Shell(shell) => assert!(shell.client.whole_file),
        other => panic!("not shell: {other:?}"),
    }
}

#[test]
fn mirror_flags_become_rules_and_require_the_feature() {
    let options = send(&[
        "send",
        "dir",
        "host:9000",
        "--delete",
        "-n",
        "-i",
        "--include",
        "keep.o",
        "--exclude",
        "*.o",
        "--exclude",
        "target/",
        "--gitignore",
    ]);
    assert!(options.delete && options.dry_run);
    assert!(
        options.peering.security.mirror,
        "insisted on: exit 9 without it"
    );
    assert!(options.peering.style.itemize);
    assert!(options.walk.gitignore);
    // Every exclusion, then the re-inclusions: an include wins whatever the order.
    assert_eq!(options.walk.rules, ["*.o", "target/", "!keep.o"]);
    let filters_only = send(&["send", "dir", "host:9000", "--exclude", "*.o"]);
    assert!(
        !filters_only.peering.security.mirror,
        "filters alone need no mirror"
    );
    for args in [
        &["send", "-", "host:9000", "--delete"][..],
        &["get", "host:9000:dir", "--gitignore"],
        &["get", "host:9000:dir", "--stdout", "--delete"],
    ] {
        let err = parse(args).map(|_| ()).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

#[test]
fn hash_is_blake3_when_the_peer_has_it_unless_a_hash_is_named() {
    assert_eq!(
        send(&["send", "a", "h:1"]).peering.security.hash,
        Hashing::Preferred
    );
    let md5 = send(&["send", "--hash", "md5", "a", "h:1"]);
    assert_eq!(md5.peering.security.hash, Hashing::Md5);
    let receiver = recv(&["recv", "--listen", "9000", "--serve", "--hash", "md5"]);
    assert_eq!(receiver.peering.security.hash, Hashing::Md5);
    for (args, hash) in [
        (&["get", "h:1:f"][..], Hashing::Preferred),
        (&["get", "--hash", "md5", "h:1:f"], Hashing::Md5),
        (&["get", "--hash", "blake3", "h:1:f"], Hashing::Blake3),
    ] {
        match parse(args).unwrap() {
            Invocation::Get(get) => assert_eq!(get.client.hash, hash, "{args:?}"),
            other => panic!("not get: {other:?}"),
        }
    }
    match parse(&["shell", "--hash", "md5", "h:1"]).unwrap() {
        Invocation::Shell(shell) => assert_eq!(shell.client.hash, Hashing::Md5),
        other => panic!("not shell: {other:?}"),
    }
    assert!(parse(&["send", "--hash", "sha1", "a", "h:1"]).is_err());
}

#[test]
fn the_shell_refuses_json_rather_than_ignore_it() {
    let err = parse(&["shell", "--json", "h:1"]).unwrap_err();
    assert!(
        err.to_string().contains("the shell has no --json output"),
        "{err}"
    );
}
