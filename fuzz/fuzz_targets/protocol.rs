//! Fuzz target `protocol`: the harness and its invariants are `twinbank::testing::fuzz::protocol`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::protocol(data));
