//! The patch file: a fixed header, the target image's manifest parts, the compressed body.
//!
//! ```text
//! off size
//!   0   4  magic "TBDP"
//!   4   1  format version (1)
//!   5   1  LZ window bits of the body (8..=11)
//!   6   1  flags: bit 0 = the base is used as it is (no normalisation); others 0
//!   7   1  reserved (0)
//!   8  32  base digest: the SHA-256 TLV of the image the patch applies to (the running one)
//!  40   4  base size: its total length, TLVs included
//!  44   4  base address: its load address (the running bank's CPU address)
//!  48   4  body length (bytes)
//!  52   4  body CRC-32C
//!  56   2  protected TLV area length of the target (0 when it has none)
//!  58   2  unprotected TLV area length of the target
//!  60   4  reserved (0)
//!  64  32  target header
//!  96   …  target protected TLVs ‖ target unprotected TLVs ‖ body
//! ```
//!
//! All numbers little endian. The manifest parts are what `UploadBegin` carries for a full
//! upload: the device checks them (signature included) before anything is erased.

use super::lz::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use super::DeltaError;
use crate::image::HEADER_SIZE;

/// "TBDP", little endian.
pub const PATCH_MAGIC: u32 = u32::from_le_bytes(*b"TBDP");
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of the fixed patch header.
pub const PATCH_HEADER_SIZE: usize = 64;
/// Flag: the ops copy from the base as it is, not normalised (for comparisons).
pub const FLAG_RAW: u8 = 0x01;

/// The fixed header of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchHeader {
    /// LZ window of the body, as a power of two.
    pub window_bits: u8,
    /// The base is not normalised ([`FLAG_RAW`]).
    pub raw: bool,
    /// SHA-256 TLV value of the base image.
    pub base_digest: [u8; 32],
    /// Total length of the base image.
    pub base_size: u32,
    /// Load address of the base image (the bank it is linked for).
    pub base_address: u32,
    /// Length of the compressed body.
    pub body_len: u32,
    /// CRC-32C of the body.
    pub body_crc: u32,
    /// Length of the target's protected TLV area.
    pub protected_len: u16,
    /// Length of the target's unprotected TLV area.
    pub tlvs_len: u16,
}

fn u32_at(b: &[u8; PATCH_HEADER_SIZE], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl PatchHeader {
    /// Parses the fixed header: magic, version, window and reserved fields are checked.
    pub fn parse(bytes: &[u8]) -> Result<PatchHeader, DeltaError> {
        let b: &[u8; PATCH_HEADER_SIZE] = bytes
            .get(..PATCH_HEADER_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(DeltaError::BadHeader)?;
        if u32_at(b, 0) != PATCH_MAGIC {
            return Err(DeltaError::BadMagic);
        }
        if b[4] != FORMAT_VERSION {
            return Err(DeltaError::UnsupportedVersion(b[4]));
        }
        let window_bits = b[5];
        if window_bits > MAX_WINDOW_BITS {
            return Err(DeltaError::WindowTooLarge(window_bits));
        }
        if window_bits < MIN_WINDOW_BITS || b[6] & !FLAG_RAW != 0 || b[7] != 0 || u32_at(b, 60) != 0
        {
            return Err(DeltaError::BadHeader);
        }
        let mut base_digest = [0u8; 32];
        base_digest.copy_from_slice(&b[8..40]);
        Ok(PatchHeader {
            window_bits,
            raw: b[6] & FLAG_RAW != 0,
            base_digest,
            base_size: u32_at(b, 40),
            base_address: u32_at(b, 44),
            body_len: u32_at(b, 48),
            body_crc: u32_at(b, 52),
            protected_len: u16::from_le_bytes([b[56], b[57]]),
            tlvs_len: u16::from_le_bytes([b[58], b[59]]),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; PATCH_HEADER_SIZE] {
        let mut b = [0u8; PATCH_HEADER_SIZE];
        b[0..4].copy_from_slice(&PATCH_MAGIC.to_le_bytes());
        b[4] = FORMAT_VERSION;
        b[5] = self.window_bits;
        b[6] = if self.raw { FLAG_RAW } else { 0 };
        b[8..40].copy_from_slice(&self.base_digest);
        b[40..44].copy_from_slice(&self.base_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.base_address.to_le_bytes());
        b[48..52].copy_from_slice(&self.body_len.to_le_bytes());
        b[52..56].copy_from_slice(&self.body_crc.to_le_bytes());
        b[56..58].copy_from_slice(&self.protected_len.to_le_bytes());
        b[58..60].copy_from_slice(&self.tlvs_len.to_le_bytes());
        b
    }
}

/// A whole patch file, split into its parts (borrowed).
#[derive(Debug, Clone, Copy)]
pub struct PatchFile<'a> {
    /// The fixed header.
    pub header: PatchHeader,
    /// The fixed header's bytes (what `DeltaBegin` carries).
    pub header_bytes: &'a [u8],
    /// The target image's header.
    pub target_header: [u8; HEADER_SIZE],
    /// The target's protected TLV area.
    pub protected_tlvs: &'a [u8],
    /// The target's unprotected TLV area.
    pub tlvs: &'a [u8],
    /// The compressed body.
    pub body: &'a [u8],
}

impl<'a> PatchFile<'a> {
    /// Splits a patch file; refuses one whose length is not what its header says.
    pub fn parse(bytes: &'a [u8]) -> Result<PatchFile<'a>, DeltaError> {
        let header = PatchHeader::parse(bytes)?;
        let (header_bytes, rest) = bytes.split_at(PATCH_HEADER_SIZE);
        let th = rest.get(..HEADER_SIZE).ok_or(DeltaError::BadHeader)?;
        let mut target_header = [0u8; HEADER_SIZE];
        target_header.copy_from_slice(th);
        let rest = &rest[HEADER_SIZE..];
        let p = header.protected_len as usize;
        let t = header.tlvs_len as usize;
        let body_len = usize::try_from(header.body_len).map_err(|_| DeltaError::BadHeader)?;
        if rest.len() != p + t + body_len {
            return Err(DeltaError::BadHeader);
        }
        let (protected_tlvs, rest) = rest.split_at(p);
        let (tlvs, body) = rest.split_at(t);
        Ok(PatchFile {
            header,
            header_bytes,
            target_header,
            protected_tlvs,
            tlvs,
            body,
        })
    }
}
