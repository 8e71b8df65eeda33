//! `twinbank inspect` and `twinbank verify`.

use crate::board_file::BoardArg;
use crate::image_file;
use crate::keys::{self, hex};
use crate::{parse_u32, parse_uuid, BankArg, CliError};
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use twinbank::flash::SliceFlash;
use twinbank::image::tlv::*;
use twinbank::image::{
    flag_names, hash_range, verify_image, ImageHeader, KeyName, KeySelector, VerifyParams,
    IMAGE_MAGIC,
};
use twinbank::{Bank, DeviceIds, TrustedKey, Uuid};

/// Options of `twinbank inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// Signed image (BIN or Intel HEX).
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
    /// Check the signature with this key (private or public PEM); repeatable.
    #[arg(short, long, value_name = "FILE")]
    key: Vec<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Options of `twinbank verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Trusted key (private or public PEM); repeatable.
    #[arg(short, long, value_name = "FILE", required = true)]
    key: Vec<PathBuf>,
    /// The device's vendor UUID (images must carry it).
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    vid: Option<Uuid>,
    /// The device's class UUID (images must carry it).
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    cid: Option<Uuid>,
    /// Take the device ids from the board description's [device] section.
    #[arg(long, conflicts_with_all = ["vid", "cid"])]
    board_ids: bool,
    /// The device's minimum security counter.
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "0")]
    min_security_counter: u32,
    /// The bank the image is offered to (needs the board description).
    #[arg(long, value_enum)]
    bank: Option<BankArg>,
    /// Slot size when there is no board description.
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    slot_size: Option<u32>,
    #[command(flatten)]
    board: BoardArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Signed image (BIN or Intel HEX).
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
}

fn tlv_label(kind: u16) -> &'static str {
    tlv_name(kind).unwrap_or("unknown")
}

fn decode_value(kind: u16, v: &[u8]) -> Option<String> {
    match (kind, v.len()) {
        (TLV_SEC_CNT, 4) => Some(u32::from_le_bytes([v[0], v[1], v[2], v[3]]).to_string()),
        (TLV_VENDOR_ID | TLV_CLASS_ID, 16) => {
            let mut u = [0u8; 16];
            u.copy_from_slice(v);
            Some(Uuid(u).to_string())
        }
        _ => None,
    }
}

struct Tlv {
    protected: bool,
    kind: u16,
    offset: u32,
    value: Vec<u8>,
}

fn walk(bytes: &[u8], header: &ImageHeader) -> Result<Vec<Tlv>, String> {
    let mut f = SliceFlash(bytes);
    let limit = bytes.len() as u32;
    let mut out = Vec::new();
    let mut areas = Vec::new();
    if header.protect_tlv_size != 0 {
        areas.push((header.tlv_offset() as u32, TLV_PROT_INFO_MAGIC, true));
    }
    areas.push((header.hashed_len() as u32, TLV_INFO_MAGIC, false));
    for (offset, magic, protected) in areas {
        let (mut it, total) = TlvIter::open(&mut f, offset, limit, magic)
            .map_err(|e| format!("TLV area at {offset:#x}: {e}"))?;
        if protected && total != header.protect_tlv_size as u32 {
            return Err(format!(
                "protected TLV area is {total} bytes but the header says {}",
                header.protect_tlv_size
            ));
        }
        while let Some(e) = it
            .next(&mut f)
            .map_err(|e| format!("TLV area at {offset:#x}: {e}"))?
        {
            let s = e.value_offset as usize;
            out.push(Tlv {
                protected,
                kind: e.kind,
                offset: e.value_offset - TLV_HEADER_SIZE,
                value: bytes[s..s + e.len as usize].to_vec(),
            });
        }
    }
    Ok(out)
}

/// Each signature TLV: the key named before it, and which given key verifies it, as the device
/// crate's key selection decides (the same code as verification).
fn signatures(
    bytes: &[u8],
    tlvs: &[Tlv],
    keys: &[(String, TrustedKey)],
    digest: &[u8; 32],
) -> Result<Vec<Value>, twinbank::ImageError> {
    let trusted: Vec<TrustedKey> = keys.iter().map(|(_, k)| *k).collect();
    let mut selector = KeySelector::new(&trusted);
    let mut flash = SliceFlash(bytes);
    let mut named: Option<String> = None;
    let mut out = Vec::new();
    let key_name = |i: usize| keys.get(i).map(|(n, _)| n.clone());
    for t in tlvs.iter().filter(|t| !t.protected) {
        match t.kind {
            TLV_KEYHASH => named = Some(hex(&t.value)),
            TLV_PUBKEY => {
                named = t
                    .value
                    .get(twinbank::image::ED25519_SPKI_PREFIX.len()..)
                    .and_then(|k| {
                        let k: [u8; 32] = k.try_into().ok()?;
                        Some(hex(&TrustedKey(k).keyhash()))
                    })
            }
            _ => {}
        }
        let entry = TlvEntry {
            kind: t.kind,
            value_offset: t.offset + TLV_HEADER_SIZE,
            len: t.value.len() as u16,
        };
        if let Some(check) = selector.entry(&mut flash, &entry, digest)? {
            out.push(json!({
                "keyhash": named.take(),
                "keyhash_matches_key": match check.named {
                    KeyName::Trusted(i) => key_name(i),
                    _ => None,
                },
                "valid_with_key": check.verified_by.and_then(key_name),
                "checked": !keys.is_empty(),
            }));
        }
    }
    Ok(out)
}

/// Runs `inspect`.
pub fn inspect(a: InspectArgs) -> Result<(), CliError> {
    let name = a.image.display().to_string();
    let keys: Vec<(String, TrustedKey)> = a
        .key
        .iter()
        .map(|p| keys::public_key(p).map(|k| (p.display().to_string(), k)))
        .collect::<Result<_, _>>()?;
    if let Ok(raw) = std::fs::read(&a.image) {
        if crate::delta::is_patch(&raw) {
            return crate::delta::inspect(&name, &raw, a.json);
        }
    }
    let file = image_file::read(&a.image)?;
    let st =
        image_file::structure(&file.bytes).map_err(|e| CliError::input(format!("{name}: {e}")))?;
    let h = st.header;
    let tlvs = walk(&file.bytes, &h).map_err(|e| CliError::input(format!("{name}: {e}")))?;
    let computed = hash_range(&mut SliceFlash(&file.bytes), 0, h.hashed_len() as u32)
        .map_err(|e| CliError::input(format!("{name}: {e}")))?;
    let stored = tlvs.iter().find(|t| !t.protected && t.kind == TLV_SHA256);
    let hash_ok = stored.is_some_and(|t| t.value == computed);

    let sigs = signatures(&file.bytes, &tlvs, &keys, &computed)
        .map_err(|e| CliError::input(format!("{name}: {e}")))?;
    let sig_ok = keys.is_empty() || sigs.iter().any(|s| !s["valid_with_key"].is_null());
    let trailing = file.bytes.len() as u64 - st.total_len as u64;

    let tlv_json: Vec<Value> = tlvs
        .iter()
        .map(|t| {
            json!({
                "area": if t.protected { "protected" } else { "unprotected" },
                "type": t.kind,
                "type_hex": format!("{:#04x}", t.kind),
                "name": tlv_label(t.kind),
                "offset": t.offset,
                "len": t.value.len(),
                "value": hex(&t.value),
                "decoded": decode_value(t.kind, &t.value),
            })
        })
        .collect();
    let report = json!({
        "file": name,
        "format": file.format,
        "file_address": file.address,
        "file_size": file.bytes.len(),
        "image_size": st.total_len,
        "trailing_bytes": trailing,
        "header": {
            "magic": IMAGE_MAGIC,
            "load_addr": h.load_addr,
            "hdr_size": h.hdr_size,
            "protect_tlv_size": h.protect_tlv_size,
            "img_size": h.img_size,
            "flags": h.flags,
            "flag_names": flag_names(h.flags).collect::<Vec<_>>(),
            "version": h.version.to_string(),
        },
        "tlvs": tlv_json,
        "hash": {
            "computed": hex(&computed),
            "stored": stored.map(|t| hex(&t.value)),
            "matches": hash_ok,
        },
        "signatures": sigs,
        "signature_valid": if keys.is_empty() { Value::Null } else { Value::Bool(sig_ok) },
    });
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_table(&report, &tlvs, &h);
    }
    if !hash_ok {
        return Err(CliError::refused(format!(
            "{name}: image hash mismatch (content tampered or corrupted)"
        )));
    }
    if !sig_ok {
        return Err(CliError::refused(format!(
            "{name}: no signature verifies with the given key(s)"
        )));
    }
    Ok(())
}

fn print_table(r: &Value, tlvs: &[Tlv], h: &ImageHeader) {
    println!(
        "{} ({}, {} bytes)",
        r["file"].as_str().unwrap_or(""),
        r["format"].as_str().unwrap_or(""),
        r["file_size"]
    );
    println!("header");
    println!("  {:<18} {:#010x}", "magic", IMAGE_MAGIC);
    println!("  {:<18} {:#010x}", "load_addr", h.load_addr);
    println!("  {:<18} {:#x} ({})", "hdr_size", h.hdr_size, h.hdr_size);
    println!("  {:<18} {}", "protect_tlv_size", h.protect_tlv_size);
    println!("  {:<18} {:#x} ({})", "img_size", h.img_size, h.img_size);
    println!(
        "  {:<18} {:#010x} [{}]",
        "flags",
        h.flags,
        flag_names(h.flags).collect::<Vec<_>>().join(", ")
    );
    println!("  {:<18} {}", "version", h.version);
    println!(
        "  {:<18} {} (trailing bytes after it: {})",
        "image size", r["image_size"], r["trailing_bytes"]
    );
    println!("TLVs");
    println!(
        "  {:<12} {:<6} {:<12} {:>8} {:>5}  value",
        "area", "type", "name", "offset", "len"
    );
    for t in tlvs {
        let v = decode_value(t.kind, &t.value).unwrap_or_else(|| hex(&t.value));
        println!(
            "  {:<12} {:<6} {:<12} {:>#8x} {:>5}  {}",
            if t.protected {
                "protected"
            } else {
                "unprotected"
            },
            format!("{:#04x}", t.kind),
            tlv_label(t.kind),
            t.offset,
            t.value.len(),
            v
        );
    }
    println!("hash");
    println!(
        "  computed  {}",
        r["hash"]["computed"].as_str().unwrap_or("")
    );
    println!(
        "  stored    {}",
        r["hash"]["stored"].as_str().unwrap_or("(none)")
    );
    println!(
        "  result    {}",
        if r["hash"]["matches"] == true {
            "OK"
        } else {
            "MISMATCH"
        }
    );
    if let Some(sigs) = r["signatures"].as_array() {
        for s in sigs {
            let res = if s["checked"] != true {
                "not checked (give -k KEY)".to_string()
            } else if let Some(k) = s["valid_with_key"].as_str() {
                format!("valid ({k})")
            } else {
                "INVALID for the given key(s)".to_string()
            };
            println!("signature (Ed25519): {res}");
        }
        if sigs.is_empty() {
            println!("signature: none");
        }
    }
}

/// Runs `verify`: the device's own verifier on the image as it would sit in the bank.
pub fn verify(a: VerifyArgs) -> Result<(), CliError> {
    let name = a.image.display().to_string();
    let keys: Vec<TrustedKey> = a
        .key
        .iter()
        .map(|p| keys::public_key(p))
        .collect::<Result<_, _>>()?;
    let board = if a.bank.is_some() || a.board_ids {
        Some(
            a.board
                .require(if a.board_ids { "--board-ids" } else { "--bank" })?,
        )
    } else {
        a.board.load()?
    };
    let file = image_file::read(&a.image)?;
    let refuse = |msg: String, json: bool| -> CliError {
        if json {
            println!("{}", json!({"file": name, "accepted": false, "error": msg}));
        }
        CliError::refused(format!("{name}: {msg}"))
    };
    let st = match image_file::structure(&file.bytes) {
        Ok(s) => s,
        Err(e) => return Err(refuse(e, a.json)),
    };
    let mut ids = DeviceIds {
        vendor: a.vid,
        class: a.cid,
    };
    let (bank_address, capacity, bank_label) = match &board {
        Some(b) => {
            let layout = b.layout()?;
            if a.board_ids {
                ids = b.ids()?;
            }
            let bank = match a.bank {
                Some(bk) => Bank::from(bk),
                None => match Bank::ALL
                    .into_iter()
                    .find(|&bk| layout.bank_address(bk) == st.header.load_addr)
                {
                    Some(bk) => bk,
                    None if st.header.rom_fixed() => {
                        return Err(refuse(
                            format!(
                            "image is linked for {:#010x}, which is not a bank of {} (bank A at \
                                 {:#010x}, bank B at {:#010x})",
                            st.header.load_addr,
                            b.path.display(),
                            layout.bank_address(Bank::A),
                            layout.bank_address(Bank::B)
                        ),
                            a.json,
                        ))
                    }
                    None => Bank::A,
                },
            };
            (
                layout.bank_address(bank),
                layout.bank_size(),
                format!("bank {bank} ({:#010x})", layout.bank_address(bank)),
            )
        }
        None => (
            st.header.load_addr,
            a.slot_size.unwrap_or(file.bytes.len() as u32),
            format!(
                "its own load address {:#010x} (no board description: {} not found; give \
                 --board FILE)",
                st.header.load_addr,
                crate::board_file::DEFAULT_BOARD
            ),
        ),
    };
    let params = VerifyParams {
        offset: 0,
        capacity,
        bank_address,
        keys: &keys,
        ids,
        min_security_counter: a.min_security_counter,
    };
    match verify_image(&mut SliceFlash(&file.bytes), &params) {
        Ok(v) => {
            if a.json {
                println!(
                    "{}",
                    json!({
                        "file": name,
                        "accepted": true,
                        "error": null,
                        "bank_address": bank_address,
                        "version": v.header.version.to_string(),
                        "digest": hex(&v.digest),
                        "security_counter": v.protected.security_counter,
                        "vendor_id": v.protected.vendor_id.map(|u| u.to_string()),
                        "class_id": v.protected.class_id.map(|u| u.to_string()),
                        "image_size": v.total_len,
                    })
                );
            } else {
                println!(
                    "{name}: OK: version {} would be accepted for {bank_label}; digest {}",
                    v.header.version,
                    hex(&v.digest)
                );
            }
            Ok(())
        }
        Err(e) => Err(refuse(e.to_string(), a.json)),
    }
}
