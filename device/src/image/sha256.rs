//! SHA-256 through an engine the board chooses.
//!
//! Everything the crate hashes (image digests, key hashes) goes through [`Sha256Engine`], so a
//! board with a hash peripheral (STM32 HASH, nRF CC310, RP2350 SHA-256, ESP32 SHA) plugs it in
//! and the software implementation is not linked at all. [`SoftSha256`] (the `sha2` crate) is the
//! default; which software variant a board uses (compact or unrolled, its opt level) is a
//! board decision, measured in BENCHMARKS.md.
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

/// Software SHA-256 from the `sha2` crate. On the microcontroller the crate builds it with
/// `force-soft-compact` (small; see device/Cargo.toml).
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
}
