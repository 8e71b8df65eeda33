//! SHA-256 through an engine the board chooses.
//!
//! Everything the crate hashes (image digests, key hashes) goes through [`Sha256Engine`], so a
//! board with a hash peripheral (STM32 HASH, nRF CC310, RP2350 SHA-256, ESP32 SHA) plugs it in
//! and the software implementation is not linked at all. [`SoftSha256`] (the `sha2` crate) is the
//! default; [`CompactSha256`] is faster on small cores for about the same size (the QEMU board's
//! choice). Which software engine a board uses is a board decision, measured in BENCHMARKS.md.
//!
//! ```text
//! verify_image_with(flash, params, &mut engine) ─► engine.start ─► update(256 B) … ─► finish
//! ```

use sha2::Digest;

/// A SHA-256 implementation. The crate calls `start`, then `update` any number of times, then
/// `finish`; a new `start` discards an unfinished digest. Implementations must be exactly
/// FIPS 180-4 SHA-256: every image check depends on it.
pub trait Sha256Engine {
    /// Starts a new digest.
    fn start(&mut self);
    /// Feeds `data`.
    fn update(&mut self, data: &[u8]);
    /// Finishes the digest started last.
    fn finish(&mut self) -> [u8; 32];

    /// The digest of `data` in one call.
    fn digest(&mut self, data: &[u8]) -> [u8; 32] {
        self.start();
        self.update(data);
        self.finish()
    }
}

/// Software SHA-256 from the `sha2` crate: the crate's default engine. On the microcontroller the
/// crate builds it with `force-soft-compact` (small, slower than [`CompactSha256`]; see
/// device/Cargo.toml).
#[derive(Debug, Clone, Default)]
pub struct SoftSha256(sha2::Sha256);

impl Sha256Engine for SoftSha256 {
    fn start(&mut self) {
        self.0 = sha2::Sha256::new();
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish(&mut self) -> [u8; 32] {
        core::mem::take(&mut self.0).finalize().into()
    }
}

/// SHA-256 written for small cores (FIPS 180-4, §6.2): the message schedule in a 64-word array,
/// the 64 rounds in eight passes of eight rounds whose working variables rotate by name (no
/// register moves between rounds). On the Cortex-M3 of the QEMU board a boot hashes at ≈ 48.6
/// instructions per image byte with it, ≈ 59 with the `sha2` crate's compact variant
/// ([`SoftSha256`] there) for 0.3 KB less flash, ≈ 44 with `hmac-sha256` for 1.6 KB more
/// (BENCHMARKS.md, "SHA-256 engine"). Safe Rust, no index that can fail (no panic path).
#[derive(Debug, Clone)]
pub struct CompactSha256 {
    state: [u32; 8],
    /// Bytes of the block being filled (`filled` of them are valid).
    block: [u8; BLOCK],
    filled: usize,
    /// Bytes fed since `start`.
    len: u64,
}

/// SHA-256 block size in bytes.
const BLOCK: usize = 64;

/// Initial hash value (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Round constants (FIPS 180-4 §4.2.2).
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// One round (FIPS 180-4 §6.2.2 step 3) on the working variables named in their current order:
/// afterwards `$h` holds the new `a` and `$d` the new `e`, so the next round names them
/// `$h, $a, $b, $c, $d, $e, $f, $g`.
macro_rules! round {
    ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $kw:expr) => {
        let t1 = $h
            .wrapping_add($e.rotate_right(6) ^ $e.rotate_right(11) ^ $e.rotate_right(25))
            .wrapping_add(($e & $f) ^ (!$e & $g))
            .wrapping_add($kw);
        $d = $d.wrapping_add(t1);
        $h = t1
            .wrapping_add($a.rotate_right(2) ^ $a.rotate_right(13) ^ $a.rotate_right(22))
            .wrapping_add(($a & $b) | (($a | $b) & $c));
    };
}

/// Hashes one block into `state`.
fn compress(state: &mut [u32; 8], block: &[u8; BLOCK]) {
    let mut w = [0u32; 64];
    for (w, b) in w.iter_mut().zip(block.as_chunks::<4>().0) {
        *w = u32::from_be_bytes(*b);
    }
    for i in 16..64 {
        let (w15, w2) = (w[i - 15], w[i - 2]);
        let s0 = w15.rotate_right(7) ^ w15.rotate_right(18) ^ (w15 >> 3);
        let s1 = w2.rotate_right(17) ^ w2.rotate_right(19) ^ (w2 >> 10);
        w[i] = w[i - 16]
            .wrapping_add(s0)
            .wrapping_add(w[i - 7])
            .wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for (k, w) in K.as_chunks::<8>().0.iter().zip(w.as_chunks::<8>().0) {
        let kw = |i: usize| k[i].wrapping_add(w[i]);
        round!(a, b, c, d, e, f, g, h, kw(0));
        round!(h, a, b, c, d, e, f, g, kw(1));
        round!(g, h, a, b, c, d, e, f, kw(2));
        round!(f, g, h, a, b, c, d, e, kw(3));
        round!(e, f, g, h, a, b, c, d, kw(4));
        round!(d, e, f, g, h, a, b, c, kw(5));
        round!(c, d, e, f, g, h, a, b, kw(6));
        round!(b, c, d, e, f, g, h, a, kw(7));
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

impl Default for CompactSha256 {
    fn default() -> Self {
        CompactSha256 {
            state: H0,
            block: [0; BLOCK],
            filled: 0,
            len: 0,
        }
    }
}

impl Sha256Engine for CompactSha256 {
    fn start(&mut self) {
        *self = CompactSha256::default();
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.filled > 0 {
            // Top up the partial block first.
            let mut taken = 0;
            for (dst, src) in self.block.iter_mut().skip(self.filled).zip(data) {
                *dst = *src;
                taken += 1;
            }
            self.filled += taken;
            data = data.get(taken..).unwrap_or_default();
            if self.filled < BLOCK {
                return;
            }
            compress(&mut self.state, &self.block);
            self.filled = 0;
        }
        let (blocks, rest) = data.as_chunks::<BLOCK>();
        for b in blocks {
            compress(&mut self.state, b);
        }
        for (dst, src) in self.block.iter_mut().zip(rest) {
            *dst = *src;
        }
        self.filled = rest.len();
    }

    fn finish(&mut self) -> [u8; 32] {
        // Padding (§5.1.1): 0x80, zeros up to 56 mod 64, then the length in bits.
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; BLOCK];
        pad[0] = 0x80;
        let zeros_to = if self.filled < BLOCK - 8 {
            BLOCK - 8
        } else {
            2 * BLOCK - 8
        };
        let pad_len = zeros_to.saturating_sub(self.filled).min(BLOCK);
        self.update(pad.get(..pad_len).unwrap_or_default());
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 32];
        for (o, s) in out.as_chunks_mut::<4>().0.iter_mut().zip(self.state) {
            *o = s.to_be_bytes();
        }
        self.start();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let mut e = SoftSha256::default();
        // FIPS 180-2 appendix B.1: "abc".
        assert_eq!(
            e.digest(b"abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(abc)"
        );
        // A new start discards what was fed before.
        e.start();
        e.update(b"garbage");
        e.start();
        e.update(b"a");
        e.update(b"bc");
        assert_eq!(e.finish(), e.digest(b"abc"));
    }

    /// FIPS 180-2 appendix B (one block, two blocks) and the empty message.
    #[test]
    fn compact_known_answers() {
        let mut e = CompactSha256::default();
        let hex = |d: [u8; 32]| {
            d.iter()
                .map(|b| std::format!("{b:02x}"))
                .collect::<std::string::String>()
        };
        assert_eq!(
            hex(e.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(e.digest(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(e.digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // One million 'a' (FIPS 180-2 B.3), fed in uneven pieces.
        let a = [b'a'; 1000];
        e.start();
        for i in 0..1000 {
            e.update(&a[..(i % 7) * 100 + 40]);
            e.update(&a[(i % 7) * 100 + 40..]);
        }
        assert_eq!(
            hex(e.finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    /// Same digests as the `sha2` crate for every length up to four blocks, whole and split.
    #[test]
    fn compact_matches_sha2() {
        let data: std::vec::Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        let mut soft = SoftSha256::default();
        let mut compact = CompactSha256::default();
        for len in 0..data.len() {
            let m = &data[..len];
            let expected = soft.digest(m);
            assert_eq!(compact.digest(m), expected, "length {len}");
            let cut = len * 5 / 7;
            compact.start();
            compact.update(&m[..cut]);
            compact.update(&[]);
            compact.update(&m[cut..]);
            assert_eq!(compact.finish(), expected, "length {len} split at {cut}");
        }
        // `finish` starts afresh.
        compact.update(b"abc");
        assert_eq!(compact.finish(), soft.digest(b"abc"));
    }
}
