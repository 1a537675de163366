//! The cut of feature `delta` (`docs/PROTOCOL.md` 18.2: FastCDC 2020 as the
//! `fastcdc` crate's `v2020::cut` computes it), giving the same answer in about two
//! thirds of the time. The crate keeps one running gear hash, a chain of shifts and adds in
//! which every step waits for the one before, so the core sits mostly idle; and
//! finding cuts was the largest cost of a delta on both sides (46 % of a sender's
//! CPU, 32 % of a receiver's, on 1 GiB). But a gear hash is `Σ GEAR[byte] << age`
//! in a u64, so a byte older than 63 positions has shifted out: the hash at a
//! position depends only on the 64 bytes up to it (and on where hashing began, if
//! that is nearer). So [`LANES`] stretches of the scan are hashed side by side, each
//! started 64 bytes early, four independent chains the core runs at once, and the
//! first position among them whose hash clears the mask is the cut. The tests hold
//! the result to the crate's own `cut` on every chunking size.

use std::ops::Range;
use std::sync::OnceLock;

/// Stretches hashed side by side: four hashes and their cursors fit the registers.
const LANES: usize = 4;
/// Bytes of one stretch. Shorter stretches pay the 64 bytes of warming up more
/// often, longer ones scan further past a cut found early in a later stretch;
/// of 256 B to 4 KiB, 1 KiB measured as fast as any.
const STRETCH: usize = 1024;
/// Bytes that decide a gear hash: older ones have shifted out of the u64.
const HISTORY: usize = 64;

/// `GEAR` of 18.2: the `fastcdc` crate's table (seed 0).
fn gear() -> &'static [u64; 256] {
    static GEAR: OnceLock<Box<[u64; 256]>> = OnceLock::new();
    GEAR.get_or_init(|| fastcdc::v2020::get_gear_with_seed(0).0)
}

/// The parameters of 18.2's `cut` for one average chunk size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CutParams {
    pub(crate) min: usize,
    pub(crate) avg: usize,
    pub(crate) max: usize,
    pub(crate) mask_s: u64,
    pub(crate) mask_l: u64,
}

/// 18.2's `cut(src)`: the length of the chunk that starts at `src[0]`.
pub(crate) fn cut(src: &[u8], params: CutParams) -> usize {
    let n = src.len().min(params.max);
    if n <= params.min {
        return n;
    }
    // The pseudo-code steps through pairs of bytes, so each loop stops at an even
    // bound; at the first of a pair it holds twice the hash and tests the mask
    // shifted left, which is the same test, as no mask has bit 63.
    let small_end = params.avg.min(n) / 2 * 2;
    let end = n / 2 * 2;
    let scan = Scan {
        src,
        origin: params.min,
        gear: gear(),
    };
    scan.first_cut(params.min..small_end, params.mask_s)
        .or_else(|| scan.first_cut(small_end..end, params.mask_l))
        .unwrap_or(n)
}

/// One chunk's scan: hashing begins (from 0) at `origin`, the chunk's `MIN`.
struct Scan<'a> {
    src: &'a [u8],
    origin: usize,
    gear: &'a [u64; 256],
}

impl Scan<'_> {
    /// The first position in `range` whose hash has no bit of `mask` set.
    fn first_cut(&self, range: Range<usize>, mask: u64) -> Option<usize> {
        let mut at = range.start;
        let mut hash = self.hash_before(at);
        while range.end - at >= LANES * STRETCH {
            match self.side_by_side(at, hash, mask) {
                Ok(found) => return Some(found),
                Err(hash_after) => hash = hash_after,
            }
            at += LANES * STRETCH;
        }
        (at..range.end).find(|&position| {
            hash = self.step(hash, position);
            hash & mask == 0
        })
    }

    /// The hash of the bytes before `position` that still count at `position`.
    #[inline]
    fn hash_before(&self, position: usize) -> u64 {
        let from = position.saturating_sub(HISTORY).max(self.origin);
        let mut hash = 0;
        for at in from..position {
            hash = self.step(hash, at);
        }
        hash
    }

    #[inline]
    fn step(&self, hash: u64, position: usize) -> u64 {
        (hash << 1).wrapping_add(self.gear[usize::from(self.src[position])])
    }

    /// [`Scan::first_cut`] over the [`LANES`] stretches from `at` at once, given the
    /// hash before `at`: the cut, or else the hash after the last stretch.
    fn side_by_side(&self, at: usize, hash: u64, mask: u64) -> Result<usize, u64> {
        let stretch = |lane: usize| &self.src[at + lane * STRETCH..at + (lane + 1) * STRETCH];
        let (s0, s1, s2, s3) = (stretch(0), stretch(1), stretch(2), stretch(3));
        let mut h0 = hash;
        let mut h1 = self.hash_before(at + STRETCH);
        let mut h2 = self.hash_before(at + 2 * STRETCH);
        let mut h3 = self.hash_before(at + 3 * STRETCH);
        let gear = self.gear;
        let mut first = [None; LANES];
        for i in 0..STRETCH {
            h0 = (h0 << 1).wrapping_add(gear[usize::from(s0[i])]);
            h1 = (h1 << 1).wrapping_add(gear[usize::from(s1[i])]);
            h2 = (h2 << 1).wrapping_add(gear[usize::from(s2[i])]);
            h3 = (h3 << 1).wrapping_add(gear[usize::from(s3[i])]);
            if h0 & mask == 0 {
                return Ok(at + i);
            }
            // A later stretch's cut counts only if no earlier stretch has one: note
            // its first and go on (rare: a branch the core predicts as not taken).
            if h1 & mask == 0 {
                note(&mut first[1], i);
            }
            if h2 & mask == 0 {
                note(&mut first[2], i);
            }
            if h3 & mask == 0 {
                note(&mut first[3], i);
            }
        }
        (1..LANES)
            .find_map(|lane| first[lane].map(|i| at + lane * STRETCH + i))
            .ok_or(h3)
    }
}

#[cold]
#[inline(never)]
fn note(first: &mut Option<usize>, i: usize) {
    first.get_or_insert(i);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::delta::tests::noise;
    use fastcdc::v2020::MASKS;

    fn params(bits: u32) -> CutParams {
        let avg = 1 << bits;
        CutParams {
            min: avg / 4,
            avg,
            max: avg * 4,
            mask_s: MASKS[(bits + 1) as usize],
            mask_l: MASKS[(bits - 1) as usize],
        }
    }

    fn crate_cut(src: &[u8], p: CutParams) -> usize {
        let src = &src[..src.len().min(p.max)];
        let (s, l) = (p.mask_s, p.mask_l);
        fastcdc::v2020::cut(src, p.min, p.avg, p.max, s, l, s << 1, l << 1).1
    }

    /// Cuts `data` from its start as a file is cut, checking every cut against the
    /// crate's, and returns how many chunks there were.
    fn agree_on(data: &[u8], p: CutParams) -> usize {
        let (mut at, mut chunks) = (0, 0);
        while at < data.len() {
            let expected = crate_cut(&data[at..], p);
            assert_eq!(cut(&data[at..], p), expected, "at {at} of {}", data.len());
            at += expected;
            chunks += 1;
        }
        chunks
    }

    #[test]
    fn cuts_as_the_fastcdc_crate_does_for_every_size() {
        for bits in 13..=22 {
            let p = params(bits);
            let data = noise(24 * p.avg + 12_345, u64::from(bits));
            assert!(agree_on(&data, p) > 10, "{bits}");
        }
    }

    #[test]
    fn cuts_as_the_crate_does_on_data_that_repeats() {
        // Runs of one byte and short patterns: hashes that settle or cycle, cuts
        // at the largest size, and the last-position-of-a-stretch cases.
        let zeros = vec![0; 1 << 20];
        let pattern: Vec<u8> = (0..1 << 20)
            .map(|i| (((i / 3000) % 7) ^ (i % 5)) as u8)
            .collect();
        for bits in [13, 16, 18] {
            agree_on(&zeros, params(bits));
            agree_on(&pattern, params(bits));
        }
    }

    #[test]
    fn cuts_as_the_crate_does_at_every_length_near_the_bounds() {
        let p = params(13);
        let data = noise(p.max + 10, 5);
        let near = |x: usize| x.saturating_sub(3)..=x + 3;
        for len in [0, 1, 2, p.min, p.avg, p.max, LANES * STRETCH + p.min]
            .into_iter()
            .flat_map(near)
        {
            let src = &data[..len.min(data.len())];
            assert_eq!(cut(src, p), crate_cut(src, p), "length {len}");
        }
    }

    #[test]
    fn finds_a_cut_in_each_stretch_and_the_earliest_wins() {
        // Shift the data by every offset of a stretch so that cuts fall in each
        // lane and at each position of it, against the crate every time.
        let p = params(13);
        let data = noise(3 * p.max, 9);
        for shift in (0..LANES * STRETCH).step_by(61) {
            agree_on(&data[shift..], p);
        }
    }
}
