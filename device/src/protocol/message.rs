//! The messages. Postcard encodes enum variants by index: new variants go at the end only, and
//! [`PROTOCOL_VERSION`] changes when a message changes shape.

use super::frame::FrameError;
use crate::flash::SliceFlash;
use crate::image::{ImageError, Uuid, Version, HEADER_SIZE};
use crate::layout::Bank;
use crate::state::BootState;
use crate::update::{Manifest, UpdateError};
use serde::{Deserialize, Serialize};

/// Version of the message set; `Info` reports it and the host refuses a device with another.
pub const PROTOCOL_VERSION: u16 = 1;

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
    /// Starts or resumes an upload into the inactive bank. The device answers with the offset it
    /// expects next (0, or where an interrupted upload of the same image stopped).
    UploadBegin {
        /// The image's 32 header bytes.
        header: [u8; HEADER_SIZE],
        /// The image's protected TLV area (empty when it has none).
        #[serde(borrow)]
        protected_tlvs: &'a [u8],
        /// Total image length.
        total_len: u32,
        /// The image's SHA-256 (TLV 0x10).
        digest: [u8; 32],
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
}

impl Manifest {
    /// The manifest of a complete signed image held in memory (a file read on the host, a
    /// download buffer): header, protected TLVs, total length and digest.
    pub fn from_image(image: &[u8]) -> Result<Manifest, ImageError> {
        let len = u32::try_from(image.len()).map_err(|_| ImageError::DoesNotFit {
            needed: u32::MAX,
            capacity: u32::MAX,
        })?;
        Manifest::read(&mut SliceFlash(image), len)
    }

    /// The protected TLV area of `image` (empty when it has none), `image` being the image this
    /// manifest was read from.
    pub fn protected_tlvs<'a>(&self, image: &'a [u8]) -> Result<&'a [u8], ImageError> {
        let start = usize::try_from(self.header.tlv_offset()).map_err(|_| ImageError::Truncated)?;
        let end = usize::try_from(self.header.hashed_len()).map_err(|_| ImageError::Truncated)?;
        image.get(start..end).ok_or(ImageError::Truncated)
    }
}

impl<'a> Request<'a> {
    /// The `UploadBegin` request announcing `image`, whose manifest is `manifest`
    /// ([`Manifest::from_image`]): what a host sends before the first chunk.
    pub fn upload_begin(manifest: &Manifest, image: &'a [u8]) -> Result<Request<'a>, ImageError> {
        Ok(Request::UploadBegin {
            header: manifest.header_bytes,
            protected_tlvs: manifest.protected_tlvs(image)?,
            total_len: manifest.total_len,
            digest: manifest.digest,
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
pub enum RemoteError {
    /// The frame could not be read.
    Frame(FrameError),
    /// The updater refused or failed.
    Update(UpdateError),
    /// A chunk larger than the device accepts.
    ChunkTooLarge,
}

impl core::error::Error for RemoteError {}

impl core::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RemoteError::Frame(e) => write!(f, "device could not read the request: {e}"),
            RemoteError::Update(e) => write!(f, "{e}"),
            RemoteError::ChunkTooLarge => write!(f, "chunk larger than {} bytes", super::MAX_CHUNK),
        }
    }
}
