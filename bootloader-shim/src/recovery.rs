//! Serial recovery (cargo feature `recovery`; `recovery-smp` adds SMP): the shim serves the
//! native protocol (and SMP) on the board's UART through `Updater::for_recovery`, so that a
//! device whose banks do not verify, or whose application asked for it, takes an image over the
//! serial line. Uploads go to the bank that is not kept: recovery never erases the image that
//! verifies. The shim arms the watchdog, feeds it while it waits for bytes (sleeping in `wfi`,
//! woken by the UART or a 10 Hz SysTick), and resets after a `Reboot` (or an SMP reset) once its
//! answer is sent.

use core::fmt::Write as _;
use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use twinbank::{Bank, Updater};
use twinbank_board::{self as board, uart, watchdog};

/// Why the shim serves recovery (the reason its line gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No bank holds an image that verifies.
    NothingVerifies,
    /// The application asked for it before the reset (the board's RAM words).
    Application,
    /// The operator sent the request on the UART within the board's window.
    Uart,
}

impl Why {
    fn text(self) -> &'static str {
        match self {
            Why::NothingVerifies => "no bank verifies",
            Why::Application => "requested by the application",
            Why::Uart => "requested on the UART",
        }
    }
}

/// The board's triggers other than "nothing verifies", taken at every reset: the
/// application's request (cleared when taken), then the UART window (if the board has one).
pub fn requested() -> Option<Why> {
    if board::take_recovery_request() {
        Some(Why::Application)
    } else if board::recovery::window_request(board::consts::RECOVERY_WINDOW_MS) {
        Some(Why::Uart)
    } else {
        None
    }
}

/// SysTick wakes the core this often (Hz) to feed the watchdog while no byte arrives.
const WAKEUPS_HZ: u32 = 10;

/// Serves recovery forever (resets after a reboot request). `keep`: the bank whose image
/// verifies, which uploads never touch (`None`: nothing verifies).
pub fn serve(keep: Option<Bank>, why: Why) -> ! {
    let mut u = board::uart();
    let _ = u.write_str("twinbank: recovery (");
    let _ = u.write_str(why.text());
    if let Some(b) = keep {
        let _ = u.write_str("; bank ");
        let _ = u.write_str(if b == Bank::A { "A" } else { "B" });
        let _ = u.write_str(" kept");
    }
    let _ = u.write_str("), serving the serial protocol\n");
    watchdog::start(watchdog::PERIOD_TICKS);
    start_wakeups();
    let config = board::config();
    let flash = board::flash::Flash::new();
    #[cfg(not(feature = "recovery-smp"))]
    let opened = Updater::for_recovery(flash, config, keep, board::sha256());
    // The SMP console serves a `Server` over the software SHA-256 (`twinbank::smp::Console` is
    // not generic over the engine).
    #[cfg(feature = "recovery-smp")]
    let opened = Updater::for_recovery(flash, config, keep, twinbank::image::SoftSha256::default());
    match opened {
        Ok(updater) => run(updater, config),
        Err(_) => {
            // Only a flash read error of the state region gets here; the watchdog resets the
            // board and the next boot tries again.
            let _ = u.write_str("twinbank: recovery cannot read the state region\n");
            loop {
                cortex_m::asm::wfi();
            }
        }
    }
}

#[cfg(not(feature = "recovery-smp"))]
mod buffers {
    use super::*;
    use twinbank::protocol::server::OUT_FRAME;
    use twinbank::protocol::{FrameDecoder, Server};

    /// The server over the board's SHA-256 engine.
    pub type Serving = Server<'static, board::flash::Flash, board::Sha256>;
    pub static mut DECODER: FrameDecoder = FrameDecoder::new();
    pub static mut RESPONSE: [u8; OUT_FRAME] = [0; OUT_FRAME];
    pub static mut SERVER: MaybeUninit<Serving> = MaybeUninit::uninit();
}

/// Native protocol only: bytes → frame decoder → server → response.
#[cfg(not(feature = "recovery-smp"))]
fn run(
    updater: Updater<'static, board::flash::Flash, board::Sha256>,
    config: twinbank::Config<'static>,
) -> ! {
    use buffers::*;
    // SAFETY: `run` is called once and never returns; nothing else touches these statics.
    let (decoder, response, server) = unsafe {
        (
            &mut *addr_of_mut!(DECODER),
            &mut *addr_of_mut!(RESPONSE),
            (*addr_of_mut!(SERVER)).write(twinbank::protocol::Server::new(updater, config)),
        )
    };
    let mut u = board::uart();
    loop {
        let byte = next_byte(&mut u);
        let n = match decoder.push(byte) {
            None => continue,
            Some(Ok(len)) => server.handle_frame(decoder.frame(len), response),
            Some(Err(e)) => server.frame_error(e, response),
        };
        send(&mut u, response.get(..n).unwrap_or(&[]));
        if server.reboot_requested() {
            uart::flush();
            board::reset()
        }
    }
}

#[cfg(feature = "recovery-smp")]
mod buffers {
    use super::*;
    use twinbank::smp::{Console, CONSOLE_OUT};

    pub static mut RESPONSE: [u8; CONSOLE_OUT] = [0; CONSOLE_OUT];
    pub static mut CONSOLE: MaybeUninit<Console<'static, board::flash::Flash>> =
        MaybeUninit::uninit();
}

/// Both protocols on one UART (`twinbank::smp::Console`).
#[cfg(feature = "recovery-smp")]
fn run(updater: Updater<'static, board::flash::Flash>, config: twinbank::Config<'static>) -> ! {
    use buffers::*;
    // SAFETY: `run` is called once and never returns; nothing else touches these statics.
    let (response, console) = unsafe {
        (
            &mut *addr_of_mut!(RESPONSE),
            (*addr_of_mut!(CONSOLE)).write(twinbank::smp::Console::new(
                twinbank::protocol::Server::new(updater, config),
            )),
        )
    };
    // A reset into recovery (SMP boot mode 1) asked in recovery comes back to recovery.
    console.offer_recovery(true);
    let mut u = board::uart();
    loop {
        let byte = next_byte(&mut u);
        let n = console.feed(byte, response);
        send(&mut u, response.get(..n).unwrap_or(&[]));
        if console.reboot_requested() {
            if console.recovery_requested() {
                board::request_recovery();
            }
            uart::flush();
            board::reset()
        }
    }
}

/// Starts the SysTick wake-ups and the UART's receive wake-up (their handlers are in main.rs).
fn start_wakeups() {
    // SAFETY: the shim owns the core peripherals; nothing else uses SysTick here.
    let mut syst = unsafe { cortex_m::Peripherals::steal() }.SYST;
    syst.set_clock_source(cortex_m::peripheral::syst::SystClkSource::Core);
    syst.set_reload(watchdog::CLOCK_HZ / WAKEUPS_HZ);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    uart::enable_rx_wakeup();
}

/// The next received byte: sleeps until one arrives, feeding the watchdog.
fn next_byte(u: &mut board::Uart) -> u8 {
    loop {
        watchdog::feed();
        if let Some(b) = u.try_read() {
            return b;
        }
        uart::wait_for_rx();
    }
}

fn send(u: &mut board::Uart, bytes: &[u8]) {
    for &b in bytes {
        u.write_byte(b);
    }
}
