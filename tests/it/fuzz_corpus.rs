//! Replays every saved fuzzing input (the corpora and any crash found, under
//! `fuzz/corpus/` and `fuzz/artifacts/`) through the same property checks the fuzz
//! targets run, so stable `cargo test` keeps them fixed without nightly.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("artifacts").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let input = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its property",
                path.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed > 0, "{target}: no saved inputs to replay");
    eprintln!("{target}: replayed {replayed} inputs");
}

#[test]
fn frame_reader_corpus() {
    replay("read_frames", xfer::fuzzing::read_frames);
}

#[test]
fn message_round_trip_corpus() {
    replay("round_trip", xfer::fuzzing::round_trip);
}

#[test]
fn path_policy_corpus() {
    replay("path_policy", xfer::fuzzing::path_policy);
}

#[test]
fn receiver_session_corpus() {
    replay("receiver_session", xfer::fuzzing::receiver_session);
}

#[test]
fn featured_receiver_corpus() {
    replay("receiver_features", xfer::fuzzing::receiver_features);
}

/// What a seed must have left in the target directory.
type Check = fn(&Path);

/// The hand-made seeds of `receiver_features`: valid sessions (MACs of the key the
/// property uses) that reach what `meta`, `mirror` and `delta` added, for a fuzzer
/// to mutate from. Each is checked to end well and leave what it should; the files
/// under `fuzz/corpus/receiver_features/seed-*` must be these bytes
/// (`XFER_WRITE_SEEDS=1 cargo test --test it fuzz_corpus` writes them).
#[test]
fn the_featured_receiver_seeds_reach_what_they_were_made_for() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/receiver_features");
    let seeds: [(&str, Vec<u8>, Check); 5] = [
        ("seed-meta-tree", seeds::meta_tree(), seeds::check_meta_tree),
        (
            "seed-xattrs-all",
            seeds::xattrs_all(),
            seeds::check_xattrs_all,
        ),
        (
            "seed-mirror-delete",
            seeds::mirror_delete(),
            seeds::check_mirror_delete,
        ),
        (
            "seed-mirror-dry-run",
            seeds::mirror_dry_run(),
            seeds::check_unchanged,
        ),
        ("seed-delta", seeds::delta(), seeds::check_delta),
    ];
    for (name, bytes, check) in seeds {
        let path = dir.join(name);
        if std::env::var_os("XFER_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let saved = std::fs::read(&path).unwrap_or_default();
        assert!(
            saved == bytes,
            "{name}: saved seed differs; rerun with XFER_WRITE_SEEDS=1"
        );
        xfer::fuzzing::receive_with_features(&bytes, |target, ended| {
            assert_eq!(ended, Ok(()), "{name}");
            check(target);
        });
    }
}

/// Sender streams for the featured receiver, built from the spec (docs/PROTOCOL.md
/// 6, 16 to 18) with the independent peer's MAC functions.
mod seeds {
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::Path;

    use serde_json::{Value, json};

    use crate::util::peer::{frame_bytes, hex, labelled_mac, mac_offer};

    /// `Ks` and `t` of the property's session; BLAKE3 is in force.
    const KS: [u8; 32] = [7; 32];
    const T: u64 = 0;
    const MTIME: i64 = 1_700_000_000;

    /// What a sender writes for one transfer, frame by frame.
    struct Stream(Vec<u8>);

    impl Stream {
        /// One offer frame of `entries` (with `mirror` if given) and its `offer_end`.
        fn offer(entries: Vec<Value>, mirror: Option<Value>) -> Stream {
            let members = mirror.map(|mirror| json!({"mirror": mirror}));
            Stream::offer_with(entries, members.unwrap_or(json!({})))
        }

        /// One offer frame of `entries` and the first frame's other `members` (an
        /// object), and its `offer_end`.
        fn offer_with(entries: Vec<Value>, members: Value) -> Stream {
            let count = entries.len();
            let mut offer = members;
            offer["type"] = json!("offer");
            offer["entries"] = Value::Array(entries);
            let payload = serde_json::to_vec(&offer).unwrap();
            let mut stream = Stream(frame_bytes(&payload));
            let mac = mac_offer(&KS, T, &frame_bytes(&payload));
            stream.control(json!({"type": "offer_end", "count": count, "mac": hex(&mac)}));
            stream
        }

        fn control(&mut self, message: Value) {
            self.0
                .extend(frame_bytes(&serde_json::to_vec(&message).unwrap()));
        }

        fn data(&mut self, bytes: &[u8]) {
            self.0.extend(frame_bytes(bytes));
        }

        /// A whole file: header, one data frame (none when empty), the empty
        /// frame, `done`.
        fn file(&mut self, index: u64, path: &[u8], content: &[u8]) {
            self.control(json!({"type": "data", "index": index, "offset": 0}));
            if !content.is_empty() {
                self.data(content);
            }
            self.data(b"");
            let hash = blake3::hash(content);
            self.done(index, content.len() as u64, hash.as_bytes(), path);
        }

        /// `done` with `mac_done` over the path's bytes.
        fn done(&mut self, index: u64, size: u64, hash: &[u8], path: &[u8]) {
            let parts = [
                &T.to_be_bytes()[..],
                &index.to_be_bytes(),
                &size.to_be_bytes(),
                hash,
                path,
            ];
            let mac = labelled_mac(&KS, "xfer/2 done", &parts);
            self.control(json!({
                "type": "done", "index": index, "size": size, "hash": hex(hash), "mac": hex(&mac),
            }));
        }

        fn end(mut self) -> Vec<u8> {
            self.control(json!({"type": "end"}));
            self.0
        }
    }

    fn file(path: &str, size: u64) -> Value {
        json!({"path": path, "kind": "file", "size": size, "mode": 420, "mtime": MTIME})
    }

    /// Section 16.7's tree: a directory, a file with nanoseconds, a hard link to it,
    /// a link older than 1970, a sparse file in two runs, a name that is not UTF-8;
    /// and a fifo and an entry the sender did not send.
    pub(super) fn meta_tree() -> Vec<u8> {
        let mut stream = Stream::offer(
            vec![
                json!({"path": "v", "kind": "dir", "size": 0, "mode": 493, "mtime": MTIME}),
                json!({"path": "v/a.txt", "kind": "file", "size": 13, "mode": 420,
                       "mtime": MTIME, "mtime_ns": 500_000_000}),
                json!({"path": "v/b.txt", "kind": "hardlink", "size": 0, "of": 1}),
                json!({"path": "v/link", "kind": "symlink", "size": 0, "mtime": -1,
                       "target": "a.txt"}),
                json!({"path": "v/holes", "kind": "file", "size": 10, "mode": 420,
                       "mtime": MTIME, "sparse": true}),
                json!({"path_hex": "762f636166e9", "kind": "file", "size": 0, "mode": 420,
                       "mtime": MTIME}),
                json!({"path": "v/fifo", "kind": "fifo", "size": 0, "mode": 420,
                       "mtime": MTIME}),
                json!({"path": "v/sock", "kind": "unsent", "size": 0,
                       "reason": "socket: not carried"}),
            ],
            None,
        );
        stream.file(1, b"v/a.txt", b"hello, world\n");
        // Runs `abc` at 2 and `xy` at 7 of 10 bytes; h over the runs (16.4).
        let mut hashed = Vec::new();
        for (offset, run) in [(2u64, &b"abc"[..]), (7, b"xy")] {
            stream.control(json!({"type": "data", "index": 4, "offset": offset}));
            stream.data(run);
            stream.data(b"");
            hashed.extend_from_slice(&offset.to_be_bytes());
            hashed.extend_from_slice(&(run.len() as u64).to_be_bytes());
            hashed.extend_from_slice(run);
        }
        hashed.extend_from_slice(&10u64.to_be_bytes());
        stream.done(4, 10, blake3::hash(&hashed).as_bytes(), b"v/holes");
        stream.file(5, b"v/caf\xe9", b"");
        stream.end()
    }

    pub(super) fn check_meta_tree(target: &Path) {
        let v = target.join("v");
        assert_eq!(fs::read(v.join("a.txt")).unwrap(), b"hello, world\n");
        let inode = |name: &str| fs::metadata(v.join(name)).unwrap().ino();
        assert_eq!(inode("a.txt"), inode("b.txt"));
        assert_eq!(fs::read_link(v.join("link")).unwrap(), Path::new("a.txt"));
        assert_eq!(fs::read(v.join("holes")).unwrap(), b"\0\0abc\0\0xy\0");
        let caf = std::ffi::OsStr::from_bytes(b"caf\xe9");
        assert_eq!(fs::read(v.join(caf)).unwrap(), b"");
        assert!(
            fs::symlink_metadata(v.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert!(!v.join("sock").exists());
    }

    /// An offer saying `xattrs_all` (docs/PROTOCOL.md 16.1.1): a directory and a
    /// file, each with a `user.*` attribute.
    pub(super) fn xattrs_all() -> Vec<u8> {
        let entries = vec![
            json!({"path": "x", "kind": "dir", "size": 0, "mode": 493, "mtime": MTIME,
                   "xattrs": {"user.a": "31"}}),
            json!({"path": "x/f", "kind": "file", "size": 2, "mode": 420, "mtime": MTIME,
                   "xattrs": {"user.b": "32"}}),
        ];
        let mut stream = Stream::offer_with(entries, json!({"xattrs_all": true}));
        stream.file(1, b"x/f", b"hi");
        stream.end()
    }

    pub(super) fn check_xattrs_all(target: &Path) {
        let file = target.join("x/f");
        assert_eq!(fs::read(&file).unwrap(), b"hi");
        // Where this filesystem keeps `user.*` attributes, both arrived.
        let flags = rustix::fs::XattrFlags::empty();
        if rustix::fs::setxattr(target, "user.probe", b"1", flags).is_err() {
            return;
        }
        rustix::fs::removexattr(target, "user.probe").unwrap();
        for (path, name, value) in [(target.join("x"), "user.a", b"1"), (file, "user.b", b"2")] {
            let mut held = [0u8; 8];
            let len = rustix::fs::getxattr(&path, name, &mut held[..]).unwrap();
            assert_eq!(&held[..len], value, "{name}");
        }
    }

    /// A `mirror` offer: `delete` with a rule, a directory and a file in it.
    pub(super) fn mirror_delete() -> Vec<u8> {
        let mirror = json!({"delete": true, "rules": [{"dir": "", "lines": ["*.tmp"]}]});
        let entries = vec![
            json!({"path": "m", "kind": "dir", "size": 0, "mode": 493, "mtime": MTIME}),
            file("m/keep", 5),
        ];
        let mut stream = Stream::offer(entries, Some(mirror));
        stream.file(1, b"m/keep", b"kept\n");
        stream.end()
    }

    pub(super) fn check_mirror_delete(target: &Path) {
        assert_eq!(fs::read(target.join("m/keep")).unwrap(), b"kept\n");
        check_unchanged_basis(target);
    }

    /// A `mirror` dry run with `delete`: a plan and a report, no data.
    pub(super) fn mirror_dry_run() -> Vec<u8> {
        let mirror = json!({"delete": true, "dry_run": true});
        let entries = vec![
            json!({"path": "d", "kind": "dir", "size": 0, "mode": 493, "mtime": MTIME}),
            file("d/f", 3),
            file(xfer::fuzzing::BASIS_NAME, 70_000),
        ];
        Stream::offer(entries, Some(mirror)).end()
    }

    pub(super) fn check_unchanged(target: &Path) {
        assert!(!target.join("d").exists(), "a dry run makes nothing");
        check_unchanged_basis(target);
    }

    fn check_unchanged_basis(target: &Path) {
        let basis = fs::read(target.join(xfer::fuzzing::BASIS_NAME)).unwrap();
        assert!(basis == xfer::fuzzing::delta_basis());
    }

    /// The new version of the delta seed: 16 bytes inserted after the basis's
    /// chunk 0 (its first 2 839 bytes, section 18.4).
    fn new_version() -> Vec<u8> {
        let basis = xfer::fuzzing::delta_basis();
        [&basis[..2839], b"0123456789abcdef", &basis[2839..]].concat()
    }

    /// The basis replaced by a delta (section 18.3): copy chunk 0, a literal, copy
    /// chunks 1 to 5, in two data frames.
    pub(super) fn delta() -> Vec<u8> {
        let new = new_version();
        let path = xfer::fuzzing::BASIS_NAME;
        let mut stream = Stream::offer(vec![file(path, new.len() as u64)], None);
        stream.control(json!({"type": "data", "index": 0, "offset": 0, "delta": true}));
        let copy = |first: u32, count: u32| {
            [&[2u8][..], &first.to_be_bytes(), &count.to_be_bytes()].concat()
        };
        let literal = [&[1u8][..], &16u32.to_be_bytes(), b"0123456789abcdef"].concat();
        stream.data(&[copy(0, 1), literal].concat());
        stream.data(&copy(1, 5));
        stream.data(b"");
        stream.done(
            0,
            new.len() as u64,
            blake3::hash(&new).as_bytes(),
            path.as_bytes(),
        );
        stream.end()
    }

    pub(super) fn check_delta(target: &Path) {
        let built = fs::read(target.join(xfer::fuzzing::BASIS_NAME)).unwrap();
        assert!(built == new_version(), "the delta built the new version");
    }
}

#[test]
fn cut_corpus() {
    replay("cut_agrees", xfer::fuzzing::cut_agrees);
}
