//! Delta updates through the updater, on the strict flash: a patch from the running image
//! rebuilds the next one in the other bank, byte for byte; a wrong base is refused before any
//! erase; corrupt, truncated and random patches are refused without a panic and lose nothing;
//! an interrupted patch restarts and regenerates the bytes already written without programming
//! them again; a host may switch to a full upload of the same image.

mod common;
use common::*;
use twinbank::delta::encode::{make_patch, EncodeOptions, Normalisation};
use twinbank::delta::{apply_to_slice, Applier, Corruption, DeltaError, PatchFile, PatchHeader};
use twinbank::testing::{synthetic_firmware, SplitMix64, StrictFlash};
use twinbank::{Bank, BankState, UpdateError};

const W: usize = 8;
const E: usize = 1024;

/// A base for bank A and a target for bank B: the same synthetic program, one function grown.
fn pair(rig: &Rig<W, E>) -> (Vec<u8>, Vec<u8>) {
    let a = rig.layout.bank_address(Bank::A) + HEADER as u32;
    let b = rig.layout.bank_address(Bank::B) + HEADER as u32;
    let base = rig
        .builder(Bank::A, v(1), 1)
        .sign(&synthetic_firmware(a, 42, None), &rig.key)
        .unwrap();
    let target = rig
        .builder(Bank::B, v(2), 2)
        .sign(&synthetic_firmware(b, 42, Some((10, 9))), &rig.key)
        .unwrap();
    (base, target)
}

/// Applies `patch` through an applier in chunks of `chunk` bytes, stopping after `stop` body
/// bytes when given. Returns the updater's result of `finish` (or of the first failure).
fn apply(
    rig: &mut Rig<W, E>,
    applier: &mut Applier,
    patch: &[u8],
    chunk: usize,
    stop: Option<usize>,
) -> Result<Option<twinbank::ImageId>, DeltaError> {
    let p = PatchFile::parse(patch)?;
    let m = twinbank::Manifest::from_parts(p.target_header, p.protected_tlvs, p.tlvs).unwrap();
    let mut up = rig.updater(Bank::A);
    let mut next = applier.begin(&mut up, &p.header, &m)? as usize;
    while next < p.body.len() {
        if stop.is_some_and(|s| next >= s) {
            return Ok(None);
        }
        let end = (next + chunk)
            .min(p.body.len())
            .min(stop.unwrap_or(usize::MAX));
        next = applier.write(&mut up, next as u32, &p.body[next..end])? as usize;
    }
    applier.finish(&mut up).map(Some)
}

#[test]
fn a_patch_rebuilds_the_target_and_it_is_activated() {
    let mut rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    rig.provision(&base);
    let patch = make_patch(&base, &target, &EncodeOptions::default()).unwrap();
    assert!(
        patch.bytes.len() * 10 < target.len(),
        "one grown function: {} of {} bytes",
        patch.bytes.len(),
        target.len()
    );
    assert!(patch.segments > 0, "the map records the moved code");
    let mut applier = Applier::new();
    let id = apply(&mut rig, &mut applier, &patch.bytes, 100, None)
        .unwrap()
        .unwrap();
    assert_eq!(id, manifest(&target).image_id());
    assert_eq!(&rig.bank_bytes(Bank::B)[..target.len()], &target[..]);
    assert_eq!(
        rig.bank_bytes(Bank::A)[..base.len()],
        base[..],
        "base untouched"
    );
    let s = rig.state();
    assert_eq!(s.preferred, Bank::B);
    assert!(matches!(s.bank(Bank::B), BankState::Pending { image, .. } if *image == id));
    let d = rig.boot().unwrap();
    assert_eq!(d.bank, Bank::B);
}

#[test]
fn normalisation_makes_the_patch_smaller() {
    let rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    let size = |normalisation| {
        let o = EncodeOptions {
            normalisation,
            ..EncodeOptions::default()
        };
        make_patch(&base, &target, &o).unwrap().bytes.len()
    };
    let (off, rebase, map) = (
        size(Normalisation::Off),
        size(Normalisation::Rebase),
        size(Normalisation::Map),
    );
    assert!(map < rebase && rebase < off, "{map} < {rebase} < {off}");
    for bytes in [off, rebase] {
        // Every variant is a valid patch.
        let o = EncodeOptions {
            normalisation: Normalisation::Off,
            ..EncodeOptions::default()
        };
        let p = make_patch(&base, &target, &o).unwrap();
        let mut out = vec![0u8; target.len()];
        assert_eq!(apply_to_slice(&base, &p.bytes, &mut out), Ok(target.len()));
        assert_eq!(out, target);
        assert!(bytes > 0);
    }
}

#[test]
fn a_wrong_base_is_refused_before_anything_is_written() {
    let mut rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    let other = rig.image(Bank::A, v(1), 1, 9);
    rig.provision(&other);
    let patch = make_patch(&base, &target, &EncodeOptions::default()).unwrap();
    let before = rig.flash.bytes().to_vec();
    rig.flash.reset_counters();
    let e = apply(&mut rig, &mut Applier::new(), &patch.bytes, 512, None).unwrap_err();
    assert!(matches!(e, DeltaError::WrongBase { .. }), "{e:?}");
    assert!(e.to_string().contains("another base image"), "{e}");
    assert_eq!(rig.flash.bytes(), &before[..], "nothing written");
    assert_eq!(rig.flash.counters.erases + rig.flash.counters.writes, 0);
}

#[test]
fn a_patch_with_a_bad_signature_is_refused_before_any_erase() {
    let mut rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    rig.provision(&base);
    let mut patch = make_patch(&base, &target, &EncodeOptions::default())
        .unwrap()
        .bytes;
    // The last byte of the unprotected TLVs (the Ed25519 signature) of the target.
    let p = PatchFile::parse(&patch).unwrap();
    let sig_end = 96 + p.protected_tlvs.len() + p.tlvs.len() - 1;
    patch[sig_end] ^= 1;
    let before = rig.flash.bytes().to_vec();
    let e = apply(&mut rig, &mut Applier::new(), &patch, 512, None).unwrap_err();
    assert_eq!(
        e,
        DeltaError::Update(UpdateError::Image(twinbank::ImageError::BadSignature))
    );
    assert_eq!(rig.flash.bytes(), &before[..]);
}

/// Applies a damaged patch on a fresh device: refused (at begin, while applying, or at
/// finish), never a panic; the running image and its state are intact and still boot.
fn refused_and_nothing_lost(patch: &[u8], rig_base: &[u8]) -> DeltaError {
    let mut rig = Rig::<W, E>::new();
    rig.provision(rig_base);
    let e = match apply(&mut rig, &mut Applier::new(), patch, 333, None) {
        Ok(id) => panic!("a damaged patch was accepted: {id:?}"),
        Err(e) => e,
    };
    assert_eq!(rig.bank_bytes(Bank::A)[..rig_base.len()], rig_base[..]);
    let s = rig.state();
    assert!(matches!(s.bank(Bank::A), BankState::Confirmed(_)));
    assert_eq!(s.preferred, Bank::A);
    assert!(!s.bank(Bank::B).may_boot(), "{}", s.bank(Bank::B));
    assert_eq!(rig.boot().unwrap().bank, Bank::A);
    e
}

#[test]
fn corrupt_truncated_and_random_patches_are_refused() {
    let rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    let patch = make_patch(&base, &target, &EncodeOptions::default())
        .unwrap()
        .bytes;
    let body_at = patch.len() - PatchFile::parse(&patch).unwrap().body.len();
    // Every body byte flipped in turn (a sample of the positions, every bit pattern kind).
    let mut rng = SplitMix64(7);
    let mut crc = 0;
    for k in 0..40 {
        let mut bad = patch.clone();
        let at = body_at + (rng.next_u64() as usize % (patch.len() - body_at));
        bad[at] ^= 1 << (k % 8);
        if refused_and_nothing_lost(&bad, &base) == DeltaError::Corrupt(Corruption::Crc) {
            crc += 1;
        }
    }
    assert!(crc > 0, "some corruptions are only found by the CRC");
    // Truncated: the header says more than the file has.
    for cut in [10, 64, 100, patch.len() - 1] {
        assert_eq!(
            refused_and_nothing_lost(&patch[..cut], &base),
            DeltaError::BadHeader
        );
    }
    // A body cut short with a consistent header: the ops end early.
    let p = PatchFile::parse(&patch).unwrap();
    let mut h: PatchHeader = p.header;
    let short = &p.body[..p.body.len() / 2];
    h.body_len = short.len() as u32;
    h.body_crc = !twinbank::delta::apply::crc32c_update(0xFFFF_FFFF, short);
    let mut cut = h.to_bytes().to_vec();
    cut.extend_from_slice(&patch[64..body_at]);
    cut.extend_from_slice(short);
    assert_eq!(
        refused_and_nothing_lost(&cut, &base),
        DeltaError::Corrupt(Corruption::Truncated)
    );
    // Random bodies behind a valid header and manifest, their CRC fixed up.
    for seed in 0..30 {
        let mut rng = SplitMix64(seed);
        let body: Vec<u8> = (0..1 + rng.next_u64() % 600)
            .map(|_| rng.next_u64() as u8)
            .collect();
        let mut h = p.header;
        h.body_len = body.len() as u32;
        h.body_crc = !twinbank::delta::apply::crc32c_update(0xFFFF_FFFF, &body);
        let mut bad = h.to_bytes().to_vec();
        bad.extend_from_slice(&patch[64..body_at]);
        bad.extend_from_slice(&body);
        refused_and_nothing_lost(&bad, &base);
    }
}

#[test]
fn random_bytes_never_panic_the_pure_entry_point() {
    let rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    let patch = make_patch(&base, &target, &EncodeOptions::default())
        .unwrap()
        .bytes;
    let mut out = vec![0u8; 64 * 1024];
    let hashed = manifest(&target).header.hashed_len() as usize;
    let mut rng = SplitMix64(3);
    for i in 0..3000 {
        let mut p = patch.clone();
        match i % 3 {
            0 => {
                for _ in 0..1 + rng.next_u64() % 8 {
                    let at = rng.next_u64() as usize % p.len();
                    p[at] = rng.next_u64() as u8;
                }
            }
            1 => p.truncate(rng.next_u64() as usize % p.len()),
            _ => {
                p = (0..rng.next_u64() % 300)
                    .map(|_| rng.next_u64() as u8)
                    .collect()
            }
        }
        if let Ok(n) = apply_to_slice(&base, &p, &mut out) {
            // Only a patch whose body survived can succeed: with the target's header intact,
            // the ops produce the target's bytes (a changed header or TLV from the manifest
            // parts is refused when the result is verified, as on the device).
            assert_eq!(n, target.len());
            if p.get(64..96) == patch.get(64..96) {
                assert!(out[32..hashed] == target[32..hashed], "mutation {i}");
            }
        }
    }
}

#[test]
fn an_interrupted_patch_restarts_and_skips_what_is_in_the_bank() {
    let mut rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    rig.provision(&base);
    let patch = make_patch(&base, &target, &EncodeOptions::default())
        .unwrap()
        .bytes;
    let body = PatchFile::parse(&patch).unwrap().body.len();
    // Power is lost after half the body (a new applier and updater: nothing kept in RAM).
    assert_eq!(
        apply(&mut rig, &mut Applier::new(), &patch, 64, Some(body / 2)),
        Ok(None)
    );
    assert!(matches!(rig.state().bank(Bank::B), BankState::Receiving(_)));
    rig.flash.reset_counters();
    let id = apply(&mut rig, &mut Applier::new(), &patch, 64, None)
        .unwrap()
        .unwrap();
    assert_eq!(&rig.bank_bytes(Bank::B)[..target.len()], &target[..]);
    assert_eq!(id, manifest(&target).image_id());
    let programmed = rig.flash.counters.bytes_written as usize;
    assert!(
        programmed < target.len(),
        "the regenerated bytes before the resume point were not programmed again: {programmed} \
         of {}",
        target.len()
    );
}

#[test]
fn the_same_patch_continues_where_it_stopped_in_one_session() {
    let mut rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    rig.provision(&base);
    let patch = make_patch(&base, &target, &EncodeOptions::default())
        .unwrap()
        .bytes;
    let p = PatchFile::parse(&patch).unwrap();
    let m = twinbank::Manifest::from_parts(p.target_header, p.protected_tlvs, p.tlvs).unwrap();
    let mut applier = Applier::new();
    let mut up = rig.updater(Bank::A);
    assert_eq!(applier.begin(&mut up, &p.header, &m), Ok(0));
    let half = p.body.len() / 2;
    assert_eq!(applier.write(&mut up, 0, &p.body[..half]), Ok(half as u32));
    // The host lost the link and begins again: the device goes on from where it is.
    assert_eq!(applier.begin(&mut up, &p.header, &m), Ok(half as u32));
    // A resend of bytes already taken is ignored; a gap is refused.
    assert_eq!(applier.write(&mut up, 0, &p.body[..10]), Ok(half as u32));
    assert_eq!(
        applier.write(&mut up, half as u32 + 1, &p.body[half + 1..]),
        Err(DeltaError::OutOfOrder {
            expected: half as u32
        })
    );
    assert_eq!(
        applier.finish(&mut up),
        Err(DeltaError::Incomplete {
            received: half as u32,
            total: p.body.len() as u32
        })
    );
    applier
        .write(&mut up, half as u32, &p.body[half..])
        .unwrap();
    applier.finish(&mut up).unwrap();

    assert_eq!(&rig.bank_bytes(Bank::B)[..target.len()], &target[..]);
}

#[test]
fn a_full_upload_of_the_same_image_resumes_an_interrupted_patch() {
    let mut rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    rig.provision(&base);
    let patch = make_patch(&base, &target, &EncodeOptions::default())
        .unwrap()
        .bytes;
    let body = PatchFile::parse(&patch).unwrap().body.len();
    apply(
        &mut rig,
        &mut Applier::new(),
        &patch,
        64,
        Some(body * 3 / 4),
    )
    .unwrap();
    let mut up = rig.updater(Bank::A);
    let resume = up.begin(&manifest(&target)).unwrap() as usize;
    assert!(resume > 0, "the full upload resumes the patch's bytes");
    let mut next = resume;
    while next < target.len() {
        let end = (next + 500).min(target.len());
        next = up.write(next as u32, &target[next..end]).unwrap() as usize;
    }
    up.finish().unwrap();

    assert_eq!(&rig.bank_bytes(Bank::B)[..target.len()], &target[..]);
}

#[test]
fn a_bank_written_by_a_corrupt_patch_is_started_afresh() {
    let mut rig = Rig::<W, E>::new();
    let (base, target) = pair(&rig);
    rig.provision(&base);
    let patch = make_patch(&base, &target, &EncodeOptions::default())
        .unwrap()
        .bytes;
    let p = PatchFile::parse(&patch).unwrap();
    // Stage the bank as a power cut during a corrupt patch would leave it: the target's bytes
    // with a wrong one early on, recorded as receiving this image.
    let mut wrong = target.clone();
    wrong[0x500] ^= 0xFF;
    let m = manifest(&target);
    {
        let mut up = rig.updater(Bank::A);
        up.begin(&m).unwrap();
        up.write(0, &wrong[..wrong.len() / 2]).unwrap();
    }
    let mut applier = Applier::new();
    let mut up = rig.updater(Bank::A);
    assert_eq!(applier.begin(&mut up, &p.header, &m), Ok(0));
    let e = applier.write(&mut up, 0, p.body).unwrap_err();
    assert!(
        matches!(e, DeltaError::Update(UpdateError::ContentMismatch { .. })),
        "{e:?}"
    );

    assert_eq!(rig.state().bank(Bank::B), &BankState::Empty, "cancelled");
    // The next attempt starts afresh and succeeds.
    apply(&mut rig, &mut applier, &patch, 200, None)
        .unwrap()
        .unwrap();
    assert_eq!(&rig.bank_bytes(Bank::B)[..target.len()], &target[..]);
}

#[test]
fn an_applier_fits_the_ram_budget() {
    let n = core::mem::size_of::<Applier>();
    assert!(n <= 8 * 1024, "{n} bytes");
    let _ = StrictFlash::<W, E>::new(E * 4);
}
