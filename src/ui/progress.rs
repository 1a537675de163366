//! The progress bar on stderr: made here from template constants, hidden when the
//! user asked for quiet or stderr is not a terminal. Sessions only wrap their reader
//! or writer with it and name the current file.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Known total: name, bar, bytes done of total, rate, time left.
const BAR_TEMPLATE: &str =
    "{wide_msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
/// Unknown total (a stream): name, bytes so far, rate.
const SPINNER_TEMPLATE: &str = "{spinner} {wide_msg} {bytes} {binary_bytes_per_sec}";
/// Redraws per second: enough to look alive, cheap at gigabytes per second.
const REFRESH_HZ: u8 = 8;

/// A bar for `total` bytes (a spinner when the total is unknown).
pub fn transfer_bar(total: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let target = ProgressDrawTarget::stderr_with_hz(REFRESH_HZ);
    match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), target).with_style(
            ProgressStyle::with_template(BAR_TEMPLATE)
                .expect("template is valid")
                .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, target)
            .with_style(ProgressStyle::with_template(SPINNER_TEMPLATE).expect("template is valid")),
    }
}
