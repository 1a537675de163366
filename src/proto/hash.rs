//! The content hash `h` of `PROTOCOL.md` section 5: MD5 unless the `blake3` feature
//! is in force (xfer chooses it whenever the peer lists it), then BLAKE3-256. The
//! handshake chooses it (see `negotiated.rs`); the sender, the receiver and both ends
//! of a resume use it only through [`Hasher`] and [`Digest`], so neither knows which
//! one runs.

use std::fmt;
use std::io::{self, Read};

use md5::Digest as _;

use crate::hex::hex;

/// Which content hash verifies files on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum HashKind {
    #[default]
    Md5,
    Blake3,
}

impl HashKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            HashKind::Md5 => "md5",
            HashKind::Blake3 => "blake3",
        }
    }

    /// Length of a digest, in bytes.
    pub(crate) fn digest_len(self) -> usize {
        match self {
            HashKind::Md5 => 16,
            HashKind::Blake3 => 32,
        }
    }

    pub(crate) fn hasher(self) -> Hasher {
        match self {
            HashKind::Md5 => Hasher::Md5(md5::Md5::new()),
            HashKind::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    /// Strictly decodes a peer's hex digest of this kind (section 2: lowercase,
    /// exact length); `None` never matches anything.
    pub(crate) fn parse(self, text: &str) -> Option<Digest> {
        let mut bytes = [0; 32];
        let len = self.digest_len();
        crate::hex::unhex_into(text, &mut bytes[..len]).then_some(Digest {
            bytes,
            len: len as u8,
        })
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashKind::Md5 => "MD5",
            HashKind::Blake3 => "BLAKE3",
        })
    }
}

/// A running content hash. BLAKE3's state is large (about 2 KiB), so it is boxed.
#[derive(Clone)]
pub(crate) enum Hasher {
    Md5(md5::Md5),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub(crate) fn kind(&self) -> HashKind {
        match self {
            Hasher::Md5(_) => HashKind::Md5,
            Hasher::Blake3(_) => HashKind::Blake3,
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(md5) => md5.update(bytes),
            Hasher::Blake3(blake3) => {
                blake3.update(bytes);
            }
        }
    }

    /// The digest so far, leaving the state as it was (for a resume prefix).
    pub(crate) fn peek(&self) -> Digest {
        self.clone().finish()
    }

    pub(crate) fn finish(self) -> Digest {
        let mut bytes = [0; 32];
        let len = match self {
            Hasher::Md5(md5) => {
                bytes[..16].copy_from_slice(&md5.finalize());
                16
            }
            Hasher::Blake3(blake3) => {
                bytes.copy_from_slice(blake3.finalize().as_bytes());
                32
            }
        };
        Digest { bytes, len }
    }

    /// Starts a sparse entry's run in its hash (section 16.4): its offset and
    /// length, each u64 big-endian, before its bytes.
    pub(crate) fn run_header(&mut self, offset: u64, len: u64) {
        self.update(&offset.to_be_bytes());
        self.update(&len.to_be_bytes());
    }

    /// Ends a sparse entry's hash with its size `N` (section 16.4): the bytes past
    /// the last run are zeros up to there.
    pub(crate) fn runs_end(&mut self, size: u64) {
        self.update(&size.to_be_bytes());
    }

    /// Feeds the first `len` bytes of `reader`; returns how many there were (fewer
    /// than `len` if the reader ended first).
    pub(crate) fn update_from<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        len: u64,
    ) -> io::Result<u64> {
        let mut buffer = vec![0; PREFIX_CHUNK];
        let mut done = 0;
        while done < len {
            let want = usize::try_from(len - done).map_or(PREFIX_CHUNK, |n| n.min(PREFIX_CHUNK));
            let n = match reader.read(&mut buffer[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.update(&buffer[..n]);
            done += n as u64;
        }
        Ok(done)
    }
}

/// Bytes read at a time while hashing a resume prefix.
const PREFIX_CHUNK: usize = 256 << 10;

/// A finished content hash: 16 bytes (MD5) or 32 (BLAKE3).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    bytes: [u8; 32],
    len: u8,
}

impl Digest {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub(crate) fn to_hex(self) -> String {
        hex(self.as_bytes())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = b"hello, world\n";

    #[test]
    fn both_kinds_match_the_protocol_vectors() {
        let mut md5 = HashKind::Md5.hasher();
        md5.update(HELLO);
        assert_eq!(md5.finish().to_hex(), "22c3683b094136c3398391ae71b20f04");
        let mut blake3 = HashKind::Blake3.hasher();
        blake3.update(HELLO);
        assert_eq!(
            blake3.finish().to_hex(),
            "623a5460d841b6d1c13d080e85500e0043fd4ba4a8ba9c1aa9b4f6e0d212276c"
        );
    }

    #[test]
    fn a_prefix_continues_into_the_whole() {
        for kind in [HashKind::Md5, HashKind::Blake3] {
            let mut hasher = kind.hasher();
            let n = hasher.update_from(&mut &HELLO[..], 5).unwrap();
            assert_eq!(n, 5);
            let mut whole = kind.hasher();
            whole.update(&HELLO[..5]);
            assert_eq!(hasher.peek(), whole.peek());
            hasher.update(&HELLO[5..]);
            whole.update(&HELLO[5..]);
            assert_eq!(hasher.finish(), whole.finish());
            let mut short = kind.hasher();
            assert_eq!(short.update_from(&mut &b"ab"[..], 100).unwrap(), 2);
        }
    }

    /// The sparse file of section 16.7's vector: 65 536 bytes, `head` at 0 and
    /// `hello, world\n` at 32 768, zeros elsewhere.
    fn sparse_vector(kind: HashKind) -> String {
        let mut hasher = kind.hasher();
        for (offset, bytes) in [(0, &b"head"[..]), (32_768, HELLO)] {
            hasher.run_header(offset, bytes.len() as u64);
            hasher.update(bytes);
        }
        hasher.runs_end(65_536);
        hasher.finish().to_hex()
    }

    #[test]
    fn sparse_runs_hash_as_the_protocol_vector_says() {
        let protocol = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md"));
        for (kind, expected) in [
            (HashKind::Md5, "f8955a5c31db488beed19cdef78767b2"),
            (
                HashKind::Blake3,
                "05fb5d06b2cd88198b0bfa0a5d55bdc26d40f4872a0b5df03283949d50d38037",
            ),
        ] {
            let h = sparse_vector(kind);
            assert_eq!(h, expected, "{kind}");
            assert!(
                protocol.contains(&h),
                "{kind}: {h} is not in docs/PROTOCOL.md"
            );
        }
    }

    #[test]
    fn parsing_is_strict_and_kind_specific() {
        let md5 = "22c3683b094136c3398391ae71b20f04";
        assert!(HashKind::Md5.parse(md5).is_some());
        assert!(HashKind::Blake3.parse(md5).is_none());
        assert!(HashKind::Md5.parse(&md5.to_uppercase()).is_none());
        assert_eq!(HashKind::Md5.parse(md5).unwrap().to_hex(), md5);
    }
}
