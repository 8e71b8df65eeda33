//! The console and serial transport: USART2 on PA2 (TX) / PA3 (RX), alternate function 7 (the
//! NUCLEO-L476RG's ST-LINK virtual COM port), 115200 baud 8N1, polled, clocked by the 4 MHz MSI
//! the chip starts on.

const RCC: usize = 0x4002_1000;
const RCC_AHB2ENR: usize = RCC + 0x4C;
const RCC_APB1ENR1: usize = RCC + 0x58;
const GPIOAEN: u32 = 1 << 0;
const USART2EN: u32 = 1 << 17;
const GPIOA: usize = 0x4800_0000;
const GPIOA_MODER: usize = GPIOA;
const GPIOA_AFRL: usize = GPIOA + 0x20;
/// MODER: PA2 and PA3 (two bits each from bit 4) in alternate-function mode (0b10).
const MODER_MASK: u32 = 0xF << 4;
const MODER_AF: u32 = 0xA << 4;
/// AFRL: PA2 and PA3 (four bits each from bit 8) on AF7 (USART2).
const AFRL_MASK: u32 = 0xFF << 8;
const AFRL_AF7: u32 = 0x77 << 8;
const USART2: usize = 0x4000_4400;
const CR1: usize = USART2;
const BRR: usize = USART2 + 0x0C;
const ISR: usize = USART2 + 0x1C;
const ICR: usize = USART2 + 0x20;
const RDR: usize = USART2 + 0x24;
const TDR: usize = USART2 + 0x28;
/// CR1: USART, receiver and transmitter enabled.
const CR1_UE_RE_TE: u32 = (1 << 0) | (1 << 2) | (1 << 3);
/// ISR: a byte received; overrun; transmit register empty; transmission complete.
const ISR_RXNE: u32 = 1 << 5;
const ISR_ORE: u32 = 1 << 3;
const ISR_TXE: u32 = 1 << 7;
const ISR_TC: u32 = 1 << 6;
/// ICR: clear the overrun flag.
const ICR_ORECF: u32 = 1 << 3;
/// The MSI clock at reset.
const PCLK_HZ: u32 = 4_000_000;
const BAUD: u32 = 115_200;

fn read_reg(addr: usize) -> u32 {
    // SAFETY: an RCC, GPIOA or USART2 register.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write_reg(addr: usize, v: u32) {
    // SAFETY: an RCC, GPIOA or USART2 register; only this module writes these fields.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// Clocks and configures USART2 and its pins.
pub fn init() {
    write_reg(RCC_AHB2ENR, read_reg(RCC_AHB2ENR) | GPIOAEN);
    write_reg(RCC_APB1ENR1, read_reg(RCC_APB1ENR1) | USART2EN);
    write_reg(GPIOA_AFRL, (read_reg(GPIOA_AFRL) & !AFRL_MASK) | AFRL_AF7);
    write_reg(
        GPIOA_MODER,
        (read_reg(GPIOA_MODER) & !MODER_MASK) | MODER_AF,
    );
    write_reg(BRR, (PCLK_HZ + BAUD / 2) / BAUD);
    write_reg(CR1, CR1_UE_RE_TE);
}

/// Sends one byte (polled).
pub fn write_byte(b: u8) {
    while read_reg(ISR) & ISR_TXE == 0 {}
    write_reg(TDR, u32::from(b));
}

/// Waits until every byte has left the shift register (before a reset).
pub fn flush() {
    while read_reg(ISR) & ISR_TC == 0 {}
}

/// A received byte, if one is waiting (an overrun is cleared: the lost bytes make the frame's
/// CRC fail and the client retries).
pub fn try_read() -> Option<u8> {
    let isr = read_reg(ISR);
    if isr & ISR_ORE != 0 {
        write_reg(ICR, ICR_ORECF);
    }
    (isr & ISR_RXNE != 0).then(|| (read_reg(RDR) & 0xFF) as u8)
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
