//! One client's connection to the server: the user it authenticated as, that
//! user's home and account, and its requests, one at a time, until `bye`, a close,
//! the idle timeout, or the user being removed by a reload.

use std::net::SocketAddr;

use anyhow::Result;

use super::request::{self, Context, Flow};
use super::users::User;
use super::{Lost, Server};
use crate::error::{Kind, kind_of};
use crate::net::TcpConnection;
use crate::proto::message::{ErrorCode, Message};
use crate::proto::wire::Hangup;
use crate::transfer::end_session;

/// Why a reload ends a connection of `was`: what it took from them (`lost`), or
/// `read_only` lifted, which the session, opened read-only, would not see.
/// `None`: they stay (new limits are applied at once by the caller).
fn reason_to_end(was: &User, now: Option<&User>) -> Option<&'static str> {
    let lifted = now.is_some_and(|now| was.read_only && !now.read_only);
    match super::lost_as(was, now) {
        Some(Lost::Account) => Some("removed from the users file"),
        Some(Lost::Home) => Some("home changed"),
        Some(Lost::Key) => Some("key or password changed"),
        Some(Lost::Writing) => Some("read_only changed"),
        None if lifted => Some("read_only changed"),
        None => None,
    }
}

/// Serves `conn`'s requests.
pub(crate) fn serve(server: &Server, conn: &mut TcpConnection, peer: SocketAddr) -> Result<()> {
    let name = conn.negotiated.user().unwrap_or_default().to_string();
    let (from, users) = server.users.versioned();
    let Some(user) = users.get(&name).cloned() else {
        return end(
            conn,
            ErrorCode::Auth,
            "this user no longer exists on the server",
        );
    };
    let home = match server.home(&user) {
        Ok(home) => home,
        Err(refusal) => {
            server.log(peer, &user.name, "login", Err(refusal.to_string()));
            return end(
                conn,
                ErrorCode::Io,
                "this user's home on the server cannot be opened (the server's log says why); \
                 no login until its administrator fixes it",
            );
        }
    };
    let ledger = server.ledger(&user, &home, from);
    let checked_at = ledger.generation();
    let mut context = Context {
        server,
        peer,
        user,
        home,
        ledger,
        checked_at,
    };
    context.log(
        "login",
        Ok(format!("logged in ({})", conn.negotiated.features())),
    );
    serve_requests(&mut context, conn, &name)
}

/// Serves the requests of `context`'s user one at a time, each after the users
/// were read again (`follow_reload`).
fn serve_requests(context: &mut Context<'_>, conn: &mut TcpConnection, name: &str) -> Result<()> {
    loop {
        let message = match conn.reader.read_message() {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()), // the client closed
            Err(err) => {
                // Idle too long, or a broken frame: say so, where possible.
                end_session(conn, &err);
                return Err(err);
            }
        };
        if let Err(why) = follow_reload(context, name) {
            return end(conn, ErrorCode::Auth, &why);
        }
        match request::handle(context, conn, message) {
            Ok(Flow::Next) => {}
            Ok(Flow::Close) => return Ok(()),
            Err(err) => {
                if kind_of(&err) != Some(Kind::Network) {
                    end_session(conn, &err);
                }
                return Err(err);
            }
        }
    }
}

/// A reload that removed this user, or changed their home, key, password or
/// rights, ends their connection before its next request is served, however long
/// it waited (a home that moved is never used from the old descriptor): `Err` with
/// what to tell them, the reason logged. New limits apply at once.
fn follow_reload(context: &mut Context<'_>, name: &str) -> Result<(), String> {
    // Taken before the users are read: a reload after this point is seen either
    // by that reading or by the ledger (`Books::still`).
    context.checked_at = context.ledger.generation();
    let (from, now) = context.server.users.versioned();
    let user = now.get(name);
    if let Some(reason) = reason_to_end(&context.user, user) {
        context.log("logout", Err(reason.into()));
        return Err(match user {
            None => "this user was removed from the server".to_string(),
            Some(_) => format!("this user's account changed on the server ({reason})"),
        });
    }
    if let Some(user) = user {
        context.user = user.clone();
        context.ledger.set_limits(user.limits, from);
    }
    Ok(())
}

/// Ends a connection with an error frame, lingering so that it is read.
fn end(conn: &mut TcpConnection, code: ErrorCode, why: &str) -> Result<()> {
    let told = conn
        .writer
        .write_message(&Message::error(code, why))
        .and_then(|()| conn.writer.flush());
    if told.is_ok() {
        conn.closer.linger();
    }
    Ok(())
}
