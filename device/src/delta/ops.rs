//! The op stream (what the body decompresses to) and its interpreter.
//!
//! ```text
//! stream = map ‖ op* ‖ END
//! map    = count:varint ‖ (src_delta:varint ‖ shift:zigzag varint){count}   (src strictly up)
//! op     = tag:u8 [len:varint] [payload]
//!   tag bits 7..6: 00 COPY n   n bytes of the normalised base at the cursor; cursor += n
//!                  01 ADD n    n payload bytes d: out = base byte + d (wrapping); cursor += n
//!                  10 INSERT n n payload bytes, output as they are
//!                  11 control: 0xC0 END, 0xC1 SEEK (cursor += zigzag varint, never 0)
//!   tag bits 5..0 (COPY/ADD/INSERT): n when 1..=63; 0: n = 64 + varint
//! ```
//! The ops produce the target from byte 32 (after its header, which the manifest carries) to
//! the end of its protected TLVs (the unprotected TLVs come from the manifest too). Every op
//! makes progress (a length is ≥ 1, a seek is not 0 and never follows a seek), so the work per
//! patch byte is bounded, and every length and position is checked against the base and the
//! target before use.
//!
//! RAM of the interpreter ([`OpMachine`]): the map ([`MAX_SEGMENTS`] × 8 B), a normalised base
//! block and its raw read with margins, an output block, a few words of state.

use super::lz::varint_step;
use super::normalise::{normalise, Reloc, Segment, MARGIN};
use super::{Corruption, DeltaError};

/// Most segments a patch's map may have (each costs 8 bytes of device RAM).
pub const MAX_SEGMENTS: usize = 64;
/// Base bytes normalised per read.
pub const SOURCE_BLOCK: usize = 256;
/// Target bytes gathered per updater write.
pub const OUTPUT_BLOCK: usize = 256;
const RAW_BLOCK: usize = SOURCE_BLOCK + 2 * MARGIN as usize;

/// Tag of COPY.
pub const OP_COPY: u8 = 0x00;
/// Tag of ADD.
pub const OP_ADD: u8 = 0x40;
/// Tag of INSERT.
pub const OP_INSERT: u8 = 0x80;
/// END.
pub const OP_END: u8 = 0xC0;
/// SEEK.
pub const OP_SEEK: u8 = 0xC1;
const KIND_MASK: u8 = 0xC0;
const LEN_MASK: u8 = 0x3F;
/// Lengths from this on are written as a varint after a tag with length bits 0.
pub const LONG_LEN: u32 = 64;

/// Reads the base image and writes the target: a bank pair through the updater on a device,
/// slices on a host.
pub trait DeltaIo {
    /// Reads base bytes at `offset` (within the base image).
    fn read_base(&mut self, offset: u32, out: &mut [u8]) -> Result<(), DeltaError>;
    /// Writes target bytes at `offset` (called in order, without gaps).
    fn write_target(&mut self, offset: u32, data: &[u8]) -> Result<(), DeltaError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Copy,
    Add,
    Insert,
}

/// A LEB128 number being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Varint {
    acc: u32,
    shift: u8,
}

impl Varint {
    /// Adds a byte; `Some(value)` once complete.
    fn step(&mut self, b: u8) -> Result<Option<u32>, Corruption> {
        self.acc = varint_step(self.acc, self.shift, b)?;
        if b & 0x80 != 0 {
            self.shift += 7;
            Ok(None)
        } else {
            Ok(Some(self.acc))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    MapCount(Varint),
    MapSrc { left: u16, v: Varint },
    MapShift { left: u16, src: u32, v: Varint },
    Tag,
    Length { kind: Kind, v: Varint },
    Seek(Varint),
    Add { left: u32 },
    Insert { left: u32 },
    Done,
}

/// Where the interpreter is, for the applier's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More ops expected.
    Running,
    /// END was read and the output is complete.
    Done,
}

/// The interpreter: one op-stream byte at a time.
#[derive(Debug, Clone)]
pub struct OpMachine {
    state: State,
    map: [Segment; MAX_SEGMENTS],
    map_len: usize,
    base_address: u32,
    base_len: u32,
    target_address: u32,
    normalise: bool,
    cursor: u32,
    last_seek: bool,
    src: [u8; SOURCE_BLOCK],
    src_start: u32,
    src_len: u32,
    raw: [u8; RAW_BLOCK],
    out: [u8; OUTPUT_BLOCK],
    out_len: usize,
    out_start: u32,
    end: u32,
}

impl Default for OpMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl OpMachine {
    /// An idle interpreter.
    pub const fn new() -> OpMachine {
        OpMachine {
            state: State::Done,
            map: [Segment { src: 0, shift: 0 }; MAX_SEGMENTS],
            map_len: 0,
            base_address: 0,
            base_len: 0,
            target_address: 0,
            normalise: true,
            cursor: 0,
            last_seek: false,
            src: [0; SOURCE_BLOCK],
            src_start: 0,
            src_len: 0,
            raw: [0; RAW_BLOCK],
            out: [0; OUTPUT_BLOCK],
            out_len: 0,
            out_start: 0,
            end: 0,
        }
    }

    /// Starts a stream: the base (`base_len` bytes linked at `base_address`, normalised unless
    /// `raw`), the target linked at `target_address`; `prefix` are the target's first bytes
    /// (its header, from the manifest), and the ops must end at target offset `end`.
    pub fn reset(&mut self, base: (u32, u32, bool), target_address: u32, prefix: &[u8], end: u32) {
        let (base_address, base_len, raw) = base;
        let n = prefix.len().min(OUTPUT_BLOCK);
        *self = OpMachine {
            state: State::MapCount(Varint::default()),
            base_address,
            base_len,
            target_address,
            normalise: !raw,
            end,
            out_len: n,
            ..OpMachine::new()
        };
        self.out[..n].copy_from_slice(&prefix[..n]);
    }

    /// Running or done.
    pub fn progress(&self) -> Progress {
        if self.state == State::Done {
            Progress::Done
        } else {
            Progress::Running
        }
    }

    /// Target bytes handed to [`DeltaIo::write_target`] so far.
    pub fn written(&self) -> u32 {
        self.out_start
    }

    fn produced(&self) -> u32 {
        self.out_start + self.out_len as u32
    }

    fn flush(&mut self, io: &mut impl DeltaIo) -> Result<(), DeltaError> {
        if self.out_len > 0 {
            io.write_target(self.out_start, &self.out[..self.out_len])?;
            self.out_start += self.out_len as u32;
            self.out_len = 0;
        }
        Ok(())
    }

    fn emit(&mut self, data: &[u8], io: &mut impl DeltaIo) -> Result<(), DeltaError> {
        let mut data = data;
        while !data.is_empty() {
            if self.out_len == OUTPUT_BLOCK {
                self.flush(io)?;
            }
            let k = (OUTPUT_BLOCK - self.out_len).min(data.len());
            self.out[self.out_len..self.out_len + k].copy_from_slice(&data[..k]);
            self.out_len += k;
            data = &data[k..];
        }
        Ok(())
    }

    /// Makes sure the normalised base at the cursor is in `src` (read and normalised on
    /// demand); returns its index there and how many bytes follow it (at least one).
    fn fill(&mut self, io: &mut impl DeltaIo) -> Result<(usize, usize), DeltaError> {
        let c = self.cursor;
        if c < self.src_start || c >= self.src_start + self.src_len {
            if c >= self.base_len {
                return Err(Corruption::SourceRange.into());
            }
            let n = (self.base_len - c).min(SOURCE_BLOCK as u32);
            let rs = c.saturating_sub(MARGIN);
            let re = (c + n + MARGIN).min(self.base_len);
            let raw = &mut self.raw[..(re - rs) as usize];
            io.read_base(rs, raw)?;
            let reloc = Reloc {
                base_address: self.base_address,
                base_len: self.base_len,
                target_address: self.target_address,
                map: &self.map[..self.map_len],
            };
            let src = &mut self.src[..n as usize];
            if self.normalise {
                normalise(&reloc, raw, rs, c, src);
            } else {
                let at = (c - rs) as usize;
                src.copy_from_slice(&raw[at..at + n as usize]);
            }
            self.src_start = c;
            self.src_len = n;
        }
        let i = (c - self.src_start) as usize;
        Ok((i, self.src_len as usize - i))
    }

    fn copy(&mut self, mut n: u32, io: &mut impl DeltaIo) -> Result<(), DeltaError> {
        while n > 0 {
            let (i, avail) = self.fill(io)?;
            if self.out_len == OUTPUT_BLOCK {
                self.flush(io)?;
            }
            let k = avail.min(n as usize).min(OUTPUT_BLOCK - self.out_len);
            self.out[self.out_len..self.out_len + k].copy_from_slice(&self.src[i..i + k]);
            self.out_len += k;
            self.cursor += k as u32;
            n -= k as u32;
        }
        Ok(())
    }

    fn start_op(&mut self, kind: Kind, n: u32, io: &mut impl DeltaIo) -> Result<(), DeltaError> {
        if self.produced().checked_add(n).is_none_or(|e| e > self.end) {
            return Err(Corruption::OutputOverrun.into());
        }
        if kind != Kind::Insert && self.cursor.checked_add(n).is_none_or(|e| e > self.base_len) {
            return Err(Corruption::SourceRange.into());
        }
        self.last_seek = false;
        self.state = match kind {
            Kind::Copy => {
                self.copy(n, io)?;
                State::Tag
            }
            Kind::Add => State::Add { left: n },
            Kind::Insert => State::Insert { left: n },
        };
        Ok(())
    }

    /// Interprets one op-stream byte.
    pub fn push(&mut self, b: u8, io: &mut impl DeltaIo) -> Result<(), DeltaError> {
        match self.state {
            State::MapCount(mut v) => {
                self.state = match v.step(b)? {
                    None => State::MapCount(v),
                    Some(n) if n as usize > MAX_SEGMENTS => return Err(Corruption::BadMap.into()),
                    Some(0) => State::Tag,
                    Some(n) => State::MapSrc {
                        left: n as u16,
                        v: Varint::default(),
                    },
                };
            }
            State::MapSrc { left, mut v } => {
                self.state = match v.step(b)? {
                    None => State::MapSrc { left, v },
                    Some(delta) => {
                        let src = match self.map_len.checked_sub(1) {
                            None => delta,
                            Some(last) if delta > 0 => self.map[last]
                                .src
                                .checked_add(delta)
                                .ok_or(Corruption::BadMap)?,
                            Some(_) => return Err(Corruption::BadMap.into()),
                        };
                        State::MapShift {
                            left,
                            src,
                            v: Varint::default(),
                        }
                    }
                };
            }
            State::MapShift { left, src, mut v } => {
                self.state = match v.step(b)? {
                    None => State::MapShift { left, src, v },
                    Some(z) => {
                        let slot = self.map.get_mut(self.map_len).ok_or(Corruption::BadMap)?;
                        *slot = Segment {
                            src,
                            shift: unzigzag(z),
                        };
                        self.map_len += 1;
                        if left > 1 {
                            State::MapSrc {
                                left: left - 1,
                                v: Varint::default(),
                            }
                        } else {
                            State::Tag
                        }
                    }
                };
            }
            State::Tag => {
                let kind = match b & KIND_MASK {
                    OP_COPY => Kind::Copy,
                    OP_ADD => Kind::Add,
                    OP_INSERT => Kind::Insert,
                    _ => {
                        return match b {
                            OP_END => {
                                if self.produced() != self.end {
                                    return Err(Corruption::OutputShort.into());
                                }
                                self.flush(io)?;
                                self.state = State::Done;
                                Ok(())
                            }
                            OP_SEEK if !self.last_seek => {
                                self.state = State::Seek(Varint::default());
                                Ok(())
                            }
                            OP_SEEK => Err(Corruption::NoProgress.into()),
                            other => Err(Corruption::BadOp(other).into()),
                        };
                    }
                };
                match b & LEN_MASK {
                    0 => {
                        self.state = State::Length {
                            kind,
                            v: Varint::default(),
                        }
                    }
                    n => self.start_op(kind, n as u32, io)?,
                }
            }
            State::Length { kind, mut v } => match v.step(b)? {
                None => self.state = State::Length { kind, v },
                Some(n) => {
                    let n = n.checked_add(LONG_LEN).ok_or(Corruption::Varint)?;
                    self.start_op(kind, n, io)?;
                }
            },
            State::Seek(mut v) => match v.step(b)? {
                None => self.state = State::Seek(v),
                Some(z) => {
                    let d = unzigzag(z);
                    let c = self.cursor as i64 + d as i64;
                    if d == 0 {
                        return Err(Corruption::NoProgress.into());
                    }
                    if c < 0 || c > self.base_len as i64 {
                        return Err(Corruption::SourceRange.into());
                    }
                    self.cursor = c as u32;
                    self.last_seek = true;
                    self.state = State::Tag;
                }
            },
            State::Add { left } => {
                let (i, _) = self.fill(io)?;
                let s = self.src[i];
                self.emit(&[s.wrapping_add(b)], io)?;
                self.cursor += 1;
                self.state = if left > 1 {
                    State::Add { left: left - 1 }
                } else {
                    State::Tag
                };
            }
            State::Insert { left } => {
                self.emit(&[b], io)?;
                self.state = if left > 1 {
                    State::Insert { left: left - 1 }
                } else {
                    State::Tag
                };
            }
            State::Done => return Err(Corruption::TrailingData.into()),
        }
        Ok(())
    }
}

/// Zigzag-decodes a signed number.
pub fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

/// Zigzag-encodes a signed number.
pub fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// One op, as the encoder builds them.
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Copy n normalised base bytes.
    Copy(u32),
    /// Base bytes plus these differences.
    Add(std::vec::Vec<u8>),
    /// These bytes.
    Insert(std::vec::Vec<u8>),
    /// Move the base cursor (never 0, never twice in a row).
    Seek(i32),
}

/// The op stream of `map` and `ops`, END included.
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub fn encode_ops(map: &[Segment], ops: &[Op]) -> std::vec::Vec<u8> {
    use super::lz::put_varint;
    let mut out = std::vec::Vec::new();
    put_varint(&mut out, map.len() as u32);
    let mut prev = 0;
    for (i, s) in map.iter().enumerate() {
        put_varint(&mut out, if i == 0 { s.src } else { s.src - prev });
        put_varint(&mut out, zigzag(s.shift));
        prev = s.src;
    }
    let tag = |out: &mut std::vec::Vec<u8>, kind: u8, n: u32| {
        if (1..LONG_LEN).contains(&n) {
            out.push(kind | n as u8);
        } else {
            out.push(kind);
            put_varint(out, n - LONG_LEN);
        }
    };
    for op in ops {
        match op {
            Op::Copy(n) => tag(&mut out, OP_COPY, *n),
            Op::Add(d) => {
                tag(&mut out, OP_ADD, d.len() as u32);
                out.extend_from_slice(d);
            }
            Op::Insert(d) => {
                tag(&mut out, OP_INSERT, d.len() as u32);
                out.extend_from_slice(d);
            }
            Op::Seek(d) => {
                out.push(OP_SEEK);
                put_varint(&mut out, zigzag(*d));
            }
        }
    }
    out.push(OP_END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips() {
        for v in [0, 1, -1, 2, -2, i32::MAX, i32::MIN, 123_456, -654_321] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
