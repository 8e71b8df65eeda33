//! Image verification, streaming from flash.
//!
//! Order of checks (each failure has its own [`ImageError`]):
//! 1. header: magic, `hdr_size`, flags we cannot boot (encrypted, non-bootable);
//! 2. sizes: header + payload + protected TLVs + unprotected TLVs fit the bank;
//! 3. policy from the protected TLVs: bank binding (`ROM_FIXED` load address), vendor/class ids,
//!    security counter ≥ the device minimum — cheap, and the same checks the updater runs before
//!    it erases anything ([`check_manifest`]);
//! 4. SHA-256 over header ‖ payload ‖ protected TLVs equals TLV 0x10;
//! 5. an Ed25519 signature (TLV 0x24, strict RFC 8032 rules: [`super::ed25519`]) of that digest by a trusted key; the key is
//!    the one named by the preceding KEYHASH (0x01) or PUBKEY (0x02) TLV, or any trusted key when
//!    none is named.
//!
//! Step 3 reads values the signature has not vouched for yet; that is fine because it can only
//! refuse. Acceptance needs every step. No trusted key configured: refused (fail closed).
//!
//! Stack: a 256-byte read buffer plus the signature check ([`super::ed25519`]), which dominates the
//! shim's measured 9 328 B peak (BENCHMARKS.md, docs/design.md).

use super::ed25519;
use super::header::{ImageHeader, FLAGS_ENCRYPTED, FLAG_NON_BOOTABLE, HEADER_SIZE};
use super::sha256::{Sha256Engine, SoftSha256};
use super::tlv::*;
use super::{DeviceIds, ImageError, TrustedKey, Uuid};
use crate::flash::read_exact;
use embedded_storage::nor_flash::ReadNorFlash;
#[cfg(feature = "async")]
use {
    crate::flash::read_exact_async,
    embedded_storage_async::nor_flash::ReadNorFlash as AsyncReadNorFlash,
};

/// Bytes read from flash per step while hashing. A larger buffer means fewer driver calls; 256
/// keeps the verifier's own stack small next to the signature check.
const HASH_CHUNK: usize = 256;

/// Where an image is and what the device demands of it.
#[derive(Debug, Clone, Copy)]
pub struct VerifyParams<'a> {
    /// Flash offset of the image header (the bank start).
    pub offset: u32,
    /// Bytes available for the image (the bank size).
    pub capacity: u32,
    /// CPU address of the bank; a `ROM_FIXED` image must carry it as `load_addr`.
    pub bank_address: u32,
    /// Trusted signing keys; empty means nothing verifies.
    pub keys: &'a [TrustedKey],
    /// The device's identity; `None` fields are not checked.
    pub ids: DeviceIds,
    /// Lowest security counter the device accepts.
    pub min_security_counter: u32,
}

/// What the protected TLV area says (only meaningful once the signature checked out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProtectedInfo {
    /// Security counter; 0 when the image has none.
    pub security_counter: u32,
    /// Vendor UUID, if present.
    pub vendor_id: Option<Uuid>,
    /// Class UUID, if present.
    pub class_id: Option<Uuid>,
}

/// A verified image: every check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedImage {
    /// Its header.
    pub header: ImageHeader,
    /// SHA-256 of header ‖ payload ‖ protected TLVs (the identity of the image).
    pub digest: [u8; 32],
    /// Protected values.
    pub protected: ProtectedInfo,
    /// Total length including both TLV areas.
    pub total_len: u32,
}

/// Reads the fixed header at `offset`.
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", self = "read_header_async"),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        read_value(sync, async = "read_value_async"),
        open(sync, async = "open_async"),
        next(sync, async = "next_async"),
        read_header(sync, async = "read_header_async"),
        read_protected(sync, async = "read_protected_async"),
        hash_range_with(sync, async = "hash_range_with_async"),
        check_unprotected_with(sync, async = "check_unprotected_with_async"),
        entry_with(sync, async = "entry_with_async")
    )
)]
pub async fn read_header<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
) -> Result<ImageHeader, ImageError> {
    let mut b = [0u8; HEADER_SIZE];
    read_exact(flash, offset, &mut b)
        .await
        .map_err(ImageError::Flash)?;
    ImageHeader::parse(&b).map_err(ImageError::from)
}

/// Reads the protected TLV area that starts at flash offset `offset` (`size` from the header;
/// 0 means none). Unknown protected TLVs are ignored (they are covered by the hash anyway).
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", self = "read_protected_async"),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        read_value(sync, async = "read_value_async"),
        open(sync, async = "open_async"),
        next(sync, async = "next_async"),
        read_header(sync, async = "read_header_async"),
        read_protected(sync, async = "read_protected_async"),
        hash_range_with(sync, async = "hash_range_with_async"),
        check_unprotected_with(sync, async = "check_unprotected_with_async"),
        entry_with(sync, async = "entry_with_async")
    )
)]
pub async fn read_protected<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    size: u16,
    limit: u32,
) -> Result<ProtectedInfo, ImageError> {
    let mut info = ProtectedInfo::default();
    if size == 0 {
        return Ok(info);
    }
    let (mut it, total) = TlvIter::open(flash, offset, limit, TLV_PROT_INFO_MAGIC).await?;
    if total != size as u32 {
        return Err(ImageError::BadTlvArea);
    }
    while let Some(e) = TlvIter::next(&mut it, flash).await? {
        match e.kind {
            TLV_SEC_CNT => {
                let mut v = [0u8; 4];
                TlvEntry::read_value(&e, flash, &mut v).await?;
                info.security_counter = u32::from_le_bytes(v);
            }
            TLV_VENDOR_ID | TLV_CLASS_ID => {
                let mut v = [0u8; 16];
                TlvEntry::read_value(&e, flash, &mut v).await?;
                if e.kind == TLV_VENDOR_ID {
                    info.vendor_id = Some(Uuid(v));
                } else {
                    info.class_id = Some(Uuid(v));
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The policy checks that need only the header and the protected TLVs: flags, size, bank
/// binding, ids, security counter. The updater runs them before erasing anything.
pub fn check_manifest(
    header: &ImageHeader,
    protected: &ProtectedInfo,
    params: &VerifyParams<'_>,
) -> Result<(), ImageError> {
    check_header(header, params)?;
    check_id(params.ids.vendor, protected.vendor_id, true)?;
    check_id(params.ids.class, protected.class_id, false)?;
    if protected.security_counter < params.min_security_counter {
        return Err(ImageError::SecurityCounterTooLow {
            image: protected.security_counter,
            minimum: params.min_security_counter,
        });
    }
    Ok(())
}

/// The policy checks that need only the 32-byte header: flags, size, bank binding (the first
/// part of [`check_manifest`]). A streamed upload, whose TLVs arrive last, runs them on its first
/// chunk.
pub fn check_header(header: &ImageHeader, params: &VerifyParams<'_>) -> Result<(), ImageError> {
    if header.flags & FLAGS_ENCRYPTED != 0 {
        return Err(ImageError::Encrypted);
    }
    if header.flags & FLAG_NON_BOOTABLE != 0 {
        return Err(ImageError::NotBootable);
    }
    // The unprotected area needs at least its info header.
    let needed = header.hashed_len() + TLV_HEADER_SIZE as u64;
    if needed > params.capacity as u64 {
        return Err(ImageError::DoesNotFit {
            needed: needed.min(u32::MAX as u64) as u32,
            capacity: params.capacity,
        });
    }
    if !header.rom_fixed() {
        return Err(ImageError::NotBankBound);
    }
    if header.load_addr != params.bank_address {
        return Err(ImageError::WrongBank {
            linked_for: header.load_addr,
            bank_address: params.bank_address,
        });
    }
    Ok(())
}

fn check_id(device: Option<Uuid>, image: Option<Uuid>, vendor: bool) -> Result<(), ImageError> {
    match (device, image) {
        (None, _) => Ok(()),
        (Some(_), None) if vendor => Err(ImageError::MissingVendorId),
        (Some(_), None) => Err(ImageError::MissingClassId),
        (Some(d), Some(i)) if d == i => Ok(()),
        (Some(_), Some(_)) if vendor => Err(ImageError::VendorIdMismatch),
        (Some(_), Some(_)) => Err(ImageError::ClassIdMismatch),
    }
}

/// Verifies the image at `params.offset` completely. See the module doc for the order of checks.
/// Hashes with the software SHA-256 ([`verify_image_with`] takes the board's engine).
pub fn verify_image<F: ReadNorFlash>(
    flash: &mut F,
    params: &VerifyParams<'_>,
) -> Result<VerifiedImage, ImageError> {
    verify_image_with(flash, params, &mut SoftSha256::default())
}

/// [`verify_image`] hashing through `engine`.
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", self = "verify_image_with_async"),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        read_value(sync, async = "read_value_async"),
        open(sync, async = "open_async"),
        next(sync, async = "next_async"),
        read_header(sync, async = "read_header_async"),
        read_protected(sync, async = "read_protected_async"),
        hash_range_with(sync, async = "hash_range_with_async"),
        check_unprotected_with(sync, async = "check_unprotected_with_async"),
        entry_with(sync, async = "entry_with_async")
    )
)]
pub async fn verify_image_with<F: ReadNorFlash, H: Sha256Engine>(
    flash: &mut F,
    params: &VerifyParams<'_>,
    engine: &mut H,
) -> Result<VerifiedImage, ImageError> {
    if params.keys.is_empty() {
        // Fail closed before touching anything else.
        return Err(ImageError::NoTrustedKeys);
    }
    let header = read_header(flash, params.offset).await?;
    let limit = params
        .offset
        .checked_add(params.capacity)
        .ok_or(ImageError::DoesNotFit {
            needed: u32::MAX,
            capacity: params.capacity,
        })?;
    let hashed_len = header.hashed_len();
    if hashed_len + TLV_HEADER_SIZE as u64 > params.capacity as u64 {
        return Err(ImageError::DoesNotFit {
            needed: (hashed_len + TLV_HEADER_SIZE as u64).min(u32::MAX as u64) as u32,
            capacity: params.capacity,
        });
    }
    // Fits in u32 now: hashed_len < capacity.
    let prot_offset = params.offset + header.tlv_offset() as u32;
    let protected = read_protected(flash, prot_offset, header.protect_tlv_size, limit).await?;
    check_manifest(&header, &protected, params)?;

    let unprot_offset = params.offset + hashed_len as u32;
    let digest = hash_range_with(flash, params.offset, hashed_len as u32, engine).await?;
    let unprot_total =
        check_unprotected_with(flash, unprot_offset, limit, params.keys, &digest, engine).await?;
    Ok(VerifiedImage {
        header,
        digest,
        protected,
        total_len: hashed_len as u32 + unprot_total,
    })
}

/// Checks the unprotected TLV area at `offset` (ending at or before `limit`) against `digest`:
/// its SHA-256 TLV must equal `digest` and it must hold a valid Ed25519 signature of `digest` by
/// a trusted key ([`KeySelector`] chooses the key). Returns the area's size. Used on a bank by
/// [`verify_image`] (with the digest it computed) and, before anything is erased, on an upload's
/// announced TLVs (with the digest they announce).
pub fn check_unprotected<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    limit: u32,
    keys: &[TrustedKey],
    digest: &[u8; 32],
) -> Result<u32, ImageError> {
    check_unprotected_with(
        flash,
        offset,
        limit,
        keys,
        digest,
        &mut SoftSha256::default(),
    )
}

/// [`check_unprotected`] hashing key names through `engine`.
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", self = "check_unprotected_with_async"),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        read_value(sync, async = "read_value_async"),
        open(sync, async = "open_async"),
        next(sync, async = "next_async"),
        read_header(sync, async = "read_header_async"),
        read_protected(sync, async = "read_protected_async"),
        hash_range_with(sync, async = "hash_range_with_async"),
        check_unprotected_with(sync, async = "check_unprotected_with_async"),
        entry_with(sync, async = "entry_with_async")
    )
)]
pub async fn check_unprotected_with<F: ReadNorFlash, H: Sha256Engine>(
    flash: &mut F,
    offset: u32,
    limit: u32,
    keys: &[TrustedKey],
    digest: &[u8; 32],
    engine: &mut H,
) -> Result<u32, ImageError> {
    if keys.is_empty() {
        return Err(ImageError::NoTrustedKeys);
    }
    let (mut tlvs, total) = TlvIter::open(flash, offset, limit, TLV_INFO_MAGIC).await?;
    let mut hash_seen = false;
    let mut outcome = SignatureOutcome::NoSignature;
    let mut selector = KeySelector::new(keys);
    while let Some(e) = TlvIter::next(&mut tlvs, flash).await? {
        match e.kind {
            TLV_SHA256 => {
                let mut v = [0u8; 32];
                TlvEntry::read_value(&e, flash, &mut v).await?;
                if &v != digest {
                    return Err(ImageError::HashMismatch);
                }
                hash_seen = true;
            }
            TLV_SIG_PURE => return Err(ImageError::PureSignature),
            _ => {
                if let Some(check) =
                    KeySelector::entry_with(&mut selector, flash, &e, digest, engine).await?
                {
                    outcome = outcome.best(check.outcome);
                }
            }
        }
    }
    if !hash_seen {
        return Err(ImageError::MissingHash);
    }
    match outcome {
        SignatureOutcome::Valid => Ok(total),
        SignatureOutcome::NoSignature => Err(ImageError::MissingSignature),
        SignatureOutcome::UntrustedKey => Err(ImageError::UntrustedKey),
        SignatureOutcome::Invalid => Err(ImageError::BadSignature),
    }
}

/// SHA-256 of `len` bytes of flash from `offset`, read in 256-byte steps.
pub fn hash_range<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
) -> Result<[u8; 32], ImageError> {
    hash_range_with(flash, offset, len, &mut SoftSha256::default())
}

/// [`hash_range`] through `engine`. The buffer is word-aligned, so a driver can copy whole words.
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", self = "hash_range_with_async"),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        read_value(sync, async = "read_value_async"),
        open(sync, async = "open_async"),
        next(sync, async = "next_async"),
        read_header(sync, async = "read_header_async"),
        read_protected(sync, async = "read_protected_async"),
        hash_range_with(sync, async = "hash_range_with_async"),
        check_unprotected_with(sync, async = "check_unprotected_with_async"),
        entry_with(sync, async = "entry_with_async")
    )
)]
pub async fn hash_range_with<F: ReadNorFlash, H: Sha256Engine>(
    flash: &mut F,
    offset: u32,
    len: u32,
    engine: &mut H,
) -> Result<[u8; 32], ImageError> {
    engine.start();
    let mut buf = AlignedChunk([0u8; HASH_CHUNK]);
    let mut pos = 0u32;
    while pos < len {
        let n = (len - pos).min(HASH_CHUNK as u32) as usize;
        read_exact(flash, offset + pos, &mut buf.0[..n])
            .await
            .map_err(ImageError::Flash)?;
        engine.update(&buf.0[..n]);
        pos += n as u32;
    }
    Ok(engine.finish())
}

/// The hashing buffer, aligned for word (and DMA-friendly) reads.
#[repr(align(4))]
struct AlignedChunk([u8; HASH_CHUNK]);

/// Length of an Ed25519 DER SubjectPublicKeyInfo.
pub const SPKI_LEN: usize = 44;

/// How a signature fared, ordered from worst to best (over several signature TLVs the best
/// counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SignatureOutcome {
    /// No signature TLV at all.
    NoSignature,
    /// Signed by a key that is not trusted (the named key is unknown).
    UntrustedKey,
    /// The named trusted key (or, when none is named, every trusted key) does not verify it.
    Invalid,
    /// A trusted key verifies the signature.
    Valid,
}

impl SignatureOutcome {
    /// The better of two outcomes.
    pub fn best(self, other: SignatureOutcome) -> SignatureOutcome {
        self.max(other)
    }
}

/// Which key a signature TLV was made with, as the TLV before it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName {
    /// No KEYHASH or PUBKEY TLV named the key: every trusted key is tried.
    NotNamed,
    /// The named key is the trusted key at this index.
    Trusted(usize),
    /// The named key is not among the trusted keys (or its hash is not SHA-256).
    Untrusted,
}

/// One checked signature TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The key the image names for this signature.
    pub named: KeyName,
    /// The result.
    pub outcome: SignatureOutcome,
    /// Index of the trusted key that verified the signature, if one did.
    pub verified_by: Option<usize>,
}

/// The key selection of verification, over the entries of the unprotected TLV area in order: a
/// KEYHASH (0x01) or PUBKEY (0x02) entry names the key of the next Ed25519 (0x24) signature,
/// which is then checked with that trusted key only (`verify_strict` of the digest); without a
/// name every trusted key is tried. [`verify_image`] and tools that report each signature use
/// this one implementation.
#[derive(Debug, Clone, Copy)]
pub struct KeySelector<'k> {
    keys: &'k [TrustedKey],
    named: KeyName,
}

impl<'k> KeySelector<'k> {
    /// A selector over the trusted `keys`.
    pub fn new(keys: &'k [TrustedKey]) -> KeySelector<'k> {
        KeySelector {
            keys,
            named: KeyName::NotNamed,
        }
    }

    /// Feeds the next unprotected TLV entry; returns the check of a signature entry, `None` for
    /// other entries. `digest` is the image digest the signatures sign.
    pub fn entry<F: ReadNorFlash>(
        &mut self,
        flash: &mut F,
        e: &TlvEntry,
        digest: &[u8; 32],
    ) -> Result<Option<SignatureCheck>, ImageError> {
        self.entry_with(flash, e, digest, &mut SoftSha256::default())
    }
}

#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", keep_self),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        read_value(sync, async = "read_value_async"),
        open(sync, async = "open_async"),
        next(sync, async = "next_async"),
        read_header(sync, async = "read_header_async"),
        read_protected(sync, async = "read_protected_async"),
        hash_range_with(sync, async = "hash_range_with_async"),
        check_unprotected_with(sync, async = "check_unprotected_with_async"),
        entry_with(sync, async = "entry_with_async")
    )
)]
impl<'k> KeySelector<'k> {
    /// [`KeySelector::entry`] hashing key names through `engine`.
    pub async fn entry_with<F: ReadNorFlash, H: Sha256Engine>(
        &mut self,
        flash: &mut F,
        e: &TlvEntry,
        digest: &[u8; 32],
        engine: &mut H,
    ) -> Result<Option<SignatureCheck>, ImageError> {
        match e.kind {
            TLV_KEYHASH if e.len != 32 => {
                // A hash we do not compute (SHA-384/512): names a key we cannot match.
                self.named = KeyName::Untrusted;
            }
            TLV_KEYHASH => {
                let mut v = [0u8; 32];
                TlvEntry::read_value(e, flash, &mut v).await?;
                self.named = self.name(self.keys.iter().position(|k| k.keyhash_with(engine) == v));
            }
            TLV_PUBKEY => {
                let mut v = [0u8; SPKI_LEN];
                TlvEntry::read_value(e, flash, &mut v).await?;
                self.named = self.name(self.keys.iter().position(|k| k.spki() == v));
            }
            TLV_ED25519 => {
                let mut v = [0u8; 64];
                TlvEntry::read_value(e, flash, &mut v).await?;
                let check = self.check(&v, digest);
                self.named = KeyName::NotNamed;
                return Ok(Some(check));
            }
            _ => {}
        }
        Ok(None)
    }
}

impl<'k> KeySelector<'k> {
    fn name(&self, index: Option<usize>) -> KeyName {
        index.map_or(KeyName::Untrusted, KeyName::Trusted)
    }

    fn check(&self, sig: &[u8; ed25519::SIGNATURE_LEN], digest: &[u8; 32]) -> SignatureCheck {
        // The keys to try: the named one, or every trusted key when none is named. One place
        // calls the verifier (it is inlined where it is called: each call site costs the
        // bootloader flash).
        let (first, candidates) = match self.named {
            KeyName::Untrusted => (0, &[][..]),
            KeyName::Trusted(i) => (i, self.keys.get(i..=i).unwrap_or(&[])),
            KeyName::NotNamed => (0, self.keys),
        };
        let verified = candidates
            .iter()
            .position(|k| ed25519::verify_strict(&k.0, digest, sig));
        let (outcome, verified_by) = match (verified, self.named) {
            (Some(i), _) => (SignatureOutcome::Valid, Some(first + i)),
            (None, KeyName::Untrusted) => (SignatureOutcome::UntrustedKey, None),
            // Every trusted key tried and none verifies (as before the selector existed:
            // reported as an invalid signature when there is a key to check with).
            (None, KeyName::NotNamed) if self.keys.is_empty() => {
                (SignatureOutcome::UntrustedKey, None)
            }
            (None, _) => (SignatureOutcome::Invalid, None),
        };
        SignatureCheck {
            named: self.named,
            outcome,
            verified_by,
        }
    }
}
