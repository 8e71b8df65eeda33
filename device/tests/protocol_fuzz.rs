//! Random request sequences through the protocol server and updater, with reboots, and random
//! or CRC-valid frames: the strict flash panics on any reprogram, and every boot finds a verified image.

mod common;
use common::*;
use twinbank::protocol::message::{Envelope, Request};
use twinbank::protocol::server::OUT_FRAME;
use twinbank::protocol::{encode_frame, Server, MAX_FRAME};
use twinbank::testing::SplitMix64;
use twinbank::Bank;

fn frame(body: Request<'_>) -> Vec<u8> {
    let mut scratch = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; MAX_FRAME + 8];
    let n = encode_frame(&Envelope { seq: 1, body }, &mut scratch, &mut out).unwrap();
    out.truncate(n - 1); // without the delimiter
    out
}

#[test]
fn random_operations_never_brick_or_reprogram() {
    for seed in 0..40u64 {
        let mut rng = SplitMix64(seed);
        let mut rig = Rig::<8, 1024>::new();
        rig.provision(&rig.image(Bank::A, v(1), 1, 1));
        let mut imgs = Vec::new();
        for (i, bank) in [Bank::A, Bank::B].into_iter().enumerate() {
            for c in 1..=3u32 {
                imgs.push(rig.image(bank, v(2 + c as u8), c, (i as u8) * 10 + c as u8));
            }
        }
        for _boot in 0..12 {
            let d = rig
                .boot()
                .unwrap_or_else(|e| panic!("seed {seed}: bricked: {e:?}"));
            let config = rig.config();
            let mut server = Server::new(rig.updater(d.bank), config);
            let mut out = vec![0u8; OUT_FRAME];
            let mut cur: Option<usize> = None;
            let mut next = 0usize;
            for _ in 0..(rng.next_u64() % 40) {
                let r = rng.next_u64() % 100;
                let req_bytes;
                if r < 10 {
                    let k = (rng.next_u64() % imgs.len() as u64) as usize;
                    req_bytes = frame(Request::upload_begin(&imgs[k]).unwrap());
                    cur = Some(k);
                    next = 0;
                } else if r < 80 {
                    let Some(k) = cur else { continue };
                    let img = &imgs[k];
                    let back = (rng.next_u64() % 300) as usize;
                    let off = next.saturating_sub(back).min(img.len());
                    let n = ((rng.next_u64() % 1024) as usize).min(img.len() - off);
                    req_bytes = frame(Request::UploadChunk {
                        offset: off as u32,
                        data: &img[off..off + n],
                    });
                    next = next.max(off + n);
                } else if r < 88 {
                    req_bytes = frame(Request::UploadFinish);
                } else if r < 93 {
                    req_bytes = frame(Request::Confirm);
                } else if r < 96 {
                    req_bytes = frame(Request::Reject);
                } else {
                    req_bytes = frame(Request::Rollback);
                }
                let mut f = req_bytes;
                server.handle_frame(&mut f, &mut out);
                if let Some(n) = server.updater().next_offset() {
                    next = n as usize;
                }
            }
        }
    }
}

#[test]
fn random_frames_never_panic() {
    let mut rig = Rig::<4, 4096>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let config = rig.config();
    let mut server = Server::new(rig.updater(Bank::A), config);
    let mut rng = SplitMix64(3);
    let mut out = vec![0u8; OUT_FRAME];
    for _ in 0..200_000 {
        let len = (rng.next_u64() % 64) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| (rng.next_u64() as u8).max(1)).collect();
        server.handle_frame(&mut f, &mut out);
        // Valid COBS + CRC around random postcard bytes.
        let body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&body);
        let mut raw = body.clone();
        raw.extend_from_slice(&crc.to_le_bytes());
        let mut enc = vec![0u8; raw.len() + raw.len() / 254 + 2];
        let n = cobs::encode(&raw, &mut enc);
        enc.truncate(n);
        server.handle_frame(&mut enc, &mut out);
    }
}
