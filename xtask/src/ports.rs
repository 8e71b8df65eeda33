//! `cargo xtask ports [--clippy]`: builds every port (`ports/`: its own cargo workspace, locked
//! versions) for its target, shim and example application in release (opt "s", fat LTO; the
//! shims in opt "z"), and prints their flash and static RAM. Fails when a shim exceeds its
//! board description's `[bootloader] flash_budget` (the room before the state region).
//! With `--clippy`, also lints each port for its target (and the host-side build helper) with
//! `-D warnings`. Installs a missing rustup target first.
//!
//! Each port's application is then signed for its board description and provisioned into a
//! factory flash that the device crate boots through a strict flash of the port's geometry
//! ([`factory_boot`]): the board description, the linker map and the signing tools agree.

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
    /// The chip's RAM (start, end) as its board crate's build script gives it: an application's
    /// initial stack pointer must lie inside.
    ram: (u32, u32),
}

/// Every port, in the order of ports/README.md.
const PORTS: &[Port] = &[
    Port {
        dir: "nrf52840",
        target: "thumbv7em-none-eabihf",
        shim: "twinbank-shim-nrf52840",
        app: "twinbank-app-nrf52840",
        board: "twinbank-port-nrf52840",
        ram: (0x2000_0000, 0x2004_0000),
    },
    Port {
        dir: "rp2040",
        target: "thumbv6m-none-eabi",
        shim: "twinbank-shim-rp2040",
        app: "twinbank-app-rp2040",
        board: "twinbank-port-rp2040",
        ram: (0x2000_0000, 0x2004_0000),
    },
    Port {
        dir: "stm32l476",
        target: "thumbv7em-none-eabihf",
        shim: "twinbank-shim-stm32l476",
        app: "twinbank-app-stm32l476",
        board: "twinbank-port-stm32l476",
        ram: (0x2000_0000, 0x2001_8000),
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

/// The port's application (linked for bank A) through the host tool's library: signed for the
/// port's board description, provisioned into a factory flash of its layout, which
/// `twinbank provision` boots twice through a strict flash of the port's own geometry (the
/// device crate's `decide`: bank A, verified); then the vector table the shim would jump to is
/// checked as `twinbank_shim_core` checks it (initial SP in the chip's RAM, reset vector a
/// Thumb address inside the image).
fn factory_boot(
    p: &Port,
    board: &BoardDescription,
    app: &std::path::Path,
    key: &std::path::Path,
) -> Result<(), String> {
    use twinbank::Bank;
    let signed = xtask::firmware::sign_elf(
        app,
        &xtask::firmware::Signing {
            board,
            bank: Bank::A,
            version: "1.0.0",
            security_counter: 1,
            key,
            pad_to: None,
        },
    )?;
    let trusted = [xtask::firmware::trusted_key(key)?];
    let id = xtask::firmware::image_id(board, Bank::A, &signed, &trusted)?;
    let flash = xtask::firmware::factory_flash(board, &signed, &trusted)?;
    let layout = board.layout().map_err(|e| e.to_string())?;
    let bank = layout.bank(Bank::A);
    let vt = (bank.offset.0 + u32::from(board.image.header_size)) as usize;
    let word = |at: usize| -> Result<u32, String> {
        flash
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("vector table at {at:#x} beyond the flash"))
    };
    let (sp, reset) = (word(vt)?, word(vt + 4)?);
    let start = board.flash.base + vt as u32;
    let end = board.flash.base + bank.offset.0 + bank.size.0;
    if !(sp > p.ram.0 && sp <= p.ram.1 && sp % 4 == 0) {
        return Err(format!("initial SP {sp:#x} outside RAM {:#x?}", p.ram));
    }
    if !(reset & 1 == 1 && (reset & !1) >= start && (reset & !1) < end) {
        return Err(format!(
            "reset vector {reset:#x} not a Thumb address in {start:#x}..{end:#x}"
        ));
    }
    eprintln!(
        "xtask: port {}: application {} B signed for bank A, factory flash boots it (v{}, SP {sp:#x}, reset {reset:#x})",
        p.dir,
        signed.len(),
        id.version
    );
    Ok(())
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
            // In release, as the build: the host-side build scripts and proc-macros are shared.
            eprintln!("xtask: port {}: clippy", p.dir);
            tools::run(
                cargo()
                    .args(["clippy", "--release", "--manifest-path", &manifest()])
                    .args([
                        "--target", p.target, "-p", p.shim, "-p", p.app, "-p", p.board, "-p",
                        APP_COMMON,
                    ])
                    .args(["--", "-D", "warnings"])
                    .env("TWINBANK_TRUSTED_KEYS", &key),
            )?;
        }
        let elf = |bin: &str| target_dir().join(p.target).join("release").join(bin);
        factory_boot(p, &board, &elf(p.app), &key).map_err(|e| format!("port {}: {e}", p.dir))?;
        let shim = crate::size::measure(&elf(p.shim))?;
        let app = crate::size::measure(&elf(p.app))?;
        let budget = board.bootloader.as_ref().map(|b| u64::from(b.flash_budget));
        rows.push((p, shim, app, budget));
    }
    if clippy {
        let mut c = cargo();
        c.args(["clippy", "--release", "--manifest-path", &manifest()]);
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
