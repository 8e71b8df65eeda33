//! The SMP server ([`Smp`]: packets in, packets out) and the UART demultiplexer ([`Console`])
//! that serves SMP beside the native protocol on one byte stream.

use super::cbor::{self, Body};
use super::error::{MgmtErr, Refusal};
use super::framing::{self, Decoder, MAX_ENCODED, MAX_PACKET};
use super::header::{Header, Version, HEADER_LEN};
use super::{image, os, TextBuf, GROUP_IMAGE, GROUP_OS};
use crate::protocol::server::OUT_FRAME;
use crate::protocol::{FrameDecoder, Server};
use crate::update::Updater;
use embedded_storage::nor_flash::NorFlash;

/// Longest `rsn` text of a v1 error.
const MAX_REASON: usize = 96;

const UNSUPPORTED_GROUP: Refusal = Refusal::mgmt(MgmtErr::NotSup, "group not supported");
const TOO_NEW: Refusal = Refusal::mgmt(MgmtErr::TooNew, "SMP version not supported (1 and 2 are)");

/// Serves SMP packets for an [`Updater`]: the console framing's decoder, the image group's
/// session, and a response buffer (≈ 2.2 KB in all).
#[derive(Debug)]
pub struct Smp {
    decoder: Decoder,
    handler: Handler,
    packet: [u8; MAX_PACKET],
}

/// The request handling, apart from the buffers.
#[derive(Debug, Default)]
struct Handler {
    session: image::Session,
    /// What the last OS command asked for after its answer.
    after: os::After,
    /// The bootloader offers serial recovery (reset boot mode 1 is accepted).
    recovery: bool,
}

impl Default for Smp {
    fn default() -> Self {
        Self::new()
    }
}

impl Smp {
    /// A server with empty buffers.
    pub const fn new() -> Smp {
        Smp {
            decoder: Decoder::new(),
            handler: Handler {
                session: image::Session::new(),
                after: os::After::Nothing,
                recovery: false,
            },
            packet: [0; MAX_PACKET],
        }
    }

    /// True once a reset request was answered: the device should reset now.
    pub fn reset_requested(&self) -> bool {
        self.handler.after != os::After::Nothing
    }

    /// True once a reset into the bootloader's serial recovery (boot mode 1) was answered: the
    /// application asks its bootloader for recovery, then resets.
    pub fn recovery_requested(&self) -> bool {
        self.handler.after == os::After::ResetToRecovery
    }

    /// Declares that the bootloader offers serial recovery, so a reset with boot mode 1 is
    /// accepted (refused with ENOTSUP otherwise: a device must not promise a mode it lacks).
    pub fn offer_recovery(&mut self, offered: bool) {
        self.handler.recovery = offered;
    }

    /// Drops the line or frame being received (another protocol's frame was recognised).
    pub fn abandon(&mut self) {
        self.decoder.reset();
    }

    /// Feeds one received byte. When it completes a request, handles it and writes the response
    /// lines into `out` ([`MAX_ENCODED`] bytes suffice); returns `Some(length)` (0: no answer).
    pub fn push<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        byte: u8,
        out: &mut [u8],
    ) -> Option<usize> {
        let len = self.decoder.push(byte)?;
        let request = self.decoder.packet(len);
        let n = self.handler.respond(up, request, &mut self.packet);
        Some(
            self.packet
                .get(..n)
                .and_then(|p| {
                    if n == 0 {
                        Some(0)
                    } else {
                        framing::encode(p, out)
                    }
                })
                .unwrap_or(0),
        )
    }

    /// Handles one request packet (header and body) and writes the response packet into
    /// `response` ([`MAX_PACKET`] bytes suffice); returns its length, 0 when a packet gets no
    /// answer (shorter than a header, or itself a response). The pure entry point for tests and
    /// fuzzing.
    pub fn respond<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        request: &[u8],
        response: &mut [u8],
    ) -> usize {
        self.handler.respond(up, request, response)
    }
}

impl Handler {
    fn respond<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        request: &[u8],
        response: &mut [u8],
    ) -> usize {
        let Some(h) = Header::parse(request) else {
            return 0;
        };
        let Some(op) = h.op.response() else {
            return 0;
        };
        if response.len() < HEADER_LEN {
            return 0;
        }
        let (head, out) = response.split_at_mut(HEADER_LEN);
        let version = h.version();
        let body = request.get(HEADER_LEN..).unwrap_or(&[]);
        let result = match version {
            None => Err(TOO_NEW),
            Some(_) if body.len() != usize::from(h.len) => Err(cbor::MALFORMED),
            Some(_) => cbor::write_body(out, |e| self.dispatch(up, &h, body, e)),
        };
        let len = match result {
            Ok(n) => n,
            Err(r) => write_error(out, version.unwrap_or(Version::V2), r),
        };
        let rh = Header {
            op,
            version_bits: if version.is_some() { h.version_bits } else { 1 },
            flags: 0,
            len: u16::try_from(len).unwrap_or(0),
            ..h
        };
        head.copy_from_slice(&rh.to_bytes());
        HEADER_LEN + len
    }

    fn dispatch<F: NorFlash>(
        &mut self,
        up: &mut Updater<'_, F>,
        h: &Header,
        body: &[u8],
        e: &mut Body<'_>,
    ) -> Result<(), Refusal> {
        match h.group {
            GROUP_OS => {
                let after = os::handle(h.op, h.cmd, body, self.recovery, e)?;
                if after != os::After::Nothing {
                    self.after = after;
                }
                Ok(())
            }
            GROUP_IMAGE => image::handle(&mut self.session, up, h.op, h.cmd, body, e),
            _ => Err(UNSUPPORTED_GROUP),
        }
    }
}

/// Writes the error body of `r` in the form `version` expects; returns its length.
fn write_error(out: &mut [u8], version: Version, r: Refusal) -> usize {
    use core::fmt::Write;
    let full = cbor::write_body(out, |e| {
        match (version, r.group) {
            (Version::V2, Some(g)) => {
                let (group, rc) = g.pair();
                e.map(1)?
                    .str("err")?
                    .map(2)?
                    .str("group")?
                    .u16(group)?
                    .str("rc")?
                    .i32(rc)?;
            }
            (Version::V2, None) => {
                e.map(1)?.str("rc")?.i32(r.rc as i32)?;
            }
            (Version::V1, _) => {
                let mut why = TextBuf::<MAX_REASON>::new();
                let _ = write!(why, "{}", r.reason);
                e.map(2)?
                    .str("rc")?
                    .i32(r.rc as i32)?
                    .str("rsn")?
                    .str(why.as_str())?;
            }
        }
        Ok(())
    });
    full.or_else(|_| {
        cbor::write_body(out, |e| {
            e.map(1)?.str("rc")?.i32(r.rc as i32)?;
            Ok(())
        })
    })
    .unwrap_or(0)
}

/// Size of an output buffer that holds any response of either protocol.
pub const CONSOLE_OUT: usize = if OUT_FRAME > MAX_ENCODED {
    OUT_FRAME
} else {
    MAX_ENCODED
};

/// One UART, two protocols: every byte goes to the native protocol's frame decoder and to the
/// SMP line decoder. Whichever completes a frame that passes its CRC acts on it, and the other
/// one drops what it collected, so SMP lines never reach the native decoder as garbage and a
/// native frame (which may start with 0x06 0x09) is never taken for an SMP line unless its
/// bytes form a whole base64 line whose decoded length and CRC-16 check out. Text between
/// frames is skipped by both. Native frames that fail their CRC are answered as before.
#[derive(Debug)]
pub struct Console<'a, F> {
    native: Server<'a, F>,
    frames: FrameDecoder,
    smp: Smp,
}

impl<'a, F: NorFlash> Console<'a, F> {
    /// Serves both protocols around the native server (which owns the updater).
    pub fn new(native: Server<'a, F>) -> Self {
        Console {
            native,
            frames: FrameDecoder::new(),
            smp: Smp::new(),
        }
    }

    /// The native server (and through it the updater).
    pub fn server(&mut self) -> &mut Server<'a, F> {
        &mut self.native
    }

    /// True once a native `Reboot` or an SMP reset was answered: reset now.
    pub fn reboot_requested(&self) -> bool {
        self.native.reboot_requested() || self.smp.reset_requested()
    }

    /// True once an SMP reset into serial recovery was answered: ask the bootloader for
    /// recovery (board-defined), then reset.
    pub fn recovery_requested(&self) -> bool {
        self.smp.recovery_requested()
    }

    /// Declares that the bootloader offers serial recovery (see [`Smp::offer_recovery`]).
    pub fn offer_recovery(&mut self, offered: bool) {
        self.smp.offer_recovery(offered);
    }

    /// Feeds one received byte; writes any response into `out` ([`CONSOLE_OUT`] bytes) and
    /// returns its length (0: nothing to send).
    pub fn feed(&mut self, byte: u8, out: &mut [u8]) -> usize {
        if let Some(n) = self.smp.push(self.native.updater(), byte, out) {
            self.frames.reset();
            return n;
        }
        match self.frames.push(byte) {
            None => 0,
            Some(Ok(len)) => {
                self.smp.abandon();
                self.native.handle_frame(self.frames.frame(len), out)
            }
            Some(Err(e)) => self.native.frame_error(e, out),
        }
    }
}
