//! MCUboot TLV areas: a 4-byte info header (`magic u16, total u16` where total includes the info
//! header), then entries `type u16, len u16, value[len]`, all little endian.
//!
//! The walker reads entry headers one at a time from flash, so no buffer is sized by the image;
//! every length is checked against the area before it is used.

use super::ImageError;
use crate::flash::read_exact;
use embedded_storage::nor_flash::ReadNorFlash;
#[cfg(feature = "async")]
use {
    crate::flash::read_exact_async,
    embedded_storage_async::nor_flash::ReadNorFlash as AsyncReadNorFlash,
};

/// Info magic of the unprotected TLV area (`IMAGE_TLV_INFO_MAGIC`).
pub const TLV_INFO_MAGIC: u16 = 0x6907;
/// Info magic of the protected TLV area (`IMAGE_TLV_PROT_INFO_MAGIC`).
pub const TLV_PROT_INFO_MAGIC: u16 = 0x6908;
/// Size of an info header and of an entry header.
pub const TLV_HEADER_SIZE: u32 = 4;

/// SHA-256 of the public key (DER SubjectPublicKeyInfo) that made the next signature.
pub const TLV_KEYHASH: u16 = 0x01;
/// The whole public key (DER SubjectPublicKeyInfo), instead of its hash.
pub const TLV_PUBKEY: u16 = 0x02;
/// SHA-256 of header ‖ payload ‖ protected TLVs.
pub const TLV_SHA256: u16 = 0x10;
/// Ed25519 signature of the SHA-256 digest.
pub const TLV_ED25519: u16 = 0x24;
/// Marks an `imgtool --pure` image (signature over the whole image, not the digest).
pub const TLV_SIG_PURE: u16 = 0x25;
/// SHA-384 of the image (not produced or checked by twinbank).
pub const TLV_SHA384: u16 = 0x11;
/// SHA-512 of the image (not produced or checked by twinbank).
pub const TLV_SHA512: u16 = 0x12;
/// RSA-2048 PSS signature (not supported by twinbank).
pub const TLV_RSA2048_PSS: u16 = 0x20;
/// ECDSA signature (not supported by twinbank).
pub const TLV_ECDSA_SIG: u16 = 0x22;
/// RSA-3072 PSS signature (not supported by twinbank).
pub const TLV_RSA3072_PSS: u16 = 0x23;
/// Dependency on another image (multi-image MCUboot; ignored by twinbank).
pub const TLV_DEPENDENCY: u16 = 0x40;
/// Measured-boot record (ignored by twinbank).
pub const TLV_BOOT_RECORD: u16 = 0x60;
/// Security counter (u32 LE), protected.
pub const TLV_SEC_CNT: u16 = 0x50;
/// Vendor UUID (16 bytes), protected. MCUboot's `IMAGE_TLV_UUID_VID` is 0x74 (what `imgtool
/// --vid` writes, verified with imgtool 2.5.0); the design brief's 0x80 was a misremembering.
pub const TLV_VENDOR_ID: u16 = 0x74;
/// Class (hardware) UUID (16 bytes), protected (`IMAGE_TLV_UUID_CID`, 0x75).
pub const TLV_CLASS_ID: u16 = 0x75;

/// The MCUboot name of a TLV type (`IMAGE_TLV_<name>`), for tools that print TLVs.
pub fn tlv_name(kind: u16) -> Option<&'static str> {
    Some(match kind {
        TLV_KEYHASH => "KEYHASH",
        TLV_PUBKEY => "PUBKEY",
        TLV_SHA256 => "SHA256",
        TLV_SHA384 => "SHA384",
        TLV_SHA512 => "SHA512",
        TLV_RSA2048_PSS => "RSA2048_PSS",
        TLV_ECDSA_SIG => "ECDSA_SIG",
        TLV_RSA3072_PSS => "RSA3072_PSS",
        TLV_ED25519 => "ED25519",
        TLV_SIG_PURE => "SIG_PURE",
        TLV_DEPENDENCY => "DEPENDENCY",
        TLV_SEC_CNT => "SEC_CNT",
        TLV_BOOT_RECORD => "BOOT_RECORD",
        TLV_VENDOR_ID => "UUID_VID",
        TLV_CLASS_ID => "UUID_CID",
        _ => return None,
    })
}

/// One entry: its type and where its value lies in flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvEntry {
    /// TLV type.
    pub kind: u16,
    /// Flash offset of the value.
    pub value_offset: u32,
    /// Value length in bytes.
    pub len: u16,
}

#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", keep_self),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        read_value(sync, async = "read_value_async"),
        open(sync, async = "open_async"),
        next(sync, async = "next_async")
    )
)]
impl TlvEntry {
    /// Reads the value into `out`, which must have exactly `len` bytes; a different length means
    /// the TLV is malformed for its type.
    pub async fn read_value<F: ReadNorFlash>(
        &self,
        flash: &mut F,
        out: &mut [u8],
    ) -> Result<(), ImageError> {
        if out.len() != self.len as usize {
            return Err(ImageError::MalformedTlv(self.kind));
        }
        read_exact(flash, self.value_offset, out)
            .await
            .map_err(ImageError::Flash)
    }
}

/// A walker over one TLV area.
#[derive(Debug, Clone, Copy)]
pub struct TlvIter {
    pos: u32,
    end: u32,
}

#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", keep_self),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        read_value(sync, async = "read_value_async"),
        open(sync, async = "open_async"),
        next(sync, async = "next_async")
    )
)]
impl TlvIter {
    /// Opens the area at flash offset `offset`, checking its info header: `magic` must match and
    /// the area must end at or before `limit`. Returns the walker and the area's total size.
    pub async fn open<F: ReadNorFlash>(
        flash: &mut F,
        offset: u32,
        limit: u32,
        magic: u16,
    ) -> Result<(TlvIter, u32), ImageError> {
        if offset
            .checked_add(TLV_HEADER_SIZE)
            .is_none_or(|e| e > limit)
        {
            return Err(ImageError::Truncated);
        }
        let mut info = [0u8; 4];
        read_exact(flash, offset, &mut info)
            .await
            .map_err(ImageError::Flash)?;
        let found = u16::from_le_bytes([info[0], info[1]]);
        let total = u16::from_le_bytes([info[2], info[3]]) as u32;
        if found != magic {
            return Err(ImageError::Truncated);
        }
        if total < TLV_HEADER_SIZE || offset.checked_add(total).is_none_or(|e| e > limit) {
            return Err(ImageError::BadTlvArea);
        }
        Ok((
            TlvIter {
                pos: offset + TLV_HEADER_SIZE,
                end: offset + total,
            },
            total,
        ))
    }

    /// The next entry, `None` at the end of the area. An entry that does not fit is an error.
    pub async fn next<F: ReadNorFlash>(
        &mut self,
        flash: &mut F,
    ) -> Result<Option<TlvEntry>, ImageError> {
        if self.pos == self.end {
            return Ok(None);
        }
        if self.end - self.pos < TLV_HEADER_SIZE {
            return Err(ImageError::BadTlvArea);
        }
        let mut h = [0u8; 4];
        read_exact(flash, self.pos, &mut h)
            .await
            .map_err(ImageError::Flash)?;
        if h == [crate::flash::ERASED; 4] {
            // Erased where an entry should be: the image was cut short.
            return Err(ImageError::Truncated);
        }
        let kind = u16::from_le_bytes([h[0], h[1]]);
        let len = u16::from_le_bytes([h[2], h[3]]);
        let value_offset = self.pos + TLV_HEADER_SIZE;
        if (self.end - value_offset) < len as u32 {
            return Err(ImageError::BadTlvArea);
        }
        // Always advances by ≥ 4 bytes, so the walk ends within area/4 steps.
        self.pos = value_offset + len as u32;
        Ok(Some(TlvEntry {
            kind,
            value_offset,
            len,
        }))
    }
}
