//! The full life cycle on the strict flash, over three geometries: factory image confirmed in
//! A; update to B; trial; confirm; update to A; the new image never confirms (attempts run out)
//! → B boots again; operator rollback and forward again.

mod common;
use common::*;
use twinbank::boot::{BootReason, RollbackCause};
use twinbank::{Bank, BankState, UpdateError};

fn life_cycle<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    let v1 = rig.image(Bank::A, v(1), 1, 1);
    let id1 = rig.provision(&v1);

    // Factory image: normal boot, and a reset does not change anything.
    for _ in 0..3 {
        let d = rig.boot().unwrap();
        assert_eq!(
            (d.bank, d.reason, d.version),
            (Bank::A, BootReason::Normal, v(1))
        );
        assert_eq!(
            d.vector_table,
            rig.layout.bank_address(Bank::A) + HEADER as u32
        );
    }
    let before = rig.state_bytes();
    rig.boot().unwrap();
    assert_eq!(rig.state_bytes(), before, "a normal boot writes nothing");

    // Update to B.
    let v2 = rig.image(Bank::B, v(2), 2, 2);
    let id2 = rig.install(Bank::A, &v2).unwrap();
    let s = rig.state();
    assert_eq!(s.preferred, Bank::B);
    assert_eq!(
        *s.bank(Bank::B),
        BankState::Pending {
            image: id2,
            attempts_left: 3
        }
    );
    assert_eq!(*s.bank(Bank::A), BankState::Confirmed(id1));
    assert_eq!(s.min_security_counter, 1, "counter only rises at confirm");

    // Trial boot spends one attempt; the app confirms.
    let d = rig.boot().unwrap();
    assert_eq!(
        (d.bank, d.reason),
        (Bank::B, BootReason::Trial { attempts_left: 2 })
    );
    rig.driver(Bank::B).confirm().unwrap();
    let s = rig.state();
    assert_eq!(*s.bank(Bank::B), BankState::Confirmed(id2));
    assert_eq!(s.min_security_counter, 2);
    assert_eq!(*s.bank(Bank::A), BankState::Confirmed(id1), "fallback kept");
    assert_eq!(rig.boot().unwrap().reason, BootReason::Normal);
    // Confirm again: no-op.
    let before = rig.state_bytes();
    rig.driver(Bank::B).confirm().unwrap();
    assert_eq!(rig.state_bytes(), before);

    // Update to A (over the old fallback); it never confirms.
    let v3 = rig.image(Bank::A, v(3), 2, 3);
    rig.install(Bank::B, &v3).unwrap();
    assert_eq!(
        *rig.state().bank(Bank::A),
        BankState::Pending {
            image: twinbank::ImageId {
                ..rig.state().bank(Bank::A).image().copied().unwrap()
            },
            attempts_left: 3
        }
    );
    for left in (0..3).rev() {
        let d = rig.boot().unwrap();
        assert_eq!(
            (d.bank, d.reason),
            (
                Bank::A,
                BootReason::Trial {
                    attempts_left: left
                }
            )
        );
    }
    let d = rig.boot().unwrap();
    assert_eq!(d.bank, Bank::B);
    assert_eq!(
        d.reason,
        BootReason::RolledBack {
            from: Bank::A,
            cause: RollbackCause::AttemptsExhausted
        }
    );
    assert!(matches!(rig.state().bank(Bank::A), BankState::Rejected(_)));
    // Later resets keep running the fallback.
    for _ in 0..2 {
        let d = rig.boot().unwrap();
        assert_eq!(
            (d.bank, d.reason),
            (Bank::B, BootReason::Fallback { rejected: Bank::A })
        );
    }
    // Nothing to roll back to: A is rejected.
    assert_eq!(rig.driver(Bank::B).rollback(), Err(UpdateError::NoFallback));

    // Install v4 into A, confirm it, then operator rollback to B and forward again.
    let v4 = rig.image(Bank::A, v(4), 2, 4);
    let id4 = rig.install(Bank::B, &v4).unwrap();
    assert_eq!(rig.boot().unwrap().bank, Bank::A);
    rig.driver(Bank::A).confirm().unwrap();
    assert_eq!(rig.driver(Bank::A).rollback().unwrap(), id2);
    let d = rig.boot().unwrap();
    assert_eq!(
        (d.bank, d.version, d.reason),
        (Bank::B, v(2), BootReason::Normal)
    );
    assert_eq!(rig.driver(Bank::B).rollback().unwrap(), id4);
    let d = rig.boot().unwrap();
    assert_eq!((d.bank, d.version), (Bank::A, v(4)));
    assert_eq!(rig.state().min_security_counter, 2);
}

fn reject_rolls_back_at_once<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    let id1 = rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let v2 = rig.image(Bank::B, v(2), 1, 2);
    rig.install(Bank::A, &v2).unwrap();
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
    // Reject from the wrong bank's point of view is refused.
    assert_eq!(rig.driver(Bank::A).reject(), Err(UpdateError::NotPending));
    rig.driver(Bank::B).reject().unwrap();
    let s = rig.state();
    assert_eq!(s.preferred, Bank::A);
    assert_eq!(*s.bank(Bank::A), BankState::Confirmed(id1));
    assert_eq!(s.min_security_counter, 1);
    let d = rig.boot().unwrap();
    assert_eq!(
        (d.bank, d.reason),
        (Bank::A, BootReason::Fallback { rejected: Bank::B })
    );
}

fn install_guards<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let v2 = rig.image(Bank::B, v(2), 1, 2);
    rig.install(Bank::A, &v2).unwrap();
    // A switch is pending: no new install before the reboot.
    let v3 = rig.image(Bank::B, v(3), 1, 3);
    assert_eq!(rig.install(Bank::A, &v3), Err(UpdateError::SwitchPending));
    rig.boot().unwrap();
    // Running a trial: installing would destroy the only confirmed image.
    let v3a = rig.image(Bank::A, v(3), 1, 3);
    assert_eq!(
        rig.install(Bank::B, &v3a),
        Err(UpdateError::TrialInProgress)
    );
    // Confirm is only for the running trial bank.
    assert_eq!(rig.driver(Bank::A).confirm(), Err(UpdateError::NotPending));
}

fn chunk_rules<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let img = rig.image(Bank::B, v(2), 1, 2);
    let m = manifest(&img);
    let ops_before;
    {
        let mut up = rig.driver(Bank::A);
        assert_eq!(up.write(0, &img[..10]), Err(UpdateError::NoUpload));
        assert_eq!(up.begin(&m), Ok(0));
        assert_eq!(up.write(0, &img[..1500]), Ok(1500));
        assert_eq!(
            up.write(1600, &img[1600..1700]),
            Err(UpdateError::OutOfOrder { expected: 1500 })
        );
        ops_before = up.flash_mut().counters.writes;
        // Resending bytes already written (flash) and buffered (partial unit) succeeds...
        assert_eq!(up.write(3, &img[3..1500]), Ok(1500));
        assert_eq!(up.write(1490, &img[1490..1510]), Ok(1510));
        // ...but different content is refused.
        let mut bad = img[1000..1010].to_vec();
        bad[4] ^= 1;
        assert_eq!(
            up.write(1000, &bad),
            Err(UpdateError::ContentMismatch { offset: 1004 })
        );
        assert_eq!(
            up.write(img.len() as u32 - 2, &img[img.len() - 2..]),
            Err(UpdateError::OutOfOrder { expected: 1510 })
        );
        assert_eq!(
            up.finish(),
            Err(UpdateError::Incomplete {
                received: 1510,
                total: img.len() as u32
            })
        );
        let end = img.len() as u32;
        let mut extra = img[1510..].to_vec();
        extra.push(0);
        assert_eq!(up.write(1510, &extra), Err(UpdateError::OutOfRange));
        assert_eq!(up.write(1510, &img[1510..]), Ok(end));
        up.finish().unwrap();
    }
    let programmed = rig.flash.counters.writes - ops_before;
    // The resends did not program anything again: only the new bytes were written.
    let new_units = (img.len() - 1500).div_ceil(W);
    assert!(
        programmed as usize <= new_units + 2,
        "{programmed} writes for {new_units} units"
    );
}

for_drivers! {
    full_life_cycle => life_cycle;
    reject => reject_rolls_back_at_once;
    guards => install_guards;
    chunks => chunk_rules;
}
