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
