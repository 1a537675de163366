//! Frames over a byte stream: a [`FrameReader`] and a [`FrameWriter`] around any
//! `Read` and `Write` (a TCP socket split in two, or cursors in tests), and
//! [`read_frame`] for the unbuffered, deadline-bounded reads of the handshake.
//!
//! Every failure leaves here tagged: trouble with the stream is `Network`, bytes that
//! are not a valid frame are `Protocol`. Nothing here knows about files or sessions.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::error::{Classify, Kind, fail, tag};
use crate::frame::{self, LENGTH_PREFIX, MAX_CONTROL, MAX_DATA_FRAME, Message};

/// Read-ahead buffer of the frame reader, in bytes. Data frames larger than this
/// are read straight into the caller's buffer, past it.
const READ_BUFFER: usize = 64 << 10;
/// Write buffer of the frame writer, in bytes: control frames collect here; data
/// frames larger than this go to the socket directly.
const WRITE_BUFFER: usize = 64 << 10;

/// Reads control and data frames from a stream.
pub struct FrameReader<R> {
    inner: BufReader<R>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(READ_BUFFER, inner),
        }
    }

    /// Reads one control frame (post-authentication limits).
    ///
    /// # Returns
    ///
    /// `Ok(None)` when the peer closed the stream cleanly between frames; an error
    /// when it closed inside a frame, sent too much, or sent something malformed.
    pub fn read_message(&mut self) -> Result<Option<Message>> {
        read_frame(&mut self.inner, MAX_CONTROL)
    }

    /// Reads one control frame; a clean close here is an error too.
    pub fn expect_message(&mut self, waiting_for: &str) -> Result<Message> {
        self.read_message()?.ok_or_else(|| {
            fail(
                Kind::Network,
                format!("the peer closed the connection while we waited for {waiting_for}"),
            )
        })
    }

    /// Reads the length of the next data frame; 0 ends a file's data.
    pub fn read_data_len(&mut self) -> Result<usize> {
        let mut prefix = [0; LENGTH_PREFIX];
        read_all(&mut self.inner, &mut prefix)?;
        frame::check_len(u32::from_be_bytes(prefix), MAX_DATA_FRAME).classify(Kind::Protocol)
    }

    /// Reads some bytes (at least one, at most `buf.len()`) of the current data
    /// frame, so a caller can keep whatever arrived before a connection dies.
    pub fn read_data_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(0) => {
                    return Err(fail(
                        Kind::Network,
                        "the peer closed the connection in the middle of a frame",
                    ));
                }
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(net(err)),
            }
        }
    }
}

/// Writes control and data frames to a stream, buffered: call [`FrameWriter::flush`]
/// whenever the peer must see what was written before it can answer.
pub struct FrameWriter<W: Write> {
    inner: BufWriter<W>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner: BufWriter::with_capacity(WRITE_BUFFER, inner),
        }
    }

    /// Writes one control frame; one over the protocol's limit is refused here
    /// (untagged: it is a limit of the protocol, not the network's doing).
    pub fn write_message(&mut self, message: &Message) -> Result<()> {
        let bytes = frame::try_encode(message)
            .map_err(|err| anyhow::anyhow!("cannot send {message}: {err}"))?;
        self.inner.write_all(&bytes).map_err(net)
    }

    /// Writes one data frame. `frame` holds [`LENGTH_PREFIX`] bytes of room and then
    /// the payload; the room is filled with the length here, so prefix and payload
    /// leave in one write without copying the payload.
    pub fn write_data_frame(&mut self, frame: &mut [u8]) -> Result<()> {
        let payload = frame.len() - LENGTH_PREFIX;
        assert!(
            (1..=MAX_DATA_FRAME).contains(&payload),
            "data frames carry 1..=16 MiB"
        );
        let len = u32::try_from(payload).expect("checked against MAX_DATA_FRAME");
        frame[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
        self.inner.write_all(frame).map_err(net)
    }

    /// Writes the empty data frame that ends a file's data.
    pub fn write_end_of_data(&mut self) -> Result<()> {
        self.inner.write_all(&[0; LENGTH_PREFIX]).map_err(net)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(net)
    }

    pub fn get_ref(&self) -> &W {
        self.inner.get_ref()
    }
}

/// Both halves of one authenticated connection.
pub struct Connection<R: Read, W: Write> {
    pub reader: FrameReader<R>,
    pub writer: FrameWriter<W>,
}

impl Connection<TcpStream, TcpStream> {
    /// Splits a socket into a reader and a writer that can work from two threads.
    pub fn tcp(stream: TcpStream) -> Result<Self> {
        let reader = stream.try_clone().classify(Kind::Network)?;
        Ok(Connection {
            reader: FrameReader::new(reader),
            writer: FrameWriter::new(stream),
        })
    }
}

/// Reads one length-prefixed control frame of at most `max` bytes from `stream`.
///
/// # Returns
///
/// `Ok(None)` on a clean close before the first byte of a frame.
pub fn read_frame<R: Read>(stream: &mut R, max: usize) -> Result<Option<Message>> {
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
    let len = frame::check_len(u32::from_be_bytes(prefix), max).classify(Kind::Protocol)?;
    // The cap was checked above, so this allocation is bounded by `max`.
    let mut payload = vec![0; len];
    read_all(stream, &mut payload)?;
    frame::decode(&payload).classify(Kind::Protocol).map(Some)
}

/// A stream whose reads can time out: what the handshake needs for its deadline.
pub trait ReadTimeout {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl ReadTimeout for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl ReadTimeout for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

/// Reads from a stream until an absolute deadline: every read waits at most for the
/// time that is left, so a peer that trickles bytes cannot stretch it.
pub struct DeadlineReader<'a, S> {
    stream: &'a mut S,
    deadline: Instant,
}

impl<'a, S> DeadlineReader<'a, S> {
    pub fn new(stream: &'a mut S, deadline: Instant) -> Self {
        DeadlineReader { stream, deadline }
    }
}

impl<S: ReadTimeout + Read> Read for DeadlineReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake deadline passed",
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

/// Tags a stream error as a network failure, naming timeouts plainly.
pub fn net(err: io::Error) -> anyhow::Error {
    match err.kind() {
        // A socket read timeout surfaces as WouldBlock on Unix.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            fail(Kind::Network, "timed out: the peer went silent")
        }
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
    use std::io::Cursor;

    fn wire(messages: &[Message]) -> Vec<u8> {
        messages.iter().flat_map(frame::encode).collect()
    }

    #[test]
    fn messages_and_data_round_trip_through_a_buffer() {
        let mut writer = FrameWriter::new(Vec::new());
        writer
            .write_message(&Message::Data {
                index: 0,
                offset: 0,
            })
            .unwrap();
        let mut frame = b"....hello".to_vec();
        writer.write_data_frame(&mut frame).unwrap();
        writer.write_end_of_data().unwrap();
        writer.write_message(&Message::End).unwrap();
        writer.flush().unwrap();
        let bytes = writer.inner.into_inner().unwrap();

        let mut reader = FrameReader::new(Cursor::new(bytes));
        assert_eq!(
            reader.read_message().unwrap(),
            Some(Message::Data {
                index: 0,
                offset: 0
            })
        );
        assert_eq!(reader.read_data_len().unwrap(), 5);
        let mut payload = [0; 5];
        let n = reader.read_data_some(&mut payload).unwrap();
        assert_eq!(n, 5);
        assert_eq!(&payload, b"hello");
        assert_eq!(reader.read_data_len().unwrap(), 0);
        assert_eq!(reader.read_message().unwrap(), Some(Message::End));
        assert_eq!(reader.read_message().unwrap(), None, "clean close");
    }

    #[test]
    fn a_close_inside_a_frame_is_a_network_error() {
        let bytes = wire(&[Message::End]);
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
            kind_of(&reader.read_data_len().unwrap_err()),
            Some(Kind::Protocol)
        );

        let mut big = frame::encode(&Message::error(frame::ErrorCode::Io, "x".repeat(5000)));
        let err = read_frame(&mut Cursor::new(&mut big), frame::MAX_PREAUTH_CONTROL).unwrap_err();
        assert!(
            format!("{err:#}").contains("exceeds the limit of 4096"),
            "{err:#}"
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
