//! What the receiver's socket thread hands its disk thread ([`Job`]s, in order),
//! and what a file that verified is ([`Arrived`]). Plain data, shared by the
//! threads of `data.rs`, `small.rs`, `disk.rs` and `maker.rs`.

use std::ops::Range;

use crate::error::Kind;
use crate::fs::Refusal;
use crate::proto::hash::Digest;
use crate::ui::report::FileOutcome;

/// What the socket thread asks of the disk thread, in order.
pub(crate) enum Job {
    /// Entry `index`'s data starts at byte `offset`: open where it goes (for a
    /// `delta`, a fresh temporary, never kept for resuming).
    Open {
        index: usize,
        offset: u64,
        delta: bool,
    },
    /// The next bytes of the open entry, at `range` of `buffer`; the buffer goes
    /// back to the pool after.
    Write {
        buffer: Vec<u8>,
        range: Range<usize>,
    },
    /// The open entry is complete and was checked: keep it, or say why not.
    Close {
        index: usize,
        verdict: Result<Arrived, Refusal>,
    },
    /// The data of the open entry cannot be trusted (a sealed frame did not open):
    /// remove it, partial data included. The session ends after this.
    Discard,
    /// The sender gave up entry `index` before its data: report it (it gets no
    /// answer); nothing changed on disk. (Boxed: the rarest job, and the largest.)
    GaveUp {
        index: usize,
        outcome: Box<FileOutcome>,
    },
    /// The open sparse entry's run is complete; the next starts at `offset`.
    Run { offset: u64 },
    /// The open sparse entry's runs are complete: set its length to `size` and
    /// answer its hash (`None` when it could not be written).
    Seal {
        size: u64,
        reply: std::sync::mpsc::Sender<Option<Digest>>,
    },
    /// The cutter's next sums of entry `index`'s streamed basis (feature
    /// `delta_stream`), and where their chunks end: recorded, then sent in a `sums`
    /// frame; with `mac`, the last of that basis.
    Sums {
        index: usize,
        ends: Vec<u64>,
        sums: Vec<u64>,
        mac: Option<String>,
    },
    /// Small files the socket thread read whole and checked (`small.rs`), their
    /// bytes back to back in `arena`, which goes back to its pool after: each is
    /// written and closed as if it had been opened, written and closed on its own.
    Small {
        arena: Vec<u8>,
        files: Vec<SmallFile>,
    },
}

/// One file of a [`Job::Small`]: its bytes in the arena, and its verdict.
pub(crate) struct SmallFile {
    pub(crate) index: usize,
    pub(crate) bytes: Range<usize>,
    pub(crate) verdict: Result<Arrived, Refusal>,
}

/// The disk thread stopped taking work; its own error says why.
pub(crate) fn disk_gone() -> anyhow::Error {
    crate::error::fail(Kind::Io, "the disk thread stopped")
}

/// A complete file that verified.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrived {
    pub(crate) size: u64,
    /// Bytes that arrived in this session (not a resumed prefix, not holes).
    pub(crate) moved: u64,
    pub(crate) digest: Digest,
    pub(crate) resumed_at: Option<u64>,
    /// Built from a delta's instructions against the file it replaced.
    pub(crate) delta: bool,
    /// A delta whose result is the file it was to replace, byte for byte (every
    /// chunk copied in order): nothing was written, and the old file stays, given
    /// the offered metadata.
    pub(crate) kept: bool,
}
