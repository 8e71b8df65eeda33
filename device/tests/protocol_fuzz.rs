//! Random request sequences through the protocol server and updater, with reboots, and random
//! or CRC-valid frames, on a device rig that checks the invariants of
//! `twinbank::testing::invariants` after every frame and every boot: the strict flash panics on
//! any reprogram, every boot finds a verified image, the running bank never changes, a refused
//! request changes neither the state nor a confirmed image, and a following valid upload
//! completes and boots. Deterministic (seeded) so a failure replays.

use twinbank::protocol::message::{Request, Response};
use twinbank::testing::device::Device;
use twinbank::testing::invariants::payload;
use twinbank::testing::SplitMix64;
use twinbank::{Bank, Version};

/// Payload of the test images: spans several 1 KiB sectors and is not write-aligned.
const PAYLOAD: usize = 5001;
/// Bank size of the test device.
const BANK: u32 = 16 * 1024;

fn v(major: u8) -> Version {
    Version::new(major, 0, 0, 0)
}

/// What the random sequences did, so the test fails when they stop reaching the interesting
/// states.
#[derive(Debug, Default)]
struct Tally {
    activated: usize,
    confirmed: usize,
    rolled_back: usize,
    refused: usize,
}

#[test]
fn random_operations_keep_the_invariants() {
    let mut tally = Tally::default();
    for seed in 0..40u64 {
        let mut rng = SplitMix64(seed);
        let mut dev = Device::<8, 1024>::new(BANK).unwrap();
        dev.provision(&dev.image(Bank::A, v(1), 1, &payload(PAYLOAD, 1)).unwrap())
            .unwrap();
        let mut imgs = Vec::new();
        for (i, bank) in [Bank::A, Bank::B].into_iter().enumerate() {
            for c in 1..=3u32 {
                let body = payload(PAYLOAD, (i as u8) * 10 + c as u8);
                imgs.push(dev.image(bank, v(2 + c as u8), c, &body).unwrap());
            }
        }
        let mut seq = 0u16;
        for boot in 0..12 {
            dev.power_on()
                .unwrap_or_else(|e| panic!("seed {seed} boot {boot}: {e}"));
            let mut cur: Option<usize> = None;
            let mut next = 0usize;
            for _ in 0..(rng.next_u64() % 40) {
                let r = rng.next_u64() % 100;
                let answer;
                seq = seq.wrapping_add(1);
                if r < 10 {
                    let k = (rng.next_u64() % imgs.len() as u64) as usize;
                    answer = dev.request(seq, &Request::upload_begin(&imgs[k]).unwrap());
                    cur = Some(k);
                    next = 0;
                } else if r < 80 {
                    let Some(k) = cur else { continue };
                    let img = &imgs[k];
                    let back = (rng.next_u64() % 300) as usize;
                    let off = next.saturating_sub(back).min(img.len());
                    let n = ((rng.next_u64() % 1024) as usize).min(img.len() - off);
                    answer = dev.request(
                        seq,
                        &Request::UploadChunk {
                            offset: off as u32,
                            data: &img[off..off + n],
                        },
                    );
                } else {
                    let body = match r {
                        80..=87 => Request::UploadFinish,
                        88..=92 => Request::Confirm,
                        93..=95 => Request::Reject,
                        _ => Request::Rollback,
                    };
                    answer = dev.request(seq, &body);
                }
                let answer = answer.unwrap_or_else(|e| panic!("seed {seed} boot {boot}: {e}"));
                match answer {
                    Response::NextOffset(n) => next = n as usize,
                    Response::Activated(_) => tally.activated += 1,
                    Response::Done => tally.confirmed += 1,
                    Response::SwitchedTo(..) => tally.rolled_back += 1,
                    Response::Error(_) => tally.refused += 1,
                    _ => {}
                }
            }
            dev.check_upload_boots()
                .unwrap_or_else(|e| panic!("seed {seed} boot {boot}: {e}"));
        }
    }
    assert!(
        tally.activated > 0 && tally.confirmed > 0 && tally.rolled_back > 0 && tally.refused > 0,
        "{tally:?}"
    );
}

#[test]
fn random_frames_keep_the_invariants() {
    let mut dev = Device::<4, 4096>::new(4096).unwrap();
    dev.provision(&dev.image(Bank::A, v(1), 1, &payload(1000, 1)).unwrap())
        .unwrap();
    dev.power_on().unwrap();
    let mut rng = SplitMix64(3);
    let (mut frames, mut answers) = (0usize, 0usize);
    for _ in 0..200_000 {
        let len = (rng.next_u64() % 64) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| (rng.next_u64() as u8).max(1)).collect();
        f.push(0);
        frames += usize::from(len > 0);
        answers += dev.feed(&f).unwrap_or_else(|e| panic!("{e}")).len();
        // Valid COBS + CRC around random postcard bytes.
        let body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&body);
        let mut raw = body.clone();
        raw.extend_from_slice(&crc.to_le_bytes());
        let mut enc = vec![0u8; raw.len() + raw.len() / 254 + 2];
        let n = cobs::encode(&raw, &mut enc);
        enc.truncate(n);
        enc.push(0);
        frames += 1;
        answers += dev.feed(&enc).unwrap_or_else(|e| panic!("{e}")).len();
    }
    assert_eq!(answers, frames, "every frame gets exactly one answer");
    dev.check_upload_boots().unwrap();
}
