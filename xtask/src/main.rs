//! `cargo xtask <command>`: the project's automation. See README.md; `cargo xtask <command>
//! --help` describes each command.

mod delta_bench;
mod demo;
mod fuzz;
mod ports;
mod size;
mod test;
mod walk;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use xtask::qemu::Board;
use xtask::tools;

/// `--board NAME`: a QEMU board of `xtask::qemu::BOARDS`.
fn board_arg(name: &str) -> Result<&'static Board, String> {
    Board::by_name(name)
}

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "twinbank's automation: tests, the QEMU demo, firmware builds and measurements"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every test: device core, host tool, power cuts, QEMU end to end (checks and installs the
    /// prerequisites first).
    Test,
    /// The main job: builds everything, provisions a QEMU device and tells an update story over
    /// its UART with `twinbank serial`.
    #[command(after_help = "Examples:
  cargo xtask demo                         # on the MPS2-AN385 (Cortex-M3)
  cargo xtask demo --board mps2-an500      # on the MPS2-AN500 (Cortex-M7, 16-byte writes, 8 KiB sectors)")]
    Demo {
        /// Also print the device's UART output.
        #[arg(short, long)]
        verbose: bool,
        /// The QEMU board: mps2-an385 (default) or mps2-an500.
        #[arg(long, value_name = "NAME", default_value = "mps2-an385", value_parser = board_arg)]
        board: &'static Board,
    },
    /// A QEMU device left running for a person: its UART on a pseudo-terminal (or a TCP port),
    /// its text lines shown as `device| …`. Without --flash: the demo device, freshly provisioned
    /// (v1 in bank A). Ends QEMU when interrupted (Ctrl-C) or terminated.
    #[command(after_help = "Examples:
  cargo xtask qemu                         # the demo device (target/demo/flash.bin, fresh)
  cargo xtask qemu --tcp                   # its UART on a local TCP port instead of a pty
  cargo xtask qemu --flash flash.bin --shim target/thumbv7m-none-eabi/firmware/twinbank-shim
                                           # your own provisioned flash and bootloader shim")]
    Qemu {
        /// A flash file (the whole 16 MiB flash, e.g. from `twinbank provision -o`); kept as it
        /// is and changed by the device.
        #[arg(long, value_name = "FILE")]
        flash: Option<PathBuf>,
        /// The bootloader shim ELF to boot (default: the demo's shim, built with the demo key).
        #[arg(long, value_name = "ELF")]
        shim: Option<PathBuf>,
        /// Relay the UART to a local TCP port (`twinbank serial --tcp`) instead of a pty.
        #[arg(long)]
        tcp: bool,
        /// The QEMU board: mps2-an385 (default) or mps2-an500.
        #[arg(long, value_name = "NAME", default_value = "mps2-an385", value_parser = board_arg)]
        board: &'static Board,
    },
    /// The power-cut matrix in release mode (arguments go to the harness; --help lists them).
    #[command(disable_help_flag = true)]
    Powercut {
        /// Arguments of the harness (e.g. --quick).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Builds the demo firmware (target/demo/firmware/) and the QEMU tests' firmware
    /// (target/qemu-tests/firmware/).
    #[command(after_help = "Examples:
  cargo xtask firmware                     # build only
  cargo xtask firmware --measure           # every figure of BENCHMARKS.md (QEMU)
  cargo xtask firmware --measure boot      # the shim's size and boot cost only
  cargo xtask firmware --board mps2-an500 --measure boot   # the same on the Cortex-M7")]
    Firmware {
        /// The QEMU board: mps2-an385 (default) or mps2-an500.
        #[arg(long, value_name = "NAME", default_value = "mps2-an385", value_parser = board_arg)]
        board: &'static Board,
        /// Also take the figures of BENCHMARKS.md ("QEMU"): all of them, or only the shim's
        /// (`boot`: size, boot instructions, cost per byte against the budget, stack, flash
        /// operations) or only the update's (`update`: flash work, serial upload).
        #[arg(long, value_name = "WHAT", num_args = 0..=1, default_missing_value = "all")]
        measure: Option<demo::Measure>,
    },
    /// The randomized device-life walk (issue 16) against a reference model of the state table:
    /// `[--seconds N] [--lives N] [--seed S] [--steps N] [--geometry W,E]... [-v]`.
    Walk {
        /// The walk's own arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Coverage-guided fuzzing of every parser and the protocol server (cargo-fuzz, stable):
    /// `[--seconds N] [--smoke] [--seeds] [--asan] [TARGET...]` (see fuzz/README.md).
    Fuzz {
        /// The fuzz command's own arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The figures of BENCHMARKS.md "Delta updates": patch sizes of three firmware pairs
    /// against bsdiff4 and detools (installed into target/delta-bench-venv), the device's apply
    /// cost under QEMU -icount, the applier's RAM, and an upload over the UART with and without
    /// a patch.
    DeltaBench,
    /// Builds every port to a real MCU (`ports/`: nRF52840, RP2040, STM32L4) for its target and
    /// prints the shims' and applications' sizes: `[--clippy]` also lints them.
    Ports {
        /// The command's own arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The bootloader shim's flash and static RAM, and the flash bytes per crate (from the ELF's
    /// symbols). Fails when the flash exceeds `[bootloader] flash_budget` of twinbank.toml.
    Size {
        /// Measure this ELF instead of building the shim.
        #[arg(long, value_name = "FILE")]
        elf: Option<PathBuf>,
        /// Also list the N largest symbols.
        #[arg(long, value_name = "N")]
        symbols: Option<usize>,
    },
}

/// `cargo xtask powercut ARGS`: the harness in release mode.
pub fn powercut(args: &[String]) -> Result<(), String> {
    let mut c =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(tools::root())
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "twinbank-powercut",
            "--",
        ])
        .args(args);
    tools::run(&mut c)
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Test => test::run_all(),
        Cmd::Powercut { args } => powercut(&args),
        Cmd::Demo { verbose, board } => demo::demo(verbose, board),
        Cmd::Qemu {
            flash,
            shim,
            tcp,
            board,
        } => demo::qemu_cmd(flash, shim, tcp, board),
        Cmd::Firmware { measure, board } => demo::firmware_cmd(measure, board),
        Cmd::Size { elf, symbols } => size::size_cmd(elf, symbols),
        Cmd::DeltaBench => delta_bench::run(),
        Cmd::Fuzz { args } => fuzz::fuzz(&args),
        Cmd::Walk { args } => walk::walk(&args),
        Cmd::Ports { args } => ports::ports(&args),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e}");
        std::process::exit(1);
    }
}
