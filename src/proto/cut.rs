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

/// The parameters of 18.2's `cut` for one average chunk size. As there, `min` is
/// even (hashing begins at it, where the pseudo-code begins at `MIN / 2 * 2`) and
/// at most `avg`; the masks have no bit 63.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CutParams {
    pub(crate) min: usize,
    pub(crate) avg: usize,
    pub(crate) max: usize,
    pub(crate) mask_s: u64,
    pub(crate) mask_l: u64,
}

impl CutParams {
    /// 18.2's parameters for `avg` = 2^`bits`: `MIN` a quarter of it, `MAX` four
    /// times, `MASK_S` = `MASKS[bits + 1]`, `MASK_L` = `MASKS[bits − 1]`.
    pub(crate) fn for_avg_bits(bits: u32) -> CutParams {
        use fastcdc::v2020::MASKS;
        let avg = 1 << bits;
        CutParams {
            min: avg / 4,
            avg,
            max: avg * 4,
            mask_s: MASKS[(bits + 1) as usize],
            mask_l: MASKS[(bits - 1) as usize],
        }
    }
}

/// The cut as the `fastcdc` crate computes it, which 18.2 names: what [`cut`] must
/// give, for the tests and the fuzz target to hold it to.
pub(crate) fn cut_by_the_crate(src: &[u8], p: CutParams) -> usize {
    let src = &src[..src.len().min(p.max)];
    let (s, l) = (p.mask_s, p.mask_l);
    fastcdc::v2020::cut(src, p.min, p.avg, p.max, s, l, s << 1, l << 1).1
}

/// 18.2's `cut(src)`: the length of the chunk that starts at `src[0]`.
pub(crate) fn cut(src: &[u8], params: CutParams) -> usize {
    debug_assert!(
        params.min % 2 == 0 && params.min <= params.avg,
        "{params:?}"
    );
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

/// Notes position `i` as a stretch's first cut, unless it has one already. Out of
/// line and cold, so that the scan's loop stays small.
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
        CutParams::for_avg_bits(bits)
    }

    /// Cuts `data` from its start as a file is cut, checking every cut against the
    /// crate's, and returns how many chunks there were.
    fn agree_on(data: &[u8], p: CutParams) -> usize {
        let (mut at, mut chunks) = (0, 0);
        while at < data.len() {
            let expected = cut_by_the_crate(&data[at..], p);
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
            assert_eq!(cut(src, p), cut_by_the_crate(src, p), "length {len}");
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

    /// A xorshift generator for the differential tests below.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A mask of `bits` random bits below bit 48, as the table's masks are.
    fn sparse_mask(state: &mut u64, bits: u32) -> u64 {
        let mut mask = 0u64;
        while mask.count_ones() < bits {
            mask |= 1 << (next(state) % 48);
        }
        mask
    }

    #[test]
    fn cuts_as_the_crate_does_with_masks_that_hit_in_every_stretch() {
        // Masks of 4 to 13 bits hit every 16 to 8192 positions, so most scans
        // find a hit in several lanes at once; MIN, AVG and MAX of any size.
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let data = noise(1 << 17, 3);
        for trial in 0..3000 {
            let min = 2 * (next(&mut state) % 2048) as usize;
            let avg = min + (next(&mut state) % 20_000) as usize;
            let max = avg + (next(&mut state) % 40_000) as usize;
            let p = CutParams {
                min,
                avg,
                max,
                mask_s: sparse_mask(&mut state, 4 + (trial % 10)),
                mask_l: sparse_mask(&mut state, 4 + (trial % 8)),
            };
            let start = (next(&mut state) % (1 << 16)) as usize;
            let len = (next(&mut state) % (max as u64 + 100)) as usize;
            let src = &data[start..(start + len).min(data.len())];
            assert_eq!(
                cut(src, p),
                cut_by_the_crate(src, p),
                "trial {trial}: {p:?}, {len} bytes"
            );
        }
    }

    #[test]
    fn cuts_as_the_crate_does_when_every_position_hits() {
        // A mask of no bits: every lane hits at its first position; the cut is MIN.
        for bits in [13, 17, 22] {
            let p = CutParams {
                mask_s: 0,
                mask_l: 0,
                ..params(bits)
            };
            let data = noise(p.max + 1, u64::from(bits));
            assert_eq!(cut(&data, p), cut_by_the_crate(&data, p));
            assert_eq!(cut(&data, p), p.min);
        }
    }

    #[test]
    fn cuts_as_the_crate_does_on_random_lengths_and_sizes() {
        let mut state = 0x2545_f491_4f6c_dd1d;
        let data = noise(17 << 20, 11);
        for _ in 0..200 {
            let p = params(13 + (next(&mut state) % 10) as u32);
            let len = (next(&mut state) % (p.max as u64 + 5000)) as usize;
            let len = len.min(data.len());
            let start = (next(&mut state) % (data.len() - len + 1) as u64) as usize;
            let src = &data[start..start + len];
            assert_eq!(
                cut(src, p),
                cut_by_the_crate(src, p),
                "{p:?}, {len} bytes at {start}"
            );
        }
    }

    /// `len` bytes whose hash first clears the mask at `target` (past `p.min`):
    /// noise with no hit before `target - 1`, and the two bytes at `target - 1`
    /// and `target` chosen so that the first of them misses and the second hits.
    /// Written from 18.2's definition of the hash, not from [`Scan`].
    fn hit_at(p: CutParams, target: usize, len: usize) -> Vec<u8> {
        let gear = gear();
        let mask_at = |at: usize| match at < p.avg.min(len) / 2 * 2 {
            true => p.mask_s,
            false => p.mask_l,
        };
        for seed in 1.. {
            let mut data = noise(len, seed);
            let mut hash = 0u64;
            let clear = (p.min..target - 1).all(|at| {
                hash = (hash << 1).wrapping_add(gear[usize::from(data[at])]);
                hash & mask_at(at) != 0
            });
            let step = |hash: u64, byte: u8| (hash << 1).wrapping_add(gear[usize::from(byte)]);
            let pair = (0..=u8::MAX)
                .filter(|&a| step(hash, a) & mask_at(target - 1) != 0)
                .flat_map(|a| (0..=u8::MAX).map(move |b| (a, b)))
                .find(|&(a, b)| step(step(hash, a), b) & mask_at(target) == 0);
            if let (true, Some((a, b))) = (clear, pair) {
                data[target - 1] = a;
                data[target] = b;
                return data;
            }
        }
        unreachable!()
    }

    #[test]
    fn cuts_as_the_crate_does_at_the_edges_of_every_lane_and_bound() {
        // Masks of 16 bits: a scan seldom hits before the position aimed at, and
        // two bytes chosen of 65536 pairs usually hit there. MIN itself is the
        // test above (the pair would start before hashing does).
        let p = CutParams {
            mask_s: MASKS[14] | 0x3,
            mask_l: MASKS[16],
            ..params(13)
        };
        let lane_edges = |from: usize| {
            (0..LANES).flat_map(move |lane| {
                let start = from + lane * STRETCH;
                [start, start + 1, start + STRETCH - 1]
            })
        };
        // A hit at the last byte of an odd length is past the last pair: no cut.
        let bounds = [p.avg - 2, p.avg - 1, p.avg, p.avg + 1, p.max - 2, p.max - 1];
        let targets = lane_edges(p.min)
            .skip(1)
            .chain(lane_edges(p.avg))
            .chain(bounds);
        for target in targets {
            for len in [p.max, p.max - 1, p.max + 7, p.avg + 1, p.avg - 1] {
                if target < len.min(p.max) {
                    let data = hit_at(p, target, len);
                    let expected = cut_by_the_crate(&data, p);
                    let pairs_end = len.min(p.max) / 2 * 2;
                    assert_eq!(expected == target, target < pairs_end, "the crate's");
                    assert_eq!(cut(&data, p), expected, "target {target}, {len} bytes");
                }
            }
        }
    }
}
