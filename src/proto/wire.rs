//! Frames over a byte stream: a [`FrameReader`] and a [`FrameWriter`] around any
//! `Read` and `Write` (a TCP socket split in two, or cursors in tests), and
//! [`read_frame`] for the unbuffered, deadline-bounded reads of the handshake.
//!
//! Below the codec, and invisible to the sessions above it, sit the two layers a
//! connection may negotiate: sealing (`aead`, `seal.rs`), which wraps every frame
//! after the handshake, and compression (`zstd`, `compress.rs`), which applies to data
//! frames, before sealing; under `zstd_control` a large list frame (an offer, a
//! plan, a listing) may travel packed too, and is read back as its JSON, which is
//! what the MACs over offers and plans cover. Data frames travel in caller-owned buffers laid out
//! with room for the length prefix, the flag byte and the tag (see [`DATA_HEADROOM`]),
//! so a file's bytes are read, hashed, compressed, sealed and written without copies.
//!
//! Every failure leaves here tagged: trouble with the stream is `Network`, bytes that
//! are not a valid frame are `Protocol`, a frame that does not open is `Verification`.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::buffer::grow_to;
use super::compress::{ControlPacker, Deflater, Inflater, Squeezed, is_packed};
use super::message::{self, ErrorCode, LENGTH_PREFIX, MAX_CONTROL, MAX_DATA_FRAME, Message};
use super::negotiated::{Feature, Negotiated};
use super::seal::{Opener, Sealer, TAG_LEN};
use crate::error::{Classify, Kind, fail, refused, tag};

/// Read-ahead buffer of the frame reader, in bytes. Frames larger than this are
/// read straight into the caller's buffer, past it.
const READ_BUFFER: usize = 64 << 10;
/// Write buffer of the frame writer, in bytes: control frames collect here; data
/// frames larger than this go to the socket directly.
const WRITE_BUFFER: usize = 64 << 10;
/// Room a data buffer keeps before the file bytes: the length prefix and the flag
/// byte of a compressed connection (`PROTOCOL.md` section 11).
pub(crate) const DATA_HEADROOM: usize = LENGTH_PREFIX + 1;
/// What a receiving data buffer starts with: room for a frame of the size senders
/// use (xfer's 1 MiB chunks, sealed, with headroom). A larger frame, up to the
/// protocol's 16 MiB, grows the buffer it lands in.
///
/// Not 16 MiB from the start: a server reuses freed memory, which the allocator
/// zeroes in full, so four 16 MiB buffers cost 64 MiB of resident memory per
/// upload (measured: 32 clients took a server to 978 MiB).
const DATA_BUFFER: usize = DATA_HEADROOM + (1 << 20) + TAG_LEN;
/// An unpacking buffer larger than this is let go before the next packed frame.
const KEEP_UNPACKED: usize = 2 << 20;
/// How the JSON of a packed frame begins (`docs/PROTOCOL.md` section 19): only list
/// frames may travel packed, so a request, an answer or `end` cannot be a 16 MiB
/// frame that crossed in a few hundred bytes.
const PACKABLE: [&[u8]; 4] = [
    br#"{"type":"offer","#,
    br#"{"type":"plan","#,
    br#"{"type":"deleted","#,
    br#"{"type":"listing","#,
];

/// A new buffer for receiving data frames (see [`FrameReader::read_data`]).
pub(crate) fn data_buffer() -> Vec<u8> {
    vec![0; DATA_BUFFER]
}

/// What a data frame held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Data {
    /// The empty frame that ends a file's data.
    End,
    /// File bytes, at this range of the caller's buffer (possibly empty: a
    /// compressed connection may send a frame that carries nothing).
    Bytes(Range<usize>),
}

/// Reads control and data frames from a stream.
pub(crate) struct FrameReader<R> {
    inner: BufReader<R>,
    opener: Option<Opener>,
    inflater: Option<Inflater>,
    /// Control frames land here (and are opened here when sealed).
    control: Vec<u8>,
    /// Where a compressed data frame is decompressed; swapped with the caller's buffer.
    spare: Vec<u8>,
    /// Under `zstd_control`: packed list frames are accepted, and unpacked here
    /// (the context is made when the first one arrives).
    unpacking: bool,
    unpacker: Option<(Inflater, Vec<u8>)>,
    /// Data bytes as inflated and as they came, since [`FrameReader::take_squeezed`];
    /// `Some` once a compressed frame arrived.
    squeezed: Option<Squeezed>,
    /// Raw frames' bytes on a compressed connection, counted in once one compressed.
    raw: u64,
}

impl<R: Read> FrameReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(READ_BUFFER, inner),
            opener: None,
            inflater: None,
            control: Vec::new(),
            spare: Vec::new(),
            unpacking: false,
            unpacker: None,
            squeezed: None,
            raw: 0,
        }
    }

    /// What decompression made of the data since the last call, if any frame came
    /// compressed (`before`: the file bytes, `after`: what crossed the wire).
    pub(crate) fn take_squeezed(&mut self) -> Option<Squeezed> {
        let raw = std::mem::take(&mut self.raw);
        self.squeezed.take().map(|mut squeezed| {
            squeezed.count(raw as usize, raw as usize);
            squeezed
        })
    }

    /// Applies what the handshake negotiated: opens sealed frames from here on, and
    /// accepts compressed data frames.
    pub(crate) fn negotiate(&mut self, negotiated: &Negotiated) {
        if negotiated.has(Feature::Aead) {
            self.opener = Some(Opener::for_peer_of(negotiated));
        }
        if negotiated.has(Feature::Zstd) {
            self.inflater = Some(Inflater::new());
            // Swapped with the caller's buffers: of their size, so neither grows.
            self.spare = data_buffer();
        }
        self.unpacking = negotiated.has(Feature::ZstdControl);
    }

    /// Reads one control frame's plaintext payload (post-authentication limits).
    ///
    /// # Returns
    ///
    /// `Ok(None)` when the peer closed the stream cleanly between frames; an error
    /// when it closed inside a frame, sent too much, or sent a frame that does not open
    /// (or, packed, does not unpack to at most 16 MiB).
    pub(crate) fn read_payload(&mut self) -> Result<Option<&[u8]>> {
        let Some(len) = self.read_len(MAX_CONTROL)? else {
            return Ok(None);
        };
        self.control.resize(len, 0);
        read_all(&mut self.inner, &mut self.control)?;
        let plain = match &mut self.opener {
            Some(opener) => opener.open(&mut self.control)?,
            None => len,
        };
        let payload = &self.control[..plain];
        if !(self.unpacking && is_packed(payload)) {
            return Ok(Some(payload));
        }
        let (inflater, unpacked) = self.unpacker.get_or_insert_with(Default::default);
        if unpacked.capacity() > KEEP_UNPACKED {
            // Frames of a few bytes may unpack to 16 MiB: none holds that for long.
            *unpacked = Vec::new();
        }
        let n = inflater.inflate(payload, unpacked, MAX_CONTROL)?;
        let json = &unpacked[..n];
        if !PACKABLE.iter().any(|opening| json.starts_with(opening)) {
            return Err(fail(
                Kind::Protocol,
                "a packed frame that is not an offer, plan, deleted or listing frame",
            ));
        }
        Ok(Some(json))
    }

    /// Reads and decodes one control frame; see [`FrameReader::read_payload`].
    pub(crate) fn read_message(&mut self) -> Result<Option<Message>> {
        match self.read_payload()? {
            Some(payload) => message::decode(payload).classify(Kind::Protocol).map(Some),
            None => Ok(None),
        }
    }

    /// Reads one control frame; a clean close here is an error too.
    pub(crate) fn expect_message(&mut self, waiting_for: &str) -> Result<Message> {
        self.read_message()?.ok_or_else(|| {
            fail(
                Kind::Network,
                format!("the peer closed the connection while we waited for {waiting_for}"),
            )
        })
    }

    /// Reads one whole data frame into `buffer`, opening and decompressing it as
    /// negotiated; the buffer grows to the frame if it is shorter (it may also be
    /// swapped for the decompressor's). Nothing of a frame is returned before all of
    /// it arrived and, when sealed, verified.
    pub(crate) fn read_data(&mut self, buffer: &mut Vec<u8>) -> Result<Data> {
        let Some(len) = self.read_len(MAX_DATA_FRAME)? else {
            return Err(fail(
                Kind::Network,
                "the peer closed the connection in the middle of a file",
            ));
        };
        grow_to(buffer, len);
        read_all(&mut self.inner, &mut buffer[..len])?;
        let plain = match &mut self.opener {
            Some(opener) => opener.open(&mut buffer[..len])?,
            None => len,
        };
        if plain == 0 {
            return Ok(Data::End);
        }
        match &mut self.inflater {
            None => Ok(Data::Bytes(0..plain)),
            Some(inflater) => match buffer[0] {
                0 => {
                    self.raw += plain as u64 - 1;
                    Ok(Data::Bytes(1..plain))
                }
                1 => {
                    let n = inflater.inflate(&buffer[1..plain], &mut self.spare, MAX_DATA_FRAME)?;
                    self.squeezed.get_or_insert_default().count(n, plain - 1);
                    std::mem::swap(buffer, &mut self.spare);
                    Ok(Data::Bytes(0..n))
                }
                flag => Err(fail(
                    Kind::Protocol,
                    format!("data frame with unknown flag byte {flag}"),
                )),
            },
        }
    }

    /// Bytes read from the stream and not yet taken: with none, the next frame
    /// waits on the peer (a caller with work to hand on hands it on first).
    pub(crate) fn buffered(&self) -> usize {
        self.inner.buffer().len()
    }

    /// Reads the next frame's length prefix and checks it against `max` (plaintext),
    /// before anything is allocated for it; `None` on a clean close before it.
    fn read_len(&mut self, max: usize) -> Result<Option<usize>> {
        let mut prefix = [0; LENGTH_PREFIX];
        let first = loop {
            match self.inner.read(&mut prefix) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(net(err)),
            }
        };
        if first == 0 {
            return Ok(None);
        }
        read_all(&mut self.inner, &mut prefix[first..])?;
        let overhead = if self.opener.is_some() { TAG_LEN } else { 0 };
        let len = message::check_len(u32::from_be_bytes(prefix), max + overhead)
            .classify(Kind::Protocol)?;
        if len < overhead {
            return Err(fail(Kind::Protocol, "sealed frame shorter than its tag"));
        }
        Ok(Some(len))
    }
}

/// Writes control and data frames to a stream, buffered: call [`FrameWriter::flush`]
/// whenever the peer must see what was written before it can answer.
pub(crate) struct FrameWriter<W: Write> {
    inner: BufWriter<W>,
    sealer: Option<Sealer>,
    deflater: Option<Deflater>,
    /// Under `zstd_control`: packs the large control frames of [`FrameWriter::write_payload`].
    packer: Option<ControlPacker>,
    /// A control frame being assembled: prefix, payload, tag.
    control: Vec<u8>,
    /// Where a data frame is compressed; swapped with the caller's buffer when it pays.
    spare: Vec<u8>,
    /// Data bytes into and out of the compressor since [`FrameWriter::take_squeezed`].
    squeezed: Squeezed,
}

impl<W: Write> FrameWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        FrameWriter {
            inner: BufWriter::with_capacity(WRITE_BUFFER, inner),
            sealer: None,
            deflater: None,
            packer: None,
            control: Vec::new(),
            spare: Vec::new(),
            squeezed: Squeezed::default(),
        }
    }

    /// What compression made of the data written since the last call; `None` when
    /// this side does not compress.
    pub(crate) fn take_squeezed(&mut self) -> Option<Squeezed> {
        let squeezed = std::mem::take(&mut self.squeezed);
        self.deflater
            .as_ref()
            .filter(|deflater| deflater.compresses())
            .map(|_| squeezed)
    }

    /// Applies what the handshake negotiated: seals every frame from here on, and,
    /// if `compress` gives a level and `zstd` is in force, compresses data frames.
    pub(crate) fn negotiate(
        &mut self,
        negotiated: &Negotiated,
        compress: Option<i32>,
    ) -> Result<()> {
        if negotiated.has(Feature::Aead) {
            self.sealer = Some(Sealer::for_side_of(negotiated));
        }
        if negotiated.has(Feature::Zstd) {
            self.deflater = Some(Deflater::new(compress)?);
        }
        if negotiated.has(Feature::ZstdControl) {
            self.packer = Some(ControlPacker::new()?);
        }
        Ok(())
    }

    /// Writes one control frame.
    pub(crate) fn write_message(&mut self, message: &Message) -> Result<()> {
        self.control.clear();
        self.control.extend_from_slice(&[0; LENGTH_PREFIX]);
        message::encode_payload(message, &mut self.control);
        self.send_control(message.type_name())
    }

    /// Writes one control frame whose payload the caller encoded (offers, plans and
    /// listings; the caller feeds offers and plans to a MAC as they are here, before
    /// any packing). Under `zstd_control` a large one goes packed when that pays.
    pub(crate) fn write_payload(&mut self, payload: &[u8]) -> Result<()> {
        if payload.len() > MAX_CONTROL {
            // Checked before packing: a packed frame may not unpack past the limit.
            return Err(too_large("control frame", payload.len()));
        }
        self.control.clear();
        self.control.extend_from_slice(&[0; LENGTH_PREFIX]);
        let packed = match &mut self.packer {
            Some(packer) => packer.pack(payload, &mut self.control),
            None => false,
        };
        if !packed {
            self.control.extend_from_slice(payload);
        }
        self.send_control("control frame")
    }

    fn send_control(&mut self, what: &str) -> Result<()> {
        let len = self.control.len() - LENGTH_PREFIX;
        if len > MAX_CONTROL {
            return Err(too_large(what, len));
        }
        let wire_len = match &mut self.sealer {
            Some(sealer) => {
                let tag = sealer.seal(&mut self.control[LENGTH_PREFIX..])?;
                self.control.extend_from_slice(&tag);
                len + TAG_LEN
            }
            None => len,
        };
        let prefix = u32::try_from(wire_len).expect("checked against MAX_CONTROL");
        self.control[..LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
        self.inner.write_all(&self.control).map_err(net)
    }

    /// Writes one data frame of `len` file bytes, which the caller put in
    /// `buffer[DATA_HEADROOM..DATA_HEADROOM + len]`; `buffer` must have room for
    /// [`TAG_LEN`] more bytes after them. The bytes are sealed in place: hand the
    /// buffer back only after.
    pub(crate) fn write_data(&mut self, buffer: &mut [u8], len: usize) -> Result<()> {
        self.write_data_in(buffer, len)
    }

    /// [`FrameWriter::write_data`] of a frame laid out in `frame` (headroom, `len`
    /// file bytes, room for the tag), which may be one slot of a larger buffer that
    /// holds several files' frames back to back.
    pub(crate) fn write_data_in(&mut self, frame: &mut [u8], len: usize) -> Result<()> {
        assert!(
            (1..MAX_DATA_FRAME).contains(&len) && frame.len() >= DATA_HEADROOM + len + TAG_LEN,
            "data frames carry 1 byte to 16 MiB, in a buffer with headroom and tag room"
        );
        // A compressed frame is laid out in `spare` and goes from there.
        let (frame, start, plain) = match &mut self.deflater {
            None => (frame, DATA_HEADROOM, len),
            Some(deflater) => {
                let needed = DATA_HEADROOM + len + TAG_LEN;
                if self.spare.len() < needed {
                    self.spare = vec![0; needed.max(frame.len())];
                }
                let source = &frame[DATA_HEADROOM..DATA_HEADROOM + len];
                match deflater.deflate(source, &mut self.spare[DATA_HEADROOM..DATA_HEADROOM + len])
                {
                    Some(packed) => {
                        self.squeezed.count(len, packed);
                        self.spare[DATA_HEADROOM - 1] = 1;
                        (&mut self.spare[..], DATA_HEADROOM - 1, packed + 1)
                    }
                    None => {
                        self.squeezed.count(len, len);
                        frame[DATA_HEADROOM - 1] = 0;
                        (frame, DATA_HEADROOM - 1, len + 1)
                    }
                }
            }
        };
        let mut end = start + plain;
        if let Some(sealer) = &mut self.sealer {
            let tag = sealer.seal(&mut frame[start..end])?;
            frame[end..end + TAG_LEN].copy_from_slice(&tag);
            end += TAG_LEN;
        }
        let prefix = u32::try_from(end - start).expect("under 16 MiB");
        frame[start - LENGTH_PREFIX..start].copy_from_slice(&prefix.to_be_bytes());
        self.inner
            .write_all(&frame[start - LENGTH_PREFIX..end])
            .map_err(net)
    }

    /// Writes the empty data frame that ends a file's data.
    pub(crate) fn write_end_of_data(&mut self) -> Result<()> {
        let mut frame = [0; LENGTH_PREFIX + TAG_LEN];
        let len = match &mut self.sealer {
            Some(sealer) => {
                let tag = sealer.seal(&mut [])?;
                frame[LENGTH_PREFIX..].copy_from_slice(&tag);
                frame[..LENGTH_PREFIX].copy_from_slice(&(TAG_LEN as u32).to_be_bytes());
                LENGTH_PREFIX + TAG_LEN
            }
            None => LENGTH_PREFIX,
        };
        self.inner.write_all(&frame[..len]).map_err(net)
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(net)
    }

    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &W {
        self.inner.get_ref()
    }
}

/// Both halves of one authenticated connection, and what it negotiated.
pub(crate) struct Connection<R: Read, W: Write, C> {
    pub(crate) reader: FrameReader<R>,
    pub(crate) writer: FrameWriter<W>,
    pub(crate) negotiated: Negotiated,
    /// Cuts the connection from any thread (see [`Hangup`]).
    pub(crate) closer: C,
}

impl<R: Read, W: Write, C> Connection<R, W, C> {
    /// A connection over `reader` and `writer` with the negotiated layers in place;
    /// `compress` is this side's compression level, if it compresses what it sends.
    pub(crate) fn new(
        reader: R,
        writer: W,
        negotiated: Negotiated,
        compress: Option<i32>,
        closer: C,
    ) -> Result<Self> {
        let mut reader = FrameReader::new(reader);
        reader.negotiate(&negotiated);
        let mut writer = FrameWriter::new(writer);
        writer.negotiate(&negotiated, compress)?;
        Ok(Connection {
            reader,
            writer,
            negotiated,
            closer,
        })
    }
}

/// What the owner of a connection may do to it from any thread, whatever carries
/// it: cut it, so that a thread blocked on it wakes up (a failing reader stops a
/// blocked writer), and lift its read timeout while a sender streams. Sockets
/// implement it in `net` (`net::closer::Closer`); the codec never learns that it
/// holds one.
pub(crate) trait Hangup {
    /// Shuts the connection down, both ways.
    fn close(&self);

    /// Shuts the reading half only: a thread blocked reading wakes up (it reads a
    /// close) while this side can still write its last word.
    fn stop_reading(&self);

    /// The idle timeout reads are held to (`None`: none).
    fn idle_timeout(&self) -> Option<Duration>;

    /// After a session-level error frame went out (section 3): stops writing, then
    /// reads and drops what the peer still sends for up to a second, so that the
    /// error arrives instead of being lost to a reset.
    fn linger(&self);

    /// Lifts the read timeout until the returned guard is dropped: a sender
    /// streaming a large file hears nothing from its receiver for as long as the
    /// file takes, which is not the receiver being idle (section 5).
    #[must_use = "the read timeout comes back when the guard is dropped"]
    fn without_read_timeout(&self) -> impl Sized + '_;
}

/// A frame over the protocol's limit, refused before it is sent. Untagged: a limit
/// of the protocol, not the network's doing.
fn too_large(what: &str, len: usize) -> anyhow::Error {
    anyhow::anyhow!("cannot send {what}: {len} bytes exceed the protocol's 16 MiB frame limit")
}

/// Reads one length-prefixed, unsealed control frame of at most `max` bytes from
/// `stream` (the handshake's frames).
///
/// # Returns
///
/// `Ok(None)` on a clean close before the first byte of a frame.
pub(crate) fn read_frame<R: Read>(stream: &mut R, max: usize) -> Result<Option<Message>> {
    let mut prefix = [0; LENGTH_PREFIX];
    let first = loop {
        match stream.read(&mut prefix) {
            Ok(n) => break n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(net(err)),
        }
    };
    if first == 0 {
        return Ok(None);
    }
    read_all(stream, &mut prefix[first..])?;
    let len = match message::check_len(u32::from_be_bytes(prefix), max) {
        Ok(len) => len,
        // No length under a cap reads as text: this is another service's greeting.
        Err(_) if prefix.iter().all(|&b| is_text(b)) => return Err(not_xfer(stream, &prefix)),
        Err(err) => return Err(err).classify(Kind::Protocol),
    };
    // The cap was checked above, so this allocation is bounded by `max`.
    let mut payload = vec![0; len];
    read_all(stream, &mut payload)?;
    message::decode(&payload).classify(Kind::Protocol).map(Some)
}

/// How much of another service's greeting an error quotes.
const QUOTED_GREETING: usize = 40; // characters

/// Printable ASCII or the whitespace of a text protocol's line.
fn is_text(byte: u8) -> bool {
    matches!(byte, b' '..=b'~' | b'\t' | b'\r' | b'\n')
}

/// The error for a peer whose first bytes are text (`SSH-2.0-...`, `HTTP/1.1 ...`):
/// it speaks another protocol. Quotes its first line, with what one more read
/// brings (best effort: the handshake's deadline bounds it).
fn not_xfer<R: Read>(stream: &mut R, prefix: &[u8]) -> anyhow::Error {
    let mut greeting = prefix.to_vec();
    let mut more = [0; 64];
    if let Ok(n) = stream.read(&mut more) {
        greeting.extend_from_slice(&more[..n]);
    }
    let text = String::from_utf8_lossy(&greeting);
    let line = text.lines().next().unwrap_or_default();
    let mut quoted: String = line.chars().take(QUOTED_GREETING).collect();
    if quoted.len() < line.len() {
        quoted.push('…');
    }
    fail(
        Kind::Protocol,
        format!(
            "the peer does not speak xfer (it sent `{}`); wrong port?",
            crate::escape::escape(&quoted)
        ),
    )
}

/// A stream whose reads can time out: what the handshake needs for its deadline.
pub(crate) trait ReadTimeout {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

/// Reads from a stream until an absolute deadline: every read waits at most for the
/// time that is left, so a peer that trickles bytes cannot stretch it.
pub(crate) struct DeadlineReader<'a, S> {
    stream: &'a mut S,
    deadline: Instant,
}

impl<'a, S> DeadlineReader<'a, S> {
    pub(crate) fn new(stream: &'a mut S, deadline: Instant) -> Self {
        DeadlineReader { stream, deadline }
    }
}

impl<S: ReadTimeout + Read> Read for DeadlineReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake took too long",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn read_all<R: Read>(stream: &mut R, buf: &mut [u8]) -> Result<()> {
    stream.read_exact(buf).map_err(|err| {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            fail(
                Kind::Network,
                "the peer closed the connection in the middle of a frame",
            )
        } else {
            net(err)
        }
    })
}

/// Tags a stream error as a network failure, naming timeouts plainly: a peer that
/// went silent past the idle timeout is told `timeout` (section 3).
pub(crate) fn net(err: io::Error) -> anyhow::Error {
    match err.kind() {
        // A socket read timeout surfaces as WouldBlock on Unix.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => refused(
            ErrorCode::Timeout,
            "timed out: the peer sent or took nothing for the idle timeout",
        ),
        _ => tag(
            Kind::Network,
            anyhow::Error::new(err).context("connection lost"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;
    use crate::proto::message::Role;
    use crate::proto::negotiated::Features;
    use std::io::Cursor;
    use std::os::unix::net::UnixStream;

    /// Unit tests run the handshake over a socket pair (here and in `handshake.rs`).
    impl ReadTimeout for UnixStream {
        fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            UnixStream::set_read_timeout(self, timeout)
        }
    }

    fn wire(messages: &[Message]) -> Vec<u8> {
        messages.iter().flat_map(message::encode).collect()
    }

    /// A writer and a reader for both ends of one negotiated connection.
    fn pair(features: Features, compress: Option<i32>) -> (FrameWriter<Vec<u8>>, Negotiated) {
        let initiator = Negotiated::for_tests(Role::Sender, features, [9; 32]);
        let mut writer = FrameWriter::new(Vec::new());
        writer.negotiate(&initiator, compress).unwrap();
        (writer, initiator)
    }

    fn reader_for(bytes: Vec<u8>, initiator: &Negotiated) -> FrameReader<Cursor<Vec<u8>>> {
        let mut reader = FrameReader::new(Cursor::new(bytes));
        reader.negotiate(&initiator.peer_view());
        reader
    }

    fn data(content: &[u8]) -> Vec<u8> {
        let mut buffer = data_buffer();
        buffer[DATA_HEADROOM..DATA_HEADROOM + content.len()].copy_from_slice(content);
        buffer
    }

    fn round_trip_with(features: Features, compress: Option<i32>) {
        let (mut writer, initiator) = pair(features, compress);
        writer
            .write_message(&Message::Data {
                index: 0,
                offset: 0,
                delta: false,
            })
            .unwrap();
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        let mut buffer = data(&text);
        writer.write_data(&mut buffer, text.len()).unwrap();
        let mut buffer = data(b"x");
        writer.write_data(&mut buffer, 1).unwrap();
        writer.write_end_of_data().unwrap();
        writer
            .write_message(&Message::End { dropped: None })
            .unwrap();
        writer.flush().unwrap();
        let bytes = writer.inner.into_inner().unwrap();
        if features.has(Feature::Aead) {
            assert!(!bytes.windows(5).any(|w| w == b"hello"), "{features:?}");
        }

        let mut reader = reader_for(bytes, &initiator);
        assert_eq!(
            reader.read_message().unwrap(),
            Some(Message::Data {
                index: 0,
                offset: 0,
                delta: false
            })
        );
        let mut buffer = data_buffer();
        let Data::Bytes(range) = reader.read_data(&mut buffer).unwrap() else {
            panic!("bytes")
        };
        assert_eq!(&buffer[range], &text[..]);
        let Data::Bytes(range) = reader.read_data(&mut buffer).unwrap() else {
            panic!("bytes")
        };
        assert_eq!(&buffer[range], b"x");
        assert_eq!(reader.read_data(&mut buffer).unwrap(), Data::End);
        assert_eq!(
            reader.read_message().unwrap(),
            Some(Message::End { dropped: None })
        );
        assert_eq!(reader.read_message().unwrap(), None, "clean close");
    }

    #[test]
    fn messages_and_data_round_trip_in_every_mode() {
        use Feature::*;
        round_trip_with(Features::NONE, None);
        round_trip_with(Features::of(&[Aead]), None);
        round_trip_with(Features::of(&[Zstd]), Some(3));
        round_trip_with(Features::of(&[Aead, Zstd]), Some(3));
        // zstd in force but this side does not compress: flag bytes say raw.
        round_trip_with(Features::of(&[Aead, Zstd]), None);
    }

    #[test]
    fn frames_of_the_largest_size_grow_a_fresh_buffer_in_every_mode() {
        use Feature::*;
        // Another implementation may send frames up to the protocol's limit, larger
        // than xfer's chunks: a fresh buffer must take them, raw or inflated.
        let len = MAX_DATA_FRAME - 1; // the flag byte of a compressed connection counts
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let modes = [
            (Features::NONE, None),
            (Features::of(&[Aead]), None),
            (Features::of(&[Zstd]), Some(3)),
            (Features::of(&[Aead, Zstd]), Some(3)),
            (Features::of(&[Aead, Zstd]), None),
        ];
        for (features, compress) in modes {
            let (mut writer, initiator) = pair(features, compress);
            let mut buffer = vec![0; DATA_HEADROOM + len + TAG_LEN];
            buffer[DATA_HEADROOM..DATA_HEADROOM + len].copy_from_slice(&content);
            writer.write_data(&mut buffer, len).unwrap();
            writer.flush().unwrap();
            let bytes = writer.inner.into_inner().unwrap();
            let mut reader = reader_for(bytes, &initiator);
            let mut fresh = data_buffer();
            assert!(fresh.len() < len);
            let Data::Bytes(range) = reader.read_data(&mut fresh).unwrap() else {
                panic!("bytes")
            };
            assert!(fresh[range] == content[..], "{features:?} {compress:?}");
        }
    }

    #[test]
    fn a_close_inside_a_frame_is_a_network_error() {
        let bytes = wire(&[Message::End { dropped: None }]);
        for cut in 1..bytes.len() {
            let mut reader = FrameReader::new(Cursor::new(bytes[..cut].to_vec()));
            let err = reader.read_message().unwrap_err();
            assert_eq!(kind_of(&err), Some(Kind::Network), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocating() {
        // A 4 GiB prefix with no payload: were it allocated, this test would abort.
        let mut reader = FrameReader::new(Cursor::new(vec![0xff, 0xff, 0xff, 0xff]));
        let err = reader.read_message().unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Protocol));
        let mut reader = FrameReader::new(Cursor::new(vec![0xff, 0xff, 0xff, 0xff]));
        assert_eq!(
            kind_of(&reader.read_data(&mut data_buffer()).unwrap_err()),
            Some(Kind::Protocol)
        );

        let mut big = message::encode(&Message::error(message::ErrorCode::Io, "x".repeat(5000)));
        let err = read_frame(&mut Cursor::new(&mut big), message::MAX_PREAUTH_CONTROL).unwrap_err();
        assert!(
            format!("{err:#}").contains("exceeds the limit of 4096"),
            "{err:#}"
        );
    }

    #[test]
    fn a_first_frame_that_reads_as_text_is_another_service() {
        let cases: [(&[u8], &str); 3] = [
            (b"SSH-2.0-OpenSSH_9.6\r\n", "`SSH-2.0-OpenSSH_9.6`"),
            (
                b"HTTP/1.1 400 Bad Request\r\n\r\n",
                "`HTTP/1.1 400 Bad Request`",
            ),
            (&[b'x'; 100], "`xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`"),
        ];
        for (greeting, quoted) in cases {
            let err =
                read_frame(&mut Cursor::new(greeting), message::MAX_PREAUTH_CONTROL).unwrap_err();
            let said = format!("{err:#}");
            assert_eq!(kind_of(&err), Some(Kind::Protocol));
            assert!(
                said.contains("does not speak xfer") && said.contains(quoted),
                "{said}"
            );
        }
        // Control characters in a greeting are escaped before they are shown.
        let err = read_frame(&mut Cursor::new(b"SSH-\x1b[2J"), 4096).unwrap_err();
        assert!(!format!("{err:#}").contains('\x1b'), "{err:#}");
    }

    #[test]
    fn a_flipped_bit_in_a_sealed_frame_is_a_verification_error() {
        let (mut writer, initiator) = pair(Features::of(&[Feature::Aead]), None);
        writer
            .write_message(&Message::End { dropped: None })
            .unwrap();
        writer.flush().unwrap();
        let bytes = writer.inner.into_inner().unwrap();
        for bit in (LENGTH_PREFIX * 8)..(bytes.len() * 8) {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let err = reader_for(flipped, &initiator).read_message().unwrap_err();
            assert_eq!(kind_of(&err), Some(Kind::Verification), "bit {bit}");
        }
    }

    /// An offer-like payload of `entries` entries: JSON that repeats as paths do.
    fn list_payload(entries: usize) -> Vec<u8> {
        let items: Vec<String> = (0..entries)
            .map(|i| {
                format!(
                    r#"{{"path":"dir{}/file{i}.txt","kind":"file","size":{i}}}"#,
                    i / 100
                )
            })
            .collect();
        format!(r#"{{"type":"offer","entries":[{}]}}"#, items.join(",")).into_bytes()
    }

    #[test]
    fn large_control_frames_travel_packed_and_read_back_as_written() {
        use Feature::{Aead, ZstdControl};
        for features in [
            Features::of(&[ZstdControl]),
            Features::of(&[Aead, ZstdControl]),
        ] {
            let (mut writer, initiator) = pair(features, None);
            let (big, small) = (list_payload(2000), list_payload(3));
            writer.write_payload(&big).unwrap();
            writer.write_payload(&small).unwrap();
            writer.flush().unwrap();
            let bytes = writer.inner.into_inner().unwrap();
            let overhead = 2 * (LENGTH_PREFIX + TAG_LEN);
            assert!(
                bytes.len() < big.len() / 4,
                "{} of {}",
                bytes.len(),
                big.len()
            );
            assert!(
                bytes.len() > small.len() + overhead,
                "the small one goes raw"
            );
            let mut reader = reader_for(bytes, &initiator);
            assert_eq!(reader.read_payload().unwrap().unwrap(), big);
            assert_eq!(reader.read_payload().unwrap().unwrap(), small);
            assert!(reader.read_payload().unwrap().is_none());
        }
    }

    #[test]
    fn a_packed_frame_is_refused_without_the_feature_or_when_it_would_unpack_too_far() {
        let (mut writer, initiator) = pair(Features::of(&[Feature::ZstdControl]), None);
        writer.write_payload(&list_payload(2000)).unwrap();
        writer.flush().unwrap();
        let packed = writer.inner.into_inner().unwrap();
        // Without `zstd_control` a packed frame is not JSON.
        let plain = Negotiated::for_tests(Role::Sender, Features::NONE, [9; 32]);
        let err = reader_for(packed, &plain).read_message().unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Protocol), "{err:#}");
        // A frame that declares 16 MiB and one byte is refused before it is unpacked.
        let wire = packed_frame(&vec![b' '; MAX_CONTROL + 1]);
        let err = reader_for(wire, &initiator).read_payload().unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Protocol), "{err:#}");
        assert!(
            format!("{err:#}").contains("over the 16 MiB limit"),
            "{err:#}"
        );
    }

    /// One frame whose payload is `json` packed, as a peer under `zstd_control` sends it.
    fn packed_frame(json: &[u8]) -> Vec<u8> {
        let packed = zstd::bulk::compress(json, 1).unwrap();
        let mut wire = u32::try_from(packed.len()).unwrap().to_be_bytes().to_vec();
        wire.extend_from_slice(&packed);
        wire
    }

    #[test]
    fn only_list_frames_may_travel_packed_and_none_keeps_its_buffer() {
        let initiator =
            Negotiated::for_tests(Role::Sender, Features::of(&[Feature::ZstdControl]), [9; 32]);
        // `end` padded to 16 MiB crosses in a few hundred bytes: refused, as is an
        // offer that does not begin with its type.
        let mut padded_end = br#"{"type":"end"}"#.to_vec();
        padded_end.resize(MAX_CONTROL, b' ');
        let mut spaced_offer = b"  ".to_vec();
        spaced_offer.extend_from_slice(&list_payload(100));
        for json in [padded_end, spaced_offer] {
            let err = reader_for(packed_frame(&json), &initiator)
                .read_payload()
                .unwrap_err();
            assert_eq!(kind_of(&err), Some(Kind::Protocol), "{err:#}");
        }
        // A large offer frame, then a small one: the large buffer is not kept.
        let mut wire = packed_frame(&list_payload(40_000));
        wire.extend(packed_frame(&list_payload(100)));
        let mut reader = reader_for(wire, &initiator);
        assert!(reader.read_payload().unwrap().unwrap().len() > KEEP_UNPACKED);
        assert_eq!(reader.read_payload().unwrap().unwrap(), list_payload(100));
        let kept = reader
            .unpacker
            .as_ref()
            .map_or(0, |(_, buffer)| buffer.capacity());
        assert!(kept <= KEEP_UNPACKED, "{kept}");
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_before_it_is_packed() {
        let (mut writer, _) = pair(Features::of(&[Feature::ZstdControl]), None);
        let err = writer
            .write_payload(&vec![b' '; MAX_CONTROL + 1])
            .unwrap_err();
        assert!(format!("{err:#}").contains("16 MiB frame limit"), "{err:#}");
        writer.flush().unwrap();
        assert!(
            writer.inner.into_inner().unwrap().is_empty(),
            "nothing went out"
        );
    }

    #[test]
    fn the_packed_offer_vector_unpacks_to_the_section_6_offer() {
        // docs/PROTOCOL.md section 19; its MAC is section 6's, tested in negotiated.rs.
        let packed = crate::hex::unhex_vec(concat!(
            "28b52ffd206ced0200c246161b706b33062816204d8d8c519b9224c7d57ff193f057354d00554508",
            "cda1414444442c1cb9aeb4eb430121d7c3d63738726da4f6ad2aa1f39324c5f72e16c0945224d012",
            "ec9c238b50660c79d3b46ca2df8b22c4ce5561ec4c00"
        ))
        .unwrap();
        assert_eq!(packed.len(), 102);
        let mut wire = 102u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&packed);
        let initiator =
            Negotiated::for_tests(Role::Sender, Features::of(&[Feature::ZstdControl]), [9; 32]);
        let offer = br#"{"type":"offer","entries":[{"path":"docs/hello.txt","kind":"file","size":13,"mode":420,"mtime":1700000000}]}"#;
        assert_eq!(
            reader_for(wire, &initiator)
                .read_payload()
                .unwrap()
                .unwrap(),
            offer
        );
    }

    #[test]
    fn malformed_payload_is_a_protocol_error() {
        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{x}");
        let err = read_frame(&mut Cursor::new(bytes), MAX_CONTROL).unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Protocol));
    }

    #[test]
    fn deadline_reader_gives_up_at_the_deadline() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        let err = read_frame(&mut DeadlineReader::new(&mut a, deadline), 4096).unwrap_err();
        assert_eq!(kind_of(&err), Some(Kind::Network));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
