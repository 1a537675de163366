//! From parsed arguments to what to run: each subcommand's args become the plain
//! options its command takes (see `commands`), with the checks clap cannot express
//! done here, so that a contradiction is a usage error (exit 2) before any work.

use std::path::PathBuf;

use super::{
    AuthArgs, Cli, Command, HashChoice, LinkArgs, OutputArgs, RecvArgs, SecurityArgs, SendArgs,
};
use crate::commands::recv::RecvOptions;
use crate::commands::send::SendOptions;
use crate::commands::{AuthOptions, Encryption, Peering, Security};
use crate::fs::source::{STDIN_OPERAND, WalkOptions};
use crate::net::{Endpoint, Link, ServeOptions, Timeouts};
use crate::proto::handshake::valid_user;
use crate::proto::hash::HashKind;
use crate::transfer::recv::Settings;
use crate::ui::report::{Json, Style};

/// What to run, with everything it needs.
#[derive(Debug)]
pub enum Invocation {
    Send(SendOptions),
    Recv(RecvOptions),
    Keygen(Option<PathBuf>),
    Completions(clap_complete::Shell),
    Man {
        command: Option<String>,
        dir: Option<PathBuf>,
    },
}

pub fn invocation(cli: Cli) -> Result<Invocation, String> {
    Ok(match cli.command {
        Command::Send(args) => Invocation::Send(send(args)?),
        Command::Recv(args) => Invocation::Recv(recv(args)?),
        Command::Keygen(args) => Invocation::Keygen(args.path),
        Command::Completions(args) => Invocation::Completions(args.shell),
        Command::Man(args) => Invocation::Man {
            command: args.command,
            dir: args.dir,
        },
    })
}

fn send(args: SendArgs) -> Result<SendOptions, String> {
    // Unless listening, the last operand is the address; the rest are files.
    let (to, files) = if args.link.listen.is_some() {
        (
            None,
            args.operands.iter().map(PathBuf::from).collect::<Vec<_>>(),
        )
    } else {
        let Some((to, files)) = args.operands.split_last().filter(|(_, f)| !f.is_empty()) else {
            return Err("give the files to send and then HOST:PORT (or --listen PORT)".into());
        };
        let to = to
            .to_str()
            .ok_or_else(|| format!("{to:?} is not a HOST:PORT address"))?;
        let remote: crate::net::Remote = to
            .parse()
            .map_err(|why: String| format!("invalid address: {why}"))?;
        if remote.path.is_some() {
            return Err(format!(
                "{to}: a directory after the port is for `xfer serve`, which this version \
                 of xfer cannot talk to yet; give HOST:PORT"
            ));
        }
        (
            Some(remote.endpoint),
            files.iter().map(PathBuf::from).collect(),
        )
    };
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
    let style = style(&args.output, Json::Stdout, args.link.serve);
    Ok(SendOptions {
        files,
        walk: WalkOptions {
            follow_symlinks: args.follow_symlinks,
            name: args.name,
        },
        compress: args.compress,
        peering: peering(&args.link, to, args.security, args.auth, style)?,
    })
}

fn recv(args: RecvArgs) -> Result<RecvOptions, String> {
    let json = if args.stdout {
        Json::Stderr
    } else {
        Json::Stdout
    };
    let style = style(&args.output, json, args.link.serve);
    Ok(RecvOptions {
        dir: args.dir,
        stdout: args.stdout,
        settings: Settings {
            overwrite: args.overwrite,
            resume: !args.no_resume,
        },
        keep_partial: args.keep_partial,
        peering: peering(&args.link, args.from, args.security, args.auth, style)?,
    })
}

fn style(output: &OutputArgs, json: Json, serving: bool) -> Style {
    Style {
        quiet: output.quiet,
        json: if output.json { json } else { Json::Off },
        serving,
    }
}

fn peering(
    link: &LinkArgs,
    to: Option<Endpoint>,
    security: SecurityArgs,
    auth: AuthArgs,
    style: Style,
) -> Result<Peering, String> {
    if let Some(user) = &auth.user
        && !valid_user(user)
    {
        return Err(format!(
            "--user {user:?}: a user name is 1-64 characters of A-Z a-z 0-9 . _ -, \
             not starting with . or -"
        ));
    }
    let timeouts = Timeouts {
        handshake: link.handshake_timeout,
        idle: link.idle_timeout,
    };
    let limit_rate = link.limit_rate;
    let link = match (&link.listen, to) {
        (Some(at), _) => Link::Listen {
            at: at.clone(),
            serve: ServeOptions {
                once: !link.serve,
                max_sessions: link.max_conns,
                max_handshakes: ServeOptions::MAX_HANDSHAKES,
                max_handshakes_per_address: link.max_pending_per_address,
                timeouts,
            },
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
            hash: match security.hash {
                HashChoice::Md5 => HashKind::Md5,
                HashChoice::Blake3 => HashKind::Blake3,
            },
            encryption: match (security.encrypt, security.no_encrypt) {
                (true, _) => Encryption::Required,
                (_, true) => Encryption::Off,
                _ => Encryption::Preferred,
            },
        },
        limit_rate,
        style,
    })
}
