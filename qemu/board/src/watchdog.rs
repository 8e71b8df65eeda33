//! The CMSDK APB watchdog at 0x4000_8000 (25 MHz). It raises its interrupt at the first expiry
//! and resets the whole board at the second one (measured in QEMU 7.2), so a guest that stops
//! feeding it reboots after 2 × the period. Registers are locked between accesses.

use core::ptr::{read_volatile, write_volatile};

const BASE: usize = 0x4000_8000;
const LOAD: *mut u32 = BASE as *mut u32;
const VALUE: *const u32 = (BASE + 0x004) as *const u32;
const CTRL: *mut u32 = (BASE + 0x008) as *mut u32;
/// `CTRL` bits: interrupt enable, reset enable.
const CTRL_ARMED: u32 = 0b11;
const INTCLR: *mut u32 = (BASE + 0x00C) as *mut u32;
const LOCK: *mut u32 = (BASE + 0xC00) as *mut u32;
const UNLOCK_KEY: u32 = 0x1ACC_E551;

/// Watchdog clock (Hz).
pub const CLOCK_HZ: u32 = 25_000_000;
/// The period the shim arms before jumping into an image: 0.5 s, so a hung app is reset after
/// about 1 s. The app must feed the watchdog more often than that.
pub const PERIOD_TICKS: u32 = CLOCK_HZ / 2;

/// Arms the watchdog with `ticks` per period, interrupt and reset enabled.
pub fn start(ticks: u32) {
    // SAFETY: fixed MMIO registers of the watchdog on this board.
    unsafe {
        write_volatile(LOCK, UNLOCK_KEY);
        write_volatile(LOAD, ticks);
        write_volatile(CTRL, CTRL_ARMED);
        write_volatile(LOCK, 0);
    }
}

/// Feeds the watchdog: clears its interrupt and reloads the counter.
pub fn feed() {
    // SAFETY: fixed MMIO registers of the watchdog on this board.
    unsafe {
        write_volatile(LOCK, UNLOCK_KEY);
        write_volatile(INTCLR, 1);
        write_volatile(LOCK, 0);
    }
}

/// True when the watchdog is armed (interrupt and reset enabled) and counting down: what the
/// shim leaves behind, and what an application relies on to be reset when it hangs.
pub fn armed() -> bool {
    // SAFETY: reads of fixed MMIO registers of the watchdog on this board.
    let (ctrl, first) = unsafe { (read_volatile(CTRL), read_volatile(VALUE)) };
    if ctrl & CTRL_ARMED != CTRL_ARMED {
        return false;
    }
    // It counts at 25 MHz: a few reads later the value has moved (unless it was just reloaded
    // to the same value, which a second try rules out).
    (0..1000).any(|_| {
        // SAFETY: as above.
        unsafe { read_volatile(VALUE) != first }
    })
}
