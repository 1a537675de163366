//! Remote paths as people type them, made into the paths a request carries: the
//! one place where a trailing `/`, `./`, repeated `/`, a leading `/` (the home)
//! and `..` (never above the home) are resolved, for every one-shot command and
//! the shell alike. The server stays strict and never sees any of these forms;
//! this file knows nothing of connections or of the terminal.

/// `path` (from the home if it starts with `/`, else relative to `cwd`) as a path
/// beneath the home without `.`, `..` or empty components: `""` is the home itself.
pub(crate) fn resolve(cwd: &str, path: &str) -> String {
    let mut parts: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        cwd.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in path.split('/') {
        match part {
            "" | "." => {}
            // As `/..` is `/` in a Unix shell: the home is as high as a path goes.
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    parts.join("/")
}

/// What a user typed after `HOST:PORT:`, as a path of the home.
pub(crate) fn from_home(path: &str) -> String {
    resolve("", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_beneath_the_home() {
        assert_eq!(resolve("", "photos"), "photos");
        assert_eq!(resolve("photos", "2024/a.jpg"), "photos/2024/a.jpg");
        assert_eq!(resolve("photos/2024", ".."), "photos");
        assert_eq!(resolve("photos/2024", "/docs"), "docs");
        assert_eq!(resolve("photos", "./../docs/./x"), "docs/x");
        assert_eq!(resolve("photos", "/"), "");
        assert_eq!(resolve("", ".."), "");
        assert_eq!(resolve("photos", "../../../etc"), "etc");
    }

    #[test]
    fn typed_forms_become_strict_paths() {
        for (typed, sent) in [
            ("inbox/", "inbox"),
            ("./projects", "projects"),
            ("work//a/", "work/a"),
            ("/photos/2024", "photos/2024"),
            ("/", ""),
            ("", ""),
            ("a/./b/../c", "a/c"),
        ] {
            assert_eq!(from_home(typed), sent, "{typed}");
        }
    }
}
