//! Sockets, and getting from a socket to an authenticated [`Connection`]: the
//! address forms users type ([`addr`]), connecting ([`connect`]), listening and its
//! admission control ([`listen`]), the handle that cuts a connection from any
//! thread ([`closer`]), the settings every socket gets ([`socket`]) and
//! the signals a listener heeds ([`signals`]); the plain option types they all
//! read ([`Link`], [`Timeouts`], [`Admission`]) are in `options.rs`.
//!
//! [`Initiating`] and [`Accepting`] say how this side authenticates; what happens
//! after the handshake is the caller's [`Handler`].

pub(crate) mod addr;
pub(crate) mod closer;
pub(crate) mod connect;
pub(crate) mod keyless;
pub(crate) mod listen;
mod options;
pub(crate) mod pace;
pub(crate) mod signals;
pub(crate) mod socket;

use std::any::Any;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub(crate) use self::addr::{Endpoint, ListenAddr, Remote};
use self::closer::Closer;
pub(crate) use self::options::{Admission, Link, Timeouts};
use self::pace::Paced;
use crate::error::{Classify, Kind, peer_code};
use crate::proto::handshake::{self, Acceptor, Initiator, KeyStore, Secret};
use crate::proto::message::{ErrorCode, Role};
use crate::proto::negotiated::{Features, Negotiated};
use crate::proto::wire::Connection;

/// A connection after the handshake, as sessions use it.
pub(crate) type TcpConnection = Connection<Paced<TcpStream>, Paced<TcpStream>, Closer>;

/// Splits an authenticated socket into a reader and a writer that can work from
/// two threads, each paced at `rate` if one is set.
fn connection(
    stream: TcpStream,
    negotiated: Negotiated,
    compress: Option<i32>,
    rate: Option<u64>,
) -> Result<TcpConnection> {
    let reader = stream.try_clone().classify(Kind::Network)?;
    let closer = Closer::tcp(stream.try_clone().classify(Kind::Network)?);
    Connection::new(
        Paced::new(reader, rate),
        Paced::new(stream, rate),
        negotiated,
        compress,
        closer,
    )
}

/// What to do with an authenticated connection: run its session(s).
pub(crate) type Handler = Arc<dyn Fn(TcpConnection, SocketAddr) -> Result<()> + Send + Sync>;

/// A per-connection check after `mac_I` verified (a user's session limit): a value
/// to hold while the connection lasts, or the refusal (`busy`).
pub(crate) type Admit =
    Arc<dyn Fn(&Negotiated) -> Result<Box<dyn Any + Send>, (ErrorCode, String)> + Send + Sync>;

/// How this side authenticates when it connects.
pub(crate) struct Initiating {
    pub(crate) role: Role,
    pub(crate) user: Option<String>,
    /// Chosen where the listener offers them.
    pub(crate) wanted: Features,
    /// Refused (`feature`) where the listener does not offer them.
    pub(crate) required: Features,
    /// Shared, so a reconnection (the shell's) uses the key derived at the first.
    pub(crate) secret: Arc<Secret>,
    /// A sender that meets a server speaks to it as a client.
    pub(crate) client_if_server: bool,
    /// This side's compression level, if it compresses what it sends.
    pub(crate) compress: Option<i32>,
    /// `--limit-rate`, bytes per second.
    pub(crate) rate: Option<u64>,
}

/// How this side authenticates when it listens.
pub(crate) struct Accepting {
    pub(crate) role: Role,
    /// Listed in `hello`.
    pub(crate) offered: Features,
    /// Refused (`feature`) when not in force.
    pub(crate) required: Features,
    pub(crate) realm: Option<String>,
    pub(crate) keys: Arc<dyn KeyStore>,
    /// Per-user limits, checked before `auth_ok`.
    pub(crate) admit: Option<Admit>,
    pub(crate) compress: Option<i32>,
    /// `--limit-rate`, bytes per second.
    pub(crate) rate: Option<u64>,
}

/// Connects to `to` (retrying for `wait`, also while the listener says it is busy)
/// and authenticates.
pub(crate) fn connect(
    to: &Endpoint,
    wait: Duration,
    timeouts: Timeouts,
    initiating: &Initiating,
) -> Result<(TcpConnection, SocketAddr)> {
    let give_up = Instant::now().checked_add(wait);
    let mut backoff = Duration::from_millis(100);
    loop {
        let left = give_up.map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        });
        match connect_once(to, left, timeouts, initiating) {
            Err(err) if peer_code(&err) == Some(ErrorCode::Busy) && left > backoff => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

fn connect_once(
    to: &Endpoint,
    wait: Duration,
    timeouts: Timeouts,
    initiating: &Initiating,
) -> Result<(TcpConnection, SocketAddr)> {
    let listener = match initiating.role {
        Role::Receiver => "sender",
        Role::Client => "server",
        _ => "receiver",
    };
    let mut stream = connect::connect(to, wait, timeouts.handshake, listener)?;
    let peer = stream.peer_addr().classify(Kind::Network)?;
    socket::configure(&stream, Some(timeouts.handshake))?;
    let deadline = Instant::now() + timeouts.handshake;
    let policy = Initiator {
        role: initiating.role,
        user: initiating.user.as_deref(),
        wanted: initiating.wanted,
        required: initiating.required,
        secret: &initiating.secret,
        client_if_server: initiating.client_if_server,
    };
    let negotiated = handshake::initiate(&mut stream, &policy, deadline)
        .inspect_err(|err| socket::linger_if_told(&stream, err))
        .with_context(|| format!("handshake with the listener at {to}"))?;
    socket::set_idle(&stream, timeouts.idle)?;
    let conn = connection(stream, negotiated, initiating.compress, initiating.rate)?;
    Ok((conn, peer))
}

/// What an accepted connection holds while it lasts (session slots), released when
/// dropped.
pub(crate) struct Held(#[allow(dead_code)] Vec<Box<dyn Any + Send>>);

/// Runs the acceptor's handshake on a fresh connection, with `limits` checked after
/// `mac_I` verified (and the per-user [`Admit`] before them).
pub(crate) fn accept_on(
    stream: &mut TcpStream,
    accepting: &Accepting,
    timeouts: Timeouts,
    limits: impl FnOnce() -> Result<Box<dyn Any + Send>, (ErrorCode, String)>,
) -> Result<(TcpConnection, Held)> {
    socket::configure(stream, Some(timeouts.handshake))?;
    let deadline = Instant::now() + timeouts.handshake;
    let policy = Acceptor {
        role: accepting.role,
        offered: accepting.offered,
        required: accepting.required,
        realm: accepting.realm.as_deref(),
        keys: &*accepting.keys,
    };
    let verified = handshake::accept(stream, &policy, deadline)?;
    let mut held = Vec::new();
    if let Some(admit) = &accepting.admit {
        match admit(verified.negotiated()) {
            Ok(slot) => held.push(slot),
            Err((code, why)) => return Err(verified.refuse(stream, code, &why)),
        }
    }
    match limits() {
        Ok(slot) => held.push(slot),
        Err((code, why)) => return Err(verified.refuse(stream, code, &why)),
    }
    let negotiated = verified.confirm(stream)?;
    socket::set_idle(stream, timeouts.idle)?;
    let stream = stream.try_clone().classify(Kind::Network)?;
    let conn = connection(stream, negotiated, accepting.compress, accepting.rate)?;
    Ok((conn, Held(held)))
}
