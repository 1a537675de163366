//! Sockets: the `HOST:PORT` and `[ADDR:]PORT` forms users type, connecting and
//! listening, and the accept loop that authenticates every connection on its own
//! thread (so a stalled peer delays nobody) before handing it to a session.
//!
//! The same loop serves a listening receiver and a listening sender; what happens
//! after the handshake is the caller's handler.

use std::fmt;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::conn::Connection;
use crate::error::{Classify, Kind, fail};
use crate::escape::escape;
use crate::frame::{self, ErrorCode, Message, Role};
use crate::handshake::{self, SessionKey};
use crate::key::Key;
use crate::report;

/// How long a refused peer gets to take its `busy` frame, at most.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where to connect: a host name, IPv4 address or bracketed IPv6 address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("expected HOST:PORT, got {text:?}"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port {port:?} in {text:?}"))?;
        if port == 0 {
            return Err(format!("cannot connect to port 0 in {text:?}"));
        }
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed
                .strip_suffix(']')
                .ok_or_else(|| format!("unclosed '[' in {text:?}"))?,
            None if host.contains(':') => {
                return Err(format!(
                    "write an IPv6 address in brackets: [{host}]:{port}"
                ));
            }
            None => host,
        };
        if host.is_empty() {
            return Err(format!("missing host in {text:?}"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where to listen: a port on all interfaces, or a given address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    AllInterfaces(u16),
    At(Endpoint),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = text.parse::<u16>() {
            return Ok(ListenAddr::AllInterfaces(port));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("expected PORT or ADDR:PORT, got {text:?}"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port {port:?} in {text:?}"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(format!("missing address in {text:?}"));
        }
        Ok(ListenAddr::At(Endpoint {
            host: host.to_string(),
            port,
        }))
    }
}

/// How long peers may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole handshake, from accept or connect to authenticated.
    pub handshake: Duration,
    /// Any single read or write after the handshake.
    pub idle: Duration,
}

/// Binds a listener. A bare port listens on all interfaces, IPv6 and IPv4 where the
/// system allows both, else IPv4.
pub fn bind(addr: &ListenAddr) -> Result<TcpListener> {
    let listener = match addr {
        ListenAddr::AllInterfaces(port) => TcpListener::bind(("::", *port))
            .or_else(|_| TcpListener::bind(("0.0.0.0", *port)))
            .with_context(|| format!("cannot listen on port {port}")),
        ListenAddr::At(endpoint) => TcpListener::bind((endpoint.host.as_str(), endpoint.port))
            .with_context(|| format!("cannot listen on {endpoint}")),
    };
    listener.classify(Kind::Network)
}

/// Connects to `endpoint`, trying each address it resolves to.
pub fn connect(endpoint: &Endpoint) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", endpoint.host))
        .classify(Kind::Network)?
        .collect();
    let mut last_err = None;
    for addr in addrs {
        match TcpStream::connect(addr) {
            Ok(stream) => return Ok(stream),
            Err(err) => last_err = Some(err),
        }
    }
    let err = last_err.map_or_else(
        || anyhow::anyhow!("{} resolved to no address", endpoint.host),
        anyhow::Error::new,
    );
    Err(err)
        .with_context(|| format!("cannot connect to {endpoint}"))
        .classify(Kind::Network)
}

/// Authenticates a fresh connection from either end and readies it for a session:
/// the handshake under its deadline, then the idle timeout on every read and write.
pub fn authenticate(
    mut stream: TcpStream,
    key: &Key,
    role: Role,
    accepting: bool,
    timeouts: Timeouts,
) -> Result<(Connection<TcpStream, TcpStream>, SessionKey)> {
    stream
        .set_write_timeout(Some(timeouts.idle))
        .classify(Kind::Network)?;
    let deadline = Instant::now() + timeouts.handshake;
    let session = if accepting {
        handshake::accept(&mut stream, key.bytes(), role, deadline)?
    } else {
        handshake::initiate(&mut stream, key.bytes(), role, deadline)?
    };
    stream
        .set_read_timeout(Some(timeouts.idle))
        .classify(Kind::Network)?;
    Ok((Connection::tcp(stream)?, session))
}

/// What to do with an authenticated connection: run one session on it.
pub type Handler = Arc<
    dyn Fn(Connection<TcpStream, TcpStream>, SessionKey, SocketAddr) -> Result<()> + Send + Sync,
>;

/// How a listener behaves.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Exit after the first authenticated session, with its result.
    pub once: bool,
    /// Connections handled at once (handshakes included); more get `busy`.
    pub max_conns: usize,
    pub timeouts: Timeouts,
}

/// Accepts connections until the first authenticated session ends (`once`) or
/// forever, authenticating each on its own thread. A connection that fails the
/// handshake is reported and does not count as a session.
pub fn serve(
    listener: TcpListener,
    key: Key,
    role: Role,
    options: ServeOptions,
    handler: Handler,
) -> Result<()> {
    let (finished, first_result) = mpsc::channel::<Result<()>>();
    let active = Arc::new(AtomicUsize::new(0));
    let claimed = Arc::new(AtomicBool::new(false));
    let accept_loop = {
        let finished = finished.clone();
        move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(err) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        report::warn(&format!("accept failed: {err}"));
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let peer = stream
                    .peer_addr()
                    .map_or_else(|_| "unknown peer".to_string(), |a| a.to_string());
                if active.fetch_add(1, Ordering::SeqCst) >= options.max_conns {
                    active.fetch_sub(1, Ordering::SeqCst);
                    refuse_busy(stream);
                    report::line(&format!(
                        "xfer: {peer}: refused, at the limit of {} connections",
                        options.max_conns
                    ));
                    continue;
                }
                let (key, active, claimed, finished, handler) = (
                    key.clone(),
                    active.clone(),
                    claimed.clone(),
                    finished.clone(),
                    handler.clone(),
                );
                std::thread::spawn(move || {
                    let _slot = Slot(active);
                    let peer_addr = stream.peer_addr();
                    match authenticate(stream, &key, role, true, options.timeouts) {
                        Err(err) => report::line(&format!(
                            "xfer: {peer}: rejected: {}",
                            escape(&format!("{err:#}"))
                        )),
                        Ok((mut conn, _))
                            if options.once && claimed.swap(true, Ordering::SeqCst) =>
                        {
                            let busy = Message::error(
                                ErrorCode::Busy,
                                "this listener serves one session and has it",
                            );
                            let _ = conn
                                .writer
                                .write_message(&busy)
                                .and_then(|()| conn.writer.flush());
                        }
                        Ok((conn, session)) => {
                            let peer_addr =
                                peer_addr.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                            let result = handler(conn, session, peer_addr);
                            if options.once {
                                let _ = finished.send(result);
                            }
                        }
                    }
                });
            }
        }
    };
    std::thread::spawn(accept_loop);
    drop(finished);
    first_result.recv().unwrap_or_else(|_| {
        Err(fail(
            Kind::Network,
            "the listener stopped accepting connections",
        ))
    })
}

/// How long a failed session keeps reading after its last word, at most.
const LINGER: Duration = Duration::from_secs(2);
/// How much a failed session reads while lingering, at most, in bytes.
const LINGER_BYTES: u64 = 64 << 20;

/// After a session failed: stop writing, then read (and drop) what the peer still
/// sends for a moment. Closing a socket with unread data makes the kernel send a
/// reset, which can destroy the error frame we just sent before the peer reads it.
pub fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let until = Instant::now() + LINGER;
    let mut sink = [0; 64 << 10];
    let mut drained = 0;
    while Instant::now() < until && drained < LINGER_BYTES {
        match std::io::Read::read(&mut &*stream, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n as u64,
        }
    }
}

/// Counts a connection as active until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tells a peer over the connection limit so, in place of `hello`, and closes.
fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(BUSY_WRITE_TIMEOUT));
    let busy = Message::error(ErrorCode::Busy, "at the connection limit; try again later");
    let _ = stream.write_all(&frame::encode(&busy));
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_names_ipv4_and_bracketed_ipv6() {
        let parsed: Endpoint = "example.org:9000".parse().unwrap();
        assert_eq!(
            parsed,
            Endpoint {
                host: "example.org".into(),
                port: 9000
            }
        );
        let parsed: Endpoint = "127.0.0.1:1".parse().unwrap();
        assert_eq!(parsed.host, "127.0.0.1");
        let parsed: Endpoint = "[::1]:9000".parse().unwrap();
        assert_eq!(parsed.host, "::1");
        assert_eq!(parsed.to_string(), "[::1]:9000");
        for bad in [
            "host",
            "host:",
            ":9000",
            "host:0",
            "host:65536",
            "::1:9000",
            "[::1:9000",
            "h:x",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses_parse_port_alone_or_with_address() {
        assert_eq!(
            "9000".parse::<ListenAddr>().unwrap(),
            ListenAddr::AllInterfaces(9000)
        );
        assert_eq!(
            "0".parse::<ListenAddr>().unwrap(),
            ListenAddr::AllInterfaces(0)
        );
        let ListenAddr::At(at) = "127.0.0.1:0".parse::<ListenAddr>().unwrap() else {
            panic!()
        };
        assert_eq!((at.host.as_str(), at.port), ("127.0.0.1", 0));
        let ListenAddr::At(at) = "[::1]:5".parse::<ListenAddr>().unwrap() else {
            panic!()
        };
        assert_eq!(at.host, "::1");
        for bad in ["", "x", ":1", "1.2.3.4:", "70000"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }
}
