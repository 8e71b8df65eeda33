//! A device on a strict test flash, driven through its serial protocol as a host drives it, with
//! the invariants of [`super::invariants`] checked after every frame and every boot.
//!
//! ```text
//!  bytes ─► FrameDecoder ─► Server::handle_frame ─► Updater ─► StrictFlash (panics on a
//!                                  │                                         NOR violation)
//!                                  ▼ response frame, decoded as the host decodes it
//!        checks: the response fits the request, Snapshot::check, updater view = flash
//! ```
//! A `Reboot` request or [`Device::power_on`] resets the device: the boot decision runs, must find
//! a bootable image, and may change no bank.

extern crate std;

use super::invariants::{ImageSigner, Snapshot, Step, Violation};
use super::StrictFlash;
use crate::boot::{decide, BootDecision};
use crate::image::{verify_image, DeviceIds, ImageError, TrustedKey, Uuid, Version};
use crate::layout::{Bank, Layout, LayoutError, Region};
use crate::protocol::message::{Envelope, RemoteError, Request, Response};
use crate::protocol::server::OUT_FRAME;
use crate::protocol::{decode_frame, encode_frame, FrameDecoder, FrameError, Server, MAX_FRAME};
use crate::state::{Attempts, BootState, ImageId, StateStore};
use crate::update::Updater;
use crate::Config;
use ed25519_dalek::SigningKey;
use std::sync::OnceLock;
use std::vec;
use std::vec::Vec;

/// CPU address of flash offset 0 on the test device.
pub const BASE_ADDRESS: u32 = 0x0800_0000;
/// Header size of the test device's images.
pub const IMAGE_HEADER_SIZE: u16 = 0x200;
/// Vendor id of the test device.
pub const VENDOR: Uuid = Uuid([0x11; 16]);
/// Class id of the test device.
pub const CLASS: Uuid = Uuid([0x22; 16]);
/// Secret seed of the test device's signing key (a test key, public on purpose).
pub const KEY_SEED: [u8; 32] = [7; 32];
/// Erase sectors of the test device's state region.
pub const STATE_SECTORS: u32 = 2;

/// The test device's signing key.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&KEY_SEED)
}

/// The keys the test device trusts: the public half of [`signing_key`].
pub fn trusted_keys() -> &'static [TrustedKey] {
    static KEYS: OnceLock<[TrustedKey; 1]> = OnceLock::new();
    KEYS.get_or_init(|| [TrustedKey(signing_key().verifying_key().to_bytes())])
}

/// The signer of the test device's images.
pub fn signer() -> ImageSigner {
    ImageSigner {
        key: signing_key(),
        header_size: IMAGE_HEADER_SIZE,
        ids: DeviceIds {
            vendor: Some(VENDOR),
            class: Some(CLASS),
        },
    }
}

/// A test device: a [`StrictFlash`] with write size `W` and erase size `E`, a layout of two
/// state sectors and two banks, the test key, and (once powered on) the protocol server.
#[derive(Debug)]
pub struct Device<const W: usize, const E: usize> {
    /// The flash while the device is off (`None` while the server holds it).
    flash: Option<StrictFlash<W, E>>,
    server: Option<Server<'static, StrictFlash<W, E>>>,
    config: Config<'static>,
    signer: ImageSigner,
    decoder: FrameDecoder,
    out: Vec<u8>,
    /// The flash as the last check left it, while the device runs.
    last: Option<Snapshot>,
}

impl<const W: usize, const E: usize> Device<W, E> {
    /// A blank, powered-off device whose banks hold `bank_size` bytes (rounded up to sectors).
    pub fn new(bank_size: u32) -> Result<Self, LayoutError> {
        let erase = E as u32;
        let state = STATE_SECTORS * erase;
        let bank = bank_size.div_ceil(erase).max(1) * erase;
        let size = state + 2 * bank;
        let layout = Layout::new(
            size,
            W as u32,
            erase,
            BASE_ADDRESS,
            Region::new(0, state),
            Region::new(state, bank),
            Region::new(state + bank, bank),
        )?;
        let signer = signer();
        Ok(Device {
            flash: Some(StrictFlash::new(size as usize)),
            server: None,
            config: Config {
                layout,
                keys: trusted_keys(),
                ids: signer.ids,
                attempts: Attempts::DEFAULT,
            },
            signer,
            decoder: FrameDecoder::new(),
            out: vec![0; OUT_FRAME],
            last: None,
        })
    }

    /// The device's configuration.
    pub fn config(&self) -> Config<'static> {
        self.config
    }

    /// The device's layout.
    pub fn layout(&self) -> Layout {
        self.config.layout
    }

    /// The signer of images this device accepts.
    pub fn signer(&self) -> &ImageSigner {
        &self.signer
    }

    /// A signed image for `bank` of this device.
    pub fn image(
        &self,
        bank: Bank,
        version: Version,
        security_counter: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, Violation> {
        self.signer
            .image(
                &self.config.layout,
                bank,
                version,
                security_counter,
                payload,
            )
            .map_err(Violation::Encode)
    }

    /// The flash (held by the server while the device runs).
    pub fn flash(&mut self) -> Result<&mut StrictFlash<W, E>, Violation> {
        match (&mut self.server, &mut self.flash) {
            (Some(server), _) => Ok(server.updater().flash_mut()),
            (None, Some(flash)) => Ok(flash),
            (None, None) => Err(Violation::NotRunning),
        }
    }

    /// The bank the application runs from, while the device runs.
    pub fn running(&mut self) -> Option<Bank> {
        self.server.as_mut().map(|s| s.updater().running())
    }

    /// Cuts power: the server and any upload held in RAM are gone.
    pub fn power_off(&mut self) {
        if let Some(server) = self.server.take() {
            self.flash = Some(server.into_updater().into_flash());
        }
        self.decoder = FrameDecoder::new();
        self.last = None;
    }

    /// Factory provisioning (powers the device off first): `image` into bank A and the factory
    /// state record.
    pub fn provision(&mut self, image: &[u8]) -> Result<ImageId, Violation> {
        self.power_off();
        let layout = self.config.layout;
        let params = self.config.verify_params(Bank::A, 0);
        let flash = self.flash.as_mut().ok_or(Violation::NotRunning)?;
        if image.len() > layout.bank_size() as usize {
            return Err(Violation::Manifest(ImageError::DoesNotFit {
                needed: u32::try_from(image.len()).unwrap_or(u32::MAX),
                capacity: layout.bank_size(),
            }));
        }
        flash.load(layout.bank(Bank::A).offset.0 as usize, image);
        let id = ImageId::of(&verify_image(flash, &params).map_err(Violation::Manifest)?);
        let mut store = StateStore::open(flash, &layout).map_err(Violation::Store)?;
        store
            .write(flash, &BootState::factory(Bank::A, id, None))
            .map_err(Violation::Store)?;
        Ok(id)
    }

    /// Resets the device: the boot decision runs (it must find a bootable image and change no
    /// bank), then the application starts serving the protocol from the bank it chose.
    pub fn power_on(&mut self) -> Result<BootDecision, Violation> {
        self.power_off();
        let layout = self.config.layout;
        let mut flash = self.flash.take().ok_or(Violation::NotRunning)?;
        flash.power_on();
        let before = Snapshot::take(flash.bytes(), &layout, None);
        let decision = decide(&mut flash, &self.config);
        let checked = before.check(flash.bytes(), Step::Boot);
        let (decision, after) = match (decision, checked) {
            (Ok(d), Ok(after)) => (d, after),
            (Err(e), _) => {
                self.flash = Some(flash);
                return Err(Violation::NotBootable(e));
            }
            (_, Err(v)) => {
                self.flash = Some(flash);
                return Err(v);
            }
        };
        // Only a flash read error makes this fail; the strict flash has none.
        let updater = Updater::new(flash, self.config, decision.bank).map_err(|error| {
            Violation::UploadFailed {
                stage: super::invariants::UploadStage::Open,
                error,
            }
        })?;
        self.server = Some(Server::new(updater, self.config));
        self.last = Some(after.with_running(Some(decision.bank)));
        Ok(decision)
    }

    /// Sends `body` with sequence number `seq` as one frame and returns the answer.
    pub fn request(&mut self, seq: u16, body: &Request<'_>) -> Result<Response, Violation> {
        let mut scratch = vec![0u8; MAX_FRAME];
        let mut frame = vec![0u8; OUT_FRAME];
        let env = Envelope {
            seq,
            body: body.clone(),
        };
        let n = encode_frame(&env, &mut scratch, &mut frame)
            .map_err(|_| Violation::BadResponse("request does not fit a frame"))?;
        let mut answers = self.feed(&frame[..n])?;
        match (answers.pop(), answers.is_empty()) {
            (Some(env), true) => Ok(env.body),
            _ => Err(Violation::BadResponse("one frame, not one answer")),
        }
    }

    /// Feeds raw serial bytes to the device; returns the answers, in order. Checks the
    /// invariants after every frame, and resets the device after a `Reboot` answer.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Envelope<Response>>, Violation> {
        let mut answers = Vec::new();
        for &byte in bytes {
            if self.server.is_none() {
                return Err(Violation::NotRunning);
            }
            let answer = match self.decoder.push(byte) {
                None => continue,
                Some(Ok(len)) => {
                    let frame = self.decoder.frame(len).to_vec();
                    self.serve(frame)?
                }
                Some(Err(e)) => self.serve_error(e)?,
            };
            answers.push(answer);
            if self.server.as_ref().is_some_and(|s| s.reboot_requested()) {
                self.power_on()?;
            }
        }
        Ok(answers)
    }

    /// Invariant 5 on a copy of the flash: a valid upload completes and boots.
    pub fn check_upload_boots(&mut self) -> Result<BootDecision, Violation> {
        let config = self.config;
        let signer = self.signer.clone();
        let flash = self.flash()?;
        super::invariants::check_upload_boots(flash, &config, &signer)
    }

    /// The flash before the next frame: as the last check left it.
    fn snapshot(&mut self) -> Result<Snapshot, Violation> {
        match self.last.take() {
            Some(s) => Ok(s),
            None => {
                let layout = self.config.layout;
                let running = self.running();
                Ok(Snapshot::take(self.flash()?.bytes(), &layout, running))
            }
        }
    }

    /// Serves one collected frame and checks the answer and the invariants.
    fn serve(&mut self, mut frame: Vec<u8>) -> Result<Envelope<Response>, Violation> {
        let mut copy = frame.clone();
        let expected = decode_frame::<Envelope<Request<'_>>>(&mut copy);
        let before = self.snapshot()?;
        let server = self.server.as_mut().ok_or(Violation::NotRunning)?;
        let n = server.handle_frame(&mut frame, &mut self.out);
        let answer = decode_answer(&mut self.out[..n])?;
        match &expected {
            Ok(req) if req.seq != answer.seq => {
                return Err(Violation::BadResponse("sequence number not echoed"))
            }
            Ok(req) if !answers(&req.body, &answer.body) => {
                return Err(Violation::BadResponse("answer does not fit the request"))
            }
            Err(e) if answer != frame_error(*e) => {
                return Err(Violation::BadResponse("unreadable frame not reported"))
            }
            _ => {}
        }
        self.check_after(&before, &answer.body)?;
        Ok(answer)
    }

    /// Answers a frame the decoder dropped (oversized).
    fn serve_error(&mut self, error: FrameError) -> Result<Envelope<Response>, Violation> {
        let before = self.snapshot()?;
        let server = self.server.as_mut().ok_or(Violation::NotRunning)?;
        let n = server.frame_error(error, &mut self.out);
        let answer = decode_answer(&mut self.out[..n])?;
        if answer != frame_error(error) {
            return Err(Violation::BadResponse("dropped frame not reported"));
        }
        self.check_after(&before, &answer.body)?;
        Ok(answer)
    }

    fn check_after(&mut self, before: &Snapshot, answer: &Response) -> Result<(), Violation> {
        let step = match answer {
            Response::Error(_) => Step::Refused,
            Response::Info(_) | Response::Status(_) | Response::Rebooting => Step::Query,
            _ => Step::Accepted,
        };
        let running = self.running();
        let server = self.server.as_mut().ok_or(Violation::NotRunning)?;
        let view = server.updater().state().copied();
        let after = before.check(server.updater().flash_mut().bytes(), step)?;
        let state = after.state().copied();
        self.last = Some(after);
        if view != state {
            return Err(Violation::ViewDiffers);
        }
        match answer {
            Response::Status(s) if *s != state => {
                Err(Violation::BadResponse("status is not the state"))
            }
            Response::Info(i) if Some(i.running) != running => {
                Err(Violation::BadResponse("info names another running bank"))
            }
            _ => Ok(()),
        }
    }
}

/// The answer the device gives to a frame it could not read.
fn frame_error(e: FrameError) -> Envelope<Response> {
    Envelope {
        seq: 0,
        body: Response::Error(RemoteError::Frame(e)),
    }
}

/// Decodes a response (`0x00 ‖ frame ‖ 0x00`) as the host does.
fn decode_answer(out: &mut [u8]) -> Result<Envelope<Response>, Violation> {
    let Some((&mut first, rest)) = out.split_first_mut() else {
        return Err(Violation::BadResponse("empty answer"));
    };
    let Some((&mut last, body)) = rest.split_last_mut() else {
        return Err(Violation::BadResponse("answer without a frame"));
    };
    if first != 0 || last != 0 || body.contains(&0) {
        return Err(Violation::BadResponse("answer is not one delimited frame"));
    }
    decode_frame(body).map_err(|_| Violation::BadResponse("answer does not decode"))
}

/// True when `answer` is a possible answer to `request`.
fn answers(request: &Request<'_>, answer: &Response) -> bool {
    matches!(
        (request, answer),
        (_, Response::Error(RemoteError::Update(_)))
            | (
                Request::UploadChunk { .. },
                Response::Error(RemoteError::ChunkTooLarge)
            )
            | (Request::Info, Response::Info(_))
            | (Request::Status, Response::Status(_))
            | (
                Request::UploadBegin { .. } | Request::UploadChunk { .. },
                Response::NextOffset(_)
            )
            | (Request::UploadFinish, Response::Activated(_))
            | (
                Request::DeltaBegin { .. } | Request::DeltaChunk { .. } | Request::DeltaFinish,
                Response::Error(RemoteError::DeltaUnsupported | RemoteError::Delta(_))
            )
            | (
                Request::DeltaChunk { .. },
                Response::Error(RemoteError::ChunkTooLarge)
            )
            | (
                Request::DeltaBegin { .. } | Request::DeltaChunk { .. },
                Response::NextOffset(_)
            )
            | (Request::DeltaFinish, Response::Activated(_))
            | (
                Request::Confirm | Request::Reject | Request::Cancel,
                Response::Done
            )
            | (Request::Rollback, Response::SwitchedTo(..))
            | (Request::Reboot, Response::Rebooting)
    )
}
