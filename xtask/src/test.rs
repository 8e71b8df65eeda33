//! `cargo xtask test`: every test in the workspace, in one command.
//!
//! 1. prerequisites: thumbv7m target, qemu-system-arm, imgtool, smpmgr (see tools.rs; the
//!    other SMP client, mcumgr-toolkit, is a crate the QEMU tests depend on);
//! 2. the device crate builds for thumbv7m-none-eabi without std and without alloc, also with
//!    its `defmt` feature;
//! 3. the firmware (shim + demo app variants) is built for the QEMU tests, and the shim's flash
//!    is checked against the board's budget (`cargo xtask size`); the ports to real MCUs are
//!    built for their targets (`cargo xtask ports`);
//! 4. `cargo test --workspace` (device, host tool, power-cut harness, QEMU end-to-end tests);
//! 5. the reduced power-cut matrix (`cargo xtask powercut --quick`);
//! 6. a short device-life walk with fixed seeds (`cargo xtask walk`, [`crate::walk::CI_WALK`]);
//! 7. a fuzz smoke run of every fuzz target (`cargo xtask fuzz --smoke`; installs cargo-fuzz).

use std::process::Command;
use xtask::tools::{self, root, run, THUMB};

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs every test; returns the process exit code.
pub fn run_all() -> Result<(), String> {
    tools::ensure_thumb_target()?;
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
    // With `defmt::Format` on the types a firmware logs (a library build needs no linker script).
    run(cargo().args([
        "build",
        "-p",
        "twinbank",
        "--features",
        "defmt",
        "--target",
        THUMB,
        "--profile",
        "firmware",
    ]))?;

    eprintln!(
        "xtask: [2/5] firmware for the QEMU tests; the shim's size against the board's budget"
    );
    xtask::firmware::build_all()?;
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
        .env("TWINBANK_SMPMGR", &smpmgr))?;

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
