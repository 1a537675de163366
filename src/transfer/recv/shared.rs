//! What the parts of a receiving session share: where files go ([`Destination`]),
//! how offers are treated ([`Settings`]) and the borrowed state every part reads
//! ([`Shared`]). Plain data: it must not reach for the session's steps (`plan.rs`,
//! `data.rs`, `disk.rs`), which all read it.

use std::sync::Mutex;

use super::claims::Claims;
use crate::escape::escape;
use crate::fs::Refusal;
use crate::fs::filter::Filter;
use crate::fs::path::Names;
use crate::fs::quota::Account;
use crate::fs::sink::TargetDir;
use crate::proto::message::{Entry, EntryKind, Removed};
use crate::proto::negotiated::Transfer;
use crate::ui::report::Reporter;

/// Where received files go.
pub(crate) enum Destination {
    /// Into this directory, under their offered paths.
    Dir(TargetDir),
    /// The one file of the offer, to standard output.
    Stdout,
}

/// How a receiver treats what it is offered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Replace existing files (atomically).
    pub(crate) overwrite: bool,
    /// Keep partial data of cut transfers, and continue from it.
    pub(crate) resume: bool,
    /// Which offered names are taken (`--safe-names`, and always on a server).
    pub(crate) names: Names,
    /// A client's `get` says what it asked of the server (`--delete`, `--dry-run`):
    /// the offer must echo exactly that. `None`: a receiver takes what its sender
    /// asks, within its own rules.
    pub(crate) asked: Option<(bool, bool)>,
    /// A client's `get --delete-excluded`: what the filters exclude is not spared
    /// here. The user's own ask for their own directory; an offer's echo has no say.
    pub(crate) delete_excluded: bool,
    /// A client's `get --ignore-times`: where files are replaced, a file of the
    /// offered size and time is received again. Its own ask for its own directory,
    /// as `delete_excluded`; a sender asks in its offer (`mirror.ignore_times`).
    pub(crate) ignore_times: bool,
    /// A client's `get -X`: it asks the server for extended attributes, and says
    /// once when the offer carries none (an older server ignores the ask).
    pub(crate) xattrs: bool,
}

/// Files of at most this many bytes are never kept as partial data to resume: one
/// travels in a single data frame, so resending it costs less than what keeping it
/// resumable costs every file (a lookup when planning, a lock, a truncate and a
/// named temporary with two more directory entries; with 10 000 files of 4 KiB
/// that was a third of the receiver's system time).
pub(crate) const SMALL_FILE: u64 = 64 << 10;

impl Settings {
    /// Whether a file offered with `size` bytes is received as resumable partial
    /// data, and looked for as such when planning.
    pub(crate) fn resumes(&self, size: u64) -> bool {
        self.resume && size > SMALL_FILE
    }

    /// Leaves out of `entries` the attributes a client's `get` did not ask for
    /// (no `-X`): a server sends them only when asked, so only a faulty or hostile
    /// one offers them unasked, and a root client would set or remove any namespace
    /// (`security.capability` too) on its own files. A receiver that is not a `get`
    /// takes what its sender offers, as ever.
    pub(crate) fn drop_unasked_xattrs(&self, entries: &mut [Entry]) {
        if self.asked.is_none() || self.xattrs {
            return;
        }
        for entry in entries {
            if entry.extra().xattrs.is_some() {
                entry.extra_mut().xattrs = None;
            }
        }
    }

    /// Whether this side asked for extended attributes (`get -X`) and `entries`, an
    /// offer with a regular file or directory, carries them on none: the server
    /// did not hear the ask (it is older, or has no `meta`). A server that did
    /// gives each an object, `{}` when it has none (but one whose attributes it
    /// could not list, which it logs); an offer of neither says nothing either way.
    pub(crate) fn xattrs_unheard(&self, entries: &[Entry]) -> bool {
        let mut held = entries
            .iter()
            .filter(|entry| matches!(entry.kind, EntryKind::File | EntryKind::Dir))
            .peekable();
        self.xattrs && held.peek().is_some() && held.all(|entry| entry.extra().xattrs.is_none())
    }
}

/// What the parts of a session share.
pub(crate) struct Shared<'a> {
    pub(crate) transfer: &'a Transfer,
    pub(crate) destination: &'a Destination,
    pub(crate) claims: &'a Claims,
    pub(crate) settings: Settings,
    /// The user's quota, on a server.
    pub(crate) quota: Option<&'a Account>,
    /// Feature `delta` is in force: files this side replaces are offered as bases.
    pub(crate) delta: bool,
    /// Feature `delta_stream` is in force too: a basis's sums are streamed during
    /// the data phase instead of listed in the plan (section 18.6).
    pub(crate) delta_stream: bool,
    /// Feature `mirror` is in force: the plan may say `replaces` and `attrs`.
    pub(crate) mirror: bool,
    /// What the offer asked (`mirror.rs`), once it is read.
    pub(crate) mirroring: Option<&'a Mirroring>,
}

/// What a sender's offer asks under feature `mirror` (section 17), checked
/// (`mirror.rs`); an offer without a `mirror` member asks nothing of it.
#[derive(Default)]
pub(crate) struct Mirroring {
    /// The sender's filter: what it excludes, `--delete` keeps (none at all with
    /// `--delete-excluded`).
    pub(crate) filter: Filter,
    /// When the session began, in nanoseconds since the epoch: what changed after
    /// it is kept (see `fs::sink::Prune::since`).
    pub(crate) since: i128,
    /// `--delete`: what the offered directories hold and the offer does not goes,
    /// and so does what a directory holds where a file or link is offered.
    pub(crate) delete: bool,
    /// Plan only: nothing is made, removed or applied.
    pub(crate) dry_run: bool,
    /// The sender reads `kept` items in the report (`mirror.report_kept`).
    pub(crate) report_kept: bool,
    /// No quick check where files are replaced (`--ignore-times`): asked by the
    /// sender's offer, or by a `get` client for its own directory.
    pub(crate) ignore_times: bool,
    /// What was removed (in a dry run: would be) from directories that offered
    /// files or links replaced, for the `deleted` report, in removal order.
    pub(crate) cleared: Mutex<Vec<Removed>>,
}

/// An entry there already whose metadata could not be set (a refresh of a `same`
/// entry, a directory's mode and time at the end): warned at once, naming the
/// session's peer where a listener serves several, and counted for the sender
/// (`dropped.metadata`).
pub(crate) fn metadata_not_set(target: &TargetDir, refusal: &Refusal, reporter: &Reporter) {
    reporter.note(&escape(&refusal.message));
    target.unapplied().metadata_not_set();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(xattrs: bool) -> Settings {
        Settings {
            overwrite: false,
            resume: true,
            names: Names::Safe,
            asked: Some((false, false)),
            delete_excluded: false,
            ignore_times: false,
            xattrs,
        }
    }

    fn entry(kind: EntryKind, xattrs: Option<&str>) -> Entry {
        let mut entry = Entry {
            path: "e".into(),
            kind,
            ..Entry::default()
        };
        entry.extra_mut().xattrs = xattrs.map(|name| {
            (!name.is_empty())
                .then(|| (name.to_string(), "31".to_string()))
                .into_iter()
                .collect()
        });
        entry
    }

    #[test]
    fn no_attributes_came_only_when_asked_and_no_file_or_directory_has_an_object() {
        let none = [entry(EntryKind::Dir, None), entry(EntryKind::File, None)];
        assert!(asking(true).xattrs_unheard(&none));
        assert!(!asking(false).xattrs_unheard(&none));
        // `{}` is an answer: the server heard, and the entry has none.
        let empty = [
            entry(EntryKind::Dir, Some("")),
            entry(EntryKind::File, None),
        ];
        assert!(!asking(true).xattrs_unheard(&empty));
        let some = [
            entry(EntryKind::File, None),
            entry(EntryKind::File, Some("user.a")),
        ];
        assert!(!asking(true).xattrs_unheard(&some));
        // Links and hard links carry none from a server; an offer of only them
        // tells nothing.
        let links = [entry(EntryKind::Symlink, None), Entry::hard_link(0)];
        assert!(!asking(true).xattrs_unheard(&links));
        assert!(!asking(true).xattrs_unheard(&[]));
    }
}
