//! `cargo xtask test`: every test in the workspace, in one command.
//!
//! 1. prerequisites: thumbv7m target, qemu-system-arm, imgtool (see tools.rs);
//! 2. the device crate builds for thumbv7m-none-eabi without std and without alloc;
//! 3. the firmware (shim + demo app variants) is built for the QEMU tests, and the shim's flash
//!    is checked against the board's budget (`cargo xtask size`);
//! 4. `cargo test --workspace` (device, host tool, power-cut harness, QEMU end-to-end tests);
//! 5. the reduced power-cut matrix (`cargo xtask powercut --quick`).

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

    eprintln!("xtask: [1/4] twinbank builds for {THUMB} (no_std, no alloc)");
    run(cargo().args([
        "build",
        "-p",
        "twinbank",
        "--target",
        THUMB,
        "--profile",
        "firmware",
    ]))?;

    eprintln!(
        "xtask: [2/4] firmware for the QEMU tests; the shim's size against the board's budget"
    );
    xtask::firmware::build_all()?;
    // Fails when the shim's flash exceeds `[bootloader] flash_budget` of twinbank.toml.
    crate::size::size_cmd(None, None)?;

    eprintln!("xtask: [3/4] cargo test --workspace");
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
        .env("TWINBANK_IMGTOOL", &imgtool))?;

    eprintln!("xtask: [4/4] power-cut matrix (reduced)");
    crate::powercut(&["--quick".to_string()])?;
    eprintln!("xtask: all tests passed");
    Ok(())
}
