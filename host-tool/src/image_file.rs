//! Reading signed images (BIN or Intel HEX, by content) and their structural checks, all through
//! the device crate's parser.

use crate::{hex, CliError};
use std::path::Path;
use twinbank::flash::SliceFlash;
use twinbank::image::tlv::{TlvIter, TLV_HEADER_SIZE, TLV_INFO_MAGIC};
use twinbank::image::{read_header, ImageHeader, IMAGE_MAGIC};

/// A signed image read from a file.
pub struct ImageFile {
    /// The image bytes, from the header on.
    pub bytes: Vec<u8>,
    /// "BIN" or "Intel HEX".
    pub format: &'static str,
    /// For HEX: the address the image is placed at.
    pub address: Option<u32>,
}

/// Reads a signed image file.
pub fn read(path: &Path) -> Result<ImageFile, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::input(format!("{}: cannot read: {e}", path.display())))?;
    let at = |m: String| CliError::input(format!("{}: {m}", path.display()));
    if bytes.len() > u32::MAX as usize {
        return Err(at("file larger than 4 GiB".into()));
    }
    if bytes.is_empty() {
        return Err(at("unknown file type: the file is empty".into()));
    }
    if hex::looks_like_hex(&bytes) {
        let segs = hex::parse(&bytes).map_err(|e| at(format!("Intel HEX: {e}")))?;
        let first = segs
            .first()
            .ok_or_else(|| at("Intel HEX: no data".into()))?;
        let end = segs
            .iter()
            .map(|s| s.address as u64 + s.data.len() as u64)
            .max()
            .unwrap_or(0);
        if end - first.address as u64 > 256 << 20 {
            return Err(at("Intel HEX: data spans more than 256 MiB".into()));
        }
        let mut image = vec![0xFF; (end - first.address as u64) as usize];
        for s in &segs {
            let o = (s.address - first.address) as usize;
            image[o..o + s.data.len()].copy_from_slice(&s.data);
        }
        return Ok(ImageFile {
            bytes: image,
            format: "Intel HEX",
            address: Some(first.address),
        });
    }
    if bytes.starts_with(b"\x7fELF") {
        return Err(at(
            "unknown file type: this is an ELF file, not a signed image (sign it with `twinbank sign`)"
                .into(),
        ));
    }
    if bytes.len() < 4
        || u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != IMAGE_MAGIC
    {
        let magic = bytes
            .get(..4)
            .map(|m| format!("{:#010x}", u32::from_le_bytes([m[0], m[1], m[2], m[3]])))
            .unwrap_or_else(|| "missing".into());
        return Err(at(format!(
            "unknown file type: not an MCUboot image (header magic {magic}, expected 0x96f3b83d) \
             nor Intel HEX"
        )));
    }
    Ok(ImageFile {
        bytes,
        format: "BIN",
        address: None,
    })
}

/// The layout of an image as far as the file goes: header, and the total length its TLV areas
/// claim. Refuses truncated files (the device would read erased flash there).
pub struct Structure {
    /// Decoded header.
    pub header: ImageHeader,
    /// Header + payload + both TLV areas.
    pub total_len: u32,
}

/// Checks that the header parses and that the file holds the whole image.
pub fn structure(bytes: &[u8]) -> Result<Structure, String> {
    let mut f = SliceFlash(bytes);
    let header = read_header(&mut f, 0).map_err(|e| e.to_string())?;
    let len = bytes.len() as u64;
    let hashed = header.hashed_len();
    if hashed + TLV_HEADER_SIZE as u64 > len {
        return Err(format!(
            "truncated: the header announces {hashed} bytes before the TLV area, the file has {len}"
        ));
    }
    let (_, total) = TlvIter::open(&mut f, hashed as u32, u32::MAX, TLV_INFO_MAGIC).map_err(|_| {
        format!("TLV area missing or malformed at offset {hashed:#x} (truncated or corrupted image)")
    })?;
    if hashed + total as u64 > len {
        return Err(format!(
            "truncated: the image needs {} bytes, the file has {len}",
            hashed + total as u64
        ));
    }
    Ok(Structure {
        header,
        total_len: (hashed + total as u64) as u32,
    })
}
