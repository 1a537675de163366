//! The progress bar on stderr: made here from template constants that fit the
//! terminal's width, hidden when the user asked for quiet or stderr is not a
//! terminal. The bar on screen is remembered, so that an interrupt (Ctrl-C) can
//! clear it before the process ends and leave no stale line behind.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Known total, wide terminals: name, bar, bytes done of total, rate, time left.
const BAR_WIDE: &str =
    "{wide_msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
/// Known total, 60-99 columns: the bar and the rate give way to the numbers.
const BAR_MEDIUM: &str = "{wide_msg} {percent:>3}% {bytes}/{total_bytes} ETA {eta}";
/// Known total, narrow terminals: the name (shortened) and how far.
const BAR_NARROW: &str = "{wide_msg} {percent:>3}%";
/// Unknown total (a stream): name, bytes so far, rate.
const SPINNER_WIDE: &str = "{spinner} {wide_msg} {bytes} {binary_bytes_per_sec}";
const SPINNER_NARROW: &str = "{spinner} {wide_msg} {bytes}";
/// Redraws per second: enough to look alive, cheap at gigabytes per second.
const REFRESH_HZ: u8 = 8;
/// Terminal widths at which fields are dropped.
const WIDE: u16 = 100;
const MEDIUM: u16 = 60;

/// The bar on screen now, for [`clear_on_exit`].
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A bar for `total` bytes (a spinner when unknown), or a hidden one.
pub(crate) fn transfer_bar(total: Option<u64>, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let width = terminal_width();
    let template = match (total, width) {
        (Some(_), w) if w >= WIDE => BAR_WIDE,
        (Some(_), w) if w >= MEDIUM => BAR_MEDIUM,
        (Some(_), _) => BAR_NARROW,
        (None, w) if w >= MEDIUM => SPINNER_WIDE,
        (None, _) => SPINNER_NARROW,
    };
    let style = ProgressStyle::with_template(template).expect("template is valid");
    let style = match total {
        Some(_) => style.progress_chars("=> "),
        None => style,
    };
    let target = ProgressDrawTarget::stderr_with_hz(REFRESH_HZ);
    let bar = ProgressBar::with_draw_target(total, target).with_style(style);
    *SHOWN.lock().expect("no panics while holding the lock") = Some(bar.clone());
    bar
}

/// Clears whatever bar is on screen: the process is about to end.
pub(crate) fn clear_on_exit() {
    if let Some(bar) = SHOWN
        .lock()
        .expect("no panics while holding the lock")
        .take()
    {
        bar.finish_and_clear();
    }
}

/// Columns of the terminal on stderr (80 if it cannot be told).
fn terminal_width() -> u16 {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .map(|size| size.ws_col)
        .ok()
        .filter(|&cols| cols > 0)
        .unwrap_or(80)
}
