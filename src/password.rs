//! Keys derived from passwords (`PROTOCOL.md` section 4): Argon2id over the password,
//! salted with the acceptor's realm and the user name, so the password never crosses
//! the network, is never stored, and the stored key opens no other server. Also the
//! prompt that reads a password from the terminal without echo.

use std::io::{BufRead, BufReader, Write};

use anyhow::{Context, Result, bail};

use crate::hex::hex;
use crate::key::Key;

/// Environment variable a script may set instead of typing the password.
pub(crate) const PASSWORD_ENV: &str = "XFER_PASSWORD";

/// Argon2id's cost: 64 MiB of memory, 3 passes, 4 lanes (section 4).
const MEMORY_KIB: u32 = 65_536;
const PASSES: u32 = 3;
const LANES: u32 = 4;

/// A password as typed (its UTF-8 bytes, no trailing newline).
pub(crate) struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    pub(crate) fn new(text: String) -> Result<Password> {
        if text.is_empty() {
            bail!("the password is empty");
        }
        Ok(Password(text))
    }

    /// Whether [`Password::from_env_or_prompt`] would ask on the terminal.
    pub(crate) fn will_prompt() -> bool {
        std::env::var_os(PASSWORD_ENV).is_none()
    }

    /// The password from `$XFER_PASSWORD`, else asked for on the terminal.
    pub(crate) fn from_env_or_prompt(user: &str) -> Result<Password> {
        match std::env::var(PASSWORD_ENV) {
            Ok(text) => Password::new(text),
            Err(std::env::VarError::NotUnicode(_)) => bail!("${PASSWORD_ENV} is not valid UTF-8"),
            Err(std::env::VarError::NotPresent) => {
                Password::new(prompt(&format!("password for {user}: "))?)
            }
        }
    }

    /// The key `K` for `user` at the acceptor named `realm`: the lowercase hex of
    /// Argon2id(password, "xfer/2 password" 0x00 realm 0x00 user).
    pub(crate) fn derive(&self, realm: &str, user: &str) -> Result<Key> {
        Ok(Key::from_bytes(
            derive_hex(&self.0, realm, user)?.into_bytes(),
            "the password",
        ))
    }
}

/// The derived key as 64 lowercase hex digits.
pub(crate) fn derive_hex(password: &str, realm: &str, user: &str) -> Result<String> {
    use argon2::{Algorithm, Argon2, Params, Version};
    let mut salt = b"xfer/2 password\0".to_vec();
    salt.extend_from_slice(realm.as_bytes());
    salt.push(0);
    salt.extend_from_slice(user.as_bytes());
    let params = Params::new(MEMORY_KIB, PASSES, LANES, Some(32))
        .map_err(|err| anyhow::anyhow!("argon2 parameters: {err}"))?;
    let mut out = [0; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .map_err(|err| anyhow::anyhow!("cannot derive a key from the password: {err}"))?;
    Ok(hex(&out))
}

/// Asks for a line on the terminal with echo off; the terminal is restored after,
/// whatever happens. (rpassword was tried: it writes the question before it turns
/// echo off, so a quick typist, or a script on a pseudo-terminal, sees the password
/// echoed.)
pub(crate) fn prompt(question: &str) -> Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            anyhow::anyhow!("no terminal to ask for the password on; set $XFER_PASSWORD")
        })?;
    let saved = tcgetattr(&tty).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Echo off first, then the question: what is typed after it is never shown,
    // and nothing typed is flushed away.
    tcsetattr(&tty, OptionalActions::Now, &quiet).context("cannot turn off echo")?;
    (&tty).write_all(question.as_bytes())?;
    let mut line = String::new();
    let read = BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, OptionalActions::Now, &saved);
    read.context("cannot read the password")?;
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_matches_the_protocol_vector() {
        assert_eq!(
            derive_hex("correct horse battery staple", "files.example.org", "alice").unwrap(),
            "e6d7419a2eb2552f49341a33fccb746c7614b9b219b7886415f035064bfeffd9"
        );
        let key = Password::new("correct horse battery staple".into())
            .unwrap()
            .derive("files.example.org", "alice")
            .unwrap();
        assert_eq!(key.bytes().len(), 64);
        assert!(Password::new(String::new()).is_err());
    }
}
