//! The image encoder (host side, `std`): header + payload + TLVs + Ed25519 signature, and key
//! loading. The host tool and the tests use this one implementation of the format; the output is
//! what `imgtool sign --header-size N --pad-header` produces for an Ed25519 key.

extern crate std;

use super::tlv::*;
use super::{ImageHeader, TrustedKey, Uuid, Version, FLAG_ROM_FIXED, HEADER_SIZE};
use core::fmt;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::string::{String, ToString};
use std::vec::Vec;

/// What to put around a payload. `Default` gives a 32-byte header, version 0.0.0+0, no bank
/// binding, no counter and no ids.
#[derive(Debug, Clone, Default)]
pub struct ImageBuilder {
    /// Header size (payload offset); ≥ 32. Choose it so the vector table lands on the alignment
    /// the core needs (1 KiB on the demo board).
    pub header_size: u16,
    /// Image version.
    pub version: Version,
    /// Bank binding: sets `ROM_FIXED` with this `load_addr` (the bank's CPU address).
    pub rom_fixed: Option<u32>,
    /// Security counter TLV (protected).
    pub security_counter: Option<u32>,
    /// Vendor UUID TLV (protected).
    pub vendor_id: Option<Uuid>,
    /// Class UUID TLV (protected).
    pub class_id: Option<Uuid>,
}

/// Why an image could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// Header size below 32 bytes.
    HeaderTooSmall(u16),
    /// The payload is larger than the 32-bit size field allows.
    PayloadTooLarge(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::HeaderTooSmall(s) => write!(f, "header size {s} is below 32 bytes"),
            EncodeError::PayloadTooLarge(n) => write!(f, "payload of {n} bytes is too large"),
        }
    }
}

impl std::error::Error for EncodeError {}

fn push_tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

fn tlv_area(magic: u16, entries: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() + 4);
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&((entries.len() + 4) as u16).to_le_bytes());
    out.extend_from_slice(entries);
    out
}

impl ImageBuilder {
    /// A builder with the given header size and version.
    pub fn new(header_size: u16, version: Version) -> ImageBuilder {
        ImageBuilder {
            header_size,
            version,
            ..ImageBuilder::default()
        }
    }

    /// Header ‖ payload ‖ protected TLVs: the bytes the digest covers.
    pub fn hashed_part(&self, payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
        if (self.header_size as usize) < HEADER_SIZE {
            return Err(EncodeError::HeaderTooSmall(self.header_size));
        }
        let img_size = u32::try_from(payload.len())
            .map_err(|_| EncodeError::PayloadTooLarge(payload.len()))?;
        let mut prot = Vec::new();
        if let Some(c) = self.security_counter {
            push_tlv(&mut prot, TLV_SEC_CNT, &c.to_le_bytes());
        }
        if let Some(v) = self.vendor_id {
            push_tlv(&mut prot, TLV_VENDOR_ID, &v.0);
        }
        if let Some(c) = self.class_id {
            push_tlv(&mut prot, TLV_CLASS_ID, &c.0);
        }
        let prot = if prot.is_empty() {
            prot
        } else {
            tlv_area(TLV_PROT_INFO_MAGIC, &prot)
        };
        let header = ImageHeader {
            load_addr: self.rom_fixed.unwrap_or(0),
            hdr_size: self.header_size,
            protect_tlv_size: prot.len() as u16,
            img_size,
            flags: if self.rom_fixed.is_some() {
                FLAG_ROM_FIXED
            } else {
                0
            },
            version: self.version,
        };
        let mut out = Vec::with_capacity(self.header_size as usize + payload.len() + 256);
        out.extend_from_slice(&header.to_bytes());
        // Pad like `imgtool --pad-header` (erased value 0xff), so both tools emit identical bytes.
        out.resize(self.header_size as usize, crate::flash::ERASED);
        out.extend_from_slice(payload);
        out.extend_from_slice(&prot);
        Ok(out)
    }

    /// The complete signed image: hashed part, then SHA-256, KEYHASH and Ed25519 TLVs.
    pub fn sign(&self, payload: &[u8], key: &SigningKey) -> Result<Vec<u8>, EncodeError> {
        let mut image = self.hashed_part(payload)?;
        let digest: [u8; 32] = Sha256::digest(&image).into();
        let trusted = TrustedKey(key.verifying_key().to_bytes());
        let signature = key.sign(&digest);
        let mut tlvs = Vec::new();
        push_tlv(&mut tlvs, TLV_SHA256, &digest);
        push_tlv(&mut tlvs, TLV_KEYHASH, &trusted.keyhash());
        push_tlv(&mut tlvs, TLV_ED25519, &signature.to_bytes());
        image.extend_from_slice(&tlv_area(TLV_INFO_MAGIC, &tlvs));
        Ok(image)
    }

    /// An image with the SHA-256 TLV but no signature (for tests of the refusal).
    pub fn unsigned(&self, payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let mut image = self.hashed_part(payload)?;
        let digest: [u8; 32] = Sha256::digest(&image).into();
        let mut tlvs = Vec::new();
        push_tlv(&mut tlvs, TLV_SHA256, &digest);
        image.extend_from_slice(&tlv_area(TLV_INFO_MAGIC, &tlvs));
        Ok(image)
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not a PEM we know (PKCS#8 `PRIVATE KEY` or SPKI `PUBLIC KEY` with an Ed25519 key).
    NotEd25519Pem(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotEd25519Pem(why) => write!(
                f,
                "not an Ed25519 key in PKCS#8 PEM ({why}); make one with `twinbank keygen` or \
                 `openssl genpkey -algorithm ed25519`"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// Reads an Ed25519 private key from PKCS#8 PEM (`openssl genpkey`, `imgtool keygen`, ours).
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::NotEd25519Pem(e.to_string()))
}

/// Reads an Ed25519 public key from SPKI PEM, or derives it from a private key PEM.
pub fn trusted_key_from_pem(pem: &str) -> Result<TrustedKey, KeyError> {
    if let Ok(vk) = VerifyingKey::from_public_key_pem(pem) {
        return Ok(TrustedKey(vk.to_bytes()));
    }
    signing_key_from_pem(pem).map(|sk| TrustedKey(sk.verifying_key().to_bytes()))
}

/// Encodes a private key as PKCS#8 v1 PEM (no embedded public key: OpenSSL 3.0 refuses the v2
/// form), the same form `openssl genpkey -algorithm ed25519` and `imgtool keygen` write.
pub fn signing_key_to_pem(key: &SigningKey) -> String {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, KeypairBytes};
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map(|z| (*z).clone())
    .unwrap_or_default()
}

/// Encodes a public key as SPKI PEM.
pub fn trusted_key_to_pem(key: &TrustedKey) -> String {
    VerifyingKey::from_bytes(&key.0)
        .ok()
        .and_then(|vk| vk.to_public_key_pem(Default::default()).ok())
        .unwrap_or_default()
}

/// A fresh random signing key.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}
