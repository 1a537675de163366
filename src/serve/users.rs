//! Who may use a server: the users file (TOML, one table per user), parsed once
//! into types and checked whole before the server starts (or before a reload takes
//! effect): permissions of the file and of every key file, each user's key, a home
//! that stays beneath the root and is nobody else's, quotas, limits. Without a users
//! file a server has one key and one home, and accepts any user name with that key.
//!
//! ```toml
//! [users.alice]
//! key_file = "keys/alice.key"   # relative to the users file; or key = "..." inline:
//!                               # 64 lowercase hex digits, as keygen and passwd print
//! realm = "files.example.org"   # what `xfer passwd` marks a password's key with
//! home = "alice"                # relative to --root; default: the user's name
//! quota = "20 GiB"              # bytes, optional
//! max_files = 100000            # entries: files, directories, links; optional
//! read_only = false
//! max_sessions = 4              # concurrent connections of this user; default:
//!                               # half of --max-conns, rounded up
//! ```

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::escape::{escape, escape_path};
use crate::fs::quota::Limits;
use crate::key::{self, Key};
use crate::proto::handshake::{KeyStore, valid_user};

/// One user, as the server knows them.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) key: Key,
    /// The home, relative to the server's root (`.`: the root itself).
    pub(crate) home: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) read_only: bool,
    /// Connections of this user at once, as the users file says (see
    /// [`Users::session_limit`] for the default).
    pub(crate) max_sessions: Option<usize>,
    /// The key was derived from a password (the entry names its realm).
    pub(crate) password: bool,
}

/// Everyone who may log in.
#[derive(Debug, Clone)]
pub(crate) enum Users {
    /// One key, one home (the root), any user name.
    Single(User),
    /// A users file's users, by name.
    Listed(HashMap<String, User>),
}

impl Users {
    /// A server without a users file.
    pub(crate) fn single(key: Key) -> Users {
        Users::Single(User {
            name: String::new(),
            key,
            home: PathBuf::from("."),
            limits: Limits::default(),
            read_only: false,
            max_sessions: None,
            password: false,
        })
    }

    /// The user `name` logs in as (`""`: no name given).
    pub(crate) fn get(&self, name: &str) -> Option<&User> {
        match self {
            Users::Single(user) => Some(user),
            Users::Listed(users) => users.get(name),
        }
    }

    /// How many connections `name` may hold at once, if limited: their
    /// `max_sessions`, else half of `max_conns` (rounded up, at least 1), so that
    /// no one user of a users file can take every connection unless the file says
    /// so. The one key of a server without a users file is not limited.
    pub(crate) fn session_limit(&self, name: &str, max_conns: usize) -> Option<usize> {
        match self {
            Users::Single(_) => None,
            Users::Listed(users) => {
                let user = users.get(name)?;
                Some(user.max_sessions.unwrap_or(max_conns.div_ceil(2).max(1)))
            }
        }
    }

    pub(crate) fn all(&self) -> Vec<&User> {
        match self {
            Users::Single(user) => vec![user],
            Users::Listed(users) => users.values().collect(),
        }
    }

    /// Who may log in, for the log at start and reload: `3 users (2 with a key, 1
    /// with a password)`, or `one key, any user name`.
    pub(crate) fn summary(&self) -> String {
        match self {
            Users::Single(_) => "one key, any user name (no --users)".into(),
            Users::Listed(users) => {
                let passwords = users.values().filter(|user| user.password).count();
                format!(
                    "{} ({} with a key, {} with a password)",
                    crate::ui::report::plural(users.len(), "user"),
                    users.len() - passwords,
                    passwords
                )
            }
        }
    }

    /// Reads and checks a users file for a server whose realm is `realm`.
    pub(crate) fn load(path: &Path, realm: &str) -> Result<Users> {
        let shown = escape_path(path);
        let text = read_private(path).with_context(|| format!("users file {shown}"))?;
        let parsed: UsersFile = toml::from_str(&text).map_err(|err| {
            // One line: where, and why (the parser's own report spans several).
            let line = err
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(line) => anyhow::anyhow!("users file {shown}: line {line}: {}", err.message()),
                None => anyhow::anyhow!("users file {shown}: {}", err.message()),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut users = HashMap::new();
        let mut homes: Vec<(PathBuf, String)> = Vec::new();
        for (name, entry) in parsed.users {
            let user = entry
                .into_user(&name, base, &Lines(&text), realm)
                .with_context(|| format!("users file {shown}: user {name:?}"))?;
            for (home, other) in &homes {
                if user.home.starts_with(home) || home.starts_with(&user.home) {
                    bail!(
                        "users file {shown}: users {other:?} and {name:?} share a home ({} and {}); \
                         every user needs a home of their own, and no home inside another",
                        home.display(),
                        user.home.display()
                    );
                }
            }
            homes.push((user.home.clone(), name.clone()));
            users.insert(name, user);
        }
        Ok(Users::Listed(users))
    }
}

/// Reads a file that holds secrets: it must be a regular file that neither group
/// nor others may read or write.
fn read_private(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).context("cannot read it")?;
    if !meta.is_file() {
        bail!(
            "is {}, not a regular file",
            crate::escape::describe(meta.file_type())
        );
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "is readable or writable by group or others (mode {:o}); `chmod 600` it",
            mode & 0o777
        );
    }
    std::fs::read_to_string(path).context("cannot read it")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    key_file: Option<PathBuf>,
    key: Option<toml::Spanned<String>>,
    /// The realm a key derived from a password was made for (`xfer passwd` writes it).
    realm: Option<toml::Spanned<String>>,
    home: Option<PathBuf>,
    quota: Option<Size>,
    max_files: Option<u64>,
    #[serde(default)]
    read_only: bool,
    max_sessions: Option<u64>,
}

/// A size: whole bytes, or a string with a unit (`"20 GiB"`, `"500MB"`).
#[derive(Debug)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("whole bytes (20000000000) or a size with a unit (\"20 GiB\")")
            }
            fn visit_u64<E>(self, bytes: u64) -> Result<Size, E> {
                Ok(Size::Bytes(bytes))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size::Bytes)
                    .map_err(|_| E::custom("a quota cannot be negative"))
            }
            fn visit_str<E>(self, text: &str) -> Result<Size, E> {
                Ok(Size::Text(text.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

impl UserEntry {
    fn into_user(self, name: &str, base: &Path, lines: &Lines, realm: &str) -> Result<User> {
        if !valid_user(name) {
            bail!("a user name is 1-64 characters of A-Z a-z 0-9 . _ -, not starting with . or -");
        }
        let password = check_realm(self.realm.as_ref(), name, lines, realm)?;
        let key = match (self.key_file, self.key) {
            (Some(file), None) => {
                let file = base.join(file);
                read_private(&file).with_context(|| format!("key file {}", escape_path(&file)))?;
                let bytes = key::read_key_file(&file)?;
                if bytes.is_empty() {
                    bail!("key file {} is empty", escape_path(&file));
                }
                Key::from_bytes(bytes, format!("key file {}", escape_path(&file)))
            }
            (None, Some(inline)) => inline_key(&inline, lines)?,
            (Some(_), Some(_)) => bail!("give key_file or key, not both"),
            (None, None) => bail!("no key: give key_file = \"PATH\" or key = \"...\""),
        };
        let home = self.home.unwrap_or_else(|| PathBuf::from(name));
        let escapes = home.as_os_str().is_empty()
            || home
                .components()
                .any(|c| !matches!(c, Component::Normal(_)) || c.as_os_str().to_str().is_none());
        if escapes {
            bail!(
                "home {:?} must be a relative path beneath the root, without . or .. (and UTF-8)",
                home
            );
        }
        let quota = match self.quota {
            None => None,
            Some(Size::Bytes(bytes)) => Some(bytes),
            Some(Size::Text(text)) => {
                Some(crate::units::bytes(&text).map_err(|why| anyhow::anyhow!("quota: {why}"))?)
            }
        };
        let max_sessions = match self.max_sessions {
            None => None,
            Some(0) => bail!("max_sessions must be at least 1"),
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        Ok(User {
            name: name.to_string(),
            key,
            home,
            limits: Limits {
                bytes: quota,
                files: self.max_files,
            },
            read_only: self.read_only,
            max_sessions,
            password,
        })
    }
}

/// What an inline key must look like: what `xfer keygen` and `xfer passwd` print.
pub(crate) const INLINE_KEY_RULE: &str = "an inline key is 64 lowercase hex digits (0-9, a-f), \
     as `xfer keygen` and `xfer passwd` print; or give key_file = \"PATH\"";

/// An inline `key = "..."`, refused (by line, never quoted) unless it looks like
/// what `xfer keygen` and `xfer passwd` print: a placeholder or a short made-up
/// key must not become a working credential.
fn inline_key(inline: &toml::Spanned<String>, lines: &Lines) -> Result<Key> {
    let text = inline.get_ref();
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        bail!(
            "line {}: key is not a key: {INLINE_KEY_RULE}",
            lines.of(inline.span())
        );
    }
    Ok(Key::from_bytes(text.clone().into_bytes(), "the users file"))
}

/// The `realm` an entry's key was derived for, if any, must be the server's:
/// a key made for another realm can never log in. Returns whether there is one.
fn check_realm(
    entry: Option<&toml::Spanned<String>>,
    name: &str,
    lines: &Lines,
    realm: &str,
) -> Result<bool> {
    let Some(entry) = entry else {
        return Ok(false);
    };
    if entry.get_ref() != realm {
        bail!(
            "line {}: the key was derived from a password for realm {:?}, but this server's \
             realm is {realm:?}: start it with --realm {}, or run `xfer passwd {name} --realm {}` again",
            lines.of(entry.span()),
            entry.get_ref(),
            escape(entry.get_ref()),
            escape(realm)
        );
    }
    Ok(true)
}

/// The text of a users file, for line numbers.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    /// The line (from 1) at which byte `span.start` is.
    fn of(&self, span: std::ops::Range<usize>) -> usize {
        self.0[..span.start.min(self.0.len())].matches('\n').count() + 1
    }
}

/// The users a running server knows, swapped whole when SIGHUP reloads the file:
/// a connection keeps the snapshot it started with. Each set of users has a
/// version, counted from 0 by the reloads: limits taken from an older one never
/// overwrite those of a newer one (`Ledger::set_limits`).
pub(crate) struct UserStore(RwLock<(u64, Arc<Users>)>);

impl UserStore {
    pub(crate) fn new(users: Users) -> UserStore {
        UserStore(RwLock::new((0, Arc::new(users))))
    }

    pub(crate) fn snapshot(&self) -> Arc<Users> {
        self.versioned().1
    }

    /// The users and their version.
    pub(crate) fn versioned(&self) -> (u64, Arc<Users>) {
        let held = self.0.read().expect("no panics while holding the lock");
        (held.0, held.1.clone())
    }

    pub(crate) fn replace(&self, users: Users) {
        let mut held = self.0.write().expect("no panics while holding the lock");
        *held = (held.0 + 1, Arc::new(users));
    }
}

impl KeyStore for UserStore {
    fn key_for(&self, user: &str) -> Option<Key> {
        self.snapshot().get(user).map(|user| user.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed inline key.
    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn users_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("users.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o600)).unwrap();
        path
    }

    fn key_file(dir: &Path, name: &str) {
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let path = dir.join("keys").join(name);
        std::fs::write(&path, "a long key for a test, long enough\n").unwrap();
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_complete_users_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        key_file(dir.path(), "alice.key");
        let path = users_file(
            dir.path(),
            r#"
            [users.alice]
            key_file = "keys/alice.key"
            home = "alice"
            quota = "20 GiB"
            max_files = 100000
            read_only = false
            max_sessions = 4

            [users.bob]
            key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            realm = "files.example.org"
            quota = 1000
            read_only = true
            "#,
        );
        let users = Users::load(&path, "files.example.org").unwrap();
        assert_eq!(users.summary(), "2 users (1 with a key, 1 with a password)");
        let alice = users.get("alice").unwrap();
        assert_eq!(alice.key.bytes(), b"a long key for a test, long enough");
        assert_eq!(alice.limits.bytes, Some(20 << 30));
        assert_eq!(alice.limits.files, Some(100_000));
        assert_eq!(alice.max_sessions, Some(4));
        // Without max_sessions, half of --max-conns, rounded up, at least 1.
        assert_eq!(users.session_limit("alice", 64), Some(4));
        assert_eq!(users.session_limit("bob", 64), Some(32));
        assert_eq!(users.session_limit("bob", 5), Some(3));
        assert_eq!(users.session_limit("bob", 1), Some(1));
        assert_eq!(users.session_limit("carol", 64), None);
        let bob = users.get("bob").unwrap();
        assert_eq!(bob.home, PathBuf::from("bob"));
        assert!(bob.read_only);
        assert!(users.get("carol").is_none());
    }

    #[test]
    fn a_bad_users_file_is_refused_with_one_line_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        key_file(dir.path(), "k");
        for (text, why) in [
            (
                "[users.a]\nkey = \"k\"\ncolour = \"red\"\n",
                "unknown field",
            ),
            ("[users.a]\n", "no key"),
            (
                "[users.a]\nkey = \"k\"\nkey_file = \"keys/k\"\n",
                "not both",
            ),
            (
                "[users.a]\nkey = \"k\"\nhome = \"../x\"\n",
                "beneath the root",
            ),
            (
                "[users.a]\nkey = \"k\"\nhome = \"/etc\"\n",
                "beneath the root",
            ),
            ("[users.a]\nkey = \"k\"\nquota = \"12 parsecs\"\n", "quota"),
            ("[users.a]\nkey = \"k\"\nquota = -1\n", ""),
            (
                "[users.a]\nkey = \"k\"\nhome = \"h\"\n[users.b]\nkey = \"k\"\nhome = \"h\"\n",
                "share a home",
            ),
            (
                "[users.a]\nkey = \"k\"\nhome = \"h\"\n[users.b]\nkey = \"k\"\nhome = \"h/b\"\n",
                "share a home",
            ),
            ("[users.\".a\"]\nkey = \"k\"\n", "user name"),
            ("[users.a]\nkey_file = \"keys/missing\"\n", "keys/missing"),
            ("[users.a]\nkey = \"k\"\nmax_sessions = 0\n", "max_sessions"),
            ("users = 3\n", ""),
        ] {
            // "k" stands for a well-formed inline key in these cases.
            let text = text.replace("\"k\"", &format!("\"{KEY}\""));
            let path = users_file(dir.path(), &text);
            let err = format!("{:#}", Users::load(&path, "r").unwrap_err());
            assert!(err.contains(why), "{text:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let path = users_file(dir.path(), &format!("[users.a]\nkey = \"{KEY}\"\n"));
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o640)).unwrap();
        assert!(format!("{:#}", Users::load(&path, "r").unwrap_err()).contains("group or others"));
        let path = users_file(dir.path(), "[users.a]\nkey_file = \"keys/k\"\n");
        std::fs::set_permissions(dir.path().join("keys/k"), PermissionsExt::from_mode(0o604))
            .unwrap();
        let err = format!("{:#}", Users::load(&path, "r").unwrap_err());
        assert!(
            err.contains("keys/k") && err.contains("group or others"),
            "{err}"
        );
    }

    #[test]
    fn inline_keys_and_realms_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, why) in [
            (
                "[users.a]\n\nkey = \"<paste the output of xfer keygen>\"\n".to_string(),
                "line 3: key is not a key: an inline key is 64 lowercase hex digits",
            ),
            ("[users.a]\nkey = \"short\"\n".into(), "line 2"),
            ("[users.a]\nkey = \"\"\n".into(), "line 2"),
            (
                format!("[users.a]\nkey = \"{}\"\n", KEY.to_uppercase()),
                "line 2",
            ),
            (
                format!("[users.a]\nkey = \"{KEY}\"\nrealm = \"elsewhere\"\n"),
                "line 3: the key was derived from a password for realm \"elsewhere\", but this \
                 server's realm is \"r\"",
            ),
        ] {
            let path = users_file(dir.path(), &text);
            let err = format!("{:#}", Users::load(&path, "r").unwrap_err());
            assert!(err.contains(why), "{text:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
