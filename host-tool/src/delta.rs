//! `twinbank delta` (make a patch from the image a device runs to a new signed image) and the
//! patch view of `twinbank inspect`. The format and the encoder are the device crate's
//! (`twinbank::delta`); every patch written is first applied here and compared with the target.

use crate::keys::hex;
use crate::{image_file, write_file, CliError};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use twinbank::delta::encode::{make_patch, summarise, EncodeOptions, Summary};
use twinbank::delta::format::PATCH_MAGIC;
use twinbank::Manifest;

/// Options of `twinbank delta`.
#[derive(Args)]
pub struct DeltaArgs {
    /// The image the device runs (signed, BIN or Intel HEX).
    #[arg(long, value_name = "OLD.img")]
    from: PathBuf,
    /// The new signed image (linked and signed for the other bank).
    #[arg(long, value_name = "NEW.img")]
    to: PathBuf,
    /// Where to write the patch.
    #[arg(short, long, value_name = "PATCH")]
    output: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A signed image from a file, cut to its length, with its manifest.
pub struct Signed {
    /// The image bytes.
    pub bytes: Vec<u8>,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Reads a signed image (BIN or HEX), refusing anything that is not one.
pub fn read_signed(path: &Path) -> Result<Signed, CliError> {
    let file = image_file::read(path)?;
    let mut bytes = file.bytes;
    let manifest = Manifest::from_image(&bytes)
        .map_err(|e| CliError::input(format!("{}: not a signed image: {e}", path.display())))?;
    if bytes.len() < manifest.total_len as usize {
        return Err(CliError::input(format!(
            "{}: truncated: the image needs {} bytes, the file has {}",
            path.display(),
            manifest.total_len,
            bytes.len()
        )));
    }
    bytes.truncate(manifest.total_len as usize);
    Ok(Signed { bytes, manifest })
}

/// The patch from `base` to `target` (checked: it rebuilds the target byte for byte).
pub fn patch(base: &Signed, target: &Signed) -> Result<Vec<u8>, CliError> {
    make_patch(&base.bytes, &target.bytes, &EncodeOptions::default())
        .map(|p| p.bytes)
        .map_err(|e| CliError::input(e.to_string()))
}

/// Percentage of `part` in `whole`.
pub fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// Runs `twinbank delta`.
pub fn run(a: DeltaArgs) -> Result<(), CliError> {
    let base = read_signed(&a.from)?;
    let target = read_signed(&a.to)?;
    if base.manifest.digest == target.manifest.digest {
        return Err(CliError::input(format!(
            "{} and {} are the same image",
            a.from.display(),
            a.to.display()
        )));
    }
    let p = patch(&base, &target)?;
    write_file(&a.output, &p)?;
    let (bv, tv) = (base.manifest.header.version, target.manifest.header.version);
    if a.json {
        println!(
            "{}",
            json!({
                "patch": a.output.display().to_string(),
                "patch_bytes": p.len(),
                "base_version": bv.to_string(),
                "base_digest": hex(&base.manifest.digest),
                "target_version": tv.to_string(),
                "target_digest": hex(&target.manifest.digest),
                "target_bytes": target.bytes.len(),
                "ratio": p.len() as f64 / target.bytes.len() as f64,
            })
        );
    } else {
        eprintln!(
            "wrote {}: {bv} → {tv}, {} bytes ({:.2} % of the {} bytes of {})",
            a.output.display(),
            p.len(),
            percent(p.len(), target.bytes.len()),
            target.bytes.len(),
            a.to.display()
        );
        if p.len() >= target.bytes.len() {
            eprintln!("note: the patch is not smaller than the image; a full upload costs less");
        }
    }
    Ok(())
}

/// True when `bytes` start like a patch.
pub fn is_patch(bytes: &[u8]) -> bool {
    bytes.get(..4) == Some(&PATCH_MAGIC.to_le_bytes()[..])
}

/// `twinbank inspect PATCH`: what the patch applies to, what it makes, its size and ops.
pub fn inspect(name: &str, bytes: &[u8], json_out: bool) -> Result<(), CliError> {
    let s: Summary =
        summarise(bytes).map_err(|e| CliError::input(format!("{name}: not a valid patch: {e}")))?;
    let target_len = s.target.total_len as usize;
    let report = json!({
        "file": name,
        "format": "twinbank patch",
        "patch_bytes": bytes.len(),
        "base": {
            "digest": hex(&s.header.base_digest),
            "size": s.header.base_size,
            "address": format!("{:#010x}", s.header.base_address),
        },
        "target": {
            "digest": hex(&s.target.digest),
            "version": s.target.header.version.to_string(),
            "size": target_len,
            "address": format!("{:#010x}", s.target.header.load_addr),
        },
        "ratio": bytes.len() as f64 / target_len.max(1) as f64,
        "body_bytes": s.header.body_len,
        "op_stream_bytes": s.op_stream_len,
        "window_bytes": 1u32 << s.header.window_bits,
        "normalised": !s.header.raw,
        "segments": s.segments,
        "ops": {
            "copy": { "count": s.copies.0, "bytes": s.copies.1 },
            "add": { "count": s.adds.0, "bytes": s.adds.1 },
            "insert": { "count": s.inserts.0, "bytes": s.inserts.1 },
            "seek": s.seeks,
        },
    });
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(());
    }
    println!("{name} (twinbank patch, {} bytes)", bytes.len());
    println!(
        "  base      {} ({} bytes, linked at {:#010x})",
        hex(&s.header.base_digest),
        s.header.base_size,
        s.header.base_address
    );
    println!(
        "  target    {} ({}, {} bytes, linked at {:#010x})",
        hex(&s.target.digest),
        s.target.header.version,
        target_len,
        s.target.header.load_addr
    );
    println!(
        "  ratio     {:.2} % of the target",
        percent(bytes.len(), target_len)
    );
    println!(
        "  body      {} bytes (LZ, {} B window) → {} bytes of ops; {} map segments{}",
        s.header.body_len,
        1u32 << s.header.window_bits,
        s.op_stream_len,
        s.segments,
        if s.header.raw {
            ", base not normalised"
        } else {
            ""
        }
    );
    println!(
        "  ops       copy {} ({} B), add {} ({} B), insert {} ({} B), seek {}",
        s.copies.0, s.copies.1, s.adds.0, s.adds.1, s.inserts.0, s.inserts.1, s.seeks
    );
    Ok(())
}
