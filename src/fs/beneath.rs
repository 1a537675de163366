//! Resolution beneath a held directory, never following a symlink: every directory
//! is opened from its parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`, one
//! component at a time, so a link planted anywhere on the way (or the root itself
//! swapped for a link after it was opened) cannot redirect a read, a write or a
//! listing. This is what `PROTOCOL.md` section 6 asks of a receiver and a server.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use super::Refusal;
use crate::escape::escape;
use crate::proto::message::ErrorCode;

/// How deep the walks over a whole tree (quota scan, sweep) descend: beyond it,
/// nothing xfer made.
pub(crate) const MAX_DEPTH: usize = 256;

/// Why a file or link does not take the place of a directory the receiver holds,
/// where it replaces no files (the hint that follows says how it would).
pub(crate) const DIR_IN_THE_WAY: &str = "a directory of that name exists";

/// Opens the directory `name` inside `parent`, refusing to follow a link.
pub(crate) fn open_dir(parent: impl AsFd, name: impl rustix::path::Arg) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the regular file `name` inside `parent` for reading, refusing a link, and
/// never blocking on a FIFO or device that sits under that name.
pub(crate) fn open_file(parent: impl AsFd, name: impl rustix::path::Arg) -> Result<OwnedFd, Errno> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if kind(&rustix::fs::fstat(&fd)?) != FileType::RegularFile {
        return Err(Errno::INVAL);
    }
    // Back to blocking reads: it is a regular file, NONBLOCK only kept a FIFO from hanging.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(fd)
}

/// What is at `name` inside `parent`, links not followed; `None` if nothing is.
pub(crate) fn stat(parent: impl AsFd, name: impl rustix::path::Arg) -> Result<Option<Stat>, Errno> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::NOENT) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whether `name` in `parent` still names the file `fd` was opened from (not
/// renamed away or replaced since).
pub(crate) fn still_at(parent: impl AsFd, name: impl rustix::path::Arg, fd: impl AsFd) -> bool {
    match (stat(parent, name), rustix::fs::fstat(fd)) {
        (Ok(Some(now)), Ok(opened)) => (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino),
        _ => false,
    }
}

/// Whether this process may add and remove names in `dir` (`faccessat`, `W_OK |
/// X_OK`, effective ids), else the error a real `openat`, `mkdirat` or `unlinkat`
/// there would meet: a directory it may not write, an immutable one, a read-only
/// filesystem. For a dry run, which tries none of them; the sticky bit's rule (only
/// an owner removes) is not looked at.
pub(crate) fn may_change_names(dir: impl AsFd) -> Result<(), Errno> {
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    rustix::fs::accessat(dir, ".", access, AtFlags::EACCESS)
}

/// [`may_change_names`] for taking a name away: an append-only directory
/// (`chattr +a`) takes new names but lets none go, not even for root, which
/// `faccessat` does not say (`unlinkat` meets EPERM).
pub(crate) fn may_remove_names(dir: impl AsFd) -> Result<(), Errno> {
    may_change_names(&dir)?;
    match rustix::fs::ioctl_getflags(&dir) {
        Ok(flags) if flags.contains(rustix::fs::IFlags::APPEND) => Err(Errno::PERM),
        _ => Ok(()),
    }
}

/// For a dry run, what the real run's removal of `name` of `parent` (found as
/// `stat`) would meet of its own flags: an immutable or append-only file or
/// directory (`chattr +i`, `+a`) is not removed, not even by root (EPERM). A link
/// or special file is not looked at (its flags cannot be read without opening
/// what it is), nor one this process cannot open.
pub(crate) fn may_remove_entry(
    parent: impl AsFd,
    name: impl rustix::path::Arg,
    stat: &Stat,
) -> Result<(), Errno> {
    let open_as = match kind(stat) {
        FileType::RegularFile => OFlags::RDONLY,
        FileType::Directory => OFlags::RDONLY | OFlags::DIRECTORY,
        _ => return Ok(()),
    };
    let flags = open_as | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::openat(parent, name, flags, Mode::empty()) else {
        return Ok(());
    };
    let pinned = rustix::fs::IFlags::IMMUTABLE | rustix::fs::IFlags::APPEND;
    match rustix::fs::ioctl_getflags(&fd) {
        Ok(flags) if flags.intersects(pinned) => Err(Errno::PERM),
        _ => Ok(()),
    }
}

/// When `stat`'s inode last changed, in nanoseconds since the epoch.
pub(crate) fn changed_at(stat: &Stat) -> i128 {
    i128::from(stat.st_ctime) * 1_000_000_000 + i128::from(stat.st_ctime_nsec)
}

/// Now, read from the clock the kernel stamps changes with
/// (`CLOCK_REALTIME_COARSE`, up to a tick behind the precise one): whatever
/// changes after it carries a [`changed_at`] at or after it. The precise clock
/// can be ahead of a change made just after it was read.
pub(crate) fn change_clock() -> i128 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec)
}

/// Whether `name` in `parent` is a directory (a link to one is not).
pub(crate) fn holds_dir(parent: impl AsFd, name: impl rustix::path::Arg) -> bool {
    matches!(stat(parent, name), Ok(Some(stat)) if kind(&stat) == FileType::Directory)
}

/// The children of `dir`, `.` and `..` aside, each with what it is (links not
/// followed). One that vanished since the directory was read is left out; an
/// unreadable directory has none.
pub(crate) fn children(dir: &OwnedFd) -> impl Iterator<Item = (CString, Stat)> + '_ {
    let entries = rustix::fs::Dir::read_from(dir).into_iter().flatten();
    entries.flatten().filter_map(move |entry| {
        let name = entry.file_name();
        if name == c"." || name == c".." {
            return None;
        }
        let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        Some((name.to_owned(), stat))
    })
}

/// `components` joined with `/`, for messages: bytes that are not UTF-8 shown as
/// U+FFFD (the message escapes the rest).
pub(crate) fn shown_path<C: AsRef<[u8]>>(components: &[C]) -> String {
    let joined: Vec<&[u8]> = components.iter().map(AsRef::as_ref).collect();
    String::from_utf8_lossy(&joined.join(&b'/')).into_owned()
}

pub(crate) fn kind(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// Walks `components` from `root`, each a directory opened without following
/// links; with `make`, makes those that are missing with that mode (less the
/// umask). `Ok(None)`: one is missing.
pub(crate) fn walk<C: AsRef<[u8]>>(
    root: &OwnedFd,
    components: &[C],
    make: Option<Mode>,
) -> Result<Option<OwnedFd>, Refusal> {
    let mut dir =
        rustix::io::dup(root).map_err(|err| Refusal::io("", "cannot open the root", err))?;
    for depth in 0..components.len() {
        match step_making(&dir, components, depth, make)? {
            Some((next, _)) => dir = next,
            None => return Ok(None),
        }
    }
    Ok(Some(dir))
}

/// Opens `components[depth]` inside `dir` (its parent), creating it with `create`.
pub(crate) fn step<C: AsRef<[u8]>>(
    dir: &OwnedFd,
    components: &[C],
    depth: usize,
    create: bool,
) -> Result<Option<OwnedFd>, Refusal> {
    Ok(step_noting(dir, components, depth, create)?.map(|(next, _)| next))
}

/// [`step`], saying also whether this call made the directory.
pub(crate) fn step_noting<C: AsRef<[u8]>>(
    dir: &OwnedFd,
    components: &[C],
    depth: usize,
    create: bool,
) -> Result<Option<(OwnedFd, bool)>, Refusal> {
    step_making(
        dir,
        components,
        depth,
        create.then_some(Mode::from_raw_mode(0o777)),
    )
}

/// [`step_noting`], making a missing directory with the mode `make` gives.
fn step_making<C: AsRef<[u8]>>(
    dir: &OwnedFd,
    components: &[C],
    depth: usize,
    make: Option<Mode>,
) -> Result<Option<(OwnedFd, bool)>, Refusal> {
    let component = components[depth].as_ref();
    let shown = || shown_path(&components[..=depth]);
    let mode = match (open_dir(dir, component), make) {
        (Ok(next), _) => return Ok(Some((next, false))),
        (Err(Errno::NOENT), Some(mode)) => mode,
        (Err(Errno::NOENT), None) => return Ok(None),
        (Err(err), _) => return Err(explain(dir, component, &shown(), err)),
    };
    let made = match rustix::fs::mkdirat(dir, component, mode) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(err) => return Err(Refusal::io(&shown(), "cannot create directory", err)),
    };
    open_dir(dir, component)
        .map(|next| Some((next, made)))
        .map_err(|err| explain(dir, component, &shown(), err))
}

/// How a link met where a directory is wanted is refused (`shown`: its path,
/// escaped), with what to do: the same words wherever xfer meets one.
pub(crate) fn link_here(shown: &str) -> String {
    format!(
        "{shown}: is a symbolic link here, which xfer does not follow (remove the link, or \
         name the directory it leads to instead)"
    )
}

/// Why a component could not be opened as a directory, in a user's words: a link
/// is `bad_path` (never followed), another kind of file `exists`.
pub(crate) fn explain(parent: &OwnedFd, component: &[u8], shown: &str, err: Errno) -> Refusal {
    match stat(parent, component) {
        Ok(Some(stat)) if kind(&stat) == FileType::Symlink => {
            Refusal::new(ErrorCode::BadPath, link_here(&escape(shown)))
        }
        Ok(Some(stat)) if kind(&stat) != FileType::Directory => Refusal::new(
            ErrorCode::Exists,
            format!("{}: exists and is not a directory", escape(shown)),
        ),
        _ => Refusal::io(shown, "cannot open directory", err),
    }
}

/// Why [`rename_over_dir`] did not put the entry in the directory's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotOver {
    /// Nothing changed: the name holds the directory, and `temp` the entry.
    Failed(Errno),
    /// The directory was written into meanwhile (its removal failed with the
    /// error) and the exchange back failed too: the entry holds the name, and the
    /// directory, whole, is under `temp` (the caller says so, and leaves it).
    Stranded(Errno),
}

impl From<Errno> for NotOver {
    fn from(err: Errno) -> Self {
        NotOver::Failed(err)
    }
}

/// Renames `temp` over `name`, a directory emptied first (`TargetDir::clear`): the two
/// are exchanged in one step (`RENAME_EXCHANGE`), so that the name holds the old
/// directory or the new entry at every moment, a crash included, and the
/// directory, now under `temp`, is removed; one that is not empty any more (a
/// session wrote into it meanwhile) is exchanged back, and the error returned
/// (where that fails too, [`NotOver::Stranded`]). On a filesystem without the
/// exchange the directory is removed, then the name given: a crash between the
/// two leaves neither (a cut session cannot come between them).
pub(crate) fn rename_over_dir(dir: &OwnedFd, temp: &str, name: &[u8]) -> Result<(), NotOver> {
    match rustix::fs::renameat_with(dir, temp, dir, name, RenameFlags::EXCHANGE) {
        Ok(()) => match rustix::fs::unlinkat(dir, temp, AtFlags::REMOVEDIR) {
            // Gone already: a receiver's sweep took the empty directory, whose time
            // was old (an empty directory nobody touched), under its temporary name.
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(err) => match exchange_back(dir, temp, name) {
                Ok(()) => Err(NotOver::Failed(err)),
                Err(_) => Err(NotOver::Stranded(err)),
            },
        },
        // The directory went meanwhile: the name is free.
        Err(Errno::NOENT) => Ok(rustix::fs::renameat_with(
            dir,
            temp,
            dir,
            name,
            RenameFlags::NOREPLACE,
        )?),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            Ok(rustix::fs::renameat(dir, temp, dir, name)?)
        }
        Err(err) => Err(NotOver::Failed(err)),
    }
}

#[cfg(test)]
thread_local! {
    /// Makes the next exchange back fail, as a test asks.
    static FAIL_EXCHANGE_BACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The exchange that gives a directory written into meanwhile its name back.
fn exchange_back(dir: &OwnedFd, temp: &str, name: &[u8]) -> Result<(), Errno> {
    #[cfg(test)]
    if FAIL_EXCHANGE_BACK.with(|fail| fail.replace(false)) {
        return Err(Errno::IO);
    }
    rustix::fs::renameat_with(dir, temp, dir, name, RenameFlags::EXCHANGE)
}

/// How a directory [`NotOver::Stranded`] is reported, for the entry `path` whose
/// temporary was `temp`: where the directory is now, and what to do.
pub(crate) fn stranded(path: &str, temp: &str, err: Errno) -> Refusal {
    let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
    let now_at = if parent.is_empty() {
        temp.to_string()
    } else {
        format!("{parent}/{temp}")
    };
    Refusal::new(
        ErrorCode::Io,
        format!(
            "{}: a session wrote into the directory of that name while it was replaced \
             ({}), and it could not be given its name back: the received entry holds the \
             name, and the directory, with all it holds, is now at {} (move it back; it is \
             swept as a temporary once all of it is older than --keep-partial)",
            escape(path),
            std::io::Error::from(err),
            escape(&now_at)
        ),
    )
}

/// Removes the directory `name` inside `parent`, a temporary name only xfer gives
/// (a directory left under it by a crash between the exchange and the removal of
/// [`rename_over_dir`]), with all it holds, when it and everything in it was last
/// modified before `cutoff` (seconds since the epoch) and `may` lets each regular
/// file go (a server spares those a session has open): links are removed, never
/// followed, and nothing deeper than [`MAX_DEPTH`] is entered (`depth`: the
/// directory's, below the walk's root). What is newer stays, and so does the
/// directory, for a later sweep. `gone` hears of each entry removed, as it was
/// just before (the directory itself last).
pub(crate) fn remove_stale_dir(
    (parent, name, depth): (&OwnedFd, &std::ffi::CStr, usize),
    cutoff: i64,
    may: &mut dyn FnMut(&Stat) -> bool,
    gone: &mut dyn FnMut(&Stat),
) {
    let Ok(Some(stat)) = self::stat(parent, name) else {
        return;
    };
    if kind(&stat) != FileType::Directory || stat.st_mtime >= cutoff {
        return;
    }
    let Ok(dir) = open_dir(parent, name) else {
        return;
    };
    if empty_stale(&dir, (cutoff, depth + 1), may, gone)
        && rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).is_ok()
    {
        gone(&stat);
    }
}

/// Removes what the stale directory `dir` holds (see [`remove_stale_dir`]);
/// whether all of it went.
fn empty_stale(
    dir: &OwnedFd,
    (cutoff, depth): (i64, usize),
    may: &mut dyn FnMut(&Stat) -> bool,
    gone: &mut dyn FnMut(&Stat),
) -> bool {
    let mut all = true;
    for (name, stat) in children(dir) {
        let went = stat.st_mtime < cutoff
            && match kind(&stat) {
                FileType::Directory => {
                    depth < MAX_DEPTH
                        && open_dir(dir, name.as_c_str())
                            .is_ok_and(|child| empty_stale(&child, (cutoff, depth + 1), may, gone))
                        && rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::REMOVEDIR).is_ok()
                }
                FileType::RegularFile => {
                    may(&stat)
                        && rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()).is_ok()
                }
                _ => rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()).is_ok(),
            };
        match went {
            true => gone(&stat),
            false => all = false,
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_anywhere_on_the_way_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a/link")).unwrap();
        let root = rustix::fs::open(
            dir.path(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        let make = Some(Mode::from_raw_mode(0o777));
        assert!(walk(&root, &["a", "b"], None).unwrap().is_some());
        assert!(walk(&root, &["a", "missing"], None).unwrap().is_none());
        let refusal = walk(&root, &["a", "link", "x"], make).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::BadPath);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(
            walk(&root, &["a", "new", "deeper"], make)
                .unwrap()
                .is_some()
        );
        assert!(dir.path().join("a/new/deeper").is_dir());
    }

    #[test]
    fn a_fifo_is_never_opened_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let root = rustix::fs::open(
            dir.path(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        assert!(open_file(&root, "fifo").is_err());
        assert!(open_file(&root, "file").is_ok());
    }

    fn opened(dir: &std::path::Path) -> OwnedFd {
        rustix::fs::open(
            dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn a_file_takes_the_place_of_an_empty_directory_and_a_full_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let fd = opened(dir.path());
        std::fs::create_dir(dir.path().join("name")).unwrap();
        std::fs::write(dir.path().join("temp"), b"new").unwrap();
        rename_over_dir(&fd, "temp", b"name").unwrap();
        assert_eq!(std::fs::read(dir.path().join("name")).unwrap(), b"new");
        assert!(!dir.path().join("temp").exists());

        // Written into meanwhile: the directory is given back its name, whole.
        std::fs::create_dir(dir.path().join("full")).unwrap();
        std::fs::write(dir.path().join("full/late"), b"late").unwrap();
        std::fs::write(dir.path().join("temp"), b"new").unwrap();
        assert_eq!(
            rename_over_dir(&fd, "temp", b"full"),
            Err(NotOver::Failed(Errno::NOTEMPTY))
        );
        assert_eq!(
            std::fs::read(dir.path().join("full/late")).unwrap(),
            b"late"
        );
        assert_eq!(std::fs::read(dir.path().join("temp")).unwrap(), b"new");

        // The directory went meanwhile: the name is simply given.
        rename_over_dir(&fd, "temp", b"gone").unwrap();
        assert_eq!(std::fs::read(dir.path().join("gone")).unwrap(), b"new");

        // The exchange back fails: the directory is found, whole, under the temporary
        // name, and the report says so.
        std::fs::write(dir.path().join("temp"), b"new").unwrap();
        FAIL_EXCHANGE_BACK.with(|fail| fail.set(true));
        let result = rename_over_dir(&fd, "temp", b"full");
        assert_eq!(result, Err(NotOver::Stranded(Errno::NOTEMPTY)));
        assert_eq!(std::fs::read(dir.path().join("full")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(dir.path().join("temp/late")).unwrap(),
            b"late"
        );
        let said = stranded("d/full", ".xfer-00.part", Errno::NOTEMPTY).message;
        assert!(
            said.contains("is now at d/.xfer-00.part (move it back"),
            "{said}"
        );
    }

    #[test]
    fn a_stale_directory_goes_with_all_it_holds_and_a_fresh_entry_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), b"p").unwrap();
        let stale = dir.path().join("stale");
        std::fs::create_dir_all(stale.join("deeper")).unwrap();
        std::fs::write(stale.join("deeper/o"), b"four").unwrap();
        std::os::unix::fs::symlink(outside.path(), stale.join("link")).unwrap();
        let fd = opened(dir.path());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // What went: (regular files, their bytes, other entries).
        let mut swept = (0, 0, 0);
        let mut gone = |stat: &Stat| match kind(stat) {
            FileType::RegularFile => {
                swept.0 += 1;
                swept.1 += stat.st_size;
            }
            _ => swept.2 += 1,
        };
        // Everything is newer than a cutoff an hour ago: nothing goes.
        remove_stale_dir((&fd, c"stale", 0), now - 3600, &mut |_| true, &mut gone);
        assert!(stale.join("deeper/o").exists());
        // A file a server holds open keeps it, and the directories above it.
        remove_stale_dir((&fd, c"stale", 0), now + 10, &mut |_| false, &mut gone);
        assert!(stale.join("deeper/o").exists());
        assert!(!stale.join("link").exists(), "the link itself went");
        remove_stale_dir((&fd, c"stale", 0), now + 10, &mut |_| true, &mut gone);
        assert!(!stale.exists());
        assert_eq!(swept, (1, 4, 3));
        assert_eq!(
            std::fs::read(outside.path().join("precious")).unwrap(),
            b"p"
        );
    }
}
