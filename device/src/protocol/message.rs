//! The messages. Postcard encodes enum variants by index: new variants go at the end only, and
//! [`PROTOCOL_VERSION`] changes when a message changes shape.

use super::frame::FrameError;
use crate::image::{Uuid, Version, HEADER_SIZE};
use crate::layout::Bank;
use crate::state::BootState;
use crate::update::UpdateError;
use serde::{Deserialize, Serialize};

/// Version of the message set; `Info` reports it and the host refuses a device with another.
/// 2: `UploadBegin` carries the unprotected TLVs (signature checked before any erase); bank
/// status `Receiving`. 3: `Receiving` carries its kind (announced, streamed, verified: SMP
/// uploads); `UpdateError` gains `NotAnUpgrade` and `NoSuchUpload`; the request `Cancel`, the
/// delta requests (`DeltaBegin`, `DeltaChunk`, `DeltaFinish`) and the errors `Delta`,
/// `DeltaUnsupported` (what a server given no delta applier answers a `DeltaBegin` with).
pub const PROTOCOL_VERSION: u16 = 3;

/// Every frame carries one envelope: a sequence number chosen by the host, echoed by the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Host-chosen sequence number (0 is used by the device for errors about unreadable frames).
    pub seq: u16,
    /// The request or response.
    pub body: T,
}

/// What a host asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Protocol version, device ids, layout, running bank and version.
    Info,
    /// The boot state: per bank status and image, preferred bank, minimum counter.
    Status,
    /// Starts or resumes an upload into the inactive bank. The device checks everything but
    /// the payload (the signature of the announced digest included) before it erases anything,
    /// and answers with the offset it expects next (0, or where an interrupted upload of the same
    /// image stopped). Build it with [`Request::upload_begin`].
    UploadBegin {
        /// The image's 32 header bytes.
        header: [u8; HEADER_SIZE],
        /// The image's protected TLV area (empty when it has none).
        #[serde(borrow)]
        protected_tlvs: &'a [u8],
        /// The image's unprotected TLV area (SHA-256, key, signature), info header included.
        #[serde(borrow)]
        tlvs: &'a [u8],
    },
    /// Image bytes at an offset (≤ [`super::MAX_CHUNK`] bytes).
    UploadChunk {
        /// Offset in the image.
        offset: u32,
        /// The bytes.
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// Verifies the uploaded image and activates it (pending trial at the next reset).
    UploadFinish,
    /// Confirms the running trial image.
    Confirm,
    /// Rejects the running trial image (rollback at the next reset).
    Reject,
    /// Prefers the other bank's confirmed image (operator rollback, at the next reset).
    Rollback,
    /// Resets the device after answering.
    Reboot,
    /// Cancels an update activated but not booted yet (the running image stays preferred), or
    /// an upload in progress.
    Cancel,
    /// Starts (or continues) a delta update into the inactive bank: the patch's fixed header
    /// and the target's manifest parts (as `UploadBegin`). The device checks that the running
    /// image is the patch's base and everything `UploadBegin` checks before it erases anything,
    /// and answers with the body offset it expects next (0, or where this patch stopped if the
    /// device still holds it). Build it with [`Request::delta_begin`].
    DeltaBegin {
        /// The patch's fixed header ([`crate::delta::PATCH_HEADER_SIZE`] bytes).
        #[serde(borrow)]
        patch: &'a [u8],
        /// The target image's 32 header bytes.
        header: [u8; HEADER_SIZE],
        /// The target's protected TLV area.
        #[serde(borrow)]
        protected_tlvs: &'a [u8],
        /// The target's unprotected TLV area.
        #[serde(borrow)]
        tlvs: &'a [u8],
    },
    /// Patch body bytes at a body offset (≤ [`super::MAX_CHUNK`] bytes).
    DeltaChunk {
        /// Offset in the body.
        offset: u32,
        /// The bytes.
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// Verifies the rebuilt image and activates it, as `UploadFinish`.
    DeltaFinish,
}

impl<'a> Request<'a> {
    /// The `UploadBegin` request announcing the complete image `image` (its parts are slices of
    /// it): what a host sends before the first chunk. Refused like the device would refuse it
    /// when the image is malformed.
    pub fn upload_begin(image: &'a [u8]) -> Result<Request<'a>, crate::ImageError> {
        let manifest = crate::Manifest::from_image(image)?;
        let prot_start = manifest.header.tlv_offset() as usize;
        let tlvs_start = manifest.header.hashed_len() as usize;
        let end = manifest.total_len as usize;
        match (
            image.get(prot_start..tlvs_start),
            image.get(tlvs_start..end),
        ) {
            (Some(protected_tlvs), Some(tlvs)) => Ok(Request::UploadBegin {
                header: manifest.header_bytes,
                protected_tlvs,
                tlvs,
            }),
            _ => Err(crate::ImageError::Truncated),
        }
    }

    /// The `DeltaBegin` request of a whole patch file (its parts are slices of it).
    pub fn delta_begin(patch: &'a [u8]) -> Result<Request<'a>, crate::delta::DeltaError> {
        let p = crate::delta::PatchFile::parse(patch)?;
        Ok(Request::DeltaBegin {
            patch: p.header_bytes,
            header: p.target_header,
            protected_tlvs: p.protected_tlvs,
            tlvs: p.tlvs,
        })
    }

    /// The `DeltaChunk` request carrying `body[offset..offset + len]` (shortened at the end);
    /// `None` when `offset` is past the end.
    pub fn delta_chunk(body: &'a [u8], offset: u32, len: usize) -> Option<Request<'a>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?.min(body.len());
        Some(Request::DeltaChunk {
            offset,
            data: body.get(start..end)?,
        })
    }

    /// The `UploadChunk` request carrying `image[offset..offset + len]` (shortened at the end of
    /// the image); `None` when `offset` is past the end.
    pub fn upload_chunk(image: &'a [u8], offset: u32, len: usize) -> Option<Request<'a>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?.min(image.len());
        Some(Request::UploadChunk {
            offset,
            data: image.get(start..end)?,
        })
    }
}

/// The device's description of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// [`PROTOCOL_VERSION`] of the device.
    pub protocol: u16,
    /// Vendor id images must carry, if any.
    pub vendor_id: Option<Uuid>,
    /// Class id images must carry, if any.
    pub class_id: Option<Uuid>,
    /// CPU addresses of bank A and bank B.
    pub bank_addresses: [u32; 2],
    /// Size of each bank.
    pub bank_size: u32,
    /// Flash program granularity.
    pub write_size: u32,
    /// Flash erase sector size.
    pub erase_size: u32,
    /// The bank the application runs from.
    pub running: Bank,
    /// Version of the running image, if the state knows it.
    pub running_version: Option<Version>,
    /// Largest chunk the device accepts.
    pub max_chunk: u32,
    /// True when the bootloader serves this (serial recovery): no application runs, and
    /// `running` is the bank recovery keeps (uploads go to the other one).
    pub recovery: bool,
}

/// What a device answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Info`.
    Info(DeviceInfo),
    /// Answer to `Status` (`None` on an unprovisioned device).
    Status(Option<BootState>),
    /// Upload accepted so far; send from this offset next.
    NextOffset(u32),
    /// The image was verified and activated: this version runs on trial after the next reset.
    Activated(Version),
    /// Done (confirm, reject).
    Done,
    /// Rollback accepted: this bank and version run after the next reset.
    SwitchedTo(Bank, Version),
    /// The device resets now.
    Rebooting,
    /// The request was refused or failed; nothing changed unless the error says so.
    Error(RemoteError),
}

/// Errors a device reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RemoteError {
    /// The frame could not be read.
    Frame(FrameError),
    /// The updater refused or failed.
    Update(UpdateError),
    /// A chunk larger than the device accepts.
    ChunkTooLarge,
    /// The delta update was refused or failed.
    Delta(crate::delta::DeltaError),
    /// This device does not apply patches (its server has no [`crate::delta::Applier`]).
    DeltaUnsupported,
}

impl core::error::Error for RemoteError {}

impl core::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RemoteError::Frame(e) => write!(f, "device could not read the request: {e}"),
            RemoteError::Update(e) => write!(f, "{e}"),
            RemoteError::ChunkTooLarge => write!(f, "chunk larger than {} bytes", super::MAX_CHUNK),
            RemoteError::Delta(e) => write!(f, "{e}"),
            RemoteError::DeltaUnsupported => f.write_str("this device does not apply patches"),
        }
    }
}
