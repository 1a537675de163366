//! The basis of a delta (feature `delta`): the regular file an offered name already
//! holds, which the new version will replace. When planning, it is read once and cut
//! into chunks ([`Resolver::chunk_basis`]): their sums go into the plan, their ends
//! stay here. When the instructions arrive it is opened again by name
//! ([`Resolver::open_basis`]) and only the chunks they name are read, at their
//! offsets. A basis is never written: the result is built in a fresh temporary.
//! Under feature `delta_stream` the plan only checks it ([`Resolver::stream_basis`]):
//! the receiver's cutter reads it during the data phase, and its chunk ends are
//! recorded here as their sums go out.
//!
//! A basis that is no longer the file that was chunked (another inode, size, mtime or
//! ctime) when it is opened again, or once its chunks have been read, is refused
//! `busy`: someone else is writing that name.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, Stat};

use super::meta;
use super::resolver::{Resolver, split_last};
use crate::escape::escape;
use crate::fs::{Refusal, beneath};
use crate::proto::delta::{self, Chunking, MAX_CHUNKS, MIN_DELTA_SIZE};
use crate::proto::message::{Entry, ErrorCode, Signature};

/// What identifies a basis as the file that was chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

impl Stamp {
    fn of(stat: &Stat) -> Stamp {
        Stamp {
            device: stat.st_dev,
            inode: stat.st_ino,
            size: stat.st_size as u64,
            mtime: (stat.st_mtime, stat.st_mtime_nsec),
            ctime: (stat.st_ctime, stat.st_ctime_nsec),
        }
    }
}

/// A chunked basis: which file it was, and where each chunk ends. A streamed one
/// (feature `delta_stream`) starts with no chunks: they are [`Basis::record`]ed as
/// their sums go out, and cutting it stops once [`Basis::stop_cutting`] is said.
#[derive(Debug)]
pub(crate) struct Basis {
    stamp: Stamp,
    /// Where each chunk ends: all of them, or those whose sums went out so far.
    ends: Mutex<Vec<u64>>,
    chunking: Chunking,
    streamed: bool,
    stop: AtomicBool,
}

impl Basis {
    fn new(stamp: Stamp, ends: Vec<u64>, chunking: Chunking, streamed: bool) -> Basis {
        Basis {
            stamp,
            ends: Mutex::new(ends),
            chunking,
            streamed,
            stop: AtomicBool::new(false),
        }
    }

    fn ends(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.ends.lock().expect("no panics while holding the lock")
    }

    /// How many chunks the basis has (streamed: whose sums went out so far).
    pub(crate) fn chunks(&self) -> u64 {
        self.ends().len() as u64
    }

    /// The byte range of chunks `first .. first + count`, or `None` when that run
    /// is not inside the basis (streamed: not among the chunks sent so far).
    pub(crate) fn range(&self, first: u32, count: u32) -> Option<(u64, u64)> {
        let (first, count) = (first as usize, count as usize);
        let ends = self.ends();
        let last = first.checked_add(count)?.checked_sub(1)?;
        let end = *ends.get(last)?;
        let start = if first == 0 { 0 } else { ends[first - 1] };
        Some((start, end - start))
    }

    /// Its size when it was chosen: a result of this many bytes copied from it in
    /// order is the basis itself.
    pub(crate) fn size(&self) -> u64 {
        self.stamp.size
    }

    /// Its modification time when it was chosen, whole seconds.
    pub(crate) fn modified(&self) -> i64 {
        self.stamp.mtime.0
    }

    /// Whether a file offered with `size` and `mtime` (whole seconds) may turn out
    /// to be this basis itself, and so be kept rather than written (section 18.5):
    /// offered with its size and time (only `-I` sends such a file). Any other
    /// result is written whole into a temporary beside it.
    pub(crate) fn may_be(&self, size: Option<u64>, mtime: Option<i64>) -> bool {
        size == Some(self.size()) && mtime == Some(self.modified())
    }

    /// Whether its sums are streamed during the data phase (section 18.6).
    pub(crate) fn streamed(&self) -> bool {
        self.streamed
    }

    pub(crate) fn chunking(&self) -> Chunking {
        self.chunking
    }

    /// Notes the ends of the next chunks of a streamed basis, as their sums go out.
    pub(crate) fn record(&self, ends: &[u64]) {
        self.ends().extend_from_slice(ends);
    }

    /// Cutting a streamed basis stops after the chunk at hand: its entry needs no
    /// more sums (its data ended, or the sender said it copies nothing more).
    pub(crate) fn stop_cutting(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// What [`Basis::stop_cutting`] sets, for the cutter to watch.
    pub(crate) fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }
}

/// A basis opened again to read the chunks that instructions name.
pub(crate) struct BasisReader {
    file: File,
    stamp: Stamp,
    path: String,
}

impl BasisReader {
    /// The basis file, to read it through (a streamed basis's cutter).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Fills `buf` from `offset` on; a basis that ends early changed.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Refusal> {
        self.file.read_exact_at(buf, offset).map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                self.changed()
            } else {
                Refusal::io(&self.path, "cannot read its old version", err)
            }
        })
    }

    /// Whether the basis is still the file that was chunked, now that its chunks
    /// have been read.
    pub(crate) fn check_unchanged(&self) -> Result<(), Refusal> {
        let stat = rustix::fs::fstat(&self.file)
            .map_err(|err| Refusal::io(&self.path, "cannot inspect its old version", err))?;
        if Stamp::of(&stat) == self.stamp {
            Ok(())
        } else {
            Err(self.changed())
        }
    }

    fn changed(&self) -> Refusal {
        changed(&self.path)
    }
}

fn changed(path: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Busy,
        format!(
            "{}: the old version changed while it was read for a delta; it was left as \
             it is (send again, or with --whole-file)",
            escape(path)
        ),
    )
}

impl Resolver<'_> {
    /// Reads the regular file at `components` (the file an entry will replace) and
    /// cuts it into chunks: the signature for the plan, and the [`Basis`] to build
    /// from. `None` when it is no regular file, smaller than a delta is worth, or
    /// would list more than `budget` (or [`MAX_CHUNKS`]) chunks (a basis larger than
    /// that many average chunks is not even read): the entry then goes whole. The chunk size follows the `offered` size of the new version, which
    /// the sender knows too: it can cut its file while this one is read.
    pub(crate) fn chunk_basis(
        &mut self,
        path: &str,
        components: &[&[u8]],
        (offered, budget): (u64, u64),
    ) -> Result<Option<(Basis, Signature)>, Refusal> {
        let Some((file, stat)) = self.basis_file(components) else {
            return Ok(None);
        };
        let size = stat.st_size as u64;
        if size < MIN_DELTA_SIZE {
            return Ok(None);
        }
        let chunking = Chunking::for_size(offered);
        let limit = budget.min(MAX_CHUNKS);
        if size / chunking.avg() as u64 > limit {
            return Ok(None); // it would most likely list too many: not even read
        }
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
        let chunked = delta::chunk_and_sum(&file, chunking, limit)
            .map_err(|err| Refusal::io(path, "cannot read its old version", err))?;
        let Some((ends, sums)) = chunked else {
            return Ok(None); // too many chunks
        };
        let end = ends.last().copied().unwrap_or(0);
        let now = rustix::fs::fstat(&file)
            .map_err(|err| Refusal::io(path, "cannot inspect its old version", err))?;
        if end != size || Stamp::of(&now) != Stamp::of(&stat) {
            return Ok(None); // changing as we read it: not a basis worth offering
        }
        let signature = Signature {
            avg: chunking.avg() as u64,
            count: Some(ends.len() as u64),
            sums: Some(delta::sums_hex(&sums)),
            stream: false,
        };
        let basis = Basis::new(Stamp::of(&stat), ends, chunking, false);
        Ok(Some((basis, signature)))
    }

    /// [`Resolver::chunk_basis`] for a basis whose sums are streamed (feature
    /// `delta_stream`): the same choice of file, but nothing is read now; the
    /// cutter reads it during the data phase ([`Resolver::open_basis`]).
    pub(crate) fn stream_basis(
        &mut self,
        components: &[&[u8]],
        offered: u64,
    ) -> Option<(Basis, Signature)> {
        let (_, stat) = self.basis_file(components)?;
        let size = stat.st_size as u64;
        let chunking = Chunking::for_size(offered);
        if size < MIN_DELTA_SIZE || size / chunking.avg() as u64 > MAX_CHUNKS {
            return None;
        }
        let signature = Signature {
            avg: chunking.avg() as u64,
            count: None,
            sums: None,
            stream: true,
        };
        Some((
            Basis::new(Stamp::of(&stat), Vec::new(), chunking, true),
            signature,
        ))
    }

    /// Opens the basis of `path` again to read its chunks; `busy` unless it is still
    /// the file that was chunked.
    pub(crate) fn open_basis(
        &mut self,
        path: &str,
        components: &[&[u8]],
        basis: &Basis,
    ) -> Result<BasisReader, Refusal> {
        match self.open_regular(components) {
            Some((file, stat)) if Stamp::of(&stat) == basis.stamp => Ok(BasisReader {
                file,
                stamp: basis.stamp,
                path: path.to_string(),
            }),
            _ => Err(changed(path)),
        }
    }

    /// Keeps the basis of `path` as the entry's result, a delta having rebuilt it
    /// byte for byte: `busy` unless it is still the file that was chunked, else it
    /// gets the offered metadata (mode, owner, attributes, the time to the
    /// nanosecond, as a new file would) and is flushed, since `ok` says the file is
    /// on disk and another program may have written it a moment before; whether
    /// the metadata changed anything.
    pub(crate) fn keep_basis(
        &mut self,
        path: &str,
        components: &[&[u8]],
        basis: &Basis,
        entry: &Entry,
    ) -> Result<bool, Refusal> {
        let reader = self.open_basis(path, components, basis)?;
        let stat = rustix::fs::fstat(&reader.file)
            .map_err(|err| Refusal::io(path, "cannot inspect its old version", err))?;
        // A server keeps reading and writing what it holds, as when it wrote it.
        let policy = self.policy(0o600);
        // A new file gets the offered nanoseconds exactly, none as 0: so does this
        // one (the quick check's tolerance is for deciding `same`, not for this).
        let here = stat.st_mtime_nsec as u32;
        let nanos = entry.mtime.is_some() && here != 0 && entry.mtime_ns.unwrap_or(0) != here;
        let changed = nanos || meta::differs(&reader.file, &stat, entry, policy, true);
        let strays = meta::apply_in_place(&reader.file, entry, policy)
            .map_err(|err| Refusal::io(path, "cannot set its metadata", err))?;
        reader
            .file
            .sync_all()
            .map_err(|err| Refusal::io(path, "cannot flush it to disk", err))?;
        Ok(changed || strays)
    }

    /// The file at `components` if it may be a basis: regular, and with one link. A
    /// file with other names changes its ctime whenever one of them is replaced (its
    /// link count drops), so a tree of hard links would fail `busy` entry by entry;
    /// such a file goes whole, which leaves its other names as they were.
    fn basis_file(&mut self, components: &[&[u8]]) -> Option<(File, Stat)> {
        self.open_regular(components)
            .filter(|(_, stat)| stat.st_nlink == 1)
    }

    /// The regular file at `components`, opened without following a link, and what
    /// it is; `None` for anything else or any failure.
    pub(super) fn open_regular(&mut self, components: &[&[u8]]) -> Option<(File, Stat)> {
        let (parents, name) = split_last(components);
        let dir = self.walk(parents, false).ok()??;
        let fd = beneath::open_file(&*dir, name).ok()?;
        let stat = rustix::fs::fstat(&fd).ok()?;
        (beneath::kind(&stat) == FileType::RegularFile).then(|| (File::from(fd), stat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sink::TargetDir;
    use crate::proto::delta::tests::noise;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn a_basis_written_while_its_chunks_are_read_is_refused_busy() {
        let dir = tempfile::tempdir().unwrap();
        let old = noise(256 << 10, 0x9e37_79b9_7f4a_7c15);
        std::fs::write(dir.path().join("f"), &old).unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        let mut resolver = target.resolver();
        let (basis, signature) = resolver
            .chunk_basis("f", &[b"f".as_slice()], (256 << 10, MAX_CHUNKS))
            .unwrap()
            .unwrap();
        assert_eq!(signature.count, Some(basis.chunks()));
        let reader = resolver
            .open_basis("f", &[b"f".as_slice()], &basis)
            .unwrap();
        let (start, len) = basis.range(0, 1).unwrap();
        let mut chunk = vec![0; len as usize];
        reader.read_at(&mut chunk, start).unwrap();
        assert_eq!(chunk, old[..len as usize]);
        reader.check_unchanged().unwrap();
        // Someone writes into it, in place, while its chunks are being read.
        std::thread::sleep(std::time::Duration::from_millis(10));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.seek(SeekFrom::Start(100)).unwrap();
        file.write_all(b"changed").unwrap();
        let refusal = reader.check_unchanged().unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Busy);
        assert!(refusal.message.contains("changed while it was read"));
        // Opened again, it is no longer the file that was chunked.
        let again = resolver
            .open_basis("f", &[b"f".as_slice()], &basis)
            .err()
            .unwrap();
        assert_eq!(again.code, ErrorCode::Busy);
    }

    #[test]
    fn a_basis_kept_as_the_result_gets_the_offered_metadata_unless_it_changed() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, noise(256 << 10, 5)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let target = TargetDir::open(dir.path()).unwrap();
        let mut resolver = target.resolver();
        let at = [b"f".as_slice()];
        let (basis, _) = resolver
            .chunk_basis("f", &at, (256 << 10, MAX_CHUNKS))
            .unwrap()
            .unwrap();
        let entry = Entry {
            path: "f".into(),
            size: Some(256 << 10),
            mode: Some(0o600),
            mtime: Some(1_700_000_000),
            ..Entry::default()
        };
        assert!(resolver.keep_basis("f", &at, &basis, &entry).unwrap());
        let kept = std::fs::metadata(&path).unwrap();
        assert_eq!((kept.ino(), kept.mode() & 0o777), (inode, 0o600));
        assert_eq!(kept.mtime(), 1_700_000_000);
        // Its ctime moved, so it is no longer the file that was chunked: a second
        // keep is refused, and so is one after a write.
        let again = resolver.keep_basis("f", &at, &basis, &entry).unwrap_err();
        assert_eq!(again.code, ErrorCode::Busy);
        let (basis, _) = resolver
            .chunk_basis("f", &at, (256 << 10, MAX_CHUNKS))
            .unwrap()
            .unwrap();
        assert!(
            !resolver.keep_basis("f", &at, &basis, &entry).unwrap(),
            "nothing to change"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&path, noise(256 << 10, 6)).unwrap();
        let refusal = resolver.keep_basis("f", &at, &basis, &entry).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Busy);
    }

    #[test]
    fn a_basis_far_larger_than_the_new_version_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        // 3 GiB (sparse) against a new version of 64 KiB: 8 KiB chunks, about
        // 393 216 of them, past the limit. Reading it would take many seconds.
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        file.set_len(3 << 30).unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        let mut resolver = target.resolver();
        let started = std::time::Instant::now();
        let chunked = resolver.chunk_basis("f", &[b"f".as_slice()], (64 << 10, MAX_CHUNKS));
        assert!(chunked.unwrap().is_none());
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn a_streamed_basis_has_the_chunks_recorded_so_far() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), noise(256 << 10, 3)).unwrap();
        let target = TargetDir::open(dir.path()).unwrap();
        let mut resolver = target.resolver();
        let (basis, signature) = resolver
            .stream_basis(&[b"f".as_slice()], 256 << 10)
            .unwrap();
        assert!(signature.stream && signature.count.is_none() && signature.sums.is_none());
        assert!(basis.streamed());
        assert_eq!((basis.chunks(), basis.range(0, 1)), (0, None));
        basis.record(&[10_000, 25_000]);
        assert_eq!(basis.range(0, 2), Some((0, 25_000)));
        assert_eq!(basis.range(1, 2), None, "not sent yet");
        assert!(!basis.stop_flag().load(Ordering::SeqCst));
        basis.stop_cutting();
        assert!(basis.stop_flag().load(Ordering::SeqCst));
        // Too small a file, or none, is no basis.
        std::fs::write(dir.path().join("small"), [0; 100]).unwrap();
        assert!(
            resolver
                .stream_basis(&[b"small".as_slice()], 1 << 20)
                .is_none()
        );
        assert!(
            resolver
                .stream_basis(&[b"none".as_slice()], 1 << 20)
                .is_none()
        );
    }

    #[test]
    fn runs_outside_the_basis_have_no_range() {
        let stamp = Stamp {
            device: 0,
            inode: 0,
            size: 30,
            mtime: (0, 0),
            ctime: (0, 0),
        };
        let chunking = Chunking::for_size(30);
        let basis = Basis::new(stamp, vec![10, 20, 30], chunking, false);
        assert_eq!(basis.range(0, 3), Some((0, 30)));
        assert_eq!(basis.range(1, 1), Some((10, 10)));
        assert_eq!(basis.range(2, 2), None);
        assert_eq!(basis.range(3, 1), None);
        assert_eq!(basis.range(0, 0), None);
        assert_eq!(basis.range(u32::MAX, u32::MAX), None);
    }
}
