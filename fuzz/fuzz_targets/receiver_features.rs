//! Fuzz target: see `xfer::fuzzing::receiver_features` for the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xfer::fuzzing::receiver_features(data));
