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
            let mut up = rig.updater(Bank::A);
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
        let mut up = rig.updater(Bank::A);
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

for_geometries! {
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
        let mut up = rig.updater(Bank::A);
        up.begin(&m).unwrap();
        up.write(0, &img[..HEADER as usize + 4700]).unwrap();
    } // disconnect
    let mut up = rig.updater(Bank::A);
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
    rig.updater(Bank::B).reject().unwrap();
    rig.boot().unwrap();
    let rebuild = rig.image(Bank::B, v(2), 1, 3);
    assert_eq!(rebuild[..32], first[..32], "same header bytes");
    let mut up = rig.updater(Bank::A);
    assert_eq!(up.begin(&manifest(&rebuild)), Ok(0));
    rig.install(Bank::A, &rebuild).unwrap();
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
}

for_geometries! {
    erased_run => resume_over_erased_looking_run;
    rebuild => same_header_rebuild_starts_afresh;
}
