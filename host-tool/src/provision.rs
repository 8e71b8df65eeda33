//! `twinbank provision`: the complete factory flash contents.
//!
//! ```text
//! flash offset 0 ..................................................... flash size
//! | [bootloader] | state: record #1 (factory state) | bank A: image | bank B: [image] |
//! ```
//! The state record is `BootState::factory` encoded by the device crate with sequence number 1 at
//! the first slot of the state region: exactly what `StateStore` writes first on a blank device.

use crate::{hex, image_file, input, keys, load_board, write_file, CliError};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use twinbank::flash::SliceFlash;
use twinbank::image::verify_image;
use twinbank::state::{record, StateStore, RECORD_SIZE};
use twinbank::testing::StrictFlash;
use twinbank::{Bank, BootReason, BootState, Config, ImageId, TrustedKey};

/// Options of `twinbank provision`.
#[derive(Args)]
pub struct ProvisionArgs {
    /// Board description file (flash geometry, layout, device ids).
    #[arg(long, value_name = "FILE", default_value = "twinbank.toml")]
    board: PathBuf,
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

/// Runs `provision`.
pub fn run(a: ProvisionArgs) -> Result<(), CliError> {
    if a.output.is_none() && a.hex.is_none() {
        return Err(CliError::input(
            "nothing to write: give -o FLASH.bin and/or --hex FLASH.hex",
        ));
    }
    let board = load_board(&a.board)?;
    let bname = a.board.display().to_string();
    let layout = board
        .layout()
        .map_err(|e| CliError::input(format!("{bname}: {e}")))?;
    let ids = board
        .ids()
        .map_err(|e| CliError::input(format!("{bname}: {e}")))?;
    let attempts = board
        .attempts()
        .map_err(|e| CliError::input(format!("{bname}: {e}")))?;
    let keys: Vec<TrustedKey> = a
        .key
        .iter()
        .map(|p| keys::trusted_key(p))
        .collect::<Result<_, _>>()?;
    let config = Config {
        layout,
        keys: &keys,
        ids,
        attempts,
    };
    let flash_size = board.flash.size as usize;
    let mut flash = vec![twinbank::flash::ERASED; flash_size];
    // (flash offset, length) of everything written, for the HEX output.
    let mut written: Vec<(u32, usize)> = Vec::new();

    let mut images: Vec<(Bank, ImageId)> = Vec::new();
    for (bank, path) in [(Bank::A, Some(&a.image_a)), (Bank::B, a.image_b.as_ref())] {
        let Some(path) = path else { continue };
        let name = path.display().to_string();
        let file = image_file::read(path)?;
        let st = image_file::structure(&file.bytes)
            .map_err(|e| CliError::refused(format!("{name}: {e}")))?;
        let len = st.total_len as usize;
        if len as u64 > layout.bank_size() as u64 {
            return Err(CliError::refused(format!(
                "{name}: the image is {len} bytes but bank {bank} holds {}",
                layout.bank_size()
            )));
        }
        let off = layout.bank(bank).offset.0;
        flash[off as usize..off as usize + len].copy_from_slice(&file.bytes[..len]);
        let v = verify_image(&mut SliceFlash(&flash), &config.verify_params(bank, 0))
            .map_err(|e| CliError::refused(format!("{name}: refused for bank {bank}: {e}")))?;
        written.push((off, len));
        images.push((bank, ImageId::of(&v)));
    }
    let state = BootState::factory(Bank::A, images[0].1, images.get(1).map(|i| i.1));

    if let Some(path) = &a.bootloader {
        let room = layout
            .state()
            .offset
            .0
            .min(layout.bank(Bank::A).offset.0)
            .min(layout.bank(Bank::B).offset.0);
        if room == 0 {
            return Err(CliError::input(format!(
                "{}: {bname} leaves no room for a bootloader before the state region at flash \
                 offset 0 (on this board the bootloader is not in this flash; load it separately)",
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
        flash[offset as usize..offset as usize + fw.data.len()].copy_from_slice(&fw.data);
        written.push((offset, fw.data.len()));
    }

    let rec = record::encode(&state, 1);
    let soff = layout.state().offset.0 as usize;
    flash[soff..soff + RECORD_SIZE].copy_from_slice(&rec);
    written.push((soff as u32, RECORD_SIZE));
    written.sort();

    self_check(&flash, &config, &state)?;

    if let Some(o) = &a.output {
        write_file(o, &flash)?;
    }
    if let Some(h) = &a.hex {
        let segs: Vec<hex::Segment> = written
            .iter()
            .map(|&(off, len)| hex::Segment {
                address: layout.base_address() + off,
                data: flash[off as usize..off as usize + len].to_vec(),
            })
            .collect();
        write_file(h, hex::write(&segs).as_bytes())?;
    }
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
    if a.json {
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
    } else {
        for (b, id) in &images {
            eprintln!(
                "bank {b} @ {:#010x}: version {} confirmed, {} bytes, digest {}",
                layout.bank_address(*b),
                id.version,
                id.size,
                keys::hex(&id.digest)
            );
        }
        eprintln!(
            "state @ flash offset {soff:#x}: factory record (bank A preferred, min security \
             counter {})",
            state.min_security_counter
        );
        if let Some(o) = &a.output {
            eprintln!("wrote {} ({flash_size} bytes, whole flash)", o.display());
        }
        if let Some(h) = &a.hex {
            eprintln!("wrote {} (written ranges only)", h.display());
        }
    }
    Ok(())
}

/// Reads the produced flash back through the device crate: the state store must find the
/// factory state, and two boot decisions (a boot and a reset) must both boot bank A normally
/// without writing anything.
fn self_check(flash: &[u8], config: &Config<'_>, state: &BootState) -> Result<(), CliError> {
    let fail = |m: String| CliError::refused(format!("internal error: factory image check: {m}"));
    let store = StateStore::open(&mut SliceFlash(flash), &config.layout)
        .map_err(|e| fail(e.to_string()))?;
    if store.current() != Some(state) {
        return Err(fail(
            "the state store does not read back the factory state".into(),
        ));
    }
    // 1-byte writes and 1 KiB sectors are compatible with every supported geometry.
    let mut padded = flash.to_vec();
    padded.resize(flash.len().div_ceil(1024) * 1024, 0xFF);
    let mut f = StrictFlash::<1, 1024>::from_bytes(&padded);
    for boot in 0..2 {
        let d = twinbank::decide(&mut f, config).map_err(|e| fail(format!("{e:?}")))?;
        if d.bank != Bank::A || d.reason != BootReason::Normal {
            return Err(fail(format!(
                "boot {boot} chose bank {} ({})",
                d.bank, d.reason
            )));
        }
    }
    if f.counters.writes != 0 || f.counters.erases != 0 {
        return Err(fail("booting the factory image changed the state".into()));
    }
    Ok(())
}
