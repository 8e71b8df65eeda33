//! Fuzz target `frames`: the harness and its invariants are `twinbank::testing::fuzz::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::frames(data));
