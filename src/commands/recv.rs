//! `xfer recv`: receive from the sender we connect to, or from each sender that
//! connects (`--listen`), into a directory or onto standard output.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::link::{Session, run_link};
use crate::client::options::Peering;
use crate::error::{Classify, Kind};
use crate::fs::sink::TargetDir;
use crate::net::signals::Kept;
use crate::proto::message::Role;
use crate::transfer::recv::{self, Claims, Destination, Settings};
use crate::ui::report;

/// What `xfer recv` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct RecvOptions {
    pub(crate) dir: PathBuf,
    /// Write the one file to standard output instead.
    pub(crate) stdout: bool,
    pub(crate) settings: Settings,
    /// Partial data no sender came back for is removed after this long.
    pub(crate) keep_partial: Duration,
    /// Owners by number, not mapped by name (`--numeric-ids`).
    pub(crate) numeric_ids: bool,
    pub(crate) peering: Peering,
}

pub(crate) fn run(options: &RecvOptions) -> Result<()> {
    if options.numeric_ids {
        crate::fs::sink::set_numeric_ids();
    }
    let mut lock = None;
    let destination = if options.stdout {
        Destination::Stdout
    } else {
        let (target, dir_lock) = TargetDir::make_and_lock(&options.dir, "--dir", 0o777)?;
        // The sender cannot replace files here (its `-f` is for servers): say who can.
        let target = target.with_replace_hint(
            "the receiver decides, and keeps it: `xfer recv --overwrite` replaces files",
        );
        // Before any peer is waited for: a second receiver here, or a directory we
        // cannot write, is said at once.
        lock = Some(dir_lock);
        let serving =
            matches!(&options.peering.link, crate::net::Link::Listen { serve, .. } if !serve.once);
        sweep_partials(&target, options.keep_partial, serving)?;
        Destination::Dir(target)
    };
    let destination = Arc::new(destination);
    let claims = Arc::new(Claims::default());
    let settings = options.settings;
    let session: Session = Arc::new(move |conn, tally| {
        recv::session(conn, &destination, &claims, settings, None, tally)?;
        tally.verdict()
    });
    let kept = Kept::receiving(!options.stdout, settings.resume);
    let result = run_link(
        &options.peering,
        Role::Receiver,
        None,
        "received",
        kept,
        session,
    );
    drop(lock);
    result
}

/// Removes partial files older than `keep` now, in the background (a large tree
/// takes a while), and again every hour while serving.
fn sweep_partials(target: &TargetDir, keep: Duration, serving: bool) -> Result<()> {
    let hours = keep.as_secs() / 3600;
    let sweeper = target.try_clone().classify(Kind::Io)?;
    sweeper.sweep_in_background(keep, serving, move |removed| {
        report::line(&format!(
            "xfer: removed {} older than {hours} h that no sender came back for",
            report::plural(removed, "partial file"),
        ));
    })
}
