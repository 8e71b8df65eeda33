//! `twinbank sign`.

use crate::input;
use crate::{hex, keys, load_board, parse_u16, parse_u32, parse_uuid, parse_version, write_file};
use crate::{BankArg, CliError, ImageFormat};
use clap::Args;
use std::path::{Path, PathBuf};
use twinbank::board::BoardDescription;
use twinbank::flash::SliceFlash;
use twinbank::image::encode::ImageBuilder;
use twinbank::image::{verify_image, VerifyParams};
use twinbank::{Bank, DeviceIds, TrustedKey, Uuid, Version};

/// Options of `twinbank sign`.
#[derive(Args)]
pub struct SignArgs {
    /// Private signing key (PKCS#8 PEM: twinbank keygen, openssl genpkey, imgtool keygen).
    #[arg(short, long, value_name = "FILE")]
    key: PathBuf,
    /// Image version MAJOR.MINOR.REVISION+BUILD (missing parts are 0).
    #[arg(short = 'v', long, value_name = "VERSION", value_parser = parse_version)]
    version: Version,
    /// Security counter (protected TLV 0x50): a number, or `auto` (major<<24|minor<<16|revision,
    /// like imgtool).
    #[arg(short = 's', long, value_name = "N|auto")]
    security_counter: Option<String>,
    /// Vendor UUID (protected TLV 0x74).
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    vid: Option<Uuid>,
    /// Class UUID (protected TLV 0x75).
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    cid: Option<Uuid>,
    /// Bind the image to this bank of the board (sets ROM_FIXED with the bank address).
    #[arg(long, value_enum, conflicts_with = "rom_fixed")]
    bank: Option<BankArg>,
    /// Bind the image to this bank address explicitly (ROM_FIXED load address).
    #[arg(short = 'F', long, value_name = "ADDR", value_parser = parse_u32)]
    rom_fixed: Option<u32>,
    /// Header size (payload offset); default: the board's [image] header_size.
    #[arg(short = 'H', long, value_name = "N", value_parser = parse_u16)]
    header_size: Option<u16>,
    /// Slot (bank) size the image must fit; default: the board's bank size.
    #[arg(short = 'S', long, value_name = "N", value_parser = parse_u32)]
    slot_size: Option<u32>,
    /// Output format; default: hex when OUTPUT ends in .hex, else bin.
    #[arg(long, value_enum)]
    format: Option<ImageFormat>,
    /// Board description file.
    #[arg(long, value_name = "FILE", default_value = "twinbank.toml")]
    board: PathBuf,
    /// Print a JSON summary on standard output.
    #[arg(long)]
    json: bool,
    /// Firmware to sign: ELF, Intel HEX or raw binary (detected from the content).
    #[arg(value_name = "INPUT")]
    input: PathBuf,
    /// Signed image to write.
    #[arg(short, long, value_name = "OUTPUT")]
    output: PathBuf,
}

/// The board, loaded only when an option needs it; the reason is named in the error.
struct LazyBoard<'a> {
    path: &'a Path,
    board: Option<BoardDescription>,
}

impl LazyBoard<'_> {
    fn get(&mut self, why: &str) -> Result<&BoardDescription, CliError> {
        if self.board.is_none() {
            let b = load_board(self.path).map_err(|e| CliError {
                code: e.code,
                msg: format!("{} (needed for {why})", e.msg),
            })?;
            self.board = Some(b);
        }
        Ok(self.board.as_ref().expect("loaded above"))
    }

    fn try_get(&mut self) -> Option<&BoardDescription> {
        if self.board.is_none() && self.path.exists() {
            self.board = load_board(self.path).ok();
        }
        self.board.as_ref()
    }
}

fn security_counter(arg: &Option<String>, version: Version) -> Result<Option<u32>, CliError> {
    match arg.as_deref() {
        None => Ok(None),
        Some("auto") => Ok(Some(
            ((version.major as u32) << 24)
                | ((version.minor as u32) << 16)
                | version.revision as u32,
        )),
        Some(s) => parse_u32(s)
            .map(Some)
            .map_err(|e| CliError::input(format!("--security-counter: {e}"))),
    }
}

/// Runs `sign`.
pub fn run(a: SignArgs) -> Result<(), CliError> {
    let key = keys::signing_key(&a.key)?;
    let counter = security_counter(&a.security_counter, a.version)?;
    let mut board = LazyBoard {
        path: &a.board,
        board: None,
    };
    let header_size = match a.header_size {
        Some(h) => h,
        None => {
            board
                .get("the header size; or give --header-size")?
                .image
                .header_size
        }
    };
    let slot_size = match a.slot_size {
        Some(s) => s,
        None => {
            let b = board.get("the slot size; or give --slot-size")?;
            b.layout()
                .map_err(|e| CliError::input(e.to_string()))?
                .bank_size()
        }
    };
    let fw = input::load(&a.input, slot_size as u64)?;
    let input_name = a.input.display().to_string();

    // Bank binding: --bank, --rom-fixed, or inferred from the ELF/HEX load address.
    let (rom_fixed, bank_label) = if let Some(bank) = a.bank {
        let bank = Bank::from(bank);
        let b = board.get("--bank")?;
        let layout = b.layout().map_err(|e| CliError::input(e.to_string()))?;
        (layout.bank_address(bank), format!("bank {bank}"))
    } else if let Some(addr) = a.rom_fixed {
        (addr, format!("address {addr:#010x}"))
    } else if let Some(load) = fw.address {
        let header_start = load.wrapping_sub(header_size as u32);
        let b =
            board.get("inferring the bank from the load address; or give --bank/--rom-fixed")?;
        let layout = b.layout().map_err(|e| CliError::input(e.to_string()))?;
        match Bank::ALL.into_iter().find(|&bk| layout.bank_address(bk) == header_start) {
            Some(bank) => (layout.bank_address(bank), format!("bank {bank} (from the load address)")),
            None => {
                return Err(CliError::refused(format!(
                    "{input_name}: the {} is linked for {load:#010x}, which is not the payload address \
                     of a bank (bank A payload at {:#010x}, bank B payload at {:#010x}: bank + header \
                     size {header_size:#x}); re-link it or give --bank/--rom-fixed",
                    fw.kind.name(),
                    layout.bank_address(Bank::A) + header_size as u32,
                    layout.bank_address(Bank::B) + header_size as u32,
                )))
            }
        }
    } else {
        return Err(CliError::input(format!(
            "{input_name}: a raw binary carries no address: give --bank A|B or --rom-fixed ADDR \
             (the device refuses images not bound to a bank)"
        )));
    };

    let payload_addr = rom_fixed as u64 + header_size as u64;
    if let Some(load) = fw.address {
        if load as u64 != payload_addr {
            return Err(CliError::refused(format!(
                "{input_name}: the {} is linked for {load:#010x} (lowest load address) but {bank_label} \
                 expects the vector table at {payload_addr:#010x} ({rom_fixed:#010x} + header size \
                 {header_size:#x}); re-link it for this bank or sign it for the bank it was linked for",
                fw.kind.name()
            )));
        }
    }
    let alignment = board.try_get().map(|b| b.image.vector_alignment);
    if let Some(al) = alignment {
        if payload_addr.checked_rem(al as u64).unwrap_or(0) != 0 {
            return Err(CliError::refused(format!(
                "{input_name}: the vector table would be at {payload_addr:#010x}, not aligned to \
                 {al:#x} as the core requires ([image] vector_alignment in {}); choose another \
                 --header-size",
                a.board.display()
            )));
        }
    }
    vector_sanity(&fw.data, payload_addr, &input_name);

    let builder = ImageBuilder {
        header_size,
        version: a.version,
        rom_fixed: Some(rom_fixed),
        security_counter: counter,
        vendor_id: a.vid,
        class_id: a.cid,
    };
    let image = builder
        .sign(&fw.data, &key)
        .map_err(|e| CliError::input(format!("{input_name}: {e}")))?;
    if image.len() as u64 > slot_size as u64 {
        return Err(CliError::refused(format!(
            "{input_name}: the signed image is {} bytes but the slot holds {slot_size} bytes \
             ({} bytes too many)",
            image.len(),
            image.len() as u64 - slot_size as u64
        )));
    }
    // Self-check with the device verifier before writing anything.
    let trusted = [TrustedKey(key.verifying_key().to_bytes())];
    let verified = verify_image(
        &mut SliceFlash(&image),
        &VerifyParams {
            offset: 0,
            capacity: slot_size,
            bank_address: rom_fixed,
            keys: &trusted,
            ids: DeviceIds {
                vendor: a.vid,
                class: a.cid,
            },
            min_security_counter: 0,
        },
    )
    .map_err(|e| {
        CliError::refused(format!(
            "internal error: the signed image does not verify: {e}"
        ))
    })?;

    let format = a.format.unwrap_or_else(|| {
        let hexy = a
            .output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("hex"));
        if hexy {
            ImageFormat::Hex
        } else {
            ImageFormat::Bin
        }
    });
    match format {
        ImageFormat::Bin => write_file(&a.output, &image)?,
        ImageFormat::Hex => write_file(
            &a.output,
            hex::write(&[hex::Segment {
                address: rom_fixed,
                data: image.clone(),
            }])
            .as_bytes(),
        )?,
    }
    let digest = keys::hex(&verified.digest);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "input": input_name,
                "input_type": fw.kind.name(),
                "output": a.output.display().to_string(),
                "format": if format == ImageFormat::Hex { "hex" } else { "bin" },
                "version": a.version.to_string(),
                "load_addr": rom_fixed,
                "header_size": header_size,
                "payload_size": fw.data.len(),
                "image_size": image.len(),
                "slot_size": slot_size,
                "security_counter": counter,
                "digest": digest,
                "keyhash": keys::hex(&trusted[0].keyhash()),
            })
        );
    } else {
        eprintln!(
            "signed {input_name} ({}, {} bytes) for {bank_label} → {}: version {}, {} of {} bytes, \
             digest {digest}",
            fw.kind.name(),
            fw.data.len(),
            a.output.display(),
            a.version,
            image.len(),
            slot_size
        );
    }
    Ok(())
}

/// Warns (does not refuse) when the first two words do not look like a Cortex-M vector table.
fn vector_sanity(payload: &[u8], payload_addr: u64, name: &str) {
    if payload.len() < 8 {
        eprintln!("twinbank: warning: {name}: payload shorter than a vector table (8 bytes)");
        return;
    }
    let reset = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]) as u64;
    let end = payload_addr + payload.len() as u64;
    if reset & 1 == 0 || reset < payload_addr || reset >= end {
        eprintln!(
            "twinbank: warning: {name}: reset vector {reset:#010x} is not a Thumb address inside \
             the image ({payload_addr:#010x}..{end:#010x}); is the vector table first?"
        );
    }
}
