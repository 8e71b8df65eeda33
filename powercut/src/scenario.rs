//! The scenarios: a pre-state, a step (what is cut), what the device does after a reboot
//! (recovery), and the invariants.

use crate::flash::DevFlash;
use crate::world::{Img, ImgName, World, CHUNK, FACTORY_CHUNK};
use twinbank::state::ReceivingKind;
use twinbank::state::StateStore;
use twinbank::update::{StreamStart, Updater};
use twinbank::{Bank, BankState, BootDecision, BootError, BootReason, BootState};

/// Operator rollbacks in the compaction scenario (odd: the preferred bank flips).
pub const COMPACTION_CHANGES: usize = 5;

/// The scenarios of the issue (1–9), two more that hunt specific updater paths (10, 11), the
/// streamed upload and activation (12, 13), the delta install of issue 14 (14), and issue 10's
/// serial recovery, cancel and last-resort boot (15–19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sc {
    /// 1: factory provisioning of a confirmed image (image + Confirmed record, through flash ops).
    Provision = 1,
    /// 2: install + activate an update (begin, chunks, finish).
    Install = 2,
    /// 3: trial boot of a pending image (an attempt is spent).
    Trial = 3,
    /// 4: confirm.
    Confirm = 4,
    /// 5: reject.
    Reject = 5,
    /// 6: operator rollback to the other bank (and the reboot into it).
    Rollback = 6,
    /// 7: a second update over the bank that held the fallback.
    SecondUpdate = 7,
    /// 8: enough state changes to compact the state region (erase of the next sector).
    Compaction = 8,
    /// 9: the boot decision when the trial's attempts have run out (rollback).
    Decision = 9,
    /// 10: install of an image holding a run of 0xff bytes across a sector boundary.
    PaddedInstall = 10,
    /// 11: install of a rebuild whose header equals the rejected image's still in the bank.
    Rebuild = 11,
    /// 12: a streamed (SMP) upload: header checks, erase, chunks, full verification at the end;
    /// the image ends uploaded and verified, not active.
    StreamedInstall = 12,
    /// 13: activation of an uploaded, verified image (SMP `image test`): pending, preferred.
    Activate = 13,
    /// 14: a delta install (issue 14): a patch from the running image applied into the other
    /// bank; after a cut the patch is applied again from its start.
    DeltaInstall = 14,
    /// 15: serial recovery on a blank device (the factory line): `Updater::for_recovery` with
    /// nothing kept takes the factory image into bank A and activates it; after a cut the device
    /// finds nothing bootable (recovery again: the upload is sent again) or boots it on trial.
    RecoveryBlank = 15,
    /// 16: serial recovery asked for by the application: the running confirmed image (A) is
    /// kept, the upload goes into B and is activated.
    RecoveryInstall = 16,
    /// 17: serial recovery with a corrupted fallback: B holds the confirmed image that
    /// verifies, A's confirmed image has rotted; the upload goes into A (never into B).
    RecoveryOverCorrupted = 17,
    /// 18: cancel of an activated update before the reboot: the running image stays preferred.
    Cancel = 18,
    /// 19: the boot decision when the trial's attempts have run out and the fallback no longer
    /// verifies: the trial image boots again (last resort).
    LastResort = 19,
}

impl Sc {
    /// All scenarios.
    pub const ALL: [Sc; 19] = [
        Sc::Provision,
        Sc::Install,
        Sc::Trial,
        Sc::Confirm,
        Sc::Reject,
        Sc::Rollback,
        Sc::SecondUpdate,
        Sc::Compaction,
        Sc::Decision,
        Sc::PaddedInstall,
        Sc::Rebuild,
        Sc::StreamedInstall,
        Sc::Activate,
        Sc::DeltaInstall,
        Sc::RecoveryBlank,
        Sc::RecoveryInstall,
        Sc::RecoveryOverCorrupted,
        Sc::Cancel,
        Sc::LastResort,
    ];

    /// From its number.
    pub fn from_number(n: u8) -> Option<Sc> {
        Sc::ALL.into_iter().find(|s| *s as u8 == n)
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Sc::Provision => "provision",
            Sc::Install => "install",
            Sc::Trial => "trial boot",
            Sc::Confirm => "confirm",
            Sc::Reject => "reject",
            Sc::Rollback => "operator rollback",
            Sc::SecondUpdate => "second update",
            Sc::Compaction => "compaction",
            Sc::Decision => "boot decision",
            Sc::PaddedInstall => "install 0xff run",
            Sc::Rebuild => "install rebuild",
            Sc::StreamedInstall => "streamed install",
            Sc::Activate => "activate (test)",
            Sc::DeltaInstall => "delta install",
            Sc::RecoveryBlank => "recovery, blank",
            Sc::RecoveryInstall => "recovery install",
            Sc::RecoveryOverCorrupted => "recovery, bad A",
            Sc::Cancel => "cancel",
            Sc::LastResort => "last resort boot",
        }
    }

    /// For an install scenario: (running bank, image).
    fn install(self) -> Option<(Bank, ImgName)> {
        match self {
            Sc::Install => Some((Bank::A, ImgName::U1)),
            Sc::PaddedInstall => Some((Bank::A, ImgName::Pad)),
            Sc::SecondUpdate => Some((Bank::B, ImgName::U2)),
            Sc::Rebuild => Some((Bank::A, ImgName::U1b)),
            Sc::DeltaInstall => Some((Bank::A, ImgName::D)),
            Sc::RecoveryInstall => Some((Bank::A, ImgName::U1)),
            Sc::RecoveryOverCorrupted => Some((Bank::B, ImgName::U2)),
            _ => None,
        }
    }

    /// True for the serial-recovery install scenarios (the upload goes through
    /// `Updater::for_recovery`, keeping the running bank).
    fn recovery(self) -> bool {
        matches!(self, Sc::RecoveryInstall | Sc::RecoveryOverCorrupted)
    }

    /// True when the device may find nothing bootable after a cut (it then serves recovery).
    fn may_find_nothing(self) -> bool {
        matches!(self, Sc::Provision | Sc::RecoveryBlank)
    }

    /// True when the scenario may end without a confirmed image running (a trial or a
    /// last-resort image boots; liveness is then "a verified image boots").
    fn unconfirmed_end(self) -> bool {
        matches!(self, Sc::RecoveryBlank | Sc::LastResort)
    }

    /// True when the scenario can run in this world (10 needs an image larger than one sector).
    pub fn applies<const W: usize, const E: usize>(self, w: &World<W, E>) -> bool {
        match self.install() {
            Some((_, img)) => w.try_img(img).is_some(),
            None => true,
        }
    }
}

/// Why a session stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Power was cut (the expected outcome of a scheduled cut).
    Cut,
    /// An invariant failed, or the device returned an error it should not have.
    Fail(String),
}

/// What is run on a flash: the scenario's step, or a reboot and what the device does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// The scenario's step, from the pre-state.
    Step,
    /// After a power cut: the boot decision, then retry the scenario or carry on.
    Recover,
}

/// One scenario in one world, with what it needs to check the invariants.
pub struct Case<'w, const W: usize, const E: usize> {
    /// The world.
    pub w: &'w World<W, E>,
    /// The scenario.
    pub sc: Sc,
    /// The flash before the step.
    pub pre: DevFlash<W, E>,
    /// The state before the step (None for provisioning).
    pub pre_state: Option<BootState>,
    /// The state after an uncut step.
    pub expected: BootState,
    /// Images the boot decision may return: the old ones and the new one.
    allowed: Vec<ImgName>,
    /// The bank the step overwrites (its confirmed image may go).
    overwritten: Option<Bank>,
}

fn fail<T>(msg: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Fail(msg.into()))
}

/// Maps a device error: a power cut if power is off, else a failure.
fn dev_err<const W: usize, const E: usize>(
    flash: &DevFlash<W, E>,
    what: &str,
    e: impl core::fmt::Display,
) -> Stop {
    if flash.is_cut() {
        Stop::Cut
    } else if !flash.violations().is_empty() {
        Stop::Fail(format!(
            "{what} failed: {e}: NOR rule violation {:?}",
            flash.violations()
        ))
    } else {
        Stop::Fail(format!("{what} failed: {e}"))
    }
}

/// Checks that a call which returned Ok did not run into a cut (it would have ignored an error).
fn ok_after<const W: usize, const E: usize>(
    flash: &DevFlash<W, E>,
    what: &str,
) -> Result<(), Stop> {
    if flash.is_cut() {
        fail(format!(
            "{what} returned Ok although a flash operation failed (power cut)"
        ))
    } else {
        Ok(())
    }
}

/// The factory line: erase bank A, program the image, write the Confirmed record.
pub fn provision<const W: usize, const E: usize>(
    w: &World<W, E>,
    flash: &mut DevFlash<W, E>,
) -> Result<(), Stop> {
    use embedded_storage::nor_flash::NorFlash;
    let img = w.img(ImgName::F);
    let bank = w.layout.bank(Bank::A);
    let mut bytes = img.bytes.clone();
    bytes.resize(bytes.len().div_ceil(W) * W, 0xFF);
    let sectors = w.layout.sectors_spanning(bank, bytes.len() as u32);
    for s in 0..sectors {
        let Some(sector) = w.layout.sector_in(bank, s) else {
            break;
        };
        let from = sector.offset.0;
        flash
            .erase(from, from + sector.size.0)
            .map_err(|e| dev_err(flash, "factory erase", format!("{e:?}")))?;
    }
    for (i, chunk) in bytes.chunks(FACTORY_CHUNK).enumerate() {
        flash
            .write(bank.offset.0 + (i * FACTORY_CHUNK) as u32, chunk)
            .map_err(|e| dev_err(flash, "factory program", format!("{e:?}")))?;
    }
    let mut store =
        StateStore::open(flash, &w.layout).map_err(|e| dev_err(flash, "state open", e))?;
    store
        .write(flash, &BootState::factory(Bank::A, img.id, None))
        .map_err(|e| dev_err(flash, "factory state write", e))?;
    ok_after(flash, "provisioning")
}

/// The host streams `img` to a device running `running`: begin (or resume), chunks, finish.
pub fn upload<const W: usize, const E: usize>(
    w: &World<W, E>,
    flash: &mut DevFlash<W, E>,
    running: Bank,
    img: &Img,
) -> Result<(), Stop> {
    let r = (|| {
        let mut up = Updater::new(&mut *flash, w.config(), running).map_err(|e| ("open", e))?;
        let total = img.bytes.len();
        let mut next = up.begin(&img.manifest).map_err(|e| ("begin", e))? as usize;
        while next < total {
            let end = (next + CHUNK).min(total);
            next = up
                .write(next as u32, &img.bytes[next..end])
                .map_err(|e| ("write", e))? as usize;
        }
        up.finish().map_err(|e| ("finish", e))?;
        Ok(())
    })();
    match r {
        Ok(()) => ok_after(flash, "upload"),
        Err((what, e)) => Err(dev_err(
            flash,
            &format!("upload of {}: {what}", img.name),
            e,
        )),
    }
}

/// The host streams `img` to the bootloader's serial recovery (`Updater::for_recovery`, `keep`
/// the bank whose image verifies): begin (or resume), chunks, finish (activates).
pub fn upload_recovery<const W: usize, const E: usize>(
    w: &World<W, E>,
    flash: &mut DevFlash<W, E>,
    keep: Option<Bank>,
    img: &Img,
) -> Result<(), Stop> {
    let r = (|| {
        let mut up = Updater::for_recovery(
            &mut *flash,
            w.config(),
            keep,
            twinbank::image::SoftSha256::default(),
        )
        .map_err(|e| ("open", e))?;
        let total = img.bytes.len();
        let mut next = up.begin(&img.manifest).map_err(|e| ("begin", e))? as usize;
        while next < total {
            let end = (next + CHUNK).min(total);
            next = up
                .write(next as u32, &img.bytes[next..end])
                .map_err(|e| ("write", e))? as usize;
        }
        up.finish().map_err(|e| ("finish", e))?;
        Ok(())
    })();
    match r {
        Ok(()) => ok_after(flash, "recovery upload"),
        Err((what, e)) => Err(dev_err(
            flash,
            &format!("recovery upload of {}: {what}", img.name),
            e,
        )),
    }
}

/// Bit rot in the payload of the image in `bank` (a few bytes flipped, outside any flash
/// operation): it no longer verifies.
fn rot<const W: usize, const E: usize>(w: &World<W, E>, flash: &mut DevFlash<W, E>, bank: Bank) {
    let at = w.layout.bank(bank).offset.0 as usize + twinbank::image::HEADER_SIZE + 16;
    for b in &mut flash.inner.bytes_mut()[at..at + 4] {
        *b ^= 0x5A;
    }
}

/// The host sends the patch from F to D to a device running `running`: the delta applier's
/// begin, the body in chunks, finish. Always from the patch's first byte (a restart after a cut
/// regenerates what the bank holds without programming it again).
pub fn apply_delta<const W: usize, const E: usize>(
    w: &World<W, E>,
    flash: &mut DevFlash<W, E>,
    running: Bank,
) -> Result<(), Stop> {
    use twinbank::delta::{Applier, PatchFile};
    let r = (|| {
        let p = PatchFile::parse(&w.delta_patch).map_err(|e| ("patch", e))?;
        let m = twinbank::Manifest::from_parts(p.target_header, p.protected_tlvs, p.tlvs)
            .map_err(|e| ("manifest", twinbank::delta::DeltaError::Update(e.into())))?;
        let mut up = Updater::new(&mut *flash, w.config(), running)
            .map_err(|e| ("open", twinbank::delta::DeltaError::Update(e)))?;
        let mut applier = Box::new(Applier::new());
        let mut next = applier
            .begin(&mut up, &p.header, &m)
            .map_err(|e| ("begin", e))? as usize;
        // Small chunks: the body is short, and each chunk is a point where the session may end.
        let chunk = CHUNK / 8;
        while next < p.body.len() {
            let end = (next + chunk).min(p.body.len());
            next = applier
                .write(&mut up, next as u32, &p.body[next..end])
                .map_err(|e| ("write", e))? as usize;
        }
        applier.finish(&mut up).map_err(|e| ("finish", e))?;
        Ok(())
    })();
    match r {
        Ok(()) => ok_after(flash, "delta install"),
        Err((what, e)) => Err(dev_err(flash, &format!("delta install: {what}"), e)),
    }
}

/// The step of an install scenario: the whole image, or the patch for the delta scenario.
fn install_step<const W: usize, const E: usize>(
    w: &World<W, E>,
    flash: &mut DevFlash<W, E>,
    sc: Sc,
    running: Bank,
    img: &Img,
) -> Result<(), Stop> {
    if sc == Sc::DeltaInstall {
        apply_delta(w, flash, running)
    } else if sc.recovery() {
        upload_recovery(w, flash, Some(running), img)
    } else {
        upload(w, flash, running, img)
    }
}

/// An SMP client streams `img` to a device running `running`: the first chunk (header) with the
/// file's length and SHA-256 (a resume answers where to go on), chunks, and the full
/// verification when the last byte arrived. The image ends uploaded and verified, not active.
pub fn upload_streamed<const W: usize, const E: usize>(
    w: &World<W, E>,
    flash: &mut DevFlash<W, E>,
    running: Bank,
    img: &Img,
) -> Result<(), Stop> {
    let r = (|| {
        let mut up = Updater::new(&mut *flash, w.config(), running).map_err(|e| ("open", e))?;
        let total = img.bytes.len();
        let mut header = [0u8; twinbank::image::HEADER_SIZE];
        header.copy_from_slice(&img.bytes[..twinbank::image::HEADER_SIZE]);
        let start = StreamStart {
            header,
            len: total as u32,
            sha: img.file_sha,
            upgrade_only: false,
        };
        up.begin_streamed(&start).map_err(|e| ("begin", e))?;
        // As SMP does: the first chunk always goes out from 0; bytes already there compare.
        let first = CHUNK.min(total);
        let mut next = up.write(0, &img.bytes[..first]).map_err(|e| ("write", e))? as usize;
        while next < total {
            let end = (next + CHUNK).min(total);
            next = up
                .write(next as u32, &img.bytes[next..end])
                .map_err(|e| ("write", e))? as usize;
        }
        up.finish_streamed().map_err(|e| ("finish", e))?;
        Ok(())
    })();
    match r {
        Ok(()) => ok_after(flash, "streamed upload"),
        Err((what, e)) => Err(dev_err(
            flash,
            &format!("streamed upload of {}: {what}", img.name),
            e,
        )),
    }
}

/// True when `bank` holds `img` uploaded and verified, waiting for activation.
fn uploaded(state: &BootState, bank: Bank, img: &Img) -> bool {
    matches!(state.bank(bank), BankState::Receiving(r)
        if r.kind == ReceivingKind::Verified && r.image == img.id)
}

fn updater_call<const W: usize, const E: usize, T>(
    w: &World<W, E>,
    flash: &mut DevFlash<W, E>,
    running: Bank,
    what: &str,
    f: impl FnOnce(&mut Updater<'_, &mut DevFlash<W, E>>) -> Result<T, twinbank::UpdateError>,
) -> Result<T, Stop> {
    let r = Updater::new(&mut *flash, w.config(), running).and_then(|mut up| f(&mut up));
    match r {
        Ok(v) => ok_after(flash, what).map(|_| v),
        Err(e) => Err(dev_err(flash, what, e)),
    }
}

/// Builds the flash before `sc`'s step (uncut, through the device API).
fn setup<const W: usize, const E: usize>(w: &World<W, E>, sc: Sc) -> Result<DevFlash<W, E>, Stop> {
    let mut f = w.blank();
    if matches!(sc, Sc::Provision | Sc::RecoveryBlank) {
        return Ok(f);
    }
    provision(w, &mut f)?;
    let boot = |f: &mut DevFlash<W, E>| {
        twinbank::decide(f, &w.config()).map_err(|e| Stop::Fail(format!("setup boot: {e}")))
    };
    match sc {
        Sc::Install
        | Sc::PaddedInstall
        | Sc::StreamedInstall
        | Sc::DeltaInstall
        | Sc::RecoveryInstall => {}
        Sc::Cancel => upload(w, &mut f, Bank::A, w.img(ImgName::U1))?,
        Sc::LastResort => {
            upload(w, &mut f, Bank::A, w.img(ImgName::U1))?;
            for _ in 0..w.attempts() {
                boot(&mut f)?;
            }
            rot(w, &mut f, Bank::A);
        }
        Sc::RecoveryOverCorrupted => {
            upload(w, &mut f, Bank::A, w.img(ImgName::U1))?;
            boot(&mut f)?;
            updater_call(w, &mut f, Bank::B, "setup confirm", |u| u.confirm())?;
            rot(w, &mut f, Bank::A);
        }
        Sc::Activate => upload_streamed(w, &mut f, Bank::A, w.img(ImgName::U1))?,
        Sc::Decision => {
            upload(w, &mut f, Bank::A, w.img(ImgName::U1))?;
            for _ in 0..w.attempts() {
                boot(&mut f)?;
            }
        }
        Sc::Trial => upload(w, &mut f, Bank::A, w.img(ImgName::U1))?,
        Sc::Confirm | Sc::Reject | Sc::Rebuild => {
            upload(w, &mut f, Bank::A, w.img(ImgName::U1))?;
            boot(&mut f)?;
            if sc == Sc::Rebuild {
                updater_call(w, &mut f, Bank::B, "setup reject", |u| u.reject())?;
                boot(&mut f)?;
            }
        }
        Sc::SecondUpdate | Sc::Rollback | Sc::Compaction => {
            upload(w, &mut f, Bank::A, w.img(ImgName::U1))?;
            boot(&mut f)?;
            updater_call(w, &mut f, Bank::B, "setup confirm", |u| u.confirm())?;
            if sc != Sc::SecondUpdate {
                upload(w, &mut f, Bank::B, w.img(ImgName::U2))?;
                boot(&mut f)?;
                updater_call(w, &mut f, Bank::A, "setup confirm", |u| u.confirm())?;
            }
            if sc == Sc::Compaction {
                // Fill the current state sector to two slots short of full, so the step's
                // changes cross into the next sector (erase + first slots).
                let slots = w.slots();
                let mut guard = 0;
                while w.state_fill(&f).map(|(_, used)| used) != Some(slots - 2) {
                    let d = boot(&mut f)?;
                    updater_call(w, &mut f, d.bank, "setup rollback", |u| u.rollback())?;
                    guard += 1;
                    if guard > 4 * slots {
                        return fail("setup: could not position the state ring");
                    }
                }
            }
        }
        Sc::Provision | Sc::RecoveryBlank => {}
    }
    if !f.violations().is_empty() {
        return fail(format!("setup: NOR violations {:?}", f.violations()));
    }
    Ok(f)
}

impl<'w, const W: usize, const E: usize> Case<'w, W, E> {
    /// Prepares `sc` in `w`.
    pub fn new(w: &'w World<W, E>, sc: Sc) -> Result<Case<'w, W, E>, Stop> {
        let mut pre = setup(w, sc)?;
        let pre_state = w.read_state(&mut pre);
        let f = w.img(ImgName::F).id;
        let u1 = w.img(ImgName::U1).id;
        let ps = pre_state.unwrap_or(BootState::factory(Bank::A, f, None));
        let pending = |id| BankState::Pending {
            image: id,
            attempts_left: w.attempts(),
        };
        let mut expected = ps;
        let (allowed, overwritten) = match sc {
            Sc::Provision => (vec![ImgName::F], Some(Bank::A)),
            Sc::Install
            | Sc::PaddedInstall
            | Sc::Rebuild
            | Sc::SecondUpdate
            | Sc::DeltaInstall
            | Sc::RecoveryInstall
            | Sc::RecoveryOverCorrupted => {
                let (running, img) = sc.install().expect("install scenario");
                let target = running.other();
                *expected.bank_mut(target) = pending(w.img(img).id);
                expected.preferred = target;
                let old = if running == Bank::A {
                    ImgName::F
                } else {
                    ImgName::U1
                };
                (vec![old, img], Some(target))
            }
            Sc::Trial => {
                *expected.bank_mut(Bank::B) = BankState::Pending {
                    image: u1,
                    attempts_left: w.attempts() - 1,
                };
                (vec![ImgName::F, ImgName::U1], None)
            }
            Sc::StreamedInstall => {
                let spanned = w.layout.sectors_spanning(w.layout.bank(Bank::B), u1.size);
                *expected.bank_mut(Bank::B) = BankState::Receiving(twinbank::state::Receiving {
                    image: u1,
                    from_sector: spanned as u16,
                    erased: true,
                    kind: ReceivingKind::Verified,
                });
                (vec![ImgName::F], Some(Bank::B))
            }
            Sc::Activate => {
                *expected.bank_mut(Bank::B) = pending(u1);
                expected.preferred = Bank::B;
                (vec![ImgName::F, ImgName::U1], None)
            }
            Sc::Confirm => {
                *expected.bank_mut(Bank::B) = BankState::Confirmed(u1);
                expected.min_security_counter = u1.security_counter;
                (vec![ImgName::F, ImgName::U1], None)
            }
            Sc::Reject | Sc::Decision => {
                *expected.bank_mut(Bank::B) = BankState::Rejected(u1);
                expected.preferred = Bank::A;
                (vec![ImgName::F, ImgName::U1], None)
            }
            Sc::Rollback => {
                expected.preferred = Bank::B;
                (vec![ImgName::U2, ImgName::U1], None)
            }
            Sc::Compaction => {
                if COMPACTION_CHANGES % 2 == 1 {
                    expected.preferred = ps.preferred.other();
                }
                (vec![ImgName::U2, ImgName::U1], None)
            }
            // The expected end of these is the uncut step's, run on a copy below.
            Sc::RecoveryBlank => (vec![ImgName::F], Some(Bank::A)),
            Sc::Cancel => (vec![ImgName::F, ImgName::U1], None),
            // Bank A's rotted image may be marked rejected by the decision.
            Sc::LastResort => (vec![ImgName::U1], Some(Bank::A)),
        };
        let mut case = Case {
            w,
            sc,
            pre: pre.clone(),
            pre_state,
            expected,
            allowed,
            overwritten,
        };
        if matches!(sc, Sc::RecoveryBlank | Sc::Cancel | Sc::LastResort) {
            let mut f = pre.clone();
            case.run(&mut f, Session::Step)?;
            case.expected = w
                .read_state(&mut f)
                .ok_or_else(|| Stop::Fail("setup: no state after the uncut step".into()))?;
        }
        Ok(case)
    }

    /// A boot: the decision, checked. `None` only for "no bootable image" while provisioning.
    fn boot(&self, flash: &mut DevFlash<W, E>) -> Result<Option<BootDecision>, Stop> {
        let r = twinbank::decide(flash, &self.w.config());
        match r {
            Ok(d) => {
                ok_after(flash, "boot decision")?;
                self.check_decision(flash, &d)?;
                Ok(Some(d))
            }
            Err(_) if flash.is_cut() => Err(Stop::Cut),
            Err(BootError::NoBootableImage { .. }) if self.sc.may_find_nothing() => Ok(None),
            Err(e) => fail(format!("boot decision failed: {e}")),
        }
    }

    /// The decision boots a bank that holds one of the allowed images, verified (byte-identical to
    /// a signed image whose counter the state accepts), recorded for that bank as confirmed or as
    /// pending with the attempt spent.
    fn check_decision(&self, flash: &mut DevFlash<W, E>, d: &BootDecision) -> Result<(), Stop> {
        let Some(state) = self.w.read_state(flash) else {
            return fail(format!(
                "boot decision {:?} but no valid state record",
                d.bank
            ));
        };
        let entry = *state.bank(d.bank);
        let id = match entry {
            BankState::Confirmed(id) => id,
            BankState::Pending {
                image,
                attempts_left,
            } => {
                if d.reason != (BootReason::Trial { attempts_left }) {
                    return fail(format!(
                        "boots pending bank {} without spending an attempt ({}, state {entry})",
                        d.bank, d.reason
                    ));
                }
                image
            }
            // Issue 10's last resort: nothing else can boot, the state names this image as
            // rejected and it verifies (checked below like any booted image).
            BankState::Rejected(image) if matches!(d.reason, BootReason::LastResort { .. }) => {
                image
            }
            other => {
                return fail(format!("boots bank {} whose state is {other}", d.bank));
            }
        };
        let Some(img) = self
            .allowed
            .iter()
            .map(|n| self.w.img(*n))
            .find(|i| i.bank == d.bank && i.id == id)
        else {
            return fail(format!(
                "boots bank {} recorded as {entry}: neither the old nor the new image",
                d.bank
            ));
        };
        if !self.w.holds(flash, d.bank, img) {
            return fail(format!(
                "boots bank {} whose bytes are not the verified image {}",
                d.bank, img.name
            ));
        }
        if img.id.security_counter < state.min_security_counter {
            return fail(format!(
                "boots {} (counter {}) below the minimum counter {}",
                img.name, img.id.security_counter, state.min_security_counter
            ));
        }
        if d.version != img.id.version {
            return fail("decision reports another version than the bank holds");
        }
        Ok(())
    }

    /// Invariants on the flash between boots: no NOR violation, the state exists (once
    /// provisioned), the minimum counter never decreases and only a confirm (or the factory) raises
    /// it, confirmed images outside the overwritten bank are still there, a pending bank is the
    /// preferred one. `min` carries the last minimum observed.
    pub fn check_flash(
        &self,
        flash: &mut DevFlash<W, E>,
        min: &mut Option<u32>,
    ) -> Result<(), Stop> {
        if !flash.violations().is_empty() {
            return fail(format!("NOR rule violation: {:?}", flash.violations()));
        }
        let Some(state) = self.w.read_state(flash) else {
            if self.pre_state.is_none() {
                return Ok(());
            }
            return fail("the state was lost (no valid record)");
        };
        let m = state.min_security_counter;
        if let Some(prev) = *min {
            if m < prev {
                return fail(format!("minimum security counter decreased: {prev} -> {m}"));
            }
            if m > prev {
                let by_confirm = self.sc == Sc::Confirm
                    && matches!(state.bank(Bank::B), BankState::Confirmed(i) if i.security_counter == m);
                let by_factory =
                    self.sc == Sc::Provision && m == self.expected.min_security_counter;
                if !by_confirm && !by_factory {
                    return fail(format!(
                        "minimum security counter raised {prev} -> {m} without a confirm (state {})",
                        show(&state)
                    ));
                }
            }
        } else if self.pre_state.is_some() {
            return fail("harness: no previous minimum");
        }
        *min = Some(m);
        if let Some(pre) = &self.pre_state {
            for bank in Bank::ALL {
                if Some(bank) == self.overwritten {
                    continue;
                }
                if let BankState::Confirmed(id) = pre.bank(bank) {
                    if state.bank(bank) != &BankState::Confirmed(*id) {
                        return fail(format!(
                            "confirmed image of bank {bank} lost: now {}",
                            state.bank(bank)
                        ));
                    }
                    let img = self.w.by_digest(&id.digest).expect("known image");
                    if !self.w.holds(flash, bank, img) {
                        return fail(format!(
                            "confirmed image {} in bank {bank} damaged",
                            img.name
                        ));
                    }
                }
            }
        }
        for bank in Bank::ALL {
            if matches!(state.bank(bank), BankState::Pending { .. }) && state.preferred != bank {
                return fail(format!(
                    "pending bank {bank} is not the preferred one: {}",
                    show(&state)
                ));
            }
        }
        Ok(())
    }

    /// Runs a session on `flash` (powered on).
    pub fn run(&self, flash: &mut DevFlash<W, E>, session: Session) -> Result<(), Stop> {
        let w = self.w;
        match session {
            Session::Step => match self.sc {
                Sc::Provision => provision(w, flash),
                Sc::RecoveryBlank => upload_recovery(w, flash, None, w.img(ImgName::F)),
                Sc::Cancel => updater_call(w, flash, Bank::A, "cancel", |u| u.cancel()),
                Sc::LastResort => self.boot(flash).map(|_| ()),
                Sc::Install
                | Sc::PaddedInstall
                | Sc::Rebuild
                | Sc::SecondUpdate
                | Sc::DeltaInstall
                | Sc::RecoveryInstall
                | Sc::RecoveryOverCorrupted => {
                    let (running, img) = self.sc.install().expect("install");
                    install_step(w, flash, self.sc, running, w.img(img))
                }
                Sc::Trial | Sc::Decision => self.boot(flash).map(|_| ()),
                Sc::StreamedInstall => upload_streamed(w, flash, Bank::A, w.img(ImgName::U1)),
                Sc::Activate => {
                    let digest = w.img(ImgName::U1).id.digest;
                    updater_call(w, flash, Bank::A, "activate", |u| u.activate(&digest)).map(|_| ())
                }
                Sc::Confirm => updater_call(w, flash, Bank::B, "confirm", |u| u.confirm()),
                Sc::Reject => updater_call(w, flash, Bank::B, "reject", |u| u.reject()),
                Sc::Rollback => {
                    updater_call(w, flash, Bank::A, "rollback", |u| u.rollback())?;
                    self.boot(flash).map(|_| ())
                }
                Sc::Compaction => {
                    for _ in 0..COMPACTION_CHANGES {
                        let d = self.booted(flash)?;
                        updater_call(w, flash, d.bank, "rollback", |u| u.rollback())?;
                    }
                    self.boot(flash).map(|_| ())
                }
            },
            Session::Recover => {
                let d = self.boot(flash)?;
                self.carry_on(flash, d)
            }
        }
    }

    fn booted(&self, flash: &mut DevFlash<W, E>) -> Result<BootDecision, Stop> {
        match self.boot(flash)? {
            Some(d) => Ok(d),
            None => fail("no bootable image"),
        }
    }

    /// What the device (or the factory line, or the operator) does after the reboot.
    fn carry_on(&self, flash: &mut DevFlash<W, E>, d: Option<BootDecision>) -> Result<(), Stop> {
        let w = self.w;
        if self.sc == Sc::Provision {
            // The factory line saw the cut: it provisions again, then boots.
            provision(w, flash)?;
            return self.booted(flash).map(|_| ());
        }
        if self.sc == Sc::RecoveryBlank {
            // Nothing bootable: the shim serves recovery and the factory line sends the image
            // again (it resumes or starts afresh); then the device boots it.
            if d.is_none() {
                upload_recovery(w, flash, None, w.img(ImgName::F))?;
                self.booted(flash)?;
            }
            return Ok(());
        }
        let Some(d) = d else {
            return fail("no bootable image");
        };
        let state = w
            .read_state(flash)
            .ok_or_else(|| Stop::Fail("no state".into()))?;
        match self.sc {
            Sc::Install
            | Sc::PaddedInstall
            | Sc::Rebuild
            | Sc::SecondUpdate
            | Sc::DeltaInstall
            | Sc::RecoveryInstall
            | Sc::RecoveryOverCorrupted => {
                let (running, name) = self.sc.install().expect("install");
                let img = w.img(name);
                let done = matches!(
                    state.bank(running.other()),
                    BankState::Pending { image, .. } | BankState::Confirmed(image) | BankState::Rejected(image)
                        if *image == img.id
                );
                if d.bank == running && !done {
                    install_step(w, flash, self.sc, running, img)?;
                }
                Ok(())
            }
            Sc::StreamedInstall => {
                let img = w.img(ImgName::U1);
                if d.bank == Bank::A && !uploaded(&state, Bank::B, img) {
                    upload_streamed(w, flash, Bank::A, img)?;
                }
                Ok(())
            }
            Sc::Activate => {
                let img = w.img(ImgName::U1);
                if d.bank == Bank::A && uploaded(&state, Bank::B, img) {
                    updater_call(w, flash, Bank::A, "activate", |u| {
                        u.activate(&img.id.digest)
                    })?;
                }
                Ok(())
            }
            Sc::Confirm | Sc::Reject => {
                if d.bank == Bank::B && matches!(state.bank(Bank::B), BankState::Pending { .. }) {
                    if self.sc == Sc::Confirm {
                        updater_call(w, flash, Bank::B, "confirm", |u| u.confirm())
                    } else {
                        updater_call(w, flash, Bank::B, "reject", |u| u.reject())
                    }
                } else {
                    Ok(())
                }
            }
            Sc::Rollback => {
                if d.bank == Bank::A {
                    updater_call(w, flash, Bank::A, "rollback", |u| u.rollback())?;
                    self.booted(flash)?;
                }
                Ok(())
            }
            Sc::Compaction => {
                let mut d = d;
                for _ in 0..COMPACTION_CHANGES {
                    updater_call(w, flash, d.bank, "rollback", |u| u.rollback())?;
                    d = self.booted(flash)?;
                }
                Ok(())
            }
            // Cancel cut before its record: the trial goes ahead (the operator's cancel came
            // too late); after it: the running image boots. The last-resort decision is taken
            // again at the reboot.
            Sc::Trial
            | Sc::Decision
            | Sc::Provision
            | Sc::RecoveryBlank
            | Sc::Cancel
            | Sc::LastResort => Ok(()),
        }
    }

    /// Where the state may end up after a cut and its recovery.
    pub fn acceptable(&self, s: &BootState) -> bool {
        let w = self.w;
        let f = w.img(ImgName::F).id;
        let u1 = w.img(ImgName::U1).id;
        let both_ok = |s: &BootState| {
            s.bank(Bank::A) == &BankState::Confirmed(w.img(ImgName::U2).id)
                && s.bank(Bank::B) == &BankState::Confirmed(u1)
                && s.min_security_counter == 2
        };
        match self.sc {
            Sc::Provision => *s == self.expected,
            Sc::Install
            | Sc::PaddedInstall
            | Sc::Rebuild
            | Sc::SecondUpdate
            | Sc::DeltaInstall
            | Sc::RecoveryInstall
            | Sc::RecoveryOverCorrupted => {
                let (running, name) = self.sc.install().expect("install");
                let id = w.img(name).id;
                let pre = self.pre_state.expect("pre");
                let target = running.other();
                s.bank(running) == pre.bank(running)
                    && s.min_security_counter == pre.min_security_counter
                    && match s.bank(target) {
                        BankState::Pending { image, .. } => *image == id && s.preferred == target,
                        BankState::Rejected(image) => *image == id && s.preferred == running,
                        _ => false,
                    }
            }
            Sc::Trial | Sc::Confirm => {
                s.bank(Bank::A) == &BankState::Confirmed(f)
                    && match s.bank(Bank::B) {
                        BankState::Pending {
                            image,
                            attempts_left,
                        } => {
                            self.sc == Sc::Trial
                                && *image == u1
                                && *attempts_left < w.attempts()
                                && s.preferred == Bank::B
                                && s.min_security_counter == 1
                        }
                        BankState::Confirmed(image) => {
                            self.sc == Sc::Confirm
                                && *image == u1
                                && s.preferred == Bank::B
                                && s.min_security_counter == 2
                        }
                        BankState::Rejected(image) => {
                            *image == u1 && s.preferred == Bank::A && s.min_security_counter == 1
                        }
                        _ => false,
                    }
            }
            Sc::Reject | Sc::Decision => *s == self.expected,
            Sc::Rollback => *s == self.expected,
            Sc::StreamedInstall => *s == self.expected,
            Sc::Activate => {
                s.bank(Bank::A) == &BankState::Confirmed(f)
                    && s.min_security_counter == 1
                    && s.preferred == Bank::B
                    && matches!(s.bank(Bank::B), BankState::Pending { image, .. } if *image == u1)
            }
            Sc::Compaction => both_ok(s),
            // F on trial in A (attempts spent by the boots after the cuts), nothing in B.
            Sc::RecoveryBlank => {
                s.preferred == Bank::A
                    && s.bank(Bank::B) == &BankState::Empty
                    && matches!(s.bank(Bank::A), BankState::Pending { image, .. } if *image == f)
            }
            // Cancelled, or (cut before the cancel's record) the trial went ahead.
            Sc::Cancel => {
                *s == self.expected
                    || (s.bank(Bank::A) == &BankState::Confirmed(f)
                        && s.preferred == Bank::B
                        && s.min_security_counter == 1
                        && matches!(s.bank(Bank::B), BankState::Pending { image, attempts_left }
                            if *image == u1 && *attempts_left < w.attempts()))
            }
            Sc::LastResort => *s == self.expected,
        }
    }

    /// Boots (uncut, on a copy) until a confirmed image runs: must happen within attempts + 1
    /// boots.
    pub fn check_liveness(&self, flash: &DevFlash<W, E>) -> Result<(), Stop> {
        let mut f = flash.clone();
        if self.sc.unconfirmed_end() {
            // A verified image boots (on trial, or as the last resort): never a dead device.
            return self.booted(&mut f).map(|_| ());
        }
        for _ in 0..=self.w.attempts() {
            let d = self.booted(&mut f)?;
            let state = self.w.read_state(&mut f).expect("state after a boot");
            if matches!(state.bank(d.bank), BankState::Confirmed(_)) {
                return Ok(());
            }
        }
        fail(format!(
            "no confirmed image booted within {} boots",
            self.w.attempts() + 1
        ))
    }
}

/// A compact rendering of a state.
pub fn show(s: &BootState) -> String {
    format!(
        "[A {}, B {}, preferred {}, min {}]",
        s.bank(Bank::A),
        s.bank(Bank::B),
        s.preferred,
        s.min_security_counter
    )
}
