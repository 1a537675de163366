//! The client of a server (`xfer serve`): one authenticated, sealed request
//! connection, and a method per request of `PROTOCOL.md` section 9. A refused
//! request is an error for that request only; the connection goes on, so the
//! shell can keep asking. The one-shot commands (`get`, `ls`, `mkdir`, `rm`, `mv`,
//! `send HOST:PORT:DIR`) and the shell are loops over this.

pub(crate) mod options;
pub(crate) mod path;
mod tree;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::client::options::{AuthOptions, Encryption, Hashing, Peering, Security};
use crate::error::{Kind, fail, peer_code, peer_error};
use crate::fs::input::Outbox;
use crate::net::{self, Endpoint, Link, TcpConnection, Timeouts};
use crate::proto::handshake::Secret;
use crate::proto::message::{ErrorCode, Item, ItemKind, Message, Mirror, Role, Usage};
use crate::proto::negotiated::Feature;
use crate::transfer::recv::{self, Claims, Destination, Settings};
use crate::transfer::send::Offering;
use crate::transfer::tell::end_session;
use crate::transfer::{Tally, send};
use crate::ui::report::Style;

/// How a client meets its server.
#[derive(Debug, Clone)]
pub(crate) struct ClientOptions {
    pub(crate) to: Endpoint,
    pub(crate) wait: Duration,
    pub(crate) timeouts: Timeouts,
    pub(crate) auth: AuthOptions,
    pub(crate) hash: Hashing,
    pub(crate) limit_rate: Option<u64>,
    /// zstd level for what this client puts, if it compresses.
    pub(crate) compress: Option<i32>,
    /// `--whole-file`: no feature `delta` on this connection.
    pub(crate) whole_file: bool,
    /// What a `get` asks the server (filters, `--delete`, `--dry-run`); the last
    /// two need a server with the feature `mirror`.
    pub(crate) mirror: Option<Mirror>,
}

impl ClientOptions {
    /// The peering a connection needs: always sealed (a request connection
    /// requires `aead`, section 7).
    fn peering(&self, style: Style) -> Peering {
        Peering {
            link: Link::Connect {
                to: self.to.clone(),
                wait: self.wait,
            },
            timeouts: self.timeouts,
            auth: self.auth.clone(),
            security: Security {
                hash: self.hash,
                encryption: Encryption::Required,
                whole_file: self.whole_file,
                mirror: self
                    .mirror
                    .as_ref()
                    .is_some_and(|mirror| mirror.delete || mirror.dry_run),
            },
            limit_rate: self.limit_rate,
            style,
        }
    }
}

/// An open request connection.
pub(crate) struct Client {
    conn: TcpConnection,
    /// What a `get` asks the server (see [`ClientOptions::mirror`]).
    mirror: Option<Mirror>,
}

impl Client {
    /// Connects to the server and logs in.
    pub(crate) fn connect(options: &ClientOptions, style: Style) -> Result<Client> {
        Client::connect_with(options, style, options.auth.secret()?)
    }

    /// Connects and logs in with `secret` (kept by the shell between connections,
    /// so a reconnection asks for no password).
    pub(crate) fn connect_with(
        options: &ClientOptions,
        style: Style,
        secret: Arc<Secret>,
    ) -> Result<Client> {
        let peering = options.peering(style);
        let initiating = peering.initiating_with(Role::Client, options.compress, secret);
        let (conn, _peer) = net::connect(&options.to, options.wait, options.timeouts, &initiating)?;
        // Filters alone need no `mirror` of the server: it then offers everything.
        let mirroring = conn
            .negotiated
            .has(crate::proto::negotiated::Feature::Mirror);
        if options.mirror.is_some() && !mirroring {
            crate::ui::report::warn(
                "the server cannot filter (no feature `mirror`): everything asked for comes",
            );
        }
        let mirror = options.mirror.clone().filter(|_| mirroring);
        Ok(Client { conn, mirror })
    }

    /// A handle that cuts this connection from another thread (Ctrl-C in the shell).
    pub(crate) fn interrupter(&self) -> Option<std::net::TcpStream> {
        self.conn.closer.socket()?.try_clone().ok()
    }

    /// What the connection negotiated.
    pub(crate) fn negotiated(&self) -> &crate::proto::negotiated::Negotiated {
        &self.conn.negotiated
    }

    /// Sends a request and reads its first answer; a refusal is an error for this
    /// request (the connection stays usable unless its code ends connections).
    fn request(&mut self, request: &Message) -> Result<Message> {
        request_on(&mut self.conn, request)
    }

    fn acked(&mut self, request: &Message) -> Result<()> {
        acked_on(&mut self.conn, request)
    }

    /// `list PATH`: a directory's children (sorted by name), or the one item PATH
    /// is. The listing is read to its end before anything is shown: a reader that
    /// printed as frames arrived would hold the server's connection for as long as
    /// its output is not read (`xfer ls | less`), and a cut would leave a partial
    /// listing on stdout.
    pub(crate) fn list(&mut self, path: &str) -> Result<Vec<Item>> {
        list_on(&mut self.conn, path)
    }

    /// `usage`: bytes and entries (files, directories, links) used, against the quota.
    pub(crate) fn usage(&mut self) -> Result<Usage> {
        match self.request(&Message::Usage(Usage::default()))? {
            Message::Usage(usage) if usage.bytes.is_some() && usage.files.is_some() => Ok(usage),
            other => Err(unexpected(&mut self.conn, "usage", &other)),
        }
    }

    pub(crate) fn mkdir(&mut self, path: &str) -> Result<()> {
        self.acked(&Message::Mkdir {
            path: path.to_string(),
        })
    }

    pub(crate) fn remove(&mut self, path: &str) -> Result<()> {
        self.acked(&Message::Remove {
            path: path.to_string(),
        })
    }

    pub(crate) fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.acked(&Message::Rename {
            from: from.to_string(),
            to: to.to_string(),
        })
    }

    /// `put DIR`: sends `outbox` into DIR of the home. `Ok` once the transfer
    /// completed; per-file failures are in the tally.
    pub(crate) fn put(
        &mut self,
        dir: &str,
        overwrite: bool,
        outbox: &dyn Outbox,
        tally: &mut Tally,
    ) -> Result<()> {
        put_on(
            &mut self.conn,
            dir,
            overwrite,
            Offering::Walked(outbox),
            tally,
        )
    }

    /// `get PATHS`: receives them into `destination`.
    pub(crate) fn get(
        &mut self,
        paths: &[String],
        destination: &Destination,
        settings: Settings,
        tally: &mut Tally,
    ) -> Result<()> {
        // Runs are hashed as written (16.4): standard output cannot take them.
        let meta = self.conn.negotiated.has(Feature::Meta);
        let sparse = meta && matches!(destination, Destination::Dir(_));
        // Without `meta` no entry can carry them: the offer then shows none came.
        let xattrs = meta && settings.xattrs;
        self.conn.writer.write_message(&Message::Get {
            paths: paths.to_vec(),
            mirror: self.mirror.clone(),
            sparse: sparse.then_some(true),
            xattrs: xattrs.then_some(true),
        })?;
        self.conn.writer.flush()?;
        // The answer is the transfer itself (its offer), or an error frame, which
        // the receiving session reports as the server's refusal.
        recv::session(
            &mut self.conn,
            destination,
            &Claims::default(),
            settings,
            None,
            tally,
        )
    }

    /// What the next `get`s ask the server (the shell's, per command); `feature`
    /// for `--delete` or `--dry-run` when the server lacks `mirror`.
    pub(crate) fn asking(&mut self, mirror: Option<Mirror>) -> Result<()> {
        let mirroring = self
            .conn
            .negotiated
            .has(crate::proto::negotiated::Feature::Mirror);
        if !mirroring && mirror.as_ref().is_some_and(|m| m.delete || m.dry_run) {
            return Err(crate::error::refused(
                ErrorCode::Feature,
                "the server cannot mirror (--delete, --dry-run): it lacks the feature `mirror`",
            ));
        }
        self.mirror = mirror.filter(|_| mirroring);
        Ok(())
    }

    /// Says goodbye; the server closes.
    pub(crate) fn bye(mut self) {
        let _ = self
            .conn
            .writer
            .write_message(&Message::Bye)
            .and_then(|()| self.conn.writer.flush());
    }
}

/// `put DIR` on a request connection: the request, its `ack`, then the transfer
/// with this side as sender, of `offering` (a walk under way never asks for a dry
/// run: see `send::Walking`).
pub(crate) fn put_on(
    conn: &mut TcpConnection,
    dir: &str,
    overwrite: bool,
    offering: Offering<'_>,
    tally: &mut Tally,
) -> Result<()> {
    let put = Message::Put {
        dir: dir.to_string(),
        overwrite,
    };
    let dry_run = match offering {
        Offering::Walked(outbox) => outbox
            .mirror()
            .filter(|mirror| mirror.dry_run)
            .map(|_| outbox),
        Offering::Walking(_) => None,
    };
    let answer = match request_on(conn, &put) {
        // A dry run makes nothing: into a directory not there yet, all is new;
        // where a real run could not make it, the dry run fails as that would.
        Err(err) if peer_code(&err) == Some(ErrorCode::NotFound) && dry_run.is_some() => {
            if let Some(refusal) = what_mkdir_meets(conn, dir)? {
                if !tally.reporter().style().quiet {
                    crate::ui::report::line(&format!(
                        "xfer: dry run: a real run fails here: it cannot make the server's \
                         directory {} (nothing was sent, written or deleted)",
                        crate::escape::escape(dir)
                    ));
                }
                return Err(refusal);
            }
            dry_run_into_nothing(dir, dry_run.expect("a dry run"), tally);
            return Ok(());
        }
        // A directory that is not there yet is made first, as `mkdir -p` would.
        Err(err) if peer_code(&err) == Some(ErrorCode::NotFound) && !dir.is_empty() => {
            let mkdir = Message::Mkdir {
                path: dir.to_string(),
            };
            acked_on(conn, &mkdir)?;
            request_on(conn, &put)?
        }
        answer => answer?,
    };
    match answer {
        Message::Ack => send::offering_session(conn, offering, tally),
        other => Err(unexpected(conn, "ack", &other)),
    }
}

/// A dry run `put` into `dir`, which the server does not have (`not_found`): a
/// real run would make it (see [`put_on`]), and a dry run makes nothing, so no
/// receiver can plan; this side lists every entry as new and says why. The server
/// was not asked about names or its quota; a real run may still refuse some.
fn dry_run_into_nothing(dir: &str, outbox: &dyn Outbox, tally: &mut Tally) {
    let message = format!(
        "the server has no directory {} yet; a real run makes it, and everything would be \
         new there (listed by this side alone: the server was not asked about names or its \
         quota)",
        crate::escape::escape(dir)
    );
    crate::ui::report::not_there_yet(tally.reporter().style(), "server", dir, &message);
    send::all_new(outbox, tally);
}

/// What the `mkdir` of `dir` a real run sends after a `put` answered `not_found`
/// would meet, found out by `list` alone (a dry run writes nothing): `None` where
/// it would make the directory, else the refusal the server would answer, in the
/// server's words (`fs::home`'s `mkdir`). Each component is looked up in the
/// listing of its parent, from the home down: a listing of the path itself cannot
/// tell a file from a directory holding one entry of that name. A link listed as
/// `other` (no feature `meta`) reads as any other non-directory.
fn what_mkdir_meets(conn: &mut TcpConnection, dir: &str) -> Result<Option<anyhow::Error>> {
    let components: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    for depth in 0..components.len() {
        let parent = components[..depth].join("/");
        let name = components[depth];
        let Some(item) = list_on(conn, &parent)?.into_iter().find(|i| i.name == name) else {
            return Ok(None);
        };
        let path = components[..=depth].join("/");
        let shown = crate::escape::escape(&path);
        let why = match item.kind {
            ItemKind::Dir => continue,
            ItemKind::Symlink => crate::fs::beneath::link_here(&shown),
            ItemKind::File | ItemKind::Other => format!("{shown}: exists and is not a directory"),
        };
        return Ok(Some(peer_error(ErrorCode::Exists, &why)));
    }
    Ok(None)
}

/// `list PATH` on a request connection, read to its end.
fn list_on(conn: &mut TcpConnection, path: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut answer = request_on(
        conn,
        &Message::List {
            path: path.to_string(),
        },
    )?;
    loop {
        match answer {
            Message::Listing { entries, more } => {
                items.extend(entries);
                if !more {
                    return Ok(items);
                }
            }
            other => return Err(unexpected(conn, "listing", &other)),
        }
        let next = conn.reader.expect_message("the rest of the listing");
        answer = next.map_err(|err| ending(conn, err))?;
    }
}

/// Sends one request and reads its answer; an error frame is the server's refusal.
fn request_on(conn: &mut TcpConnection, request: &Message) -> Result<Message> {
    conn.writer.write_message(request)?;
    conn.writer.flush()?;
    let answer = conn.reader.expect_message("the server's answer");
    match answer.map_err(|err| ending(conn, err))? {
        Message::Error {
            code,
            message,
            index: None,
        } => Err(peer_error(code, &message)),
        answer => Ok(answer),
    }
}

/// A request answered `ack`.
fn acked_on(conn: &mut TcpConnection, request: &Message) -> Result<()> {
    match request_on(conn, request)? {
        Message::Ack => Ok(()),
        other => Err(unexpected(conn, "ack", &other)),
    }
}

/// An answer of the wrong type: `protocol`, which ends the connection.
fn unexpected(conn: &mut TcpConnection, expected: &str, got: &Message) -> anyhow::Error {
    let err = fail(
        Kind::Protocol,
        format!("expected {expected} from the server, got {got}"),
    );
    ending(conn, err)
}

/// Ends the connection after a failure the server should hear of (a broken or
/// unexpected answer is `protocol`, a silent server `timeout`) the way a failed
/// session does (`transfer::tell::end_session`: the error frame, then the
/// linger); the server's own refusals and a lost connection pass through as they
/// are. Returns `err`.
fn ending(conn: &mut TcpConnection, err: anyhow::Error) -> anyhow::Error {
    end_session(conn, &err);
    err
}
