//! Fuzz target `state_store`: the harness and its invariants are `twinbank::testing::fuzz::state_store`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::state_store(data));
