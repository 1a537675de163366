//! The shell's words: splitting a command line as a POSIX shell would (quotes and
//! backslashes), quoting a name back for the command line, the remote directory
//! as the prompt shows it, and `~` in local paths. Joining remote paths with the
//! current directory is `crate::client::path`'s, shared with the one-shot commands.

use std::path::{Path, PathBuf};

/// Splits `line` into words, honouring single quotes, double quotes and
/// backslashes; `None` for an unterminated quote.
pub(crate) fn split(line: &str) -> Option<Vec<String>> {
    shlex::split(line)
}

/// `name` as it can be typed back: plain if it needs no quoting, else with
/// backslashes before spaces, quotes and other special characters.
pub(crate) fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_whitespace() || "\\'\"$`!*?[]{}()<>|&;#~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The home-relative path shown in the prompt: `/` and `/photos/2024`.
pub(crate) fn shown(path: &str) -> String {
    format!("/{path}")
}

/// `~` and `~/...` as the user's home directory, as a shell would.
pub(crate) fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            Path::new(&home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split(r#"get "my file.txt" it\'s 'a  b' plain"#).unwrap(),
            ["get", "my file.txt", "it's", "a  b", "plain"]
        );
        assert!(split("get 'open").is_none());
        assert_eq!(split("").unwrap(), Vec::<String>::new());
        let name = "a b'c\"d$e";
        assert_eq!(split(&format!("put {}", quote(name))).unwrap()[1], name);
    }

    #[test]
    fn the_home_is_shown_as_slash() {
        assert_eq!(shown(""), "/");
    }
}
