//! Streamed bases (feature `delta_stream`, docs/PROTOCOL.md section 18.6), on the
//! sender: the answer thread hands each `sums` frame to [`Streams::receive`], which
//! checks it (an entry planned with `stream`, in plan order, within the limits,
//! the MAC of the last one) and keeps its sums until the reading thread takes them
//! ([`Streams::take`]), waiting while the receiver has not sent far enough ahead.
//! Sums of an entry whose delta is over are checked and dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::error::{Kind, fail};
use crate::proto::delta::{MAX_CHUNKS, MAX_PLAN_CHUNKS, parse_frame_sums};
use crate::proto::negotiated::{SumsMac, Transfer};

/// How often a reading thread waiting for sums looks whether the session is over.
const LOOK_UP: Duration = Duration::from_millis(50);

/// Every streamed basis of one plan.
pub(crate) struct Streams {
    state: Mutex<State>,
    arrived: Condvar,
    /// How long the reading thread waits for sums before it gives the receiver up
    /// (the session's idle timeout; none: for ever).
    idle: Option<Duration>,
    /// It gave the receiver up: the sums it waited for never came.
    stalled: AtomicBool,
}

struct State {
    /// Streamed entries whose sums have not ended, in plan order: sums may come
    /// only for the first.
    open: VecDeque<u64>,
    entries: HashMap<u64, Stream>,
    /// Chunks the plan's signatures listed and the streamed ones so far.
    listed: u64,
    /// When the last sums frame came (or the streams began).
    heard: Instant,
}

/// One streamed basis.
struct Stream {
    /// Sums arrived and not yet taken.
    fresh: Vec<u64>,
    /// Sums arrived in all.
    received: u64,
    ended: bool,
    /// Its delta is over: what still comes is checked and dropped.
    unwanted: bool,
    mac: SumsMac,
}

/// One `sums` frame, as it came.
pub(crate) struct SumsFrame<'a> {
    pub(crate) index: u64,
    pub(crate) sums: &'a str,
    pub(crate) end: bool,
    pub(crate) mac: Option<&'a str>,
}

impl Streams {
    /// The streamed bases of a plan (`streamed`: their entries, in plan order),
    /// whose listed signatures held `listed` chunks; a receiver silent for `idle`
    /// while sums are awaited is given up.
    pub(crate) fn new(
        transfer: &Transfer,
        streamed: &[u64],
        listed: u64,
        idle: Option<Duration>,
    ) -> Streams {
        let entries = streamed.iter().map(|&index| {
            let stream = Stream {
                fresh: Vec::new(),
                received: 0,
                ended: false,
                unwanted: false,
                mac: transfer.sums_mac(index),
            };
            (index, stream)
        });
        let state = State {
            open: streamed.iter().copied().collect(),
            entries: entries.collect(),
            listed,
            heard: Instant::now(),
        };
        Streams {
            state: Mutex::new(state),
            arrived: Condvar::new(),
            idle,
            stalled: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("no panics while holding the lock")
    }

    /// Takes one `sums` frame: anything but the next sums of the first streamed
    /// basis not yet ended, within the limits, breaks the protocol; a last frame
    /// whose MAC fails is `mac`.
    pub(crate) fn receive(&self, frame: SumsFrame<'_>) -> Result<()> {
        let SumsFrame {
            index,
            sums,
            end,
            mac,
        } = frame;
        let refuse = |why: &str| fail(Kind::Protocol, format!("sums for entry {index}: {why}"));
        let mut state = self.lock();
        if state.open.front() != Some(&index) {
            return Err(refuse(
                "not the streamed basis whose sums are due (not planned with stream, ended, \
                 or out of plan order)",
            ));
        }
        let parsed = parse_frame_sums(sums)
            .filter(|parsed| end || !parsed.is_empty())
            .ok_or_else(|| refuse("not 1 to 4096 sums of 16 lowercase hex digits"))?;
        if end != mac.is_some() {
            return Err(refuse("a mac without end, or end without a mac"));
        }
        let count = parsed.len() as u64;
        state.heard = Instant::now();
        state.listed += count;
        let listed = state.listed;
        let stream = state.entries.get_mut(&index).expect("open ones are kept");
        stream.received += count;
        if stream.received > MAX_CHUNKS || listed > MAX_PLAN_CHUNKS {
            return Err(refuse(&format!(
                "over {MAX_CHUNKS} chunks for a basis or {MAX_PLAN_CHUNKS} for a plan"
            )));
        }
        stream.mac.sums(&parsed);
        if !stream.unwanted {
            stream.fresh.extend_from_slice(&parsed);
        }
        if let Some(mac) = mac {
            if !stream.mac.clone().verify(mac) {
                return Err(fail(
                    Kind::Verification,
                    format!("the MAC of entry {index}'s sums does not verify"),
                ));
            }
            stream.ended = true;
            state.open.pop_front();
        }
        drop(state);
        self.arrived.notify_all();
        Ok(())
    }

    /// Waits until entry `index` has had at least `want` sums in all, or its last,
    /// and takes those not taken yet, with whether they were the last; `None` once
    /// `stop` is set (the session is over), or when no sums came for the idle
    /// timeout ([`Streams::stalled`] then says so).
    pub(crate) fn take(
        &self,
        index: u64,
        want: u64,
        stop: &AtomicBool,
    ) -> Option<(Vec<u64>, bool)> {
        let mut state = self.lock();
        let waiting = Instant::now();
        loop {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            let silent = state.heard.max(waiting).elapsed();
            let stream = state.entries.get_mut(&index)?;
            if stream.received >= want || stream.ended {
                return Some((std::mem::take(&mut stream.fresh), stream.ended));
            }
            // Waiting for a frame it needs with nothing else to send, the sender
            // counts the receiver idle (section 5).
            if self.idle.is_some_and(|idle| silent >= idle) {
                self.stalled.store(true, Ordering::SeqCst);
                return None;
            }
            state = self
                .arrived
                .wait_timeout(state, LOOK_UP)
                .expect("no panics while holding the lock")
                .0;
        }
    }

    /// Whether the reading thread gave the receiver up, its sums awaited in vain.
    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    /// Entry `index`'s delta is over: its sums still to come are dropped.
    pub(crate) fn done_with(&self, index: u64) {
        if let Some(stream) = self.lock().entries.get_mut(&index) {
            stream.unwanted = true;
            stream.fresh = Vec::new();
        }
    }

    /// The first streamed basis whose sums have not ended, if one has not.
    pub(crate) fn unended(&self) -> Option<u64> {
        self.lock().open.front().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::delta::sums_hex;
    use crate::proto::hash::HashKind;

    fn frame<'a>(index: u64, sums: &'a str, mac: Option<&'a str>) -> SumsFrame<'a> {
        SumsFrame {
            index,
            sums,
            end: mac.is_some(),
            mac,
        }
    }

    fn transfer() -> Transfer {
        Transfer::for_tests([7; 32], 0, HashKind::Blake3)
    }

    fn mac_of(index: u64, sums: &[u64]) -> String {
        let mut mac = transfer().sums_mac(index);
        mac.sums(sums);
        mac.finish_hex()
    }

    #[test]
    fn sums_come_in_plan_order_and_end_with_their_mac() {
        let streams = Streams::new(&transfer(), &[2, 5], 0, None);
        let stop = AtomicBool::new(false);
        streams.receive(frame(2, &sums_hex(&[1, 2]), None)).unwrap();
        // Entry 5's sums may not come before entry 2's end.
        let early = streams.receive(frame(5, &sums_hex(&[3]), None));
        assert!(
            early
                .unwrap_err()
                .to_string()
                .contains("not the streamed basis")
        );
        let mac = mac_of(2, &[1, 2, 9]);
        streams
            .receive(frame(2, &sums_hex(&[9]), Some(&mac)))
            .unwrap();
        assert_eq!(streams.take(2, 100, &stop), Some((vec![1, 2, 9], true)));
        // After its end: refused.
        let late = streams.receive(frame(2, &sums_hex(&[4]), None));
        assert!(late.is_err());
        assert_eq!(streams.unended(), Some(5));
        let mac = mac_of(5, &[]);
        streams.receive(frame(5, "", Some(&mac))).unwrap();
        assert_eq!(streams.unended(), None);
    }

    #[test]
    fn malformed_frames_and_a_bad_mac_are_refused() {
        let streams = Streams::new(&transfer(), &[0], 0, None);
        for bad in ["", "0123", &"0".repeat(16 * 4097), &"A".repeat(16)] {
            let err = streams.receive(frame(0, bad, None)).unwrap_err();
            assert_eq!(
                crate::error::kind_of(&err),
                Some(Kind::Protocol),
                "{bad:.20}"
            );
        }
        let never_planned = streams.receive(frame(1, &sums_hex(&[1]), None));
        assert!(never_planned.is_err());
        let one = sums_hex(&[1]);
        let mut no_end = frame(0, &one, None);
        no_end.mac = Some("00");
        assert!(streams.receive(no_end).is_err());
        let wrong = mac_of(0, &[2]);
        let err = streams
            .receive(frame(0, &sums_hex(&[1]), Some(&wrong)))
            .unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Verification));
    }

    #[test]
    fn too_many_sums_are_refused_as_they_arrive() {
        let streams = Streams::new(&transfer(), &[0], MAX_PLAN_CHUNKS - 3, None);
        let err = streams
            .receive(frame(0, &sums_hex(&[1, 2, 3, 4]), None))
            .unwrap_err();
        assert!(err.to_string().contains("over"), "{err}");
        let streams = Streams::new(&transfer(), &[0], 0, None);
        let full = sums_hex(&vec![5; 4096]);
        for _ in 0..MAX_CHUNKS / 4096 {
            streams.receive(frame(0, &full, None)).unwrap();
        }
        assert!(streams.receive(frame(0, &sums_hex(&[1]), None)).is_err());
    }

    #[test]
    fn a_waiting_reader_stops_with_the_session() {
        let streams = Streams::new(&transfer(), &[0], 0, None);
        let stop = AtomicBool::new(true);
        assert_eq!(streams.take(0, 1, &stop), None);
        let stop = AtomicBool::new(false);
        streams.receive(frame(0, &sums_hex(&[1, 2]), None)).unwrap();
        assert_eq!(streams.take(0, 2, &stop), Some((vec![1, 2], false)));
        streams.done_with(0);
        streams.receive(frame(0, &sums_hex(&[3]), None)).unwrap();
        assert_eq!(streams.take(0, 3, &stop), Some((vec![], false)));
    }
}
