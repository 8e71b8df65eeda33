//! The Ed25519 signature check: RFC 8032 verification with the strict rules of
//! `ed25519-dalek`'s `verify_strict`, on `curve25519-dalek`'s group arithmetic.
//!
//! ```text
//!  signature = R ‖ s (32 + 32 bytes), key = A (32 bytes), message = the image digest M
//!
//!  s < ℓ (canonical) ──► R, A decompress ──► neither R nor A of small order
//!      ──► k = SHA-512(R ‖ A ‖ M) mod ℓ ──► encode([s]B − [k]A) == R (byte for byte)
//! ```
//!
//! Why not `VerifyingKey::verify_strict` itself: it tests `s` for canonical form by reducing it
//! modulo ℓ, and that reduction is a second, inlined copy of the Montgomery multiplication the
//! challenge reduction already links (2.4 KB of the bootloader's flash with what it pulls in,
//! and 1 KB of its stack: BENCHMARKS.md, issue 12). Here `s`
//! is compared with ℓ directly (a byte comparison), and once known to be below ℓ it is loaded
//! through the same wide reduction as `k`, which returns it unchanged. Every rule of
//! `verify_strict` stays: non-canonical `s` (which includes any of the top three bits set),
//! undecodable or small-order `R` or `A`, and an `R` that is not the canonical encoding of the
//! computed point are all refused. The host tests compare this function with `verify_strict` on
//! valid, tampered and adversarial signatures (`tests` below).

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

/// Bytes of an Ed25519 public key (a compressed Edwards point).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature: `R` (a compressed point) then `s` (a scalar, little-endian).
pub const SIGNATURE_LEN: usize = 64;

/// ℓ = 2^252 + 27742317777372353535851937790883648493, the order of the base point, as 32
/// little-endian bytes (RFC 8032 §5.1).
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// True when the little-endian integer `s` is below ℓ (its canonical form modulo ℓ). Compares
/// from the most significant byte down; not constant time (nothing here is secret).
fn is_canonical_scalar(s: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        if s[i] != ELL[i] {
            return s[i] < ELL[i];
        }
    }
    // s == ℓ
    false
}

/// The scalar `bytes` mod ℓ, through the wide (512-bit) reduction: for `bytes` below ℓ this is
/// `bytes` itself.
fn reduced(bytes: &[u8; 32]) -> Scalar {
    let mut wide = [0u8; 64];
    wide[..32].copy_from_slice(bytes);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// True when `signature` is a valid Ed25519 signature of `message` by `key`, under the strict
/// rules (see the module documentation). Never panics, whatever the bytes.
pub fn verify_strict(
    key: &[u8; PUBLIC_KEY_LEN],
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    let (r_half, s_half) = signature.split_at(32);
    let mut r_bytes = [0u8; 32];
    let mut s_bytes = [0u8; 32];
    r_bytes.copy_from_slice(r_half);
    s_bytes.copy_from_slice(s_half);
    if !is_canonical_scalar(&s_bytes) {
        return false;
    }
    let Some(a) = CompressedEdwardsY(*key).decompress() else {
        return false;
    };
    let r_encoded = CompressedEdwardsY(r_bytes);
    let Some(r) = r_encoded.decompress() else {
        return false;
    };
    if r.is_small_order() || a.is_small_order() {
        return false;
    }
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(key);
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let minus_a = -a;
    let s = reduced(&s_bytes);
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &minus_a, &s).compress() == r_encoded
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
    use curve25519_dalek::traits::Identity;
    use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

    /// The reference: `ed25519-dalek`'s own strict verification.
    fn reference(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(key)
            .is_ok_and(|vk| vk.verify_strict(msg, &Signature::from_bytes(sig)).is_ok())
    }

    /// A deterministic byte stream (xorshift64*), so failures reproduce.
    struct Bytes(u64);
    impl Bytes {
        fn next(&mut self) -> u8 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        }
        fn array<const N: usize>(&mut self) -> [u8; N] {
            core::array::from_fn(|_| self.next())
        }
    }

    fn agree(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        let ours = verify_strict(key, msg, sig);
        assert_eq!(
            ours,
            reference(key, msg, sig),
            "key {key:02x?} sig {sig:02x?} msg {msg:02x?}"
        );
        ours
    }

    /// Adds ℓ to the little-endian scalar (no overflow for s < 2^253 - ℓ).
    fn plus_ell(s: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = s[i] as u16 + ELL[i] as u16 + carry;
            out[i] = v as u8;
            carry = v >> 8;
        }
        out
    }

    #[test]
    fn canonical_scalar_boundaries() {
        let mut below = ELL;
        below[0] -= 1;
        assert!(is_canonical_scalar(&below));
        assert!(!is_canonical_scalar(&ELL));
        let mut above = ELL;
        above[0] += 1;
        assert!(!is_canonical_scalar(&above));
        assert!(is_canonical_scalar(&[0; 32]));
        let mut top = [0u8; 32];
        top[31] = 0x80;
        assert!(!is_canonical_scalar(&top));
        assert_eq!(
            reduced(&below).to_bytes(),
            below,
            "a canonical scalar loads unchanged"
        );
    }

    #[test]
    fn valid_signatures_verify_and_tampered_ones_do_not_as_verify_strict_says() {
        let mut rng = Bytes(0x5EED_0012);
        for round in 0..64 {
            let key = SigningKey::from_bytes(&rng.array::<32>());
            let pk = key.verifying_key().to_bytes();
            let msg: [u8; 32] = rng.array();
            let sig = key.sign(&msg).to_bytes();
            assert!(agree(&pk, &msg, &sig), "round {round}: valid signature");
            // One flipped bit anywhere: signature, key or message.
            let bit = rng.next() as usize % 8;
            let mut s2 = sig;
            s2[rng.next() as usize % 64] ^= 1 << bit;
            assert!(!agree(&pk, &msg, &s2));
            let mut k2 = pk;
            k2[rng.next() as usize % 32] ^= 1 << bit;
            assert!(!agree(&k2, &msg, &sig));
            let mut m2 = msg;
            m2[rng.next() as usize % 32] ^= 1 << bit;
            assert!(!agree(&pk, &m2, &sig));
            // The malleated twin: s + ℓ verifies the same equation but is not canonical.
            let mut twin = sig;
            twin[32..].copy_from_slice(&plus_ell(&sig[32..]));
            assert!(!agree(&pk, &msg, &twin), "round {round}: s + ℓ refused");
        }
    }

    #[test]
    fn small_order_keys_and_commitments_are_refused() {
        let mut rng = Bytes(0x70_25_10);
        let key = SigningKey::from_bytes(&rng.array::<32>());
        let pk = key.verifying_key().to_bytes();
        let msg = [7u8; 32];
        let sig = key.sign(&msg).to_bytes();
        for t in EIGHT_TORSION.iter() {
            let t = t.compress().to_bytes();
            // A small-order key: with R = identity and s = 0 the equation holds for a weak key.
            let mut forged = [0u8; 64];
            forged[..32].copy_from_slice(&CompressedEdwardsY::identity().to_bytes());
            assert!(!agree(&t, &msg, &forged));
            assert!(!agree(&t, &msg, &sig));
            // A small-order R with the real key.
            let mut s2 = sig;
            s2[..32].copy_from_slice(&t);
            assert!(!agree(&pk, &msg, &s2));
        }
    }

    #[test]
    fn non_canonical_encodings_and_random_bytes_agree_with_verify_strict() {
        let mut rng = Bytes(0xBAD_5EED);
        let key = SigningKey::from_bytes(&rng.array::<32>());
        let pk = key.verifying_key().to_bytes();
        let msg = [3u8; 32];
        let sig = key.sign(&msg).to_bytes();
        // R with its sign bit flipped, and R's y + p where it fits (a non-canonical encoding
        // of a point): both refused, as the comparison is on the canonical encoding.
        let mut flipped = sig;
        flipped[31] ^= 0x80;
        assert!(!agree(&pk, &msg, &flipped));
        // Non-canonical y = p + small values for R and for A (decode to small y).
        for small in 0u8..19 {
            let mut y = [0xffu8; 32];
            y[0] = 0xed + small;
            y[31] = 0x7f;
            let mut s2 = sig;
            s2[..32].copy_from_slice(&y);
            agree(&pk, &msg, &s2);
            agree(&y, &msg, &sig);
        }
        for _ in 0..256 {
            let k: [u8; 32] = rng.array();
            let s: [u8; 64] = rng.array();
            assert!(!agree(&k, &msg, &s));
        }
    }

    /// A scalar from the byte stream (uniform enough for tests).
    fn scalar(rng: &mut Bytes) -> Scalar {
        let wide: [u8; 64] = rng.array();
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    /// k = SHA-512(R ‖ A ‖ M) mod ℓ, as the verifier computes it.
    fn challenge(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
        let mut h = Sha512::new();
        h.update(r);
        h.update(a);
        h.update(msg);
        Scalar::from_bytes_mod_order_wide(&h.finalize().into())
    }

    fn signature(r: &[u8; 32], s: &Scalar) -> [u8; 64] {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(r);
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }

    /// Forgeries that satisfy the verification equation (or its cofactored form) and that only
    /// one strict rule refuses: each rule is tested on its own.
    #[test]
    fn each_strict_rule_refuses_a_forgery_on_its_own() {
        let mut rng = Bytes(0x7A7);
        let msg = b"image digest, 32 bytes long.....";
        let identity = CompressedEdwardsY::identity().to_bytes();
        // A weak key, A = identity, and R = [s]B (full order): [s]B - [k]A = R for every
        // message. Only the small-order check of A refuses it.
        let s = scalar(&mut rng);
        let forged = signature(&(B * s).compress().to_bytes(), &s);
        assert!(!agree(&identity, msg, &forged), "weak key");
        // An honest key A = [a]B, R = identity and s = k·a: [s]B - [k]A = identity = R. Only
        // the small-order check of R refuses it.
        let a = scalar(&mut rng);
        let key = (B * a).compress().to_bytes();
        let k = challenge(&identity, &key, msg);
        assert!(
            !agree(&key, msg, &signature(&identity, &(k * a))),
            "small-order R"
        );
        // R = [r]B + T with T of order 2 and s = r + k·a: the cofactored equation
        // [8]([s]B - [k]A - R) = 0 holds, the strict (cofactorless) comparison does not.
        let r = scalar(&mut rng);
        let r_bytes = (B * r + EIGHT_TORSION[4]).compress().to_bytes();
        let k = challenge(&r_bytes, &key, msg);
        assert!(
            !agree(&key, msg, &signature(&r_bytes, &(r + k * a))),
            "torsion in R"
        );
        // The same construction without the torsion is a valid signature.
        let r_bytes = (B * r).compress().to_bytes();
        let k = challenge(&r_bytes, &key, msg);
        assert!(agree(&key, msg, &signature(&r_bytes, &(r + k * a))));
    }

    /// Keys and commitments of mixed order (a full-order point plus a torsion point) that
    /// `verify_strict` accepts are accepted here too: the strict rules refuse small order, not
    /// mixed order.
    #[test]
    fn mixed_order_signatures_the_reference_accepts_are_accepted() {
        let mut rng = Bytes(0x3141_5926);
        let msg = [0x5au8; 32];
        let mut accepted = 0;
        for tries in 0..400 {
            let a = scalar(&mut rng);
            let key = (B * a + EIGHT_TORSION[1 + tries % 7]).compress().to_bytes();
            let r = scalar(&mut rng);
            let r_bytes = (B * r + EIGHT_TORSION[rng.next() as usize % 8])
                .compress()
                .to_bytes();
            let k = challenge(&r_bytes, &key, &msg);
            if agree(&key, &msg, &signature(&r_bytes, &(r + k * a))) {
                accepted += 1;
            }
        }
        // About one in eight of these satisfies the cofactorless equation.
        assert!(accepted >= 10, "only {accepted} accepted");
    }

    /// `is_canonical_scalar` against `Scalar::from_canonical_bytes` (what `verify_strict` uses)
    /// around ℓ, 2^252, 2^253, 2^255 and on random values.
    #[test]
    fn the_canonical_scalar_test_is_from_canonical_bytes() {
        fn add_small(base: &[u8; 32], d: i32) -> [u8; 32] {
            // base + d (mod 2^256), little-endian.
            let mut out = *base;
            let mut carry = d as i64;
            for b in out.iter_mut() {
                let v = *b as i64 + carry;
                *b = v.rem_euclid(256) as u8;
                carry = v.div_euclid(256);
            }
            out
        }
        let pow2 = |e: usize| {
            let mut x = [0u8; 32];
            x[e / 8] = 1 << (e % 8);
            x
        };
        let mut rng = Bytes(0xCA_0001);
        let mut values = std::vec::Vec::new();
        for base in [ELL, pow2(252), pow2(253), pow2(255), [0u8; 32]] {
            for d in -300..=300 {
                values.push(add_small(&base, d));
            }
        }
        for _ in 0..20_000 {
            values.push(rng.array());
        }
        for v in values {
            let reference = bool::from(Scalar::from_canonical_bytes(v).is_some());
            assert_eq!(is_canonical_scalar(&v), reference, "{v:02x?}");
        }
    }
}
