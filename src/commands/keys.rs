//! `xfer keygen` and `xfer passwd`: making a new key, and the users-file line for a
//! password. Owns only those two; where keys are read and checked is `crate::key`,
//! how a password becomes a key is `crate::password`.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::escape::escape_path;
use crate::key;
use crate::ui::report;

/// `xfer keygen [PATH]`: a new key into a new file (mode 0600), or on stdout. A
/// missing parent directory is made, private (0700), as `keys/` in a users file's
/// directory usually is.
pub(crate) fn keygen(path: Option<PathBuf>) -> Result<()> {
    let new_key = key::generate()?;
    match path {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .with_context(|| format!("cannot create {}", escape_path(parent)))?;
            }
            key::write_new(&path, &new_key)
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{new_key}")?;
            Ok(stdout.flush()?)
        }
    }
}

/// `xfer passwd NAME --realm REALM`: asks for a password twice (no echo) and
/// prints the users-file line with the key derived from it.
pub(crate) fn passwd(user: &str, realm: &str) -> Result<()> {
    // From a script: $XFER_PASSWORD, as the clients take it; at a terminal, twice.
    let first = match std::env::var(crate::password::PASSWORD_ENV) {
        Ok(password) => password,
        Err(_) => {
            let first = crate::password::prompt(&format!("new password for {user}: "))?;
            let second = crate::password::prompt("again: ")?;
            if first != second {
                anyhow::bail!("the two passwords differ; nothing printed");
            }
            first
        }
    };
    if first.chars().count() < 12 {
        report::warn(
            "a password under 12 characters falls to an offline guess (see README, Security)",
        );
    }
    let key = crate::password::derive_hex(&first, realm, user)?;
    // `realm` marks the key as a password's: the server counts it so, and refuses
    // it at start when its own realm differs (the key could never log in).
    let realm = toml::Value::String(realm.to_string());
    let mut stdout = std::io::stdout().lock();
    // A blank line first: `xfer passwd ... >> users.toml` starts a table of its own.
    writeln!(stdout)?;
    writeln!(stdout, "[users.{user}]")?;
    writeln!(stdout, "key = \"{key}\"")?;
    writeln!(
        stdout,
        "realm = {realm}    # {user}'s key comes from a password for this realm"
    )?;
    Ok(stdout.flush()?)
}
