//! # twinbank-board: the MPS2 boards under QEMU
//!
//! One crate for both emulated boards: the MPS2-AN385 (Cortex-M3, `thumbv7m-none-eabi`, the
//! workspace's `twinbank.toml`) and the MPS2-AN500 (Cortex-M7, `thumbv7em-none-eabi`,
//! `boards/mps2-an500.toml`: another flash base and another flash geometry). Both machines put
//! RAM, UART0 and the watchdog at the same addresses, so the board description is the only
//! difference (selected with `TWINBANK_BOARD` at build time; docs/qemu.md).
//!
//! Everything board-specific lives here, so that a port to a real MCU writes one crate like this
//! one (see `docs/porting.md`):
//!
//! | item | here | on a real MCU |
//! |---|---|---|
//! | constants ([`consts`]) | generated from `twinbank.toml` and `TWINBANK_TRUSTED_KEYS` | same |
//! | [`config`] | the `twinbank::Config` the shim and the app use | same |
//! | [`flash::Flash`] | NOR flash over file-backed RAM; with the feature `test-hooks`, NOR rules enforced and power-cut injection | the flash controller driver |
//! | [`uart`] | CMSDK UART0, polled | the console UART |
//! | [`watchdog`] | CMSDK watchdog | the independent watchdog |
//! | [`exit`], [`reset`] | semihosting `SYS_EXIT_EXTENDED`, SYSRESETREQ | halt, reset |
//! | [`recovery`] | the app's recovery request (RAM words kept over reset), the UART window | same (RAM kept over reset, or a backup register / GPIO) |
//! | [`session`] | test hooks: semihosting arguments, power-cut counter | absent |
//! | [`semihosting`] | host file reads (test infrastructure: the `update=PATH` install) | absent (the app's transport) |
//!
//! Linker maps: the build script writes `memory-shim.x` and `memory-bank-{A,B}.x` and exports
//! their directory to the firmware crates' build scripts (`DEP_TWINBANK_BOARD_MEMORY_DIR`).
#![no_std]
#![deny(missing_docs)]

pub mod flash;
pub mod recovery;
pub mod semihosting;
pub mod session;
pub mod uart;
pub mod watchdog;

/// Board constants generated from the board description at build time.
pub mod consts {
    use twinbank::image::{DeviceIds, TrustedKey, Uuid};
    use twinbank::layout::Region;
    include!(concat!(env!("OUT_DIR"), "/board_gen.rs"));
}

use core::fmt::Write as _;
use twinbank::{Attempts, Config, Layout};

pub use recovery::{recovery_offered, request_recovery, take_recovery_request};
pub use uart::{uart, Uart};

/// Exit codes of a QEMU run (semihosting `SYS_EXIT_EXTENDED`); the tests read them.
pub mod exit_code {
    /// The app finished what it was asked to do (`halt` argument).
    pub const OK: u32 = 0;
    /// The shim found no bootable image and stopped.
    pub const NO_BOOTABLE_IMAGE: u32 = 2;
    /// The flash driver caught a NOR rule violation (a bug in the caller).
    pub const NOR_VIOLATION: u32 = 3;
    /// HardFault in the shim.
    pub const SHIM_FAULT: u32 = 4;
    /// A panic.
    pub const PANIC: u32 = 5;
    /// The shim refused to jump: the vector table of the chosen image is implausible.
    pub const BAD_VECTOR_TABLE: u32 = 6;
    /// The app stopped on an error it cannot handle.
    pub const APP_ERROR: u32 = 8;
    /// Power was cut by the flash driver (`cut=N` argument): the "device" lost power.
    pub const POWER_CUT: u32 = 42;
}

/// The flash layout of this board, checked at compile time: a layout that breaks an invariant of
/// `twinbank::Layout` fails the build, so the firmware carries neither the checks nor an error
/// path (issue 12).
pub const LAYOUT: Layout = {
    use consts::*;
    match Layout::builder()
        .flash_size(FLASH_SIZE)
        .write_size(WRITE_SIZE as u32)
        .erase_size(ERASE_SIZE as u32)
        .base_address(FLASH_BASE)
        .state(STATE)
        .bank_a(BANK_A)
        .bank_b(BANK_B)
        .build()
    {
        Ok(l) => l,
        Err(_) => panic!("twinbank.toml: the layout breaks an invariant of twinbank::Layout"),
    }
};

/// Trial boots a new image gets, checked at compile time like [`LAYOUT`].
pub const ATTEMPTS: Attempts = match Attempts::new(consts::ATTEMPTS) {
    Some(a) => a,
    None => panic!("twinbank.toml: attempts must be 1..=7"),
};

/// The twinbank configuration of this board: layout, trusted keys, ids, attempts.
pub fn config() -> Config<'static> {
    Config {
        layout: LAYOUT,
        keys: &consts::TRUSTED_KEYS,
        ids: consts::IDS,
        attempts: ATTEMPTS,
    }
}

/// Ends the QEMU run with `code` (semihosting `SYS_EXIT_EXTENDED`, so any code reaches the host).
/// On a real board this would halt.
pub fn exit(code: u32) -> ! {
    semihosting::exit(code)
}

/// Resets the whole chip (SYSRESETREQ). Under QEMU the same process reboots from the shim; the
/// flash file and the session block are kept.
pub fn reset() -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}

/// Reports a HardFault on the UART; then resets (`reset = true`, what an application does: the
/// bootloader counts the attempt) or ends the run with [`exit_code::SHIM_FAULT`].
pub fn hard_fault(ef: &cortex_m_rt::ExceptionFrame, who: &str, reset_after: bool) -> ! {
    // No `core::fmt` here: the shim links this handler (issue 12).
    let mut u = uart();
    let _ = u.write_str(who);
    let _ = u.write_str(": hardfault pc=");
    let _ = twinbank::report::hex(&mut u, ef.pc());
    let _ = u.write_str(" lr=");
    let _ = twinbank::report::hex(&mut u, ef.lr());
    let _ = u.write_str("\n");
    if reset_after {
        reset()
    } else {
        exit(exit_code::SHIM_FAULT)
    }
}

/// Instruction counter for measurements (SysTick on the core clock; under QEMU with
/// `-icount shift=0` one tick is exactly 40 instructions).
pub mod counter {
    use cortex_m::peripheral::SYST;
    const RELOAD: u32 = 0x00FF_FFFF;
    /// Instructions per SysTick tick under `-icount shift=0` at the 25 MHz core clock.
    pub const INSTRUCTIONS_PER_TICK: u32 = 40;

    /// Starts counting down from 2^24 - 1 ticks (≈ 671 M instructions before it wraps).
    pub fn start() {
        // SAFETY: SysTick is only used here, before any other user exists.
        let mut syst = unsafe { cortex_m::Peripherals::steal() }.SYST;
        syst.set_clock_source(cortex_m::peripheral::syst::SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_counter();
        // The first reading is only valid once the counter has loaded (docs/qemu.md).
        while SYST::get_current() == 0 {}
    }

    /// Instructions since [`start`] (multiple of 40).
    pub fn instructions() -> u32 {
        (RELOAD - SYST::get_current()) * INSTRUCTIONS_PER_TICK
    }
}

/// The SHA-256 engine of this board (the MPS2 has no hash peripheral): the crate's
/// [`twinbank::image::CompactSha256`], ≈ 48 instructions per image byte in ≈ 1.3 KB (the `sha2`
/// crate's compact variant: ≈ 61 per byte; `hmac-sha256`: ≈ 45 per byte but 1.6 KB more flash;
/// measured in BENCHMARKS.md). A board with a hash peripheral returns its driver here.
pub type Sha256 = twinbank::image::CompactSha256;

/// The board's SHA-256 engine, for `twinbank::decide_with` and `Updater::with_engine`.
pub fn sha256() -> Sha256 {
    Sha256::default()
}

/// Panics print where they happened, without `core::fmt` (file and line; the message needs the
/// formatting machinery, which the bootloader does not link). With the `panic-message` feature
/// (the demo app) the message is printed too.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut u = uart();
    let _ = u.write_str("panic");
    if let Some(l) = info.location() {
        let _ = u.write_str(" at ");
        let _ = u.write_str(l.file());
        let _ = u.write_str(":");
        let _ = twinbank::report::dec(&mut u, l.line());
    }
    #[cfg(feature = "panic-message")]
    {
        let _ = write!(u, ": {}", info.message());
    }
    let _ = u.write_str("\n");
    exit(exit_code::PANIC)
}
