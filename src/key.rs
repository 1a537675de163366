//! The pre-shared key: where it comes from (`--key-file` or `XFER_KEY`, never the
//! command line, which other users can read), how a new one is made, and the
//! warnings a weak or exposed key deserves. A key remembers where it came from, so
//! that a failed handshake can say which key was tried (never the key itself).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::TryRngCore;
use rand::rngs::OsRng;

use crate::escape::escape_path;
use crate::hex::hex;
use crate::stderr;

/// Environment variable that may hold the key.
pub(crate) const KEY_ENV: &str = "XFER_KEY";
/// Random bytes in a generated key (rendered as twice as many hex digits).
const GENERATED_KEY_BYTES: usize = 32;
/// Keys shorter than this, in bytes, get a warning.
const SHORT_KEY: usize = 16;
/// Largest key file accepted, in bytes: a key is a line, not a document.
const MAX_KEY_FILE: u64 = 64 << 10;

/// The raw bytes of the key, exactly as the user gave it, and where it came from.
#[derive(Clone)]
pub(crate) struct Key {
    bytes: Vec<u8>,
    origin: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(from {})", self.origin) // never print key material
    }
}

impl Key {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where the key came from, for messages: `key file PATH` or `$XFER_KEY`.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// A key from bytes already in hand (derived from a password, read from a
    /// users file), described by `origin`.
    pub(crate) fn from_bytes(bytes: Vec<u8>, origin: impl Into<String>) -> Key {
        Key {
            bytes,
            origin: origin.into(),
        }
    }

    fn checked(bytes: Vec<u8>, origin: String) -> Result<Key> {
        if bytes.is_empty() {
            bail!("the key from {origin} is empty");
        }
        if bytes.len() < SHORT_KEY {
            stderr::warn(&format!(
                "the key from {origin} is only {} bytes: anyone who records a handshake can guess a \
                 short key offline; make one with `xfer keygen`",
                bytes.len()
            ));
        }
        Ok(Key { bytes, origin })
    }
}

/// Reads a key file: a regular file of sensible size, with one trailing `\n` or
/// `\r\n` removed (`PROTOCOL.md` section 4). A FIFO or device is refused rather than
/// read, since reading one can block forever.
pub(crate) fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    let shown = escape_path(path);
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read key file {shown}"))?;
    if !meta.is_file() {
        let what = crate::escape::describe(meta.file_type());
        bail!("key file {shown} is {what}; a key file must be a regular file");
    }
    if meta.len() > MAX_KEY_FILE {
        bail!(
            "key file {shown} is {} bytes; a key file holds one key (at most {MAX_KEY_FILE} bytes)",
            meta.len()
        );
    }
    // Non-blocking, in case the name was swapped for a FIFO since the check above.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .with_context(|| format!("cannot read key file {shown}"))?;
    if !file.metadata()?.is_file() {
        bail!("key file {shown} is not a regular file");
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read key file {shown}"))?;
    strip_line_end(&mut bytes);
    Ok(bytes)
}

/// Removes one trailing `\n` or `\r\n`.
pub(crate) fn strip_line_end(bytes: &mut Vec<u8>) {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
}

/// Warns when a key file can be read by group or others.
fn warn_if_exposed(path: &Path, file: &File) {
    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
        stderr::warn(&format!(
            "key file {} is readable by other users; `chmod 600` it",
            escape_path(path)
        ));
    }
}

/// The key from `key_file` if given, else from `$XFER_KEY`; `None` if neither.
pub(crate) fn load(key_file: Option<&Path>) -> Result<Option<Key>> {
    if let Some(path) = key_file {
        let bytes = read_key_file(path)?;
        if let Ok(file) = File::open(path) {
            warn_if_exposed(path, &file);
        }
        return Key::checked(bytes, format!("key file {}", escape_path(path))).map(Some);
    }
    match std::env::var_os(KEY_ENV) {
        Some(value) => Key::checked(OsString::into_vec(value), format!("${KEY_ENV}")).map(Some),
        None => Ok(None),
    }
}

/// The key a connecting side must have; a clear error if none was given.
pub(crate) fn require(key_file: Option<&Path>) -> Result<Key> {
    load(key_file)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no key: pass --key-file PATH or set ${KEY_ENV} (a listener started without a key prints one)"
        )
    })
}

/// A new random key, printable: 256 bits as 64 lowercase hex digits.
pub(crate) fn generate() -> Result<String> {
    Ok(hex(&random_bytes::<GENERATED_KEY_BYTES>()?))
}

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0; N];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|err| anyhow::anyhow!("the operating system's random generator failed: {err}"))?;
    Ok(bytes)
}

/// A new key for a listener started without one: the key, and the text to print
/// for its peer (see `net::keyless`).
pub(crate) fn generate_for_start_up() -> Result<(Key, String)> {
    let generated = generate()?;
    let key = Key {
        bytes: generated.clone().into_bytes(),
        origin: "the key generated at start-up".into(),
    };
    Ok((key, generated))
}

/// Writes a new key to `path` (mode 0600); refuses to replace an existing file,
/// which may be the only copy of a key in use.
pub(crate) fn write_new(path: &Path, key: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| match err.kind() {
            ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} already exists; not replacing a key", escape_path(path))
            }
            _ => anyhow::Error::new(err).context(format!("cannot create {}", escape_path(path))),
        })?;
    writeln!(file, "{key}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", escape_path(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a key file only its owner may read, as `keygen` does: a key file open to
    /// others is warned about on stderr, which a passing test must not print.
    fn write_private(path: &Path, content: impl AsRef<[u8]>) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .unwrap()
            .write_all(content.as_ref())
            .unwrap();
    }

    #[test]
    fn generated_keys_are_long_printable_and_fresh() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn key_file_loses_exactly_one_line_end_lf_or_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        for (content, key) in [
            (
                &b"secret secret secret\n\n"[..],
                &b"secret secret secret\n"[..],
            ),
            (b"secret secret secret\r\n", b"secret secret secret"),
            (b"secret secret secret\n", b"secret secret secret"),
            (b"secret secret secret", b"secret secret secret"),
            (b"secret secret secret\r\n\r\n", b"secret secret secret\r\n"),
        ] {
            write_private(&path, content);
            let loaded = load(Some(&path)).unwrap().unwrap();
            assert_eq!(loaded.bytes(), key, "{content:?}");
            assert!(loaded.origin().contains("key file"));
        }
    }

    #[test]
    fn key_files_that_are_not_regular_files_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = load(Some(&fifo)).unwrap_err();
        assert!(format!("{err:#}").contains("named pipe"), "{err:#}");
        let err = load(Some(dir.path())).unwrap_err();
        assert!(format!("{err:#}").contains("directory"), "{err:#}");
        let err = load(Some(Path::new("/dev/zero"))).unwrap_err();
        assert!(format!("{err:#}").contains("device"), "{err:#}");
        let big = dir.path().join("big");
        write_private(&big, vec![b'k'; 100_000]);
        assert!(load(Some(&big)).is_err());
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
        write_private(&path, "\n");
        assert!(load(Some(&path)).is_err());
    }
}
