//! The serial protocol end to end in memory: a host encodes requests, the device-side server
//! answers through the updater on the strict flash. Garbage, oversized, truncated and corrupted
//! frames get an error or are dropped, and the next valid request is answered correctly.

mod common;
use common::*;
use twinbank::protocol::message::{RemoteError, Request, Response};
use twinbank::protocol::server::OUT_FRAME;
use twinbank::protocol::{
    encode_frame, Envelope, FrameDecoder, FrameError, Server, MAX_CHUNK, MAX_FRAME,
};
use twinbank::testing::StrictFlash;
use twinbank::{Bank, BankState, UpdateError};

type Srv<'a> = Server<'static, &'a mut StrictFlash<4, 4096>>;

/// Feeds `bytes` to the device; returns every response it produced.
fn feed(server: &mut Srv<'_>, decoder: &mut FrameDecoder, bytes: &[u8]) -> Vec<Envelope<Response>> {
    let mut out = vec![0u8; OUT_FRAME];
    let mut responses = Vec::new();
    for &b in bytes {
        let n = match decoder.push(b) {
            Some(Ok(len)) => {
                let frame = decoder.frame(len);
                let mut copy = frame.to_vec();
                server.handle_frame(&mut copy, &mut out)
            }
            Some(Err(e)) => server.frame_error(e, &mut out),
            None => continue,
        };
        assert_eq!(out[0], 0, "responses start with a delimiter");
        let mut resp = out[1..n - 1].to_vec();
        responses.push(twinbank::protocol::decode_frame::<Envelope<Response>>(&mut resp).unwrap());
    }
    responses
}

fn request(seq: u16, body: Request<'_>) -> Vec<u8> {
    let mut scratch = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; MAX_FRAME + 8];
    let n = encode_frame(&Envelope { seq, body }, &mut scratch, &mut out).unwrap();
    out.truncate(n);
    out
}

fn call(server: &mut Srv<'_>, decoder: &mut FrameDecoder, seq: u16, body: Request<'_>) -> Response {
    let r = feed(server, decoder, &request(seq, body));
    assert_eq!(r.len(), 1, "one response per request");
    assert_eq!(r[0].seq, seq, "the response echoes the sequence number");
    r[0].body.clone()
}

#[test]
fn upload_activate_confirm_over_frames() {
    let mut rig = Rig::<4, 4096>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let img = rig.image(Bank::B, v(2), 1, 2);
    let m = manifest(&img);
    let config = rig.config();
    let mut server = Server::new(rig.updater(Bank::A), config);
    let mut dec = FrameDecoder::new();

    let Response::Info(info) = call(&mut server, &mut dec, 1, Request::Info) else {
        panic!()
    };
    assert_eq!(info.running, Bank::A);
    assert_eq!(info.running_version, Some(v(1)));
    let begin = Request::upload_begin(&m, &img).unwrap();
    assert_eq!(
        call(&mut server, &mut dec, 2, begin.clone()),
        Response::NextOffset(0)
    );
    let mut wire = 0usize;
    let mut off = 0usize;
    let mut seq = 3;
    while off < img.len() {
        let n = MAX_CHUNK.min(img.len() - off);
        let req = request(
            seq,
            Request::UploadChunk {
                offset: off as u32,
                data: &img[off..off + n],
            },
        );
        wire += req.len();
        let r = feed(&mut server, &mut dec, &req);
        assert_eq!(r[0].body, Response::NextOffset((off + n) as u32));
        // A retransmission of the same chunk is harmless.
        let again = feed(&mut server, &mut dec, &req);
        assert_eq!(again[0].body, Response::NextOffset((off + n) as u32));
        off += n;
        seq += 1;
    }
    let efficiency = img.len() as f64 / wire as f64;
    println!(
        "upload: {} payload bytes, {} bytes on the wire, ratio {efficiency:.3}",
        img.len(),
        wire
    );
    assert!(efficiency >= 0.95, "{efficiency}");
    assert_eq!(
        call(&mut server, &mut dec, 100, Request::UploadFinish),
        Response::Activated(v(2))
    );
    let Response::Status(Some(s)) = call(&mut server, &mut dec, 101, Request::Status) else {
        panic!()
    };
    assert!(matches!(
        s.bank(Bank::B),
        BankState::Pending {
            attempts_left: 3,
            ..
        }
    ));
    assert_eq!(
        call(&mut server, &mut dec, 102, Request::Reboot),
        Response::Rebooting
    );
    assert!(server.reboot_requested());
    // Confirming from bank A is refused: A is not on trial.
    assert_eq!(
        call(&mut server, &mut dec, 103, Request::Confirm),
        Response::Error(RemoteError::Update(UpdateError::NotPending))
    );
}

#[test]
fn garbage_is_survived() {
    let mut rig = Rig::<4, 4096>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let state_before = rig.state_bytes();
    let config = rig.config();
    let mut server = Server::new(rig.updater(Bank::A), config);
    let mut dec = FrameDecoder::new();

    // Random bytes (with delimiters sprinkled in): each "frame" gets an error, or nothing.
    let mut rng = twinbank::testing::SplitMix64(42);
    let garbage: Vec<u8> = (0..5000).map(|_| rng.next_u64() as u8).collect();
    for r in feed(&mut server, &mut dec, &garbage) {
        assert_eq!(r.seq, 0);
        assert!(
            matches!(r.body, Response::Error(RemoteError::Frame(_))),
            "{r:?}"
        );
    }
    // Flush whatever partial frame the garbage left, then a valid request works.
    feed(&mut server, &mut dec, &[0]);
    assert!(matches!(
        call(&mut server, &mut dec, 7, Request::Status),
        Response::Status(Some(_))
    ));

    // A frame of maximum size + 1: dropped as oversized.
    let mut big = vec![0x55u8; MAX_FRAME + 1];
    big.push(0);
    let r = feed(&mut server, &mut dec, &big);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].body,
        Response::Error(RemoteError::Frame(FrameError::Oversized))
    );
    assert!(matches!(
        call(&mut server, &mut dec, 8, Request::Info),
        Response::Info(_)
    ));

    // A truncated frame (delimiter arrives early) and a valid frame with a bad CRC.
    let full = request(9, Request::Status);
    let mut truncated = full[..full.len() / 2].to_vec();
    truncated.push(0);
    let r = feed(&mut server, &mut dec, &truncated);
    assert!(
        matches!(
            r[0].body,
            Response::Error(RemoteError::Frame(
                FrameError::BadCrc | FrameError::BadEncoding
            ))
        ),
        "{r:?}"
    );
    let mut corrupt = full.clone();
    corrupt[2] ^= 0x01;
    if corrupt[2] == 0 {
        corrupt[2] = 0x7f;
    }
    let r = feed(&mut server, &mut dec, &corrupt);
    assert!(
        matches!(r[0].body, Response::Error(RemoteError::Frame(_))),
        "{r:?}"
    );
    assert!(matches!(
        call(&mut server, &mut dec, 10, Request::Status),
        Response::Status(Some(_))
    ));

    // An oversized chunk request inside a valid frame is refused.
    let data = vec![1u8; MAX_CHUNK + 1];
    assert_eq!(
        call(
            &mut server,
            &mut dec,
            11,
            Request::UploadChunk {
                offset: 0,
                data: &data
            }
        ),
        Response::Error(RemoteError::ChunkTooLarge)
    );
    let _ = server;
    assert_eq!(
        rig.state_bytes(),
        state_before,
        "garbage changed the boot state"
    );
}
