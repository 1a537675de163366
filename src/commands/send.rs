//! `xfer send`: collect the operands into an offer, then hand it to the receiver we
//! connect to, or to each receiver that connects (`--listen`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use super::link::{Session, run_link};
use crate::client;
use crate::client::options::Encryption;
use crate::client::options::Peering;
use crate::error::{Kind, fail};
use crate::fs::source::{self, WalkOptions};
use crate::net::signals::Kept;
use crate::proto::message::{Mirror, Role};
use crate::transfer::send;
use crate::ui::report;

/// What `xfer send` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct SendOptions {
    /// The operands: files, directories, `-` or a named pipe.
    pub(crate) files: Vec<PathBuf>,
    pub(crate) walk: WalkOptions,
    /// zstd level, if compressing.
    pub(crate) compress: Option<i32>,
    /// Against a server (`HOST:PORT:DIR`): the directory of the home to put into.
    pub(crate) remote_dir: Option<String>,
    /// Against a server: replace files that exist (`-f`).
    pub(crate) overwrite: bool,
    /// Remove on the receiver what the directories sent do not hold (`--delete`).
    pub(crate) delete: bool,
    /// With `delete`: what the filters exclude goes too (`--delete-excluded`).
    pub(crate) delete_excluded: bool,
    /// Plan only (`--dry-run`).
    pub(crate) dry_run: bool,
    /// A receiver that replaces files sends no file again for its size and time
    /// alone (`--ignore-times`).
    pub(crate) ignore_times: bool,
    pub(crate) peering: Peering,
}

pub(crate) fn run(options: &SendOptions) -> Result<()> {
    let collected = collect(options)?;
    let serving =
        matches!(&options.peering.link, crate::net::Link::Listen { serve, .. } if !serve.once);
    if serving && collected.is_stream() {
        return Err(fail(
            Kind::Usage,
            "a stream can be read only once: it cannot be served to several receivers (drop --serve)",
        ));
    }
    let collected = Arc::new(collected);
    let remote_dir = options.remote_dir.clone();
    let encryption = options.peering.security.encryption;
    // A mirror replaces what changed on a server (a plain receiver decides).
    let overwrite = options.overwrite || options.delete;
    let options_overwrite = options.overwrite;
    let session: Session = Arc::new(move |conn, tally| {
        let role = conn.negotiated.role();
        match (role == Role::Client, remote_dir.as_deref()) {
            // The listener is a server: put into the home, or into DIR of it.
            (true, dir) => {
                if encryption == Encryption::Off {
                    report::warn("a server always encrypts: --no-encrypt has no effect here");
                }
                client::put_on(conn, dir.unwrap_or(""), overwrite, &*collected, tally)?;
            }
            (false, Some(dir)) => return Err(no_dir_at_a_receiver(dir)),
            (false, None) => {
                if options_overwrite {
                    report::warn(
                        "a receiver decides for itself whether to replace files \
                         (`xfer recv --overwrite`): -f has no effect here",
                    );
                }
                send::session(conn, &*collected, tally)?
            }
        }
        tally.verdict()
    });
    // With a directory it can only be a server's: speaking as a client from the
    // start, a plain receiver is refused in the handshake (and keeps waiting for its
    // sender) instead of after it.
    let role = match options.remote_dir {
        Some(_) => Role::Client,
        None => Role::Sender,
    };
    let kept = if options.dry_run {
        Kept::Nothing
    } else {
        Kept::ByThePeer
    };
    run_link(
        &options.peering,
        role,
        options.compress,
        "sent",
        kept,
        session,
    )
}

/// The operands walked into an offer, with what a mirror asks of the receiver:
/// `--delete` needs a directory.
fn collect(options: &SendOptions) -> Result<source::Collected> {
    let mut collected = source::collect(&options.files, &options.walk)?;
    if collected.is_empty() {
        return Err(fail(Kind::Io, "nothing to send"));
    }
    if options.delete && !collected.has_dir() {
        return Err(fail(
            Kind::Usage,
            "--delete mirrors a directory: give one (a single file has nothing to delete)",
        ));
    }
    collected.mirror(Mirror {
        delete: options.delete,
        dry_run: options.dry_run,
        delete_excluded: options.delete_excluded,
        ignore_times: options.ignore_times,
        ..Mirror::default()
    });
    Ok(collected)
}

/// `HOST:PORT:DIR` given, and a plain receiver met: it takes no directory.
fn no_dir_at_a_receiver(dir: &str) -> anyhow::Error {
    fail(
        Kind::Usage,
        format!(
            "the listener is a receiver, not a server: it takes no directory (drop \":{}\")",
            crate::escape::escape(dir)
        ),
    )
}
