//! # The twinbank shim for the STM32L476
//!
//! `twinbank_shim_core::boot` with this board: register-level flash driver (double-word writes, 2 KiB pages), software SHA-256, the boot
//! line on USART2 (the NUCLEO's virtual COM port), the IWDG armed before the jump; it halts when nothing can boot.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception};
use twinbank::BootError;
use twinbank_port_stm32l476::{self as board, consts, flash::Flash, uart, watchdog};
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

/// The STM32L476 as the shared boot path sees it.
struct Stm32l476;

impl Board for Stm32l476 {
    const RAM_START: u32 = consts::RAM_START;
    const RAM_END: u32 = consts::RAM_END;
    const VECTOR_ALIGNMENT: u32 = consts::VECTOR_ALIGNMENT;
    type Console = uart::Uart;

    fn console(&mut self) -> uart::Uart {
        uart::Uart
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
    uart::init();
    let config = board::config();
    twinbank_shim_core::boot(
        &mut Stm32l476,
        &mut Flash::new(),
        &config,
        &mut board::sha256(),
    )
}
