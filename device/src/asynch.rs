//! The async updater for embassy (and any other executor), over
//! [`embedded_storage_async::nor_flash::NorFlash`] (cargo feature `async`).
//!
//! There is one implementation of the update logic: [`Updater`], [`StateStore`] and the image
//! verification reads ([`crate::image::verify_image_with_async`]) are generated from the same
//! source as the blocking [`crate::Updater`], [`crate::state::StateStore`] and
//! [`crate::image::verify_image_with`] by `maybe-async-cfg`: the blocking copy is that source with
//! `async` and `.await` removed, so it compiles to the code it always did (no executor, no
//! future). Every flash operation of the async copy is an `.await` point: the executor runs other
//! tasks while the flash erases or programs.
//!
//! Same API, same errors, same records, same power-loss guarantees as the blocking updater; the
//! methods that touch the flash are `async`. A future dropped at an `.await` (a `select` with a
//! timeout) leaves the updater as an error of that flash operation would: a state write in doubt
//! is re-read before the next decision, and an upload dropped while erasing or programming is
//! closed (`write` answers `NoUpload`; `begin` resumes it). Not async (yet): the serial protocol
//! [`crate::protocol::Server`], the SMP console and the delta [`crate::delta::Applier`] drive the
//! blocking updater; the boot decision ([`crate::decide`]) runs in the bootloader, which has no
//! executor, and stays blocking.
//!
//! ```no_run
//! # async fn demo<F: embedded_storage_async::nor_flash::NorFlash>(
//! #     flash: F, config: twinbank::Config<'_>, manifest: twinbank::Manifest, chunk: &[u8],
//! # ) -> Result<(), twinbank::UpdateError> {
//! use twinbank::{asynch::Updater, Bank};
//! let mut updater = Updater::new(flash, config, Bank::A).await?;
//! let mut next = updater.begin(&manifest).await?;
//! next = updater.write(next, chunk).await?;
//! updater.finish().await?;
//! # let _ = next; Ok(()) }
//! ```

use crate::layout::{GeometryError, Layout};
use embedded_storage::nor_flash::{self as blocking, ErrorType, NorFlashErrorKind};
use embedded_storage_async::nor_flash::NorFlash;

pub use crate::flash::{is_erased_async as is_erased, read_exact_async as read_exact};
pub use crate::state::store::AsyncStateStore as StateStore;
pub use crate::update::AsyncUpdater as Updater;

/// [`Layout::check_flash`] for an async driver: the same check of the same numbers.
pub(crate) trait CheckAsyncFlash {
    /// Checks the driver's write, erase and read sizes and its capacity against the layout.
    fn check_async_flash<F: NorFlash>(&self, flash: &F) -> Result<(), GeometryError>;
}

impl CheckAsyncFlash for Layout {
    fn check_async_flash<F: NorFlash>(&self, flash: &F) -> Result<(), GeometryError> {
        self.check_flash(&Geometry(flash))
    }
}

/// An async driver's geometry (its sizes and capacity) seen through the blocking trait, so that
/// [`Layout::check_flash`] is the one geometry check. Nothing can be read or written through it.
struct Geometry<'f, F>(&'f F);

impl<F: NorFlash> ErrorType for Geometry<'_, F> {
    type Error = NorFlashErrorKind;
}

impl<F: NorFlash> blocking::ReadNorFlash for Geometry<'_, F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, _offset: u32, _bytes: &mut [u8]) -> Result<(), Self::Error> {
        Err(NorFlashErrorKind::Other)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: NorFlash> blocking::NorFlash for Geometry<'_, F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, _from: u32, _to: u32) -> Result<(), Self::Error> {
        Err(NorFlashErrorKind::Other)
    }

    fn write(&mut self, _offset: u32, _bytes: &[u8]) -> Result<(), Self::Error> {
        Err(NorFlashErrorKind::Other)
    }
}
