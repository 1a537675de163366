//! One client's connection to the server: the user it authenticated as, that
//! user's home and account, and its requests, one at a time, until `bye`, a close,
//! the idle timeout, or the user being removed by a reload.

use std::net::SocketAddr;

use anyhow::Result;

use super::Server;
use super::request::{self, Flow};
use super::users::User;
use crate::error::{Kind, kind_of};
use crate::fs::home::Home;
use crate::fs::quota::Account;
use crate::net::TcpConnection;
use crate::proto::message::{ErrorCode, Message};
use crate::transfer::tell_peer;

/// What a request works with.
pub struct Context<'a> {
    pub server: &'a Server,
    pub peer: SocketAddr,
    pub user: User,
    pub home: Home,
    pub account: Account,
}

impl Context<'_> {
    /// The user's name as logged (`-` for a single-key server's nameless user).
    pub fn name(&self) -> &str {
        &self.user.name
    }

    pub fn log(&self, action: &str, outcome: Result<String, String>) {
        self.server.log(self.peer, self.name(), action, outcome);
    }
}

/// Serves `conn`'s requests.
pub fn serve(server: &Server, conn: &mut TcpConnection, peer: SocketAddr) -> Result<()> {
    let name = conn.negotiated.user.clone().unwrap_or_default();
    let users = server.users.snapshot();
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
            return end(conn, ErrorCode::Io, "the user's home cannot be opened");
        }
    };
    let account = server.account(&user, &home);
    let mut context = Context {
        server,
        peer,
        user,
        home,
        account,
    };
    context.log(
        "login",
        Ok(format!("logged in ({})", conn.negotiated.features)),
    );
    loop {
        let message = match conn.reader.read_message() {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()), // the client closed
            Err(err) => {
                // Idle too long, or a broken frame: say so, where possible.
                tell_peer(&mut conn.writer, &err);
                return Err(err);
            }
        };
        // A reload that removed this user (or changed their key) ends their
        // connection before its next request is served, however long it waited.
        let now = server.users.snapshot();
        match now.get(&name) {
            Some(user) if user.key.bytes() == context.user.key.bytes() => {
                context.user = user.clone();
                context.account.set_limits(user.limits);
            }
            _ => {
                context.log("logout", Err("removed from the users file".into()));
                return end(
                    conn,
                    ErrorCode::Auth,
                    "this user was removed from the server",
                );
            }
        }
        match request::handle(&mut context, conn, message) {
            Ok(Flow::Next) => {}
            Ok(Flow::Close) => return Ok(()),
            Err(err) => {
                if kind_of(&err) != Some(Kind::Network) {
                    tell_peer(&mut conn.writer, &err);
                }
                return Err(err);
            }
        }
    }
}

/// Ends a connection with an error frame.
fn end(conn: &mut TcpConnection, code: ErrorCode, why: &str) -> Result<()> {
    let _ = conn
        .writer
        .write_message(&Message::error(code, why))
        .and_then(|()| conn.writer.flush());
    Ok(())
}
