//! A TCP relay for tests: listens on 127.0.0.1, forwards every connection to a target
//! port, and can delay every byte, cut the connection after N bytes from the
//! client, or flip one bit. It counts what it forwarded, each way.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// What the relay does to the bytes it forwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Each byte arrives this long after it was sent, in both directions.
    pub delay: Duration,
    /// Close both sides once this many client-to-server bytes went through.
    pub cut_after: Option<u64>,
    /// Invert the lowest bit of the client-to-server byte at this offset.
    pub flip_at: Option<u64>,
    /// Forward this many client-to-server bytes, then nothing more, keeping the
    /// connection open (a peer that hangs) until the relay is dropped.
    pub stall_after: Option<u64>,
    /// At most this many bytes per second, in both directions.
    pub throttle: Option<u64>,
}

impl Faults {
    /// Only a cut, once `bytes` client-to-server bytes went through.
    pub fn cut_after(bytes: u64) -> Faults {
        Faults {
            cut_after: Some(bytes),
            ..Faults::default()
        }
    }
}

pub struct Relay {
    pub port: u16,
    forwarded: Arc<AtomicU64>,
    returned: Arc<AtomicU64>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Relay {
    /// Relays connections to 127.0.0.1:`target` with `faults`, until the test ends.
    pub fn start(target: u16, faults: Faults) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarded = Arc::new(AtomicU64::new(0));
        let returned = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let counter = forwarded.clone();
        let back_counter = returned.clone();
        let released = dropped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (counter, released, released_too) =
                    (counter.clone(), released.clone(), released.clone());
                let back_counter = back_counter.clone();
                std::thread::spawn(move || pump(client, server, faults, Some(counter), released));
                let back = Faults {
                    cut_after: None,
                    flip_at: None,
                    stall_after: None,
                    ..faults
                };
                std::thread::spawn(move || pump(s2, c2, back, Some(back_counter), released_too));
            }
        });
        Relay {
            port,
            forwarded,
            returned,
            dropped,
        }
    }

    /// Client-to-server bytes forwarded so far, over all connections.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Server-to-client bytes forwarded so far, over all connections.
    pub fn returned(&self) -> u64 {
        self.returned.load(Ordering::SeqCst)
    }

    /// Bytes forwarded both ways so far.
    pub fn both_ways(&self) -> u64 {
        self.forwarded() + self.returned()
    }
}

/// Copies `from` to `to` with the faults applied; with a delay, a second thread
/// writes each piece when it is due.
fn pump(
    mut from: TcpStream,
    to: TcpStream,
    faults: Faults,
    counter: Option<Arc<AtomicU64>>,
    relay_dropped: Arc<AtomicBool>,
) {
    let (pieces, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let mut to = to.try_clone().unwrap();
        std::thread::spawn(move || {
            for (when, piece) in due {
                let wait = when.saturating_duration_since(Instant::now());
                std::thread::sleep(wait);
                if to.write_all(&piece).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let mut offset: u64 = 0;
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut piece = buf[..n].to_vec();
        if let Some(limit) = faults.cut_after.or(faults.stall_after) {
            let left = limit.saturating_sub(offset) as usize;
            piece.truncate(left);
        }
        if let Some(at) = faults.flip_at
            && (offset..offset + piece.len() as u64).contains(&at)
        {
            piece[(at - offset) as usize] ^= 1;
        }
        offset += piece.len() as u64;
        if let Some(counter) = &counter {
            counter.fetch_add(piece.len() as u64, Ordering::SeqCst);
        }
        let len = piece.len() as u64;
        if pieces.send((Instant::now() + faults.delay, piece)).is_err() {
            break;
        }
        if let Some(rate) = faults.throttle {
            std::thread::sleep(Duration::from_secs_f64(len as f64 / rate as f64));
        }
        if faults.cut_after.is_some_and(|limit| offset >= limit) {
            break;
        }
        if faults.stall_after.is_some_and(|limit| offset >= limit) {
            // Hang: read nothing more, close nothing, until the relay goes away.
            while !relay_dropped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            break;
        }
    }
    drop(pieces);
    let _ = writer.join();
    if faults.cut_after.is_some_and(|limit| offset >= limit) {
        // A cut: both sides see the connection end.
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}
