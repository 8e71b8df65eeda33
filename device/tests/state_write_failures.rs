//! State records when the flash driver reports write errors (not power cuts): a write refused
//! before programming, and a write that landed but reported an error. Both must keep the newest
//! acknowledged state across a reset.

mod common;
use common::*;
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use twinbank::testing::{StrictError, StrictFlash};
use twinbank::{Bank, BankState};

/// A flash whose next write fails: `Skip` fails before programming anything (busy/timeout/
/// write-protect error), `Landed` programs everything and then reports an error (timeout
/// waiting for BSY while the program completed).
#[derive(Clone, Copy, PartialEq)]
enum Fail {
    None,
    Skip,
    Landed,
}

struct Flaky<'a, const W: usize, const E: usize> {
    inner: &'a mut StrictFlash<W, E>,
    next_write: Fail,
}

impl<const W: usize, const E: usize> ErrorType for Flaky<'_, W, E> {
    type Error = StrictError;
}
impl<const W: usize, const E: usize> ReadNorFlash for Flaky<'_, W, E> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), StrictError> {
        self.inner.read(o, b)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}
impl<const W: usize, const E: usize> NorFlash for Flaky<'_, W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;
    fn erase(&mut self, f: u32, t: u32) -> Result<(), StrictError> {
        self.inner.erase(f, t)
    }
    fn write(&mut self, o: u32, b: &[u8]) -> Result<(), StrictError> {
        match std::mem::replace(&mut self.next_write, Fail::None) {
            Fail::None => self.inner.write(o, b),
            Fail::Skip => Err(StrictError::PowerCut), // any driver error, nothing programmed
            Fail::Landed => {
                self.inner.write(o, b)?;
                Err(StrictError::PowerCut)
            }
        }
    }
}

/// Provision A, install B, trial-boot B: returns the rig with B running on trial.
fn trial_of_b() -> Rig<8, 4096> {
    let mut rig = Rig::<8, 4096>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let img = rig.image(Bank::B, v(2), 5, 2);
    rig.install(Bank::A, &img).unwrap();
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
    rig
}

/// A confirm whose first record write fails before programming, retried successfully: the
/// device reported "confirmed" but after a reset the state is back to Pending, and the minimum
/// security counter is back down. Root cause: the failed write consumed a blank slot, the
/// retry went into the next slot, and `StateStore::open` stops scanning at the first blank slot.
#[test]
fn confirm_retried_after_a_failed_write_survives_a_reset() {
    let mut rig = trial_of_b();
    let config = rig.config();
    {
        let flaky = Flaky {
            inner: &mut rig.flash,
            next_write: Fail::Skip,
        };
        let mut up = twinbank::Updater::new(flaky, config, Bank::B).unwrap();
        assert!(up.confirm().is_err(), "first attempt fails");
        up.confirm().expect("retry succeeds");
        assert!(matches!(
            up.state().unwrap().bank(Bank::B),
            BankState::Confirmed(_)
        ));
        assert_eq!(up.state().unwrap().min_security_counter, 5);
    }
    // Reset.
    let s = rig.state();
    assert!(
        matches!(s.bank(Bank::B), BankState::Confirmed(_)),
        "after reset the confirm is lost: {:?}",
        s.bank(Bank::B)
    );
    assert_eq!(s.min_security_counter, 5, "minimum counter went back down");
}

/// A record write that lands but reports an error consumed its sequence number: the next record
/// (written after the updater re-read the flash) gets a higher one and wins at the next scan.
/// And the decision after the failure follows the flash: the reject landed, so a confirm is
/// refused.
#[test]
fn a_record_after_a_landed_but_failed_write_wins() {
    let mut rig = trial_of_b();
    let config = rig.config();
    let next = rig.image(Bank::A, v(3), 5, 3);
    {
        let flaky = Flaky {
            inner: &mut rig.flash,
            next_write: Fail::Landed,
        };
        let mut up = twinbank::Updater::new(flaky, config, Bank::B).unwrap();
        // Confirm lands (B Confirmed) but reports an error...
        assert!(up.confirm().is_err());
        // ...the app retries: already confirmed on flash, nothing to write.
        up.confirm().expect("confirm");
        // The next change (an install into A gives A up first) must win after a reset.
        up.begin(&manifest(&next)).expect("begin");
    }
    let s = rig.state();
    assert!(matches!(s.bank(Bank::B), BankState::Confirmed(_)), "{s:?}");
    assert!(
        matches!(s.bank(Bank::A), BankState::Receiving(r) if r.erased),
        "the newest record (begin) lost to an older one: {s:?}"
    );
}

/// After a reject that landed but reported an error, the state on flash says rejected: a confirm
/// in the same boot is refused instead of overriding it from a stale RAM copy.
#[test]
fn confirm_after_a_landed_but_failed_reject_is_refused() {
    let mut rig = trial_of_b();
    let config = rig.config();
    {
        let flaky = Flaky {
            inner: &mut rig.flash,
            next_write: Fail::Landed,
        };
        let mut up = twinbank::Updater::new(flaky, config, Bank::B).unwrap();
        assert!(up.reject().is_err());
        assert_eq!(up.confirm(), Err(twinbank::UpdateError::NotPending));
    }
    let s = rig.state();
    assert!(matches!(s.bank(Bank::B), BankState::Rejected(_)), "{s:?}");
    assert_eq!(s.preferred, Bank::A);
}

/// Issue 16, bug 2: a confirm whose record lands but whose write reports an error, then a
/// rollback in the same boot. The rollback must decide from what the flash holds (the image is
/// confirmed and the minimum counter is 5), not from the stale RAM copy (pending, minimum 1):
/// the minimum counter never goes back down.
#[test]
fn minimum_counter_never_decreases_after_a_confirm_that_reported_an_error() {
    let mut rig = trial_of_b();
    let config = rig.config();
    {
        let flaky = Flaky {
            inner: &mut rig.flash,
            next_write: Fail::Landed,
        };
        let mut up = twinbank::Updater::new(flaky, config, Bank::B).unwrap();
        assert!(up.confirm().is_err(), "the driver reports an error");
        // The operator (or the app) now asks for a rollback to A (counter 1).
        let r = up.rollback();
        assert!(r.is_err(), "rollback below the confirmed minimum: {r:?}");
        let r = up.reject();
        assert!(r.is_err(), "reject of a confirmed image: {r:?}");
    }
    let s = rig.state();
    assert_eq!(s.min_security_counter, 5, "minimum counter went back down");
    assert!(matches!(s.bank(Bank::B), BankState::Confirmed(_)), "{s:?}");
    assert_eq!(s.preferred, Bank::B);
}
