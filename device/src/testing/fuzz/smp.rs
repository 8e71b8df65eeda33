//! Harness `smp`: a script of SMP console frames, native protocol frames, raw bytes and power
//! cycles, fed byte by byte into [`Console`] (over a native [`Server`] on a strict flash with a
//! provisioned device), with every answer decoded and the invariants checked after every frame.

use super::frames::{request_frame, seal_frame};
use super::{ensure, fail, seed, Script, Seed};
use crate::boot::decide;
use crate::image::Version;
use crate::layout::Bank;
use crate::protocol::message::{Envelope, Request, Response};
use crate::protocol::{decode_frame, FrameDecoder, FrameError, Server, MAX_MESSAGE};
use crate::smp::cbor::Body;
use crate::smp::framing::{self, Decoder as SmpDecoder, LINE_END, MAX_LINE, MAX_PACKET};
use crate::smp::header::{Header, Op, HEADER_LEN};
use crate::smp::{image as img, os, Console, CONSOLE_OUT, GROUP_IMAGE, GROUP_OS};
use crate::state::BankState;
use crate::testing::device::{answers, decode_answer, frame_error, Device};
use crate::testing::invariants::{
    check_upload_boots, payload, read_state, ImageSigner, Snapshot, Step, Violation,
};
use crate::testing::StrictFlash;
use crate::update::{Manifest, Updater};
use crate::Config;
use minicbor::encode::write::Cursor;
use minicbor::Encoder;
use std::sync::OnceLock;
use std::vec;
use std::vec::Vec;

/// Write size of the harness's flash.
const W: usize = 8;
/// Erase size of the harness's flash.
const E: usize = 1024;
/// Bank size of the harness's device.
pub const SMP_BANK: u32 = 4096;
/// Payload size of its images.
const SMP_PAYLOAD: usize = 2000;
/// Most script steps run per input (bounds the time per input).
const SMP_MAX_STEPS: usize = 64;
/// Longest run of raw bytes one step feeds.
const MAX_RAW: usize = 1536;

/// The script's operations: a step starts with one of these codes (its byte modulo
/// [`op::COUNT`]), followed by its arguments.
mod op {
    /// `len16 bytes…`: bytes on the wire as they are.
    pub const RAW: u8 = 0;
    /// `header[8] len16 body…`: an SMP packet whose length field is set to the body's, as one
    /// console frame (base64 lines, length, CRC-16).
    pub const SMP: u8 = 1;
    /// `len16 packet…`: a packet as it is, as one console frame.
    pub const PACKET: u8 = 2;
    /// `len16 bytes…`: a native message with a valid CRC, as one COBS frame.
    pub const NATIVE: u8 = 3;
    /// A power cut between frames: the device boots again.
    pub const POWER_CYCLE: u8 = 4;
    /// Number of operations.
    pub const COUNT: u8 = 5;
}

/// The harness's device, provisioned, and the images around it (made once).
struct Fixture {
    config: Config<'static>,
    signer: ImageSigner,
    flash: StrictFlash<W, E>,
    /// Factory image (bank A), then: for bank B, v2; for bank A, v3 counter 2; unsigned for B;
    /// signed by an untrusted key for B.
    images: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut dev = match Device::<W, E>::new(SMP_BANK) {
            Ok(d) => d,
            Err(_) => fail(Violation::Parser("smp layout")),
        };
        let v = Version::new;
        let signer = dev.signer().clone();
        let layout = dev.layout();
        let image = |bank, version, counter, seed| {
            dev.image(bank, version, counter, &payload(SMP_PAYLOAD, seed))
                .unwrap_or_else(|v| fail(v))
        };
        let mut images = vec![
            image(Bank::A, v(1, 0, 0, 0), 1, 0),
            image(Bank::B, v(2, 0, 0, 0), 1, 1),
            image(Bank::A, v(3, 0, 0, 0), 2, 2),
        ];
        images.push(
            crate::image::encode::ImageBuilder {
                header_size: signer.header_size,
                version: v(4, 0, 0, 0),
                rom_fixed: Some(layout.bank_address(Bank::B)),
                security_counter: Some(1),
                vendor_id: signer.ids.vendor,
                class_id: signer.ids.class,
            }
            .unsigned(&payload(SMP_PAYLOAD, 3))
            .unwrap_or_default(),
        );
        let stranger = ImageSigner {
            key: ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
            ..signer.clone()
        };
        images.push(
            stranger
                .image(&layout, Bank::B, v(5, 0, 0, 0), 1, &payload(SMP_PAYLOAD, 4))
                .unwrap_or_default(),
        );
        if let Err(v) = dev.provision(&images[0]) {
            fail(v);
        }
        let config = dev.config();
        let flash = dev.flash().unwrap_or_else(|v| fail(v)).clone();
        Fixture {
            config,
            signer,
            flash,
            images,
        }
    })
}

/// What the console must do with the byte just fed, by the two decoders it demultiplexes.
enum Expect {
    /// No frame completed: no answer, no flash operation.
    Nothing,
    /// An SMP packet completed (CRC checked).
    Smp(Vec<u8>),
    /// A native frame completed.
    Native(Vec<u8>),
    /// The native decoder dropped a frame.
    NativeError(FrameError),
}

/// True when an SMP response body reports an error (`err`, or a non-zero `rc`).
fn is_error(body: &[u8]) -> bool {
    let mut d = minicbor::Decoder::new(body);
    let Ok(Some(n)) = d.map() else {
        return false;
    };
    for _ in 0..n {
        match d.str() {
            Ok("err") => return true,
            Ok("rc") => return d.i64().map_or(true, |rc| rc != 0),
            Ok(_) if d.skip().is_ok() => {}
            _ => return false,
        }
    }
    false
}

/// True for requests that only read (or reset after answering): they change nothing.
fn is_query(h: &Header) -> bool {
    matches!(
        (h.group, h.cmd, h.op),
        (GROUP_OS, _, Op::Read)
            | (GROUP_OS, os::ECHO | os::RESET, Op::Write)
            | (GROUP_IMAGE, img::STATE | img::SLOT_INFO, Op::Read)
    )
}

/// What a frame may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// As [`Snapshot::check`] allows for this step.
    Step(Step),
    /// A refused upload chunk: a streamed upload whose last chunk fails verification has its
    /// bank recorded empty; nothing else may change (the boot-relevant state, the running bank).
    UploadRefused,
}

/// Checks an SMP answer `out` to `request`; returns the kind of step it was.
fn check_smp(request: &[u8], out: &[u8]) -> Kind {
    let Some(h) = Header::parse(request).filter(|h| h.op.response().is_some()) else {
        ensure(out.is_empty(), "a packet that is no request gets no answer");
        return Kind::Step(Step::Query);
    };
    ensure(!out.is_empty(), "an SMP request is answered");
    ensure(
        out[0] != 0
            && out
                .split_inclusive(|&b| b == LINE_END)
                .all(|l| l.len() <= MAX_LINE && l.ends_with(&[LINE_END])),
        "an SMP answer is console lines of at most 127 bytes",
    );
    let mut d = SmpDecoder::new();
    let mut packet = None;
    for (i, &b) in out.iter().enumerate() {
        if let Some(n) = d.push(b) {
            ensure(
                i + 1 == out.len() && packet.is_none(),
                "an SMP answer is one frame",
            );
            packet = Some(d.packet(n).to_vec());
        }
    }
    let Some(resp) = packet else {
        fail(Violation::BadResponse(
            "an SMP answer decodes (base64, length, CRC-16)",
        ))
    };
    let Some(rh) = Header::parse(&resp) else {
        fail(Violation::BadResponse("an SMP answer has a header"))
    };
    let body = &resp[HEADER_LEN..];
    ensure(
        Some(rh.op) == h.op.response()
            && (rh.group, rh.seq, rh.cmd) == (h.group, h.seq, h.cmd)
            && usize::from(rh.len) == body.len()
            && rh.version().is_some(),
        "an SMP answer echoes the request's group, sequence and command, with its length",
    );
    let mut cbor = minicbor::Decoder::new(body);
    ensure(
        cbor.skip().is_ok() && cbor.position() == body.len(),
        "an SMP answer's body is one CBOR item",
    );
    if is_error(body) && (h.group, h.cmd) == (GROUP_IMAGE, img::UPLOAD) {
        Kind::UploadRefused
    } else if is_error(body) {
        Kind::Step(Step::Refused)
    } else if is_query(&h) {
        Kind::Step(Step::Query)
    } else {
        Kind::Step(Step::Accepted)
    }
}

/// Checks a native answer `out` to the frame `frame`; returns the kind of step it was.
fn check_native(mut frame: Vec<u8>, out: &mut [u8]) -> (Step, Response) {
    let expected = decode_frame::<Envelope<Request<'_>>>(&mut frame);
    let answer = decode_answer(out).unwrap_or_else(|v| fail(v));
    match &expected {
        Ok(req) => ensure(
            req.seq == answer.seq && answers(&req.body, &answer.body),
            "a native answer echoes the sequence number and fits the request",
        ),
        Err(e) => ensure(
            answer == frame_error(*e),
            "an unreadable native frame is reported",
        ),
    }
    let step = match answer.body {
        Response::Error(_) => Step::Refused,
        Response::Info(_) | Response::Status(_) | Response::Rebooting => Step::Query,
        _ => Step::Accepted,
    };
    (step, answer.body)
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The script ended.
    Script,
    /// The device resets (a reset request, a native reboot, a power cut).
    Reset,
}

/// The device while the application runs: the console and the decoders that mirror it.
struct Session<'f> {
    console: Console<'static, &'f mut StrictFlash<W, E>>,
    running: Bank,
    smp: SmpDecoder,
    frames: FrameDecoder,
    last: Option<Snapshot>,
    out: Vec<u8>,
}

impl Session<'_> {
    fn flash_bytes(&mut self) -> &[u8] {
        self.console.server().updater().flash_mut().bytes()
    }

    /// Feeds `bytes` one by one; stops early when the device resets.
    fn feed(&mut self, bytes: &[u8]) -> End {
        for &b in bytes {
            let expect = if let Some(n) = self.smp.push(b) {
                self.frames.reset();
                Expect::Smp(self.smp.packet(n).to_vec())
            } else {
                match self.frames.push(b) {
                    None => Expect::Nothing,
                    Some(Ok(len)) => {
                        self.smp.reset();
                        Expect::Native(self.frames.frame(len).to_vec())
                    }
                    Some(Err(e)) => Expect::NativeError(e),
                }
            };
            let ops = self.console.server().updater().flash_mut().ops();
            let n = self.console.feed(b, &mut self.out);
            ensure(n <= self.out.len(), "an answer fits the output buffer");
            let mut out = self.out[..n].to_vec();
            let (step, native) = match expect {
                Expect::Nothing => {
                    let now = self.console.server().updater().flash_mut().ops();
                    ensure(
                        n == 0 && now == ops,
                        "the console acts only on a complete frame",
                    );
                    continue;
                }
                Expect::Smp(request) => (check_smp(&request, &out), None),
                Expect::Native(frame) => {
                    let (step, answer) = check_native(frame, &mut out);
                    (Kind::Step(step), Some(answer))
                }
                Expect::NativeError(e) => {
                    let answer = decode_answer(&mut out).unwrap_or_else(|v| fail(v));
                    ensure(answer == frame_error(e), "a dropped frame is reported");
                    (Kind::Step(Step::Refused), None)
                }
            };
            self.check(step, native.as_ref());
            if self.console.reboot_requested() {
                return End::Reset;
            }
        }
        End::Script
    }

    /// Invariants after a frame: [`Snapshot::check`] for its kind of step, the updater's view
    /// is the flash, and a native status or info tells the truth.
    fn check(&mut self, kind: Kind, native: Option<&Response>) {
        let running = self.running;
        let before = match self.last.take() {
            Some(s) => s,
            None => fail(Violation::NotRunning),
        };
        let step = match kind {
            Kind::Step(step) => step,
            Kind::UploadRefused => Step::Accepted,
        };
        let after = before
            .check(self.flash_bytes(), step)
            .unwrap_or_else(|v| fail(v));
        let state = after.state().copied();
        if let (Kind::UploadRefused, Some(b), Some(a)) = (kind, before.state(), &state) {
            let other = running.other();
            ensure(
                (a.preferred, a.bank(running), a.min_security_counter)
                    == (b.preferred, b.bank(running), b.min_security_counter)
                    && (a.bank(other) == b.bank(other) || *a.bank(other) == BankState::Empty),
                "a refused upload chunk changes at most its own bank's record, to empty",
            );
        }
        ensure(
            self.console.server().updater().state().copied() == state,
            "the updater's view is the newest record",
        );
        match native {
            Some(Response::Status(s)) => ensure(*s == state, "a native status is the state"),
            Some(Response::Info(i)) => ensure(i.running == running, "info names the running bank"),
            _ => {}
        }
        self.last = Some(after);
    }

    fn step(&mut self, script: &mut Script<'_>) -> End {
        let mut wire = Vec::new();
        match script.byte() % op::COUNT {
            op::RAW => {
                let len = usize::from(script.u16()) % MAX_RAW;
                wire.extend_from_slice(script.bytes(len));
            }
            op::SMP => {
                let mut packet = script.bytes(HEADER_LEN).to_vec();
                let len = usize::from(script.u16()) % (MAX_PACKET - HEADER_LEN + 1);
                let body = script.bytes(len);
                if let Some(l) = packet.get_mut(2..4) {
                    l.copy_from_slice(&(body.len() as u16).to_be_bytes());
                }
                packet.extend_from_slice(body);
                wire = console_frame(&packet);
            }
            op::PACKET => {
                let len = usize::from(script.u16()) % (MAX_PACKET + 1);
                wire = console_frame(script.bytes(len));
            }
            op::NATIVE => {
                let len = usize::from(script.u16()) % (MAX_MESSAGE + 1);
                wire = seal_frame(script.bytes(len));
                wire.push(0);
            }
            _ => return End::Reset,
        }
        self.feed(&wire)
    }
}

/// `packet` as a console frame (empty when it does not fit one).
fn console_frame(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; framing::MAX_ENCODED];
    let n = framing::encode(packet, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

/// A boot: the decision must find a bootable image and change no bank.
fn boot(flash: &mut StrictFlash<W, E>, config: &Config<'static>) -> (Bank, Snapshot) {
    let layout = config.layout;
    flash.power_on();
    let before = Snapshot::take(flash.bytes(), &layout, None);
    let d = decide(&mut *flash, config).unwrap_or_else(|e| fail(Violation::NotBootable(e)));
    let after = before
        .check(flash.bytes(), Step::Boot)
        .unwrap_or_else(|v| fail(v));
    (d.bank, after.with_running(Some(d.bank)))
}

/// Harness `smp`: the input is a script of up to 64 steps — raw wire bytes, SMP packets as
/// console frames (with their length field made right, or as they are), native messages with
/// a valid CRC as COBS frames, power cuts — fed byte by byte into the device's [`Console`].
///
/// Checked after every byte: the console answers exactly when one of its two decoders
/// completes a frame (mirrored by independent decoders) and touches the flash only then; an SMP
/// answer is one console frame of lines ≤ 127 bytes that decodes (base64, length, CRC-16) to a
/// response echoing the request's group, sequence and command, with the right length and one
/// CBOR item as body; a native answer is one COBS frame that echoes the sequence number and
/// fits the request. After every frame: [`Snapshot::check`] — the state decodes, the running
/// bank never changes, a query (state read, echo, parameters, …) changes nothing, a refusal
/// changes neither the state region nor a confirmed image — and the updater's view is the
/// flash. Every reset boots a bootable image without changing a bank; at the end a valid
/// upload completes and boots.
pub fn smp(data: &[u8]) {
    smp_summary(data);
}

/// Runs the `smp` harness and returns the state after the script (for tests that check a seed
/// does what its name says).
pub fn smp_summary(data: &[u8]) -> Option<crate::state::BootState> {
    let fx = fixture();
    let mut flash = fx.flash.clone();
    let mut script = Script { data };
    let mut steps = 0;
    loop {
        let (running, snapshot) = boot(&mut flash, &fx.config);
        let updater = Updater::new(&mut flash, fx.config, running)
            .unwrap_or_else(|_| fail(Violation::NotRunning));
        let mut s = Session {
            console: Console::new(Server::new(updater, fx.config)),
            running,
            smp: SmpDecoder::new(),
            frames: FrameDecoder::new(),
            last: Some(snapshot),
            out: vec![0; CONSOLE_OUT],
        };
        let mut end = End::Script;
        while !script.is_empty() && steps < SMP_MAX_STEPS {
            steps += 1;
            end = s.step(&mut script);
            if end == End::Reset {
                break;
            }
        }
        drop(s);
        if end == End::Script {
            break;
        }
    }
    let state = read_state(flash.bytes(), &fx.config.layout);
    ensure(state.is_some(), "the state decodes at the end");
    if let Err(v) = check_upload_boots(&flash, &fx.config, &fx.signer) {
        fail(v);
    }
    state
}

/// Builds seed scripts with the crate's own encoders: SMP headers, minicbor bodies, native
/// request frames.
struct Builder {
    script: Vec<u8>,
    seq: u8,
}

impl Builder {
    fn new() -> Self {
        Builder {
            script: Vec::new(),
            seq: 0,
        }
    }

    /// An SMP request (`version` 0 = v1, 1 = v2) with a body written by `body`.
    fn smp(
        &mut self,
        version: u8,
        op: Op,
        group: u16,
        cmd: u8,
        body: impl FnOnce(
            &mut Body<'_>,
        )
            -> Result<(), minicbor::encode::Error<minicbor::encode::write::EndOfSlice>>,
    ) -> &mut Self {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut e = Encoder::new(Cursor::new(&mut buf[..]));
        let n = match body(&mut e) {
            Ok(()) => e.writer().position(),
            Err(_) => fail(Violation::Parser("a seed body fits a packet")),
        };
        buf.truncate(n);
        self.seq = self.seq.wrapping_add(1);
        let h = Header {
            op,
            version_bits: version,
            flags: 0,
            len: 0,
            group,
            seq: self.seq,
            cmd,
        };
        self.script.push(op::SMP);
        self.script.extend_from_slice(&h.to_bytes());
        self.script
            .extend_from_slice(&(buf.len() as u16).to_le_bytes());
        self.script.extend_from_slice(&buf);
        self
    }

    /// A native request frame, as raw wire bytes.
    fn native(&mut self, request: Request<'_>) -> &mut Self {
        let frame = request_frame(u16::from(self.seq) + 1000, request);
        self.raw(&frame)
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.script.push(op::RAW);
        self.script
            .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.script.extend_from_slice(bytes);
        self
    }

    fn power_cycle(&mut self) -> &mut Self {
        self.script.push(op::POWER_CYCLE);
        self
    }

    fn state_read(&mut self) -> &mut Self {
        self.smp(1, Op::Read, GROUP_IMAGE, img::STATE, |e| {
            e.map(0)?;
            Ok(())
        })
    }

    /// State write: `hash` (test, or with `confirm` switch/confirm), or confirm the running one.
    fn state_write(&mut self, hash: Option<&[u8]>, confirm: bool) -> &mut Self {
        self.smp(1, Op::Write, GROUP_IMAGE, img::STATE, |e| {
            e.map(if hash.is_some() { 2 } else { 1 })?;
            if let Some(h) = hash {
                e.str("hash")?.bytes(h)?;
            }
            e.str("confirm")?.bool(confirm)?;
            Ok(())
        })
    }

    fn reset(&mut self) -> &mut Self {
        self.smp(1, Op::Write, GROUP_OS, os::RESET, |e| {
            e.map(0)?;
            Ok(())
        })
    }

    /// Uploads `image` in chunks of `chunk` bytes, up to `upto` bytes.
    fn upload(&mut self, image: &[u8], chunk: usize, upto: usize) -> &mut Self {
        // What the clients send as `sha`: the SHA-256 of the whole image file.
        let sha: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            image,
        ))
        .into();
        let mut off = 0;
        while off < image.len().min(upto) {
            let end = (off + chunk).min(image.len());
            let data = &image[off..end];
            self.smp(1, Op::Write, GROUP_IMAGE, img::UPLOAD, |e| {
                if off == 0 {
                    e.map(6)?
                        .str("image")?
                        .u32(0)?
                        .str("len")?
                        .u32(image.len() as u32)?
                        .str("off")?
                        .u32(0)?
                        .str("sha")?
                        .bytes(&sha)?
                        .str("data")?
                        .bytes(data)?
                        .str("upgrade")?
                        .bool(false)?;
                } else {
                    e.map(2)?
                        .str("off")?
                        .u32(off as u32)?
                        .str("data")?
                        .bytes(data)?;
                }
                Ok(())
            });
            off = end;
        }
        self
    }
}

/// The SHA-256 TLV value of `image` (what `hash` names in a state write).
fn digest(image: &[u8]) -> Vec<u8> {
    Manifest::from_image(image)
        .map(|m| m.digest.to_vec())
        .unwrap_or_default()
}

pub(super) fn seeds() -> Vec<Seed> {
    let fx = fixture();
    let [factory, next, third, unsigned, stranger] =
        [0, 1, 2, 3, 4].map(|i| fx.images[i].as_slice());
    const CHUNK: usize = 512;

    let mut queries = Builder::new();
    queries
        .raw(b"[00:00:01.000] <inf> app: hello\r\n")
        .smp(1, Op::Read, GROUP_OS, os::ECHO, |e| {
            e.map(1)?.str("d")?.str("hello")?;
            Ok(())
        })
        .native(Request::Info)
        .smp(1, Op::Read, GROUP_OS, os::PARAMETERS, |e| {
            e.map(0)?;
            Ok(())
        })
        .smp(0, Op::Read, GROUP_OS, os::BOOTLOADER_INFO, |e| {
            e.map(0)?;
            Ok(())
        })
        .state_read()
        .native(Request::Status)
        .smp(1, Op::Read, GROUP_IMAGE, img::SLOT_INFO, |e| {
            e.map(0)?;
            Ok(())
        });

    let mut update = Builder::new();
    update
        .state_read()
        .upload(next, CHUNK, usize::MAX)
        .native(Request::Status)
        .state_write(Some(&digest(next)), false)
        .reset()
        .state_read()
        .state_write(None, true)
        .state_read();

    let mut resume = Builder::new();
    resume
        .upload(next, CHUNK, CHUNK * 2)
        .power_cycle()
        .upload(next, CHUNK, usize::MAX)
        .state_write(Some(&digest(next)), false)
        .native(Request::Reboot)
        .native(Request::Confirm)
        .state_read();

    let mut rollback = Builder::new();
    rollback
        .upload(next, CHUNK, usize::MAX)
        .state_write(Some(&digest(next)), false)
        .reset()
        .state_write(None, true)
        .state_write(Some(&digest(factory)), true)
        .reset()
        .state_read()
        .upload(third, 700, usize::MAX);

    let mut erase = Builder::new();
    erase
        .upload(next, CHUNK, CHUNK)
        .smp(1, Op::Write, GROUP_IMAGE, img::ERASE, |e| {
            e.map(1)?.str("slot")?.u32(1)?;
            Ok(())
        })
        .state_read();

    let mut refusals = Builder::new();
    refusals
        .state_write(Some(&[0x5a; 32]), false)
        .smp(0, Op::Write, GROUP_IMAGE, img::ERASE, |e| {
            e.map(1)?.str("slot")?.u32(0)?;
            Ok(())
        })
        .upload(unsigned, CHUNK, usize::MAX)
        .upload(stranger, CHUNK, usize::MAX)
        .smp(1, Op::Read, 64, 0, |e| {
            e.map(0)?;
            Ok(())
        })
        .smp(3, Op::Read, GROUP_OS, os::ECHO, |e| {
            e.map(0)?;
            Ok(())
        })
        .native(Request::Rollback)
        .state_read();

    // SMP frames, a native frame and log text in one stream; a native frame that completes
    // between the lines of an SMP frame makes the console drop the SMP one.
    let echo = Header {
        op: Op::Write,
        version_bits: 1,
        flags: 0,
        len: 4,
        group: GROUP_OS,
        seq: 77,
        cmd: os::ECHO,
    };
    // {"d": ""}
    let smp_frame = console_frame(&[&echo.to_bytes()[..], &[0xa1, 0x61, b'd', 0x60]].concat());
    let native = request_frame(7, Request::Status);
    let mut stream = smp_frame.clone();
    stream.extend_from_slice(&native);
    stream.extend_from_slice(b"log line\n");
    stream.extend_from_slice(&smp_frame);
    let long_echo = Header { len: 205, ..echo };
    let long = console_frame(
        &[
            &long_echo.to_bytes()[..],
            &[0xa1, 0x61, b'd', 0x78, 200],
            &[b'x'; 200],
        ]
        .concat(),
    );
    let split = long
        .iter()
        .position(|&b| b == LINE_END)
        .map_or(0, |i| i + 1);
    stream.extend_from_slice(&long[..split]);
    stream.extend_from_slice(&native);
    stream.extend_from_slice(&long[split..]);
    let mut mixed = Builder::new();
    mixed.raw(&stream);

    vec![
        seed("queries", queries.script.clone()),
        seed("upload-test-reset-confirm", update.script.clone()),
        seed("upload-power-cut-resume", resume.script.clone()),
        seed("rollback", rollback.script.clone()),
        seed("erase", erase.script.clone()),
        seed("refusals", refusals.script.clone()),
        seed("interleaved", mixed.script.clone()),
    ]
}
