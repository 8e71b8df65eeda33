//! The flash driver's geometry is checked against the layout where the crate first meets the
//! flash (`StateStore::open`, which `decide`, `Updater::new` and the recovery updater all go
//! through): a driver whose WRITE_SIZE, ERASE_SIZE, READ_SIZE or capacity disagrees with the
//! layout is refused with the specific `GeometryError` before anything is read or written, and a
//! driver that agrees works through the whole lifecycle.

mod common;

use common::{v, Rig};
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use twinbank::image::SoftSha256;
use twinbank::state::{StateError, StateStore};
use twinbank::testing::StrictFlash;
use twinbank::{Bank, BootError, BootReason, GeometryError, Layout, UpdateError, Updater};

/// A strict flash that also requires its reads aligned to `R` (its `READ_SIZE`).
struct ReadSized<const R: usize, const W: usize, const E: usize>(StrictFlash<W, E>);

#[derive(Debug)]
struct Misaligned;

impl NorFlashError for Misaligned {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::NotAligned
    }
}

#[derive(Debug)]
enum ReadSizedError {
    Misaligned(Misaligned),
    Strict(twinbank::testing::StrictError),
}

impl NorFlashError for ReadSizedError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            ReadSizedError::Misaligned(m) => m.kind(),
            ReadSizedError::Strict(s) => s.kind(),
        }
    }
}

impl<const R: usize, const W: usize, const E: usize> ErrorType for ReadSized<R, W, E> {
    type Error = ReadSizedError;
}

impl<const R: usize, const W: usize, const E: usize> ReadNorFlash for ReadSized<R, W, E> {
    const READ_SIZE: usize = R;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if R == 0 || !(offset as usize).is_multiple_of(R) || !bytes.len().is_multiple_of(R) {
            return Err(ReadSizedError::Misaligned(Misaligned));
        }
        self.0.read(offset, bytes).map_err(ReadSizedError::Strict)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<const R: usize, const W: usize, const E: usize> NorFlash for ReadSized<R, W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to).map_err(ReadSizedError::Strict)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes).map_err(ReadSizedError::Strict)
    }
}

/// Every entry point refuses `flash` for `layout` with `expected`, before touching the flash.
fn refused_everywhere<F: NorFlash>(
    mut flash: F,
    layout: Layout,
    config: twinbank::Config<'static>,
    expected: GeometryError,
    touched: impl Fn(&F) -> u64,
) {
    let config = twinbank::Config { layout, ..config };
    assert_eq!(
        StateStore::open(&mut flash, &layout).err(),
        Some(StateError::Geometry(expected))
    );
    assert_eq!(
        twinbank::decide(&mut flash, &config).err(),
        Some(BootError::State(StateError::Geometry(expected)))
    );
    assert_eq!(
        Updater::new(&mut flash, config, Bank::A).err(),
        Some(UpdateError::State(StateError::Geometry(expected)))
    );
    assert_eq!(
        Updater::for_recovery(&mut flash, config, Some(Bank::A), SoftSha256::default()).err(),
        Some(UpdateError::State(StateError::Geometry(expected)))
    );
    assert_eq!(touched(&flash), 0, "a refused flash was accessed");
    // The error says which number disagrees and both values.
    let text = StateError::Geometry(expected).to_string();
    assert!(
        text.starts_with("flash geometry: the flash driver's "),
        "{text}"
    );
}

fn accesses<const W: usize, const E: usize>(f: &StrictFlash<W, E>) -> u64 {
    f.counters.reads + f.counters.writes + f.counters.erases
}

/// The layout of a rig with geometry (W, E), its config and its flash size.
fn rig_layout<const W: usize, const E: usize>() -> (Layout, twinbank::Config<'static>, usize) {
    let rig = Rig::<W, E>::new();
    (rig.layout, rig.config(), rig.layout.flash_size() as usize)
}

/// A driver with another write size than the layout: refused with `WriteSize`.
fn write_size_mismatch<const W: usize, const E: usize, const W2: usize>() {
    let (layout, config, size) = rig_layout::<W, E>();
    refused_everywhere(
        StrictFlash::<W2, E>::new(size),
        layout,
        config,
        GeometryError::WriteSize {
            layout: W as u32,
            driver: W2 as u32,
        },
        accesses,
    );
}

/// A driver with another erase size than the layout: refused with `EraseSize`.
fn erase_size_mismatch<const W: usize, const E: usize, const E2: usize>() {
    let (layout, config, size) = rig_layout::<W, E>();
    refused_everywhere(
        StrictFlash::<W, E2>::new(size),
        layout,
        config,
        GeometryError::EraseSize {
            layout: E as u32,
            driver: E2 as u32,
        },
        accesses,
    );
}

/// A driver larger or smaller than the layout's flash: refused with `Capacity`.
fn capacity_mismatch<const W: usize, const E: usize>() {
    let (layout, config, size) = rig_layout::<W, E>();
    for driver in [size + E, size - E] {
        refused_everywhere(
            StrictFlash::<W, E>::new(driver),
            layout,
            config,
            GeometryError::Capacity {
                layout: size as u32,
                driver: driver as u64,
            },
            accesses,
        );
    }
}

/// A driver whose READ_SIZE the crate cannot bounce through its buffer: refused with `ReadSize`.
fn read_size_unsupported<const W: usize, const E: usize, const R: usize>() {
    let (layout, config, size) = rig_layout::<W, E>();
    refused_everywhere(
        ReadSized::<R, W, E>(StrictFlash::new(size)),
        layout,
        config,
        GeometryError::ReadSize { driver: R as u32 },
        |f| accesses(&f.0),
    );
}

/// A matching geometry works end to end: provision, install, trial boot, confirm.
fn matching_geometry_works<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    assert_eq!(rig.layout.check_flash(&rig.flash), Ok(()));
    let factory = rig.image(Bank::A, v(1), 1, 1);
    rig.provision(&factory);
    assert_eq!(rig.boot().unwrap().reason, BootReason::Normal);
    let next = rig.image(Bank::B, v(2), 2, 2);
    rig.install(Bank::A, &next).expect("install");
    let trial = rig.boot().unwrap();
    assert_eq!(
        (trial.bank, trial.reason),
        (Bank::B, BootReason::Trial { attempts_left: 2 })
    );
    rig.updater(Bank::B).confirm().expect("confirm");
    assert_eq!(rig.boot().unwrap().reason, BootReason::Normal);
}

/// A driver with an aligned READ_SIZE (4 or 32) that agrees with the layout works: every read
/// goes through the crate's bounce buffer, aligned.
fn aligned_reads_work<const W: usize, const E: usize, const R: usize>() {
    let rig = Rig::<W, E>::new();
    let config = rig.config();
    let factory = rig.image(Bank::A, v(1), 1, 1);
    let mut flash = ReadSized::<R, W, E>(StrictFlash::new(rig.layout.flash_size() as usize));
    flash
        .0
        .load(rig.layout.bank(Bank::A).offset.0 as usize, &factory);
    // No state record yet: the boot adopts the verified image in bank A and writes one record.
    let d = twinbank::decide(&mut flash, &config).expect("boots");
    assert_eq!((d.bank, d.reason), (Bank::A, BootReason::Normal));
    let store = StateStore::open(&mut flash, &rig.layout).expect("opens");
    assert!(store.current().is_some());
    assert!(flash.0.counters.reads > 0);
}

for_geometries! {
    matching => matching_geometry_works;
    capacity => capacity_mismatch;
}

#[test]
fn write_size_mismatches_are_refused() {
    write_size_mismatch::<1, 1024, 2>();
    write_size_mismatch::<4, 4096, 8>();
    write_size_mismatch::<8, 4096, 4>();
    write_size_mismatch::<32, 131072, 16>();
}

#[test]
fn erase_size_mismatches_are_refused() {
    erase_size_mismatch::<1, 1024, 2048>();
    erase_size_mismatch::<4, 4096, 1024>();
    erase_size_mismatch::<8, 4096, 8192>();
    erase_size_mismatch::<32, 131072, 65536>();
}

#[test]
fn unsupported_read_sizes_are_refused() {
    read_size_unsupported::<4, 4096, 64>();
    read_size_unsupported::<8, 4096, 3>();
    read_size_unsupported::<1, 1024, 0>();
}

#[test]
fn aligned_read_sizes_work() {
    aligned_reads_work::<4, 4096, 4>();
    aligned_reads_work::<8, 2048, 32>();
    aligned_reads_work::<16, 16384, 16>();
}

/// The state of a flash *file* is read without a driver (tools): `peek` needs no geometry.
#[test]
fn a_flash_image_is_read_without_a_driver() {
    let mut rig = Rig::<8, 4096>::new();
    let factory = rig.image(Bank::A, v(1), 1, 1);
    let id = rig.provision(&factory);
    let bytes = rig.flash.bytes().to_vec();
    let state = StateStore::peek(&mut twinbank::flash::SliceFlash(&bytes), &rig.layout)
        .expect("reads")
        .expect("a state");
    assert_eq!(state, twinbank::BootState::factory(Bank::A, id, None));
}
