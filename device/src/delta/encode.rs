//! The patch encoder (host side, `std`): normalise the base, find what the target copies from
//! it, derive the segment map, iterate, compress.
//!
//! ```text
//!  base ─ normalise(map) ─► base' ─┐ suffix array of base'; for each target position the
//!  target[32..hashed_len] ─────────┴ longest match, extended bsdiff-style (approximate
//!                                    matches, where most bytes agree) ─► regions
//!  regions ─► ops: SEEK to the region, COPY the runs where target = base', ADD the rest,
//!             INSERT what no region covers
//!  regions ─► segment map (target offset − base offset of the long regions) ─► next pass
//!  the smallest body of the passes wins
//! ```
//!
//! The diff follows the idea of Colin Percival's bsdiff (approximate matches with byte
//! differences), written here from the algorithm; the normalisation plays the role of
//! Courgette's address labels in a form a microcontroller can apply block by block.

extern crate std;

use super::format::{PatchHeader, PATCH_HEADER_SIZE};
use super::lz::{compress, LzDecoder, DEFAULT_WINDOW_BITS};
use super::normalise::{normalise_all, Reloc, Segment};
use super::ops::{encode_ops, Op, MAX_SEGMENTS};
use super::{apply_to_slice, Corruption, DeltaError, PatchFile};
use crate::image::{ImageError, Manifest, HEADER_SIZE};
use core::fmt;
use std::vec;
use std::vec::Vec;

/// How the base is normalised before diffing (the patch header records it; the device does
/// the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalisation {
    /// None: the base as it is (for comparison only: every address differs).
    Off,
    /// Words and MOVW/MOVT pairs moved to the other bank, no segment map.
    Rebase,
    /// Rebase plus the segment map, refined over a few passes (the default).
    Map,
}

/// Encoder options.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// LZ window bits (8..=11; the device decodes up to [`super::lz::MAX_WINDOW_BITS`]).
    pub window_bits: u8,
    /// Normalisation.
    pub normalisation: Normalisation,
    /// Passes of map refinement (with [`Normalisation::Map`]).
    pub passes: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            window_bits: DEFAULT_WINDOW_BITS,
            normalisation: Normalisation::Map,
            passes: 4,
        }
    }
}

/// Why a patch could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The base is not a complete signed image.
    Base(ImageError),
    /// The target is not a complete signed image.
    Target(ImageError),
    /// An image is larger than the format counts (4 GiB), or a TLV area too large.
    TooLarge,
    /// The patch does not rebuild the target (a bug: the encoder checks its output).
    SelfCheck(DeltaError),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Base(e) => write!(f, "base image: {e}"),
            EncodeError::Target(e) => write!(f, "target image: {e}"),
            EncodeError::TooLarge => f.write_str("image or TLV area too large for a patch"),
            EncodeError::SelfCheck(e) => {
                write!(
                    f,
                    "internal error: the patch does not rebuild the target: {e}"
                )
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Suffix array of `s` (prefix doubling, O(n log² n)).
fn suffix_array(s: &[u8]) -> Vec<u32> {
    let n = s.len();
    let mut sa: Vec<u32> = (0..n as u32).collect();
    let mut rank: Vec<u32> = s.iter().map(|&b| b as u32).collect();
    let mut tmp = vec![0u32; n];
    let mut k = 1usize;
    if n < 2 {
        return sa;
    }
    loop {
        let key = |i: u32| {
            let i = i as usize;
            (rank[i], if i + k < n { rank[i + k] as i64 } else { -1 })
        };
        sa.sort_unstable_by_key(|&i| key(i));
        tmp[sa[0] as usize] = 0;
        for j in 1..n {
            let bump = (key(sa[j - 1]) != key(sa[j])) as u32;
            tmp[sa[j] as usize] = tmp[sa[j - 1] as usize] + bump;
        }
        core::mem::swap(&mut rank, &mut tmp);
        if rank[sa[n - 1] as usize] as usize == n - 1 || k >= n {
            break;
        }
        k *= 2;
    }
    sa
}

fn common(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The longest prefix of `t` found in `s`: (position, length).
fn search(sa: &[u32], s: &[u8], t: &[u8]) -> (usize, usize) {
    if sa.is_empty() {
        return (0, 0);
    }
    let (mut lo, mut hi) = (0usize, sa.len() - 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if s[sa[mid] as usize..] < *t {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (a, b) = (sa[lo] as usize, sa[hi] as usize);
    let (la, lb) = (common(&s[a..], t), common(&s[b..], t));
    if la >= lb {
        (a, la)
    } else {
        (b, lb)
    }
}

/// A stretch of the target taken from the base with differences (`len` bytes from `src`),
/// followed by `extra` bytes inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    tgt: usize,
    src: usize,
    len: usize,
    extra: usize,
}

/// Approximate-match regions of `t` against `s` (the bsdiff scan).
fn regions(s: &[u8], t: &[u8]) -> Vec<Region> {
    /// How much better than the current alignment a new match must be.
    const BETTER_BY: usize = 8;
    let sa = suffix_array(s);
    let (n, m) = (t.len(), s.len());
    let at = |off: isize, i: usize| -> Option<u8> {
        let j = i as isize + off;
        (j >= 0 && (j as usize) < m).then(|| s[j as usize])
    };
    let mut out = Vec::new();
    let (mut scan, mut len, mut pos) = (0usize, 0usize, 0usize);
    let (mut last_scan, mut last_pos, mut last_off) = (0usize, 0usize, 0isize);
    while scan < n {
        let mut old_score = 0usize;
        scan += len;
        let mut scsc = scan;
        while scan < n {
            (pos, len) = search(&sa, s, &t[scan..]);
            while scsc < scan + len {
                if at(last_off, scsc) == Some(t[scsc]) {
                    old_score += 1;
                }
                scsc += 1;
            }
            if (len == old_score && len != 0) || len > old_score + BETTER_BY {
                break;
            }
            if at(last_off, scan) == Some(t[scan]) {
                old_score = old_score.saturating_sub(1);
            }
            scan += 1;
        }
        if len != old_score || scan == n {
            // Extend the previous alignment forward while more than half the bytes agree.
            let (mut sc, mut best, mut lenf) = (0isize, 0isize, 0usize);
            let mut i = 0usize;
            while last_scan + i < scan && last_pos + i < m {
                if s[last_pos + i] == t[last_scan + i] {
                    sc += 1;
                }
                i += 1;
                if sc * 2 - i as isize > best * 2 - lenf as isize {
                    best = sc;
                    lenf = i;
                }
            }
            // Extend the new match backward likewise.
            let mut lenb = 0usize;
            if scan < n {
                let (mut sc, mut best) = (0isize, 0isize);
                let mut i = 1usize;
                while scan >= last_scan + i && pos >= i {
                    if s[pos - i] == t[scan - i] {
                        sc += 1;
                    }
                    if sc * 2 - i as isize > best * 2 - lenb as isize {
                        best = sc;
                        lenb = i;
                    }
                    i += 1;
                }
            }
            // Split an overlap where it costs least.
            if last_scan + lenf > scan - lenb {
                let overlap = (last_scan + lenf) - (scan - lenb);
                let (mut sc, mut best, mut cut) = (0isize, 0isize, 0usize);
                for i in 0..overlap {
                    if t[last_scan + lenf - overlap + i] == s[last_pos + lenf - overlap + i] {
                        sc += 1;
                    }
                    if t[scan - lenb + i] == s[pos - lenb + i] {
                        sc -= 1;
                    }
                    if sc > best {
                        best = sc;
                        cut = i + 1;
                    }
                }
                lenf = lenf + cut - overlap;
                lenb -= cut;
            }
            out.push(Region {
                tgt: last_scan,
                src: last_pos,
                len: lenf,
                extra: (scan - lenb) - (last_scan + lenf),
            });
            last_scan = scan - lenb;
            last_pos = pos - lenb;
            last_off = pos as isize - scan as isize;
        }
    }
    out
}

/// Zero differences shorter than this inside an ADD stay in it (a COPY + ADD costs more).
const ZERO_GAP: usize = 3;

/// The ops that rebuild `t` from `s` along `regions`.
fn ops_of(s: &[u8], t: &[u8], regions: &[Region]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut cursor = 0usize;
    for r in regions {
        if r.len > 0 {
            if r.src != cursor {
                ops.push(Op::Seek((r.src as i64 - cursor as i64) as i32));
            }
            let d: Vec<u8> = (0..r.len)
                .map(|i| t[r.tgt + i].wrapping_sub(s[r.src + i]))
                .collect();
            let mut i = 0;
            while i < d.len() {
                let z = d[i..].iter().take_while(|&&x| x == 0).count();
                if z > 0 && (z >= ZERO_GAP || i + z == d.len()) {
                    ops.push(Op::Copy(z as u32));
                    i += z;
                    continue;
                }
                // A difference run: until ZERO_GAP zeros in a row (or the end).
                let start = i;
                let mut zeros = 0;
                while i < d.len() {
                    if d[i] == 0 {
                        zeros += 1;
                        if zeros >= ZERO_GAP {
                            break;
                        }
                    } else {
                        zeros = 0;
                    }
                    i += 1;
                }
                let end = if i < d.len() {
                    i + 1 - zeros
                } else {
                    i - zeros
                };
                let end = end.max(start + 1);
                ops.push(Op::Add(d[start..end].to_vec()));
                i = end;
            }
            cursor = r.src + r.len;
        }
        if r.extra > 0 {
            let from = r.tgt + r.len;
            ops.push(Op::Insert(t[from..from + r.extra].to_vec()));
        }
    }
    ops
}

/// Regions at least this long define the segment map.
const MAP_MIN_REGION: usize = 64;

/// The segment map of `regions` (target offsets counted from `tgt_base`): the shifts of the
/// longest regions, by base offset, equal neighbours merged, at most [`MAX_SEGMENTS`].
fn map_of(regions: &[Region], tgt_base: usize) -> Vec<Segment> {
    let mut long: Vec<&Region> = regions.iter().filter(|r| r.len >= MAP_MIN_REGION).collect();
    long.sort_by_key(|r| core::cmp::Reverse(r.len));
    // The regions chosen so far (unmerged: a later, shorter region may fall between two with
    // the same shift), and their merged map.
    let mut chosen: Vec<Segment> = Vec::new();
    let mut segs: Vec<Segment> = Vec::new();
    for r in long {
        let shift = (r.tgt + tgt_base) as i64 - r.src as i64;
        let Ok(shift) = i32::try_from(shift) else {
            continue;
        };
        let mut candidate = chosen.clone();
        candidate.push(Segment {
            src: r.src as u32,
            shift,
        });
        candidate.sort_by_key(|s| s.src);
        candidate.dedup_by_key(|s| s.src);
        let mut merged: Vec<Segment> = Vec::new();
        for s in &candidate {
            if merged.last().is_some_and(|p| p.shift == s.shift) {
                continue;
            }
            merged.push(*s);
        }
        if merged.first().is_some_and(|s| s.shift == 0) {
            // A leading zero shift is what "no segment" means.
            merged.remove(0);
        }
        if merged.len() > MAX_SEGMENTS {
            continue;
        }
        chosen = candidate;
        segs = merged;
    }
    segs
}

/// A made patch and how it was made.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The whole patch file.
    pub bytes: Vec<u8>,
    /// The op stream before compression (what the body decompresses to).
    pub op_stream: Vec<u8>,
    /// Segments in its map.
    pub segments: usize,
}

fn parts(image: &[u8]) -> Result<(Manifest, usize, usize), ImageError> {
    let m = Manifest::from_image(image)?;
    if image.len() != m.total_len as usize {
        return Err(ImageError::Truncated);
    }
    let hashed = m.header.hashed_len() as usize;
    let prot = m.header.tlv_offset() as usize;
    Ok((m, prot, hashed))
}

/// One encoding of `target` against `base` with `map`: (op stream, body).
fn encode_with(
    base: &[u8],
    reloc: &Reloc<'_>,
    normalise: bool,
    target_ops: &[u8],
    window_bits: u8,
) -> (Vec<u8>, Vec<u8>, Vec<Region>) {
    let norm = if normalise {
        normalise_all(reloc, base)
    } else {
        base.to_vec()
    };
    let regions = regions(&norm, target_ops);
    let ops = ops_of(&norm, target_ops, &regions);
    let stream = encode_ops(reloc.map, &ops);
    let body = compress(&stream, window_bits);
    (stream, body, regions)
}

/// Makes a patch that rebuilds `target` from `base` (both complete signed images), and checks
/// that it does.
pub fn make_patch(base: &[u8], target: &[u8], opts: &EncodeOptions) -> Result<Patch, EncodeError> {
    let (bm, _, _) = parts(base).map_err(EncodeError::Base)?;
    let (tm, prot_start, hashed) = parts(target).map_err(EncodeError::Target)?;
    let base_len = u32::try_from(base.len()).map_err(|_| EncodeError::TooLarge)?;
    let target_ops = &target[HEADER_SIZE..hashed];
    let normalise = opts.normalisation != Normalisation::Off;
    let window_bits = opts
        .window_bits
        .clamp(super::lz::MIN_WINDOW_BITS, super::lz::MAX_WINDOW_BITS);
    let mut map: Vec<Segment> = Vec::new();
    let passes = match opts.normalisation {
        Normalisation::Map => opts.passes.max(1) + 1,
        _ => 1,
    };
    let mut best: Option<(Vec<u8>, Vec<u8>, usize)> = None;
    for _ in 0..passes {
        let reloc = Reloc {
            base_address: bm.header.load_addr,
            base_len,
            target_address: tm.header.load_addr,
            map: &map,
        };
        let (stream, body, regions) = encode_with(base, &reloc, normalise, target_ops, window_bits);
        if best.as_ref().is_none_or(|(b, _, _)| body.len() < b.len()) {
            best = Some((body, stream, map.len()));
        }
        let next = map_of(&regions, HEADER_SIZE);
        if next == map {
            break;
        }
        map = next;
    }
    let (body, op_stream, segments) = best.ok_or(EncodeError::TooLarge)?;
    let protected = &target[prot_start..hashed];
    let tlvs = &target[hashed..];
    let header = PatchHeader {
        window_bits,
        raw: !normalise,
        base_digest: bm.digest,
        base_size: base_len,
        base_address: bm.header.load_addr,
        body_len: u32::try_from(body.len()).map_err(|_| EncodeError::TooLarge)?,
        body_crc: !super::apply::crc32c_update(super::apply::CRC_INIT, &body),
        protected_len: u16::try_from(protected.len()).map_err(|_| EncodeError::TooLarge)?,
        tlvs_len: u16::try_from(tlvs.len()).map_err(|_| EncodeError::TooLarge)?,
    };
    let mut bytes = Vec::with_capacity(PATCH_HEADER_SIZE + 32 + target.len() / 4);
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(&tm.header_bytes);
    bytes.extend_from_slice(protected);
    bytes.extend_from_slice(tlvs);
    bytes.extend_from_slice(&body);
    let mut check = vec![0u8; target.len()];
    let n = apply_to_slice(base, &bytes, &mut check).map_err(EncodeError::SelfCheck)?;
    if n != target.len() || check != target {
        return Err(EncodeError::SelfCheck(DeltaError::Corrupt(
            Corruption::OutputShort,
        )));
    }
    Ok(Patch {
        bytes,
        op_stream,
        segments,
    })
}

/// What a patch holds, read without its base (for `twinbank inspect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The fixed header.
    pub header: PatchHeader,
    /// The target's manifest.
    pub target: Manifest,
    /// Bytes of the op stream.
    pub op_stream_len: usize,
    /// Segments in the map.
    pub segments: usize,
    /// COPY ops and the bytes they copy.
    pub copies: (usize, u64),
    /// ADD ops and their bytes.
    pub adds: (usize, u64),
    /// INSERT ops and their bytes.
    pub inserts: (usize, u64),
    /// SEEK ops.
    pub seeks: usize,
}

/// Reads a patch: header, target manifest, and the op stream (decompressed and walked; the
/// CRC checked).
pub fn summarise(patch: &[u8]) -> Result<Summary, DeltaError> {
    use super::ops::{unzigzag, LONG_LEN, OP_END, OP_SEEK};
    let p = PatchFile::parse(patch)?;
    let target = Manifest::from_parts(p.target_header, p.protected_tlvs, p.tlvs)
        .map_err(|e| DeltaError::Update(crate::UpdateError::Image(e)))?;
    if !super::apply::crc32c_update(super::apply::CRC_INIT, p.body) != p.header.body_crc {
        return Err(Corruption::Crc.into());
    }
    let mut lz = LzDecoder::new();
    lz.reset(p.header.window_bits);
    let mut stream = Vec::new();
    let limit = 64 * patch.len() + (1 << 24);
    for &b in p.body {
        lz.push(b, &mut |x| {
            if stream.len() >= limit {
                return Err(Corruption::OutputOverrun);
            }
            stream.push(x);
            Ok(())
        })?;
    }
    if !lz.at_token() {
        return Err(Corruption::Truncated.into());
    }
    let mut i = 0usize;
    let varint = |i: &mut usize| -> Result<u32, DeltaError> {
        let (mut acc, mut shift) = (0u32, 0u8);
        loop {
            let b = *stream.get(*i).ok_or(Corruption::Truncated)?;
            *i += 1;
            acc = super::lz::varint_step(acc, shift, b)?;
            if b & 0x80 == 0 {
                return Ok(acc);
            }
            shift += 7;
        }
    };
    let segments = varint(&mut i)? as usize;
    if segments > MAX_SEGMENTS {
        return Err(Corruption::BadMap.into());
    }
    for _ in 0..segments {
        varint(&mut i)?;
        unzigzag(varint(&mut i)?);
    }
    let mut s = Summary {
        header: p.header,
        target,
        op_stream_len: 0,
        segments,
        copies: (0, 0),
        adds: (0, 0),
        inserts: (0, 0),
        seeks: 0,
    };
    loop {
        let tag = *stream.get(i).ok_or(Corruption::Truncated)?;
        i += 1;
        match tag {
            OP_END => break,
            OP_SEEK => {
                varint(&mut i)?;
                s.seeks += 1;
            }
            t if t >= 0xC0 => return Err(Corruption::BadOp(t).into()),
            t => {
                let n = match t & 0x3F {
                    0 => varint(&mut i)?
                        .checked_add(LONG_LEN)
                        .ok_or(Corruption::Varint)?,
                    n => n as u32,
                };
                let slot = match t & 0xC0 {
                    0x00 => &mut s.copies,
                    0x40 => &mut s.adds,
                    _ => &mut s.inserts,
                };
                slot.0 += 1;
                slot.1 += n as u64;
                if t & 0xC0 != 0x00 {
                    i = i.checked_add(n as usize).ok_or(Corruption::Truncated)?;
                }
            }
        }
    }
    if i != stream.len() {
        return Err(Corruption::TrailingData.into());
    }
    s.op_stream_len = stream.len();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_array_is_sorted() {
        let mut rng = crate::testing::SplitMix64(1);
        let mut s: Vec<u8> = (0..3000).map(|_| (rng.next_u64() % 3) as u8).collect();
        s.extend(core::iter::repeat_n(0xFF, 2000));
        let sa = suffix_array(&s);
        assert_eq!(sa.len(), s.len());
        for w in sa.windows(2) {
            assert!(s[w[0] as usize..] < s[w[1] as usize..]);
        }
    }

    #[test]
    fn search_finds_the_longest_match() {
        let s = b"the quick brown fox jumps over the lazy dog";
        let sa = suffix_array(s);
        assert_eq!(search(&sa, s, b"the lazy cat"), (31, 9));
        assert_eq!(search(&sa, s, b"###").1, 0);
    }
}
