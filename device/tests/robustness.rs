//! Hostile flash contents: nothing read from flash makes the crate panic, no corrupted image
//! verifies, and the device invariants hold after each. Deterministic (seeded) so a failure
//! replays.

mod common;
use common::*;
use twinbank::flash::SliceFlash;
use twinbank::image::verify_image;
use twinbank::testing::invariants::{check_upload_boots, Snapshot, Step};
use twinbank::testing::{SplitMix64, StrictFlash};
use twinbank::update::Manifest;
use twinbank::Bank;

/// Every single-bit flip in the signed part (header, payload, protected TLVs) or in the hash and
/// signature makes verification fail. A flip in unauthenticated TLV metadata (e.g. the KEYHASH
/// entry's type) may still verify, but then it is the same signed content.
#[test]
fn every_bit_flip_is_refused() {
    let rig = Rig::<4, 4096>::new();
    let img = rig.image(Bank::A, v(1), 1, 1);
    let params = twinbank::image::VerifyParams {
        offset: 0,
        ..rig.config().verify_params(Bank::A, 0)
    };
    let original = verify_image(&mut SliceFlash(&img), &params).unwrap();
    let hashed = original.header.hashed_len() as usize;
    let signature = img.len() - 64;
    let hash_value = hashed + 4 + 4..hashed + 4 + 4 + 32;
    // All bits of the header, TLVs and a sample of the payload (every 97th byte).
    let tlv_start = HEADER as usize + PAYLOAD;
    let bytes: Vec<usize> = (0..32)
        .chain((32..tlv_start).step_by(97))
        .chain(tlv_start..img.len())
        .collect();
    for &i in &bytes {
        for bit in 0..8 {
            let mut t = img.clone();
            t[i] ^= 1 << bit;
            let r = verify_image(&mut SliceFlash(&t), &params);
            if i < hashed || i >= signature || hash_value.contains(&i) {
                assert!(r.is_err(), "flip of byte {i} bit {bit} verified");
            } else if let Ok(v) = r {
                assert_eq!(v.digest, original.digest, "byte {i} bit {bit}");
            }
        }
    }
}

/// Random state regions and random banks: the boot decision and the updater return, never panic,
/// and the invariants hold (`twinbank::testing::invariants`): the boot changes no bank and loses
/// no state; an intact image still boots; a device that boots takes a valid upload and boots it.
#[test]
fn random_flash_keeps_the_invariants() {
    let mut rng = SplitMix64(7);
    let (mut booted, mut bricked) = (0, 0);
    for round in 0..300 {
        let mut rig = Rig::<4, 4096>::new();
        let img = rig.image(Bank::A, v(1), 1, 1);
        rig.provision(&img);
        let mut bytes = rig.flash.bytes().to_vec();
        let len = bytes.len();
        // Scribble over some of: the state region, the start and the end of bank A.
        let regions = [
            (0usize, 2 * 4096usize),
            (2 * 4096, 64),
            (2 * 4096 + img.len() - 200, 200),
        ];
        for (start, n) in regions {
            if rng.next_u64().is_multiple_of(2) {
                continue;
            }
            for b in &mut bytes[start..(start + n).min(len)] {
                if rng.next_u64().is_multiple_of(4) {
                    *b = rng.next_u64() as u8;
                }
            }
        }
        // As if programmed: every unit that reads non-erased is programmed, so the strict flash
        // panics if a scribbled slot is ever written.
        rig.flash = StrictFlash::from_bytes(&bytes);
        let intact = rig.bank_bytes(Bank::A).starts_with(&img);
        let before = Snapshot::take(rig.flash.bytes(), &rig.layout, None);
        let decision = rig.boot();
        before
            .check(rig.flash.bytes(), Step::Boot)
            .unwrap_or_else(|v| panic!("round {round}: {v}"));
        match decision {
            Ok(d) => {
                assert_eq!(d.bank, Bank::A, "round {round}");
                booted += 1;
                check_upload_boots(&rig.flash, &rig.config(), &rig.signer())
                    .unwrap_or_else(|v| panic!("round {round}: {v}"));
            }
            Err(e) => {
                assert!(!intact, "round {round}: an intact image does not boot: {e}");
                bricked += 1;
            }
        }
    }
    // Both outcomes happen, so both branches were checked.
    assert!(
        booted > 0 && bricked > 0,
        "{booted} booted, {bricked} did not"
    );
}

/// Random bytes as an image file: the manifest reader and verifier refuse them without panicking,
/// and the `image` fuzz harness's invariants hold for each.
#[test]
fn random_images_never_panic() {
    let rig = Rig::<4, 4096>::new();
    let params = twinbank::image::VerifyParams {
        offset: 0,
        ..rig.config().verify_params(Bank::A, 0)
    };
    let good = rig.image(Bank::A, v(1), 1, 1);
    let mut rng = SplitMix64(9);
    for _ in 0..2000 {
        let len = (rng.next_u64() % 300) as usize;
        let mut t: Vec<u8> = if rng.next_u64().is_multiple_of(2) {
            (0..len).map(|_| rng.next_u64() as u8).collect()
        } else {
            // A real header with random sizes and random TLV bytes after it.
            let mut h = good[..32].to_vec();
            for b in &mut h[8..16] {
                *b = rng.next_u64() as u8;
            }
            h.extend((0..len).map(|_| rng.next_u64() as u8));
            h
        };
        let n = t.len() as u32;
        let _ = Manifest::read(&mut SliceFlash(&t), n);
        assert!(verify_image(&mut SliceFlash(&t), &params).is_err());
        twinbank::testing::fuzz::image(&t);
        t.truncate(t.len() / 2);
        twinbank::testing::fuzz::image(&t);
    }
}
