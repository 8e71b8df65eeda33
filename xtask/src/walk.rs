//! `cargo xtask walk [--seconds N] [--lives N] [--seed S] [--steps N] [--geometry W,E]... [-v]`:
//! the randomized device-life walk of the power-cut crate (issue 16), in release mode. Without
//! `--seconds` or `--lives` it walks for 60 s from a seed taken from the clock; a failure prints
//! its life seed, and `--seed <life seed> --lives 1` replays it exactly.

use std::process::Command;
use xtask::tools::{root, run};

/// Seed and lives of the short walk `cargo xtask test` runs: fixed, so it cannot flake (≈ 30 s
/// on one core of the development machine).
pub const CI_WALK: [&str; 4] = ["--seed", "1", "--lives", "300"];

/// Runs the walk with `args`.
pub fn walk(args: &[String]) -> Result<(), String> {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root())
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "twinbank-powercut",
            "--",
            "walk",
        ])
        .args(args);
    run(&mut c)
}
