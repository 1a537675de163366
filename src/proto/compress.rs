//! zstd on the wire: compressed data frames (`docs/PROTOCOL.md` section 10, feature
//! `zstd`) and packed list frames (section 19, feature `zstd_control`). A sender's
//! [`Deflater`] compresses each data frame on its own and keeps the result only when
//! it pays; a [`ControlPacker`] does the same for large offers, plans and listings. A
//! receiver's [`Inflater`] takes only a single zstd frame that declares its size, at
//! most 16 MiB, with nothing after it, and never inflates more than that size, so a
//! decompression bomb costs it one frame's buffer. The contexts live for the whole
//! connection.

use anyhow::Result;
use zstd::zstd_safe;

use super::buffer::grow_to;
use crate::error::{Kind, fail};

/// The level used when the user asks for compression without naming one.
pub(crate) const DEFAULT_LEVEL: i32 = 3;
/// A compressed frame is kept only when it is at most this fraction of the raw
/// one (in 1/64ths): saving less than 3% is not worth the receiver's work.
const WORTH_IT_64THS: usize = 62;
/// After a frame that did not compress, the next `skip` frames go raw without a
/// try, `skip` doubling up to this many: random data then costs one attempt in 32
/// frames, and a file that turns compressible is noticed within that many.
const MAX_SKIP: u32 = 32;
/// The zstd frame magic number, little-endian on the wire (RFC 8878).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// What compression made of a session's data: file bytes that went into the
/// compressor and data-frame bytes that came out (raw frames count as they are);
/// a receiver counts the same from the other end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Squeezed {
    pub(crate) before: u64,
    pub(crate) after: u64,
}

impl Squeezed {
    /// Counts one data frame of `before` file bytes that went out as `after`.
    pub(crate) fn count(&mut self, before: usize, after: usize) {
        self.before += before as u64;
        self.after += after as u64;
    }
}

/// Compresses data frames for one connection; with no level, sends every frame raw.
pub(crate) struct Deflater {
    context: Option<zstd::bulk::Compressor<'static>>,
    /// Frames still to send raw before the next attempt.
    skipping: u32,
    /// The next run of raw frames after a failed attempt.
    skip: u32,
}

impl Deflater {
    pub(crate) fn new(level: Option<i32>) -> Result<Deflater> {
        let context = match level {
            Some(level) => Some(
                zstd::bulk::Compressor::new(level)
                    .map_err(|err| anyhow::anyhow!("cannot start zstd: {err}"))?,
            ),
            None => None,
        };
        Ok(Deflater {
            context,
            skipping: 0,
            skip: 1,
        })
    }

    /// Whether this side compresses at all (it was given a level).
    pub(crate) fn compresses(&self) -> bool {
        self.context.is_some()
    }

    /// Compresses `source` into `dest` (as long as `source`); returns the compressed
    /// length, or `None` when the frame should go raw.
    pub(crate) fn deflate(&mut self, source: &[u8], dest: &mut [u8]) -> Option<usize> {
        let context = self.context.as_mut()?;
        if self.skipping > 0 {
            self.skipping -= 1;
            return None;
        }
        let limit = source.len() * WORTH_IT_64THS / 64;
        match context.compress_to_buffer(source, &mut dest[..limit]) {
            // The frame header declares the content size: bulk compression knows it.
            Ok(n) => {
                self.skip = 1;
                Some(n)
            }
            Err(_) => {
                self.skipping = self.skip;
                self.skip = (self.skip * 2).min(MAX_SKIP);
                None
            }
        }
    }
}

/// Compresses large control frames (offers, plans, listings) under `zstd_control`:
/// JSON lists of paths shrink five- to tenfold at level 1, which costs ~2 ms per MiB.
pub(crate) struct ControlPacker {
    context: zstd::bulk::Compressor<'static>,
}

/// Control frames shorter than this go as they are: too little to gain.
const PACK_FROM: usize = 4096;
/// zstd's fastest level that still finds the repeats in JSON.
const PACK_LEVEL: i32 = 1;

impl ControlPacker {
    pub(crate) fn new() -> Result<ControlPacker> {
        let context = zstd::bulk::Compressor::new(PACK_LEVEL)
            .map_err(|err| anyhow::anyhow!("cannot start zstd: {err}"))?;
        Ok(ControlPacker { context })
    }

    /// Appends `payload` packed to `dest` and returns true, or appends nothing and
    /// returns false when it is too short or would not shrink by 3%.
    pub(crate) fn pack(&mut self, payload: &[u8], dest: &mut Vec<u8>) -> bool {
        if payload.len() < PACK_FROM {
            return false;
        }
        let start = dest.len();
        let limit = payload.len() * WORTH_IT_64THS / 64;
        dest.resize(start + limit, 0);
        match self.context.compress_to_buffer(payload, &mut dest[start..]) {
            Ok(n) => {
                dest.truncate(start + n);
                true
            }
            Err(_) => {
                dest.truncate(start);
                false
            }
        }
    }
}

/// Whether a control frame's payload is packed (`zstd_control`): JSON always
/// begins with `{`, a zstd frame with its magic number.
pub(crate) fn is_packed(payload: &[u8]) -> bool {
    payload.starts_with(&ZSTD_MAGIC)
}

/// Decompresses data frames (and packed control frames) for one connection.
pub(crate) struct Inflater {
    context: zstd::bulk::Decompressor<'static>,
}

impl Inflater {
    pub(crate) fn new() -> Inflater {
        Inflater {
            context: zstd::bulk::Decompressor::new()
                .expect("zstd allocates a decompression context"),
        }
    }

    /// Decompresses `source` (the body of a flag-1 data frame, or a packed control
    /// frame) into `dest`, which grows to the declared size if it is shorter; returns
    /// how many bytes it holds. Anything but exactly one zstd frame of declared size up
    /// to `most`, decompressing to exactly that size, is a protocol error (and `dest`
    /// grows only for a frame that passed every check but the decompression itself).
    pub(crate) fn inflate(
        &mut self,
        source: &[u8],
        dest: &mut Vec<u8>,
        most: usize,
    ) -> Result<usize> {
        let refuse = |why: &str| fail(Kind::Protocol, format!("compressed frame: {why}"));
        if source.get(..4) != Some(&ZSTD_MAGIC[..]) {
            return Err(refuse("not a zstd frame (a skippable frame, or no magic)"));
        }
        let declared = match zstd_safe::get_frame_content_size(source) {
            Ok(Some(size)) => size,
            Ok(None) => return Err(refuse("the frame does not declare its size")),
            Err(_) => return Err(refuse("the frame header is malformed")),
        };
        if declared > most as u64 {
            return Err(refuse(&format!(
                "declares {declared} bytes, over the {} MiB limit",
                most >> 20
            )));
        }
        match zstd_safe::find_frame_compressed_size(source) {
            Ok(n) if n == source.len() => {}
            Ok(_) => return Err(refuse("bytes after the zstd frame")),
            Err(_) => return Err(refuse("the frame is truncated or malformed")),
        }
        let declared = declared as usize;
        grow_to(dest, declared);
        match self
            .context
            .decompress_to_buffer(source, &mut dest[..declared])
        {
            Ok(n) if n == declared => Ok(n),
            Ok(n) => Err(refuse(&format!("declared {declared} bytes but holds {n}"))),
            Err(err) => Err(refuse(&format!("does not decompress: {err}"))),
        }
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::message::MAX_DATA_FRAME;

    fn text(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"2026-11-29 11:10:45 INFO request served in 12 ms\n"[i % 49])
            .collect()
    }

    #[test]
    fn text_compresses_and_inflates_back_exactly() {
        let mut deflater = Deflater::new(Some(DEFAULT_LEVEL)).unwrap();
        let source = text(1 << 20);
        let mut packed = vec![0; source.len()];
        let n = deflater.deflate(&source, &mut packed).unwrap();
        assert!(n < source.len() / 10);
        let mut out = vec![0; MAX_DATA_FRAME];
        let got = Inflater::new()
            .inflate(&packed[..n], &mut out, MAX_DATA_FRAME)
            .unwrap();
        assert_eq!(&out[..got], &source[..]);
    }

    #[test]
    fn random_data_goes_raw_and_stops_being_tried() {
        let mut deflater = Deflater::new(Some(DEFAULT_LEVEL)).unwrap();
        let mut state = 1u64;
        let source: Vec<u8> = (0..1 << 16)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut dest = vec![0; source.len()];
        let attempts = (0..100)
            .filter(|_| {
                let before = deflater.skipping;
                deflater.deflate(&source, &mut dest).is_none() && before == 0
            })
            .count();
        assert!(attempts < 12, "{attempts} attempts in 100 frames");
        assert!(
            Deflater::new(None)
                .unwrap()
                .deflate(&source, &mut dest)
                .is_none()
        );
    }

    #[test]
    fn hostile_frames_are_refused_without_inflating_them() {
        let mut out = vec![0; MAX_DATA_FRAME];
        let mut inflater = Inflater::new();
        let good = zstd::bulk::compress(&text(1000), 3).unwrap();
        assert_eq!(
            inflater.inflate(&good, &mut out, MAX_DATA_FRAME).unwrap(),
            1000
        );

        // No declared size: a streaming frame.
        let mut streamed = Vec::new();
        {
            use std::io::Write;
            let mut encoder = zstd::Encoder::new(&mut streamed, 3).unwrap();
            encoder.include_contentsize(false).unwrap();
            encoder.write_all(&text(1000)).unwrap();
            encoder.finish().unwrap();
        }
        // A bomb: 1 GiB of zeros declared (it compresses to a few KiB).
        let bomb = {
            let mut encoder = zstd::Encoder::new(Vec::new(), 19).unwrap();
            encoder.set_pledged_src_size(Some(1 << 30)).unwrap();
            let zeros = vec![0; 1 << 20];
            for _ in 0..1024 {
                std::io::Write::write_all(&mut encoder, &zeros).unwrap();
            }
            encoder.finish().unwrap()
        };
        let mut trailing = good.clone();
        trailing.push(0);
        let mut lying = good.clone();
        // Byte 5 is the declared size in this small frame's header.
        lying[5] = lying[5].wrapping_add(1);
        let skippable = [0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0];
        for (name, frame) in [
            ("no size", &streamed[..]),
            ("bomb", &bomb[..]),
            ("trailing", &trailing[..]),
            ("lying size", &lying[..]),
            ("skippable", &skippable[..]),
            ("empty", &[][..]),
            ("truncated", &good[..good.len() - 1]),
        ] {
            assert!(
                inflater.inflate(frame, &mut out, MAX_DATA_FRAME).is_err(),
                "{name}"
            );
        }
    }
}
