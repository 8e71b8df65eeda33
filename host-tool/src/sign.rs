//! `twinbank sign`, and the signing step of the firmware pipeline that xtask and the tests use:
//!
//! ```text
//!  Firmware (input::load) ─► SignPlan (bank binding, header, slot, ids, counter)
//!                         ─► sign_firmware: checks, ImageBuilder::sign, self-verification
//! ```

use crate::board_file::{Board, BoardArg};
use crate::input::{self, Firmware};
use crate::{hex, keys, output, parse_u16, parse_u32, parse_uuid, parse_version};
use crate::{BankArg, CliError, ImageFormat};
use clap::Args;
use std::path::PathBuf;
use twinbank::board::BoardDescription;
use twinbank::flash::SliceFlash;
use twinbank::image::encode::ImageBuilder;
use twinbank::image::{verify_image, VerifiedImage, VerifyParams};
use twinbank::{Bank, DeviceIds, SigningKey, TrustedKey, Uuid, Version};

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
    /// Take the vendor and class ids from the board description's [device] section.
    #[arg(long, conflicts_with_all = ["vid", "cid"])]
    board_ids: bool,
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
    #[command(flatten)]
    board: BoardArg,
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

/// Everything decided about one image before it is signed.
#[derive(Debug, Clone)]
pub struct SignPlan {
    /// Header size (payload offset).
    pub header_size: u16,
    /// The slot (bank) size the image must fit.
    pub slot_size: u32,
    /// The bank address the image is bound to (`ROM_FIXED` load address).
    pub rom_fixed: u32,
    /// The binding, for messages (`bank A`, `address 0x…`).
    pub label: String,
    /// The alignment the vector table needs, when known (from the board).
    pub vector_alignment: Option<u32>,
    /// Image version.
    pub version: Version,
    /// Security counter TLV.
    pub security_counter: Option<u32>,
    /// Vendor and class id TLVs.
    pub ids: DeviceIds,
}

impl SignPlan {
    /// The plan for an image of `board`'s `bank` carrying the board's ids (what xtask and the
    /// tests sign their firmware with).
    pub fn for_bank(
        board: &BoardDescription,
        bank: Bank,
        version: Version,
        security_counter: u32,
    ) -> Result<SignPlan, CliError> {
        let err = |e: &dyn std::fmt::Display| CliError::input(format!("board description: {e}"));
        let layout = board.layout().map_err(|e| err(&e))?;
        Ok(SignPlan {
            header_size: board.image.header_size,
            slot_size: layout.bank_size(),
            rom_fixed: layout.bank_address(bank),
            label: format!("bank {bank}"),
            vector_alignment: Some(board.image.vector_alignment),
            version,
            security_counter: Some(security_counter),
            ids: board.ids().map_err(|e| err(&e))?,
        })
    }
}

/// A signed image and what the device crate's verifier says about it.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The image bytes.
    pub image: Vec<u8>,
    /// The verification of the image with the signing key (digest, counter, ids).
    pub verified: VerifiedImage,
}

/// Signs `fw` as `plan` says with `key`, after checking that the firmware was linked where the
/// bank expects its vector table; the result is verified with the device crate before it is
/// returned. `name` names the input in messages.
pub fn sign_firmware(
    fw: &Firmware,
    plan: &SignPlan,
    key: &SigningKey,
    name: &str,
) -> Result<Signed, CliError> {
    let payload_addr = plan.rom_fixed as u64 + plan.header_size as u64;
    if let Some(load) = fw.address {
        if load as u64 != payload_addr {
            return Err(CliError::refused(format!(
                "{name}: the {} is linked for {load:#010x} (lowest load address) but {} expects \
                 the vector table at {payload_addr:#010x} ({:#010x} + header size {:#x}); re-link \
                 it for this bank or sign it for the bank it was linked for",
                fw.kind.name(),
                plan.label,
                plan.rom_fixed,
                plan.header_size
            )));
        }
    }
    if let Some(al) = plan.vector_alignment {
        if payload_addr.checked_rem(al as u64).unwrap_or(0) != 0 {
            return Err(CliError::refused(format!(
                "{name}: the vector table would be at {payload_addr:#010x}, not aligned to {al:#x} \
                 as the core requires ([image] vector_alignment of the board); choose another \
                 --header-size"
            )));
        }
    }
    vector_sanity(&fw.data, payload_addr, name);
    let builder = ImageBuilder {
        header_size: plan.header_size,
        version: plan.version,
        rom_fixed: Some(plan.rom_fixed),
        security_counter: plan.security_counter,
        vendor_id: plan.ids.vendor,
        class_id: plan.ids.class,
    };
    let image = builder
        .sign(&fw.data, key)
        .map_err(|e| CliError::input(format!("{name}: {e}")))?;
    if image.len() as u64 > plan.slot_size as u64 {
        return Err(CliError::refused(format!(
            "{name}: the signed image is {} bytes but the slot holds {} bytes ({} bytes too many)",
            image.len(),
            plan.slot_size,
            image.len() as u64 - plan.slot_size as u64
        )));
    }
    // Self-check with the device verifier before anything is written.
    let trusted = [TrustedKey(key.verifying_key().to_bytes())];
    let verified = verify_image(
        &mut SliceFlash(&image),
        &VerifyParams {
            offset: 0,
            capacity: plan.slot_size,
            bank_address: plan.rom_fixed,
            keys: &trusted,
            ids: plan.ids,
            min_security_counter: 0,
        },
    )
    .map_err(|e| {
        CliError::input(format!(
            "internal error: the signed image does not verify: {e}"
        ))
    })?;
    Ok(Signed { image, verified })
}

/// The bank binding: `--bank`, `--rom-fixed`, or the bank at the firmware's load address.
fn binding(
    a: &SignArgs,
    fw: &Firmware,
    header_size: u16,
    board: &Option<Board>,
    name: &str,
) -> Result<(u32, String), CliError> {
    let need = |why: &str| {
        board
            .as_ref()
            .ok_or_else(|| crate::board_file::missing(why))
    };
    if let Some(bank) = a.bank {
        let bank = Bank::from(bank);
        let layout = need("--bank")?.layout()?;
        return Ok((layout.bank_address(bank), format!("bank {bank}")));
    }
    if let Some(addr) = a.rom_fixed {
        return Ok((addr, format!("address {addr:#010x}")));
    }
    let Some(load) = fw.address else {
        return Err(CliError::input(format!(
            "{name}: a raw binary carries no address: give --bank A|B or --rom-fixed ADDR (the \
             device refuses images not bound to a bank)"
        )));
    };
    let layout =
        need("inferring the bank from the load address; or give --bank/--rom-fixed")?.layout()?;
    let header_start = load.wrapping_sub(header_size as u32);
    match Bank::ALL
        .into_iter()
        .find(|&bk| layout.bank_address(bk) == header_start)
    {
        Some(bank) => Ok((
            layout.bank_address(bank),
            format!("bank {bank} (from the load address)"),
        )),
        None => Err(CliError::refused(format!(
            "{name}: the {} is linked for {load:#010x}, which is not the payload address of a bank \
             (bank A payload at {:#010x}, bank B payload at {:#010x}: bank + header size \
             {header_size:#x}); re-link it or give --bank/--rom-fixed",
            fw.kind.name(),
            layout.bank_address(Bank::A) + header_size as u32,
            layout.bank_address(Bank::B) + header_size as u32,
        ))),
    }
}

/// Resolves the options (and the board where they leave values open) into a plan.
fn plan(
    a: &SignArgs,
    fw_slot: &mut Option<Firmware>,
    board: &Option<Board>,
) -> Result<SignPlan, CliError> {
    let need = |why: &str| {
        board
            .as_ref()
            .ok_or_else(|| crate::board_file::missing(why))
    };
    let name = a.input.display().to_string();
    let header_size = match a.header_size {
        Some(h) => h,
        None => {
            need("the header size; or give --header-size")?
                .desc
                .image
                .header_size
        }
    };
    let slot_size = match a.slot_size {
        Some(s) => s,
        None => need("the slot size; or give --slot-size")?
            .layout()?
            .bank_size(),
    };
    let fw = input::load(&a.input, slot_size as u64)?;
    let (rom_fixed, label) = binding(a, &fw, header_size, board, &name)?;
    let ids = if a.board_ids {
        need("--board-ids")?.ids()?
    } else {
        DeviceIds {
            vendor: a.vid,
            class: a.cid,
        }
    };
    *fw_slot = Some(fw);
    Ok(SignPlan {
        header_size,
        slot_size,
        rom_fixed,
        label,
        vector_alignment: board.as_ref().map(|b| b.desc.image.vector_alignment),
        version: a.version,
        security_counter: security_counter(&a.security_counter, a.version)?,
        ids,
    })
}

/// Runs `sign`.
pub fn run(a: SignArgs) -> Result<(), CliError> {
    let key = keys::signing_key(&a.key)?;
    let board = a.board.load()?;
    let mut fw = None;
    let plan = plan(&a, &mut fw, &board)?;
    let fw = fw.ok_or_else(|| CliError::input("internal error: no firmware"))?;
    let name = a.input.display().to_string();
    let signed = sign_firmware(&fw, &plan, &key, &name)?;
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
    let bytes = match format {
        ImageFormat::Bin => signed.image.clone(),
        ImageFormat::Hex => hex::write(&[hex::Segment {
            address: plan.rom_fixed,
            data: signed.image.clone(),
        }])
        .into_bytes(),
    };
    output::write_file(&a.output, &bytes)?;
    report(&a, &fw, &plan, &signed, format, &key);
    Ok(())
}

fn report(
    a: &SignArgs,
    fw: &Firmware,
    plan: &SignPlan,
    signed: &Signed,
    format: ImageFormat,
    key: &SigningKey,
) {
    let digest = keys::hex(&signed.verified.digest);
    let name = a.input.display().to_string();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "input": name,
                "input_type": fw.kind.name(),
                "output": a.output.display().to_string(),
                "format": if format == ImageFormat::Hex { "hex" } else { "bin" },
                "version": plan.version.to_string(),
                "load_addr": plan.rom_fixed,
                "header_size": plan.header_size,
                "payload_size": fw.data.len(),
                "image_size": signed.image.len(),
                "slot_size": plan.slot_size,
                "security_counter": plan.security_counter,
                "vendor_id": plan.ids.vendor.map(|u| u.to_string()),
                "class_id": plan.ids.class.map(|u| u.to_string()),
                "digest": digest,
                "keyhash": keys::hex(&TrustedKey(key.verifying_key().to_bytes()).keyhash()),
            })
        );
    } else {
        eprintln!(
            "signed {name} ({}, {} bytes) for {} → {}: version {}, {} of {} bytes, digest {digest}",
            fw.kind.name(),
            fw.data.len(),
            plan.label,
            a.output.display(),
            plan.version,
            signed.image.len(),
            plan.slot_size
        );
    }
}

/// Warns (does not refuse) when the first two words do not look like a Cortex-M vector table.
fn vector_sanity(payload: &[u8], payload_addr: u64, name: &str) {
    let (Some(sp), Some(reset)) = (payload.get(0..4), payload.get(4..8)) else {
        eprintln!("twinbank: warning: {name}: payload shorter than a vector table (8 bytes)");
        return;
    };
    let _ = sp;
    let reset = u32::from_le_bytes([reset[0], reset[1], reset[2], reset[3]]) as u64;
    let end = payload_addr + payload.len() as u64;
    if reset & 1 == 0 || reset < payload_addr || reset >= end {
        eprintln!(
            "twinbank: warning: {name}: reset vector {reset:#010x} is not a Thumb address inside \
             the image ({payload_addr:#010x}..{end:#010x}); is the vector table first?"
        );
    }
}
