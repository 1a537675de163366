//! Every control frame of the xfer wire protocol (version 2) as one enum, and the pure
//! codec for it: JSON payloads in and out, with the strictness of `PROTOCOL.md`
//! section 2 (integers only, no `null` but where allowed, no repeated keys), length
//! caps (hashes, nonces and MACs travel as lowercase hex, `crate::hex`). Nothing here does
//! I/O; `wire.rs` moves frames over a stream.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The only protocol version this implementation speaks.
pub(crate) const PROTOCOL_VERSION: u64 = 2;
/// Size of the big-endian length that precedes every frame, in bytes.
pub(crate) const LENGTH_PREFIX: usize = 4;
/// Largest control frame accepted before authentication succeeds, in bytes.
pub(crate) const MAX_PREAUTH_CONTROL: usize = 4096;
/// Largest control frame accepted after authentication, in bytes (plaintext).
pub(crate) const MAX_CONTROL: usize = 16 << 20;
/// Largest data frame payload, in bytes (plaintext, the zstd flag byte included).
pub(crate) const MAX_DATA_FRAME: usize = 16 << 20;

/// The part a peer plays on a connection (`PROTOCOL.md` section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    Sender,
    Receiver,
    Client,
    Server,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wire's error codes live with the error table that maps them to exit codes;
/// they are part of this vocabulary all the same.
pub(crate) use crate::error::ErrorCode;

/// What an offered entry is. Everything but `file` and `dir` needs `meta`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EntryKind {
    #[default]
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Socket,
    Char,
    Block,
    Unsent,
}

impl EntryKind {
    /// The wire name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
            EntryKind::Char => "char",
            EntryKind::Block => "block",
            EntryKind::Unsent => "unsent",
        }
    }
}

/// Extended attributes of an entry: name to lowercase hex of the value (`meta`).
pub(crate) type Xattrs = std::collections::BTreeMap<String, String>;

/// One entry of an `offer`. Members past `mtime` exist only under `meta`
/// (`PROTOCOL.md` section 16); [`Entry::check`] holds the rules on which kind may
/// carry which. The members most entries lack live in [`Extra`], boxed, so that an
/// offer of a million plain files costs about 100 bytes an entry, not 300.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Entry {
    /// Relative, `/`-separated path; untrusted until the path policy accepted it.
    /// Empty (absent on the wire) when `path_hex` spells the name.
    #[serde(default)]
    pub(crate) path: String,
    pub(crate) kind: EntryKind,
    /// Total size in bytes; `None` only for a stream of unknown length. The field
    /// must be present (`null` for a stream).
    #[serde(deserialize_with = "nullable")]
    pub(crate) size: Option<u64>,
    /// Permission bits (without `meta` the receiver applies `mode & 0o777`; with
    /// it, `mode & 0o7777`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) mode: Option<u64>,
    /// Modification time, seconds since the Unix epoch; negative only under `meta`.
    #[serde(default, deserialize_with = "present")]
    pub(crate) mtime: Option<i64>,
    /// Nanoseconds added to `mtime` (`meta`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) mtime_ns: Option<u32>,
    /// The data comes in runs (`meta`; `true` only).
    #[serde(default, deserialize_with = "present")]
    pub(crate) sparse: Option<bool>,
    /// The rarer members: a name that is not UTF-8, link targets, hard links,
    /// devices, owners, extended attributes, the reason an entry was not sent.
    #[serde(flatten, deserialize_with = "extra_members")]
    pub(crate) extra: Option<Box<Extra>>,
}

/// The members of an [`Entry`] that most entries lack (`meta`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Extra {
    /// The path's bytes in lowercase hex, when they are not UTF-8 (`meta`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) path_hex: Option<String>,
    /// A symbolic link's target, when UTF-8 (`meta`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) target: Option<String>,
    /// A symbolic link's target bytes in lowercase hex, when not UTF-8 (`meta`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) target_hex: Option<String>,
    /// A hard link: the index of the earlier `file` entry it is another name of.
    #[serde(default, deserialize_with = "present")]
    pub(crate) of: Option<u64>,
    /// A device node's numbers (`meta`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) major: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) minor: Option<u32>,
    /// Numeric owner and group, and their names on the sender (`meta`, `--owner`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) uid: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) gid: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) owner: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) group: Option<String>,
    /// Extended attributes (`meta`, `--xattrs`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) xattrs: Option<Xattrs>,
    /// Why an `unsent` entry was not sent, for people (`meta`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) reason: Option<String>,
}

impl Extra {
    const EMPTY: Extra = Extra {
        path_hex: None,
        target: None,
        target_hex: None,
        of: None,
        major: None,
        minor: None,
        uid: None,
        gid: None,
        owner: None,
        group: None,
        xattrs: None,
        reason: None,
    };
}

/// [`Entry::extra`] from the wire: its members inline in the entry's object, and
/// `None` when the entry has none of them.
fn extra_members<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Extra>>, D::Error> {
    let extra = Extra::deserialize(d)?;
    Ok((extra != Extra::default()).then(|| Box::new(extra)))
}

/// An entry as it goes on the wire: every member in the order of section 16's table
/// (the name first), whether it lives in the entry or in its [`Extra`].
#[derive(Serialize)]
struct WireEntry<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<&'a str>,
    kind: EntryKind,
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_hex: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    of: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    major: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minor: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xattrs: Option<&'a Xattrs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sparse: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let extra = self.extra();
        WireEntry {
            path: &self.path,
            path_hex: extra.path_hex.as_deref(),
            kind: self.kind,
            size: self.size,
            mode: self.mode,
            mtime: self.mtime,
            mtime_ns: self.mtime_ns,
            target: extra.target.as_deref(),
            target_hex: extra.target_hex.as_deref(),
            of: extra.of,
            major: extra.major,
            minor: extra.minor,
            uid: extra.uid,
            gid: extra.gid,
            owner: extra.owner.as_deref(),
            group: extra.group.as_deref(),
            xattrs: extra.xattrs.as_ref(),
            sparse: self.sparse,
            reason: extra.reason.as_deref(),
        }
        .serialize(serializer)
    }
}

impl Entry {
    /// The rarer members (all `None` when the entry has none).
    pub(crate) fn extra(&self) -> &Extra {
        static NONE: Extra = Extra::EMPTY;
        self.extra.as_deref().unwrap_or(&NONE)
    }

    /// A `hardlink` entry: another name of the file offered as entry `of`. The
    /// caller names it.
    pub(crate) fn hard_link(of: u64) -> Entry {
        let mut entry = Entry {
            kind: EntryKind::Hardlink,
            size: Some(0),
            ..Entry::default()
        };
        entry.extra_mut().of = Some(of);
        entry
    }

    /// The rarer members, to set one.
    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The path's bytes, `P` of the protocol: what names it on disk and enters
    /// `mac_done` and `mac_ok`.
    /// (A malformed `path_hex` never gets past the offer's checks; here it would
    /// read as no name at all, which the path policy refuses.)
    pub(crate) fn path_bytes(&self) -> Cow<'_, [u8]> {
        match &self.extra().path_hex {
            Some(hex) => Cow::Owned(crate::hex::unhex_vec(hex).unwrap_or_default()),
            None => Cow::Borrowed(self.path.as_bytes()),
        }
    }

    /// The path for people: bytes that are not UTF-8 as U+FFFD, as local names are
    /// shown (`escape::escape_path`); still to be escaped where printed.
    pub(crate) fn shown_path(&self) -> Cow<'_, str> {
        match &self.extra().path_hex {
            Some(_) => Cow::Owned(self.named().text),
            None => Cow::Borrowed(&self.path),
        }
    }

    /// The path as reports give it: [`Entry::shown_path`], with the bytes when they
    /// are not UTF-8 (`--json`'s `path_hex`).
    pub(crate) fn named(&self) -> crate::escape::Named {
        match &self.extra().path_hex {
            Some(_) => crate::escape::Named::of_bytes(&self.path_bytes()),
            None => crate::escape::Named::from(self.path.as_str()),
        }
    }

    /// The entry named by raw `bytes`: `path` when they are UTF-8, else `path_hex`
    /// (section 16.3: one spelling per name).
    pub(crate) fn set_path_bytes(&mut self, bytes: Vec<u8>) {
        match String::from_utf8(bytes) {
            Ok(path) => {
                self.path = path;
                if let Some(extra) = &mut self.extra {
                    extra.path_hex = None;
                }
            }
            Err(err) => {
                self.path = String::new();
                self.extra_mut().path_hex = Some(crate::hex::hex(err.as_bytes()));
            }
        }
    }

    /// Whether its data comes in runs (`sparse`, section 16.4).
    pub(crate) fn is_sparse(&self) -> bool {
        self.sparse == Some(true)
    }
}

/// What a mirroring sender asks of the receiver (feature `mirror`, section 17),
/// carried in the first offer frame, so the offer's MAC covers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mirror {
    /// Remove what the offered directories hold and the offer does not.
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub(crate) delete: bool,
    /// Plan only: no data moves, nothing is written or removed on either side.
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub(crate) dry_run: bool,
    /// The filter rules the offer was made with: what they exclude is never removed
    /// (unless `delete_excluded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) rules: Vec<RuleSet>,
    /// With `delete`: what the rules exclude is no longer protected, and goes too
    /// (`--delete-excluded`, rsync's). A receiver that does not know the member
    /// ignores it, and keeps what they exclude: the safe side.
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub(crate) delete_excluded: bool,
    /// With `delete`: the sender reads `kept` items in the `deleted` report (what
    /// `delete` spares for safety, and why). Only then does a receiver write them.
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub(crate) report_kept: bool,
    /// Where files are replaced: no quick check, a file of the offered size and
    /// time is sent again (through a delta where one is offered), as rsync's
    /// `--ignore-times`. A receiver that does not know the member quick-checks as
    /// before (it ignores unknown members); one that replaces no files ignores it.
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub(crate) ignore_times: bool,
}

/// Why a mirroring receiver kept an entry the offer lacks, for safety (an item of
/// the `deleted` report with `kept`, section 17.3). What a filter excludes is the
/// user's wish and is never reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeptWhy {
    /// A temporary or partial file of xfer (`.xfer-*.part`, `.xfer-*.partial`).
    Temporary,
    /// A name that is not UTF-8, which the offer could not name.
    NotUtf8,
    /// Changed (its `ctime`) since the session began.
    Changed,
    /// Another session is receiving or writing it.
    Busy,
    /// A reason this version does not know (a newer receiver).
    #[serde(other)]
    Unknown,
}

impl KeptWhy {
    /// The code on the wire and in `--json`.
    pub(crate) fn code(self) -> &'static str {
        match self {
            KeptWhy::Temporary => "temporary",
            KeptWhy::NotUtf8 => "not_utf8",
            KeptWhy::Changed => "changed",
            KeptWhy::Busy => "busy",
            KeptWhy::Unknown => "unknown",
        }
    }

    /// Why, for one entry's line.
    pub(crate) fn words(self) -> &'static str {
        match self {
            KeptWhy::Temporary => "a temporary or partial file of xfer",
            KeptWhy::NotUtf8 => "a name that is not UTF-8, which --delete never removes",
            KeptWhy::Changed => "changed since the session began",
            KeptWhy::Busy => "another session is receiving or writing it",
            KeptWhy::Unknown => "the receiver keeps it",
        }
    }

    /// What a count of them is, in a summary (`2 not UTF-8`).
    pub(crate) fn counted(self) -> &'static str {
        match self {
            KeptWhy::Temporary => "xfer temporary",
            KeptWhy::NotUtf8 => "not UTF-8",
            KeptWhy::Changed => "changed during the session",
            KeptWhy::Busy => "in use by another session",
            KeptWhy::Unknown => "for other reasons",
        }
    }
}

/// Filter rules in gitignore syntax that hold beneath one offered directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RuleSet {
    /// The offered directory the rules are relative to; `""`: below every operand.
    pub(crate) dir: String,
    pub(crate) lines: Vec<String>,
}

/// What a mirroring receiver removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Removed {
    pub(crate) path: String,
    pub(crate) kind: ItemKind,
    /// Set when it could not be removed: why (the receiver kept it).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) error: Option<String>,
    /// Set when it was kept for safety, never tried (only when the sender asked,
    /// `report_kept`): why.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) kept: Option<KeptWhy>,
    /// Never on the wire: the name's bytes where they are not UTF-8 (`path` shows
    /// them as U+FFFD), which the receiver's own `--json` events give.
    #[serde(skip)]
    pub(crate) bytes: Option<Vec<u8>>,
}

/// The receiver's answer to one offered entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub(crate) enum Decision {
    /// Send the entry from `offset` (0 unless resuming; then `prefix_hash` is set).
    Send {
        offset: u64,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        prefix_hash: Option<String>,
        /// Feature `delta`: the receiver holds an older version (the basis) and
        /// lists its chunks; the sender may send instructions instead of bytes.
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        delta: Option<Signature>,
        /// Under `mirror`: the final name holds a file this one replaces.
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        replaces: bool,
        /// Under `mirror`: a directory that exists with other metadata (mode, time,
        /// owner, extended attributes), which the offered ones will replace.
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        attrs: bool,
    },
    /// The receiver will not take this entry (or, with `same`, already has it).
    Skip {
        code: ErrorCode,
        #[serde(default)]
        message: String,
        /// Under `mirror`, with `same`: the file is there with other metadata, and
        /// the receiver gives it the offered ones.
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        attrs: bool,
    },
}

/// The basis a receiver offers for a delta (`docs/PROTOCOL.md`, "Feature `delta`"): its
/// average chunk size, how many chunks, and their sums as one hex string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Signature {
    pub(crate) avg: u64,
    /// Absent when the sums are streamed (`stream`), else required.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) count: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) sums: Option<String>,
    /// Feature `delta_stream`: the sums come in `sums` frames during the data
    /// phase (section 18.6).
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub(crate) stream: bool,
}

/// What a listing item is (section 9): anything but a file or a directory is `other`,
/// and under `meta` a symbolic link is `symlink` (section 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ItemKind {
    File,
    Dir,
    Other,
    Symlink,
}

/// One item of a `listing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) name: String,
    pub(crate) kind: ItemKind,
    pub(crate) size: u64,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) mode: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) mtime: Option<u64>,
    /// Under `meta`, a time before the epoch (negative seconds), which `mtime`
    /// cannot carry (section 2: no negative numbers); a client without it shows none.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) mtime_signed: Option<i64>,
    /// A link's target, when UTF-8 (`symlink` items only, under `meta`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) target: Option<String>,
}

impl Item {
    /// Its time in seconds since the epoch, before it too, if it has one.
    pub(crate) fn seconds(&self) -> Option<i64> {
        self.mtime
            .and_then(|mtime| i64::try_from(mtime).ok())
            .or(self.mtime_signed)
    }
}

/// Every control frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Message {
    /// Acceptor's opening: version, role, nonce, what it supports, its realm.
    Hello {
        version: u64,
        role: Role,
        nonce: String,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        features: Option<Vec<String>>,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        realm: Option<String>,
    },
    /// Initiator's answer: version, role, nonce, user, chosen features, proof of the key.
    Auth {
        version: u64,
        role: Role,
        nonce: String,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        user: Option<String>,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        features: Option<Vec<String>>,
        mac: String,
    },
    /// Acceptor's proof of the key, sent only after the initiator's verified.
    AuthOk { mac: String },
    /// A failure: of one entry (`index`), one request, or the whole connection.
    Error {
        code: ErrorCode,
        #[serde(default)]
        message: String,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        index: Option<u64>,
    },
    /// Part of the offer; `more` says another offer frame follows.
    Offer {
        /// Only in the first frame, under `mirror`.
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        mirror: Option<Mirror>,
        /// Only in the first frame, under `meta`: the entries' `xattrs` objects name
        /// attributes of every namespace (their sender read them as root), not only
        /// `user.*` (docs/PROTOCOL.md 16.3).
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        xattrs_all: bool,
        entries: Vec<Entry>,
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        more: bool,
    },
    /// The offer is complete: how many entries, and its MAC.
    OfferEnd { count: u64, mac: String },
    /// Part of the plan, one decision per entry in order.
    Plan {
        entries: Vec<Decision>,
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        more: bool,
    },
    /// The plan is complete: how many decisions, and its MAC.
    PlanEnd { count: u64, mac: String },
    /// Data frames for entry `index` follow, starting at byte `offset`; with
    /// `delta` (feature `delta`), they hold instructions against the basis.
    Data {
        index: u64,
        offset: u64,
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        delta: bool,
    },
    /// Feature `delta_stream`: the next sums of entry `index`'s streamed basis,
    /// from the receiver; the last frame of a basis has `end` and the MAC over all
    /// of them (section 18.6).
    Sums {
        index: u64,
        sums: String,
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        end: bool,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        mac: Option<String>,
    },
    /// The data of entry `index` is complete.
    Done {
        index: u64,
        size: u64,
        hash: String,
        mac: String,
    },
    /// Entry `index` is verified and durable under its final name; `kept`: it is
    /// the receiver's old file, which a delta rebuilt byte for byte and which
    /// stayed (docs/PROTOCOL.md 18.5; informational, written only when true).
    Ok {
        index: u64,
        mac: String,
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        kept: bool,
    },
    /// Part of a mirroring receiver's report of what it removed.
    Deleted {
        entries: Vec<Removed>,
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        more: bool,
    },
    /// The report is complete: how many items, and its MAC.
    DeletedEnd { count: u64, mac: String },
    /// No more from this side; a receiver's may say what it could not apply
    /// (docs/PROTOCOL.md 16.3), which an older sender ignores.
    End {
        #[serde(
            default,
            deserialize_with = "dropped_counts",
            skip_serializing_if = "Option::is_none"
        )]
        dropped: Option<Dropped>,
    },
    /// Request: list a directory (or describe one path).
    List { path: String },
    /// Answer to `list`; `more` says another listing frame follows.
    Listing {
        entries: Vec<Item>,
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        more: bool,
    },
    /// Request (no fields) or answer (all four): the user's usage against the quota.
    Usage(Usage),
    /// Request: make a directory and its missing parents.
    Mkdir { path: String },
    /// Request: remove a file or an empty directory.
    Remove { path: String },
    /// Request: rename within the home.
    Rename { from: String, to: String },
    /// Request: upload into directory `dir`; a transfer follows the `ack`.
    /// `overwrite` is xfer's own addition (other servers ignore it and refuse
    /// existing files): replace files that exist.
    Put {
        dir: String,
        #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
        overwrite: bool,
    },
    /// Request: download these paths; a transfer follows at once. Under `mirror`
    /// the client may ask for the offer to be filtered, and echoed in it (17.6).
    Get {
        paths: Vec<String>,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        mirror: Option<Mirror>,
        /// Under `meta`, `true`: the client takes sparse files as runs (16.4).
        /// Without it the server sends every file dense, as an older one does: a
        /// client writing to standard output cannot hash runs, nor can an older
        /// client that has `meta` take them there.
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        sparse: Option<bool>,
        /// Under `meta`, `true`: the client asks for the `user.*` extended
        /// attributes of each regular file and directory (16.4). Without it the
        /// server sends none, as an older one does, which ignores the member.
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        xattrs: Option<bool>,
    },
    /// A request succeeded.
    Ack,
    /// The client is done; the server closes.
    Bye,
}

/// What a receiver could not apply, in entries per kind (docs/PROTOCOL.md 16.3):
/// absent members are 0, and unknown ones (kinds added later) are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Dropped {
    /// Entries whose offered owner it did not apply.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) owners: u64,
    /// Entries whose setuid/setgid bits did not stay.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) set_id: u64,
    /// Entries with an offered extended attribute it did not set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) xattrs: u64,
    /// Entries whose time its filesystem cannot hold.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) times: u64,
    /// Entries it held already whose metadata it could not set at all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) metadata: u64,
}

impl Dropped {
    /// The counts by member name, in the order they are said.
    pub(crate) fn kinds(&self) -> [(&'static str, u64); 5] {
        [
            ("set_id", self.set_id),
            ("owners", self.owners),
            ("xattrs", self.xattrs),
            ("times", self.times),
            ("metadata", self.metadata),
        ]
    }

    /// Whether anything was dropped at all.
    pub(crate) fn any(&self) -> bool {
        self.kinds().iter().any(|(_, count)| *count > 0)
    }
}

/// The fields of a `usage` frame: none in the request, all in the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Usage {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) bytes: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) files: Option<u64>,
    /// Absent in the request; in the answer a number or `null` (no quota).
    #[serde(
        default,
        deserialize_with = "nullable_present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) quota_bytes: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "nullable_present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) quota_files: Option<Option<u64>>,
}

impl Message {
    /// The frame's `type`, for messages like `unexpected frame: plan`.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Auth { .. } => "auth",
            Message::AuthOk { .. } => "auth_ok",
            Message::Error { .. } => "error",
            Message::Offer { .. } => "offer",
            Message::OfferEnd { .. } => "offer_end",
            Message::Plan { .. } => "plan",
            Message::PlanEnd { .. } => "plan_end",
            Message::Data { .. } => "data",
            Message::Sums { .. } => "sums",
            Message::Done { .. } => "done",
            Message::Ok { .. } => "ok",
            Message::Deleted { .. } => "deleted",
            Message::DeletedEnd { .. } => "deleted_end",
            Message::End { .. } => "end",
            Message::List { .. } => "list",
            Message::Listing { .. } => "listing",
            Message::Usage(_) => "usage",
            Message::Mkdir { .. } => "mkdir",
            Message::Remove { .. } => "remove",
            Message::Rename { .. } => "rename",
            Message::Put { .. } => "put",
            Message::Get { .. } => "get",
            Message::Ack => "ack",
            Message::Bye => "bye",
        }
    }

    /// An error frame for the whole connection or request.
    pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error {
            code,
            message: message.into(),
            index: None,
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !value
}

/// An optional field that, when present, must hold a value of its type (not `null`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A receiver's `dropped` counts: an object (serde's derive would take an array
/// for a struct too), each known member a u64, unknown members ignored.
fn dropped_counts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dropped>, D::Error> {
    use serde::de::Error;
    let members = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    let count = |name: &str| match members.get(name) {
        None => Ok(0),
        Some(value) => value
            .as_u64()
            .ok_or_else(|| D::Error::custom(format!("dropped.{name} is not a count"))),
    };
    Ok(Some(Dropped {
        owners: count("owners")?,
        set_id: count("set_id")?,
        xattrs: count("xattrs")?,
        times: count("times")?,
        metadata: count("metadata")?,
    }))
}

/// A field that must be present and may be `null`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// An optional field that may also be `null` when present.
fn nullable_present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `more`, `xattrs_all`: a boolean when present.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    bool::deserialize(d)
}

/// Why bytes could not become a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The length prefix exceeds the cap in force; nothing was allocated for it.
    TooLong { len: u64, max: usize },
    /// The payload is not a valid control frame (not UTF-8, not JSON, unknown type, ...).
    Malformed(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::Malformed(why) => write!(f, "malformed control frame: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Checks a frame length against its cap; call before allocating anything for it.
pub(crate) fn check_len(len: u32, max: usize) -> Result<usize, FrameError> {
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLong {
            len: len as u64,
            max,
        });
    }
    Ok(len)
}

/// The JSON payload of a control frame (no length prefix), appended to `out`.
pub(crate) fn encode_payload(message: &Message, out: &mut Vec<u8>) {
    if !encode_hot(message, out) {
        serde_json::to_writer(out, message).expect("a Message always serialises to JSON");
    }
}

/// The frames every file costs (`data`, `done`, `ok`), written by hand byte for
/// byte as serde_json writes them (a test compares): serde_json looks at every
/// byte of a hash and a MAC for something to escape, a tenth of a small file's
/// work on the sender. A string with anything to escape goes serde_json's way
/// (`false`, nothing written).
fn encode_hot(message: &Message, out: &mut Vec<u8>) -> bool {
    let plain = |text: &str| !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
    match message {
        Message::Data {
            index,
            offset,
            delta,
        } => {
            out.extend_from_slice(br#"{"type":"data","index":"#);
            push_decimal(out, *index);
            out.extend_from_slice(br#","offset":"#);
            push_decimal(out, *offset);
            out.extend_from_slice(if *delta { br#","delta":true}"# } else { b"}" });
        }
        Message::Done {
            index,
            size,
            hash,
            mac,
        } if plain(hash) && plain(mac) => {
            out.extend_from_slice(br#"{"type":"done","index":"#);
            push_decimal(out, *index);
            out.extend_from_slice(br#","size":"#);
            push_decimal(out, *size);
            push_member(out, br#","hash":""#, hash);
            push_member(out, br#"","mac":""#, mac);
            out.extend_from_slice(b"\"}");
        }
        Message::Ok {
            index,
            mac,
            kept: false,
        } if plain(mac) => {
            out.extend_from_slice(br#"{"type":"ok","index":"#);
            push_decimal(out, *index);
            push_member(out, br#","mac":""#, mac);
            out.extend_from_slice(b"\"}");
        }
        _ => return false,
    }
    true
}

/// `key` (with its quotes, colon and opening quote), then `text` as it is.
fn push_member(out: &mut Vec<u8>, key: &[u8], text: &str) {
    out.extend_from_slice(key);
    out.extend_from_slice(text.as_bytes());
}

/// `number` in decimal, as serde_json writes a u64.
fn push_decimal(out: &mut Vec<u8>, mut number: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A control frame ready for the wire, unsealed: length prefix and payload in one
/// buffer. For the handshake and tests; sessions write through `wire::FrameWriter`.
pub(crate) fn encode(message: &Message) -> Vec<u8> {
    let mut out = vec![0; LENGTH_PREFIX];
    encode_payload(message, &mut out);
    let len = u32::try_from(out.len() - LENGTH_PREFIX).expect("a small message");
    out[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    out
}

/// Parses a control frame's payload (without its length prefix), strictly: valid
/// UTF-8 JSON, an object of a known `type`, no key twice in any object, numbers
/// in defined fields unsigned integers, `null` only where the protocol allows it.
pub(crate) fn decode(payload: &[u8]) -> Result<Message, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Malformed("empty frame".into()));
    }
    if let Some(message) = decode_hot(payload) {
        return Ok(message);
    }
    // serde_json limits nesting depth, so hostile deep JSON fails instead of
    // overflowing the stack; the first pass rejects repeated keys, which serde's
    // derive would silently accept for fields it ignores.
    let mut strict = serde_json::Deserializer::from_slice(payload);
    NoDuplicateKeys::deserialize(&mut strict)
        .and_then(|_| strict.end())
        .map_err(|err| FrameError::Malformed(err.to_string()))?;
    serde_json::from_slice(payload).map_err(|err| FrameError::Malformed(err.to_string()))
}

/// The frames every file costs (`data`, `done`, `ok`, and its entry in the `offer`
/// and the `plan`), decoded by hand when they are byte for byte what xfer writes
/// (serde_json's output): then the general path would make the same message of
/// them, at several times the cost (it reads a frame twice, once for repeated keys
/// and once into the enum, buffering every member, and an offer's every entry once
/// more for its rarer members). Anything else, a space or another order of the
/// members, an escaped character, a rarer member, is `None` and goes the general
/// way (for a list, the whole frame does).
fn decode_hot(payload: &[u8]) -> Option<Message> {
    let mut at = Canonical(payload);
    at.take(br#"{"type":""#)?;
    let message = if at.take(br#"data","index":"#).is_some() {
        let index = at.number()?;
        at.take(br#","offset":"#)?;
        let offset = at.number()?;
        let delta = at.take(br#","delta":true"#).is_some();
        Message::Data {
            index,
            offset,
            delta,
        }
    } else if at.take(br#"done","index":"#).is_some() {
        let index = at.number()?;
        at.take(br#","size":"#)?;
        let size = at.number()?;
        at.take(br#","hash":"#)?;
        let hash = at.hex()?;
        at.take(br#","mac":"#)?;
        let mac = at.hex()?;
        Message::Done {
            index,
            size,
            hash,
            mac,
        }
    } else if at.take(br#"ok","index":"#).is_some() {
        let index = at.number()?;
        at.take(br#","mac":"#)?;
        let mac = at.hex()?;
        Message::Ok {
            index,
            mac,
            kept: false,
        }
    } else {
        at.list()?
    };
    at.take(b"}")?;
    at.0.is_empty().then_some(message)
}

/// The rest of a payload read by [`decode_hot`], which takes only what serde_json
/// writes.
struct Canonical<'a>(&'a [u8]);

impl Canonical<'_> {
    /// Takes `literal` if the rest starts with it (else takes nothing).
    fn take(&mut self, literal: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(literal)?;
        Some(())
    }

    /// A u64 as serde_json writes it: digits, no leading zero, no overflow.
    fn number(&mut self) -> Option<u64> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let (text, rest) = self.0.split_at(digits);
        if text.is_empty() || (text.len() > 1 && text[0] == b'0') {
            return None;
        }
        let value = text.iter().try_fold(0u64, |value, digit| {
            value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })?;
        self.0 = rest;
        Some(value)
    }

    /// An optional unsigned member `key` (`,"name":`): `Some(None)` when absent,
    /// `None` when it is there but not as serde_json writes a u64.
    fn member(&mut self, key: &[u8]) -> Option<Option<u64>> {
        match self.take(key) {
            Some(()) => self.number().map(Some),
            None => Some(None),
        }
    }

    /// A string that serde_json writes as it is (no `"`, `\` or control character
    /// to escape), quoted, and valid UTF-8.
    fn string(&mut self) -> Option<String> {
        let rest = self.0.strip_prefix(b"\"")?;
        let len = rest.iter().position(|&b| b == b'"')?;
        let (text, rest) = rest.split_at(len);
        if text.iter().any(|&b| b == b'\\' || b < 0x20) {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?.to_owned();
        self.0 = &rest[1..];
        Some(text)
    }

    /// An `offer` or a `plan` frame after its type, up to its closing brace: the
    /// lists that open a transfer, an item at a time (an offer that carries
    /// `mirror` or `xattrs_all` goes the general way).
    fn list(&mut self) -> Option<Message> {
        if self.take(br#"offer","entries":["#).is_some() {
            let entries = self.items(Canonical::entry)?;
            let more = self.take(br#","more":true"#).is_some();
            return Some(Message::Offer {
                mirror: None,
                xattrs_all: false,
                entries,
                more,
            });
        }
        self.take(br#"plan","entries":["#)?;
        let entries = self.items(Canonical::decision)?;
        let more = self.take(br#","more":true"#).is_some();
        Some(Message::Plan { entries, more })
    }

    /// The items of a JSON list whose `[` was taken, and its `]`.
    fn items<T>(&mut self, item: fn(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut items = Vec::new();
        if self.take(b"]").is_some() {
            return Some(items);
        }
        loop {
            items.push(item(self)?);
            if self.take(b",").is_none() {
                break;
            }
        }
        self.take(b"]")?;
        Some(items)
    }

    /// An offered file or directory with only the members most entries have (in
    /// [`WireEntry`]'s order): path, kind, size, and maybe mode, time and its
    /// nanoseconds. A negative time, a stream's `null` size, a rarer member: `None`.
    fn entry(&mut self) -> Option<Entry> {
        self.take(br#"{"path":"#)?;
        let path = self.string()?;
        self.take(br#","kind":""#)?;
        let kind = match self.take(br#"file""#) {
            Some(()) => EntryKind::File,
            None => self.take(br#"dir""#).map(|()| EntryKind::Dir)?,
        };
        self.take(br#","size":"#)?;
        let size = Some(self.number()?);
        let mode = self.member(br#","mode":"#)?;
        let mtime = self.member(br#","mtime":"#)?;
        let mtime = mtime.map(i64::try_from).transpose().ok()?;
        let mtime_ns = self.member(br#","mtime_ns":"#)?;
        let mtime_ns = mtime_ns.map(u32::try_from).transpose().ok()?;
        self.take(b"}")?;
        Some(Entry {
            path,
            kind,
            size,
            mode,
            mtime,
            mtime_ns,
            ..Entry::default()
        })
    }

    /// A decision as [`Decision`]'s derive writes it, but for one with `delta`.
    fn decision(&mut self) -> Option<Decision> {
        self.take(br#"{"action":""#)?;
        let decision = if self.take(br#"send","offset":"#).is_some() {
            let offset = self.number()?;
            let prefix_hash = match self.take(br#","prefix_hash":"#) {
                Some(()) => Some(self.hex()?),
                None => None,
            };
            Decision::Send {
                offset,
                prefix_hash,
                delta: None,
                replaces: self.take(br#","replaces":true"#).is_some(),
                attrs: self.take(br#","attrs":true"#).is_some(),
            }
        } else {
            self.take(br#"skip","code":"#)?;
            let code = self.string()?;
            let code = ErrorCode::deserialize(StrDeserializer::<ValueError>::new(&code)).ok()?;
            self.take(br#","message":"#)?;
            Decision::Skip {
                code,
                message: self.string()?,
                attrs: self.take(br#","attrs":true"#).is_some(),
            }
        };
        self.take(b"}")?;
        Some(decision)
    }

    /// A string of lowercase hex digits (what hashes and MACs are), quoted.
    fn hex(&mut self) -> Option<String> {
        let rest = self.0.strip_prefix(b"\"")?;
        let digits = rest
            .iter()
            .take_while(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .count();
        let (text, rest) = rest.split_at(digits);
        self.0 = rest.strip_prefix(b"\"")?;
        Some(String::from_utf8(text.to_vec()).expect("hex digits are ASCII"))
    }
}

/// Walks any JSON value, failing on an object that names one key twice.
struct NoDuplicateKeys;

/// Keys of an object [`NoDuplicateKeys`] compares in a list; more go in a set.
const FEW_KEYS: usize = 16;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // The few keys of an entry are compared in a list (a set per entry cost a
        // tenth of reading an offer); a set takes over for an object with many.
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many = HashSet::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let repeated = match few.len() < FEW_KEYS {
                true if few.contains(&key) => true,
                true => {
                    few.push(key.clone());
                    false
                }
                false => few.contains(&key) || !many.insert(key.clone()),
            };
            if repeated {
                return Err(de::Error::custom(format!("key {key:?} appears twice")));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer of a million plain files is held whole until its MAC verifies: each
    /// entry must stay small (the rarer members are boxed in `Extra`).
    #[test]
    fn a_plain_entry_stays_small_and_its_rare_members_round_trip() {
        assert!(
            std::mem::size_of::<Entry>() <= 104,
            "{}",
            std::mem::size_of::<Entry>()
        );
        let plain = r#"{"path":"a","kind":"file","size":1,"mode":420,"mtime":5}"#;
        let entry: Entry = serde_json::from_str(plain).unwrap();
        assert!(
            entry.extra.is_none(),
            "no box for an entry without rare members"
        );
        assert_eq!(serde_json::to_string(&entry).unwrap(), plain);
        let rare =
            r#"{"path_hex":"ff","kind":"symlink","size":0,"target":"x","uid":7,"reason":"r"}"#;
        let entry: Entry = serde_json::from_str(rare).unwrap();
        assert_eq!(entry.extra().target.as_deref(), Some("x"));
        assert_eq!(serde_json::to_string(&entry).unwrap(), rare);
    }

    #[test]
    fn a_receivers_dropped_counts_are_an_object_of_counts_and_zeros_are_left_out() {
        let end = Message::End {
            dropped: Some(Dropped {
                set_id: 2,
                metadata: 1,
                ..Dropped::default()
            }),
        };
        let json = String::from_utf8(encode(&end)[4..].to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"type":"end","dropped":{"set_id":2,"metadata":1}}"#
        );
        let later = br#"{"type":"end","dropped":{"owners":1,"acls":5}}"#;
        let Message::End {
            dropped: Some(dropped),
        } = decode(later).unwrap()
        else {
            panic!("an end with counts");
        };
        assert_eq!(dropped.kinds()[1], ("owners", 1));
        for hostile in [
            r#"{"type":"end","dropped":[1]}"#,
            r#"{"type":"end","dropped":null}"#,
            r#"{"type":"end","dropped":{"owners":-1}}"#,
            r#"{"type":"end","dropped":{"owners":2.0}}"#,
            r#"{"type":"end","dropped":{"owners":"2"}}"#,
            r#"{"type":"end","dropped":{"owners":18446744073709551616}}"#,
            r#"{"type":"end","dropped":{"owners":1,"owners":1}}"#,
        ] {
            assert!(decode(hostile.as_bytes()).is_err(), "{hostile}");
        }
    }

    /// The member of 16.4 exactly as PROTOCOL.md spells it; absent is `None`, and
    /// `null` is no boolean.
    #[test]
    fn a_get_asks_for_extended_attributes_with_one_member() {
        let get = |xattrs| Message::Get {
            paths: vec!["t".into()],
            mirror: None,
            sparse: Some(true),
            xattrs,
        };
        let text = String::from_utf8(encode(&get(Some(true)))[4..].to_vec()).unwrap();
        assert_eq!(
            text,
            r#"{"type":"get","paths":["t"],"sparse":true,"xattrs":true}"#
        );
        let older = br#"{"type":"get","paths":["t"],"sparse":true}"#;
        assert_eq!(decode(older).unwrap(), get(None));
        assert!(decode(br#"{"type":"get","paths":["t"],"xattrs":null}"#).is_err());
        assert!(decode(br#"{"type":"get","paths":["t"],"xattrs":1}"#).is_err());
    }

    fn round_trip(message: Message) {
        let bytes = encode(&message);
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode(&bytes[4..]).unwrap(), message);
    }

    /// The general decoder, without the hand-written path for the hot frames.
    fn decode_general(payload: &[u8]) -> Result<Message, FrameError> {
        let mut strict = serde_json::Deserializer::from_slice(payload);
        NoDuplicateKeys::deserialize(&mut strict)
            .and_then(|_| strict.end())
            .map_err(|err| FrameError::Malformed(err.to_string()))?;
        serde_json::from_slice(payload).map_err(|err| FrameError::Malformed(err.to_string()))
    }

    #[test]
    fn the_hot_frames_decode_by_hand_exactly_as_the_general_way() {
        let hex = "0123456789abcdef".repeat(4);
        let hot = [
            Message::Data {
                index: 0,
                offset: 0,
                delta: false,
            },
            Message::Data {
                index: u64::MAX,
                offset: 1 << 40,
                delta: true,
            },
            Message::Done {
                index: 7,
                size: 4096,
                hash: hex[..32].into(),
                mac: hex.clone(),
            },
            Message::Done {
                index: 1,
                size: 0,
                hash: String::new(),
                mac: String::new(),
            },
            Message::Ok {
                index: 12_345,
                mac: hex.clone(),
                kept: false,
            },
        ];
        for message in hot {
            let payload = encode(&message)[4..].to_vec();
            assert_eq!(decode_hot(&payload), Some(message.clone()));
            assert_eq!(decode_general(&payload).unwrap(), message);
        }
    }

    /// Offered entries of every shape the hand decoder takes.
    fn plain_entries() -> Vec<Entry> {
        let dir = Entry {
            path: "d\u{e9}j\u{e0}/\u{7f}sub".into(),
            kind: EntryKind::Dir,
            size: Some(0),
            mode: Some(0o755),
            mtime: Some(i64::MAX),
            mtime_ns: Some(u32::MAX),
            ..Entry::default()
        };
        let bare = Entry {
            path: "d\u{e9}j\u{e0}/\u{7f}sub/empty".into(),
            size: Some(0),
            ..Entry::default()
        };
        let mut timed = entry("a b/c.txt", Some(u64::MAX));
        timed.mtime_ns = Some(999_999_999);
        vec![dir, bare, timed, entry("x", Some(4096))]
    }

    #[test]
    fn the_hot_frames_are_written_by_hand_exactly_as_serde_json_writes_them() {
        let mac = "0123456789abcdef".repeat(4);
        let odd = ["", "a\"b", "a\\b", "\u{1}", "\u{7f}\u{e9}"];
        let mut messages = vec![
            Message::Data {
                index: 0,
                offset: u64::MAX,
                delta: false,
            },
            Message::Data {
                index: 7,
                offset: 0,
                delta: true,
            },
        ];
        for text in odd.iter().map(|odd| odd.to_string()).chain([mac.clone()]) {
            messages.push(Message::Done {
                index: u64::MAX,
                size: 4096,
                hash: text.clone(),
                mac: mac.clone(),
            });
            messages.push(Message::Done {
                index: 1,
                size: 0,
                hash: mac[..32].into(),
                mac: text.clone(),
            });
            messages.push(Message::Ok {
                index: 12_345,
                mac: text,
                kept: false,
            });
        }
        for message in messages {
            let mut by_hand = Vec::new();
            encode_payload(&message, &mut by_hand);
            assert_eq!(
                by_hand,
                serde_json::to_vec(&message).unwrap(),
                "{message:?}"
            );
        }
    }

    #[test]
    fn offers_and_plans_decode_by_hand_exactly_as_the_general_way() {
        let send = |offset, replaces, attrs| Decision::Send {
            offset,
            prefix_hash: None,
            delta: None,
            replaces,
            attrs,
        };
        let decisions = vec![
            send(0, false, false),
            send(u64::MAX, true, false),
            send(0, false, true),
            send(0, true, true),
            Decision::Send {
                offset: 12,
                prefix_hash: Some("0123456789abcdef".repeat(2)),
                delta: None,
                replaces: false,
                attrs: false,
            },
            Decision::Skip {
                code: ErrorCode::Same,
                message: "already on the receiver (same size and time)".into(),
                attrs: true,
            },
            Decision::Skip {
                code: ErrorCode::BadPath,
                message: String::new(),
                attrs: false,
            },
        ];
        let lists = [
            Message::Offer {
                mirror: None,
                xattrs_all: false,
                entries: plain_entries(),
                more: true,
            },
            Message::Offer {
                mirror: None,
                xattrs_all: false,
                entries: vec![entry("only", Some(1))],
                more: false,
            },
            Message::Offer {
                mirror: None,
                xattrs_all: false,
                entries: Vec::new(),
                more: false,
            },
            Message::Plan {
                entries: decisions,
                more: true,
            },
            Message::Plan {
                entries: vec![send(0, false, false)],
                more: false,
            },
        ];
        for message in lists {
            let payload = encode(&message)[4..].to_vec();
            assert_eq!(decode_hot(&payload), Some(message.clone()), "{message:?}");
            assert_eq!(decode_general(&payload).unwrap(), message);
        }
    }

    #[test]
    fn offers_and_plans_with_anything_rarer_go_the_general_way() {
        let file = r#"{"path":"a","kind":"file","size":1}"#;
        let list =
            |kind: &str, item: &str| format!(r#"{{"type":"{kind}","entries":[{file},{item}]}}"#);
        let offers = [
            r#"{"path":"a\nb","kind":"file","size":1}"#,
            r#"{"path":"a\"b","kind":"file","size":1}"#,
            "{\"path\":\"a\u{1}b\",\"kind\":\"file\",\"size\":1}",
            r#"{"path":"a","kind":"file","size":1,"mtime":-1}"#,
            r#"{"path":"a","kind":"file","size":1,"mtime":9223372036854775808}"#,
            r#"{"path":"a","kind":"file","size":1,"mtime_ns":4294967296}"#,
            r#"{"path":"a","kind":"file","size":null}"#,
            r#"{"path":"a","kind":"file","size":1,"sparse":true}"#,
            r#"{"path":"a","kind":"symlink","size":0,"target":"b"}"#,
            r#"{"path":"a","kind":"file","size":1,"size":2}"#,
            r#"{"path":"a","kind":"file","size":1,"mode":1,"mode":2}"#,
            r#"{"path":"a","kind":"file","size":1,"x":1}"#,
            r#"{"kind":"file","path":"a","size":1}"#,
            r#"{"path":"a", "kind":"file","size":1}"#,
        ];
        let plans = [
            r#"{"action":"send","offset":0,"delta":{"avg":8192,"count":0,"sums":""}}"#,
            r#"{"action":"send","offset":0,"replaces":false}"#,
            r#"{"action":"send","offset":0,"offset":1}"#,
            r#"{"action":"send","offset":0,"prefix_hash":"AB"}"#,
            r#"{"action":"skip","code":"nonsense","message":""}"#,
            r#"{"action":"skip","code":"same"}"#,
            r#"{"action":"skip","code":"same","message":"\u0061"}"#,
            r#"{"action":"skip","code":"same","message":"","code":"exists"}"#,
        ];
        let mut frames: Vec<String> = offers.iter().map(|item| list("offer", item)).collect();
        frames.extend(plans.iter().map(|item| list("plan", item)));
        frames.extend([
            format!(r#"{{"type":"offer","mirror":{{"delete":true}},"entries":[{file}]}}"#),
            format!(r#"{{"type":"offer","entries":[{file}],"more":false}}"#),
            format!(r#"{{"type":"offer","entries":[{file},]}}"#),
            format!(r#"{{"type":"offer","entries":[{file}]}} "#),
            format!(r#"{{"type":"offer","entries":[{file}],"entries":[]}}"#),
        ]);
        let mut invalid_utf8 = list("offer", file).into_bytes();
        let at = invalid_utf8.iter().position(|&b| b == b'a').unwrap();
        invalid_utf8[at] = 0xff;
        let mut payloads: Vec<Vec<u8>> = frames.into_iter().map(String::into_bytes).collect();
        payloads.push(invalid_utf8);
        for payload in payloads {
            let shown = String::from_utf8_lossy(&payload).into_owned();
            assert_eq!(decode_hot(&payload), None, "{shown}");
            assert_eq!(decode(&payload), decode_general(&payload), "{shown}");
        }
    }

    #[test]
    fn frames_not_written_as_serde_json_writes_them_go_the_general_way() {
        let mac = "ab".repeat(32);
        let others = [
            r#"{"type":"data","index":1,"offset":0,"delta":false}"#.to_string(),
            r#"{"type":"data","index":01,"offset":0}"#.into(),
            r#"{"type":"data","index":18446744073709551616,"offset":0}"#.into(),
            r#"{"type":"data","index":1.0,"offset":0}"#.into(),
            r#"{"type":"data", "index":1,"offset":0}"#.into(),
            r#"{"type":"data","offset":0,"index":1}"#.into(),
            r#"{"type":"data","index":1,"offset":0,"index":2}"#.into(),
            r#"{"type":"data","index":1,"offset":0} "#.into(),
            r#"{"type":"data","index":1,"offset":0,"x":1}"#.into(),
            format!(
                r#"{{"type":"ok","index":3,"mac":"{}"}}"#,
                mac.to_uppercase()
            ),
            format!(r#"{{"type":"ok","index":3,"mac":"\u0061{}"}}"#, &mac[1..]),
            format!(r#"{{"type":"ok","index":-3,"mac":"{mac}"}}"#),
            format!(
                r#"{{"type":"done","index":3,"size":1,"hash":"{mac}","mac":"{mac}","more":1}}"#
            ),
            r#"{"type":"end"}"#.into(),
        ];
        for payload in others {
            assert_eq!(decode_hot(payload.as_bytes()), None, "{payload}");
            // Whatever the general way makes of it is what `decode` says.
            assert_eq!(
                decode(payload.as_bytes()),
                decode_general(payload.as_bytes())
            );
        }
    }

    fn entry(path: &str, size: Option<u64>) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            size,
            mode: Some(0o644),
            mtime: Some(1_700_000_000),
            ..Entry::default()
        }
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Hello {
            version: 2,
            role: Role::Receiver,
            nonce: "ab".repeat(32),
            features: Some(vec!["aead".into(), "blake3".into()]),
            realm: Some("files.example.org".into()),
        });
        round_trip(Message::Auth {
            version: 2,
            role: Role::Client,
            nonce: "cd".repeat(32),
            user: Some("alice".into()),
            features: Some(vec![]),
            mac: "ef".repeat(32),
        });
        round_trip(Message::AuthOk {
            mac: "01".repeat(32),
        });
        round_trip(Message::error(ErrorCode::Quota, "over quota"));
        round_trip(Message::Error {
            code: ErrorCode::BadPath,
            message: "absolute".into(),
            index: Some(3),
        });
        round_trip(Message::Offer {
            mirror: None,
            xattrs_all: false,
            entries: vec![
                entry("docs/hello.txt", Some(u64::MAX)),
                entry("stdin", None),
            ],
            more: true,
        });
        round_trip(Message::OfferEnd {
            count: 2,
            mac: "aa".repeat(32),
        });
        round_trip(Message::Plan {
            entries: vec![
                Decision::Send {
                    offset: 10,
                    prefix_hash: Some("00".repeat(16)),
                    delta: None,
                    replaces: false,
                    attrs: false,
                },
                Decision::Send {
                    offset: 0,
                    prefix_hash: None,
                    delta: Some(Signature {
                        avg: 65536,
                        count: Some(1),
                        sums: Some("01".repeat(8)),
                        stream: false,
                    }),
                    replaces: true,
                    attrs: false,
                },
                Decision::Send {
                    offset: 0,
                    prefix_hash: None,
                    delta: Some(Signature {
                        avg: 65536,
                        count: None,
                        sums: None,
                        stream: true,
                    }),
                    replaces: true,
                    attrs: false,
                },
                Decision::Send {
                    offset: 0,
                    prefix_hash: None,
                    delta: None,
                    replaces: true,
                    attrs: true,
                },
                Decision::Skip {
                    code: ErrorCode::Same,
                    message: "already there".into(),
                    attrs: true,
                },
                Decision::Skip {
                    code: ErrorCode::Exists,
                    message: "exists".into(),
                    attrs: false,
                },
            ],
            more: false,
        });
        round_trip(Message::PlanEnd {
            count: 2,
            mac: "bb".repeat(32),
        });
        round_trip(Message::Data {
            index: 1,
            offset: 0,
            delta: false,
        });
        round_trip(Message::Data {
            index: 1,
            offset: 0,
            delta: true,
        });
        round_trip(Message::Sums {
            index: 1,
            sums: "01".repeat(8),
            end: false,
            mac: None,
        });
        round_trip(Message::Sums {
            index: 1,
            sums: String::new(),
            end: true,
            mac: Some("dd".repeat(32)),
        });
        round_trip(Message::Done {
            index: 1,
            size: 5 << 32,
            hash: "aa".repeat(16),
            mac: "bb".repeat(32),
        });
        round_trip(Message::Ok {
            index: 1,
            mac: "cc".repeat(32),
            kept: false,
        });
        round_trip(Message::Ok {
            index: 2,
            mac: "cc".repeat(32),
            kept: true,
        });
        round_trip(Message::End { dropped: None });
        round_trip(Message::End {
            dropped: Some(Dropped {
                owners: 3,
                times: u64::MAX,
                ..Dropped::default()
            }),
        });
        round_trip(Message::List { path: "".into() });
        round_trip(Message::Listing {
            entries: vec![Item {
                name: "a".into(),
                kind: ItemKind::Other,
                size: 0,
                mode: None,
                mtime: Some(5),
                mtime_signed: None,
                target: None,
            }],
            more: true,
        });
        round_trip(Message::Listing {
            entries: vec![Item {
                name: "old".into(),
                kind: ItemKind::File,
                size: 4,
                mode: Some(0o644),
                mtime: None,
                mtime_signed: Some(-625_776_833),
                target: None,
            }],
            more: false,
        });
        round_trip(Message::Usage(Usage::default()));
        round_trip(Message::Usage(Usage {
            bytes: Some(1),
            files: Some(2),
            quota_bytes: Some(None),
            quota_files: Some(Some(3)),
        }));
        round_trip(Message::Mkdir { path: "a/b".into() });
        round_trip(Message::Remove { path: "a".into() });
        round_trip(Message::Rename {
            from: "a".into(),
            to: "b".into(),
        });
        round_trip(Message::Put {
            dir: "".into(),
            overwrite: true,
        });
        round_trip(Message::Get {
            mirror: None,
            paths: vec!["x".into()],
            sparse: None,
            xattrs: None,
        });
        round_trip(Message::Get {
            mirror: None,
            paths: vec!["x".into()],
            sparse: Some(true),
            xattrs: Some(true),
        });
        round_trip(Message::Ack);
        round_trip(Message::Bye);
        round_trip(Message::Offer {
            mirror: Some(Mirror {
                delete: true,
                dry_run: true,
                rules: vec![RuleSet {
                    dir: "a/b".into(),
                    lines: vec!["*.o".into(), "!keep.o".into()],
                }],
                delete_excluded: true,
                report_kept: true,
                ignore_times: true,
            }),
            xattrs_all: true,
            entries: vec![],
            more: true,
        });
        round_trip(Message::Plan {
            entries: vec![Decision::Send {
                offset: 0,
                prefix_hash: None,
                delta: None,
                replaces: true,
                attrs: false,
            }],
            more: false,
        });
        round_trip(Message::Deleted {
            entries: vec![
                Removed {
                    path: "a/x".into(),
                    kind: ItemKind::Other,
                    error: Some("busy".into()),
                    kept: None,
                    bytes: None,
                },
                Removed {
                    path: "a/\u{fffd}".into(),
                    kind: ItemKind::File,
                    error: None,
                    kept: Some(KeptWhy::NotUtf8),
                    bytes: None,
                },
            ],
            more: true,
        });
        round_trip(Message::DeletedEnd {
            count: 1,
            mac: "dd".repeat(32),
        });
        round_trip(Message::Get {
            paths: vec!["x".into()],
            mirror: Some(Mirror::default()),
            sparse: None,
            xattrs: Some(false),
        });
        for bad in [
            &br#"{"type":"offer","mirror":{"delete":1},"entries":[]}"#[..],
            br#"{"type":"offer","mirror":{"ignore_times":"yes"},"entries":[]}"#,
            br#"{"type":"offer","mirror":{"ignore_times":null},"entries":[]}"#,
            br#"{"type":"offer","mirror":null,"entries":[]}"#,
            br#"{"type":"plan","entries":[{"action":"send","offset":0,"replaces":"yes"}]}"#,
            br#"{"type":"plan","entries":[{"action":"send","offset":0,"attrs":null}]}"#,
            br#"{"type":"plan","entries":[{"action":"skip","code":"same","attrs":1}]}"#,
            br#"{"type":"deleted","entries":[{"path":"a","kind":"link"}]}"#,
            br#"{"type":"deleted_end","count":-1,"mac":""}"#,
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn attrs_is_written_only_when_set() {
        let same = |attrs| Decision::Skip {
            code: ErrorCode::Same,
            message: "already there".into(),
            attrs,
        };
        assert_eq!(
            serde_json::to_string(&same(true)).unwrap(),
            r#"{"action":"skip","code":"same","message":"already there","attrs":true}"#
        );
        assert_eq!(
            serde_json::to_string(&same(false)).unwrap(),
            r#"{"action":"skip","code":"same","message":"already there"}"#
        );
    }

    #[test]
    fn wire_shape_matches_the_protocol_text() {
        let offer = Message::Offer {
            mirror: None,
            xattrs_all: false,
            entries: vec![Entry {
                path: "docs/hello.txt".into(),
                kind: EntryKind::File,
                size: Some(13),
                mode: Some(420),
                mtime: Some(1_700_000_000),
                ..Entry::default()
            }],
            more: false,
        };
        let json = String::from_utf8(encode(&offer)[4..].to_vec()).unwrap();
        // The 108-byte payload of the PROTOCOL.md section 5 vector.
        assert_eq!(
            json,
            r#"{"type":"offer","entries":[{"path":"docs/hello.txt","kind":"file","size":13,"mode":420,"mtime":1700000000}]}"#
        );
        let plan = Message::Plan {
            entries: vec![Decision::Send {
                offset: 0,
                prefix_hash: None,
                delta: None,
                replaces: false,
                attrs: false,
            }],
            more: false,
        };
        let json = String::from_utf8(encode(&plan)[4..].to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"type":"plan","entries":[{"action":"send","offset":0}]}"#
        );
        let usage = String::from_utf8(encode(&Message::Usage(Usage::default()))[4..].to_vec());
        assert_eq!(usage.unwrap(), r#"{"type":"usage"}"#);
        let json =
            String::from_utf8(encode(&Message::End { dropped: None })[4..].to_vec()).unwrap();
        assert_eq!(json, r#"{"type":"end"}"#);
        let stream = Message::Offer {
            mirror: None,
            xattrs_all: false,
            entries: vec![Entry {
                path: "x".into(),
                kind: EntryKind::File,
                size: None,
                mode: None,
                mtime: None,
                ..Entry::default()
            }],
            more: true,
        };
        let json = String::from_utf8(encode(&stream)[4..].to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"type":"offer","entries":[{"path":"x","kind":"file","size":null}],"more":true}"#
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_refused() {
        let msg = decode(br#"{"type":"data","index":2,"offset":0,"future":[1.5,null]}"#).unwrap();
        assert_eq!(
            msg,
            Message::Data {
                index: 2,
                offset: 0,
                delta: false
            }
        );
        assert!(matches!(
            decode(br#"{"type":"teleport"}"#),
            Err(FrameError::Malformed(_))
        ));
        let code = decode(br#"{"type":"error","code":"quota_v9","message":"m"}"#).unwrap();
        assert!(matches!(
            code,
            Message::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn section_2_strictness_is_enforced() {
        let bad: &[&[u8]] = &[
            // floats, negatives and too-large numbers in defined fields
            br#"{"type":"data","index":2.0,"offset":0}"#,
            br#"{"type":"data","index":-1,"offset":0}"#,
            br#"{"type":"data","index":18446744073709551616,"offset":0}"#,
            br#"{"type":"data","index":1e3,"offset":0}"#,
            // null where the protocol does not allow it
            br#"{"type":"error","code":"io","message":"m","index":null}"#,
            br#"{"type":"offer","entries":[{"path":"a","kind":"file","size":1,"mode":null}]}"#,
            br#"{"type":"hello","version":2,"role":"receiver","nonce":"00","features":null}"#,
            // size must be present (null for a stream)
            br#"{"type":"offer","entries":[{"path":"a","kind":"file"}]}"#,
            // repeated keys, known or not, at any depth
            br#"{"type":"data","index":1,"index":2,"offset":0}"#,
            br#"{"type":"data","index":1,"offset":0,"x":1,"x":2}"#,
            br#"{"type":"end","type":"end"}"#,
            br#"{"type":"offer","entries":[{"path":"a","path":"b","kind":"file","size":1}]}"#,
            // unknown kinds and trailing garbage
            br#"{"type":"offer","entries":[{"path":"a","kind":"wormhole","size":1}]}"#,
            br#"{"type":"end"} {}"#,
            br#"{"type":"offer","entries":[],"more":1}"#,
        ];
        for payload in bad {
            assert!(
                decode(payload).is_err(),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        // An object of many keys: a key repeated among the first, across, or after.
        let many = |repeat: &str| {
            let keys: String = (0..40).map(|k| format!(r#","k{k}":{k}"#)).collect();
            format!(r#"{{"type":"end"{keys}{repeat}}}"#)
        };
        assert!(decode(many("").as_bytes()).is_ok());
        for repeat in [r#","k3":0"#, r#","k30":0"#, r#","type":"end""#] {
            assert!(decode(many(repeat).as_bytes()).is_err(), "{repeat}");
        }
        // null where allowed: a stream's size, and quotas in a usage answer.
        assert!(
            decode(br#"{"type":"offer","entries":[{"path":"a","kind":"file","size":null}]}"#)
                .is_ok()
        );
        let usage = decode(
            br#"{"type":"usage","bytes":1,"files":2,"quota_bytes":null,"quota_files":null}"#,
        )
        .unwrap();
        assert!(matches!(
            usage,
            Message::Usage(Usage {
                quota_bytes: Some(None),
                ..
            })
        ));
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let deep = "[".repeat(10_000);
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"not json",
            b"[]",
            b"{}",
            b"{\"type\":7}",
            b"{\"type\":\"hello\"}",
            b"{\"type\":\"done\",\"index\":0,\"size\":\"5\",\"hash\":\"\",\"mac\":\"\"}",
            deep.as_bytes(),
        ] {
            assert!(
                matches!(decode(bad), Err(FrameError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lengths_over_the_cap_are_refused() {
        assert_eq!(check_len(4096, MAX_PREAUTH_CONTROL), Ok(4096));
        assert_eq!(
            check_len(4097, MAX_PREAUTH_CONTROL),
            Err(FrameError::TooLong {
                len: 4097,
                max: 4096
            })
        );
        assert!(check_len(u32::MAX, MAX_CONTROL).is_err());
    }
}
