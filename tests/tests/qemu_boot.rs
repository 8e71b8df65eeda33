//! QEMU end to end: factory boot, resets, update → trial → confirm.

mod qemu_support;
use qemu_support::*;
use twinbank::{Bank, BankState};

#[test]
fn factory_device_boots_v1_and_keeps_booting_it_after_resets() {
    let dev = Device::factory("factory_boot");
    // Power-on, then two guest resets inside the same QEMU run.
    let o = dev.run(&["resets=2", "halt"]);
    expect_exit_ok(&o);
    assert_eq!(
        o.boot_lines(),
        vec!["twinbank: boot A 1.0.0+0 normal"; 3],
        "output:\n{}",
        o.output
    );
    expect_in_order(
        &o,
        &[
            "app: v1.0.0+0 bank A",
            "app: health ok",
            "app: reset 1 of 2",
            "app: reset 2 of 2",
        ],
    );
    // Power cycles. The board's flash driver counts every erase and write of the run (shim and
    // app): a normal boot of a confirmed image performs none (issue 12).
    for _ in 0..2 {
        let o = dev.run(&["halt"]);
        expect_exit_ok(&o);
        assert_eq!(o.boot_lines(), vec!["twinbank: boot A 1.0.0+0 normal"]);
        assert!(
            o.output
                .contains("app: flash stats ops=0 erases=0 writes=0 bytes=0"),
            "a normal boot writes nothing:\n{}",
            o.output
        );
    }
    // A normal boot writes nothing: still the factory record.
    let s = dev.state();
    assert_eq!(s.preferred, Bank::A);
    assert!(matches!(s.bank(Bank::A), BankState::Confirmed(i) if i.version.major == 1));
    assert_eq!(*s.bank(Bank::B), BankState::Empty);
}

#[test]
fn update_trial_confirm_keeps_the_old_image_as_fallback() {
    let f = fw();
    let dev = Device::factory("update_confirm");
    let v2 = f.v2();
    let o = dev.run(&[&dev.update_arg("v2", &v2), "halt"]);
    expect_exit_ok(&o);
    expect_in_order(
        &o,
        &[
            "twinbank: boot A 1.0.0+0 normal",
            "app: installed 2.0.0+0 into bank B",
            "twinbank: boot B 2.0.0+0 trial 2 left",
            "app: v2.0.0+0 bank B",
            "app: health ok",
            "app: confirmed",
        ],
    );
    let r = dev.report();
    let s = r.state.unwrap();
    assert_eq!(s.preferred, Bank::B);
    let id2 = f.id(Bank::B, &v2, &f.keys);
    let id1 = f.id(Bank::A, &f.v1(), &f.keys);
    assert_eq!(confirmed(&s, Bank::B), Some(id2));
    // The fallback bank still holds the old confirmed image, intact and signed (verified with
    // any counter: confirming v2 raised the minimum counter to 2, so v1 is kept but no longer
    // accepted — the anti-rollback policy of the signed counters 1 and 2).
    assert_eq!(confirmed(&s, Bank::A), Some(id1));
    assert_eq!(r.images[0].as_ref().unwrap().digest, id1.digest);
    assert_eq!(r.images[1].as_ref().unwrap().digest, id2.digest);
    assert_eq!(s.min_security_counter, 2);
    // Later power-ons boot v2 normally.
    let o = dev.run(&["halt"]);
    expect_exit_ok(&o);
    assert_eq!(o.boot_lines(), vec!["twinbank: boot B 2.0.0+0 normal"]);
}

#[test]
fn without_a_bootable_image_the_shim_says_so_and_stops() {
    let f = fw();
    // Blank flash; then a bank holding an image signed by an untrusted key and no state.
    let dev = Device::new("no_bootable_image", &firmware_blank());
    let o = dev.run(&["halt"]);
    assert_eq!(o.status, Some(2), "{}", o.output);
    assert_eq!(
        o.boot_lines(),
        vec!["twinbank: no bootable image (bank A: erased; bank B: erased)"]
    );
    dev.place(
        Bank::A,
        &f.image_with("app-v1-A", Bank::A, "1.0.0", 1, &f.untrusted),
    );
    let o = dev.run(&["halt"]);
    assert_eq!(o.status, Some(2), "{}", o.output);
    assert!(!o.output.contains("app:"), "{}", o.output);
    expect_in_order(&o, &["twinbank: no bootable image"]);
}

fn firmware_blank() -> Vec<u8> {
    vec![twinbank::flash::ERASED; fw().board.flash.size as usize]
}

/// The README's factory flow with the real host tool: sign the demo app's ELF (as the linker
/// wrote it: rust-lld also maps the ELF headers into RAM, which `sign` must leave out) and
/// provision a flash file; the device boots it confirmed, and again after a reset.
#[test]
fn factory_flow_with_the_host_tool_boots() {
    let f = fw();
    let dev = Device::new("factory_flow", &[]);
    let elf = f.build.elf("app-v1-A");
    let image = dev.dir.join("app-a.bin");
    let flash = dev.dir.join("factory.bin");
    let board = f.description();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(twinbank_tests::host_bin())
            .args(args)
            .arg("--board")
            .arg(&board)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "twinbank {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (vid, cid) = (
        f.board.device.vendor_id.clone().unwrap(),
        f.board.device.class_id.clone().unwrap(),
    );
    run(&[
        "sign",
        "-k",
        f.trusted.to_str().unwrap(),
        "--version",
        "1.0.0",
        "--security-counter",
        "1",
        "--bank",
        "A",
        "--vid",
        &vid,
        "--cid",
        &cid,
        elf.to_str().unwrap(),
        "-o",
        image.to_str().unwrap(),
    ]);
    run(&[
        "provision",
        "-k",
        f.trusted.to_str().unwrap(),
        "--image-a",
        image.to_str().unwrap(),
        "-o",
        flash.to_str().unwrap(),
    ]);
    let dev = Device::new("factory_flow", &std::fs::read(&flash).unwrap());
    let o = dev.run(&["resets=1", "halt"]);
    expect_exit_ok(&o);
    assert_eq!(
        o.boot_lines(),
        vec!["twinbank: boot A 1.0.0+0 normal"; 2],
        "output:\n{}",
        o.output
    );
}

/// The production shim (no QEMU test hooks: the build held to the 24 KiB budget) boots, takes
/// an update on trial, lets it confirm, rolls a crashing image back, and stops when nothing
/// verifies: the same boot path as the tests' shim, without the test equipment.
#[test]
fn the_production_shim_boots_updates_and_rolls_back() {
    let f = fw();
    let shim = f.production_shim();
    let dev = Device::factory("production_shim_update");
    let o = dev.run_shim(&shim, &[&dev.update_arg("v2", &f.v2()), "halt"], TIMEOUT);
    expect_exit_ok(&o);
    expect_in_order(
        &o,
        &[
            "twinbank: boot A 1.0.0+0 normal",
            "app: installed 2.0.0+0 into bank B",
            "twinbank: boot B 2.0.0+0 trial 2 left",
            "app: health ok",
            "app: confirmed",
        ],
    );
    let o = dev.run_shim(&shim, &["halt"], TIMEOUT);
    expect_exit_ok(&o);
    assert_eq!(o.boot_lines(), vec!["twinbank: boot B 2.0.0+0 normal"]);
    assert_eq!(dev.state().preferred, Bank::B);

    // A crash loop: the attempts run out and the shim rolls back to v1.
    let dev = Device::factory("production_shim_rollback");
    let o = dev.run_shim(
        &shim,
        &[&dev.update_arg("v3", &f.v3("crash")), "halt"],
        TIMEOUT,
    );
    expect_exit_ok(&o);
    expect_in_order(
        &o,
        &[
            "twinbank: boot B 3.0.0+0 trial 2 left",
            "twinbank: boot A 1.0.0+0 rolled back from B: trial attempts exhausted",
            "app: v1.0.0+0 bank A",
        ],
    );
    assert!(
        matches!(dev.state().bank(Bank::B), BankState::Rejected(i) if i.version.major == 3),
        "{}",
        o.output
    );

    // Nothing verifies: the shim says so and stops (exit status 2).
    let dev = Device::new("production_shim_blank", &firmware_blank());
    let o = dev.run_shim(&shim, &["halt"], TIMEOUT);
    assert_eq!(o.status, Some(2), "{}", o.output);
    assert_eq!(
        o.boot_lines(),
        vec!["twinbank: no bootable image (bank A: erased; bank B: erased)"]
    );
}
