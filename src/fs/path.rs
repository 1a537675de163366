//! The path policy of `PROTOCOL.md` section 6: which paths from a peer a receiver
//! or a server accepts. The one place untrusted names are checked, before any
//! filesystem call; what it accepts is a relative path of components that are each
//! safe to use as one name beneath the target directory or a user's home, and none
//! of which is a name xfer uses for its own temporary files.

use std::fmt;

use crate::escape::is_format;

/// Longest path accepted, in bytes.
const MAX_PATH: usize = 4096;
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
            PathRefusal::Reserved => {
                f.write_str("a name xfer reserves for its own temporary files (.xfer-*.part)")
            }
        }
    }
}

/// Checks an offered path; on success returns its components, each safe to use as
/// one name inside the target directory.
pub(crate) fn check_path(path: &str) -> Result<Vec<&str>, PathRefusal> {
    check_path_for(path, cfg!(windows))
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
