//! `xfer shell HOST:PORT`: an interactive and scriptable session against a server,
//! like `sftp`. One authenticated, sealed connection; a loop of commands over the
//! client (`command/`, one file per command), with line editing, history and
//! completion at a terminal (`complete.rs`, on rustyline), or read from a script
//! (`-b FILE`, or standard input that is not a terminal), echoed, stopping at the
//! first failure unless the line starts with `-`.

mod command;
mod complete;
mod session;
pub(crate) mod words;

use std::cell::RefCell;
use std::io::{BufRead, IsTerminal, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;

pub(crate) use self::command::COMMANDS;
use self::command::Next;
use self::complete::ShellHelper;
use self::session::{Interrupter, Session};
use self::words::shown;
use crate::client::ClientOptions;
use crate::error::{Kind, fail};
use crate::escape::escape;
use crate::ui::report::{self, Json, Style};

/// Where a script comes from.
#[derive(Debug, Clone)]
pub(crate) enum Script {
    /// A file of commands (`-b FILE`).
    File(PathBuf),
    /// Standard input (`-b -`, or standard input that is not a terminal).
    Stdin,
}

/// What `xfer shell` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ShellOptions {
    pub(crate) client: ClientOptions,
    /// The remote directory to start in (`""`: the home).
    pub(crate) dir: String,
    pub(crate) script: Option<Script>,
    /// Progress bars in a script too.
    pub(crate) progress: bool,
    pub(crate) quiet: bool,
}

pub(crate) fn run(options: &ShellOptions) -> Result<()> {
    let script = match &options.script {
        Some(script) => Some(script.clone()),
        None if !std::io::stdin().is_terminal() => Some(Script::Stdin),
        None => None,
    };
    let style = Style {
        quiet: options.quiet,
        json: Json::Off,
        serving: false,
        bar: script.is_none() || options.progress,
        itemize: false,
    };
    let mut session = Session::new(options.client.clone(), style);
    session.connect()?;
    if !options.dir.is_empty() {
        // As `cd /DIR` would: a directory that is not there is said before the prompt.
        command::run(&mut session, &["cd".into(), shown(&options.dir)])?;
    }
    match script {
        Some(script) => run_script(&mut session, &script),
        None => interactive(session),
    }
}

fn prompt(session: &Session) -> String {
    format!(
        "{}:{}> ",
        escape(&session.label()),
        escape(&shown(&session.cwd))
    )
}

/// Runs a script: each command echoed after the prompt; the first failure ends it
/// with that failure's exit code, unless its line starts with `-`.
fn run_script(session: &mut Session, script: &Script) -> Result<()> {
    let lines: Box<dyn BufRead> = match script {
        Script::Stdin => Box::new(std::io::stdin().lock()),
        Script::File(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
        )),
    };
    for line in lines.lines() {
        let line = line.context("cannot read the script")?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (may_fail, command) = match line.strip_prefix('-') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}{}", prompt(session), escape(line))?;
            out.flush()?;
        }
        match execute(session, command) {
            Ok(Next::Exit) => break,
            Ok(Next::Continue) => {}
            Err(err) if may_fail => report::line(&format!("xfer: {err:#}")),
            Err(err) => {
                session.close();
                return Err(err);
            }
        }
    }
    session.close();
    Ok(())
}

fn execute(session: &mut Session, line: &str) -> Result<Next> {
    let words = words::split(line).ok_or_else(|| fail(Kind::Usage, "a quote is not closed"))?;
    command::run(session, &words)
}

/// The prompt at a terminal: line editing, history, completion; Ctrl-C clears
/// the line at the prompt and stops a transfer (its partial data kept) during one.
fn interactive(session: Session) -> Result<()> {
    let session = Rc::new(RefCell::new(session));
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor: rustyline::Editor<ShellHelper, DefaultHistory> =
        rustyline::Editor::with_config(config).context("cannot use the terminal")?;
    editor.set_helper(Some(ShellHelper::new(session.clone())));
    let history = history_file();
    if let Some(history) = &history {
        let _ = editor.load_history(history);
    }
    let (interrupter, interrupted) = {
        let session = session.borrow();
        (session.interrupter.clone(), session.interrupted.clone())
    };
    cut_transfers_on_interrupt(interrupter, interrupted.clone())?;
    loop {
        let prompt = prompt(&session.borrow());
        match editor.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                interrupted.store(false, Ordering::SeqCst);
                let outcome = execute(&mut session.borrow_mut(), &line);
                match outcome {
                    Ok(Next::Exit) => break,
                    Ok(Next::Continue) => {}
                    Err(_) if interrupted.swap(false, Ordering::SeqCst) => report::line(
                        "xfer: interrupted; what arrived is kept: the same command again resumes it",
                    ),
                    Err(err) => report::line(&format!("xfer: {err:#}")),
                }
            }
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break,
            Err(err) => return Err(anyhow::Error::new(err).context("cannot read the command line")),
        }
    }
    if let Some(history) = &history {
        let _ = editor.save_history(history);
    }
    session.borrow_mut().close();
    Ok(())
}

/// Where the shell keeps its history: `$XDG_DATA_HOME/xfer/shell_history`, or
/// `~/.local/share/xfer/shell_history` (directory 0700). Commands never hold keys.
fn history_file() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share"))
        })?;
    let dir = data.join("xfer");
    std::fs::create_dir_all(&dir).ok()?;
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    Some(dir.join("shell_history"))
}

/// SIGINT while a command runs (the prompt reads Ctrl-C itself): cut that
/// command's connection, so its transfer stops and keeps its partial data, and
/// clear the progress bar; `told` says an interrupt happened.
fn cut_transfers_on_interrupt(interrupter: Interrupter, told: Arc<AtomicBool>) -> Result<()> {
    let signalled = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, signalled.clone())
        .context("cannot handle Ctrl-C")?;
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                if signalled.swap(false, Ordering::SeqCst) {
                    let running = interrupter
                        .lock()
                        .expect("no panics while holding the lock")
                        .take();
                    if let Some(socket) = running {
                        told.store(true, Ordering::SeqCst);
                        crate::ui::progress::clear_on_exit();
                        let _ = socket.shutdown(Shutdown::Both);
                    }
                }
            }
        })
        .context("cannot start a thread")?;
    Ok(())
}
