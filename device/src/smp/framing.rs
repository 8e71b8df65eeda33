//! SMP over a serial console ("SMP console" framing, as Zephyr's UART/shell transports and the
//! `smpmgr` / mcumgr-toolkit serial transports speak it).
//!
//! ```text
//!  frame  = len u16 BE ‖ packet (SMP header + CBOR body) ‖ CRC-16/XMODEM(packet) u16 BE
//!           (len counts packet + CRC)
//!  wire   = base64(frame) split into lines:
//!           0x06 0x09 <base64> '\n'        first line
//!           0x04 0x14 <base64> '\n'        each continuation line     (each line ≤ 127 bytes)
//! ```
//! Every line's base64 decodes on its own (its length is a multiple of 4; `=` padding only at
//! its end), as both clients send it. The decoder collects one line at a time into a bounded
//! buffer, decodes it into the bounded frame buffer ([`BUF_SIZE`]), and drops silently anything
//! that is not a well-formed frame with a matching CRC (bytes outside the base64 alphabet, a
//! line too long, a continuation without a first line, a frame larger than the buffer, a 0x00
//! byte): on a shared UART those are log text or frames of the native protocol.

use crc::{Crc, CRC_16_XMODEM};

/// Marker of a frame's first line.
pub const FIRST_LINE: [u8; 2] = [0x06, 0x09];
/// Marker of a continuation line.
pub const CONTINUATION_LINE: [u8; 2] = [0x04, 0x14];
/// The end of a line.
pub const LINE_END: u8 = b'\n';
/// Longest line, marker and newline included (Zephyr's `MCUMGR_SERIAL_MAX_FRAME`).
pub const MAX_LINE: usize = 127;
/// Base64 characters in a full line the device sends (a multiple of 4 that fits [`MAX_LINE`]).
const LINE_BASE64: usize = (MAX_LINE - FIRST_LINE.len() - 1) / 4 * 4;
/// Frame bytes carried by a full line the device sends (93).
pub const LINE_BYTES: usize = LINE_BASE64 / 4 * 3;
/// The device's SMP buffer: the largest decoded frame (length, packet and CRC) it reassembles.
/// Reported as `buf_size` by the MCUmgr parameters command, so clients fill it.
pub const BUF_SIZE: usize = 1024;
/// Bytes of the length field and of the CRC around a packet.
pub const FRAME_OVERHEAD: usize = 4;
/// The largest SMP packet (header and body) either side exchanges.
pub const MAX_PACKET: usize = BUF_SIZE - FRAME_OVERHEAD;
/// Bytes needed to send a frame of [`MAX_PACKET`] as lines.
pub const MAX_ENCODED: usize = {
    let chars = BUF_SIZE.div_ceil(3) * 4;
    chars + chars.div_ceil(LINE_BASE64) * (FIRST_LINE.len() + 1)
};

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The CRC-16/XMODEM of an SMP packet.
pub fn crc16(packet: &[u8]) -> u16 {
    CRC16.checksum(packet)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const PAD: u8 = b'=';

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes one line's base64 (a multiple of 4 characters, padding only at the end) into `out`;
/// returns the bytes written, `None` when it is not such base64 or does not fit.
fn decode_base64(text: &[u8], out: &mut [u8]) -> Option<usize> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut n = 0;
    let quads = text.len() / 4;
    for (i, q) in text.chunks_exact(4).enumerate() {
        let last = i + 1 == quads;
        let pads = q.iter().rev().take_while(|&&c| c == PAD).count();
        if pads > 2 || (pads > 0 && !last) {
            return None;
        }
        let mut v = 0u32;
        for &c in &q[..4 - pads] {
            v = (v << 6) | u32::from(sextet(c)?);
        }
        v <<= 6 * pads as u32;
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        let take = 3 - pads;
        out.get_mut(n..n + take)?.copy_from_slice(&bytes[..take]);
        n += take;
    }
    Some(n)
}

/// Where a line stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Between lines (a marker's first byte may have been seen).
    Idle { marker: Option<u8> },
    /// Inside a first (true) or continuation (false) line.
    In { first: bool },
}

/// Reassembles SMP frames from a byte stream in fixed buffers (≈ 1.2 KB).
#[derive(Debug)]
pub struct Decoder {
    line: [u8; MAX_LINE],
    line_len: usize,
    state: Line,
    frame: [u8; BUF_SIZE],
    /// Decoded bytes of the frame in progress; 0 when none.
    frame_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder.
    pub const fn new() -> Decoder {
        Decoder {
            line: [0; MAX_LINE],
            line_len: 0,
            state: Line::Idle { marker: None },
            frame: [0; BUF_SIZE],
            frame_len: 0,
        }
    }

    /// Drops the line and the frame in progress (another protocol's frame was recognised).
    pub fn reset(&mut self) {
        self.line_len = 0;
        self.state = Line::Idle { marker: None };
        self.frame_len = 0;
    }

    /// Feeds one byte. Returns the length of a complete packet (header and body, CRC checked)
    /// now readable with [`Decoder::packet`].
    pub fn push(&mut self, byte: u8) -> Option<usize> {
        match self.state {
            Line::Idle { marker } => {
                let first = match (marker, byte) {
                    (Some(a), b) if [a, b] == FIRST_LINE => Some(true),
                    (Some(a), b) if [a, b] == CONTINUATION_LINE => Some(false),
                    _ => None,
                };
                self.state = match first {
                    Some(first) => {
                        self.line_len = 0;
                        Line::In { first }
                    }
                    None => Line::Idle { marker: Some(byte) },
                };
                None
            }
            Line::In { first } => {
                if byte == LINE_END {
                    self.state = Line::Idle { marker: None };
                    return self.end_line(first);
                }
                let fits = self.line_len + FIRST_LINE.len() + 1 < MAX_LINE;
                if (sextet(byte).is_none() && byte != PAD) || !fits {
                    // Not an SMP line after all: drop it and the frame it belonged to.
                    self.frame_len = 0;
                    self.state = Line::Idle { marker: Some(byte) };
                    return None;
                }
                self.line[self.line_len] = byte;
                self.line_len += 1;
                None
            }
        }
    }

    /// The packet of the frame completed by the last `push` (valid until the next `push`).
    pub fn packet(&self, len: usize) -> &[u8] {
        self.frame.get(2..2 + len).unwrap_or(&[])
    }

    fn end_line(&mut self, first: bool) -> Option<usize> {
        if first {
            self.frame_len = 0;
        } else if self.frame_len == 0 {
            return None; // a continuation of nothing
        }
        let text_len = self.line_len;
        let Some(n) = decode_base64(&self.line[..text_len], &mut self.frame[self.frame_len..])
        else {
            self.frame_len = 0;
            return None;
        };
        self.frame_len += n;
        if self.frame_len < 2 {
            self.frame_len = 0;
            return None;
        }
        let total = 2 + usize::from(u16::from_be_bytes([self.frame[0], self.frame[1]]));
        if !(FRAME_OVERHEAD..=BUF_SIZE).contains(&total) || self.frame_len > total {
            self.frame_len = 0;
            return None;
        }
        if self.frame_len < total {
            return None; // more lines to come
        }
        self.frame_len = 0;
        let packet_len = total - 2 - 2;
        let crc = u16::from_be_bytes([self.frame[total - 2], self.frame[total - 1]]);
        (crc16(&self.frame[2..2 + packet_len]) == crc).then_some(packet_len)
    }
}

/// Writes `packet` as a complete SMP console frame (lines of at most [`MAX_LINE`] bytes) into
/// `out`; returns the bytes written, `None` when the packet or `out` is too large/small.
pub fn encode(packet: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = u16::try_from(packet.len() + 2).ok()?;
    if packet.len() > MAX_PACKET {
        return None;
    }
    let crc = crc16(packet).to_be_bytes();
    let head = len.to_be_bytes();
    let total = packet.len() + FRAME_OVERHEAD;
    let byte = |i: usize| -> u8 {
        if i < 2 {
            head[i]
        } else if i < 2 + packet.len() {
            packet[i - 2]
        } else {
            crc[i - 2 - packet.len()]
        }
    };
    let mut n = 0;
    let mut put = |b: u8| -> Option<()> {
        *out.get_mut(n)? = b;
        n += 1;
        Some(())
    };
    let mut start = 0;
    while start < total {
        let marker = if start == 0 {
            FIRST_LINE
        } else {
            CONTINUATION_LINE
        };
        put(marker[0])?;
        put(marker[1])?;
        let end = (start + LINE_BYTES).min(total);
        let mut i = start;
        while i < end {
            let k = (end - i).min(3);
            let mut v = 0u32;
            for j in 0..3 {
                v = (v << 8) | if j < k { u32::from(byte(i + j)) } else { 0 };
            }
            for j in 0..4 {
                let c = if j <= k {
                    ALPHABET[((v >> (18 - 6 * j)) & 0x3f) as usize]
                } else {
                    PAD
                };
                put(c)?;
            }
            i += k;
        }
        put(LINE_END)?;
        start = end;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Decoder, bytes: &[u8]) -> Option<std::vec::Vec<u8>> {
        let mut got = None;
        for &b in bytes {
            if let Some(n) = d.push(b) {
                got = Some(d.packet(n).to_vec());
            }
        }
        got
    }

    #[test]
    fn round_trips_every_size_and_keeps_lines_short() {
        let mut out = [0u8; MAX_ENCODED];
        for size in [0usize, 1, 2, 3, 8, 89, 90, 91, 92, 93, 94, 200, MAX_PACKET] {
            let packet: std::vec::Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
            let n = encode(&packet, &mut out).unwrap();
            for line in out[..n].split_inclusive(|&b| b == LINE_END) {
                assert!(line.len() <= MAX_LINE, "line of {} bytes", line.len());
            }
            let mut d = Decoder::new();
            assert_eq!(
                feed(&mut d, &out[..n]).as_deref(),
                Some(&packet[..]),
                "{size}"
            );
        }
        assert!(encode(&[0; MAX_PACKET + 1], &mut out).is_none());
    }

    #[test]
    fn python_client_example_decodes() {
        // smp.packet.encode(b"Hello, world!") from the smp package's documentation.
        let mut d = Decoder::new();
        let got = feed(&mut d, b"junk\x06\tAA9IZWxsbywgd29ybGQhet4=\n");
        assert_eq!(got.as_deref(), Some(&b"Hello, world!"[..]));
        // The same split into short lines.
        let lines =
            b"\x06\tAA9I\n\x04\x14ZWxs\n\x04\x14bywg\n\x04\x14d29y\n\x04\x14bGQh\n\x04\x14et4=\n";
        assert_eq!(feed(&mut d, lines).as_deref(), Some(&b"Hello, world!"[..]));
    }

    #[test]
    fn bad_crc_garbage_and_orphans_are_dropped() {
        let mut d = Decoder::new();
        assert_eq!(feed(&mut d, b"\x06\tAA9IZWxsbywgd29ybGQheT4=\n"), None);
        assert_eq!(feed(&mut d, b"\x04\x14ZWxs\n"), None);
        assert_eq!(feed(&mut d, b"\x06\tAA9I\x00ZWxsbywgd29ybGQhet4=\n"), None);
        let long = [b'A'; 200];
        let mut l = std::vec::Vec::from(&FIRST_LINE[..]);
        l.extend_from_slice(&long);
        l.push(b'\n');
        assert_eq!(feed(&mut d, &l), None);
        // Still works afterwards.
        assert!(feed(&mut d, b"\x06\tAA9IZWxsbywgd29ybGQhet4=\n").is_some());
    }
}
