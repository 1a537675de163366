//! What a connection negotiated, in one place: the roles, the user, the features in
//! force, the session key `Ks` and the transfer counter `t`. The handshake builds a
//! [`Negotiated`]; sessions consult it and never pass those values around loose.
//!
//! Also every MAC after the handshake (`PROTOCOL.md` section 5): [`Transfer`] holds
//! `Ks` and one transfer's `t`, and signs or verifies offers, plans, `done` and `ok`.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::hash::{Digest, HashKind};
use super::message::Role;
use crate::hex::{hex, unhex};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// A feature of `PROTOCOL.md` section 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    Blake3,
    Aead,
    Zstd,
    /// Trees as they are (section 16): links, special files, owners, xattrs,
    /// nanosecond and signed times, and every mode bit.
    Meta,
    /// Files the receiver holds in an older version travel as instructions
    /// against it (`docs/PROTOCOL.md`, "Feature `delta`").
    Delta,
    /// `--delete`, `--dry-run` and filter rules (section 17).
    Mirror,
    /// With `delta`: the receiver streams a basis's sums beside the data instead
    /// of listing them in the plan (`docs/PROTOCOL.md`, section 18.6).
    DeltaStream,
    /// Control frames may travel zstd-compressed (`docs/PROTOCOL.md`, "Feature
    /// `zstd_control`"): offers, plans and listings of large trees.
    ZstdControl,
}

impl Feature {
    pub(crate) const ALL: [Feature; 8] = [
        Feature::Aead,
        Feature::Blake3,
        Feature::Meta,
        Feature::Mirror,
        Feature::Zstd,
        Feature::Delta,
        Feature::DeltaStream,
        Feature::ZstdControl,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Feature::Blake3 => "blake3",
            Feature::Aead => "aead",
            Feature::Zstd => "zstd",
            Feature::Delta => "delta",
            Feature::Meta => "meta",
            Feature::Mirror => "mirror",
            Feature::DeltaStream => "delta_stream",
            Feature::ZstdControl => "zstd_control",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Feature::Blake3 => 1,
            Feature::Aead => 2,
            Feature::Zstd => 4,
            Feature::Meta => 8,
            Feature::Mirror => 16,
            Feature::Delta => 32,
            Feature::DeltaStream => 64,
            Feature::ZstdControl => 128,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A set of features.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Features(u8);

impl Features {
    pub(crate) const NONE: Features = Features(0);

    pub(crate) fn of(features: &[Feature]) -> Features {
        Features(features.iter().fold(0, |bits, f| bits | f.bit()))
    }

    pub(crate) fn has(self, feature: Feature) -> bool {
        self.0 & feature.bit() != 0
    }

    pub(crate) fn with(self, feature: Feature) -> Features {
        Features(self.0 | feature.bit())
    }

    #[cfg(test)]
    pub(crate) fn without(self, feature: Feature) -> Features {
        Features(self.0 & !feature.bit())
    }

    /// The known features named in a peer's list (unknown names are ignored).
    pub(crate) fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Features {
        Features::of(
            &names
                .into_iter()
                .filter_map(Feature::from_name)
                .collect::<Vec<_>>(),
        )
    }

    /// Those in both sets.
    pub(crate) fn intersect(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }

    /// Those in either set.
    pub(crate) fn with_all(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    /// Those of `self` not in `other`.
    pub(crate) fn missing_from(self, other: Features) -> Features {
        Features(self.0 & !other.0)
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names, in a fixed order (`aead`, `blake3`, `meta`, `mirror`, `zstd`, `delta`,
    /// `delta_stream`, `zstd_control`).
    pub(crate) fn names(self) -> Vec<String> {
        Feature::ALL
            .into_iter()
            .filter(|f| self.has(*f))
            .map(|f| f.name().to_string())
            .collect()
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.names())
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// The session key `Ks`.
#[derive(Clone)]
pub(crate) struct SessionKey([u8; 32]);

/// An HMAC keyed with `Ks` (see [`Transfer`]), never printed.
#[derive(Clone)]
struct KeyedHmac(HmacSha256);

impl KeyedHmac {
    fn new(key: &[u8; 32]) -> KeyedHmac {
        KeyedHmac(HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"))
    }
}

impl fmt::Debug for KeyedHmac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyedHmac(..)") // never print key material
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)") // never print key material
    }
}

impl SessionKey {
    pub(crate) fn new(bytes: [u8; 32]) -> SessionKey {
        SessionKey(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key derived from `Ks` for one purpose (section 10's `k_I`, `k_A`).
    pub(crate) fn derive(&self, label: &str) -> [u8; 32] {
        keyed(&self.0, label, &[]).finalize().into_bytes().into()
    }
}

/// HMAC-SHA256 over `label || 0x00 || parts...`, not yet finalised.
pub(crate) fn keyed(key: &[u8], label: &str, parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(label.as_bytes());
    mac.update(&[0]);
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Strict decoding (exactly 64 lowercase hex digits), then a constant-time comparison.
pub(crate) fn verify(expected: HmacSha256, mac_hex: &str) -> bool {
    unhex::<32>(mac_hex).is_some_and(|mac| expected.verify_slice(&mac).is_ok())
}

/// Everything the handshake settled for one connection.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    initiator: bool,
    role: Role,
    user: Option<String>,
    features: Features,
    session_key: SessionKey,
    /// The next transfer's `t`.
    next_transfer: u64,
}

impl Negotiated {
    pub(crate) fn new(
        initiator: bool,
        role: Role,
        user: Option<String>,
        features: Features,
        session_key: SessionKey,
    ) -> Self {
        Negotiated {
            initiator,
            role,
            user,
            features,
            session_key,
            next_transfer: 0,
        }
    }

    /// A connection as if negotiated, for sessions driven without a handshake
    /// (fuzzing, unit tests).
    #[doc(hidden)]
    pub(crate) fn for_tests(role: Role, features: Features, key: [u8; 32]) -> Self {
        Negotiated::new(true, role, None, features, SessionKey(key))
    }

    /// The other end of the same connection, for tests that drive both ends.
    #[cfg(test)]
    pub(crate) fn peer_view(&self) -> Negotiated {
        Negotiated {
            initiator: !self.initiator,
            ..self.clone()
        }
    }

    /// The content hash files are verified with.
    /// Whether this side connected (the initiator) or listened.
    pub(crate) fn initiator(&self) -> bool {
        self.initiator
    }

    /// The role this side plays.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The user name the initiator gave, if any.
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The features both lists named.
    pub(crate) fn features(&self) -> Features {
        self.features
    }

    pub(crate) fn hash(&self) -> HashKind {
        if self.features.has(Feature::Blake3) {
            HashKind::Blake3
        } else {
            HashKind::Md5
        }
    }

    pub(crate) fn has(&self, feature: Feature) -> bool {
        self.features.has(feature)
    }

    /// Whether `meta` is in force: entries may be links, special files, hard links
    /// and unsent, with signed nanosecond times, every mode bit, owners and xattrs.
    pub(crate) fn meta(&self) -> bool {
        self.features.has(Feature::Meta)
    }

    pub(crate) fn session_key(&self) -> &SessionKey {
        &self.session_key
    }

    /// Begins the next transfer on this connection: its MACs carry the next `t`.
    pub(crate) fn begin_transfer(&mut self) -> Transfer {
        let transfer = self.upcoming_transfer();
        self.next_transfer += 1;
        transfer
    }

    /// The next transfer, not yet begun: a `get` begins a transfer only if the
    /// server answers with an offer, not when it refuses (section 5).
    pub(crate) fn upcoming_transfer(&self) -> Transfer {
        Transfer {
            file_key: KeyedHmac::new(self.session_key.bytes()),
            session_key: self.session_key.clone(),
            t: self.next_transfer,
            hash: self.hash(),
            meta: self.meta(),
        }
    }
}

/// What a file MAC covers: which entry, its size, its content hash and its name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileFacts<'a> {
    pub(crate) index: u64,
    pub(crate) size: u64,
    pub(crate) hash: &'a Digest,
    /// `P`: the path's bytes (section 16.3).
    pub(crate) path: &'a [u8],
}

/// One transfer's keys: `Ks`, its number `t`, and the content hash in force.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    session_key: SessionKey,
    /// HMAC-SHA256 keyed with `Ks`, nothing hashed yet: every file's two MACs start
    /// from a copy, which saves hashing the key's two padded blocks again (two of
    /// the five SHA-256 blocks of a MAC; four MACs a file between the two sides).
    file_key: KeyedHmac,
    pub(crate) t: u64,
    pub(crate) hash: HashKind,
    /// Whether `meta` is in force, which decides what an offer may hold.
    pub(crate) meta: bool,
}

impl Transfer {
    /// A transfer bound to a raw key, for tests.
    #[cfg(test)]
    pub(crate) fn for_tests(key: [u8; 32], t: u64, hash: HashKind) -> Transfer {
        Transfer {
            file_key: KeyedHmac::new(&key),
            session_key: SessionKey(key),
            t,
            hash,
            meta: false,
        }
    }

    /// The running `mac_offer` over the offer frames as they cross the wire.
    pub(crate) fn offer_mac(&self) -> FramesMac {
        FramesMac(keyed(
            self.session_key.bytes(),
            "xfer/2 offer",
            &[&self.t.to_be_bytes()],
        ))
    }

    /// The running `mac_deleted` over the `deleted` frames (feature `mirror`).
    pub(crate) fn deleted_mac(&self) -> FramesMac {
        FramesMac(keyed(
            self.session_key.bytes(),
            "xfer/2 deleted",
            &[&self.t.to_be_bytes()],
        ))
    }

    /// The running `mac_plan` over the plan frames.
    pub(crate) fn plan_mac(&self) -> FramesMac {
        FramesMac(keyed(
            self.session_key.bytes(),
            "xfer/2 plan",
            &[&self.t.to_be_bytes()],
        ))
    }

    /// The `mac` of a basis's last `sums` frame (section 18.6), fed every sum of
    /// entry `index` in order.
    pub(crate) fn sums_mac(&self, index: u64) -> SumsMac {
        SumsMac(keyed(
            self.session_key.bytes(),
            "xfer/2 sums",
            &[&self.t.to_be_bytes(), &index.to_be_bytes()],
        ))
    }

    /// `mac_done`, as lowercase hex.
    pub(crate) fn done_mac(&self, facts: FileFacts<'_>) -> String {
        hex(&self.file_mac("xfer/2 done", facts).finalize().into_bytes())
    }

    /// `mac_ok`, as lowercase hex.
    pub(crate) fn ok_mac(&self, facts: FileFacts<'_>) -> String {
        hex(&self.file_mac("xfer/2 ok", facts).finalize().into_bytes())
    }

    /// Whether `mac_hex` is exactly the `mac_done` of `facts` (constant time).
    pub(crate) fn verify_done(&self, facts: FileFacts<'_>, mac_hex: &str) -> bool {
        verify(self.file_mac("xfer/2 done", facts), mac_hex)
    }

    /// Whether `mac_hex` is exactly the `mac_ok` of `facts` (constant time).
    pub(crate) fn verify_ok(&self, facts: FileFacts<'_>, mac_hex: &str) -> bool {
        verify(self.file_mac("xfer/2 ok", facts), mac_hex)
    }

    fn file_mac(&self, label: &str, facts: FileFacts<'_>) -> HmacSha256 {
        let mut mac = self.file_key.0.clone();
        for part in [
            label.as_bytes(),
            &[0],
            &self.t.to_be_bytes(),
            &facts.index.to_be_bytes(),
            &facts.size.to_be_bytes(),
            facts.hash.as_bytes(),
            facts.path,
        ] {
            mac.update(part);
        }
        mac
    }
}

/// A MAC over a run of control frames (offer or plan), fed each plaintext frame
/// with its plaintext length prefix, exactly as it crossed the wire.
#[derive(Clone)]
pub(crate) struct FramesMac(HmacSha256);

impl FramesMac {
    /// Adds one frame's payload (its length prefix is added here).
    pub(crate) fn frame(&mut self, payload: &[u8]) {
        let len = u32::try_from(payload.len()).expect("frames are capped far below 4 GiB");
        self.0.update(&len.to_be_bytes());
        self.0.update(payload);
    }

    pub(crate) fn finish_hex(self) -> String {
        hex(&self.0.finalize().into_bytes())
    }

    pub(crate) fn verify(self, mac_hex: &str) -> bool {
        verify(self.0, mac_hex)
    }
}

/// The MAC over one streamed basis's sums (feature `delta_stream`), fed them as
/// they are sent or arrive.
#[derive(Clone)]
pub(crate) struct SumsMac(HmacSha256);

impl SumsMac {
    /// Adds sums, each as its 8 raw big-endian bytes.
    pub(crate) fn sums(&mut self, sums: &[u64]) {
        for sum in sums {
            self.0.update(&sum.to_be_bytes());
        }
    }

    pub(crate) fn finish_hex(self) -> String {
        hex(&self.0.finalize().into_bytes())
    }

    pub(crate) fn verify(self, mac_hex: &str) -> bool {
        verify(self.0, mac_hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::handshake::tests::vector_session_key;

    const OFFER: &str = r#"{"type":"offer","entries":[{"path":"docs/hello.txt","kind":"file","size":13,"mode":420,"mtime":1700000000}]}"#;
    const PLAN: &str = r#"{"type":"plan","entries":[{"action":"send","offset":0}]}"#;

    fn transfer(vector: char, t: u64, hash: HashKind) -> Transfer {
        let session_key = vector_session_key(vector);
        Transfer {
            file_key: KeyedHmac::new(session_key.bytes()),
            session_key,
            t,
            hash,
            meta: false,
        }
    }

    #[test]
    fn offer_and_plan_macs_match_the_protocol_vectors() {
        assert_eq!(OFFER.len(), 108);
        assert_eq!(PLAN.len(), 56);
        let t = transfer('A', 0, HashKind::Md5);
        let mut offer = t.offer_mac();
        offer.frame(OFFER.as_bytes());
        let expected = "4078936cf7e838d0cb741a9b551d8fad5e980536dbae660e19811fa6b53c824e";
        assert!(offer.clone().verify(expected));
        assert_eq!(offer.finish_hex(), expected);
        let mut plan = t.plan_mac();
        plan.frame(PLAN.as_bytes());
        assert_eq!(
            plan.finish_hex(),
            "89d96bb0840a0670f7fc8683aa9f47739efe5f16edeaf78e7c70e1441ff160b9"
        );
    }

    fn check_file_macs(t: &Transfer, hash: &str, done: &str, ok: &str) {
        let hash = t.hash.parse(hash).unwrap();
        let facts = FileFacts {
            index: 0,
            size: 13,
            hash: &hash,
            path: b"docs/hello.txt",
        };
        assert_eq!(t.done_mac(facts), done);
        assert_eq!(t.ok_mac(facts), ok);
        assert!(t.verify_done(facts, done));
        assert!(t.verify_ok(facts, ok));
        assert!(!t.verify_ok(facts, done));
        assert!(!t.verify_ok(facts, &ok.to_uppercase()));
        assert!(!t.verify_ok(facts, &ok[..62]));
        assert!(!t.verify_ok(FileFacts { index: 1, ..facts }, ok));
        assert!(!t.verify_ok(
            FileFacts {
                path: b"docs/hello.txT",
                ..facts
            },
            ok
        ));
    }

    #[test]
    fn file_macs_match_both_protocol_vectors() {
        check_file_macs(
            &transfer('A', 0, HashKind::Md5),
            "22c3683b094136c3398391ae71b20f04",
            "d8c9d055443b07c00b2c072613c3a55c96eff37fe4af77e5b2109f1903a0a507",
            "bc9fb6cc91a5e681991c54d07f28ad68a59a025386e5e4d65f4439105b804505",
        );
        check_file_macs(
            &transfer('B', 1, HashKind::Blake3),
            "623a5460d841b6d1c13d080e85500e0043fd4ba4a8ba9c1aa9b4f6e0d212276c",
            "479127f38cce2cd95a63f814c727f8089e7964bab5ddc5d9ba0003fe231b3bfb",
            "d563a5945586d2bed2f379f32d15b577ea11be5078dde818d6b9bdf84f156379",
        );
    }

    /// The offer of section 16's vector, as xfer writes it.
    fn meta_vector_offer() -> String {
        use crate::proto::message::{Entry, EntryKind, Extra, Message, encode};
        let file = |path: &str, size: u64| Entry {
            path: path.into(),
            kind: EntryKind::File,
            size: Some(size),
            mode: Some(0o644),
            mtime: Some(1_700_000_000),
            ..Entry::default()
        };
        let entries = vec![
            Entry {
                kind: EntryKind::Dir,
                mode: Some(0o755),
                ..file("v", 0)
            },
            Entry {
                mtime_ns: Some(500_000_000),
                ..file("v/a.txt", 13)
            },
            Entry {
                path: "v/b.txt".into(),
                kind: EntryKind::Hardlink,
                size: Some(0),
                extra: Some(Box::new(Extra {
                    of: Some(1),
                    ..Extra::default()
                })),
                ..Entry::default()
            },
            Entry {
                path: "v/link".into(),
                kind: EntryKind::Symlink,
                size: Some(0),
                mtime: Some(-1),
                extra: Some(Box::new(Extra {
                    target: Some("a.txt".into()),
                    ..Extra::default()
                })),
                ..Entry::default()
            },
            Entry {
                sparse: Some(true),
                ..file("v/holes", 10)
            },
            Entry {
                path: String::new(),
                extra: Some(Box::new(Extra {
                    path_hex: Some(crate::hex::hex(b"v/caf\xe9")),
                    ..Extra::default()
                })),
                ..file("", 0)
            },
        ];
        let frame = encode(&Message::Offer {
            entries,
            more: false,
            mirror: None,
            xattrs_all: false,
        });
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()),
            META_OFFER_LEN
        );
        String::from_utf8(frame[4..].to_vec()).unwrap()
    }

    /// The length of section 16's vector offer.
    const META_OFFER_LEN: u32 = 480;

    /// Section 16.7's values, which docs/PROTOCOL.md must hold verbatim.
    const META_MAC_OFFER: &str = "d383906134d151922ffd63e6052582dca59e3c47439a0bd082292493e99475c4";
    const META_SPARSE_MD5: &str = "2376d1dfe1d9e6f7ec079c8c9d55ce1b";
    const META_SPARSE_BLAKE3: &str =
        "906139dce4661693180383c3d6348e0ed8f654684691b800962515495290d35c";

    #[test]
    fn the_meta_offer_vector_matches_section_16() {
        let document = include_str!("../../docs/PROTOCOL.md");
        let offer = meta_vector_offer();
        assert!(document.contains(&offer), "the payload is in section 16.7");
        // It is a valid offer under `meta`.
        let Ok(crate::proto::message::Message::Offer { mut entries, .. }) =
            crate::proto::message::decode(offer.as_bytes())
        else {
            panic!("the vector decodes");
        };
        for entry in &mut entries {
            crate::proto::entry::check_entry(entry, true).unwrap();
        }
        let t = transfer('A', 0, HashKind::Md5);
        let mut mac = t.offer_mac();
        mac.frame(offer.as_bytes());
        assert_eq!(mac.finish_hex(), META_MAC_OFFER);
        // The sparse file's runs: "abc" at 2 and "xy" at 7 of 10 bytes.
        for (hash, expected) in [
            (HashKind::Md5, META_SPARSE_MD5),
            (HashKind::Blake3, META_SPARSE_BLAKE3),
        ] {
            let mut h = hash.hasher();
            for (offset, run) in [(2u64, &b"abc"[..]), (7, b"xy")] {
                h.update(&offset.to_be_bytes());
                h.update(&(run.len() as u64).to_be_bytes());
                h.update(run);
            }
            h.update(&10u64.to_be_bytes());
            assert_eq!(h.finish().to_hex(), expected);
        }
        for value in [
            "000001e0",
            META_MAC_OFFER,
            META_SPARSE_MD5,
            META_SPARSE_BLAKE3,
        ] {
            assert!(document.contains(value), "{value} is in section 16.7");
        }
    }

    #[test]
    fn the_transfer_counter_advances_per_transfer() {
        let mut negotiated =
            Negotiated::for_tests(Role::Client, Features::of(&[Feature::Blake3]), [1; 32]);
        assert_eq!(negotiated.hash(), HashKind::Blake3);
        assert_eq!(negotiated.begin_transfer().t, 0);
        assert_eq!(negotiated.begin_transfer().t, 1);
    }

    #[test]
    fn feature_sets_ignore_unknown_names() {
        let features = Features::from_names(["zstd", "teleport", "aead"]);
        assert_eq!(features.names(), ["aead", "zstd"]);
        assert!(!features.has(Feature::Blake3));
        assert!(features.without(Feature::Aead).names() == ["zstd"]);
    }
}
