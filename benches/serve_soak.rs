//! `cargo bench --bench serve_soak`: a soak of `xfer serve`'s quota accounting, not
//! part of the test suite. Eight clients of one user, for 60 s (`XFER_SOAK_SECONDS`
//! to shorten), put (some into directories the offer does not list), cut puts
//! midway (the connection dropped), overwrite, remove, rename, make and remove
//! directories at random against a small quota, while a watcher walks the home from
//! outside every few milliseconds (every entry by the quota's rule: 4096 bytes a
//! directory). At the end it asserts that what is on disk is
//! within the quota and exactly what `usage` reports, and prints the figures:
//! operations done, refusals by code, the most ever on disk, and the final disk
//! against `usage`.

#[path = "../tests/it/util/mod.rs"]
mod util;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use util::pattern;
use util::peer::SendEntry;
use util::server::{Server, Site};
use util::site::{cut_put, on_disk};

/// The user's quota, in bytes: small, so that it is reached all the time.
const QUOTA: u64 = 2_000_000;
/// Clients at once.
const CLIENTS: usize = 8;
/// File names and sizes drawn from (few, so that partials are found again).
const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
const SIZES: [usize; 4] = [40_000, 150_000, 300_000, 600_000];

/// What the clients did, shared.
#[derive(Default)]
struct Tally {
    operations: AtomicU64,
    outcomes: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn record(&self, what: &str) {
        self.operations.fetch_add(1, Ordering::Relaxed);
        *self
            .outcomes
            .lock()
            .unwrap()
            .entry(what.to_string())
            .or_default() += 1;
    }
}

fn pick<T: Copy>(items: &[T]) -> T {
    items[rand::random_range(0..items.len())]
}

/// The content of `name` at `size`: the same every time, so a partial resumes.
fn content(name: &str, size: usize) -> Vec<u8> {
    pattern(size, u64::from(name.as_bytes()[0]) * 31 + size as u64)
}

/// One random operation as `alice`; records its outcome.
fn operate(server: &Server, tally: &Tally) {
    let name = pick(&NAMES);
    let size = pick(&SIZES);
    let mut peer = server.login("alice");
    // Directories come and go beside the files: `dA/B` and so on.
    let dir = format!("d{name}/{}", pick(&NAMES));
    let outcome = match rand::random_range(0..7) {
        0 | 1 => {
            let overwrite = rand::random_bool(0.5);
            let path = match rand::random_bool(0.3) {
                true => format!("{dir}/{name}"),
                false => name.to_string(),
            };
            let entry = SendEntry::file(&path, content(name, size));
            let what = if overwrite { "put -f" } else { "put" };
            match util::site::put(&mut peer, "", overwrite, &[entry]) {
                Ok(report) if report.delivered(0) => format!("{what}: ok"),
                Ok(report) => format!("{what}: {}", refusal(&report)),
                Err(err) => format!("{what}: {err}"),
            }
        }
        2 => {
            let entry = SendEntry::file(name, content(name, size));
            let plan = cut_put(
                peer,
                "",
                rand::random_bool(0.5),
                &[entry],
                rand::random_range(0..size),
            );
            match plan[0]["action"].as_str() {
                Some("send") => "cut put".to_string(),
                _ => format!(
                    "cut put refused: {}",
                    plan[0]["code"].as_str().unwrap_or("?")
                ),
            }
        }
        3 => match peer.remove(name) {
            Ok(()) => "remove: ok".to_string(),
            Err(err) => format!("remove: {}", err.remote_code().unwrap_or("?")),
        },
        4 => match peer.mkdir(&dir) {
            Ok(()) => "mkdir: ok".to_string(),
            Err(err) => format!("mkdir: {}", err.remote_code().unwrap_or("?")),
        },
        5 => {
            let file = format!("{dir}/{name}");
            let parent = dir.split('/').next().unwrap_or_default();
            let removed = [file.as_str(), &dir, parent].map(|path| peer.remove(path).is_ok());
            format!("remove in a directory: {removed:?}")
        }
        _ => match peer.rename(name, pick(&NAMES)) {
            Ok(()) => "rename: ok".to_string(),
            Err(err) => format!("rename: {}", err.remote_code().unwrap_or("?")),
        },
    };
    tally.record(&outcome);
}

/// The code a report's first entry was refused or failed with.
fn refusal(report: &util::peer::SendReport) -> String {
    let code = report.plan[0]["code"]
        .as_str()
        .or_else(|| report.answers.get(&0).and_then(|a| a["code"].as_str()));
    code.unwrap_or("?").to_string()
}

fn main() {
    let seconds = std::env::var("XFER_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let site = Site::new();
    site.users(&[("alice", &format!("quota = {QUOTA}"))]);
    let server = site.serve(&[]);
    let home = site.home("alice");
    let tally = Tally::default();
    let most = AtomicU64::new(0);
    let over = AtomicBool::new(false);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                while Instant::now() < until {
                    operate(&server, &tally);
                }
            });
        }
        scope.spawn(|| {
            while Instant::now() < until + Duration::from_secs(1) {
                let bytes = on_disk(&home).0;
                most.fetch_max(bytes, Ordering::Relaxed);
                over.fetch_or(bytes > QUOTA, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    });
    // Let the server finish with the last cut connections.
    std::thread::sleep(Duration::from_secs(1));
    let disk = on_disk(&home);
    let usage = server.usage("alice");
    println!("serve soak: {CLIENTS} clients of one user for {seconds} s, quota {QUOTA} bytes");
    println!("operations: {}", tally.operations.load(Ordering::Relaxed));
    for (what, count) in tally.outcomes.lock().unwrap().iter() {
        println!("  {what}: {count}");
    }
    println!(
        "most on disk at any sample: {} bytes",
        most.load(Ordering::Relaxed)
    );
    println!(
        "final on disk: {} bytes in {} entries; usage: {} bytes in {} entries",
        disk.0, disk.1, usage.0, usage.1
    );
    assert!(
        !over.load(Ordering::Relaxed),
        "the home went over its quota"
    );
    assert!(disk.0 <= QUOTA, "over the quota at the end");
    assert_eq!(usage, disk, "usage is not what is on disk");
}
