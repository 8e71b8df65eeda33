//! Harness `delta`: patch files parsed, applied in memory ([`apply_to_slice`]) and through an
//! [`Applier`] into an [`Updater`] on a strict flash whose running bank holds the real base.
//!
//! The device runs a synthetic Thumb-2 firmware in bank A ([`synthetic_firmware`], what the
//! delta tests use); two real targets for bank B (one function grown, and a version bump with
//! the same code) are the only images a patch may rebuild: the target's manifest is checked,
//! signature included, before anything is erased, so a fuzzer can make a patch that is refused
//! or one that rebuilds a real target, nothing else.

use super::{ensure, fail, seed, Script, Seed};
use crate::boot::{decide, BootReason};
use crate::delta::encode::{make_patch, EncodeOptions, Normalisation};
use crate::delta::{apply_to_slice, Applier, DeltaError, PatchFile, PatchHeader};
use crate::image::{verify_image, ImageHeader, Version, HEADER_SIZE};
use crate::layout::Bank;
use crate::protocol::message::Request;
use crate::state::{BootState, ImageId};
use crate::testing::device::Device;
use crate::testing::invariants::{check_upload_boots, read_state, ImageSigner, Snapshot, Step};
use crate::testing::invariants::{region_bytes, Violation};
use crate::testing::{synthetic_firmware, StrictFlash};
use crate::update::{Manifest, Updater};
use crate::Config;
use std::sync::OnceLock;
use std::vec;
use std::vec::Vec;

/// Write size of the harness's flash.
const W: usize = 8;
/// Erase size of the harness's flash.
const E: usize = 1024;
/// Bank size of the harness's device (the synthetic firmware is ≈ 10 KiB).
pub const DELTA_BANK: u32 = 16 * 1024;
/// Seed of the synthetic program (the same one for base and targets).
const PROGRAM: u64 = 42;
/// The function the one-function change grows, and by how many halfwords.
const GROWN: (usize, usize) = (10, 9);
/// Control byte: the low bits choose the body chunk size in steps of this many bytes.
const CHUNK_STEP: usize = 32;
/// Control byte: mask of the chunk size bits.
const CHUNK_MASK: u8 = 0x3f;
/// Control byte: the interruption mode is in the top two bits.
const MODE_SHIFT: u8 = 6;
/// Size of the fixed header and target header before the TLV areas.
const FIXED: usize = crate::delta::PATCH_HEADER_SIZE + HEADER_SIZE;

/// What happens at the interruption point (the second control byte, as a fraction of the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// Nothing: the body is sent in one go.
    None,
    /// The host reconnects: `begin` again with the same applier (a resume).
    Reconnect,
    /// A power cut: a new updater and a new applier, `begin` again from scratch.
    PowerCut,
    /// A power cut that keeps the applier (a host that also restarted mid-patch).
    PowerCutKeepApplier,
}

/// The harness's device, provisioned with the base, and the images around it (made once).
struct Fixture {
    config: Config<'static>,
    signer: ImageSigner,
    /// The flash after provisioning (bank A = base, factory state record).
    flash: StrictFlash<W, E>,
    base: Vec<u8>,
    /// The images a successful patch may rebuild.
    targets: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut dev = match Device::<W, E>::new(DELTA_BANK) {
            Ok(d) => d,
            Err(_) => fail(Violation::Parser("delta layout")),
        };
        let layout = dev.layout();
        let code = |bank: Bank, grow| {
            synthetic_firmware(
                layout.bank_address(bank) + u32::from(dev.signer().header_size),
                PROGRAM,
                grow,
            )
        };
        let image = |bank, version, counter, payload: Vec<u8>| {
            dev.image(bank, version, counter, &payload)
                .unwrap_or_else(|v| fail(v))
        };
        let base = image(Bank::A, Version::new(1, 0, 0, 0), 1, code(Bank::A, None));
        let targets = vec![
            image(
                Bank::B,
                Version::new(2, 0, 0, 0),
                2,
                code(Bank::B, Some(GROWN)),
            ),
            image(Bank::B, Version::new(1, 0, 1, 0), 1, code(Bank::B, None)),
        ];
        if let Err(v) = dev.provision(&base) {
            fail(v);
        }
        let config = dev.config();
        let signer = dev.signer().clone();
        let flash = dev.flash().unwrap_or_else(|v| fail(v)).clone();
        Fixture {
            config,
            signer,
            flash,
            base,
            targets,
        }
    })
}

/// Checks the parsers' own properties: a header that parses re-encodes to its bytes, and a file
/// that parses is exactly its parts.
fn check_parsers(patch: &[u8]) {
    let header = PatchHeader::parse(patch);
    if let Ok(h) = &header {
        ensure(
            patch.get(..crate::delta::PATCH_HEADER_SIZE) == Some(&h.to_bytes()[..]),
            "a patch header that parses re-encodes to its bytes",
        );
    }
    match (PatchFile::parse(patch), header) {
        (Ok(f), Ok(h)) => {
            ensure(f.header == h, "the file's header is the header");
            ensure(
                f.header_bytes == &patch[..crate::delta::PATCH_HEADER_SIZE]
                    && patch.get(crate::delta::PATCH_HEADER_SIZE..FIXED) == Some(&f.target_header),
                "the file's parts are where the format puts them",
            );
            let parts = FIXED + f.protected_tlvs.len() + f.tlvs.len() + f.body.len();
            ensure(
                parts == patch.len()
                    && f.protected_tlvs.len() == usize::from(h.protected_len)
                    && f.tlvs.len() == usize::from(h.tlvs_len)
                    && f.body.len() as u64 == u64::from(h.body_len),
                "the file's parts have the lengths its header gives",
            );
        }
        (Ok(_), Err(_)) => fail(Violation::Parser("a file parses without its header")),
        (Err(_), _) => {}
    }
}

/// The boot-relevant part of the state: which bank boots, what the running bank holds, the
/// minimum security counter. Nothing short of a successful `finish` may change it.
fn boot_view(s: &BootState) -> (Bank, crate::state::BankState, u32) {
    (s.preferred, *s.bank(Bank::A), s.min_security_counter)
}

/// The checks during one input: the snapshot of the last check, the boot state before.
struct Run {
    initial: (Bank, crate::state::BankState, u32),
    last: Snapshot,
}

impl Run {
    /// Invariants after a step that did not complete the update: the state decodes, bank A (the
    /// running one) keeps its bytes, and the boot-relevant state is what it was.
    fn check(&mut self, bytes: &[u8]) {
        self.last = self
            .last
            .check(bytes, Step::Accepted)
            .unwrap_or_else(|v| fail(v));
        match self.last.state() {
            Some(s) if boot_view(s) == self.initial => {}
            Some(_) => fail(Violation::Parser(
                "a patch that did not finish changed the boot state",
            )),
            None => fail(Violation::StateLost),
        }
    }
}

/// Applies `f` through an applier, chunk by chunk, interrupted as `mode` says at body offset
/// `stop`; checks the invariants after every call. `Ok` is `finish`'s image.
fn through_updater(
    run: &mut Run,
    flash: &mut StrictFlash<W, E>,
    config: Config<'static>,
    f: &PatchFile<'_>,
    chunk: usize,
    mode: Interrupt,
    stop: usize,
) -> Result<ImageId, DeltaError> {
    let manifest = Manifest::from_parts(f.target_header, f.protected_tlvs, f.tlvs)
        .map_err(|e| DeltaError::Update(crate::update::UpdateError::Image(e)))?;
    let open = |flash| {
        Updater::new(flash, config, Bank::A).unwrap_or_else(|_| fail(Violation::NotRunning))
    };
    let mut applier = Applier::new();
    let before = flash.bytes().to_vec();
    let mut up = open(flash.clone());
    let result = applier_steps(
        run,
        &mut up,
        &mut applier,
        open,
        f,
        &manifest,
        &before,
        chunk,
        mode,
        stop,
    );
    *flash = up.into_flash();
    result
}

/// The calls of [`through_updater`], on its updater.
#[allow(clippy::too_many_arguments)]
fn applier_steps(
    run: &mut Run,
    up: &mut Updater<'static, StrictFlash<W, E>>,
    applier: &mut Applier,
    open: impl Fn(StrictFlash<W, E>) -> Updater<'static, StrictFlash<W, E>>,
    f: &PatchFile<'_>,
    manifest: &Manifest,
    before: &[u8],
    chunk: usize,
    mode: Interrupt,
    stop: usize,
) -> Result<ImageId, DeltaError> {
    let config = *up.config();
    let began = applier.begin(up, &f.header, manifest);
    let bytes = up.flash_mut().bytes().to_vec();
    if let Err(e) = began {
        ensure(bytes == before, "a refused DeltaBegin wrote nothing");
        return Err(e);
    }
    ensure(began == Ok(0), "a new patch starts at body offset 0");
    run.check(&bytes);
    let body = f.body;
    let mut next = 0usize;
    let mut interrupted = mode == Interrupt::None;
    while next < body.len() {
        if !interrupted && next >= stop {
            interrupted = true;
            if mode != Interrupt::Reconnect {
                let mut cut = up.flash_mut().clone();
                cut.power_on();
                let boot = decide(&mut cut.clone(), &config)
                    .unwrap_or_else(|e| fail(Violation::NotBootable(e)));
                ensure(boot.bank == Bank::A, "a cut patch boots the running bank");
                if mode == Interrupt::PowerCut {
                    *applier = Applier::new();
                }
                *up = open(cut);
            }
            let resumed = applier.begin(up, &f.header, manifest);
            let bytes = up.flash_mut().bytes().to_vec();
            run.check(&bytes);
            let from = resumed? as usize;
            ensure(
                from == 0 || (mode != Interrupt::PowerCut && from == next),
                "a patch resumes where it stopped, or from the start",
            );
            next = from;
        }
        let end = (next + chunk).min(body.len());
        let written = applier.write(up, next as u32, &body[next..end]);
        let bytes = up.flash_mut().bytes().to_vec();
        run.check(&bytes);
        let n = written? as usize;
        ensure(n > next && n <= body.len(), "a body chunk makes progress");
        next = n;
    }
    let finished = applier.finish(up);
    if finished.is_err() {
        let bytes = up.flash_mut().bytes().to_vec();
        run.check(&bytes);
    }
    finished
}

/// Harness `delta`: the input is two control bytes and a patch file.
///
/// - control byte 0: bits 0–5 the body chunk size (1 + 32 × n bytes), bits 6–7 an interruption
///   (none, host reconnect, power cut, power cut keeping the applier's RAM);
/// - control byte 1: where the interruption falls, as a fraction (n / 256) of the body.
///
/// Checked: a patch header that parses re-encodes to its bytes and a patch file is exactly its
/// parts; [`apply_to_slice`] never panics. Through the updater: a refused `begin` writes
/// nothing; after every call the state decodes, the running bank keeps every byte, and the
/// boot-relevant state (preferred bank, bank A's record, minimum security counter) is unchanged
/// unless `finish` succeeded; an interruption boots the running bank. A `finish` that succeeds
/// leaves one of the real targets in bank B (every byte its signature covers), which verifies,
/// is pending, boots on trial,
/// and is what [`apply_to_slice`] makes of the same patch; conversely, when [`apply_to_slice`]
/// rebuilds a real target from a patch that announces that target's manifest, the applier
/// completes too. At the end a valid full upload still
/// completes and boots.
pub fn delta(data: &[u8]) {
    let _ = delta_outcome(data);
}

/// Runs the `delta` harness and returns what the applier made of the patch (for tests that
/// check a seed does what its name says).
pub fn delta_outcome(data: &[u8]) -> Result<ImageId, DeltaError> {
    let fx = fixture();
    let mut script = Script { data };
    let control = script.byte();
    let at = script.byte();
    let patch = script.data;
    check_parsers(patch);

    let layout = fx.config.layout;
    let mut out = vec![0u8; layout.bank_size() as usize];
    let pure = apply_to_slice(&fx.base, patch, &mut out);
    let pure_image = match pure {
        Ok(n) => {
            ensure(n <= out.len(), "apply_to_slice stays in its buffer");
            Some(&out[..n])
        }
        Err(_) => None,
    };

    let mut flash = fx.flash.clone();
    let initial = read_state(flash.bytes(), &layout).unwrap_or_else(|| fail(Violation::StateLost));
    let mut run = Run {
        initial: boot_view(&initial),
        last: Snapshot::take(flash.bytes(), &layout, Some(Bank::A)),
    };
    let chunk = 1 + usize::from(control & CHUNK_MASK) * CHUNK_STEP;
    let mode = match control >> MODE_SHIFT {
        0 => Interrupt::None,
        1 => Interrupt::Reconnect,
        2 => Interrupt::PowerCut,
        _ => Interrupt::PowerCutKeepApplier,
    };
    let outcome = match PatchFile::parse(patch) {
        Ok(f) => {
            let stop = f.body.len() * usize::from(at) / 256;
            through_updater(&mut run, &mut flash, fx.config, &f, chunk, mode, stop)
        }
        Err(e) => Err(e),
    };

    let bank_b = region_bytes(flash.bytes(), layout.bank(Bank::B)).to_vec();
    // A real target in everything its signature covers (header, payload, protected TLVs). The
    // unprotected TLV area is not authenticated (MCUboot's format): a patch may rebuild it with
    // other bytes — e.g. the key-hash TLV's type changed to one the verifier skips — and the
    // image still verifies against the same signature, as it would uploaded whole.
    let real = |image: &[u8]| {
        fx.targets
            .iter()
            .any(|t| signed_part(t).is_some_and(|s| signed_part(image) == Some(s)))
    };
    match outcome {
        Ok(id) => {
            let size = id.size as usize;
            ensure(
                bank_b.get(..size).is_some_and(real),
                "a finished patch rebuilt a real target (every signed byte)",
            );
            ensure(
                pure_image == bank_b.get(..size),
                "apply_to_slice makes what the applier wrote",
            );
            let state =
                read_state(flash.bytes(), &layout).unwrap_or_else(|| fail(Violation::StateLost));
            ensure(
                state.preferred == Bank::B
                    && matches!(state.bank(Bank::B), crate::state::BankState::Pending { image, .. } if *image == id),
                "a finished patch is pending in bank B",
            );
            let params = fx.config.verify_params(Bank::B, state.min_security_counter);
            let verified =
                verify_image(&mut flash, &params).unwrap_or_else(|e| fail(Violation::Manifest(e)));
            ensure(
                ImageId::of(&verified) == id,
                "the rebuilt image verifies as itself",
            );
            flash.power_on();
            let boot = decide(&mut flash.clone(), &fx.config)
                .unwrap_or_else(|e| fail(Violation::NotBootable(e)));
            ensure(
                boot.bank == Bank::B && matches!(boot.reason, BootReason::Trial { .. }),
                "a finished patch boots on trial",
            );
        }
        Err(_) => {
            // The ops rebuild the protected TLVs too, so a patch whose announced manifest was
            // altered can still make a real target in memory: the device refuses it at `begin`
            // (the manifest is what it checks before erasing), and it must.
            let announced_real = PatchFile::parse(patch).is_ok_and(|f| {
                pure_image.is_some_and(|image| {
                    fx.targets.iter().any(|t| {
                        t.as_slice() == image
                            && manifest_parts(t)
                                == Some((
                                    f.target_header.to_vec(),
                                    f.protected_tlvs.to_vec(),
                                    f.tlvs.to_vec(),
                                ))
                    })
                })
            });
            ensure(
                !announced_real,
                "a patch that announces and rebuilds a real target is applied on the device",
            );
            flash.power_on();
            let boot = decide(&mut flash.clone(), &fx.config)
                .unwrap_or_else(|e| fail(Violation::NotBootable(e)));
            ensure(
                boot.bank == Bank::A,
                "a refused patch boots the running bank",
            );
        }
    }
    if let Err(v) = check_upload_boots(&flash, &fx.config, &fx.signer) {
        fail(v);
    }
    outcome
}

/// The bytes of `image` its hash and signature cover: header, payload, protected TLVs.
fn signed_part(image: &[u8]) -> Option<&[u8]> {
    let header = ImageHeader::parse(image.get(..HEADER_SIZE)?.try_into().ok()?).ok()?;
    image.get(..usize::try_from(header.hashed_len()).ok()?)
}

/// The manifest parts of an image as a patch announces them: header, protected TLVs, TLVs.
fn manifest_parts(image: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    match Request::upload_begin(image).ok()? {
        Request::UploadBegin {
            header,
            protected_tlvs,
            tlvs,
        } => Some((header.to_vec(), protected_tlvs.to_vec(), tlvs.to_vec())),
        _ => None,
    }
}

/// Control bytes of a seed: chunk `n` × 32 + 1, interruption `mode` at `at` / 256.
fn control(n: u8, mode: u8, at: u8) -> [u8; 2] {
    [(n & CHUNK_MASK) | (mode << MODE_SHIFT), at]
}

pub(super) fn seeds() -> Vec<Seed> {
    let fx = fixture();
    let patch = |target: &[u8], normalisation| {
        let o = EncodeOptions {
            normalisation,
            ..EncodeOptions::default()
        };
        make_patch(&fx.base, target, &o)
            .map(|p| p.bytes)
            .unwrap_or_else(|_| fail(Violation::Parser("the encoder makes the seed patches")))
    };
    let grown = patch(&fx.targets[0], Normalisation::Map);
    let bump = patch(&fx.targets[1], Normalisation::Map);
    let raw = patch(&fx.targets[0], Normalisation::Off);
    let with = |c: [u8; 2], p: &[u8]| {
        let mut v = c.to_vec();
        v.extend_from_slice(p);
        v
    };
    let truncated = &grown[..grown.len() - grown.len() / 3];
    let mut corrupted = grown.clone();
    // A body byte in the middle, so the header, manifest and base checks pass.
    let body_mid = grown.len() - (grown.len() - FIXED) / 4;
    corrupted[body_mid] ^= 0x5a;
    vec![
        seed("one-function", with(control(15, 0, 0), &grown)),
        seed("version-bump", with(control(3, 0, 0), &bump)),
        seed("raw-base", with(control(31, 0, 0), &raw)),
        seed("reconnect", with(control(7, 1, 128), &grown)),
        seed("power-cut", with(control(7, 2, 100), &grown)),
        seed("power-cut-keep-ram", with(control(1, 3, 200), &bump)),
        seed("truncated", with(control(15, 0, 0), truncated)),
        seed("corrupted", with(control(15, 0, 0), &corrupted)),
    ]
}
