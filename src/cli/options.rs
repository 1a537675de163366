//! From parsed arguments to what to run: each subcommand's args become the plain
//! options its command takes (see `commands`), with the checks clap cannot express
//! done here, so that a contradiction is a usage error (exit 2) before any work.

use std::path::PathBuf;

use super::args::{
    AuthArgs, Cli, ClientArgs, Command, GetArgs, HashChoice, LinkArgs, LsArgs, MirrorArgs,
    OutputArgs, RecvArgs, SecurityArgs, SendArgs, ServeArgs, ShellArgs, TransferArgs,
};
use crate::client::ClientOptions;
use crate::client::options::{
    AuthOptions, Encryption, Hashing, IGNORE_TIMES_WITHOUT_F, Peering, Security,
};
use crate::client::path::from_home;
use crate::commands::recv::RecvOptions;
use crate::commands::remote::{Change, GetOptions, LsOptions};
use crate::commands::send::SendOptions;
use crate::fs::filter;
use crate::fs::path::Names;
use crate::fs::source::{STDIN_OPERAND, WalkOptions};
use crate::net::{Admission, Link, Timeouts};
use crate::net::{Endpoint as Host, Remote};
use crate::proto::handshake::valid_user;
use crate::serve::ServerOptions;
use crate::shell::{Script, ShellOptions};
use crate::transfer::recv::Settings;
use crate::ui::report::{Json, Style};

/// What to run, with everything it needs.
#[derive(Debug)]
pub(crate) enum Invocation {
    Send(SendOptions),
    Recv(RecvOptions),
    Serve(ServerOptions),
    Get(GetOptions),
    Ls(LsOptions),
    Change {
        client: ClientOptions,
        change: Change,
        style: Style,
    },
    Passwd {
        user: String,
        realm: String,
    },
    Shell(ShellOptions),
    Keygen(Option<PathBuf>),
    Completions(clap_complete::Shell),
    Man {
        command: Option<String>,
        dir: Option<PathBuf>,
    },
}

pub(crate) fn invocation(cli: Cli) -> Result<Invocation, String> {
    Ok(match cli.command {
        Command::Send(args) => Invocation::Send(send(args)?),
        Command::Recv(args) => Invocation::Recv(recv(args)?),
        Command::Serve(args) => Invocation::Serve(serve(args)?),
        Command::Get(args) => Invocation::Get(get(args)?),
        Command::Ls(args) => Invocation::Ls(ls(args)?),
        Command::Mkdir(args) => {
            let (host, path) = remote(&args.target, true)?;
            change(args.client, host, Change::Mkdir(path))?
        }
        Command::Rm(args) => {
            let (host, paths) = one_server(&args.targets, "rm")?;
            let recursive = args.recursive;
            change(args.client, host, Change::Remove { paths, recursive })?
        }
        Command::Mv(args) => {
            let (host, from) = remote(&args.from, true)?;
            let to = new_name(&host, &args.to)?;
            change(args.client, host, Change::Rename(from, to))?
        }
        Command::Passwd(args) => {
            if !valid_user(&args.user) {
                return Err(format!("{:?} is not a valid user name", args.user));
            }
            Invocation::Passwd {
                user: args.user,
                realm: args.realm,
            }
        }
        Command::Shell(args) => Invocation::Shell(shell(args)?),
        Command::Keygen(args) => Invocation::Keygen(args.path),
        Command::Completions(args) => Invocation::Completions(args.shell),
        Command::Man(args) => Invocation::Man {
            command: args.command,
            dir: args.dir,
        },
    })
}

/// `-I` where this side knows files are not replaced (a server's DIR, `get`).
fn send(args: SendArgs) -> Result<SendOptions, String> {
    compress_level_apart(&args)?;
    let (to, files) = send_operands(&args)?;
    let (to, remote_dir) = match to {
        Some(remote) => (Some(remote.endpoint), remote.path.as_deref().map(from_home)),
        None => (None, None),
    };
    send_checks(&args, &files, remote_dir.is_some())?;
    let mirror = &args.mirror;
    let rules = filter_rules(mirror)?;
    filter::warn_of_rules_naming_a_directory_sent(&rules, &files);
    let peering = mirroring(
        peering(
            &args.link,
            to,
            args.security,
            args.auth,
            style(&args.output, Json::Stdout, args.link.serve),
        )?,
        mirror,
    );
    Ok(SendOptions {
        files,
        walk: WalkOptions {
            follow_symlinks: args.follow_symlinks,
            name: args.name,
            no_hard_links: args.no_hard_links,
            xattrs: args.xattrs || args.archive,
            owner: args.owner || args.archive,
            numeric_ids: args.numeric_ids,
            specials: args.specials || args.archive,
            rules,
            gitignore: mirror.gitignore,
        },
        compress: args.compress,
        remote_dir,
        overwrite: args.overwrite,
        delete: mirror.delete,
        delete_excluded: mirror.delete_excluded,
        dry_run: mirror.dry_run,
        ignore_times: mirror.ignore_times,
        peering,
    })
}

/// What `send`'s operands and flags may not say together: a stream with others,
/// served, renamed with others or mirrored; `-I` into a server without `-f`.
fn send_checks(args: &SendArgs, files: &[PathBuf], to_server: bool) -> Result<(), String> {
    let stream = files.iter().any(|f| f.as_os_str() == STDIN_OPERAND);
    if stream && files.len() > 1 {
        return Err(
            "`-` (standard input) is a stream of unknown length and must be sent alone".into(),
        );
    }
    if stream && args.link.serve {
        return Err(
            "standard input can be read only once: it cannot be served to several receivers (drop --serve)"
                .into(),
        );
    }
    if args.name.is_some() && files.len() > 1 {
        return Err("--name renames one operand; give a single file, directory or `-`".into());
    }
    if let Some(name) = &args.name
        && let Err(why) = crate::fs::path::check_path(name)
    {
        // Every receiver refuses it (`bad_path`, or a broken offer for ""): say so now.
        return Err(format!("--name {:?}: {why}", name));
    }
    let mirror = &args.mirror;
    if mirror.delete && stream {
        return Err("--delete mirrors a directory; a stream has nothing to delete".into());
    }
    let replacing = args.overwrite || mirror.delete;
    if to_server && mirror.ignore_times && !replacing {
        return Err(IGNORE_TIMES_WITHOUT_F.into());
    }
    Ok(())
}

/// The files to send and, unless listening, the address (the last operand).
fn send_operands(args: &SendArgs) -> Result<(Option<Remote>, Vec<PathBuf>), String> {
    if args.link.listen.is_some() {
        return Ok((None, args.operands.iter().map(PathBuf::from).collect()));
    }
    let Some((to, files)) = args.operands.split_last().filter(|(_, f)| !f.is_empty()) else {
        return Err("give the files to send and then HOST:PORT (or --listen PORT)".into());
    };
    let to = to
        .to_str()
        .ok_or_else(|| format!("{to:?} is not a HOST:PORT address"))?;
    let remote: Remote = to
        .parse()
        .map_err(|why: String| format!("invalid address: {why}"))?;
    Ok((Some(remote), files.iter().map(PathBuf::from).collect()))
}

/// A peering that lists changes with `--itemize`, and insists on a peer with the
/// feature `mirror` for `--delete` and `--dry-run`.
fn mirroring(mut peering: Peering, mirror: &MirrorArgs) -> Peering {
    peering.style.itemize = mirror.itemize;
    peering.security.mirror = mirror.delete || mirror.dry_run;
    peering
}

/// The filter rules of `--exclude`, `--exclude-from` and `--include`.
fn filter_rules(mirror: &MirrorArgs) -> Result<Vec<String>, String> {
    filter::command_line_rules(&mirror.exclude, &mirror.exclude_from, &mirror.include)
}

/// `--compress 19`: the level is optional and only taken after `=`, so clap read
/// it as an operand (the address, or a file); say so rather than "invalid address".
fn compress_level_apart(args: &SendArgs) -> Result<(), String> {
    if args.compress != Some(crate::proto::compress::DEFAULT_LEVEL) {
        return Ok(());
    }
    let slip = args
        .operands
        .iter()
        .filter_map(|o| o.to_str())
        .find(|operand| operand.parse::<i32>().is_ok() && !std::path::Path::new(operand).exists());
    match slip {
        Some(level) => Err(format!(
            "\"{level}\" was read as an operand: --compress takes its level after `=` \
             (--compress={level}), since the level is optional"
        )),
        None => Ok(()),
    }
}

fn recv(args: RecvArgs) -> Result<RecvOptions, String> {
    let json = if args.stdout {
        Json::Stderr
    } else {
        Json::Stdout
    };
    let mut style = style(&args.output, json, args.link.serve);
    style.itemize = args.itemize;
    Ok(RecvOptions {
        dir: args.dir,
        stdout: args.stdout,
        settings: Settings {
            overwrite: args.overwrite,
            resume: !args.no_resume,
            names: if args.safe_names {
                Names::Safe
            } else {
                Names::Any
            },
            asked: None,
            delete_excluded: false,
            ignore_times: false,
            xattrs: false,
        },
        keep_partial: args.keep_partial,
        numeric_ids: args.numeric_ids,
        peering: peering(&args.link, args.from, args.security, args.auth, style)?,
    })
}

fn style(output: &OutputArgs, json: Json, serving: bool) -> Style {
    Style {
        quiet: output.quiet,
        json: if output.json { json } else { Json::Off },
        serving,
        bar: true,
        itemize: false,
    }
}

fn peering(
    link: &LinkArgs,
    to: Option<Host>,
    security: SecurityArgs,
    auth: AuthArgs,
    style: Style,
) -> Result<Peering, String> {
    check_user(&auth)?;
    let timeouts = Timeouts {
        handshake: link.handshake_timeout,
        idle: link.idle_timeout,
    };
    let limit_rate = link.limit_rate;
    let link = match (&link.listen, to) {
        (Some(at), _) => Link::Listen {
            at: at.clone(),
            serve: Admission::new(
                !link.serve,
                link.max_conns,
                link.max_pending_per_address,
                timeouts,
            ),
        },
        (None, Some(to)) => Link::Connect {
            to,
            wait: link.wait,
        },
        (None, None) => return Err("give HOST:PORT to connect to, or --listen PORT".into()),
    };
    Ok(Peering {
        link,
        timeouts,
        auth: AuthOptions {
            key_file: auth.key_file,
            user: auth.user,
            password: auth.password,
        },
        security: Security {
            hash: hashing(security.hash),
            encryption: match (security.encrypt, security.no_encrypt) {
                (true, _) => Encryption::Required,
                (_, true) => Encryption::Off,
                _ => Encryption::Preferred,
            },
            whole_file: security.whole_file,
            mirror: false,
        },
        limit_rate,
        style,
    })
}

/// `--user NAME`, if given, must be a valid user name.
fn check_user(auth: &AuthArgs) -> Result<(), String> {
    match &auth.user {
        Some(user) if !valid_user(user) => Err(format!(
            "--user {user:?}: a user name is 1-64 characters of A-Z a-z 0-9 . _ -, \
             not starting with . or -"
        )),
        _ => Ok(()),
    }
}

/// What `--hash` (or `$XFER_HASH`) asks for; without it, BLAKE3 whenever the peer has it.
fn hashing(choice: Option<HashChoice>) -> Hashing {
    match choice {
        None => Hashing::Preferred,
        Some(HashChoice::Md5) => Hashing::Md5,
        Some(HashChoice::Blake3) => Hashing::Blake3,
    }
}

/// `HOST:PORT:PATH` (or, unless `path_required`, `HOST:PORT` for the home), the
/// path as typed made into a path of the home (`inbox/`, `./a`, `/a` are fine).
fn remote(text: &str, path_required: bool) -> Result<(Host, String), String> {
    let remote: Remote = text.parse()?;
    match remote.path {
        Some(path) => Ok((remote.endpoint, from_home(&path))),
        None if !path_required => Ok((remote.endpoint, String::new())),
        None => Err(format!("expected HOST:PORT:PATH, got {text:?}")),
    }
}

/// `mv`'s NEW: a path of the same home, as the shell's `rename` takes it, or
/// `HOST:PORT:PATH` naming the same server as OLD.
fn new_name(host: &Host, text: &str) -> Result<String, String> {
    match text.parse::<Remote>() {
        Ok(Remote {
            endpoint,
            path: Some(path),
        }) => {
            if endpoint != *host {
                return Err(format!(
                    "mv renames within one home: NEW {text:?} names another server than {host}"
                ));
            }
            Ok(from_home(&path))
        }
        _ => Ok(from_home(text)),
    }
}

fn client(args: ClientArgs, to: Host) -> Result<(ClientOptions, Style), String> {
    let style = style(&args.output, Json::Stdout, false);
    check_user(&args.auth)?;
    Ok((
        ClientOptions {
            to,
            wait: args.wait,
            timeouts: Timeouts {
                handshake: args.handshake_timeout,
                idle: args.idle_timeout,
            },
            auth: AuthOptions {
                key_file: args.auth.key_file,
                user: args.auth.user,
                password: args.auth.password,
            },
            mirror: None,
            hash: Hashing::Preferred,
            limit_rate: None,
            compress: None,
            whole_file: false,
        },
        style,
    ))
}

/// A client that transfers files: `--hash` and `--limit-rate`.
fn transferring(client: &mut ClientOptions, args: &TransferArgs) {
    client.hash = hashing(args.hash);
    client.limit_rate = args.limit_rate;
    client.whole_file = args.whole_file;
}

/// Operands that are each `HOST:PORT:PATH` of one server (`what`: the command).
fn one_server(operands: &[String], what: &str) -> Result<(Host, Vec<String>), String> {
    let mut host: Option<Host> = None;
    let mut paths = Vec::new();
    for operand in operands {
        let (endpoint, path) = remote(operand, true)?;
        if host.as_ref().is_some_and(|host| *host != endpoint) {
            return Err(format!(
                "every HOST:PORT:PATH of one {what} must name the same server"
            ));
        }
        host = Some(endpoint);
        paths.push(path);
    }
    let host = host.ok_or_else(|| format!("give HOST:PORT:PATH to {what}"))?;
    Ok((host, paths))
}

/// `xfer shell`: its address, starting directory and script.
fn shell(args: ShellArgs) -> Result<ShellOptions, String> {
    if args.client.output.json {
        // Said, not ignored: the shell prints for people.
        return Err(
            "the shell has no --json output; for scripts use the client \
                    commands (xfer send, get, ls, mkdir, rm, mv) with --json"
                .into(),
        );
    }
    let (host, dir) = remote(&args.target, false)?;
    let quiet = args.client.output.quiet;
    let (mut client, _) = client(args.client, host)?;
    transferring(&mut client, &args.transfer);
    Ok(ShellOptions {
        client,
        dir,
        script: args.batch.map(|path| {
            if path.as_os_str() == "-" {
                Script::Stdin
            } else {
                Script::File(path)
            }
        }),
        progress: args.progress,
        quiet,
    })
}

fn change(args: ClientArgs, to: Host, change: Change) -> Result<Invocation, String> {
    let (client, style) = client(args, to)?;
    Ok(Invocation::Change {
        client,
        change,
        style,
    })
}

fn get(args: GetArgs) -> Result<GetOptions, String> {
    let mut operands = args.operands;
    // The last operand is the local directory unless it names a remote path.
    let dir = match operands.last() {
        Some(last) if operands.len() > 1 && remote(last, true).is_err() => {
            PathBuf::from(operands.pop().expect("not empty"))
        }
        _ => PathBuf::from("."),
    };
    let (host, paths) = one_server(&operands, "get")?;
    if args.stdout && paths.len() > 1 {
        return Err("--stdout takes one file".into());
    }
    let json = if args.stdout {
        Json::Stderr
    } else {
        Json::Stdout
    };
    let mirror = &args.mirror;
    if mirror.gitignore {
        return Err("--gitignore reads the tree being sent: it is for `xfer send`".into());
    }
    if mirror.ignore_times && !(args.overwrite || mirror.delete) {
        return Err(IGNORE_TIMES_WITHOUT_F.into());
    }
    if (mirror.delete || mirror.dry_run) && args.stdout {
        return Err("--delete and --dry-run need a local directory, not --stdout".into());
    }
    let mut output = style(&args.client.output, json, false);
    output.itemize = mirror.itemize;
    let (mut client, _) = client(args.client, host)?;
    transferring(&mut client, &args.transfer);
    let rules = filter_rules(mirror)?;
    filter::warn_of_rules_naming_a_path_fetched(&rules, &paths);
    client.mirror = filter::get_request(&rules, mirror.delete, mirror.dry_run)?;
    Ok(GetOptions {
        client,
        paths,
        dir,
        stdout: args.stdout,
        settings: Settings {
            // A mirror replaces what changed (it is this side's own directory).
            overwrite: args.overwrite || mirror.delete,
            resume: !args.no_resume,
            // From a server: its names passed the strict rule; keep it here too.
            names: Names::Safe,
            asked: Some((mirror.delete, mirror.dry_run)),
            delete_excluded: mirror.delete_excluded,
            ignore_times: mirror.ignore_times,
            xattrs: args.xattrs,
        },
        style: output,
    })
}

fn ls(args: LsArgs) -> Result<LsOptions, String> {
    let (host, path) = remote(&args.target, false)?;
    let (client, style) = client(args.client, host)?;
    Ok(LsOptions {
        client,
        path,
        long: args.long,
        human: args.human,
        recursive: args.recursive,
        usage: args.usage,
        style,
    })
}

fn serve(args: ServeArgs) -> Result<ServerOptions, String> {
    if let Some(realm) = &args.realm
        && !crate::proto::handshake::valid_realm(realm)
    {
        return Err("a realm is 1-255 bytes without control characters".into());
    }
    Ok(ServerOptions {
        root: args.root,
        listen: args.listen,
        users_file: args.users,
        key_file: args.key_file,
        realm: args.realm,
        admission: Admission::new(
            false,
            args.max_conns,
            args.max_pending_per_address,
            Timeouts {
                handshake: args.handshake_timeout,
                idle: Some(args.idle_timeout),
            },
        ),
        limit_rate: args.limit_rate,
        keep_partial: args.keep_partial,
        pid_file: args.pid_file,
        style: style(&args.output, Json::Stdout, true),
    })
}
