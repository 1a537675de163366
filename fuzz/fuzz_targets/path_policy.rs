//! Fuzz target: see `xfer::fuzzing::path_policy` for the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xfer::fuzzing::path_policy(data));
