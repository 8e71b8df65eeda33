//! Image management (group 1): state read/write, upload, erase, slot info.
//!
//! ## Slots and image numbers
//!
//! | what a client sends | twinbank |
//! |---|---|
//! | state read: `slot` 0 / 1 in the entries | bank A / bank B (entry `image` is always 0) |
//! | upload `image` absent, 0, 1 or 2 | the bank that is not running. 0/absent: Zephyr's "image 0" (mcumgr-toolkit, smpmgr's default `--slot 0`); 1: smpmgr `--slot 1`; 1 and 2: MCUboot serial recovery's direct-upload numbers for image 0 |
//! | upload `image` ≥ 3 | refused (`INVALID_SLOT`) |
//! | state write `hash` | the bank whose image has this SHA-256 TLV value |
//! | erase `slot` absent | the bank that is not running; `slot` 0 / 1: bank A / B, refused for the running bank |
//!
//! An upload never touches the running bank, whatever number it carries, and never activates
//! anything: as with MCUboot, the uploaded image runs only after `image test` names its hash
//! (smpmgr `upgrade --slot 1` does upload + test + reset; its default `--slot 0` uploads and
//! resets without a test, which on twinbank, as on a Zephyr application, activates nothing).
//!
//! ## State read: one entry per bank that holds an image
//!
//! | flag | true when |
//! |---|---|
//! | `active` | the bank runs now |
//! | `confirmed` | the bank's image is confirmed and it is the one the device keeps: the running image when it is confirmed, else (during a trial) the fallback. A second confirmed image (twinbank keeps both) is shown bootable but not confirmed: MCUmgr clients expect at most one |
//! | `pending` | the bank boots at the next reset instead of the running one |
//! | `permanent` | pending and its image confirmed (a switch back to a confirmed image: no trial) |
//! | `bootable` | confirmed, on trial or activated, or uploaded and verified (may run once tested); false for a rejected image |
//!
//! Empty banks and incomplete uploads have no entry.
//!
//! ## State write `{hash, confirm}`
//!
//! | hash names | `confirm` false (test) | `confirm` true |
//! |---|---|---|
//! | (no hash) | refused `INVALID_HASH` | confirm the running image (no-op when confirmed) |
//! | the running image | refused `IMAGE_SETTING_TEST_TO_ACTIVE_DENIED` | confirm it |
//! | the uploaded, verified image in the other bank | activate: verified again, pending, preferred | refused `IMAGE_CONFIRMATION_DENIED`: twinbank confirms only an image that runs |
//! | the other bank's activated (pending) image | no-op | refused `IMAGE_CONFIRMATION_DENIED` |
//! | the other bank's confirmed image | operator rollback: it is preferred at the next reset | the same |
//! | the other bank's rejected image, or nothing | refused (`NO_IMAGE`) | refused (`NO_IMAGE`) |
//!
//! ## Upload `{image, len, off, sha, data, upgrade}`
//!
//! `off` 0 with `len` starts (or resumes) an upload: `sha` (32 bytes) is required, the data must
//! hold the image header. Before anything is written the header is checked
//! ([`Updater::start_streamed`]); an interrupted upload of the same file (same `len` and `sha`)
//! resumes and the answer is the offset to continue from. When the last byte arrived the image
//! is verified completely and `sha` checked over the bytes in flash; the answer then carries
//! `match: true`. A chunk out of order is answered with the offset the device expects; a chunk
//! when no upload is in progress (after a reset) with offset 0, which makes a client start again
//! (and so resume).

use super::cbor::{self, flag, Body};
use super::error::{ImgErr, MgmtErr, Refusal};
use super::header::Op;
use super::TextBuf;
use crate::flash::read_exact;
use crate::image::{Version, HEADER_SIZE};
use crate::layout::Bank;
use crate::state::{BankState, BootState, ImageId, ReceivingKind};
use crate::update::{StreamStart, UpdateError, Updater};
use embedded_storage::nor_flash::NorFlash;

/// Command: image state.
pub const STATE: u8 = 0;
/// Command: upload.
pub const UPLOAD: u8 = 1;
/// Command: erase.
pub const ERASE: u8 = 5;
/// Command: slot info.
pub const SLOT_INFO: u8 = 6;
/// The largest upload `image` number accepted (all mean "the bank that is not running").
pub const MAX_IMAGE_NUMBER: u32 = 2;

const BAD_HASH: Refusal = Refusal::image(
    MgmtErr::Inval,
    ImgErr::InvalidHash,
    "hash must be 32 bytes (the image's SHA-256)",
);
const NO_IMAGE: Refusal =
    Refusal::image(MgmtErr::NoEnt, ImgErr::NoImage, "no image with this hash");
const UNSUPPORTED: Refusal = Refusal::mgmt(MgmtErr::NotSup, "command not supported");

/// What the image group remembers between requests: the streamed upload completed in this
/// session (so that a retried last chunk, or the same upload again, is answered as complete).
#[derive(Debug, Default)]
pub struct Session {
    completed: Option<(u32, [u8; 32])>,
}

impl Session {
    /// No upload completed yet.
    pub const fn new() -> Session {
        Session { completed: None }
    }
}

/// An upload answer.
struct Reply {
    off: u32,
    matched: Option<bool>,
}

/// Handles image command `cmd`, writing the response body with `e`.
pub fn handle<F: NorFlash>(
    s: &mut Session,
    up: &mut Updater<'_, F>,
    op: Op,
    cmd: u8,
    body: &[u8],
    e: &mut Body<'_>,
) -> Result<(), Refusal> {
    match (cmd, op) {
        (STATE, Op::Read) => write_state(up, e),
        (STATE, Op::Write) => {
            let (mut hash, mut confirm) = (None, false);
            cbor::fields(body, |k, d| match k {
                "hash" => {
                    hash = Some(d.bytes()?);
                    Ok(true)
                }
                "confirm" => {
                    confirm = flag(d)?;
                    Ok(true)
                }
                _ => Ok(false),
            })?;
            state_write(up, hash, confirm)?;
            write_state(up, e)
        }
        (UPLOAD, Op::Write) => {
            let r = s.upload(up, body)?;
            let n = if r.matched.is_some() { 2 } else { 1 };
            e.map(n)?.str("off")?.u32(r.off)?;
            if let Some(m) = r.matched {
                e.str("match")?.bool(m)?;
            }
            Ok(())
        }
        (ERASE, Op::Write) => {
            let mut slot = None;
            cbor::fields(body, |k, d| {
                if k == "slot" {
                    slot = Some(cbor::u32_value(d)?);
                    return Ok(true);
                }
                Ok(false)
            })?;
            let other = up.running().other();
            let target = match slot {
                None => other,
                Some(0) => Bank::A,
                Some(1) => Bank::B,
                Some(_) => {
                    return Err(Refusal::image(
                        MgmtErr::Inval,
                        ImgErr::InvalidSlot,
                        "slot must be 0 (bank A) or 1 (bank B)",
                    ))
                }
            };
            if target != other {
                return Err(Refusal::image(
                    MgmtErr::Inval,
                    ImgErr::InvalidSlot,
                    "the running bank is never erased",
                ));
            }
            s.completed = None;
            up.erase_other()?;
            e.map(0)?;
            Ok(())
        }
        (SLOT_INFO, Op::Read) => {
            let size = up.config().layout.bank_size();
            e.map(1)?.str("images")?.array(1)?;
            e.map(3)?.str("image")?.u8(0)?.str("slots")?.array(2)?;
            for bank in Bank::ALL {
                e.map(2)?
                    .str("slot")?
                    .u8(bank.index() as u8)?
                    .str("size")?
                    .u32(size)?;
            }
            e.str("max_image_size")?.u32(size)?;
            Ok(())
        }
        _ => Err(UNSUPPORTED),
    }
}

/// The image a bank holds, as the state read lists it (`None`: no entry).
fn listed(b: &BankState) -> Option<ImageId> {
    match *b {
        BankState::Confirmed(id) | BankState::Rejected(id) => Some(id),
        BankState::Pending { image, .. } => Some(image),
        BankState::Receiving(r) if r.kind == ReceivingKind::Verified => Some(r.image),
        BankState::Receiving(_) | BankState::Empty => None,
    }
}

/// MCUmgr's version text: `major.minor.revision`, `.build` when the build is not 0.
fn version_text(v: Version) -> TextBuf<24> {
    use core::fmt::Write;
    let mut t = TextBuf::new();
    let _ = write!(t, "{}.{}.{}", v.major, v.minor, v.revision);
    if v.build != 0 {
        let _ = write!(t, ".{}", v.build);
    }
    t
}

fn current<F: NorFlash>(up: &mut Updater<'_, F>) -> Result<Option<BootState>, Refusal> {
    up.refresh()?;
    Ok(up.state().copied())
}

fn write_state<F: NorFlash>(up: &mut Updater<'_, F>, e: &mut Body<'_>) -> Result<(), Refusal> {
    let running = up.running();
    let state = current(up)?;
    let entries = Bank::ALL.map(|b| state.and_then(|s| listed(s.bank(b)).map(|id| (b, id))));
    let count = entries.iter().flatten().count();
    e.map(1)?.str("images")?.array(count as u64)?;
    let Some(state) = state else {
        return Ok(());
    };
    for (bank, id) in entries.into_iter().flatten() {
        let b = state.bank(bank);
        let pending = bank != running && state.preferred == bank;
        let is_confirmed = |k: Bank| matches!(state.bank(k), BankState::Confirmed(_));
        // MCUmgr clients expect at most one confirmed image: the running one when it is
        // confirmed, else (during a trial) the fallback.
        let confirmed = is_confirmed(bank) && (bank == running || !is_confirmed(running));
        e.map(9)?
            .str("image")?
            .u8(0)?
            .str("slot")?
            .u8(bank.index() as u8)?
            .str("version")?
            .str(version_text(id.version).as_str())?
            .str("hash")?
            .bytes(&id.digest)?
            .str("bootable")?
            .bool(!matches!(b, BankState::Rejected(_)))?
            .str("pending")?
            .bool(pending)?
            .str("confirmed")?
            .bool(confirmed)?
            .str("active")?
            .bool(bank == running)?
            .str("permanent")?
            .bool(pending && is_confirmed(bank))?;
    }
    Ok(())
}

fn state_write<F: NorFlash>(
    up: &mut Updater<'_, F>,
    hash: Option<&[u8]>,
    confirm: bool,
) -> Result<(), Refusal> {
    let Some(hash) = hash else {
        if confirm {
            return Ok(up.confirm()?);
        }
        return Err(BAD_HASH);
    };
    let hash: &[u8; 32] = hash.try_into().map_err(|_| BAD_HASH)?;
    let state = current(up)?.ok_or(UpdateError::NotProvisioned)?;
    let running = up.running();
    let other = running.other();
    if listed(state.bank(running)).is_some_and(|id| &id.digest == hash) {
        if confirm {
            return Ok(up.confirm()?);
        }
        // Testing the running image while the other bank waits for its trial boot: the
        // operator takes the update back before the reset (docs/design.md row 29, cancel); the
        // running image stays preferred.
        if matches!(state.bank(other), BankState::Pending { .. }) {
            return Ok(up.cancel()?);
        }
        return Err(Refusal::image(
            MgmtErr::Inval,
            ImgErr::ImageSettingTestToActiveDenied,
            "this image is already running",
        ));
    }
    let denied = Refusal::image(
        MgmtErr::BadState,
        ImgErr::ImageConfirmationDenied,
        "twinbank confirms only the running image: test this one, reset, then confirm",
    );
    match *state.bank(other) {
        BankState::Receiving(r) if r.kind == ReceivingKind::Verified && &r.image.digest == hash => {
            if confirm {
                return Err(denied);
            }
            up.activate(hash)?;
            Ok(())
        }
        BankState::Pending { image, .. } if &image.digest == hash => {
            if confirm {
                return Err(denied);
            }
            up.activate(hash)?;
            Ok(())
        }
        BankState::Confirmed(id) | BankState::Rejected(id) if &id.digest == hash => {
            up.rollback()?;
            Ok(())
        }
        _ => Err(NO_IMAGE),
    }
}

/// The fields of an upload request.
#[derive(Default)]
struct UploadRequest<'b> {
    image: Option<u32>,
    len: Option<u32>,
    off: Option<u64>,
    sha: Option<&'b [u8]>,
    data: &'b [u8],
    upgrade: bool,
}

impl<'b> UploadRequest<'b> {
    fn parse(body: &'b [u8]) -> Result<UploadRequest<'b>, Refusal> {
        let mut r = UploadRequest::default();
        cbor::fields(body, |k, d| {
            match k {
                "image" => r.image = Some(cbor::u32_value(d)?),
                // A length past u32 cannot fit any bank: refused as too large at start.
                "len" => r.len = Some(u32::try_from(d.u64()?).unwrap_or(u32::MAX)),
                "off" => r.off = Some(d.u64()?),
                "sha" => r.sha = Some(d.bytes()?),
                "data" => r.data = d.bytes()?,
                "upgrade" => r.upgrade = flag(d)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(r)
    }
}

impl Session {
    fn upload<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        body: &[u8],
    ) -> Result<Reply, Refusal> {
        let r = UploadRequest::parse(body)?;
        if r.image.is_some_and(|n| n > MAX_IMAGE_NUMBER) {
            return Err(Refusal::image(
                MgmtErr::Inval,
                ImgErr::InvalidSlot,
                "image number must be 0, 1 or 2 (all mean the bank that is not running)",
            ));
        }
        let off = r.off.ok_or(Refusal::image(
            MgmtErr::Inval,
            ImgErr::InvalidOffset,
            "off is required",
        ))?;
        let off = u32::try_from(off).map_err(|_| UpdateError::OutOfRange)?;
        match r.len {
            Some(len) if off == 0 => self.start(up, len, &r),
            _ => self.chunk(up, off, r.data),
        }
    }

    /// `off` 0 with `len`: a new upload, a resume, or a resend of the first chunk.
    fn start<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        len: u32,
        r: &UploadRequest<'_>,
    ) -> Result<Reply, Refusal> {
        let sha: [u8; 32] = r.sha.and_then(|s| s.try_into().ok()).ok_or(BAD_HASH)?;
        let same = |image: &ImageId| image.size == len && image.digest == sha;
        if up
            .upload()
            .is_some_and(|p| p.kind == ReceivingKind::Streamed && same(&p.image))
        {
            return self.write(up, 0, r.data);
        }
        if self.completed == Some((len, sha)) {
            if let Some(reply) = self.complete_again(up, 0, r.data)? {
                return Ok(reply);
            }
        }
        self.completed = None;
        let header: [u8; HEADER_SIZE] = r
            .data
            .get(..HEADER_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or(Refusal::image(
            MgmtErr::Inval,
            ImgErr::InvalidImageHeader,
            "the first chunk must hold the 32-byte image header",
        ))?;
        up.begin_streamed(&StreamStart {
            header,
            len,
            sha,
            upgrade_only: r.upgrade,
        })?;
        self.write(up, 0, r.data)
    }

    /// A chunk at `off`.
    fn chunk<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        off: u32,
        data: &[u8],
    ) -> Result<Reply, Refusal> {
        if up
            .upload()
            .is_some_and(|p| p.kind == ReceivingKind::Streamed)
        {
            return self.write(up, off, data);
        }
        if self.completed.is_some() {
            if let Some(reply) = self.complete_again(up, off, data)? {
                return Ok(reply);
            }
        }
        // Nothing in progress (e.g. after a reset): start again from 0, which resumes.
        Ok(Reply {
            off: 0,
            matched: None,
        })
    }

    /// Bytes of the streamed upload in progress; the last one completes it.
    fn write<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        off: u32,
        data: &[u8],
    ) -> Result<Reply, Refusal> {
        let p = up.upload().ok_or(UpdateError::NoUpload)?;
        let next = match up.write(off, data) {
            Ok(next) => next,
            Err(UpdateError::OutOfOrder { expected }) => {
                return Ok(Reply {
                    off: expected,
                    matched: None,
                })
            }
            Err(e) => return Err(e.into()),
        };
        if next < p.image.size {
            return Ok(Reply {
                off: next,
                matched: None,
            });
        }
        up.finish_streamed()?;
        self.completed = Some((p.image.size, p.image.digest));
        Ok(Reply {
            off: p.image.size,
            matched: Some(true),
        })
    }

    /// Answers a resend to the upload completed in this session, while its image still waits
    /// (or was activated): `data` at `off` must be what the bank holds. `None` when that upload
    /// is gone.
    fn complete_again<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        off: u32,
        data: &[u8],
    ) -> Result<Option<Reply>, Refusal> {
        let Some((len, _)) = self.completed else {
            return Ok(None);
        };
        let other = up.running().other();
        let still = current(up)?.is_some_and(|s| match *s.bank(other) {
            BankState::Receiving(r) => r.kind == ReceivingKind::Verified && r.image.size == len,
            BankState::Pending { image, .. } => image.size == len,
            _ => false,
        });
        if !still {
            self.completed = None;
            return Ok(None);
        }
        let end = u32::try_from(data.len())
            .ok()
            .and_then(|n| off.checked_add(n))
            .ok_or(UpdateError::OutOfRange)?;
        if end > len {
            return Err(UpdateError::OutOfRange.into());
        }
        let base = up.config().layout.bank(other).offset.0;
        let mut buf = [0u8; 64];
        for (i, sent) in data.chunks(buf.len()).enumerate() {
            let at = off + (i * buf.len()) as u32;
            let held = &mut buf[..sent.len()];
            read_exact(up.flash_mut(), base + at, held).map_err(UpdateError::Flash)?;
            if let Some(j) = held.iter().zip(sent).position(|(a, b)| a != b) {
                return Err(UpdateError::ContentMismatch {
                    offset: at + j as u32,
                }
                .into());
            }
        }
        Ok(Some(Reply {
            off: len,
            matched: Some(true),
        }))
    }
}
