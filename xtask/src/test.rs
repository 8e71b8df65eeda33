//! `cargo xtask test`: every test in the workspace, in one command.
//!
//! 1. prerequisites: thumbv7m target, qemu-system-arm, imgtool, smpmgr (see tools.rs; the
//!    other SMP client, mcumgr-toolkit, is a crate the QEMU tests depend on);
//! 2. the device crate builds for thumbv7m-none-eabi without std and without alloc;
//! 3. the firmware (shim + demo app variants) is built for the QEMU tests;
//! 4. `cargo test --workspace` (device, host tool, power-cut harness, QEMU end-to-end tests);
//! 5. the reduced power-cut matrix (`cargo xtask powercut --quick`).

use crate::tools::{self, root, run, THUMB};
use std::process::Command;

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs every test; returns the process exit code.
pub fn run_all(_args: &[String]) -> Result<(), String> {
    tools::ensure_thumb_target()?;
    tools::ensure_qemu()?;
    let imgtool = tools::ensure_imgtool()?;
    let smpmgr = tools::ensure_smpmgr()?;

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

    eprintln!("xtask: [2/4] firmware for the QEMU tests");
    crate::firmware::build_all()?;

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
        .env("TWINBANK_IMGTOOL", &imgtool)
        .env("TWINBANK_SMPMGR", &smpmgr))?;

    eprintln!("xtask: [4/4] power-cut matrix (reduced)");
    crate::powercut(&["--quick".to_string()])?;
    eprintln!("xtask: all tests passed");
    Ok(())
}
