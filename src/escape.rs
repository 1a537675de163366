//! Making untrusted text safe to print: names and messages from a peer (or odd local
//! file names) never reach a terminal raw. Also the character classes the path policy
//! refuses, so that what is refused and what is escaped cannot drift apart, and the
//! words for a file's kind in a message. A leaf: it imports nothing from the crate,
//! so the error table and the key can use it.

use std::borrow::Cow;
use std::fmt::Write;

/// Unicode general category Cf (format characters: bidi overrides, zero-width
/// characters, ...), as inclusive ranges, from Unicode 15.1. Std does not expose
/// general categories and a table this small does not justify a dependency.
const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` is in Unicode category Cf.
pub(crate) fn is_format(c: char) -> bool {
    FORMAT_CHARS
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// Whether `c` must not be printed raw: a control (Cc) or format (Cf) character.
pub(crate) fn is_unprintable(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// `text` with every control and format character written as `\u{..}`, and
/// backslashes doubled so that an escape cannot be forged.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    escape_with(text, true)
}

/// A message a peer said, made safe to print: every control and format character
/// written as `\u{..}`, backslashes left as they are. The peer escaped the names in
/// it already (an xfer says `new\u{a}line`), and doubling its backslashes would show
/// that as `new\\u{a}line`; what it says is its own words anyway, so an escape it
/// forges there misleads no more than any other text it chooses.
pub(crate) fn escape_said(text: &str) -> Cow<'_, str> {
    escape_with(text, false)
}

/// [`escape`], doubling backslashes only with `backslashes`.
fn escape_with(text: &str, backslashes: bool) -> Cow<'_, str> {
    let doubled = |c: char| backslashes && c == '\\';
    if !text.chars().any(|c| is_unprintable(c) || doubled(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if doubled(c) {
            out.push_str("\\\\");
        } else if is_unprintable(c) {
            write!(out, "\\u{{{:x}}}", c as u32).expect("writing to a String cannot fail");
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A name as reports give it: `text` for people (bytes that are not UTF-8 as
/// U+FFFD, still to be escaped where printed) and, only when the name is not UTF-8,
/// its `bytes`, which `--json` adds as `path_hex`: a script can find the file that
/// the text cannot name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) text: String,
    pub(crate) bytes: Option<Vec<u8>>,
}

impl Named {
    /// The name of these raw bytes.
    pub(crate) fn of_bytes(bytes: &[u8]) -> Named {
        match std::str::from_utf8(bytes) {
            Ok(text) => Named::from(text),
            Err(_) => Named {
                text: String::from_utf8_lossy(bytes).into_owned(),
                bytes: Some(bytes.to_vec()),
            },
        }
    }
}

impl From<String> for Named {
    fn from(text: String) -> Named {
        Named { text, bytes: None }
    }
}

impl From<&str> for Named {
    fn from(text: &str) -> Named {
        Named::from(text.to_string())
    }
}

impl std::ops::Deref for Named {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

/// Escapes a local path for printing, marking bytes that are not UTF-8.
pub(crate) fn escape_path(path: &std::path::Path) -> String {
    escape(&path.to_string_lossy()).into_owned()
}

/// `text` cut to at most `max` bytes (on a character boundary) and marked with an
/// ellipsis where it was cut: what a log keeps of text a peer chose the length of.
pub(crate) fn shortened(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// What a file that is neither a regular file nor a directory is, in words.
pub(crate) fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_bytes_only_when_they_are_not_utf8() {
        let plain = Named::of_bytes("caf\u{e9}".as_bytes());
        assert_eq!((plain.text.as_str(), plain.bytes), ("caf\u{e9}", None));
        let latin = Named::of_bytes(b"caf\xe9");
        assert_eq!(latin.text, "caf\u{FFFD}");
        assert_eq!(latin.bytes.as_deref(), Some(&b"caf\xe9"[..]));
        assert_eq!(&*Named::from("a/b"), "a/b");
    }

    #[test]
    fn long_text_is_shortened_on_a_character_boundary() {
        assert!(matches!(shortened("short", 5), Cow::Borrowed("short")));
        assert_eq!(shortened("abcdef", 3), "abc…");
        // "é" is two bytes: a cut inside it moves before it.
        assert_eq!(shortened("aéb", 2), "a…");
    }

    #[test]
    fn plain_text_is_untouched() {
        assert!(matches!(escape("photos/été 2024.jpg"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_tricks_are_escaped() {
        assert_eq!(escape("a\x1b[31mred"), "a\\u{1b}[31mred");
        assert_eq!(escape("evil\u{202E}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("line\nbreak\r"), "line\\u{a}break\\u{d}");
        assert_eq!(escape("zero\u{200B}width"), "zero\\u{200b}width");
        assert_eq!(escape("c1\u{9b}"), "c1\\u{9b}");
        assert_eq!(escape("back\\u{1b}slash"), "back\\\\u{1b}slash");
    }

    #[test]
    fn a_peer_message_is_escaped_without_doubling_its_escapes() {
        assert!(matches!(
            escape_said("a/new\\u{a}line: bad"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape_said("a\x1b[31m\\n"), "a\\u{1b}[31m\\n");
    }
}
