//! A user's home on a server: every path of every request resolved beneath the
//! home's descriptor, one component at a time, never following a symlink (see
//! `beneath`), for reading and listing as well as for writing. To the server a
//! symlink, a FIFO or a device is a leaf of kind `other`: listed, never opened.
//! The answers of `PROTOCOL.md` section 9's table come from here, as [`Refusal`]s.
//!
//! Also the safe source of `get` ([`Fetch`], an [`Outbox`]), the usage scan a quota
//! starts from, and the request operations `mkdir`, `remove` and `rename`.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::Result;
use rustix::fs::{AtFlags, FileType, Mode, RenameFlags, Stat};
use rustix::io::Errno;

use super::beneath::{self, MAX_DEPTH, kind};
use super::ledger::Books;
pub(crate) use super::ledger::Footprint;
use super::path::{
    check_request_path, is_reserved_bytes, is_stale_exchange_dir, is_temporary_name,
};
use super::sink::TargetDir;
use super::{Refusal, path::PathRefusal};
use crate::error::{Classify, Kind, refused};
use crate::escape::escape;
use crate::fs::filter::Filter;
use crate::fs::input::{Input, Outbox};
use crate::proto::entry::MAX_OFFER_ENTRIES;
use crate::proto::message::{Entry, EntryKind, ErrorCode, Item, ItemKind, Mirror};

/// Permission bits shown in listings and carried in offers.
const PERMISSION_BITS: u32 = 0o777;

/// A user's home, held open.
pub(crate) struct Home {
    root: OwnedFd,
}

impl Home {
    /// Opens `home` beneath the server's root `root` without following links (a
    /// home swapped for a symlink is refused, not followed), creating it if asked:
    /// a new home is made private to the server's account (0700), as a user's files
    /// are nobody else's business on the server's machine either; so are new
    /// directories above it (`team/` for `team/bob`), whose entries are user names.
    pub(crate) fn open(root: &OwnedFd, home: &Path, create: bool) -> Result<Home, Refusal> {
        let components: Vec<&str> = home
            .components()
            .map(|c| c.as_os_str().to_str().unwrap_or("\u{0}"))
            .collect();
        let not_found = || {
            Refusal::new(
                ErrorCode::NotFound,
                format!("home {} does not exist", home.display()),
            )
        };
        let Some((last, parents)) = components.split_last() else {
            return Err(not_found());
        };
        let private = Mode::from_raw_mode(0o700);
        let parent = beneath::walk(root, parents, create.then_some(private))?;
        let parent = parent.ok_or_else(not_found)?;
        if create {
            match rustix::fs::mkdirat(&parent, *last, private) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(err) => return Err(Refusal::io(last, "cannot create the home", err)),
            }
        }
        let root = beneath::step(&parent, &components, parents.len(), false)?;
        Ok(Home {
            root: root.ok_or_else(not_found)?,
        })
    }

    /// The permission bits of the home that let other local accounts in, if any.
    pub(crate) fn open_to_others(&self) -> Option<u32> {
        let stat = rustix::fs::fstat(&self.root).ok()?;
        let mode = stat.st_mode & PERMISSION_BITS;
        (mode & 0o077 != 0).then_some(mode)
    }

    /// The home from a descriptor already opened (a single-user server's root).
    pub(crate) fn from_fd(root: OwnedFd) -> Home {
        Home { root }
    }

    fn dup(&self) -> Result<OwnedFd, Refusal> {
        rustix::io::dup(&self.root).map_err(|err| Refusal::io("", "cannot open the home", err))
    }

    /// Resolves `path`: its parent directory and its last name, and what is there
    /// (`None`: nothing). `""` is the home itself (parent: the home, name ".").
    fn resolve(&self, path: &str) -> Result<(OwnedFd, String, Option<Stat>), Refusal> {
        let components = checked(path)?;
        let Some((name, parents)) = components.split_last() else {
            let home = self.dup()?;
            let stat = rustix::fs::fstat(&home)
                .map_err(|err| Refusal::io("", "cannot inspect the home", err))?;
            return Ok((home, ".".into(), Some(stat)));
        };
        let parent = self.parent(path, parents)?;
        let stat = beneath::stat(&parent, *name)
            .map_err(|err| Refusal::io(path, "cannot inspect", err))?;
        Ok((parent, name.to_string(), stat))
    }

    /// The directory `parents` beneath the home: a missing one, or one that is not
    /// a directory (a file, a symlink), is `not_found`.
    fn parent(&self, path: &str, parents: &[&str]) -> Result<OwnedFd, Refusal> {
        let home = self.dup()?;
        match beneath::walk(&home, parents, None) {
            Ok(Some(dir)) => Ok(dir),
            Ok(None) => Err(not_found(path)),
            Err(refusal) if refusal.code != ErrorCode::Io => Err(not_found(path)),
            Err(refusal) => Err(refusal),
        }
    }

    /// The directory `path` (for `put`): missing or not a directory is `not_found`.
    pub(crate) fn target(&self, path: &str) -> Result<TargetDir, Refusal> {
        let (parent, name, stat) = self.resolve(path)?;
        match stat {
            Some(stat) if kind(&stat) == FileType::Directory => {}
            _ => return Err(not_found(path)),
        }
        let dir = if name == "." {
            parent
        } else {
            beneath::open_dir(&parent, name.as_str()).map_err(|_| not_found(path))?
        };
        Ok(TargetDir::from_fd(dir))
    }

    /// `list`: the children of a directory, sorted by name, or the one item `path`
    /// is. The server's own temporary files are not shown.
    pub(crate) fn list(&self, path: &str, meta: bool) -> Result<Listing, Refusal> {
        let (parent, name, stat) = self.resolve(path)?;
        let stat = stat.ok_or_else(|| not_found(path))?;
        if kind(&stat) != FileType::Directory {
            return Ok(Listing::One(item(&parent, &name, &stat, meta)));
        }
        let dir = if name == "." {
            parent
        } else {
            beneath::open_dir(&parent, name.as_str())
                .map_err(|err| Refusal::io(path, "cannot open", err))?
        };
        let names = sorted_names(&dir).map_err(|err| Refusal::io(path, "cannot list", err))?;
        Ok(Listing::Children { dir, names, meta })
    }

    /// `mkdir`: makes `path` and missing parents; an existing directory is fine.
    /// Each directory it makes is charged to `books` as it is made (`quota`, and
    /// nothing more made, where one does not fit): the caller holds the lock.
    pub(crate) fn mkdir(&self, path: &str, books: &mut Books) -> Result<(), Refusal> {
        let components = checked(path)?;
        if components.is_empty() {
            // `""` names the home only for `list` and as `put`'s directory.
            return Err(Refusal::new(
                ErrorCode::BadPath,
                "the home exists; mkdir needs a path inside it",
            ));
        }
        let mut dir = self.dup()?;
        for depth in 0..components.len() {
            let step = |create| beneath::step_noting(&dir, &components, depth, create);
            let next = match step(false) {
                Ok(Some((next, _))) => Ok(next),
                Ok(None) => {
                    let shown = components[..=depth].join("/");
                    books.make(&shown, Footprint::DIR, || {
                        let made = step(true)?.expect("made, or there already");
                        Ok(made)
                    })
                }
                Err(refusal) => Err(refusal),
            };
            dir = next.map_err(|refusal| match refusal.code {
                // A symlink or a file on the way: something that is not a directory.
                ErrorCode::BadPath => Refusal::new(ErrorCode::Exists, refusal.message),
                _ => refusal,
            })?;
        }
        Ok(())
    }

    /// `remove`: a file, a directory that holds nothing a listing shows, and with
    /// `links` (`meta` in force, under which a home holds links) a symbolic link
    /// itself (removing follows nothing); never the home itself. xfer's own
    /// partials and temporaries in a directory go with it ([`clear_temporaries`]:
    /// what `ls` shows empty is empty, so a cut upload's partial keeps no
    /// directory from `rm` or `rm -r`). What leaves the disk is given back to
    /// `books` as it leaves, each entry as it was charged (`Footprint::of`): the
    /// caller holds the lock and has checked the claims.
    pub(crate) fn remove(&self, path: &str, links: bool, books: &mut Books) -> Result<(), Refusal> {
        if path.is_empty() {
            return Err(Refusal::new(
                ErrorCode::BadPath,
                "the home itself cannot be removed",
            ));
        }
        let (parent, name, stat) = self.resolve(path)?;
        let stat = stat.ok_or_else(|| not_found(path))?;
        let flags = match kind(&stat) {
            FileType::RegularFile => AtFlags::empty(),
            FileType::Directory => {
                clear_temporaries((&parent, &name), path, books)?;
                AtFlags::REMOVEDIR
            }
            FileType::Symlink if links => AtFlags::empty(),
            other => return Err(denied_kind(path, other)),
        };
        match rustix::fs::unlinkat(&parent, name.as_str(), flags) {
            Ok(()) => {
                books.gone(&stat);
                Ok(())
            }
            Err(Errno::NOTEMPTY | Errno::EXIST) => Err(not_empty(&parent, &name, path)),
            Err(Errno::NOENT) => Err(not_found(path)),
            Err(err) => Err(Refusal::io(path, "cannot remove", err)),
        }
    }

    /// `rename`: a file or directory, and with `links` (as for [`Home::remove`]) a
    /// symbolic link itself, to a name that does not exist, within the home.
    pub(crate) fn rename(&self, from: &str, to: &str, links: bool) -> Result<(), Refusal> {
        if from.is_empty() || to.is_empty() {
            return Err(Refusal::new(
                ErrorCode::BadPath,
                "the home itself cannot be renamed",
            ));
        }
        checked(from)?;
        checked(to)?;
        if to.starts_with(&format!("{from}/")) {
            return Err(Refusal::new(
                ErrorCode::BadPath,
                format!("{} lies inside {}", escape(to), escape(from)),
            ));
        }
        let (from_dir, from_name, stat) = self.resolve(from)?;
        match stat.map(|stat| kind(&stat)) {
            None => return Err(not_found(from)),
            Some(FileType::RegularFile | FileType::Directory) => {}
            Some(FileType::Symlink) if links => {}
            Some(other) => return Err(denied_kind(from, other)),
        }
        let (to_dir, to_name, existing) = self.resolve(to)?;
        if let Some(existing) = existing {
            // `mv file dir` as in a shell: say how to move into the directory.
            let into = match kind(&existing) {
                FileType::Directory => format!(
                    " (a directory: to move into it, name the path inside it, {}/{})",
                    escape(to),
                    escape(from.rsplit('/').next().unwrap_or(from))
                ),
                _ => String::new(),
            };
            return Err(Refusal::new(
                ErrorCode::Exists,
                format!("{}: already exists{into}", escape(to)),
            ));
        }
        rustix::fs::renameat_with(
            &from_dir,
            from_name.as_str(),
            &to_dir,
            to_name.as_str(),
            RenameFlags::NOREPLACE,
        )
        .map_err(|err| match err {
            Errno::EXIST | Errno::NOTEMPTY => {
                Refusal::new(ErrorCode::Exists, format!("{}: already exists", escape(to)))
            }
            Errno::NOENT => not_found(from),
            err => Refusal::io(from, "cannot rename", err),
        })
    }

    /// `get`: the paths, checked whole before anything is offered (two with the
    /// same last component, one inside another, or none, is `bad_path`; a symlink
    /// or other special file is `denied`), then walked: each under its last
    /// component, a directory with everything inside it but special files (a link
    /// offered as a link) and what `mirror`'s rules exclude (section 17.5), which
    /// is kept to echo in the offer; with `xattrs`, each regular file and directory
    /// with its attributes (see [`Fetch::take_xattrs`]).
    pub(crate) fn fetch(
        &self,
        paths: &[String],
        (mirror, xattrs): (Option<Mirror>, bool),
    ) -> Result<Fetch, Refusal> {
        if paths.is_empty() {
            return Err(Refusal::new(ErrorCode::BadPath, "get names no path"));
        }
        // A rule that is no valid pattern is the client's fault: `protocol`.
        let filter = (mirror
            .as_ref()
            .map(|mirror| Filter::from_wire(&mirror.rules)))
        .transpose()
        .map_err(|why| Refusal::new(ErrorCode::Protocol, why))?;
        let mut names = std::collections::HashSet::new();
        let mut nested = Vec::new();
        let mut roots = Vec::new();
        for path in paths {
            let components = checked(path)?;
            let Some(last) = components.last() else {
                return Err(Refusal::new(
                    ErrorCode::BadPath,
                    "the home itself has no name to send it under; get what is in it",
                ));
            };
            if !names.insert(*last) {
                return Err(Refusal::new(
                    ErrorCode::BadPath,
                    format!("two paths end in {}", escape(last)),
                ));
            }
            nested.push(components);
            let (_, _, stat) = self.resolve(path)?;
            let stat = stat.ok_or_else(|| not_found(path))?;
            match kind(&stat) {
                FileType::RegularFile | FileType::Directory => roots.push((path.clone(), stat)),
                other => return Err(denied_kind(path, other)),
            }
        }
        none_inside_another(nested)?;
        let mut fetch = Fetch {
            home: self.dup()?,
            entries: Vec::new(),
            origins: Vec::new(),
            first_names: std::collections::HashMap::new(),
            mirror,
            entitled: None,
            filter,
            xattrs_held: xattrs.then_some(0),
            xattrs_left_out: 0,
            xattrs_unlisted: 0,
        };
        for (path, stat) in roots {
            let name = path.rsplit('/').next().unwrap_or(&path).to_string();
            fetch.add(&path, name, &stat, None)?;
        }
        Ok(fetch)
    }

    /// Removes partials last modified before `cutoff` (seconds since the epoch),
    /// temporaries last changed before it or before `started` (nanoseconds since
    /// the epoch: when this server started), each only where `may` allows (by device
    /// and inode: none a session has open), and stale exchange directories with
    /// all they hold; returns what left the disk, as the ledger charged it.
    pub(crate) fn sweep(
        &self,
        (cutoff, started): (i64, i128),
        may: &mut dyn FnMut((u64, u64)) -> bool,
    ) -> Footprint {
        let mut removed = Footprint::default();
        if let Ok(home) = self.dup() {
            sweep(home, (cutoff, started), may, &mut removed, 0);
        }
        removed
    }

    /// How far entries lie below `path`: how many levels (0: a file, an empty
    /// directory or nothing there), and the bytes of the longest path beneath it,
    /// with its leading `/` (what moving it adds to a path's length).
    pub(crate) fn height(&self, path: &str) -> (usize, usize) {
        let Ok((parent, name, Some(stat))) = self.resolve(path) else {
            return (0, 0);
        };
        if kind(&stat) != FileType::Directory {
            return (0, 0);
        }
        beneath::open_dir(&parent, name.as_str()).map_or((0, 0), |dir| height(dir, MAX_DEPTH + 1))
    }

    /// Bytes and entries beneath the home, partial files included, links not
    /// followed, each entry as `Footprint::of` charges it: what a quota starts
    /// from.
    pub(crate) fn footprint(&self) -> Footprint {
        let mut total = Footprint::default();
        if let Ok(home) = self.dup() {
            scan(home, &mut total, 0);
        }
        total
    }
}

/// The components of a request's path, or `bad_path`.
fn checked(path: &str) -> Result<Vec<&str>, Refusal> {
    check_request_path(path).map_err(|why: PathRefusal| {
        Refusal::new(ErrorCode::BadPath, format!("{}: {why}", escape(path)))
    })
}

fn not_found(path: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NotFound,
        format!("{}: no such file or directory", escape(path)),
    )
}

/// Whether the entry `name` (as `stat` describes it) is xfer's own: a partial or
/// temporary file, or the directory a change of type left under a temporary name.
fn is_ours(name: &std::ffi::CStr, stat: &Stat) -> bool {
    match kind(stat) {
        FileType::RegularFile => is_reserved_bytes(name.to_bytes()),
        FileType::Directory => is_stale_exchange_dir(name.to_bytes(), stat.st_ctime, i64::MAX),
        _ => false,
    }
}

/// Before the directory `name` of `parent` (the request's `path`) is removed:
/// when it holds nothing but xfer's own partials and temporaries, they go (each
/// given back to `books` as it leaves), so that the directory can; when it holds
/// anything else, nothing is touched (the removal then says it is not empty).
/// `busy` if a session has one of them open: an upload into it is running.
fn clear_temporaries(
    (parent, name): (&OwnedFd, &str),
    path: &str,
    books: &mut Books,
) -> Result<(), Refusal> {
    let Ok(dir) = beneath::open_dir(parent, name) else {
        return Ok(()); // The removal says why, if it fails.
    };
    let children: Vec<_> = beneath::children(&dir).collect();
    if !children.iter().all(|(name, stat)| is_ours(name, stat)) {
        return Ok(());
    }
    let open = |stat: &Stat| books.is_open((stat.st_dev, stat.st_ino));
    if children.iter().any(|(_, stat)| open(stat)) {
        return Err(Refusal::new(
            ErrorCode::Busy,
            format!(
                "{}: an upload into it is being written by a session",
                escape(path)
            ),
        ));
    }
    let depth = path.split('/').count();
    for (child, stat) in children {
        if kind(&stat) == FileType::Directory {
            let mut freed = Footprint::default();
            let mut may = |stat: &Stat| !books.is_open((stat.st_dev, stat.st_ino));
            let mut gone = |stat: &Stat| freed += Footprint::of(stat);
            beneath::remove_stale_dir((&dir, &child, depth), i64::MAX, &mut may, &mut gone);
            books.shrank(freed.bytes, freed.files);
            continue;
        }
        match rustix::fs::unlinkat(&dir, child.as_c_str(), AtFlags::empty()) {
            Ok(()) => books.gone(&stat),
            Err(Errno::NOENT) => {}
            Err(err) => return Err(Refusal::io(path, "cannot remove a partial file in", err)),
        }
    }
    Ok(())
}

/// Why the directory `name` of `parent` (the request's `path`) could not be
/// removed: it holds what a listing shows (`rm -r` removes that), or only what
/// none shows and xfer did not make, which no request can reach.
fn not_empty(parent: &OwnedFd, name: &str, path: &str) -> Refusal {
    let listed = beneath::open_dir(parent, name)
        .ok()
        .and_then(|dir| sorted_names(&dir).ok())
        .is_none_or(|names| !names.is_empty());
    let why = if listed {
        "the directory is not empty (`rm -r` removes it with everything inside)"
    } else {
        "the directory holds only entries that no listing shows and xfer did not make \
         (names that are not UTF-8, or look like xfer's temporaries); the server's \
         administrator can remove them"
    };
    Refusal::new(ErrorCode::Denied, format!("{}: {why}", escape(path)))
}

fn denied_kind(path: &str, kind: FileType) -> Refusal {
    let what = match kind {
        FileType::Symlink => "a symbolic link, which the server never follows",
        FileType::Fifo => "a named pipe",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        _ => "not a regular file or directory",
    };
    Refusal::new(ErrorCode::Denied, format!("{}: {what}", escape(path)))
}

/// A listing item for `name` in `dir` as `stat` describes it; under `meta` a link
/// is a `symlink` with its target (read, never followed), else `other`.
fn item(dir: &OwnedFd, name: &str, stat: &Stat, meta: bool) -> Item {
    let (kind, size) = match kind(stat) {
        FileType::RegularFile => (ItemKind::File, stat.st_size as u64),
        FileType::Directory => (ItemKind::Dir, 0),
        FileType::Symlink if meta => (ItemKind::Symlink, 0),
        _ => (ItemKind::Other, 0),
    };
    let target = (kind == ItemKind::Symlink)
        .then(|| rustix::fs::readlinkat(dir, name, Vec::new()).ok())
        .flatten()
        .and_then(|target| target.into_string().ok());
    Item {
        name: name.to_string(),
        kind,
        size,
        mode: Some(u64::from(stat.st_mode & PERMISSION_BITS)),
        mtime: u64::try_from(stat.st_mtime).ok(),
        mtime_signed: (meta && stat.st_mtime < 0).then_some(stat.st_mtime),
        target,
    }
}

/// What `list` found: one item, or a directory whose children are looked at one by
/// one, in name order, as the listing goes out. Sorting needs every name, but only
/// the names: 100 000 entries hold about 5 MiB here, not a stat each.
pub(crate) enum Listing {
    One(Item),
    Children {
        dir: OwnedFd,
        names: Vec<Box<str>>,
        meta: bool,
    },
}

impl Listing {
    /// The items in order (a child that vanished since its name was read is left
    /// out).
    pub(crate) fn items(&self) -> impl Iterator<Item = Item> + '_ {
        let (one, children) = match self {
            Listing::One(item) => (Some(item.clone()), None),
            Listing::Children { dir, names, meta } => (None, Some((dir, names, *meta))),
        };
        let children = children.into_iter().flat_map(|(dir, names, meta)| {
            names.iter().filter_map(move |name| {
                let stat = beneath::stat(dir, &**name).ok().flatten()?;
                Some(item(dir, name, &stat, meta))
            })
        });
        one.into_iter().chain(children)
    }
}

/// A directory's children's names, sorted (bytewise); names that are not UTF-8 and
/// the server's own temporaries are left out.
fn sorted_names(dir: &OwnedFd) -> Result<Vec<Box<str>>, Errno> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." || is_reserved_bytes(bytes) {
            continue;
        }
        if let Ok(name) = std::str::from_utf8(bytes) {
            names.push(name.into());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Adds up what is beneath `dir` (`depth` components below the home), following
/// no links: every entry from its `stat` (never opened), as the ledger charges
/// it. A directory that cannot be opened counts itself and is logged, never
/// skipped silently.
fn scan(dir: OwnedFd, total: &mut Footprint, depth: usize) {
    for (name, stat) in beneath::children(&dir) {
        *total += Footprint::of(&stat);
        if kind(&stat) == FileType::Directory
            && let Some(child) = descend(&dir, &name, depth)
        {
            scan(child, total, depth + 1);
        }
    }
}

/// Opens the directory `name` of `dir` (`depth` components below the home) for a
/// walk over the whole home, or says in the log why not: the server makes nothing
/// it cannot walk (modes keep the owner's bits, paths stay within [`MAX_DEPTH`]),
/// so this meets only what someone else put there.
fn descend(dir: &OwnedFd, name: &std::ffi::CStr, depth: usize) -> Option<OwnedFd> {
    let shown = escape(&name.to_string_lossy()).into_owned();
    if depth + 1 >= MAX_DEPTH {
        let has_children = beneath::open_dir(dir, name)
            .ok()
            .is_some_and(|child| beneath::children(&child).next().is_some());
        if has_children {
            crate::ui::report::warn(&format!(
                "a directory {shown} lies {} levels deep in a home; what is inside is not counted",
                depth + 1
            ));
        }
        return None;
    }
    match beneath::open_dir(dir, name) {
        Ok(child) => Some(child),
        Err(err) => {
            crate::ui::report::warn(&format!(
                "cannot open the directory {shown} in a home to count it: {}",
                std::io::Error::from(err)
            ));
            None
        }
    }
}

/// Removes xfer's own temporaries beneath `dir` by the rules of [`Home::sweep`],
/// for which `may` says yes (by device and inode); adds up what it removed.
fn sweep(
    dir: OwnedFd,
    (cutoff, started): (i64, i128),
    may: &mut dyn FnMut((u64, u64)) -> bool,
    removed: &mut Footprint,
    depth: usize,
) {
    for (name, stat) in beneath::children(&dir) {
        match kind(&stat) {
            // Left by a crash in the middle of a change of type: see `beneath`.
            FileType::Directory
                if is_stale_exchange_dir(name.to_bytes(), stat.st_ctime, cutoff) =>
            {
                let mut may_go = |stat: &rustix::fs::Stat| may((stat.st_dev, stat.st_ino));
                let mut gone = |stat: &rustix::fs::Stat| *removed += Footprint::of(stat);
                beneath::remove_stale_dir((&dir, &name, depth), cutoff, &mut may_go, &mut gone);
            }
            FileType::Directory => {
                if let Some(child) = descend(&dir, &name, depth) {
                    sweep(child, (cutoff, started), may, removed, depth + 1);
                }
            }
            // Not one a session of this server has open (`may`).
            FileType::RegularFile
                if left_behind((&dir, &name), &stat, (cutoff, started))
                    && may((stat.st_dev, stat.st_ino))
                    && rustix::fs::unlinkat(&dir, &name, rustix::fs::AtFlags::empty()).is_ok() =>
            {
                *removed += Footprint::of(&stat);
            }
            _ => {}
        }
    }
}

/// Whether xfer's own file `name` (found as `stat`) is left behind, by the rules
/// of [`Home::sweep`]. A temporary unchanged since before this server started is
/// left by one that stopped (killed in the middle of a delta): nothing resumes it,
/// so it goes whatever its age. One changed since may be another process's,
/// writing it now (a server whose root lies in this home, a `recv` where
/// `O_TMPFILE` is missing): it goes once unchanged for the partials' time. Its
/// ctime says so, which its writes move and no sender sets (its mtime may be the
/// sender's, set before the rename). A partial a client may resume goes once stale;
/// one of ours no longer marked, unchanged since before this server started, goes
/// at once: a complete file, sealed (its mark taken off) by a server killed before
/// it could name it, which nothing resumes either.
fn left_behind(
    (dir, name): (&OwnedFd, &std::ffi::CStr),
    stat: &Stat,
    (cutoff, started): (i64, i128),
) -> bool {
    let bytes = name.to_bytes();
    if is_temporary_name(bytes) {
        stat.st_ctime < cutoff || beneath::changed_at(stat) < started
    } else if is_reserved_bytes(bytes) {
        stat.st_mtime < cutoff
            || (beneath::changed_at(stat) < started && super::sink::is_unmarked_partial(dir, name))
    } else {
        false
    }
}

/// How many levels of entries lie below `dir` (0: none), up to the limit, and
/// the bytes of the longest path beneath it, each name with its `/`.
fn height(dir: OwnedFd, limit: usize) -> (usize, usize) {
    let mut most = (0, 0);
    for (name, stat) in beneath::children(&dir) {
        let below = if kind(&stat) == FileType::Directory && limit > 1 {
            beneath::open_dir(&dir, name.as_c_str())
                .map_or((0, 0), |child| height(child, limit - 1))
        } else {
            (0, 0)
        };
        most.0 = most.0.max(1 + below.0);
        most.1 = most.1.max(1 + name.to_bytes().len() + below.1);
    }
    most
}

/// Refuses a `get` that names a path inside another it names (`photos` and
/// `photos/2024`): each is walked whole, so the inner one would be offered twice,
/// and a chain of them (`d`, `d/d`, `d/d/d`, ...) would make the server build an
/// offer growing with the square of the chain from a home holding little.
fn none_inside_another(mut paths: Vec<Vec<&str>>) -> Result<(), Refusal> {
    // Sorted, a path inside another follows it with only paths inside it between.
    paths.sort_unstable();
    let mut outer: Option<&Vec<&str>> = None;
    for path in &paths {
        match outer {
            Some(outer) if path.starts_with(outer) => {
                return Err(Refusal::new(
                    ErrorCode::BadPath,
                    format!(
                        "{} lies inside {}, which this get names too: name one of them",
                        escape(&path.join("/")),
                        escape(&outer.join("/"))
                    ),
                ));
            }
            _ => outer = Some(path),
        }
    }
    Ok(())
}

/// What a `get` offers: entries read from beneath the home, never through a link.
pub(crate) struct Fetch {
    home: OwnedFd,
    entries: Vec<Entry>,
    /// For each entry, its path beneath the home.
    origins: Vec<String>,
    /// The first entry of each file with more than one link (device, inode).
    first_names: std::collections::HashMap<(u64, u64), u64>,
    /// What the client's `get` asked (section 17.5), echoed in the offer.
    mirror: Option<Mirror>,
    /// Whether the home is still its user's, asked before each file is opened.
    entitled: Option<Entitled>,
    /// The get's rules (from `mirror`), applied as the home is walked.
    filter: Option<Filter>,
    /// Under a get that asks for attributes: the bytes of them held so far.
    xattrs_held: Option<usize>,
    /// Entries some of whose attributes were left out (more than an entry carries).
    xattrs_left_out: usize,
    /// Entries whose attributes could not be listed (offered without an object).
    xattrs_unlisted: usize,
}

/// Most bytes of extended attributes a `get` holds for its offer (16.4), each
/// attribute counted as its name, its value in hex and [`XATTR_OVERHEAD`]: about
/// what holding them takes. A put keeps at most 4 KiB on an entry, so 8 000 such
/// entries fit, and 200 000 with a short attribute each.
const GET_XATTR_BYTES: usize = 64 << 20;

/// What holding one attribute takes beside its bytes: its two strings and its place
/// in a map (measured: 20 000 files of 207 attributes of a few bytes each took a
/// server 520 MB, about 130 bytes an attribute).
const XATTR_OVERHEAD: usize = 128;

/// Whether the user a [`Fetch`] serves may still read its home: a reload may have
/// given the home to someone else since the `get` began.
pub(crate) type Entitled = Box<dyn Fn() -> Result<(), Refusal> + Send + Sync>;

impl Fetch {
    /// Opens nothing more once `entitled` says no: each file not yet opened is then
    /// given up with its refusal, never read from a home that is now another
    /// user's. A file already open is the one its user could read when it opened.
    /// Asked at once as well: the walk that listed the entries (their names, sizes,
    /// link targets, what the offer tells) came before, and a reload may have
    /// given the home away while it went (the whole `get` is then refused).
    pub(crate) fn while_entitled(mut self, entitled: Entitled) -> Result<Fetch, Refusal> {
        entitled()?;
        self.entitled = Some(entitled);
        Ok(self)
    }

    /// Offers every file dense, for a client that did not ask for runs (its `get`
    /// has no `sparse`: it writes to standard output, or is older).
    pub(crate) fn dense(mut self) -> Fetch {
        for entry in &mut self.entries {
            entry.sparse = None;
        }
        self
    }

    /// Gives entry `index` (a regular file or directory, read through `fd`, opened
    /// beneath the home and never through a link) its `user.*` attributes but
    /// xfer's own, `{}` when it has none, if the get asks for them (16.4). A hard
    /// link carries none: its first name does. One that could not be opened (gone
    /// since it was listed) carries none: its data cannot be sent either.
    ///
    /// All of them are held until the offer goes, so a get whose attributes pass
    /// [`GET_XATTR_BYTES`] is refused `too_large` (a home's entries may each carry
    /// 4 KiB of them).
    fn take_xattrs(&mut self, index: usize, fd: Option<impl AsFd>) -> Result<(), Refusal> {
        let (Some(held), Some(fd)) = (self.xattrs_held, fd) else {
            return Ok(());
        };
        let (xattrs, left_out) = crate::fs::xattr::read_user(fd);
        let held = held
            + xattrs
                .iter()
                .flatten()
                .map(|(name, value)| name.len() + value.len() + XATTR_OVERHEAD)
                .sum::<usize>();
        if held > GET_XATTR_BYTES {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                "the extended attributes of what this get names take over 64 MiB \
                 to hold; get fewer paths at a time, or without -X",
            ));
        }
        self.xattrs_held = Some(held);
        self.xattrs_left_out += usize::from(left_out > 0);
        self.xattrs_unlisted += usize::from(xattrs.is_none());
        self.entries[index].extra_mut().xattrs = xattrs;
        Ok(())
    }

    /// How many entries [`Fetch::take_xattrs`] could not give all their attributes.
    pub(crate) fn xattrs_left_out(&self) -> usize {
        self.xattrs_left_out
    }

    /// How many entries [`Fetch::take_xattrs`] could not list the attributes of.
    pub(crate) fn xattrs_unlisted(&self) -> usize {
        self.xattrs_unlisted
    }

    /// Adds `path` (beneath the home, already looked at: `stat`) as `name`, walking
    /// into directories. A link is offered as a link (its target read, never
    /// followed), a later name of a file as a hard link of the first; special files
    /// are left out (a server keeps none). A peer without `meta` gets version 2's
    /// offer of this (`transfer::send::view`). `parent`: the directory it was
    /// listed in, open (none for a path the get names).
    fn add(
        &mut self,
        path: &str,
        name: String,
        stat: &Stat,
        parent: Option<&OwnedFd>,
    ) -> Result<(), Refusal> {
        let entry_kind = match kind(stat) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            _ => return Ok(()),
        };
        // What the get's rules exclude is never walked: a directory goes with all
        // inside, and a hard link's first name left out leaves the next name the file.
        let is_dir = entry_kind == EntryKind::Dir;
        if (self.filter.as_ref()).is_some_and(|filter| filter.excluded(name.as_bytes(), is_dir)) {
            return Ok(());
        }
        if self.entries.len() >= MAX_OFFER_ENTRIES {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "what this get names holds over {MAX_OFFER_ENTRIES} entries, more than \
                     one transfer carries; get its parts one at a time"
                ),
            ));
        }
        let entry = match entry_kind {
            EntryKind::File => self.file_entry(name.clone(), stat),
            EntryKind::Symlink => self.link_entry(path, name.clone(), stat)?,
            _ => fetched_entry(name.clone(), entry_kind, stat),
        };
        let index = self.entries.len();
        let is_file = entry.kind == EntryKind::File; // not a hard link
        self.entries.push(entry);
        self.origins.push(path.to_string());
        if is_file && self.xattrs_held.is_some() {
            let file = self.file_beneath(path, parent).ok();
            self.take_xattrs(index, file)?;
        }
        if !is_dir {
            return Ok(());
        }
        let dir = self.dir_beneath(path, parent)?;
        self.take_xattrs(index, Some(&dir))?;
        let names = sorted_names(&dir).map_err(|err| Refusal::io(path, "cannot list", err))?;
        for child in names {
            // One that vanished since its name was read is left out.
            if let Ok(Some(stat)) = beneath::stat(&dir, &*child) {
                let child_name = format!("{name}/{child}");
                self.add(&format!("{path}/{child}"), child_name, &stat, Some(&dir))?;
            }
        }
        Ok(())
    }

    /// The directory `path`, opened from `parent` (the directory it was listed in:
    /// one name, where walking from the home would open every directory above it
    /// again) or else from the home; never through a link.
    fn dir_beneath(&self, path: &str, parent: Option<&OwnedFd>) -> Result<OwnedFd, Refusal> {
        let components = checked(path)?;
        let opened = match (parent, components.len().checked_sub(1)) {
            (Some(parent), Some(last)) => beneath::step(parent, &components, last, false)?,
            _ => beneath::walk(&self.home, &components, None)?,
        };
        opened.ok_or_else(|| not_found(path))
    }

    /// The regular file `path`, for reading, from `parent` (the directory it was
    /// listed in) or else from the home; never through a link.
    fn file_beneath(&self, path: &str, parent: Option<&OwnedFd>) -> Result<OwnedFd, Refusal> {
        let components = checked(path)?;
        let (name, parents) = components.split_last().ok_or_else(|| not_found(path))?;
        let walked;
        let dir = match parent {
            Some(dir) => dir,
            None => {
                walked =
                    beneath::walk(&self.home, parents, None)?.ok_or_else(|| not_found(path))?;
                &walked
            }
        };
        beneath::open_file(dir, *name).map_err(|err| Refusal::io(path, "cannot open", err))
    }
}

impl Fetch {
    /// A file, or a hard link to the first name of it offered.
    fn file_entry(&mut self, name: String, stat: &Stat) -> Entry {
        let next = self.entries.len() as u64;
        if stat.st_nlink > 1 {
            match self.first_names.entry((stat.st_dev, stat.st_ino)) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    return Entry {
                        path: name,
                        ..Entry::hard_link(*first.get())
                    };
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(next);
                }
            }
        }
        fetched_entry(name, EntryKind::File, stat)
    }

    /// A link with its target, read from its directory without following it.
    fn link_entry(&self, path: &str, name: String, stat: &Stat) -> Result<Entry, Refusal> {
        let components = checked(path)?;
        let (last, parents) = components.split_last().ok_or_else(|| not_found(path))?;
        let dir = beneath::walk(&self.home, parents, None)?.ok_or_else(|| not_found(path))?;
        let target = rustix::fs::readlinkat(&dir, *last, Vec::new())
            .map_err(|err| Refusal::io(path, "cannot read the link", err))?;
        let mut entry = fetched_entry(name, EntryKind::Symlink, stat);
        match target.into_string() {
            Ok(text) => entry.extra_mut().target = Some(text),
            Err(err) => {
                entry.extra_mut().target_hex = Some(crate::hex::hex(err.into_cstring().as_bytes()))
            }
        }
        Ok(entry)
    }
}

/// An entry for what `stat` describes beneath a home: signed times to the
/// nanosecond, every mode bit (a link has none).
fn fetched_entry(name: String, kind: EntryKind, stat: &Stat) -> Entry {
    Entry {
        path: name,
        kind,
        size: Some(if kind == EntryKind::File {
            stat.st_size as u64
        } else {
            0
        }),
        mode: (kind != EntryKind::Symlink).then_some(u64::from(stat.st_mode & 0o7777)),
        mtime: Some(stat.st_mtime),
        mtime_ns: u32::try_from(stat.st_mtime_nsec).ok().filter(|ns| *ns != 0),
        // Fewer blocks than bytes: it has holes, sent as runs (dense to a client
        // without `meta` or that did not ask for runs: `Fetch::dense`), so a `get`
        // keeps them as a `send` does.
        sparse: (kind == EntryKind::File
            && super::has_holes(stat.st_blocks as u64, stat.st_size as u64))
        .then_some(true),
        ..Entry::default()
    }
}

impl Outbox for Fetch {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&self, index: usize) -> Result<Box<dyn Input>> {
        let opened = self.open_beneath(index);
        // Asked once the file is open, not before: a reload that gave the home away
        // in between is seen, and a file opened before it was its user's then.
        if let Some(entitled) = &self.entitled {
            entitled().map_err(|refusal| refused(refusal.code, refusal.message))?;
        }
        opened
    }

    fn rereadable(&self, _index: usize) -> bool {
        true
    }

    fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref()
    }

    fn shown(&self, index: usize) -> String {
        escape(&self.origins[index]).into_owned()
    }
}

impl Fetch {
    /// Opens entry `index`'s file beneath the home, never through a link.
    fn open_beneath(&self, index: usize) -> Result<Box<dyn Input>> {
        let fd = self
            .file_beneath(&self.origins[index], None)
            .map_err(anyhow::Error::new)
            .classify(Kind::Io)?;
        Ok(Box::new(File::from(fd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::OFlags;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        (dir, Home::from_fd(fd))
    }

    #[test]
    fn a_new_home_and_new_directories_above_it_are_private_and_old_ones_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, root) = home();
        let mode = |path: &str| {
            let meta = std::fs::metadata(dir.path().join(path)).unwrap();
            meta.permissions().mode() & 0o777
        };
        Home::open(&root.root, Path::new("team/bob"), true).unwrap();
        assert_eq!((mode("team"), mode("team/bob")), (0o700, 0o700));
        std::fs::create_dir(dir.path().join("open")).unwrap();
        std::fs::set_permissions(dir.path().join("open"), PermissionsExt::from_mode(0o755))
            .unwrap();
        Home::open(&root.root, Path::new("open/alice"), true).unwrap();
        assert_eq!((mode("open"), mode("open/alice")), (0o755, 0o700));
        let missing = Home::open(&root.root, Path::new("team/carol"), false);
        assert_eq!(code(missing.map(|_| ())), ErrorCode::NotFound);
    }

    /// `remove`, and what it gave back to the books.
    fn removed(home: &Home, path: &str, links: bool) -> Result<Footprint, Refusal> {
        let mut books = Books::default();
        let before = Footprint {
            bytes: 1 << 40,
            files: 1 << 20,
        };
        books.on_disk = before;
        home.remove(path, links, &mut books)?;
        Ok(Footprint {
            bytes: before.bytes - books.on_disk.bytes,
            files: before.files - books.on_disk.files,
        })
    }

    fn code<T>(result: Result<T, Refusal>) -> ErrorCode {
        result.err().expect("a refusal").code
    }

    /// A reload may give the home away while a `get` walks it: what the walk found
    /// (names, sizes, link targets) may be another user's by then, and is never
    /// offered.
    #[test]
    fn a_fetch_whose_user_lost_the_home_during_the_walk_offers_nothing() {
        let (dir, home) = home();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        std::os::unix::fs::symlink("bob's secret", dir.path().join("tree/l")).unwrap();
        let fetch = home.fetch(&["tree".to_string()], (None, false)).unwrap();
        let gone: Entitled = Box::new(|| Err(Refusal::new(ErrorCode::Denied, "home changed")));
        assert_eq!(code(fetch.while_entitled(gone)), ErrorCode::Denied);
        let fetch = home.fetch(&["tree".to_string()], (None, false)).unwrap();
        let kept: Entitled = Box::new(|| Ok(()));
        assert_eq!(fetch.while_entitled(kept).unwrap().entries().len(), 2);
    }

    #[test]
    fn the_answers_of_the_request_table() {
        let (dir, home) = home();
        std::fs::create_dir_all(dir.path().join("d/e")).unwrap();
        std::fs::write(dir.path().join("f"), b"file").unwrap();
        std::fs::write(dir.path().join("d/x"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();

        // Anything: a parent that is missing or not a directory.
        assert_eq!(code(removed(&home, "nope/x", false)), ErrorCode::NotFound);
        assert_eq!(code(removed(&home, "f/x", false)), ErrorCode::NotFound);
        assert_eq!(
            code(removed(&home, "link/passwd", false)),
            ErrorCode::NotFound
        );
        // get/remove of a symlink: denied.
        assert_eq!(
            code(home.fetch(&["link".into()], (None, false))),
            ErrorCode::Denied
        );
        assert_eq!(code(removed(&home, "link", false)), ErrorCode::Denied);
        // Under `meta` a link itself may be renamed and removed, never followed.
        home.rename("link", "moved", true).unwrap();
        // What a link is charged comes back: one entry, its target's length.
        assert_eq!(
            removed(&home, "moved", true).unwrap(),
            Footprint { bytes: 4, files: 1 }
        );
        assert!(std::path::Path::new("/etc/passwd").exists());
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        // get: two paths with one last component, or none.
        assert_eq!(
            code(home.fetch(&["f".into(), "d/f".into()], (None, false))),
            ErrorCode::BadPath
        );
        assert_eq!(code(home.fetch(&[], (None, false))), ErrorCode::BadPath);
        // put into a missing directory or a file.
        assert_eq!(code(home.target("nope")), ErrorCode::NotFound);
        assert_eq!(code(home.target("f")), ErrorCode::NotFound);
        assert!(home.target("").is_ok());
        // mkdir: existing dir fine; something else in the way is exists.
        let mut books = Books::default();
        home.mkdir("d", &mut books).unwrap();
        home.mkdir("d/new/deeper", &mut books).unwrap();
        assert_eq!(
            books.on_disk,
            Footprint {
                bytes: 8192,
                files: 2
            }
        );
        assert_eq!(code(home.mkdir("f", &mut books)), ErrorCode::Exists);
        assert_eq!(code(home.mkdir("f/sub", &mut books)), ErrorCode::Exists);
        assert_eq!(code(home.mkdir("link/sub", &mut books)), ErrorCode::Exists);
        // remove: non-empty dir denied; the home bad_path.
        assert_eq!(code(removed(&home, "d", false)), ErrorCode::Denied);
        assert_eq!(code(removed(&home, "", false)), ErrorCode::BadPath);
        assert_eq!(
            removed(&home, "d/new/deeper", false).unwrap(),
            Footprint::DIR
        );
        // rename: names first, then the disk.
        assert_eq!(code(home.rename("", "x", false)), ErrorCode::BadPath);
        assert_eq!(
            code(home.rename("d", "d/e/inside", false)),
            ErrorCode::BadPath
        );
        assert_eq!(
            code(home.rename("missing", "x", false)),
            ErrorCode::NotFound
        );
        assert_eq!(code(home.rename("link", "x", false)), ErrorCode::Denied);
        assert_eq!(code(home.rename("f", "d", false)), ErrorCode::Exists);
        home.rename("f", "d/e/g", false).unwrap();
        assert_eq!(std::fs::read(dir.path().join("d/e/g")).unwrap(), b"file");
        // Escapes are bad paths.
        assert_eq!(code(removed(&home, "../x", false)), ErrorCode::BadPath);
        assert_eq!(
            code(removed(&home, "/etc/passwd", false)),
            ErrorCode::BadPath
        );
    }

    #[test]
    fn a_directory_holding_only_partials_is_removed_with_them_unless_one_is_open() {
        let (dir, home) = home();
        std::fs::create_dir_all(dir.path().join("d/e")).unwrap();
        std::fs::write(dir.path().join("d/.xfer-00.partial"), b"12345").unwrap();
        std::fs::write(dir.path().join("d/e/.xfer-01.part"), b"123").unwrap();
        let exchange = dir.path().join("d/e/.xfer-0123456789abcdef.part");
        std::fs::create_dir_all(&exchange).unwrap();
        std::fs::write(exchange.join("old"), b"12").unwrap();
        std::fs::write(dir.path().join("d/e/seen"), b"1").unwrap();
        // `d/e` holds a file a listing shows: not empty, nothing in it touched.
        let refused = removed(&home, "d/e", false).unwrap_err();
        assert!(refused.message.contains("rm -r"), "{}", refused.message);
        assert!(exchange.join("old").exists());
        removed(&home, "d/e/seen", false).unwrap();
        // A part file a session has open: busy, nothing removed.
        let part = rustix::fs::stat(dir.path().join("d/e/.xfer-01.part")).unwrap();
        let mut books = Books::default();
        books.set_open((part.st_dev, part.st_ino), true);
        assert_eq!(code(home.remove("d/e", false, &mut books)), ErrorCode::Busy);
        assert!(dir.path().join("d/e/.xfer-01.part").exists());
        // Closed: `e` goes with its part file and the exchange directory with
        // what it holds, each given back as charged.
        assert_eq!(
            removed(&home, "d/e", false).unwrap(),
            Footprint {
                bytes: 3 + 4096 + 2 + 4096,
                files: 4
            }
        );
        assert_eq!(
            removed(&home, "d", false).unwrap(),
            Footprint {
                bytes: 5 + 4096,
                files: 2
            }
        );
        assert_eq!(home.footprint(), Footprint::default());
        // Only what no listing shows and xfer did not make: said so, not `rm -r`.
        std::fs::create_dir(dir.path().join("x")).unwrap();
        std::os::unix::fs::symlink("t", dir.path().join("x/.xfer-02.partial")).unwrap();
        let refused = removed(&home, "x", false).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Denied);
        assert!(
            refused.message.contains("administrator"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn mkdir_makes_directories_while_they_fit_and_charges_each() {
        let (dir, home) = home();
        let mut books = Books::default();
        books.limits.bytes = Some(3 * 4096);
        home.mkdir("a/b", &mut books).unwrap();
        // The third fits, the fourth does not: what was made stays, counted.
        assert_eq!(code(home.mkdir("a/b/c/d", &mut books)), ErrorCode::Quota);
        assert!(dir.path().join("a/b/c").is_dir());
        assert!(!dir.path().join("a/b/c/d").exists());
        assert_eq!(
            books.on_disk,
            Footprint {
                bytes: 3 * 4096,
                files: 3
            }
        );
        assert_eq!(home.footprint(), books.on_disk);
        // There already: nothing to make, nothing refused.
        home.mkdir("a/b/c", &mut books).unwrap();
        books.limits.files = Some(3);
        books.limits.bytes = None;
        assert_eq!(code(home.mkdir("e", &mut books)), ErrorCode::Quota);
    }

    #[test]
    fn a_sweep_gives_back_what_a_stale_exchange_directory_held_by_the_rule() {
        let (dir, home) = home();
        let stale = dir.path().join("d/.xfer-0123456789abcdef.part");
        std::fs::create_dir_all(stale.join("sub")).unwrap();
        std::fs::write(stale.join("sub/f"), b"12345").unwrap();
        std::os::unix::fs::symlink("target", stale.join("link")).unwrap();
        std::fs::write(dir.path().join("d/kept"), b"kept").unwrap();
        let before = home.footprint();
        assert_eq!(
            before,
            Footprint {
                bytes: 3 * 4096 + 5 + 6 + 4,
                files: 6
            }
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let removed = home.sweep((now + 3600, 0), &mut |_| true);
        // The directory, `sub`, its file and the link.
        assert_eq!(
            removed,
            Footprint {
                bytes: 2 * 4096 + 5 + 6,
                files: 4
            }
        );
        assert_eq!(home.footprint().bytes, before.bytes - removed.bytes);
        assert_eq!(home.footprint().files, before.files - removed.files);
    }

    /// A temporary changed since this server started may be another process's
    /// at work (a server whose root lies in this home, a `recv` without
    /// `O_TMPFILE`), which this server's books know nothing of: it stays, of any
    /// mtime (a sender's time may be set on it). One unchanged since goes, as a
    /// server killed before this one left it; a partial only once stale, unless no
    /// longer marked as resumable (a complete file a killed server never named).
    #[test]
    fn a_sweep_leaves_a_temporary_changed_since_the_server_started() {
        let (dir, home) = home();
        let temp = dir.path().join(".xfer-0123456789abcdef.part");
        std::fs::write(&temp, b"being written").unwrap();
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&temp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A resumable partial is marked as the server's; a complete file a killed
        // server sealed and never named is not.
        let resumable = dir.path().join(".xfer-00.partial");
        std::fs::write(&resumable, b"resumable").unwrap();
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::setxattr(&resumable, "user.xfer.partial", b"1", flags).unwrap();
        let sealed = dir.path().join(".xfer-01.partial");
        std::fs::write(&sealed, b"complete").unwrap();
        // A plain receiver's partial (never marked), being written: mode 0600
        // (reviewer helper-80: it was taken for a sealed file and removed).
        let receivers = dir.path().join(".xfer-02.partial");
        std::fs::write(&receivers, b"half").unwrap();
        let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&receivers, owner_only).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let (secs, nanos) = (now.as_secs() as i64, now.as_nanos() as i128);
        let a_minute_ago = nanos - 60_000_000_000;
        let removed = home.sweep((secs - 3600, a_minute_ago), &mut |_| true);
        assert_eq!(removed, Footprint::default());
        assert!(temp.exists());
        let in_a_second = nanos + 1_000_000_000;
        assert!(sealed.exists());
        let removed = home.sweep((secs - 3600, in_a_second), &mut |_| true);
        assert_eq!(removed.files, 2);
        assert!(!temp.exists() && !sealed.exists());
        assert!(resumable.exists() && receivers.exists());
    }

    #[test]
    fn listings_are_sorted_and_never_follow_links() {
        let (dir, home) = home();
        std::fs::write(dir.path().join("b"), b"bb").unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join(".xfer-0011.part"), b"temp").unwrap();
        let listing = home.list("", false).unwrap();
        let shown: Vec<_> = listing.items().map(|i| (i.name, i.kind, i.size)).collect();
        assert_eq!(
            shown,
            [
                ("a".to_string(), ItemKind::Dir, 0),
                ("b".to_string(), ItemKind::File, 2),
                ("c".to_string(), ItemKind::Other, 0)
            ]
        );
        let link = home.list("c", false).unwrap().items().collect::<Vec<_>>();
        assert_eq!(link.len(), 1);
        assert_eq!(link[0].kind, ItemKind::Other);
        assert_eq!(code(home.list("c/passwd", false)), ErrorCode::NotFound);
    }

    #[test]
    fn a_fetch_walks_directories_with_links_as_links() {
        let (dir, home) = home();
        std::fs::create_dir_all(dir.path().join("photos/2024")).unwrap();
        std::fs::write(dir.path().join("photos/2024/a.jpg"), b"a").unwrap();
        std::fs::hard_link(
            dir.path().join("photos/2024/a.jpg"),
            dir.path().join("photos/b.jpg"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("photos/pw")).unwrap();
        let fetch = home.fetch(&["photos".into()], (None, false)).unwrap();
        let names: Vec<_> = fetch
            .entries()
            .iter()
            .map(|e| (e.path.as_str(), e.kind))
            .collect();
        use EntryKind::*;
        assert_eq!(
            names,
            [
                ("photos", Dir),
                ("photos/2024", Dir),
                ("photos/2024/a.jpg", File),
                ("photos/b.jpg", Hardlink),
                ("photos/pw", Symlink)
            ]
        );
        assert_eq!(fetch.entries()[3].extra().of, Some(2));
        assert_eq!(
            fetch.entries()[4].extra().target.as_deref(),
            Some("/etc/passwd")
        );
        let mut content = String::new();
        std::io::Read::read_to_string(&mut fetch.open(2).unwrap(), &mut content).unwrap();
        assert_eq!(content, "a");
        // Two names of one byte, two directories, a link of 11 bytes.
        assert_eq!(
            home.footprint(),
            Footprint {
                bytes: 2 + 2 * 4096 + 11,
                files: 5
            }
        );
    }
}
