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
#[non_exhaustive]
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

/// The algorithm of a key that is not an Ed25519 key, as far as it can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// RSA (PKCS#1 or PKCS#8/SPKI `rsaEncryption`, RSASSA-PSS).
    Rsa,
    /// ECDSA on NIST P-256 (prime256v1).
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// ECDSA on NIST P-521.
    P521,
    /// ECDSA on another curve (or one not named in the file).
    OtherEc,
    /// Ed448.
    Ed448,
    /// X25519 (a key-agreement key, not a signing key).
    X25519,
    /// X448.
    X448,
    /// An algorithm identified by this object identifier.
    Other(String),
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Rsa => f.write_str("an RSA key"),
            KeyAlgorithm::P256 => f.write_str("an ECDSA P-256 key"),
            KeyAlgorithm::P384 => f.write_str("an ECDSA P-384 key"),
            KeyAlgorithm::P521 => f.write_str("an ECDSA P-521 key"),
            KeyAlgorithm::OtherEc => f.write_str("an elliptic-curve (ECDSA) key"),
            KeyAlgorithm::Ed448 => f.write_str("an Ed448 key"),
            KeyAlgorithm::X25519 => f.write_str("an X25519 key"),
            KeyAlgorithm::X448 => f.write_str("an X448 key"),
            KeyAlgorithm::Other(oid) => write!(f, "a key of algorithm {oid}"),
        }
    }
}

/// Why a key could not be used. The messages name what the file is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The file is empty.
    Empty,
    /// A binary file (a DER key, or not a key at all).
    Binary,
    /// Text without a PEM block.
    NotPem,
    /// PEM, but no key in it (e.g. a certificate).
    NotAKey(String),
    /// An encrypted private key.
    Encrypted,
    /// An OpenSSH key (`ssh-keygen` format).
    OpenSsh,
    /// A key of another algorithm.
    WrongAlgorithm(KeyAlgorithm),
    /// An Ed25519 public key where the private key is needed (signing).
    PublicKeyGiven,
    /// The key's encoding is broken.
    Malformed(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAKE: &str =
            "make one with `twinbank keygen` (or `openssl genpkey -algorithm ed25519`)";
        match self {
            KeyError::Empty => write!(f, "the key file is empty; {MAKE}"),
            KeyError::Binary => f.write_str(
                "not a PEM key (a binary file; DER keys are not accepted: convert with \
                 `openssl pkey -in KEY.der -inform DER -out KEY.pem`)",
            ),
            KeyError::NotPem => write!(
                f,
                "not an Ed25519 key: no `-----BEGIN … KEY-----` block in this text; {MAKE}"
            ),
            KeyError::NotAKey(label) => {
                write!(f, "this PEM holds {label:?}, not a key; {MAKE}")
            }
            KeyError::Encrypted => f.write_str(
                "the private key is encrypted; decrypt it with `openssl pkey -in KEY -out PLAIN.pem`",
            ),
            KeyError::OpenSsh => write!(
                f,
                "this is an OpenSSH key; twinbank reads PKCS#8 PEM ({MAKE}, or convert with \
                 `ssh-keygen -p -m PKCS8 -f KEY`)"
            ),
            KeyError::WrongAlgorithm(a) => {
                write!(f, "this is {a}; twinbank signs with Ed25519 ({MAKE})")
            }
            KeyError::PublicKeyGiven => f.write_str(
                "this is a public key; signing needs the private key (the one `twinbank keygen` wrote)",
            ),
            KeyError::Malformed(why) => write!(f, "not a readable Ed25519 key ({why}); {MAKE}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// An Ed25519 key read from PEM: the private key, or only the public one.
#[derive(Debug, Clone)]
pub enum Ed25519Key {
    /// A private key (PKCS#8 `PRIVATE KEY`).
    Private(SigningKey),
    /// A public key (SPKI `PUBLIC KEY`).
    Public(TrustedKey),
}

impl Ed25519Key {
    /// The public key.
    pub fn trusted(&self) -> TrustedKey {
        match self {
            Ed25519Key::Private(k) => TrustedKey(k.verifying_key().to_bytes()),
            Ed25519Key::Public(k) => *k,
        }
    }
}

/// DER object identifiers of the algorithms [`KeyAlgorithm`] names.
mod oid {
    pub const ED25519: &str = "1.3.101.112";
    pub const RSA: &str = "1.2.840.113549.1.1.1";
    pub const RSA_PSS: &str = "1.2.840.113549.1.1.10";
    pub const EC: &str = "1.2.840.10045.2.1";
    pub const P256: &str = "1.2.840.10045.3.1.7";
    pub const P384: &str = "1.3.132.0.34";
    pub const P521: &str = "1.3.132.0.35";
    pub const ED448: &str = "1.3.101.113";
    pub const X25519: &str = "1.3.101.110";
    pub const X448: &str = "1.3.101.111";
    /// The DER encoding of the P-256 curve OID (inside SEC1 `EC PRIVATE KEY` files).
    pub const P256_DER: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
}

fn algorithm(alg: &pkcs8::AlgorithmIdentifierRef<'_>) -> Result<(), KeyAlgorithm> {
    let id = alg.oid.to_string();
    let curve = alg
        .parameters_oid()
        .map(|o| o.to_string())
        .unwrap_or_default();
    Err(match id.as_str() {
        oid::ED25519 => return Ok(()),
        oid::RSA | oid::RSA_PSS => KeyAlgorithm::Rsa,
        oid::EC => match curve.as_str() {
            oid::P256 => KeyAlgorithm::P256,
            oid::P384 => KeyAlgorithm::P384,
            oid::P521 => KeyAlgorithm::P521,
            _ => KeyAlgorithm::OtherEc,
        },
        oid::ED448 => KeyAlgorithm::Ed448,
        oid::X25519 => KeyAlgorithm::X25519,
        oid::X448 => KeyAlgorithm::X448,
        _ => KeyAlgorithm::Other(id),
    })
}

/// Reads an Ed25519 key from PEM text: a PKCS#8 private key (`openssl genpkey`, `imgtool keygen`,
/// ours) or an SPKI public key. Anything else is named: an RSA, ECDSA or Ed448 key, an encrypted,
/// OpenSSH or DER key, an empty file.
pub fn read_key(pem: &str) -> Result<Ed25519Key, KeyError> {
    use pkcs8::der::{pem as der_pem, Decode};
    use pkcs8::{PrivateKeyInfo, SubjectPublicKeyInfoRef};
    if pem.trim().is_empty() {
        return Err(KeyError::Empty);
    }
    // The first PEM block that holds a key (`openssl ecparam -genkey` writes parameters first).
    let blocks: Vec<&str> = pem.split("-----BEGIN ").skip(1).collect();
    if blocks.is_empty() {
        return Err(KeyError::NotPem);
    }
    let block = blocks
        .iter()
        .find(|b| b.contains("KEY-----"))
        .ok_or_else(|| KeyError::NotAKey(label_of(blocks[0])))?;
    let label = label_of(block);
    let text = std::format!("-----BEGIN {block}");
    let der = || {
        der_pem::decode_vec(text.as_bytes())
            .map(|(_, der)| der)
            .map_err(|e| KeyError::Malformed(e.to_string()))
    };
    match label.as_str() {
        "PRIVATE KEY" => {
            let der = der()?;
            let info =
                PrivateKeyInfo::from_der(&der).map_err(|e| KeyError::Malformed(e.to_string()))?;
            algorithm(&info.algorithm).map_err(KeyError::WrongAlgorithm)?;
            SigningKey::from_pkcs8_der(&der)
                .map(Ed25519Key::Private)
                .map_err(|e| KeyError::Malformed(e.to_string()))
        }
        "PUBLIC KEY" => {
            let der = der()?;
            let info = SubjectPublicKeyInfoRef::from_der(&der)
                .map_err(|e| KeyError::Malformed(e.to_string()))?;
            algorithm(&info.algorithm).map_err(KeyError::WrongAlgorithm)?;
            VerifyingKey::from_public_key_der(&der)
                .map(|vk| Ed25519Key::Public(TrustedKey(vk.to_bytes())))
                .map_err(|e| KeyError::Malformed(e.to_string()))
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
        "RSA PRIVATE KEY" | "RSA PUBLIC KEY" => Err(KeyError::WrongAlgorithm(KeyAlgorithm::Rsa)),
        "EC PRIVATE KEY" => {
            let der = der()?;
            let p256 = der.windows(oid::P256_DER.len()).any(|w| w == oid::P256_DER);
            Err(KeyError::WrongAlgorithm(if p256 {
                KeyAlgorithm::P256
            } else {
                KeyAlgorithm::OtherEc
            }))
        }
        "OPENSSH PRIVATE KEY" => Err(KeyError::OpenSsh),
        other => Err(KeyError::NotAKey(other.into())),
    }
}

fn label_of(block: &str) -> String {
    block
        .split("-----")
        .next()
        .unwrap_or_default()
        .trim()
        .into()
}

/// Reads an Ed25519 private key from PKCS#8 PEM (`openssl genpkey`, `imgtool keygen`, ours).
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
    match read_key(pem)? {
        Ed25519Key::Private(k) => Ok(k),
        Ed25519Key::Public(_) => Err(KeyError::PublicKeyGiven),
    }
}

/// Reads an Ed25519 public key from SPKI PEM, or derives it from a private key PEM.
pub fn trusted_key_from_pem(pem: &str) -> Result<TrustedKey, KeyError> {
    read_key(pem).map(|k| k.trusted())
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
