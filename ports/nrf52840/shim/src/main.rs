//! # The twinbank shim for the nRF52840
//!
//! `twinbank_shim_core::boot` with this board: NVMC flash driver, software SHA-256, the boot
//! line on UART0 (P0.06), the WDT armed before the jump; it halts when nothing can boot.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use twinbank::BootError;
use twinbank_port_nrf52840::{self as board, consts, flash::Nvmc, uart, watchdog};
use twinbank_shim_core::Board;

/// The shim handles no interrupt (the application installs its own vector table): one entry,
/// which cortex-m-rt's `device` feature requires.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [default_interrupt];

/// The shim enables no interrupt: one that fires stops it.
unsafe extern "C" fn default_interrupt() {
    board::halt()
}

/// The nRF52840 as the shared boot path sees it.
struct Nrf52840;

impl Board for Nrf52840 {
    const RAM_START: u32 = consts::RAM_START;
    const RAM_END: u32 = consts::RAM_END;
    const VECTOR_ALIGNMENT: u32 = consts::VECTOR_ALIGNMENT;
    type Console = uart::Uart;

    fn console(&mut self) -> uart::Uart {
        uart::Uart
    }

    fn before_jump(&mut self) {
        uart::deinit();
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
    uart::init();
    let config = board::config();
    twinbank_shim_core::boot(
        &mut Nrf52840,
        &mut Nvmc::new(),
        &config,
        &mut board::sha256(),
    )
}
