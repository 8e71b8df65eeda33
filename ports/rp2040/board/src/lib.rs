//! # twinbank-port-rp2040: the RP2040 board crate
//!
//! What the shim and the application take from the board (docs/porting.md, section 2):
//! - [`consts`], [`LAYOUT`], [`config`]: generated from `ports/rp2040/board.toml`;
//! - [`flash::QspiFlash`]: the external QSPI flash through the boot ROM, from RAM with XIP off
//!   (4-byte writes over 256-byte page programs, 4 KiB sectors); the application uses it too
//!   (embassy-rp's flash driver writes 256-byte units, more than twinbank's 32);
//! - [`watchdog`]: armed by the shim, fed by the application;
//! - [`Sha256`]: the software engine;
//! - [`halt`] and a panic handler (halts: the shim has no console; the application prints on
//!   its UART).
//!
//! The Cortex-M0+ has no compare-and-swap atomics: nothing here or in twinbank needs them.
//! Built and simulated (the power-cut harness runs this geometry), not run on hardware here.
#![no_std]
#![deny(missing_docs)]

pub mod flash;
pub mod watchdog;

include!(concat!(env!("OUT_DIR"), "/board_gen.rs"));

/// The SHA-256 engine of this board: the crate's compact software engine.
pub type Sha256 = twinbank::image::CompactSha256;

/// The board's SHA-256 engine, for `twinbank::decide_with` and `Updater::with_engine`.
pub fn sha256() -> Sha256 {
    Sha256::default()
}

/// Stops: interrupts off, the core asleep (a debugger can still attach).
pub fn halt() -> ! {
    cortex_m::interrupt::disable();
    loop {
        cortex_m::asm::wfi();
    }
}

/// Resets the chip (SYSRESETREQ).
pub fn reset() -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}

/// Panics halt (the watchdog, when armed, then resets the chip).
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    halt()
}
