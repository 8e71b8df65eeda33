//! The whole life cycle of a twinbank device on a host-side flash (`cargo run -p twinbank
//! --example lifecycle`): factory image, boot decision, an update installed in chunks through the
//! `Updater`, its trial boot and confirm, an operator rollback, then an update whose health check
//! fails: rejected, and the device boots the previous image again.
//!
//! The bootloader's part is `twinbank::decide`; the application's part is the `Updater`. Here
//! both run on `twinbank::testing::StrictFlash`, which enforces the NOR rules a real part has.

use std::error::Error;
use twinbank::image::encode::ImageBuilder;
use twinbank::testing::StrictFlash;
use twinbank::{Attempts, Bank, BootReason, Config, DeviceIds, Layout, Manifest, Region};
use twinbank::{SigningKey, TrustedKey, Updater, Version};

/// Write unit and erase sector of the example's flash.
const WRITE: usize = 4;
const SECTOR: usize = 4096;
/// Where the banks are executed in place, and the image header size (vector table alignment).
const BASE: u32 = 0x0800_0000;
const HEADER: u16 = 0x400;
/// Bytes the application receives per chunk (e.g. one packet of its transport).
const CHUNK: usize = 256;

type Flash = StrictFlash<WRITE, SECTOR>;

fn main() -> Result<(), Box<dyn Error>> {
    let layout = Layout::builder()
        .flash_size(0x4_4000)
        .write_size(WRITE as u32)
        .erase_size(SECTOR as u32)
        .base_address(BASE)
        .state(Region::new(0, 0x4000))
        .bank_a(Region::new(0x4000, 0x2_0000))
        .bank_b(Region::new(0x2_4000, 0x2_0000))
        .build()?;
    let key = SigningKey::from_bytes(&[7; 32]); // host side: `twinbank keygen`
    let keys = [TrustedKey(key.verifying_key().to_bytes())]; // built into the bootloader
    let config = Config {
        layout,
        keys: &keys,
        ids: DeviceIds::default(),
        attempts: Attempts::DEFAULT,
    };
    let sign = |bank: Bank, version: Version, counter: u32| {
        let mut b = ImageBuilder::new(HEADER, version);
        b.rom_fixed = Some(layout.bank_address(bank)); // linked for this bank
        b.security_counter = Some(counter);
        b.sign(&[version.major; 6000], &key)
    };

    // Factory: v1 programmed into bank A of a blank flash; the first boot adopts it (confirmed).
    let mut flash = Flash::new(0x4_4000);
    flash.load(
        layout.bank(Bank::A).offset.0 as usize,
        &sign(Bank::A, v(1), 1)?,
    );
    boot(&mut flash, &config, Bank::A)?;

    // The application (running from A) installs v2 into bank B, streamed in chunks.
    install(&mut flash, &config, Bank::A, &sign(Bank::B, v(2), 1)?)?;
    // After the reset: a trial boot of v2; its health check passes, it confirms itself.
    let decision = boot(&mut flash, &config, Bank::B)?;
    assert!(matches!(decision.reason, BootReason::Trial { .. }));
    // after the next reset, once the health check passed:
    Updater::new(&mut flash, config, Bank::B)?.confirm()?;
    boot(&mut flash, &config, Bank::B)?;

    // An operator rollback to the confirmed v1 (same security counter, so still accepted).
    Updater::new(&mut flash, config, Bank::B)?.rollback()?;
    boot(&mut flash, &config, Bank::A)?;

    // v3 fails its health check on trial: it rejects itself and the next boot rolls back.
    install(&mut flash, &config, Bank::A, &sign(Bank::B, v(3), 2)?)?;
    boot(&mut flash, &config, Bank::B)?;
    Updater::new(&mut flash, config, Bank::B)?.reject()?;
    let decision = boot(&mut flash, &config, Bank::A)?;
    assert_eq!(decision.version, v(1));
    println!("life cycle done: {} flash operations", flash.ops());
    Ok(())
}

// bootloader (see bootloader-shim/): pick the bank, then jump to decision.vector_table
fn boot(
    flash: &mut Flash,
    config: &Config<'_>,
    expected: Bank,
) -> Result<twinbank::BootDecision, Box<dyn Error>> {
    let decision = twinbank::boot::decide(flash, config)?; // Err: NoBootableImage → stop
    println!(
        "boot {} {} ({})",
        decision.bank, decision.version, decision.reason
    );
    assert_eq!(decision.bank, expected);
    Ok(decision)
}

// application (see qemu/demo-app/): install an image received from any transport
fn install(
    flash: &mut Flash,
    config: &Config<'_>,
    running_bank: Bank,
    bytes: &[u8],
) -> Result<(), Box<dyn Error>> {
    let manifest = Manifest::from_image(bytes)?; // or sent ahead of the image by a host
    let mut up = Updater::new(flash, *config, running_bank)?;
    let mut next = up.begin(&manifest)?; // resumes an interrupted upload
    while (next as usize) < bytes.len() {
        let chunk = &bytes[next as usize..bytes.len().min(next as usize + CHUNK)];
        next = up.write(next, chunk)?; // any chunk sizes, idempotent resends
    }
    let id = up.finish()?; // verify from flash, one record: pending
    println!(
        "installed {} into bank {}",
        id.version,
        running_bank.other()
    );
    Ok(())
}

fn v(major: u8) -> Version {
    Version::new(major, 0, 0, 0)
}
