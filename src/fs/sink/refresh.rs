//! Entries the receiver holds already (a `same` file, link or special file, a
//! directory that exists) whose metadata differs from the offer's: found while
//! planning, so that `--itemize` can say `attrs` (rsync's `.f...p...`,
//! `.L..t......`), and for a file, link or special file brought up to the offer
//! at once, as `rsync -a` does; a directory gets its metadata at the end of the
//! session anyway. Never follows a link; a file this process cannot open is
//! left as it is, and so is one with more than one link: changing it in place would
//! change every link, maybe one outside the target (a hard link to another tree, a
//! `cp -al` snapshot); one of those whose metadata differs is said, not skipped in
//! silence. The exception is a file every name of which the offer sends as hard
//! links of it: changing it changes nothing the offer does not name (as `rsync
//! -aH` changes them all). Whether to refresh at all is the caller's choice: only where
//! the receiver lets its sender replace files.

use std::collections::HashSet;

use rustix::fs::Stat;

use super::meta;
use super::resolver::{Resolver, split_last};
use crate::fs::{Refusal, beneath};
use crate::proto::message::{Entry, EntryKind};

impl Resolver<'_> {
    /// Whether the regular file at `components`, found the same as `entry` (size
    /// and time), holds other metadata (mode, owner, extended attributes); unless
    /// `dry_run`, gives it the offered ones. Its size and time matched already;
    /// they are checked again on the file opened, which may have been swapped since.
    /// `twins`: the other names the offer gives it (its hard links, checked paths
    /// beneath the target).
    pub(crate) fn refresh_same_file(
        &mut self,
        path: &str,
        (components, twins): (&[&[u8]], &[Vec<&[u8]>]),
        entry: &Entry,
        dry_run: bool,
    ) -> Result<bool, Refusal> {
        let Some((file, stat)) = self.open_regular(components) else {
            return Ok(false);
        };
        let still_same = entry.size == Some(stat.st_size as u64)
            && entry.mtime == Some(stat.st_mtime)
            && meta::same_nanos(entry.mtime_ns.unwrap_or(0), stat.st_mtime_nsec as u32);
        if !still_same {
            return Ok(false);
        }
        // A server keeps reading and writing what it holds, as when it wrote it.
        let policy = self.policy(0o600);
        if !meta::differs(&file, &stat, entry, policy, false) {
            return Ok(false);
        }
        if stat.st_nlink != 1 && !self.only_names(&stat, components, twins) {
            return Err(other_names(path, stat.st_nlink));
        }
        if !dry_run {
            meta::apply_in_place(&file, entry, policy)
                .map_err(|err| Refusal::io(path, "cannot set its metadata", err))?;
        }
        Ok(true)
    }

    /// Whether the link or special file at `components`, found the same as `entry`
    /// (a link to the same target, a node of its kind and numbers), holds another
    /// time, owner or (but a link) mode than offered; unless `dry_run`, gives it the
    /// offered ones there, never through a link (`meta::apply_at`); not one with
    /// more than one name, like a file. A hard link's metadata is its file's:
    /// nothing to do here.
    pub(crate) fn refresh_same_node(
        &mut self,
        path: &str,
        components: &[&[u8]],
        entry: &Entry,
        dry_run: bool,
    ) -> Result<bool, Refusal> {
        if entry.kind == EntryKind::Hardlink {
            return Ok(false);
        }
        let (parents, name) = split_last(components);
        let Ok(Some(dir)) = self.walk(parents, false) else {
            return Ok(false);
        };
        // One with more names is left as it is, as a file is: `cp -al` and
        // `--link-dest` snapshots hard-link links and special files too.
        let Ok(Some(stat)) = beneath::stat(&*dir, name) else {
            return Ok(false);
        };
        let policy = self.policy(0);
        if !meta::node_differs(&stat, entry, policy)
            && !meta::node_xattrs_differ(&*dir, name, entry, policy)
        {
            return Ok(false);
        }
        if stat.st_nlink != 1 {
            return Err(other_names(path, stat.st_nlink));
        }
        if !dry_run {
            meta::apply_at(&*dir, name, entry, policy)
                .map_err(|err| Refusal::io(path, "cannot set its metadata", err))?;
        }
        Ok(true)
    }

    /// Whether the file found as `stat` at `components` has no names but that and
    /// `twins`, each of which holds it (reached without following a link).
    fn only_names(&mut self, stat: &Stat, components: &[&[u8]], twins: &[Vec<&[u8]>]) -> bool {
        let mut names: HashSet<&[&[u8]]> = HashSet::from([components]);
        names.extend(twins.iter().map(Vec::as_slice));
        names.len() as u64 == stat.st_nlink
            && twins.iter().all(|twin| {
                let (parents, name) = split_last(twin);
                let found = match self.walk(parents, false) {
                    Ok(Some(dir)) => beneath::stat(&*dir, name).ok().flatten(),
                    _ => None,
                };
                found
                    .is_some_and(|found| (found.st_dev, found.st_ino) == (stat.st_dev, stat.st_ino))
            })
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

/// Why an entry with other metadata than offered keeps its own: it has `names`
/// names, and each would change (not said in silence: the caller warns and the
/// sender is told, as for metadata that cannot be set).
fn other_names(path: &str, names: u64) -> Refusal {
    Refusal::new(
        crate::proto::message::ErrorCode::Io,
        format!(
            "{path}: its mode, owner, time or attributes are left as they are: it has \
             {names} names (hard links), and each would change (-I replaces it)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use crate::fs::sink::TargetDir;

    /// A hostile offer cannot make a file with a name outside the target look as if
    /// every name of it were sent: a twin named twice, or as the file itself, counts
    /// once.
    #[test]
    fn only_names_counts_each_name_once_and_finds_each_holding_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("a"), b"secret").unwrap();
        std::fs::hard_link(target.join("a"), target.join("b")).unwrap();
        std::fs::hard_link(target.join("a"), tmp.path().join("outside")).unwrap();
        let dir = TargetDir::open(&target).unwrap();
        let mut resolver = dir.resolver();
        let stat = rustix::fs::lstat(target.join("a")).unwrap();
        let (a, b): (&[&[u8]], &[&[u8]]) = (&[b"a"], &[b"b"]);
        let twice = [b.to_vec(), b.to_vec()];
        assert!(!resolver.only_names(&stat, a, &twice));
        assert!(!resolver.only_names(&stat, a, &[a.to_vec(), b.to_vec()]));
        assert!(!resolver.only_names(&stat, a, &[b.to_vec(), vec![b"c".as_slice()]]));
        std::fs::remove_file(tmp.path().join("outside")).unwrap();
        let stat = rustix::fs::lstat(target.join("a")).unwrap();
        assert!(resolver.only_names(&stat, a, &[b.to_vec()]));
        // A name that holds another file is no name of this one.
        std::fs::write(target.join("c"), b"other").unwrap();
        std::fs::hard_link(target.join("a"), tmp.path().join("outside")).unwrap();
        let stat = rustix::fs::lstat(target.join("a")).unwrap();
        assert!(!resolver.only_names(&stat, a, &[b.to_vec(), vec![b"c".as_slice()]]));
    }
}
