//! What an offer holds for the peer at hand. Under `meta` that is everything the
//! walk found, unsent entries included; a peer without it gets exactly what version
//! 2 carries (files and directories with UTF-8 names, whole-second times from 1970
//! on, permission bits only, dense data), and every entry it cannot take is left
//! out here and counted as not sent, never dropped in silence.

use anyhow::Result;

use crate::escape::Named;
use crate::fs::input::{Input, Outbox};
use crate::proto::message::{Entry, EntryKind};

/// Permission bits a peer without `meta` is offered: never setuid, setgid or sticky.
const PLAIN_MODE: u64 = 0o777;

/// The offer of an [`Outbox`] as a peer without `meta` can take it: an [`Outbox`]
/// itself, whose indexes map back to the one it narrows.
pub(crate) struct PlainView<'a> {
    outbox: &'a dyn Outbox,
    entries: Vec<Entry>,
    /// For each entry here, its index in `outbox`.
    origin: Vec<usize>,
    /// What was left out: its path for people, why, and whether a warning named
    /// it already (an unsent entry, which the walk warned about).
    pub(crate) left_out: Vec<(Named, String, bool)>,
}

/// Whether a peer without `meta` can take `entry` as it is.
fn is_plain(entry: &Entry) -> bool {
    matches!(entry.kind, EntryKind::File | EntryKind::Dir)
        && entry.extra().path_hex.is_none()
        && entry.sparse.is_none()
        && entry.mtime.is_none_or(|mtime| mtime >= 0)
        && entry.mode.is_none_or(|mode| mode <= PLAIN_MODE)
        && *entry
            == Entry {
                path: entry.path.clone(),
                kind: entry.kind,
                size: entry.size,
                mode: entry.mode,
                mtime: entry.mtime,
                ..Entry::default()
            }
}

/// Why a peer without `meta` cannot take `entry` at all, if it cannot.
fn left_out_because(entry: &Entry) -> Option<String> {
    const OLDER: &str = "the receiving xfer is older: it lacks the feature meta";
    match entry.kind {
        EntryKind::Unsent => entry.extra().reason.clone(),
        _ if entry.extra().path_hex.is_some() => Some(format!("name not UTF-8: {OLDER}")),
        // A hard link goes as a copy of its file, as before `meta`.
        EntryKind::File | EntryKind::Dir | EntryKind::Hardlink => None,
        kind => Some(format!("{}: {OLDER}", kind_words(kind))),
    }
}

/// A kind in the words the summary counts by (`2 symbolic links`).
fn kind_words(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Symlink => "symbolic link",
        EntryKind::Hardlink => "hard link",
        EntryKind::Fifo => "named pipe",
        EntryKind::Socket => "socket",
        EntryKind::Char | EntryKind::Block => "device",
        EntryKind::File | EntryKind::Dir | EntryKind::Unsent => "special file",
    }
}

/// `entry` as version 2 says it: path, kind, size, permission bits and a time
/// from 1970 on; a sparse file is sent dense, a hard link as a copy of its file
/// (one of the earlier `entries`).
fn plain(entry: &Entry, entries: &[Entry]) -> Entry {
    let of = entry.extra().of.and_then(|of| entries.get(of as usize));
    let facts = of
        .filter(|_| entry.kind == EntryKind::Hardlink)
        .unwrap_or(entry);
    Entry {
        path: entry.path.clone(),
        kind: facts.kind,
        size: facts.size,
        mode: facts.mode.map(|mode| mode & PLAIN_MODE),
        mtime: facts.mtime.filter(|&mtime| mtime >= 0),
        ..Entry::default()
    }
}

impl<'a> PlainView<'a> {
    /// `outbox` narrowed for a peer without `meta`; `None` when it needs nothing
    /// left out or changed (then it is offered as it is).
    pub(crate) fn of(outbox: &'a dyn Outbox) -> Option<PlainView<'a>> {
        if outbox.entries().iter().all(is_plain) {
            return None;
        }
        let mut view = PlainView {
            outbox,
            entries: Vec::new(),
            origin: Vec::new(),
            left_out: Vec::new(),
        };
        for (index, entry) in outbox.entries().iter().enumerate() {
            match left_out_because(entry) {
                Some(why) => {
                    view.left_out
                        .push((entry.named(), why, entry.kind == EntryKind::Unsent))
                }
                None => {
                    view.entries.push(plain(entry, outbox.entries()));
                    view.origin.push(index);
                }
            }
        }
        Some(view)
    }
}

impl Outbox for PlainView<'_> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&self, index: usize) -> Result<Box<dyn Input>> {
        self.outbox.open(self.origin[index])
    }

    fn rereadable(&self, index: usize) -> bool {
        self.outbox.rereadable(self.origin[index])
    }

    fn shown(&self, index: usize) -> String {
        self.outbox.shown(self.origin[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::message::Extra;

    struct Listed(Vec<Entry>);

    impl Outbox for Listed {
        fn entries(&self) -> &[Entry] {
            &self.0
        }
        fn open(&self, _: usize) -> Result<Box<dyn Input>> {
            unreachable!("not read")
        }
        fn rereadable(&self, _: usize) -> bool {
            true
        }
        fn shown(&self, index: usize) -> String {
            format!("local #{index}")
        }
    }

    fn file(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            size: Some(1),
            mode: Some(0o644),
            mtime: Some(1),
            ..Entry::default()
        }
    }

    #[test]
    fn a_plain_offer_is_offered_as_it_is() {
        let listed = Listed(vec![file("a"), file("b")]);
        assert!(PlainView::of(&listed).is_none());
    }

    #[test]
    fn what_an_older_peer_cannot_take_is_left_out_and_said() {
        let mut odd = file("");
        odd.set_path_bytes(b"caf\xe9".to_vec());
        let listed = Listed(vec![
            Entry {
                kind: EntryKind::Socket,
                size: Some(0),
                ..file("s")
            },
            Entry {
                sparse: Some(true),
                mode: Some(0o4755),
                mtime: Some(-1),
                ..file("holes")
            },
            odd,
            Entry {
                kind: EntryKind::Unsent,
                size: Some(0),
                extra: Some(Box::new(Extra {
                    reason: Some("unreadable: Permission denied".into()),
                    ..Extra::default()
                })),
                ..file("secret")
            },
        ]);
        let view = PlainView::of(&listed).expect("something to narrow");
        assert_eq!(view.entries(), [plain(&listed.0[1], &listed.0)]);
        assert_eq!(view.entries()[0].sparse, None, "sent dense");
        assert_eq!(view.entries()[0].mode, Some(0o755));
        assert_eq!(
            view.entries()[0].mtime,
            None,
            "before 1970: left out, as before"
        );
        assert_eq!(view.shown(0), "local #1");
        let why: Vec<&str> = view.left_out.iter().map(|left| left.1.as_str()).collect();
        assert!(why[0].starts_with("socket: "), "{why:?}");
        assert!(why[1].starts_with("name not UTF-8: "), "{why:?}");
        assert_eq!(why[2], "unreadable: Permission denied");
        assert_eq!(&*view.left_out[1].0, "caf\u{FFFD}");
        assert_eq!(view.left_out[1].0.bytes.as_deref(), Some(&b"caf\xe9"[..]));
    }
}
