//! `--delete` on the receiving side ([`TargetDir::prune`]): what the offered
//! directories hold and the offer does not, removed (files, links and other
//! non-directories, then the directories they emptied), beneath the target only.
//!
//! Every directory is opened from its parent without following links
//! (`beneath`), and `unlinkat` removes a link itself, never what it points at: a
//! link planted in the tree, or an offered directory that is a link here, leads
//! nowhere. Spared: whatever the caller keeps (the filter's exclusions, paths another
//! session of this process is receiving), xfer's own temporaries and partials,
//! names that are not UTF-8 (the offer could not name them), anything changed since
//! the session began (`ctime`: a file another session renamed into place, a
//! directory it added to), and on a server whatever the user's ledger says another
//! `put` is writing; what a server removes is given back to the user's quota, and
//! once a reload took the home from its user it removes nothing more. All but the
//! filter's exclusions are said as `kept` items, with why.
//!
//! The same rules empty a directory that an offered file or link replaces
//! ([`TargetDir::clear`], a change of type as `rsync -a --delete` mirrors it), and
//! `beneath::rename_over_dir` then puts the file in the emptied directory's place.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use super::target::TargetDir;
use crate::escape::{Named, escape};
use crate::fs::Refusal;
use crate::fs::beneath::{self, MAX_DEPTH};
use crate::fs::ledger::{DirHold, Footprint};
use crate::fs::path::{check_path, is_reserved_bytes};
use crate::proto::message::{ErrorCode, ItemKind, KeptWhy, Removed};

/// Why the caller of [`TargetDir::prune`] keeps a path the offer lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spare {
    /// A filter excludes it: the user's wish, said to nobody.
    Excluded,
    /// For safety: said (a `kept` item), with why.
    Kept(KeptWhy),
}

/// What [`TargetDir::prune`] may remove, and how.
pub(crate) struct Prune<'a> {
    /// Whether a path beneath the target is in the offer (or above something in it).
    pub(crate) offered: &'a dyn Fn(&str) -> bool,
    /// The same for a path whose bytes are not UTF-8 (offered as `path_hex`).
    pub(crate) offered_raw: &'a dyn Fn(&[u8]) -> bool,
    /// Why a path (a directory: `true`) must stay although the offer lacks it, if
    /// it must.
    pub(crate) keep: &'a dyn Fn(&str, bool) -> Option<Spare>,
    /// Nanoseconds since the epoch when the session began: newer changes are spared.
    pub(crate) since: i128,
    /// Only say what would go (`--dry-run`).
    pub(crate) dry_run: bool,
    /// For [`TargetDir::clear`] with `--delete`: the directory in the way as the
    /// plan saw it ([`TargetDir::dir_identity`]). Another one there now (moved
    /// into the name since, whose entries keep their old times) is kept whole.
    pub(crate) seen: Option<(u64, u64)>,
}

impl TargetDir {
    /// Removes what the offered directories `dirs` (accepted by the plan, paths
    /// beneath the target) hold and the offer does not, and says each removal (or
    /// failure) to `said`, deepest first.
    pub(crate) fn prune(&self, dirs: &[&str], rules: &Prune<'_>, said: &mut dyn FnMut(Removed)) {
        let Ok(root) = self.dup_root() else {
            return;
        };
        // One walk for all of them: a file with names in two of them is one file.
        let mut walk = Walk::new(rules, said, self, None);
        for dir in dirs {
            let Ok(components) = check_path(dir) else {
                continue;
            };
            let _held = self.hold(dir, rules.dry_run);
            // A component that is a link (or gone) is never entered.
            if let Ok(Some(fd)) = beneath::walk(&root, &components, None) {
                walk.children(&fd, dir, components.len());
            }
        }
    }

    /// Says, as kept for safety, what the offered directory `dir` (its path's bytes,
    /// which are not UTF-8) holds and the offer does not: a mirror never looks
    /// beneath such a name to remove anything (the rules and claims it goes by
    /// read paths as text), but it does not keep that silently. xfer's own partial
    /// files are kept as such. Nothing is removed.
    pub(crate) fn spare_beneath_raw(
        &self,
        dir: &[u8],
        rules: &Prune<'_>,
        said: &mut dyn FnMut(Removed),
    ) {
        let components: Vec<&[u8]> = dir.split(|&b| b == b'/').collect();
        let Ok(root) = self.dup_root() else {
            return;
        };
        if let Ok(Some(fd)) = beneath::walk(&root, &components, None) {
            Walk::new(rules, said, self, None).spare_raw_children(&fd, dir);
        }
    }

    /// Empties the directory `components` (shown as `path`), which the offered file
    /// or link of that path replaces: without `delete` it must be empty already;
    /// with it, what it holds is removed (in a dry run: found) with the rules of
    /// [`TargetDir::prune`], each removal said to `said`. `exists` if anything
    /// stays, saying what and why; otherwise what went (in a dry run: would), as
    /// the ledger charged it: what the directory's contents free (the directory
    /// itself goes, and is given back, when the entry takes its name). On a
    /// server `busy` while another `put` writes beneath it (the ledger's rule;
    /// checked again under the lock when the entry is named). Nothing there, or
    /// no directory: `Ok`, the final rename decides.
    /// `parent`: the descriptor of its parent directory where the entry will be
    /// named, so that the directory emptied is the one replaced even if a parent
    /// was renamed meanwhile (without it, as for the plan's look, walked from the
    /// root).
    pub(crate) fn clear(
        &self,
        (components, path): (&[&[u8]], &str),
        parent: Option<&OwnedFd>,
        delete: bool,
        rules: &Prune<'_>,
        said: &mut dyn FnMut(Removed),
    ) -> Result<Footprint, Refusal> {
        let (name, parents) = components
            .split_last()
            .expect("the path policy never returns an empty list");
        let walked;
        let parent = match parent {
            Some(parent) => parent,
            None => {
                let root = self
                    .dup_root()
                    .map_err(|err| Refusal::io(path, "cannot open the target directory", err))?;
                let Some(found) = beneath::walk(&root, parents, None)? else {
                    return Ok(Footprint::default());
                };
                walked = found;
                &walked
            }
        };
        let fd = match beneath::open_dir(parent, *name) {
            Ok(fd) => fd,
            // Gone, or no directory (any more): nothing to empty.
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(Footprint::default()),
            // One it may not open is no empty one: said as the disk says it.
            Err(err) => {
                return Err(Refusal::io(
                    path,
                    "cannot open the directory in the way",
                    err,
                ));
            }
        };
        self.unclaimed_beneath(path)?;
        // Held from here (checked still in place): what goes is beneath the tree.
        let _held = self.hold(path, rules.dry_run);
        if !beneath::still_at(parent, *name, &fd) {
            return Ok(Footprint::default());
        }
        if !delete {
            return (self.empty_already(&fd, path, components.len()))
                .map(|()| Footprint::default());
        }
        the_one_seen(&fd, rules.seen, path, said)?;
        let mut walk = Walk::new(rules, said, self, Some(path));
        if walk.children(&fd, path, components.len()) {
            return Ok(walk.freed);
        }
        Err(walk.not_emptied(path))
    }
}

/// Whether the directory `fd` in the way at `path` is the one the plan saw there
/// (`seen`, where known). Another one, moved into the name since, holds what the
/// plan never let go: it is kept whole (said to `said`) and the entry refused.
fn the_one_seen(
    fd: &OwnedFd,
    seen: Option<(u64, u64)>,
    path: &str,
    said: &mut dyn FnMut(Removed),
) -> Result<(), Refusal> {
    let Some(seen) = seen else {
        return Ok(());
    };
    if rustix::fs::fstat(fd).is_ok_and(|now| identity(&now) == seen) {
        return Ok(());
    }
    said(Removed {
        path: path.to_string(),
        kind: ItemKind::Dir,
        error: None,
        kept: Some(KeptWhy::Changed),
        bytes: None,
    });
    Err(Refusal::new(
        ErrorCode::Exists,
        format!(
            "{}: another directory took that name during the transfer; kept whole, not \
             replaced",
            escape(path)
        ),
    ))
}

impl TargetDir {
    /// The directory at `components` beneath the target as it is now, its device
    /// and inode, or `(0, 0)` where none is: what a later [`TargetDir::clear`] is
    /// held to ([`Prune::seen`]).
    pub(crate) fn dir_identity(&self, components: &[&[u8]]) -> (u64, u64) {
        let Some((name, parents)) = components.split_last() else {
            return (0, 0);
        };
        let root = self.dup_root().ok();
        let parent = root.and_then(|root| beneath::walk(&root, parents, None).ok().flatten());
        match parent.and_then(|parent| beneath::stat(&parent, *name).ok().flatten()) {
            Some(stat) if beneath::kind(&stat) == FileType::Directory => identity(&stat),
            _ => (0, 0),
        }
    }

    /// On a server, the directory `path` (beneath the target), which a mirror is
    /// about to open and empty, held until the hold is dropped: another session's
    /// `mv` or `rm` of it, or of a directory above it, is `busy` meanwhile, so
    /// what the mirror removes through its descriptor is still beneath the tree.
    /// A dry run (`dry_run`), which removes nothing, holds nothing: it would keep
    /// another session from moving, or a real mirror from removing, what it only
    /// looks through.
    fn hold(&self, path: &str, dry_run: bool) -> Option<DirHold> {
        let account = self.meter().filter(|_| !dry_run)?;
        Some(account.hold_dir(path))
    }

    /// On a server, `busy` if another `put` writes `path` (beneath the target),
    /// something beneath it or a directory above it: the entry received at `path`
    /// itself does not count.
    fn unclaimed_beneath(&self, path: &str) -> Result<(), Refusal> {
        let Some(account) = self.meter() else {
            return Ok(());
        };
        let key = account.home_path(path);
        account.books().unclaimed_but(&key, Some(&key))
    }
}

impl TargetDir {
    /// Without `--delete`: `Ok` if the directory `fd` (offered as `path`, `depth`
    /// components below the target) is empty, else `exists`, advising `--delete`
    /// only where it would replace the directory: not where it holds, at any depth,
    /// what `--delete` keeps whatever the session's rules (xfer's temporaries and
    /// partials, names that are not UTF-8), which is named instead.
    fn empty_already(&self, fd: &OwnedFd, path: &str, depth: usize) -> Result<(), Refusal> {
        if beneath::children(fd).next().is_none() {
            return Ok(());
        }
        let by_name = Prune {
            offered: &|_| false,
            offered_raw: &|_| false,
            keep: &|_, _| None,
            since: i128::MAX,
            dry_run: true,
            seen: None,
        };
        let mut unsaid = |_| {};
        let mut walk = Walk::new(&by_name, &mut unsaid, self, Some(path));
        if walk.children(fd, path, depth) {
            return Err(Refusal::new(
                ErrorCode::Exists,
                format!("{}: {}", escape(path), NOT_EMPTY),
            ));
        }
        let (kept, why) = walk.kept.unwrap_or_default();
        Err(Refusal::new(
            ErrorCode::Exists,
            format!(
                "{}: the directory of that name holds {}, which --delete keeps too \
                 ({why}); not replaced",
                escape(path),
                escape(&kept)
            ),
        ))
    }
}

/// Why a non-empty directory stays where a file or link is offered without `--delete`.
const NOT_EMPTY: &str = "a directory of that name holds entries the offer does not; \
     --delete replaces it (deleting them, as it deletes whatever the offer lacks), \
     or remove it on the receiving side first";

/// Why a filter's exclusion keeps a directory that a file or link would replace.
const EXCLUDED: &str = "a filter excludes it, which protects it from --delete";

/// What a report calls an entry of `stat`'s type.
/// The children of the directory `fd` in name order, so that a report reads the
/// same on every run.
fn sorted_children(fd: &OwnedFd) -> Vec<(std::ffi::CString, rustix::fs::Stat)> {
    let mut children: Vec<_> = beneath::children(fd).collect();
    children.sort_by(|a, b| a.0.cmp(&b.0));
    children
}

fn item_kind(stat: &rustix::fs::Stat) -> ItemKind {
    match beneath::kind(stat) {
        FileType::Directory => ItemKind::Dir,
        FileType::RegularFile => ItemKind::File,
        _ => ItemKind::Other,
    }
}

struct Walk<'a, 'b> {
    rules: &'a Prune<'a>,
    said: &'b mut dyn FnMut(Removed),
    target: &'a TargetDir,
    /// The path an entry of this session is being received at (a directory it
    /// replaces is emptied): its own claim in the ledger does not count.
    own: Option<&'a str>,
    /// The first path that stayed, and why.
    kept: Option<(String, &'static str)>,
    /// What went (in a dry run: would), as the ledger charged it.
    freed: Footprint,
    /// Why the walk stopped, removing nothing more: the home stopped being its
    /// user's (a reload; `Account::current`).
    stopped: Option<Refusal>,
}

impl<'a, 'b> Walk<'a, 'b> {
    fn new(
        rules: &'a Prune<'a>,
        said: &'b mut dyn FnMut(Removed),
        target: &'a TargetDir,
        own: Option<&'a str>,
    ) -> Self {
        Walk {
            rules,
            said,
            target,
            own,
            kept: None,
            freed: Footprint::default(),
            stopped: None,
        }
    }

    /// Notes that `path` stays, for `why`, if it is the first.
    fn keeps(&mut self, path: &str, why: &'static str) {
        if self.kept.is_none() {
            self.kept = Some((path.to_string(), why));
        }
    }

    /// Looks at each child of the directory `fd` (offered as `path`); returns
    /// whether all of them went (or, in a dry run, would).
    fn children(&mut self, fd: &OwnedFd, path: &str, depth: usize) -> bool {
        let mut emptied = true;
        for (name, stat) in sorted_children(fd) {
            if self.stopped.is_some() {
                return false;
            }
            let name = match name.into_string() {
                Ok(name) => name,
                Err(raw) => {
                    emptied = false;
                    let mut bytes = format!("{path}/").into_bytes();
                    bytes.extend_from_slice(raw.into_cstring().as_bytes());
                    if !(self.rules.offered_raw)(&bytes) {
                        let named = Named::of_bytes(&bytes);
                        self.spare_named(named, item_kind(&stat), KeptWhy::NotUtf8);
                    }
                    continue;
                }
            };
            let child = format!("{path}/{name}");
            let is_dir = beneath::kind(&stat) == FileType::Directory;
            let spared = if (self.rules.offered)(&child) {
                Some(None)
            } else if is_reserved_bytes(name.as_bytes()) {
                Some(Some(KeptWhy::Temporary))
            } else if let Some(spare) = (self.rules.keep)(&child, is_dir) {
                Some(match spare {
                    Spare::Excluded => {
                        self.keeps(&child, EXCLUDED);
                        None
                    }
                    Spare::Kept(why) => Some(why),
                })
            } else if self.changed_since(&stat) {
                Some(Some(KeptWhy::Changed))
            } else {
                None
            };
            match spared {
                Some(Some(why)) => self.spare(child, item_kind(&stat), why),
                Some(None) => self.keeps(&child, "offered"),
                None if self.remove(fd, &name, &child, &stat, depth) => continue,
                None => self.keeps(&child, "it could not be removed"),
            }
            emptied = false;
        }
        emptied
    }

    /// Keeps, as said items, each child of the directory `fd` (offered as the bytes
    /// `dir`, which are not UTF-8) that the offer does not hold: see
    /// [`TargetDir::spare_beneath_raw`].
    fn spare_raw_children(&mut self, fd: &OwnedFd, dir: &[u8]) {
        for (name, stat) in sorted_children(fd) {
            let path = [dir, b"/", name.as_bytes()].concat();
            if (self.rules.offered_raw)(&path) {
                continue;
            }
            let why = match is_reserved_bytes(name.as_bytes()) {
                true => KeptWhy::Temporary,
                false => KeptWhy::NotUtf8,
            };
            self.spare_named(Named::of_bytes(&path), item_kind(&stat), why);
        }
    }

    /// Keeps `path` for safety: noted, and said as a `kept` item.
    fn spare(&mut self, path: String, kind: ItemKind, why: KeptWhy) {
        self.spare_named(Named::from(path), kind, why);
    }

    /// [`Self::spare`] of a name that may not be UTF-8 (its bytes kept for the
    /// receiver's own report).
    fn spare_named(&mut self, path: Named, kind: ItemKind, why: KeptWhy) {
        self.keeps(&path, why.words());
        (self.said)(Removed {
            path: path.text,
            kind,
            error: None,
            kept: Some(why),
            bytes: path.bytes,
        });
    }

    /// Opens the directory `name` to empty it; `None` where it cannot be: gone
    /// meanwhile (or replaced by a link, never followed), nothing to say; else it
    /// stays and the mirror differs from its source: said, a failure.
    fn open_to_empty(&mut self, parent: &OwnedFd, name: &str, path: &str) -> Option<OwnedFd> {
        match beneath::open_dir(parent, name) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => None,
            Err(err) => {
                (self.said)(Removed {
                    path: path.to_string(),
                    kind: ItemKind::Dir,
                    error: Some(std::io::Error::from(err).to_string()),
                    kept: None,
                    bytes: None,
                });
                None
            }
        }
    }

    /// Removes `name` (a directory with what it holds); whether it went.
    fn remove(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        path: &str,
        stat: &rustix::fs::Stat,
        depth: usize,
    ) -> bool {
        let kind = item_kind(stat);
        if kind == ItemKind::Dir && !self.emptied(parent, (name, stat), path, depth) {
            return false; // something stays inside: so does the directory
        }
        // A read-only directory of this user's is given its owner's bits first.
        let parent_path = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        let result = match self.rules.dry_run {
            // What the real run's unlinkat would be refused for want of rights.
            true => match beneath::may_remove_names(parent) {
                Err(Errno::ACCESS) if self.target.would_loosen(parent, !parent_path.is_empty()) => {
                    Ok(())
                }
                other => other,
            }
            .and_then(|()| beneath::may_remove_entry(parent, name, stat))
            .map_err(Unlink::Os),
            false => {
                self.target.enter_dir(parent, parent_path.as_bytes());
                self.unlink(parent, (name, stat), path, kind)
            }
        };
        match result {
            Ok(()) => {
                self.went(path, kind, stat);
                true
            }
            Err(why) => self.not_removed(path, kind, why),
        }
    }

    /// Empties the directory `name` of `parent` (shown as `path`, `depth` below the
    /// target), found as `listed` when `parent` was listed, held meanwhile (see
    /// `TargetDir::hold`; let go before the directory itself goes); whether it is
    /// empty now (in a dry run: would be). One that another session put in its
    /// place since the listing (removed, and another moved in) stays whole, said
    /// as changed: its entries' own ctimes would not tell.
    fn emptied(
        &mut self,
        parent: &OwnedFd,
        (name, listed): (&str, &rustix::fs::Stat),
        path: &str,
        depth: usize,
    ) -> bool {
        let _held = self.target.hold(path, self.rules.dry_run);
        let Some(fd) = self.open_to_empty(parent, name, path) else {
            return false;
        };
        if rustix::fs::fstat(&fd).is_ok_and(|opened| self.not_as_listed(&opened, listed)) {
            self.spare(path.to_string(), ItemKind::Dir, KeptWhy::Changed);
            return false;
        }
        depth < MAX_DEPTH && self.children(&fd, path, depth + 1)
    }

    /// Says why `path` did not go, where that is news; always `false`.
    fn not_removed(&mut self, path: &str, kind: ItemKind, why: Unlink) -> bool {
        match why {
            // Another `put` is writing it (the ledger's refusal): it stays, said.
            Unlink::Claimed => {
                self.spare(path.to_string(), kind, KeptWhy::Busy);
                false
            }
            // Replaced or changed since the directory was listed: it stays, said.
            Unlink::Changed => {
                self.spare(path.to_string(), kind, KeptWhy::Changed);
                false
            }
            // The home is no longer the user's: nothing more goes, said once.
            Unlink::Stopped(refusal) => {
                (self.said)(Removed {
                    path: path.to_string(),
                    kind,
                    error: Some(refusal.message.clone()),
                    kept: None,
                    bytes: None,
                });
                self.stopped = Some(refusal);
                false
            }
            // Another session wrote into it meanwhile, or removed it: it stays (or
            // is gone), and what it holds was said.
            Unlink::Os(Errno::NOTEMPTY | Errno::EXIST | Errno::NOENT) => false,
            // Anything else (the kernel's own EBUSY of a mount point among them)
            // leaves the mirror different from its source: a failure.
            Unlink::Os(err) => {
                (self.said)(Removed {
                    path: path.to_string(),
                    kind,
                    error: Some(std::io::Error::from(err).to_string()),
                    kept: None,
                    bytes: None,
                });
                false
            }
        }
    }

    /// Why the directory `path` a file or link replaces was not emptied: the
    /// home was taken from its user, or what stays (the first of it), and why.
    fn not_emptied(self, path: &str) -> Refusal {
        if let Some(refusal) = self.stopped {
            return refusal;
        }
        let (kept, why) = self.kept.unwrap_or_default();
        Refusal::new(
            ErrorCode::Exists,
            format!(
                "{}: the directory of that name holds {}, which --delete keeps ({why}); \
                 not replaced",
                escape(path),
                escape(&kept)
            ),
        )
    }

    /// Notes that `path` (found as `stat`) went (in a dry run: would), and says so.
    fn went(&mut self, path: &str, kind: ItemKind, stat: &rustix::fs::Stat) {
        if kind == ItemKind::Dir && !self.rules.dry_run {
            self.target.forget_dir(stat);
        }
        self.freed += Footprint::of(stat);
        (self.said)(Removed {
            path: path.to_string(),
            kind,
            error: None,
            kept: None,
            bytes: None,
        });
    }

    /// One `unlinkat` of `name`, found as `listed` when its directory was listed;
    /// on a server, under the user's ledger, refused ([`Unlink::Stopped`]) once
    /// the home is no longer the user's, as the `put`'s writes are, and
    /// ([`Unlink::Claimed`]) for a path another `put` is writing, and what left the
    /// disk (measured under the lock, right before) given back. Refused ([`Unlink::Changed`]) where the
    /// name no longer holds what was listed: another session's file, renamed into
    /// place while this one removed what the directory held before it (on a
    /// server that rename takes the same lock, so nothing slips in between).
    fn unlink(
        &self,
        parent: &OwnedFd,
        (name, listed): (&str, &rustix::fs::Stat),
        path: &str,
        kind: ItemKind,
    ) -> Result<(), Unlink> {
        let flags = match kind {
            ItemKind::Dir => AtFlags::REMOVEDIR,
            _ => AtFlags::empty(),
        };
        // A file with more names that goes changes the others' ctime: its own
        // doing, which the walk and the rest of the session know (`displaced.rs`;
        // it costs an open and a stat, spared where the listing found one name:
        // the check just before removing makes sure it is still that inode).
        let unlink = || rustix::fs::unlinkat(parent, name, flags);
        let unlink_noted = || match listed.st_nlink > 1 && kind != ItemKind::Dir {
            true => self
                .target
                .displaced()
                .taking(parent, name.as_bytes(), unlink),
            false => unlink(),
        };
        let Some(account) = self.target.meter() else {
            self.as_listed(parent, name, listed, kind)?;
            return Ok(unlink_noted()?);
        };
        let mut books = account.books_to_change().map_err(Unlink::Stopped)?;
        let own = self.own.map(|own| account.home_path(own));
        if books
            .unclaimed_but(&account.home_path(path), own.as_deref())
            .is_err()
        {
            return Err(Unlink::Claimed);
        }
        let stat = self.as_listed(parent, name, listed, kind)?;
        unlink_noted()?;
        books.gone(&stat);
        Ok(())
    }

    /// `name` of `parent` as it is now, unless it changed since it was `listed`:
    /// another inode under the name, or the same one changed since then and
    /// since the session began (see [`Walk::changed_since`]). A directory is left
    /// to `unlinkat`, which removes only an empty one (emptying it changed it).
    fn as_listed(
        &self,
        parent: &OwnedFd,
        name: &str,
        listed: &rustix::fs::Stat,
        kind: ItemKind,
    ) -> Result<rustix::fs::Stat, Unlink> {
        let stat = beneath::stat(parent, name)?.ok_or(Errno::NOENT)?;
        if kind == ItemKind::Dir {
            return Ok(stat);
        }
        if self.not_as_listed(&stat, listed) {
            return Err(Unlink::Changed);
        }
        Ok(stat)
    }
}

impl Walk<'_, '_> {
    /// Whether `stat`'s inode changed since the session began, other than by the
    /// session alone (it replaced or removed another of its names, or gave it one:
    /// `displaced.rs`).
    fn changed_since(&self, stat: &rustix::fs::Stat) -> bool {
        beneath::changed_at(stat) >= self.rules.since
            && !(self.target.displaced()).only_by_this_session(stat, self.rules.since)
    }

    /// Whether `now`, what a name holds, is not what the listing of its directory
    /// found (`listed`): another inode, or the same one changed since then and
    /// since the session began.
    fn not_as_listed(&self, now: &rustix::fs::Stat, listed: &rustix::fs::Stat) -> bool {
        identity(now) != identity(listed)
            || (beneath::changed_at(now) != beneath::changed_at(listed) && self.changed_since(now))
    }
}

/// The device and inode of `stat`.
fn identity(stat: &rustix::fs::Stat) -> (u64, u64) {
    (stat.st_dev, stat.st_ino)
}

/// Why [`Walk::unlink`] removed nothing: another session's claim (the ledger's
/// refusal), a change since the directory was listed, a home that is no longer
/// the user's, or the system's error, which may be its own EBUSY (a mount point).
enum Unlink {
    Claimed,
    Changed,
    Stopped(Refusal),
    Os(Errno),
}

impl From<Errno> for Unlink {
    fn from(err: Errno) -> Unlink {
        Unlink::Os(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rules<'a>(keep: &'a dyn Fn(&str, bool) -> Option<Spare>, dry_run: bool) -> Prune<'a> {
        Prune {
            offered: &|_| false,
            offered_raw: &|_| false,
            keep,
            since: i128::MAX,
            dry_run,
            seen: None,
        }
    }

    fn clear(
        target: &TargetDir,
        delete: bool,
        rules: &Prune<'_>,
    ) -> (Result<(), Refusal>, Vec<String>) {
        let mut said = Vec::new();
        let result = target.clear(
            (&[b"x"], "x"),
            None,
            delete,
            rules,
            &mut |removed: Removed| match removed.kept {
                None => said.push(removed.path),
                Some(why) => said.push(format!("kept {} ({})", removed.path, why.code())),
            },
        );
        (result.map(drop), said)
    }

    #[test]
    fn without_delete_only_an_empty_directory_gives_way() {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("x")).unwrap();
        let keep_none = |_: &str, _| None;
        assert_eq!(clear(&target, false, &rules(&keep_none, false)).0, Ok(()));
        std::fs::write(dir.path().join("x/a"), b"a").unwrap();
        let (result, said) = clear(&target, false, &rules(&keep_none, false));
        let refusal = result.unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Exists);
        assert!(
            refusal.message.contains("--delete replaces it"),
            "{}",
            refusal.message
        );
        assert!(said.is_empty());
        assert!(dir.path().join("x/a").exists());
        // Nothing there, or no directory: the final rename decides.
        std::fs::remove_dir_all(dir.path().join("x")).unwrap();
        assert_eq!(clear(&target, false, &rules(&keep_none, false)).0, Ok(()));
        std::fs::write(dir.path().join("x"), b"a file").unwrap();
        assert_eq!(clear(&target, true, &rules(&keep_none, false)).0, Ok(()));
        assert!(dir.path().join("x").is_file());
    }

    #[test]
    fn with_delete_all_goes_deepest_first_and_links_are_removed_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), b"p").unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("x/deep")).unwrap();
        std::fs::write(dir.path().join("x/deep/o"), b"o").unwrap();
        symlink(outside.path(), dir.path().join("x/to-dir")).unwrap();
        let keep_none = |_: &str, _| None;
        // A look (a dry run) removes nothing and says what would go.
        let (result, said) = clear(&target, true, &rules(&keep_none, true));
        assert_eq!(result, Ok(()));
        assert_eq!(said, ["x/deep/o", "x/deep", "x/to-dir"]);
        assert!(dir.path().join("x/deep/o").exists());
        let (result, said) = clear(&target, true, &rules(&keep_none, false));
        assert_eq!(result, Ok(()));
        assert_eq!(said, ["x/deep/o", "x/deep", "x/to-dir"]);
        assert_eq!(std::fs::read_dir(dir.path().join("x")).unwrap().count(), 0);
        assert_eq!(
            std::fs::read(outside.path().join("precious")).unwrap(),
            b"p"
        );
    }

    #[test]
    fn what_the_rules_keep_keeps_the_directory_and_the_refusal_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join("x/keep.me"), b"k").unwrap();
        std::fs::write(dir.path().join("x/.xfer-0123456789abcdef.part"), b"t").unwrap();
        let keep = |path: &str, _| path.ends_with("keep.me").then_some(Spare::Excluded);
        let (result, said) = clear(&target, true, &rules(&keep, false));
        assert_eq!(said, ["kept x/.xfer-0123456789abcdef.part (temporary)"]);
        let refusal = result.unwrap_err();
        assert!(
            refusal.message.contains("holds x/.xfer-0123456789abcdef.part, which --delete keeps (a temporary or partial file of xfer)"),
            "{}",
            refusal.message
        );
        std::fs::remove_file(dir.path().join("x/.xfer-0123456789abcdef.part")).unwrap();
        let (result, said) = clear(&target, true, &rules(&keep, false));
        assert!(result.unwrap_err().message.contains(
            "holds x/keep.me, which --delete keeps (a filter excludes it, which protects it"
        ));
        assert!(said.is_empty(), "an exclusion is the user's wish: {said:?}");
        assert!(dir.path().join("x/keep.me").exists());
        // What changed since the session began stays too.
        let keep_none = |_: &str, _| None;
        let since_long_ago = Prune {
            since: 0,
            ..rules(&keep_none, false)
        };
        let (result, said) = clear(&target, true, &since_long_ago);
        assert!(
            result
                .unwrap_err()
                .message
                .contains("changed since the session began")
        );
        assert_eq!(said, ["kept x/keep.me (changed)"]);
    }

    /// The directory in the way when the plan looked, replaced before the entry's
    /// turn by another moved into its name (by a local process; on a server the
    /// entry's claim makes that `rm` and `mv` busy): the entries of the other keep
    /// their old times, and are not what the plan let go. Kept whole, refused; as
    /// is a directory where the plan saw none.
    #[test]
    fn a_directory_moved_into_the_way_after_the_plan_looked_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join("x/stale"), b"s").unwrap();
        std::fs::create_dir(dir.path().join("precious")).unwrap();
        std::fs::write(dir.path().join("precious/keep.txt"), b"mine").unwrap();
        let keep_none = |_: &str, _| None;
        let held_to = |seen| Prune {
            seen: Some(seen),
            ..rules(&keep_none, false)
        };
        let seen = target.dir_identity(&[b"x"]);
        std::fs::remove_dir_all(dir.path().join("x")).unwrap();
        std::fs::rename(dir.path().join("precious"), dir.path().join("x")).unwrap();
        let (result, said) = clear(&target, true, &held_to(seen));
        let refusal = result.unwrap_err();
        assert!(
            refusal.message.contains("another directory took that name"),
            "{refusal}"
        );
        assert_eq!(said, ["kept x (changed)"]);
        assert_eq!(
            std::fs::read(dir.path().join("x/keep.txt")).unwrap(),
            b"mine"
        );
        // Where the plan saw no directory, one there now is kept as well.
        let (result, said) = clear(&target, true, &held_to((0, 0)));
        assert!(result.is_err());
        assert_eq!(said, ["kept x (changed)"]);
        // The directory as a plan sees it now is emptied, as before.
        let seen = target.dir_identity(&[b"x"]);
        let (result, said) = clear(&target, true, &held_to(seen));
        assert_eq!((result, said), (Ok(()), vec!["x/keep.txt".to_string()]));
    }

    /// Runs `prune` of the offered directory `d` of `target` with no other
    /// rules than `keep`; what was said.
    fn prune_d(
        target: &TargetDir,
        keep: &dyn Fn(&str, bool) -> Option<Spare>,
        dry_run: bool,
    ) -> Vec<String> {
        let mut said = Vec::new();
        target.prune(&["d"], &rules(keep, dry_run), &mut |removed: Removed| {
            said.push(match removed.kept {
                None => removed.path,
                Some(why) => format!("kept {} ({})", removed.path, why.code()),
            })
        });
        said
    }

    /// A directory the listing found stale, removed by another session and
    /// replaced by one moved into its name before the walk reached it: what that
    /// one holds was never in the listing (its entries' own ctimes are old), so
    /// it is kept, said as changed, not emptied.
    #[test]
    fn a_directory_moved_into_a_stale_name_after_the_listing_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir_all(d.join("stale")).unwrap();
        std::fs::write(d.join("a"), b"a").unwrap();
        std::fs::create_dir(dir.path().join("precious")).unwrap();
        std::fs::write(dir.path().join("precious/keep.txt"), b"mine").unwrap();
        // Asked of `d/a`, which sorts before `d/stale`: the other session's turn.
        let keep = |path: &str, _| {
            if path == "d/a" {
                std::fs::remove_dir_all(d.join("stale")).unwrap();
                std::fs::rename(dir.path().join("precious"), d.join("stale")).unwrap();
            }
            Some(Spare::Excluded)
        };
        let keep_a = |path: &str, is_dir| {
            if path == "d/a" {
                keep(path, is_dir)
            } else {
                None
            }
        };
        let said = prune_d(&target, &keep_a, false);
        assert_eq!(said, ["kept d/stale (changed)"]);
        assert_eq!(std::fs::read(d.join("stale/keep.txt")).unwrap(), b"mine");
    }

    /// A dry run removes nothing, so it holds nothing against another session's
    /// `mv` or `rm` (or a real mirror's removal) of what it looks through.
    #[test]
    fn a_dry_run_holds_no_directory_in_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("d/sub")).unwrap();
        std::fs::write(dir.path().join("d/sub/f"), b"f").unwrap();
        let ledger = crate::fs::ledger::Ledger::default();
        let target = TargetDir::open(dir.path())
            .unwrap()
            .metered(ledger.account(""));
        let busy = std::cell::RefCell::new(Vec::new());
        let keep = |path: &str, _| {
            for held in ["d", "d/sub"] {
                if ledger.books().unclaimed(held).is_err() {
                    busy.borrow_mut().push(format!("{held} at {path}"));
                }
            }
            None
        };
        let said = prune_d(&target, &keep, true);
        assert_eq!(said, ["d/sub/f", "d/sub"]);
        assert_eq!(*busy.borrow(), Vec::<String>::new());
        // The real run holds them, as it must.
        let said = prune_d(&target, &keep, false);
        assert_eq!(said, ["d/sub/f", "d/sub"]);
        assert_eq!(
            *busy.borrow(),
            ["d at d/sub", "d at d/sub/f", "d/sub at d/sub/f"]
        );
        assert!(!dir.path().join("d/sub").exists());
    }

    #[test]
    fn a_name_that_is_not_utf8_is_kept_and_said_unless_offered() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("x")).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
        std::fs::write(dir.path().join("x").join(odd), b"c").unwrap();
        std::fs::write(dir.path().join("x/plain"), b"p").unwrap();
        let keep_none = |_: &str, _| None;
        let (result, said) = clear(&target, true, &rules(&keep_none, true));
        assert!(result.unwrap_err().message.contains("not UTF-8"));
        assert_eq!(said, ["kept x/caf\u{fffd} (not_utf8)", "x/plain"]);
        let offered = |path: &[u8]| path == b"x/caf\xe9";
        let rules = Prune {
            offered_raw: &offered,
            ..rules(&keep_none, true)
        };
        let (_, said) = clear(&target, true, &rules);
        assert_eq!(said, ["x/plain"], "an offered name is no news");
    }
}
