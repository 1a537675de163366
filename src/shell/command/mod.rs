//! The shell's commands: one clap definition of every command (this enum, each
//! variant's arguments in its own file with its `run`), and the dispatch of a
//! line's words to it. Help, usage errors and the completion of command names are
//! all read from this definition; nothing here talks to the server itself.

mod cd;
mod df;
mod exit;
mod get;
mod help;
mod lcd;
mod lls;
mod lpwd;
mod ls;
mod mkdir;
mod put;
mod pwd;
mod rename;
mod rm;

use std::io::Write;

use anyhow::Result;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueHint};

use super::session::Session;
use crate::error::{Kind, fail};
use crate::escape::escape;

/// A command line of the shell, after its words were split.
#[derive(Debug, Parser)]
#[command(
    name = "shell",
    no_binary_name = true,
    disable_help_flag = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    color = clap::ColorChoice::Never
)]
struct Line {
    #[command(subcommand)]
    command: Command,
    /// Explain this command (as `help COMMAND` does)
    #[arg(long, global = true, action = ArgAction::Help)]
    help: Option<bool>,
}

/// Every command the shell takes, in the order `help` lists them.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub(crate) enum Command {
    Ls(ls::Ls),
    Cd(cd::Cd),
    Pwd(pwd::Pwd),
    Get(get::Get),
    Put(put::Put),
    Mkdir(mkdir::Mkdir),
    Rm(rm::Rm),
    #[command(visible_alias = "mv")]
    Rename(rename::Rename),
    Df(df::Df),
    Lcd(lcd::Lcd),
    Lls(lls::Lls),
    Lpwd(lpwd::Lpwd),
    Help(help::Help),
    #[command(visible_aliases = ["quit", "bye"])]
    Exit(exit::Exit),
}

/// What the shell does after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Continue,
    Exit,
}

/// The clap definition of every command, built (so `--help` is in each).
fn shell() -> clap::Command {
    let mut shell = Line::command();
    shell.build();
    shell
}

/// Runs one command line's words.
pub(crate) fn run(session: &mut Session, words: &[String]) -> Result<Next> {
    if words.is_empty() {
        return Ok(Next::Continue);
    }
    let command = match parse(words) {
        Ok(command) => command,
        // `--help` before any command's name is `help`.
        Err(err)
            if err.kind() == ErrorKind::DisplayHelp
                && shell().find_subcommand(&words[0]).is_none() =>
        {
            Command::Help(help::Help { command: None })
        }
        Err(err) if err.kind() == ErrorKind::DisplayHelp => {
            print!("{err}");
            std::io::stdout().flush()?;
            return Ok(Next::Continue);
        }
        Err(err) => return Err(usage_error(&err, &words[0])),
    };
    match command {
        Command::Ls(command) => command.run(session)?,
        Command::Cd(command) => command.run(session)?,
        Command::Pwd(command) => command.run(session)?,
        Command::Get(command) => command.run(session)?,
        Command::Put(command) => command.run(session)?,
        Command::Mkdir(command) => command.run(session)?,
        Command::Rm(command) => command.run(session)?,
        Command::Rename(command) => command.run(session)?,
        Command::Df(command) => command.run(session)?,
        Command::Lcd(command) => command.run(session)?,
        Command::Lls(command) => command.run(session)?,
        Command::Lpwd(command) => command.run(session)?,
        Command::Help(command) => command.run(&mut shell())?,
        Command::Exit(_) => return Ok(Next::Exit),
    }
    std::io::stdout().flush()?;
    Ok(Next::Continue)
}

/// A line's words as a command. `--help` anywhere after a known command's name
/// is an error of kind `DisplayHelp` that carries that command's help.
fn parse(words: &[String]) -> Result<Command, clap::Error> {
    Line::try_parse_from(words).map(|line| line.command)
}

/// One line for what clap found wrong with a line whose first word is `name`,
/// ending with a hint at `help`.
fn usage_error(err: &clap::Error, name: &str) -> anyhow::Error {
    let mut shell = shell();
    let Some(command) = shell.find_subcommand_mut(name) else {
        let suggestion = match err.get(ContextKind::SuggestedSubcommand) {
            Some(ContextValue::Strings(names)) if !names.is_empty() => {
                format!(" (did you mean {}?)", names.join(" or "))
            }
            Some(ContextValue::String(name)) => format!(" (did you mean {name}?)"),
            _ => String::new(),
        };
        return fail(
            Kind::Usage,
            format!(
                "unknown command {}{suggestion}; `help` lists them",
                escape(name)
            ),
        );
    };
    let hint = format!("`help {}` explains", command.get_name());
    let message = match (err.kind(), err.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(arg))) if arg.starts_with('-') => {
            format!("{name}: unknown option {}; {hint}", escape(arg))
        }
        _ => format!("usage: {}; {hint}", help::usage_of(command)),
    };
    fail(Kind::Usage, message)
}

/// The names of the commands, for completion (aliases left out, as `help` lists).
pub(crate) fn names() -> Vec<String> {
    help::summary(&mut shell())
        .into_iter()
        .map(|(name, ..)| name)
        .collect()
}

/// What a command's operands name, for completion.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Operands {
    /// Paths on the server.
    Remote,
    /// Paths here.
    Local,
    /// Names of commands (`help`).
    Commands,
}

/// What the operands of command `name` (or an alias) are; `None` if it takes none.
pub(crate) fn operands(name: &str) -> Option<Operands> {
    let shell = shell();
    let command = shell.find_subcommand(name)?;
    let hint = command.get_positionals().next()?.get_value_hint();
    Some(match hint {
        ValueHint::AnyPath | ValueHint::DirPath | ValueHint::FilePath => Operands::Local,
        ValueHint::CommandName => Operands::Commands,
        _ => Operands::Remote,
    })
}

/// Every command's name, usage and what it does, for `xfer shell --help`:
/// `COMMANDS.listed()`, or `for (name, usage, what) in COMMANDS` (read from the
/// clap definition each time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Commands;

/// The list of the shell's commands (see [`Commands`]).
pub(crate) const COMMANDS: Commands = Commands;

impl Commands {
    /// Every command a line, as `help` lists them.
    pub(crate) fn listed(self) -> String {
        help::listed(&help::summary(&mut shell()))
    }
}

impl IntoIterator for Commands {
    type Item = (String, String, String);
    type IntoIter = std::vec::IntoIter<(String, String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        help::summary(&mut shell()).into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;

    fn words(line: &str) -> Vec<String> {
        crate::shell::words::split(line).expect("closed quotes")
    }

    fn parsed(line: &str) -> Command {
        parse(&words(line)).unwrap_or_else(|err| panic!("{line}: {err}"))
    }

    /// The one-line message of a line that does not parse.
    fn refused(line: &str) -> String {
        let words = words(line);
        let err = parse(&words).expect_err(line);
        assert_ne!(err.kind(), ErrorKind::DisplayHelp, "{line}");
        let err = usage_error(&err, &words[0]);
        assert_eq!(kind_of(&err), Some(Kind::Usage), "{line}");
        let message = format!("{err:#}");
        assert!(!message.contains('\n'), "one line: {message:?}");
        message
    }

    /// The help `--help` shows for `line`.
    fn help_of(line: &str) -> String {
        let err = parse(&words(line)).expect_err(line);
        assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{line}");
        err.to_string()
    }

    #[test]
    fn the_definition_is_consistent() {
        shell().debug_assert();
    }

    #[test]
    fn every_command_is_listed_once_with_its_usage() {
        let names: Vec<String> = COMMANDS.into_iter().map(|(name, ..)| name).collect();
        assert_eq!(
            names,
            [
                "ls", "cd", "pwd", "get", "put", "mkdir", "rm", "rename", "df", "lcd", "lls",
                "lpwd", "help", "exit"
            ]
        );
        assert_eq!(names, super::names());
        let ls = COMMANDS.into_iter().next().expect("ls is first");
        assert_eq!(ls.1, "ls [-l] [-h] [-R] [PATH]");
        assert_eq!(
            ls.2,
            "list a remote directory (-l: long, -h: human sizes, -R: everything beneath too)"
        );
    }

    #[test]
    fn ls_takes_combined_flags_and_one_path() {
        let ls = |long, human, path: Option<&str>| {
            Command::Ls(ls::Ls {
                long,
                human,
                recursive: false,
                path: path.map(String::from),
            })
        };
        assert_eq!(parsed("ls"), ls(false, false, None));
        assert_eq!(parsed("ls -lh docs"), ls(true, true, Some("docs")));
        assert_eq!(parsed("ls -h -l"), ls(true, true, None));
        assert_eq!(parsed("ls -- -odd"), ls(false, false, Some("-odd")));
        assert_eq!(parsed("ls 'my dir'"), ls(false, false, Some("my dir")));
        assert_eq!(
            refused("ls -x"),
            "ls: unknown option -x; `help ls` explains"
        );
        assert_eq!(
            refused("ls -lx"),
            "ls: unknown option -x; `help ls` explains"
        );
        assert_eq!(
            refused("ls --long"),
            "ls: unknown option --long; `help ls` explains"
        );
        assert_eq!(
            refused("ls a b"),
            "usage: ls [-l] [-h] [-R] [PATH]; `help ls` explains"
        );
    }

    #[test]
    fn get_and_put_take_force_and_several_operands() {
        let get = |force, xattrs, operands: &[&str]| {
            Command::Get(get::Get {
                force,
                xattrs,
                mirror: Default::default(),
                operands: operands.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert_eq!(parsed("get a"), get(false, false, &["a"]));
        assert_eq!(
            parsed("get -f a b local"),
            get(true, false, &["a", "b", "local"])
        );
        assert_eq!(parsed("get -X a"), get(false, true, &["a"]));
        assert_eq!(parsed("get --xattrs -f a"), get(true, true, &["a"]));
        assert_eq!(
            refused("get"),
            "usage: get [-f] [-X] PATH... [LOCAL]; `help get` explains"
        );
        assert_eq!(
            refused("get -l a"),
            "get: unknown option -l; `help get` explains"
        );
        let Command::Put(put) = parsed("put -f x.txt 'my dir'") else {
            panic!("put parses as put");
        };
        assert!(put.force);
        assert_eq!(put.operands, ["x.txt", "my dir"]);
        assert_eq!(
            refused("put"),
            "usage: put [-f] FILE... [DIR]; `help put` explains"
        );
    }

    #[test]
    fn put_and_get_take_the_mirror_flags_of_the_command_line() {
        let Command::Put(put) =
            parsed("put -i --gitignore --exclude-from ex.txt --exclude '*.o' --delete dir")
        else {
            panic!("put parses as put");
        };
        assert!(put.mirror.itemize && put.gitignore && put.mirror.delete);
        assert_eq!(put.mirror.exclude_from, ["ex.txt"]);
        assert_eq!(put.mirror.exclude, ["*.o"]);
        assert_eq!(put.operands, ["dir"]);
        let Command::Get(get) = parsed("get --itemize -n --exclude-from a --exclude-from b x")
        else {
            panic!("get parses as get");
        };
        assert!(get.mirror.itemize && get.mirror.dry_run);
        assert_eq!(get.mirror.exclude_from, ["a", "b"]);
        // The ignore files are those of the tree sent: nothing of a get.
        assert_eq!(
            refused("get --gitignore x"),
            "get: unknown option --gitignore; `help get` explains"
        );
    }

    #[test]
    fn commands_with_operands_want_exactly_theirs() {
        let path = || "docs/old".to_string();
        assert_eq!(parsed("cd docs/old"), Command::Cd(cd::Cd { path: path() }));
        assert_eq!(
            parsed("mkdir docs/old"),
            Command::Mkdir(mkdir::Mkdir { path: path() })
        );
        assert_eq!(
            parsed("rm docs/old"),
            Command::Rm(rm::Rm {
                recursive: false,
                paths: vec![path()]
            })
        );
        assert_eq!(
            parsed("rm -r a b"),
            Command::Rm(rm::Rm {
                recursive: true,
                paths: vec!["a".into(), "b".into()]
            })
        );
        assert_eq!(
            parsed("lcd docs/old"),
            Command::Lcd(lcd::Lcd { path: path() })
        );
        assert_eq!(
            parsed("lls -l"),
            Command::Lls(lls::Lls {
                long: true,
                human: false,
                path: None
            })
        );
        assert_eq!(refused("cd"), "usage: cd PATH; `help cd` explains");
        assert_eq!(refused("cd a b"), "usage: cd PATH; `help cd` explains");
        assert_eq!(refused("mkdir"), "usage: mkdir PATH; `help mkdir` explains");
        assert_eq!(refused("rm"), "usage: rm [-r] PATH...; `help rm` explains");
        assert_eq!(refused("lcd"), "usage: lcd PATH; `help lcd` explains");
        assert_eq!(
            refused("lls a b"),
            "usage: lls [-l] [-h] [PATH]; `help lls` explains"
        );
        assert_eq!(refused("pwd x"), "usage: pwd; `help pwd` explains");
        assert_eq!(refused("lpwd x"), "usage: lpwd; `help lpwd` explains");
    }

    #[test]
    fn rename_and_exit_answer_to_their_aliases() {
        let rename = Command::Rename(rename::Rename {
            from: "a".into(),
            to: "b".into(),
        });
        assert_eq!(parsed("rename a b"), rename);
        assert_eq!(parsed("mv a b"), rename);
        assert_eq!(
            refused("mv a"),
            "usage: rename OLD NEW; `help rename` explains"
        );
        for exit in ["exit", "quit", "bye"] {
            assert_eq!(parsed(exit), Command::Exit(exit::Exit {}));
        }
        assert_eq!(parsed("df -h"), Command::Df(df::Df { human: true }));
        assert_eq!(
            refused("df -l"),
            "df: unknown option -l; `help df` explains"
        );
    }

    #[test]
    fn an_unknown_command_is_refused_with_a_suggestion() {
        assert_eq!(
            refused("lss"),
            "unknown command lss (did you mean lls or ls?); `help` lists them"
        );
        assert_eq!(
            refused("frobnicate x"),
            "unknown command frobnicate; `help` lists them"
        );
        assert_eq!(refused("-x"), "unknown command -x; `help` lists them");
        let escaped = refused("do\x1bit");
        assert!(
            !escaped.contains('\x1b'),
            "control characters escaped: {escaped}"
        );
    }

    #[test]
    fn help_flag_and_help_command_show_the_same_text() {
        assert_eq!(
            parsed("help ls"),
            Command::Help(help::Help {
                command: Some("ls".into())
            })
        );
        assert_eq!(parsed("help"), Command::Help(help::Help { command: None }));
        let shown = help_of("ls --help");
        let mut shell = shell();
        let ls = shell.find_subcommand_mut("ls").expect("ls is a command");
        assert_eq!(shown, ls.render_help().to_string());
        for line in ["Usage: ls [-l] [-h] [-R] [PATH]", "-l ", "-h ", "[PATH]"] {
            assert!(shown.contains(line), "{line}: {shown}");
        }
        assert!(help_of("mv a --help").contains("Usage: rename OLD NEW"));
        assert!(help_of("get -f --help").contains("Usage: get [-f] [-X] PATH... [LOCAL]"));
    }

    #[test]
    fn completion_knows_remote_local_and_command_operands() {
        for name in ["ls", "cd", "get", "rm", "rename", "mv", "mkdir"] {
            assert_eq!(operands(name), Some(Operands::Remote), "{name}");
        }
        for name in ["put", "lcd", "lls"] {
            assert_eq!(operands(name), Some(Operands::Local), "{name}");
        }
        assert_eq!(operands("help"), Some(Operands::Commands));
        for name in ["pwd", "lpwd", "df", "exit", "nonsense"] {
            assert_eq!(operands(name), None, "{name}");
        }
    }
}
