//! Listening: the accept loop that authenticates every connection on its own thread
//! (so a stalled peer delays nobody) before handing it to a session, and keeps
//! strangers from crowding out peers that hold the key.
//!
//! Connections that have not authenticated are bounded twice: at most a few per
//! address, and a few hundred in all. When either bound is reached, the *oldest*
//! such connection is cut, not the newcomer, as long as it has already had a fair
//! chance ([`SHED_AFTER`]; an honest handshake takes milliseconds): a flood of
//! stalled connections only ever cuts itself, and an honest peer from another
//! address is handshaking within moments. Only when every slot is held by a
//! connection younger than that is the newcomer told `busy`. Authenticated
//! sessions have their own limit (`--max-conns`).
//!
//! On SIGINT or SIGTERM it accepts nothing more, lets running sessions finish for
//! a grace, then cuts the rest: each ends as a cut session does, committing what
//! arrived whole and saying what it kept, before the process exits.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::event::{PollFd, PollFlags};

use super::addr::ListenAddr;
use super::options::Admission;
use super::socket;
use super::{Accepting, Handler};
use crate::error::{Classify, Kind, fail};
use crate::escape::escape;
use crate::proto::message::ErrorCode;
use crate::ui::report;

/// Set once a listener of this process cut its sessions after a stop's grace.
static CUT: AtomicBool = AtomicBool::new(false);

/// What a failed session says of how it ended: one whose connection ended after
/// a listener of this process cut it (a stop's grace ran out) says so, instead of
/// the connection's end (which reads as the peer leaving). A session that failed
/// for a reason of its own (a frame of the peer's, a timeout, a check) says that.
pub(crate) fn cut_by_us(err: anyhow::Error) -> anyhow::Error {
    match was_cut(&err) {
        true => cut(),
        false => err,
    }
}

/// [`cut_by_us`] for the log line of a session whose error the caller keeps (to
/// return it): the same words, the error's own otherwise.
pub(crate) fn said_of(err: &anyhow::Error) -> anyhow::Error {
    match was_cut(err) {
        true => cut(),
        false => anyhow::anyhow!("{err:#}"),
    }
}

/// Whether a stopped listener of this process is cutting its sessions: a receiver
/// then reads no further entry (its reading is cut too, but Linux still hands it
/// what its peer goes on sending), so that it commits and answers what arrived
/// before its writing is cut as well.
pub(crate) fn cutting() -> bool {
    CUT.load(Ordering::SeqCst)
}

fn was_cut(err: &anyhow::Error) -> bool {
    CUT.load(Ordering::SeqCst) && crate::error::connection_lost(err)
}

fn cut() -> anyhow::Error {
    fail(
        Kind::Network,
        "cut: this side was stopped (SIGINT or SIGTERM) and the session outlasted its grace",
    )
}

/// An unauthenticated connection this old may be cut to make room for a newcomer.
pub(crate) const SHED_AFTER: Duration = Duration::from_secs(1);
/// How long running sessions may go on after SIGINT or SIGTERM.
const GRACE: Duration = Duration::from_secs(5);
/// How long sessions cut after the grace may take to end and say what they kept
/// (a receiver commits what arrived whole first, and answers it), after their
/// reading is cut, and again after their writing is.
const CUT_WAIT: Duration = Duration::from_secs(2);
/// How often the accept loop looks up from `poll` to see whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// A connection that has not authenticated yet.
struct Stranger {
    id: u64,
    address: IpAddr,
    since: Instant,
    /// A handle to cut it with.
    stream: TcpStream,
}

/// Shared by the accept loop, the connection threads and the waiting main thread.
#[derive(Default)]
struct Listening {
    /// Unauthenticated connections, oldest first.
    strangers: Mutex<VecDeque<Stranger>>,
    next_id: AtomicU64,
    /// Authenticated sessions running.
    sessions: AtomicUsize,
    /// A handle to cut each running session's connection with, by its id.
    running: Mutex<HashMap<u64, TcpStream>>,
    /// Set by SIGINT or SIGTERM: accept no more.
    stop: Arc<AtomicBool>,
    /// A one-shot listener's session has started.
    claimed: AtomicBool,
}

impl Listening {
    /// Admits a new stranger, first cutting the oldest one of its address, or the
    /// oldest of all, where a bound is reached; `None` when there is no room (every
    /// slot taken by a connection younger than [`SHED_AFTER`]).
    fn admit(&self, stream: &TcpStream, address: IpAddr, options: &Admission) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let now = Instant::now();
        let mut strangers = self
            .strangers
            .lock()
            .expect("no panics while holding the lock");
        let same_address = strangers.iter().filter(|s| s.address == address).count();
        if same_address >= options.max_handshakes_per_address {
            let oldest = strangers.iter().position(|s| s.address == address)?;
            shed(&mut strangers, oldest, now)?;
        }
        if strangers.len() >= options.max_handshakes {
            shed(&mut strangers, 0, now)?;
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        strangers.push_back(Stranger {
            id,
            address,
            since: now,
            stream: handle,
        });
        Some(id)
    }

    /// The running sessions' connections, by id.
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.running
            .lock()
            .expect("no panics while holding the lock")
    }

    /// Cuts every running session's connection (`how`: its reading, or both ways):
    /// each then ends as one whose peer went, saying what it kept, and says that we
    /// cut it ([`cut_by_us`]).
    fn cut_running(&self, how: Shutdown) {
        CUT.store(true, Ordering::SeqCst);
        for stream in self.running().values() {
            let _ = stream.shutdown(how);
        }
    }

    /// The stranger `id` authenticated or left.
    fn forget(&self, id: u64) {
        let mut strangers = self
            .strangers
            .lock()
            .expect("no panics while holding the lock");
        if let Some(at) = strangers.iter().position(|s| s.id == id) {
            strangers.remove(at);
        }
    }
}

/// Binds a listener. A bare port listens on all interfaces, IPv6 and IPv4 where the
/// system allows both, else IPv4.
pub(crate) fn bind(addr: &ListenAddr) -> Result<TcpListener> {
    let listener = match addr {
        ListenAddr::AllInterfaces(port) => TcpListener::bind(("::", *port))
            .or_else(|_| TcpListener::bind(("0.0.0.0", *port)))
            .with_context(|| format!("cannot listen on port {port}")),
        ListenAddr::At(endpoint) => TcpListener::bind((endpoint.host.as_str(), endpoint.port))
            .with_context(|| format!("cannot listen on {endpoint}")),
    };
    listener.classify(Kind::Network)
}

/// Cuts the stranger at `at` if it has had its chance; `None` if it is too young.
fn shed(strangers: &mut VecDeque<Stranger>, at: usize, now: Instant) -> Option<()> {
    if now.duration_since(strangers[at].since) < SHED_AFTER {
        return None;
    }
    let oldest = strangers.remove(at)?;
    let _ = oldest.stream.shutdown(Shutdown::Both);
    Some(())
}

/// Accepts connections until the first authenticated session ends (`once`) or until
/// SIGINT/SIGTERM, authenticating each on its own thread. A connection that fails
/// the handshake is reported and does not count as a session. On a signal, running
/// sessions get a few seconds to finish; a second signal exits at once.
pub(crate) fn serve(
    listener: TcpListener,
    accepting: Arc<Accepting>,
    options: Admission,
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
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(listener, accepting, options, handler, shared, finished))
            .map_err(|err| anyhow::Error::new(err).context("cannot start a thread"))?;
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
    accepting: Arc<Accepting>,
    options: Admission,
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
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: pause rather than spin.
                report::warn(&format!("accept failed: {err}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Sessions are what --max-conns limits; peers that have not proven the key
        // are bounded separately above, so they cannot crowd out a real peer.
        if shared.sessions.load(Ordering::SeqCst) >= options.max_sessions {
            socket::refuse_busy(stream, "at the limit of sessions; try again later");
            report::line(&format!(
                "xfer: {peer}: refused, at the limit of {} sessions",
                options.max_sessions
            ));
            continue;
        }
        let Some(id) = shared.admit(&stream, peer.ip().to_canonical(), &options) else {
            socket::refuse_busy(
                stream,
                "too many connections in the handshake; try again later",
            );
            continue;
        };
        let (accepting, handler, shared, finished) = (
            accepting.clone(),
            handler.clone(),
            shared.clone(),
            finished.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                connection(
                    stream, peer, id, &accepting, options, &handler, &shared, &finished,
                )
            });
        if let Err(err) = spawned {
            report::warn(&format!("cannot start a thread for {peer}: {err}"));
        }
    }
}

/// One connection's life: the handshake, then (within the limits) its session.
#[allow(clippy::too_many_arguments)]
fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    accepting: &Accepting,
    options: Admission,
    handler: &Handler,
    shared: &Arc<Listening>,
    finished: &mpsc::Sender<Result<()>>,
) {
    // A handle to cut the session with after a stop's grace (see `SessionSlot`).
    let handle = stream.try_clone().ok();
    let authenticated = super::accept_on(&mut stream, accepting, options.timeouts, || {
        // A handshake that ends after a stop begins no session.
        if shared.stop.load(Ordering::SeqCst) {
            return Err((ErrorCode::Busy, "the listener is stopping".into()));
        }
        // Counted before `auth_ok` goes out, so the limit is never overshot.
        let slot = SessionSlot::take(shared.clone(), id, handle);
        if slot.running > options.max_sessions {
            return Err((
                ErrorCode::Busy,
                "at the session limit; try again later".into(),
            ));
        }
        if options.once && shared.claimed.swap(true, Ordering::SeqCst) {
            return Err((
                ErrorCode::Busy,
                "this listener serves one session and has it".into(),
            ));
        }
        Ok(Box::new(slot))
    });
    shared.forget(id);
    match authenticated {
        Err(err) => {
            report::line(&format!(
                "xfer: {peer}: rejected: {}",
                escape(&format!("{err:#}"))
            ));
            // After the line: a one-shot listener may end while this lingers.
            socket::linger_if_told(&stream, &err);
        }
        // `held` (this session's slots) lasts as long as the session.
        Ok((conn, held)) => {
            let result = handler(conn, peer);
            // The result goes before the slot: a stop's grace that sees no session
            // running must find a one-shot's result waiting.
            if options.once {
                let _ = finished.send(result);
            }
            drop(held);
        }
    }
}

/// A running session, counted, and its connection listed to be cut after a stop's
/// grace ([`Listening::cut_running`]), until dropped (a session that panics too).
struct SessionSlot {
    shared: Arc<Listening>,
    id: u64,
    /// Sessions running, this one included.
    running: usize,
}

impl SessionSlot {
    fn take(shared: Arc<Listening>, id: u64, handle: Option<TcpStream>) -> SessionSlot {
        let running = shared.sessions.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(handle) = handle {
            shared.running().insert(id, handle);
        }
        SessionSlot {
            shared,
            id,
            running,
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.shared.running().remove(&self.id);
        self.shared.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// After a stop request: no more connections; give running sessions [`GRACE`],
/// then cut those still running and give them [`CUT_WAIT`] to end and say what
/// they kept (each says it was cut: [`cut_by_us`]).
fn stop_gracefully(
    shared: &Listening,
    once: bool,
    first_result: &mpsc::Receiver<Result<()>>,
) -> Result<()> {
    let running = shared.sessions.load(Ordering::SeqCst);
    if running > 0 {
        report::line(&format!(
            "xfer: stopping: no new connections; waiting up to {} s for {} \
             (interrupt again to exit at once)",
            GRACE.as_secs(),
            report::plural(running, "running session"),
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
        // Cut, each session ends as one whose peer went: it commits what arrived
        // whole and says what it kept, in its summary, before the process exits.
        // Their reading first, so that a receiver still answers what it commits
        // (its sender then counts those files delivered); then, for a session
        // blocked writing to a peer that takes nothing, the writing too.
        for how in [Shutdown::Read, Shutdown::Both] {
            shared.cut_running(how);
            let until = Instant::now() + CUT_WAIT;
            while shared.sessions.load(Ordering::SeqCst) > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // What they lent themselves goes back (sessions still running included).
        crate::fs::sink::give_back_all();
        return Err(fail(
            Kind::Network,
            format!(
                "stopped by a signal; {} cut (partial files are kept for resume)",
                report::plural(cut, "running session")
            ),
        ));
    }
    if once {
        return Err(anyhow::anyhow!(
            "stopped by a signal before its session began"
        ));
    }
    report::line("xfer: stopped");
    Ok(())
}
