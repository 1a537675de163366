//! The path policy of `PROTOCOL.md` section 7 (and 16.3): which paths from a peer a
//! receiver or a server accepts. The one place untrusted names are checked, before
//! any filesystem call; what it accepts is a relative path of components that are
//! each safe to use as one name beneath the target directory or a user's home, and
//! none of which is a name xfer uses for its own temporary files.
//!
//! Two rules: the strict one ([`Names::Safe`]: a server always, a receiver with
//! `--safe-names`) also refuses what is awkward to show or to type (backslash,
//! control and format characters, bytes that are not UTF-8); the plain one
//! ([`Names::Any`], a point-to-point receiver) takes any name the filesystem can
//! hold.

use std::fmt;

use crate::escape::is_format;

/// Longest path accepted, in bytes.
pub(crate) const MAX_PATH: usize = 4096;
/// Longest path component accepted, in bytes.
const MAX_COMPONENT: usize = 255;
/// Why an offered path is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathRefusal {
    Empty,
    TooLong,
    Absolute,
    DrivePrefix,
    Backslash,
    Control(char),
    Format(char),
    EmptyComponent,
    Dot,
    DotDot,
    ComponentTooLong,
    WindowsReserved,
    /// A name of the form xfer gives its own temporary, partial and lock files.
    Reserved,
    /// Bytes that are not UTF-8 (the strict rule only).
    NotUtf8,
}

/// Which names a receiving side accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Names {
    /// Section 7's strict rule: what is safe to show to other people and to shells.
    #[default]
    Safe,
    /// Any name the filesystem can hold, but for what section 16.3 lists.
    Any,
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathRefusal::Empty => f.write_str("empty path"),
            PathRefusal::TooLong => write!(f, "path longer than {MAX_PATH} bytes"),
            PathRefusal::Absolute => f.write_str("absolute path"),
            PathRefusal::DrivePrefix => f.write_str("Windows drive or device prefix"),
            PathRefusal::Backslash => f.write_str("backslash in path"),
            PathRefusal::Control(c) => write!(f, "control character U+{:04X} in path", *c as u32),
            PathRefusal::Format(c) => write!(f, "format character U+{:04X} in path", *c as u32),
            PathRefusal::EmptyComponent => f.write_str("empty path component"),
            PathRefusal::Dot => f.write_str("'.' component"),
            PathRefusal::DotDot => f.write_str("'..' component"),
            PathRefusal::ComponentTooLong => {
                write!(f, "path component longer than {MAX_COMPONENT} bytes")
            }
            PathRefusal::WindowsReserved => f.write_str("name reserved on Windows"),
            PathRefusal::Reserved => f.write_str(
                "a name xfer reserves for its own temporary and partial files \
                 (.xfer-*.part, .xfer-*.partial)",
            ),
            // Said by `recv --safe-names` and by every `xfer serve`, which has no such
            // switch: the words fit both.
            PathRefusal::NotUtf8 => f.write_str(
                "a name that is not UTF-8, which this receiver refuses (a server always \
                 does; a receiver with --safe-names)",
            ),
        }
    }
}

/// Checks an offered path; on success returns its components, each safe to use as
/// one name inside the target directory.
pub(crate) fn check_path(path: &str) -> Result<Vec<&str>, PathRefusal> {
    check_path_for(path, cfg!(windows))
}

/// Checks an offered path given as raw bytes under the rule `names`; on success
/// returns its components, each safe to use as one name inside the target directory.
pub(crate) fn check_path_bytes(path: &[u8], names: Names) -> Result<Vec<&[u8]>, PathRefusal> {
    match (names, std::str::from_utf8(path)) {
        (Names::Safe, Ok(text)) => {
            check_path(text).map(|parts| parts.into_iter().map(str::as_bytes).collect())
        }
        (Names::Safe, Err(_)) => {
            // The form first, so that `../\xff` says `..`, as a UTF-8 path would.
            check_any(path, cfg!(windows))?;
            Err(PathRefusal::NotUtf8)
        }
        (Names::Any, _) => check_any(path, cfg!(windows)),
    }
}

/// The plain rule: refused are only an empty path or component, `.`, `..`, NUL, a
/// component over 255 bytes or a path over 4096, an absolute path, and xfer's own
/// reserved names (and, on Windows, what Windows reserves).
fn check_any(path: &[u8], windows: bool) -> Result<Vec<&[u8]>, PathRefusal> {
    if path.is_empty() {
        return Err(PathRefusal::Empty);
    }
    if path.len() > MAX_PATH {
        return Err(PathRefusal::TooLong);
    }
    if path.starts_with(b"/") {
        return Err(PathRefusal::Absolute);
    }
    if path.contains(&0) {
        return Err(PathRefusal::Control('\0'));
    }
    let components: Vec<&[u8]> = path.split(|&byte| byte == b'/').collect();
    for &component in &components {
        match component {
            b"" => return Err(PathRefusal::EmptyComponent),
            b"." => return Err(PathRefusal::Dot),
            b".." => return Err(PathRefusal::DotDot),
            _ if component.len() > MAX_COMPONENT => return Err(PathRefusal::ComponentTooLong),
            _ if windows && std::str::from_utf8(component).map_or(true, is_windows_reserved) => {
                return Err(PathRefusal::WindowsReserved);
            }
            _ if is_reserved_bytes(component) => return Err(PathRefusal::Reserved),
            _ => {}
        }
    }
    Ok(components)
}

fn check_path_for(path: &str, windows: bool) -> Result<Vec<&str>, PathRefusal> {
    if path.is_empty() {
        return Err(PathRefusal::Empty);
    }
    if path.len() > MAX_PATH {
        return Err(PathRefusal::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathRefusal::Absolute);
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(PathRefusal::DrivePrefix);
    }
    for c in path.chars() {
        if c == '\\' {
            return Err(PathRefusal::Backslash);
        }
        if c.is_control() {
            return Err(PathRefusal::Control(c));
        }
        if is_format(c) {
            return Err(PathRefusal::Format(c));
        }
    }
    let components: Vec<&str> = path.split('/').collect();
    for &component in &components {
        match component {
            "" => return Err(PathRefusal::EmptyComponent),
            "." => return Err(PathRefusal::Dot),
            ".." => return Err(PathRefusal::DotDot),
            _ if component.len() > MAX_COMPONENT => return Err(PathRefusal::ComponentTooLong),
            _ if windows && is_windows_reserved(component) => {
                return Err(PathRefusal::WindowsReserved);
            }
            _ if is_reserved(component) => return Err(PathRefusal::Reserved),
            _ => {}
        }
    }
    Ok(components)
}

/// Prefix of every name xfer makes for itself; a leading dot hides them from `ls`.
pub(crate) const RESERVED_PREFIX: &str = ".xfer-";

/// Whether `name` has the form of xfer's own temporary (`.xfer-*.part`) or partial
/// (`.xfer-*.partial`) files, which no peer may write.
pub(crate) fn is_reserved(name: &str) -> bool {
    is_reserved_bytes(name.as_bytes())
}

/// The name of a fresh temporary (`.xfer-<16 hex digits>.part`) from 8 `random`
/// bytes: a part file's, a link's or special file's being made, and so the name
/// a directory takes when a change of type exchanges it for one.
pub(crate) fn temporary_name(random: [u8; 8]) -> String {
    format!("{RESERVED_PREFIX}{}.part", crate::hex::hex(&random))
}

/// Whether a directory named `name`, changed (its ctime) before `cutoff`, is one a
/// crash left in the middle of a change of type: exactly a [`temporary_name`], the
/// name an exchange of ours gives it (`beneath::rename_over_dir`; its rename sets
/// the ctime, which no sender can). A user's own directory that merely starts and
/// ends so, or whose times a sender set, is never one.
pub(crate) fn is_stale_exchange_dir(name: &[u8], ctime: i64, cutoff: i64) -> bool {
    is_temporary_name(name) && ctime < cutoff
}

/// Whether `name` is exactly a [`temporary_name`]: never a partial a client may
/// resume (`.xfer-*.partial`), only what a receiver holds while it writes it.
pub(crate) fn is_temporary_name(name: &[u8]) -> bool {
    std::str::from_utf8(name)
        .ok()
        .and_then(|name| name.strip_prefix(RESERVED_PREFIX))
        .and_then(|rest| rest.strip_suffix(".part"))
        .and_then(crate::hex::unhex::<8>)
        .is_some()
}

/// [`is_reserved`] for a name read from a directory, which need not be UTF-8.
pub(crate) fn is_reserved_bytes(name: &[u8]) -> bool {
    name.starts_with(RESERVED_PREFIX.as_bytes())
        && (name.ends_with(b".part") || name.ends_with(b".partial"))
}

/// Checks a path a client gives a server, where `""` means the home itself.
pub(crate) fn check_request_path(path: &str) -> Result<Vec<&str>, PathRefusal> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    check_path(path)
}

/// Names Windows gives a special meaning, with or without an extension, and names
/// ending in a dot or a space (Windows silently strips those).
fn is_windows_reserved(component: &str) -> bool {
    if component.ends_with('.') || component.ends_with(' ') {
        return true;
    }
    let stem = component
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ["COM", "LPT"].iter().any(|prefix| {
            stem.strip_prefix(prefix)
                .is_some_and(|n| n.len() == 1 && matches!(n.as_bytes()[0], b'1'..=b'9'))
        })
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_the_exact_name_of_an_exchange_changed_before_the_cutoff_is_a_stale_one() {
        let name: &[u8] = b".xfer-0123456789abcdef.part";
        assert!(is_stale_exchange_dir(name, 10, 11));
        assert!(
            !is_stale_exchange_dir(name, 11, 11),
            "changed at the cutoff"
        );
        for other in [
            &b".xfer-my-notes.partial"[..],
            b".xfer-0123456789abcdef.partial",
            b".xfer-0123456789abcde.part",
            b".xfer-0123456789abcdeg.part",
            b"xfer-0123456789abcdef.part",
        ] {
            assert!(!is_stale_exchange_dir(other, 10, 11), "{other:?}");
        }
    }

    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        use PathRefusal::*;
        let long_component = "a".repeat(256);
        let long_path = "a/".repeat(2049);
        let table: &[(&str, PathRefusal)] = &[
            ("", Empty),
            ("/etc/passwd", Absolute),
            ("/", Absolute),
            ("../x", DotDot),
            ("a/../../x", DotDot),
            ("a/..", DotDot),
            ("..", DotDot),
            (".", Dot),
            ("./x", Dot),
            ("a/./b", Dot),
            ("a//b", EmptyComponent),
            ("a/", EmptyComponent),
            ("C:/x", DrivePrefix),
            ("c:x", DrivePrefix),
            ("\\\\?\\C:\\x", Backslash),
            ("a\\b", Backslash),
            ("..\\x", Backslash),
            ("a\0b", Control('\0')),
            ("a\nb", Control('\n')),
            ("\x1b[2Jx", Control('\x1b')),
            ("del\x7f", Control('\x7f')),
            ("c1\u{85}", Control('\u{85}')),
            ("evil\u{202E}gpj.exe", Format('\u{202E}')),
            ("zero\u{200B}width", Format('\u{200B}')),
            ("bom\u{FEFF}", Format('\u{FEFF}')),
            (&long_component, ComponentTooLong),
            (&long_path, TooLong),
            (".xfer-0123456789abcdef.part", Reserved),
            ("dir/.xfer-0123.partial", Reserved),
            (".xfer-a.part/x", Reserved),
        ];
        for (path, why) in table {
            assert_eq!(check_path_for(path, false).as_ref(), Err(why), "{path:?}");
        }
    }

    #[test]
    fn ordinary_paths_are_accepted() {
        for path in [
            "a",
            "docs/hello.txt",
            ".hidden",
            "..dots",
            "a..b",
            "dir/with space/ok",
            "été/日本語.txt",
            "ab:c",
            ".xfer-notes",
            ".xfer-x.part.txt",
            "x.xfer-.part",
            &"a".repeat(255),
        ] {
            assert!(check_path_for(path, false).is_ok(), "{path:?}");
        }
        assert_eq!(
            check_path("docs/hello.txt").unwrap(),
            vec!["docs", "hello.txt"]
        );
    }

    #[test]
    fn the_plain_rule_takes_what_the_filesystem_holds_and_nothing_of_ours() {
        for path in [
            &b"a\\b"[..],
            b"line\nbreak",
            b"tab\there",
            "zero\u{200B}width".as_bytes(),
            "evil\u{202E}gpj.exe".as_bytes(),
            b"latin1-\xe9t\xe9/x",
            b"C:x",
            b"\x1b[2J",
        ] {
            assert!(check_path_bytes(path, Names::Any).is_ok(), "{path:?}");
            assert!(check_path_bytes(path, Names::Safe).is_err(), "{path:?}");
        }
        use PathRefusal::*;
        let long_component = vec![b'a'; 256];
        let long_path = b"a/".repeat(2049);
        let table: &[(&[u8], PathRefusal)] = &[
            (b"", Empty),
            (b"/etc/passwd", Absolute),
            (b"a/../x", DotDot),
            (b"./x", Dot),
            (b"a//b", EmptyComponent),
            (b"a\0b", Control('\0')),
            (&long_component, ComponentTooLong),
            (&long_path, TooLong),
            (b"d/.xfer-0123.part", Reserved),
            (b".xfer-\xff.partial", Reserved),
        ];
        for (path, why) in table {
            assert_eq!(
                check_path_bytes(path, Names::Any).as_ref(),
                Err(why),
                "{path:?}"
            );
        }
        assert_eq!(
            check_path_bytes(b"ok/\xff", Names::Safe),
            Err(PathRefusal::NotUtf8)
        );
        assert_eq!(
            check_path_bytes(b"../\xff", Names::Safe),
            Err(PathRefusal::DotDot)
        );
        assert!(
            PathRefusal::Reserved
                .to_string()
                .contains(".xfer-*.partial"),
            "the message names both reserved forms"
        );
    }

    #[test]
    fn windows_rules_apply_on_windows_only() {
        for path in [
            "CON",
            "nul.txt",
            "dir/com1",
            "LPT9.log",
            "trailing.",
            "space ",
        ] {
            assert_eq!(
                check_path_for(path, true),
                Err(PathRefusal::WindowsReserved),
                "{path:?}"
            );
            assert!(check_path_for(path, false).is_ok(), "{path:?}");
        }
        for path in ["CONSOLE", "com10", "lpt0", "aux_file"] {
            assert!(check_path_for(path, true).is_ok(), "{path:?}");
        }
    }
}
