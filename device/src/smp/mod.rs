//! SMP (MCUmgr) on the device: the protocol of `smpmgr`, the `mcumgr` CLIs, mcumgr-toolkit,
//! nRF Connect Device Manager and the fleet gateways, so that the tools MCUboot users own can
//! inspect, update, confirm and roll back a twinbank device (cargo feature `smp`).
//!
//! ```text
//!  UART byte ─┬─► protocol::FrameDecoder (COBS, 0x00) ──► protocol::Server ─┐
//!             └─► smp::framing::Decoder (0x06 0x09 … '\n') ─► Smp::respond ─┴─► Updater
//!                 (server::Console feeds both; whichever completes a frame that passes
//!                  its CRC acts, and the other decoder drops its partial frame)
//! ```
//!
//! One module per concept: [`framing`] (console lines, base64, CRC-16), [`header`] (the 8-byte
//! header), [`cbor`] (bodies), [`os`] (group 0), [`image`] (group 1, with the slot mapping),
//! [`error`] (the refusal table), [`server`] (packet handler and the UART demultiplexer).
//! `no_std`, no heap, independent of the application: a bootloader can serve it too. Every
//! buffer is fixed ([`framing::BUF_SIZE`]); nothing read from the wire can make it panic.
//!
//! Pure entry points for tests and fuzzing: [`server::Smp::respond`] (request packet in,
//! response packet out) and [`server::Console::feed`] (UART bytes in, UART bytes out).

pub mod cbor;
pub mod error;
pub mod framing;
pub mod header;
pub mod image;
pub mod os;
pub mod server;

pub use server::{Console, Smp, CONSOLE_OUT};

/// Group: OS management.
pub const GROUP_OS: u16 = 0;
/// Group: image management.
pub const GROUP_IMAGE: u16 = 1;

/// A small text buffer (formatting without a heap); text past its capacity is cut at a
/// character boundary.
#[derive(Debug, Clone)]
pub struct TextBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for TextBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TextBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        TextBuf {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever copied in.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> core::fmt::Write for TextBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            let mut b = [0u8; 4];
            let e = c.encode_utf8(&mut b).as_bytes();
            let Some(dst) = self.buf.get_mut(self.len..self.len + e.len()) else {
                return Ok(());
            };
            dst.copy_from_slice(e);
            self.len += e.len();
        }
        Ok(())
    }
}
