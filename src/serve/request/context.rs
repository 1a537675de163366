//! What a request works with: the server, the peer, the user as they were when
//! the request arrived, their home (held open since login) and their home's
//! ledger. Kept apart from `connection.rs` (which makes one per connection) so
//! that requests depend on this, not on the connection loop.

use std::net::SocketAddr;

use crate::fs::home::Home;
use crate::fs::quota::Ledger;
use crate::serve::Server;
use crate::serve::users::User;

/// What a request works with.
pub(crate) struct Context<'a> {
    pub(crate) server: &'a Server,
    pub(crate) peer: SocketAddr,
    pub(crate) user: User,
    pub(crate) home: Home,
    /// The quota ledger of the home, through which every change to it goes.
    pub(crate) ledger: Ledger,
    /// The ledger's generation taken before this request was checked against the
    /// users: a reload since then stops what the request would change.
    pub(crate) checked_at: u64,
}

impl Context<'_> {
    /// The user's name as logged (`-` for a single-key server's nameless user).
    pub(crate) fn name(&self) -> &str {
        &self.user.name
    }

    pub(crate) fn log(&self, action: &str, outcome: Result<String, String>) {
        self.server.log(self.peer, self.name(), action, outcome);
    }

    /// Logs a refusal the client is expected to go on from, in the words of `note`.
    pub(crate) fn note(&self, action: &str, note: &str, why: &str) {
        self.server.note(self.peer, self.name(), action, note, why);
    }
}
