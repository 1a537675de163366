//! Everything xfer tells its user besides the data: warnings, per-file outcomes and
//! the closing summary, as plain lines on stderr or, with `--json`, as one JSON
//! object per line (the event stream documented in the README). The progress bar
//! lives here too, so that lines never tear it. The reporter only shows: sessions
//! decide what happened (`transfer::Tally`) and hand it over.
//!
//! Stdout is written only for `--json` events, and only when it does not carry data.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar};
use serde_json::json;

use super::progress;
use crate::escape::{Named, escape};
use crate::proto::compress::Squeezed;
use crate::proto::hash::{Digest, HashKind};
use crate::proto::message::{Dropped, EntryKind, ErrorCode, ItemKind, KeptWhy, Removed};

pub(crate) use crate::stderr::{line, set_quiet, warn};

/// What became of one entry.
#[derive(Debug, Clone)]
pub(crate) enum FileOutcome {
    /// It arrived and verified; `resumed_at` is where this session's data began.
    Verified {
        path: Named,
        size: u64,
        /// Bytes that moved in this session: not a resumed prefix, not the holes
        /// of a sparse file.
        moved: u64,
        digest: Digest,
        hash: HashKind,
        resumed_at: Option<u64>,
    },
    /// The receiver already held it (same size and time): counted as delivered.
    /// `verified`: its content was hashed and matched too (a delta that rebuilt the
    /// old file byte for byte, which stayed), with what.
    Same {
        path: Named,
        /// What it is: a link or special file said `same` is no file, which its
        /// event says (`kind`).
        kind: EntryKind,
        size: Option<u64>,
        verified: Option<(HashKind, Digest)>,
    },
    /// It did not make it: the wire code that says why, and the words (escaped).
    Failed {
        path: Named,
        code: ErrorCode,
        why: String,
    },
    /// The sender did not send it (a socket, an unreadable file, a name the peer
    /// cannot take): `reason` for people, its kind before the first `:`. `said`:
    /// a warning named it already (the sender's walk).
    NotSent {
        path: Named,
        reason: String,
        said: bool,
    },
}

impl FileOutcome {
    /// The entry's path, as shown.
    pub(crate) fn path(&self) -> &str {
        self.named()
    }

    /// The entry's path, with its bytes where they are not UTF-8.
    pub(crate) fn named(&self) -> &Named {
        match self {
            FileOutcome::Verified { path, .. }
            | FileOutcome::Same { path, .. }
            | FileOutcome::Failed { path, .. }
            | FileOutcome::NotSent { path, .. } => path,
        }
    }
}

/// What a not-sent entry's reason counts as in the summary: its words up to the
/// first `:` (`unreadable: Permission denied` is `unreadable`).
pub(crate) fn not_sent_kind(reason: &str) -> &str {
    let kind = reason.split(':').next().unwrap_or_default().trim();
    if kind.is_empty() { "other" } else { kind }
}

/// `2 sockets, 1 unreadable`: what was not sent, by kind, nouns in the plural
/// where they have one.
pub(crate) fn not_sent_breakdown(kinds: &[(String, usize)]) -> String {
    const NOUNS: &[&str] = &[
        "socket",
        "named pipe",
        "device",
        "symbolic link",
        "special file",
        "hard link",
        "loop",
        "name",
    ];
    kinds
        .iter()
        .map(|(kind, n)| {
            let shown = escape(kind);
            let plural = *n != 1 && NOUNS.iter().any(|noun| shown.starts_with(noun));
            match plural {
                // "name not UTF-8" becomes "names not UTF-8".
                true => match shown.split_once(' ') {
                    Some((noun, rest)) if !NOUNS.contains(&&*shown) && noun == "name" => {
                        format!("{n} names {rest}")
                    }
                    _ => format!("{n} {shown}s"),
                },
                false => format!("{n} {shown}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One entry's change, as `--itemize` and `--dry-run` list them (rsync's `-i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// A file that was not on the receiver.
    New,
    /// A directory that was not on the receiver.
    NewDir,
    /// A file that replaced the receiver's (a real run; or what was there a
    /// directory, which it replaced: also in a dry run, on the receiving side).
    Replaced,
    /// A directory made in place of the receiver's file, link or special file
    /// (a change of type, as `rsync -a` makes one): shown with a `/`.
    ReplacedDir,
    /// A file that replaced the receiver's, built there from a delta against it
    /// (feature `delta`; a real run: a dry run says `Changed`, with what the delta
    /// would move).
    Delta,
    /// A file the receiver holds another version of (a dry run: it would be sent).
    Changed,
    /// A file the receiver holds already (a dry run).
    Same,
    /// An entry the receiver holds already (a file of the same size and time, a
    /// directory) whose mode, time, owner or extended attributes were (in a dry
    /// run: would be) made those offered; rsync's `.f...p...`.
    Attrs,
    /// The same for a directory there already (rsync's `.d..t...`): shown with a `/`.
    DirAttrs,
    /// An entry the receiver refuses (a dry run).
    Skipped,
    /// Removed by `--delete` (or, in a dry run, it would be).
    Deleted,
    /// A directory removed so (shown with a `/`, as `new dir` is).
    DeletedDir,
    /// `--delete` could not remove it (a directory: `dir`).
    NotDeleted { dir: bool },
    /// `--delete` kept it for safety, never trying (xfer's partial file, a name
    /// that is not UTF-8, a change since the session began, another session's).
    Kept { why: KeptWhy, dir: bool },
    /// An entry without data (a link, a hard link, a special file) that was not on
    /// the receiver.
    NewNode(EntryKind),
    /// One that replaced what the receiver held under its name (a dry run: it
    /// would).
    ReplacedNode(EntryKind),
}

impl Change {
    /// Whether the change is a directory's (shown with a trailing slash).
    fn of_a_dir(self) -> bool {
        matches!(
            self,
            Change::NewDir
                | Change::DirAttrs
                | Change::ReplacedDir
                | Change::DeletedDir
                | Change::NotDeleted { dir: true }
                | Change::Kept { dir: true, .. }
        )
    }

    /// What `--delete` did with `removed` (as its report says it).
    pub(crate) fn of_removal(removed: &Removed) -> Change {
        let dir = removed.kind == ItemKind::Dir;
        match (&removed.error, removed.kept) {
            (_, Some(why)) => Change::Kept { why, dir },
            (None, None) => Change::deleted(removed.kind),
            (Some(_), None) => Change::NotDeleted { dir },
        }
    }

    /// What removing an item of `kind` was.
    pub(crate) fn deleted(kind: ItemKind) -> Change {
        match kind {
            ItemKind::Dir => Change::DeletedDir,
            _ => Change::Deleted,
        }
    }

    /// An entry without data of `kind` made on the receiver, new or `replaces`.
    pub(crate) fn of_node(kind: EntryKind, replaces: bool) -> Change {
        match replaces {
            true => Change::ReplacedNode(kind),
            false => Change::NewNode(kind),
        }
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::NewDir => "new dir",
            Change::Replaced | Change::ReplacedDir => "replaced",
            Change::Delta => "delta",
            Change::Changed => "changed",
            Change::Same => "same",
            Change::Attrs | Change::DirAttrs => "attrs",
            Change::Skipped => "skipped",
            Change::Deleted | Change::DeletedDir => "deleted",
            Change::NotDeleted { .. } | Change::Kept { .. } => "kept",
            Change::NewNode(kind) => match kind {
                EntryKind::Symlink => "new link",
                EntryKind::Hardlink => "new hard link",
                _ => "new special",
            },
            Change::ReplacedNode(kind) => match kind {
                EntryKind::Symlink => "replaced link",
                EntryKind::Hardlink => "replaced hard link",
                _ => "replaced special",
            },
        }
    }
}

/// What a dry run found, for its summary.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DryRun {
    pub(crate) new: usize,
    pub(crate) changed: usize,
    /// Bytes the new and changed files hold.
    pub(crate) bytes: u64,
    pub(crate) same: usize,
    /// Entries there already whose metadata would be made the offered ones: files
    /// (counted in `same` too) and directories.
    pub(crate) attrs: usize,
    pub(crate) skipped: usize,
    /// Links, hard links and special files that would be made or replaced: no
    /// files (a real run's summary counts files only), so counted apart.
    pub(crate) other: usize,
}

/// Where, if anywhere, JSON events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Json {
    Off,
    Stdout,
    /// Stdout carries the received data.
    Stderr,
}

/// How a command talks to its user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    pub(crate) quiet: bool,
    pub(crate) json: Json,
    /// One of many concurrent sessions (`--serve`, `serve`): no bar, and one log
    /// line (or event) per session instead of a summary.
    pub(crate) serving: bool,
    /// A progress bar, where the terminal can show one (not in a shell script).
    pub(crate) bar: bool,
    /// One line per changed entry on stdout (`--itemize`).
    pub(crate) itemize: bool,
}

impl Style {
    /// Saying nothing but warnings and errors: no events, no bar, no list (what a
    /// fuzz target or a unit test reports with).
    pub(crate) fn quiet() -> Style {
        Style {
            quiet: true,
            json: Json::Off,
            serving: false,
            bar: false,
            itemize: false,
        }
    }
}

/// What a finished session adds up to, for its summary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    /// Files that arrived and verified in this session.
    pub(crate) verified: usize,
    /// Bytes of those files that moved in this session (a resumed prefix did not).
    pub(crate) bytes: u64,
    /// Of the verified files, how many continued a partial one.
    pub(crate) resumed: usize,
    /// The prefixes those resumed files kept from an earlier session.
    pub(crate) resumed_bytes: u64,
    /// Data bytes before and after compression, when this session compressed some.
    pub(crate) compression: Option<Squeezed>,
    /// Bytes of a cut file kept as partial data, for a rerun to resume from.
    pub(crate) kept: u64,
    /// Files of a session that ended early (a cut, a timeout, a peer that ended
    /// it) whose data all went out (their `done` too) and which the receiver never
    /// answered: a rerun finds those that arrived.
    pub(crate) unacknowledged: usize,
    /// Files the plan asked for that the receiver had not answered when the
    /// session ended (a cut, a receiver or server that ended it): sent whole,
    /// partly or not at all; the [`Summary::unacknowledged`] are among them.
    pub(crate) unfinished: usize,
    /// Files the receiver already had.
    pub(crate) same: usize,
    pub(crate) failed: usize,
    /// Of the failed files, those refused over the receiver's quota.
    pub(crate) over_quota: usize,
    /// Entries the sender did not send, by kind (see [`not_sent_kind`]), in the
    /// order first met.
    pub(crate) not_sent: Vec<(String, usize)>,
    /// The first few verified files and their digests, listed under the summary.
    pub(crate) listed: Vec<(String, Digest)>,
    pub(crate) hash: HashKind,
    /// Whether the connection was sealed (`aead`).
    pub(crate) encrypted: bool,
    /// Entries `--delete` removed (or a dry run would), and those it could not.
    pub(crate) deleted: usize,
    pub(crate) not_deleted: usize,
    /// Entries `--delete` kept for safety, by why, in the order first met.
    pub(crate) kept_for: Vec<(KeptWhy, usize)>,
    /// A dry run's findings (nothing moved).
    pub(crate) dry_run: Option<DryRun>,
}

/// At most this many files get their digest listed under the summary line.
pub(crate) const LIST_FILES_UP_TO: usize = 10;

/// One session's voice.
#[derive(Clone)]
pub(crate) struct Reporter {
    style: Style,
    peer: Option<SocketAddr>,
    /// On a server: the user and the request (`put photos`) a session serves.
    request: Option<(String, String)>,
    bar: ProgressBar,
    /// The bar shows nothing: [`Reporter::advance`] need not tell it.
    bar_hidden: bool,
    started: Instant,
}

impl Summary {
    /// Files refused over the quota before `--delete` made room, which the same
    /// command run again sends (a real run's: a dry run deleted nothing).
    pub(crate) fn run_again(&self) -> Option<usize> {
        let deleted = self.dry_run.is_none() && self.deleted > 0;
        (self.over_quota > 0 && deleted).then_some(self.over_quota)
    }

    /// How many entries were not sent, of every kind.
    pub(crate) fn not_sent_total(&self) -> usize {
        self.not_sent.iter().map(|(_, n)| n).sum()
    }

    /// How many entries `--delete` kept for safety, for every reason.
    pub(crate) fn kept_total(&self) -> usize {
        self.kept_for.iter().map(|(_, n)| n).sum()
    }

    /// `kept 3 not deleted: 2 not UTF-8, 1 xfer temporary`, or nothing.
    fn kept_words(&self) -> Option<String> {
        if self.kept_for.is_empty() {
            return None;
        }
        let why: Vec<String> = self
            .kept_for
            .iter()
            .map(|(why, n)| format!("{n} {}", why.counted()))
            .collect();
        Some(format!(
            "kept {} not deleted: {}",
            self.kept_total(),
            why.join(", ")
        ))
    }
}

impl Reporter {
    pub(crate) fn new(style: Style) -> Self {
        Reporter {
            style,
            peer: None,
            request: None,
            bar: ProgressBar::hidden(),
            bar_hidden: true,
            started: Instant::now(),
        }
    }

    pub(crate) fn style(&self) -> Style {
        self.style
    }

    /// The session's peer, named in a serving process's log line.
    pub(crate) fn for_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// The user and the request a server's session serves, named in its lines.
    pub(crate) fn for_request(mut self, user: &str, action: &str) -> Self {
        self.request = Some((user.to_string(), action.to_string()));
        self
    }

    /// `PEER: ` and, on a server, `USER ACTION: `, leading a serving process's lines.
    fn whose(&self) -> String {
        let peer = self
            .peer
            .map_or_else(|| "?".to_string(), |peer| peer.to_string());
        match &self.request {
            Some((user, action)) => format!("{peer}: {} {action}", user_or_dash(user)),
            None => peer,
        }
    }

    /// Shows a progress bar for `total` bytes (a spinner when unknown), if the
    /// style and the terminal allow one and there are bytes to move: a dry run,
    /// or a mirror that only deletes, would redraw an empty `0 B/0 B` bar under
    /// each line it prints.
    pub(crate) fn start_bar(&mut self, total: Option<u64>) {
        let hidden = total == Some(0)
            || self.style.quiet
            || self.style.json != Json::Off
            || self.style.serving
            || !self.style.bar;
        self.bar = progress::transfer_bar(total, hidden);
        self.bar_hidden = self.bar.is_hidden();
    }

    /// Moves the bar on by `bytes`, if it is shown: a hidden bar's `inc` still
    /// reads the clock and takes its lock, which a tree of 200 000 small files
    /// felt (1 % of the receiver's time).
    pub(crate) fn advance(&self, bytes: u64) {
        if !self.bar_hidden {
            self.bar.inc(bytes);
        }
    }

    /// Names the file being moved on the progress bar (escaped), if there is a bar;
    /// a resumed file gets a line of its own above the bar saying where it continues,
    /// so the name on the bar stays whole, and the rate and the time left count from
    /// here (not from before the prefix was verified).
    pub(crate) fn current_file(&self, path: &str, resumed_at: Option<u64>) {
        if self.bar.is_hidden() {
            return;
        }
        let name = escape(path);
        self.bar.set_message(name.to_string());
        if let Some(at) = resumed_at {
            self.bar.println(format!(
                "{name}: resumed at {}, prefix verified",
                HumanBytes(at)
            ));
            self.bar.reset_eta();
        }
    }

    /// The address a listener listens on: an event with `--json`; a line unless
    /// quiet, and even then when the port was chosen by the system (else a script
    /// could not know it).
    pub(crate) fn listening(&self, address: &SocketAddr, port_was_zero: bool) {
        if !self.style.quiet || port_was_zero {
            line(&format!("listening on {address}"));
        }
        self.event(|| json!({"event": "listening", "address": address.to_string()}));
    }

    /// One entry's outcome: failures are said at once on stderr, whatever
    /// `--quiet` says; with `--json` every outcome is an event. In a serving
    /// process's log, where sessions interleave with no summary under them, those
    /// of a `dry_run` say so.
    ///
    /// A failure `said_above` (an ancestor's line said the same words) gets no line
    /// of its own: its event only (see [`Reporter::failed_beneath`]).
    pub(crate) fn file(&self, outcome: &FileOutcome, dry_run: bool, said_above: bool) {
        let marker = if dry_run && self.style.serving {
            " (dry run)"
        } else {
            ""
        };
        if let FileOutcome::NotSent {
            path,
            reason,
            said: false,
        } = outcome
            && !self.style.quiet
        {
            let text = format!("{}: not sent: {}", escape(path), escape(reason));
            self.bar.suspend(|| match self.style.serving {
                true => warn(&format!("{}: {text}{marker}", self.whose())),
                false => warn(&text),
            });
        }
        if let FileOutcome::Failed { path, why, .. } = outcome
            && !said_above
        {
            // A refusal's words often name the path already: say it once.
            let shown = escape(path);
            let what = if why.starts_with(&format!("{shown}:")) {
                why.clone()
            } else {
                format!("{shown}: {why}")
            };
            let text = if self.style.serving {
                format!("xfer: {}: {what}{marker}", self.whose())
            } else {
                format!("xfer: {what}")
            };
            self.bar.suspend(|| line(&text));
        }
        self.event(|| {
            let mut event = file_event(outcome);
            if self.style.serving {
                self.identify(&mut event);
            }
            if dry_run {
                event["dry_run"] = json!(true);
            }
            event
        });
    }

    /// Says that `count` entries beneath `path`, whose failure was said, failed for
    /// the same reason (each has its event with `--json`).
    pub(crate) fn failed_beneath(&self, path: &str, count: usize, dry_run: bool) {
        let what = format!(
            "{}: and {} beneath it, refused as it was",
            escape(path),
            entries(count)
        );
        let text = match self.style.serving {
            true if dry_run => format!("xfer: {}: {what} (dry run)", self.whose()),
            true => format!("xfer: {}: {what}", self.whose()),
            false => format!("xfer: {what}"),
        };
        self.bar.suspend(|| line(&text));
    }

    /// One entry's change (`--itemize`, `--dry-run`): a line on stdout, or with
    /// `--json` a `change` event; `note` says why an entry is skipped or kept, and
    /// `bytes` what a dry run would move of a file (its event's `bytes`).
    pub(crate) fn change(
        &self,
        change: Change,
        path: &Named,
        (note, bytes): (Option<&str>, Option<u64>),
        dry_run: bool,
    ) {
        let note = match change {
            Change::Kept { why, .. } => Some(why.words()),
            _ => note,
        };
        if self.style.json != Json::Off {
            return self.event(|| {
                let mut event = json!({
                    "event": "change", "change": change.word(), "dry_run": dry_run,
                });
                name_members(&mut event, path);
                if change.of_a_dir() {
                    // What the text's trailing slash says (`deleted  old/`).
                    event["dir"] = json!(true);
                }
                if let Some(note) = note {
                    event["message"] = json!(note);
                }
                if let Some(bytes) = bytes {
                    event["bytes"] = json!(bytes);
                }
                if let Change::Kept { why, .. } = change {
                    event["reason"] = json!(why.code());
                }
                if self.style.serving {
                    self.identify(&mut event);
                }
                event
            });
        }
        // A serving process lists changes only when asked (`recv --serve -i`).
        if self.style.quiet || (self.style.serving && !self.style.itemize) {
            return;
        }
        let slash = if change.of_a_dir() { "/" } else { "" };
        // A serving process's lines of many sessions interleave, with no summary
        // under them: each line of a dry run says it was one.
        let note = match (note, dry_run && self.style.serving) {
            (Some(note), true) => format!("  (dry run; {note})"),
            (None, true) => "  (dry run)".to_string(),
            (Some(note), false) => format!("  ({note})"),
            (None, false) => String::new(),
        };
        // Words line up in 9 columns; a longer one ("new hard link") keeps a space.
        let word = change.word();
        let pad = 9usize.saturating_sub(word.len()).max(1);
        let text = format!("{word}{:pad$}{}{slash}{note}\n", "", escape(path));
        self.bar.suspend(|| {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        });
    }

    /// What the receiver said on its `end` it could not apply (docs/PROTOCOL.md
    /// 16.3): a note per kind, unless quiet, and with `--json` one `not_kept` event.
    /// A server's `get` says nothing: its client, the receiver, said it itself.
    pub(crate) fn not_kept(&self, dropped: &Dropped) {
        if self.request.is_some() || !dropped.any() {
            return;
        }
        self.note_each(dropped, false);
        self.not_kept_event(dropped);
    }

    /// The `not_kept` event of what a receiver could not apply, on either side.
    fn not_kept_event(&self, dropped: &Dropped) {
        self.event(|| {
            let mut event = json!({"event": "not_kept", "side": "receiver"});
            for (kind, count) in dropped.kinds() {
                event[kind] = json!(count);
            }
            if self.style.serving {
                self.identify(&mut event);
            }
            event
        });
    }

    /// A `get -X` whose offer carries no extended attributes: the server did not
    /// hear the ask (docs/PROTOCOL.md 16.4; an older one ignores it), so nothing
    /// that arrives has them. Said once, unless quiet, and with `--json` one
    /// `no_xattrs` event.
    pub(crate) fn no_xattrs_sent(&self) {
        const SAID: &str = "the server sent no extended attributes (an older server \
             ignores -X): what arrives has none";
        self.note(SAID);
        self.event(|| json!({"event": "no_xattrs", "side": "server", "message": SAID}));
    }

    /// What this receiver could not apply, said once at the end of its session, a
    /// note per kind (an entry whose metadata it could not set at all was warned
    /// of already).
    pub(crate) fn not_applied_here(&self, dropped: &Dropped) {
        self.note_each(dropped, true);
        if dropped.any() {
            self.not_kept_event(dropped);
        }
    }

    /// A note per kind of `dropped` with a count, in [`dropped_words`]: as the
    /// receiver says it of itself (`here`, but for `metadata`, each entry of which
    /// it warned of already), or as its sender says it of the receiver.
    fn note_each(&self, dropped: &Dropped, here: bool) {
        for (kind, count) in dropped.kinds() {
            if count == 0 || (here && kind == "metadata") {
                continue;
            }
            let (what, why) = dropped_words(kind, here);
            let shown = entries(usize::try_from(count).unwrap_or(usize::MAX));
            self.note(&format!("note: {what} on {shown}: {why}"));
        }
    }

    /// A warning of this session's (a note of what was not kept), unless quiet: a
    /// serving process, whose sessions' lines interleave, says whose it is.
    pub(crate) fn note(&self, text: &str) {
        self.bar.suspend(|| match self.style.serving {
            true => warn(&format!("{}: {text}", self.whose())),
            false => warn(text),
        });
    }

    /// Adds who a serving process's event concerns.
    fn identify(&self, event: &mut serde_json::Value) {
        if let Some(peer) = self.peer {
            event["peer"] = json!(peer.to_string());
        }
        if let Some((user, action)) = &self.request {
            event["user"] = json!(user);
            event["action"] = json!(action);
        }
    }

    /// Ends the session's reporting: the summary line (or `summary` event) for
    /// `result`; a session-level error itself is printed by `main`. A serving
    /// process logs one line (or `session` event) per session instead, error
    /// included; `what` names it there (`received`, `get docs/`).
    pub(crate) fn finish(&self, what: &str, summary: &Summary, result: &anyhow::Result<()>) {
        self.bar.finish_and_clear();
        let elapsed = self.started.elapsed();
        let rate = rate(summary.bytes, elapsed);
        if self.style.serving {
            return self.session_line(what, summary, result, elapsed, rate);
        }
        if self.style.json != Json::Off {
            let mut event = summary_fields(summary, elapsed, rate);
            event["event"] = json!("summary");
            event["ok"] = json!(result.is_ok());
            if let Err(err) = result {
                event["error"] = json!(format!("{err:#}"));
                event["exit_code"] = json!(crate::error::exit_code(err));
            }
            self.event(|| event);
            return;
        }
        if let Some(dry) = summary.dry_run {
            if !self.style.quiet {
                line(&dry_run_line(&dry, summary, what, result.is_ok()));
            }
            return;
        }
        let nothing = summary.verified == 0
            && summary.same == 0
            && summary.failed == 0
            && summary.kept == 0
            && summary.unfinished == 0
            && summary.not_sent.is_empty();
        if self.style.quiet || (nothing && result.is_err()) {
            return;
        }
        line(&format!(
            "{what} {}, {} in {:.2} s ({}/s){}, {}",
            plural(summary.verified, "file"),
            HumanBytes(summary.bytes),
            elapsed.as_secs_f64(),
            HumanBytes(rate),
            extras(summary),
            verdict(summary, result.is_ok()),
        ));
        if summary.verified <= LIST_FILES_UP_TO {
            for (path, digest) in &summary.listed {
                line(&format!("  {}  {}", digest.to_hex(), escape(path)));
            }
        }
        say_to_run_again(summary);
    }

    fn session_line(
        &self,
        verb: &str,
        summary: &Summary,
        result: &anyhow::Result<()>,
        elapsed: Duration,
        rate: u64,
    ) {
        if self.style.json == Json::Off {
            if self.style.quiet && result.is_ok() {
                return;
            }
            let outcome = match result {
                Ok(()) => "ok".to_string(),
                Err(err) => format!("failed: {}", escape(&format!("{err:#}"))),
            };
            if let Some(dry) = summary.dry_run {
                // What it found, never `received 0 files; deleted 3`.
                let found = dry_run_line(&dry, summary, verb, true);
                return line(&format!("xfer: {}: {found}: {outcome}", self.whose()));
            }
            line(&format!(
                "xfer: {}: {verb} {}, {} in {:.2} s{}: {outcome}",
                self.whose(),
                plural(summary.verified, "file"),
                HumanBytes(summary.bytes),
                elapsed.as_secs_f64(),
                extras(summary),
            ));
            return;
        }
        let mut event = summary_fields(summary, elapsed, rate);
        event["event"] = json!("session");
        event["peer"] = json!("?");
        self.identify(&mut event);
        event["verb"] = json!(verb);
        if event.get("action").is_none() {
            // A serving receiver's session answers no request: what it did.
            event["action"] = json!(verb);
        }
        event["ok"] = json!(result.is_ok());
        if let Err(err) = result {
            event["error"] = json!(format!("{err:#}"));
        }
        self.event(|| event);
    }

    /// Writes one JSON event line, if `--json` asked for them; `build` runs only
    /// then, so a session without `--json` spends nothing per file on events.
    pub(crate) fn event(&self, build: impl FnOnce() -> serde_json::Value) {
        let text = match self.style.json {
            Json::Off => return,
            _ => build().to_string(),
        };
        match self.style.json {
            Json::Off => {}
            Json::Stdout => {
                // One write for the line and its newline (see `stderr::line`).
                let mut out = std::io::stdout().lock();
                let _ = out
                    .write_all(format!("{text}\n").as_bytes())
                    .and_then(|()| out.flush());
            }
            Json::Stderr => line(&text),
        }
    }
}

/// What verified a file, in its event: `hash` and `digest`, and under MD5 `md5`
/// as well.
fn add_hash(event: &mut serde_json::Value, hash: HashKind, digest: &Digest) {
    event["hash"] = json!(hash.name());
    event["digest"] = json!(digest.to_hex());
    if hash == HashKind::Md5 {
        event["md5"] = json!(digest.to_hex());
    }
}

fn file_event(outcome: &FileOutcome) -> serde_json::Value {
    let mut event = match outcome {
        FileOutcome::Verified {
            size,
            digest,
            hash,
            resumed_at,
            ..
        } => {
            let mut event = json!({"event": "file", "size": size, "status": "ok"});
            add_hash(&mut event, *hash, digest);
            if let Some(at) = resumed_at {
                event["resumed_at"] = json!(at);
            }
            event
        }
        FileOutcome::Same {
            kind,
            size,
            verified,
            ..
        } => {
            let mut event = json!({"event": "file", "size": size, "status": "same"});
            if *kind != EntryKind::File {
                event["kind"] = json!(kind.name());
            }
            if let Some((hash, digest)) = verified {
                add_hash(&mut event, *hash, digest);
            }
            event
        }
        FileOutcome::Failed { code, why, .. } => json!({
            "event": "file", "status": "failed",
            "code": code.as_str(), "message": why,
        }),
        FileOutcome::NotSent { reason, .. } => json!({
            "event": "skip", "reason": reason,
        }),
    };
    name_members(&mut event, outcome.named());
    event
}

/// `path` and, for a name that is not UTF-8, `path_hex` (its bytes in lowercase
/// hex, as the protocol spells such a name): the text alone cannot name the file.
fn name_members(event: &mut serde_json::Value, path: &Named) {
    event["path"] = json!(path.text);
    if let Some(bytes) = &path.bytes {
        event["path_hex"] = json!(crate::hex::hex(bytes));
    }
}

/// `dry run: would send 3 new files and 2 changed (4.00 MiB), 10 same, 1 skipped,
/// would delete 2; nothing was sent, written or deleted` (and `, 2 links or special
/// files` after the bytes, `, 4 with other attributes` after `same`, `, 1 refused`
/// after `skipped`, `, 1 could not be deleted` after `would delete` when there
/// are any); a receiver (`verb` `received`) says `would receive`. A dry run that
/// failed (`ok` false) with no entry refused and nothing `--delete` could not
/// remove (the whole offer refused, a cut) found nothing a real run would go by,
/// and says only that.
fn dry_run_line(dry: &DryRun, summary: &Summary, verb: &str, ok: bool) -> String {
    let (would, was) = match verb {
        "received" => ("receive", "received"),
        _ => ("send", "sent"),
    };
    if !ok && summary.failed == 0 && summary.not_deleted == 0 {
        return format!(
            "dry run failed (see the error), so it says nothing of a real run; nothing was \
             {was}, written or deleted"
        );
    }
    let attrs = match dry.attrs {
        0 => String::new(),
        n => format!(", {n} with other attributes"),
    };
    let refused = match summary.failed {
        0 => String::new(),
        n => format!(", {n} refused"),
    };
    let other = match dry.other {
        0 => String::new(),
        1 => ", 1 link or special file".to_string(),
        n => format!(", {n} links or special files"),
    };
    let kept = summary
        .kept_words()
        .map_or_else(String::new, |kept| format!(", would have {kept}"));
    let not_deleted = match summary.not_deleted {
        0 => String::new(),
        n => format!(", {n} could not be deleted"),
    };
    format!(
        "dry run: would {would} {} and {} changed ({}){other}, {} same{attrs}, {} skipped\
         {refused}, would delete {}{not_deleted}{kept}; nothing was {was}, written or \
         deleted",
        plural(dry.new, "new file"),
        dry.changed,
        HumanBytes(dry.bytes),
        dry.same,
        dry.skipped,
        summary.deleted
    )
}

fn summary_fields(summary: &Summary, elapsed: Duration, rate: u64) -> serde_json::Value {
    let mut fields = json!({
        "files": summary.verified, "same": summary.same, "resumed": summary.resumed,
        "failed": summary.failed, "not_sent": summary.not_sent_total(),
        "bytes": summary.bytes,
        "resumed_bytes": summary.resumed_bytes,
        "seconds": elapsed.as_secs_f64(), "bytes_per_sec": rate,
        "hash": summary.hash.name(), "encrypted": summary.encrypted,
    });
    if let Some(Squeezed { before, after }) = summary.compression {
        fields["uncompressed_bytes"] = json!(before);
        fields["compressed_bytes"] = json!(after);
    }
    if summary.kept > 0 {
        fields["kept_bytes"] = json!(summary.kept);
    }
    // A session that ended early: what a rerun still has to send.
    if summary.unacknowledged > 0 {
        fields["unacknowledged"] = json!(summary.unacknowledged);
    }
    if summary.unfinished > 0 {
        fields["unfinished"] = json!(summary.unfinished);
    }
    // A dry run deleted nothing: what it would delete is in its own object.
    let dry_run = summary.dry_run.is_some();
    let kept = summary.kept_total();
    if !dry_run && (summary.deleted > 0 || summary.not_deleted > 0 || kept > 0) {
        fields["deleted"] = json!(summary.deleted);
        fields["not_deleted"] = json!(summary.not_deleted);
    }
    // What `--delete` kept for safety: how many, by reason.
    let reasons: serde_json::Map<String, serde_json::Value> = summary
        .kept_for
        .iter()
        .map(|(why, n)| (why.code().to_string(), json!(n)))
        .collect();
    if !dry_run && kept > 0 {
        fields["kept"] = json!(kept);
        fields["kept_reasons"] = json!(reasons);
    }
    // What the text says in `say_to_run_again`, for a script to act on.
    if let Some(files) = summary.run_again() {
        fields["run_again"] = json!(files);
    }
    if let Some(dry) = summary.dry_run {
        fields["dry_run"] = json!({
            "new": dry.new, "changed": dry.changed, "bytes": dry.bytes,
            "same": dry.same, "attrs": dry.attrs, "skipped": dry.skipped,
            "other": dry.other, "deleted": summary.deleted,
            "not_deleted": summary.not_deleted, "kept": kept, "kept_reasons": reasons,
        });
    }
    fields
}

/// A mirror deletes only after the rest arrived: files refused over the quota in a
/// run that deleted may fit now, which the user is told.
fn say_to_run_again(summary: &Summary) {
    if let Some(files) = summary.run_again() {
        let them = if files == 1 { "it" } else { "them" };
        line(&format!(
            "xfer: {} refused over the quota before --delete made room (it removes \
             what the source lacks once the rest arrived): run the same command again \
             to send {them}",
            plural(files, "file"),
        ));
    }
}

/// `; 2 already there (same size and time), 1 resumed (171.00 MiB kept)`, or nothing.
fn extras(summary: &Summary) -> String {
    let mut parts = Vec::new();
    if summary.same > 0 {
        // Nothing was hashed for these: the receiver compared size and time.
        parts.push(format!(
            "{} already there (same size and time)",
            summary.same
        ));
    }
    if summary.resumed > 0 {
        parts.push(format!(
            "{} resumed ({} kept)",
            summary.resumed,
            HumanBytes(summary.resumed_bytes)
        ));
    }
    if let Some(Squeezed { before, after }) = summary.compression {
        parts.push(format!(
            "compressed {} to {} ({})",
            HumanBytes(before),
            HumanBytes(after),
            ratio(before, after)
        ));
    }
    if summary.kept > 0 {
        parts.push(format!(
            "{} kept as partial data, for a rerun to resume",
            HumanBytes(summary.kept)
        ));
    }
    if summary.unfinished > 0 {
        parts.push(format!(
            "{} unfinished (the session ended first)",
            plural(summary.unfinished, "file")
        ));
    }
    if summary.deleted > 0 || summary.not_deleted > 0 || summary.kept_total() > 0 {
        parts.push(format!("deleted {}", summary.deleted));
    }
    if summary.not_deleted > 0 {
        parts.push(format!("{} could not be deleted", summary.not_deleted));
    }
    parts.extend(summary.kept_words());
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

fn verdict(summary: &Summary, ok: bool) -> String {
    let sealed = if summary.encrypted {
        ", encrypted"
    } else {
        ", not encrypted"
    };
    let not_sent = summary.not_sent_total();
    match summary.failed {
        // Not completed: a session that ended early (see `Summary::unfinished`).
        0 if !ok && not_sent > 0 => format!("not completed, {not_sent} not sent"),
        0 if not_sent > 0 && summary.verified == 0 => format!("{not_sent} not sent{sealed}"),
        0 if not_sent > 0 => format!(
            "all that was sent verified ({} + MAC{sealed}), {not_sent} not sent",
            summary.hash
        ),
        0 if ok && summary.verified == 0 => format!("no data moved{sealed}"),
        0 if ok => format!("all verified ({} + MAC{sealed})", summary.hash),
        0 => "not completed".to_string(),
        // Directories and links fail too: entries, not files.
        n if not_sent > 0 => format!("{} failed, {not_sent} not sent", entries(n)),
        n => format!("{} failed", entries(n)),
    }
}

/// How many times smaller: `8.5:1`, or `-` when nothing came out.
fn ratio(before: u64, after: u64) -> String {
    match after {
        0 => "-".to_string(),
        _ => format!("{:.1}:1", before as f64 / after as f64),
    }
}

fn rate(bytes: u64, elapsed: Duration) -> u64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        (bytes as f64 / seconds) as u64
    } else {
        0
    }
}

/// Says that the directory `path` a dry run plans into is not there, on `side`
/// (`local`, `server`): a line unless quiet (`message`, after `xfer: dry run: `),
/// and with `--json` a `not_there_yet` event.
pub(crate) fn not_there_yet(style: Style, side: &str, path: &str, message: &str) {
    if !style.quiet {
        line(&format!("xfer: dry run: {message}"));
    }
    Reporter::new(style).event(|| {
        json!({
            "event": "not_there_yet", "side": side, "path": path, "message": message,
            "dry_run": true,
        })
    });
}

/// [`not_there_yet`] for the local directory `dir` (a `get`'s): everything is new.
pub(crate) fn not_there_yet_locally(style: Style, dir: &std::path::Path) {
    let message = format!(
        "{} does not exist yet; a real run makes it, and everything would be new there",
        crate::escape::escape_path(dir)
    );
    not_there_yet(style, "local", &dir.to_string_lossy(), &message);
}

/// What was not applied of a kind of [`Dropped`], and the likely why: as a
/// receiver says it of itself (`here`), or as its sender says it of the receiver.
fn dropped_words(kind: &str, here: bool) -> (&'static str, &'static str) {
    match (kind, here) {
        ("set_id", true) => ("setuid/setgid not kept", "not root"),
        ("set_id", false) => (
            "the receiver did not keep setuid/setgid",
            "not root, or a server",
        ),
        ("owners", true) => ("owners not kept", "not root"),
        ("owners", false) => ("the receiver did not keep owners", "not root, or a server"),
        ("xattrs", true) => ("extended attributes not set", "not allowed here"),
        ("xattrs", false) => (
            "the receiver did not set extended attributes",
            "not allowed there, or over a server's 4 KiB",
        ),
        ("times", true) => ("times not kept", "the filesystem cannot hold them"),
        ("times", false) => (
            "the receiver did not keep times",
            "its filesystem cannot hold them",
        ),
        _ => (
            "the receiver could not set the metadata",
            "held there already and not changeable there (another owner's, other \
             names that are not sent, or not permitted): the receiver names each",
        ),
    }
}

/// A user as logged: `-` for none (a single-key server's nameless user).
pub(crate) fn user_or_dash(user: &str) -> &str {
    if user.is_empty() { "-" } else { user }
}

/// `1 entry`, `2 entries`: an entry is anything offered (a file, a directory, a
/// link), where [`plural`] would say `entrys`.
pub(crate) fn entries(n: usize) -> String {
    match n {
        1 => "1 entry".to_string(),
        n => format!("{n} entries"),
    }
}

/// `1 file`, `2 files`.
pub(crate) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(verified: usize, failed: usize, not_sent: usize) -> Summary {
        Summary {
            verified,
            failed,
            not_sent: match not_sent {
                0 => Vec::new(),
                n => vec![("socket".to_string(), n)],
            },
            ..Summary::default()
        }
    }

    /// Entries not sent are said whatever else the verdict says: beside failures,
    /// and beside a session that ended early (testers helper-78 and helper-79: "20
    /// entries failed" of a cut tree with 2 not sent; "all that was sent verified"
    /// of a cut one).
    #[test]
    fn a_verdict_says_what_was_not_sent_beside_failures_and_an_early_end() {
        assert_eq!(
            verdict(&summary(3, 2, 1), false),
            "2 entries failed, 1 not sent"
        );
        assert_eq!(verdict(&summary(3, 2, 0), false), "2 entries failed");
        assert_eq!(
            verdict(&summary(3, 0, 1), false),
            "not completed, 1 not sent"
        );
        assert_eq!(verdict(&summary(3, 0, 0), false), "not completed");
        assert!(
            verdict(&summary(3, 0, 1), true)
                .ends_with("verified (MD5 + MAC, not encrypted), 1 not sent")
        );
    }
}
