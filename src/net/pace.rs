//! `--limit-rate`: a token bucket around a socket. Bytes may leave (or be taken
//! in) only as fast as tokens accrue; the bucket holds at most one data frame's
//! worth, so the average stays at the rate and a burst is never more than a frame.
//! The frames above never know; without a rate the wrapper only passes through.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proto::wire::ReadTimeout;

/// The most a bucket holds, in bytes: one data frame of file bytes.
const BURST: u64 = 1 << 20;

/// A shared token bucket: the reading and writing halves of one connection each
/// have their own (a rate limits each direction).
#[derive(Debug)]
struct Bucket {
    rate: u64,
    /// Tokens available, in bytes (may go negative by one write's overshoot).
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            // Start empty: the first burst is earned, so short transfers keep the rate too.
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    fn burst(&self) -> u64 {
        BURST.min(self.rate.max(1))
    }

    /// Waits until `wanted` bytes may move (at most a burst), then takes them;
    /// returns how many.
    fn take(&mut self, wanted: usize) -> usize {
        let wanted = (wanted as u64).min(self.burst()).max(1);
        loop {
            let now = Instant::now();
            let earned = now.duration_since(self.last).as_secs_f64() * self.rate as f64;
            self.tokens = (self.tokens + earned).min(self.burst() as f64);
            self.last = now;
            if self.tokens >= wanted as f64 {
                self.tokens -= wanted as f64;
                return wanted as usize;
            }
            let missing = wanted as f64 - self.tokens;
            std::thread::sleep(Duration::from_secs_f64(missing / self.rate as f64));
        }
    }

    /// Returns tokens taken for bytes that did not move (a short read).
    fn refund(&mut self, unused: usize) {
        self.tokens += unused as f64;
    }
}

/// A socket half, paced when a rate is set.
#[derive(Debug)]
pub(crate) struct Paced<S> {
    inner: S,
    bucket: Option<Arc<Mutex<Bucket>>>,
}

impl<S> Paced<S> {
    /// `inner` limited to `rate` bytes per second (`None`: not limited).
    pub(crate) fn new(inner: S, rate: Option<u64>) -> Self {
        Paced {
            inner,
            bucket: rate.map(|rate| Arc::new(Mutex::new(Bucket::new(rate)))),
        }
    }

    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    fn allowance(&self, wanted: usize) -> usize {
        match &self.bucket {
            Some(bucket) => bucket
                .lock()
                .expect("no panics while holding the lock")
                .take(wanted),
            None => wanted,
        }
    }
}

impl<S: Write> Write for Paced<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let allowed = self.allowance(buf.len());
        let written = self.inner.write(&buf[..allowed])?;
        if let Some(bucket) = &self.bucket {
            bucket
                .lock()
                .expect("no panics while holding the lock")
                .refund(allowed - written);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Read> Read for Paced<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let allowed = self.allowance(buf.len());
        let read = self.inner.read(&mut buf[..allowed]);
        if let Some(bucket) = &self.bucket {
            let got = read.as_ref().map_or(0, |n| *n);
            bucket
                .lock()
                .expect("no panics while holding the lock")
                .refund(allowed - got);
        }
        read
    }
}

impl ReadTimeout for Paced<TcpStream> {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_keep_the_rate_and_bursts_stay_small() {
        let rate = 4 << 20;
        let mut paced = Paced::new(Vec::new(), Some(rate));
        let start = Instant::now();
        let chunk = vec![0; 256 << 10];
        while paced.get_ref().len() < (2 << 20) {
            paced.write_all(&chunk).unwrap();
        }
        let took = start.elapsed().as_secs_f64();
        // 2 MiB at 4 MiB/s: half a second (the bucket starts empty).
        assert!((0.4..1.0).contains(&took), "{took} s");
        let unpaced_start = Instant::now();
        let mut plain = Paced::new(Vec::new(), None);
        plain.write_all(&vec![0; 8 << 20]).unwrap();
        assert!(unpaced_start.elapsed() < Duration::from_millis(200));
    }
}
