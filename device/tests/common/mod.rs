//! Shared rig for the device crate's integration tests: a strict flash of a given geometry, a
//! layout that fits it, a signing key, and helpers to build, install and boot images.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use embedded_storage::nor_flash::{ErrorType, NorFlash};
use embedded_storage_async::nor_flash as asynch;
use std::cell::Cell;
use twinbank::flash::SliceFlash;
use twinbank::image::encode::ImageBuilder;
use twinbank::testing::invariants::ImageSigner;
use twinbank::testing::StrictFlash;
use twinbank::update::Manifest;
use twinbank::{
    boot, Attempts, Bank, BootDecision, BootState, Config, DeviceIds, ImageId, Layout, Region,
    TrustedKey, UpdateError, Updater, Uuid, Version,
};

/// CPU address of flash offset 0 in the tests (any value works; a typical MCU flash base).
pub const BASE: u32 = 0x0800_0000;
/// Image header size: 1 KiB puts the vector table on the Cortex-M3 VTOR alignment.
pub const HEADER: u16 = 0x400;
/// Payload size of test images: spans several 1 KiB sectors and is not write-aligned.
pub const PAYLOAD: usize = 5001;
pub const VENDOR: Uuid = Uuid([0x11; 16]);
pub const CLASS: Uuid = Uuid([0x22; 16]);

pub struct Rig<const W: usize, const E: usize> {
    pub flash: StrictFlash<W, E>,
    pub layout: Layout,
    pub key: SigningKey,
    pub keys: &'static [TrustedKey],
}

impl<const W: usize, const E: usize> Rig<W, E> {
    pub fn new() -> Self {
        let bank = (16 * 1024).max(E) as u32;
        let state = 2 * E as u32;
        let size = state + 2 * bank;
        let layout = Layout::new(
            size,
            W as u32,
            E as u32,
            BASE,
            Region::new(0, state),
            Region::new(state, bank),
            Region::new(state + bank, bank),
        )
        .expect("test layout");
        let key = SigningKey::from_bytes(&[7; 32]);
        let keys: &'static [TrustedKey] =
            Box::leak(Box::new([TrustedKey(key.verifying_key().to_bytes())]));
        Rig {
            flash: StrictFlash::new(size as usize),
            layout,
            key,
            keys,
        }
    }

    pub fn config(&self) -> Config<'static> {
        Config {
            layout: self.layout,
            keys: self.keys,
            ids: DeviceIds {
                vendor: Some(VENDOR),
                class: Some(CLASS),
            },
            attempts: Attempts::DEFAULT,
        }
    }

    /// A builder for an image bound to `bank` with the rig's ids.
    pub fn builder(&self, bank: Bank, version: Version, counter: u32) -> ImageBuilder {
        ImageBuilder {
            header_size: HEADER,
            version,
            rom_fixed: Some(self.layout.bank_address(bank)),
            security_counter: Some(counter),
            vendor_id: Some(VENDOR),
            class_id: Some(CLASS),
        }
    }

    /// A signed image for `bank`; `seed` varies the payload.
    pub fn image(&self, bank: Bank, version: Version, counter: u32, seed: u8) -> Vec<u8> {
        self.builder(bank, version, counter)
            .sign(&payload(seed), &self.key)
            .expect("sign")
    }

    /// Factory provisioning: `image` in bank A, a confirmed state record.
    pub fn provision(&mut self, image: &[u8]) -> ImageId {
        let off = self.layout.bank(Bank::A).offset.0 as usize;
        self.flash.load(off, image);
        let params = self.config().verify_params(Bank::A, 0);
        let verified =
            twinbank::image::verify_image(&mut self.flash, &params).expect("factory image");
        let id = ImageId::of(&verified);
        let mut store = twinbank::state::StateStore::open(&mut self.flash, &self.layout).unwrap();
        store
            .write(&mut self.flash, &BootState::factory(Bank::A, id, None))
            .unwrap();
        id
    }

    pub fn boot(&mut self) -> Result<BootDecision, boot::BootError> {
        let config = self.config();
        boot::decide(&mut self.flash, &config)
    }

    pub fn state(&mut self) -> BootState {
        *twinbank::state::StateStore::open(&mut self.flash, &self.layout)
            .unwrap()
            .current()
            .expect("a state record")
    }

    pub fn updater(&mut self, running: Bank) -> Updater<'static, &mut StrictFlash<W, E>> {
        let config = self.config();
        Updater::new(&mut self.flash, config, running).expect("updater")
    }

    /// The updater the test runs through: the blocking one, or the async one over
    /// [`Yielding`] flash driven by `block_on` when the test was started by
    /// [`for_drivers!`]'s `_async` variant.
    pub fn driver(&mut self, running: Bank) -> Driver<'_, W, E> {
        let config = self.config();
        if ASYNC.get() {
            ASYNC_DRIVERS.set(ASYNC_DRIVERS.get() + 1);
            let flash = Yielding::new(&mut self.flash);
            Driver::Async(
                block_on(twinbank::asynch::Updater::new(flash, config, running)).expect("updater"),
            )
        } else {
            Driver::Blocking(Updater::new(&mut self.flash, config, running).expect("updater"))
        }
    }

    /// Installs `image` into the bank that is not `running`, in chunks of varying sizes.
    pub fn install(
        &mut self,
        running: Bank,
        image: &[u8],
    ) -> Result<ImageId, twinbank::UpdateError> {
        let manifest = manifest(image);
        let mut up = self.driver(running);
        let mut offset = up.begin(&manifest)? as usize;
        let sizes = [1usize, 7, 64, 333, 1000, 2];
        let mut i = 0;
        while offset < image.len() {
            let n = sizes[i % sizes.len()].min(image.len() - offset);
            offset = up.write(offset as u32, &image[offset..offset + n])? as usize;
            i += 1;
        }
        up.finish()
    }

    /// The signer of this rig's images, for `twinbank::testing::invariants`.
    pub fn signer(&self) -> ImageSigner {
        ImageSigner {
            key: self.key.clone(),
            header_size: HEADER,
            ids: self.config().ids,
        }
    }

    /// The bytes of a bank.
    pub fn bank_bytes(&self, bank: Bank) -> Vec<u8> {
        let r = self.layout.bank(bank);
        self.flash.bytes()[r.offset.0 as usize..(r.offset.0 + r.size.0) as usize].to_vec()
    }

    /// The bytes of the state region.
    pub fn state_bytes(&self) -> Vec<u8> {
        let r = self.layout.state();
        self.flash.bytes()[r.offset.0 as usize..(r.offset.0 + r.size.0) as usize].to_vec()
    }
}

pub fn payload(seed: u8) -> Vec<u8> {
    (0..PAYLOAD)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

pub fn manifest(image: &[u8]) -> Manifest {
    Manifest::read(&mut SliceFlash(image), image.len() as u32).expect("manifest")
}

pub fn v(major: u8) -> Version {
    Version::new(major, 0, 0, 0)
}

/// Runs a test body over the three geometries the issue asks for: (WRITE_SIZE, ERASE_SIZE) =
/// (1, 1 KiB), (8, 4 KiB), (32, 128 KiB).
#[macro_export]
macro_rules! for_geometries {
    ($($name:ident => $body:ident;)*) => {
        $(
            mod $name {
                #[test]
                fn w1_e1k() { super::$body::<1, 1024>(); }
                #[test]
                fn w8_e4k() { super::$body::<8, 4096>(); }
                #[test]
                fn w32_e128k() { super::$body::<32, 131072>(); }
            }
        )*
    };
}

thread_local! {
    /// Whether this test drives the async updater (each test runs on its own thread).
    static ASYNC: Cell<bool> = const { Cell::new(false) };
    /// Async updaters this test opened.
    static ASYNC_DRIVERS: Cell<u32> = const { Cell::new(0) };
    /// The body said it does not apply to this geometry (and ran nothing).
    static NOT_APPLICABLE: Cell<bool> = const { Cell::new(false) };
}

/// Called by a test body that returns early because it cannot apply to the rig's geometry.
pub fn not_applicable() {
    NOT_APPLICABLE.set(true);
}

/// Runs `body` on the async updater and checks that it opened one (a body that never installs
/// would prove nothing about it).
pub fn with_async_driver(body: fn()) {
    ASYNC.set(true);
    body();
    assert!(
        ASYNC_DRIVERS.get() > 0 || NOT_APPLICABLE.get(),
        "the test never opened the async updater"
    );
}

/// Runs a future to completion on this thread (no executor).
pub fn block_on<T>(f: impl core::future::Future<Output = T>) -> T {
    embassy_futures::block_on(f)
}

/// An async flash over a blocking one whose every operation is pending once before it runs: an
/// updater that did not await its flash operations (or blocked on them) could not complete.
/// `yields` counts the operations that were awaited.
pub struct Yielding<F> {
    /// The blocking flash.
    pub inner: F,
    /// Operations awaited so far.
    pub yields: u64,
    /// Pending after the operation ran rather than before it (a driver that starts the
    /// operation, then awaits its end): a future dropped there leaves the operation done.
    pub after: bool,
}

impl<F> Yielding<F> {
    pub fn new(inner: F) -> Self {
        Yielding {
            inner,
            yields: 0,
            after: false,
        }
    }

    /// Pending once after each operation instead of before.
    pub fn after(inner: F) -> Self {
        Yielding {
            after: true,
            ..Yielding::new(inner)
        }
    }

    async fn step(&mut self) {
        self.yields += 1;
        embassy_futures::yield_now().await;
    }
}

impl<F: ErrorType> ErrorType for Yielding<F> {
    type Error = F::Error;
}

impl<F: NorFlash> asynch::ReadNorFlash for Yielding<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if !self.after {
            self.step().await;
        }
        let r = self.inner.read(offset, bytes);
        if self.after {
            self.step().await;
        }
        r
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl<F: NorFlash> asynch::NorFlash for Yielding<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if !self.after {
            self.step().await;
        }
        let r = self.inner.erase(from, to);
        if self.after {
            self.step().await;
        }
        r
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if !self.after {
            self.step().await;
        }
        let r = self.inner.write(offset, bytes);
        if self.after {
            self.step().await;
        }
        r
    }
}

/// The async updater the tests drive.
pub type AsyncUpdater<'r, const W: usize, const E: usize> =
    twinbank::asynch::Updater<'static, Yielding<&'r mut StrictFlash<W, E>>>;

/// The blocking updater, or the async one run to completion by `block_on`: one test body checks
/// both (the async one is generated from the same source; these tests prove the generated code
/// behaves the same).
pub enum Driver<'r, const W: usize, const E: usize> {
    Blocking(Updater<'static, &'r mut StrictFlash<W, E>>),
    Async(AsyncUpdater<'r, W, E>),
}

/// Calls `$method` on whichever updater the driver holds.
macro_rules! drive {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self {
            Driver::Blocking(u) => u.$method($($arg),*),
            Driver::Async(u) => block_on(u.$method($($arg),*)),
        }
    };
}

impl<const W: usize, const E: usize> Driver<'_, W, E> {
    pub fn begin(&mut self, m: &Manifest) -> Result<u32, UpdateError> {
        drive!(self, begin(m))
    }
    pub fn write(&mut self, offset: u32, data: &[u8]) -> Result<u32, UpdateError> {
        drive!(self, write(offset, data))
    }
    pub fn finish(&mut self) -> Result<ImageId, UpdateError> {
        drive!(self, finish())
    }
    pub fn confirm(&mut self) -> Result<(), UpdateError> {
        drive!(self, confirm())
    }
    pub fn reject(&mut self) -> Result<(), UpdateError> {
        drive!(self, reject())
    }
    pub fn rollback(&mut self) -> Result<ImageId, UpdateError> {
        drive!(self, rollback())
    }
    pub fn cancel(&mut self) -> Result<(), UpdateError> {
        drive!(self, cancel())
    }
    /// The strict flash under either updater.
    pub fn flash_mut(&mut self) -> &mut StrictFlash<W, E> {
        match self {
            Driver::Blocking(u) => u.flash_mut(),
            Driver::Async(u) => u.flash_mut().inner,
        }
    }
}

/// [`for_geometries!`] through both updaters: `NAME::w1_e1k` runs the body on the blocking
/// updater, `NAME::w1_e1k_async` on the async one (every updater the body gets from
/// [`Rig::driver`] or [`Rig::install`]).
#[macro_export]
macro_rules! for_drivers {
    ($($name:ident => $body:ident;)*) => {
        $(
            mod $name {
                #[test]
                fn w1_e1k() { super::$body::<1, 1024>(); }
                #[test]
                fn w8_e4k() { super::$body::<8, 4096>(); }
                #[test]
                fn w32_e128k() { super::$body::<32, 131072>(); }
                #[test]
                fn w1_e1k_async() { super::with_async_driver(super::$body::<1, 1024>); }
                #[test]
                fn w8_e4k_async() { super::with_async_driver(super::$body::<8, 4096>); }
                #[test]
                fn w32_e128k_async() { super::with_async_driver(super::$body::<32, 131072>); }
            }
        )*
    };
}
