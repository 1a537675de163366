//! Properties the fuzz targets check (`fuzz/`, cargo-fuzz on nightly), kept in the
//! library so that `tests/fuzz_corpus.rs` replays every saved input on stable under
//! plain `cargo test`. Each function panics when its property does not hold; it is
//! not part of xfer's interface.

use std::io::Cursor;

use crate::conn::{Connection, FrameReader, FrameWriter};
use crate::escape::is_unprintable;
use crate::frame;
use crate::handshake::SessionKey;
use crate::recv::{self, Destination, RecvOptions};
use crate::report::{Json, Reporter, Style};
use crate::sink::{self, TargetDir};

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
    while let Ok(len) = reader.read_data_len() {
        if len == 0 {
            break;
        }
        let mut buffer = vec![0; len.min(1 << 16)];
        if reader.read_data_some(&mut buffer).is_err() {
            break;
        }
    }
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
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(components) = sink::check_path(path) else {
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
pub fn receiver_session(data: &[u8]) {
    let parent = tempfile_dir();
    let target_path = parent.join("target");
    std::fs::create_dir(&target_path).expect("a fresh directory");
    let target = TargetDir::open(&target_path).expect("it was just made");
    let conn = Connection {
        reader: FrameReader::new(Cursor::new(data)),
        writer: FrameWriter::new(Vec::new()),
    };
    let options = RecvOptions {
        overwrite: false,
        resume: true,
    };
    let style = Style {
        quiet: true,
        json: Json::Off,
        serving: false,
    };
    let _ = recv::session(
        conn,
        &SessionKey::from_raw([7; 32]),
        &Destination::Dir(target),
        &recv::Claims::default(),
        options,
        Reporter::new(style),
    );
    let beside: Vec<_> = std::fs::read_dir(&parent).expect("readable").collect();
    assert_eq!(beside.len(), 1, "something was written beside the target");
    let _ = std::fs::remove_dir_all(&parent);
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
    }
}
