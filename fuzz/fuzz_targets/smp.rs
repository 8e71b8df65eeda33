//! Fuzz target `smp`: the harness and its invariants are `twinbank::testing::fuzz::smp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::smp(data));
