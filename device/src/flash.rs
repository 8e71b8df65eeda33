//! Small helpers over `embedded-storage`'s NOR flash traits.
//!
//! Errors from the flash driver are reduced to [`FlashFault`], so the crate's error types stay
//! non-generic, `Copy`, and can cross a wire (serde).

use embedded_storage::nor_flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash};

/// Largest `READ_SIZE` supported: reads are bounced through a buffer of this size when the
/// driver needs aligned reads.
pub const MAX_READ_SIZE: usize = 32;

/// Reads `out.len()` bytes at `offset`, whatever the driver's `READ_SIZE` (≤ [`MAX_READ_SIZE`]).
pub fn read_exact<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    out: &mut [u8],
) -> Result<(), FlashFault> {
    let rs = F::READ_SIZE;
    if rs <= 1 {
        return flash.read(offset, out).map_err(fault);
    }
    if rs > MAX_READ_SIZE || !rs.is_power_of_two() {
        return Err(FlashFault::NotAligned);
    }
    let mut bounce = [0u8; MAX_READ_SIZE];
    let mut done = 0usize;
    while done < out.len() {
        let pos = offset as usize + done;
        let aligned = pos - pos % rs;
        flash
            .read(aligned as u32, &mut bounce[..rs])
            .map_err(fault)?;
        let skip = pos - aligned;
        let n = (rs - skip).min(out.len() - done);
        out[done..done + n].copy_from_slice(&bounce[skip..skip + n]);
        done += n;
    }
    Ok(())
}

/// True when `[offset, offset + len)` reads as erased (all `0xFF`).
pub fn is_erased<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
) -> Result<bool, FlashFault> {
    let mut buf = [0u8; 64];
    let mut pos = 0u32;
    while pos < len {
        let n = (len - pos).min(buf.len() as u32) as usize;
        read_exact(flash, offset + pos, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != ERASED) {
            return Ok(false);
        }
        pos += n as u32;
    }
    Ok(true)
}

/// The value of an erased NOR byte.
pub const ERASED: u8 = 0xFF;

/// A flash driver failure, reduced to what the caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlashFault {
    /// The access was not aligned as the driver requires.
    NotAligned,
    /// The access was outside the flash.
    OutOfBounds,
    /// Any other driver error (bus, timeout, power cut in tests).
    Other,
}

impl From<NorFlashErrorKind> for FlashFault {
    fn from(k: NorFlashErrorKind) -> Self {
        match k {
            NorFlashErrorKind::NotAligned => FlashFault::NotAligned,
            NorFlashErrorKind::OutOfBounds => FlashFault::OutOfBounds,
            _ => FlashFault::Other,
        }
    }
}

/// Reduces a driver error to a [`FlashFault`].
pub fn fault<E: NorFlashError>(e: E) -> FlashFault {
    e.kind().into()
}

impl FlashFault {
    /// A few words for the bootloader's boot line (no formatting machinery needed).
    pub fn summary(&self) -> &'static str {
        "flash error"
    }
}

impl core::error::Error for FlashFault {}

impl core::fmt::Display for FlashFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FlashFault::NotAligned => "flash access not aligned",
            FlashFault::OutOfBounds => "flash access out of bounds",
            FlashFault::Other => "flash driver error",
        })
    }
}

/// An image held in memory, read like a flash: bytes past the end read as erased. Lets the same
/// parsing code run over a bank, a file loaded on the host, or a buffer received over a wire.
#[derive(Debug, Clone, Copy)]
pub struct SliceFlash<'a>(pub &'a [u8]);

impl ErrorType for SliceFlash<'_> {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for SliceFlash<'_> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (offset as usize)
                .checked_add(i)
                .and_then(|p| self.0.get(p))
                .copied()
                .unwrap_or(ERASED);
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.0.len()
    }
}
