//! Everything xfer tells its user besides the progress bar: warnings, per-file
//! outcomes and the closing summary, all on stderr (stdout may be carrying data).

use std::io::Write;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar};

use crate::escape::escape;

/// At most this many files get their MD5 printed in the summary.
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

/// A file that did not make it, and why (already escaped).
#[derive(Debug, Clone)]
pub struct Failed {
    pub path: String,
    pub why: String,
}

/// Prints lines above a running progress bar without tearing it.
#[derive(Clone)]
pub struct Reporter {
    bar: ProgressBar,
    quiet: bool,
}

impl Reporter {
    pub fn new(bar: ProgressBar, quiet: bool) -> Self {
        Reporter { bar, quiet }
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// A line shown whatever `--quiet` says (failures, the listening address).
    pub fn always(&self, text: &str) {
        self.bar.suspend(|| line(text));
    }

    /// A file that failed, as soon as that is known.
    pub fn failed(&self, failed: &Failed) {
        self.always(&format!("xfer: {}: {}", escape(&failed.path), failed.why));
    }

    /// The closing summary: one line, then the MD5 of each file when there are few.
    pub fn summary(&self, verb: &str, verified: &[Verified], failed: usize, elapsed: Duration) {
        self.bar.finish_and_clear();
        if self.quiet {
            return;
        }
        let bytes: u64 = verified.iter().map(|file| file.size).sum();
        let seconds = elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            (bytes as f64 / seconds) as u64
        } else {
            0
        };
        let files = plural(verified.len(), "file");
        let outcome = if failed == 0 {
            "all verified (MD5 + MAC)".to_string()
        } else {
            format!("{} failed", plural(failed, "file"))
        };
        line(&format!(
            "{verb} {files}, {} in {seconds:.2} s ({}/s), {outcome}",
            HumanBytes(bytes),
            HumanBytes(rate)
        ));
        if verified.len() <= LIST_FILES_UP_TO {
            for file in verified {
                line(&format!("  {}  {}", file.md5, escape(&file.path)));
            }
        }
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
