//! The plain option types of the network layer: how this side meets its peer
//! ([`Link`]), how long peers may take ([`Timeouts`]) and how a listener behaves
//! ([`Admission`]). Plain data, built once by the command line: it must not
//! reach for sockets, the handshake or the accept loop, which all read it.

use std::time::Duration;

use super::addr::{Endpoint, ListenAddr};

/// How long peers may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// The whole handshake, from accept or connect to authenticated.
    pub(crate) handshake: Duration,
    /// Reads and writes after the handshake (`None`: no limit on reads, and
    /// [`super::socket::WRITE_STALL`] on writes).
    pub(crate) idle: Option<Duration>,
}

/// How this side meets its peer.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    /// Connect to a listening peer, retrying for up to `wait` while it is not there.
    Connect { to: Endpoint, wait: Duration },
    /// Listen for peers.
    Listen { at: ListenAddr, serve: Admission },
}

/// How a listener admits peers: one session or many, and how many at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    /// Exit after the first authenticated session, with its result.
    pub(crate) once: bool,
    /// Authenticated sessions at once; more get `busy`.
    pub(crate) max_sessions: usize,
    /// Connections still in the handshake, from all addresses together.
    pub(crate) max_handshakes: usize,
    /// Connections still in the handshake from one address.
    pub(crate) max_handshakes_per_address: usize,
    pub(crate) timeouts: Timeouts,
}

impl Admission {
    /// `max_sessions` authenticated sessions at once (one and then exit, if
    /// `once`), `per_address` handshakes at once from one address.
    pub(crate) fn new(
        once: bool,
        max_sessions: usize,
        per_address: usize,
        timeouts: Timeouts,
    ) -> Self {
        Admission {
            once,
            max_sessions,
            max_handshakes: Admission::MAX_HANDSHAKES,
            max_handshakes_per_address: per_address,
            timeouts,
        }
    }

    /// Connections in the handshake at once, in all; each has its own thread.
    pub(crate) const MAX_HANDSHAKES: usize = 256;
}
