//! # The twinbank demo application
//!
//! Linked for one bank (build-time `TWINBANK_BANK`), it:
//! 1. prints `app: v<version> bank <X> (<variant>)` (the version from its own signed header);
//! 2. runs its health check (a RAM self-test, its own configuration: the signed version is the
//!    version it was built as and the core runs its vector table from its own bank, and the
//!    watchdog armed and counting) and prints `app: health ok` or `app: health FAIL: <why>`;
//!    - on trial and healthy: confirms (`app: confirmed`), unless the QEMU command line has
//!      `manual-confirm` (tests: the operator confirms over the serial protocol);
//!    - on trial and unhealthy: rejects itself (`app: rejected`) and resets: the shim rolls back;
//! 3. with `update=PATH` on the QEMU command line (once per QEMU run; test infrastructure for the
//!    power-cut tests and the flash-work figures, which need a transport that restarts by
//!    itself after a cut): reads the image from the host file through semihosting, streams it
//!    through `twinbank::Updater` into the other bank, which verifies and activates it
//!    (`app: installed <v> into bank <Y>`), and resets;
//!    `delta=PATH` does the same with a patch (`twinbank delta`) through
//!    `twinbank::delta::Applier`, and prints the instructions the patch body cost per image byte
//!    (`app: delta applied …`; BENCHMARKS.md, under `-icount`); `update=PATH` prints the same
//!    figure for the full image (`app: full image written …`);
//!    with `recover` (once per QEMU run): asks the bootloader for serial recovery
//!    (`twinbank_board::request_recovery`) and resets (`app: recovery requested, resetting`);
//! 4. with `resets=N`: resets itself until the shim has booted N + 1 times in this QEMU run;
//! 5. with `halt`: prints the flash statistics of the run and ends QEMU with status 0;
//! 6. otherwise serves the serial protocol on UART0 forever (`twinbank::protocol::Server`: what
//!    `twinbank serial …` talks to) and, with the default cargo feature `smp`, SMP beside it
//!    (`twinbank::smp::Console`: what `smpmgr` and mcumgr-toolkit talk to), sleeping between
//!    bytes, feeding the watchdog, and resetting after a `Reboot` request or an SMP reset once
//!    its answer is sent. The text lines above share the UART: each native response starts with
//!    a frame delimiter, and SMP clients look for their line markers, so both skip them.
//!
//! Test variants (cargo features): `fail-health`, `crash` (HardFault in the health check),
//! `hang` (stops feeding the watchdog in the health check); for the delta-update tests and
//! figures, `delta-one-line` (one more line in the RAM test) and `heapless-0-7` (its banner line
//! formatted with heapless 0.7 instead of 0.8: a changed dependency).
#![no_std]
#![no_main]

use core::fmt::Write as _;
use core::mem::{size_of, MaybeUninit};
use core::ptr::addr_of_mut;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use embedded_storage::nor_flash::ReadNorFlash as _;
use twinbank::delta::{Applier, PatchHeader, PATCH_HEADER_SIZE};
use twinbank::image::HEADER_SIZE;
#[cfg(not(feature = "smp"))]
use twinbank::protocol::server::OUT_FRAME;
#[cfg(not(feature = "smp"))]
use twinbank::protocol::FrameDecoder;
use twinbank::protocol::Server;
#[cfg(feature = "smp")]
use twinbank::smp::{Console, CONSOLE_OUT};
use twinbank::update::Manifest;
use twinbank::{BankState, ImageId, UpdateError, Updater};
use twinbank_board::flash::Flash;
use twinbank_board::semihosting::HostFile;
use twinbank_board::session::{self, flags};
use twinbank_board::{self as board, exit_code, uart, watchdog};

/// The banner line's buffer: a dependency whose version the `heapless-0-7` variant changes. The
/// banner names it ([`LINE_CRATE`]), so the two builds differ even where both versions compile to
/// the same code (the delta tests need two different bases).
#[cfg(not(feature = "heapless-0-7"))]
type Line = heapless::String<128>;
#[cfg(feature = "heapless-0-7")]
type Line = heapless07::String<128>;
/// The crate and version [`Line`] comes from.
const LINE_CRATE: &str = if cfg!(feature = "heapless-0-7") {
    "heapless 0.7"
} else {
    "heapless 0.8"
};

mod gen {
    include!(concat!(env!("OUT_DIR"), "/app_gen.rs"));
}
use gen::{BANK, BUILD_VERSION};

const VARIANT: &str = if cfg!(feature = "fail-health") {
    "fail-health"
} else if cfg!(feature = "crash") {
    "crash"
} else if cfg!(feature = "hang") {
    "hang"
} else {
    "healthy"
};

#[entry]
fn main() -> ! {
    watchdog::feed();
    board::uart::init();
    let mut out = uart();
    let config = board::config();
    let mut flash = Flash::new();
    let bank_offset = config.layout.bank(BANK).offset.0;
    let version = twinbank::image::read_header(&mut flash, bank_offset).map(|h| h.version);
    let signed_version = version.ok();
    match version {
        Ok(v) => {
            let mut line = Line::new();
            let _ = write!(
                line,
                "app: v{v} bank {BANK} ({VARIANT}, built as {BUILD_VERSION}, {LINE_CRATE})"
            );
            let _ = writeln!(out, "{}", line.as_str());
        }
        Err(e) => {
            let _ = writeln!(out, "app: cannot read own header: {e}");
        }
    }
    let mut updater = match Updater::new(flash, config, BANK) {
        Ok(u) => u,
        Err(e) => fail("open updater", e),
    };
    let trial = matches!(
        updater.state().map(|s| *s.bank(BANK)),
        Some(BankState::Pending { .. })
    );

    let health = health_check(signed_version, config.layout.bank_address(BANK));
    if let Err(why) = &health {
        let _ = writeln!(out, "app: health FAIL: {why}");
    }
    if health.is_ok() {
        let _ = writeln!(out, "app: health ok");
        if trial && session::has("manual-confirm") {
            let _ = writeln!(out, "app: on trial, waiting for the operator to confirm");
        } else if trial {
            match updater.confirm() {
                Ok(()) => {
                    let _ = writeln!(out, "app: confirmed");
                }
                Err(e) => fail("confirm", e),
            }
        }
    } else {
        if trial {
            match updater.reject() {
                Ok(()) => {
                    let _ = writeln!(out, "app: rejected, resetting to roll back");
                    board::reset()
                }
                Err(e) => fail("reject", e),
            }
        }
        let _ = writeln!(
            out,
            "app: confirmed image is unhealthy; nothing to roll back to"
        );
    }

    // `recover`: once per QEMU run, ask the bootloader for serial recovery and reset (what an
    // application does when told to, e.g. by its own command channel).
    if session::has("recover") && !session::flag(flags::RECOVERY_ASKED) {
        session::set_flag(flags::RECOVERY_ASKED);
        let _ = writeln!(out, "app: recovery requested, resetting");
        board::request_recovery();
        uart::flush();
        board::reset()
    }

    let update = session::arg("update").map(|p| (p, false));
    if let Some((path, delta)) = update.or_else(|| session::arg("delta").map(|p| (p, true))) {
        if !session::flag(flags::UPDATE_DONE) {
            session::set_flag(flags::UPDATE_DONE);
            let installed = if delta {
                install_delta(&mut updater, &path)
            } else {
                install(&mut updater, &path)
            };
            match installed {
                Ok(id) => {
                    let _ = writeln!(
                        out,
                        "app: installed {} into bank {}, resetting",
                        id.version,
                        BANK.other()
                    );
                    board::reset()
                }
                Err(e) => {
                    let _ = writeln!(out, "app: update failed: {e}");
                }
            }
        }
    }

    // `resets=N`: reset N times in this QEMU run (tests: the image keeps booting after resets).
    if let Some(n) = session::arg("resets").and_then(|v| v.parse::<u32>().ok()) {
        if session::boots() <= n {
            let _ = writeln!(out, "app: reset {} of {n}", session::boots());
            board::reset()
        }
    }

    let s = session::stats();
    let _ = writeln!(
        out,
        "app: flash stats ops={} erases={} writes={} bytes={}",
        s.ops, s.erases, s.writes, s.bytes_programmed
    );
    if session::has("halt") {
        board::exit(exit_code::OK)
    }
    serve(updater, config)
}

/// Why the health check failed.
enum Unhealthy {
    /// The test variant that fails its health check.
    Variant,
    /// A RAM word did not hold what was written.
    Ram(usize),
    /// The signed header says another version than the one this build is.
    Version(Option<twinbank::Version>),
    /// The core does not run this build's vector table from its bank.
    VectorTable(u32),
    /// The watchdog is not armed and counting.
    Watchdog,
}

impl core::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Unhealthy::Variant => f.write_str("this build's health check fails on purpose"),
            Unhealthy::Ram(i) => write!(f, "RAM self-test failed at word {i}"),
            Unhealthy::Version(Some(v)) => write!(
                f,
                "signed as {v} but built as {BUILD_VERSION} (wrong image for this build)"
            ),
            Unhealthy::Version(None) => f.write_str("own image header unreadable"),
            Unhealthy::VectorTable(vtor) => {
                write!(f, "running vectors at {vtor:#010x}, not in bank {BANK}")
            }
            Unhealthy::Watchdog => f.write_str("the watchdog is not armed"),
        }
    }
}

/// Words of RAM the self-test exercises.
const RAM_TEST_WORDS: usize = 256;
static mut RAM_TEST: [u32; RAM_TEST_WORDS] = [0; RAM_TEST_WORDS];

/// A march test (write 0s up, check 0s and write 1s up, check 1s and write 0s down, check 0s)
/// plus an address-in-word pass over a static buffer; returns the first failing word.
fn ram_test() -> Result<(), Unhealthy> {
    let base = core::ptr::addr_of_mut!(RAM_TEST) as *mut u32;
    // SAFETY: `i < RAM_TEST_WORDS`: inside the static, which only this function touches.
    let word = |i: usize| unsafe { base.add(i) };
    let check = |i: usize, v: u32| {
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile(word(i)) } == v {
            Ok(())
        } else {
            Err(Unhealthy::Ram(i))
        }
    };
    // SAFETY (for each write below): as above.
    for i in 0..RAM_TEST_WORDS {
        unsafe { core::ptr::write_volatile(word(i), 0) };
    }
    for i in 0..RAM_TEST_WORDS {
        check(i, 0)?;
        unsafe { core::ptr::write_volatile(word(i), u32::MAX) };
    }
    for i in (0..RAM_TEST_WORDS).rev() {
        check(i, u32::MAX)?;
        unsafe { core::ptr::write_volatile(word(i), i as u32) };
    }
    (0..RAM_TEST_WORDS).try_for_each(|i| check(i, i as u32))?;
    #[cfg(feature = "delta-one-line")]
    (0..RAM_TEST_WORDS).try_for_each(|i| {
        check(i, i as u32).map(|()| unsafe { core::ptr::write_volatile(word(i), !(i as u32)) })
    })?;
    Ok(())
}

/// The health check: the test variants first, then RAM, the app's own configuration, the
/// watchdog. `signed` is the version in the image header the app runs from.
fn health_check(signed: Option<twinbank::Version>, bank_address: u32) -> Result<(), Unhealthy> {
    watchdog::feed();
    if cfg!(feature = "crash") {
        let _ = writeln!(uart(), "app: crashing");
        cortex_m::asm::udf()
    }
    if cfg!(feature = "hang") {
        let _ = writeln!(uart(), "app: hanging");
        #[allow(clippy::empty_loop)]
        loop {}
    }
    if cfg!(feature = "fail-health") {
        return Err(Unhealthy::Variant);
    }
    ram_test()?;
    let built: Option<twinbank::Version> = BUILD_VERSION.parse().ok();
    if signed.is_none() || signed != built {
        return Err(Unhealthy::Version(signed));
    }
    // SAFETY: a read of the SCB's VTOR register.
    let vtor = unsafe { (*cortex_m::peripheral::SCB::PTR).vtor.read() };
    let bank_size = board::config().layout.bank_size();
    if vtor.wrapping_sub(bank_address) >= bank_size {
        return Err(Unhealthy::VectorTable(vtor));
    }
    if !watchdog::armed() {
        return Err(Unhealthy::Watchdog);
    }
    Ok(())
}

/// Why an install failed.
enum InstallError {
    Open,
    Image(twinbank::ImageError),
    Update(UpdateError),
    Delta(twinbank::delta::DeltaError),
    Read,
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InstallError::Open => f.write_str("cannot open the image file"),
            InstallError::Image(e) => write!(f, "image refused: {e}"),
            InstallError::Update(e) => write!(f, "{e}"),
            InstallError::Delta(e) => write!(f, "{e}"),
            InstallError::Read => f.write_str("read error"),
        }
    }
}

/// Streams the image at host `path` into the other bank: begin (checks, erases), chunks,
/// finish (verifies, activates). The download is read in 1 KiB chunks, as from a network.
fn install(updater: &mut Updater<'_, Flash>, path: &str) -> Result<ImageId, InstallError> {
    let mut file = HostFile::open(path).ok_or(InstallError::Open)?;
    let len = file.len();
    let manifest = Manifest::read(&mut file, len).map_err(InstallError::Image)?;
    let _ = writeln!(
        uart(),
        "app: downloading {} ({} bytes) into bank {}",
        manifest.header.version,
        manifest.total_len,
        BANK.other()
    );
    let mut offset = updater.begin(&manifest).map_err(InstallError::Update)?;
    let mut buf = [0u8; 1024];
    let from = offset;
    board::counter::start();
    while offset < manifest.total_len {
        watchdog::feed();
        let n = (manifest.total_len - offset).min(buf.len() as u32) as usize;
        file.read(offset, &mut buf[..n])
            .map_err(|_| InstallError::Read)?;
        offset = updater
            .write(offset, &buf[..n])
            .map_err(InstallError::Update)?;
    }
    let spent = board::counter::instructions();
    let _ = writeln!(
        uart(),
        "app: full image written: {} bytes, {spent} instructions",
        manifest.total_len - from
    );
    watchdog::feed();
    updater.finish().map_err(InstallError::Update)
}

/// Bytes of the manifest parts a patch may carry in `delta=PATH` (protected and unprotected
/// TLV areas).
const PATCH_PARTS: usize = 1024;

/// Applies the patch at host `path` (`twinbank delta`) into the other bank through the delta
/// applier: begin (base and manifest checks, erase), the body in 1 KiB chunks, finish
/// (verification, activation). Prints the instructions the body cost.
fn install_delta(updater: &mut Updater<'_, Flash>, path: &str) -> Result<ImageId, InstallError> {
    let mut file = HostFile::open(path).ok_or(InstallError::Open)?;
    let mut head = [0u8; PATCH_HEADER_SIZE + HEADER_SIZE];
    file.read(0, &mut head).map_err(|_| InstallError::Read)?;
    let patch = PatchHeader::parse(&head).map_err(InstallError::Delta)?;
    let mut header = [0u8; HEADER_SIZE];
    header.copy_from_slice(&head[PATCH_HEADER_SIZE..]);
    let (p, t) = (patch.protected_len as usize, patch.tlvs_len as usize);
    let mut parts = [0u8; PATCH_PARTS];
    let parts = parts.get_mut(..p + t).ok_or(InstallError::Read)?;
    file.read(head.len() as u32, parts)
        .map_err(|_| InstallError::Read)?;
    let manifest =
        Manifest::from_parts(header, &parts[..p], &parts[p..]).map_err(InstallError::Image)?;
    let _ = writeln!(
        uart(),
        "app: applying a patch of {} bytes: {} ({} bytes) into bank {}",
        file.len(),
        manifest.header.version,
        manifest.total_len,
        BANK.other()
    );
    // SAFETY: runs once, before `serve` (the only other user of the applier), never reentered.
    let applier = unsafe { &mut *addr_of_mut!(APPLIER) };
    let mut offset = applier
        .begin(updater, &patch, &manifest)
        .map_err(InstallError::Delta)?;
    let body_at = (head.len() + p + t) as u32;
    let mut buf = [0u8; 1024];
    board::counter::start();
    while offset < patch.body_len {
        watchdog::feed();
        let n = (patch.body_len - offset).min(buf.len() as u32) as usize;
        file.read(body_at + offset, &mut buf[..n])
            .map_err(|_| InstallError::Read)?;
        offset = applier
            .write(updater, offset, &buf[..n])
            .map_err(InstallError::Delta)?;
    }
    let spent = board::counter::instructions();
    let _ = writeln!(
        uart(),
        "app: delta applied: body {} bytes, image {} bytes, {spent} instructions",
        patch.body_len,
        manifest.total_len
    );
    watchdog::feed();
    applier.finish(updater).map_err(InstallError::Delta)
}

fn fail(what: &str, e: UpdateError) -> ! {
    let _ = writeln!(uart(), "app: {what} failed: {e}");
    board::exit(exit_code::APP_ERROR)
}

// The protocol's buffers, in statics so that their RAM shows in the ELF and is fixed.
#[cfg(not(feature = "smp"))]
static mut DECODER: FrameDecoder = FrameDecoder::new();
static mut APPLIER: Applier = Applier::new();
#[cfg(not(feature = "smp"))]
static mut RESPONSE: [u8; OUT_FRAME] = [0; OUT_FRAME];
#[cfg(not(feature = "smp"))]
static mut SERVER: MaybeUninit<Server<'static, Flash>> = MaybeUninit::uninit();

/// Serves the serial protocol on UART0 forever: bytes → frame decoder → server → response.
/// Sleeps while no byte arrives (a received byte or the 10 Hz SysTick wakes it) and feeds the
/// watchdog; resets after answering a `Reboot` request.
#[cfg(not(feature = "smp"))]
fn serve(updater: Updater<'static, Flash>, config: twinbank::Config<'static>) -> ! {
    // SAFETY: `serve` runs once and never returns; nothing else touches these statics.
    let (decoder, response, server) = unsafe {
        (
            &mut *addr_of_mut!(DECODER),
            &mut *addr_of_mut!(RESPONSE),
            (*addr_of_mut!(SERVER)).write(Server::with_delta(
                updater,
                config,
                &mut *addr_of_mut!(APPLIER),
            )),
        )
    };
    let mut u = uart();
    let _ = writeln!(
        u,
        "app: serving the serial protocol (RAM: decoder {} B, server {} B, response {} B; \
         delta applier {} B)",
        size_of::<FrameDecoder>(),
        size_of::<Server<'static, Flash>>(),
        OUT_FRAME,
        size_of::<Applier>()
    );
    start_wakeups();
    loop {
        let byte = next_byte(&mut u);
        let n = match decoder.push(byte) {
            None => continue,
            Some(Ok(len)) => server.handle_frame(decoder.frame(len), response),
            Some(Err(e)) => server.frame_error(e, response),
        };
        send(&mut u, &response[..n]);
        if server.reboot_requested() {
            uart::flush();
            board::reset()
        }
    }
}

#[cfg(feature = "smp")]
static mut RESPONSE: [u8; CONSOLE_OUT] = [0; CONSOLE_OUT];
#[cfg(feature = "smp")]
static mut CONSOLE: MaybeUninit<Console<'static, Flash>> = MaybeUninit::uninit();

/// Serves the native protocol and SMP on UART0 forever: every byte goes to both decoders
/// ([`Console`]); a response is sent whole. Sleeps while no byte arrives, feeds the watchdog,
/// and resets after answering a `Reboot` request or an SMP reset.
#[cfg(feature = "smp")]
fn serve(updater: Updater<'static, Flash>, config: twinbank::Config<'static>) -> ! {
    // SAFETY: `serve` runs once and never returns; nothing else touches these statics.
    let (response, console) = unsafe {
        (
            &mut *addr_of_mut!(RESPONSE),
            (*addr_of_mut!(CONSOLE)).write(Console::new(Server::with_delta(
                updater,
                config,
                &mut *addr_of_mut!(APPLIER),
            ))),
        )
    };
    let mut u = uart();
    let _ = writeln!(
        u,
        "app: serving the serial protocol and SMP (RAM: console {} B, response {} B; \
         delta applier {} B)",
        size_of::<Console<'static, Flash>>(),
        CONSOLE_OUT,
        size_of::<Applier>()
    );
    // SMP's reset into recovery (boot mode 1) is offered only under a bootloader that serves it.
    console.offer_recovery(board::recovery_offered());
    start_wakeups();
    loop {
        let byte = next_byte(&mut u);
        let n = console.feed(byte, response);
        send(&mut u, &response[..n]);
        if console.reboot_requested() {
            if console.recovery_requested() {
                let _ = writeln!(u, "app: recovery requested over SMP, resetting");
                board::request_recovery();
            }
            uart::flush();
            board::reset()
        }
    }
}

/// Starts the 10 Hz SysTick (it wakes the core to feed the watchdog) and the UART's receive
/// wake-up.
fn start_wakeups() {
    // SAFETY: the app owns the core peripherals; nothing else uses SysTick.
    let mut syst = unsafe { cortex_m::Peripherals::steal() }.SYST;
    syst.set_clock_source(cortex_m::peripheral::syst::SystClkSource::Core);
    syst.set_reload(watchdog::CLOCK_HZ / 10);
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

/// Interrupt lines of the MPS2-AN385 (the CMSDK subsystem's 32 external interrupts).
const IRQS: usize = 32;

extern "C" {
    /// The handler below, as cortex-m-rt exports it.
    fn DefaultHandler();
}

/// The interrupt table: every line goes to [`DefaultHandler`]. With cortex-m-rt's `device`
/// feature (the shim's one-entry table needs it, and Cargo turns it on for the app as well when
/// both are built in one command) the application provides the table.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [unsafe extern "C" fn(); IRQS] = [DefaultHandler; IRQS];

/// Interrupts: only UART0's receive interrupt is enabled (it wakes [`serve`] from `wfi`).
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == uart::RX_IRQ as i16 {
        uart::clear_rx_interrupt();
    }
}

#[exception]
fn SysTick() {}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    board::hard_fault(ef, "app", true)
}
