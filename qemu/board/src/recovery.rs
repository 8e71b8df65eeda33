//! The board's serial-recovery triggers (the shim's `recovery` feature; docs/porting.md):
//!
//! - [`request_recovery`] / [`take_recovery_request`]: the application asks the bootloader to
//!   enter recovery at the next reset. The request is two words in the RAM the linker maps leave
//!   out (the first `RAM_RESERVED` bytes, beside the QEMU session block): QEMU's MPS2 keeps RAM
//!   over a system reset (SYSRESETREQ, the watchdog), as the session block relies on. A magic
//!   value and its complement, so that the random contents of RAM after a power-on (or QEMU's
//!   zeroed RAM) never read as a request; the shim clears them when it takes the request.
//! - [`recovery_offered`]: the application learns whether its bootloader serves recovery (it
//!   says so before offering SMP's reset into recovery): a bootloader built with recovery takes
//!   the request at every reset and leaves [`OFFERED_MAGIC`] in the second word.
//! - [`window_request`]: the operator sends [`REQUEST`] on the UART within
//!   `RECOVERY_WINDOW_MS` of a reset (`[bootloader] recovery_window_ms` in twinbank.toml, 0 =
//!   no window).

use core::ptr::{read_volatile, write_volatile};

/// Address of the request (two words), inside the reserved start of RAM, after the session
/// block (which takes the first 32 bytes).
const REQUEST_ADDR: usize = 0x2000_03F0;
/// The request's first word; the second holds its complement.
const REQUEST_MAGIC: u32 = 0x7EC0_7E21;

/// Left in the second word (the first one 0) by a bootloader that serves recovery when it takes
/// the request: the application's sign that asking for recovery will be answered.
pub const OFFERED_MAGIC: u32 = 0x5EC0_0FFE;

/// What the operator sends on the UART, within the window, to enter recovery.
pub const REQUEST: &[u8] = b"recover";

fn words() -> (*mut u32, *mut u32) {
    (REQUEST_ADDR as *mut u32, (REQUEST_ADDR + 4) as *mut u32)
}

/// Asks the bootloader to enter serial recovery at the next reset (the application calls this,
/// then resets with [`crate::reset`]).
pub fn request_recovery() {
    let (a, b) = words();
    // SAFETY: two aligned words of RAM reserved for this module (outside every linker map),
    // accessed only through these raw pointers; the firmware is single-threaded.
    unsafe {
        write_volatile(a, REQUEST_MAGIC);
        write_volatile(b, !REQUEST_MAGIC);
    }
}

/// True when the application asked for recovery before this reset; clears the request (so the
/// next reset boots normally unless asked again) and marks recovery as offered
/// ([`recovery_offered`]). Only a bootloader that serves recovery calls this.
pub fn take_recovery_request() -> bool {
    let (a, b) = words();
    // SAFETY: as in `request_recovery`.
    unsafe {
        let asked = read_volatile(a) == REQUEST_MAGIC && read_volatile(b) == !REQUEST_MAGIC;
        write_volatile(a, 0);
        write_volatile(b, OFFERED_MAGIC);
        asked
    }
}

/// True when the bootloader that started this image serves recovery (it took the request words
/// at this boot, see [`take_recovery_request`]); the application may then offer a reset into
/// recovery (SMP boot mode 1).
pub fn recovery_offered() -> bool {
    let (a, b) = words();
    // SAFETY: as in `request_recovery`.
    unsafe { read_volatile(a) == 0 && read_volatile(b) == OFFERED_MAGIC }
}

/// Core clock ticks per millisecond (SysTick on the core clock, 25 MHz on this board).
const TICKS_PER_MS: u32 = crate::watchdog::CLOCK_HZ / 1000;

/// Listens on the UART for `window_ms` milliseconds (SysTick, polled): true as soon as the bytes
/// of [`REQUEST`] arrive in a row. Bytes that arrived before the call (held by the UART) count.
/// Returns false at once when `window_ms` is 0. Leaves SysTick stopped.
pub fn window_request(window_ms: u32) -> bool {
    if window_ms == 0 {
        return false;
    }
    // SAFETY: the shim owns SysTick before it jumps into an image.
    let mut syst = unsafe { cortex_m::Peripherals::steal() }.SYST;
    syst.set_clock_source(cortex_m::peripheral::syst::SystClkSource::Core);
    syst.set_reload(TICKS_PER_MS - 1);
    syst.clear_current();
    syst.enable_counter();
    let mut u = crate::uart();
    let (mut elapsed, mut matched, mut found) = (0u32, 0usize, false);
    while elapsed < window_ms && !found {
        crate::watchdog::feed();
        if syst.has_wrapped() {
            elapsed += 1;
        }
        if let Some(byte) = u.try_read() {
            matched = match REQUEST.get(matched) {
                Some(&want) if want == byte => matched + 1,
                _ if REQUEST.first() == Some(&byte) => 1,
                _ => 0,
            };
            found = matched == REQUEST.len();
        }
    }
    syst.disable_counter();
    found
}
