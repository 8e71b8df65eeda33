//! Fuzz target `delta`: the harness and its invariants are `twinbank::testing::fuzz::delta`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::delta(data));
