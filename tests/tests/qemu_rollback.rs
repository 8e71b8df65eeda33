//! QEMU end to end: automatic rollback for each failing variant of a new image (health check
//! fails; crash loop; hang reset by the watchdog). The rolled-back device keeps running the old
//! image on later resets.

mod qemu_support;
use qemu_support::*;
use twinbank::{Bank, BankState};

fn rollback(variant: &str, expected: &[&str]) {
    let f = fw();
    let dev = Device::factory(&format!("rollback_{variant}"));
    let v3 = f.v3(variant);
    let o = dev.run(&[&dev.update_arg("v3", &v3), "halt"]);
    expect_exit_ok(&o);
    let mut all = vec![
        "twinbank: boot A 1.0.0+0 normal",
        "app: installed 3.0.0+0 into bank B",
        "twinbank: boot B 3.0.0+0 trial 2 left",
    ];
    all.extend_from_slice(expected);
    all.extend_from_slice(&["app: v1.0.0+0 bank A", "app: health ok"]);
    expect_in_order(&o, &all);
    assert!(!o.output.contains("app: confirmed"), "{}", o.output);

    let s = dev.state();
    assert_eq!(s.preferred, Bank::A);
    assert!(
        matches!(s.bank(Bank::B), BankState::Rejected(i) if i.version.major == 3),
        "{s:?}"
    );
    assert_eq!(
        confirmed(&s, Bank::A),
        Some(f.id(Bank::A, &f.v1(), &f.keys))
    );
    // The old image keeps running, across guest resets and power cycles.
    for _ in 0..2 {
        let o = dev.run(&["resets=1", "halt"]);
        expect_exit_ok(&o);
        assert_eq!(
            o.boot_lines(),
            vec!["twinbank: boot A 1.0.0+0 normal (bank B rejected)"; 2],
            "{}",
            o.output
        );
    }
}

#[test]
fn failed_health_check_rolls_back_at_once() {
    rollback(
        "fail-health",
        &[
            "app: health FAIL",
            "app: rejected",
            "twinbank: boot A 1.0.0+0 normal (bank B rejected)",
        ],
    );
}

#[test]
fn crash_loop_rolls_back_when_the_attempts_run_out() {
    rollback(
        "crash",
        &[
            "app: hardfault",
            "twinbank: boot B 3.0.0+0 trial 1 left",
            "app: hardfault",
            "twinbank: boot B 3.0.0+0 trial 0 left",
            "app: hardfault",
            "twinbank: boot A 1.0.0+0 rolled back from B: trial attempts exhausted",
        ],
    );
}

#[test]
fn hang_is_reset_by_the_watchdog_and_rolls_back() {
    rollback(
        "hang",
        &[
            "app: hanging",
            "twinbank: boot B 3.0.0+0 trial 1 left",
            "app: hanging",
            "twinbank: boot B 3.0.0+0 trial 0 left",
            "app: hanging",
            "twinbank: boot A 1.0.0+0 rolled back from B: trial attempts exhausted",
        ],
    );
}

/// The healthy app's health check tests something real: v2 signed as 2.1.0 while it was built as
/// 2.0.0 is the wrong image for its build (its own configuration check fails), so it rejects
/// itself on trial and the device rolls back to v1.
#[test]
fn health_check_catches_an_image_signed_with_another_version() {
    let f = fw();
    let dev = Device::factory("rollback_wrong_version");
    let mislabelled = f.image_with("app-v2-B", Bank::B, "2.1.0", 2, &f.trusted);
    let o = dev.run(&[&dev.update_arg("v2", &mislabelled), "halt"]);
    expect_exit_ok(&o);
    expect_in_order(
        &o,
        &[
            "app: installed 2.1.0+0 into bank B",
            "twinbank: boot B 2.1.0+0 trial 2 left",
            "app: health FAIL: signed as 2.1.0+0 but built as 2.0.0",
            "app: rejected",
            "twinbank: boot A 1.0.0+0 normal (bank B rejected)",
            "app: health ok",
        ],
    );
    assert!(matches!(dev.state().bank(Bank::B), BankState::Rejected(_)));
}
