//! Fuzz target `board`: the harness and its invariants are `twinbank::testing::fuzz::board`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::board(data));
