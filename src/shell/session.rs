//! The shell's side of the connection: logged in once, reopened transparently (same
//! user, same directory) when the server closed it while the user was idle, and cut
//! on Ctrl-C during a transfer. Also the remote directory the user is in, and the
//! listings completion has seen.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::client::{Client, ClientOptions};
use crate::error::{Kind, kind_of};
use crate::proto::handshake::Secret;
use crate::proto::message::{ErrorCode, Item};
use crate::transfer::Tally;
use crate::ui::report::{Reporter, Style};

/// Whether the server ended the session after login (`auth`: a reload of its
/// users changed or removed this one), not a refusal of one request.
fn ended_by_server(err: &anyhow::Error) -> bool {
    crate::error::peer_code(err) == Some(ErrorCode::Auth)
}

/// A connection that can be cut from another thread (Ctrl-C during a transfer).
pub(crate) type Interrupter = Arc<Mutex<Option<TcpStream>>>;

/// What the shell keeps between commands.
pub(crate) struct Session {
    options: ClientOptions,
    pub(crate) style: Style,
    client: Option<Client>,
    /// What logged in the first time (a password's derived key, in memory only),
    /// so that reconnecting asks nothing.
    secret: Option<Arc<Secret>>,
    /// Where the user is, beneath the home (`""`: the home).
    pub(crate) cwd: String,
    /// Listings completion has seen, by directory; dropped after any change.
    listings: HashMap<String, Vec<Item>>,
    /// The connection of the command running now, for Ctrl-C.
    pub(crate) interrupter: Interrupter,
    /// Set when Ctrl-C cut the running command: it is not tried again.
    pub(crate) interrupted: Arc<AtomicBool>,
}

impl Session {
    pub(crate) fn new(options: ClientOptions, style: Style) -> Session {
        Session {
            options,
            style,
            client: None,
            secret: None,
            cwd: String::new(),
            listings: HashMap::new(),
            interrupter: Arc::default(),
            interrupted: Arc::default(),
        }
    }

    /// Logs in now (at start, so that a wrong key says so before the first prompt).
    pub(crate) fn connect(&mut self) -> Result<()> {
        self.client()?;
        Ok(())
    }

    /// `user@host`, for the prompt.
    pub(crate) fn label(&self) -> String {
        let host = &self.options.to.host;
        match &self.options.auth.user {
            Some(user) => format!("{user}@{host}"),
            None => host.clone(),
        }
    }

    fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_none() {
            let secret = match &self.secret {
                Some(secret) => secret.clone(),
                None => self.options.auth.secret()?,
            };
            let client = Client::connect_with(&self.options, self.style, secret.clone())?;
            // Kept once it logged in: a wrong password is asked for again.
            self.secret = Some(secret);
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// Runs `request` on the connection. If the server had closed it while the user
    /// was idle (the request meets a closed connection, or the server's `timeout`),
    /// logs in again once, transparently, and runs it again. Where the server
    /// ended the session itself (a reload of its users changed this one), the
    /// command is not run again: see [`Session::log_in_again_after`].
    pub(crate) fn run<T>(
        &mut self,
        mut request: impl FnMut(&mut Client) -> Result<T>,
    ) -> Result<T> {
        let fresh = self.client.is_none();
        let first = self.attempt(&mut request);
        match first {
            Err(err) if !fresh && self.client.is_none() && ended_by_server(&err) => {
                Err(self.log_in_again_after(err))
            }
            Err(err)
                if !fresh
                    && self.client.is_none()
                    && kind_of(&err) == Some(Kind::Network)
                    && !self.interrupted.load(Ordering::SeqCst) =>
            {
                self.attempt(&mut request)
            }
            other => other,
        }
    }

    /// After the server ended the session (`err`: a reload moved this user's home,
    /// or changed their rights): the user is put at the top of the home, which may
    /// be another directory now, and logged in again at once, so that the next
    /// command runs there. This one is not run again: its paths were worked out
    /// from where the user was, in a home that may be gone (an `rm` would remove
    /// what they never saw). A login that fails (a removed user, a changed key or
    /// password) is the error, and a password is asked for again next time.
    fn log_in_again_after(&mut self, err: anyhow::Error) -> anyhow::Error {
        self.cwd.clear();
        self.listings.clear();
        match self.client() {
            Ok(_) => crate::error::fail(
                Kind::Network,
                format!("{err:#}; logged in again, into the home: the command did not run"),
            ),
            Err(login) => {
                self.secret = None;
                login
            }
        }
    }

    fn attempt<T>(&mut self, request: &mut impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let interrupter = self.interrupter.clone();
        let client = self.client()?;
        *interrupter
            .lock()
            .expect("no panics while holding the lock") = client.interrupter();
        let result = request(client);
        *interrupter
            .lock()
            .expect("no panics while holding the lock") = None;
        if let Err(err) = &result
            && (matches!(
                kind_of(err),
                Some(Kind::Network | Kind::Protocol | Kind::Verification)
            ) || ended_by_server(err))
        {
            // The connection is gone (or not to be trusted): the next command logs in again.
            self.client = None;
        }
        result
    }

    /// Runs a transfer with its bar and summary (`verb`: `received`, `sent`), and
    /// with `itemize` a line per change, as the one-shot commands do.
    pub(crate) fn transfer(
        &mut self,
        verb: &str,
        itemize: bool,
        mut work: impl FnMut(&mut Client, &mut Tally) -> Result<()>,
    ) -> Result<()> {
        let style = Style {
            itemize,
            ..self.style
        };
        let mut last: Option<Tally> = None;
        let result = self.run(|client| {
            let mut tally = Tally::new(Reporter::new(style), client.negotiated());
            let result = work(client, &mut tally).and_then(|()| tally.verdict());
            last = Some(tally);
            result
        });
        if let Some(tally) = last {
            tally.finish(verb, &result);
        }
        result
    }

    /// A listing for completion, from the cache while the user changes nothing.
    pub(crate) fn listing(&mut self, dir: &str) -> Result<Vec<Item>> {
        if let Some(items) = self.listings.get(dir) {
            return Ok(items.clone());
        }
        let dir_owned = dir.to_string();
        let items = self.run(|client| client.list(&dir_owned))?;
        self.listings.insert(dir.to_string(), items.clone());
        Ok(items)
    }

    /// Something changed on the server: what completion saw may be stale.
    pub(crate) fn forget_listings(&mut self) {
        self.listings.clear();
    }

    /// Says goodbye.
    pub(crate) fn close(&mut self) {
        if let Some(client) = self.client.take() {
            client.bye();
        }
    }
}
