//! QEMU end to end: power cuts.
//!
//! 1. Guest-injected cuts: the board's flash driver cuts power during flash operation N
//!    (argument `cut=N`, counted from the QEMU start across the guest resets), leaving that
//!    operation partly done (a prefix of the write units, a torn unit, a partly erased sector
//!    or garbage), and QEMU ends as if the power failed. Every N of the whole install → activate
//!    → trial → confirm sequence of v2 is tried. After each cut QEMU is restarted on the same
//!    flash file (sometimes with a second cut during the recovery): it must always boot a
//!    verified image; then the update is asked again and the device must converge to v2
//!    confirmed in bank B, with v1 still intact in bank A.
//! 2. `kill -9` of QEMU at random moments during the update, each followed by a restart that
//!    must boot, then convergence as above.

mod qemu_support;
use qemu_support::*;
use std::time::{Duration, Instant};
use twinbank::{Bank, BankState};

const POWER_CUT: i32 = 42;
const CUT_TIMEOUT: Duration = Duration::from_secs(30);

/// A restart after a cut: must boot a verified image (v1 in A or v2 in B) and end cleanly,
/// unless `cut` cuts it again.
#[track_caller]
fn check_boot(o: &qemu::Outcome, context: &str) {
    let boots = o.boot_lines();
    assert!(!boots.is_empty(), "{context}: no boot line:\n{}", o.output);
    for b in &boots {
        assert!(
            b.starts_with("twinbank: boot A 1.0.0+0") || b.starts_with("twinbank: boot B 2.0.0+0"),
            "{context}: unexpected boot: {b}\n{}",
            o.output
        );
    }
    assert!(
        !o.output.contains("no bootable"),
        "{context}:\n{}",
        o.output
    );
}

/// Asks for the update again (resumes or finds it done) and checks the end state.
#[track_caller]
fn converge(dev: &Device, update: &str, context: &str) {
    let o = dev.run_with(&[update, "halt"], CUT_TIMEOUT);
    check_boot(&o, context);
    assert_eq!(
        o.status,
        Some(0),
        "{context}: convergence run:\n{}",
        o.output
    );
    let o = dev.run_with(&["halt"], CUT_TIMEOUT);
    assert_eq!(o.status, Some(0), "{context}: final run:\n{}", o.output);
    assert_eq!(
        o.boot_lines(),
        vec!["twinbank: boot B 2.0.0+0 normal"],
        "{context}"
    );
    let f = fw();
    let r = dev.report();
    let s = r.state.unwrap();
    assert_eq!(s.preferred, Bank::B, "{context}: {s:?}");
    assert_eq!(
        confirmed(&s, Bank::B),
        Some(f.id(Bank::B, &f.v2(), &f.keys)),
        "{context}"
    );
    assert!(
        matches!(s.bank(Bank::A), BankState::Confirmed(i) if i.version.major == 1),
        "{context}: {s:?}"
    );
    assert!(
        r.images[0].is_ok() && r.images[1].is_ok(),
        "{context}: {:?}",
        r.images
    );
}

/// Runs the cut at `n`; returns false when the sequence had fewer than `n` operations.
fn cut_at(n: u32) -> bool {
    let f = fw();
    let dev = Device::factory(&format!("powercut/n{n:03}"));
    let update = dev.update_arg("v2", &f.v2());
    let o = dev.run_with(&[&format!("cut={n}"), &update, "halt"], CUT_TIMEOUT);
    if o.status == Some(0) {
        return false;
    }
    assert_eq!(
        o.status,
        Some(POWER_CUT),
        "cut {n}: {}\n{}",
        o.output,
        o.stderr
    );
    assert!(
        o.output.contains("board: power cut during"),
        "cut {n}: {}",
        o.output
    );
    // Restart; every third N, power fails again early in the recovery.
    let ctx = format!("cut {n}, restart");
    if n.is_multiple_of(3) {
        let o = dev.run_with(&[&format!("cut={}", 1 + n % 2), "halt"], CUT_TIMEOUT);
        assert!(
            matches!(o.status, Some(0) | Some(POWER_CUT)),
            "{ctx}: {}",
            o.output
        );
        if o.status == Some(0) {
            check_boot(&o, &ctx);
        }
    }
    let o = dev.run_with(&["halt"], CUT_TIMEOUT);
    check_boot(&o, &ctx);
    assert_eq!(o.status, Some(0), "{ctx}: {}", o.output);
    converge(&dev, &update, &format!("cut {n}"));
    true
}

#[test]
fn power_cut_at_every_flash_operation_of_an_update_converges() {
    let f = fw();
    // The number of flash operations of the whole sequence, from a run without a cut.
    let dev = Device::factory("powercut/clean");
    let update = dev.update_arg("v2", &f.v2());
    let o = dev.run(&[&update, "halt"]);
    expect_exit_ok(&o);
    let stats = o
        .lines()
        .into_iter()
        .rfind(|l| l.starts_with("app: flash stats"))
        .unwrap()
        .to_string();
    let total: u32 = stats
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ops="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 10, "{stats}");
    let started = Instant::now();
    // Two workers over all N (plus one past the end, which must complete without a cut).
    std::thread::scope(|s| {
        for w in 0..2u32 {
            s.spawn(move || {
                let mut n = 1 + w;
                while n <= total {
                    assert!(cut_at(n), "cut {n} of {total} did not happen");
                    n += 2;
                }
            });
        }
    });
    assert!(
        !cut_at(total + 1),
        "more flash operations than the clean run counted"
    );
    eprintln!("{total} cut points checked in {:?}", started.elapsed());
}

#[test]
fn kill_9_of_qemu_during_an_update_then_restart_boots() {
    let f = fw();
    let v2 = f.v2();
    // Duration of a clean update run, to spread the kills over it.
    let dev = Device::factory("kill9/clean");
    let update = dev.update_arg("v2", &v2);
    let t = Instant::now();
    expect_exit_ok(&dev.run(&[&update, "halt"]));
    let span = t.elapsed().as_micros().max(1000) as u64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    eprintln!("kill -9 seed {seed}, clean run {span} µs");
    for i in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % span);
        let dev = Device::factory(&format!("kill9/{i}"));
        let update = dev.update_arg("v2", &v2);
        let mut run = f.run(&f.shim(), &dev.flash, CUT_TIMEOUT);
        run.args = vec![update.clone(), "halt".into()];
        let running = run.spawn().unwrap();
        std::thread::sleep(delay);
        let o = running.kill9();
        dev.log(&["(killed)"], &o);
        let ctx = format!("kill -9 #{i} after {delay:?}");
        let o = dev.run_with(&["halt"], CUT_TIMEOUT);
        check_boot(&o, &ctx);
        assert_eq!(o.status, Some(0), "{ctx}: {}", o.output);
        converge(&dev, &update, &ctx);
    }
}
