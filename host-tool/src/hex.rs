//! Intel HEX: a small reader and writer (record types 00–05, 32-bit addresses).

use std::fmt::Write as _;

/// A contiguous run of bytes at an absolute address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Address of the first byte.
    pub address: u32,
    /// The bytes.
    pub data: Vec<u8>,
}

/// True when `bytes` look like Intel HEX text (first non-blank character is ':' and the text is
/// ASCII). Detection by content, never by file extension.
pub fn looks_like_hex(bytes: &[u8]) -> bool {
    let trimmed = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &bytes[i..])
        .unwrap_or(&[]);
    trimmed.first() == Some(&b':') && trimmed.iter().all(|b| b.is_ascii())
}

fn hex_byte(s: &[u8]) -> Option<u8> {
    let t = std::str::from_utf8(s).ok()?;
    u8::from_str_radix(t, 16).ok()
}

/// Parses Intel HEX text into segments sorted by address (adjacent records merged). Errors name
/// the line.
pub fn parse(text: &[u8]) -> Result<Vec<Segment>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not ASCII text".to_string())?;
    let mut upper: u32 = 0;
    let mut records: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut ended = false;
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if ended {
            return Err(format!("line {line_no}: data after the end-of-file record"));
        }
        let body = line
            .strip_prefix(':')
            .ok_or_else(|| format!("line {line_no}: record does not start with ':'"))?
            .as_bytes();
        if body.len() < 10 || body.len() % 2 != 0 {
            return Err(format!("line {line_no}: record too short or odd length"));
        }
        let bytes: Vec<u8> = body
            .chunks(2)
            .map(hex_byte)
            .collect::<Option<_>>()
            .ok_or_else(|| format!("line {line_no}: not hexadecimal"))?;
        let len = bytes[0] as usize;
        if bytes.len() != len + 5 {
            return Err(format!(
                "line {line_no}: byte count {len} does not match the record length"
            ));
        }
        let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        if sum != 0 {
            return Err(format!("line {line_no}: checksum mismatch"));
        }
        let offset = u16::from_be_bytes([bytes[1], bytes[2]]) as u32;
        let kind = bytes[3];
        let data = &bytes[4..4 + len];
        match kind {
            0x00 => {
                let addr = upper.wrapping_add(offset);
                if (addr as u64) + (len as u64) > 1 << 32 {
                    return Err(format!("line {line_no}: data beyond 4 GiB"));
                }
                records.push((addr, data.to_vec()));
            }
            0x01 => ended = true,
            0x02 if len == 2 => upper = (u16::from_be_bytes([data[0], data[1]]) as u32) << 4,
            0x04 if len == 2 => upper = (u16::from_be_bytes([data[0], data[1]]) as u32) << 16,
            0x03 | 0x05 => {} // start address: not part of the flash contents
            _ => {
                return Err(format!(
                    "line {line_no}: unsupported or malformed record type {kind:02x}"
                ))
            }
        }
    }
    if !ended {
        return Err("no end-of-file record (truncated?)".to_string());
    }
    records.sort_by_key(|r| r.0);
    let mut segments: Vec<Segment> = Vec::new();
    for (addr, data) in records {
        match segments.last_mut() {
            Some(s) if s.address as u64 + s.data.len() as u64 == addr as u64 => {
                s.data.extend_from_slice(&data)
            }
            Some(s) if (addr as u64) < s.address as u64 + s.data.len() as u64 => {
                return Err(format!("overlapping data at address {addr:#010x}"));
            }
            _ => segments.push(Segment {
                address: addr,
                data,
            }),
        }
    }
    Ok(segments)
}

fn record(out: &mut String, kind: u8, offset: u16, data: &[u8]) {
    let mut bytes = Vec::with_capacity(data.len() + 4);
    bytes.push(data.len() as u8);
    bytes.extend_from_slice(&offset.to_be_bytes());
    bytes.push(kind);
    bytes.extend_from_slice(data);
    let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    bytes.push(sum.wrapping_neg());
    out.push(':');
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out.push('\n');
}

/// Writes segments as Intel HEX (16 data bytes per record, type 04 for the upper address).
pub fn write(segments: &[Segment]) -> String {
    let mut out = String::new();
    let mut upper: Option<u16> = None;
    for s in segments {
        let mut pos = 0usize;
        while pos < s.data.len() {
            let addr = s.address.wrapping_add(pos as u32);
            let hi = (addr >> 16) as u16;
            if upper != Some(hi) {
                record(&mut out, 0x04, 0, &hi.to_be_bytes());
                upper = Some(hi);
            }
            // Do not let a record cross a 64 KiB boundary.
            let to_boundary = 0x1_0000 - (addr & 0xffff) as usize;
            let n = 16.min(s.data.len() - pos).min(to_boundary);
            record(&mut out, 0x00, addr as u16, &s.data[pos..pos + n]);
            pos += n;
        }
    }
    record(&mut out, 0x01, 0, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_64k_boundaries() {
        let segs = vec![
            Segment {
                address: 0x2100_fff0,
                data: (0..100u8).collect(),
            },
            Segment {
                address: 0x2200_0000,
                data: vec![1, 2, 3],
            },
        ];
        let text = write(&segs);
        assert!(looks_like_hex(text.as_bytes()));
        assert_eq!(parse(text.as_bytes()).unwrap(), segs);
    }

    #[test]
    fn refuses_bad_checksum_and_missing_eof() {
        assert!(parse(b":0100000001FF\n:00000001FF\n")
            .unwrap_err()
            .contains("checksum"));
        assert!(parse(b":0100000001FE\n")
            .unwrap_err()
            .contains("end-of-file"));
    }
}
