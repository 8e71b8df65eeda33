//! Transient read errors of the flash driver: a read that fails says nothing about the flash
//! contents, so it must never be taken as a verdict on an image (found by the device-life walk,
//! issue 16).

mod common;
use common::*;
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use twinbank::testing::{StrictError, StrictFlash};
use twinbank::{Bank, BankState, UpdateError};

/// A flash whose next read fails once when `fail_next_read` is set (a bus glitch).
struct Glitchy<'a, const W: usize, const E: usize> {
    inner: &'a mut StrictFlash<W, E>,
    fail_next_read: bool,
}

impl<const W: usize, const E: usize> ErrorType for Glitchy<'_, W, E> {
    type Error = StrictError;
}
impl<const W: usize, const E: usize> ReadNorFlash for Glitchy<'_, W, E> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), StrictError> {
        if std::mem::take(&mut self.fail_next_read) {
            return Err(StrictError::PowerCut); // any driver error
        }
        self.inner.read(o, b)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}
impl<const W: usize, const E: usize> NorFlash for Glitchy<'_, W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;
    fn erase(&mut self, f: u32, t: u32) -> Result<(), StrictError> {
        self.inner.erase(f, t)
    }
    fn write(&mut self, o: u32, b: &[u8]) -> Result<(), StrictError> {
        self.inner.write(o, b)
    }
}

/// A complete, correct upload whose verification at `finish` hits a transient read error: the
/// upload is not thrown away (the target is not recorded empty) and `finish` succeeds when
/// called again. Before the fix the error counted as a failed verification: the target became
/// Empty and the whole image had to be sent again.
#[test]
fn a_read_error_while_finish_verifies_keeps_the_upload() {
    let mut rig = Rig::<8, 1024>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let img = rig.image(Bank::B, v(2), 2, 2);
    let config = rig.config();
    {
        let glitchy = Glitchy {
            inner: &mut rig.flash,
            fail_next_read: false,
        };
        let mut up = twinbank::Updater::new(glitchy, config, Bank::A).unwrap();
        let mut off = up.begin(&manifest(&img)).unwrap() as usize;
        while off < img.len() {
            let n = 500.min(img.len() - off);
            off = up.write(off as u32, &img[off..off + n]).unwrap() as usize;
        }
        up.flash_mut().fail_next_read = true;
        assert_eq!(
            up.finish(),
            Err(UpdateError::Flash(twinbank::flash::FlashFault::Other)),
            "the read error is reported as such"
        );
        assert!(
            matches!(up.state().unwrap().bank(Bank::B), BankState::Receiving(_)),
            "a read error gave the upload up: {:?}",
            up.state()
        );
        up.finish().expect("finish again once the flash reads");
    }
    let s = rig.state();
    assert!(
        matches!(s.bank(Bank::B), BankState::Pending { .. }),
        "{s:?}"
    );
    assert_eq!(s.preferred, Bank::B);
}
