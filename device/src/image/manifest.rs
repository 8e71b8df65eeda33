//! What a host announces before the first byte of an upload: the image's header, its protected
//! TLVs and its unprotected TLVs (hash, key, signature) — everything about the image but the
//! payload. The updater checks all of it, the signature over the announced digest included,
//! before it erases anything.
//!
//! ```text
//! image:    | header | pad | payload ................. | protected TLVs | TLVs (hash, key, sig) |
//! manifest:   header_bytes                              protected (parsed) tlvs (raw, ≤ 512 B)
//!             total_len = hdr_size + img_size + protect_tlv_size + tlvs.len()
//! ```

use super::header::{ImageHeader, HEADER_SIZE};
use super::sha256::{Sha256Engine, SoftSha256};
use super::tlv::{TlvIter, TLV_HEADER_SIZE, TLV_INFO_MAGIC, TLV_SHA256};
use super::verify::{check_unprotected_with, read_header, read_protected, ProtectedInfo};
use super::{ImageError, TrustedKey};
use crate::flash::{read_exact, SliceFlash};
use crate::state::ImageId;
use embedded_storage::nor_flash::ReadNorFlash;

/// Largest unprotected TLV area an announcement carries. An Ed25519-signed image needs 144 bytes
/// (hash, key hash, signature) or 156 (with the whole public key); the rest is headroom for a
/// second signature or TLVs of other tools.
pub const MAX_ANNOUNCED_TLVS: usize = 512;

/// What the updater needs to know before the first byte. Built from a whole image
/// ([`Manifest::read`], [`Manifest::from_image`]) or from the parts a host sent
/// ([`Manifest::from_parts`]). Invariant: `digest` is the value of the SHA-256 TLV in `tlvs`, and
/// `total_len` is the image length the header and `tlvs` imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The 32 header bytes as they must appear at the start of the bank.
    pub header_bytes: [u8; HEADER_SIZE],
    /// Decoded header.
    pub header: ImageHeader,
    /// Decoded protected TLVs (counter, ids).
    pub protected: ProtectedInfo,
    /// Total image length, both TLV areas included.
    pub total_len: u32,
    /// The image's SHA-256 as the SHA-256 TLV announces it: the finished image must have exactly
    /// this digest.
    pub digest: [u8; 32],
    /// The unprotected TLV area as in the image (info header included): hash, key, signature.
    pub tlvs: heapless::Vec<u8, MAX_ANNOUNCED_TLVS>,
}

impl Manifest {
    /// Reads the manifest of a complete image of `len` bytes from any readable source (a bank, a
    /// file through a [`ReadNorFlash`] adapter, or memory through [`SliceFlash`]).
    pub fn read<S: ReadNorFlash>(source: &mut S, len: u32) -> Result<Manifest, ImageError> {
        let mut header_bytes = [0u8; HEADER_SIZE];
        read_exact(source, 0, &mut header_bytes).map_err(ImageError::Flash)?;
        let header = read_header(source, 0)?;
        let hashed = header.hashed_len();
        if hashed + TLV_HEADER_SIZE as u64 > len as u64 {
            return Err(ImageError::Truncated);
        }
        // `hashed < len`, so it fits u32.
        let hashed = hashed as u32;
        let protected = read_protected(
            source,
            header.tlv_offset() as u32,
            header.protect_tlv_size,
            len,
        )?;
        let (_, total) = TlvIter::open(source, hashed, len, TLV_INFO_MAGIC)?;
        let mut tlvs = heapless::Vec::new();
        tlvs.resize(total as usize, 0)
            .map_err(|()| ImageError::AnnouncementTooLarge)?;
        read_exact(source, hashed, &mut tlvs).map_err(ImageError::Flash)?;
        Ok(Manifest {
            header_bytes,
            header,
            protected,
            total_len: hashed + total,
            digest: announced_digest(&tlvs)?,
            tlvs,
        })
    }

    /// The manifest of a complete image in memory.
    pub fn from_image(image: &[u8]) -> Result<Manifest, ImageError> {
        let len = u32::try_from(image.len()).map_err(|_| ImageError::Truncated)?;
        Manifest::read(&mut SliceFlash(image), len)
    }

    /// Builds a manifest from the parts a host sent: the header bytes, the protected TLV area (as
    /// in the image, info header included; empty when the image has none) and the unprotected
    /// TLV area (info header included).
    pub fn from_parts(
        header_bytes: [u8; HEADER_SIZE],
        protected_tlvs: &[u8],
        tlvs: &[u8],
    ) -> Result<Manifest, ImageError> {
        let header = ImageHeader::parse(&header_bytes)?;
        if protected_tlvs.len() != header.protect_tlv_size as usize {
            return Err(ImageError::BadTlvArea);
        }
        let protected = read_protected(
            &mut SliceFlash(protected_tlvs),
            0,
            header.protect_tlv_size,
            protected_tlvs.len() as u32,
        )?;
        let tlvs: heapless::Vec<u8, MAX_ANNOUNCED_TLVS> =
            heapless::Vec::from_slice(tlvs).map_err(|()| ImageError::AnnouncementTooLarge)?;
        // The area must be exactly what its info header says (no trailing bytes).
        let (_, total) =
            TlvIter::open(&mut SliceFlash(&tlvs), 0, tlvs.len() as u32, TLV_INFO_MAGIC)?;
        if total as usize != tlvs.len() {
            return Err(ImageError::BadTlvArea);
        }
        let total_len = header
            .hashed_len()
            .checked_add(total as u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(ImageError::DoesNotFit {
                needed: u32::MAX,
                capacity: 0,
            })?;
        Ok(Manifest {
            header_bytes,
            header,
            protected,
            total_len,
            digest: announced_digest(&tlvs)?,
            tlvs,
        })
    }

    /// The identity the state records for this image.
    pub fn image_id(&self) -> ImageId {
        ImageId {
            version: self.header.version,
            digest: self.digest,
            security_counter: self.protected.security_counter,
            size: self.total_len,
        }
    }

    /// Checks the announced signature: a valid Ed25519 signature of [`Manifest::digest`] by one
    /// of `keys`, chosen exactly as [`super::verify_image`] chooses it. Proves the announcement
    /// came from a key holder; whether the bytes that follow match it is checked at `finish`.
    pub fn check_signature(&self, keys: &[TrustedKey]) -> Result<(), ImageError> {
        self.check_signature_with(keys, &mut SoftSha256::default())
    }

    /// [`Manifest::check_signature`] hashing key names through `engine`.
    pub fn check_signature_with<H: Sha256Engine>(
        &self,
        keys: &[TrustedKey],
        engine: &mut H,
    ) -> Result<(), ImageError> {
        check_unprotected_with(
            &mut SliceFlash(&self.tlvs),
            0,
            self.tlvs.len() as u32,
            keys,
            &self.digest,
            engine,
        )
        .map(|_| ())
    }
}

/// The value of the (first) SHA-256 TLV of an unprotected TLV area.
fn announced_digest(tlvs: &[u8]) -> Result<[u8; 32], ImageError> {
    let mut area = SliceFlash(tlvs);
    let (mut it, _) = TlvIter::open(&mut area, 0, tlvs.len() as u32, TLV_INFO_MAGIC)?;
    while let Some(e) = it.next(&mut area)? {
        if e.kind == TLV_SHA256 {
            let mut d = [0u8; 32];
            e.read_value(&mut area, &mut d)?;
            return Ok(d);
        }
    }
    Err(ImageError::MissingHash)
}
