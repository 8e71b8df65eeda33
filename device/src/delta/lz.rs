//! The body's compression: byte-aligned LZ77 with a small window, decoded one byte at a time
//! (the body arrives in chunks of any size, and decoding stops and resumes at any byte).
//!
//! ```text
//!  0lllllll                       literal run: the next l + 1 bytes (1..=128) are output as is
//!  1 len:(7-h) off:h  off_lo:8    match: offset = (off << 8 | off_lo) + 1, in 1..=2^(8+h)
//!                                 length = len + 3; len all ones: + a LEB128 number
//! ```
//! `h = window_bits - 8`, so a 2 KiB window (11 bits, the largest the device decodes) leaves 4
//! length bits (3..=17 without the extension), a 256-byte window 7 bits. Byte-aligned literal runs cost one byte per 128
//! literals: a patch is mostly new code and signatures, which no LZ shrinks, so what matters is
//! not to inflate them (a bit-oriented LZSS such as heatshrink spends 9 bits per literal). The
//! figures of the alternatives are in BENCHMARKS.md.
//!
//! The decoder's RAM is its window (2^`window_bits` bytes, at most [`MAX_WINDOW_BITS`]) and a
//! few words of state. A back-reference before the first byte is refused
//! ([`Corruption::LzOffset`]); lengths are checked numbers.

use super::Corruption;

/// Largest window the device decodes: 2 KiB. Measured on the op streams of real firmware pairs
/// (BENCHMARKS.md): 1 KiB costs ≈ 1 % more on a larger change, 4 KiB gains nothing.
pub const MAX_WINDOW_BITS: u8 = 11;
/// Smallest window a patch may declare.
pub const MIN_WINDOW_BITS: u8 = 8;
/// Largest window [`compress`] makes, for measurements: patches use at most
/// [`MAX_WINDOW_BITS`], the device refuses larger ones.
pub const MEASURE_MAX_WINDOW_BITS: u8 = 12;
/// The window the encoder uses by default (the largest the device decodes).
pub const DEFAULT_WINDOW_BITS: u8 = MAX_WINDOW_BITS;
/// Shortest match.
pub const MIN_MATCH: u32 = 3;
/// Longest literal run of one token.
pub const MAX_LITERAL_RUN: usize = 128;

const WINDOW: usize = 1 << MAX_WINDOW_BITS;
const MATCH_FLAG: u8 = 0x80;

/// Bits of the match length field in the token for a window of `window_bits`.
const fn len_bits(window_bits: u8) -> u8 {
    7 - (window_bits - MIN_WINDOW_BITS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Token,
    Literals {
        left: u8,
    },
    OffsetLow {
        high: u16,
        len: u32,
        extended: bool,
    },
    LengthExt {
        offset: u16,
        len: u32,
        shift: u8,
        acc: u32,
    },
}

/// The streaming decoder.
#[derive(Debug, Clone)]
pub struct LzDecoder {
    window: [u8; WINDOW],
    bits: u8,
    /// Bytes output so far (saturating): back-references may not reach before the first one.
    filled: u32,
    pos: usize,
    state: State,
}

impl Default for LzDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl LzDecoder {
    /// A decoder for the largest window (call [`LzDecoder::reset`] with the patch's window).
    pub const fn new() -> LzDecoder {
        LzDecoder {
            window: [0; WINDOW],
            bits: MAX_WINDOW_BITS,
            filled: 0,
            pos: 0,
            state: State::Token,
        }
    }

    /// Starts a new stream with a window of `2^window_bits` bytes (clamped to the valid range;
    /// the patch header was checked before).
    pub fn reset(&mut self, window_bits: u8) {
        self.bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        self.filled = 0;
        self.pos = 0;
        self.state = State::Token;
    }

    /// True between tokens (a stream may end here).
    pub fn at_token(&self) -> bool {
        self.state == State::Token
    }

    fn emit<E>(&mut self, b: u8, out: &mut impl FnMut(u8) -> Result<(), E>) -> Result<(), E> {
        self.window[self.pos] = b;
        self.pos = (self.pos + 1) & (WINDOW - 1);
        self.filled = self.filled.saturating_add(1);
        out(b)
    }

    fn copy<E: From<Corruption>>(
        &mut self,
        offset: u16,
        len: u32,
        out: &mut impl FnMut(u8) -> Result<(), E>,
    ) -> Result<(), E> {
        let offset = offset as u32 + 1;
        if offset > self.filled {
            return Err(Corruption::LzOffset.into());
        }
        for _ in 0..len {
            let b = self.window[(self.pos + WINDOW - offset as usize) & (WINDOW - 1)];
            self.emit(b, out)?;
        }
        Ok(())
    }

    /// Decodes one input byte; every byte it produces goes to `out` (which may refuse it).
    pub fn push<E: From<Corruption>>(
        &mut self,
        byte: u8,
        out: &mut impl FnMut(u8) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.state {
            State::Token if byte & MATCH_FLAG == 0 => {
                self.state = State::Literals { left: byte + 1 };
            }
            State::Token => {
                let hb = self.bits - MIN_WINDOW_BITS;
                let lb = len_bits(self.bits);
                let field = ((byte & !MATCH_FLAG) >> hb) as u32;
                let max = (1u32 << lb) - 1;
                self.state = State::OffsetLow {
                    high: (byte & ((1u8 << hb) - 1)) as u16,
                    len: field + MIN_MATCH,
                    extended: field == max,
                };
            }
            State::Literals { left } => {
                self.state = if left > 1 {
                    State::Literals { left: left - 1 }
                } else {
                    State::Token
                };
                self.emit(byte, out)?;
            }
            State::OffsetLow {
                high,
                len,
                extended,
            } => {
                let offset = (high << 8) | byte as u16;
                if extended {
                    self.state = State::LengthExt {
                        offset,
                        len,
                        shift: 0,
                        acc: 0,
                    };
                } else {
                    self.state = State::Token;
                    self.copy(offset, len, out)?;
                }
            }
            State::LengthExt {
                offset,
                len,
                shift,
                acc,
            } => {
                let acc = varint_step(acc, shift, byte)?;
                if byte & 0x80 != 0 {
                    self.state = State::LengthExt {
                        offset,
                        len,
                        shift: shift + 7,
                        acc,
                    };
                } else {
                    self.state = State::Token;
                    let len = len.checked_add(acc).ok_or(Corruption::Varint)?;
                    self.copy(offset, len, out)?;
                }
            }
        }
        Ok(())
    }
}

/// Adds one LEB128 byte to `acc` (`shift` bits already read); refuses more than 32 bits.
pub(crate) fn varint_step(acc: u32, shift: u8, byte: u8) -> Result<u32, Corruption> {
    let bits = (byte & 0x7F) as u32;
    if shift > 28 || (shift == 28 && bits > 0x0F) {
        return Err(Corruption::Varint);
    }
    Ok(acc | bits << shift)
}

/// Appends `v` as LEB128.
#[cfg(feature = "std")]
pub(crate) fn put_varint(out: &mut std::vec::Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(feature = "std")]
fn common_len(a: &[u8], b: &[u8], limit: usize) -> usize {
    a.iter()
        .zip(b)
        .take(limit)
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(feature = "std")]
fn varint_len(mut v: u32) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Compresses `input` for a window of `2^window_bits` bytes (8..=12; a device decodes up to
/// [`MAX_WINDOW_BITS`]): an optimal parse under
/// the token costs (dynamic programming over literal runs and the longest match at each
/// position, found through hash chains).
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub fn compress(input: &[u8], window_bits: u8) -> std::vec::Vec<u8> {
    use std::vec;
    use std::vec::Vec;
    let bits = window_bits.clamp(MIN_WINDOW_BITS, MEASURE_MAX_WINDOW_BITS);
    let window = 1usize << bits;
    let lb = len_bits(bits);
    let max_field = (1u32 << lb) - 1;
    let n = input.len();
    let token_cost = |len: u32| -> usize {
        let field = len - MIN_MATCH;
        if field < max_field {
            2
        } else {
            2 + varint_len(field - max_field)
        }
    };
    // Longest match (length, offset) at every position, through hash chains of 3-byte prefixes.
    const CHAIN: usize = 256;
    const HASH_BITS: u32 = 15;
    let hash = |i: usize| -> usize {
        let v = (input[i] as u32) | (input[i + 1] as u32) << 8 | (input[i + 2] as u32) << 16;
        (v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize
    };
    // Matches longer than this are not searched further: inside one, the next position takes
    // the same offset one byte shorter (keeps long runs linear).
    const GOOD: u32 = 256;
    const MAX_SCAN: usize = 1 << 16;
    let mut head = vec![usize::MAX; 1 << HASH_BITS];
    let mut prev = vec![usize::MAX; n];
    let mut best: Vec<(u32, u32)> = vec![(0, 0); n];
    for i in 0..n {
        if i + MIN_MATCH as usize > n {
            break;
        }
        let h = hash(i);
        if i > 0 && best[i - 1].0 > GOOD {
            best[i] = (best[i - 1].0 - 1, best[i - 1].1);
        } else {
            let mut cand = head[h];
            let mut tries = 0;
            let limit = (n - i).min(MAX_SCAN);
            while cand != usize::MAX && i - cand <= window && tries < CHAIN {
                let known = best[i].0 as usize;
                if known == 0 || (known < limit && input[cand + known] == input[i + known]) {
                    let l = common_len(&input[cand..], &input[i..], limit);
                    if l as u32 > best[i].0 {
                        best[i] = (l as u32, (i - cand) as u32);
                        if l >= limit || l as u32 > GOOD {
                            break;
                        }
                    }
                }
                cand = prev[cand];
                tries += 1;
            }
        }
        prev[i] = head[h];
        head[h] = i;
    }
    // cost[i]: bytes to encode input[i..]; choice[i]: (is_match, length).
    let mut cost = vec![0usize; n + 1];
    let mut choice = vec![(false, 0u32); n];
    for i in (0..n).rev() {
        let mut c = usize::MAX;
        let mut ch = (false, 1u32);
        for k in 1..=MAX_LITERAL_RUN.min(n - i) {
            let v = 1 + k + cost[i + k];
            if v < c {
                c = v;
                ch = (false, k as u32);
            }
        }
        let (ml, _) = best[i];
        if ml >= MIN_MATCH {
            let short = ml.min(MIN_MATCH + 64);
            for l in (MIN_MATCH..=short).chain(core::iter::once(ml)) {
                let v = token_cost(l) + cost[i + l as usize];
                if v < c {
                    c = v;
                    ch = (true, l);
                }
            }
        }
        cost[i] = c;
        choice[i] = ch;
    }
    let mut out = Vec::with_capacity(cost[0]);
    let mut i = 0;
    while i < n {
        let (is_match, len) = choice[i];
        if is_match {
            let off = best[i].1 - 1;
            let field = (len - MIN_MATCH).min(max_field);
            let hb = bits - MIN_WINDOW_BITS;
            out.push(MATCH_FLAG | (field << hb) as u8 | (off >> 8) as u8);
            out.push(off as u8);
            if field == max_field {
                put_varint(&mut out, len - MIN_MATCH - max_field);
            }
        } else {
            out.push(len as u8 - 1);
            out.extend_from_slice(&input[i..i + len as usize]);
        }
        i += len as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn decode(data: &[u8], bits: u8) -> Result<Vec<u8>, Corruption> {
        let mut d = LzDecoder::new();
        d.reset(bits);
        let mut out = Vec::new();
        for &b in data {
            d.push(b, &mut |x| {
                out.push(x);
                Ok::<(), Corruption>(())
            })?;
        }
        if !d.at_token() {
            return Err(Corruption::Truncated);
        }
        Ok(out)
    }

    #[test]
    fn round_trips_for_every_window() {
        let mut rng = crate::testing::SplitMix64(5);
        let mut data: Vec<u8> = (0..5000).map(|_| (rng.next_u64() % 7) as u8).collect();
        data.extend(core::iter::repeat_n(0xFF, 70_000));
        data.extend((0..3000).map(|_| rng.next_u64() as u8));
        data.extend_from_within(100..2000);
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            let c = compress(&data, bits);
            assert_eq!(decode(&c, bits).unwrap(), data, "window bits {bits}");
            assert!(
                c.len() < data.len() / 5,
                "{bits}: {} of {}",
                c.len(),
                data.len()
            );
        }
        assert!(compress(&[], 11).is_empty());
    }

    #[test]
    fn a_reference_before_the_start_is_refused() {
        // Match of length 3 at offset 1 with nothing decoded yet.
        assert_eq!(decode(&[0x80, 0x00], 11), Err(Corruption::LzOffset));
        // One literal, then offset 2.
        assert_eq!(
            decode(&[0x00, 7, 0x80, 0x01], 11),
            Err(Corruption::LzOffset)
        );
        assert_eq!(decode(&[0x00, 7, 0x80, 0x00], 11), Ok(vec![7, 7, 7, 7]));
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = crate::testing::SplitMix64(9);
        for _ in 0..2000 {
            let len = (rng.next_u64() % 64) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let mut d = LzDecoder::new();
            d.reset(8 + (rng.next_u64() % 5) as u8);
            let mut n = 0u64;
            for &b in &data {
                // Bounded sink: a huge extended length must not run forever in the test.
                if d.push(b, &mut |_| {
                    n += 1;
                    if n > 1 << 20 {
                        Err(Corruption::OutputOverrun)
                    } else {
                        Ok(())
                    }
                })
                .is_err()
                {
                    break;
                }
            }
        }
    }
}
