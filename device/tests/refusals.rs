//! Every way an image can be bad is refused with its own error. A refusal at `begin` (everything
//! the manifest can tell) leaves the state region and every bank byte-for-byte unchanged; a refusal
//! at `finish` (the bytes written do not verify) leaves the boot state as it was (the target bank
//! recorded empty again) and the running bank byte-for-byte unchanged. Over three geometries.

mod common;
use common::*;
use twinbank::boot::{BootReason, RollbackCause};
use twinbank::flash::SliceFlash;
use twinbank::image::{tlv, ImageError};
use twinbank::update::Manifest;
use twinbank::{Bank, BankState, BootState, ImageId, UpdateError, Uuid};

/// Offset of the first byte of the protected TLV area's first value (security counter).
fn protected_value_offset(img: &[u8]) -> usize {
    let m = manifest(img);
    m.header.hdr_size as usize + m.header.img_size as usize + 4 + 4
}

/// Offset of the Ed25519 signature value (last TLV of the image).
fn signature_offset(img: &[u8]) -> usize {
    img.len() - 64
}

/// Runs an install of `image` from bank A (which runs v1 with counter 5) and checks that it fails
/// with `expected`, leaving the boot state and bank A unchanged (and, when `begin` refused it,
/// the state region and bank B too).
fn refused<const W: usize, const E: usize>(image: &[u8], expected: UpdateError) {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 5, 1));
    let state_bytes = rig.state_bytes();
    let state = rig.state();
    let bank_a = rig.bank_bytes(Bank::A);
    let bank_b = rig.bank_bytes(Bank::B);
    let at_begin = rig.driver(Bank::A).begin(&manifest(image)).is_err();
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 5, 1));
    assert_eq!(rig.install(Bank::A, image), Err(expected));
    assert_eq!(rig.state(), state, "boot state changed by a refused image");
    if at_begin {
        assert_eq!(rig.state_bytes(), state_bytes, "state region written");
        assert_eq!(rig.bank_bytes(Bank::B), bank_b, "bank B touched");
    }
    assert_eq!(rig.bank_bytes(Bank::A), bank_a, "running bank changed");
    let d = rig.boot().unwrap();
    assert_eq!(
        (d.bank, d.reason, d.version),
        (Bank::A, BootReason::Normal, v(1))
    );
}

fn each_refusal<const W: usize, const E: usize>() {
    let rig = Rig::<W, E>::new();
    let good = rig.image(Bank::B, v(2), 5, 2);
    let hdr = HEADER as usize;

    let mut t = good.clone();
    t[hdr + 100] ^= 0x01;
    refused::<W, E>(&t, UpdateError::Image(ImageError::HashMismatch));

    let mut t = good.clone();
    t[20] ^= 0x01; // version major
    refused::<W, E>(&t, UpdateError::Image(ImageError::HashMismatch));

    let mut t = good.clone();
    t[protected_value_offset(&good)] += 1; // security counter 5 → 6
    refused::<W, E>(&t, UpdateError::Image(ImageError::HashMismatch));

    let mut t = good.clone();
    let s = signature_offset(&good);
    t[s + 10] ^= 0x80;
    refused::<W, E>(&t, UpdateError::Image(ImageError::BadSignature));

    let other_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let t = rig
        .builder(Bank::B, v(2), 5)
        .sign(&payload(2), &other_key)
        .unwrap();
    refused::<W, E>(&t, UpdateError::Image(ImageError::UntrustedKey));

    let t = rig.builder(Bank::B, v(2), 5).unsigned(&payload(2)).unwrap();
    refused::<W, E>(&t, UpdateError::Image(ImageError::MissingSignature));

    let t = rig.image(Bank::A, v(2), 5, 2);
    refused::<W, E>(
        &t,
        UpdateError::Image(ImageError::WrongBank {
            linked_for: rig.layout.bank_address(Bank::A),
            bank_address: rig.layout.bank_address(Bank::B),
        }),
    );

    let mut b = rig.builder(Bank::B, v(2), 5);
    b.class_id = Some(Uuid([0x33; 16]));
    refused::<W, E>(
        &b.sign(&payload(2), &rig.key).unwrap(),
        UpdateError::Image(ImageError::ClassIdMismatch),
    );
    let mut b = rig.builder(Bank::B, v(2), 5);
    b.vendor_id = Some(Uuid([0x44; 16]));
    refused::<W, E>(
        &b.sign(&payload(2), &rig.key).unwrap(),
        UpdateError::Image(ImageError::VendorIdMismatch),
    );
    let mut b = rig.builder(Bank::B, v(2), 5);
    b.class_id = None;
    refused::<W, E>(
        &b.sign(&payload(2), &rig.key).unwrap(),
        UpdateError::Image(ImageError::MissingClassId),
    );
    let mut b = rig.builder(Bank::B, v(2), 5);
    b.rom_fixed = None;
    refused::<W, E>(
        &b.sign(&payload(2), &rig.key).unwrap(),
        UpdateError::Image(ImageError::NotBankBound),
    );

    // Downgrade: counter 4 while the device minimum is 5.
    refused::<W, E>(
        &rig.image(Bank::B, v(2), 4, 2),
        UpdateError::Image(ImageError::SecurityCounterTooLow {
            image: 4,
            minimum: 5,
        }),
    );

    // Larger than the bank.
    let big = vec![0x5a; rig.layout.bank_size() as usize];
    let t = rig.builder(Bank::B, v(2), 5).sign(&big, &rig.key).unwrap();
    let needed = manifest(&t).header.hashed_len() as u32 + 4;
    refused::<W, E>(
        &t,
        UpdateError::Image(ImageError::DoesNotFit {
            needed,
            capacity: rig.layout.bank_size(),
        }),
    );

    // Truncated: the manifest cannot even be read (TLV area missing)...
    for cut in [good.len() - 1, good.len() - 70, hdr + 10, 31] {
        let r = Manifest::read(&mut SliceFlash(&good[..cut]), cut as u32);
        assert!(
            matches!(
                r,
                Err(ImageError::Truncated | ImageError::BadTlvArea | ImageError::BadMagic(_))
            ),
            "cut at {cut}: {r:?}"
        );
    }
    // ...and an upload that stops early cannot finish.
    let mut rig2 = Rig::<W, E>::new();
    rig2.provision(&rig2.image(Bank::A, v(1), 5, 1));
    let bank_a = rig2.bank_bytes(Bank::A);
    let mut up = rig2.driver(Bank::A);
    up.begin(&manifest(&good)).unwrap();
    up.write(0, &good[..good.len() - 10]).unwrap();
    assert_eq!(
        up.finish(),
        Err(UpdateError::Incomplete {
            received: good.len() as u32 - 10,
            total: good.len() as u32
        })
    );
    let s = rig2.state();
    assert_eq!(s.preferred, Bank::A);
    assert!(matches!(s.bank(Bank::A), BankState::Confirmed(_)));
    assert!(!s.bank(Bank::B).may_boot(), "{s:?}");
    assert_eq!(rig2.bank_bytes(Bank::A), bank_a);
}

/// A bank that is already in flash but bad is refused by the boot decision, which rolls back.
fn boot_refuses_bad_banks<const W: usize, const E: usize>() {
    for (what, expected) in [
        ("payload", ImageError::HashMismatch),
        ("untrusted", ImageError::UntrustedKey),
        ("truncated", ImageError::Truncated),
        ("erased", ImageError::BadMagic(u32::MAX)),
    ] {
        let mut rig = Rig::<W, E>::new();
        let id1 = rig.provision(&rig.image(Bank::A, v(1), 1, 1));
        let good = rig.image(Bank::B, v(2), 1, 2);
        let id2 = ImageId {
            ..twinbank::ImageId::of(
                &twinbank::image::verify_image(
                    &mut SliceFlash(&good),
                    &twinbank::image::VerifyParams {
                        offset: 0,
                        ..rig.config().verify_params(Bank::B, 0)
                    },
                )
                .unwrap(),
            )
        };
        let bad = match what {
            "payload" => {
                let mut t = good.clone();
                t[HEADER as usize + 7] ^= 4;
                t
            }
            "untrusted" => rig
                .builder(Bank::B, v(2), 1)
                .sign(
                    &payload(2),
                    &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
                )
                .unwrap(),
            "truncated" => good[..good.len() - 100].to_vec(),
            _ => Vec::new(),
        };
        let off = rig.layout.bank(Bank::B).offset.0 as usize;
        rig.flash.load(off, &bad);
        // A state that claims B holds a pending v2 (as if the bank had been altered later).
        let mut s = BootState::factory(Bank::A, id1, None);
        s.banks[1] = BankState::Pending {
            image: id2,
            attempts_left: 3,
        };
        s.preferred = Bank::B;
        let layout = rig.layout;
        let mut store = twinbank::state::StateStore::open(&mut rig.flash, &layout).unwrap();
        store.write(&mut rig.flash, &s).unwrap();
        let d = rig.boot().unwrap();
        assert_eq!(d.bank, Bank::A, "{what}");
        assert_eq!(
            d.reason,
            BootReason::RolledBack {
                from: Bank::B,
                cause: RollbackCause::VerifyFailed(expected)
            },
            "{what}"
        );
        assert!(matches!(rig.state().bank(Bank::B), BankState::Rejected(_)));
    }
}

/// No trusted key: nothing boots, not even a perfectly signed image (fail closed).
fn no_keys_no_boot<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let mut config = rig.config();
    config.keys = &[];
    let r = twinbank::boot::decide(&mut rig.flash, &config);
    assert!(
        matches!(
            r,
            Err(twinbank::BootError::NoBootableImage {
                a: twinbank::boot::Unbootable::Invalid(ImageError::NoTrustedKeys),
                ..
            })
        ),
        "{r:?}"
    );
}

/// The other bank can replace the state's record of an image: a bank whose content is a different
/// (validly signed) image than recorded is not booted.
fn replaced_image_is_not_booted<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let v2 = rig.image(Bank::B, v(2), 1, 2);
    rig.install(Bank::A, &v2).unwrap();
    rig.boot().unwrap();
    rig.driver(Bank::B).confirm().unwrap();
    // Someone rewrites bank A with another signed image behind the updater's back.
    let other = rig.image(Bank::A, v(9), 1, 9);
    let off = rig.layout.bank(Bank::A).offset.0 as usize;
    let r = rig.layout.bank(Bank::A);
    rig.flash.bytes_mut()[off..off + r.size.0 as usize].fill(0xFF);
    rig.flash.load(off, &other);
    assert_eq!(rig.driver(Bank::B).rollback(), Err(UpdateError::NoFallback));
    let _ = tlv::TLV_SHA256;
}

for_drivers! {
    install_refusals => each_refusal;
    replaced => replaced_image_is_not_booted;
}

// The boot decision (the bootloader's, blocking only: no updater involved).
for_geometries! {
    boot_refusals => boot_refuses_bad_banks;
    fail_closed => no_keys_no_boot;
}
