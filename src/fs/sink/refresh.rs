//! Entries the receiver holds already (a `same` file, a directory that exists)
//! whose metadata differs from the offer's: found while planning, so that
//! `--itemize` can say `attrs` (rsync's `.f...p...`), and for a file brought up to
//! the offer at once, as `rsync -a` does; a directory gets its metadata at the end
//! of the session anyway. Never follows a link; a file this process cannot open is
//! left as it is.

use super::meta;
use super::resolver::Resolver;
use crate::fs::Refusal;
use crate::proto::message::Entry;

impl Resolver<'_> {
    /// Whether the regular file at `components`, found the same as `entry` (size
    /// and time), holds other metadata (mode, owner, extended attributes); unless
    /// `dry_run`, gives it the offered ones. Its time matched already.
    pub(crate) fn refresh_same_file(
        &mut self,
        path: &str,
        components: &[&[u8]],
        entry: &Entry,
        dry_run: bool,
    ) -> Result<bool, Refusal> {
        let Some((file, stat)) = self.open_regular(components) else {
            return Ok(false);
        };
        // A server keeps reading and writing what it holds, as when it wrote it.
        let policy = self.policy(0o600);
        if !meta::differs(&file, &stat, entry, policy, false) {
            return Ok(false);
        }
        if !dry_run {
            meta::apply(&file, entry, policy)
                .map_err(|err| Refusal::io(path, "cannot set its metadata", err))?;
        }
        Ok(true)
    }

    /// Whether the existing directory at `components` holds other metadata than
    /// `entry` offers (mode, time, owner, extended attributes).
    pub(crate) fn dir_differs(&mut self, components: &[&[u8]], entry: &Entry) -> bool {
        let Ok(Some(dir)) = self.walk(components, false) else {
            return false;
        };
        let Ok(stat) = rustix::fs::fstat(&*dir) else {
            return false;
        };
        meta::differs(&*dir, &stat, entry, self.policy(0o700), true)
    }
}
