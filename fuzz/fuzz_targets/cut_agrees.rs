//! Fuzz target: see `xfer::fuzzing::cut_agrees` for the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xfer::fuzzing::cut_agrees(data));
