//! # twinbank-port-app: the part of an application that is the same on every port
//!
//! - [`settle`]: after the application's own health check, confirms an image on trial, or
//!   rejects it (the caller then resets and the shim rolls back);
//! - [`Serial`]: the native serial protocol (`twinbank serial …`) fed one received byte at a
//!   time, answering with whole response frames.
//!
//! The transport (UART, USB CDC), the watchdog and the health check itself are the board's and
//! the application's; see each port's `app/src/main.rs`.
#![no_std]
#![deny(missing_docs)]

use core::fmt::Write;
use embedded_storage::nor_flash::NorFlash;
use twinbank::image::Sha256Engine;
use twinbank::protocol::server::OUT_FRAME;
use twinbank::protocol::{FrameDecoder, Server};
use twinbank::{BankState, Config, UpdateError, Updater};

/// What [`settle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The image was on trial and healthy: it is confirmed.
    Confirmed,
    /// The image was already confirmed and is healthy.
    AlreadyConfirmed,
    /// The image was on trial and unhealthy: it is rejected; reset to roll back.
    Rejected,
    /// The image is confirmed but unhealthy: there is nothing to roll back to.
    Unhealthy,
}

/// Ends the trial of the running image by its health (`Err(why)`: the check that failed), and
/// writes one line saying what happened (`app: health ok`, `app: confirmed`, …).
pub fn settle<F: NorFlash, H: Sha256Engine, W: Write>(
    updater: &mut Updater<'_, F, H>,
    health: Result<(), &str>,
    out: &mut W,
) -> Result<Settled, UpdateError> {
    let running = updater.running();
    let trial = matches!(
        updater.state().map(|s| *s.bank(running)),
        Some(BankState::Pending { .. })
    );
    let settled = match (health, trial) {
        (Ok(()), true) => {
            updater.confirm()?;
            Settled::Confirmed
        }
        (Ok(()), false) => Settled::AlreadyConfirmed,
        (Err(_), true) => {
            updater.reject()?;
            Settled::Rejected
        }
        (Err(_), false) => Settled::Unhealthy,
    };
    let _ = match health {
        Ok(()) => out.write_str("app: health ok\n"),
        Err(why) => writeln!(out, "app: health FAIL: {why}"),
    };
    let _ = out.write_str(match settled {
        Settled::Confirmed => "app: confirmed\n",
        Settled::AlreadyConfirmed => "app: running a confirmed image\n",
        Settled::Rejected => "app: rejected, resetting to roll back\n",
        Settled::Unhealthy => "app: confirmed image is unhealthy; nothing to roll back to\n",
    });
    Ok(settled)
}

/// The native serial protocol over any byte transport: feed it received bytes, send what it
/// returns. RAM: the frame decoder, the server (updater, chunk buffer) and one response frame.
pub struct Serial<'a, F, H> {
    decoder: FrameDecoder,
    server: Server<'a, F, H>,
    response: [u8; OUT_FRAME],
}

impl<'a, F: NorFlash, H: Sha256Engine> Serial<'a, F, H> {
    /// Serves `updater` (the running image's) with `config`.
    pub fn new(updater: Updater<'a, F, H>, config: Config<'a>) -> Self {
        Self {
            decoder: FrameDecoder::new(),
            server: Server::new(updater, config),
            response: [0; OUT_FRAME],
        }
    }

    /// Takes one received byte; returns the response frame to send when it completed a
    /// request (or a malformed frame).
    pub fn byte(&mut self, byte: u8) -> Option<&[u8]> {
        let n = match self.decoder.push(byte)? {
            Ok(len) => self
                .server
                .handle_frame(self.decoder.frame(len), &mut self.response),
            Err(e) => self.server.frame_error(e, &mut self.response),
        };
        self.response.get(..n)
    }

    /// A `Reboot` request was answered: send the response, then reset.
    pub fn reboot_requested(&self) -> bool {
        self.server.reboot_requested()
    }
}
