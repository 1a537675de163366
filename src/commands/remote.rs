//! The one-shot client commands against a server: `xfer get`, `xfer ls` (with
//! `--usage`), `xfer mkdir`, `xfer rm`, `xfer mv`. Each logs in, makes its requests,
//! says goodbye; a transfer reports like `send`/`recv` do.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::HumanBytes;
use serde_json::json;

use crate::client::{Client, ClientOptions};
use crate::error::{Classify, Kind};
use crate::fs::sink::TargetDir;
use crate::proto::message::{Item, ItemKind, Usage};
use crate::transfer::Tally;
use crate::transfer::recv::{Destination, Settings};
use crate::ui::escape::{escape, escape_path};
use crate::ui::report::{Json, Reporter, Style, Summary};

/// `xfer get HOST:PORT:PATH... [LOCAL_DIR]`.
#[derive(Debug, Clone)]
pub struct GetOptions {
    pub client: ClientOptions,
    pub paths: Vec<String>,
    pub dir: PathBuf,
    /// Write the one file to standard output instead.
    pub stdout: bool,
    pub settings: Settings,
    pub style: Style,
}

pub fn get(options: &GetOptions) -> Result<()> {
    crate::net::signals::interrupt_clears_the_screen()?;
    let (destination, _lock) = if options.stdout {
        (Destination::Stdout, None)
    } else {
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("cannot create {}", escape_path(&options.dir)))
            .classify(Kind::Io)?;
        let target = TargetDir::open(&options.dir)?;
        let lock = target.lock(&options.dir)?;
        (Destination::Dir(target), Some(lock))
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
pub struct LsOptions {
    pub client: ClientOptions,
    pub path: String,
    /// Kind, mode, size, time and name, as `ls -l`.
    pub long: bool,
    /// Sizes in KiB, MiB, ... (`-h`).
    pub human: bool,
    /// The usage against the quota instead of a listing.
    pub usage: bool,
    pub style: Style,
}

pub fn ls(options: &LsOptions) -> Result<()> {
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
    let items = client.list(&options.path)?;
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
pub enum Change {
    Mkdir(String),
    Remove(String),
    Rename(String, String),
}

/// `xfer mkdir`, `xfer rm`, `xfer mv`.
pub fn change(client: &ClientOptions, change: &Change, style: Style) -> Result<()> {
    let mut connection = connect(client, style, "changed")?;
    let result = match change {
        Change::Mkdir(path) => connection.mkdir(path),
        Change::Remove(path) => connection.remove(path),
        Change::Rename(from, to) => connection.rename(from, to),
    };
    connection.bye();
    result
}

/// Logs in; a failure to is reported like a session's (a JSON summary with `--json`).
fn connect(options: &ClientOptions, style: Style, verb: &str) -> Result<Client> {
    Client::connect(options, style).inspect_err(|_| {
        let failed = Err(anyhow::anyhow!("cannot log in"));
        if style.json != Json::Off {
            Reporter::new(style).finish(verb, &Summary::default(), &failed);
        }
    })
}

/// `drwxr-x---      4096 2024-06-01 12:00 name`, times in UTC.
pub fn long_line(item: &Item, human: bool) -> String {
    let kind = match item.kind {
        ItemKind::Dir => 'd',
        ItemKind::File => '-',
        ItemKind::Other => '?',
    };
    let mode = item
        .mode
        .map_or_else(|| "?????????".to_string(), |mode| permissions(mode as u32));
    let size = if human {
        HumanBytes(item.size).to_string()
    } else {
        item.size.to_string()
    };
    let time = item.mtime.map_or_else(|| "-".repeat(16), date_time);
    format!("{kind}{mode} {size:>12} {time} {}", escape(&item.name))
}

fn permissions(mode: u32) -> String {
    let bits = ['r', 'w', 'x'];
    (0..9)
        .map(|i| {
            if mode & (0o400 >> i) != 0 {
                bits[i % 3]
            } else {
                '-'
            }
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM` in UTC for seconds since the epoch.
pub fn date_time(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        of_day / 3600,
        (of_day % 3600) / 60
    )
}

fn item_json(item: &Item) -> serde_json::Value {
    json!({
        "name": item.name,
        "kind": match item.kind { ItemKind::File => "file", ItemKind::Dir => "dir", ItemKind::Other => "other" },
        "size": item.size, "mode": item.mode, "mtime": item.mtime,
    })
}

/// `used 1.2 GiB of 20 GiB, 312 files of 100000`.
pub fn usage_line(usage: &Usage, human: bool) -> String {
    let bytes = |n: u64| {
        if human {
            HumanBytes(n).to_string()
        } else {
            format!("{n} bytes")
        }
    };
    let used = usage.bytes.unwrap_or(0);
    let files = usage.files.unwrap_or(0);
    let byte_quota = match usage.quota_bytes.flatten() {
        Some(quota) => format!(" of {} ({}% used)", bytes(quota), percent(used, quota)),
        None => " (no quota)".into(),
    };
    let file_quota = match usage.quota_files.flatten() {
        Some(quota) => format!(" of {quota}"),
        None => String::new(),
    };
    let files = match files {
        1 => "1 file".to_string(),
        n => format!("{n} files"),
    };
    format!("used {}{byte_quota}, {files}{file_quota}", bytes(used))
}

fn percent(used: u64, of: u64) -> u64 {
    if of == 0 {
        100
    } else {
        (u128::from(used) * 100 / u128::from(of)) as u64
    }
}

fn usage_json(usage: &Usage) -> serde_json::Value {
    json!({
        "bytes": usage.bytes, "files": usage.files,
        "quota_bytes": usage.quota_bytes.flatten(), "quota_files": usage.quota_files.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_modes_read_like_ls() {
        assert_eq!(date_time(0), "1970-01-01 00:00");
        assert_eq!(date_time(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(date_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(permissions(0o754), "rwxr-xr--");
        let item = Item {
            name: "a\u{1b}b".into(),
            kind: ItemKind::File,
            size: 2048,
            mode: Some(0o644),
            mtime: Some(1_700_000_000),
        };
        assert_eq!(
            long_line(&item, true),
            "-rw-r--r--     2.00 KiB 2023-11-14 22:13 a\\u{1b}b"
        );
        let usage = Usage {
            bytes: Some(512),
            files: Some(3),
            quota_bytes: Some(Some(1024)),
            quota_files: Some(None),
        };
        assert_eq!(
            usage_line(&usage, false),
            "used 512 bytes of 1024 bytes (50% used), 3 files"
        );
    }
}
