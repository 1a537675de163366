//! The shell's commands, each a few lines over the client: what `help` lists, how
//! a line's words become a request, and what is printed. Transfers behave exactly
//! as the one-shot commands do (verification, resume, the same messages).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::session::Session;
use super::words::{resolve, shown};
use crate::error::{Classify, Kind, fail, peer_code};
use crate::escape::{escape, escape_path};
use crate::fs::sink::TargetDir;
use crate::fs::source::{self, WalkOptions};
use crate::proto::message::{ErrorCode, ItemKind};
use crate::transfer::Tally;
use crate::transfer::recv::{Destination, Settings};
use crate::ui::listing::{long_line, usage_line};
use crate::ui::report::Reporter;

/// Every command: its name, usage and what it does (`help` and `xfer shell --help`).
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "ls",
        "ls [-l] [-h] [PATH]",
        "list a remote directory (-l: long, -h: human sizes)",
    ),
    (
        "cd",
        "cd PATH",
        "change the remote directory (/ is the home)",
    ),
    ("pwd", "pwd", "print the remote directory"),
    (
        "get",
        "get [-f] PATH... [LOCAL]",
        "download files and directories (-f: replace local files)",
    ),
    (
        "put",
        "put [-f] FILE... [DIR]",
        "upload files and directories (-f: replace remote files)",
    ),
    (
        "mkdir",
        "mkdir PATH",
        "make a remote directory and its parents",
    ),
    ("rm", "rm PATH", "remove a remote file or empty directory"),
    (
        "rename",
        "rename OLD NEW",
        "rename a remote file or directory (also: mv)",
    ),
    (
        "df",
        "df [-h]",
        "show the space and files used against the quota",
    ),
    ("lcd", "lcd PATH", "change the local directory"),
    ("lls", "lls [PATH]", "list a local directory"),
    ("lpwd", "lpwd", "print the local directory"),
    (
        "help",
        "help [COMMAND]",
        "list the commands, or explain one",
    ),
    ("exit", "exit", "end the session (also: quit, bye, Ctrl-D)"),
];

/// What the shell does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    Exit,
}

/// Runs one command line's words.
pub fn run(session: &mut Session, words: &[String]) -> Result<Next> {
    let Some((name, args)) = words.split_first() else {
        return Ok(Next::Continue);
    };
    let (flags, operands) = split_flags(args);
    let known = |allowed: &str| -> Result<()> {
        match flags.iter().find(|f| !allowed.contains(f.as_str())) {
            Some(flag) => Err(fail(Kind::Usage, format!("{name}: unknown option -{flag}"))),
            None => Ok(()),
        }
    };
    match name.as_str() {
        "ls" => {
            known("lh")?;
            ls(
                session,
                operands,
                flags.iter().any(|f| f == "l"),
                flags.iter().any(|f| f == "h"),
            )?
        }
        "cd" => cd(session, one(name, operands)?)?,
        "pwd" => println!("{}", escape(&shown(&session.cwd))),
        "get" => {
            known("f")?;
            get(session, operands, flags.iter().any(|f| f == "f"))?
        }
        "put" => {
            known("f")?;
            put(session, operands, flags.iter().any(|f| f == "f"))?
        }
        "mkdir" => {
            let path = resolve(&session.cwd, one(name, operands)?);
            session.run(|client| client.mkdir(&path))?;
            session.forget_listings();
        }
        "rm" => {
            let path = resolve(&session.cwd, one(name, operands)?);
            session.run(|client| client.remove(&path))?;
            session.forget_listings();
        }
        "rename" | "mv" => {
            let [from, to] = operands else {
                bail!(usage_error(name));
            };
            let (from, to) = (resolve(&session.cwd, from), resolve(&session.cwd, to));
            session.run(|client| client.rename(&from, &to))?;
            session.forget_listings();
        }
        "df" => {
            known("h")?;
            let usage = session.run(|client| client.usage())?;
            println!("{}", usage_line(&usage, flags.iter().any(|f| f == "h")));
        }
        "lcd" => {
            let path = expand_home(one(name, operands)?);
            std::env::set_current_dir(&path)
                .with_context(|| format!("lcd {}", escape_path(&path)))
                .classify(Kind::Io)?;
        }
        "lls" => lls(operands.first().map(|p| expand_home(p)))?,
        "lpwd" => println!("{}", escape_path(&std::env::current_dir()?)),
        "help" => help(operands.first().map(String::as_str))?,
        "exit" | "quit" | "bye" => return Ok(Next::Exit),
        other => {
            return Err(fail(
                Kind::Usage,
                format!("unknown command {}; `help` lists them", escape(other)),
            ));
        }
    }
    std::io::stdout().flush()?;
    Ok(Next::Continue)
}

/// Single-letter options (`-l`, `-lh`) before the operands; `--` ends them.
fn split_flags(args: &[String]) -> (Vec<String>, &[String]) {
    let mut flags = Vec::new();
    let mut at = 0;
    while let Some(arg) = args.get(at) {
        if arg == "--" {
            at += 1;
            break;
        }
        match arg.strip_prefix('-') {
            Some(letters) if !letters.is_empty() => {
                flags.extend(letters.chars().map(String::from));
                at += 1;
            }
            _ => break,
        }
    }
    (flags, &args[at..])
}

fn usage_error(name: &str) -> anyhow::Error {
    let usage = COMMANDS
        .iter()
        .find(|(command, ..)| *command == name || (name == "mv" && *command == "rename"))
        .map_or(name, |(_, usage, _)| usage);
    fail(Kind::Usage, format!("usage: {usage}"))
}

fn one<'a>(name: &str, operands: &'a [String]) -> Result<&'a str> {
    match operands {
        [one] => Ok(one),
        _ => Err(usage_error(name)),
    }
}

fn ls(session: &mut Session, operands: &[String], long: bool, human: bool) -> Result<()> {
    let path = resolve(&session.cwd, operands.first().map_or("", String::as_str));
    let items = session.run(|client| client.list(&path))?;
    let mut out = std::io::stdout().lock();
    for item in &items {
        if long {
            writeln!(out, "{}", long_line(item, human))?;
        } else {
            let slash = if item.kind == ItemKind::Dir { "/" } else { "" };
            writeln!(out, "{}{slash}", escape(&item.name))?;
        }
    }
    Ok(())
}

fn cd(session: &mut Session, path: &str) -> Result<()> {
    let target = resolve(&session.cwd, path);
    if !target.is_empty() {
        // Is it a directory? Its parent's listing says.
        let (parent, name) = target.rsplit_once('/').unwrap_or(("", &target));
        let (parent, name) = (parent.to_string(), name.to_string());
        let items = session.run(|client| client.list(&parent))?;
        match items.iter().find(|item| item.name == name) {
            Some(item) if item.kind == ItemKind::Dir => {}
            Some(_) => bail!(fail(
                Kind::Refused,
                format!("cd: {}: not a directory", escape(path))
            )),
            None => bail!(fail(
                Kind::Refused,
                format!("cd: {}: no such directory", escape(path))
            )),
        }
    }
    session.cwd = target;
    Ok(())
}

/// `get [-f] PATH... [LOCAL]`: the last of several operands is the local directory
/// when it is one here, or when it names nothing on the server (then it is made).
fn get(session: &mut Session, operands: &[String], overwrite: bool) -> Result<()> {
    let (remote, local) = match operands {
        [] => bail!(usage_error("get")),
        [first @ .., last] if !first.is_empty() && names_local_dir(session, last)? => {
            let local = expand_home(last);
            std::fs::create_dir_all(&local).map_err(|err| {
                fail(
                    Kind::Io,
                    format!("cannot make {}: {err}", escape_path(&local)),
                )
            })?;
            (first, local)
        }
        all => (all, PathBuf::from(".")),
    };
    let paths = remote
        .iter()
        .map(|path| resolve(&session.cwd, path))
        .collect::<Vec<_>>();
    let target = TargetDir::open(&local)?;
    let _lock = target.lock(&local)?;
    let destination = Destination::Dir(target);
    let settings = Settings {
        overwrite,
        resume: true,
    };
    let style = session.style;
    transfer(
        session,
        "received",
        |client, tally| client.get(&paths, &destination, settings, tally),
        style,
    )
}

/// Is `last`, of several `get` operands, where to put what arrives?
fn names_local_dir(session: &mut Session, last: &str) -> Result<bool> {
    if expand_home(last).is_dir() {
        return Ok(true);
    }
    let remote = resolve(&session.cwd, last);
    match session.run(|client| client.list(&remote)) {
        Ok(_) => Ok(false),
        Err(err) if peer_code(&err) == Some(ErrorCode::NotFound) => Ok(true),
        Err(err) => Err(err),
    }
}

/// `put [-f] FILE... [DIR]`: the last operand is the remote directory when there
/// are several and it is not a local path.
fn put(session: &mut Session, operands: &[String], overwrite: bool) -> Result<()> {
    let (local, dir) = match operands {
        [] => bail!(usage_error("put")),
        [.., last] if operands.len() > 1 && !expand_home(last).exists() => {
            (&operands[..operands.len() - 1], resolve(&session.cwd, last))
        }
        all => (all, session.cwd.clone()),
    };
    let files: Vec<PathBuf> = local.iter().map(|f| expand_home(f)).collect();
    let collected = source::collect(&files, &WalkOptions::default())?;
    if collected.is_stream() {
        bail!(fail(
            Kind::Usage,
            "put sends files and directories, not streams"
        ));
    }
    let style = session.style;
    let result = transfer(
        session,
        "sent",
        |client, tally| client.put(&dir, overwrite, &collected, tally),
        style,
    );
    session.forget_listings();
    result
}

/// Runs a transfer with its bar and summary, as the one-shot commands do.
fn transfer(
    session: &mut Session,
    verb: &str,
    mut work: impl FnMut(&mut crate::client::Client, &mut Tally) -> Result<()>,
    style: crate::ui::report::Style,
) -> Result<()> {
    let mut last: Option<Tally> = None;
    let result = session.run(|client| {
        let mut tally = Tally::new(Reporter::new(style), client.negotiated());
        let result = work(client, &mut tally).and_then(|()| tally.verdict());
        last = Some(tally);
        result
    });
    if let Some(tally) = last {
        tally.finish(verb, &result);
    }
    result
}

fn lls(path: Option<PathBuf>) -> Result<()> {
    let path = path.unwrap_or_else(|| PathBuf::from("."));
    let mut names: Vec<(String, bool)> = std::fs::read_dir(&path)
        .with_context(|| format!("lls {}", escape_path(&path)))
        .classify(Kind::Io)?
        .filter_map(|entry| entry.ok())
        .map(|entry| {
            let dir = entry.file_type().is_ok_and(|t| t.is_dir());
            (entry.file_name().to_string_lossy().into_owned(), dir)
        })
        .collect();
    names.sort();
    let mut out = std::io::stdout().lock();
    for (name, dir) in names {
        writeln!(out, "{}{}", escape(&name), if dir { "/" } else { "" })?;
    }
    Ok(())
}

fn help(command: Option<&str>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        None => {
            for (_, usage, what) in COMMANDS {
                writeln!(out, "  {usage:<26} {what}")?;
            }
            writeln!(
                out,
                "Names with spaces or quotes: quote them ('my file') or use backslashes. \
                 Tab completes remote names."
            )?;
        }
        Some(name) => {
            let name = if name == "mv" { "rename" } else { name };
            let Some((_, usage, what)) = COMMANDS.iter().find(|(command, ..)| *command == name)
            else {
                bail!(fail(Kind::Usage, format!("no command {}", escape(name))));
            };
            writeln!(out, "{usage}\n  {what}")?;
        }
    }
    Ok(())
}

/// `~` and `~/...` as the user's home directory, as a shell would.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            Path::new(&home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(path),
    }
}
