//! The requests of `PROTOCOL.md` section 9, one file each: what a request asks,
//! checked in the order names, then the user's rights, then the disk; answered with
//! `ack`, an answer of its own, a transfer, or an error frame that ends the request
//! but not the connection.

mod context;
mod get;
mod list;
mod names;
mod put;
mod usage;

use anyhow::Result;

pub(crate) use self::context::Context;
use crate::error::{Kind, fail};
use crate::escape::{escape, shortened};
use crate::fs::Refusal;
use crate::net::TcpConnection;
use crate::proto::message::{ErrorCode, Message};

/// How much of one path a log line shows (bytes, escaped; cut with an ellipsis).
const LOGGED_PATH: usize = 200;

/// How many of a request's paths a log line names before "and N more".
const LOGGED_PATHS: usize = 3;

/// A request's path as the log shows it: escaped, the home as `.`, cut to
/// [`LOGGED_PATH`] bytes (a path may be 4 KiB, and any user chooses it).
fn shown(path: &str) -> String {
    let path = if path.is_empty() { "." } else { path };
    shortened(&escape(path), LOGGED_PATH).into_owned()
}

/// A request's paths as the log shows them: the first [`LOGGED_PATHS`], each as
/// [`shown`], then how many more (one `get` may name 200 000).
fn shown_paths(paths: &[String]) -> String {
    let mut shown: Vec<String> = paths
        .iter()
        .take(LOGGED_PATHS)
        .map(|p| self::shown(p))
        .collect();
    if paths.len() > LOGGED_PATHS {
        shown.push(format!("and {} more", paths.len() - LOGGED_PATHS));
    }
    shown.join(" ")
}

/// What the connection does after a request.
pub(crate) enum Flow {
    Next,
    Close,
}

/// Carries out one request.
pub(crate) fn handle(
    context: &mut Context<'_>,
    conn: &mut TcpConnection,
    message: Message,
) -> Result<Flow> {
    match message {
        Message::List { path } => list::run(context, conn, &path),
        Message::Usage(request) if request == Default::default() => usage::run(context, conn),
        Message::Mkdir { path } => names::mkdir(context, conn, &path),
        Message::Remove { path } => names::remove(context, conn, &path),
        Message::Rename { from, to } => names::rename(context, conn, &from, &to),
        Message::Put { dir, overwrite } => put::run(context, conn, &dir, overwrite),
        Message::Get {
            paths,
            mirror,
            sparse,
            xattrs,
        } => {
            let (sparse, xattrs) = (sparse == Some(true), xattrs == Some(true));
            get::run(context, conn, &paths, mirror, sparse, xattrs)
        }
        Message::Bye => {
            context.log("bye", Ok("closed".into()));
            return Ok(Flow::Close);
        }
        other => {
            return Err(fail(
                Kind::Protocol,
                format!("expected a request, got {other}"),
            ));
        }
    }
    .map(|()| Flow::Next)
}

/// Answers a request with `ack`.
fn ack(conn: &mut TcpConnection) -> Result<()> {
    conn.writer.write_message(&Message::Ack)?;
    conn.writer.flush()
}

/// Answers a request with an error frame (the connection stays open) and logs it.
fn refuse(
    context: &Context<'_>,
    conn: &mut TcpConnection,
    action: &str,
    refusal: Refusal,
) -> Result<()> {
    context.log(action, Err(refusal.to_string()));
    conn.writer
        .write_message(&Message::error(refusal.code, refusal.message))?;
    conn.writer.flush()
}

/// Answers a request with an error frame, as [`refuse`] does, that is no failure
/// of the client's yet (it will likely go on from it): logged as `note` says, not
/// as `refused` (the event still says `ok` false, with the refusal).
fn refuse_as(
    context: &Context<'_>,
    conn: &mut TcpConnection,
    action: &str,
    refusal: Refusal,
    note: &str,
) -> Result<()> {
    context.note(action, note, &refusal.to_string());
    conn.writer
        .write_message(&Message::error(refusal.code, refusal.message))?;
    conn.writer.flush()
}

/// A read-only user may not change anything.
fn writable(context: &Context<'_>, what: &str) -> Result<(), Refusal> {
    if context.user.read_only {
        return Err(Refusal::new(
            ErrorCode::Denied,
            format!("{what}: this user may only read"),
        ));
    }
    Ok(())
}
