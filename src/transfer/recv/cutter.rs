//! The receiver's cutter (feature `delta_stream`, docs/PROTOCOL.md section 18.6):
//! one thread per session that cuts the streamed bases in plan order during the
//! data phase and hands their sums, a batch at a time, to the disk thread, which
//! records where the chunks end and sends them in `sums` frames (it is the one
//! thread that writes to the sender, so sealed frames stay in order), a frame per
//! [`FRAME_COVERS`] of basis (at most [`FRAME_SUMS`] sums, at least one). Each basis ends with a `sums` frame carrying `end`
//! and the MAC over all its sums.
//!
//! The plan went out without waiting for any of this: the sender starts at once,
//! and the cutting overlaps its reading and the building here. A basis whose entry
//! needs no more sums (its data ended, or the sender said it copies nothing more)
//! stops being cut after the chunk at hand; one that changed since the plan, or
//! cannot be read, ends early: every sum sent is still a chunk of the basis.

use std::sync::mpsc;

use super::jobs::Job;
use super::plan::Planned;
use super::shared::Shared;
use crate::fs::path::check_path_bytes;
use crate::fs::sink::{Basis, TargetDir};
use crate::proto::delta::{MAX_CHUNKS, MAX_FRAME_SUMS, MAX_PLAN_CHUNKS, stream_sums};
use crate::proto::negotiated::SumsMac;

/// Cuts every streamed basis of `planned` in order, its sums going to the disk
/// thread through `jobs`. Returns once each was ended (or the disk thread is gone).
pub(super) fn run(
    planned: &[Planned],
    target: &TargetDir,
    jobs: &mpsc::Sender<Job>,
    shared: &Shared<'_>,
) {
    let mut chunks_left = MAX_PLAN_CHUNKS;
    for (index, item) in planned.iter().enumerate() {
        let Some(basis) = item.basis.as_deref().filter(|basis| basis.streamed()) else {
            continue;
        };
        let mut out = Outgoing {
            index,
            ends: Vec::new(),
            sums: Vec::new(),
            mac: shared.transfer.sums_mac(index as u64),
            sent: 0,
            per_frame: frame_sums(basis.chunking().avg() as u64),
        };
        if !basis.stop_flag().load(std::sync::atomic::Ordering::SeqCst) {
            let limit = MAX_CHUNKS.min(chunks_left);
            let mut hand_over = |ends, sums| out.push(ends, sums, jobs);
            cut(item, basis, target, shared, (limit, &mut hand_over));
        }
        chunks_left -= out.sent;
        if out.finish(jobs).is_err() {
            return; // the disk thread is gone: the session failed
        }
    }
}

/// Sums are sent once they stand for this much of the basis (or it ends): the
/// sender decides a chunk once it holds 16 MiB of sums ahead of it, so a frame must
/// come well before that, whatever the size of the chunks.
const FRAME_COVERS: u64 = 4 << 20;
/// ... but never more than this many wait: with 64 KiB chunks a frame per 4 MiB,
/// whose framing (about 60 bytes, more when sealed) costs under 12% of its sums.
const FRAME_SUMS: usize = 64;

/// Sums to a frame for chunks of `avg` bytes: 64 of 64 KiB, 1 of 4 MiB.
fn frame_sums(avg: u64) -> usize {
    (FRAME_COVERS / avg.max(1)).clamp(1, FRAME_SUMS as u64) as usize
}

/// The sums of one basis on their way to the disk thread.
struct Outgoing {
    index: usize,
    ends: Vec<u64>,
    sums: Vec<u64>,
    mac: SumsMac,
    /// Sums handed over so far, the waiting ones included.
    sent: u64,
    /// A frame goes once this many are waiting ([`frame_sums`]).
    per_frame: usize,
}

impl Outgoing {
    /// The next chunks; a frame goes once enough are waiting (`per_frame`).
    fn push(&mut self, ends: Vec<u64>, sums: Vec<u64>, jobs: &mpsc::Sender<Job>) {
        self.mac.sums(&sums);
        self.sent += sums.len() as u64;
        self.ends.extend(ends);
        self.sums.extend(sums);
        if self.sums.len() >= self.per_frame {
            let job = Job::Sums {
                index: self.index,
                ends: std::mem::take(&mut self.ends),
                sums: std::mem::take(&mut self.sums),
                mac: None,
            };
            let _ = jobs.send(job);
        }
    }

    /// The last frame: what is waiting, with the MAC over every sum.
    fn finish(self, jobs: &mpsc::Sender<Job>) -> Result<(), mpsc::SendError<Job>> {
        jobs.send(Job::Sums {
            index: self.index,
            ends: self.ends,
            sums: self.sums,
            mac: Some(self.mac.finish_hex()),
        })
    }
}

/// Where a basis's chunk ends and sums go, a frame's worth at a time.
type HandOver<'a> = &'a mut (dyn FnMut(Vec<u64>, Vec<u64>) + Send);

/// Cuts one basis, opened again by name (and only if it is still the file the
/// plan chose), into at most `limit` chunks, handing them over in frames' worth.
fn cut(
    item: &Planned,
    basis: &Basis,
    target: &TargetDir,
    shared: &Shared<'_>,
    (limit, hand_over): (u64, HandOver<'_>),
) {
    let bytes = item.entry.path_bytes();
    let Ok(components) = check_path_bytes(&bytes, shared.settings.names) else {
        return;
    };
    let path = item.entry.shown_path();
    let Ok(reader) = target.resolver().open_basis(&path, &components, basis) else {
        return; // changed since the plan: no sums, so no copies
    };
    let file = reader.file();
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::Sequential);
    // With fewer than FRAME_SUMS waiting, a frame never holds more than it may.
    let most = MAX_FRAME_SUMS - FRAME_SUMS;
    let each = |ends: Vec<u64>, sums: Vec<u64>| {
        for (ends, sums) in ends.chunks(most).zip(sums.chunks(most)) {
            hand_over(ends.to_vec(), sums.to_vec());
        }
    };
    // A read error ends the basis where it stopped; the chunks sent stay valid.
    let _ = stream_sums(file, basis.chunking(), (limit, basis.stop_flag()), each);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_stands_for_about_4_mib_of_basis_whatever_the_chunks() {
        assert_eq!(frame_sums(8 << 10), 64);
        assert_eq!(frame_sums(64 << 10), 64);
        assert_eq!(frame_sums(1 << 20), 4);
        assert_eq!(frame_sums(4 << 20), 1);
    }
}
