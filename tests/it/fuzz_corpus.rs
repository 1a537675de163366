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
