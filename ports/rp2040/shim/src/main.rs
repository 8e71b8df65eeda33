//! # The twinbank shim for the RP2040
//!
//! `twinbank_shim_core::boot` with this board: the QSPI flash through the boot ROM (from RAM,
//! XIP off, for the state writes), software SHA-256, the watchdog armed before the jump. No
//! console (the peripheral clock is off at reset; the boot line goes to a sink); it halts when
//! nothing can boot. The second-stage bootloader for the Pico's W25Q16JV (`rp2040-boot2`)
//! occupies the first 256 bytes of flash, before the shim's vector table.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use twinbank::BootError;
use twinbank_port_rp2040::{self as board, consts, flash::QspiFlash, watchdog};
use twinbank_shim_core::{Board, Sink};

/// The second-stage bootloader: configures the QSPI interface for execution in place.
#[link_section = ".boot2"]
#[used]
static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

/// The shim handles no interrupt (the application installs its own vector table): one entry,
/// which cortex-m-rt's `device` feature requires.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [default_interrupt];

/// The shim enables no interrupt: one that fires stops it.
unsafe extern "C" fn default_interrupt() {
    board::halt()
}

/// The RP2040 as the shared boot path sees it.
struct Rp2040;

impl Board for Rp2040 {
    const RAM_START: u32 = consts::RAM_START;
    const RAM_END: u32 = consts::RAM_END;
    const VECTOR_ALIGNMENT: u32 = consts::VECTOR_ALIGNMENT;
    type Console = Sink;

    fn console(&mut self) -> Sink {
        Sink
    }

    fn before_jump(&mut self) {
        watchdog::start(watchdog::PERIOD_TICKS);
    }

    fn unbootable(&mut self, _e: &BootError) -> ! {
        board::halt()
    }

    fn bad_vector_table(&mut self) -> ! {
        board::halt()
    }
}

#[entry]
fn main() -> ! {
    let config = board::config();
    twinbank_shim_core::boot(
        &mut Rp2040,
        &mut QspiFlash::new(),
        &config,
        &mut board::sha256(),
    )
}
