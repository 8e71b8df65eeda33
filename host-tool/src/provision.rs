//! `twinbank provision`: the complete factory flash contents, and the flash-image steps of the
//! firmware pipeline that xtask and the tests use ([`FlashImage`], [`factory_flash`], [`report`]).
//!
//! ```text
//! flash offset 0 ..................................................... flash size
//! | [bootloader] | state: record #1 (factory state) | bank A: image | bank B: [image] |
//! ```
//! The state record is `BootState::factory` encoded by the device crate with sequence number 1 at
//! the first slot of the state region: exactly what `StateStore` writes first on a blank device.

use crate::board_file::BoardArg;
use crate::{hex, image_file, input, keys, output, CliError};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use twinbank::flash::SliceFlash;
use twinbank::image::verify_image;
use twinbank::state::{record, StateStore, RECORD_SIZE};
use twinbank::testing::StrictFlash;
use twinbank::{Bank, BootReason, BootState, Config, ImageId, Layout, TrustedKey};

/// Options of `twinbank provision`.
#[derive(Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    board: BoardArg,
    /// Signed image for bank A (BIN or Intel HEX); it boots first, confirmed.
    #[arg(long, value_name = "SIGNED")]
    image_a: PathBuf,
    /// Optional signed image for bank B (confirmed too; the fallback).
    #[arg(long, value_name = "SIGNED")]
    image_b: Option<PathBuf>,
    /// Trusted key the bootloader holds (public or private PEM); repeatable.
    #[arg(short, long, value_name = "PEM", required = true)]
    key: Vec<PathBuf>,
    /// Bootloader to place at flash offset 0 (only when the layout leaves room before the first
    /// region; not on the QEMU board, whose shim is loaded separately).
    #[arg(long, alias = "shim", value_name = "FILE")]
    bootloader: Option<PathBuf>,
    /// Whole-flash binary (erased bytes 0xFF): the QEMU flash file / programmer image.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Intel HEX of the written ranges, at CPU addresses.
    #[arg(long, value_name = "FILE")]
    hex: Option<PathBuf>,
    /// Print a JSON summary on standard output.
    #[arg(long)]
    json: bool,
}

/// A whole flash image being assembled on the host: erased bytes, then images and a state
/// record placed as a factory programmer writes them. Remembers the written ranges (for HEX).
#[derive(Debug, Clone)]
pub struct FlashImage {
    layout: Layout,
    bytes: Vec<u8>,
    written: Vec<(u32, usize)>,
}

impl FlashImage {
    /// An erased flash of `size` bytes with `layout`.
    pub fn blank(layout: Layout, size: u32) -> FlashImage {
        FlashImage {
            layout,
            bytes: vec![twinbank::flash::ERASED; size as usize],
            written: Vec::new(),
        }
    }

    /// A flash image holding `bytes` (e.g. a flash file read back), nothing counted as written.
    pub fn from_bytes(layout: Layout, bytes: Vec<u8>) -> FlashImage {
        FlashImage {
            layout,
            bytes,
            written: Vec::new(),
        }
    }

    /// The flash contents.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Gives the contents back.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Writes `data` at flash offset `offset`.
    pub fn place(&mut self, offset: u32, data: &[u8]) -> Result<(), CliError> {
        let start = offset as usize;
        let range = self
            .bytes
            .get_mut(start..start.saturating_add(data.len()))
            .ok_or_else(|| {
                CliError::refused(format!(
                    "{} bytes at flash offset {offset:#x} do not fit the flash",
                    data.len()
                ))
            })?;
        range.copy_from_slice(data);
        self.written.push((offset, data.len()));
        Ok(())
    }

    /// Puts `image` at the start of `bank` as a programmer would, without checking it.
    pub fn place_in_bank(&mut self, bank: Bank, image: &[u8]) -> Result<(), CliError> {
        if image.len() as u64 > self.layout.bank_size() as u64 {
            return Err(CliError::refused(format!(
                "the image is {} bytes but bank {bank} holds {}",
                image.len(),
                self.layout.bank_size()
            )));
        }
        self.place(self.layout.bank(bank).offset.0, image)
    }

    /// Puts a signed image at the start of `bank` and verifies it there with the device crate
    /// (`config`'s keys and ids, any security counter); returns its identity.
    pub fn place_image(
        &mut self,
        config: &Config<'_>,
        bank: Bank,
        image: &[u8],
    ) -> Result<ImageId, CliError> {
        self.place_in_bank(bank, image)?;
        verify_in_bank(config, bank, &self.bytes)
    }

    /// Writes `state` as the first record of a blank state region (sequence number 1): what the
    /// device's state store writes first.
    pub fn place_state(&mut self, state: &BootState) -> Result<(), CliError> {
        let rec = record::encode(state, 1);
        self.place(self.layout.state().offset.0, &rec[..RECORD_SIZE])
    }

    /// The written ranges at CPU addresses, for an Intel HEX file.
    pub fn hex_segments(&self) -> Vec<hex::Segment> {
        let mut ranges = self.written.clone();
        ranges.sort();
        ranges
            .iter()
            .map(|&(off, len)| hex::Segment {
                address: self.layout.base_address() + off,
                data: self.bytes[off as usize..off as usize + len].to_vec(),
            })
            .collect()
    }
}

/// The identity of the image in `bank` of `flash`, verified with the device crate (`config`'s
/// keys and ids, any security counter).
pub fn verify_in_bank(config: &Config<'_>, bank: Bank, flash: &[u8]) -> Result<ImageId, CliError> {
    verify_image(&mut SliceFlash(flash), &config.verify_params(bank, 0))
        .map(|v| ImageId::of(&v))
        .map_err(|e| CliError::refused(format!("for bank {bank}: {e}")))
}

/// The identity of a signed image for `bank`, verified as it would sit in the bank.
pub fn image_id(config: &Config<'_>, bank: Bank, image: &[u8]) -> Result<ImageId, CliError> {
    let mut params = config.verify_params(bank, 0);
    params.offset = 0;
    verify_image(&mut SliceFlash(image), &params)
        .map(|v| ImageId::of(&v))
        .map_err(|e| CliError::refused(format!("for bank {bank}: {e}")))
}

/// The device configuration of `board` with the trusted `keys`.
pub fn config<'k>(
    board: &twinbank::board::BoardDescription,
    keys: &'k [TrustedKey],
) -> Result<Config<'k>, CliError> {
    let err = |e: &dyn std::fmt::Display| CliError::input(format!("board description: {e}"));
    Ok(Config {
        layout: board.layout().map_err(|e| err(&e))?,
        keys,
        ids: board.ids().map_err(|e| err(&e))?,
        attempts: board.attempts().map_err(|e| err(&e))?,
    })
}

/// The factory flash of `board`: `image_a` (and `image_b`) verified in their banks, a factory
/// state (A confirmed and preferred), checked by booting it twice with the device crate.
pub fn factory_flash(
    board: &twinbank::board::BoardDescription,
    keys: &[TrustedKey],
    image_a: &[u8],
    image_b: Option<&[u8]>,
) -> Result<(FlashImage, BootState), CliError> {
    let config = config(board, keys)?;
    let mut flash = FlashImage::blank(config.layout, board.flash.size);
    let a = flash.place_image(&config, Bank::A, image_a)?;
    let b = image_b
        .map(|img| flash.place_image(&config, Bank::B, img))
        .transpose()?;
    let state = BootState::factory(Bank::A, a, b);
    flash.place_state(&state)?;
    self_check(flash.bytes(), &config, &state)?;
    Ok((flash, state))
}

/// What a flash image holds: the boot state and, per bank, whether its image verifies.
#[derive(Debug, Clone)]
pub struct FlashReport {
    /// The newest valid state record, if any.
    pub state: Option<BootState>,
    /// Per bank (A, B): the image verified for integrity and signature (any security counter),
    /// or why it does not verify. Compare its counter with the state's minimum to know whether
    /// the device would still boot it.
    pub images: [Result<ImageId, String>; 2],
}

/// Reads a flash image through the device crate (state store and image verification).
pub fn report(config: &Config<'_>, flash: &[u8]) -> Result<FlashReport, CliError> {
    let state = StateStore::peek(&mut SliceFlash(flash), &config.layout)
        .map_err(|e| CliError::input(format!("state region: {e}")))?;
    let images = Bank::ALL.map(|bank| {
        verify_image(&mut SliceFlash(flash), &config.verify_params(bank, 0))
            .map(|v| ImageId::of(&v))
            .map_err(|e| e.to_string())
    });
    Ok(FlashReport { state, images })
}

/// Places the bootloader at the flash offset it was linked for, when the layout leaves room.
fn place_bootloader(flash: &mut FlashImage, path: &Path, board: &str) -> Result<(), CliError> {
    let layout = flash.layout;
    let room = layout
        .state()
        .offset
        .0
        .min(layout.bank(Bank::A).offset.0)
        .min(layout.bank(Bank::B).offset.0);
    if room == 0 {
        return Err(CliError::input(format!(
            "{}: {board} leaves no room for a bootloader before the state region at flash offset 0 \
             (on this board the bootloader is not in this flash; load it separately)",
            path.display()
        )));
    }
    let fw = input::load(path, room as u64)?;
    let offset = match fw.address {
        Some(addr) => addr.checked_sub(layout.base_address()).ok_or_else(|| {
            CliError::refused(format!(
                "{}: linked for {addr:#010x}, below the flash base {:#010x}",
                path.display(),
                layout.base_address()
            ))
        })?,
        None => 0,
    };
    if offset as u64 + fw.data.len() as u64 > room as u64 {
        return Err(CliError::refused(format!(
            "{}: {} bytes at flash offset {offset:#x} overlap the first region at {room:#x}",
            path.display(),
            fw.data.len()
        )));
    }
    flash.place(offset, &fw.data)
}

/// Runs `provision`: reads and checks everything, assembles the flash, checks it by booting it,
/// then writes the outputs (all or none).
pub fn run(a: ProvisionArgs) -> Result<(), CliError> {
    if a.output.is_none() && a.hex.is_none() {
        return Err(CliError::input(
            "nothing to write: give -o FLASH.bin and/or --hex FLASH.hex",
        ));
    }
    let board = a.board.require("the flash layout")?;
    let bname = board.path.display().to_string();
    let keys: Vec<TrustedKey> = a
        .key
        .iter()
        .map(|p| keys::public_key(p))
        .collect::<Result<_, _>>()?;
    let config = config(&board.desc, &keys).map_err(|e| e.prefix(&bname))?;
    let mut flash = FlashImage::blank(config.layout, board.desc.flash.size);
    let mut images: Vec<(Bank, ImageId)> = Vec::new();
    for (bank, path) in [(Bank::A, Some(&a.image_a)), (Bank::B, a.image_b.as_ref())] {
        let Some(path) = path else { continue };
        let name = path.display().to_string();
        let file = image_file::read(path)?;
        let st = image_file::structure(&file.bytes)
            .map_err(|e| CliError::refused(format!("{name}: {e}")))?;
        let id = flash
            .place_image(&config, bank, &file.bytes[..st.total_len as usize])
            .map_err(|e| e.prefix(&name))?;
        images.push((bank, id));
    }
    let state = BootState::factory(Bank::A, images[0].1, images.get(1).map(|i| i.1));
    if let Some(path) = &a.bootloader {
        place_bootloader(&mut flash, path, &bname)?;
    }
    flash.place_state(&state)?;
    self_check(flash.bytes(), &config, &state)?;

    let mut outputs = output::Outputs::new();
    if let Some(o) = &a.output {
        outputs.stage(o, flash.bytes())?;
    }
    if let Some(h) = &a.hex {
        outputs.stage(h, hex::write(&flash.hex_segments()).as_bytes())?;
    }
    outputs.commit()?;
    print_summary(&a, &bname, &config, &flash, &state, &images);
    Ok(())
}

fn print_summary(
    a: &ProvisionArgs,
    bname: &str,
    config: &Config<'_>,
    flash: &FlashImage,
    state: &BootState,
    images: &[(Bank, ImageId)],
) {
    let layout = &config.layout;
    let soff = layout.state().offset.0;
    let flash_size = flash.bytes().len();
    if a.json {
        let bank_json: Vec<_> = images
            .iter()
            .map(|(b, id)| {
                json!({
                    "bank": b.to_string(),
                    "offset": layout.bank(*b).offset.0,
                    "address": layout.bank_address(*b),
                    "version": id.version.to_string(),
                    "digest": keys::hex(&id.digest),
                    "security_counter": id.security_counter,
                    "size": id.size,
                    "status": "confirmed",
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "board": bname,
                "flash_size": flash_size,
                "output": a.output.as_ref().map(|p| p.display().to_string()),
                "hex": a.hex.as_ref().map(|p| p.display().to_string()),
                "state_offset": soff,
                "preferred": "A",
                "min_security_counter": state.min_security_counter,
                "banks": bank_json,
            })
        );
        return;
    }
    for (b, id) in images {
        eprintln!(
            "bank {b} @ {:#010x}: version {} confirmed, {} bytes, digest {}",
            layout.bank_address(*b),
            id.version,
            id.size,
            keys::hex(&id.digest)
        );
    }
    eprintln!(
        "state @ flash offset {soff:#x}: factory record (bank A preferred, min security counter {})",
        state.min_security_counter
    );
    if let Some(o) = &a.output {
        eprintln!("wrote {} ({flash_size} bytes, whole flash)", o.display());
    }
    if let Some(h) = &a.hex {
        eprintln!("wrote {} (written ranges only)", h.display());
    }
}

/// Reads the produced flash back through the device crate: the state store must find the
/// factory state, and two boot decisions (a boot and a reset) must both boot bank A normally
/// without writing anything.
fn self_check(flash: &[u8], config: &Config<'_>, state: &BootState) -> Result<(), CliError> {
    let fail = |m: String| CliError::refused(format!("internal error: factory image check: {m}"));
    let found = StateStore::peek(&mut SliceFlash(flash), &config.layout)
        .map_err(|e| fail(e.to_string()))?;
    if found.as_ref() != Some(state) {
        return Err(fail(
            "the state store does not read back the factory state".into(),
        ));
    }
    // Booted through a strict flash of the board's own geometry (the device crate refuses a
    // driver that disagrees with the layout).
    let layout = config.layout;
    // With a sector map, a strict flash that enforces it.
    twinbank::testing::with_layout(&layout, flash, BootTwice { config })
        .unwrap_or_else(|| {
            Err(format!(
                "no strict flash of write size {} and erase size {:#x} for {} bytes",
                layout.write_size(),
                layout.erase_size(),
                flash.len()
            ))
        })
        .map_err(fail)
}

/// Boots a factory flash twice: bank A, normally, both times, writing nothing.
struct BootTwice<'c, 'k> {
    config: &'c Config<'k>,
}

impl twinbank::testing::GeometryVisitor for BootTwice<'_, '_> {
    type Output = Result<(), String>;

    fn visit<const W: usize, const E: usize>(self, mut f: StrictFlash<W, E>) -> Self::Output {
        for boot in 0..2 {
            let d = twinbank::decide(&mut f, self.config).map_err(|e| e.to_string())?;
            if d.bank != Bank::A || d.reason != BootReason::Normal {
                return Err(format!("boot {boot} chose bank {} ({})", d.bank, d.reason));
            }
        }
        if f.counters.writes != 0 || f.counters.erases != 0 {
            return Err("booting the factory image changed the state".into());
        }
        Ok(())
    }
}
