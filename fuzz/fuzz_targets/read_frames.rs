//! Fuzz target: see `xfer::fuzzing::read_frames` for the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xfer::fuzzing::read_frames(data));
