//! The invariants a device keeps after every step, written once and checked the same way by the
//! randomised tests (`device/tests/robustness.rs`, `device/tests/protocol_fuzz.rs`), the
//! [`super::device::Device`] rig and the fuzz targets ([`super::fuzz`]).
//!
//! After any step (a request, a boot, hostile flash contents):
//! 1. **the state decodes**: once the state region holds a valid record it always does, and a
//!    pending bank is the preferred bank;
//! 2. **the running bank is byte-for-byte unchanged**;
//! 3. **a refused request changes neither the state region nor a confirmed image**, except that
//!    an upload in progress it gave up is recorded empty (a `finish` whose image fails
//!    verification: nothing else of the state moves); a query or a boot changes no bank at all;
//! 4. **a bank recorded confirmed before and after a step keeps its bytes**;
//! 5. **a following valid upload completes and boots** ([`check_upload_boots`]): after a reset
//!    (and a confirm when the running image is on trial, as its health check would do), a new
//!    signed image for the other bank uploads, activates, and the next boot runs it on trial,
//!    while the bank that ran keeps its bytes.
//!
//! [`Snapshot::take`] before a step and [`Snapshot::check`] after it check 1–4;
//! [`check_upload_boots`] checks 5 on a copy of the flash, so the device under test is left as it
//! was.

extern crate std;

use super::{OnViolation, StrictError, StrictFlash};
use crate::boot::{decide, BootDecision, BootError, BootReason};
use crate::flash::SliceFlash;
use crate::image::encode::{EncodeError, ImageBuilder};
use crate::image::{DeviceIds, ImageError, Version};
use crate::layout::{Bank, Layout, Region};
use crate::protocol::MAX_CHUNK;
use crate::state::{BankState, BootState, StateStore};
use crate::update::{Manifest, UpdateError, Updater};
use crate::Config;
use core::fmt;
use ed25519_dalek::SigningKey;
use std::vec::Vec;

/// What kind of step a [`Snapshot`] is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A request that only reads (`Info`, `Status`, `Reboot` before the reset): nothing changes.
    Query,
    /// A refused request: the state region and confirmed images are unchanged; the bank being
    /// written may change (a failed `finish` erases its first sector).
    Refused,
    /// An accepted request: the state and the bank being written may change.
    Accepted,
    /// A boot decision: the state may change (an attempt spent, a rollback), no bank may.
    Boot,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Query => "a query",
            Step::Refused => "a refused request",
            Step::Accepted => "an accepted request",
            Step::Boot => "a boot",
        })
    }
}

/// Where the upload of [`check_upload_boots`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadStage {
    /// Opening the updater (scanning the state).
    Open,
    /// Confirming the running trial image before the upload.
    Confirm,
    /// `begin` with the new image's manifest.
    Begin,
    /// Sending the image bytes.
    Write,
    /// `finish`: verification and activation.
    Finish,
}

impl fmt::Display for UploadStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UploadStage::Open => "open",
            UploadStage::Confirm => "confirm",
            UploadStage::Begin => "begin",
            UploadStage::Write => "write",
            UploadStage::Finish => "finish",
        })
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A NOR flash rule was broken (a unit programmed twice, a misaligned access).
    Flash(StrictError),
    /// The state region held a valid record before the step and none after it.
    StateLost,
    /// A pending bank is not the preferred bank.
    PendingNotPreferred(Bank),
    /// The running bank changed.
    RunningBankChanged {
        /// The running bank.
        bank: Bank,
        /// First differing byte, from the bank start.
        offset: usize,
    },
    /// The state region changed in a step that must not change it.
    StateChanged(Step),
    /// A bank changed in a step that must not change it.
    BankChanged {
        /// The step.
        step: Step,
        /// The bank.
        bank: Bank,
        /// First differing byte, from the bank start.
        offset: usize,
    },
    /// A bank recorded confirmed before and after the step changed.
    ConfirmedImageChanged {
        /// The bank.
        bank: Bank,
        /// First differing byte, from the bank start.
        offset: usize,
    },
    /// The updater's view of the state differs from the newest record in flash.
    ViewDiffers,
    /// The device does not boot.
    NotBootable(BootError),
    /// A test image could not be built.
    Encode(EncodeError),
    /// A test image's manifest does not read.
    Manifest(ImageError),
    /// A valid upload was refused or failed.
    UploadFailed {
        /// Where it stopped.
        stage: UploadStage,
        /// Why.
        error: UpdateError,
    },
    /// After a valid upload the device did not boot the new image on trial.
    UploadNotBooted {
        /// The bank the new image went to.
        expected: Bank,
        /// What booted.
        booted: BootDecision,
    },
    /// The device answered a frame with something that breaks the protocol.
    BadResponse(&'static str),
    /// A request was made to a device that is not running.
    NotRunning,
    /// A state store operation that must succeed failed.
    Store(crate::state::StateError),
    /// The state store disagrees with what its region holds.
    StoreDisagrees(&'static str),
    /// A parser broke a property its callers rely on.
    Parser(&'static str),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Flash(e) => write!(f, "NOR flash rule broken: {e:?}"),
            Violation::StateLost => f.write_str("the boot state was lost"),
            Violation::PendingNotPreferred(b) => {
                write!(f, "bank {b} is pending but not preferred")
            }
            Violation::RunningBankChanged { bank, offset } => {
                write!(f, "the running bank {bank} changed at byte {offset:#x}")
            }
            Violation::StateChanged(step) => write!(f, "{step} changed the state region"),
            Violation::BankChanged { step, bank, offset } => {
                write!(f, "{step} changed bank {bank} at byte {offset:#x}")
            }
            Violation::ConfirmedImageChanged { bank, offset } => write!(
                f,
                "the confirmed image in bank {bank} changed at byte {offset:#x}"
            ),
            Violation::ViewDiffers => {
                f.write_str("the updater's state differs from the newest record in flash")
            }
            Violation::NotBootable(e) => write!(f, "the device does not boot: {e}"),
            Violation::Encode(e) => write!(f, "test image: {e}"),
            Violation::Manifest(e) => write!(f, "test image manifest: {e}"),
            Violation::UploadFailed { stage, error } => {
                write!(f, "a valid upload failed at {stage}: {error}")
            }
            Violation::UploadNotBooted { expected, booted } => write!(
                f,
                "after a valid upload to bank {expected} the device booted bank {} ({})",
                booted.bank, booted.reason
            ),
            Violation::BadResponse(why) => write!(f, "bad response: {why}"),
            Violation::NotRunning => f.write_str("the device is not running"),
            Violation::Store(e) => write!(f, "state store: {e}"),
            Violation::StoreDisagrees(why) => write!(f, "state store: {why}"),
            Violation::Parser(why) => write!(f, "parser: {why}"),
        }
    }
}

impl std::error::Error for Violation {}

/// The bytes of `region` in a flash image (empty when the image is too short).
pub fn region_bytes(flash: &[u8], region: Region) -> &[u8] {
    let start = region.offset.0 as usize;
    flash
        .get(start..start.saturating_add(region.size.0 as usize))
        .unwrap_or(&[])
}

/// The newest valid state in a flash image, as the device would read it.
pub fn read_state(flash: &[u8], layout: &Layout) -> Option<BootState> {
    StateStore::peek(&mut SliceFlash(flash), layout)
        .ok()
        .flatten()
}

/// Offset of the first byte where `a` and `b` differ (a length difference counts), if any.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

/// Invariant 1 on one state: a pending bank is the preferred bank.
pub fn check_state(state: &BootState) -> Result<(), Violation> {
    for bank in Bank::ALL {
        if matches!(state.bank(bank), BankState::Pending { .. }) && state.preferred != bank {
            return Err(Violation::PendingNotPreferred(bank));
        }
    }
    Ok(())
}

/// What a step must preserve, taken before it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    layout: Layout,
    running: Option<Bank>,
    state_region: Vec<u8>,
    banks: [Vec<u8>; 2],
    state: Option<BootState>,
}

impl Snapshot {
    /// Takes a snapshot of the flash image `flash` of a device with `layout`, running from
    /// `running` (`None` before the first boot).
    pub fn take(flash: &[u8], layout: &Layout, running: Option<Bank>) -> Snapshot {
        Snapshot {
            layout: *layout,
            running,
            state_region: region_bytes(flash, layout.state()).to_vec(),
            banks: Bank::ALL.map(|b| region_bytes(flash, layout.bank(b)).to_vec()),
            state: read_state(flash, layout),
        }
    }

    /// The state when the snapshot was taken.
    pub fn state(&self) -> Option<&BootState> {
        self.state.as_ref()
    }

    /// The same snapshot for a device running from `running` (after a boot decision).
    pub fn with_running(self, running: Option<Bank>) -> Snapshot {
        Snapshot { running, ..self }
    }

    /// The running bank when the snapshot was taken.
    pub fn running(&self) -> Option<Bank> {
        self.running
    }

    /// Checks invariants 1–4 on `flash` after a step of kind `step`; returns the snapshot after
    /// it (for the next step; the state is only decoded again when its region changed).
    pub fn check(&self, flash: &[u8], step: Step) -> Result<Snapshot, Violation> {
        let state_region = region_bytes(flash, self.layout.state());
        let state_unchanged = state_region == self.state_region.as_slice();
        // Unchanged bytes decode to the same state: no need to scan again.
        let state = if state_unchanged {
            self.state
        } else {
            read_state(flash, &self.layout)
        };
        if self.state.is_some() && state.is_none() {
            return Err(Violation::StateLost);
        }
        if let Some(s) = &state {
            check_state(s)?;
        }
        if let Some(bank) = self.running {
            let now = region_bytes(flash, self.layout.bank(bank));
            if let Some(offset) = first_difference(&self.banks[bank.index()], now) {
                return Err(Violation::RunningBankChanged { bank, offset });
            }
        }
        let refusal_allowed = step == Step::Refused && upload_given_up(self.state, state);
        if matches!(step, Step::Query | Step::Refused) && !state_unchanged && !refusal_allowed {
            return Err(Violation::StateChanged(step));
        }
        for bank in Bank::ALL {
            let now = region_bytes(flash, self.layout.bank(bank));
            let Some(offset) = first_difference(&self.banks[bank.index()], now) else {
                continue;
            };
            if matches!(step, Step::Query | Step::Boot) {
                return Err(Violation::BankChanged { step, bank, offset });
            }
            let before = self.state.as_ref().map(|s| *s.bank(bank));
            let after = state.as_ref().map(|s| *s.bank(bank));
            if let (Some(BankState::Confirmed(a)), Some(BankState::Confirmed(b))) = (before, after)
            {
                if a == b {
                    return Err(Violation::ConfirmedImageChanged { bank, offset });
                }
            }
        }
        Ok(Snapshot {
            layout: self.layout,
            running: self.running,
            state_region: state_region.to_vec(),
            banks: Bank::ALL.map(|b| region_bytes(flash, self.layout.bank(b)).to_vec()),
            state,
        })
    }
}

/// Builds signed test images bound to a bank of a layout.
#[derive(Debug, Clone)]
pub struct ImageSigner {
    /// The signing key (its public key must be one the device trusts).
    pub key: SigningKey,
    /// Header size of the images.
    pub header_size: u16,
    /// Vendor and class ids the images carry.
    pub ids: DeviceIds,
}

impl ImageSigner {
    /// A signed image for `bank` of `layout`.
    pub fn image(
        &self,
        layout: &Layout,
        bank: Bank,
        version: Version,
        security_counter: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, EncodeError> {
        ImageBuilder {
            header_size: self.header_size,
            version,
            rom_fixed: Some(layout.bank_address(bank)),
            security_counter: Some(security_counter),
            vendor_id: self.ids.vendor,
            class_id: self.ids.class,
        }
        .sign(payload, &self.key)
    }
}

/// A deterministic test payload of `len` bytes; `seed` varies it (no run of 0xff, so every write
/// unit is programmed).
pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as u8 ^ seed)
        .collect()
}

/// Payload bytes of the image [`check_upload_boots`] installs (at most; less when the bank is
/// small).
pub const UPLOAD_PAYLOAD: usize = 1500;
/// Seed of the payload of that image: no other test image uses it.
pub const UPLOAD_SEED: u8 = 0xa5;
/// Version of that image.
pub const UPLOAD_VERSION: Version = Version::new(99, 0, 0, 0);
/// Room left in the bank for the header pad and the TLVs when sizing that payload.
const TLV_ROOM: usize = 512;

fn flash_violation<const W: usize, const E: usize>(
    flash: &StrictFlash<W, E>,
) -> Result<(), Violation> {
    match flash.violations.first() {
        Some(e) => Err(Violation::Flash(*e)),
        None => Ok(()),
    }
}

/// Invariant 5, on a copy of `flash` (the device under test is left untouched): the device
/// boots; a trial image is confirmed (its health check passes); a new image signed by `signer`
/// for the other bank, with the current minimum security counter, uploads in chunks and
/// activates; the next boot runs it on trial; the bank that ran keeps its bytes throughout.
/// Returns the final boot decision.
pub fn check_upload_boots<const W: usize, const E: usize>(
    flash: &StrictFlash<W, E>,
    config: &Config<'_>,
    signer: &ImageSigner,
) -> Result<BootDecision, Violation> {
    let mut f = flash.clone();
    f.power_on();
    f.clear_cut();
    f.violations.clear();
    f.set_on_violation(OnViolation::Error);
    let layout = config.layout;

    let booted = decide(&mut f, config);
    flash_violation(&f)?;
    let booted = booted.map_err(Violation::NotBootable)?;
    let running = booted.bank;
    let before = Snapshot::take(f.bytes(), &layout, Some(running));

    let target = running.other();
    let fail = |stage| move |error| Violation::UploadFailed { stage, error };
    let image = {
        let mut up = Updater::new(&mut f, *config, running).map_err(fail(UploadStage::Open))?;
        let state = *up.state().ok_or(Violation::StateLost)?;
        if matches!(state.bank(running), BankState::Pending { .. }) {
            up.confirm().map_err(fail(UploadStage::Confirm))?;
        }
        let min_counter = up.state().map_or(0, |s| s.min_security_counter);
        let room = (layout.bank_size() as usize)
            .saturating_sub(signer.header_size as usize + TLV_ROOM)
            .min(UPLOAD_PAYLOAD);
        let image = signer
            .image(
                &layout,
                target,
                UPLOAD_VERSION,
                min_counter,
                &payload(room, UPLOAD_SEED),
            )
            .map_err(Violation::Encode)?;
        let manifest = Manifest::read(&mut SliceFlash(&image), image.len() as u32)
            .map_err(Violation::Manifest)?;
        let mut next = up.begin(&manifest).map_err(fail(UploadStage::Begin))? as usize;
        while next < image.len() {
            let end = (next + MAX_CHUNK).min(image.len());
            let sent = up
                .write(next as u32, &image[next..end])
                .map_err(fail(UploadStage::Write))? as usize;
            if sent <= next {
                return Err(Violation::UploadFailed {
                    stage: UploadStage::Write,
                    error: UpdateError::OutOfOrder {
                        expected: sent as u32,
                    },
                });
            }
            next = sent;
        }
        up.finish().map_err(fail(UploadStage::Finish))?;
        image
    };
    flash_violation(&f)?;
    let installed = before.check(f.bytes(), Step::Accepted)?;
    let after = decide(&mut f, config);
    flash_violation(&f)?;
    let after = after.map_err(Violation::NotBootable)?;
    let written = region_bytes(f.bytes(), layout.bank(target));
    let trial = matches!(after.reason, BootReason::Trial { .. });
    if after.bank != target || !trial || !written.starts_with(&image) {
        return Err(Violation::UploadNotBooted {
            expected: target,
            booted: after,
        });
    }
    installed.check(f.bytes(), Step::Boot)?;
    Ok(after)
}

/// True when `after` is `before` with one bank that was receiving an upload recorded empty and
/// nothing else changed: the one state change a refusal may make (docs/design.md: an upload
/// whose image fails verification at `finish` gives up its bank; the running bank, the
/// preferred bank and the minimum counter stay).
fn upload_given_up(before: Option<BootState>, after: Option<BootState>) -> bool {
    let (Some(before), Some(after)) = (before, after) else {
        return false;
    };
    Bank::ALL.into_iter().any(|b| {
        let mut expected = before;
        *expected.bank_mut(b) = BankState::Empty;
        matches!(before.bank(b), BankState::Receiving(_)) && expected == after
    })
}
