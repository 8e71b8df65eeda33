//! The updater: what the running application calls to install the next image, confirm itself,
//! reject itself, or switch back to the other bank.
//!
//! ```text
//! begin(manifest) ── checks fit, bank binding, ids, counter, and the signature of the
//!                    announced digest by a trusted key (nothing written if refused)
//!                    record "target Receiving{image, from 0, erased: false}" (unless Empty)
//!                    erase every sector the image spans
//!                    record "target Receiving{image, from 0, erased: true}"      → next offset 0
//! write(offset, bytes) … any lengths; resends of identical bytes are no-ops  → next offset
//! finish()        ── verifies the whole image from flash; writes "target Pending(N), preferred"
//! (reset) ─► bootloader spends an attempt ─► app runs its health check ─► confirm() / reject()
//! ```
//!
//! The target is always the bank that is *not running*, so an update never touches the code
//! being executed. A refused manifest writes nothing. Once the checks pass, the first record gives
//! up whatever the target held (the fallback included) before its first erase.
//!
//! ## Resume
//! An interrupted upload (disconnect, host crash, power cut) resumes only for the same image: the
//! state names the image being received (digest, length, version, counter) — the same header is
//! not enough. `Receiving { from_sector, erased: true }` proves that every sector of the image's
//! span from `from_sector` on was completely erased after the bytes before it were written, and
//! that since then only this image's bytes were programmed, in order; so the sector of the last
//! programmed byte is where the upload got to. A resume records `erased: false` for that sector,
//! erases it and *every later sector of the span* (a torn write can leave a unit that reads
//! erased but is partly programmed, and an interrupted erase leaves garbage), then records
//! `erased: true` and asks for the bytes from that sector's start. While `erased` is false the
//! sectors from `from_sector` on prove nothing and the resume starts at `from_sector`. Write
//! units that are all 0xff are never programmed, so "programmed" equals "reads non-erased" and no
//! unit is ever programmed twice between erases.
//!
//! ## Streamed uploads (SMP)
//! An SMP client announces only the file's length and SHA-256, and its first chunk carries the
//! header but not the TLVs (they come last). [`Updater::start_streamed`] checks what the header
//! can tell before anything is written; [`Updater::finish_streamed`] verifies everything else
//! when the last byte arrived, and records the image *uploaded and verified, not active*
//! ([`ReceivingKind::Verified`]); [`Updater::activate`] (SMP `image test`) verifies it again and
//! makes it pending. Unlike [`Updater::begin`], a streamed upload gives up the other bank's image
//! (the fallback) once the header checks pass, before the signature can be checked
//! (docs/design.md, rows 20–28). Its resume identity is (length, SHA-256), recorded with the kind
//! [`ReceivingKind::Streamed`], so a native upload never resumes a streamed one nor the reverse.
//!
//! ```text
//! begin_streamed(len, sha, header) ── header checks (nothing written if refused);
//!                    record "target Receiving{streamed, from 0}", erase, record erased
//! write(offset, bytes) …                                 (as above)
//! finish_streamed() ── full verification + SHA-256 of the bytes; "target Receiving{verified}"
//! activate(hash)    ── verifies again; "target Pending(N), preferred"
//! ```
//!
//! ## Spreading the erase
//! [`Updater::begin`] erases every sector the image needs before it returns (on a 1 MiB image with
//! 4 KiB sectors that is 256 erases: seconds on most internal flash). An application with other
//! work calls [`Updater::start`] instead and then [`Updater::erase_next`] one sector at a time
//! (`write` completes any erase still pending).
//!
//! ## After a failed state write
//! A record write that reports an error may still have landed. Before every decision the updater
//! re-reads the newest valid record ([`StateStore::refresh`]), so it never decides from a RAM copy
//! that a reset would contradict (e.g. a rollback computed from "pending, minimum 1" after a
//! confirm raised the minimum on flash).
//!
//! RAM: the manifest (≈ 120 B) and one partial write unit (≤ 32 B). Stack: 64-byte compare buffer,
//! plus image verification in `finish` (see [`crate::image`]).

use crate::flash::{fault, FlashFault};
use crate::flash::{is_erased, read_exact, ERASED};
use crate::image::tlv::TLV_HEADER_SIZE;
pub use crate::image::Manifest;
use crate::image::{
    check_header, check_manifest, hash_range_with, verify_image_with, ImageError, ImageHeader,
    Sha256Engine, SoftSha256, Version, HEADER_SIZE,
};
use crate::layout::Bank;
use crate::state::{
    BankState, BootState, ImageId, Receiving, ReceivingKind, StateError, StateStore,
};
use crate::Config;
use core::fmt;
use embedded_storage::nor_flash::NorFlash;
#[cfg(feature = "async")]
use {
    crate::flash::{is_erased_async, read_exact_async},
    crate::image::{hash_range_with_async, verify_image_with_async},
    crate::state::store::AsyncStateStore,
    embedded_storage_async::nor_flash::NorFlash as AsyncNorFlash,
};

/// Why an update operation was refused or failed. Refusals leave the state and the running bank
/// untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum UpdateError {
    /// The image (or its manifest) was refused.
    Image(ImageError),
    /// The boot state could not be read or written.
    State(StateError),
    /// A bank could not be read, written or erased.
    Flash(FlashFault),
    /// The device has no boot state (not provisioned).
    NotProvisioned,
    /// The running image is on trial: confirm or reject it before installing another.
    TrialInProgress,
    /// A switch to the other bank is pending: reboot before installing.
    SwitchPending,
    /// `write`/`finish` without an upload in progress (call `begin`).
    NoUpload,
    /// The chunk starts past the next expected byte.
    OutOfOrder {
        /// The next offset the updater expects.
        expected: u32,
    },
    /// The chunk extends past the image length from the manifest.
    OutOfRange,
    /// Bytes already received differ from the ones sent again at the same offset.
    ContentMismatch {
        /// First differing offset.
        offset: u32,
    },
    /// `finish` before all bytes arrived.
    Incomplete {
        /// Bytes received.
        received: u32,
        /// Bytes expected.
        total: u32,
    },
    /// The image in the bank verifies but is not the one announced.
    DigestMismatch,
    /// `confirm`/`reject` while the running image is not on trial.
    NotPending,
    /// The operation would leave no bootable image (the other bank holds no confirmed image
    /// the device still accepts).
    NoFallback,
    /// The bank holds more erase sectors than the state record can count (65 535).
    TooManySectors,
    /// A streamed upload asked for upgrades only and the image is not newer than the running one
    /// (major.minor.revision, as MCUmgr compares them).
    NotAnUpgrade {
        /// Version of the running image.
        running: Version,
        /// Version of the offered image.
        offered: Version,
    },
    /// `activate` names no uploaded image waiting in the other bank (or another one than waits).
    NoSuchUpload,
    /// `cancel` with no activated update and no upload to cancel.
    NothingToCancel,
    /// Not available in the bootloader's serial recovery: no application runs (confirm, reject).
    InRecovery,
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Image(e) => write!(f, "image refused: {e}"),
            UpdateError::State(e) => write!(f, "{e}"),
            UpdateError::Flash(k) => write!(f, "bank: {}", k),
            UpdateError::NotProvisioned => {
                f.write_str("device has no boot state (not provisioned)")
            }
            UpdateError::TrialInProgress => {
                f.write_str("running image is on trial: confirm or reject it first")
            }
            UpdateError::SwitchPending => f.write_str("a bank switch is pending: reboot first"),
            UpdateError::NoUpload => f.write_str("no upload in progress"),
            UpdateError::OutOfOrder { expected } => {
                write!(f, "chunk out of order: next expected offset is {expected}")
            }
            UpdateError::OutOfRange => f.write_str("chunk extends past the end of the image"),
            UpdateError::ContentMismatch { offset } => {
                write!(
                    f,
                    "bytes at offset {offset} differ from those already received"
                )
            }
            UpdateError::Incomplete { received, total } => {
                write!(f, "upload incomplete: {received} of {total} bytes")
            }
            UpdateError::DigestMismatch => {
                f.write_str("the written image is not the one announced (digest differs)")
            }
            UpdateError::NotPending => f.write_str("the running image is not on trial"),
            UpdateError::NoFallback => {
                f.write_str("refused: the other bank holds no confirmed image to fall back to")
            }
            UpdateError::TooManySectors => {
                f.write_str("the image spans more than 65535 erase sectors")
            }
            UpdateError::NotAnUpgrade { running, offered } => write!(
                f,
                "upgrade only: {offered} is not newer than the running {running}"
            ),
            UpdateError::NoSuchUpload => {
                f.write_str("no uploaded image with this hash waits in the other bank")
            }
            UpdateError::NothingToCancel => {
                f.write_str("nothing to cancel: no update is activated or being uploaded")
            }
            UpdateError::InRecovery => {
                f.write_str("not in recovery: no application runs to confirm or reject")
            }
        }
    }
}

impl From<StateError> for UpdateError {
    fn from(e: StateError) -> Self {
        UpdateError::State(e)
    }
}

impl From<ImageError> for UpdateError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Flash(k) => UpdateError::Flash(k),
            e => UpdateError::Image(e),
        }
    }
}

/// Programs whole write units of `data` at `offset`, leaving units that are entirely the erased
/// value unprogrammed: they already read as 0xff. So "programmed" always equals "reads
/// non-erased", which [`Updater::resume_point`] relies on (a unit programmed with 0xff would look
/// blank and be programmed a second time on resume, which NOR with ECC forbids).
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async"),
    idents(
        Updater(sync, async = "AsyncUpdater"),
        StateStore(sync, async = "AsyncStateStore"),
        NorFlash(sync, async = "AsyncNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        is_erased(sync, async = "is_erased_async"),
        program(sync, async = "program_async"),
        append(sync, async = "append_async"),
        verify_image_with(sync, async = "verify_image_with_async"),
        hash_range_with(sync, async = "hash_range_with_async")
    )
)]
async fn program<F: NorFlash>(
    flash: &mut F,
    ws: usize,
    offset: u32,
    data: &[u8],
) -> Result<(), UpdateError> {
    let erased = |u: &[u8]| u.iter().all(|&b| b == ERASED);
    let mut i = 0;
    while i < data.len() {
        while i < data.len() && erased(&data[i..i + ws]) {
            i += ws;
        }
        let start = i;
        while i < data.len() && !erased(&data[i..i + ws]) {
            i += ws;
        }
        if i > start {
            flash
                .write(offset + start as u32, &data[start..i])
                .await
                .map_err(|e| UpdateError::Flash(fault(e)))?;
        }
    }
    Ok(())
}

/// The new bytes of a chunk, `new`, accepted at `up.next`: completes the partial unit, programs
/// whole units, keeps the tail in `up.partial`.
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async"),
    idents(
        Updater(sync, async = "AsyncUpdater"),
        StateStore(sync, async = "AsyncStateStore"),
        NorFlash(sync, async = "AsyncNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        is_erased(sync, async = "is_erased_async"),
        program(sync, async = "program_async"),
        append(sync, async = "append_async"),
        verify_image_with(sync, async = "verify_image_with_async"),
        hash_range_with(sync, async = "hash_range_with_async")
    )
)]
async fn append<F: NorFlash>(
    flash: &mut F,
    ws: usize,
    base: u32,
    up: &mut Upload,
    mut new: &[u8],
) -> Result<(), UpdateError> {
    if up.partial_len > 0 {
        let take = (ws - up.partial_len).min(new.len());
        up.partial[up.partial_len..up.partial_len + take].copy_from_slice(&new[..take]);
        up.partial_len += take;
        up.next += take as u32;
        new = &new[take..];
        if up.partial_len < ws {
            return Ok(());
        }
        program(flash, ws, base + up.next - ws as u32, &up.partial[..ws]).await?;
        up.partial_len = 0;
    }
    let whole = new.len() - new.len() % ws;
    if whole > 0 {
        program(flash, ws, base + up.next, &new[..whole]).await?;
        up.next += whole as u32;
    }
    let tail = &new[whole..];
    up.partial[..tail.len()].copy_from_slice(tail);
    up.partial_len = tail.len();
    up.next += tail.len() as u32;
    Ok(())
}

/// An upload in progress.
#[derive(Debug, Clone, Copy)]
struct Upload {
    bank: Bank,
    /// The image announced (digest and length as the manifest says; for a streamed upload the
    /// file's SHA-256 and length, see [`ReceivingKind::Streamed`]).
    image: ImageId,
    /// Announced (native) or streamed.
    kind: ReceivingKind,
    /// Sectors of the bank (counted from its start) still to erase before bytes can be
    /// programmed: `[erase_next, erase_end)`. Empty once the erase is complete and recorded.
    erase_next: u32,
    erase_end: u32,
    /// Every byte below `next` was accepted: programmed, or held in `partial`.
    next: u32,
    /// Bytes `[next - partial_len, next)`: the start of a write unit not yet programmed.
    partial: [u8; crate::layout::MAX_WRITE_SIZE as usize],
    partial_len: usize,
}

impl Upload {
    fn erasing(&self) -> bool {
        self.erase_next < self.erase_end
    }
}

/// What [`Updater::start`] found: where the upload continues and how much erasing is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The offset of the first byte to send (0 for a fresh upload; a sector start on resume).
    pub offset: u32,
    /// Sector erases to do before bytes can be programmed ([`Updater::erase_next`]).
    pub erases: u32,
}

/// What a streamed upload (SMP) announces before its data: the whole file's length and
/// SHA-256, and its first bytes, the image header. See [`Updater::start_streamed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// The image's first 32 bytes (its header).
    pub header: [u8; HEADER_SIZE],
    /// Length of the whole image file.
    pub len: u32,
    /// SHA-256 of the whole image file: identifies the upload (resume) and is checked over the
    /// bytes in flash once the last one arrived.
    pub sha: [u8; 32],
    /// Refuse an image whose version is not newer than the running one (MCUmgr `upgrade`).
    pub upgrade_only: bool,
}

/// An upload in progress, as [`Updater::upload`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What identifies the upload (see [`ReceivingKind`]).
    pub image: ImageId,
    /// Announced or streamed.
    pub kind: ReceivingKind,
    /// The next offset expected.
    pub next: u32,
}

/// The upload about to be opened, whatever announced it.
struct Incoming<'m> {
    image: ImageId,
    kind: ReceivingKind,
    header: &'m [u8; HEADER_SIZE],
}

/// The application's handle on updates. `running` is the bank the application executes from
/// (the bootloader's decision); it is never written. `H` is the SHA-256 engine images are
/// verified with (software by default; see [`crate::image::sha256`]).
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async"),
    idents(
        Updater(sync, async = "AsyncUpdater"),
        StateStore(sync, async = "AsyncStateStore"),
        NorFlash(sync, async = "AsyncNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        is_erased(sync, async = "is_erased_async"),
        program(sync, async = "program_async"),
        append(sync, async = "append_async"),
        verify_image_with(sync, async = "verify_image_with_async"),
        hash_range_with(sync, async = "hash_range_with_async")
    )
)]
#[derive(Debug)]
pub struct Updater<'a, F, H = SoftSha256> {
    flash: F,
    config: Config<'a>,
    running: Bank,
    store: StateStore,
    upload: Option<Upload>,
    sha: H,
    /// Serving the bootloader's serial recovery: `running` is the bank kept (see
    /// [`Updater::for_recovery`]), no application runs.
    recovery: bool,
}

#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async"),
    idents(
        Updater(sync, async = "AsyncUpdater"),
        StateStore(sync, async = "AsyncStateStore"),
        NorFlash(sync, async = "AsyncNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        is_erased(sync, async = "is_erased_async"),
        program(sync, async = "program_async"),
        append(sync, async = "append_async"),
        verify_image_with(sync, async = "verify_image_with_async"),
        hash_range_with(sync, async = "hash_range_with_async")
    )
)]
impl<'a, F: NorFlash> Updater<'a, F> {
    /// Opens the updater: scans the state region once. Hashes with the software SHA-256.
    pub async fn new(flash: F, config: Config<'a>, running: Bank) -> Result<Self, UpdateError> {
        Updater::with_engine(flash, config, running, SoftSha256::default()).await
    }
}

#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async"),
    idents(
        Updater(sync, async = "AsyncUpdater"),
        StateStore(sync, async = "AsyncStateStore"),
        NorFlash(sync, async = "AsyncNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        is_erased(sync, async = "is_erased_async"),
        program(sync, async = "program_async"),
        append(sync, async = "append_async"),
        verify_image_with(sync, async = "verify_image_with_async"),
        hash_range_with(sync, async = "hash_range_with_async")
    )
)]
impl<'a, F: NorFlash, H: Sha256Engine> Updater<'a, F, H> {
    /// Opens the updater with the board's SHA-256 engine: scans the state region once.
    pub async fn with_engine(
        mut flash: F,
        config: Config<'a>,
        running: Bank,
        sha: H,
    ) -> Result<Self, UpdateError> {
        let store = StateStore::open(&mut flash, &config.layout).await?;
        Ok(Updater {
            flash,
            config,
            running,
            store,
            upload: None,
            sha,
            recovery: false,
        })
    }

    /// Opens the updater for the bootloader's serial recovery, where no application runs.
    /// `keep` is the bank holding the image that must survive (the one that verifies; `None`
    /// when none does): uploads go to the other bank, so recovery never erases the last image
    /// that verifies. Without `keep`, the preferred bank is kept (on a blank device the first
    /// image goes to bank A), and an upload also works on a device without any state record
    /// (factory provisioning of a device that holds only the bootloader). Confirm and reject are
    /// refused (`InRecovery`); an activated upload runs on trial after the reset, like any
    /// update.
    pub async fn for_recovery(
        mut flash: F,
        config: Config<'a>,
        keep: Option<Bank>,
        sha: H,
    ) -> Result<Self, UpdateError> {
        let store = StateStore::open(&mut flash, &config.layout).await?;
        // A blank device keeps "B", so its first image goes to bank A.
        let running = keep
            .or(store.current().map(|s| s.preferred))
            .unwrap_or(Bank::B);
        Ok(Updater {
            flash,
            config,
            running,
            store,
            upload: None,
            sha,
            recovery: true,
        })
    }

    /// True when serving the bootloader's serial recovery ([`Updater::for_recovery`]).
    pub fn in_recovery(&self) -> bool {
        self.recovery
    }

    /// The boot state as last read or written (`None` on an unprovisioned device). After an
    /// operation failed on a state write, call [`Updater::refresh`] first to see what the flash
    /// holds; every operation of the updater does so itself.
    pub fn state(&self) -> Option<&BootState> {
        self.store.current()
    }

    /// Re-reads the state from flash if a state write failed since it was last known.
    pub async fn refresh(&mut self) -> Result<(), UpdateError> {
        self.store.refresh(&mut self.flash).await?;
        Ok(())
    }

    /// The device configuration.
    pub fn config(&self) -> &Config<'a> {
        &self.config
    }

    /// The bank the application runs from.
    pub fn running(&self) -> Bank {
        self.running
    }

    /// The flash, for callers that share it.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// Reads `out.len()` bytes of the running bank at `offset` (from the bank start): the base
    /// image a delta update ([`crate::delta::Applier`]) is rebuilt from. Read-only.
    pub async fn read_running(&mut self, offset: u32, out: &mut [u8]) -> Result<(), UpdateError> {
        let bank = self.config.layout.bank(self.running);
        u32::try_from(out.len())
            .ok()
            .and_then(|n| offset.checked_add(n))
            .filter(|&end| end <= bank.size.0)
            .ok_or(UpdateError::Flash(FlashFault::OutOfBounds))?;
        read_exact(&mut self.flash, bank.offset.0 + offset, out)
            .await
            .map_err(UpdateError::Flash)
    }

    /// The next offset the current upload expects, if one is in progress.
    pub fn next_offset(&self) -> Option<u32> {
        self.upload.map(|u| u.next)
    }

    /// The upload in progress in this session, if any.
    pub fn upload(&self) -> Option<Progress> {
        self.upload.map(|u| Progress {
            image: u.image,
            kind: u.kind,
            next: u.next,
        })
    }

    /// The state as the flash holds it (re-read after a failed write).
    async fn current(&mut self) -> Result<BootState, UpdateError> {
        self.store.refresh(&mut self.flash).await?;
        self.store
            .current()
            .copied()
            .ok_or(UpdateError::NotProvisioned)
    }

    /// The state to install over; in recovery a device without any record starts from "both
    /// banks empty".
    async fn current_or_blank(&mut self) -> Result<BootState, UpdateError> {
        match self.current().await {
            Err(UpdateError::NotProvisioned) if self.recovery => Ok(BootState {
                preferred: self.running,
                min_security_counter: 0,
                banks: [BankState::Empty, BankState::Empty],
            }),
            r => r,
        }
    }

    fn flash_err<E: embedded_storage::nor_flash::NorFlashError>(e: E) -> UpdateError {
        UpdateError::Flash(fault(e))
    }

    /// Starts (or resumes) installing the image described by `manifest` into the bank that is
    /// not running, and erases what it needs: [`Updater::start`] followed by every
    /// [`Updater::erase_next`]. Returns the offset of the first byte to send (0 for a fresh
    /// upload).
    pub async fn begin(&mut self, manifest: &Manifest) -> Result<u32, UpdateError> {
        let start = self.start(manifest).await?;
        while self.erase_next().await? > 0 {}
        Ok(start.offset)
    }

    /// Checks everything the manifest can tell (nothing is written when it is refused), then
    /// records the upload. The sectors to erase are erased by [`Updater::erase_next`] (or by the
    /// first [`Updater::write`]). An upload of the same image that was interrupted resumes (see
    /// the module documentation).
    pub async fn start(&mut self, manifest: &Manifest) -> Result<Start, UpdateError> {
        self.upload = None;
        let state = self.ready_to_install().await?;
        let target = self.running.other();
        let params = self
            .config
            .verify_params(target, state.min_security_counter);
        check_manifest(&manifest.header, &manifest.protected, &params)?;
        if manifest.total_len > params.capacity {
            return Err(ImageError::DoesNotFit {
                needed: manifest.total_len,
                capacity: params.capacity,
            }
            .into());
        }
        // A bad upload never costs the fallback: the announcement must be signed by a trusted
        // key before anything is written (the bytes are matched against it at `finish`).
        manifest.check_signature_with(self.config.keys, &mut self.sha)?;
        let incoming = Incoming {
            image: manifest.image_id(),
            kind: ReceivingKind::Announced,
            header: &manifest.header_bytes,
        };
        self.open(state, &incoming).await
    }

    /// A streamed upload (SMP): [`Updater::start_streamed`] followed by every
    /// [`Updater::erase_next`]. Returns the offset of the first byte to send.
    pub async fn begin_streamed(&mut self, announced: &StreamStart) -> Result<u32, UpdateError> {
        let start = self.start_streamed(announced).await?;
        while self.erase_next().await? > 0 {}
        Ok(start.offset)
    }

    /// Starts (or resumes) a streamed upload: one whose announcement is only the file's length
    /// and SHA-256, and whose first chunk carries the header but not the TLVs (they come last).
    ///
    /// Before anything is written it checks all the header can tell: a trusted key exists,
    /// magic and `hdr_size`, flags (not encrypted, bootable), the image fits the bank and the
    /// announced length, the `ROM_FIXED` bank binding, and with `upgrade_only` a version newer
    /// than the running one. Ids, security counter, hash and signature can only be checked when
    /// the last byte arrived ([`Updater::finish_streamed`], a full verification). So, unlike
    /// [`Updater::start`], a streamed upload gives up the other bank's image (the fallback) once
    /// these header checks pass, before its signature can be checked.
    ///
    /// The upload is identified by (length, SHA-256): an interrupted streamed upload of the same
    /// file resumes, never an announced one (nor the reverse).
    pub async fn start_streamed(&mut self, announced: &StreamStart) -> Result<Start, UpdateError> {
        self.upload = None;
        let state = self.ready_to_install().await?;
        if self.config.keys.is_empty() {
            // Nothing could ever verify: keep the fallback.
            return Err(ImageError::NoTrustedKeys.into());
        }
        let target = self.running.other();
        let params = self
            .config
            .verify_params(target, state.min_security_counter);
        let header = ImageHeader::parse(&announced.header).map_err(ImageError::from)?;
        check_header(&header, &params)?;
        if announced.len > params.capacity {
            return Err(ImageError::DoesNotFit {
                needed: announced.len,
                capacity: params.capacity,
            }
            .into());
        }
        // The announced length must hold the hashed part and at least a TLV area header.
        if header.hashed_len() + TLV_HEADER_SIZE as u64 > announced.len as u64 {
            return Err(ImageError::Truncated.into());
        }
        if announced.upgrade_only {
            let running = state
                .bank(self.running)
                .image()
                .map(|i| i.version)
                .unwrap_or_default();
            let key = |v: Version| (v.major, v.minor, v.revision);
            if key(header.version) <= key(running) {
                return Err(UpdateError::NotAnUpgrade {
                    running,
                    offered: header.version,
                });
            }
        }
        let incoming = Incoming {
            image: ImageId {
                version: header.version,
                digest: announced.sha,
                security_counter: 0,
                size: announced.len,
            },
            kind: ReceivingKind::Streamed,
            header: &announced.header,
        };
        self.open(state, &incoming).await
    }

    /// The state, if an install may start: the running image is not on trial and is preferred.
    /// Recovery takes an image whatever the state says (a blank device included).
    async fn ready_to_install(&mut self) -> Result<BootState, UpdateError> {
        let state = self.current_or_blank().await?;
        if self.recovery {
            return Ok(state);
        }
        if matches!(state.bank(self.running), BankState::Pending { .. }) {
            return Err(UpdateError::TrialInProgress);
        }
        if state.preferred != self.running {
            return Err(UpdateError::SwitchPending);
        }
        Ok(state)
    }

    /// Opens an upload whose checks passed: resumes an interrupted upload of the same image and
    /// kind, records that the bank is rewritten, and sets up the erase.
    async fn open(
        &mut self,
        mut state: BootState,
        incoming: &Incoming<'_>,
    ) -> Result<Start, UpdateError> {
        let target = self.running.other();
        let image = incoming.image;
        let bank = self.config.layout.bank(target);
        let span = self.config.layout.sectors_spanning(bank, image.size);
        if span > u16::MAX as u32 {
            return Err(UpdateError::TooManySectors);
        }
        let base = bank.offset.0;
        let from = match *state.bank(target) {
            BankState::Receiving(r) if r.image == image && r.kind == incoming.kind => {
                self.resume_sector(base, incoming.header, image.size, r, span)
                    .await?
            }
            _ => 0,
        };
        // From here on the bank is rewritten from `from`: say so before the first erase, so that
        // nothing (a resume, the boot decision, a rollback) trusts what the sectors held.
        let receiving = |erased| {
            BankState::Receiving(Receiving {
                image,
                // `from < span <= u16::MAX`.
                from_sector: from as u16,
                erased,
                kind: incoming.kind,
            })
        };
        if !(from == 0 && *state.bank(target) == BankState::Empty) {
            *state.bank_mut(target) = receiving(false);
            // (Recovery:) a target that was preferred no longer is.
            state.preferred = self.running;
            self.store.write(&mut self.flash, &state).await?;
        }
        self.upload = Some(Upload {
            bank: target,
            image,
            kind: incoming.kind,
            erase_next: from,
            erase_end: span,
            next: self.config.layout.sector_start_in(bank, from),
            partial: [ERASED; crate::layout::MAX_WRITE_SIZE as usize],
            partial_len: 0,
        });
        Ok(Start {
            offset: self.config.layout.sector_start_in(bank, from),
            erases: span - from,
        })
    }

    /// Erases the next sector the upload needs; after the last one, records that the bank is
    /// erased (`Receiving { erased: true }`). Returns the erases left (0: ready for bytes).
    pub async fn erase_next(&mut self) -> Result<u32, UpdateError> {
        let mut up = self.upload.ok_or(UpdateError::NoUpload)?;
        if !up.erasing() {
            return Ok(0);
        }
        // Until this step succeeds, the upload must be started again.
        self.upload = None;
        let bank = self.config.layout.bank(up.bank);
        // `erase_next < erase_end <=` the bank's sectors: the sector exists.
        let sector = (self.config.layout)
            .sector_in(bank, up.erase_next)
            .ok_or(UpdateError::TooManySectors)?;
        self.flash
            .erase(sector.offset.0, sector.offset.0 + sector.size.0)
            .await
            .map_err(Self::flash_err)?;
        up.erase_next += 1;
        if !up.erasing() {
            let mut state = self.current_or_blank().await?;
            *state.bank_mut(up.bank) = BankState::Receiving(Receiving {
                image: up.image,
                from_sector: self.config.layout.sector_index_in(bank, up.next) as u16,
                erased: true,
                kind: up.kind,
            });
            self.store.write(&mut self.flash, &state).await?;
        }
        self.upload = Some(up);
        Ok(up.erase_end - up.erase_next)
    }

    /// Where an interrupted upload of this image continues (a sector of the bank): `r` says from
    /// which sector on the bank was rewritten and whether those sectors were completely erased.
    async fn resume_sector(
        &mut self,
        base: u32,
        header: &[u8; HEADER_SIZE],
        total: u32,
        r: Receiving,
        span: u32,
    ) -> Result<u32, UpdateError> {
        let from = r.from_sector as u32;
        if from >= span {
            return Ok(0);
        }
        let sector = if r.erased {
            self.last_written_sector(base, from, total).await?
        } else {
            from
        };
        // The header is the first thing written: a resume past it must find it (a bank damaged
        // behind the updater's back starts afresh).
        if sector > 0 && !self.header_in_bank(base, header).await? {
            return Ok(0);
        }
        Ok(sector)
    }

    async fn header_in_bank(
        &mut self,
        base: u32,
        header: &[u8; HEADER_SIZE],
    ) -> Result<bool, UpdateError> {
        let mut b = [0u8; HEADER_SIZE];
        read_exact(&mut self.flash, base, &mut b)
            .await
            .map_err(UpdateError::Flash)?;
        Ok(&b == header)
    }

    /// The sector holding the last byte that reads non-erased in `[from sector, total)`, or
    /// `from` when there is none. Scans backwards from the end of the image's span.
    async fn last_written_sector(
        &mut self,
        base: u32,
        from: u32,
        total: u32,
    ) -> Result<u32, UpdateError> {
        const BLOCK: u32 = 64;
        let bank = self.config.layout.bank(self.running.other());
        let floor = self.config.layout.sector_start_in(bank, from);
        let mut end = total;
        while end > floor {
            let start = end.saturating_sub(BLOCK).max(floor);
            if !is_erased(&mut self.flash, base + start, end - start)
                .await
                .map_err(UpdateError::Flash)?
            {
                let mut buf = [0u8; BLOCK as usize];
                let n = (end - start) as usize;
                read_exact(&mut self.flash, base + start, &mut buf[..n])
                    .await
                    .map_err(UpdateError::Flash)?;
                let i = buf[..n].iter().rposition(|&b| b != ERASED).unwrap_or(0);
                return Ok(self.config.layout.sector_index_in(bank, start + i as u32));
            }
            end = start;
        }
        Ok(from)
    }

    /// Accepts `data` at image offset `offset`. Bytes already received must match; new bytes must
    /// follow on (no gaps). Returns the next offset expected.
    pub async fn write(&mut self, offset: u32, data: &[u8]) -> Result<u32, UpdateError> {
        while self.upload.is_some_and(|u| u.erasing()) {
            self.erase_next().await?;
        }
        let ws = self.config.layout.write_size() as usize;
        let base = self
            .config
            .layout
            .bank(self.upload.ok_or(UpdateError::NoUpload)?.bank)
            .offset
            .0;
        let up = self.upload.as_mut().ok_or(UpdateError::NoUpload)?;
        if offset > up.next {
            return Err(UpdateError::OutOfOrder { expected: up.next });
        }
        let end = u32::try_from(data.len())
            .ok()
            .and_then(|n| offset.checked_add(n))
            .ok_or(UpdateError::OutOfRange)?;
        if end > up.image.size {
            return Err(UpdateError::OutOfRange);
        }
        // 1. Bytes already accepted must be identical.
        let flushed = up.next - up.partial_len as u32;
        let overlap_end = end.min(up.next);
        let mut pos = offset;
        let mut buf = [0u8; 64];
        while pos < overlap_end.min(flushed) {
            let n = (overlap_end.min(flushed) - pos).min(buf.len() as u32) as usize;
            read_exact(&mut self.flash, base + pos, &mut buf[..n])
                .await
                .map_err(UpdateError::Flash)?;
            let sent = &data[(pos - offset) as usize..(pos - offset) as usize + n];
            if let Some(i) = buf[..n].iter().zip(sent).position(|(a, b)| a != b) {
                return Err(UpdateError::ContentMismatch {
                    offset: pos + i as u32,
                });
            }
            pos += n as u32;
        }
        while pos < overlap_end {
            let held = up.partial[(pos - flushed) as usize];
            if held != data[(pos - offset) as usize] {
                return Err(UpdateError::ContentMismatch { offset: pos });
            }
            pos += 1;
        }
        if end <= up.next {
            return Ok(up.next);
        }
        // 2. New bytes: complete the partial unit, program whole units, keep the tail. Until they
        // are programmed there is no upload: a failed program (or an async caller that drops this
        // future while the flash programs) leaves a unit in an unknown state: begin again (it
        // resumes).
        let new = &data[(up.next - offset) as usize..];
        let mut up = *up;
        self.upload = None;
        append(&mut self.flash, ws, base, &mut up, new).await?;
        self.upload = Some(up);
        Ok(up.next)
    }

    /// Completes the upload: programs the last partial unit (padded with 0xff), verifies the whole
    /// image from flash, then activates it with one record: target pending with the configured
    /// attempts, and preferred. The new image runs after the next reset. When the image does not
    /// verify (or is not the one announced), the target is recorded empty, so the next `begin`
    /// starts afresh instead of resuming over bad bytes. A read error while verifying is no
    /// verdict: it is returned and the upload kept, so `finish` can be called again.
    pub async fn finish(&mut self) -> Result<ImageId, UpdateError> {
        let (up, mut state) = self.complete(ReceivingKind::Announced).await?;
        let params = self
            .config
            .verify_params(up.bank, state.min_security_counter);
        let verdict = match verify_image_with(&mut self.flash, &params, &mut self.sha).await {
            Ok(img) if img.digest == up.image.digest && img.total_len == up.image.size => Ok(img),
            Ok(_) => Err(UpdateError::DigestMismatch),
            Err(e) => Err(e.into()),
        };
        let image = self
            .verdict(Some(&up), up.bank, &mut state, verdict)
            .await?;
        let id = ImageId::of(&image);
        *state.bank_mut(up.bank) = BankState::Pending {
            image: id,
            attempts_left: self.config.attempts.get(),
        };
        state.preferred = up.bank;
        self.store.write(&mut self.flash, &state).await?;
        Ok(id)
    }

    /// Completes a streamed upload once every byte arrived: programs the last partial unit,
    /// verifies the whole image from flash (header, ids, counter, hash, signature) and checks the
    /// announced SHA-256 over the bytes in flash. Then records the bank as uploaded and verified
    /// but *not* active ([`ReceivingKind::Verified`], one record): the running image stays
    /// preferred until [`Updater::activate`] (SMP `image test`). On failure the bank is recorded
    /// empty, as [`Updater::finish`] does.
    pub async fn finish_streamed(&mut self) -> Result<ImageId, UpdateError> {
        let (up, mut state) = self.complete(ReceivingKind::Streamed).await?;
        let params = self
            .config
            .verify_params(up.bank, state.min_security_counter);
        let verdict = match verify_image_with(&mut self.flash, &params, &mut self.sha).await {
            Ok(img) if img.total_len != up.image.size => Err(ImageError::BadTlvArea.into()),
            Ok(img) => {
                match hash_range_with(&mut self.flash, params.offset, up.image.size, &mut self.sha)
                    .await
                {
                    Ok(sha) if sha == up.image.digest => Ok(img),
                    Ok(_) => Err(UpdateError::DigestMismatch),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        };
        let image = self
            .verdict(Some(&up), up.bank, &mut state, verdict)
            .await?;
        let id = ImageId::of(&image);
        let bank = self.config.layout.bank(up.bank);
        *state.bank_mut(up.bank) = BankState::Receiving(Receiving {
            image: id,
            // Every sector of the span is written (`span <= u16::MAX`, checked at start).
            from_sector: self.config.layout.sectors_spanning(bank, id.size) as u16,
            erased: true,
            kind: ReceivingKind::Verified,
        });
        self.store.write(&mut self.flash, &state).await?;
        Ok(id)
    }

    /// Activates the uploaded and verified image in the other bank whose SHA-256 TLV value is
    /// `digest` (SMP `image test`): verifies it again from flash, then one record: pending with
    /// the configured attempts, and preferred. Activating the image that is already pending is a
    /// no-op. Refused (nothing written) while the running image is on trial, when no uploaded
    /// image with this hash waits, or when a switch is already pending.
    pub async fn activate(&mut self, digest: &[u8; 32]) -> Result<ImageId, UpdateError> {
        let mut state = self.current().await?;
        let target = self.running.other();
        if matches!(state.bank(self.running), BankState::Pending { .. }) {
            return Err(UpdateError::TrialInProgress);
        }
        let waiting = match *state.bank(target) {
            BankState::Pending { image, .. }
                if image.digest == *digest && state.preferred == target =>
            {
                return Ok(image);
            }
            BankState::Receiving(r) if r.kind == ReceivingKind::Verified => r.image,
            _ => return Err(UpdateError::NoSuchUpload),
        };
        if waiting.digest != *digest {
            return Err(UpdateError::NoSuchUpload);
        }
        if state.preferred != self.running {
            return Err(UpdateError::SwitchPending);
        }
        let params = self
            .config
            .verify_params(target, state.min_security_counter);
        let verdict = match verify_image_with(&mut self.flash, &params, &mut self.sha).await {
            Ok(img) if img.digest == waiting.digest && img.total_len == waiting.size => Ok(img),
            Ok(_) => Err(UpdateError::DigestMismatch),
            Err(e) => Err(e.into()),
        };
        let image = self.verdict(None, target, &mut state, verdict).await?;
        let id = ImageId::of(&image);
        *state.bank_mut(target) = BankState::Pending {
            image: id,
            attempts_left: self.config.attempts.get(),
        };
        state.preferred = target;
        self.store.write(&mut self.flash, &state).await?;
        Ok(id)
    }

    /// Erases the other bank (SMP `image erase`): records it empty first (so nothing trusts its
    /// bytes any more), then erases every sector of it that does not read erased. This gives up
    /// a confirmed fallback. Refused (nothing written) while the running image is on trial (the
    /// other bank is its fallback) or a switch is pending.
    pub async fn erase_other(&mut self) -> Result<(), UpdateError> {
        self.upload = None;
        let mut state = self.ready_to_install().await?;
        let target = self.running.other();
        if *state.bank(target) != BankState::Empty {
            *state.bank_mut(target) = BankState::Empty;
            self.store.write(&mut self.flash, &state).await?;
        }
        let region = self.config.layout.bank(target);
        let mut index = 0;
        while let Some(s) = self.config.layout.sector_in(region, index) {
            let (at, end) = (s.offset.0, s.offset.0 + s.size.0);
            if !is_erased(&mut self.flash, at, s.size.0)
                .await
                .map_err(UpdateError::Flash)?
            {
                self.flash.erase(at, end).await.map_err(Self::flash_err)?;
            }
            index += 1;
        }
        Ok(())
    }

    /// The end of an upload of `kind`: programs the last partial unit (padded with 0xff) and
    /// checks that the state still records this upload. The upload is over either way.
    async fn complete(&mut self, kind: ReceivingKind) -> Result<(Upload, BootState), UpdateError> {
        let mut up = self.upload.ok_or(UpdateError::NoUpload)?;
        let total = up.image.size;
        if up.kind != kind {
            return Err(UpdateError::NoUpload);
        }
        if up.next < total || up.erasing() {
            return Err(UpdateError::Incomplete {
                received: up.next,
                total,
            });
        }
        let ws = self.config.layout.write_size() as usize;
        let base = self.config.layout.bank(up.bank).offset.0;
        if up.partial_len > 0 {
            up.partial[up.partial_len..ws].fill(ERASED);
            let at = base + up.next - up.partial_len as u32;
            self.upload = None;
            program(&mut self.flash, ws, at, &up.partial[..ws]).await?;
            up.partial_len = 0;
            self.upload = Some(up);
        }
        let state = self.current().await?;
        let receiving = matches!(state.bank(up.bank),
            BankState::Receiving(r) if r.image == up.image && r.kind == up.kind);
        self.upload = None;
        if !receiving {
            // The state changed behind this upload (another updater instance): start again.
            return Err(UpdateError::NoUpload);
        }
        Ok((up, state))
    }

    /// Acts on the verification of the image in `bank`: on failure records the bank empty (so
    /// the next upload starts afresh instead of resuming over bad bytes) and returns the error.
    /// A read error is no verdict on the image (issue 16's walk: a glitch threw a complete upload
    /// away): nothing is recorded and `upload`, the upload just completed, is kept so that the
    /// caller can finish again.
    async fn verdict<T>(
        &mut self,
        upload: Option<&Upload>,
        bank: Bank,
        state: &mut BootState,
        verdict: Result<T, UpdateError>,
    ) -> Result<T, UpdateError> {
        if let Err(UpdateError::Flash(k)) = verdict {
            self.upload = upload.copied();
            return Err(UpdateError::Flash(k));
        }
        if verdict.is_err() {
            // Best effort: if this record fails, the next `begin` resumes, and `finish` fails
            // again on the same bytes and tries again.
            *state.bank_mut(bank) = BankState::Empty;
            let _ = self.store.write(&mut self.flash, state).await;
        }
        verdict
    }

    /// After the health check passed: the running trial image becomes confirmed and the minimum
    /// security counter rises to its counter. Confirming a confirmed image is a no-op.
    pub async fn confirm(&mut self) -> Result<(), UpdateError> {
        if self.recovery {
            return Err(UpdateError::InRecovery);
        }
        let mut state = self.current().await?;
        match *state.bank(self.running) {
            BankState::Confirmed(_) if state.preferred == self.running => Ok(()),
            BankState::Pending { image, .. } if state.preferred == self.running => {
                *state.bank_mut(self.running) = BankState::Confirmed(image);
                state.min_security_counter = state.min_security_counter.max(image.security_counter);
                self.store.write(&mut self.flash, &state).await?;
                Ok(())
            }
            _ => Err(UpdateError::NotPending),
        }
    }

    /// After the health check failed: the running trial image is rejected and the other bank
    /// preferred; the next reset rolls back. Refused when the other bank has nothing to boot.
    pub async fn reject(&mut self) -> Result<(), UpdateError> {
        if self.recovery {
            return Err(UpdateError::InRecovery);
        }
        let mut state = self.current().await?;
        let BankState::Pending { image, .. } = *state.bank(self.running) else {
            return Err(UpdateError::NotPending);
        };
        self.check_fallback(&state).await?;
        *state.bank_mut(self.running) = BankState::Rejected(image);
        state.preferred = self.running.other();
        self.store.write(&mut self.flash, &state).await?;
        Ok(())
    }

    /// Operator rollback: prefer the other bank, which must hold a confirmed image that still
    /// verifies with the current minimum counter. A running trial image is rejected on the way
    /// (a pending bank must be the preferred one). Takes effect at the next reset. Returns the
    /// image switched to.
    pub async fn rollback(&mut self) -> Result<ImageId, UpdateError> {
        let mut state = self.current().await?;
        let other = self.running.other();
        let target = self.check_fallback(&state).await?;
        if let BankState::Pending { image, .. } = *state.bank(self.running) {
            *state.bank_mut(self.running) = BankState::Rejected(image);
        }
        state.preferred = other;
        self.store.write(&mut self.flash, &state).await?;
        Ok(target)
    }

    /// Cancels what the other bank was given: an update activated by `finish` (or `activate`)
    /// but not booted yet (pending, preferred: recorded rejected, and the running image stays
    /// preferred), or an upload in progress or waiting to be activated (recorded empty). One
    /// record; refused with `NothingToCancel` otherwise.
    pub async fn cancel(&mut self) -> Result<(), UpdateError> {
        let mut state = self.current().await?;
        let other = self.running.other();
        self.upload = None;
        match *state.bank(other) {
            BankState::Pending { image, .. } if state.preferred == other => {
                *state.bank_mut(other) = BankState::Rejected(image);
                state.preferred = self.running;
            }
            BankState::Receiving(_) => *state.bank_mut(other) = BankState::Empty,
            _ => return Err(UpdateError::NothingToCancel),
        }
        self.store.write(&mut self.flash, &state).await?;
        Ok(())
    }

    /// The other bank's confirmed image, verified, or `NoFallback` / the verification error.
    async fn check_fallback(&mut self, state: &BootState) -> Result<ImageId, UpdateError> {
        let other = self.running.other();
        let BankState::Confirmed(id) = *state.bank(other) else {
            return Err(UpdateError::NoFallback);
        };
        let params = self.config.verify_params(other, state.min_security_counter);
        let image = verify_image_with(&mut self.flash, &params, &mut self.sha).await?;
        if image.digest != id.digest {
            return Err(UpdateError::NoFallback);
        }
        Ok(id)
    }
}
