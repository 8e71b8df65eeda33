//! # twinbank-shim: the first code after reset
//!
//! 1. asks `twinbank::decide` which bank to boot (it spends a trial attempt or rolls back as the
//!    boot state demands, and verifies the image: header, hash, signature, ids, counter);
//! 2. prints one line on the UART, machine-parsable:
//!    - `twinbank: boot A 1.0.0+0 normal`
//!    - `twinbank: boot A 1.0.0+0 normal (bank B rejected)`
//!    - `twinbank: boot B 2.0.0+0 trial 2 left`
//!    - `twinbank: boot A 1.0.0+0 rolled back from B: trial attempts exhausted`
//!    - `twinbank: no bootable image (bank A: …; bank B: …)` — and it stops;
//!    - with the `recovery` feature, `twinbank: recovery (no bank verifies), serving the serial
//!      protocol` instead of stopping, or `twinbank: recovery (requested by the application; bank
//!      A kept), …` when the application asked for it before the reset (or the operator on the
//!      UART, within the board's window): see `recovery.rs`;
//! 3. checks the image's vector table (alignment, initial SP in RAM, reset vector inside the
//!    bank), arms the watchdog, sets VTOR, loads MSP and jumps; a table that fails a check is
//!    reported (`twinbank: bad vector table at 0x… (sp 0x…, reset 0x…)`) and the shim stops.
//!
//! Steps 1 to 3 and the jump are `twinbank_shim_core::boot`, shared with the ports' shims
//! (`ports/`); this file gives it the board: everything board-specific (addresses, flash driver,
//! UART, watchdog, keys, ids) comes from the board crate, and the same file serves every board
//! crate with the QEMU test hooks (recovery, bench).
#![no_std]
#![no_main]

#[cfg(feature = "recovery")]
mod recovery;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use twinbank::{BootDecision, BootError};
use twinbank_board::{self as board, consts, exit_code, uart};
use twinbank_shim_core::Board;

/// The shim handles no interrupt (the application installs its own vector table), so its table
/// holds the 16 system exceptions and one interrupt entry: cortex-m-rt's linker script (with its
/// `device` feature) requires at least one. Saves the 960 bytes of 240 default entries.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [default_interrupt];

/// Without recovery the shim enables no interrupt: one that fires is a fault.
#[cfg(not(feature = "recovery"))]
unsafe extern "C" fn default_interrupt() {
    board::exit(exit_code::SHIM_FAULT)
}

/// In recovery, interrupt 0 is the UART's receive interrupt (it wakes the core from `wfi`; the
/// byte stays in the UART for the loop to read).
#[cfg(feature = "recovery")]
unsafe extern "C" fn default_interrupt() {
    board::uart::clear_rx_interrupt()
}

/// SysTick wakes the core in recovery, to feed the watchdog.
#[cfg(feature = "recovery")]
#[exception]
fn SysTick() {}

#[entry]
fn main() -> ! {
    #[cfg(feature = "bench")]
    let stack_top = bench::start();
    board::uart::init();
    #[cfg(feature = "test-hooks")]
    board::session::init();
    let config = board::config();
    let mut flash = board::flash::Flash::new();
    let mut sha = board::sha256();
    let mut qemu = Qemu {
        #[cfg(feature = "recovery")]
        asked: recovery::requested(),
        #[cfg(feature = "bench")]
        stack_top,
    };
    twinbank_shim_core::boot(&mut qemu, &mut flash, &config, &mut sha)
}

/// The MPS2-AN385 under QEMU, as the shared boot path sees it.
struct Qemu {
    /// The recovery request taken at reset (the application's, or the operator's in the window).
    #[cfg(feature = "recovery")]
    asked: Option<recovery::Why>,
    /// `main`'s stack pointer, for the peak-stack measurement.
    #[cfg(feature = "bench")]
    stack_top: u32,
}

impl Board for Qemu {
    const RAM_START: u32 = consts::RAM_START;
    const RAM_END: u32 = consts::RAM_END;
    const VECTOR_ALIGNMENT: u32 = consts::VECTOR_ALIGNMENT;
    type Console = board::Uart;

    fn console(&mut self) -> board::Uart {
        uart()
    }

    fn decided(&mut self, _d: &BootDecision) {
        #[cfg(feature = "recovery")]
        if let Some(why) = self.asked {
            // The decision made (an attempt spent, as a boot would) tells which bank holds the
            // image that verifies: recovery keeps it.
            recovery::serve(Some(_d.bank), why)
        }
    }

    fn before_jump(&mut self) {
        // The measuring build reports and ends the run here (the count stops before the jump).
        #[cfg(feature = "bench")]
        bench::report(self.stack_top);
        #[cfg(not(feature = "bench"))]
        board::watchdog::start(board::watchdog::PERIOD_TICKS);
    }

    fn unbootable(&mut self, _e: &BootError) -> ! {
        #[cfg(feature = "recovery")]
        recovery::serve(None, recovery::Why::NothingVerifies);
        #[cfg(not(feature = "recovery"))]
        board::exit(exit_code::NO_BOOTABLE_IMAGE)
    }

    // Inlined: as the one call in `checked_vector_table` it costs no call sequence (10 bytes).
    #[inline(always)]
    fn bad_vector_table(&mut self) -> ! {
        board::exit(exit_code::BAD_VECTOR_TABLE)
    }
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    board::hard_fault(ef, "twinbank", false)
}

#[cfg(feature = "bench")]
mod bench {
    //! Measurements: instructions from reset to the jump, and the peak stack (painted); the
    //! measuring build ends the QEMU run after its report.
    use core::fmt::Write as _;
    use twinbank_board::{counter, session, uart};

    const PAINT: u32 = 0xC0DE_5EED;
    /// Bytes painted below the stack pointer of `main`.
    const DEPTH: u32 = 48 * 1024;

    pub fn start() -> u32 {
        let sp = cortex_m::register::msp::read();
        let mut a = sp - DEPTH;
        // Leave 256 bytes under `main`'s SP for this function's own frame.
        while a < sp - 256 {
            // SAFETY: unused stack below the current frame (RAM is 4 MiB, the shim's data is
            // at its bottom).
            unsafe { core::ptr::write_volatile(a as *mut u32, PAINT) };
            a += 4;
        }
        // Counting starts after the painting, so it covers only the boot itself.
        counter::start();
        sp
    }

    pub fn report(main_sp: u32) -> ! {
        let n = counter::instructions();
        let mut a = main_sp - DEPTH;
        // SAFETY: reads the painted area.
        while a < main_sp && unsafe { core::ptr::read_volatile(a as *const u32) } == PAINT {
            a += 4;
        }
        extern "C" {
            static _stack_start: u32;
        }
        // Only the symbol's address is used.
        let top = core::ptr::addr_of!(_stack_start) as u32;
        // Flash operations (erases and writes) since QEMU started: this boot's.
        let ops = session::stats().ops;
        let _ = writeln!(
            uart(),
            "twinbank: bench instructions={n} stack={} main_sp_depth={} flash_ops={ops}",
            top - a,
            top - main_sp
        );
        // The measurement is taken: the run ends before the jump, so any signed image with a
        // valid vector table can be measured (payloads cut to an exact size included).
        twinbank_board::exit(0)
    }
}
