//! Paths being received right now, across all the sessions of this process
//! ([`Claims`]), and one such path held ([`Claim`]); directories sessions write
//! into, each held by as many as write there ([`DirHold`]). A leaf of the
//! receiver: it knows path strings and directory identities, nothing of offers,
//! plans or files.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{LazyLock, Mutex};

/// Paths being received right now, across the sessions of this process, so two
/// senders of the same path never write into one file. A path counts with the
/// directory it is received into (a server has many). Paths are kept as 64-bit
/// keyed hashes, not strings: a tree of 200 000 files is claimed without a second
/// copy of every name (two paths sharing a hash would only be told `busy`).
#[derive(Default)]
pub(crate) struct Claims {
    files: Mutex<KeyedSet>,
    /// The directories sessions accepted in their plans, with how many hold each:
    /// `--delete` of another session never removes one (it would pull it from
    /// under the files still to come there).
    dirs: Mutex<HashMap<u64, usize, BuildHasherDefault<AsIs>>>,
}

/// A directory a session writes into, held until it ends (see [`Claims::hold_dir`]).
pub(crate) struct DirHold<'a> {
    claims: &'a Claims,
    key: u64,
}

/// A claimed path, released when dropped.
pub(crate) struct Claim<'a> {
    claims: &'a Claims,
    key: u64,
}

/// The key of claim hashes, random per process (the plan keys the paths it has
/// seen with it too).
pub(super) static CLAIM_KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A set of [`CLAIM_KEYS`] hashes, which it takes as they are: they are keyed
/// hashes already (nobody outside can aim at a bucket), and hashing them again
/// was a tenth of planning 200 000 entries.
pub(super) type KeyedSet = HashSet<u64, BuildHasherDefault<AsIs>>;

/// The hasher of a [`KeyedSet`]: a `u64` is its own hash.
#[derive(Default)]
pub(super) struct AsIs(u64);

impl Hasher for AsIs {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; anything else still spreads.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

impl Claims {
    /// Claims `path` beneath the directory `within` (its device and inode).
    pub(crate) fn claim(&self, within: (u64, u64), path: &[u8]) -> Option<Claim<'_>> {
        let key = key_of(within, path);
        let mut held = self.files.lock().expect("no panics while holding the lock");
        held.insert(key).then(|| Claim { claims: self, key })
    }

    /// Holds the directory `path` beneath `within` for a session that writes into
    /// it; several sessions may hold one.
    pub(crate) fn hold_dir(&self, within: (u64, u64), path: &[u8]) -> DirHold<'_> {
        let key = key_of(within, path);
        let mut dirs = self.dirs.lock().expect("no panics while holding the lock");
        *dirs.entry(key).or_default() += 1;
        DirHold { claims: self, key }
    }

    /// Whether a session holds the directory `path` beneath `within`.
    pub(crate) fn dir_held(&self, within: (u64, u64), path: &[u8]) -> bool {
        let key = key_of(within, path);
        let dirs = self.dirs.lock().expect("no panics while holding the lock");
        dirs.contains_key(&key)
    }
}

/// The key of `path` beneath the directory `within` in [`Claims`].
fn key_of(within: (u64, u64), path: &[u8]) -> u64 {
    CLAIM_KEYS.hash_one((within, path))
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims
            .files
            .lock()
            .expect("no panics while holding the lock")
            .remove(&self.key);
    }
}

impl Drop for DirHold<'_> {
    fn drop(&mut self) {
        let mut dirs = (self.claims.dirs.lock()).expect("no panics while holding the lock");
        if let Some(count) = dirs.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                dirs.remove(&self.key);
            }
        }
    }
}
