//! Firmware inputs for `sign`: ELF, Intel HEX or raw binary, told apart by content.

use crate::hex;
use crate::CliError;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;
use std::path::Path;

/// What the input file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// ELF executable (loadable segments by physical address).
    Elf,
    /// Intel HEX.
    Hex,
    /// Raw binary (no address information).
    Bin,
}

impl InputKind {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Elf => "ELF",
            InputKind::Hex => "Intel HEX",
            InputKind::Bin => "raw binary",
        }
    }
}

/// The payload to sign and, for ELF/HEX, the address it was linked/placed at.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// Detected kind.
    pub kind: InputKind,
    /// Address of the first payload byte (ELF: lowest PT_LOAD physical address; HEX: lowest
    /// data address); `None` for raw binaries.
    pub address: Option<u32>,
    /// The payload bytes (gaps between segments filled with 0xFF).
    pub data: Vec<u8>,
}

/// Reads and classifies an input file. `max_len` bounds the gap filling (an input spanning more
/// than that is refused as too large).
pub fn load(path: &Path, max_len: u64) -> Result<Firmware, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::input(format!("{}: cannot read: {e}", path.display())))?;
    classify(&bytes, max_len).map_err(|e| e.context_file(path))
}

fn classify(bytes: &[u8], max_len: u64) -> Result<Firmware, CliError> {
    if bytes.is_empty() {
        return Err(CliError::input("unknown file type: the file is empty"));
    }
    if bytes.starts_with(b"\x7fELF") {
        return load_elf(bytes, max_len);
    }
    if hex::looks_like_hex(bytes) {
        let segs = hex::parse(bytes).map_err(|e| CliError::input(format!("Intel HEX: {e}")))?;
        let (address, data) = flatten(&segs, max_len)?;
        return Ok(Firmware {
            kind: InputKind::Hex,
            address: Some(address),
            data,
        });
    }
    if bytes.len() >= 4
        && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
            == twinbank::image::IMAGE_MAGIC
    {
        return Err(CliError::input(
            "unknown file type: this is already an MCUboot image (header magic 0x96f3b83d); \
             sign the unsigned firmware instead",
        ));
    }
    if bytes.starts_with(b"S0") || bytes.starts_with(b"S1") || bytes.starts_with(b"S3") {
        return Err(CliError::input(
            "unknown file type: Motorola S-record is not supported; use ELF, Intel HEX or BIN",
        ));
    }
    let texty = bytes
        .iter()
        .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b));
    if texty {
        return Err(CliError::input(
            "unknown file type: this is a text file, not firmware (expected ELF, Intel HEX or a \
             raw binary)",
        ));
    }
    Ok(Firmware {
        kind: InputKind::Bin,
        address: None,
        data: bytes.to_vec(),
    })
}

/// Lays segments out contiguously from the lowest address, filling gaps with 0xFF.
fn flatten(segs: &[hex::Segment], max_len: u64) -> Result<(u32, Vec<u8>), CliError> {
    let first = segs
        .first()
        .ok_or_else(|| CliError::input("no data (no loadable bytes)"))?;
    let start = first.address as u64;
    let end = segs
        .iter()
        .map(|s| s.address as u64 + s.data.len() as u64)
        .max()
        .unwrap_or(start);
    if end - start > max_len {
        return Err(CliError::refused(format!(
            "the firmware spans {:#x}..{:#x} ({} bytes), more than the slot holds ({max_len} bytes)",
            start,
            end,
            end - start
        )));
    }
    let mut data = vec![twinbank::flash::ERASED; (end - start) as usize];
    for s in segs {
        let o = (s.address as u64 - start) as usize;
        data[o..o + s.data.len()].copy_from_slice(&s.data);
    }
    Ok((first.address, data))
}

fn load_elf(bytes: &[u8], max_len: u64) -> Result<Firmware, CliError> {
    let segs = match object::FileKind::parse(bytes) {
        Ok(object::FileKind::Elf32) => elf_segments::<elf::FileHeader32<Endianness>>(bytes),
        Ok(object::FileKind::Elf64) => elf_segments::<elf::FileHeader64<Endianness>>(bytes),
        _ => Err("not a 32- or 64-bit ELF file".to_string()),
    }
    .map_err(|e| CliError::input(format!("ELF: {e}")))?;
    let mut segs = segs;
    segs.sort_by_key(|s| s.address);
    for w in segs.windows(2) {
        if (w[0].address as u64 + w[0].data.len() as u64) > w[1].address as u64 {
            return Err(CliError::input(format!(
                "ELF: loadable segments overlap at physical address {:#010x}",
                w[1].address
            )));
        }
    }
    let (address, data) = flatten(&segs, max_len).map_err(|e| e.prefix("ELF"))?;
    Ok(Firmware {
        kind: InputKind::Elf,
        address: Some(address),
        data,
    })
}

fn elf_segments<H: FileHeader<Endian = Endianness>>(
    bytes: &[u8],
) -> Result<Vec<hex::Segment>, String> {
    let header = H::parse(bytes).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let phdrs = header
        .program_headers(endian, bytes)
        .map_err(|e| e.to_string())?;
    // File ranges of the allocated sections with contents. A PT_LOAD segment that holds none of
    // them only maps the ELF and program headers (rust-lld does that, into RAM): not firmware.
    let sections: Vec<(u64, u64)> = header
        .section_headers(endian, bytes)
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|s| {
            s.sh_type(endian) != elf::SHT_NOBITS
                && s.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0
                && s.sh_size(endian).into() > 0
        })
        .map(|s| (s.sh_offset(endian).into(), s.sh_size(endian).into()))
        .collect();
    let mut out = Vec::new();
    for ph in phdrs {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_filesz(endian).into() == 0 {
            continue;
        }
        let (start, len): (u64, u64) = (ph.p_offset(endian).into(), ph.p_filesz(endian).into());
        let holds_a_section = sections.is_empty()
            || sections
                .iter()
                .any(|&(o, n)| o >= start && o.saturating_add(n) <= start.saturating_add(len));
        if !holds_a_section {
            continue;
        }
        let paddr: u64 = ph.p_paddr(endian).into();
        let address = u32::try_from(paddr)
            .map_err(|_| format!("segment physical address {paddr:#x} is beyond 4 GiB"))?;
        let data = ph
            .data(endian, bytes)
            .map_err(|_| "a loadable segment lies outside the file (truncated ELF?)".to_string())?;
        out.push(hex::Segment {
            address,
            data: data.to_vec(),
        });
    }
    if out.is_empty() {
        return Err("no loadable segment (PT_LOAD with file size > 0)".to_string());
    }
    Ok(out)
}
