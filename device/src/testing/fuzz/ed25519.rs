//! Harness `ed25519`: the device's strict Ed25519 check (`twinbank::image::ed25519`, written on
//! curve25519-dalek's arithmetic to save the bootloader 2.4 KB) must decide exactly as
//! ed25519-dalek's `VerifyingKey::from_bytes` + `verify_strict` on every input.
//!
//! Input: a mode byte, 32 bytes, 64 bytes, then the message (the rest).
//! - mode bit 0 clear: the 32 bytes are the key and the 64 the signature, raw;
//! - mode bit 0 set: the 32 bytes seed a signing key, which signs the message honestly; the 64
//!   bytes are XORed into that signature (all zero: a valid signature), and mode bit 1 XORs the
//!   mode's upper six bits into the key's last byte — so the fuzzer explores near-valid
//!   signatures and keys, where the strict rules decide, rather than random bytes that fail the
//!   first check.

use super::{ensure, seed, Seed};
use crate::image::ed25519::verify_strict;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::vec::Vec;

/// Bytes before the message: mode, 32, 64.
const HEAD: usize = 1 + 32 + 64;

/// The harness.
pub fn ed25519(data: &[u8]) {
    if data.len() < HEAD {
        return;
    }
    let mode = data[0];
    let mut first = [0u8; 32];
    first.copy_from_slice(&data[1..33]);
    let mut second = [0u8; 64];
    second.copy_from_slice(&data[33..HEAD]);
    let msg = &data[HEAD..];
    let (key, sig) = if mode & 1 == 0 {
        (first, second)
    } else {
        let signer = SigningKey::from_bytes(&first);
        let mut key = signer.verifying_key().to_bytes();
        let mut sig = signer.sign(msg).to_bytes();
        for (s, x) in sig.iter_mut().zip(second.iter()) {
            *s ^= x;
        }
        if mode & 2 != 0 {
            key[31] ^= mode >> 2;
        }
        (key, sig)
    };
    let reference = VerifyingKey::from_bytes(&key)
        .is_ok_and(|vk| vk.verify_strict(msg, &Signature::from_bytes(&sig)).is_ok());
    ensure(
        verify_strict(&key, msg, &sig) == reference,
        "the device's Ed25519 check and ed25519-dalek's verify_strict disagree",
    );
}

/// Seeds: an honest signature, one with a flipped bit, raw bytes, a small-order key.
pub fn seeds() -> Vec<Seed> {
    let digest = [0x5au8; 32];
    let input = |mode: u8, first: [u8; 32], second: [u8; 64]| {
        let mut v = Vec::with_capacity(HEAD + digest.len());
        v.push(mode);
        v.extend_from_slice(&first);
        v.extend_from_slice(&second);
        v.extend_from_slice(&digest);
        v
    };
    let mut flipped = [0u8; 64];
    flipped[40] = 0x10;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    std::vec![
        seed("honest", input(1, [7; 32], [0; 64])),
        seed("flipped-s-bit", input(1, [7; 32], flipped)),
        seed("raw", input(0, [0x42; 32], [0x24; 64])),
        seed("identity-key", input(0, identity, [0; 64])),
    ]
}
