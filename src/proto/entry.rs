//! The rules on what one offered entry may hold (`PROTOCOL.md` sections 6 and 16):
//! which members each kind carries under `meta`, their ranges, and the hex
//! spellings of names and link targets. Pure checks on a decoded [`Entry`]; the
//! rules that span entries (a hard link's `of`, a directory before its contents)
//! are the offer's (`transfer::offer`).

use super::message::{Entry, EntryKind};
use crate::hex::unhex_vec;

/// Largest permission value under `meta`: setuid, setgid, sticky and rwx.
pub(crate) const MAX_MODE: u64 = 0o7777;
/// Largest nanosecond value.
pub(crate) const MAX_NANOS: u32 = 999_999_999;
/// Longest symbolic link target, in bytes (Linux's `PATH_MAX`).
pub(crate) const MAX_TARGET: usize = 4096;
/// Longest extended attribute name, in bytes (Linux's `XATTR_NAME_MAX`).
pub(crate) const MAX_XATTR_NAME: usize = 255;
/// Largest extended attribute value, in bytes (Linux's `XATTR_SIZE_MAX`).
pub(crate) const MAX_XATTR_VALUE: usize = 65_536;
/// Most bytes of xattr values one entry may carry.
pub(crate) const MAX_XATTR_TOTAL: usize = 1 << 20;
/// Most entries a receiver takes in one offer. A tree of 200 000 entries costs a
/// receiver about 40 MiB here; a million is the ceiling a hostile sender can make it
/// hold (and a server builds no larger offer for a `get`). Larger trees go in
/// several sessions, or as one tar stream.
pub(crate) const MAX_OFFER_ENTRIES: usize = 1_000_000;
/// Longest `reason`, and longest owner or group name, in bytes.
pub(crate) const MAX_REASON: usize = 200;
pub(crate) const MAX_OWNER_NAME: usize = 255;

/// Checks `entry` against the rules of the features in force. Without `meta` an
/// entry is what it was in version 2: a file or a directory with unsigned times,
/// and members it does not know are ignored (cleared here), as unknown members
/// always were. The error is the reason for a `protocol` failure.
pub(crate) fn check_entry(entry: &mut Entry, meta: bool) -> Result<(), String> {
    if !meta {
        return check_plain(entry);
    }
    check_path_spelling(entry)?;
    let kind = entry.kind;
    let allowed = |member: Member| member.allowed_on(kind);
    for (member, present) in entry_members(entry) {
        if present && !allowed(member) {
            return Err(format!(
                "member {:?} is not allowed on a {} entry",
                member.name(),
                kind.name()
            ));
        }
    }
    check_size(entry)?;
    if entry.mode.is_some_and(|mode| mode > MAX_MODE) {
        return Err(format!("mode {:o} is over 0o7777", entry.mode.unwrap_or(0)));
    }
    if entry.mtime_ns.is_some_and(|ns| ns > MAX_NANOS)
        || (entry.mtime_ns.is_some() && entry.mtime.is_none())
    {
        return Err("mtime_ns is out of range or without mtime".into());
    }
    check_kind_members(entry)?;
    check_owner(entry)?;
    check_xattrs(entry)
}

fn check_plain(entry: &mut Entry) -> Result<(), String> {
    if !matches!(entry.kind, EntryKind::File | EntryKind::Dir) {
        return Err(format!("unknown entry kind {:?}", entry.kind.name()));
    }
    if entry.mtime.is_some_and(|mtime| mtime < 0) {
        return Err("a negative mtime needs the feature meta".into());
    }
    *entry = Entry {
        path: std::mem::take(&mut entry.path),
        kind: entry.kind,
        size: entry.size,
        mode: entry.mode,
        mtime: entry.mtime,
        ..Entry::default()
    };
    Ok(())
}

/// Exactly one of `path` and `path_hex`, and `path_hex` only for bytes that are
/// not UTF-8 (one spelling per name).
fn check_path_spelling(entry: &Entry) -> Result<(), String> {
    match (&entry.extra().path_hex, entry.path.is_empty()) {
        (None, true) => Err("an entry has neither path nor path_hex".into()),
        (Some(_), false) => Err("an entry has both path and path_hex".into()),
        (Some(hex), true) => match unhex_vec(hex) {
            None => Err("path_hex is not lowercase hex".into()),
            Some(bytes) if std::str::from_utf8(&bytes).is_ok() => {
                Err("path_hex spells a UTF-8 name, which travels as path".into())
            }
            Some(_) => Ok(()),
        },
        (None, false) => Ok(()),
    }
}

/// `size` is the file's length (`null` only for a stream); every other kind has 0.
fn check_size(entry: &Entry) -> Result<(), String> {
    let fine = match entry.kind {
        EntryKind::File => entry.sparse.is_none() || entry.size.is_some(),
        _ => entry.size == Some(0),
    };
    if fine {
        Ok(())
    } else {
        Err(format!(
            "a {} entry with size {:?}",
            entry.kind.name(),
            entry.size
        ))
    }
}

/// The members that make a kind what it is: a link's target, a hard link's `of`,
/// a device's numbers, an unsent entry's reason, a sparse file's flag.
fn check_kind_members(entry: &Entry) -> Result<(), String> {
    match entry.kind {
        EntryKind::Symlink => check_target(entry),
        EntryKind::Hardlink if entry.extra().of.is_none() => {
            Err("a hardlink entry without of".into())
        }
        EntryKind::Char | EntryKind::Block
            if entry.extra().major.is_none() || entry.extra().minor.is_none() =>
        {
            Err("a device entry without major and minor".into())
        }
        EntryKind::Unsent => match &entry.extra().reason {
            Some(reason) if (1..=MAX_REASON).contains(&reason.len()) => Ok(()),
            _ => Err("an unsent entry needs a reason of 1 to 200 bytes".into()),
        },
        EntryKind::File if entry.sparse == Some(false) => Err("sparse is true or absent".into()),
        _ => Ok(()),
    }
}

/// Exactly one of `target` and `target_hex`; 1 to 4096 bytes, no NUL; hex only for
/// bytes that are not UTF-8.
fn check_target(entry: &Entry) -> Result<(), String> {
    let bytes = match (&entry.extra().target, &entry.extra().target_hex) {
        (Some(target), None) => target.as_bytes().to_vec(),
        (None, Some(hex)) => {
            let bytes = unhex_vec(hex).ok_or("target_hex is not lowercase hex")?;
            if std::str::from_utf8(&bytes).is_ok() {
                return Err("target_hex spells a UTF-8 target, which travels as target".into());
            }
            bytes
        }
        _ => return Err("a symlink needs exactly one of target and target_hex".into()),
    };
    if bytes.is_empty() || bytes.len() > MAX_TARGET || bytes.contains(&0) {
        return Err("a link target is 1 to 4096 bytes without NUL".into());
    }
    Ok(())
}

/// Names come with their numbers; a name is 1 to 255 bytes without NUL.
fn check_owner(entry: &Entry) -> Result<(), String> {
    for (name, number) in [
        (&entry.extra().owner, entry.extra().uid),
        (&entry.extra().group, entry.extra().gid),
    ] {
        if let Some(name) = name {
            if number.is_none() {
                return Err("owner or group without its number".into());
            }
            if name.is_empty() || name.len() > MAX_OWNER_NAME || name.contains('\0') {
                return Err("an owner or group name is 1 to 255 bytes without NUL".into());
            }
        }
    }
    Ok(())
}

/// Names of 1 to 255 bytes without NUL, values as lowercase hex of at most 64 KiB,
/// at most 1 MiB of values in all.
fn check_xattrs(entry: &Entry) -> Result<(), String> {
    let Some(xattrs) = &entry.extra().xattrs else {
        return Ok(());
    };
    let mut total = 0;
    for (name, value) in xattrs {
        if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains('\0') {
            return Err("an xattr name is 1 to 255 bytes without NUL".into());
        }
        if value.len() > 2 * MAX_XATTR_VALUE || unhex_vec(value).is_none() {
            return Err(format!(
                "xattr {name:?}: the value is not hex of at most 64 KiB"
            ));
        }
        total += value.len() / 2;
        if total > MAX_XATTR_TOTAL {
            return Err("over 1 MiB of xattr values on one entry".into());
        }
    }
    Ok(())
}

/// The members whose presence depends on the kind.
#[derive(Debug, Clone, Copy)]
enum Member {
    Mode,
    Mtime,
    Target,
    Of,
    Device,
    Owner,
    Xattrs,
    Sparse,
    Reason,
}

impl Member {
    fn name(self) -> &'static str {
        match self {
            Member::Mode => "mode",
            Member::Mtime => "mtime",
            Member::Target => "target",
            Member::Of => "of",
            Member::Device => "major/minor",
            Member::Owner => "uid/gid/owner/group",
            Member::Xattrs => "xattrs",
            Member::Sparse => "sparse",
            Member::Reason => "reason",
        }
    }

    /// Section 16's table: which kinds may carry this member.
    fn allowed_on(self, kind: EntryKind) -> bool {
        use EntryKind::*;
        match self {
            Member::Mode => matches!(kind, File | Dir | Fifo | Socket | Char | Block),
            Member::Mtime | Member::Owner => !matches!(kind, Hardlink | Unsent),
            Member::Target => kind == Symlink,
            Member::Of => kind == Hardlink,
            Member::Device => matches!(kind, Char | Block),
            Member::Xattrs => matches!(kind, File | Dir | Symlink),
            Member::Sparse => kind == File,
            Member::Reason => kind == Unsent,
        }
    }
}

fn entry_members(entry: &Entry) -> [(Member, bool); 9] {
    [
        (Member::Mode, entry.mode.is_some()),
        (
            Member::Mtime,
            entry.mtime.is_some() || entry.mtime_ns.is_some(),
        ),
        (
            Member::Target,
            entry.extra().target.is_some() || entry.extra().target_hex.is_some(),
        ),
        (Member::Of, entry.extra().of.is_some()),
        (
            Member::Device,
            entry.extra().major.is_some() || entry.extra().minor.is_some(),
        ),
        (
            Member::Owner,
            entry.extra().uid.is_some()
                || entry.extra().gid.is_some()
                || entry.extra().owner.is_some()
                || entry.extra().group.is_some(),
        ),
        (Member::Xattrs, entry.extra().xattrs.is_some()),
        (Member::Sparse, entry.sparse.is_some()),
        (Member::Reason, entry.extra().reason.is_some()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::message::{Message, decode};

    fn entry_of(json: &str) -> Entry {
        let frame = format!(r#"{{"type":"offer","entries":[{json}]}}"#);
        match decode(frame.as_bytes()) {
            Ok(Message::Offer { mut entries, .. }) => entries.remove(0),
            other => panic!("{json}: {other:?}"),
        }
    }

    fn verdict(json: &str, meta: bool) -> Result<Entry, String> {
        let mut entry = entry_of(json);
        check_entry(&mut entry, meta).map(|()| entry)
    }

    #[test]
    fn every_kind_with_its_members_is_accepted_under_meta() {
        for json in [
            r#"{"path":"d","kind":"dir","size":0,"mode":1023,"mtime":-1,"mtime_ns":500000000}"#,
            r#"{"path":"f","kind":"file","size":5,"mode":2541,"mtime":4102444800,"uid":0,"gid":0,"owner":"root","group":"root","xattrs":{"user.a":"00ff"}}"#,
            r#"{"path":"s","kind":"file","size":5,"sparse":true}"#,
            r#"{"path":"h","kind":"hardlink","size":0,"of":1}"#,
            r#"{"path":"l","kind":"symlink","size":0,"target":"../x","mtime":5,"xattrs":{}}"#,
            r#"{"path":"l","kind":"symlink","size":0,"target_hex":"ff2f"}"#,
            r#"{"path_hex":"ff","kind":"fifo","size":0,"mode":420}"#,
            r#"{"path":"c","kind":"char","size":0,"major":1,"minor":3}"#,
            r#"{"path":"b","kind":"block","size":0,"major":8,"minor":0}"#,
            r#"{"path":"k","kind":"socket","size":0}"#,
            r#"{"path":"u","kind":"unsent","size":0,"reason":"a socket"}"#,
        ] {
            assert!(
                verdict(json, true).is_ok(),
                "{json}: {:?}",
                verdict(json, true)
            );
        }
    }

    #[test]
    fn members_out_of_place_or_range_are_refused_under_meta() {
        for json in [
            r#"{"kind":"file","size":1}"#,
            r#"{"path":"a","path_hex":"ff","kind":"file","size":1}"#,
            r#"{"path_hex":"61","kind":"file","size":1}"#,
            r#"{"path_hex":"FF","kind":"file","size":1}"#,
            r#"{"path":"a","kind":"file","size":1,"mode":4096}"#,
            r#"{"path":"a","kind":"file","size":1,"mtime_ns":5}"#,
            r#"{"path":"a","kind":"file","size":1,"mtime":0,"mtime_ns":1000000000}"#,
            r#"{"path":"a","kind":"symlink","size":0}"#,
            r#"{"path":"a","kind":"symlink","size":0,"target":""}"#,
            r#"{"path":"a","kind":"symlink","size":0,"target":"a\u0000b"}"#,
            r#"{"path":"a","kind":"symlink","size":0,"target_hex":"61"}"#,
            r#"{"path":"a","kind":"symlink","size":0,"target":"a","target_hex":"ff"}"#,
            r#"{"path":"a","kind":"symlink","size":3,"target":"a"}"#,
            r#"{"path":"a","kind":"symlink","size":0,"target":"a","mode":511}"#,
            r#"{"path":"a","kind":"hardlink","size":0}"#,
            r#"{"path":"a","kind":"hardlink","size":0,"of":0,"mtime":1}"#,
            r#"{"path":"a","kind":"file","size":1,"of":0}"#,
            r#"{"path":"a","kind":"char","size":0,"major":1}"#,
            r#"{"path":"a","kind":"fifo","size":0,"major":1,"minor":1}"#,
            r#"{"path":"a","kind":"fifo","size":0,"xattrs":{}}"#,
            r#"{"path":"a","kind":"unsent","size":0}"#,
            r#"{"path":"a","kind":"unsent","size":0,"reason":""}"#,
            r#"{"path":"a","kind":"file","size":1,"reason":"x"}"#,
            r#"{"path":"a","kind":"file","size":1,"sparse":false}"#,
            r#"{"path":"a","kind":"file","size":null,"sparse":true}"#,
            r#"{"path":"a","kind":"dir","size":0,"sparse":true}"#,
            r#"{"path":"a","kind":"file","size":1,"owner":"x"}"#,
            r#"{"path":"a","kind":"file","size":1,"xattrs":{"":"00"}}"#,
            r#"{"path":"a","kind":"file","size":1,"xattrs":{"user.a":"0"}}"#,
        ] {
            assert!(verdict(json, true).is_err(), "{json}");
        }
        let big = "00".repeat(MAX_XATTR_VALUE + 1);
        let json =
            format!(r#"{{"path":"a","kind":"file","size":1,"xattrs":{{"user.a":"{big}"}}}}"#);
        assert!(verdict(&json, true).is_err());
    }

    #[test]
    fn without_meta_an_entry_is_what_it_was() {
        for json in [
            r#"{"path":"a","kind":"symlink","size":0,"target":"b"}"#,
            r#"{"path":"a","kind":"unsent","size":0,"reason":"x"}"#,
            r#"{"path":"a","kind":"file","size":1,"mtime":-1}"#,
        ] {
            assert!(verdict(json, false).is_err(), "{json}");
        }
        // Members it does not know are ignored, as unknown members always were.
        let plain = verdict(
            r#"{"path":"a","kind":"file","size":1,"mode":4095,"mtime":3,"mtime_ns":7,"target":"x"}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            (
                plain.mode,
                plain.mtime,
                plain.mtime_ns,
                plain.extra().target.clone()
            ),
            (Some(0o7777), Some(3), None, None)
        );
    }
}
