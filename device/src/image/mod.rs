//! MCUboot-compatible signed images: header, TLVs, verification, and (with `std`) the encoder.
//!
//! ```text
//! bank start
//! | header (32 B) + 0xff pad to hdr_size | payload (vector table first) | prot. TLVs | TLVs |
//!   <------------------ hashed by TLV 0x10 (SHA-256) ------------------------->
//!   protected:   0x50 security counter, 0x74 vendor UUID, 0x75 class UUID
//!   unprotected: 0x10 SHA-256, 0x01 KEYHASH (or 0x02 PUBKEY), 0x24 Ed25519(signature of digest)
//! ```

use crate::flash::FlashFault;
use core::fmt;

pub mod ed25519;
mod header;
mod manifest;
pub mod sha256;
pub mod tlv;
mod verify;

#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod encode;

pub use header::{
    flag_names, HeaderError, ImageHeader, Version, VersionParseError, FLAGS_ENCRYPTED, FLAG_NAMES,
    FLAG_NON_BOOTABLE, FLAG_PIC, FLAG_RAM_LOAD, FLAG_ROM_FIXED, HEADER_SIZE, IMAGE_MAGIC,
};
pub use manifest::{Manifest, MAX_ANNOUNCED_TLVS};
pub use sha256::{CompactSha256, Sha256Engine, SoftSha256};
pub use verify::{
    check_header, check_manifest, check_unprotected, check_unprotected_with, hash_range,
    hash_range_with, read_header, read_protected, verify_image, verify_image_with, KeyName,
    KeySelector, ProtectedInfo, SignatureCheck, SignatureOutcome, VerifiedImage, VerifyParams,
    SPKI_LEN,
};
/// The async twins of the verification reads (same source, over
/// `embedded_storage_async::nor_flash::ReadNorFlash`), used by [`crate::asynch::Updater`].
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use verify::{
    check_unprotected_with_async, hash_range_with_async, read_header_async, read_protected_async,
    verify_image_with_async,
};

/// A 16-byte UUID as stored in the vendor/class TLVs (RFC 4122 byte order, as `imgtool` writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Uuid(pub [u8; 16]);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The hardware identity a device checks images against (TLVs 0x74 / 0x75).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceIds {
    /// Vendor UUID; when set, images must carry the same vendor TLV.
    pub vendor: Option<Uuid>,
    /// Class UUID; when set, images must carry the same class TLV.
    pub class: Option<Uuid>,
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) } — the raw 32-byte key follows.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A trusted Ed25519 public key (32 raw bytes), built into the bootloader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedKey(pub [u8; 32]);

impl TrustedKey {
    /// The key as DER SubjectPublicKeyInfo (what MCUboot's key table and PUBKEY TLV hold).
    pub fn spki(&self) -> [u8; SPKI_LEN] {
        let mut out = [0u8; SPKI_LEN];
        out[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
        out[12..].copy_from_slice(&self.0);
        out
    }

    /// KEYHASH TLV value: SHA-256 of the SubjectPublicKeyInfo.
    pub fn keyhash(&self) -> [u8; 32] {
        self.keyhash_with(&mut SoftSha256::default())
    }

    /// [`TrustedKey::keyhash`] with the board's SHA-256 engine.
    pub fn keyhash_with<H: Sha256Engine>(&self, engine: &mut H) -> [u8; 32] {
        engine.digest(&self.spki())
    }
}

/// Why an image was refused. One variant per cause, so tools and tests can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ImageError {
    /// The flash driver failed.
    Flash(FlashFault),
    /// No image header (magic mismatch; an erased bank reads 0xffffffff).
    BadMagic(u32),
    /// `hdr_size` is smaller than the 32-byte header.
    HeaderSizeTooSmall(u16),
    /// The image does not fit the bank.
    DoesNotFit {
        /// Bytes the image needs (at least).
        needed: u32,
        /// Bytes the bank has.
        capacity: u32,
    },
    /// A TLV area is missing where the header says it starts (truncated or incomplete image).
    Truncated,
    /// A TLV area or entry is inconsistent (sizes disagree, entry overruns the area).
    BadTlvArea,
    /// A TLV has the wrong length for its type.
    MalformedTlv(u16),
    /// Encrypted images are not supported.
    Encrypted,
    /// The image is flagged non-bootable.
    NotBootable,
    /// The image is not bound to a bank (no `ROM_FIXED` flag): it was linked for an unknown address.
    NotBankBound,
    /// The image was linked for another bank.
    WrongBank {
        /// CPU address the image was linked for (`load_addr`).
        linked_for: u32,
        /// CPU address of the bank it was offered to.
        bank_address: u32,
    },
    /// The device has a vendor id and the image carries none.
    MissingVendorId,
    /// The image is for another vendor.
    VendorIdMismatch,
    /// The device has a class id and the image carries none.
    MissingClassId,
    /// The image is for another kind of hardware.
    ClassIdMismatch,
    /// Anti-rollback: the image's security counter is below the device minimum.
    SecurityCounterTooLow {
        /// The image's counter.
        image: u32,
        /// The device minimum.
        minimum: u32,
    },
    /// No SHA-256 TLV.
    MissingHash,
    /// The content does not match the SHA-256 TLV (tampered or corrupted).
    HashMismatch,
    /// The device has no trusted key (it refuses everything rather than accept anything).
    NoTrustedKeys,
    /// No Ed25519 signature TLV.
    MissingSignature,
    /// An `imgtool --pure` image (Ed25519 over the whole image): not supported, sign without
    /// `--pure`.
    PureSignature,
    /// Signed, but by a key the device does not trust.
    UntrustedKey,
    /// The signature does not verify with the trusted key it names.
    BadSignature,
    /// An upload announcement whose unprotected TLV area is larger than the device accepts
    /// ([`MAX_ANNOUNCED_TLVS`]).
    AnnouncementTooLarge,
}

impl From<HeaderError> for ImageError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::BadMagic(m) => ImageError::BadMagic(m),
            HeaderError::HeaderSizeTooSmall(s) => ImageError::HeaderSizeTooSmall(s),
        }
    }
}

impl ImageError {
    /// A few words for the bootloader's boot line (which links no formatting machinery, and whose
    /// flash budget counts every byte); `Display` gives the full sentence with the numbers.
    pub fn summary(&self) -> &'static str {
        match *self {
            ImageError::Flash(k) => k.summary(),
            ImageError::BadMagic(u32::MAX) => "erased",
            ImageError::BadMagic(_) => "no image header",
            ImageError::HeaderSizeTooSmall(_) => "header size",
            ImageError::DoesNotFit { .. } => "too large",
            ImageError::Truncated => "truncated",
            ImageError::BadTlvArea | ImageError::MalformedTlv(_) => "bad TLVs",
            ImageError::Encrypted => "encrypted",
            ImageError::NotBootable => "non-bootable",
            ImageError::NotBankBound => "not bank-bound",
            ImageError::WrongBank { .. } => "wrong bank",
            ImageError::MissingVendorId | ImageError::VendorIdMismatch => "vendor id",
            ImageError::MissingClassId | ImageError::ClassIdMismatch => "class id",
            ImageError::SecurityCounterTooLow { .. } => "downgrade",
            ImageError::MissingHash => "no hash",
            ImageError::HashMismatch => "hash mismatch",
            ImageError::NoTrustedKeys => "no trusted key",
            ImageError::MissingSignature => "not signed",
            ImageError::PureSignature => "pure signature",
            ImageError::UntrustedKey => "untrusted key",
            ImageError::BadSignature => "bad signature",
            ImageError::AnnouncementTooLarge => "TLVs too large",
        }
    }
}

impl core::error::Error for ImageError {}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ImageError::Flash(k) => write!(f, "{k}"),
            ImageError::BadMagic(u32::MAX) => f.write_str("no image (bank is erased)"),
            ImageError::BadMagic(m) => {
                write!(f, "not an MCUboot image (header magic {m:#010x})")
            }
            ImageError::HeaderSizeTooSmall(s) => {
                write!(f, "header size {s} is smaller than the 32-byte header")
            }
            ImageError::DoesNotFit { needed, capacity } => write!(
                f,
                "image needs {needed} bytes but the bank holds {capacity}"
            ),
            ImageError::Truncated => f.write_str("image is truncated (TLV area missing)"),
            ImageError::BadTlvArea => f.write_str("TLV area is malformed"),
            ImageError::MalformedTlv(t) => write!(f, "TLV {t:#04x} has the wrong length"),
            ImageError::Encrypted => f.write_str("encrypted images are not supported"),
            ImageError::NotBootable => f.write_str("image is flagged non-bootable"),
            ImageError::NotBankBound => {
                f.write_str("image is not bound to a bank (sign it with --bank or --rom-fixed)")
            }
            ImageError::WrongBank {
                linked_for,
                bank_address,
            } => write!(
                f,
                "image is linked for {linked_for:#010x} but the bank is at {bank_address:#010x}"
            ),
            ImageError::MissingVendorId => {
                f.write_str("image has no vendor id; this device requires one")
            }
            ImageError::VendorIdMismatch => {
                f.write_str("image is for another vendor (vendor id differs)")
            }
            ImageError::MissingClassId => {
                f.write_str("image has no class id; this device requires one")
            }
            ImageError::ClassIdMismatch => {
                f.write_str("image is for other hardware (class id differs)")
            }
            ImageError::SecurityCounterTooLow { image, minimum } => write!(
                f,
                "downgrade: security counter {image} is below the minimum {minimum}"
            ),
            ImageError::MissingHash => f.write_str("image has no SHA-256 TLV"),
            ImageError::HashMismatch => {
                f.write_str("image hash mismatch (content tampered or corrupted)")
            }
            ImageError::NoTrustedKeys => {
                f.write_str("no trusted key configured: refusing every image")
            }
            ImageError::MissingSignature => f.write_str("image is not signed"),
            ImageError::PureSignature => {
                f.write_str("pure Ed25519 images (imgtool --pure) are not supported")
            }
            ImageError::UntrustedKey => f.write_str("image is signed by an untrusted key"),
            ImageError::BadSignature => f.write_str("signature is invalid"),
            ImageError::AnnouncementTooLarge => write!(
                f,
                "the image's TLV area is larger than the {MAX_ANNOUNCED_TLVS} bytes an upload may announce"
            ),
        }
    }
}
