//! Fuzz target: see `xfer::fuzzing::round_trip` for the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xfer::fuzzing::round_trip(data));
