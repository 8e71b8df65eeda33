//! `cargo xtask test`: every test in the workspace, in one command.
//!
//! 1. prerequisites: thumbv7m target, qemu-system-arm, imgtool, smpmgr (see tools.rs; the
//!    other SMP client, mcumgr-toolkit, is a crate the QEMU tests depend on);
//! 2. the device crate builds for thumbv7m-none-eabi without std and without alloc, also with
//!    its `defmt` and `async` features;
//! 3. the firmware (shim + demo app variants) is built for the QEMU tests, and the shim's flash
//!    is checked against the board's budget (`cargo xtask size`); the ports to real MCUs are
//!    built for their targets (`cargo xtask ports`);
//! 4. `cargo test --workspace` (device, host tool, power-cut harness, QEMU end-to-end tests);
//!    then the QEMU core suite (boot, update, rollback, security, serial, power cuts) and the
//!    demo story again on each other QEMU board ([`xtask::qemu::BOARDS`]: the MPS2-AN500,
//!    Cortex-M7), the test binaries run with `TWINBANK_QEMU_BOARD` naming it;
//! 5. the reduced power-cut matrix (`cargo xtask powercut --quick`);
//! 6. a short device-life walk with fixed seeds (`cargo xtask walk`, [`crate::walk::CI_WALK`]);
//! 7. a fuzz smoke run of every fuzz target (`cargo xtask fuzz --smoke`; installs cargo-fuzz).

use std::process::Command;
use std::time::Instant;
use xtask::qemu::{Board, BOARDS, BOARD_ENV};
use xtask::tools::{self, root, run, THUMB};

/// The QEMU end-to-end tests that also run on the boards other than the default: the core suite.
/// The recovery, SMP and delta suites (slow, and about the shim's and the protocol's features
/// rather than the core) run on the default board only.
pub const CORE_QEMU_TESTS: [&str; 5] = [
    "qemu_boot",
    "qemu_rollback",
    "qemu_security",
    "qemu_serial",
    "qemu_powercut",
];

/// The production shim of `board`'s test firmware against the `[bootloader] flash_budget` of its
/// description (the default board's is checked by `cargo xtask size`).
fn check_shim_budget(board: &'static Board) -> Result<(), String> {
    let budget = board
        .load()?
        .bootloader
        .map(|b| u64::from(b.flash_budget))
        .ok_or_else(|| format!("{}: no [bootloader] flash_budget", board.description))?;
    let sizes =
        crate::size::measure(&xtask::firmware::test_build_for(board).elf("shim-production"))?;
    crate::size::print(
        &format!("shim-production on {}", board.name),
        &sizes,
        Some(budget),
    );
    if sizes.flash > budget {
        return Err(format!(
            "the shim's flash on {} ({} B) exceeds its board's budget ({budget} B)",
            board.name, sizes.flash
        ));
    }
    Ok(())
}

/// The core QEMU suite and the demo story on `board` (not the default board).
fn second_board(board: &'static Board, imgtool: &str) -> Result<(), String> {
    let started = Instant::now();
    let mut c = cargo();
    c.args(["test", "-p", "twinbank-tests"]);
    for t in CORE_QEMU_TESTS {
        c.args(["--test", t]);
    }
    run(c
        .env(BOARD_ENV, board.name)
        .env("TWINBANK_IMGTOOL", imgtool))?;
    eprintln!("xtask: the demo story on {}", board.name);
    crate::demo::demo(false, board)?;
    eprintln!(
        "xtask: {}: core QEMU suite and demo story passed in {:.0} s",
        board.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs every test; returns the process exit code.
pub fn run_all() -> Result<(), String> {
    tools::ensure_thumb_target()?;
    for b in &BOARDS {
        tools::ensure_target(b.target)?;
    }
    tools::ensure_qemu()?;
    let imgtool = tools::ensure_imgtool()?;
    crate::fuzz::ensure_cargo_fuzz()?;
    let smpmgr = tools::ensure_smpmgr()?;

    eprintln!("xtask: [1/5] twinbank builds for {THUMB} (no_std, no alloc)");
    run(cargo().args([
        "build",
        "-p",
        "twinbank",
        "--target",
        THUMB,
        "--profile",
        "firmware",
    ]))?;
    // With `defmt::Format` on the types a firmware logs (a library build needs no linker script),
    // and the async updater.
    run(cargo().args([
        "build",
        "-p",
        "twinbank",
        "--features",
        "defmt,async",
        "--target",
        THUMB,
        "--profile",
        "firmware",
    ]))?;

    eprintln!(
        "xtask: [2/5] firmware for the QEMU tests; the shim's size against the board's budget"
    );
    xtask::firmware::build_all()?;
    for b in BOARDS.iter().filter(|b| !b.is_default()) {
        xtask::firmware::build_all_for(b)?;
        check_shim_budget(b)?;
    }
    // Fails when the shim's flash exceeds `[bootloader] flash_budget` of twinbank.toml.
    crate::size::size_cmd(None, None)?;
    // The ports to real MCUs, each for its target (installs a missing target; fails when a
    // port's shim exceeds its board description's budget).
    crate::ports::ports(&[])?;

    eprintln!("xtask: [3/5] cargo test --workspace");
    run(cargo()
        .args([
            "test",
            "--workspace",
            "--exclude",
            "twinbank-shim",
            "--exclude",
            "twinbank-board",
            "--exclude",
            "twinbank-demo-app",
        ])
        .env("TWINBANK_IMGTOOL", &imgtool)
        .env("TWINBANK_SMPMGR", &smpmgr)
        .env_remove(BOARD_ENV))?;
    // The device's Ed25519 check on curve25519-dalek's 32-bit arithmetic, the backend every
    // Cortex-M build uses (the host build above uses the 64-bit one).
    eprintln!("xtask: [3/5] the Ed25519 check on curve25519-dalek's 32-bit backend");
    run(cargo()
        .args([
            "test",
            "-p",
            "twinbank",
            "--features",
            "std",
            "--lib",
            "image::ed25519",
        ])
        .env("RUSTFLAGS", "--cfg curve25519_dalek_bits=\"32\"")
        .env("CARGO_TARGET_DIR", root().join("target/ed25519-32bit")))?;
    for b in BOARDS.iter().filter(|b| !b.is_default()) {
        eprintln!(
            "xtask: [3/5] the QEMU core suite on {} (-cpu {}, {}): {}",
            b.name,
            b.cpu,
            b.target,
            CORE_QEMU_TESTS.join(", ")
        );
        second_board(b, &imgtool)?;
    }

    eprintln!("xtask: [4/5] power-cut matrix (reduced)");
    crate::powercut(&["--quick".to_string()])?;

    eprintln!("xtask: [5/5] device-life walk (short, fixed seeds)");
    crate::walk::walk(&crate::walk::CI_WALK.map(String::from))?;

    eprintln!(
        "xtask: fuzz smoke (every fuzz target, {} s each)",
        crate::fuzz::SMOKE_SECONDS
    );
    crate::fuzz::smoke()?;
    eprintln!("xtask: all tests passed");
    Ok(())
}
