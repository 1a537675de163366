//! What the process says on stderr outside a session's report: warnings (silenced
//! by `--quiet`) and plain lines (the final error, a generated key). A leaf: it
//! imports nothing from the crate, so the key and the listeners can warn without
//! reaching up into `ui` (whose `report` re-exports these).

use std::io::Write;

/// Set by `--quiet`: warnings are not printed (errors always are).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From here on, print nothing but errors.
pub(crate) fn set_quiet() {
    QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Prints `xfer: warning: ...` on stderr, unless quiet.
pub(crate) fn warn(message: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        line(&format!("xfer: warning: {message}"));
    }
}

/// Prints one line on stderr; a closed stderr is not worth dying for. The line and
/// its newline go out in one write, so that two processes sharing a stderr (a
/// receiver and a sender started from one shell line) never splice their lines.
pub(crate) fn line(text: &str) {
    let mut whole = String::with_capacity(text.len() + 1);
    whole.push_str(text);
    whole.push('\n');
    let _ = std::io::stderr().lock().write_all(whole.as_bytes());
}
