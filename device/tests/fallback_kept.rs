//! A bad upload over a confirmed fallback: what is refused before anything is written (the
//! fallback, its bank and the state region stay byte-for-byte), and what a corrupted payload with
//! a valid announcement costs (the fallback, given up at `begin`; the running image and its state
//! stay). Issue 10 ("a bad upload never costs the fallback") and issue 9 ("checks exactly what is
//! kept").

mod common;
use common::*;
use twinbank::image::ImageError;
use twinbank::{Bank, BankState, UpdateError};

/// A device running B (v2, confirmed) with the confirmed fallback v1 in A.
fn two_confirmed<const W: usize, const E: usize>() -> Rig<W, E> {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    rig.install(Bank::A, &rig.image(Bank::B, v(2), 1, 2))
        .unwrap();
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
    rig.updater(Bank::B).confirm().unwrap();
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
    rig
}

/// Offset of the SHA-256 TLV's value in an image built by the rig (first unprotected TLV).
fn digest_offset(img: &[u8]) -> usize {
    let m = manifest(img);
    m.header.hashed_len() as usize + 4 + 4
}

fn refused_before_any_write<const W: usize, const E: usize>() {
    let rig0 = two_confirmed::<W, E>();
    let good = rig0.image(Bank::A, v(3), 1, 3);
    let untrusted = rig0
        .builder(Bank::A, v(3), 1)
        .sign(
            &payload(3),
            &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        )
        .unwrap();
    let unsigned = rig0
        .builder(Bank::A, v(3), 1)
        .unsigned(&payload(3))
        .unwrap();
    // A forged announcement: the digest TLV names other content; the signature is the original's.
    let mut forged = good.clone();
    forged[digest_offset(&good)] ^= 0x01;
    let mut bad_sig = good.clone();
    let n = bad_sig.len();
    bad_sig[n - 5] ^= 0x10;
    for (what, img, want) in [
        ("untrusted key", &untrusted, ImageError::UntrustedKey),
        ("no signature", &unsigned, ImageError::MissingSignature),
        ("forged digest", &forged, ImageError::BadSignature),
        ("bad signature", &bad_sig, ImageError::BadSignature),
    ] {
        let mut rig = two_confirmed::<W, E>();
        let (state, a, b) = (
            rig.state_bytes(),
            rig.bank_bytes(Bank::A),
            rig.bank_bytes(Bank::B),
        );
        assert_eq!(
            rig.updater(Bank::B).begin(&manifest(img)),
            Err(UpdateError::Image(want)),
            "{what}"
        );
        assert_eq!(rig.state_bytes(), state, "{what}: state region written");
        assert_eq!(rig.bank_bytes(Bank::A), a, "{what}: fallback bank touched");
        assert_eq!(rig.bank_bytes(Bank::B), b, "{what}: running bank touched");
        // The fallback is still there for the operator.
        let to = rig.updater(Bank::B).rollback().expect("rollback");
        assert_eq!(to.version, v(1), "{what}");
        assert_eq!(rig.boot().unwrap().bank, Bank::A, "{what}");
    }
}

fn corrupted_payload_costs_the_fallback_only<const W: usize, const E: usize>() {
    let mut rig = two_confirmed::<W, E>();
    let mut img = rig.image(Bank::A, v(3), 1, 3);
    img[HEADER as usize + 10] ^= 0x40;
    let b = rig.bank_bytes(Bank::B);
    let before = rig.state();
    assert_eq!(
        rig.install(Bank::B, &img),
        Err(UpdateError::Image(ImageError::HashMismatch))
    );
    let s = rig.state();
    assert_eq!(rig.bank_bytes(Bank::B), b, "running bank touched");
    assert_eq!(s.preferred, Bank::B);
    assert_eq!(
        s.bank(Bank::B),
        before.bank(Bank::B),
        "running image's state"
    );
    assert_eq!(s.min_security_counter, before.min_security_counter);
    assert_eq!(
        *s.bank(Bank::A),
        BankState::Empty,
        "fallback given up at begin"
    );
    assert_eq!(
        rig.updater(Bank::B).rollback(),
        Err(UpdateError::NoFallback)
    );
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
    // The next upload of a good image starts afresh and installs.
    let good = rig.image(Bank::A, v(3), 1, 3);
    assert_eq!(rig.updater(Bank::B).begin(&manifest(&good)), Ok(0));
    rig.install(Bank::B, &good).unwrap();
    assert_eq!(rig.boot().unwrap().version, v(3));
}

for_geometries! {
    refused_before_write => refused_before_any_write;
    corrupted_payload => corrupted_payload_costs_the_fallback_only;
}
