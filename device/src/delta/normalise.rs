//! Address normalisation: the base image as it would read had it been linked for the other bank
//! and laid out like the target. Host and device run this same code, the host over the whole
//! base image before diffing, the device over each block it copies, so the patch only has to
//! describe what really changed.
//!
//! Three kinds of *sites* are rewritten:
//!
//! 1. **Word**: an aligned 32-bit little-endian word whose value is an address inside the base
//!    image (vector table, literal pools, vtables, pointers in `.rodata`/`.data`).
//! 2. **MOVW/MOVT pair**: a Thumb-2 `MOVW Rd, #lo` and the first `MOVT Rd, #hi` (same `Rd`)
//!    4 to [`MOV_REACH`] bytes after it, with no other `MOVW Rd` in between, that together load
//!    such an address: what LLVM emits for thumbv7m at opt level "s" instead of a literal pool.
//!    In the demo app 43 % of these pairs are adjacent and 100 % are within 32 bytes.
//! 3. **Branch**: a Thumb-2 `BL` or `B.W` (encoding T4) with `J1 = J2 = 1` (every branch within
//!    ±4 MiB) that targets a byte inside the base image.
//!
//! The patterns cannot overlap each other (a MOVW/MOVT second halfword has bit 15 clear, a
//! branch's second halfword is `1x111…`, a first halfword `11110…`), and a pair or branch that
//! overlaps a word site is left alone, so the result does not depend on where a block starts.
//!
//! An address `v` at image offset `o = v − base_address` becomes
//! `target_address + o + shift(o)`, and a branch at offset `p` to offset `q` moves by
//! `shift(q) − shift(p)`, where `shift` is the step function of the [`Segment`] map: the shift
//! of the last segment starting at or before the offset (0 before the first). With an empty map
//! this is the plain bank-to-bank rebase. The map tells where each part of the base went in the
//! target: code after a changed function moved, and so did every pointer to it.
//!
//! The transformation only has to be the same on both sides, not "right": a false site (data
//! that looks like an instruction) costs at most a few patch bytes. It is local: the output byte
//! at `x` depends only on the base bytes in `[x − MARGIN, x + MARGIN)`, so the device normalises
//! a block from a read of the block plus [`MARGIN`] bytes on each side.

/// Farthest a MOVT may follow its MOVW (bytes from the MOVW to the MOVT).
pub const MOV_REACH: i64 = 32;

/// Base bytes read on each side of a block to normalise it: a MOVW/MOVT pair reaches
/// `MOV_REACH + 4` bytes, and the word-site check of its pieces 3 more on each side.
pub const MARGIN: u32 = 40;

/// Where a part of the base image went in the target: base offsets from `src` on (until the
/// next segment) moved by `shift` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// First base offset of the segment.
    pub src: u32,
    /// Target offset minus base offset, for the segment.
    pub shift: i32,
}

/// The parameters of the normalisation.
#[derive(Debug, Clone, Copy)]
pub struct Reloc<'m> {
    /// Load address of the base image (the running bank).
    pub base_address: u32,
    /// Length of the base image.
    pub base_len: u32,
    /// Load address of the target (the other bank).
    pub target_address: u32,
    /// The segment map, sorted by `src` (strictly increasing).
    pub map: &'m [Segment],
}

const MOVW: u16 = 0xF240;
const MOVT: u16 = 0xF2C0;
const MOV_MASK: u16 = 0xFBF0;

impl Reloc<'_> {
    /// `shift(o)`: the shift of the last segment starting at or before `o`.
    pub fn shift(&self, o: u32) -> i32 {
        let i = self.map.partition_point(|s| s.src <= o);
        if i == 0 {
            0
        } else {
            self.map[i - 1].shift
        }
    }

    /// The normalised value of an address `v`, if it points into the base image.
    fn map_address(&self, v: u32) -> Option<u32> {
        let o = v.wrapping_sub(self.base_address);
        if o >= self.base_len {
            return None;
        }
        Some(
            self.target_address
                .wrapping_add(o)
                .wrapping_add(self.shift(o) as u32),
        )
    }
}

/// Base bytes `[start, start + bytes.len())`, read at base offsets; `None` outside them or
/// outside the base image.
struct View<'b> {
    bytes: &'b [u8],
    start: u32,
    base_len: u32,
}

impl View<'_> {
    fn hw(&self, at: i64) -> Option<u16> {
        let end = self.start as i64 + self.bytes.len() as i64;
        if at < self.start as i64 || at + 2 > end.min(self.base_len as i64) {
            return None;
        }
        let i = (at - self.start as i64) as usize;
        Some(u16::from_le_bytes([self.bytes[i], self.bytes[i + 1]]))
    }

    fn byte(&self, at: i64) -> Option<u8> {
        let end = self.start as i64 + self.bytes.len() as i64;
        if at < self.start as i64 || at >= end.min(self.base_len as i64) {
            return None;
        }
        Some(self.bytes[(at - self.start as i64) as usize])
    }

    fn word(&self, at: i64) -> Option<u32> {
        Some(self.hw(at)? as u32 | (self.hw(at + 2)? as u32) << 16)
    }
}

fn mov_imm(hw1: u16, hw2: u16) -> u16 {
    ((hw1 & 0xF) << 12) | ((hw1 >> 10) & 1) << 11 | ((hw2 >> 12) & 7) << 8 | (hw2 & 0xFF)
}

fn mov_with_imm(hw1: u16, hw2: u16, imm: u16) -> (u16, u16) {
    (
        (hw1 & !0x040F) | (imm >> 12) | ((imm >> 11) & 1) << 10,
        (hw2 & !0x70FF) | ((imm >> 8) & 7) << 12 | (imm & 0xFF),
    )
}

/// Branches within ±4 MiB: their `J1`, `J2` bits are both 1.
const NEAR: i32 = 1 << 22;

/// `BL`/`B.W` T4 with `J1 = J2 = 1`: first halfword `11110…`, second `1x111…`.
fn is_branch(hw1: u16, hw2: u16) -> bool {
    hw1 & 0xF800 == 0xF000 && hw2 & 0xB800 == 0xB800
}

/// The byte offset of a `BL`/`B.W` T4 (relative to the instruction address + 4).
fn branch_offset(hw1: u16, hw2: u16) -> i32 {
    let s = ((hw1 >> 10) & 1) as i32;
    let j1 = ((hw2 >> 13) & 1) as i32;
    let j2 = ((hw2 >> 11) & 1) as i32;
    let i1 = 1 - (j1 ^ s);
    let i2 = 1 - (j2 ^ s);
    let imm = (s << 24)
        | (i1 << 23)
        | (i2 << 22)
        | ((hw1 & 0x3FF) as i32) << 12
        | ((hw2 & 0x7FF) as i32) << 1;
    // Sign-extend 25 bits.
    (imm << 7) >> 7
}

/// The branch re-encoded with `offset` (even, within ±16 MiB), if it fits.
fn branch_with_offset(hw1: u16, hw2: u16, offset: i32) -> Option<(u16, u16)> {
    if offset & 1 != 0 || !(-(1 << 24)..(1 << 24)).contains(&offset) {
        return None;
    }
    let s = ((offset >> 24) & 1) as u16;
    let i1 = ((offset >> 23) & 1) as u16;
    let i2 = ((offset >> 22) & 1) as u16;
    let j1 = (1 - i1) ^ s;
    let j2 = (1 - i2) ^ s;
    Some((
        (hw1 & 0xF800) | s << 10 | ((offset >> 12) & 0x3FF) as u16,
        (hw2 & 0xD000) | j1 << 13 | j2 << 11 | ((offset >> 1) & 0x7FF) as u16,
    ))
}

struct Sites<'a, 'b> {
    v: View<'b>,
    r: &'a Reloc<'a>,
}

impl Sites<'_, '_> {
    fn word_site(&self, w: i64) -> Option<u32> {
        if w < 0 || w % 4 != 0 {
            return None;
        }
        self.r.map_address(self.v.word(w)?)
    }

    fn overlaps_word_site(&self, from: i64, to: i64) -> bool {
        let mut w = from - from.rem_euclid(4);
        while w < to {
            if self.word_site(w).is_some() {
                return true;
            }
            w += 4;
        }
        false
    }

    fn mov_at(&self, p: i64, pattern: u16) -> Option<(u16, u16)> {
        let (a, b) = (self.v.hw(p)?, self.v.hw(p + 2)?);
        (a & MOV_MASK == pattern && b & 0x8000 == 0).then_some((a, b))
    }

    /// A MOVW/MOVT pair whose MOVW is at `p`: the MOVT's offset and the new halfwords of both.
    fn mov_site(&self, p: i64) -> Option<(i64, [u16; 4])> {
        if p < 0 || p % 2 != 0 {
            return None;
        }
        let (a, b) = self.mov_at(p, MOVW)?;
        let rd = (b >> 8) & 0xF;
        let mut q = p + 4;
        let (c, d) = loop {
            if q > p + MOV_REACH {
                return None;
            }
            if let Some((c, d)) = self.mov_at(q, MOVT) {
                if (d >> 8) & 0xF == rd {
                    break (c, d);
                }
            }
            if self
                .mov_at(q, MOVW)
                .is_some_and(|(_, d)| (d >> 8) & 0xF == rd)
            {
                return None;
            }
            q += 2;
        };
        let value = (mov_imm(c, d) as u32) << 16 | mov_imm(a, b) as u32;
        let new = self.r.map_address(value)?;
        if self.overlaps_word_site(p, p + 4) || self.overlaps_word_site(q, q + 4) {
            return None;
        }
        let (a2, b2) = mov_with_imm(a, b, new as u16);
        let (c2, d2) = mov_with_imm(c, d, (new >> 16) as u16);
        Some((q, [a2, b2, c2, d2]))
    }

    /// The new halfwords of a branch at `p`.
    fn branch_site(&self, p: i64) -> Option<[u16; 2]> {
        if p < 0 || p % 2 != 0 {
            return None;
        }
        let (a, b) = (self.v.hw(p)?, self.v.hw(p + 2)?);
        if !is_branch(a, b) || self.overlaps_word_site(p, p + 4) {
            return None;
        }
        let off = branch_offset(a, b);
        let q = p + 4 + off as i64;
        if q < 0 || q >= self.r.base_len as i64 {
            return None;
        }
        let moved = self.r.shift(q as u32) as i64 - self.r.shift(p as u32) as i64;
        if moved == 0 {
            return None;
        }
        let new = i32::try_from(off as i64 + moved).ok()?;
        if !(-NEAR..NEAR).contains(&new) {
            return None;
        }
        let (a2, b2) = branch_with_offset(a, b, new)?;
        Some([a2, b2])
    }
}

/// Writes `bytes` (little-endian halfwords or a word) at base offset `at` into `out`, which
/// holds base offsets `[from, from + out.len())`; parts outside are dropped.
fn put(out: &mut [u8], from: u32, at: i64, bytes: &[u8]) {
    for (k, &b) in bytes.iter().enumerate() {
        let x = at + k as i64 - from as i64;
        if x >= 0 && (x as usize) < out.len() {
            out[x as usize] = b;
        }
    }
}

fn halfwords(h: &[u16]) -> [u8; 8] {
    let mut b = [0u8; 8];
    for (i, v) in h.iter().enumerate().take(4) {
        b[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// Normalises base offsets `[from, from + out.len())` into `out`. `raw` holds the base bytes
/// from base offset `raw_start`; it must cover `[from − MARGIN, from + out.len() + MARGIN)`
/// (clipped to the base image) for the result to equal the whole image's normalisation.
/// Bytes of `out` that `raw` does not hold are left as they are.
pub fn normalise(reloc: &Reloc<'_>, raw: &[u8], raw_start: u32, from: u32, out: &mut [u8]) {
    let s = Sites {
        v: View {
            bytes: raw,
            start: raw_start,
            base_len: reloc.base_len,
        },
        r: reloc,
    };
    let to = from as i64 + out.len() as i64;
    for (k, o) in out.iter_mut().enumerate() {
        let at = from as i64 + k as i64 - raw_start as i64;
        if at >= 0 && (at as usize) < raw.len() {
            *o = raw[at as usize];
        }
    }
    let from_i = from as i64;
    let mut w = from_i - from_i.rem_euclid(4);
    while w < to {
        if let Some(v) = s.word_site(w) {
            put(out, from, w, &v.to_le_bytes());
        }
        w += 4;
    }
    // A MOVW/MOVT pair or a branch starts with a halfword `11110…` (a cheap filter before the
    // full checks; a pair and a branch never start at the same halfword).
    let mut p = (from_i - MOV_REACH - 2) & !1;
    while p < to {
        if s.v.byte(p + 1).is_some_and(|b| b & 0xF8 == 0xF0) {
            if let Some((q, h)) = s.mov_site(p) {
                let b = halfwords(&h);
                put(out, from, p, &b[..4]);
                put(out, from, q, &b[4..]);
            } else if p + 4 > from_i {
                if let Some(h) = s.branch_site(p) {
                    put(out, from, p, &halfwords(&h)[..4]);
                }
            }
        }
        p += 2;
    }
}

/// The whole base image normalised (host side).
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub fn normalise_all(reloc: &Reloc<'_>, base: &[u8]) -> std::vec::Vec<u8> {
    let mut out = base.to_vec();
    normalise(reloc, base, 0, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SplitMix64;
    use std::vec::Vec;

    #[test]
    fn branch_encoding_round_trips() {
        for off in [-(1 << 24), -4096, -4, 0, 2, 4, 1000, (1 << 24) - 2] {
            let (a, b) = branch_with_offset(0xF000, 0xF800, off).unwrap();
            assert_eq!(is_branch(a, b), (-NEAR..NEAR).contains(&off), "{off}");
            assert_eq!(branch_offset(a, b), off, "{off}");
            let (a, b) = branch_with_offset(0xF000, 0x9000, off).unwrap();
            assert_eq!(b & 0x4000, 0, "B.W stays B.W");
            assert_eq!(branch_offset(a, b), off);
        }
        assert_eq!(branch_with_offset(0xF000, 0xF800, 1 << 24), None);
        assert_eq!(branch_with_offset(0xF000, 0xF800, 3), None);
        // A known encoding: `bl` +0x1000 from GNU as: f001 f800.
        assert_eq!(branch_offset(0xF001, 0xF800), 0x1000);
    }

    #[test]
    fn mov_immediates_round_trip() {
        for imm in [0u16, 1, 0x0800, 0x2101, 0x2111, 0xFFFF, 0x1234] {
            let (a, b) = mov_with_imm(MOVW, 0x0300, imm);
            assert_eq!(mov_imm(a, b), imm);
            assert_eq!((b >> 8) & 0xF, 3, "Rd kept");
        }
    }

    /// A base with every kind of site, normalised whole and in blocks of every size and start:
    /// the same bytes.
    #[test]
    fn blocks_equal_the_whole_image() {
        let mut rng = SplitMix64(3);
        let base_address = 0x2101_0000u32;
        let mut base: Vec<u8> = (0..3000).map(|_| rng.next_u64() as u8).collect();
        let len = base.len() as u32;
        for i in 0..200 {
            let at = ((rng.next_u64() % (len as u64 - 8)) & !1) as usize;
            match i % 3 {
                0 => {
                    let at = at & !3;
                    let v = base_address + (rng.next_u64() % len as u64) as u32;
                    base[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                1 => {
                    let v = base_address + (rng.next_u64() % len as u64) as u32;
                    let (a, b) = mov_with_imm(MOVW, 0x0500, v as u16);
                    let (c, d) = mov_with_imm(MOVT, 0x0500, (v >> 16) as u16);
                    let gap = 2 * (rng.next_u64() % 8) as usize;
                    let at = at.min(len as usize - 8 - gap);
                    let h = halfwords(&[a, b, c, d]);
                    base[at..at + 4].copy_from_slice(&h[..4]);
                    base[at + 4 + gap..at + 8 + gap].copy_from_slice(&h[4..]);
                }
                _ => {
                    let off = (rng.next_u64() % 2000) as i32 * 2 - 1000;
                    let (a, b) = branch_with_offset(0xF000, 0xF800, off).unwrap();
                    base[at..at + 4].copy_from_slice(&halfwords(&[a, b])[..4]);
                }
            }
        }
        let map = [
            Segment { src: 0, shift: 0 },
            Segment {
                src: 700,
                shift: 24,
            },
            Segment {
                src: 1500,
                shift: -8,
            },
            Segment {
                src: 2600,
                shift: 400,
            },
        ];
        let reloc = Reloc {
            base_address,
            base_len: len,
            target_address: 0x2111_0000,
            map: &map,
        };
        let whole = normalise_all(&reloc, &base);
        assert_ne!(whole, base);
        for _ in 0..400 {
            let from = (rng.next_u64() % len as u64) as u32;
            let n = 1 + (rng.next_u64() % 300) as u32;
            let to = (from + n).min(len);
            let rs = from.saturating_sub(MARGIN);
            let re = (to + MARGIN).min(len);
            let mut out = std::vec![0u8; (to - from) as usize];
            normalise(&reloc, &base[rs as usize..re as usize], rs, from, &mut out);
            assert_eq!(out, whole[from as usize..to as usize], "block {from}..{to}");
        }
    }

    #[test]
    fn words_move_to_the_other_bank_through_the_map() {
        let base_address = 0x0800_0000u32;
        let mut base = std::vec![0u8; 64];
        base[8..12].copy_from_slice(&(base_address + 40).to_le_bytes());
        base[12..16].copy_from_slice(&(base_address + 4).to_le_bytes());
        base[16..20].copy_from_slice(&0x2000_0000u32.to_le_bytes()); // RAM: kept
        let map = [Segment { src: 32, shift: 16 }];
        let reloc = Reloc {
            base_address,
            base_len: 64,
            target_address: 0x0810_0000,
            map: &map,
        };
        let n = normalise_all(&reloc, &base);
        assert_eq!(&n[8..12], &(0x0810_0000u32 + 56).to_le_bytes());
        assert_eq!(&n[12..16], &(0x0810_0000u32 + 4).to_le_bytes());
        assert_eq!(&n[16..20], &0x2000_0000u32.to_le_bytes());
    }
}
