//! The RP2040 watchdog: armed by the shim before the jump (resetting everything but the
//! oscillators when it fires), fed by the application.

/// WATCHDOG register block.
const WATCHDOG: usize = 0x4005_8000;
const CTRL: usize = WATCHDOG;
const LOAD: usize = WATCHDOG + 0x04;
const TICK: usize = WATCHDOG + 0x2C;
/// CTRL: enable the countdown.
const CTRL_ENABLE: u32 = 1 << 30;
/// TICK: enable the tick generator; the low 9 bits divide clk_ref into 1 µs ticks.
const TICK_ENABLE: u32 = 1 << 9;
/// clk_ref at reset: the ring oscillator, nominally 6.5 MHz (embassy-rp's clock set-up later
/// retunes the tick to the crystal: 12 cycles).
const ROSC_CYCLES_PER_US: u32 = 6;
/// PSM WDSEL: which blocks the watchdog resets.
const PSM_WDSEL: usize = 0x4001_0008;
/// Every block but the two oscillators (ROSC, XOSC: bits 0 and 1).
const WDSEL_ALL_BUT_OSCILLATORS: u32 = 0x0001_FFFC;
/// The application's period between feeds: 8 s (in µs ticks).
pub const PERIOD_TICKS: u32 = 8_000_000;
/// The counter decrements twice per tick (RP2040 erratum RP2040-E1).
const ERRATUM_E1: u32 = 2;

fn write_reg(addr: usize, v: u32) {
    // SAFETY: WATCHDOG and PSM registers; only this module writes them.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// Starts the watchdog with a period of `ticks` microseconds.
pub fn start(ticks: u32) {
    write_reg(TICK, TICK_ENABLE | ROSC_CYCLES_PER_US);
    write_reg(PSM_WDSEL, WDSEL_ALL_BUT_OSCILLATORS);
    write_reg(LOAD, ticks.saturating_mul(ERRATUM_E1));
    write_reg(CTRL, CTRL_ENABLE);
}

/// Reloads the counter with [`PERIOD_TICKS`].
pub fn feed() {
    write_reg(LOAD, PERIOD_TICKS * ERRATUM_E1);
}

/// Whether the watchdog counts (the application's health check).
pub fn running() -> bool {
    // SAFETY: reads the CTRL register.
    unsafe { core::ptr::read_volatile(CTRL as *const u32) & CTRL_ENABLE != 0 }
}
