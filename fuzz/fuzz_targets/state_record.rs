//! Fuzz target `state_record`: the harness and its invariants are `twinbank::testing::fuzz::state_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::state_record(data));
