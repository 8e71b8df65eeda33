//! Fuzz target `ed25519`: the harness and its invariant are `twinbank::testing::fuzz::ed25519`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twinbank::testing::fuzz::ed25519(data));
