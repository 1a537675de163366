//! Sockets: the `HOST:PORT` and `[ADDR:]PORT` forms users type, connecting and
//! listening, and the accept loop that authenticates every connection on its own
//! thread (so a stalled peer delays nobody) before handing it to a session.
//!
//! The same loop serves a listening receiver and a listening sender; what happens
//! after the handshake is the caller's handler.

use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::event::{PollFd, PollFlags};

use crate::conn::Connection;
use crate::error::{Classify, Kind, fail, tag};
use crate::escape::escape;
use crate::frame::{self, ErrorCode, Message, Role};
use crate::handshake::{self, SessionKey};
use crate::key::{self, Key};
use crate::report::{self, Reporter, Style};

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

/// Connects to `endpoint`. While nobody listens there yet (refused, unreachable),
/// retries with backoff until `wait` has passed, so both ends can start in any order.
pub fn connect(
    endpoint: &Endpoint,
    wait: Duration,
    attempt_timeout: Duration,
) -> Result<TcpStream> {
    let give_up = Instant::now() + wait;
    let mut backoff = FIRST_RETRY;
    loop {
        match connect_once(endpoint, attempt_timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) if not_there_yet(&err) && Instant::now() + backoff < give_up => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_RETRY);
            }
            Err(err) => {
                let err = anyhow::Error::new(err).context(format!("cannot connect to {endpoint}"));
                return Err(tag(Kind::Network, err));
            }
        }
    }
}

/// First pause between connection attempts under `--wait`; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);

fn not_there_yet(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::TimedOut
            | io::ErrorKind::AddrNotAvailable
    )
}

/// One attempt at each address `endpoint` resolves to.
fn connect_once(endpoint: &Endpoint, timeout: Duration) -> io::Result<TcpStream> {
    let mut last_err = None;
    for addr in (endpoint.host.as_str(), endpoint.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "the host name resolved to no address",
        )
    }))
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
    // Both sides buffer their frames and flush on purpose, so Nagle's algorithm only
    // delays: a 1 GiB transfer measured 3.48 s with TCP_NODELAY against 3.59 s
    // without, and small control frames (acks, `end`) no longer wait for an ACK.
    stream.set_nodelay(true).classify(Kind::Network)?;
    stream
        .set_write_timeout(Some(timeouts.idle))
        .classify(Kind::Network)?;
    let deadline = Instant::now() + timeouts.handshake;
    let session = if accepting {
        handshake::accept(&mut stream, key.bytes(), role, deadline)
    } else {
        handshake::initiate(&mut stream, key.bytes(), role, deadline)
    };
    let session = session
        .with_context(|| format!("handshake (deadline {} s)", timeouts.handshake.as_secs()))?;
    stream
        .set_read_timeout(Some(timeouts.idle))
        .classify(Kind::Network)?;
    Ok((Connection::tcp(stream)?, session))
}

/// What to do with an authenticated connection: run one session on it.
pub type Handler = Arc<
    dyn Fn(Connection<TcpStream, TcpStream>, SessionKey, SocketAddr) -> Result<()> + Send + Sync,
>;

/// How this side meets its peer.
#[derive(Debug, Clone)]
pub enum Link {
    /// Connect to a listening peer, retrying for up to `wait` while it is not there.
    Connect { to: Endpoint, wait: Duration },
    /// Listen for peers.
    Listen { at: ListenAddr, serve: ServeOptions },
}

/// Runs `handler` on the one authenticated connection (connecting), or on each
/// (listening). A listener without a key makes one and says how to use it;
/// `listening` hears the bound address first.
pub fn run(
    link: &Link,
    role: Role,
    key_file: Option<&std::path::Path>,
    timeouts: Timeouts,
    listening: impl FnOnce(SocketAddr),
    handler: Handler,
) -> Result<()> {
    match link {
        Link::Connect { to, wait } => {
            let key = key::load(key_file)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no key: pass --key-file PATH or set ${} (a listener started without a key prints one)",
                    key::KEY_ENV
                )
            })?;
            let stream = connect(to, *wait, timeouts.handshake)?;
            let peer = stream.peer_addr().classify(Kind::Network)?;
            let (conn, session) = authenticate(stream, &key, role, false, timeouts)?;
            handler(conn, session, peer)
        }
        Link::Listen { at, serve: options } => {
            // Before anyone can learn our address, so that no early signal kills us unhandled.
            let stop = stop_on_signals()?;
            let listener = bind(at)?;
            let local = listener.local_addr().classify(Kind::Network)?;
            let key = match key::load(key_file)? {
                Some(key) => key,
                None => key::generate_for_listener(local, role)?,
            };
            listening(local);
            serve(listener, key, role, *options, stop, handler)
        }
    }
}

/// [`run`] with what every command reports around it: the `listening` line (or
/// event), and a summary when the run fails before any session began (cannot
/// connect, wrong key), which a session would otherwise have printed itself.
pub fn run_reported(
    link: &Link,
    role: Role,
    key_file: Option<&std::path::Path>,
    timeouts: Timeouts,
    style: Style,
    verb: &str,
    handler: Handler,
) -> Result<()> {
    let began = Arc::new(AtomicBool::new(false));
    let handler: Handler = {
        let began = began.clone();
        Arc::new(move |conn, session, peer| {
            began.store(true, Ordering::SeqCst);
            handler(conn, session, peer)
        })
    };
    let listening = |local: SocketAddr| Reporter::new(style).listening(&local.to_string());
    let result = run(link, role, key_file, timeouts, listening, handler);
    // A serving process logged each session already.
    if result.is_err() && !began.load(Ordering::SeqCst) && !style.serving {
        Reporter::new(style).finish(verb, &result);
    }
    result
}

/// How a listener behaves.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Exit after the first authenticated session, with its result.
    pub once: bool,
    /// Authenticated sessions at once; more get `busy`.
    pub max_conns: usize,
    pub timeouts: Timeouts,
}

/// Connections that may be in the handshake at once, each with its own thread;
/// more are told `busy` and closed. Each lasts at most the handshake deadline.
const MAX_HANDSHAKES: usize = 256;
/// How long running sessions may go on after SIGINT or SIGTERM.
const GRACE: Duration = Duration::from_secs(5);
/// How often the accept loop looks up from `poll` to see whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Shared by the accept loop, the connection threads and the waiting main thread.
#[derive(Default)]
struct Listening {
    /// Connections that have not finished the handshake.
    handshakes: AtomicUsize,
    /// Authenticated sessions running.
    sessions: AtomicUsize,
    /// Set by SIGINT or SIGTERM: accept no more.
    stop: Arc<AtomicBool>,
    /// A one-shot listener's session has started.
    claimed: AtomicBool,
}

/// Accepts connections until the first authenticated session ends (`once`) or until
/// SIGINT/SIGTERM, authenticating each on its own thread. A connection that fails
/// the handshake is reported and does not count as a session. On a signal, running
/// sessions get a few seconds to finish; a second signal exits at once.
pub fn serve(
    listener: TcpListener,
    key: Key,
    role: Role,
    options: ServeOptions,
    stop: Arc<AtomicBool>,
    handler: Handler,
) -> Result<()> {
    let shared = Arc::new(Listening {
        stop,
        ..Listening::default()
    });
    let (finished, first_result) = mpsc::channel::<Result<()>>();
    {
        let shared = shared.clone();
        std::thread::spawn(move || {
            accept_loop(listener, key, role, options, handler, shared, finished)
        });
    }
    loop {
        match first_result.recv_timeout(STOP_CHECK) {
            Ok(result) => return result,
            // The accept loop ends on a stop request too: check for that first.
            Err(_) if shared.stop.load(Ordering::SeqCst) => {
                return stop_gracefully(&shared, options.once, &first_result);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail(
                    Kind::Network,
                    "the listener stopped accepting connections",
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    key: Key,
    role: Role,
    options: ServeOptions,
    handler: Handler,
    shared: Arc<Listening>,
    finished: mpsc::Sender<Result<()>>,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        // Wait in poll rather than accept, so a stop request is seen within STOP_CHECK.
        let mut fds = [PollFd::new(&listener, PollFlags::IN)];
        let timeout = rustix::event::Timespec::try_from(STOP_CHECK).expect("a small constant");
        if !matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
            continue;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
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
        // Sessions are what --max-conns limits; peers that have not proven the key
        // have a separate, larger allowance and the handshake deadline, so they
        // cannot crowd out a real peer.
        if shared.sessions.load(Ordering::SeqCst) >= options.max_conns {
            refuse_busy(stream);
            report::line(&format!(
                "xfer: {peer}: refused, at the limit of {} sessions",
                options.max_conns
            ));
            continue;
        }
        if shared.handshakes.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
            shared.handshakes.fetch_sub(1, Ordering::SeqCst);
            refuse_busy(stream);
            continue;
        }
        let (key, handler, shared, finished) = (
            key.clone(),
            handler.clone(),
            shared.clone(),
            finished.clone(),
        );
        std::thread::spawn(move || {
            let handshake = Counted::new(&shared.handshakes, false);
            let peer_addr = stream.peer_addr();
            let authenticated = authenticate(stream, &key, role, true, options.timeouts);
            drop(handshake);
            match authenticated {
                Err(err) => report::line(&format!(
                    "xfer: {peer}: rejected: {}",
                    escape(&format!("{err:#}"))
                )),
                Ok((mut conn, session)) => {
                    let session_slot = Counted::new(&shared.sessions, true);
                    let over_limit = shared.sessions.load(Ordering::SeqCst) > options.max_conns;
                    if over_limit || (options.once && shared.claimed.swap(true, Ordering::SeqCst)) {
                        drop(session_slot);
                        let why = if over_limit {
                            "at the session limit; try again later"
                        } else {
                            "this listener serves one session and has it"
                        };
                        let busy = Message::error(ErrorCode::Busy, why);
                        let _ = conn
                            .writer
                            .write_message(&busy)
                            .and_then(|()| conn.writer.flush());
                        return;
                    }
                    let peer_addr =
                        peer_addr.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    let result = handler(conn, session, peer_addr);
                    drop(session_slot);
                    if options.once {
                        let _ = finished.send(result);
                    }
                }
            }
        });
    }
}

/// After a stop request: no more connections; give running sessions [`GRACE`].
fn stop_gracefully(
    shared: &Listening,
    once: bool,
    first_result: &mpsc::Receiver<Result<()>>,
) -> Result<()> {
    let running = shared.sessions.load(Ordering::SeqCst);
    if running > 0 {
        report::line(&format!(
            "xfer: stopping: no new connections; waiting up to {} s for {running} running session(s) \
             (interrupt again to exit at once)",
            GRACE.as_secs()
        ));
    }
    let until = Instant::now() + GRACE;
    while shared.sessions.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        if let Ok(result) = first_result.recv_timeout(Duration::from_millis(50)) {
            return result; // the one-shot session finished in time
        }
    }
    let cut = shared.sessions.load(Ordering::SeqCst);
    if cut > 0 {
        return Err(fail(
            Kind::Network,
            format!(
                "stopped by a signal; {cut} running session(s) cut (partial files are kept for resume)"
            ),
        ));
    }
    if once {
        return Err(anyhow::anyhow!(
            "stopped by a signal before any session completed"
        ));
    }
    report::line("xfer: stopped");
    Ok(())
}

/// A flag that SIGINT and SIGTERM set; a second one exits at once (130 is the
/// shell's code for an interrupt).
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(stop)
}

/// Counts something as running until dropped.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// `increment`: count it now (else it was counted by the caller).
    fn new(counter: &'a AtomicUsize, increment: bool) -> Self {
        if increment {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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

/// Tells a peer over a limit so, in place of `hello`, and closes. The write cannot
/// block the accept loop: a fresh socket's buffer takes this small frame at once,
/// and a peer that takes nothing gets nothing.
fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
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
