//! What a receiver writes. [`TargetDir`] holds the opened target directory (or a
//! user's home) and, while a receiver runs, a lock on it; a [`Resolver`] reaches
//! every name beneath it without following links and decides where each file
//! lands; a [`PartFile`] is one file on its way, written under a temporary name and
//! renamed only once verified and on disk; groups of them are made durable together
//! ([`TargetDir::flush`], [`TargetDir::name_group`]). A [`Basis`] is the older
//! version a delta is built from (`basis.rs`). `sweep.rs` removes what no sender
//! came back for. This file only names the parts (each in its own file) and keeps
//! [`StdoutSink`].

mod basis;
mod displaced;
mod lent;
mod loosen;
mod meta;
mod node;
mod part;
mod prune;
mod refresh;
mod resolver;
mod sweep;
mod target;

use std::fs::File;
use std::io::{self, Write};

pub(crate) use self::basis::{Basis, BasisReader};
pub(crate) use self::lent::give_back_all;
pub(crate) use self::meta::set_numeric_ids;
pub(crate) use self::node::{Node, node_footprint};
pub(crate) use self::part::{PartFile, Resume, is_unmarked_partial};
pub(crate) use self::prune::{Prune, Spare};
pub(crate) use self::resolver::{Placement, Resolver};
pub(crate) use self::sweep::{cutoff, in_background as sweep_in_background};
pub(crate) use self::target::{DirLock, TargetDir, Unflushed};

/// Standard output as the destination of one received stream (`recv --stdout`).
/// Its bytes are out before they can be verified; the caller says so on a mismatch.
pub(crate) struct StdoutSink(File);

impl StdoutSink {
    /// A handle on standard output that writes straight to the descriptor, not
    /// through std's line buffering.
    pub(crate) fn open() -> io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(StdoutSink(File::from(fd)))
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Refusal;
    use crate::proto::message::ErrorCode;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn target() -> (tempfile::TempDir, TargetDir) {
        let dir = tempfile::tempdir().unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        (dir, target)
    }

    fn write(
        target: &TargetDir,
        path: &str,
        content: &[u8],
        overwrite: bool,
    ) -> Result<Placement, Refusal> {
        let components =
            crate::fs::path::check_path_bytes(path.as_bytes(), crate::fs::path::Names::Safe)
                .unwrap();
        let placement = target.resolver().probe_file(
            path,
            &components,
            overwrite,
            (Some(content.len() as u64), Some(1_000_000_000), 0),
        )?;
        if placement == Placement::Same {
            return Ok(placement);
        }
        let mut part = target.resolver().create_part(path, &components, None)?;
        part.write_all(content)?;
        part.commit(&stamp(Some(0o640), Some(1_000_000_000)), overwrite)?;
        Ok(placement)
    }

    fn stamp(mode: Option<u64>, mtime: Option<i64>) -> crate::proto::message::Entry {
        crate::proto::message::Entry {
            mode,
            mtime,
            ..Default::default()
        }
    }

    #[test]
    fn a_committed_file_lands_with_its_mode_and_time_and_no_temporaries() {
        let (dir, target) = target();
        write(&target, "a/b/c.txt", b"content", false).unwrap();
        let landed = dir.path().join("a/b/c.txt");
        assert_eq!(std::fs::read(&landed).unwrap(), b"content");
        let meta = std::fs::metadata(&landed).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.mtime(), 1_000_000_000);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn files_committed_together_appear_only_then_and_a_name_taken_meanwhile_is_refused() {
        let (dir, target) = target();
        let mut parts = Vec::new();
        for name in ["a", "b", "c"] {
            let mut part = target
                .resolver()
                .create_part(name, &[name.as_bytes()], None)
                .unwrap();
            part.write_all(name.as_bytes()).unwrap();
            part.seal(&stamp(Some(0o640), Some(1_000_000_000))).unwrap();
            parts.push(part);
        }
        let visible = || -> Vec<String> {
            let names = std::fs::read_dir(dir.path()).unwrap();
            let names = names.map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
            let mut names: Vec<String> = names.filter(|n| !n.starts_with(".xfer-")).collect();
            names.sort();
            names
        };
        assert!(
            visible().is_empty(),
            "nothing under a final name before the commit"
        );
        std::fs::write(dir.path().join("b"), b"theirs").unwrap();
        let flushed = target.flush(target.own_handle().as_ref(), &parts, Unflushed::default());
        assert_eq!(flushed, Ok(()));
        let mut named = Unflushed::default();
        let results = target.name_group(parts, flushed, false, &mut named);
        assert_eq!(target.flush(None, &[], named), Ok(()));
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert_eq!(results[1].as_ref().unwrap_err().code, ErrorCode::Exists);
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"theirs");
        let a = dir.path().join("a");
        assert_eq!(std::fs::read(&a).unwrap(), b"a");
        let meta = std::fs::metadata(&a).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.mtime(), 1_000_000_000);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "nothing hidden"
        );
    }

    #[test]
    fn a_dropped_part_file_leaves_nothing() {
        let (dir, target) = target();
        let mut part = target
            .resolver()
            .create_part("x", &[&b"x"[..]], None)
            .unwrap();
        part.write_all(b"half").unwrap();
        drop(part);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_read_only_file_stays_resumable_until_it_is_complete() {
        let (dir, target) = target();
        let resume = Resume { size: 8, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("ro", &[&b"ro"[..]], Some(resume))
            .unwrap();
        part.write_all(b"half").unwrap();
        drop(part); // cut: the partial stays, owner-writable
        let partial = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            partial.metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
        let resume = Resume { size: 8, offset: 4 };
        let mut part = target
            .resolver()
            .create_part("ro", &[&b"ro"[..]], Some(resume))
            .unwrap();
        part.write_all(b"more").unwrap();
        part.commit(&stamp(Some(0o444), None), false).unwrap();
        let landed = dir.path().join("ro");
        assert_eq!(std::fs::read(&landed).unwrap(), b"halfmore");
        assert_eq!(
            std::fs::metadata(&landed).unwrap().permissions().mode() & 0o777,
            0o444
        );
    }

    /// A partial the plan resumed from, removed before the file is made (by `rm`
    /// from another session, or the sweep): the entry fails, and the empty partial
    /// made in its place goes again, so nothing is left to hold room.
    #[test]
    fn a_partial_gone_between_the_plan_and_the_write_fails_the_entry_and_leaves_nothing() {
        let (dir, target) = target();
        let resume = Resume { size: 8, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("gone", &[&b"gone"[..]], Some(resume))
            .unwrap();
        part.write_all(b"half").unwrap();
        drop(part); // cut: the plan of the next session saw these 4 bytes
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let resume = Resume { size: 8, offset: 4 };
        let refusal = target
            .resolver()
            .create_part("gone", &[&b"gone"[..]], Some(resume))
            .map(drop)
            .unwrap_err();
        assert!(
            refusal.to_string().contains("shrank since the plan"),
            "{refusal}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn same_size_and_time_is_same_and_anything_else_exists() {
        let (dir, target) = target();
        write(&target, "x", b"old", false).unwrap();
        assert_eq!(write(&target, "x", b"new", false).unwrap(), Placement::Same);
        let refusal = write(&target, "x", b"newer", false).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Exists);
        assert!(refusal.message.contains("--overwrite"));
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"old");
        write(&target, "x", b"newer", true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"newer");
    }

    #[test]
    fn a_file_appearing_during_the_transfer_is_not_replaced_nor_left_hidden() {
        let (dir, target) = target();
        let resume = Resume { size: 4, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("x", &[&b"x"[..]], Some(resume))
            .unwrap();
        part.write_all(b"mine").unwrap();
        std::fs::write(dir.path().join("x"), b"theirs").unwrap();
        let refusal = part.commit(&stamp(None, None), false).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Exists);
        assert!(refusal.message.contains("discarded"));
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"theirs");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no complete copy left hidden"
        );
    }

    #[test]
    fn a_temporary_swapped_by_someone_else_is_never_renamed() {
        let (dir, target) = target();
        let resume = Resume { size: 4, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("x", &[&b"x"[..]], Some(resume))
            .unwrap();
        part.write_all(b"mine").unwrap();
        let partial = dir.path().join(part::partial_name(b"x", 4));
        std::fs::remove_file(&partial).unwrap();
        std::fs::write(&partial, b"evil").unwrap();
        let refusal = part.commit(&stamp(None, None), true).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Io);
        assert!(!dir.path().join("x").exists());
        assert_eq!(std::fs::read(&partial).unwrap(), b"evil", "left alone");
    }

    #[test]
    fn a_directory_planted_as_the_partial_does_not_block_the_file() {
        let (dir, target) = target();
        std::fs::create_dir(dir.path().join(part::partial_name(b"x", 3))).unwrap();
        let components = [&b"x"[..]];
        let found = target
            .resolver()
            .find_partial(
                "x",
                &components,
                (3, crate::proto::hash::HashKind::Md5),
                false,
            )
            .unwrap();
        assert!(found.is_none());
        let resume = Resume { size: 3, offset: 0 };
        let mut part = target
            .resolver()
            .create_part("x", &components, Some(resume))
            .unwrap();
        part.write_all(b"abc").unwrap();
        part.commit(&stamp(None, None), false).unwrap();
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"abc");
    }

    #[test]
    fn planted_symlinks_never_redirect_a_write() {
        let (dir, target) = target();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), dir.path().join("f")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/dangling", dir.path().join("d")).unwrap();

        assert_eq!(
            write(&target, "sub/x", b"evil", false).unwrap_err().code,
            ErrorCode::BadPath
        );
        assert_eq!(
            write(&target, "sub/deeper/x", b"evil", true)
                .unwrap_err()
                .code,
            ErrorCode::BadPath
        );
        assert_eq!(
            target
                .resolver()
                .create_dir(&[b"sub", b"new"])
                .unwrap_err()
                .code,
            ErrorCode::BadPath
        );
        assert_eq!(
            write(&target, "f", b"evil", false).unwrap_err().code,
            ErrorCode::Exists
        );
        assert_eq!(
            write(&target, "d", b"evil", false).unwrap_err().code,
            ErrorCode::Exists
        );
        // With overwrite, the link itself is replaced; its target is untouched.
        write(&target, "f", b"fine", true).unwrap();
        assert!(
            !std::fs::symlink_metadata(dir.path().join("f"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_reported() {
        let (dir, target) = target();
        std::fs::write(dir.path().join("a"), b"file").unwrap();
        assert_eq!(
            write(&target, "a/b", b"x", false).unwrap_err().code,
            ErrorCode::Exists
        );
        assert_eq!(
            target.resolver().create_dir(&[b"a"]).unwrap_err().code,
            ErrorCode::Exists
        );
    }

    #[test]
    fn a_second_receiver_on_the_same_directory_is_refused_by_name() {
        let (dir, target) = target();
        let held = target.lock(dir.path()).unwrap();
        let second = TargetDir::open(dir.path()).unwrap();
        let err = second.lock(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("process {}", std::process::id())),
            "{err:#}"
        );
        drop(held);
        assert!(second.lock(dir.path()).is_ok());
    }
}
