//! `put`: the client sends files into a directory of the home. After the `ack`,
//! the transfer of section 5 runs with the server as receiver, against the user's
//! quota; files it cannot take are refused one by one, and the connection goes on.

use anyhow::Result;

use super::{ack, refuse, writable};
use crate::escape::escape;
use crate::net::TcpConnection;
use crate::serve::connection::Context;
use crate::transfer::Tally;
use crate::transfer::recv::{self, Destination, Settings};
use crate::ui::report::Reporter;

pub fn run(
    context: &Context<'_>,
    conn: &mut TcpConnection,
    dir: &str,
    overwrite: bool,
) -> Result<()> {
    let action = format!("put {}", escape(if dir.is_empty() { "." } else { dir }));
    let target = match writable(context, "put").and_then(|()| context.home.target(dir)) {
        Ok(target) => target,
        Err(refusal) => return refuse(context, conn, &action, refusal),
    };
    ack(conn)?;
    let reporter = Reporter::new(context.server.style)
        .for_peer(context.peer)
        .for_request(context.name(), &action);
    let mut tally = Tally::new(reporter, &conn.negotiated);
    let destination = Destination::Dir(target);
    let settings = Settings {
        overwrite,
        resume: true,
    };
    let result = recv::session(
        conn,
        &destination,
        &context.server.claims,
        settings,
        Some(&context.account),
        &mut tally,
    );
    if context.account.is_stale() {
        context.account.recount(context.home.footprint());
    }
    // The log line says how the transfer went; only a session-level failure (the
    // result) ends the connection.
    let verdict = match &result {
        Ok(()) => tally.verdict(),
        Err(err) => Err(anyhow::anyhow!("{err:#}")),
    };
    tally.finish("received", &verdict);
    result
}
