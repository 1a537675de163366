//! Sizing the byte buffers that frames land in: what both the frame reader
//! (`wire.rs`) and the zstd inflater (`compress.rs`) need when a frame is larger
//! than the buffer it arrives in. A leaf: it knows no frame, no stream and no codec.

/// Makes `buffer` at least `len` bytes long, with no more capacity than that (a
/// frame's size, not the allocator's doubling of it).
pub(crate) fn grow_to(buffer: &mut Vec<u8>, len: usize) {
    if buffer.len() < len {
        buffer.reserve_exact(len - buffer.len());
        buffer.resize(len, 0);
    }
}
