//! Harness `frames`: the serial stream decoder and the message codec, both directions.

use super::protocol::PROTOCOL_BANK;
use super::state::sample_states;
use super::{ensure, fail, seed, Seed, CRC32C};
use crate::image::Version;
use crate::layout::Bank;
use crate::protocol::message::{Envelope, RemoteError, Request, Response};
use crate::protocol::server::OUT_FRAME;
use crate::protocol::{
    decode_frame, encode_frame, FrameDecoder, FrameError, MAX_FRAME, MAX_MESSAGE,
};
use crate::testing::device::Device;
use crate::testing::invariants::{payload, Violation};
use crate::update::UpdateError;
use serde::Serialize;
use std::vec;
use std::vec::Vec;

/// Encodes a decoded message as a frame again (without its delimiter). `source_len` is the size
/// of the message it was decoded from: postcard never re-encodes a value into more bytes than it
/// was decoded from, so only a message that was already at the frame limit may not fit.
fn reencode<T: Serialize>(value: &T, source_len: usize) -> Option<Vec<u8>> {
    let mut scratch = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; OUT_FRAME];
    match encode_frame(value, &mut scratch, &mut out) {
        Ok(n) => {
            out.truncate(n.saturating_sub(1));
            Some(out)
        }
        Err(_) => {
            ensure(
                cobs::max_encoding_length(source_len + 4) > MAX_FRAME,
                "a message that fitted a frame does not re-encode",
            );
            None
        }
    }
}

/// Decodes `frame` (COBS bytes without the delimiter) both as a request and as a response, and
/// checks that what decodes survives a round trip.
fn decode_both(frame: &[u8]) {
    let mut plain = frame.to_vec();
    let decoded_len = cobs::decode_in_place(&mut plain).map_or(0, |n| n.saturating_sub(4));
    let mut copy = frame.to_vec();
    if let Ok(req) = decode_frame::<Envelope<Request<'_>>>(&mut copy) {
        if let Some(mut again) = reencode(&req, decoded_len) {
            let back = decode_frame::<Envelope<Request<'_>>>(&mut again);
            ensure(
                matches!(back, Ok(ref b) if *b == req),
                "request does not round-trip",
            );
        }
    }
    let mut copy = frame.to_vec();
    if let Ok(resp) = decode_frame::<Envelope<Response>>(&mut copy) {
        if let Some(mut again) = reencode(&resp, decoded_len) {
            let back = decode_frame::<Envelope<Response>>(&mut again);
            ensure(back == Ok(resp), "response does not round-trip");
        }
    }
}

/// CRC-32C and COBS around `message`: a frame body whose CRC is right whatever the message.
pub(super) fn seal_frame(message: &[u8]) -> Vec<u8> {
    let mut raw = message.to_vec();
    raw.extend_from_slice(&CRC32C.checksum(message).to_le_bytes());
    let mut out = vec![0u8; cobs::max_encoding_length(raw.len())];
    let n = cobs::encode(&raw, &mut out);
    out.truncate(n);
    out
}

/// Harness `frames`: the input is bytes off the wire.
///
/// The stream decoder reports exactly the non-empty runs between delimiters, as frames up to
/// [`MAX_MESSAGE`] bytes and as `Oversized` beyond; every frame (and the whole input, and the
/// input sealed with a valid CRC) decodes without panicking as a request and as a response, and
/// what decodes round-trips.
pub fn frames(data: &[u8]) {
    let mut decoder = FrameDecoder::new();
    let mut run = Vec::new();
    for &byte in data {
        let event = decoder.push(byte);
        if byte != 0 {
            ensure(event.is_none(), "event without a delimiter");
            run.push(byte);
            continue;
        }
        match event {
            None => ensure(run.is_empty(), "frame not reported"),
            Some(Err(FrameError::Oversized)) => {
                ensure(run.len() > MAX_MESSAGE, "frame wrongly oversized")
            }
            Some(Ok(len)) => {
                ensure(
                    len == run.len() && decoder.frame(len) == run.as_slice(),
                    "frame is not the bytes between delimiters",
                );
                decode_both(&run);
            }
            Some(Err(_)) => fail(Violation::Parser("unexpected decoder error")),
        }
        run.clear();
    }
    decode_both(data);
    decode_both(&seal_frame(data));
}

pub(super) fn request_frame(seq: u16, body: Request<'_>) -> Vec<u8> {
    let mut scratch = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; OUT_FRAME];
    let n = encode_frame(&Envelope { seq, body }, &mut scratch, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

fn response_frame(seq: u16, body: Response) -> Vec<u8> {
    let mut scratch = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; OUT_FRAME];
    let n = encode_frame(&Envelope { seq, body }, &mut scratch, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

pub(super) fn seeds() -> Vec<Seed> {
    let img = match Device::<4, 1024>::new(PROTOCOL_BANK) {
        Ok(d) => d.image(Bank::B, Version::new(2, 0, 0, 0), 1, &payload(1200, 3)),
        Err(_) => Ok(Vec::new()),
    }
    .unwrap_or_default();
    let mut session = Vec::new();
    session.extend(request_frame(1, Request::Info));
    session.extend(request_frame(2, Request::Status));
    if let Ok(begin) = Request::upload_begin(&img) {
        session.extend(request_frame(3, begin));
    }
    session.extend(request_frame(
        4,
        Request::UploadChunk {
            offset: 0,
            data: img.get(..1024).unwrap_or(&[]),
        },
    ));
    for (seq, body) in [
        Request::UploadFinish,
        Request::Confirm,
        Request::Reject,
        Request::Rollback,
        Request::Reboot,
    ]
    .into_iter()
    .enumerate()
    {
        session.extend(request_frame(5 + seq as u16, body));
    }
    let mut answers = Vec::new();
    answers.extend(response_frame(1, Response::NextOffset(1024)));
    answers.extend(response_frame(
        2,
        Response::Status(sample_states().first().copied()),
    ));
    answers.extend(response_frame(
        3,
        Response::Error(RemoteError::Update(UpdateError::NotPending)),
    ));
    let mut resync = b"boot: hello\r\n".to_vec();
    resync.push(0);
    resync.extend(vec![0x55; MAX_MESSAGE + 10]);
    resync.push(0);
    resync.extend(request_frame(9, Request::Info));
    vec![
        seed("request-session", session),
        seed("responses", answers),
        seed("text-oversized-resync", resync),
    ]
}
