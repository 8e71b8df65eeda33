//! The device side: turns request frames into updater calls and response frames.
//!
//! ```text
//!  UART rx byte ─► FrameDecoder ─► Server::handle_frame ─► Updater ─► response frame ─► UART tx
//! ```
//! Buffers are fixed: the decoder's frame ([`MAX_MESSAGE`]), a scratch message and the output
//! frame (both ≈ [`MAX_FRAME`]), ≈ 3.3 KB in all when placed in statics.

use super::frame::{decode_frame, encode_frame, FrameError};
use super::message::{DeviceInfo, Envelope, RemoteError, Request, Response, PROTOCOL_VERSION};
use super::{MAX_CHUNK, MAX_FRAME, MAX_MESSAGE};
use crate::delta::{Applier, PatchHeader};
use crate::image::{Sha256Engine, SoftSha256};
use crate::update::{Manifest, UpdateError, Updater};
use crate::Config;
use embedded_storage::nor_flash::NorFlash;

/// Size of an output buffer that holds any response frame.
pub const OUT_FRAME: usize = MAX_FRAME + 8;

const _: () = assert!(OUT_FRAME > MAX_FRAME + 1);

/// Serves the protocol for one [`Updater`] (and, when given one, an [`Applier`] for delta
/// updates).
#[derive(Debug)]
pub struct Server<'a, F, H = SoftSha256> {
    updater: Updater<'a, F, H>,
    config: Config<'a>,
    reboot: bool,
    scratch: [u8; MAX_MESSAGE],
    delta: Option<&'a mut Applier>,
}

impl<'a, F: NorFlash, H: Sha256Engine> Server<'a, F, H> {
    /// A server around an updater (which knows the running bank).
    pub fn new(updater: Updater<'a, F, H>, config: Config<'a>) -> Self {
        Server {
            updater,
            config,
            reboot: false,
            scratch: [0; MAX_MESSAGE],
            delta: None,
        }
    }

    /// A server that also applies patches (`DeltaBegin`, `DeltaChunk`, `DeltaFinish`) with
    /// `applier` (≈ 3.6 KiB: keep it in a static).
    pub fn with_delta(
        updater: Updater<'a, F, H>,
        config: Config<'a>,
        applier: &'a mut Applier,
    ) -> Self {
        Server {
            delta: Some(applier),
            ..Server::new(updater, config)
        }
    }

    /// The updater, for the application's own calls (e.g. confirm after its health check).
    pub fn updater(&mut self) -> &mut Updater<'a, F, H> {
        &mut self.updater
    }

    /// Ends the session and gives the updater back (an upload in progress stays in it).
    pub fn into_updater(self) -> Updater<'a, F, H> {
        self.updater
    }

    /// True once a `Reboot` request was answered: the application should reset now.
    pub fn reboot_requested(&self) -> bool {
        self.reboot
    }

    /// Handles one frame (COBS bytes without the delimiter, decoded in place) and writes the
    /// response (`0x00 ‖ frame`) into `out` ([`OUT_FRAME`] bytes); returns its length.
    pub fn handle_frame(&mut self, frame: &mut [u8], out: &mut [u8]) -> usize {
        let (seq, response) = match decode_frame::<Envelope<Request<'_>>>(frame) {
            Ok(env) => (env.seq, self.handle(env.body)),
            Err(e) => (0, Response::Error(RemoteError::Frame(e))),
        };
        self.respond(seq, &response, out)
    }

    /// Writes the answer to a frame that could not be collected (e.g. oversized).
    pub fn frame_error(&mut self, error: FrameError, out: &mut [u8]) -> usize {
        self.respond(0, &Response::Error(RemoteError::Frame(error)), out)
    }

    /// Writes `0x00 ‖ frame`: the leading delimiter ends whatever text the application printed
    /// on the same UART, so the host sees that text as one undecodable frame and skips it.
    fn respond(&mut self, seq: u16, body: &Response, out: &mut [u8]) -> usize {
        let Some((first, rest)) = out.split_first_mut() else {
            return 0;
        };
        *first = super::frame::DELIMITER;
        let env = Envelope {
            seq,
            body: body.clone(),
        };
        // Every response fits `OUT_FRAME`; a failure here would be a bug in the size constants,
        // answered with the smallest possible error frame.
        let n = encode_frame(&env, &mut self.scratch, rest).unwrap_or_else(|_| {
            let fallback = Envelope {
                seq,
                body: Response::Error(RemoteError::Frame(FrameError::TooLarge)),
            };
            encode_frame(&fallback, &mut self.scratch, rest).unwrap_or(0)
        });
        n + 1
    }

    fn handle(&mut self, request: Request<'_>) -> Response {
        let result = match request {
            Request::Info => Ok(Response::Info(self.info())),
            Request::Status => self
                .updater
                .refresh()
                .map(|()| Response::Status(self.updater.state().copied())),
            Request::UploadBegin {
                header,
                protected_tlvs,
                tlvs,
            } => {
                if let Some(d) = self.delta.as_deref_mut() {
                    d.abandon();
                }
                Manifest::from_parts(header, protected_tlvs, tlvs)
                    .map_err(UpdateError::from)
                    .and_then(|m| self.updater.begin(&m))
                    .map(Response::NextOffset)
            }
            Request::DeltaBegin {
                patch,
                header,
                protected_tlvs,
                tlvs,
            } => return self.delta_begin(patch, header, protected_tlvs, tlvs),
            Request::DeltaChunk { offset, data } => {
                if data.len() > MAX_CHUNK {
                    return Response::Error(RemoteError::ChunkTooLarge);
                }
                let Some(d) = self.delta.as_deref_mut() else {
                    return Response::Error(RemoteError::DeltaUnsupported);
                };
                return delta_answer(
                    d.write(&mut self.updater, offset, data)
                        .map(Response::NextOffset),
                );
            }
            Request::DeltaFinish => {
                let Some(d) = self.delta.as_deref_mut() else {
                    return Response::Error(RemoteError::DeltaUnsupported);
                };
                return delta_answer(
                    d.finish(&mut self.updater)
                        .map(|id| Response::Activated(id.version)),
                );
            }
            Request::UploadChunk { offset, data } => {
                if data.len() > MAX_CHUNK {
                    return Response::Error(RemoteError::ChunkTooLarge);
                }
                self.updater.write(offset, data).map(Response::NextOffset)
            }
            Request::UploadFinish => self
                .updater
                .finish()
                .map(|id| Response::Activated(id.version)),
            Request::Confirm => self.updater.confirm().map(|()| Response::Done),
            Request::Reject => self.updater.reject().map(|()| Response::Done),
            Request::Rollback => {
                let to = self.updater.running().other();
                self.updater
                    .rollback()
                    .map(|id| Response::SwitchedTo(to, id.version))
            }
            Request::Cancel => {
                if let Some(d) = self.delta.as_deref_mut() {
                    d.abandon();
                }
                self.updater.cancel().map(|()| Response::Done)
            }
            Request::Reboot => {
                self.reboot = true;
                Ok(Response::Rebooting)
            }
        };
        result.unwrap_or_else(|e| Response::Error(RemoteError::Update(e)))
    }

    fn delta_begin(
        &mut self,
        patch: &[u8],
        header: [u8; crate::image::HEADER_SIZE],
        protected_tlvs: &[u8],
        tlvs: &[u8],
    ) -> Response {
        let Some(d) = self.delta.as_deref_mut() else {
            return Response::Error(RemoteError::DeltaUnsupported);
        };
        let result = PatchHeader::parse(patch).and_then(|p| {
            let m = Manifest::from_parts(header, protected_tlvs, tlvs)
                .map_err(|e| crate::delta::DeltaError::Update(e.into()))?;
            d.begin(&mut self.updater, &p, &m)
        });
        delta_answer(result.map(Response::NextOffset))
    }

    fn info(&self) -> DeviceInfo {
        let layout = &self.config.layout;
        let running = self.updater.running();
        DeviceInfo {
            protocol: PROTOCOL_VERSION,
            vendor_id: self.config.ids.vendor,
            class_id: self.config.ids.class,
            bank_addresses: [
                layout.bank_address(crate::Bank::A),
                layout.bank_address(crate::Bank::B),
            ],
            bank_size: layout.bank_size(),
            write_size: layout.write_size(),
            erase_size: layout.erase_size(),
            running,
            running_version: self
                .updater
                .state()
                .and_then(|s| s.bank(running).image())
                .map(|i| i.version),
            max_chunk: MAX_CHUNK as u32,
            recovery: self.updater.in_recovery(),
        }
    }
}

/// The answer to a delta request: an updater error is reported as such (the same refusals as a
/// full upload), the others as delta errors.
fn delta_answer(r: Result<Response, crate::delta::DeltaError>) -> Response {
    match r {
        Ok(resp) => resp,
        Err(crate::delta::DeltaError::Update(e)) => Response::Error(RemoteError::Update(e)),
        Err(e) => Response::Error(RemoteError::Delta(e)),
    }
}
