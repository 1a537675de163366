//! Entries without data (section 16): symbolic links, hard links, fifos, sockets and
//! device nodes. Each is made under a temporary `.xfer-<random>.part` name beside its
//! final name, given its metadata there (never through a link), and renamed into
//! place: over what is there only when overwriting, and over a directory only one
//! the plan let go and the caller emptied (a change of type, `TargetDir::clear`). What
//! is already there and the same (a link with the same target bytes, a name that is
//! already the file's inode, a node of the same kind and numbers) is `same`.
//!
//! On a server every name made is counted under the ledger's lock, as files are,
//! one entry each: a hard link counts its file's bytes again (each name, as the
//! first count of a home does: the safe direction), a symbolic link its target's
//! length, and what a replacement removed (a file, a link, an emptied directory)
//! is given back.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, RenameFlags};
use rustix::io::Errno;

use super::displaced::Displaced;
use super::meta;
use super::resolver::{Placement, Resolver, split_last};
use crate::escape::escape;
use crate::fs::beneath::NotOver;
use crate::fs::ledger::Footprint;
use crate::fs::path::temporary_name;
use crate::fs::{Refusal, beneath};
use crate::hex::unhex_vec;
use crate::proto::message::{Entry, EntryKind, ErrorCode};

/// Mode of a node until its own is applied.
const TEMPORARY_MODE: u32 = 0o600;

/// What one entry without data asks for, with its hard link's file resolved.
pub(crate) struct Node<'e> {
    /// The path as people read it, for messages.
    pub(crate) path: &'e str,
    pub(crate) components: &'e [&'e [u8]],
    pub(crate) entry: &'e Entry,
    /// A hard link's file: its final path's components.
    pub(crate) file: Option<&'e [&'e [u8]]>,
    /// Its name may hold a directory the caller emptied (`TargetDir::clear`), which
    /// it replaces (see `beneath::rename_over_dir`).
    pub(crate) over_dir: bool,
}

/// A link's target bytes.
pub(crate) fn target_of(entry: &Entry) -> Vec<u8> {
    match (&entry.extra().target, &entry.extra().target_hex) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(hex)) => unhex_vec(hex).unwrap_or_default(),
        (None, None) => Vec::new(),
    }
}

fn file_type_of(kind: EntryKind) -> Option<FileType> {
    match kind {
        EntryKind::Fifo => Some(FileType::Fifo),
        EntryKind::Socket => Some(FileType::Socket),
        EntryKind::Char => Some(FileType::CharacterDevice),
        EntryKind::Block => Some(FileType::BlockDevice),
        _ => None,
    }
}

impl Resolver<'_> {
    /// What is at a node's final name: nothing ([`Placement::Free`]), the same
    /// thing ([`Placement::Same`]), or something else (`exists` unless overwriting;
    /// a directory always).
    pub(crate) fn probe_node(
        &mut self,
        node: &Node,
        overwrite: bool,
    ) -> Result<Placement, Refusal> {
        // A link or hard link is an entry as a file is: never deeper or at a longer
        // path than the server keeps (a hard link there held its file's bytes
        // beyond every count made again).
        self.deep_enough(node.path, node.components)?;
        let (parents, name) = split_last(node.components);
        let Some(dir) = self.walk(parents, false)? else {
            return Ok(Placement::Free(None));
        };
        let stat = match beneath::stat(&*dir, name) {
            Ok(None) => return Ok(Placement::Free(None)),
            Ok(Some(stat)) => stat,
            Err(err) => return Err(Refusal::io(node.path, "cannot inspect the target", err)),
        };
        let kind = beneath::kind(&stat);
        if self.is_same(node, &dir, name, &stat) {
            return Ok(Placement::Same);
        }
        match kind {
            FileType::Directory if overwrite => Ok(Placement::Dir),
            FileType::Directory => Err(self.dir_in_the_way(node.path)),
            FileType::RegularFile if overwrite => Ok(Placement::Free(Some(stat.st_size as u64))),
            _ if overwrite => Ok(Placement::Taken),
            _ => Err(Refusal::new(
                ErrorCode::Exists,
                format!(
                    "{}: already exists ({})",
                    escape(node.path),
                    self.target.replace_hint()
                ),
            )),
        }
    }

    fn is_same(
        &mut self,
        node: &Node,
        dir: &OwnedFd,
        name: &[u8],
        stat: &rustix::fs::Stat,
    ) -> bool {
        let kind = beneath::kind(stat);
        match node.entry.kind {
            EntryKind::Symlink => {
                kind == FileType::Symlink
                    && rustix::fs::readlinkat(dir, name, Vec::new())
                        .is_ok_and(|target| target.as_bytes() == target_of(node.entry))
            }
            EntryKind::Hardlink => self
                .file_stat(node)
                .is_some_and(|file| (file.st_dev, file.st_ino) == (stat.st_dev, stat.st_ino)),
            other => {
                let device = rustix::fs::makedev(
                    node.entry.extra().major.unwrap_or(0),
                    node.entry.extra().minor.unwrap_or(0),
                );
                file_type_of(other) == Some(kind)
                    && (!matches!(other, EntryKind::Char | EntryKind::Block)
                        || stat.st_rdev == device)
            }
        }
    }

    /// What a hard link's file is now, if it is a regular file.
    fn file_stat(&mut self, node: &Node) -> Option<rustix::fs::Stat> {
        let (parents, name) = split_last(node.file?);
        let dir = self.walk(parents, false).ok()??;
        let stat = beneath::stat(&*dir, name).ok()??;
        (beneath::kind(&stat) == FileType::RegularFile).then_some(stat)
    }

    /// Makes the node (see the module documentation). A hard link whose file is not
    /// there is `not_found`.
    pub(crate) fn make_node(&mut self, node: &Node, overwrite: bool) -> Result<(), Refusal> {
        let (parents, name) = split_last(node.components);
        let dir = self
            .walk(parents, true)?
            .expect("walk with create returns a directory");
        if let Some(existing) = beneath::stat(&*dir, name).ok().flatten() {
            if self.is_same(node, &dir, name, &existing) {
                return Ok(());
            }
        }
        let meter = self.target.meter().cloned();
        // On a server, the made name and what it replaces are counted under the lock,
        // taken before a hard link's file is measured: another session of the user
        // replacing that file meanwhile would leave the link charged its old size.
        let mut books = meter.as_ref().map(|account| account.books());
        let file = match node.entry.kind {
            EntryKind::Hardlink => Some(self.hard_link_source(node)?),
            _ => None,
        };
        let charge = node_footprint(node.entry, file.as_ref().map(|(_, _, size)| *size));
        if let (Some(books), Some(account)) = (&books, &meter) {
            account.may_add(books, &account.home_path(node.path), charge, node.path)?;
            // A directory replaced goes under the lock, as a file's does (`part.rs`).
            if node.over_dir && beneath::holds_dir(&*dir, name) {
                let key = account.home_path(node.path);
                books.unclaimed_but(&key, Some(&key))?;
            }
        }
        let before = (file.as_ref()).and_then(|(dir, name, _)| Displaced::before(dir, name));
        let temp = create_temporary(&dir, node, file.as_ref())?;
        let placed = self.finish_node(&dir, &temp, name, node, overwrite);
        if let Err(refusal) = placed {
            let _ = rustix::fs::unlinkat(&*dir, temp.as_str(), AtFlags::empty());
            return Err(refusal);
        }
        if let (Some((file_dir, file_name, _)), Some(before)) = (&file, before) {
            // The file gained a name: that change of its ctime is this session's.
            self.target
                .displaced()
                .gave_name(file_dir, file_name, before);
        }
        let replaced = placed.unwrap_or(None);
        if let (Some(books), Some(account)) = (books.as_deref_mut(), meter.as_ref()) {
            books.grew(&account.home_path(node.path), charge.bytes, charge.files);
            if let Some(stat) = replaced {
                books.gone(&stat);
            }
        }
        Ok(())
    }

    /// The directory and name of a hard link's file, and its size, or `not_found`.
    fn hard_link_source(
        &mut self,
        node: &Node,
    ) -> Result<(std::sync::Arc<OwnedFd>, Vec<u8>, u64), Refusal> {
        let missing = || {
            Refusal::new(
                ErrorCode::NotFound,
                format!(
                    "{}: the file it is a hard link of did not arrive",
                    escape(node.path)
                ),
            )
        };
        let (parents, name) = split_last(node.file.ok_or_else(missing)?);
        let dir = self.walk(parents, false)?.ok_or_else(missing)?;
        let stat = beneath::stat(&*dir, name)
            .ok()
            .flatten()
            .ok_or_else(missing)?;
        if beneath::kind(&stat) != FileType::RegularFile {
            return Err(missing());
        }
        Ok((dir, name.to_vec(), stat.st_size as u64))
    }

    /// Applies the node's metadata under its temporary name and renames it into
    /// place; what it replaced (a file, a link, the emptied directory of a change
    /// of type), as it was just before, if anything.
    fn finish_node(
        &mut self,
        dir: &OwnedFd,
        temp: &str,
        name: &[u8],
        node: &Node,
        overwrite: bool,
    ) -> Result<Option<rustix::fs::Stat>, Refusal> {
        if node.entry.kind != EntryKind::Hardlink {
            meta::apply_at(dir, temp.as_bytes(), node.entry, self.policy(0))
                .map_err(|err| Refusal::io(node.path, "cannot set its metadata", err))?;
        }
        let replaced = match beneath::stat(dir, name) {
            Ok(Some(stat)) if overwrite => Some(stat),
            _ => None,
        };
        let renamed = if overwrite {
            // rename(2) of a non-directory onto a directory fails: only one the plan
            // let go, emptied, is exchanged for the node.
            let rename = || rustix::fs::renameat(dir, temp, dir, name);
            match self.target.displaced().taking(dir, name, rename) {
                Err(Errno::ISDIR) if node.over_dir => {
                    match beneath::rename_over_dir(dir, temp, name) {
                        // The node holds the name; the directory stays under `temp`.
                        Err(NotOver::Stranded(err)) => {
                            return Err(beneath::stranded(node.path, temp, err));
                        }
                        Err(NotOver::Failed(err)) => Err(err),
                        Ok(()) => Ok(()),
                    }
                }
                other => other,
            }
        } else {
            rustix::fs::renameat_with(dir, temp, dir, name, RenameFlags::NOREPLACE)
        };
        match renamed {
            Ok(()) => {
                // Renaming onto another name of the same inode does nothing.
                let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
                Ok(replaced)
            }
            Err(Errno::EXIST | Errno::NOTEMPTY | Errno::ISDIR) => Err(Refusal::new(
                ErrorCode::Exists,
                format!(
                    "{}: already exists ({})",
                    escape(node.path),
                    self.target.replace_hint()
                ),
            )),
            Err(err) => Err(Refusal::io(node.path, "cannot rename into place", err)),
        }
    }
}

/// What the node `entry` is charged in a quota: a link its target's length, a
/// hard link its file's bytes (`file_size`) again, a special file nothing; each
/// one entry.
pub(crate) fn node_footprint(entry: &Entry, file_size: Option<u64>) -> Footprint {
    match entry.kind {
        EntryKind::Symlink => Footprint::link(&target_of(entry)),
        _ => Footprint {
            bytes: file_size.unwrap_or(0),
            files: 1,
        },
    }
}

/// Makes the node under a fresh temporary name in `dir`.
fn create_temporary(
    dir: &OwnedFd,
    node: &Node,
    file: Option<&(std::sync::Arc<OwnedFd>, Vec<u8>, u64)>,
) -> Result<String, Refusal> {
    loop {
        let temp = temporary_name(super::part::random_bytes());
        let made = match (node.entry.kind, file) {
            (EntryKind::Symlink, _) => {
                let target = target_of(node.entry);
                rustix::fs::symlinkat(target.as_slice(), dir, temp.as_str())
            }
            (EntryKind::Hardlink, Some((file_dir, file_name, _))) => rustix::fs::linkat(
                &**file_dir,
                file_name.as_slice(),
                dir,
                temp.as_str(),
                AtFlags::empty(),
            ),
            (kind, _) => {
                let file_type = file_type_of(kind).ok_or(Errno::INVAL);
                let device = rustix::fs::makedev(
                    node.entry.extra().major.unwrap_or(0),
                    node.entry.extra().minor.unwrap_or(0),
                );
                file_type.and_then(|file_type| {
                    rustix::fs::mknodat(
                        dir,
                        temp.as_str(),
                        file_type,
                        Mode::from_raw_mode(TEMPORARY_MODE),
                        device,
                    )
                })
            }
        };
        match made {
            Ok(()) => return Ok(temp),
            Err(Errno::EXIST) => continue,
            Err(err) => return Err(Refusal::io(node.path, "cannot make it", err)),
        }
    }
}
