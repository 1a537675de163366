//! Signals a long-running xfer listens for: SIGINT and SIGTERM stop it gracefully
//! (a second one exits at once), SIGXFSZ must not kill a receiver past a file-size
//! limit, and SIGHUP (for `serve`) asks for the users file to be read again;
//! every other xfer ignores SIGHUP, as under `nohup`, so that a `kill -HUP` meant
//! for a server (or a closed terminal) does not cut a transfer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// A flag that SIGINT and SIGTERM set. A second one exits at once (130 is the
/// shell's code for an interrupt), after giving the directories sessions had
/// loosened their modes back (`fs::sink::give_back_all`, as the graceful stop
/// does); a third exits from the handler itself, should that hang on a stuck
/// filesystem.
pub(crate) fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let leaving = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, leaving.clone())?;
    }
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot handle signals")?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if flag.swap(true, Ordering::SeqCst) {
                    leaving.store(true, Ordering::SeqCst);
                    crate::fs::sink::give_back_all();
                    std::process::exit(130);
                }
            }
        })
        .context("cannot start a thread")?;
    Ok(stop)
}

/// Past a file-size limit (`ulimit -f`) the kernel sends SIGXFSZ, which would kill
/// the process; with a handler in place the write fails with EFBIG instead, and
/// that one file is refused with `io` while the session goes on.
pub(crate) fn survive_file_size_limit() -> Result<()> {
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(AtomicBool::new(false)),
    )
    .context("cannot install a SIGXFSZ handler")?;
    Ok(())
}

/// A flag that SIGHUP sets (and the caller clears when it has acted on it).
pub(crate) fn flag_on_hangup() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, flag.clone())
        .context("cannot install a SIGHUP handler")?;
    Ok(flag)
}

/// For every command but `serve`: SIGHUP does nothing (as under `nohup`) instead of
/// killing the process mid-transfer. Public because the binary, another crate,
/// installs it before it dispatches.
pub(crate) fn ignore_hangup() -> Result<()> {
    signal_hook::flag::register(
        signal_hook::consts::SIGHUP,
        Arc::new(AtomicBool::new(false)),
    )
    .context("cannot install a SIGHUP handler")?;
    Ok(())
}

/// What an interrupted command has kept of its transfer, to say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// A sender's: its peer keeps what arrived.
    ByThePeer,
    /// A receiver's into a directory (`get`, `recv HOST:PORT`): the partial data
    /// is here.
    Here,
    /// A receiver's to standard output, or a dry run's: nothing to resume from.
    Nothing,
}

impl Kept {
    /// A receiver's: partial data here only where it writes files (`to_disk`: not
    /// standard output, not a dry run) and keeps partials (`resume`); without
    /// resume a file lands in an unnamed temporary, and nothing of it stays.
    pub(crate) fn receiving(to_disk: bool, resume: bool) -> Kept {
        match to_disk && resume {
            true => Kept::Here,
            false => Kept::Nothing,
        }
    }
}

/// For a command that connects: on SIGINT or SIGTERM, clear the progress bar, say
/// what is `kept`, and exit 130 (the shell's code for an interrupt), instead of
/// dying with a half-drawn bar on the screen.
pub(crate) fn interrupt_clears_the_screen(kept: Kept) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot handle signals")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                crate::ui::progress::clear_on_exit();
                crate::ui::report::line(match kept {
                    Kept::Here => {
                        "xfer: interrupted; what arrived of files not yet verified is kept \
                         here as partial data: rerun the same command to resume"
                    }
                    Kept::ByThePeer => {
                        "xfer: interrupted; the peer keeps what arrived of files not yet \
                         acknowledged: rerun the same command to resume"
                    }
                    Kept::Nothing => "xfer: interrupted; nothing is kept to resume from",
                });
                crate::fs::sink::give_back_all();
                std::process::exit(130);
            }
        })
        .context("cannot start a thread")?;
    Ok(())
}
