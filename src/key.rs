//! The pre-shared key: where it comes from (`--key-file` or `XFER_KEY`, never the
//! command line, which other users can read), how a new one is made, and the
//! warnings a weak or exposed key deserves.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::TryRngCore;
use rand::rngs::OsRng;

use crate::frame::{self, Role};
use crate::report;

/// Environment variable that may hold the key.
pub const KEY_ENV: &str = "XFER_KEY";
/// Random bytes in a generated key (rendered as twice as many hex digits).
const GENERATED_KEY_BYTES: usize = 32;
/// Keys shorter than this, in bytes, get a warning.
const SHORT_KEY: usize = 16;

/// The raw bytes of the key, exactly as the user gave it.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn checked(bytes: Vec<u8>, origin: &str) -> Result<Key> {
        if bytes.is_empty() {
            bail!("the key from {origin} is empty");
        }
        if bytes.len() < SHORT_KEY {
            report::warn(&format!(
                "the key from {origin} is only {} bytes: anyone who records a handshake can guess a \
                 short key offline; make one with `xfer keygen`",
                bytes.len()
            ));
        }
        Ok(Key(bytes))
    }
}

/// The key from `key_file` if given, else from `$XFER_KEY`; `None` if neither.
pub fn load(key_file: Option<&Path>) -> Result<Option<Key>> {
    if let Some(path) = key_file {
        let mut bytes = std::fs::read(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
        // A key file's content with one trailing newline removed (PROTOCOL.md section 4).
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            report::warn(&format!(
                "key file {} is readable by other users; `chmod 600` it",
                path.display()
            ));
        }
        return Key::checked(bytes, &format!("{}", path.display())).map(Some);
    }
    match std::env::var_os(KEY_ENV) {
        Some(value) => Key::checked(OsString::into_vec(value), &format!("${KEY_ENV}")).map(Some),
        None => Ok(None),
    }
}

/// A new random key, printable: 256 bits as 64 lowercase hex digits.
pub fn generate() -> Result<String> {
    let mut bytes = [0; GENERATED_KEY_BYTES];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|err| anyhow::anyhow!("the operating system's random generator failed: {err}"))?;
    Ok(frame::hex(&bytes))
}

/// Makes a key for a listener started without one and prints it, with the command
/// line its peer can paste.
pub fn generate_for_listener(local: std::net::SocketAddr, role: Role) -> Result<Key> {
    let generated = generate()?;
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let port = local.port();
    let peer_command = match role {
        Role::Receiver => format!("xfer send FILE... {host}:{port}"),
        Role::Sender => format!("xfer recv {host}:{port}"),
    };
    report::line(&format!(
        "xfer: no key given (--key-file or ${KEY_ENV}); generated one for this {}:\n\n    \
         {KEY_ENV}={generated}\n\nOn the other machine, run:\n\n    {KEY_ENV}={generated} {peer_command}\n",
        role.as_str()
    ));
    Ok(Key(generated.into_bytes()))
}

/// Writes a new key to `path` (mode 0600); refuses to replace an existing file,
/// which may be the only copy of a key in use.
pub fn write_new(path: &Path, key: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| match err.kind() {
            ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} already exists; not replacing a key", path.display())
            }
            _ => anyhow::Error::new(err).context(format!("cannot create {}", path.display())),
        })?;
    writeln!(file, "{key}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_printable_and_fresh() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn key_file_loses_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "secret secret secret\n\n").unwrap();
        let key = load(Some(&path)).unwrap().unwrap();
        assert_eq!(key.bytes(), b"secret secret secret\n");
    }

    #[test]
    fn written_keys_are_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_new(&path, "abc").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_new(&path, "def").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc\n");
    }

    #[test]
    fn empty_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "\n").unwrap();
        assert!(load(Some(&path)).is_err());
    }
}
