//! `xfer send`: collect the operands into an offer, then hand it to the receiver we
//! connect to, or to each receiver that connects (`--listen`).

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::Result;

use super::link::{Session, run_link};
use crate::client;
use crate::client::options::Encryption;
use crate::client::options::Peering;
use crate::error::{Kind, fail};
use crate::fs::input::Outbox;
use crate::fs::source::{self, WalkOptions};
use crate::net::signals::Kept;
use crate::proto::message::{Entry, Mirror, Role};
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
    let operands = look_at(options)?;
    let serving =
        matches!(&options.peering.link, crate::net::Link::Listen { serve, .. } if !serve.once);
    if serving && operands.is_stream() {
        return Err(fail(
            Kind::Usage,
            "a stream can be read only once: it cannot be served to several receivers (drop --serve)",
        ));
    }
    let session = session(options, offer(options, operands)?);
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

/// What runs on each connection: a put into a server's home, or a transfer to a
/// receiver, of `offer`.
fn session(options: &SendOptions, offer: Offer) -> Session {
    let remote_dir = options.remote_dir.clone();
    let encryption = options.peering.security.encryption;
    // A mirror replaces what changed on a server (a plain receiver decides).
    let overwrite = options.overwrite || options.delete;
    let options_overwrite = options.overwrite;
    Arc::new(move |conn, tally| {
        let role = conn.negotiated.role();
        match (role == Role::Client, remote_dir.as_deref()) {
            // The listener is a server: put into the home, or into DIR of it.
            (true, dir) => {
                if encryption == Encryption::Off {
                    report::warn("a server always encrypts: --no-encrypt has no effect here");
                }
                client::put_on(conn, dir.unwrap_or(""), overwrite, offer.offering(), tally)?;
            }
            (false, Some(dir)) => return Err(no_dir_at_a_receiver(dir)),
            (false, None) => {
                if options_overwrite {
                    report::warn(
                        "a receiver decides for itself whether to replace files \
                         (`xfer recv --overwrite`): -f has no effect here",
                    );
                }
                send::offering_session(conn, offer.offering(), tally)?;
            }
        }
        tally.verdict()
    })
}

/// The operands, looked at (`--delete` needs a directory).
fn look_at(options: &SendOptions) -> Result<source::Operands> {
    let operands = source::look_at(&options.files, &options.walk)?;
    if options.delete && !operands.has_dir() {
        return Err(fail(
            Kind::Usage,
            "--delete mirrors a directory: give one (a single file has nothing to delete)",
        ));
    }
    Ok(operands)
}

/// What the sessions offer. Sent to the one peer it connects to (a receiver, or a
/// server's home), without a mirror and without a password to ask for, the
/// operands are walked on a thread of their own while the connection is made, and
/// offered as they are found (`transfer::send::Walking`); else walked now.
fn offer(options: &SendOptions, operands: source::Operands) -> Result<Offer> {
    let asks = Mirror {
        delete: options.delete,
        dry_run: options.dry_run,
        delete_excluded: options.delete_excluded,
        ignore_times: options.ignore_times,
        ..Mirror::default()
    };
    let connecting = matches!(&options.peering.link, crate::net::Link::Connect { .. });
    let plain = !(asks.delete || asks.dry_run || asks.ignore_times);
    // The walk's warnings would come in the middle of a password's prompt.
    let prompts = options.peering.auth.password && crate::password::Password::will_prompt();
    if connecting && plain && !prompts && !operands.is_stream() {
        let walking = WalkOnThread::start(operands, options.walk.clone());
        return Ok(Offer::Walking(Arc::new(walking)));
    }
    let mut collected = operands.walk(&options.walk, &mut |_| {})?;
    // Not `Outbox::mirror`, which says what was asked.
    source::Collected::mirror(&mut collected, asks);
    Ok(Offer::Walked(Arc::new(collected)))
}

/// The operands walked before the first session, or being walked meanwhile.
enum Offer {
    Walked(Arc<source::Collected>),
    Walking(Arc<WalkOnThread>),
}

impl Offer {
    fn offering(&self) -> send::Offering<'_> {
        match self {
            Offer::Walked(collected) => send::Offering::Walked(&**collected),
            Offer::Walking(walking) => send::Offering::Walking(&**walking),
        }
    }
}

/// Entries found and not yet offered, in batches, at most: the walk waits for
/// the session beyond that (a receiver not listening yet), so that a large tree
/// is not held twice.
const BATCHES_AHEAD: usize = 64;

/// The operands walked on a thread of their own, each batch of entries handed
/// over as it is found (see `transfer::send::Walking`).
struct WalkOnThread {
    found: Mutex<mpsc::Receiver<Vec<Entry>>>,
    walk: Mutex<Option<JoinHandle<Result<source::Collected>>>>,
    xattrs_all: bool,
}

impl WalkOnThread {
    fn start(operands: source::Operands, options: WalkOptions) -> Self {
        let (hand, found) = mpsc::sync_channel(BATCHES_AHEAD);
        let xattrs_all = operands.xattrs_all();
        let walk = std::thread::spawn(move || {
            // A session gone (it failed) takes no more: the walk goes on to its end
            // (the process exits meanwhile), what it finds dropped.
            operands.walk(&options, &mut |entries| {
                let _ = hand.send(entries.to_vec());
            })
        });
        WalkOnThread {
            found: Mutex::new(found),
            walk: Mutex::new(Some(walk)),
            xattrs_all,
        }
    }
}

impl send::Walking for WalkOnThread {
    fn more(&self) -> Option<Vec<Entry>> {
        let found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        found.recv().ok()
    }

    fn walked(&self) -> Result<Box<dyn Outbox>> {
        // What was not taken is taken now, so that the walk can end.
        while self.more().is_some() {}
        let walk = self
            .walk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let collected = walk
            .ok_or_else(|| fail(Kind::Io, "the operands were walked for another session"))?
            .join()
            .map_err(|_| fail(Kind::Io, "the walk of the operands stopped"))??;
        Ok(Box::new(collected))
    }

    fn xattrs_all(&self) -> bool {
        self.xattrs_all
    }
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
