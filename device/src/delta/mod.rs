//! Delta updates: the next image rebuilt in the other bank from the running one and a patch.
//!
//! ```text
//!  host:   base image (running bank) ─┐
//!          target image (other bank) ─┴─ encode ─► patch = header ‖ target manifest ‖ body
//!  device: Applier::begin(patch header, manifest) ── base digest = running image's digest?
//!                                                     then Updater::begin (all its checks)
//!          Applier::write(body bytes …) ── LZ decode ─► op stream ─► COPY / ADD from the
//!                      normalised running bank, INSERT literals ─► Updater::write (other bank)
//!          Applier::finish ── Updater::finish: the whole image verified like a full upload
//! ```
//!
//! The two banks are linked at different addresses, so the running image and the next one
//! differ in every absolute address even where the code did not change. Before diffing, both
//! sides turn the running image into what it would be if it had been linked for the other bank
//! and laid out like the new image ([`normalise`]): every aligned word and every `MOVW`/`MOVT`
//! pair that points into the running image is moved to the other bank, through a short
//! *segment map* (where each part of the old image went in the new one), and every `BL`/`B.W`
//! whose target moved by another distance than the instruction is re-aimed. The patch then
//! copies long runs of that normalised image, adds a few byte differences, and inserts what is
//! new ([`ops`]); the op stream is compressed with a small-window LZ77 ([`lz`]) whose window
//! is the only large buffer of the device side.
//!
//! Everything the device reads from a patch is checked before use: a wrong, corrupt or
//! malicious patch ends in a [`DeltaError`] or in an image that `finish` refuses; the running
//! bank is only ever read. The format, its limits and the figures are in `docs/delta.md`.

pub mod apply;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod encode;
pub mod format;
pub mod lz;
pub mod normalise;
pub mod ops;

pub use apply::{apply_to_slice, Applier, DeltaIo};
pub use format::{PatchFile, PatchHeader, PATCH_HEADER_SIZE};

use crate::update::UpdateError;
use core::fmt;

/// What is wrong with a patch's body (the compressed op stream), found while applying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Corruption {
    /// An LZ back-reference reaches before the first byte decoded, or past the window.
    LzOffset,
    /// A number (varint) is longer than 32 bits.
    Varint,
    /// An op code that does not exist.
    BadOp(u8),
    /// An op of length 0, or two seeks in a row (ops that make no progress).
    NoProgress,
    /// The segment map has more entries than the device holds, or they are not in order.
    BadMap,
    /// A copy reads outside the base image.
    SourceRange,
    /// The ops produce more bytes than the image has.
    OutputOverrun,
    /// The op stream ended before the image was complete.
    OutputShort,
    /// Bytes after the end of the op stream.
    TrailingData,
    /// The body ended before the end of the op stream.
    Truncated,
    /// The body's CRC-32C differs from the one in the patch header.
    Crc,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::LzOffset => f.write_str("a back-reference points outside the window"),
            Corruption::Varint => f.write_str("a number is longer than 32 bits"),
            Corruption::BadOp(op) => write!(f, "unknown op {op:#04x}"),
            Corruption::NoProgress => f.write_str("an op makes no progress"),
            Corruption::BadMap => f.write_str("the segment map is too long or out of order"),
            Corruption::SourceRange => f.write_str("a copy reads outside the base image"),
            Corruption::OutputOverrun => f.write_str("the ops produce more than the image"),
            Corruption::OutputShort => f.write_str("the ops end before the image is complete"),
            Corruption::TrailingData => f.write_str("bytes follow the end of the ops"),
            Corruption::Truncated => f.write_str("the body ends inside the ops"),
            Corruption::Crc => f.write_str("the body's CRC-32C does not match the header"),
        }
    }
}

/// Why a delta update was refused or failed. Every refusal before [`Applier::begin`] returns
/// leaves the flash untouched; later failures leave the running bank and the boot state as they
/// were (the other bank is recorded empty when its content cannot be trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeltaError {
    /// The updater refused or failed (manifest, signature, flash, state).
    Update(UpdateError),
    /// Not a twinbank patch (magic).
    BadMagic,
    /// A patch format version this device does not know.
    UnsupportedVersion(u8),
    /// The patch's LZ window is larger than the device's ([`lz::MAX_WINDOW_BITS`]).
    WindowTooLarge(u8),
    /// The patch header or its manifest parts are inconsistent (lengths, reserved fields).
    BadHeader,
    /// The running image is not the one the patch was made from: nothing was written.
    WrongBase {
        /// The base digest the patch names (first 8 bytes).
        patch: [u8; 8],
        /// The running image's digest (first 8 bytes).
        running: [u8; 8],
    },
    /// The running bank's image is unknown to the boot state (nothing to apply a patch to).
    NoBase,
    /// The patch was made for a base linked at another address or of another size.
    BaseMismatch,
    /// The body is malformed.
    Corrupt(Corruption),
    /// A body chunk starts past the next byte expected.
    OutOfOrder {
        /// The next body offset expected.
        expected: u32,
    },
    /// `write`/`finish` without a patch in progress (call `begin`).
    NoPatch,
    /// `finish` before the whole body arrived.
    Incomplete {
        /// Body bytes received.
        received: u32,
        /// Body length.
        total: u32,
    },
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = |f: &mut fmt::Formatter<'_>, b: &[u8; 8]| {
            b.iter().try_for_each(|x| write!(f, "{x:02x}"))
        };
        match self {
            DeltaError::Update(e) => write!(f, "{e}"),
            DeltaError::BadMagic => f.write_str("not a twinbank patch (bad magic)"),
            DeltaError::UnsupportedVersion(v) => write!(f, "patch format version {v} unknown"),
            DeltaError::WindowTooLarge(b) => write!(
                f,
                "the patch needs a {} B LZ window, the device has {} B",
                1u32 << b.min(&31),
                1u32 << lz::MAX_WINDOW_BITS
            ),
            DeltaError::BadHeader => f.write_str("the patch header is malformed"),
            DeltaError::WrongBase { patch, running } => {
                f.write_str("the patch is for another base image (patch base ")?;
                hex(f, patch)?;
                f.write_str("…, running ")?;
                hex(f, running)?;
                f.write_str("…)")
            }
            DeltaError::NoBase => f.write_str("the running bank's image is unknown: no base"),
            DeltaError::BaseMismatch => {
                f.write_str("the patch's base has another size or address than the running image")
            }
            DeltaError::Corrupt(c) => write!(f, "corrupt patch: {c}"),
            DeltaError::OutOfOrder { expected } => {
                write!(
                    f,
                    "patch chunk out of order: next expected offset is {expected}"
                )
            }
            DeltaError::NoPatch => f.write_str("no delta update in progress"),
            DeltaError::Incomplete { received, total } => {
                write!(f, "patch incomplete: {received} of {total} bytes")
            }
        }
    }
}

impl core::error::Error for DeltaError {}

impl core::error::Error for Corruption {}

impl From<UpdateError> for DeltaError {
    fn from(e: UpdateError) -> Self {
        DeltaError::Update(e)
    }
}

impl From<Corruption> for DeltaError {
    fn from(c: Corruption) -> Self {
        DeltaError::Corrupt(c)
    }
}
