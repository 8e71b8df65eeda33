//! # Example twinbank application for the nRF52840 (embassy-nrf)
//!
//! Linked for one bank (`TWINBANK_BANK` at build time), it:
//! 1. runs its health check: it executes from its own bank (VTOR), and the watchdog the shim
//!    armed is running;
//! 2. confirms itself when on trial and healthy, rejects itself and resets when not
//!    (`twinbank_port_app::settle`; the flash is embassy-nrf's `Nvmc`, whose geometry twinbank
//!    checks against `board.toml`);
//! 3. serves the serial protocol (`twinbank serial …`) on UARTE0 (RX P0.08, TX P0.06: the
//!    nRF52840-DK's VCOM), 115200 baud, feeding the watchdog at least once a second, and
//!    resets after a `Reboot` request.
//!
//! Built and simulated, not run on hardware here.
#![no_std]
#![no_main]

use core::fmt::Write as _;
use embassy_executor::Spawner;
use embassy_futures::select::{select, Either};
use embassy_nrf::nvmc::Nvmc;
use embassy_nrf::uarte::{self, Uarte};
use embassy_nrf::{bind_interrupts, peripherals};
use embassy_time::{Duration, Timer};
use static_cell::StaticCell;
use twinbank::Updater;
use twinbank_port_app::{settle, Serial, Settled};
use twinbank_port_nrf52840::{self as board, consts, uart, watchdog};

mod gen {
    include!(concat!(env!("OUT_DIR"), "/app_gen.rs"));
}
use gen::BANK;

bind_interrupts!(struct Irqs {
    UARTE0 => uarte::InterruptHandler<peripherals::UARTE0>;
});

/// How often the serving loop wakes to feed the watchdog when no byte arrives.
const FEED_EVERY: Duration = Duration::from_secs(1);
/// WDT RUNSTATUS: bit 0 set while the watchdog runs.
const WDT_RUNSTATUS: usize = 0x4001_0400;
/// The Cortex-M Vector Table Offset Register.
const SCB_VTOR: usize = 0xE000_ED08;

type Flash = Nvmc<'static>;
static SERIAL: StaticCell<Serial<'static, Flash, board::Sha256>> = StaticCell::new();

/// The application's health: what it needs to run properly, checked before it confirms.
fn health_check() -> Result<(), &'static str> {
    let own_table = board::LAYOUT.bank_address(BANK) + consts::HEADER_SIZE;
    // SAFETY: reads of two core/peripheral registers.
    let (vtor, wdt) = unsafe {
        (
            core::ptr::read_volatile(SCB_VTOR as *const u32),
            core::ptr::read_volatile(WDT_RUNSTATUS as *const u32),
        )
    };
    if vtor != own_table {
        return Err("not running from its own bank");
    }
    if wdt & 1 == 0 {
        return Err("the watchdog is not running");
    }
    Ok(())
}

/// Stops on an error the application cannot handle (the watchdog then resets the chip).
fn fail(what: &str, e: impl core::fmt::Display) -> ! {
    let _ = writeln!(uart::Uart, "app: {what}: {e}");
    board::halt()
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let p = embassy_nrf::init(Default::default());
    watchdog::feed();
    let config = board::config();
    let flash = Nvmc::new(p.NVMC);
    let mut updater = match Updater::with_engine(flash, config, BANK, board::sha256()) {
        Ok(u) => u,
        Err(e) => fail("open updater", e),
    };
    let mut uarte_config = uarte::Config::default();
    uarte_config.baudrate = uarte::Baudrate::BAUD115200;
    let mut serial_port = Uarte::new(p.UARTE0, Irqs, p.P0_08, p.P0_06, uarte_config);
    let mut out = Console(&mut serial_port);
    let _ = writeln!(out, "app: bank {BANK} ({})", consts::BOARD_NAME);
    match settle(&mut updater, health_check(), &mut out) {
        Ok(Settled::Rejected) => board::reset(),
        Ok(_) => {}
        Err(e) => fail("confirm", e),
    }
    let serial = SERIAL.init(Serial::new(updater, config));
    let mut byte = [0u8; 1];
    loop {
        watchdog::feed();
        let got = match select(serial_port.read(&mut byte), Timer::after(FEED_EVERY)).await {
            Either::First(r) => r.is_ok(),
            Either::Second(()) => false,
        };
        if !got {
            continue;
        }
        if let Some(frame) = serial.byte(byte[0]) {
            // EasyDMA sends from RAM only; the response frame is in RAM.
            let _ = serial_port.write(frame).await;
        }
        if serial.reboot_requested() {
            board::reset()
        }
    }
}

/// Text lines on the UARTE (blocking writes from RAM, a chunk at a time).
struct Console<'a, 'd>(&'a mut Uarte<'d, peripherals::UARTE0>);

impl core::fmt::Write for Console<'_, '_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut buf = [0u8; 32];
        for chunk in s.as_bytes().chunks(buf.len()) {
            let b = buf.get_mut(..chunk.len()).ok_or(core::fmt::Error)?;
            b.copy_from_slice(chunk);
            self.0.blocking_write(b).map_err(|_| core::fmt::Error)?;
        }
        Ok(())
    }
}
