//! `xfer serve`: a multi-user file server. Each user logs in with their own key (or a
//! password-derived one), is confined to a home beneath the root, has a quota, and
//! sends requests (`PROTOCOL.md` section 9): list, usage, mkdir, remove, rename, put
//! and get, one at a time over one sealed connection.
//!
//! Here: the server's shared state and its start (users, homes, quotas, the accept
//! loop, SIGHUP). `connection.rs` runs one connection's requests; `request/` holds
//! one file per request. Users come from `users.rs`.

mod connection;
mod pid_file;
mod request;
pub(crate) mod users;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use self::users::{User, UserStore, Users};
use crate::error::{Classify, Kind};
use crate::escape::{escape, escape_path, shortened};
use crate::fs::home::Home;
use crate::fs::quota::{HOME_CHANGED, Ledger};
use crate::fs::sink::{self, DirLock, TargetDir};
use crate::key;
use crate::net::{self, Accepting, Admission, Handler, ListenAddr, listen, signals};
use crate::proto::message::{ErrorCode, Role};
use crate::proto::negotiated::{Feature, Features};
use crate::transfer::recv::Claims;
use crate::ui::report::{self, Json, Reporter, Style, warn};

/// What `xfer serve` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ServerOptions {
    pub(crate) root: PathBuf,
    pub(crate) listen: ListenAddr,
    /// The users file; without one, a single key (`key_file` or `$XFER_KEY`).
    pub(crate) users_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    /// Announced in `hello` for password-derived keys (default: the host name).
    pub(crate) realm: Option<String>,
    /// Connections at once and timeouts (`--max-conns`, `--idle-timeout`...).
    pub(crate) admission: Admission,
    pub(crate) limit_rate: Option<u64>,
    /// Partial data of cut uploads no client came back for is removed after this long.
    pub(crate) keep_partial: Duration,
    /// Written with the server's PID at start, removed at exit (`--pid-file`).
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) style: Style,
}

/// The most of a request's action, detail or refusal one log line or event keeps
/// (bytes; cut with an ellipsis): a refusal repeats a path a user chose, of up to
/// 4 KiB, and a log must not grow as fast as anyone can send.
const LOGGED_TEXT: usize = 1024;

/// What every connection of a server shares.
pub(crate) struct Server {
    root: OwnedFd,
    users: Arc<UserStore>,
    /// One quota ledger per home, shared by all sessions of its user (`fs::quota`).
    /// A reload gives each its user's new limits at once, and forgets the count of
    /// a home that is no longer any user's ([`Server::follow_users`]). This lock is
    /// held only to find a ledger, or by a reload to list them.
    ledgers: Mutex<HashMap<PathBuf, Ledger>>,
    /// Connections per user, for `max_sessions`.
    sessions: Mutex<HashMap<String, usize>>,
    claims: Claims,
    style: Style,
}

impl Server {
    /// The ledger of the home `home` (as the users file names it).
    fn ledger_of(&self, home: &Path) -> Ledger {
        self.ledgers
            .lock()
            .expect("no panics while holding the lock")
            .entry(home.to_path_buf())
            .or_default()
            .clone()
    }

    /// The ledger of `user`'s home, counted from the disk the first time under its
    /// own lock (a large home delays only its own user's first login).
    /// `from`: the version of the users `user` was read from.
    fn ledger(&self, user: &User, home: &Home, from: u64) -> Ledger {
        let ledger = self.ledger_of(&user.home);
        ledger.open(home, (user.limits, from));
        ledger
    }

    /// Every ledger with its home, taken out of the map: a reload then waits for
    /// each ledger's lock (held across an upload's writes, and a whole count of
    /// its home) without holding the map, which every login needs.
    fn all_ledgers(&self) -> Vec<(PathBuf, Ledger)> {
        self.ledgers
            .lock()
            .expect("no panics while holding the lock")
            .iter()
            .map(|(home, ledger)| (home.clone(), ledger.clone()))
            .collect()
    }

    /// The users changed (a reload): each home's ledger takes its user's limits
    /// at once, uploads in flight included; a home that is no user's any more is
    /// forgotten (`Ledger::forget`): counted again from the disk when a user
    /// logs in to it next, since what was written meanwhile in a home inside or
    /// around it went to another ledger. A session of a user whose home changed is
    /// ended before its next request (`connection.rs`), and a `put` it is in makes
    /// nothing more in the forgotten home; nor does one of a user removed, whose
    /// home moved (though the old one is another user's now), whose key changed
    /// or who may only read now (`before`: the users until now).
    fn follow_users(&self, before: &Users, (from, users): (u64, &Users)) {
        let limits: HashMap<&Path, _> = users
            .all()
            .into_iter()
            .map(|user| (user.home.as_path(), user.limits))
            .collect();
        let stopped: HashMap<&Path, _> = before
            .all()
            .into_iter()
            .filter_map(|was| Some((was.home.as_path(), no_longer_writes(was, users)?)))
            .collect();
        for (home, ledger) in self.all_ledgers() {
            match limits.get(home.as_path()) {
                Some(limits) => ledger.set_limits(*limits, from),
                None => ledger.forget(),
            }
            if let Some(why) = stopped.get(home.as_path()) {
                ledger.stop_puts(why);
            }
        }
    }

    /// Counts every home a user has from the disk again (a reload: an
    /// administrator may have changed homes behind the server's back), one after
    /// the other, each under its own ledger's lock only; how many.
    fn recount_homes(&self) -> usize {
        let mut counted = 0;
        for (path, ledger) in self.all_ledgers() {
            if let Ok(home) = self.home_at(&path) {
                ledger.recount(&home);
                counted += 1;
            }
        }
        counted
    }

    /// Asks, each time it is called, whether `user` still reads the home their
    /// session opened (see [`no_longer_reads`]): a `get` opens no file after a
    /// reload gave that home to someone else.
    fn entitled(&self, user: &User) -> crate::fs::home::Entitled {
        let (users, was) = (Arc::clone(&self.users), user.clone());
        Box::new(move || match no_longer_reads(&was, &users.snapshot()) {
            None => Ok(()),
            Some(why) => Err(crate::fs::Refusal::new(ErrorCode::Denied, why)),
        })
    }

    /// Opens `user`'s home beneath the root, never through a link.
    fn home(&self, user: &User) -> Result<Home, crate::fs::Refusal> {
        self.home_at(&user.home)
    }

    /// Opens the home `home` (as the users file names it) beneath the root, never
    /// through a link.
    fn home_at(&self, home: &Path) -> Result<Home, crate::fs::Refusal> {
        if home == Path::new(".") {
            let root = rustix::io::dup(&self.root)
                .map_err(|err| crate::fs::Refusal::io("", "cannot open the home", err))?;
            return Ok(Home::from_fd(root));
        }
        Home::open(&self.root, home, false)
    }

    /// Logs one line (or a `request` event) for a request: each part cut to
    /// [`LOGGED_TEXT`] bytes, so no request makes a long line (the requests name
    /// their paths in few words already: `request::shown_paths`).
    fn log(&self, peer: SocketAddr, user: &str, action: &str, outcome: Result<String, String>) {
        let action = shortened(action, LOGGED_TEXT);
        let outcome = outcome
            .map(|detail| shortened(&detail, LOGGED_TEXT).into_owned())
            .map_err(|why| shortened(&why, LOGGED_TEXT).into_owned());
        if self.style.json != Json::Off {
            let mut event = json!({
                "event": "request", "peer": peer.to_string(), "user": user,
                "action": action, "ok": outcome.is_ok(),
            });
            match &outcome {
                Ok(detail) => event["detail"] = json!(detail),
                Err(why) => event["error"] = json!(why),
            }
            Reporter::new(self.style).event(|| event);
            return;
        }
        if self.style.quiet && outcome.is_ok() {
            return;
        }
        let user = report::user_or_dash(user);
        match outcome {
            Ok(detail) => report::line(&format!("xfer: {peer}: {user} {action}: {detail}")),
            Err(why) => report::line(&format!("xfer: {peer}: {user} {action}: refused: {why}")),
        }
    }

    /// Logs a refusal a client is expected to go on from (a `put` into a directory
    /// it makes next): a line in the words of `note`, silenced by `--quiet` as a
    /// success is, or a `request` event with `ok` false, the refusal `why` and
    /// `note` as its `detail` (cut as [`Server::log`] cuts them).
    fn note(&self, peer: SocketAddr, user: &str, action: &str, note: &str, why: &str) {
        let (action, why) = (shortened(action, LOGGED_TEXT), shortened(why, LOGGED_TEXT));
        if self.style.json != Json::Off {
            let event = json!({
                "event": "request", "peer": peer.to_string(), "user": user,
                "action": action, "ok": false, "error": why, "detail": note,
            });
            return Reporter::new(self.style).event(|| event);
        }
        if !self.style.quiet {
            let user = report::user_or_dash(user);
            report::line(&format!("xfer: {peer}: {user} {action}: {note}"));
        }
    }
}

/// A user's connection, counted until dropped (for `max_sessions`).
struct UserSlot {
    server: Arc<Server>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut sessions = self
            .server
            .sessions
            .lock()
            .expect("no panics while holding the lock");
        if let Some(count) = sessions.get_mut(&self.user) {
            *count = count.saturating_sub(1);
        }
    }
}

/// `xfer serve`.
pub(crate) fn run(options: &ServerOptions) -> Result<()> {
    let stop = signals::stop_on_signals()?;
    let reload = signals::flag_on_hangup()?;
    let realm = announced_realm(options);
    let realm_text = realm.clone().unwrap_or_default();
    // The users file first: a server that will not start leaves nothing behind.
    let listed = match &options.users_file {
        Some(file) => Some(Users::load(file, &realm_text)?),
        None => None,
    };
    let (root, _lock) = take_root(&options.root)?;
    let listener = listen::bind(&options.listen)?;
    let local = listener.local_addr().classify(Kind::Network)?;
    let users = match listed {
        Some(users) => users,
        None => Users::single(match key::load(options.key_file.as_deref())? {
            Some(key) => key,
            None => net::keyless::generate_for_listener(local, Role::Server)?,
        }),
    };
    make_homes(&root, &users);
    let _pid_file = pid_file::PidFile::write_if(options.pid_file.as_deref())?;
    say_who_may_log_in(&users, &realm_text, options);
    let server = Arc::new(Server {
        root,
        users: Arc::new(UserStore::new(users)),
        ledgers: Mutex::default(),
        sessions: Mutex::default(),
        claims: Claims::default(),
        style: options.style,
    });
    match options.users_file.clone() {
        Some(file) => watch_for_reload(server.clone(), file, realm_text, reload)?,
        None => nothing_to_reload(reload)?,
    }
    sweep_partials(server.clone(), options.keep_partial)?;
    let accepting = accepting(&server, realm, options);
    let handler: Handler = {
        let server = server.clone();
        Arc::new(move |mut conn, peer| connection::serve(&server, &mut conn, peer))
    };
    Reporter::new(options.style).listening(&local, options.listen.any_port());
    listen::serve(
        listener,
        Arc::new(accepting),
        options.admission,
        stop,
        handler,
    )
}

/// Makes the root if missing (private, as a home is: without --users the root is
/// the home) and takes it for this process: two servers would race over the same
/// homes and quotas. The root's descriptor, and the lock to hold while serving.
fn take_root(path: &Path) -> Result<(OwnedFd, DirLock)> {
    let (target, lock) = TargetDir::make_and_lock(path, "the root", 0o700)?;
    Ok((target.dup_root().classify(Kind::Io)?, lock))
}

/// How the server meets a client: always sealed, every feature offered, the
/// users' keys, and their per-user limits.
fn accepting(server: &Arc<Server>, realm: Option<String>, options: &ServerOptions) -> Accepting {
    Accepting {
        role: Role::Server,
        offered: Features::of(&Feature::ALL),
        required: Features::of(&[Feature::Aead]),
        realm,
        keys: server.users.clone(),
        admit: Some(admit(server.clone(), options.admission.max_sessions)),
        compress: None,
        rate: options.limit_rate,
    }
}

/// The realm `hello` announces: `--realm`, else the host name (`None` when the
/// host name cannot be a realm; clients then derive with an empty one).
fn announced_realm(options: &ServerOptions) -> Option<String> {
    let realm = options.realm.clone().unwrap_or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    });
    Some(realm).filter(|realm| crate::proto::handshake::valid_realm(realm))
}

/// Says at start what a user needs to log in (the realm a password's key must be
/// made for, who is listed) and which process to send SIGHUP to.
fn say_who_may_log_in(users: &Users, realm: &str, options: &ServerOptions) {
    if options.style.quiet {
        return;
    }
    let pid = std::process::id();
    let Some(file) = &options.users_file else {
        let summary = users.summary();
        report::line(&format!("xfer: realm {realm:?}; {summary}; pid {pid}"));
        return;
    };
    report::line(&format!(
        "xfer: realm {realm:?} (keys from passwords: `xfer passwd NAME --realm {}`); {}",
        escape(realm),
        users.summary()
    ));
    report::line(&format!(
        "xfer: pid {pid}; `kill -HUP {pid}` reads {} again",
        escape_path(file)
    ));
}

/// Without a users file, SIGHUP has nothing to read again: say so rather than
/// seem to have done something (or die, as the default action would).
fn nothing_to_reload(flag: Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                if flag.swap(false, Ordering::SeqCst) {
                    report::line(
                        "xfer: SIGHUP: nothing to reload (this server has one key and no users file; \
                         --users FILE gives it one)",
                    );
                }
            }
        })
        .context("cannot start a thread")?;
    Ok(())
}

/// Removes partial files of cut uploads no client came back for, and the
/// temporaries a server that stopped left (`Home::sweep`), at start and every
/// hour, home by home, each through its ledger (what leaves is given back).
/// Homes of users no longer in the users file are left as they are.
fn sweep_partials(server: Arc<Server>, keep: Duration) -> Result<()> {
    // Before any session: a temporary changed since is this server's, or another
    // process's at work (`Home::sweep`), by its ctime, whose clock this is.
    let started = crate::fs::beneath::change_clock();
    sink::sweep_in_background(
        true,
        move || sweep_homes(&server, (keep, started)),
        move |removed| {
            report::line(&format!(
                "xfer: removed {} (partials older than {} h that no client came back for, \
                 or temporaries and unnamed complete files a stopped server left)",
                report::plural(removed, "partial file"),
                keep.as_secs() / 3600
            ))
        },
    )
}

/// One sweep over every user's home; how many files it removed.
fn sweep_homes(server: &Server, (keep, started): (Duration, i128)) -> usize {
    let Some(cutoff) = sink::cutoff(keep) else {
        return 0;
    };
    let users = server.users.snapshot();
    let mut homes = users.all();
    homes.sort_by(|a, b| a.home.cmp(&b.home));
    homes.dedup_by(|a, b| a.home == b.home);
    homes
        .into_iter()
        .filter_map(|user| Some((server.home(user).ok()?, server.ledger_of(&user.home))))
        .map(|(home, ledger)| ledger.sweep(&home, (cutoff, started)))
        .sum()
}

/// Creates every user's home that does not exist yet, beneath the root (private),
/// and warns of an existing one that other local accounts can enter. A home that
/// cannot be opened (a link in its place, a file) is logged, one line each, and
/// keeps only its own user out: every login opens the home afresh and is refused
/// until it is fixed, while everyone else is served (at start and at a reload
/// alike, so one broken home never holds up the others' changes).
fn make_homes(root: &OwnedFd, users: &Users) {
    let mut all = users.all();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    for user in all.into_iter().filter(|user| user.home != Path::new(".")) {
        match Home::open(root, &user.home, true) {
            Ok(home) => {
                if let Some(mode) = home.open_to_others() {
                    warn(&format!(
                        "the home of {} ({}) is open to other local accounts (mode {mode:o}); \
                         `chmod 700` it to keep them out",
                        escape(&user.name),
                        escape_path(&user.home)
                    ));
                }
            }
            Err(refusal) => report::line(&format!(
                "xfer: home of {name}: {}: {name} cannot log in until it is fixed",
                refusal.message,
                name = escape(&user.name),
            )),
        }
    }
}

/// The per-user limit, checked after the user's key verified (`busy` over it):
/// `max_sessions`, by default half of `max_conns` (`Users::session_limit`).
fn admit(server: Arc<Server>, max_conns: usize) -> net::Admit {
    Arc::new(move |negotiated| {
        let name = negotiated.user().unwrap_or_default().to_string();
        let limit = server.users.snapshot().session_limit(&name, max_conns);
        let mut sessions = server
            .sessions
            .lock()
            .expect("no panics while holding the lock");
        let count = sessions.entry(name.clone()).or_default();
        if let Some(limit) = limit.filter(|limit| *count >= *limit) {
            return Err((
                ErrorCode::Busy,
                format!(
                    "{name} is at their limit of {} at once; try again later",
                    report::plural(limit, "connection")
                ),
            ));
        }
        *count += 1;
        Ok(Box::new(UserSlot {
            server: server.clone(),
            user: name,
        }))
    })
}

/// Reads the users file again on SIGHUP: new connections see the new users at
/// once, whatever their homes (see `make_homes`), and a file that does not load
/// is reported and ignored (the old users stay).
/// Counts every home again from the disk in a thread of its own (a home whose
/// disk stalls must hold up no later reload), saying so when done.
fn recount_in_background(server: &Arc<Server>) {
    let server = Arc::clone(server);
    let started = std::thread::Builder::new()
        .name("recount".into())
        .spawn(move || {
            let homes = server.recount_homes();
            report::line(&format!(
                "xfer: counted {} again from the disk",
                report::plural(homes, "home")
            ));
        });
    if let Err(err) = started {
        report::warn(&format!(
            "homes not counted again: cannot start a thread: {err}"
        ));
    }
}

/// What a reload took from a user that their sessions rely on.
#[derive(Debug, Clone, Copy)]
enum Lost {
    /// They are no user any more.
    Account,
    /// Their home is another directory (the old one may be another user's now).
    Home,
    /// Their key or password changed: whoever holds the session may not be them.
    Key,
    /// They may only read now.
    Writing,
}

/// What `was` lost now that the users are `now`, if anything.
fn lost(was: &User, now: &Users) -> Option<Lost> {
    lost_as(was, now.get(&was.name))
}

/// What `was` lost now that their entry in the users is `now` (`None`: removed).
fn lost_as(was: &User, now: Option<&User>) -> Option<Lost> {
    let Some(now) = now else {
        return Some(Lost::Account);
    };
    if now.home != was.home {
        Some(Lost::Home)
    } else if now.key.bytes() != was.key.bytes() {
        Some(Lost::Key)
    } else if now.read_only && !was.read_only {
        Some(Lost::Writing)
    } else {
        None
    }
}

/// Why `was` may no longer read what their session opened as their home: removed,
/// given another home, or another key (whoever holds the session may not be them).
/// A user made read-only still reads.
fn no_longer_reads(was: &User, now: &Users) -> Option<&'static str> {
    match lost(was, now)? {
        Lost::Account => Some("this user was removed from the server (a reload of the users file)"),
        Lost::Home => Some("this user's home changed on the server (a reload of the users file)"),
        Lost::Key => {
            Some("this user's key or password changed on the server (a reload of the users file)")
        }
        Lost::Writing => None,
    }
}

/// Why the `put`s of `was` (in their home until now) must stop now that the
/// users are `now`: they were removed, their home moved (the old one may be
/// another user's now, or nobody's, and then forgotten as well), their key (or
/// password) changed, or they may only read.
fn no_longer_writes(was: &User, now: &Users) -> Option<&'static str> {
    Some(match lost(was, now)? {
        Lost::Account => {
            "this user was removed from the server (a reload of the users file); the upload stops"
        }
        Lost::Home => HOME_CHANGED,
        Lost::Key => {
            "this user's key or password changed on the server (a reload of the users \
             file); the upload stops"
        }
        Lost::Writing => {
            "this user may only read now (a reload of the users file); the upload stops"
        }
    })
}

fn watch_for_reload(
    server: Arc<Server>,
    file: PathBuf,
    realm: String,
    flag: Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                if !flag.swap(false, Ordering::SeqCst) {
                    continue;
                }
                match Users::load(&file, &realm) {
                    Ok(users) => {
                        // Made before anyone can log in with the new users.
                        make_homes(&server.root, &users);
                        let summary = users.summary();
                        let before = server.users.snapshot();
                        server.users.replace(users);
                        let (from, now) = server.users.versioned();
                        server.follow_users(&before, (from, &now));
                        report::line(&format!(
                            "xfer: reloaded {}: {summary}, realm {realm:?}",
                            escape_path(&file),
                        ));
                        recount_in_background(&server);
                    }
                    Err(err) => report::line(&format!(
                        "xfer: not reloaded, keeping the users as they were: {err:#}"
                    )),
                }
            }
        })
        .context("cannot start a thread")?;
    Ok(())
}
