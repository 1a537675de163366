//! MD5 over the first bytes of a reader: what both sides of a resume compute (the
//! receiver over its partial file, the sender over its source) before continuing.

use std::io::{self, Read, Write};

use md5::{Digest, Md5};

/// Feeds the first `len` bytes of `reader` into `hasher`; returns how many there were
/// (fewer than `len` if the reader ended first).
pub fn hash_prefix<R: Read + ?Sized>(
    reader: &mut R,
    len: u64,
    hasher: &mut Md5,
) -> io::Result<u64> {
    io::copy(&mut reader.take(len), &mut Feed(hasher))
}

/// An MD5 as a place to write to.
struct Feed<'a>(&'a mut Md5);

impl Write for Feed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_exactly_the_prefix() {
        let mut hasher = Md5::new();
        let n = hash_prefix(&mut &b"hello, world\nand more"[..], 13, &mut hasher).unwrap();
        assert_eq!(n, 13);
        assert_eq!(
            crate::frame::hex(&hasher.finalize()),
            "22c3683b094136c3398391ae71b20f04"
        );
        let mut hasher = Md5::new();
        assert_eq!(
            hash_prefix(&mut &b"short"[..], 100, &mut hasher).unwrap(),
            5
        );
    }
}
