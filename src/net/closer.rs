//! The handle that cuts a TCP connection from any thread, lifts the socket's
//! read timeout while a sender streams, and lingers after an error frame
//! ([`Closer`]): the socket side of
//! [`Hangup`], which the codec's `Connection` holds without knowing that it is a
//! socket. It must not reach for frames, sessions or the handshake.

use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::proto::wire::Hangup;

/// A handle that shuts a connection down, so that a thread blocked on it wakes up.
#[derive(Debug)]
pub(crate) struct Closer(Option<TcpStream>);

impl Closer {
    pub(crate) fn tcp(stream: TcpStream) -> Closer {
        Closer(Some(stream))
    }

    /// For connections that are not sockets (tests, fuzzing): closing does nothing.
    pub(crate) fn none() -> Closer {
        Closer(None)
    }

    pub(crate) fn close(&self) {
        if let Some(stream) = &self.0 {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// The socket, for lingering after an error.
    pub(crate) fn socket(&self) -> Option<&TcpStream> {
        self.0.as_ref()
    }
}

impl Hangup for Closer {
    fn close(&self) {
        Closer::close(self);
    }

    fn stop_reading(&self) {
        if let Some(stream) = &self.0 {
            let _ = stream.shutdown(Shutdown::Read);
        }
    }

    fn idle_timeout(&self) -> Option<Duration> {
        self.0
            .as_ref()
            .and_then(|stream| stream.read_timeout().ok().flatten())
    }

    fn linger(&self) {
        if let Some(stream) = &self.0 {
            super::socket::linger(stream);
        }
    }

    fn without_read_timeout(&self) -> impl Sized + '_ {
        let previous = self
            .0
            .as_ref()
            .and_then(|stream| stream.read_timeout().ok().flatten());
        if let Some(stream) = &self.0 {
            let _ = stream.set_read_timeout(None);
        }
        ReadTimeoutPaused {
            closer: self,
            previous,
        }
    }
}

/// The socket's read timeout, put back when dropped (see
/// [`Hangup::without_read_timeout`]).
struct ReadTimeoutPaused<'a> {
    closer: &'a Closer,
    previous: Option<Duration>,
}

impl Drop for ReadTimeoutPaused<'_> {
    fn drop(&mut self) {
        if let (Some(stream), Some(previous)) = (&self.closer.0, self.previous) {
            let _ = stream.set_read_timeout(Some(previous));
        }
    }
}
