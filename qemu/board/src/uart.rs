//! UART0: CMSDK APB UART at 0x4000_4000, polled. QEMU ignores the baud rate.

use core::fmt;
use core::ptr::{read_volatile, write_volatile};

const BASE: usize = 0x4000_4000;
const DATA: *mut u32 = BASE as *mut u32;
const STATE: *mut u32 = (BASE + 0x04) as *mut u32;
const CTRL: *mut u32 = (BASE + 0x08) as *mut u32;
const BAUDDIV: *mut u32 = (BASE + 0x10) as *mut u32;
const STATE_TX_FULL: u32 = 1;
const STATE_RX_FULL: u32 = 2;

/// The console UART. A zero-sized handle: every handle talks to the same UART.
#[derive(Debug, Clone, Copy)]
pub struct Uart(());

/// Enables UART0 (TX and RX). Idempotent; call once at start.
pub fn init() {
    // SAFETY: fixed MMIO registers of UART0 on this board.
    unsafe {
        write_volatile(BAUDDIV, 16);
        write_volatile(CTRL, 0b11);
        // qemu.md: after enabling RX, read DATA once, or the first host byte waits ~1 s.
        let _ = read_volatile(DATA);
    }
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
