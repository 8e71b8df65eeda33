//! The console: the legacy UART0 peripheral, transmit only, 115200 baud 8N1 on P0.06 (the
//! nRF52840-DK's VCOM TX), polled. Enough for the shim's boot line; the application has
//! embassy-nrf's UARTE for its serial protocol.

/// UART0 register block.
const UART0: usize = 0x4000_2000;
const TASKS_STARTTX: usize = UART0 + 0x008;
const TASKS_STOPTX: usize = UART0 + 0x00C;
const EVENTS_TXDRDY: usize = UART0 + 0x11C;
const ENABLE: usize = UART0 + 0x500;
const PSEL_TXD: usize = UART0 + 0x50C;
const TXD: usize = UART0 + 0x51C;
const BAUDRATE: usize = UART0 + 0x524;
/// ENABLE value of the UART (not UARTE).
const ENABLE_UART: u32 = 4;
/// BAUDRATE value for 115200 baud.
const BAUD_115200: u32 = 0x01D7_E000;
/// P0.06: the DK's VCOM TX.
const TX_PIN: u32 = 6;

fn write_reg(addr: usize, v: u32) {
    // SAFETY: UART0 registers; only the console uses UART0.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// Configures UART0 for transmission.
pub fn init() {
    write_reg(PSEL_TXD, TX_PIN);
    write_reg(BAUDRATE, BAUD_115200);
    write_reg(ENABLE, ENABLE_UART);
    write_reg(TASKS_STARTTX, 1);
}

/// Stops and disables UART0, as reset left it (the shim, before the jump: the application's
/// UARTE0 is the same peripheral).
pub fn deinit() {
    write_reg(TASKS_STOPTX, 1);
    write_reg(ENABLE, 0);
}

/// Sends one byte (polled).
pub fn write_byte(b: u8) {
    write_reg(EVENTS_TXDRDY, 0);
    write_reg(TXD, u32::from(b));
    // SAFETY: reads a UART0 event register.
    while unsafe { core::ptr::read_volatile(EVENTS_TXDRDY as *const u32) } == 0 {}
}

/// The console as a `core::fmt::Write` (after [`init`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Uart;

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        s.bytes().for_each(write_byte);
        Ok(())
    }
}
