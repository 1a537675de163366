//! Small files on the receiver's socket thread: a file of at most [`SMALL_FILE`]
//! bytes (never resumed, never a delta, never sparse) is read whole and checked
//! before the disk thread hears of it, its bytes copied into an arena it shares with
//! the files around it, and the disk thread gets the arena and the verdicts in one
//! [`Job::Small`]. A tree of small files so costs a wake-up of the disk thread per
//! batch, not three per file; and no data buffer waits on the disk for a file of
//! 2 KiB (with four buffers, that kept the socket thread at most four files ahead of
//! the disk thread, and stopped it whenever the disk thread flushed).
//!
//! A batch is handed on when it is full, before any other job (the disk thread
//! answers in entry order), and whenever the next frame is not here yet, so that a
//! slow sender's files are not held back. Memory stays bounded: at most [`ARENAS`]
//! arenas of about [`ARENA_BYTES`] each are in flight, and the socket thread waits
//! for one to come back before it reads more.

use std::io::Read;
use std::ops::Range;
use std::sync::mpsc;

use anyhow::Result;

use super::jobs::{Job, SmallFile, disk_gone};
use super::plan::Planned;
use super::shared::{Destination, SMALL_FILE, Shared};
use crate::error::{Kind, fail};
use crate::pool::{Giver, Pool};
use crate::proto::hash::Hasher;
use crate::proto::wire::{Data, FrameReader};
use crate::transfer::Tally;

/// Arenas in flight between the socket thread and the disk thread. 16 of 256 KiB
/// hold about 2 000 files of 2 KiB: what arrives on loopback while the disk thread
/// waits for a group to be committed.
const ARENAS: usize = 16;
/// Bytes of files in one arena, about: a batch is handed on once it holds this much.
const ARENA_BYTES: usize = 256 << 10;
/// Files in one batch, at most.
const BATCH_FILES: usize = 128;

/// The batch being filled, and the arenas it is filled into.
pub(crate) struct Batch {
    arenas: Pool,
    arena: Option<Vec<u8>>,
    files: Vec<SmallFile>,
    /// Where a small file's data frames land before their bytes go to the arena.
    pub(crate) scratch: Vec<u8>,
}

impl Batch {
    /// An empty batch, and the giver the disk thread hands arenas back with.
    pub(crate) fn new() -> (Batch, Giver) {
        let (arenas, giver) = Pool::with(ARENAS, || Vec::with_capacity(ARENA_BYTES));
        let batch = Batch {
            arenas,
            arena: None,
            files: Vec::new(),
            scratch: Vec::new(),
        };
        (batch, giver)
    }

    /// Whether entry `item`, whose data starts at `offset` (or comes as a delta),
    /// is read whole here: a file of known size of at most [`SMALL_FILE`] bytes,
    /// not sparse, from its start, into a directory.
    pub(crate) fn takes(item: &Planned, (offset, delta): (u64, bool), shared: &Shared) -> bool {
        let Some(size) = item.entry.size else {
            return false;
        };
        size <= SMALL_FILE
            && offset == 0
            && !delta
            && !item.entry.is_sparse()
            && matches!(shared.destination, Destination::Dir(_))
    }

    /// The arena the next file's bytes go into (waiting for one to come back when
    /// all are in flight); an error once the disk thread is gone.
    pub(crate) fn arena(&mut self) -> Result<&mut Vec<u8>> {
        if self.arena.is_none() {
            let mut arena = self.arenas.take().ok_or_else(disk_gone)?;
            arena.clear();
            self.arena = Some(arena);
        }
        Ok(self.arena.as_mut().expect("just filled"))
    }

    /// Reads entry `index`'s data frames, up to the empty one, into the arena,
    /// hashing them: where its bytes are in the arena. More than its offered `size`
    /// breaks the protocol (and leaves nothing of it in the arena).
    pub(crate) fn read_file<R: Read>(
        &mut self,
        reader: &mut FrameReader<R>,
        (index, size): (usize, u64),
        hasher: &mut Hasher,
        tally: &Tally,
    ) -> Result<Range<usize>> {
        let start = self.arena()?.len();
        let read = self.read_frames(reader, start, (index, size), hasher, tally);
        if read.is_err()
            && let Some(arena) = &mut self.arena
        {
            arena.truncate(start);
        }
        read.map(|end| start..end)
    }

    /// [`Batch::read_file`]'s frames, appended to the arena from `start`; where
    /// they end.
    fn read_frames<R: Read>(
        &mut self,
        reader: &mut FrameReader<R>,
        start: usize,
        (index, size): (usize, u64),
        hasher: &mut Hasher,
        tally: &Tally,
    ) -> Result<usize> {
        loop {
            let range = match reader.read_data(&mut self.scratch)? {
                Data::End => return Ok(self.arena()?.len()),
                Data::Bytes(range) => range,
            };
            let bytes = &self.scratch[range];
            let arena = self.arena.as_mut().expect("taken before the first frame");
            if (arena.len() - start + bytes.len()) as u64 > size {
                return Err(fail(
                    Kind::Protocol,
                    format!("more data for entry {index} than its offered size"),
                ));
            }
            hasher.update(bytes);
            arena.extend_from_slice(bytes);
            tally.reporter().advance(bytes.len() as u64);
        }
    }

    /// Adds a file whose bytes are in the arena (see [`Batch::read_file`]); a full
    /// batch goes to the disk thread.
    pub(crate) fn push(&mut self, file: SmallFile, jobs: &mpsc::Sender<Job>) -> Result<()> {
        self.files.push(file);
        let bytes = self.arena.as_ref().map_or(0, Vec::len);
        // Each file of a batch is made before its group can be committed: a batch
        // holds no more descriptors than a group may (`fs::descriptors`).
        let most = crate::fs::descriptors::share(BATCH_FILES);
        if self.files.len() >= most || bytes >= ARENA_BYTES {
            self.flush(jobs)?;
        }
        Ok(())
    }

    /// Hands the batch to the disk thread, if it holds any file.
    pub(crate) fn flush(&mut self, jobs: &mpsc::Sender<Job>) -> Result<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        let job = Job::Small {
            arena: self.arena.take().unwrap_or_default(),
            files: std::mem::take(&mut self.files),
        };
        jobs.send(job).map_err(|_| disk_gone())
    }
}
