//! # twinbank-shim-core: what every bootloader shim does, whatever the board
//!
//! [`boot`] is the shim's whole boot path after the board's own start-up:
//! 1. asks `twinbank::decide_with` which bank to boot (it spends a trial attempt or rolls back
//!    as the boot state demands, and verifies the image: header, hash, signature, ids, counter);
//! 2. writes one boot line on the board's console (`twinbank::report`, no `core::fmt`);
//! 3. checks the image's vector table ([`checked_vector_table`]: VTOR alignment, initial SP in
//!    RAM, reset vector a Thumb address inside the bank) and reports one that fails;
//! 4. lets the board arm its watchdog ([`Board::before_jump`]), sets VTOR, loads MSP and jumps.
//!
//! The QEMU shim (`bootloader-shim/`) and each port's shim (`ports/<chip>/shim`) are a few lines
//! around this call: the board's flash driver, SHA-256 engine, console and watchdog, given
//! through [`Board`]. Works on every Cortex-M with a VTOR (ARMv6-M with the optional VTOR, as
//! the RP2040's Cortex-M0+, ARMv7-M, ARMv8-M).
//!
//! Feature `compact-mem`: this crate provides the shim's `memcpy`, `memset` and `memcmp` (114 B
//! of Thumb-2 assembly in place of `compiler_builtins`' ≈ 1.7 KB; `src/mem.rs`). Thumb-2 only:
//! ARMv7-M, ARMv7E-M, ARMv8-M Mainline; not the RP2040's Cortex-M0+ (ARMv6-M, Thumb-1).
#![no_std]
#![deny(missing_docs)]

// ARMv6-M (Thumb-1) has no 32-bit atomics: the only trace of it `cfg` gives on stable Rust.
#[cfg(all(feature = "compact-mem", target_arch = "arm", target_has_atomic = "32"))]
mod mem;
#[cfg(all(
    feature = "compact-mem",
    not(all(target_arch = "arm", target_has_atomic = "32"))
))]
compile_error!(
    "feature `compact-mem` is Thumb-2 assembly (ARMv7-M, ARMv7E-M, ARMv8-M Mainline): \
     not for ARMv6-M (Cortex-M0/M0+) nor a host"
);

use core::fmt::Write;
use embedded_storage::nor_flash::NorFlash;
use twinbank::image::Sha256Engine;
use twinbank::{report, BootDecision, BootError, Config};

/// Address of the System Control Block's Vector Table Offset Register (the same on every
/// Cortex-M that has one; `cortex-m` leaves the field out on ARMv6-M, where it is optional).
const SCB_VTOR: usize = 0xE000_ED08;
/// Bytes of the vector table read before the jump: the initial SP and the reset vector.
const SP_AND_RESET: u32 = 8;
/// The initial stack pointer must be word-aligned.
const SP_ALIGNMENT: u32 = 4;

/// What the shim needs from a board beyond its flash driver and SHA-256 engine.
pub trait Board {
    /// First byte of RAM: an image's initial stack pointer must lie above it.
    const RAM_START: u32;
    /// One past the last byte of RAM: an image's initial stack pointer may equal it.
    const RAM_END: u32;
    /// The vector table alignment VTOR requires (`[image] vector_alignment` of the board
    /// description).
    const VECTOR_ALIGNMENT: u32;
    /// The console the boot line goes to (a UART, or a sink on a board without one).
    type Console: Write;

    /// A handle on the console.
    fn console(&mut self) -> Self::Console;

    /// Called with the decision before the boot line is written (the QEMU shim's serial
    /// recovery takes over here when it was asked for). Does nothing by default.
    fn decided(&mut self, _decision: &BootDecision) {}

    /// The last call before the jump: arm the watchdog (and take measurements).
    fn before_jump(&mut self);

    /// No bank can boot; the error line has been written. Halts, or serves recovery.
    fn unbootable(&mut self, error: &BootError) -> !;

    /// The decided image's vector table failed [`checked_vector_table`]; the line saying so has
    /// been written. Halts.
    fn bad_vector_table(&mut self) -> !;
}

/// Runs the boot path (see the crate documentation) and jumps into the decided image, or hands
/// over to the board when nothing can boot.
///
/// Inlined into the caller's `main`: the QEMU shim measured the same before and after this crate
/// was split out (`cargo xtask size`).
#[inline(always)]
pub fn boot<B: Board, F: NorFlash, H: Sha256Engine>(
    board: &mut B,
    flash: &mut F,
    config: &Config<'_>,
    sha: &mut H,
) -> ! {
    let mut out = board.console();
    match twinbank::decide_with(flash, config, sha) {
        Ok(d) => {
            board.decided(&d);
            let _ = report::decision(&mut out, &d);
            let vt = checked_vector_table(board, config, &d);
            board.before_jump();
            // SAFETY: the image verified (signature by a trusted key) and its vector table
            // passed the checks above; the shim owns nothing the app could miss.
            unsafe {
                core::ptr::write_volatile(SCB_VTOR as *mut u32, vt);
                cortex_m::asm::bootload(vt as *const u32)
            }
        }
        Err(e) => {
            let _ = report::error(&mut out, &e);
            board.unbootable(&e)
        }
    }
}

/// The vector table of the decided image, after checking it can be jumped into: aligned for
/// VTOR, inside the bank, initial SP inside RAM, reset vector a Thumb address inside the image.
/// A table that fails is reported (`twinbank: bad vector table at 0x… (sp 0x…, reset 0x…)`) and
/// the board's [`Board::bad_vector_table`] called.
pub fn checked_vector_table<B: Board>(board: &mut B, config: &Config<'_>, d: &BootDecision) -> u32 {
    let start = config.layout.bank_address(d.bank);
    let end = start + config.layout.bank_size();
    let vt = d.vector_table;
    let ok_vt = vt.is_multiple_of(B::VECTOR_ALIGNMENT) && vt >= start && vt + SP_AND_RESET <= end;
    // The initial SP and reset vector, read only when the table lies inside the bank.
    let words = ok_vt.then(|| {
        // SAFETY: `vt` is inside the bank, which is mapped (execute-in-place) memory.
        unsafe {
            (
                core::ptr::read_volatile(vt as *const u32),
                core::ptr::read_volatile((vt + 4) as *const u32),
            )
        }
    });
    if let Some((sp, rv)) = words {
        let sp_ok = sp > B::RAM_START && sp <= B::RAM_END && sp % SP_ALIGNMENT == 0;
        let rv_ok = rv & 1 == 1 && (rv & !1) >= vt && (rv & !1) < end;
        if sp_ok && rv_ok {
            return vt;
        }
    }
    let mut out = board.console();
    let _ = out.write_str("twinbank: bad vector table at ");
    let _ = report::hex(&mut out, vt);
    if let Some((sp, rv)) = words {
        let _ = out.write_str(" (sp ");
        let _ = report::hex(&mut out, sp);
        let _ = out.write_str(", reset ");
        let _ = report::hex(&mut out, rv);
        let _ = out.write_str(")");
    }
    let _ = out.write_str("\n");
    board.bad_vector_table()
}

/// A console that drops everything: for a board whose shim prints nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink;

impl Write for Sink {
    fn write_str(&mut self, _s: &str) -> core::fmt::Result {
        Ok(())
    }
}
