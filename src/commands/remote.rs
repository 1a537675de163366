//! The one-shot client commands against a server: `xfer get`, `xfer ls` (with
//! `--usage`), `xfer mkdir`, `xfer rm`, `xfer mv`. Each logs in, makes its requests,
//! says goodbye; a transfer reports like `send`/`recv` do.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::client::{Client, ClientOptions};
use crate::escape::escape;
use crate::fs::sink::TargetDir;
use crate::transfer::Tally;
use crate::transfer::recv::{Destination, Settings};
use crate::ui::listing::{item_json, long_line, usage_json, usage_line};
use crate::ui::report::{Json, Reporter, Style, Summary};

/// `xfer get HOST:PORT:PATH... [LOCAL_DIR]`.
#[derive(Debug, Clone)]
pub(crate) struct GetOptions {
    pub(crate) client: ClientOptions,
    pub(crate) paths: Vec<String>,
    pub(crate) dir: PathBuf,
    /// Write the one file to standard output instead.
    pub(crate) stdout: bool,
    pub(crate) settings: Settings,
    pub(crate) style: Style,
}

pub(crate) fn get(options: &GetOptions) -> Result<()> {
    use crate::net::signals::{Kept, interrupt_clears_the_screen};
    let dry_run = options.settings.asked.is_some_and(|(_, dry_run)| dry_run);
    let to_disk = !options.stdout && !dry_run;
    interrupt_clears_the_screen(Kept::receiving(to_disk, options.settings.resume))?;
    let (destination, _lock) = if options.stdout {
        (Destination::Stdout, None)
    } else if dry_run {
        // A dry run makes nothing, not even the local directory.
        let (target, lock) =
            TargetDir::open_for_dry_run(&options.dir, "the local directory", options.style)?;
        (Destination::Dir(target.for_a_get()), lock)
    } else {
        let (target, lock) = TargetDir::make_and_lock(&options.dir, "the local directory", 0o777)?;
        (Destination::Dir(target.for_a_get()), Some(lock))
    };
    let mut client = connect(&options.client, options.style, "received")?;
    let mut tally = Tally::new(Reporter::new(options.style), client.negotiated());
    let result = client
        .get(&options.paths, &destination, options.settings, &mut tally)
        .and_then(|()| tally.verdict());
    tally.finish("received", &result);
    client.bye();
    result
}

/// `xfer ls HOST:PORT[:PATH]`.
#[derive(Debug, Clone)]
pub(crate) struct LsOptions {
    pub(crate) client: ClientOptions,
    pub(crate) path: String,
    /// Kind, mode, size, time and name, as `ls -l`.
    pub(crate) long: bool,
    /// Sizes in KiB, MiB, ... (`-h`).
    pub(crate) human: bool,
    /// Every directory beneath too, entries named by their relative paths (`-R`).
    pub(crate) recursive: bool,
    /// The usage against the quota instead of a listing.
    pub(crate) usage: bool,
    pub(crate) style: Style,
}

pub(crate) fn ls(options: &LsOptions) -> Result<()> {
    let mut client = connect(&options.client, options.style, "listed")?;
    let mut out = std::io::stdout().lock();
    if options.usage {
        let usage = client.usage()?;
        client.bye();
        if options.style.json != Json::Off {
            writeln!(out, "{}", usage_json(&usage))?;
        } else {
            writeln!(out, "{}", usage_line(&usage, options.human))?;
        }
        return Ok(out.flush()?);
    }
    let items = if options.recursive {
        client.list_tree(&options.path)?
    } else {
        client.list(&options.path)?
    };
    client.bye();
    for item in &items {
        let line = if options.style.json != Json::Off {
            item_json(item).to_string()
        } else if options.long {
            long_line(item, options.human)
        } else {
            escape(&item.name).into_owned()
        };
        writeln!(out, "{line}")?;
    }
    Ok(out.flush()?)
}

/// What `xfer mkdir`, `rm` and `mv` do.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Mkdir(String),
    /// One path after the other, stopping at the first failure.
    Remove {
        paths: Vec<String>,
        /// Directories with all inside (`-r`).
        recursive: bool,
    },
    Rename(String, String),
}

/// `xfer mkdir`, `xfer rm`, `xfer mv`.
pub(crate) fn change(client: &ClientOptions, change: &Change, style: Style) -> Result<()> {
    let mut connection = connect(client, style, "changed")?;
    let result = match change {
        Change::Mkdir(path) => connection.mkdir(path),
        Change::Remove { paths, recursive } => paths.iter().try_for_each(|path| {
            if *recursive {
                connection.remove_tree(path)
            } else {
                connection.remove(path)
            }
        }),
        Change::Rename(from, to) => connection.rename(from, to),
    };
    connection.bye();
    result
}

/// Logs in; a failure to is reported like a session's (a JSON summary with `--json`).
fn connect(options: &ClientOptions, style: Style, verb: &str) -> Result<Client> {
    Client::connect(options, style).inspect_err(|err| {
        let failed = Err(crate::error::retold(err));
        if style.json != Json::Off {
            Reporter::new(style).finish(verb, &Summary::default(), &failed);
        }
    })
}
