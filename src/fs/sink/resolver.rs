//! Reaching names beneath a [`TargetDir`] for one thread of one session: every
//! directory opened from its parent without following links (`beneath`), and kept
//! open, so 10 000 files in one directory cost one walk, not 10 000. Here a file's
//! fate is decided before its data moves: where it lands, whether an identical file
//! is already there (`same`), and what a cut transfer left to resume from.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::FileType;
use rustix::io::Errno;

use super::meta;
use super::part::{OfSession, PartFile, Resume, is_ours, partial_name, remove_partial};
use super::target::TargetDir;
use crate::escape::escape;
use crate::fs::ledger::Footprint;
use crate::fs::{Refusal, beneath};
use crate::proto::hash::{HashKind, Hasher};
use crate::proto::message::{Entry, ErrorCode};

/// Most directories a resolver keeps open; past that it starts over.
const RESOLVER_DIRS: usize = 256;

/// What is at an offered file's final name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Nothing, or a regular file of this many bytes that `--overwrite` will
    /// replace: receive it.
    Free(Option<u64>),
    /// Something else `--overwrite` will replace (a link, a special file): receive
    /// it (in a quota it counts until it is replaced, as a file does).
    Taken,
    /// A regular file of the offered size and time: it counts as delivered.
    Same,
    /// A directory, which `--overwrite` replaces once it is empty (emptied with
    /// `--delete`'s rules, see `TargetDir::clear`): in a quota it counts until it
    /// is replaced.
    Dir,
}

impl TargetDir {
    /// A resolver for one thread of one session (see [`Resolver`]). Here, not in
    /// `target.rs`, so that the directory never depends on how names are resolved.
    pub(crate) fn resolver(&self) -> Resolver<'_> {
        Resolver::new(self)
    }
}

/// Resolves names beneath a [`TargetDir`] (see the module documentation).
pub(crate) struct Resolver<'a> {
    pub(super) target: &'a TargetDir,
    /// Open directories by their path beneath the root ("" is the root itself).
    dirs: HashMap<Vec<u8>, Arc<OwnedFd>>,
    /// Directories this resolver made (outside a server): nothing was in them, so
    /// a name in one needs no look before it is planned (the final no-replace link
    /// or rename still refuses anything that appeared there since).
    made: HashSet<Vec<u8>>,
    /// In a dry run, names whose file a directory would replace: nothing is
    /// beneath them yet (see [`Resolver::vacate`]).
    vacated: HashSet<Vec<u8>>,
    /// Directories [`Resolver::let_in`] looked at (`loosen.rs`).
    looked: HashSet<Vec<u8>>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(target: &'a TargetDir) -> Self {
        Resolver {
            target,
            dirs: HashMap::new(),
            made: HashSet::new(),
            vacated: HashSet::new(),
            looked: HashSet::new(),
        }
    }

    /// Whether a file offered with `size` and `mtime` may be received at
    /// `components` (checked when planning; the final rename checks again,
    /// atomically). Without `overwrite`, an existing regular file of that size and
    /// time is [`Placement::Same`] and any other file is refused `exists`.
    pub(crate) fn probe_file(
        &mut self,
        path: &str,
        components: &[&[u8]],
        overwrite: bool,
        offered: (Option<u64>, Option<i64>, u32),
    ) -> Result<Placement, Refusal> {
        self.deep_enough(path, components)?;
        let (parents, name) = split_last(components);
        if self.made_here(parents) {
            return Ok(Placement::Free(None));
        }
        let Some(parent) = self.walk(parents, false)? else {
            return Ok(Placement::Free(None)); // parents do not exist yet: they will be created
        };
        let stat = match beneath::stat(&*parent, name) {
            Ok(None) => return Ok(Placement::Free(None)),
            Ok(Some(stat)) => stat,
            Err(err) => return Err(Refusal::io(path, "cannot inspect the target", err)),
        };
        match beneath::kind(&stat) {
            FileType::Directory if overwrite => Ok(Placement::Dir),
            FileType::Directory => Err(self.dir_in_the_way(path)),
            FileType::RegularFile if overwrite => Ok(Placement::Free(Some(stat.st_size as u64))),
            _ if overwrite => Ok(Placement::Taken),
            FileType::RegularFile
                if offered.0 == Some(stat.st_size as u64)
                    && offered.1 == Some(stat.st_mtime)
                    && meta::same_nanos(offered.2, stat.st_mtime_nsec as u32) =>
            {
                Ok(Placement::Same)
            }
            _ => Err(Refusal::new(
                ErrorCode::Exists,
                format!(
                    "{}: already exists ({})",
                    escape(path),
                    self.target.replace_hint()
                ),
            )),
        }
    }

    /// `exists` for a directory where a file or link is offered, without the
    /// permission to replace files.
    pub(super) fn dir_in_the_way(&self, path: &str) -> Refusal {
        Refusal::new(
            ErrorCode::Exists,
            format!(
                "{}: {} ({})",
                escape(path),
                beneath::DIR_IN_THE_WAY,
                self.target.replace_hint()
            ),
        )
    }

    /// The directory this resolver reaches into.
    pub(crate) fn target(&self) -> &'a TargetDir {
        self.target
    }

    /// Whether something other than a directory (a file, a link, a special file)
    /// is at `components`: what an offered directory replaces where files are
    /// replaced. Refused as [`Resolver::probe_dir`] refuses, above it.
    pub(crate) fn non_dir_at(&mut self, components: &[&[u8]]) -> Result<bool, Refusal> {
        let path = beneath::shown_path(components);
        self.deep_enough(&path, components)?;
        let (parents, name) = split_last(components);
        let Some(parent) = self.walk(parents, false)? else {
            return Ok(false);
        };
        match beneath::stat(&*parent, name) {
            Ok(Some(stat)) => Ok(beneath::kind(&stat) != FileType::Directory),
            Ok(None) => Ok(false),
            Err(err) => Err(Refusal::io(&path, "cannot inspect the target", err)),
        }
    }

    /// The open directory that holds `components` (the one a node there is
    /// named in: [`Resolver::walk`] keeps it), if it exists.
    pub(crate) fn parent_dir(
        &mut self,
        components: &[&[u8]],
    ) -> Result<Option<Arc<OwnedFd>>, Refusal> {
        let (parents, _) = split_last(components);
        self.walk(parents, false)
    }

    /// Removes the file, link or special file at `components` (shown as `path`),
    /// never following a link, for the directory the plan makes in its place (as
    /// `rsync -a` does: a cut session leaves the new, empty directory). On a
    /// server, under the ledger's lock: `busy` while a session writes the path,
    /// and what left the disk given back.
    pub(crate) fn remove_in_the_way(
        &mut self,
        path: &str,
        components: &[&[u8]],
    ) -> Result<(), Refusal> {
        let (parents, name) = split_last(components);
        let Some(parent) = self.walk(parents, false)? else {
            return Ok(());
        };
        let meter = self.target.meter();
        let mut books = meter.map(|account| account.books());
        if let (Some(books), Some(account)) = (&books, meter) {
            account.current(books)?;
            books.unclaimed(&account.home_path(path))?;
        }
        let stat = match beneath::stat(&*parent, name) {
            Ok(Some(stat)) if beneath::kind(&stat) != FileType::Directory => stat,
            _ => return Ok(()), // gone, or a directory already
        };
        if let Some(books) = &books {
            // The directory must fit once this is gone: else nothing changes.
            books.check(Footprint::DIR.beyond(Footprint::of(&stat)), path)?;
        }
        let unlink = || rustix::fs::unlinkat(&*parent, name, rustix::fs::AtFlags::empty());
        (self.target.displaced().taking(&parent, name, unlink))
            .map_err(|err| Refusal::io(path, "cannot remove what is in the way", err))?;
        if let Some(books) = books.as_deref_mut() {
            books.gone(&stat);
        }
        Ok(())
    }

    /// A dry run's stand-in for [`Resolver::remove_in_the_way`]: from now on this
    /// resolver sees nothing at or beneath `components`.
    pub(crate) fn vacate(&mut self, components: &[&[u8]]) {
        self.vacated.insert(components.join(&b'/'));
    }

    /// Whether the directory `components` is there (reached without a link; a
    /// link or a file on the way is refused as [`Resolver::create_dir`] would).
    pub(crate) fn probe_dir(&mut self, components: &[&[u8]]) -> Result<bool, Refusal> {
        self.deep_enough(&beneath::shown_path(components), components)?;
        self.walk(components, false).map(|dir| dir.is_some())
    }

    /// Creates the directory `components` and any missing parents.
    pub(crate) fn create_dir(&mut self, components: &[&[u8]]) -> Result<(), Refusal> {
        self.deep_enough(&beneath::shown_path(components), components)?;
        self.walk(components, true).map(|_| ())
    }

    /// For a dry run, which makes nothing: whether a real run could add the entry
    /// `components` (`making`: what the real run would fail at, `cannot create
    /// directory`, `cannot create a temporary file`, `cannot make it`). The deepest
    /// directory on its way that is there must let this process add names
    /// (`faccessat`, `W_OK | X_OK`, effective ids: a read-only directory, a
    /// read-only filesystem); where a parent is not there yet, the real run fails
    /// at making the first missing one, and is refused in those words.
    pub(crate) fn dry_run_may_add(
        &mut self,
        components: &[&[u8]],
        making: &str,
    ) -> Result<(), Refusal> {
        let (parents, _) = split_last(components);
        let mut depth = parents.len();
        let dir = loop {
            if let Some(dir) = self.walk(&parents[..depth], false)? {
                break dir;
            }
            depth -= 1;
        };
        let Err(err) = beneath::may_change_names(&*dir) else {
            return Ok(());
        };
        // The real run gives a directory of its own user its owner's bits.
        if self.target.would_loosen(&dir, depth > 0) {
            return Ok(());
        }
        Err(match depth == parents.len() {
            true => Refusal::io(&beneath::shown_path(components), making, err),
            false => Refusal::io(
                &beneath::shown_path(&parents[..=depth]),
                "cannot create directory",
                err,
            ),
        })
    }

    /// On a server, a path deeper than the walks over a home go is `bad_path`
    /// (`fs::quota`): the server never makes what it could not count again; nor
    /// one longer than a request may name (`ledger::nameable`).
    pub(super) fn deep_enough(&self, path: &str, components: &[&[u8]]) -> Result<(), Refusal> {
        if let Some(account) = self.target.meter() {
            let bytes = components.iter().map(|c| c.len() + 1).sum::<usize>();
            account.nameable(bytes.saturating_sub(1), path)?;
        }
        match self.target.meter() {
            Some(account) if components.len() > account.depth_left() => Err(Refusal::new(
                ErrorCode::BadPath,
                format!(
                    "{}: deeper than {} directories, which the server does not keep",
                    escape(path),
                    crate::fs::beneath::MAX_DEPTH
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Applies an offered directory's metadata to the directory made for it.
    pub(crate) fn finish_dir(
        &mut self,
        path: &str,
        components: &[&[u8]],
        entry: &Entry,
    ) -> Result<(), Refusal> {
        let dir = self.walk(components, false)?.ok_or_else(|| {
            Refusal::new(
                ErrorCode::Io,
                format!("{}: directory vanished", escape(path)),
            )
        })?;
        // A server keeps reading, writing and searching what it holds.
        let policy = self.policy(0o700);
        let stat = rustix::fs::fstat(&*dir);
        if stat.is_ok_and(|stat| meta::dir_holds_already(&*dir, &stat, entry, policy)) {
            return Ok(());
        }
        self.target
            .apply_offered(&dir, entry, |entry| {
                meta::apply_in_place(&*dir, entry, policy)
            })
            .map(|_| ())
            .map_err(|err| Refusal::io(path, "cannot set its metadata", err))
    }

    /// How metadata is applied here: a server keeps `server_keeps` for itself.
    pub(super) fn policy(&self, server_keeps: u32) -> meta::Policy<'a> {
        let server = self.target.meter().is_some();
        meta::Policy {
            server,
            keep: if server { server_keeps } else { 0 },
            dropped: self.target.unapplied(),
            user_xattrs: self.target.user_xattrs_only(),
            user_strays: self.target.removes_user_xattrs_only(),
        }
    }

    /// Data a cut transfer of `path` (offered with `size` bytes) left behind: its
    /// length and the hash state after it, or `None`. Useless leftovers (empty, or
    /// longer than the file) are removed, but in a dry run (`dry_run`), which changes
    /// nothing and tells a server's account nothing; a name that is not a regular
    /// file is left alone and never read.
    pub(crate) fn find_partial(
        &mut self,
        path: &str,
        components: &[&[u8]],
        (size, hash): (u64, HashKind),
        dry_run: bool,
    ) -> Result<Option<(u64, Hasher)>, Refusal> {
        let (parents, name) = split_last(components);
        if self.made_here(parents) {
            return Ok(None);
        }
        let Some(dir) = self.walk(parents, false)? else {
            return Ok(None);
        };
        let partial = partial_name(name, size);
        match beneath::stat(&*dir, &partial) {
            Ok(Some(stat)) if beneath::kind(&stat) == FileType::RegularFile => {}
            _ => return Ok(None), // never opened
        }
        let fd = match beneath::open_file(&*dir, &partial) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::INVAL | Errno::LOOP | Errno::ISDIR | Errno::NXIO) => {
                return Ok(None);
            }
            Err(err) => return Err(Refusal::io(path, "cannot open its partial data", err)),
        };
        let stat = rustix::fs::fstat(&fd)
            .map_err(|err| Refusal::io(path, "cannot inspect its partial data", err))?;
        if !is_ours(&fd, &stat, self.target.meter().is_some()) {
            return Ok(None); // not ours: its length is nobody's business
        }
        let len = stat.st_size as u64;
        if len == 0 || len > size {
            if !dry_run {
                remove_partial(&dir, &partial, self.target.meter());
            }
            return Ok(None);
        }
        let mut hasher = hash.hasher();
        let hashed = hasher
            .update_from(&mut File::from(fd), len)
            .map_err(|err| Refusal::io(path, "cannot read its partial data", err))?;
        if hashed != len {
            return Ok(None);
        }
        if let Some(account) = self.target.meter().filter(|_| !dry_run) {
            account.found_partial(path, len);
        }
        Ok(Some((len, hasher)))
    }

    /// Removes what a cut transfer of `path` left behind (for `--no-resume`).
    pub(crate) fn discard_partial(&mut self, components: &[&[u8]], size: u64) {
        let (parents, name) = split_last(components);
        if let Ok(Some(dir)) = self.walk(parents, false) {
            remove_partial(&dir, &partial_name(name, size), self.target.meter());
        }
    }

    /// Opens the temporary file `path`'s data is written to (see
    /// [`PartFile::create`]), creating missing parent directories.
    pub(crate) fn create_part(
        &mut self,
        path: &str,
        components: &[&[u8]],
        resume: Option<Resume>,
    ) -> Result<PartFile, Refusal> {
        let (parents, name) = split_last(components);
        let dir = self
            .walk(parents, true)?
            .expect("walk with create returns a directory");
        let session = OfSession {
            meter: self.target.meter(),
            dropped: self.target.unapplied().clone(),
            displaced: self.target.displaced().clone(),
            scope: (
                self.target.user_xattrs_only(),
                self.target.removes_user_xattrs_only(),
            ),
        };
        PartFile::create(dir, path, name, resume, session)
    }

    /// Opens (and with `create`, makes) the directories `components` beneath the
    /// root without following links, starting from the deepest one already open.
    /// `Ok(None)`: one of them does not exist.
    pub(super) fn walk(
        &mut self,
        components: &[&[u8]],
        create: bool,
    ) -> Result<Option<Arc<OwnedFd>>, Refusal> {
        if let Some(dir) = self.dirs.get(&components.join(&b'/')) {
            return Ok(Some(dir.clone()));
        }
        if self.dirs.len() >= RESOLVER_DIRS {
            self.dirs.clear();
        }
        let known = (0..components.len()).rev().find_map(|depth| {
            let dir = self.dirs.get(&components[..depth].join(&b'/'))?;
            Some((depth, dir.clone()))
        });
        let (mut depth, mut dir) = match known {
            Some(known) => known,
            None => {
                let root = self
                    .target
                    .dup_root()
                    .map_err(|err| Refusal::io("", "cannot open the target directory", err))?;
                let root = Arc::new(root);
                self.dirs.insert(Vec::new(), root.clone());
                (0, root)
            }
        };
        while depth < components.len() {
            if !self.vacated.is_empty() && self.vacated.contains(&components[..=depth].join(&b'/'))
            {
                return Ok(None); // a dry run's directory in place of a file
            }
            let Some((next, made)) = self.step(&dir, components, depth, create)? else {
                return Ok(None);
            };
            dir = Arc::new(next);
            depth += 1;
            let path = components[..depth].join(&b'/');
            if made && self.target.meter().is_none() {
                self.made.insert(path.clone());
            }
            self.dirs.insert(path, dir.clone());
        }
        Ok(Some(dir))
    }

    /// [`beneath::step_noting`]; on a server, a directory it makes is charged as
    /// it is made, under the ledger's lock (`quota`, and nothing made, where it
    /// does not fit). Elsewhere not a syscall more.
    fn step(
        &self,
        dir: &OwnedFd,
        components: &[&[u8]],
        depth: usize,
        create: bool,
    ) -> Result<Option<(OwnedFd, bool)>, Refusal> {
        let Some(account) = self.target.meter().filter(|_| create) else {
            return beneath::step_noting(dir, components, depth, create);
        };
        if let Some(there) = beneath::step_noting(dir, components, depth, false)? {
            return Ok(Some(there));
        }
        let shown = beneath::shown_path(&components[..=depth]);
        let mut books = account.books_to_change()?;
        books.make(&shown, Footprint::DIR, || {
            let step = beneath::step_noting(dir, components, depth, true)?;
            let made = step.as_ref().is_some_and(|(_, made)| *made);
            Ok((step, made))
        })
    }

    /// Whether this resolver made the directory `components` (see [`Resolver::made`]).
    fn made_here(&self, components: &[&[u8]]) -> bool {
        !self.made.is_empty() && self.made.contains(&components.join(&b'/'))
    }

    /// Whether this is the first time [`Resolver::let_in`] looks at `path`.
    pub(super) fn first_look(&mut self, path: &[u8]) -> bool {
        self.looked.insert(path.to_vec())
    }
}

/// A path's parent components and its last one.
pub(super) fn split_last<'c, 'a>(components: &'c [&'a [u8]]) -> (&'c [&'a [u8]], &'a [u8]) {
    let (name, parents) = components
        .split_last()
        .expect("the path policy never returns an empty list");
    (parents, name)
}
