//! Everything xfer tells its user besides the data: warnings, per-file outcomes and
//! the closing summary, as plain lines on stderr or, with `--json`, as one JSON
//! object per line (the event stream documented in the README). The progress bar
//! lives here too, so that lines never tear it.
//!
//! Stdout is written only for `--json` events, and only when it does not carry data.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar};
use serde_json::json;

use crate::error::{Kind, fail};
use crate::escape::escape;
use crate::frame::ErrorCode;
use crate::progress;

/// At most this many files get their MD5 listed under the summary line.
const LIST_FILES_UP_TO: usize = 10;

/// Prints `xfer: warning: ...` on stderr.
pub fn warn(message: &str) {
    line(&format!("xfer: warning: {message}"));
}

/// Prints one line on stderr; a closed stderr is not worth dying for.
pub fn line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A file that arrived and verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub path: String,
    pub size: u64,
    pub md5: String,
}

/// A file that did not make it: the wire code that says why, and the words.
#[derive(Debug, Clone)]
pub struct Failed {
    pub path: String,
    pub code: ErrorCode,
    /// Already escaped.
    pub why: String,
}

/// Where, if anywhere, JSON events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Json {
    Off,
    Stdout,
    /// Stdout carries the received data.
    Stderr,
}

/// How a session should talk to its user.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub quiet: bool,
    pub json: Json,
    /// One of many concurrent sessions (`--serve`): no bar, and one log line (or
    /// `session` event) per session instead of a summary.
    pub serving: bool,
}

#[derive(Default)]
struct Tally {
    verified: Vec<Verified>,
    verified_count: usize,
    bytes: u64,
    failed: Vec<Failed>,
}

/// One session's voice: tallies outcomes as they happen and reports them.
#[derive(Clone)]
pub struct Reporter {
    style: Style,
    peer: Option<std::net::SocketAddr>,
    bar: ProgressBar,
    started: Instant,
    tally: Arc<Mutex<Tally>>,
}

impl Reporter {
    pub fn new(style: Style) -> Self {
        Reporter {
            style,
            peer: None,
            bar: ProgressBar::hidden(),
            started: Instant::now(),
            tally: Arc::default(),
        }
    }

    /// The session's peer, named in a serving process's log line.
    pub fn for_peer(mut self, peer: std::net::SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Shows a progress bar for `total` bytes (a spinner when unknown), if the
    /// style and the terminal allow one.
    pub fn start_bar(&mut self, total: Option<u64>) {
        let hidden = self.style.quiet || self.style.json != Json::Off || self.style.serving;
        self.bar = progress::transfer_bar(total, hidden);
    }

    /// Names the file being moved on the progress bar (escaped), if there is a bar.
    pub fn current_file(&self, path: &str) {
        if !self.bar.is_hidden() {
            self.bar.set_message(escape(path).into_owned());
        }
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// The address a listener listens on: a line always, an event with `--json`.
    pub fn listening(&self, address: &str) {
        line(&format!("listening on {address}"));
        self.event(|| json!({"event": "listening", "address": address}));
    }

    /// A file arrived and verified.
    pub fn verified(&self, file: Verified) {
        self.event(|| {
            json!({
                "event": "file", "path": file.path, "size": file.size, "md5": file.md5, "status": "ok",
            })
        });
        let mut tally = self.tally.lock().expect("no panics while holding the lock");
        tally.verified_count += 1;
        tally.bytes += file.size;
        if tally.verified.len() <= LIST_FILES_UP_TO {
            tally.verified.push(file);
        }
    }

    /// A file failed: said at once, on stderr whatever `--quiet` says.
    pub fn failed(&self, failed: Failed) {
        self.bar
            .suspend(|| line(&format!("xfer: {}: {}", escape(&failed.path), failed.why)));
        self.event(|| {
            json!({
                "event": "file", "path": failed.path, "status": "failed",
                "code": failed.code.as_str(), "message": failed.why,
            })
        });
        self.tally
            .lock()
            .expect("no panics while holding the lock")
            .failed
            .push(failed);
    }

    /// The session's result from its entries: fine if none failed, else the kind of
    /// the first failure, with a count.
    pub fn outcome(&self, entries: usize, verb: &str) -> anyhow::Result<()> {
        let tally = self.tally.lock().expect("no panics while holding the lock");
        match tally.failed.first() {
            None => Ok(()),
            Some(first) => Err(fail(
                Kind::of_code(first.code),
                format!("{} of {entries} entries not {verb}", tally.failed.len()),
            )),
        }
    }

    /// Ends the session's reporting: the summary line (or `summary` event) for
    /// `result`; a session-level error itself is printed by `main`. A serving
    /// process logs one line (or `session` event) per session instead, error included.
    pub fn finish(&self, verb: &str, result: &anyhow::Result<()>) {
        self.bar.finish_and_clear();
        let tally = self.tally.lock().expect("no panics while holding the lock");
        let elapsed = self.started.elapsed();
        let rate = rate(tally.bytes, elapsed);
        if self.style.serving {
            let peer = self
                .peer
                .map_or_else(|| "?".to_string(), |peer| peer.to_string());
            let outcome = match result {
                Ok(()) => "ok".to_string(),
                Err(err) => format!("failed: {err:#}"),
            };
            if self.style.json == Json::Off {
                line(&format!(
                    "xfer: {peer}: {verb} {}, {} in {:.2} s: {outcome}",
                    plural(tally.verified_count, "file"),
                    HumanBytes(tally.bytes),
                    elapsed.as_secs_f64()
                ));
            }
            let mut event = json!({
                "event": "session", "peer": peer, "ok": result.is_ok(), "files": tally.verified_count,
                "failed": tally.failed.len(), "bytes": tally.bytes, "seconds": elapsed.as_secs_f64(),
                "bytes_per_sec": rate,
            });
            if let Err(err) = result {
                event["error"] = json!(format!("{err:#}"));
            }
            self.event(|| event);
            return;
        }
        if self.style.json != Json::Off {
            let mut summary = json!({
                "event": "summary", "ok": result.is_ok(), "files": tally.verified_count,
                "failed": tally.failed.len(), "bytes": tally.bytes,
                "seconds": elapsed.as_secs_f64(), "bytes_per_sec": rate,
            });
            if let Err(err) = result {
                summary["error"] = json!(format!("{err:#}"));
                summary["exit_code"] = json!(crate::error::exit_code(err));
            }
            self.event(|| summary);
            return;
        }
        if self.style.quiet
            || (tally.verified_count == 0 && tally.failed.is_empty() && result.is_err())
        {
            return;
        }
        let outcome = match tally.failed.len() {
            0 if result.is_ok() => "all verified (MD5 + MAC)".to_string(),
            0 => "not completed".to_string(),
            n => format!("{} failed", plural(n, "file")),
        };
        line(&format!(
            "{verb} {}, {} in {:.2} s ({}/s), {outcome}",
            plural(tally.verified_count, "file"),
            HumanBytes(tally.bytes),
            elapsed.as_secs_f64(),
            HumanBytes(rate)
        ));
        if tally.verified_count <= LIST_FILES_UP_TO {
            for file in &tally.verified {
                line(&format!("  {}  {}", file.md5, escape(&file.path)));
            }
        }
    }

    /// Writes one JSON event line, if `--json` asked for them; `build` runs only
    /// then, so a session without `--json` spends nothing per file on events.
    pub fn event(&self, build: impl FnOnce() -> serde_json::Value) {
        if self.style.json == Json::Off {
            return;
        }
        let text = build().to_string();
        match self.style.json {
            Json::Off => {}
            Json::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}").and_then(|()| out.flush());
            }
            Json::Stderr => line(&text),
        }
    }
}

fn rate(bytes: u64, elapsed: Duration) -> u64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        (bytes as f64 / seconds) as u64
    } else {
        0
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
