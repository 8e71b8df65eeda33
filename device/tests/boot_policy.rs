//! Issue 10's boot policy and operator paths: never stop while a bank holds an image that
//! verifies (last resort), per-bank reasons on an unprovisioned device, cancelling an activated
//! update, and the updater of the bootloader's serial recovery.

mod common;
use common::*;
use twinbank::boot::{BootError, BootReason, Unbootable};
use twinbank::image::{ImageError, SoftSha256};
use twinbank::{Bank, BankState, UpdateError, Updater};

/// A device whose trial of v2 in B has run out of attempts (the next boot rolls back to A).
fn exhausted_trial<const W: usize, const E: usize>() -> Rig<W, E> {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    rig.install(Bank::A, &rig.image(Bank::B, v(2), 1, 2))
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            rig.boot().unwrap().reason,
            BootReason::Trial { .. }
        ));
    }
    rig
}

/// Bit rot in a bank's payload.
fn corrupt<const W: usize, const E: usize>(rig: &mut Rig<W, E>, bank: Bank) {
    let off = rig.layout.bank(bank).offset.0 as usize + HEADER as usize + 100;
    rig.flash.bytes_mut()[off] ^= 0x10;
}

fn trial_out_of_attempts_boots_again_when_the_fallback_rotted<const W: usize, const E: usize>() {
    let mut rig = exhausted_trial::<W, E>();
    corrupt(&mut rig, Bank::A);
    let d = rig.boot().expect("a verifying image boots");
    assert_eq!((d.bank, d.version), (Bank::B, v(2)));
    assert_eq!(
        d.reason,
        BootReason::LastResort {
            other: Unbootable::Invalid(ImageError::HashMismatch)
        }
    );
    let s = rig.state();
    assert!(matches!(s.bank(Bank::B), BankState::Rejected(_)), "{s:?}");
    assert!(matches!(s.bank(Bank::A), BankState::Rejected(_)), "{s:?}");
    assert_eq!(s.preferred, Bank::B);
    // Every later boot boots it again without writing anything.
    let before = rig.state_bytes();
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
    assert_eq!(rig.state_bytes(), before, "a last-resort boot writes once");
    // Its application can receive an update into the rotten bank.
    rig.install(Bank::B, &rig.image(Bank::A, v(3), 1, 3))
        .expect("install from a last-resort image");
    let d = rig.boot().unwrap();
    assert_eq!((d.bank, d.version), (Bank::A, v(3)));
    assert!(matches!(d.reason, BootReason::Trial { .. }));
}

fn a_rejected_image_below_the_minimum_counter_never_boots<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    // v2 (counter 2) confirmed raises the minimum to 2; v1 (counter 1) stays in A.
    rig.install(Bank::A, &rig.image(Bank::B, v(2), 2, 2))
        .unwrap();
    rig.boot().unwrap();
    rig.updater(Bank::B).confirm().unwrap();
    // v3 (counter 2) into A, then its trial runs out, and v2 rots: A must not be v1 anyway.
    rig.install(Bank::B, &rig.image(Bank::A, v(3), 2, 3))
        .unwrap();
    for _ in 0..3 {
        rig.boot().unwrap();
    }
    corrupt(&mut rig, Bank::B);
    let d = rig.boot().unwrap();
    // The trial (counter 2) boots as the last resort; v2 rotted.
    assert_eq!((d.bank, d.version), (Bank::A, v(3)));
    assert!(matches!(d.reason, BootReason::LastResort { .. }));
    // Replace A by v1 (counter 1) behind the updater's back: below the minimum, never booted.
    let off = rig.layout.bank(Bank::A).offset.0 as usize;
    let size = rig.layout.bank_size() as usize;
    rig.flash.bytes_mut()[off..off + size].fill(0xff);
    let v1 = rig.image(Bank::A, v(1), 1, 1);
    rig.flash.load(off, &v1);
    assert!(matches!(rig.boot(), Err(BootError::NoBootableImage { .. })));
}

fn unprovisioned_device_says_why_per_bank<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    let untrusted = rig
        .builder(Bank::A, v(1), 1)
        .sign(
            &payload(1),
            &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        )
        .unwrap();
    let off = rig.layout.bank(Bank::A).offset.0 as usize;
    rig.flash.load(off, &untrusted);
    assert_eq!(
        rig.boot(),
        Err(BootError::NoBootableImage {
            a: Unbootable::Invalid(ImageError::UntrustedKey),
            b: Unbootable::Invalid(ImageError::BadMagic(u32::MAX)),
        })
    );
}

fn cancel_an_activated_update<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    assert_eq!(
        rig.updater(Bank::A).cancel(),
        Err(UpdateError::NothingToCancel)
    );
    rig.install(Bank::A, &rig.image(Bank::B, v(2), 1, 2))
        .unwrap();
    assert_eq!(rig.state().preferred, Bank::B, "activated");
    rig.updater(Bank::A).cancel().expect("cancel");
    let d = rig.boot().unwrap();
    assert_eq!(
        (d.bank, d.version),
        (Bank::A, v(1)),
        "the running image keeps booting"
    );
    assert!(matches!(rig.state().bank(Bank::B), BankState::Rejected(_)));
    // An interrupted upload is cancelled too (the bank is recorded empty).
    let img = rig.image(Bank::B, v(3), 1, 3);
    {
        let mut up = rig.updater(Bank::A);
        up.begin(&manifest(&img)).unwrap();
        up.write(0, &img[..100]).unwrap();
    }
    assert!(matches!(rig.state().bank(Bank::B), BankState::Receiving(_)));
    rig.updater(Bank::A).cancel().unwrap();
    assert_eq!(*rig.state().bank(Bank::B), BankState::Empty);
    assert_eq!(rig.boot().unwrap().bank, Bank::A);
}

fn recovery<const W: usize, const E: usize>(
    rig: &mut Rig<W, E>,
    keep: Option<Bank>,
) -> Updater<'static, &mut twinbank::testing::StrictFlash<W, E>> {
    let config = rig.config();
    Updater::for_recovery(&mut rig.flash, config, keep, SoftSha256::default()).unwrap()
}

fn upload<const W: usize, const E: usize>(
    up: &mut Updater<'static, &mut twinbank::testing::StrictFlash<W, E>>,
    img: &[u8],
) -> Result<(), UpdateError> {
    let mut off = up.begin(&manifest(img))? as usize;
    while off < img.len() {
        let n = 700.min(img.len() - off);
        off = up.write(off as u32, &img[off..off + n])? as usize;
    }
    up.finish().map(|_| ())
}

fn recovery_provisions_a_blank_device<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    assert!(rig.boot().is_err(), "nothing to boot");
    let img = rig.image(Bank::A, v(1), 1, 1);
    let mut up = recovery(&mut rig, None);
    assert_eq!(
        up.running().other(),
        Bank::A,
        "the first image goes to bank A"
    );
    assert!(up.in_recovery());
    assert_eq!(up.confirm(), Err(UpdateError::InRecovery));
    upload(&mut up, &img).expect("recovery upload");
    let d = rig.boot().unwrap();
    assert_eq!((d.bank, d.version), (Bank::A, v(1)));
    assert!(matches!(d.reason, BootReason::Trial { .. }));
    rig.updater(Bank::A).confirm().unwrap();
    assert_eq!(rig.boot().unwrap().reason, BootReason::Normal);
}

fn recovery_never_erases_the_image_it_keeps<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let a = rig.bank_bytes(Bank::A);
    let (for_a, for_b) = (
        rig.image(Bank::A, v(2), 1, 2),
        rig.image(Bank::B, v(2), 1, 2),
    );
    let wrong = UpdateError::Image(ImageError::WrongBank {
        linked_for: rig.layout.bank_address(Bank::A),
        bank_address: rig.layout.bank_address(Bank::B),
    });
    // The application asked for recovery; A verifies and is kept: the upload goes to B.
    let mut up = recovery(&mut rig, Some(Bank::A));
    assert_eq!(upload(&mut up, &for_a), Err(wrong));
    upload(&mut up, &for_b).unwrap();
    assert_eq!(rig.bank_bytes(Bank::A), a);
    let d = rig.boot().unwrap();
    assert_eq!((d.bank, d.version), (Bank::B, v(2)));
}

for_geometries! {
    last_resort => trial_out_of_attempts_boots_again_when_the_fallback_rotted;
    minimum_counter => a_rejected_image_below_the_minimum_counter_never_boots;
    unprovisioned => unprovisioned_device_says_why_per_bank;
    cancel => cancel_an_activated_update;
    recovery_blank => recovery_provisions_a_blank_device;
    recovery_keeps => recovery_never_erases_the_image_it_keeps;
}
