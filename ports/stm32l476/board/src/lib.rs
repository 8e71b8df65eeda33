//! # twinbank-port-stm32l476: the STM32L476 board crate
//!
//! What the shim and the application take from the board (docs/porting.md, section 2):
//! - [`consts`], [`LAYOUT`], [`config`]: generated from `ports/stm32l476/board.toml`;
//! - [`flash::Flash`]: the flash controller, register level (8-byte double-word writes, 2 KiB
//!   pages, both banks), for the shim and the application;
//! - [`uart`]: USART2 (PA2/PA3, the NUCLEO's virtual COM port), polled, both directions;
//! - [`watchdog`]: the IWDG (armed by the shim, fed by the application);
//! - [`Sha256`]: the software engine (the STM32L476 has no hash peripheral);
//! - [`halt`] and a panic handler that prints where it happened.
//!
//! Built and simulated (the power-cut harness runs this geometry), not run on hardware here.
#![no_std]
#![deny(missing_docs)]

pub mod flash;
pub mod uart;
pub mod watchdog;

include!(concat!(env!("OUT_DIR"), "/board_gen.rs"));

use core::fmt::Write as _;

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

/// Panics print where they happened on the console (without `core::fmt`), then halt.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut u = uart::Uart;
    let _ = u.write_str("panic");
    if let Some(l) = info.location() {
        let _ = u.write_str(" at ");
        let _ = u.write_str(l.file());
        let _ = u.write_str(":");
        let _ = twinbank::report::dec(&mut u, l.line());
    }
    let _ = u.write_str("\n");
    halt()
}
