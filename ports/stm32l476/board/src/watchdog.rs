//! The independent watchdog (IWDG, on the 32 kHz LSI): armed by the shim before the jump, fed
//! by the application. Once started it runs until the next reset.

const IWDG: usize = 0x4000_3000;
const KR: usize = IWDG;
const PR: usize = IWDG + 0x04;
const RLR: usize = IWDG + 0x08;
const SR: usize = IWDG + 0x0C;
const KEY_START: u32 = 0xCCCC;
const KEY_ACCESS: u32 = 0x5555;
const KEY_RELOAD: u32 = 0xAAAA;
/// PR: divide the LSI by 256 (125 ticks a second).
const PRESCALER_256: u32 = 6;
/// RCC_CSR: the LSI runs (the IWDG started it).
const RCC_CSR: usize = 0x4002_1094;
const LSIRDY: u32 = 1 << 1;
/// The application's period between feeds: 8 s at 125 ticks a second (RLR holds 12 bits).
pub const PERIOD_TICKS: u32 = 8 * 125;

fn write_reg(addr: usize, v: u32) {
    // SAFETY: IWDG registers; only this module writes them.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// Starts the watchdog with a period of `ticks` (125 a second, at most 4095).
pub fn start(ticks: u32) {
    write_reg(KR, KEY_START);
    write_reg(KR, KEY_ACCESS);
    write_reg(PR, PRESCALER_256);
    write_reg(RLR, ticks.min(0xFFF));
    // SAFETY: reads the IWDG status register.
    while unsafe { core::ptr::read_volatile(SR as *const u32) } != 0 {}
    write_reg(KR, KEY_RELOAD);
}

/// Reloads the counter.
pub fn feed() {
    write_reg(KR, KEY_RELOAD);
}

/// Whether the watchdog's clock runs (the application's health check: the IWDG has no
/// "running" flag, but starting it starts the LSI).
pub fn running() -> bool {
    // SAFETY: reads RCC_CSR.
    unsafe { core::ptr::read_volatile(RCC_CSR as *const u32) & LSIRDY != 0 }
}
