//! The WDT: armed by the shim before the jump, fed by the application. Once started it runs
//! until the next reset; it keeps counting while the core sleeps.

/// WDT register block.
const WDT: usize = 0x4001_0000;
const TASKS_START: usize = WDT;
const CRV: usize = WDT + 0x504;
const RREN: usize = WDT + 0x508;
const CONFIG: usize = WDT + 0x50C;
const RR0: usize = WDT + 0x600;
/// The value that reloads the counter.
const RELOAD: u32 = 0x6E52_4635;
/// CONFIG: keep running while the core sleeps.
const RUN_IN_SLEEP: u32 = 1;
/// The WDT counts the 32.768 kHz low-frequency clock.
const TICKS_PER_SECOND: u32 = 32_768;
/// The application's period between feeds: 8 s (boot, health check, confirm fit well inside).
pub const PERIOD_TICKS: u32 = 8 * TICKS_PER_SECOND;

fn write_reg(addr: usize, v: u32) {
    // SAFETY: WDT registers; only this module writes them.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// Starts the watchdog with a period of `ticks` (32.768 kHz), reload register 0 enabled.
pub fn start(ticks: u32) {
    write_reg(CONFIG, RUN_IN_SLEEP);
    write_reg(CRV, ticks);
    write_reg(RREN, 1);
    write_reg(TASKS_START, 1);
}

/// Reloads the counter.
pub fn feed() {
    write_reg(RR0, RELOAD);
}
