//! Meeting the peer for a one-shot transfer (`send`, `recv`): [`run_link`] connects
//! or listens as the [`Peering`] says and runs a [`Session`] on each authenticated
//! connection, with its tally and report. Owns only that loop; what a session does
//! is the caller's, how sockets and handshakes work is `net`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use crate::client::options::{Encryption, Peering};
use crate::key;
use crate::net::signals::Kept;
use crate::net::{self, Handler, Link, TcpConnection, listen};
use crate::proto::message::Role;
use crate::proto::negotiated::{Feature, Negotiated};
use crate::transfer::Tally;
use crate::ui::report::{self, Reporter, Summary};

/// One session on an authenticated connection: the work, with its tally.
pub(crate) type Session = Arc<dyn Fn(&mut TcpConnection, &mut Tally) -> Result<()> + Send + Sync>;

/// Meets the peer as `peering.link` says and runs `session` on each authenticated
/// connection (one, unless serving), reporting each; `verb` names what happened
/// (`sent`, `received`); an interrupted connecting side says what is `kept`.
pub(crate) fn run_link(
    peering: &Peering,
    role: Role,
    compress: Option<i32>,
    verb: &'static str,
    kept: Kept,
    session: Session,
) -> Result<()> {
    let style = peering.style;
    let encryption = peering.security.encryption;
    let began = Arc::new(AtomicBool::new(false));
    let handler: Handler = {
        let began = began.clone();
        Arc::new(move |mut conn: TcpConnection, peer| {
            began.store(true, Ordering::SeqCst);
            let reporter = Reporter::new(style).for_peer(peer);
            warn_if_clear(&conn.negotiated, encryption, &reporter);
            let mut tally = Tally::new(reporter, &conn.negotiated);
            // A session that fails tells the peer and lingers itself (`transfer::tell`).
            let result = session(&mut conn, &mut tally).map_err(listen::cut_by_us);
            tally.finish(verb, &result);
            result
        })
    };
    let result = match &peering.link {
        Link::Connect { to, wait } => {
            net::signals::interrupt_clears_the_screen(kept)?;
            peering
                .initiating(role, compress)
                .and_then(|initiating| net::connect(to, *wait, peering.timeouts, &initiating))
                .and_then(|(conn, peer)| handler(conn, peer))
        }
        Link::Listen { at, serve } => {
            // Before anyone can learn our address, so that no early signal kills us unhandled.
            let stop = net::signals::stop_on_signals()?;
            let listener = listen::bind(at)?;
            let local = listener
                .local_addr()
                .map_err(|err| crate::error::tag(crate::error::Kind::Network, err))?;
            let key = match key::load(peering.auth.key_file.as_deref())? {
                Some(key) => key,
                None => net::keyless::generate_for_listener(local, role)?,
            };
            Reporter::new(style).listening(&local, at.any_port());
            let accepting = Arc::new(peering.accepting(role, key, compress));
            listen::serve(listener, accepting, *serve, stop, handler)
        }
    };
    // A run that failed before any session began (cannot connect, wrong key) still
    // gets its summary; a serving process logged each session already.
    if result.is_err() && !began.load(Ordering::SeqCst) && !style.serving {
        Reporter::new(style).finish(verb, &Summary::default(), &result);
    }
    result
}

/// One line when a transfer goes in clear because the peer cannot or will not
/// encrypt.
fn warn_if_clear(negotiated: &Negotiated, encryption: Encryption, reporter: &Reporter) {
    if encryption == Encryption::Preferred
        && !negotiated.has(Feature::Aead)
        && !reporter.style().serving
    {
        report::warn(
            "the peer does not encrypt (it cannot, or was told --no-encrypt): this \
             transfer goes in clear (authenticated, not confidential); --encrypt \
             refuses such peers",
        );
    }
}
