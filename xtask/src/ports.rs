//! `cargo xtask ports [--clippy]`: builds every port (`ports/`: its own cargo workspace, locked
//! versions) for its target, shim and example application in release (opt "s", fat LTO; the
//! shims in opt "z"), and prints their flash and static RAM. Fails when a shim exceeds its
//! board description's `[bootloader] flash_budget` (the room before the state region).
//! With `--clippy`, also lints each port for its target (and the host-side build helper) with
//! `-D warnings`. Installs a missing rustup target first.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use twinbank::board::BoardDescription;
use xtask::tools::{self, root};

/// One port: a board crate, a shim and an example application for one chip.
struct Port {
    /// Directory under `ports/` (holds `board.toml`).
    dir: &'static str,
    /// The rustup target of the chip's core.
    target: &'static str,
    /// The shim's package (and binary) name.
    shim: &'static str,
    /// The application's package (and binary) name.
    app: &'static str,
    /// The board crate's package name.
    board: &'static str,
}

/// Every port, in the order of ports/README.md.
const PORTS: &[Port] = &[
    Port {
        dir: "nrf52840",
        target: "thumbv7em-none-eabihf",
        shim: "twinbank-shim-nrf52840",
        app: "twinbank-app-nrf52840",
        board: "twinbank-port-nrf52840",
    },
    Port {
        dir: "rp2040",
        target: "thumbv6m-none-eabi",
        shim: "twinbank-shim-rp2040",
        app: "twinbank-app-rp2040",
        board: "twinbank-port-rp2040",
    },
    Port {
        dir: "stm32l476",
        target: "thumbv7em-none-eabihf",
        shim: "twinbank-shim-stm32l476",
        app: "twinbank-app-stm32l476",
        board: "twinbank-port-stm32l476",
    },
];

/// The applications' shared part, linted for each port's target.
const APP_COMMON: &str = "twinbank-port-app";

/// Host-side packages of the ports workspace (build-script helpers), linted for the host.
const HOST_PACKAGES: &[&str] = &["twinbank-port-gen"];

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let root = root();
    c.current_dir(&root)
        .args(["--locked"])
        .env("CARGO_TARGET_DIR", target_dir());
    c
}

/// The ports' own target directory (their features and targets differ from the root's).
fn target_dir() -> PathBuf {
    root().join("target/ports")
}

fn manifest() -> String {
    root().join("ports/Cargo.toml").display().to_string()
}

/// Installs `target` with rustup when it is missing.
fn ensure_target(target: &str) -> Result<(), String> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    eprintln!("xtask: the {target} target is missing; installing it with rustup");
    tools::run(Command::new("rustup").args(["target", "add", target]))
        .map_err(|e| format!("{e}\n  the ports need it: run `rustup target add {target}`"))
}

/// `cargo xtask ports [--clippy]`.
pub fn ports(args: &[String]) -> Result<(), String> {
    let mut clippy = false;
    for a in args {
        match a.as_str() {
            "--clippy" => clippy = true,
            other => return Err(format!("ports: unknown argument {other:?} (--clippy)")),
        }
    }
    let key = target_dir().join("keys/ports.pem");
    xtask::firmware::ensure_key(&key)?;
    let started = Instant::now();
    let mut rows = Vec::new();
    for p in PORTS {
        ensure_target(p.target)?;
        let board_toml = root().join("ports").join(p.dir).join("board.toml");
        let board = BoardDescription::load(&board_toml).map_err(|e| e.to_string())?;
        eprintln!("xtask: port {} ({}): shim and application", p.dir, p.target);
        tools::run(
            cargo()
                .args(["build", "--release", "--manifest-path", &manifest()])
                .args(["--target", p.target, "-p", p.shim, "-p", p.app])
                .env("TWINBANK_TRUSTED_KEYS", &key),
        )?;
        if clippy {
            eprintln!("xtask: port {}: clippy", p.dir);
            tools::run(
                cargo()
                    .args(["clippy", "--manifest-path", &manifest()])
                    .args([
                        "--target", p.target, "-p", p.shim, "-p", p.app, "-p", p.board, "-p",
                        APP_COMMON,
                    ])
                    .args(["--", "-D", "warnings"])
                    .env("TWINBANK_TRUSTED_KEYS", &key),
            )?;
        }
        let elf = |bin: &str| target_dir().join(p.target).join("release").join(bin);
        let shim = crate::size::measure(&elf(p.shim))?;
        let app = crate::size::measure(&elf(p.app))?;
        let budget = board.bootloader.as_ref().map(|b| u64::from(b.flash_budget));
        rows.push((p, shim, app, budget));
    }
    if clippy {
        let mut c = cargo();
        c.args(["clippy", "--manifest-path", &manifest()]);
        for h in HOST_PACKAGES {
            c.args(["-p", h]);
        }
        tools::run(c.args(["--", "-D", "warnings"]))?;
    }
    println!("| port | target | shim flash | shim RAM | shim budget | app flash | app RAM |");
    println!("|---|---|---|---|---|---|---|");
    let mut over = Vec::new();
    for (p, shim, app, budget) in &rows {
        let b = budget.map_or("-".to_string(), |b| format!("{b} B"));
        println!(
            "| {} | {} | {} B | {} B | {b} | {} B | {} B |",
            p.dir, p.target, shim.flash, shim.ram, app.flash, app.ram
        );
        if budget.is_some_and(|b| shim.flash > b) {
            over.push(format!("{}: shim {} B over {b}", p.dir, shim.flash));
        }
    }
    eprintln!(
        "xtask: ports built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if over.is_empty() {
        Ok(())
    } else {
        Err(format!("a shim exceeds its budget: {}", over.join("; ")))
    }
}
