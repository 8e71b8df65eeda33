//! # Example twinbank application for the STM32L476 (register level)
//!
//! Linked for one bank (`TWINBANK_BANK` at build time), it:
//! 1. runs its health check: it executes from its own bank (VTOR), and the watchdog the shim
//!    armed is running;
//! 2. confirms itself when on trial and healthy, rejects itself and resets when not
//!    (`twinbank_port_app::settle`, over the board crate's flash driver);
//! 3. serves the serial protocol (`twinbank serial …`) on USART2 (the NUCLEO's virtual COM
//!    port), 115200 baud, polled, feeding the watchdog, and resets after a `Reboot` request.
//!
//! No HAL: embassy-stm32 builds its register definitions for the chip from a large generated
//! crate, several minutes of CI per build for what ~60 lines of registers do here (ports/README.md).
//! Built and simulated, not run on hardware here.
#![no_std]
#![no_main]

use core::fmt::Write as _;
use cortex_m_rt::{entry, exception};
use twinbank::Updater;
use twinbank_port_app::{settle, Serial, Settled};
use twinbank_port_stm32l476::{self as board, consts, flash::Flash, uart, watchdog};

mod gen {
    include!(concat!(env!("OUT_DIR"), "/app_gen.rs"));
}
use gen::BANK;

/// The Cortex-M Vector Table Offset Register.
const SCB_VTOR: usize = 0xE000_ED08;

/// The application enables no interrupt: one entry, which cortex-m-rt's `device` feature
/// requires.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [default_interrupt];

/// No interrupt is enabled: one that fires stops the application (the watchdog resets it).
unsafe extern "C" fn default_interrupt() {
    board::halt()
}

/// The application's health: what it needs to run properly, checked before it confirms.
fn health_check() -> Result<(), &'static str> {
    let own_table = board::LAYOUT.bank_address(BANK) + consts::HEADER_SIZE;
    // SAFETY: reads a core register.
    let vtor = unsafe { core::ptr::read_volatile(SCB_VTOR as *const u32) };
    if vtor != own_table {
        return Err("not running from its own bank");
    }
    if !watchdog::running() {
        return Err("the watchdog is not running");
    }
    Ok(())
}

/// Stops on an error the application cannot handle (the watchdog then resets the chip).
fn fail(what: &str, e: impl core::fmt::Display) -> ! {
    let _ = writeln!(uart::Uart, "app: {what}: {e}");
    board::halt()
}

/// A flash read hit a double-word whose programming a power cut interrupted (a double ECC error
/// raises the NMI): the flag is cleared and the read goes on with the uncorrected bytes, which
/// twinbank refuses. Any other NMI resets the chip. (`unsafe` as cortex-m-rt asks of an NMI
/// handler, which can preempt anything: this one shares no data with the code it interrupts and
/// touches only the flash controller's ECC register.)
#[exception]
unsafe fn NonMaskableInt() {
    if !board::flash::take_ecc_double_error() {
        board::reset()
    }
}

#[entry]
fn main() -> ! {
    watchdog::feed();
    uart::init();
    let config = board::config();
    let mut out = uart::Uart;
    let _ = writeln!(out, "app: bank {BANK} ({})", consts::BOARD_NAME);
    let mut updater = match Updater::with_engine(Flash::new(), config, BANK, board::sha256()) {
        Ok(u) => u,
        Err(e) => fail("open updater", e),
    };
    match settle(&mut updater, health_check(), &mut out) {
        Ok(Settled::Rejected) => {
            uart::flush();
            board::reset()
        }
        Ok(_) => {}
        Err(e) => fail("confirm", e),
    }
    let mut serial = Serial::new(updater, config);
    loop {
        watchdog::feed();
        let Some(byte) = uart::try_read() else {
            continue;
        };
        if let Some(frame) = serial.byte(byte) {
            frame.iter().copied().for_each(uart::write_byte);
        }
        if serial.reboot_requested() {
            uart::flush();
            board::reset()
        }
    }
}
