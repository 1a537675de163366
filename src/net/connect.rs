//! Connecting: name lookup and TCP connect under one deadline, retried while nobody
//! listens yet (`--wait`), so both ends of a transfer can start in any order.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::addr::Endpoint;
use crate::error::{Kind, tag};

/// First pause between connection attempts under `--wait`; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Connects to `endpoint`. While nobody listens there yet (refused, unreachable),
/// retries with backoff until `wait` has passed; each attempt (lookup included)
/// takes at most `attempt_timeout`. `listener` names what should be listening there
/// (a receiver, a sender, a server), for the hint when nothing is.
pub(crate) fn connect(
    endpoint: &Endpoint,
    wait: Duration,
    attempt_timeout: Duration,
    listener: &str,
) -> Result<TcpStream> {
    let give_up = Instant::now().checked_add(wait);
    let mut backoff = FIRST_RETRY;
    loop {
        let err = match connect_once(endpoint, attempt_timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => err,
        };
        let left = give_up.map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        });
        if !not_there_yet(&err) || left.is_zero() {
            let hint = match err.kind() {
                io::ErrorKind::ConnectionRefused if wait.is_zero() => {
                    format!("; start the {listener} first, or add --wait 30")
                }
                io::ErrorKind::ConnectionRefused => "; nobody listened there in time".into(),
                _ => String::new(),
            };
            let err =
                anyhow::Error::new(err).context(format!("cannot connect to {endpoint}{hint}"));
            return Err(tag(Kind::Network, err));
        }
        // Keep trying for the whole wait: the last pause ends when the wait does.
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_RETRY);
    }
}

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

/// One attempt at each address `endpoint` resolves to, the lookup included in the
/// time allowed.
fn connect_once(endpoint: &Endpoint, timeout: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    for addr in lookup(endpoint, timeout)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "timed out connecting")))
}

/// Resolves `endpoint`, giving up after `timeout`: the system's resolver cannot be
/// told a deadline, so it runs on a thread of its own that may finish later.
fn lookup(endpoint: &Endpoint, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    // Literal addresses need no resolver.
    if let Ok(ip) = endpoint.host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, endpoint.port)]);
    }
    let (found, answer) = mpsc::channel();
    let target = (endpoint.host.clone(), endpoint.port);
    std::thread::Builder::new()
        .name("lookup".into())
        .spawn(move || {
            let result = target
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>());
            let _ = found.send(result);
        })?;
    match answer.recv_timeout(timeout) {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the host name resolved to no address",
        )),
        Ok(result) => result.map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot resolve {}: {err}", endpoint.host),
            )
        }),
        Err(_) => Err(io::Error::other(format!(
            "looking up {} took too long",
            endpoint.host
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_keeps_trying_for_the_whole_time() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
        };
        let start = Instant::now();
        let err = connect(
            &endpoint,
            Duration::from_millis(1500),
            Duration::from_secs(1),
            "receiver",
        )
        .unwrap_err();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1500), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(format!("{err:#}").contains("nobody listened"), "{err:#}");
        let err = connect(
            &endpoint,
            Duration::ZERO,
            Duration::from_secs(1),
            "receiver",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("--wait 30"), "{err:#}");
    }
}
