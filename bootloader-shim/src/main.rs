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
//! Everything board-specific (addresses, flash driver, UART, watchdog, keys, ids) comes from the
//! board crate; this file is the same for every board with a Cortex-M core.
#![no_std]
#![no_main]

mod mem;
#[cfg(feature = "recovery")]
mod recovery;

use core::fmt::Write as _;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use twinbank::{report, BootDecision, Config};
use twinbank_board::{self as board, consts, exit_code, uart};

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
    board::session::init();
    let config = board::config();
    let mut flash = board::flash::Flash::new();
    let mut sha = board::sha256();
    let mut out = uart();
    #[cfg(feature = "recovery")]
    let asked = recovery::requested();
    // The boot line is written without `core::fmt` (twinbank::report): issue 12.
    match twinbank::decide_with(&mut flash, &config, &mut sha) {
        Ok(d) => {
            #[cfg(feature = "recovery")]
            if let Some(why) = asked {
                // The decision made (an attempt spent, as a boot would) tells which bank holds
                // the image that verifies: recovery keeps it.
                recovery::serve(Some(d.bank), why)
            }
            let _ = report::decision(&mut out, &d);
            let vt = checked_vector_table(&config, &d);
            #[cfg(feature = "bench")]
            bench::report(stack_top);
            board::watchdog::start(board::watchdog::PERIOD_TICKS);
            // SAFETY: the image verified (signature by a trusted key) and its vector table passed
            // the checks above; the shim owns nothing the app could miss.
            unsafe {
                (*cortex_m::peripheral::SCB::PTR).vtor.write(vt);
                cortex_m::asm::bootload(vt as *const u32)
            }
        }
        Err(e) => {
            let _ = report::error(&mut out, &e);
            #[cfg(feature = "recovery")]
            recovery::serve(None, recovery::Why::NothingVerifies);
            #[cfg(not(feature = "recovery"))]
            board::exit(exit_code::NO_BOOTABLE_IMAGE)
        }
    }
}

/// The vector table of the decided image, after checking it can be jumped into: aligned for
/// VTOR, inside the bank, initial SP inside RAM, reset vector a Thumb address inside the image.
fn checked_vector_table(config: &Config<'_>, d: &BootDecision) -> u32 {
    let start = config.layout.bank_address(d.bank);
    let end = start + config.layout.bank_size();
    let vt = d.vector_table;
    let ok_vt = vt.is_multiple_of(consts::VECTOR_ALIGNMENT) && vt >= start && vt + 8 <= end;
    // The initial SP and reset vector, read only when the table lies inside the bank.
    let words = ok_vt.then(|| {
        // SAFETY: `vt` is inside the bank, which is mapped memory.
        unsafe {
            (
                core::ptr::read_volatile(vt as *const u32),
                core::ptr::read_volatile((vt + 4) as *const u32),
            )
        }
    });
    if let Some((sp, rv)) = words {
        let sp_ok = sp > consts::RAM_START && sp <= consts::RAM_END && sp % 4 == 0;
        let rv_ok = rv & 1 == 1 && (rv & !1) >= vt && (rv & !1) < end;
        if sp_ok && rv_ok {
            return vt;
        }
    }
    let mut out = uart();
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
    board::exit(exit_code::BAD_VECTOR_TABLE)
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    board::hard_fault(ef, "twinbank", false)
}

#[cfg(feature = "bench")]
mod bench {
    //! Measurements: instructions from reset to the jump, and the peak stack (painted).
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

    pub fn report(main_sp: u32) {
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
    }
}
