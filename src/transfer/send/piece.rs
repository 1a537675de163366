//! What the sender's reading thread hands its socket thread: the entries whose data
//! goes out ([`ToSend`], with the receiver's basis when there is one, [`Wanted`]),
//! and the [`Piece`]s of their data, in pool buffers of [`BUFFER`] bytes. Plain
//! data, shared by `stream.rs`, `delta.rs` and the socket thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::sums::Streams;
use crate::error::wire_code;
use crate::fs::input::Identity;
use crate::proto::delta::Chunking;
use crate::proto::hash::{Digest, Hasher};
use crate::proto::message::ErrorCode;
use crate::proto::seal::TAG_LEN;
use crate::proto::wire::DATA_HEADROOM;

/// File bytes per data frame. Measured on a 1 GiB loopback transfer, alternating
/// configurations, median of 4: 64 KiB 4.44 s, 256 KiB 3.84 s, 1 MiB 3.59 s (with
/// TCP_NODELAY 3.48 s). Larger frames mean fewer syscalls and thread wake-ups.
pub(crate) const CHUNK: usize = 1 << 20;
/// A data buffer: headroom, a chunk, room for the tag.
pub(crate) const BUFFER: usize = DATA_HEADROOM + CHUNK + TAG_LEN;

/// An entry whose data goes out: the plan's offset (0 unless it resumes, and then
/// only if the source can be read again) and the receiver's hash of its prefix.
pub(crate) struct ToSend {
    pub(crate) index: u64,
    pub(crate) offset: u64,
    pub(crate) prefix_hash: Option<String>,
    /// The receiver's file of this name is replaced (under `mirror`).
    pub(crate) replaces: bool,
    /// The receiver's basis, when the plan offered one (feature `delta`).
    pub(crate) delta: Option<Box<Wanted>>,
}

/// The receiver's basis, as the plan described it: its chunking, and every chunk's
/// sum in basis order (or where they will come from, when streamed); and the head of our file cut the same way before the plan
/// came, if there is one.
pub(crate) struct Wanted {
    pub(crate) chunking: Chunking,
    pub(crate) sums: Vec<u64>,
    pub(crate) head: Option<Head>,
    /// Feature `delta_stream`: the sums come during the data phase, from these
    /// streams, under this entry's index; `sums` is empty.
    pub(crate) stream: Option<(Arc<Streams>, u64)>,
}

/// The first chunks of a file, cut before the plan came: where each ends, its sum,
/// and the whole-file hash of the bytes they cover; `identity`, the file's before
/// they were read: a file that has changed since is cut again.
pub(crate) struct Head {
    pub(crate) identity: Identity,
    pub(crate) chunking: Chunking,
    pub(crate) ends: Vec<u64>,
    pub(crate) sums: Vec<u64>,
    pub(crate) hasher: Hasher,
}

/// What the reading thread hands the socket thread, in order.
pub(crate) enum Piece {
    /// Data for entry `index` follows, from byte `offset` (`resumed`: the
    /// receiver's prefix matched ours), or as instructions (`delta`).
    Start {
        index: u64,
        offset: u64,
        resumed: bool,
        delta: bool,
        replaces: bool,
    },
    /// One data frame: [`DATA_HEADROOM`] bytes of room, then `len` bytes of the file
    /// (or of instructions), which stand for `covered` bytes of the file.
    Chunk {
        buffer: Vec<u8>,
        len: usize,
        covered: u64,
    },
    /// The run of data going out is complete; the next of entry `index` starts at
    /// `offset` (a sparse entry's, section 16.4).
    Run { index: u64, offset: u64 },
    /// The entry's data is complete; `done` says `size` and `digest`. With a local
    /// failure, `size` is not the offered one, so the receiver refuses it.
    End {
        index: u64,
        size: u64,
        digest: Digest,
        local_failure: Option<String>,
    },
    /// The entry could not be opened: it is given up in place of its data, with
    /// the code it was refused with (`io` where nobody refused it).
    GaveUp {
        index: u64,
        why: String,
        code: ErrorCode,
    },
    /// Whole entries that each fit one chunk (never a delta), read into one
    /// buffer back to back, each in a slot of its own (see [`slot`]): handed over
    /// at once, so that a tree of small files wakes the socket thread once per
    /// buffer, not three times per file, and the reading thread can run a few
    /// hundred files ahead of it, not four.
    Packed { buffer: Vec<u8>, files: Vec<Packed> },
}

impl Piece {
    /// Entry `index` given up because opening it failed with `err`.
    pub(crate) fn gave_up(index: u64, err: &anyhow::Error) -> Piece {
        Piece::GaveUp {
            index,
            why: format!("{err:#}"),
            code: wire_code(err).unwrap_or(ErrorCode::Io),
        }
    }
}

/// One entry of a [`Piece::Packed`]: what [`Piece::Start`], a [`Piece::Chunk`] (if
/// it has bytes) and [`Piece::End`] would say of it, and where its bytes are.
pub(crate) struct Packed {
    pub(crate) index: u64,
    /// Where its data starts (after a prefix the receiver kept, when resumed).
    pub(crate) offset: u64,
    pub(crate) replaces: bool,
    /// Where its slot starts in the buffer, and the file bytes in it.
    pub(crate) at: usize,
    pub(crate) len: usize,
    pub(crate) size: u64,
    pub(crate) digest: Digest,
    pub(crate) local_failure: Option<String>,
}

/// Bytes a packed file of `len` bytes takes: headroom, its bytes, room for a tag.
pub(crate) fn slot(len: usize) -> usize {
    DATA_HEADROOM + len + TAG_LEN
}

/// When a file's reading stops before its end: the session is over (`stop`), or
/// the receiver refused the file already (`refused` holds its index plus one), as
/// it may mid-file (a full disk, a file size limit, a quota a stream outgrew).
/// Then the rest is neither read nor sent: a file of any size, or a stream that
/// never ends, is not read through for nothing.
#[derive(Clone, Copy)]
pub(super) struct Halt<'a> {
    pub(super) stop: &'a AtomicBool,
    pub(super) refused: Option<(&'a AtomicU64, u64)>,
}

impl<'a> Halt<'a> {
    /// Only when the session is over: for what is read whole or not at all.
    pub(super) fn only(stop: &'a AtomicBool) -> Halt<'a> {
        Halt {
            stop,
            refused: None,
        }
    }

    /// For entry `index`, refused once `refused` names it.
    pub(super) fn of(stop: &'a AtomicBool, refused: &'a AtomicU64, index: u64) -> Halt<'a> {
        Halt {
            stop,
            refused: Some((refused, index)),
        }
    }

    pub(super) fn refused(&self) -> bool {
        self.refused
            .is_some_and(|(refused, index)| refused.load(Ordering::SeqCst) == index + 1)
    }
}
