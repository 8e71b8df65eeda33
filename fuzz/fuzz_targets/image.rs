//! Fuzz target `image`: the harness and its invariants are `twinbank::testing::fuzz::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::image(data));
