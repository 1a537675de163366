//! Properties the fuzz targets check (`fuzz/`, cargo-fuzz on nightly), kept in the
//! library so that `tests/it/fuzz_corpus.rs` replays every saved input on stable under
//! plain `cargo test`. Each function panics when its property does not hold; it is
//! not part of xfer's interface.

use std::io::Cursor;
use std::path::Path;

use crate::escape::is_unprintable;
use crate::fs::path::{Names, check_path, check_path_bytes};
use crate::fs::sink::TargetDir;
use crate::net::closer::Closer;
use crate::proto::message::{self as frame, Role};
use crate::proto::negotiated::{Feature, Features, Negotiated};
use crate::proto::wire::{Connection, FrameReader};
use crate::transfer::Tally;
use crate::transfer::recv::{self, Claims, Destination, Settings};
use crate::ui::report::{Reporter, Style};

/// Reading frames from arbitrary bytes returns messages or errors, never panics,
/// and never allocates past the cap (a 4 GiB length would abort the process).
pub fn read_frames(data: &[u8]) {
    let mut reader = FrameReader::new(Cursor::new(data));
    for _ in 0..64 {
        match reader.read_message() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let mut reader = FrameReader::new(Cursor::new(data));
    let mut buffer = crate::proto::wire::data_buffer();
    while let Ok(crate::proto::wire::Data::Bytes(_)) = reader.read_data(&mut buffer) {}
}

/// A payload that decodes re-encodes to something that decodes to the same message.
pub fn round_trip(data: &[u8]) {
    if let Ok(message) = frame::decode(data) {
        let encoded = frame::encode(&message);
        let again =
            frame::decode(&encoded[frame::LENGTH_PREFIX..]).expect("our own encoding decodes");
        assert_eq!(again, message);
    }
}

/// Whatever the path policy accepts is a plain relative path of safe components.
pub fn path_policy(data: &[u8]) {
    if let Ok(components) = check_path_bytes(data, Names::Any) {
        assert_eq!(components.join(&b'/'), data);
        for component in components {
            assert!(!matches!(component, b"" | b"." | b".."), "{data:?}");
            assert!(
                component.len() <= 255 && !component.contains(&0),
                "{data:?}"
            );
        }
    }
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(components) = check_path(path) else {
        return;
    };
    assert!(!path.is_empty() && path.len() <= 4096, "{path:?}");
    assert!(!path.starts_with('/'), "{path:?}");
    assert_eq!(components.join("/"), path);
    for component in components {
        assert!(!matches!(component, "" | "." | ".."), "{path:?}");
        assert!(component.len() <= 255, "{path:?}");
        assert!(!component.contains(['/', '\\', '\0']), "{path:?}");
        assert!(!component.chars().any(is_unprintable), "{path:?}");
    }
    let bytes = path.as_bytes();
    assert!(
        !(bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'),
        "{path:?}"
    );
}

/// A receiving session fed arbitrary frames after a successful handshake ends
/// (well or not) without panicking, and writes nothing outside its directory.
/// No feature is in force: the peer is a version-2 sender (sections 6 and 7).
pub fn receiver_session(data: &[u8]) {
    let settings = Settings {
        overwrite: false,
        resume: true,
        names: Names::Any,
        asked: None,
        delete_excluded: false,
        ignore_times: false,
        xattrs: false,
    };
    receive(data, Features::NONE, settings, |_| {}, |_, _| {});
}

/// The file a [`receiver_features`] target holds before the session: a basis for
/// a delta (section 18), chunked by the receiver as its plan offers it.
pub const BASIS_NAME: &str = "basis.bin";

/// The bytes of [`BASIS_NAME`]: the basis of docs/PROTOCOL.md 18.4, the first
/// 65 536 bytes of the BLAKE3 XOF of `xfer delta vector` (six chunks at `avg`
/// 8 192, the `avg` xfer picks for it).
pub fn delta_basis() -> Vec<u8> {
    crate::proto::delta::vector_basis()
}

/// [`receiver_session`] with the features a current sender has in force
/// (`blake3`, `meta`, `mirror`, `delta`, `zstd_control`; sections 16 to 19), into a receiver that
/// replaces files (so `mirror`'s `delete` is allowed and [`BASIS_NAME`], there
/// already, is offered as a basis). The same property: no panic, nothing written
/// outside the target directory.
pub fn receiver_features(data: &[u8]) {
    receive_with_features(data, |_, _| {});
}

/// [`receiver_features`], showing `look` the target directory and how the session
/// ended (its error chain) before the directory is removed: seeds check that they
/// reach what they are meant to.
pub fn receive_with_features(data: &[u8], look: impl FnOnce(&Path, Result<(), String>)) {
    let features = Features::of(&[
        Feature::Blake3,
        Feature::Meta,
        Feature::Mirror,
        Feature::Delta,
        Feature::ZstdControl,
    ]);
    let settings = Settings {
        overwrite: true,
        resume: true,
        names: Names::Any,
        asked: None,
        delete_excluded: false,
        ignore_times: false,
        xattrs: false,
    };
    let basis = |target: &Path| {
        std::fs::write(target.join(BASIS_NAME), delta_basis()).expect("a fresh directory");
    };
    receive(data, features, settings, basis, look);
}

/// Runs a receiving session with `features` on `data` into a fresh target (made
/// ready by `prepare`) beside a file of its own, hands `look` the result, and
/// checks that the file beside is untouched and nothing else appeared there.
fn receive(
    data: &[u8],
    features: Features,
    settings: Settings,
    prepare: impl FnOnce(&Path),
    look: impl FnOnce(&Path, Result<(), String>),
) {
    const BESIDE: &[u8] = b"outside the target\n";
    let parent = tempfile_dir();
    let target_path = parent.join("target");
    std::fs::create_dir(&target_path).expect("a fresh directory");
    std::fs::write(parent.join("beside"), BESIDE).expect("a fresh directory");
    prepare(&target_path);
    let target = TargetDir::open(&target_path).expect("it was just made");
    let negotiated = Negotiated::for_tests(Role::Receiver, features, [7; 32]);
    let mut conn = Connection::new(
        Cursor::new(data),
        Vec::new(),
        negotiated.clone(),
        None,
        Closer::none(),
    )
    .expect("no compression, nothing to fail");
    let mut tally = Tally::new(Reporter::new(Style::quiet()), &negotiated);
    let ended = recv::session(
        &mut conn,
        &Destination::Dir(target),
        &Claims::default(),
        settings,
        None,
        &mut tally,
    );
    look(&target_path, ended.map_err(|err| format!("{err:#}")));
    let mut beside: Vec<_> = std::fs::read_dir(&parent)
        .expect("readable")
        .map(|entry| entry.expect("readable").file_name())
        .collect();
    beside.sort();
    assert_eq!(
        beside,
        ["beside", "target"],
        "something was written beside the target"
    );
    let kept = std::fs::read(parent.join("beside")).expect("still there");
    assert_eq!(kept, BESIDE, "the file beside the target changed");
    let _ = std::fs::remove_dir_all(&parent);
}

/// Feature `delta`'s cut (`proto/cut.rs`, hashing four stretches side by side)
/// finds every chunk boundary the `fastcdc` crate's `v2020::cut` finds, the
/// definition docs/PROTOCOL.md 18.2 gives. The input picks an average size (8 to 64
/// KiB), a length (up to a little past the largest chunk) and a pattern, tiled to
/// that length with each repetition varied, so that short inputs reach long chunks.
pub fn cut_agrees(data: &[u8]) {
    use crate::proto::cut::{CutParams, cut, cut_by_the_crate};
    let (Some(&pick), Some(len), pattern) = (data.first(), data.get(1..4), data.get(4..)) else {
        return;
    };
    let p = CutParams::for_avg_bits(13 + u32::from(pick % 4));
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    let pattern = pattern.filter(|p| !p.is_empty()).unwrap_or(&[0]);
    let bytes: Vec<u8> = (0..len % (2 * p.max + 100))
        .map(|i| pattern[i % pattern.len()] ^ (i / pattern.len()) as u8)
        .collect();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..bytes.len().min(at + p.max)];
        let expected = cut_by_the_crate(rest, p);
        assert_eq!(cut(rest, p), expected, "cut at {at}, avg {}", p.avg);
        at += expected;
    }
}

/// A new, empty directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "xfer-fuzz-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checks_accept_ordinary_inputs() {
        super::read_frames(&[0, 0, 0, 2, b'{', b'}']);
        super::round_trip(br#"{"type":"end"}"#);
        super::path_policy(b"docs/hello.txt");
        super::receiver_session(b"");
        super::receiver_features(b"");
        super::cut_agrees(b"\x01\x02\x00\x00xfer");
    }
}
