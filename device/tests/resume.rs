//! Interrupted uploads resume: after a disconnect (new updater, same manifest) or a power cut in
//! the middle of a write, `begin` reports an offset ≤ what was sent, at a sector start, and the
//! upload completes from there without programming any unit twice.

mod common;
use common::*;
use twinbank::testing::CutModel;
use twinbank::{Bank, BankState};

fn resume_after_cut<const W: usize, const E: usize>() {
    let rig0 = Rig::<W, E>::new();
    let img = rig0.image(Bank::B, v(2), 1, 2);
    let m = manifest(&img);
    for (cut_op, model) in [
        (3u64, CutModel::WritePrefix { units: 1 }),
        (5, CutModel::WriteBits { units: 0, seed: 11 }),
        (1, CutModel::ErasePartial { seed: 4 }),
        (u64::MAX, CutModel::Before), // plain disconnect, no cut
    ] {
        let mut rig = Rig::<W, E>::new();
        rig.provision(&rig.image(Bank::A, v(1), 1, 1));
        let sent = {
            let mut up = rig.driver(Bank::A);
            up.flash_mut().cut_at(cut_op, model);
            let mut sent = 0usize;
            let r = (|| {
                let mut off = up.begin(&m)? as usize;
                while off < img.len() {
                    let n = 700.min(img.len() - off);
                    off = up.write(off as u32, &img[off..off + n])? as usize;
                    sent = off;
                    if cut_op == u64::MAX && off > img.len() / 2 {
                        return Ok(()); // disconnect
                    }
                }
                Ok::<(), twinbank::UpdateError>(())
            })();
            if cut_op != u64::MAX {
                assert!(r.is_err(), "{model:?}: the cut must interrupt the upload");
            }
            sent
        };
        rig.flash.power_on();
        // The device reboots into A; B is not bootable meanwhile.
        assert_eq!(rig.boot().unwrap().bank, Bank::A);
        let mut up = rig.driver(Bank::A);
        let resume = up.begin(&m).unwrap() as usize;
        assert!(resume <= sent, "{model:?}: resume {resume} > sent {sent}");
        assert_eq!(resume % E, 0, "resumes at a sector start");
        let mut off = resume;
        while off < img.len() {
            let n = 999.min(img.len() - off);
            off = up.write(off as u32, &img[off..off + n]).unwrap() as usize;
        }
        up.finish().unwrap();
        assert!(matches!(
            rig.state().bank(Bank::B),
            BankState::Pending { .. }
        ));
        let d = rig.boot().unwrap();
        assert_eq!((d.bank, d.version), (Bank::B, v(2)), "{model:?}");
    }
}

for_drivers! {
    resume => resume_after_cut;
}

/// Regression (found by the power-cut harness): a run of 0xff in the image across sector
/// boundaries. Units of 0xff are never programmed, so a resume that restarts at the sector of the
/// last non-0xff byte never programs a unit twice (the strict flash would panic).
fn resume_over_erased_looking_run<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let mut payload = payload(2);
    payload[1500..4900].fill(0xFF);
    let img = rig
        .builder(Bank::B, v(2), 1)
        .sign(&payload, &rig.key)
        .unwrap();
    let m = manifest(&img);
    {
        let mut up = rig.driver(Bank::A);
        up.begin(&m).unwrap();
        up.write(0, &img[..HEADER as usize + 4700]).unwrap();
    } // disconnect
    let mut up = rig.driver(Bank::A);
    let mut off = up.begin(&m).unwrap() as usize;
    assert!(off <= HEADER as usize + 1500);
    while off < img.len() {
        let n = 512.min(img.len() - off);
        off = up.write(off as u32, &img[off..off + n]).unwrap() as usize;
    }
    up.finish().unwrap();
    assert_eq!(rig.boot().unwrap().version, v(2));
}

/// Regression (found by the power-cut harness): a rebuild with the same header as the rejected
/// image still in the bank is uploaded afresh, not resumed over the old bytes.
fn same_header_rebuild_starts_afresh<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let first = rig.image(Bank::B, v(2), 1, 2);
    rig.install(Bank::A, &first).unwrap();
    rig.boot().unwrap();
    rig.driver(Bank::B).reject().unwrap();
    rig.boot().unwrap();
    let rebuild = rig.image(Bank::B, v(2), 1, 3);
    assert_eq!(rebuild[..32], first[..32], "same header bytes");
    let mut up = rig.driver(Bank::A);
    assert_eq!(up.begin(&manifest(&rebuild)), Ok(0));
    rig.install(Bank::A, &rebuild).unwrap();
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
}

for_drivers! {
    erased_run => resume_over_erased_looking_run;
    rebuild => same_header_rebuild_starts_afresh;
}

/// `img` with one more unprotected TLV (an unknown type, ignored by verification) of `n` bytes:
/// the same header, hashed part and digest, but a longer image.
fn with_extra_tlv(img: &[u8], n: usize) -> Vec<u8> {
    let hdr_size = u16::from_le_bytes([img[8], img[9]]) as usize;
    let prot = u16::from_le_bytes([img[10], img[11]]) as usize;
    let body = u32::from_le_bytes([img[12], img[13], img[14], img[15]]) as usize;
    let info = hdr_size + body + prot;
    let total = u16::from_le_bytes([img[info + 2], img[info + 3]]) as usize;
    assert_eq!(
        info + total,
        img.len(),
        "unprotected TLV area ends the image"
    );
    let mut out = img.to_vec();
    out[info + 2..info + 4].copy_from_slice(&((total + 4 + n) as u16).to_le_bytes());
    out.extend_from_slice(&0x7ffe_u16.to_le_bytes());
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend(std::iter::repeat_n(0x5a, n));
    out
}

/// Two images with the same 32 header bytes and digest: `short` ends in the sector before the
/// one where `long` ends (issue 16, bug 1: the resume took one for a partial upload of the other).
fn short_and_long<const W: usize, const E: usize>(rig: &Rig<W, E>) -> (Vec<u8>, Vec<u8>) {
    // Grow the payload until the signed image ends just short of a sector boundary.
    let bytes: Vec<u8> = (0..E).map(|i| (i * 7 + 3) as u8).collect();
    let mut len = 1;
    loop {
        let short = rig
            .builder(Bank::B, v(2), 1)
            .sign(&bytes[..len], &rig.key)
            .unwrap();
        let room = E - short.len() % E;
        if room <= 24 && !short.len().is_multiple_of(E) {
            let long = with_extra_tlv(&short, 64);
            assert_eq!(short[..32], long[..32]);
            assert!(short.len().div_ceil(E) < long.len().div_ceil(E));
            return (short, long);
        }
        len += room.saturating_sub(8).max(1);
        assert!(len < E, "no payload size fits");
    }
}

/// Issue 16, bug 1 (resume point past what was uploaded): stale bytes of an older image lie in
/// the sector where the longer image ends; `begin` of the longer image after an interrupted upload
/// of the shorter one must not resume from those stale bytes.
fn resume_never_trusts_another_images_bytes<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    if rig.layout.bank_size() < 2 * E as u32 {
        // One-sector banks: the two images cannot end in different sectors.
        return not_applicable();
    }
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let (short, long) = short_and_long(&rig);
    let b = rig.layout.bank(Bank::B).offset.0 as usize;
    // An older image's bytes in the sector past the short image (a programmer wrote them).
    let stale_at = short.len().div_ceil(E) * E;
    rig.flash.load(b + stale_at, &[0x00; 32]);
    let sent = 400usize;
    {
        let mut up = rig.driver(Bank::A);
        assert_eq!(up.begin(&manifest(&short)), Ok(0));
        up.write(0, &short[..sent]).unwrap();
    } // the host disconnects
    let mut up = rig.driver(Bank::A);
    let resume = up.begin(&manifest(&long)).unwrap() as usize;
    assert!(
        resume <= sent,
        "resume point {resume} past the {sent} bytes uploaded"
    );
    let mut off = resume;
    while off < long.len() {
        let n = 300.min(long.len() - off);
        off = up.write(off as u32, &long[off..off + n]).unwrap() as usize;
    }
    up.finish().expect("the longer image installs");
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
}

/// Issue 16, bug 1 (a unit programmed twice): a stale byte sits in the write unit that holds the
/// last byte of the longer image, past its end; the resume scan (over the longer image's span)
/// sees nothing there and returns 0, and the upload programs that unit a second time.
fn resume_erases_every_sector_the_new_image_spans<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    if W == 1 || rig.layout.bank_size() < 2 * E as u32 {
        // A 1-byte unit holds no byte past the image's end; one-sector banks: as above.
        return not_applicable();
    }
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let (short, long) = short_and_long(&rig);
    let (short, long) = if long.len() % W == 0 {
        // The long image must end inside a write unit: one byte more of the unknown TLV.
        (short.clone(), with_extra_tlv(&short, 65))
    } else {
        (short, long)
    };
    assert_ne!(long.len() % W, 0);
    let b = rig.layout.bank(Bank::B).offset.0 as usize;
    let unit_end = long.len().div_ceil(W) * W;
    rig.flash.load(b + unit_end - 1, &[0x00]);
    {
        let mut up = rig.driver(Bank::A);
        assert_eq!(up.begin(&manifest(&short)), Ok(0));
        up.write(0, &short[..400]).unwrap();
    }
    // The strict flash panics on a second program of a unit.
    rig.install(Bank::A, &long)
        .expect("the longer image installs");
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
}

for_drivers! {
    stale_bytes_past_short => resume_never_trusts_another_images_bytes;
    stale_unit_at_long_end => resume_erases_every_sector_the_new_image_spans;
}
