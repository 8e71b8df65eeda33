//! QEMU end to end: a tampered image, or one signed by an untrusted key, is never booted —
//! neither when it sits in the inactive bank marked for a trial (as if the bank were altered
//! after the update), nor when the app is asked to install it.

mod qemu_support;
use qemu_support::*;
use twinbank::{Bank, BankState, BootState};

/// v2 with one payload byte changed.
fn tampered() -> Vec<u8> {
    let mut v2 = fw().v2();
    let o = fw().board.image.header_size as usize + 0x200;
    v2[o] ^= 0x01;
    v2
}

fn untrusted() -> Vec<u8> {
    let f = fw();
    f.image_with("app-v2-B", Bank::B, "2.0.0", 2, &f.untrusted)
}

/// Places `image` in bank B with a state saying "B pending, preferred" for `claimed` (the id
/// the record names); the shim must refuse B and boot v1.
fn staged_trial_is_refused(name: &str, image: &[u8], claimed: twinbank::ImageId) {
    let f = fw();
    let dev = Device::factory(name);
    dev.place(Bank::B, image);
    let id1 = f.id(Bank::A, &f.v1(), &f.keys);
    dev.push_state(&BootState {
        preferred: Bank::B,
        min_security_counter: 1,
        banks: [
            BankState::Confirmed(id1),
            BankState::Pending {
                image: claimed,
                attempts_left: 3,
            },
        ],
    });
    let o = dev.run(&["halt"]);
    expect_exit_ok(&o);
    expect_in_order(
        &o,
        &[
            "twinbank: boot A 1.0.0+0 rolled back from B: verification failed",
            "app: v1.0.0+0 bank A",
        ],
    );
    assert!(!o.output.contains("boot B"), "{}", o.output);
    let s = dev.state();
    assert_eq!(s.preferred, Bank::A);
    assert!(matches!(s.bank(Bank::B), BankState::Rejected(_)));
    let o = dev.run(&["halt"]);
    expect_exit_ok(&o);
    assert_eq!(
        o.boot_lines(),
        vec!["twinbank: boot A 1.0.0+0 normal (bank B rejected)"]
    );
}

#[test]
fn tampered_image_in_the_inactive_bank_is_never_booted() {
    let f = fw();
    // The record names the genuine v2; the bank holds a modified copy.
    staged_trial_is_refused(
        "tampered_staged",
        &tampered(),
        f.id(Bank::B, &f.v2(), &f.keys),
    );
}

#[test]
fn image_signed_by_an_untrusted_key_is_never_booted() {
    let f = fw();
    let img = untrusted();
    let untrusted_key = [firmware::trusted_key(&f.untrusted).unwrap()];
    staged_trial_is_refused(
        "untrusted_staged",
        &img,
        f.id(Bank::B, &img, &untrusted_key),
    );
}

#[test]
fn the_updater_refuses_tampered_and_untrusted_images() {
    let dev = Device::factory("updater_refuses");
    for (name, img) in [("tampered", tampered()), ("untrusted", untrusted())] {
        let o = dev.run(&[&dev.update_arg(name, &img), "halt"]);
        expect_exit_ok(&o);
        expect_in_order(
            &o,
            &["twinbank: boot A 1.0.0+0 normal", "app: update failed"],
        );
        assert_eq!(o.boot_lines().len(), 1, "{}", o.output);
        let s = dev.state();
        assert_eq!(s.preferred, Bank::A);
        assert!(!matches!(
            s.bank(Bank::B),
            BankState::Pending { .. } | BankState::Confirmed(_)
        ));
    }
    let o = dev.run(&["halt"]);
    expect_exit_ok(&o);
    assert_eq!(o.boot_lines(), vec!["twinbank: boot A 1.0.0+0 normal"]);
}
