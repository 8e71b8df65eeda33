//! # Example twinbank application for the RP2040 (embassy-rp)
//!
//! Linked for one bank (`TWINBANK_BANK` at build time), it:
//! 1. runs its health check: it executes from its own bank (VTOR), and the watchdog the shim
//!    armed is running;
//! 2. confirms itself when on trial and healthy, rejects itself and resets when not
//!    (`twinbank_port_app::settle`, over the board crate's ROM flash driver);
//! 3. serves the serial protocol (`twinbank serial …`) on UART0 (TX GP0, RX GP1), 115200 baud,
//!    through embassy-rp's interrupt-driven `BufferedUart`, feeding the watchdog at least once
//!    a second, and resets after a `Reboot` request.
//!
//! Built and simulated, not run on hardware here.
#![no_std]
#![no_main]

use core::fmt::Write as _;
use embassy_executor::Spawner;
use embassy_futures::select::{select, Either};
use embassy_rp::bind_interrupts;
use embassy_rp::peripherals::UART0;
use embassy_rp::uart::{self, BufferedInterruptHandler, BufferedUart};
use embassy_time::{Duration, Timer};
use embedded_io_async::{Read as _, Write as _};
use static_cell::StaticCell;
use twinbank::Updater;
use twinbank_port_app::{settle, Serial, Settled};
use twinbank_port_rp2040::{self as board, consts, flash::QspiFlash, watchdog};

mod gen {
    include!(concat!(env!("OUT_DIR"), "/app_gen.rs"));
}
use gen::BANK;

bind_interrupts!(struct Irqs {
    UART0_IRQ => BufferedInterruptHandler<UART0>;
});

/// How often the serving loop wakes to feed the watchdog when no byte arrives.
const FEED_EVERY: Duration = Duration::from_secs(1);
/// The Cortex-M Vector Table Offset Register.
const SCB_VTOR: usize = 0xE000_ED08;
/// Bytes of the UART's transmit and receive rings.
const RING: usize = 256;

static SERIAL: StaticCell<Serial<'static, QspiFlash, board::Sha256>> = StaticCell::new();
static TX: StaticCell<[u8; RING]> = StaticCell::new();
static RX: StaticCell<[u8; RING]> = StaticCell::new();

/// The application's health: what it needs to run properly, checked before it confirms.
fn health_check() -> Result<(), &'static str> {
    let own_table = board::LAYOUT.bank_address(BANK) + consts::HEADER_SIZE;
    // SAFETY: reads a core register.
    let vtor = unsafe { core::ptr::read_volatile(SCB_VTOR as *const u32) };
    if vtor != own_table {
        return Err("not running from its own bank");
    }
    if !watchdog::running() {
        return Err("the watchdog is not running");
    }
    Ok(())
}

/// Text lines on the UART (blocking writes into the transmit ring).
struct Console<'a, 'd>(&'a mut BufferedUart<'d, UART0>);

impl core::fmt::Write for Console<'_, '_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        embedded_io::Write::write_all(self.0, s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    watchdog::feed();
    let config = board::config();
    let mut uart_config = uart::Config::default();
    uart_config.baudrate = 115_200;
    let mut port = BufferedUart::new(
        p.UART0,
        Irqs,
        p.PIN_0,
        p.PIN_1,
        TX.init([0; RING]),
        RX.init([0; RING]),
        uart_config,
    );
    let mut updater = match Updater::with_engine(QspiFlash::new(), config, BANK, board::sha256()) {
        Ok(u) => u,
        Err(e) => {
            let _ = writeln!(Console(&mut port), "app: open updater: {e}");
            board::halt()
        }
    };
    let _ = writeln!(
        Console(&mut port),
        "app: bank {BANK} ({})",
        consts::BOARD_NAME
    );
    match settle(&mut updater, health_check(), &mut Console(&mut port)) {
        Ok(Settled::Rejected) => board::reset(),
        Ok(_) => {}
        Err(e) => {
            let _ = writeln!(Console(&mut port), "app: confirm: {e}");
            board::halt()
        }
    }
    let serial = SERIAL.init(Serial::new(updater, config));
    let mut buf = [0u8; 64];
    loop {
        watchdog::feed();
        let n = match select(port.read(&mut buf), Timer::after(FEED_EVERY)).await {
            Either::First(Ok(n)) => n,
            Either::First(Err(_)) | Either::Second(()) => 0,
        };
        for &byte in buf.get(..n).unwrap_or(&[]) {
            if let Some(frame) = serial.byte(byte) {
                let _ = port.write_all(frame).await;
            }
            if serial.reboot_requested() {
                let _ = port.flush().await;
                board::reset()
            }
        }
    }
}
