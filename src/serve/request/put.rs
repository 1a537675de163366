//! `put`: the client sends files into a directory of the home. After the `ack`,
//! the transfer of section 5 runs with the server as receiver, against the user's
//! quota; files it cannot take are refused one by one, and the connection goes on.

use anyhow::Result;

use super::Context;
use super::{ack, refuse, refuse_as, shown, writable};
use crate::fs::path::Names;
use crate::net::TcpConnection;
use crate::proto::message::ErrorCode;
use crate::transfer::Tally;
use crate::transfer::recv::{self, Destination, Settings};
use crate::ui::report::Reporter;

/// How the log names a `put` into a directory that is not there (`not_found`): a
/// client usually makes it and asks again (`xfer send` does), so an operator should
/// not read it as a failure. A dry run makes nothing and stops there; the `put`
/// does not say whether it is one (that comes with the offer), so the line covers
/// both.
const NOT_YET: &str = "no such directory yet (answered not_found; a client makes it and asks \
                       again, a dry run makes nothing)";

pub(crate) fn run(
    context: &Context<'_>,
    conn: &mut TcpConnection,
    dir: &str,
    overwrite: bool,
) -> Result<()> {
    let action = format!("put {}", shown(dir));
    // Held before it is opened: its name keeps naming it while the put runs.
    let _held = context.ledger.hold_dir(dir);
    let target = match writable(context, "put").and_then(|()| context.home.target(dir)) {
        Ok(target) => target,
        // xfer's client answers this with `mkdir` and asks again: no failure yet.
        Err(refusal) if refusal.code == ErrorCode::NotFound => {
            return refuse_as(context, conn, &action, refusal, NOT_YET);
        }
        Err(refusal) => return refuse(context, conn, &action, refusal),
    };
    // Everything this put does to the disk is counted as it happens (`fs::quota`).
    let account = context.ledger.account(dir);
    if let Err(refusal) = account.begun_since(context.checked_at) {
        return refuse(context, conn, &action, refusal);
    }
    let target = target.metered(account.clone());
    ack(conn)?;
    let reporter = Reporter::new(context.server.style)
        .for_peer(context.peer)
        .for_request(context.name(), &action);
    let mut tally = Tally::new(reporter, &conn.negotiated);
    let destination = Destination::Dir(target);
    let settings = Settings {
        overwrite,
        resume: true,
        // Names in a home are shown to other people and to shells: always strict.
        names: Names::Safe,
        asked: None,
        delete_excluded: false,
        ignore_times: false,
        xattrs: false,
    };
    let result = recv::session(
        conn,
        &destination,
        &context.server.claims,
        settings,
        Some(&account),
        &mut tally,
    );
    // The log line says how the transfer went; only a session-level failure (the
    // result) ends the connection.
    let verdict = match &result {
        Ok(()) => tally.verdict(),
        Err(err) => Err(crate::net::listen::said_of(err)),
    };
    tally.finish("received", &verdict);
    result
}
