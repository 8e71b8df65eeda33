//! UART0: CMSDK APB UART at 0x4000_4000, polled. QEMU ignores the baud rate.

use core::fmt;
use core::ptr::{read_volatile, write_volatile};

const BASE: usize = 0x4000_4000;
const DATA: *mut u32 = BASE as *mut u32;
const STATE: *mut u32 = (BASE + 0x04) as *mut u32;
const CTRL: *mut u32 = (BASE + 0x08) as *mut u32;
const INTSTATUS: *mut u32 = (BASE + 0x0C) as *mut u32;
const BAUDDIV: *mut u32 = (BASE + 0x10) as *mut u32;
const STATE_TX_FULL: u32 = 1;
const STATE_RX_FULL: u32 = 2;
const CTRL_TX_RX: u32 = 0b11;
const CTRL_RX_INTEN: u32 = 1 << 3;
const INT_RX: u32 = 1 << 1;
/// NVIC set-enable register 0 (interrupts 0..31).
const NVIC_ISER0: *mut u32 = 0xE000_E100 as *mut u32;
/// The NVIC interrupt number of UART0's receive interrupt on the MPS2-AN385.
pub const RX_IRQ: u16 = 0;

/// The console UART. A zero-sized handle: every handle talks to the same UART.
#[derive(Debug, Clone, Copy)]
pub struct Uart(());

/// Enables UART0 (TX and RX). Idempotent; call once at start.
pub fn init() {
    // SAFETY: fixed MMIO registers of UART0 on this board.
    unsafe {
        write_volatile(BAUDDIV, 16);
        write_volatile(CTRL, CTRL_TX_RX);
        // docs/qemu.md: after enabling RX, read DATA once, or the first host byte waits ~1 s. A byte
        // that arrived while an earlier stage (the shim) had RX enabled is kept, not discarded:
        // it is the start of a host request, and reading it later has the same effect.
        if read_volatile(STATE) & STATE_RX_FULL == 0 {
            let _ = read_volatile(DATA);
        }
    }
}

/// Lets a received byte wake the core from `wfi`: enables UART0's receive interrupt and its NVIC
/// line. The application must handle interrupt [`RX_IRQ`] by calling [`clear_rx_interrupt`]
/// (the byte itself stays in the receive register for [`Uart::try_read`]).
pub fn enable_rx_wakeup() {
    // SAFETY: fixed MMIO registers of UART0 and the NVIC; enabling an interrupt whose handler
    // the application provides.
    unsafe {
        write_volatile(INTSTATUS, INT_RX);
        write_volatile(CTRL, CTRL_TX_RX | CTRL_RX_INTEN);
        write_volatile(NVIC_ISER0, 1 << RX_IRQ);
    }
}

/// Acknowledges UART0's receive interrupt (the interrupt handler calls this).
pub fn clear_rx_interrupt() {
    // SAFETY: fixed MMIO register of UART0; write-one-to-clear.
    unsafe { write_volatile(INTSTATUS, INT_RX) }
}

/// True when a received byte is waiting.
pub fn rx_ready() -> bool {
    // SAFETY: fixed MMIO register of UART0.
    unsafe { read_volatile(STATE) & STATE_RX_FULL != 0 }
}

/// Sleeps until a byte is received or another interrupt (e.g. SysTick) wakes the core. Returns
/// at once when a byte is already waiting. Needs [`enable_rx_wakeup`].
pub fn wait_for_rx() {
    // With interrupts masked, a byte arriving between the check and `wfi` still wakes the core
    // (an enabled pending interrupt ends `wfi` even under PRIMASK); its handler runs after.
    cortex_m::interrupt::free(|_| {
        clear_rx_interrupt();
        if !rx_ready() {
            cortex_m::asm::wfi();
        }
    });
}

/// Waits until the transmitter has taken the last byte (before a reset).
pub fn flush() {
    // SAFETY: fixed MMIO register of UART0.
    unsafe { while read_volatile(STATE) & STATE_TX_FULL != 0 {} }
}

/// A handle on UART0 (call [`init`] first).
pub fn uart() -> Uart {
    Uart(())
}

impl Uart {
    /// Sends one byte, waiting while the transmitter is full.
    pub fn write_byte(&mut self, b: u8) {
        // SAFETY: fixed MMIO registers of UART0.
        unsafe {
            while read_volatile(STATE) & STATE_TX_FULL != 0 {}
            write_volatile(DATA, b as u32);
        }
    }

    /// A received byte, if one is waiting.
    pub fn try_read(&mut self) -> Option<u8> {
        // SAFETY: fixed MMIO registers of UART0.
        unsafe {
            if read_volatile(STATE) & STATE_RX_FULL != 0 {
                Some(read_volatile(DATA) as u8)
            } else {
                None
            }
        }
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.write_byte(b);
        }
        Ok(())
    }
}
