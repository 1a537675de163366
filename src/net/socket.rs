//! Settings every connection gets, and the few things done to a raw socket: a
//! `busy` refusal before the handshake, and lingering after a failure so the peer
//! reads our error frame instead of a reset.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::error::{Classify, Kind};
use crate::proto::message::{self, ErrorCode, Message};
use crate::proto::wire::ReadTimeout;

/// TCP keepalive: the first probe after this long without traffic, then one every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] in all: a peer that vanished (its
/// machine off, the link gone) is noticed within about a minute, while a live one may
/// stay silent for hours (a pipeline whose producer pauses).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;
/// A peer that takes nothing we send for this long is given up, unless
/// `--idle-timeout` says otherwise: it stopped reading (or vanished while we were
/// sending, which keepalive cannot see).
pub(crate) const WRITE_STALL: Duration = Duration::from_secs(120);

/// Readies a fresh connection: no Nagle delay, dead peers detected by keepalive,
/// and the idle timeout (see [`set_idle`]).
pub(crate) fn configure(stream: &TcpStream, idle: Option<Duration>) -> Result<()> {
    // Both sides buffer their frames and flush on purpose, so Nagle's algorithm only
    // delays: a 1 GiB transfer measured 3.48 s with TCP_NODELAY against 3.59 s
    // without, and small control frames (acks, `end`) no longer wait for an ACK.
    stream.set_nodelay(true).classify(Kind::Network)?;
    use rustix::net::sockopt;
    let keepalive = sockopt::set_socket_keepalive(stream, true)
        .and_then(|()| sockopt::set_tcp_keepidle(stream, KEEPALIVE_IDLE))
        .and_then(|()| sockopt::set_tcp_keepintvl(stream, KEEPALIVE_INTERVAL))
        .and_then(|()| sockopt::set_tcp_keepcnt(stream, KEEPALIVE_PROBES));
    keepalive
        .map_err(std::io::Error::from)
        .classify(Kind::Network)?;
    set_idle(stream, idle)
}

/// Applies the idle timeout to reads (`None`: wait as long as it takes; keepalive
/// still notices a vanished peer) and to writes (`None`: [`WRITE_STALL`]).
pub(crate) fn set_idle(stream: &TcpStream, idle: Option<Duration>) -> Result<()> {
    stream.set_read_timeout(idle).classify(Kind::Network)?;
    stream
        .set_write_timeout(Some(idle.unwrap_or(WRITE_STALL)))
        .classify(Kind::Network)
}

/// The handshake reads a bare socket against its deadline.
impl ReadTimeout for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// Tells a peer over a limit so, in place of `hello`, and closes. The write cannot
/// block the accept loop: a fresh socket's buffer takes this small frame at once,
/// and a peer that takes nothing gets nothing.
pub(crate) fn refuse_busy(mut stream: TcpStream, why: &str) {
    let _ = stream.set_nonblocking(true);
    let busy = Message::error(ErrorCode::Busy, why);
    let _ = stream.write_all(&message::encode(&busy));
    let _ = stream.shutdown(Shutdown::Write);
}

/// How long a failed session keeps reading after its last word, at most: the
/// protocol's second (section 3).
const LINGER: Duration = Duration::from_secs(1);
/// Lingers if the failure `err` was told to the peer in an error frame (it carries
/// a wire code), so that the frame arrives before the close: the handshake's
/// refusals end here.
pub(crate) fn linger_if_told(stream: &TcpStream, err: &anyhow::Error) {
    if crate::error::wire_code(err).is_some() {
        linger(stream);
    }
}

/// After an error frame went out: stop writing, then read (and drop) what the peer
/// still sends for up to [`LINGER`]. Closing a socket with unread data makes the
/// kernel send a reset, which can destroy the error frame we just sent before the
/// peer reads it. Bounded by time alone, as section 3 says: a byte cap would cut a
/// fast peer short (a 66 MiB frame crosses loopback in a tenth of a second).
pub(crate) fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    let mut sink = [0; 64 << 10];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
