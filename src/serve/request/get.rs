//! `get`: the server sends paths of the home, each under its last component, a
//! directory with everything inside it but special files (links as links, under
//! `meta`), each regular file and directory with its `user.*` attributes when the
//! client asks. The whole request is checked before anything is offered; then the
//! transfer of section 5 runs with the server as sender.

use anyhow::Result;

use super::Context;
use super::{refuse, shown_paths};
use crate::net::TcpConnection;
use crate::proto::message::Mirror;
use crate::proto::negotiated::Feature;
use crate::transfer::{Tally, send};
use crate::ui::report::Reporter;

pub(crate) fn run(
    context: &Context<'_>,
    conn: &mut TcpConnection,
    paths: &[String],
    mirror: Option<Mirror>,
    sparse: bool,
    xattrs: bool,
) -> Result<()> {
    let action = format!("get {}", shown_paths(paths));
    // Without `mirror` in force the member is ignored, as an older server would.
    let mirror = mirror.filter(|_| conn.negotiated.has(Feature::Mirror));
    // Without `meta` no entry carries attributes: the member is ignored.
    let xattrs = xattrs && conn.negotiated.has(Feature::Meta);
    // Attributes are read with the walk, before the home is known to be still the
    // user's: `while_entitled` then refuses the whole get if it no longer is.
    let fetched = context.home.fetch(paths, (mirror, xattrs));
    let entitled = context.server.entitled(&context.user);
    let fetch = fetched
        .and_then(|fetch| fetch.while_entitled(entitled))
        .map(|fetch| if sparse { fetch } else { fetch.dense() });
    let fetch = match fetch {
        Ok(fetch) => fetch,
        Err(refusal) => return refuse(context, conn, &action, refusal),
    };
    let reporter = Reporter::new(context.server.style)
        .for_peer(context.peer)
        .for_request(context.name(), &action);
    if fetch.xattrs_left_out() > 0 {
        // Only attributes set in the home by other means can be that many: a put
        // keeps at most 4 096 bytes of them on an entry.
        reporter.note(&format!(
            "entries whose extended attributes were not all sent: {} (an entry carries \
             at most 1 MiB of them)",
            fetch.xattrs_left_out()
        ));
    }
    if fetch.xattrs_unlisted() > 0 {
        reporter.note(&format!(
            "entries sent without their extended attributes, which could not be \
             listed: {}",
            fetch.xattrs_unlisted()
        ));
    }
    let mut tally = Tally::new(reporter, &conn.negotiated);
    let result = send::session(conn, &fetch, &mut tally);
    // The log line says how the transfer went; only a session-level failure (the
    // result) ends the connection.
    let verdict = match &result {
        Ok(()) => tally.verdict(),
        Err(err) => Err(crate::net::listen::said_of(err)),
    };
    tally.finish("sent", &verdict);
    result
}
