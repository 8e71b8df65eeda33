//! Hostile flash contents: nothing read from flash makes the crate panic, and no corrupted image
//! verifies. Deterministic (seeded) so a failure replays.

mod common;
use common::*;
use twinbank::flash::SliceFlash;
use twinbank::image::verify_image;
use twinbank::state::StateStore;
use twinbank::testing::SplitMix64;
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

/// Random state regions and random banks: the boot decision and the updater return, never panic.
#[test]
fn random_flash_never_panics() {
    let mut rng = SplitMix64(7);
    for round in 0..300 {
        let mut rig = Rig::<4, 4096>::new();
        let img = rig.image(Bank::A, v(1), 1, 1);
        rig.provision(&img);
        let len = rig.flash.bytes().len();
        let bytes = rig.flash.bytes_mut();
        // Scribble over the state region and the start and end of bank A.
        let regions = [
            (0usize, 2 * 4096usize),
            (2 * 4096, 64),
            (2 * 4096 + img.len() - 200, 200),
        ];
        for (start, n) in regions {
            for b in &mut bytes[start..(start + n).min(len)] {
                if rng.next_u64().is_multiple_of(4) {
                    *b = rng.next_u64() as u8;
                }
            }
        }
        // The strict flash would panic on a reprogram: scribbled slots are non-blank and must be
        // skipped, never written.
        let _ = rig.boot();
        let layout = rig.layout;
        let _ = StateStore::open(&mut rig.flash, &layout);
        let _ = rig.updater(Bank::A).state().copied();
        let _ = round;
    }
}

/// Random bytes as an image file: the manifest reader and verifier refuse them without panicking.
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
        t.truncate(t.len() / 2);
    }
}
