//! How this side meets a peer: who it logs in as ([`AuthOptions`]), what protects
//! the transfer ([`Security`]), and everything a connection needs ([`Peering`]),
//! turned into the handshake's [`Initiating`] or [`Accepting`]. Built once by `cli`,
//! used by the client, the shell and the point-to-point commands alike.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use crate::key::{self, Key};
use crate::net::{Accepting, Initiating, Link, Timeouts};
use crate::password::Password;
use crate::proto::handshake::Secret;
use crate::proto::message::Role;
use crate::proto::negotiated::{Feature, Features};
use crate::ui::report::Style;

/// The usage error for `-I` where this side knows nothing will be replaced (the
/// command line's `get`/`send` to a server directory, and the shell's).
pub(crate) const IGNORE_TIMES_WITHOUT_F: &str = "-I sends files that are there already \
     again, and only -f (or --delete) lets them replace what is there: add -f";

/// Who this side logs in as, and with what.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthOptions {
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) user: Option<String>,
    /// Log in with a password (derived into a key with the listener's realm).
    pub(crate) password: bool,
}

impl AuthOptions {
    /// What proves this side: the key, or the password (from `$XFER_PASSWORD`, else
    /// asked for now).
    pub(crate) fn secret(&self) -> Result<Arc<Secret>> {
        Ok(Arc::new(if self.password {
            let user = self.user.as_deref().unwrap_or_default();
            Secret::password(Password::from_env_or_prompt(user)?)
        } else {
            Secret::Key(require_key(self.key_file.as_deref(), self.user.as_deref())?)
        }))
    }
}

/// Whether to encrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Encryption {
    /// Whenever the peer can (the default), with a warning when it cannot.
    #[default]
    Preferred,
    /// Refuse a peer that cannot (`--encrypt`).
    Required,
    /// Never (`--no-encrypt`).
    Off,
}

/// Which content hash verifies files (feature `blake3`, or MD5 without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Hashing {
    /// The default: BLAKE3 whenever the peer has it, else MD5. An acceptor lists
    /// `blake3`, an initiator chooses it whenever it is listed.
    #[default]
    Preferred,
    /// Refuse a peer without BLAKE3 (`--hash blake3`).
    Blake3,
    /// MD5 even with a peer that has BLAKE3 (`--hash md5`): `blake3` is neither
    /// listed nor chosen.
    Md5,
}

/// What protects and verifies a transfer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Security {
    pub(crate) hash: Hashing,
    pub(crate) encryption: Encryption,
    /// `--whole-file`: neither list nor choose feature `delta`.
    pub(crate) whole_file: bool,
    /// The user asked for what only a peer with `mirror` does (`--delete`,
    /// `--dry-run`): refuse (`feature`) one without it rather than do otherwise.
    pub(crate) mirror: bool,
}

/// Everything a transfer command needs to meet its peer.
#[derive(Debug, Clone)]
pub(crate) struct Peering {
    pub(crate) link: Link,
    pub(crate) timeouts: Timeouts,
    pub(crate) auth: AuthOptions,
    pub(crate) security: Security,
    /// `--limit-rate`, bytes per second.
    pub(crate) limit_rate: Option<u64>,
    pub(crate) style: Style,
}

/// The key of a side that logs in without `--password`; with none given and
/// `$XFER_PASSWORD` set, the next step is `--password`, not a key.
fn require_key(key_file: Option<&std::path::Path>, user: Option<&str>) -> Result<Key> {
    match key::load(key_file)? {
        Some(key) => Ok(key),
        None if std::env::var_os(crate::password::PASSWORD_ENV).is_some() => {
            let with_user = if user.is_none() {
                " and --user NAME"
            } else {
                ""
            };
            Err(anyhow::anyhow!(
                "no key: $XFER_PASSWORD is set, but a password is used only with --password: \
                 add --password{with_user}"
            ))
        }
        None => key::require(None),
    }
}

impl Peering {
    /// The features this side lists or chooses, and those it insists on.
    fn features(&self, role: Role, compress: Option<i32>, accepting: bool) -> (Features, Features) {
        let mut wanted = Features::NONE;
        let mut required = Features::NONE;
        match self.security.encryption {
            Encryption::Off => {}
            Encryption::Preferred => wanted = wanted.with(Feature::Aead),
            Encryption::Required => required = required.with(Feature::Aead),
        }
        match self.security.hash {
            Hashing::Preferred => wanted = wanted.with(Feature::Blake3),
            Hashing::Blake3 => required = required.with(Feature::Blake3),
            Hashing::Md5 => {}
        }
        // `meta` has no switch: whenever both sides have it, trees travel as they are.
        wanted = wanted.with(Feature::Meta);
        // Listed and chosen by every xfer; insisted on only when asked for.
        wanted = wanted.with(Feature::Mirror);
        // No switch either: packing an offer or plan costs ~2 ms per MiB of JSON.
        wanted = wanted.with(Feature::ZstdControl);
        if self.security.mirror {
            required = required.with(Feature::Mirror);
        }
        if accepting {
            // A listener offers what it can; the initiator chooses.
            wanted = wanted.with(Feature::Zstd);
        } else if role == Role::Receiver || compress.is_some() {
            // A receiver takes compressed frames whenever its sender wants to send them.
            wanted = wanted.with(Feature::Zstd);
        }
        if !self.security.whole_file {
            // Listed by an acceptor, chosen by an initiator whenever listed.
            wanted = wanted.with(Feature::Delta).with(Feature::DeltaStream);
        }
        (wanted.with_all(required), required)
    }

    pub(crate) fn initiating(&self, role: Role, compress: Option<i32>) -> Result<Initiating> {
        Ok(self.initiating_with(role, compress, self.auth.secret()?))
    }

    /// [`Peering::initiating`] with a secret already at hand (the shell's, kept for
    /// its reconnections).
    pub(crate) fn initiating_with(
        &self,
        role: Role,
        compress: Option<i32>,
        secret: Arc<Secret>,
    ) -> Initiating {
        let (wanted, required) = self.features(role, compress, false);
        Initiating {
            role,
            user: self.auth.user.clone(),
            wanted,
            required,
            secret,
            client_if_server: role == Role::Sender,
            compress,
            rate: self.limit_rate,
        }
    }

    pub(crate) fn accepting(&self, role: Role, key: Key, compress: Option<i32>) -> Accepting {
        let (offered, required) = self.features(role, compress, true);
        Accepting {
            role,
            offered,
            required,
            realm: None,
            keys: Arc::new(key),
            admit: None,
            compress,
            rate: self.limit_rate,
        }
    }
}
