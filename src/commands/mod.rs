//! The commands: each takes the plain options `cli` built, does its work through the
//! layers below (a link from `net`, sessions from `transfer`, files from `fs`) and
//! reports through `ui`. Shared here: what a transfer command needs to meet its peer
//! ([`Peering`]), and the loop that runs one session per authenticated connection.

pub mod recv;
pub mod remote;
pub mod send;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Invocation};
use crate::client::options::{Encryption, Peering};
use crate::key::{self};
use crate::net::{self, Handler, Link, TcpConnection, listen};
use crate::proto::message::Role;
use crate::proto::negotiated::{Feature, Negotiated};
use crate::transfer::Tally;
use crate::ui::report::{self, Reporter, Summary};

/// Runs what the command line asked for.
pub fn run(invocation: Invocation) -> Result<()> {
    let quiet = match &invocation {
        Invocation::Send(options) => options.peering.style.quiet,
        Invocation::Recv(options) => options.peering.style.quiet,
        Invocation::Serve(options) => options.style.quiet,
        Invocation::Get(options) => options.style.quiet,
        Invocation::Ls(options) => options.style.quiet,
        Invocation::Change { style, .. } => style.quiet,
        Invocation::Shell(options) => options.quiet,
        _ => false,
    };
    if quiet {
        report::set_quiet();
    }
    match invocation {
        Invocation::Send(options) => send::run(&options),
        Invocation::Recv(options) => recv::run(&options),
        Invocation::Serve(options) => crate::serve::run(&options),
        Invocation::Get(options) => remote::get(&options),
        Invocation::Ls(options) => remote::ls(&options),
        Invocation::Change {
            client,
            change,
            style,
        } => remote::change(&client, &change, style),
        Invocation::Passwd { user, realm } => passwd(&user, &realm),
        Invocation::Shell(options) => crate::shell::run(&options),
        Invocation::Keygen(path) => keygen(path),
        Invocation::Completions(shell) => {
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "xfer", &mut stdout);
            Ok(stdout.flush()?)
        }
        Invocation::Man { command, dir } => man(command.as_deref(), dir),
    }
}

fn keygen(path: Option<PathBuf>) -> Result<()> {
    let new_key = key::generate()?;
    match path {
        Some(path) => key::write_new(&path, &new_key),
        None => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{new_key}")?;
            Ok(stdout.flush()?)
        }
    }
}

/// `xfer passwd NAME --realm REALM`: asks for a password twice (no echo) and
/// prints the users-file line with the key derived from it.
fn passwd(user: &str, realm: &str) -> Result<()> {
    // From a script: $XFER_PASSWORD, as the clients take it; at a terminal, twice.
    let first = match std::env::var(crate::password::PASSWORD_ENV) {
        Ok(password) => password,
        Err(_) => {
            let first = crate::password::prompt(&format!("new password for {user}: "))?;
            let second = crate::password::prompt("again: ")?;
            if first != second {
                anyhow::bail!("the two passwords differ; nothing printed");
            }
            first
        }
    };
    if first.chars().count() < 12 {
        report::warn(
            "a password under 12 characters falls to an offline guess (see README, Security)",
        );
    }
    let key = crate::password::derive_hex(&first, realm, user)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "[users.{user}]    # for realm {realm:?}")?;
    writeln!(stdout, "key = \"{key}\"")?;
    Ok(stdout.flush()?)
}

/// `xfer man [COMMAND]`, or every page into a directory.
fn man(command: Option<&str>, dir: Option<PathBuf>) -> Result<()> {
    let root = Cli::command();
    let pages = |name: Option<&str>| -> Result<(String, clap::Command)> {
        match name {
            None => Ok(("xfer".into(), root.clone())),
            Some(name) => {
                let sub = root
                    .find_subcommand(name)
                    .ok_or_else(|| anyhow::anyhow!("no subcommand {name:?}; see `xfer --help`"))?;
                let title = format!("xfer-{name}");
                Ok((title.clone(), sub.clone().name(title)))
            }
        }
    };
    match dir {
        None => {
            let (_, page) = pages(command)?;
            let mut stdout = std::io::stdout().lock();
            match render_page(page, &mut stdout).and_then(|()| stdout.flush()) {
                // `xfer man | head`: the reader had enough.
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => Ok(other?),
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            let names = std::iter::once(None).chain(
                root.get_subcommands()
                    .map(|sub| Some(sub.get_name().to_string()))
                    .collect::<Vec<_>>(),
            );
            for name in names {
                let (title, page) = pages(name.as_deref())?;
                let mut file = std::fs::File::create(dir.join(format!("{title}.1")))?;
                render_page(page, &mut file)?;
            }
            Ok(())
        }
    }
}

/// One man page from the clap definition. The text after the options (examples,
/// exit codes) becomes sections of its own, its lines kept as written: clap_mangen
/// would reflow them into one paragraph.
fn render_page(page: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let after = page
        .get_after_help()
        .map(|text| text.to_string())
        .unwrap_or_default();
    let page = page
        .version(env!("CARGO_PKG_VERSION"))
        .after_help(None::<&'static str>);
    let has_subcommands = page.has_subcommands();
    let man = clap_mangen::Man::new(page);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if has_subcommands {
        man.render_subcommands_section(out)?;
    }
    for block in after.split("\n\n") {
        let (heading, body) = block.split_once('\n').unwrap_or((block, ""));
        let heading = match heading.trim_end_matches(':') {
            "Exit codes" => "EXIT STATUS".to_string(),
            other => other.to_uppercase(),
        };
        writeln!(out, ".SH \"{heading}\"\n.nf")?;
        for line in body.lines() {
            // Roff: a backslash is written \e; a line may not start with . or '.
            writeln!(out, "\\&{}", line.replace('\\', "\\e"))?;
        }
        writeln!(out, ".fi")?;
    }
    man.render_version_section(out)
}

/// One session on an authenticated connection: the work, with its tally.
pub type Session = Arc<dyn Fn(&mut TcpConnection, &mut Tally) -> Result<()> + Send + Sync>;

/// Meets the peer as `peering.link` says and runs `session` on each authenticated
/// connection (one, unless serving), reporting each; `verb` names what happened
/// (`sent`, `received`).
pub fn run_link(
    peering: &Peering,
    role: Role,
    compress: Option<i32>,
    verb: &'static str,
    session: Session,
) -> Result<()> {
    let style = peering.style;
    let encryption = peering.security.encryption;
    let began = Arc::new(AtomicBool::new(false));
    let handler: Handler = {
        let began = began.clone();
        Arc::new(move |mut conn: TcpConnection, peer| {
            began.store(true, Ordering::SeqCst);
            let reporter = Reporter::new(style).for_peer(peer);
            warn_if_clear(&conn.negotiated, encryption, &reporter);
            let mut tally = Tally::new(reporter, &conn.negotiated);
            let result = session(&mut conn, &mut tally);
            tally.finish(verb, &result);
            if result.is_err()
                && let Some(socket) = conn.closer.socket()
            {
                net::socket::linger(socket);
            }
            result
        })
    };
    let result = match &peering.link {
        Link::Connect { to, wait } => {
            net::signals::interrupt_clears_the_screen()?;
            peering
                .initiating(role, compress)
                .and_then(|initiating| net::connect(to, *wait, peering.timeouts, &initiating))
                .and_then(|(conn, peer)| handler(conn, peer))
        }
        Link::Listen { at, serve } => {
            // Before anyone can learn our address, so that no early signal kills us unhandled.
            let stop = net::signals::stop_on_signals()?;
            let listener = listen::bind(at)?;
            let local = listener
                .local_addr()
                .map_err(|err| crate::error::tag(crate::error::Kind::Network, err))?;
            let key = match key::load(peering.auth.key_file.as_deref())? {
                Some(key) => key,
                None => net::keyless::generate_for_listener(local, role)?,
            };
            Reporter::new(style).listening(&local, at.any_port());
            let accepting = Arc::new(peering.accepting(role, key, compress));
            listen::serve(listener, accepting, *serve, stop, handler)
        }
    };
    // A run that failed before any session began (cannot connect, wrong key) still
    // gets its summary; a serving process logged each session already.
    if result.is_err() && !began.load(Ordering::SeqCst) && !style.serving {
        Reporter::new(style).finish(verb, &Summary::default(), &result);
    }
    result
}

/// One line when a transfer goes in clear because the peer cannot or will not
/// encrypt.
fn warn_if_clear(negotiated: &Negotiated, encryption: Encryption, reporter: &Reporter) {
    if encryption == Encryption::Preferred
        && !negotiated.has(Feature::Aead)
        && !reporter.style().serving
    {
        report::warn(
            "the peer does not encrypt (it cannot, or was told --no-encrypt): this \
             transfer goes in clear (authenticated, not confidential); --encrypt \
             refuses such peers",
        );
    }
}
