//! `mkdir`, `remove` and `rename`: changes to names in the home, checked in the
//! order the protocol gives: the names themselves, then whether the user may write,
//! then the disk (`fs::home` answers for the disk).

use anyhow::Result;

use super::Context;
use super::{ack, refuse, shown, writable};
use crate::escape::escape;
use crate::fs::Refusal;
use crate::fs::path::check_request_path;
use crate::net::TcpConnection;
use crate::proto::message::ErrorCode;
use crate::proto::negotiated::Feature;

/// The path's form, before anything else is looked at.
fn well_formed(path: &str) -> Result<(), Refusal> {
    check_request_path(path)
        .map(drop)
        .map_err(|why| Refusal::new(ErrorCode::BadPath, format!("{}: {why}", escape(path))))
}

/// Answers `action` with `ack` or its refusal.
fn answer(
    context: &Context<'_>,
    conn: &mut TcpConnection,
    action: String,
    done: Result<(), Refusal>,
) -> Result<()> {
    match done {
        Ok(()) => {
            context.log(&action, Ok("done".into()));
            ack(conn)
        }
        Err(refusal) => refuse(context, conn, &action, refusal),
    }
}

pub(crate) fn mkdir(context: &Context<'_>, conn: &mut TcpConnection, path: &str) -> Result<()> {
    // `""` names the home only for `list` and as the directory of `put`.
    let named = if path.is_empty() {
        Err(Refusal::new(
            ErrorCode::BadPath,
            "mkdir needs a path; the home exists",
        ))
    } else {
        Ok(())
    };
    let done = named
        .and_then(|()| well_formed(path))
        .and_then(|()| writable(context, "mkdir"))
        .and_then(|()| {
            context
                .ledger
                .mkdir(&context.home, path, context.checked_at)
        });
    answer(context, conn, format!("mkdir {}", shown(path)), done)
}

pub(crate) fn remove(context: &Context<'_>, conn: &mut TcpConnection, path: &str) -> Result<()> {
    let home = if path.is_empty() {
        Err(Refusal::new(
            ErrorCode::BadPath,
            "the home itself cannot be removed",
        ))
    } else {
        Ok(())
    };
    let done = home
        .and_then(|()| well_formed(path))
        .and_then(|()| writable(context, "remove"))
        .and_then(|()| {
            let links = conn.negotiated.has(Feature::Meta);
            (context.ledger).remove(&context.home, path, (links, context.checked_at))
        });
    answer(context, conn, format!("remove {}", shown(path)), done)
}

pub(crate) fn rename(
    context: &Context<'_>,
    conn: &mut TcpConnection,
    from: &str,
    to: &str,
) -> Result<()> {
    let names = if from.is_empty() || to.is_empty() {
        Err(Refusal::new(
            ErrorCode::BadPath,
            "the home itself cannot be renamed",
        ))
    } else if to.starts_with(&format!("{from}/")) {
        Err(Refusal::new(
            ErrorCode::BadPath,
            format!("{} lies inside {}", escape(to), escape(from)),
        ))
    } else {
        well_formed(from).and_then(|()| well_formed(to))
    };
    let done = names
        .and_then(|()| writable(context, "rename"))
        .and_then(|()| {
            let links = conn.negotiated.has(Feature::Meta);
            let at = (links, context.checked_at);
            context.ledger.rename(&context.home, (from, to), at)
        });
    let action = format!("rename {} {}", shown(from), shown(to));
    answer(context, conn, action, done)
}
