//! Framing: postcard message + CRC-32C, COBS-encoded, 0x00-terminated.

use super::{MAX_FRAME, MAX_MESSAGE};
use crc::{Crc, CRC_32_ISCSI};
use serde::{Deserialize, Serialize};

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
/// The frame delimiter (COBS guarantees it appears nowhere else).
pub const DELIMITER: u8 = 0x00;

/// Why a frame was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// More than [`MAX_FRAME`] bytes before a delimiter: dropped.
    Oversized,
    /// Not valid COBS.
    BadEncoding,
    /// The CRC does not match (corrupted or truncated frame).
    BadCrc,
    /// The CRC matches but the message does not decode (unknown request, wrong version).
    BadMessage,
    /// The message does not fit the output buffer (sender side).
    TooLarge,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FrameError::Oversized => "frame larger than the maximum",
            FrameError::BadEncoding => "frame is not valid COBS",
            FrameError::BadCrc => "frame CRC mismatch",
            FrameError::BadMessage => "frame does not decode to a known message",
            FrameError::TooLarge => "message too large for a frame",
        })
    }
}

impl core::error::Error for FrameError {}

/// Encodes `msg` as a complete frame (delimiter included) into `out`; returns its length.
/// `scratch` holds the message before COBS ([`MAX_MESSAGE`] bytes suffice).
pub fn encode_frame<T: Serialize>(
    msg: &T,
    scratch: &mut [u8],
    out: &mut [u8],
) -> Result<usize, FrameError> {
    let used = postcard::to_slice(msg, scratch)
        .map_err(|_| FrameError::TooLarge)?
        .len();
    if used + 4 > scratch.len() {
        return Err(FrameError::TooLarge);
    }
    let crc = CRC32.checksum(&scratch[..used]);
    scratch[used..used + 4].copy_from_slice(&crc.to_le_bytes());
    let raw = used + 4;
    if cobs::max_encoding_length(raw) + 1 > out.len() || cobs::max_encoding_length(raw) > MAX_FRAME
    {
        return Err(FrameError::TooLarge);
    }
    let n = cobs::encode(&scratch[..raw], out);
    out[n] = DELIMITER;
    Ok(n + 1)
}

/// Decodes one frame body (COBS bytes without the delimiter) in place and deserializes it. The
/// returned message may borrow from `frame`.
pub fn decode_frame<'a, T: Deserialize<'a>>(frame: &'a mut [u8]) -> Result<T, FrameError> {
    let n = cobs::decode_in_place(frame).map_err(|_| FrameError::BadEncoding)?;
    if n < 4 {
        return Err(FrameError::BadCrc);
    }
    let (msg, crc) = frame[..n].split_at(n - 4);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if CRC32.checksum(msg) != expected {
        return Err(FrameError::BadCrc);
    }
    let msg: &'a [u8] = &frame[..n - 4];
    postcard::from_bytes(msg).map_err(|_| FrameError::BadMessage)
}

/// Collects bytes from a stream into frames, in a fixed buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: heapless::Vec<u8, MAX_MESSAGE>,
    /// The buffer holds a complete frame (handed out by `frame`); the next byte starts a new one.
    ready: bool,
    overflow: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// An empty decoder.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: heapless::Vec::new(),
            ready: false,
            overflow: false,
        }
    }

    /// Drops the frame being collected (the bytes belonged to another protocol).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.ready = false;
        self.overflow = false;
    }

    /// Feeds one byte. At a delimiter returns `Some(Ok(len))` when a frame of `len` bytes is
    /// ready in [`FrameDecoder::frame`], or `Some(Err(Oversized))` when the frame overflowed and
    /// was dropped. Empty frames (two delimiters in a row) are ignored.
    pub fn push(&mut self, byte: u8) -> Option<Result<usize, FrameError>> {
        if self.ready {
            self.buf.clear();
            self.ready = false;
        }
        if byte == DELIMITER {
            let overflow = self.overflow;
            self.overflow = false;
            if overflow {
                self.buf.clear();
                return Some(Err(FrameError::Oversized));
            }
            if self.buf.is_empty() {
                return None;
            }
            self.ready = true;
            return Some(Ok(self.buf.len()));
        }
        if self.buf.push(byte).is_err() {
            self.overflow = true;
        }
        None
    }

    /// The frame bytes after `push` returned `Some(Ok(len))`; valid until the next `push`.
    pub fn frame(&mut self, len: usize) -> &mut [u8] {
        let n = len.min(self.buf.len());
        &mut self.buf[..n]
    }
}
