//! QEMU end to end: serial recovery in the bootloader shim (issue 10), with the shim built with
//! `recovery-smp`, driven by `twinbank serial` exactly as against the application:
//!
//! - both banks corrupted → the shim says `recovery (no bank verifies)` → `twinbank serial upload
//!   … --activate --reboot` restores → the device boots and confirms;
//! - the application asks for recovery → reset → recovery (the running bank kept) → upload →
//!   boots;
//! - a flash holding only the shim (no state, no image) is provisioned through recovery (a
//!   factory line) → boots;
//! - power cut at every flash operation of a recovery upload (guest-injected cuts): after each
//!   cut the device serves recovery again or boots a verified image, never a dead shim;
//!   the upload sent again then boots;
//! - trial exhausted + fallback corrupted → the trial image boots again (last resort);
//! - an upload signed by an untrusted key over a confirmed fallback is refused before any
//!   erase: the fallback bank and the state region are byte-for-byte unchanged, and the
//!   fallback boots after a rollback;
//! - cancel of an activated update before the reboot → the running image keeps booting;
//! - the operator sends `recover` within the board's UART window (a shim built for a board
//!   description with `recovery_window_ms`) → recovery; nothing sent → the image boots.

mod qemu_support;
use qemu_support::*;
use std::ops::Range;
use std::time::{Duration, Instant};
use twinbank::{Bank, BankState};

/// What the recovery shim prints when it serves.
const RECOVERY: &str = "twinbank: recovery (";

fn device(name: &str, contents: &[u8]) -> Device {
    Device::new(&format!("recovery/{name}"), contents)
}

fn factory(name: &str) -> Device {
    Device::factory(&format!("recovery/{name}"))
}

fn blank() -> Vec<u8> {
    vec![0xFF; fw().board.flash.size as usize]
}

/// Writes `image` next to the flash file; returns its path as a string.
fn save(dev: &Device, name: &str, image: &[u8]) -> String {
    let p = dev.dir.join(name);
    std::fs::write(&p, image).unwrap();
    p.display().to_string()
}

/// The flash range of `bank`.
fn bank_range(bank: Bank) -> Range<usize> {
    let r = fw().board.layout().unwrap().bank(bank);
    r.offset.0 as usize..(r.offset.0 + r.size.0) as usize
}

/// The flash range of the state region.
fn state_range() -> Range<usize> {
    let r = fw().board.layout().unwrap().state();
    r.offset.0 as usize..(r.offset.0 + r.size.0) as usize
}

/// Flips bits in the payload of the image in `bank` (bit rot).
fn corrupt(dev: &Device, bank: Bank) {
    let mut flash = dev.read();
    let at = bank_range(bank).start + fw().board.image.header_size as usize + 0x100;
    for b in &mut flash[at..at + 4] {
        *b ^= 0x5A;
    }
    qemu::write_flash(&dev.flash, &flash).unwrap();
}

/// Serves the device with the recovery shim; ready once `ready` was printed.
fn serve(dev: &Device, args: &[&str], ready: &str) -> Served {
    dev.serve_with(&fw().recovery_shim(), args, ready)
}

#[test]
fn both_banks_corrupted_then_recovery_upload_restores() {
    let f = fw();
    let dev = factory("both_corrupted");
    // v1 in A and v2 in B, both confirmed and bootable (v2 with security counter 1, so that v1
    // stays a fallback), B preferred: then bit rot in both.
    let v2 = f.image_with("app-v2-B", Bank::B, "2.0.0", 1, &f.trusted);
    let update = dev.update_arg("v2", &v2);
    expect_exit_ok(&dev.run(&[&update, "halt"]));
    corrupt(&dev, Bank::A);
    corrupt(&dev, Bank::B);
    let v2_path = save(&dev, "v2.bin", &v2);
    let mut d = serve(&dev, &[], RECOVERY);
    let text = d.text();
    assert!(
        text.contains("twinbank: no bootable image (bank A: hash mismatch; bank B: hash mismatch)"),
        "{text}"
    );
    assert!(
        text.contains("twinbank: recovery (no bank verifies), serving the serial protocol"),
        "{text}"
    );
    // The host tool says the device is in recovery.
    assert_eq!(d.status()["recovery"], true);
    let human = d.ok(&["status"]).stdout;
    assert!(human.contains("device is in serial recovery"), "{human}");
    // The shim rolled back from B to A before finding A corrupted too: A is preferred, so
    // recovery keeps it and uploads go to B.
    assert_eq!(d.info()["running"], "A");
    let before = d.mark();
    let up = d
        .ok(&["upload", &v2_path, "--activate", "--reboot", "--json"])
        .json();
    assert_eq!(up["bank"], "B");
    assert_eq!(up["activated"], true);
    assert!(d.wait_since(before, "app: confirmed"), "{}", d.text());
    let boot = d.text_since(before);
    assert!(
        boot.contains("twinbank: boot B 2.0.0+0 trial 2 left"),
        "{boot}"
    );
    assert!(!boot.contains(RECOVERY), "{boot}");
    assert_eq!(d.status()["recovery"], false);
    drop(d);
    let s = dev.state();
    assert_eq!(s.preferred, Bank::B);
    assert_eq!(confirmed(&s, Bank::B), Some(f.id(Bank::B, &v2, &f.keys)));
}

#[test]
fn the_application_asks_for_recovery_then_an_upload_boots() {
    let f = fw();
    let dev = factory("app_request");
    let v2 = save(&dev, "v2.bin", &f.v2());
    let mut d = serve(&dev, &["recover"], RECOVERY);
    let text = d.text();
    expect_text_in_order(
        &text,
        &[
            "twinbank: boot A 1.0.0+0 normal",
            "app: recovery requested, resetting",
            "twinbank: recovery (requested by the application; bank A kept), serving",
        ],
    );
    let i = d.info();
    assert_eq!(i["recovery"], true);
    assert_eq!(i["running"], "A");
    // Recovery refuses what needs a running application.
    let c = d.tool(&["confirm"]);
    assert_eq!(c.code, Some(1), "{}", c.stderr);
    let before = d.mark();
    let up = d
        .ok(&["upload", &v2, "--activate", "--reboot", "--json"])
        .json();
    assert_eq!(up["bank"], "B");
    assert!(d.wait_since(before, "app: confirmed"), "{}", d.text());
    // The request was taken once: the next boot is a normal one.
    assert!(d
        .text_since(before)
        .contains("twinbank: boot B 2.0.0+0 trial 2 left"));
    drop(d);
    let s = dev.state();
    assert_eq!(
        confirmed(&s, Bank::B),
        Some(f.id(Bank::B, &f.v2(), &f.keys))
    );
    assert_eq!(
        confirmed(&s, Bank::A),
        Some(f.id(Bank::A, &f.v1(), &f.keys))
    );
}

#[test]
fn a_flash_with_only_the_shim_is_provisioned_through_recovery() {
    let f = fw();
    let dev = device("factory_line", &blank());
    let v1 = save(&dev, "v1.bin", &f.v1());
    let mut d = serve(&dev, &[], RECOVERY);
    expect_text_in_order(
        &d.text(),
        &[
            "twinbank: no bootable image (bank A: erased; bank B: erased)",
            "twinbank: recovery (no bank verifies), serving the serial protocol",
        ],
    );
    let s = d.status();
    assert_eq!(s["provisioned"], false);
    assert_eq!(s["recovery"], true);
    let before = d.mark();
    let up = d
        .ok(&["upload", &v1, "--activate", "--reboot", "--json"])
        .json();
    assert_eq!(up["bank"], "A");
    assert!(d.wait_since(before, "app: confirmed"), "{}", d.text());
    assert!(d
        .text_since(before)
        .contains("twinbank: boot A 1.0.0+0 trial 2 left"));
    drop(d);
    let s = dev.state();
    assert_eq!(s.preferred, Bank::A);
    assert_eq!(
        confirmed(&s, Bank::A),
        Some(f.id(Bank::A, &f.v1(), &f.keys))
    );
    assert_eq!(*s.bank(Bank::B), BankState::Empty);
}

#[test]
fn trial_exhausted_with_a_corrupted_fallback_boots_the_trial_image_again() {
    let f = fw();
    let dev = factory("last_resort");
    let update = dev.update_arg("v3", &f.v3("crash"));
    // Install v3 (crashes before confirming), stop as soon as it is activated.
    let mut r = qemu::Run::new(&f.shim(), &dev.flash, TIMEOUT);
    r.args = vec![update, "halt".into()];
    r.stop_on = Some("app: installed 3.0.0".into());
    let o = r.run().unwrap();
    dev.log(&["install v3-crash"], &o);
    assert!(o.stopped, "{}", o.output);
    corrupt(&dev, Bank::A);
    // Three trials crash, the fallback does not verify: v3 boots again (last resort), crashes,
    // and boots again — never a stop. The default shim (no recovery) shows the boot policy.
    let mut r = qemu::Run::new(&f.shim(), &dev.flash, TIMEOUT);
    r.args = vec!["halt".into()];
    let running = r.spawn().unwrap();
    running.kill_after(TIMEOUT);
    let line = "twinbank: boot B 3.0.0+0 last resort (bank A: ";
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end && running.text().matches(line).count() < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = running.kill9();
    dev.log(&["trials"], &o);
    expect_in_order(
        &o,
        &[
            "twinbank: boot B 3.0.0+0 trial 2 left",
            "app: crashing",
            "twinbank: boot B 3.0.0+0 trial 1 left",
            "twinbank: boot B 3.0.0+0 trial 0 left",
            line,
            "app: crashing",
            line,
        ],
    );
    assert!(!o.output.contains("no bootable image"), "{}", o.output);
}

#[test]
fn an_untrusted_upload_over_a_confirmed_fallback_changes_nothing_then_rollback_boots_it() {
    let f = fw();
    let dev = factory("untrusted");
    // v2 (security counter 1, so that v1 stays a fallback) installed and confirmed in B; A is
    // the confirmed fallback.
    let v2 = f.image_with("app-v2-B", Bank::B, "2.0.0", 1, &f.trusted);
    let update = dev.update_arg("v2", &v2);
    let d = serve(&dev, &[&update], "app: confirmed");
    let untrusted = f.image_with("app-v1-A", Bank::A, "1.0.0", 3, &f.untrusted);
    let path = save(&dev, "untrusted.bin", &untrusted);
    let before = dev.read();
    let t = d.tool(&["upload", &path, "--activate"]);
    assert_eq!(t.code, Some(1), "{}{}", t.stdout, t.stderr);
    assert!(t.stderr.contains("key"), "{}", t.stderr);
    let after = dev.read();
    assert!(
        before[bank_range(Bank::A)] == after[bank_range(Bank::A)],
        "bank A changed"
    );
    assert!(
        before[state_range()] == after[state_range()],
        "the state region changed"
    );
    // The same refusal in recovery (requested by the operator through the app).
    drop(d);
    let mut d = serve(&dev, &["recover"], RECOVERY);
    assert!(d
        .text()
        .contains("recovery (requested by the application; bank B kept)"));
    let before = dev.read();
    let t = d.tool(&["upload", &path, "--activate"]);
    assert_eq!(t.code, Some(1), "{}{}", t.stdout, t.stderr);
    let after = dev.read();
    assert!(before[bank_range(Bank::A)] == after[bank_range(Bank::A)]);
    assert!(before[state_range()] == after[state_range()]);
    // The fallback still boots after a rollback.
    let mark = d.mark();
    d.ok(&["rollback", "--yes", "--reboot"]);
    assert!(
        d.wait_since(mark, "twinbank: boot A 1.0.0+0"),
        "{}",
        d.text_since(mark)
    );
    drop(d);
    assert_eq!(dev.state().preferred, Bank::A);
}

#[test]
fn cancel_of_an_activated_update_keeps_the_running_image() {
    let f = fw();
    let dev = factory("cancel");
    let v2 = save(&dev, "v2.bin", &f.v2());
    let mut d = serve(&dev, &[], "app: serving the serial protocol");
    d.ok(&["upload", &v2, "--activate"]);
    assert_eq!(d.status()["preferred"], "B");
    d.ok(&["cancel"]);
    assert_eq!(d.status()["preferred"], "A");
    let mark = d.mark();
    d.ok(&["reboot"]);
    assert!(
        d.wait_since(mark, "app: serving the serial protocol"),
        "{}",
        d.text_since(mark)
    );
    let boot = d.text_since(mark);
    assert!(boot.contains("twinbank: boot A 1.0.0+0 normal"), "{boot}");
    drop(d);
    assert_eq!(dev.state().preferred, Bank::A);
}

#[test]
fn the_operator_asks_for_recovery_within_the_uart_window() {
    let f = fw();
    let dev = factory("uart_window");
    let shim = f.build.elf("shim-recovery-window");
    // Nothing sent: the window passes and A boots.
    let mut r = qemu::Run::new(&shim, &dev.flash, TIMEOUT);
    r.args = vec!["halt".into()];
    let o = r.run().unwrap();
    dev.log(&["window, nothing sent"], &o);
    expect_exit_ok(&o);
    assert_eq!(o.boot_lines(), vec!["twinbank: boot A 1.0.0+0 normal"]);
    // `recover` sent as soon as the UART is there: recovery, A kept.
    let r = qemu::Run::new(&shim, &dev.flash, TIMEOUT);
    let mut running = r.spawn().unwrap();
    running.kill_after(TIMEOUT);
    let relay = running.serve_tcp().unwrap();
    let mut c = std::net::TcpStream::connect(relay.addr()).unwrap();
    std::io::Write::write_all(&mut c, b"recover").unwrap();
    let line = "twinbank: recovery (requested on the UART; bank A kept), serving";
    let seen = running.wait_for_text(line, Duration::from_secs(20));
    let o = running.kill9();
    dev.log(&["window, recover sent"], &o);
    assert!(seen, "{}", o.output);
    assert!(!o.output.contains("app:"), "{}", o.output);
}

/// After a cut: a restart serves recovery or boots a verified image (v1 in A); never a stop.
fn restart_after_cut(dev: &Device, ctx: &str) -> Served {
    let d = serve(dev, &[], "twinbank: ");
    let mut d = d;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let t = d.text();
        if t.contains(RECOVERY) || t.contains("app: serving the serial protocol") {
            break;
        }
        assert!(Instant::now() < end && d.running().alive(), "{ctx}: {t}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = d.text();
    for l in t.lines().filter(|l| l.starts_with("twinbank: boot")) {
        assert!(
            l.starts_with("twinbank: boot A 1.0.0+0"),
            "{ctx}: unexpected boot {l}\n{t}"
        );
    }
    d
}

/// Every cut point is restarted and must serve recovery or boot a verified image; every
/// `CONVERGE_EVERY`-th one is then driven to the end (the upload sent again must boot): the
/// upload over the UART is what costs time (≈ 100 KB at ≈ 30 KiB/s).
const CONVERGE_EVERY: u32 = 4;

/// One cut point of the recovery upload of v1 into a blank device; false when the sequence had
/// fewer than `n` flash operations.
fn recovery_cut_at(n: u32, v1: &[u8]) -> bool {
    let dev = device(&format!("cut/n{n:03}"), &blank());
    let path = save(&dev, "v1.bin", v1);
    let cut = format!("cut={n}");
    let d = serve(&dev, &[&cut], RECOVERY);
    // The host tool uploads until the cut ends QEMU (then it is stopped: a real host would time
    // out); past the end of the sequence, v1 boots, confirms and serves.
    let mut d = d;
    let mut tool = d
        .command(&["upload", &path, "--activate", "--reboot"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = tool.try_wait().unwrap() {
            break Some(st);
        }
        if !d.running().alive() || Instant::now() > end {
            let _ = tool.kill();
            let _ = tool.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    while Instant::now() < end
        && d.running().alive()
        && !d.text().contains("app: serving the serial protocol")
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    if d.running().alive() {
        // Past the end: the upload completed and v1 booted.
        let text = d.text();
        assert!(
            status.is_some_and(|s| s.success()),
            "cut {n}: {status:?}\n{text}"
        );
        assert!(text.contains("app: confirmed"), "cut {n}: {text}");
        return false;
    }
    // QEMU ended: the power cut (its last line reaches the log once the UART reader drained).
    let drained = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drained && !d.text().contains("board: power cut during") {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        d.text().contains("board: power cut during"),
        "cut {n}: QEMU ended without a power cut:\n{}",
        d.text()
    );
    drop(d);
    let ctx = format!("cut {n}");
    let mut d = restart_after_cut(&dev, &ctx);
    if !n.is_multiple_of(CONVERGE_EVERY) {
        return true;
    }
    // Converge: in recovery, send the upload again (it resumes or starts afresh).
    if d.text().contains(RECOVERY) {
        let mark = d.mark();
        d.ok(&["upload", &path, "--activate", "--reboot"]);
        assert!(d.wait_since(mark, "app: confirmed"), "{ctx}: {}", d.text());
    } else if !d.text().contains("app: confirmed") {
        let mark = d.mark();
        assert!(d.wait_since(mark, "app: serving"), "{ctx}: {}", d.text());
    }
    drop(d);
    let s = dev.state();
    assert!(
        matches!(
            s.bank(Bank::A),
            BankState::Confirmed(_) | BankState::Pending { .. }
        ),
        "{ctx}: {s:?}"
    );
    true
}

#[test]
fn power_cut_at_every_flash_operation_of_a_recovery_upload() {
    let f = fw();
    // A small image: the upload's flash operations (a few dozen).
    let v1 = f.v1();
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..2u32 {
            let v1 = &v1;
            s.spawn(move || {
                let mut n = 1 + w;
                while recovery_cut_at(n, v1) {
                    n += 2;
                }
                eprintln!("worker {w}: cut points up to {n}");
            });
        }
    });
    eprintln!("recovery cut points checked in {:?}", started.elapsed());
}

/// Asserts that `needles` appear in `text` in this order.
#[track_caller]
fn expect_text_in_order(text: &str, needles: &[&str]) {
    let mut rest = text;
    for n in needles {
        match rest.find(n) {
            Some(i) => rest = &rest[i + n.len()..],
            None => panic!("expected {n:?} (in order {needles:?}) in:\n{text}"),
        }
    }
}
