//! Harness `protocol`: request scripts against a device on a strict flash
//! ([`crate::testing::device::Device`]), with the invariants checked after every frame.

use super::frames::seal_frame;
use super::{fail, seed, Script, Seed};
use crate::image::encode::ImageBuilder;
use crate::image::{Version, HEADER_SIZE};
use crate::layout::Bank;
use crate::protocol::message::{Request, Response};
use crate::protocol::{MAX_CHUNK, MAX_FRAME};
use crate::state::BootState;
use crate::testing::device::Device;
use crate::testing::invariants::{payload, read_state, ImageSigner, Violation};
use core::cell::RefCell;
use std::vec;
use std::vec::Vec;

/// Bank size of the `protocol` harness's device.
pub const PROTOCOL_BANK: u32 = 4096;
/// Payload size of its images (three 1 KiB sectors with header and TLVs).
const PROTOCOL_PAYLOAD: usize = 2000;
/// Chunks up to this much over the maximum are sent too (they still fit a frame, and must be
/// refused).
const OVERSIZED_CHUNK: usize = 24;
/// Most script steps run per input (bounds the time per input).
const PROTOCOL_MAX_STEPS: usize = 64;

/// The script's operations: a step starts with one of these codes (its byte modulo
/// [`op::COUNT`]), followed by its arguments.
mod op {
    /// `k`: `UploadBegin` of image `k`.
    pub const BEGIN: u8 = 0;
    /// `back len16`: a chunk of the current image from `back` × 4 bytes before the next offset.
    pub const CHUNK: u8 = 1;
    /// `back len16 at16 mask`: the same with one byte flipped.
    pub const CORRUPT_CHUNK: u8 = 2;
    /// `offset16 len16`: a chunk at an explicit offset.
    pub const CHUNK_AT: u8 = 3;
    /// `UploadFinish`.
    pub const FINISH: u8 = 4;
    /// `Confirm`.
    pub const CONFIRM: u8 = 5;
    /// `Reject`.
    pub const REJECT: u8 = 6;
    /// `Rollback`.
    pub const ROLLBACK: u8 = 7;
    /// `Info`.
    pub const INFO: u8 = 8;
    /// `Status`.
    pub const STATUS: u8 = 9;
    /// `Reboot` (the device resets after answering).
    pub const REBOOT: u8 = 10;
    /// A reset without a request (power cut between frames).
    pub const POWER_CYCLE: u8 = 11;
    /// `k at16 value`: `UploadBegin` of image `k` with one manifest byte replaced.
    pub const MUTATED_BEGIN: u8 = 12;
    /// `len bytes…`: arbitrary message bytes with a valid CRC, as a frame.
    pub const MESSAGE: u8 = 13;
    /// `len16 bytes…`: arbitrary bytes on the wire, then a delimiter.
    pub const WIRE: u8 = 14;
    /// `k`: a whole upload of image `k` (begin, chunks, finish).
    pub const INSTALL: u8 = 15;
    /// Number of operations.
    pub const COUNT: u8 = 16;
}

/// Signed images per (write size, erase size): signing is the slowest part of a short script.
type ImageCache = Vec<((usize, usize), Vec<Vec<u8>>)>;

/// The protocol harness's images, per geometry: signed for B and A with several counters, one
/// with the same header as the first and other bytes, one unsigned, one signed by an untrusted
/// key, one with counter 0. Index 0 is the factory image.
fn protocol_images<const W: usize, const E: usize>(dev: &Device<W, E>) -> Vec<Vec<u8>> {
    std::thread_local! {
        static CACHE: RefCell<ImageCache> = const { RefCell::new(Vec::new()) };
    }
    if let Some(hit) = CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|(k, _)| *k == (W, E))
            .map(|(_, v)| v.clone())
    }) {
        return hit;
    }
    let v = Version::new;
    let body = |seed| payload(PROTOCOL_PAYLOAD, seed);
    let layout = dev.layout();
    let signer = dev.signer();
    let stranger = ImageSigner {
        key: ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        ..signer.clone()
    };
    let specs: [(Bank, Version, u32, u8); 7] = [
        (Bank::A, v(1, 0, 0, 0), 1, 0),
        (Bank::B, v(2, 0, 0, 0), 1, 1),
        (Bank::B, v(3, 0, 0, 0), 2, 2),
        (Bank::A, v(4, 0, 0, 0), 2, 3),
        (Bank::A, v(5, 0, 0, 0), 3, 4),
        (Bank::B, v(2, 0, 0, 0), 1, 5),
        (Bank::B, v(8, 0, 0, 0), 0, 6),
    ];
    let mut images: Vec<Vec<u8>> = specs
        .iter()
        .map(|&(bank, version, counter, seed)| {
            signer
                .image(&layout, bank, version, counter, &body(seed))
                .unwrap_or_default()
        })
        .collect();
    let unsigned = ImageBuilder {
        header_size: signer.header_size,
        version: v(6, 0, 0, 0),
        rom_fixed: Some(layout.bank_address(Bank::B)),
        security_counter: Some(1),
        vendor_id: signer.ids.vendor,
        class_id: signer.ids.class,
    }
    .unsigned(&body(7))
    .unwrap_or_default();
    images.push(unsigned);
    images.push(
        stranger
            .image(&layout, Bank::B, v(7, 0, 0, 0), 1, &body(8))
            .unwrap_or_default(),
    );
    CACHE.with(|c| c.borrow_mut().push(((W, E), images.clone())));
    images
}

/// The wire parts of an image's manifest.
struct Parts {
    header: [u8; HEADER_SIZE],
    protected: Vec<u8>,
    /// The unprotected TLV area (hash, key, signature).
    tlvs: Vec<u8>,
}

fn parts(image: &[u8]) -> Option<Parts> {
    match Request::upload_begin(image).ok()? {
        Request::UploadBegin {
            header,
            protected_tlvs,
            tlvs,
        } => Some(Parts {
            header,
            protected: protected_tlvs.to_vec(),
            tlvs: tlvs.to_vec(),
        }),
        _ => None,
    }
}

/// What a `protocol` script did, for tests that check a seed does what its name says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolSummary {
    /// Requests the device accepted.
    pub accepted: usize,
    /// Requests the device refused (or frames it could not read).
    pub refused: usize,
    /// The state after the script (before the final upload check, which runs on a copy).
    pub state: Option<BootState>,
}

/// A device and the script's view of the session.
struct Session<const W: usize, const E: usize> {
    dev: Device<W, E>,
    images: Vec<Vec<u8>>,
    current: usize,
    next: u32,
    seq: u16,
    summary: ProtocolSummary,
}

impl<const W: usize, const E: usize> Session<W, E> {
    fn count(&mut self, answer: &Response) {
        match answer {
            Response::Error(_) => self.summary.refused += 1,
            _ => self.summary.accepted += 1,
        }
    }

    fn send(&mut self, body: &Request<'_>) {
        self.seq = self.seq.wrapping_add(1);
        match self.dev.request(self.seq, body) {
            Ok(answer) => {
                self.count(&answer);
                if let Response::NextOffset(n) = answer {
                    self.next = n;
                }
            }
            Err(v) => fail(v),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        match self.dev.feed(bytes) {
            Ok(answers) => answers.iter().for_each(|a| self.count(&a.body)),
            Err(v) => fail(v),
        }
    }

    fn begin(&mut self, k: usize) {
        self.current = k;
        self.next = 0;
        let Some(p) = parts(&self.images[k]) else {
            return;
        };
        self.send(&Request::UploadBegin {
            header: p.header,
            protected_tlvs: &p.protected,
            tlvs: &p.tlvs,
        });
    }

    fn chunk(&mut self, offset: u32, len: usize, flip: Option<(usize, u8)>) {
        let img = &self.images[self.current];
        let start = (offset as usize).min(img.len());
        let mut data = img[start..(start + len).min(img.len())].to_vec();
        if let Some((at, mask)) = flip {
            if let Some(b) = data.get_mut(at % len.max(1)) {
                *b ^= mask | 1;
            }
        }
        self.send(&Request::UploadChunk {
            offset,
            data: &data,
        });
    }

    fn install(&mut self, k: usize) {
        self.begin(k);
        let len = self.images[k].len() as u32;
        let mut guard = 0;
        while self.next < len && guard < len {
            let before = self.next;
            self.chunk(before, MAX_CHUNK, None);
            if self.next <= before {
                break;
            }
            guard += 1;
        }
        self.send(&Request::UploadFinish);
    }

    fn step(&mut self, script: &mut Script<'_>) {
        let images = self.images.len();
        match script.byte() % op::COUNT {
            op::BEGIN => {
                let k = script.byte() as usize % images;
                self.begin(k);
            }
            op::CHUNK => {
                let back = script.byte() as u32 * 4;
                let len = script.u16() as usize % (MAX_CHUNK + OVERSIZED_CHUNK);
                self.chunk(self.next.saturating_sub(back), len, None);
            }
            op::CORRUPT_CHUNK => {
                let back = script.byte() as u32 * 4;
                let len = script.u16() as usize % (MAX_CHUNK + 1);
                let flip = (script.u16() as usize, script.byte());
                self.chunk(self.next.saturating_sub(back), len, Some(flip));
            }
            op::CHUNK_AT => {
                let offset = script.u16() as u32;
                let len = script.u16() as usize % (MAX_CHUNK + 1);
                self.chunk(offset, len, None);
            }
            op::FINISH => self.send(&Request::UploadFinish),
            op::CONFIRM => self.send(&Request::Confirm),
            op::REJECT => self.send(&Request::Reject),
            op::ROLLBACK => self.send(&Request::Rollback),
            op::INFO => self.send(&Request::Info),
            op::STATUS => self.send(&Request::Status),
            op::REBOOT => self.send(&Request::Reboot),
            op::POWER_CYCLE => {
                if let Err(v) = self.dev.power_on() {
                    fail(v);
                }
            }
            op::MUTATED_BEGIN => {
                let k = script.byte() as usize % images;
                let at = script.u16() as usize;
                let value = script.byte();
                let Some(mut p) = parts(&self.images[k]) else {
                    return;
                };
                let fields = HEADER_SIZE + p.protected.len() + p.tlvs.len();
                match at % fields {
                    i if i < HEADER_SIZE => p.header[i] = value,
                    i if i < HEADER_SIZE + p.protected.len() => {
                        p.protected[i - HEADER_SIZE] = value
                    }
                    i => p.tlvs[i - HEADER_SIZE - p.protected.len()] = value,
                }
                self.current = k;
                self.next = 0;
                self.send(&Request::UploadBegin {
                    header: p.header,
                    protected_tlvs: &p.protected,
                    tlvs: &p.tlvs,
                });
            }
            op::MESSAGE => {
                let len = script.byte() as usize;
                let mut frame = seal_frame(script.bytes(len));
                frame.push(0);
                self.feed(&frame);
            }
            op::WIRE => {
                let len = script.u16() as usize % (MAX_FRAME + 64);
                let mut bytes = script.bytes(len).to_vec();
                bytes.push(0);
                self.feed(&bytes);
            }
            _ => {
                let k = script.byte() as usize % images;
                self.install(k);
            }
        }
    }
}

fn run_protocol<const W: usize, const E: usize>(script: &mut Script<'_>) -> ProtocolSummary {
    let dev = match Device::<W, E>::new(PROTOCOL_BANK) {
        Ok(d) => d,
        Err(_) => fail(Violation::Parser("protocol layout")),
    };
    let images = protocol_images(&dev);
    let mut s = Session {
        dev,
        images,
        current: 1,
        next: 0,
        seq: 0,
        summary: ProtocolSummary::default(),
    };
    let factory = s.images[0].clone();
    if let Err(v) = s.dev.provision(&factory) {
        fail(v);
    }
    if let Err(v) = s.dev.power_on() {
        fail(v);
    }
    let mut steps = 0;
    while !script.is_empty() && steps < PROTOCOL_MAX_STEPS {
        s.step(script);
        steps += 1;
    }
    let layout = s.dev.layout();
    let state = match s.dev.flash() {
        Ok(f) => read_state(f.bytes(), &layout),
        Err(v) => fail(v),
    };
    if let Err(v) = s.dev.check_upload_boots() {
        fail(v);
    }
    ProtocolSummary { state, ..s.summary }
}

/// Harness `protocol`: the input is a geometry byte (write size 1, 8 or 32) and a script of up
/// to 64 steps: uploads (whole, partial, corrupted, out of order, with altered manifests),
/// finish, confirm, reject, rollback, queries, reboots, power cycles, arbitrary messages with a
/// valid CRC and arbitrary wire bytes, all as frames through the device's decoder and server.
///
/// Every frame: the answer fits the request and
/// [`crate::testing::invariants::Snapshot::check`] holds; every boot finds a bootable image; at
/// the end a valid upload completes and boots.
pub fn protocol(data: &[u8]) {
    protocol_summary(data);
}

/// Runs the `protocol` harness and says what the script did.
pub fn protocol_summary(data: &[u8]) -> ProtocolSummary {
    let mut script = Script { data };
    match script.byte() % 3 {
        0 => run_protocol::<1, 1024>(&mut script),
        1 => run_protocol::<8, 1024>(&mut script),
        _ => run_protocol::<32, 4096>(&mut script),
    }
}

pub(super) fn seeds() -> Vec<Seed> {
    use op::*;
    // Geometry byte first: 0 = write size 1, 1 = 8, 2 = 32 (4 KiB sectors).
    let chunk = |len: u16| {
        let [lo, hi] = len.to_le_bytes();
        [CHUNK, 0, lo, hi]
    };
    let mut resume = vec![1, BEGIN, 1];
    resume.extend(chunk(1000));
    resume.extend(chunk(700));
    resume.extend([POWER_CYCLE, BEGIN, 1]);
    for _ in 0..4 {
        resume.extend(chunk(1024));
    }
    resume.extend([FINISH, REBOOT, CONFIRM, STATUS]);
    let install_confirm = vec![0, INFO, STATUS, INSTALL, 1, REBOOT, CONFIRM, STATUS];
    let reject_rollback = vec![
        2, INSTALL, 2, REBOOT, REJECT, REBOOT, INSTALL, 1, REBOOT, CONFIRM, ROLLBACK, REBOOT,
    ];
    // Unsigned, untrusted key, counter too low, a bad manifest, a readable message, garbage.
    let refusals = vec![
        1,
        INSTALL,
        7,
        INSTALL,
        8,
        BEGIN,
        6,
        MUTATED_BEGIN,
        1,
        10,
        0,
        0x7f,
        MESSAGE,
        3,
        0,
        1,
        9,
        WIRE,
        5,
        0,
        1,
        2,
        3,
        4,
        5,
        FINISH,
        CONFIRM,
    ];
    vec![
        seed("install-confirm", install_confirm),
        seed("resume-after-power-cut", resume),
        seed("reject-and-rollback", reject_rollback),
        seed("refusals", refusals),
    ]
}
