//! A strict NOR flash for tests (`std` only).
//!
//! It enforces what real NOR (with ECC) allows and nothing more:
//! - reads, writes and erases must be aligned and in range;
//! - erase works on whole sectors and sets bytes to 0xFF;
//! - each write unit is programmed at most once between erases, whatever the data — a second
//!   program of a unit is a violation even if it would only clear bits or write 0xFF;
//! - programming only clears bits (a write is AND-ed into the cell contents).
//!
//! A violation panics by default (so a test cannot swallow it), or is returned as an error and
//! recorded. It counts reads, writes, erases (per sector) and bytes programmed, and can cut power
//! at flash operation N (operations = writes and erases) with one of the [`CutModel`]s; after the
//! cut every operation fails until [`StrictFlash::power_on`].
//!
//! Built on it: [`invariants`] (what every step of a device must keep, checked once for all the
//! randomised tests and fuzz targets), [`device`] (a device driven through its serial protocol
//! with those checks after every frame) and [`fuzz`] (the fuzz harnesses and their seeds).

extern crate std;

pub mod device;
pub mod fuzz;
pub mod invariants;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use std::vec;
use std::vec::Vec;

/// Errors of the strict flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StrictError {
    /// Misaligned access.
    NotAligned,
    /// Access beyond the end.
    OutOfBounds,
    /// A write unit programmed twice without an erase.
    ProgramTwice {
        /// Offset of the unit.
        offset: u32,
    },
    /// Power was cut at this operation (or earlier and not restored).
    PowerCut,
}

impl core::fmt::Display for StrictError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StrictError::NotAligned => f.write_str("flash access not aligned"),
            StrictError::OutOfBounds => f.write_str("flash access out of bounds"),
            StrictError::ProgramTwice { offset } => {
                write!(
                    f,
                    "write unit at {offset:#x} programmed twice without an erase"
                )
            }
            StrictError::PowerCut => f.write_str("power cut"),
        }
    }
}

impl std::error::Error for StrictError {}

impl NorFlashError for StrictError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            StrictError::NotAligned => NorFlashErrorKind::NotAligned,
            StrictError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// What a power cut leaves of the operation it interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutModel {
    /// The operation did not start (cut between operations).
    Before,
    /// A write: its first `units` write units are programmed, the rest not.
    WritePrefix {
        /// Whole units programmed.
        units: usize,
    },
    /// A write: `units` whole units programmed, then a random subset of the 1→0 transitions of
    /// the next unit (chosen by `seed`).
    WriteBits {
        /// Whole units programmed before the torn one.
        units: usize,
        /// Seed of the subset.
        seed: u64,
    },
    /// An erase: each bit of the sector that is 0 becomes 1 or stays, at random (a partly erased
    /// sector).
    ErasePartial {
        /// Seed.
        seed: u64,
    },
    /// An erase: the sector holds random garbage.
    EraseGarbage {
        /// Seed.
        seed: u64,
    },
}

/// A small deterministic PRNG (SplitMix64), so cuts replay exactly from their seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// How violations are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnViolation {
    /// Panic at once (default).
    Panic,
    /// Return an error and record it in [`StrictFlash::violations`].
    Error,
}

/// Operation counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Read calls.
    pub reads: u64,
    /// Write calls.
    pub writes: u64,
    /// Sector erases.
    pub erases: u64,
    /// Bytes programmed.
    pub bytes_written: u64,
    /// Erases per sector.
    pub erases_per_sector: Vec<u32>,
}

/// The strict flash; `W` = write size, `E` = erase size.
#[derive(Debug, Clone)]
pub struct StrictFlash<const W: usize, const E: usize> {
    data: Vec<u8>,
    programmed: Vec<bool>,
    /// Counters since creation (or the last [`StrictFlash::reset_counters`]).
    pub counters: Counters,
    /// Violations recorded in [`OnViolation::Error`] mode.
    pub violations: Vec<StrictError>,
    on_violation: OnViolation,
    ops: u64,
    cut: Option<(u64, CutModel)>,
    powered: bool,
    /// Non-uniform sectors: `(start, size)` of every sector of the map, lowest first.
    map: Option<Vec<(usize, usize)>>,
}

impl<const W: usize, const E: usize> StrictFlash<W, E> {
    /// An erased flash of `size` bytes (a multiple of `E`).
    pub fn new(size: usize) -> Self {
        assert!(
            size.is_multiple_of(E) && E.is_multiple_of(W),
            "bad strict flash geometry"
        );
        StrictFlash {
            data: vec![0xFF; size],
            programmed: vec![false; size / W],
            counters: Counters {
                erases_per_sector: vec![0; size / E],
                ..Counters::default()
            },
            violations: Vec::new(),
            on_violation: OnViolation::Panic,
            ops: 0,
            cut: None,
            powered: true,
            map: None,
        }
    }

    /// The same flash with the non-uniform sectors of `map` (which must cover it exactly): an
    /// erase must then start and end on sector boundaries of the map (else
    /// [`StrictError::NotAligned`]), erases whole sectors of the map, and counts erases per map
    /// sector. `E` stays what the driver reports as `ERASE_SIZE` (see
    /// [`Layout::check_flash`](crate::Layout::check_flash)).
    pub fn with_sector_map(mut self, map: &crate::layout::SectorMap) -> Self {
        let mut sectors = Vec::new();
        let mut start = 0usize;
        for run in map.runs() {
            for _ in 0..run.count {
                sectors.push((start, run.size as usize));
                start += run.size as usize;
            }
        }
        assert_eq!(
            start,
            self.data.len(),
            "sector map does not cover the strict flash"
        );
        self.counters.erases_per_sector = vec![0; sectors.len()];
        self.map = Some(sectors);
        self
    }

    /// The sectors of the flash: `(start, size)`, lowest first (the map's, or uniform `E`).
    pub fn sectors(&self) -> Vec<(usize, usize)> {
        match &self.map {
            Some(m) => m.clone(),
            None => (0..self.data.len() / E).map(|s| (s * E, E)).collect(),
        }
    }

    /// A flash holding `contents` (e.g. a factory image), every non-erased unit counted as
    /// programmed.
    pub fn from_bytes(contents: &[u8]) -> Self {
        let mut f = Self::new(contents.len());
        f.data.copy_from_slice(contents);
        for (u, chunk) in f.data.chunks(W).enumerate() {
            f.programmed[u] = chunk.iter().any(|&b| b != 0xFF);
        }
        f
    }

    /// Chooses how violations are reported.
    pub fn set_on_violation(&mut self, mode: OnViolation) {
        self.on_violation = mode;
    }

    /// The raw contents.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Mutable raw contents, for tests that tamper with flash behind the driver's back.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Writes `bytes` at `offset` as a programmer would (marks units programmed; no checks).
    pub fn load(&mut self, offset: usize, bytes: &[u8]) {
        self.data[offset..offset + bytes.len()].copy_from_slice(bytes);
        for u in offset / W..(offset + bytes.len()).div_ceil(W) {
            self.programmed[u] = true;
        }
    }

    /// Operations (writes + erases) performed so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Cuts power when operation number `op` (0-based, counted from now on) starts.
    pub fn cut_at(&mut self, op: u64, model: CutModel) {
        self.cut = Some((self.ops.saturating_add(op), model));
    }

    /// Removes a scheduled cut.
    pub fn clear_cut(&mut self) {
        self.cut = None;
    }

    /// True when power was cut and not restored.
    pub fn is_cut(&self) -> bool {
        !self.powered
    }

    /// Restores power (the device restarts with whatever the flash holds).
    pub fn power_on(&mut self) {
        self.powered = true;
        self.cut = None;
    }

    /// Resets the counters.
    pub fn reset_counters(&mut self) {
        let sectors = self.map.as_ref().map_or(self.data.len() / E, Vec::len);
        self.counters = Counters {
            erases_per_sector: vec![0; sectors],
            ..Counters::default()
        };
    }

    fn violation(&mut self, e: StrictError) -> StrictError {
        match self.on_violation {
            OnViolation::Panic => panic!("NOR flash violation: {e:?}"),
            OnViolation::Error => {
                self.violations.push(e);
                e
            }
        }
    }

    /// Returns the cut model if this operation is the one to cut.
    fn start_op(&mut self) -> Result<Option<CutModel>, StrictError> {
        if !self.powered {
            return Err(StrictError::PowerCut);
        }
        let this = self.ops;
        self.ops += 1;
        match self.cut {
            Some((at, model)) if at == this => {
                self.powered = false;
                Ok(Some(model))
            }
            _ => Ok(None),
        }
    }

    fn check_range(&mut self, offset: u32, len: usize, align: usize) -> Result<usize, StrictError> {
        let off = offset as usize;
        if !off.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(self.violation(StrictError::NotAligned));
        }
        if off.checked_add(len).is_none_or(|e| e > self.data.len()) {
            return Err(self.violation(StrictError::OutOfBounds));
        }
        Ok(off)
    }
}

impl<const W: usize, const E: usize> ErrorType for StrictFlash<W, E> {
    type Error = StrictError;
}

impl<const W: usize, const E: usize> ReadNorFlash for StrictFlash<W, E> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let off = self.check_range(offset, bytes.len(), 1)?;
        self.counters.reads += 1;
        bytes.copy_from_slice(&self.data[off..off + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const W: usize, const E: usize> NorFlash for StrictFlash<W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if to < from {
            return Err(self.violation(StrictError::OutOfBounds));
        }
        let align = if self.map.is_some() { 1 } else { E };
        let off = self.check_range(from, (to - from) as usize, align)?;
        let end = to as usize;
        // (index, start, size) of every sector erased.
        let sectors: Vec<(usize, usize, usize)> = match &self.map {
            None => (off / E..end / E).map(|s| (s, s * E, E)).collect(),
            Some(m) => {
                let inside: Vec<(usize, usize, usize)> = m
                    .iter()
                    .enumerate()
                    .filter(|(_, &(s, _))| s >= off && s < end)
                    .map(|(i, &(s, n))| (i, s, n))
                    .collect();
                let whole = match (inside.first(), inside.last()) {
                    (Some(&(_, first, _)), Some(&(_, last, n))) => first == off && last + n == end,
                    _ => off == end && m.iter().any(|&(s, n)| s == off || s + n == off),
                };
                if !whole {
                    return Err(self.violation(StrictError::NotAligned));
                }
                inside
            }
        };
        let cut = self.start_op()?;
        match cut {
            None => {
                for &(index, start, size) in &sectors {
                    self.data[start..start + size].fill(0xFF);
                    self.programmed[start / W..(start + size) / W].fill(false);
                    self.counters.erases += 1;
                    self.counters.erases_per_sector[index] += 1;
                }
                Ok(())
            }
            Some(model) => {
                // The cut hits the first sector of the range.
                let first = sectors.first().map_or(0, |&(_, _, size)| size);
                let sector = &mut self.data[off..off + first];
                match model {
                    CutModel::ErasePartial { seed } => {
                        let mut rng = SplitMix64(seed);
                        for b in sector.iter_mut() {
                            *b |= rng.next_u64() as u8;
                        }
                    }
                    CutModel::EraseGarbage { seed } => {
                        let mut rng = SplitMix64(seed);
                        for b in sector.iter_mut() {
                            *b = rng.next_u64() as u8;
                        }
                    }
                    _ => {}
                }
                // Whatever the sector holds now, its units count as programmed: nothing may
                // be written there before the next complete erase.
                if !matches!(model, CutModel::Before) {
                    for u in off / W..(off + first) / W {
                        self.programmed[u] =
                            self.data[u * W..(u + 1) * W].iter().any(|&b| b != 0xFF);
                    }
                }
                Err(StrictError::PowerCut)
            }
        }
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let off = self.check_range(offset, bytes.len(), W)?;
        for u in off / W..(off + bytes.len()) / W {
            if self.programmed[u] {
                return Err(self.violation(StrictError::ProgramTwice {
                    offset: (u * W) as u32,
                }));
            }
        }
        let cut = self.start_op()?;
        let units = bytes.len() / W;
        let (full, torn) = match cut {
            None => (units, None),
            Some(CutModel::WritePrefix { units: n }) => (n.min(units), None),
            Some(CutModel::WriteBits { units: n, seed }) => (n.min(units), Some(seed)),
            Some(_) => (0, None),
        };
        for u in 0..full {
            let unit = off / W + u;
            for i in 0..W {
                self.data[unit * W + i] &= bytes[u * W + i];
            }
            self.programmed[unit] = true;
        }
        if let (Some(seed), true) = (torn, full < units) {
            let unit = off / W + full;
            let mut rng = SplitMix64(seed);
            let mut changed = false;
            for i in 0..W {
                let clear = !bytes[full * W + i] & self.data[unit * W + i];
                let applied = clear & rng.next_u64() as u8;
                self.data[unit * W + i] &= !applied;
                changed |= applied != 0;
            }
            self.programmed[unit] = changed;
        }
        if cut.is_some() {
            return Err(StrictError::PowerCut);
        }
        self.counters.writes += 1;
        self.counters.bytes_written += bytes.len() as u64;
        Ok(())
    }
}

/// Work to run on a [`StrictFlash`] whose geometry is only known at run time (a board
/// description's): see [`with_geometry`].
pub trait GeometryVisitor {
    /// What the work returns.
    type Output;
    /// Runs on a strict flash with write size `W` and erase size `E`.
    fn visit<const W: usize, const E: usize>(self, flash: StrictFlash<W, E>) -> Self::Output;
}

/// Runs `visitor` on a [`StrictFlash`] holding `contents` with the given write and erase size
/// (the [`NorFlash`] constants a driver of that geometry has), so that a tool reading the geometry
/// from a board description drives the device crate through a flash that agrees with the layout
/// ([`crate::Layout::check_flash`]). `None` when the geometry is outside the supported ranges
/// ([`crate::layout::MIN_WRITE_SIZE`]..) or `contents` is not a whole number of sectors.
pub fn with_geometry<V: GeometryVisitor>(
    write_size: u32,
    erase_size: u32,
    contents: &[u8],
    visitor: V,
) -> Option<V::Output> {
    with_sectors(write_size, erase_size, None, contents, visitor)
}

/// [`with_geometry`] for the flash `layout` describes: its write size, its erase size and, on a
/// layout with a [`SectorMap`](crate::layout::SectorMap), the map (the strict flash then refuses
/// an erase that is not whole sectors of the map, [`StrictFlash::with_sector_map`]). `None` when
/// `contents` is not the layout's flash size.
pub fn with_layout<V: GeometryVisitor>(
    layout: &crate::Layout,
    contents: &[u8],
    visitor: V,
) -> Option<V::Output> {
    if contents.len() != layout.flash_size() as usize {
        return None;
    }
    with_sectors(
        layout.write_size(),
        layout.erase_size(),
        layout.sector_map().copied(),
        contents,
        visitor,
    )
}

fn with_sectors<V: GeometryVisitor>(
    write_size: u32,
    erase_size: u32,
    map: Option<crate::layout::SectorMap>,
    contents: &[u8],
    visitor: V,
) -> Option<V::Output> {
    type Map = Option<crate::layout::SectorMap>;
    fn by_erase<const W: usize, V: GeometryVisitor>(
        erase_size: u32,
        map: Map,
        contents: &[u8],
        v: V,
    ) -> Option<V::Output> {
        fn run<const W: usize, const E: usize, V: GeometryVisitor>(
            map: Map,
            contents: &[u8],
            v: V,
        ) -> Option<V::Output> {
            if !contents.len().is_multiple_of(E) {
                return None;
            }
            let flash = StrictFlash::<W, E>::from_bytes(contents);
            match map {
                None => Some(v.visit(flash)),
                Some(m) if m.size() as usize == contents.len() => {
                    Some(v.visit(flash.with_sector_map(&m)))
                }
                Some(_) => None,
            }
        }
        const K: usize = 1024;
        match erase_size as usize {
            K => run::<W, K, V>(map, contents, v),
            0x800 => run::<W, 0x800, V>(map, contents, v),
            0x1000 => run::<W, 0x1000, V>(map, contents, v),
            0x2000 => run::<W, 0x2000, V>(map, contents, v),
            0x4000 => run::<W, 0x4000, V>(map, contents, v),
            0x8000 => run::<W, 0x8000, V>(map, contents, v),
            0x1_0000 => run::<W, 0x1_0000, V>(map, contents, v),
            0x2_0000 => run::<W, 0x2_0000, V>(map, contents, v),
            _ => None,
        }
    }
    match write_size {
        1 => by_erase::<1, V>(erase_size, map, contents, visitor),
        2 => by_erase::<2, V>(erase_size, map, contents, visitor),
        4 => by_erase::<4, V>(erase_size, map, contents, visitor),
        8 => by_erase::<8, V>(erase_size, map, contents, visitor),
        16 => by_erase::<16, V>(erase_size, map, contents, visitor),
        32 => by_erase::<32, V>(erase_size, map, contents, visitor),
        _ => None,
    }
}

/// One piece of a synthetic function.
#[derive(Debug, Clone)]
enum Piece {
    /// Halfwords of ordinary code.
    Code(Vec<u16>),
    /// `BL` to the function with this index.
    Call(usize),
    /// `MOVW`/`MOVT` of the address of this constant, with this many halfwords in between.
    Load(usize, usize),
}

/// Synthetic firmware for the delta tests: a payload shaped like a Thumb-2 application linked at
/// `payload_address` (bank address + header size) — a vector table, functions that call each
/// other with `BL` and load constants with `MOVW`/`MOVT` pairs (adjacent or not), then
/// constants holding pointers to functions and constants. The same `seed` gives the same
/// program; `grow = Some((f, n))` makes function `f` `2 n` bytes longer, which moves everything
/// after it (what a one-function change does to a real image).
pub fn synthetic_firmware(
    payload_address: u32,
    seed: u64,
    grow: Option<(usize, usize)>,
) -> Vec<u8> {
    const FUNCTIONS: usize = 80;
    const CONSTANTS: usize = 60;
    const VECTORS: usize = 16;
    let mut rng = SplitMix64(seed);
    let mut functions: Vec<Vec<Piece>> = (0..FUNCTIONS)
        .map(|_| {
            let n = 4 + (rng.next_u64() % 20) as usize;
            (0..n)
                .map(|_| match rng.next_u64() % 6 {
                    0 => Piece::Call((rng.next_u64() % FUNCTIONS as u64) as usize),
                    1 => Piece::Load(
                        (rng.next_u64() % CONSTANTS as u64) as usize,
                        (rng.next_u64() % 4) as usize,
                    ),
                    _ => Piece::Code(
                        (0..1 + rng.next_u64() % 12)
                            // Ordinary 16-bit instructions (below 0xE800: never 32-bit).
                            .map(|_| (rng.next_u64() % 0xE800) as u16)
                            .collect(),
                    ),
                })
                .collect()
        })
        .collect();
    let constants: Vec<Vec<(bool, u64)>> = (0..CONSTANTS)
        .map(|_| {
            (0..2 + rng.next_u64() % 10)
                .map(|_| (rng.next_u64().is_multiple_of(3), rng.next_u64()))
                .collect()
        })
        .collect();
    if let Some((f, n)) = grow {
        let mut extra = SplitMix64(seed ^ 0x5eed);
        let code = (0..n).map(|_| (extra.next_u64() % 0xE800) as u16).collect();
        let f = f % FUNCTIONS;
        let at = functions[f].len() / 2;
        functions[f].insert(at, Piece::Code(code));
    }
    let piece_len = |p: &Piece| match p {
        Piece::Code(c) => 2 * c.len(),
        Piece::Call(_) => 4,
        Piece::Load(_, gap) => 8 + 2 * gap,
    };
    let mut at = 4 * VECTORS;
    let mut fn_addr = Vec::new();
    for f in &functions {
        fn_addr.push(payload_address + at as u32);
        at += f.iter().map(piece_len).sum::<usize>();
    }
    at = at.next_multiple_of(4);
    let mut const_addr = Vec::new();
    for c in &constants {
        const_addr.push(payload_address + at as u32);
        at += 4 * c.len();
    }
    let mut out = Vec::with_capacity(at);
    let hw = |out: &mut Vec<u8>, h: u16| out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&0x2000_4000u32.to_le_bytes());
    for v in 1..VECTORS {
        out.extend_from_slice(&(fn_addr[v % FUNCTIONS] | 1).to_le_bytes());
    }
    let mov = |op: u16, rd: u16, imm: u16| -> (u16, u16) {
        (
            op | (imm >> 12) | ((imm >> 11) & 1) << 10,
            rd << 8 | ((imm >> 8) & 7) << 12 | (imm & 0xFF),
        )
    };
    for f in &functions {
        for p in f {
            match p {
                Piece::Code(c) => c.iter().for_each(|&h| hw(&mut out, h)),
                Piece::Call(t) => {
                    let pc = payload_address + out.len() as u32 + 4;
                    let off = fn_addr[*t].wrapping_sub(pc) as i32;
                    let s = ((off >> 24) & 1) as u16;
                    let j1 = (1 - ((off >> 23) & 1) as u16) ^ s;
                    let j2 = (1 - ((off >> 22) & 1) as u16) ^ s;
                    hw(&mut out, 0xF000 | s << 10 | ((off >> 12) & 0x3FF) as u16);
                    hw(
                        &mut out,
                        0xD000 | j1 << 13 | j2 << 11 | ((off >> 1) & 0x7FF) as u16,
                    );
                }
                Piece::Load(c, gap) => {
                    let v = const_addr[*c];
                    let (a, b) = mov(0xF240, 3, v as u16);
                    let (cc, d) = mov(0xF2C0, 3, (v >> 16) as u16);
                    hw(&mut out, a);
                    hw(&mut out, b);
                    (0..*gap).for_each(|_| hw(&mut out, 0xBF00)); // NOP
                    hw(&mut out, cc);
                    hw(&mut out, d);
                }
            }
        }
    }
    out.resize(out.len().next_multiple_of(4), 0);
    for c in &constants {
        for &(pointer, r) in c {
            let w = if pointer {
                if r % 2 == 0 {
                    fn_addr[(r >> 8) as usize % FUNCTIONS] | 1
                } else {
                    const_addr[(r >> 8) as usize % CONSTANTS]
                }
            } else {
                r as u32
            };
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}
