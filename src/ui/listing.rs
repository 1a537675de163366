//! How a remote listing and a usage reply read on a terminal and in JSON: `ls -l`-style
//! lines with UTC times (for the shell's `lls -l` too, from local metadata), usage
//! with quota percentages. Pure formatting; it reaches for nothing but the reply
//! types of `proto::message` and the escaping beside it, and reads no disk.

use indicatif::HumanBytes;
use serde_json::json;

use crate::escape::escape;
use crate::proto::message::{Item, ItemKind, Usage};

/// `drwxr-x---      4096 2024-06-01 12:00 name`, times in UTC.
pub(crate) fn long_line(item: &Item, human: bool) -> String {
    let kind = match item.kind {
        ItemKind::Dir => 'd',
        ItemKind::File => '-',
        ItemKind::Other => '?',
        ItemKind::Symlink => 'l',
    };
    let mode = item
        .mode
        .map_or_else(|| "?????????".to_string(), |mode| permissions(mode as u32));
    let size = if human {
        HumanBytes(item.size).to_string()
    } else {
        item.size.to_string()
    };
    let time = item.seconds().map_or_else(|| "-".repeat(16), date_time);
    let target = match &item.target {
        Some(target) => format!(" -> {}", escape(target)),
        None => String::new(),
    };
    format!(
        "{kind}{mode} {size:>12} {time} {}{target}",
        escape(&item.name)
    )
}

/// `name`, or `name/` for a directory: the shell's short listing line.
pub(crate) fn short_line(item: &Item) -> String {
    let slash = if item.kind == ItemKind::Dir { "/" } else { "" };
    format!("{}{slash}", escape(&item.name))
}

/// Writes `items` one per line, `ls -l`-style when `long` (sizes in KiB, MiB...
/// when `human`): the shell's `ls` and `lls` alike.
pub(crate) fn print_items(
    out: &mut impl std::io::Write,
    items: &[Item],
    long: bool,
    human: bool,
) -> std::io::Result<()> {
    for item in items {
        if long {
            writeln!(out, "{}", long_line(item, human))?;
        } else {
            writeln!(out, "{}", short_line(item))?;
        }
    }
    Ok(())
}

/// A local entry as a listing item, for the same `ls -l` line (`lls -l`): a link
/// (metadata not followed) is of kind `other`, as a server lists one.
pub(crate) fn local_item(name: String, metadata: &std::fs::Metadata) -> Item {
    use std::os::unix::fs::MetadataExt;
    let kind = if metadata.is_dir() {
        ItemKind::Dir
    } else if metadata.is_file() {
        ItemKind::File
    } else {
        ItemKind::Other
    };
    Item {
        name,
        kind,
        size: if kind == ItemKind::File {
            metadata.len()
        } else {
            0
        },
        mode: Some(u64::from(metadata.mode() & 0o7777)),
        mtime: u64::try_from(metadata.mtime()).ok(),
        mtime_signed: (metadata.mtime() < 0).then_some(metadata.mtime()),
        target: None,
    }
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

/// `YYYY-MM-DD HH:MM` in UTC for seconds since the epoch (negative before it).
pub(crate) fn date_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).ok().map_or_else(
        || "-".repeat(16),
        |time| time.strftime("%Y-%m-%d %H:%M").to_string(),
    )
}

pub(crate) fn item_json(item: &Item) -> serde_json::Value {
    let mut json = json!({
        "name": item.name,
        "kind": match item.kind {
            ItemKind::File => "file",
            ItemKind::Dir => "dir",
            ItemKind::Other => "other",
            ItemKind::Symlink => "symlink",
        },
        "size": item.size, "mode": item.mode, "mtime": item.seconds(),
    });
    if let Some(target) = &item.target {
        json["target"] = json!(target);
    }
    json
}

/// `used 1.2 GiB of 20 GiB (6% used), 312 entries of 100000 (0% used)`: every
/// file, directory and link in the home is one of the entries `max_files` bounds.
pub(crate) fn usage_line(usage: &Usage, human: bool) -> String {
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
        Some(quota) => format!(" of {quota} ({}% used)", percent(files, quota)),
        None => String::new(),
    };
    let files = super::report::entries(files as usize);
    format!("used {}{byte_quota}, {files}{file_quota}", bytes(used))
}

/// `used` of `of` in whole percent, rounded down (100 of a quota of 0).
fn percent(used: u64, of: u64) -> u64 {
    if of == 0 {
        100
    } else {
        (u128::from(used) * 100 / u128::from(of)) as u64
    }
}

pub(crate) fn usage_json(usage: &Usage) -> serde_json::Value {
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
        assert_eq!(date_time(-625_776_833), "1950-03-04 05:06");
        assert_eq!(date_time(i64::MAX), "-".repeat(16));
        assert_eq!(permissions(0o754), "rwxr-xr--");
        let item = Item {
            name: "a\u{1b}b".into(),
            kind: ItemKind::File,
            size: 2048,
            mode: Some(0o644),
            mtime: Some(1_700_000_000),
            mtime_signed: None,
            target: None,
        };
        assert_eq!(
            long_line(&item, true),
            "-rw-r--r--     2.00 KiB 2023-11-14 22:13 a\\u{1b}b"
        );
        let link = Item {
            name: "lib.so".into(),
            kind: ItemKind::Symlink,
            size: 0,
            mode: Some(0o777),
            mtime: Some(1_700_000_000),
            mtime_signed: None,
            target: Some("lib.so.1\n".into()),
        };
        assert_eq!(
            long_line(&link, false),
            "lrwxrwxrwx            0 2023-11-14 22:13 lib.so -> lib.so.1\\u{a}"
        );
        let usage = Usage {
            bytes: Some(512),
            files: Some(3),
            quota_bytes: Some(Some(1024)),
            quota_files: Some(None),
        };
        assert_eq!(
            usage_line(&usage, false),
            "used 512 bytes of 1024 bytes (50% used), 3 entries"
        );
    }
}
