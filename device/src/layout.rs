//! Where things live in flash: the state region and the two banks.
//!
//! ```text
//!  flash offset 0                                                     flash end
//!  | bootloader (ROM) | state: ≥ 2 erase sectors | bank A        | bank B        |
//!                      \ ring of record sectors   \ header|vectors|payload|TLVs  |
//! ```
//!
//! All offsets are relative to the start of the flash device that `embedded-storage` addresses;
//! [`Layout::base_address`] maps them to the CPU's address space (for execute in place and for the
//! MCUboot `ROM_FIXED` load address). A [`Layout`] is built with named fields through
//! [`Layout::builder`] (or the positional [`Layout::new`]); both check every invariant once, and
//! the rest of the crate relies on them without re-checking.
//!
//! ```
//! use twinbank::{Layout, Region};
//! let layout = Layout::builder()
//!     .flash_size(0x0100_0000)
//!     .write_size(4)
//!     .erase_size(4096)
//!     .base_address(0x2100_0000)
//!     .state(Region::new(0x0, 0x4000))
//!     .bank_a(Region::new(0x1_0000, 0x10_0000))
//!     .bank_b(Region::new(0x11_0000, 0x10_0000))
//!     .build()?;
//! assert_eq!(layout.bank_address(twinbank::Bank::B), 0x2111_0000);
//! # Ok::<(), twinbank::LayoutError>(())
//! ```
//!
//! A part whose erase sectors differ in size (STM32F4: 4 × 16 KiB, 1 × 64 KiB, 7 × 128 KiB) is
//! described by a [`SectorMap`] instead of one erase size ([`LayoutBuilder::sector_map`]). Every
//! region then starts and ends on a sector boundary of the map, both banks are the same size (their
//! sector sequences may differ) and the state region holds at least two sectors, all of one size.
//! Every erase the crate makes is one whole sector of the map ([`Layout::sector_in`]).
//!
//! ```
//! use twinbank::layout::{SectorMap, SectorRun};
//! use twinbank::{Layout, Region};
//! const K: u32 = 1024;
//! // STM32F405/407, 1 MiB: the shim in sectors 0-1, the state in 2-3, bank A in 5-7, bank B in 8-10.
//! let map = SectorMap::new(&[
//!     SectorRun::new(4, 16 * K),
//!     SectorRun::new(1, 64 * K),
//!     SectorRun::new(7, 128 * K),
//! ])?;
//! let layout = Layout::builder()
//!     .flash_size(1024 * K)
//!     .write_size(4)
//!     .sector_map(map)
//!     .base_address(0x0800_0000)
//!     .state(Region::new(0x8000, 0x8000))
//!     .bank_a(Region::new(0x2_0000, 0x6_0000))
//!     .bank_b(Region::new(0x8_0000, 0x6_0000))
//!     .build()?;
//! assert_eq!(layout.state_sectors(), 2);
//! assert_eq!(layout.sector_at(0x1_2345), Some(Region::new(0x1_0000, 64 * K)));
//! # Ok::<(), twinbank::LayoutError>(())
//! ```

use core::fmt;
use embedded_storage::nor_flash::NorFlash;

/// One of the two firmware banks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Bank {
    /// The first bank (the factory image goes here).
    A,
    /// The second bank.
    B,
}

impl Bank {
    /// The other bank: the fallback of a running bank, the target of an update.
    pub const fn other(self) -> Bank {
        match self {
            Bank::A => Bank::B,
            Bank::B => Bank::A,
        }
    }

    /// Index for per-bank arrays (A = 0, B = 1).
    pub const fn index(self) -> usize {
        match self {
            Bank::A => 0,
            Bank::B => 1,
        }
    }

    /// Both banks, A first.
    pub const ALL: [Bank; 2] = [Bank::A, Bank::B];
}

impl fmt::Display for Bank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bank::A => "A",
            Bank::B => "B",
        })
    }
}

/// A byte offset inside the flash device (not a CPU address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlashOffset(pub u32);

/// A size in bytes of a flash area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ByteSize(pub u32);

/// A contiguous area of flash: `[offset, offset + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Region {
    /// First byte of the region.
    pub offset: FlashOffset,
    /// Length of the region in bytes.
    pub size: ByteSize,
}

impl Region {
    /// A region from raw numbers.
    pub const fn new(offset: u32, size: u32) -> Region {
        Region {
            offset: FlashOffset(offset),
            size: ByteSize(size),
        }
    }

    /// One past the last byte, or `None` when it would overflow `u32`.
    pub const fn end(&self) -> Option<u32> {
        self.offset.0.checked_add(self.size.0)
    }

    const fn overlaps(&self, other: &Region) -> bool {
        // Both ends are known to exist when this is called (checked first in `Layout::new`).
        let (a0, a1) = (self.offset.0, self.offset.0 + self.size.0);
        let (b0, b1) = (other.offset.0, other.offset.0 + other.size.0);
        a0 < b1 && b0 < a1
    }
}

/// The name of a region, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RegionName {
    /// The boot state region.
    State,
    /// A firmware bank.
    Bank(Bank),
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionName::State => f.write_str("state region"),
            RegionName::Bank(b) => write!(f, "bank {b}"),
        }
    }
}

/// Why a layout was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LayoutError {
    /// WRITE_SIZE must be a power of two in 1..=32 and ERASE_SIZE a power of two in 1 KiB..=128 KiB
    /// that is a multiple of WRITE_SIZE.
    UnsupportedGeometry {
        /// The flash's write size.
        write_size: u32,
        /// The flash's erase size.
        erase_size: u32,
    },
    /// A region does not start and end on erase-sector boundaries.
    NotEraseAligned(RegionName),
    /// A region ends beyond the flash (or beyond 4 GiB).
    OutOfFlash(RegionName),
    /// Two regions share bytes.
    Overlap(RegionName, RegionName),
    /// The state region needs at least two erase sectors (one always holds the newest record).
    StateTooSmall {
        /// Sectors the state region has.
        sectors: u32,
    },
    /// The banks must be the same size (either may hold either image role).
    UnequalBanks,
    /// A bank is too small to hold even an image header.
    BankTooSmall,
    /// Bank A lies above bank B: the two banks were most likely swapped (bank A, the factory
    /// bank, is the lower one).
    BanksSwapped,
    /// A [`LayoutBuilder`] was built without this field.
    Missing(LayoutField),
    /// The flash size is not a whole number of erase sectors (a flash device always is: the
    /// size or the erase size is wrong).
    FlashNotWholeSectors {
        /// The flash size given.
        flash_size: u32,
        /// The erase size given.
        erase_size: u32,
    },
    /// A [`SectorMap`] has more than [`MAX_SECTOR_RUNS`] runs.
    TooManySectorRuns {
        /// Runs given.
        runs: u32,
    },
    /// A run of a [`SectorMap`] has no sectors, or a sector size that is not a power of two in
    /// [`MIN_ERASE_SIZE`]..=[`MAX_ERASE_SIZE`].
    BadSectorRun {
        /// Index of the run in the map.
        index: u32,
    },
    /// The sectors of the [`SectorMap`] do not add up to the flash size.
    SectorMapNotFlash {
        /// The flash size given.
        flash_size: u32,
        /// The bytes the map's sectors cover (saturated at `u32::MAX`).
        map_size: u32,
    },
    /// The sectors of the state region differ in size (the record ring needs equal sectors).
    StateSectorsUneven,
    /// Both a uniform erase size and a sector map were given: one describes the sectors.
    EraseSizeAndSectorMap,
}

/// The fields of a [`LayoutBuilder`], for [`LayoutError::Missing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LayoutField {
    /// [`LayoutBuilder::flash_size`].
    FlashSize,
    /// [`LayoutBuilder::write_size`].
    WriteSize,
    /// [`LayoutBuilder::erase_size`].
    EraseSize,
    /// [`LayoutBuilder::state`].
    State,
    /// [`LayoutBuilder::bank_a`].
    BankA,
    /// [`LayoutBuilder::bank_b`].
    BankB,
}

impl fmt::Display for LayoutField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutField::FlashSize => "flash_size",
            LayoutField::WriteSize => "write_size",
            LayoutField::EraseSize => "erase_size",
            LayoutField::State => "state",
            LayoutField::BankA => "bank_a",
            LayoutField::BankB => "bank_b",
        })
    }
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::UnsupportedGeometry {
                write_size,
                erase_size,
            } => write!(
                f,
                "unsupported flash geometry: write size {write_size} (1..=32, power of two), \
                 erase size {erase_size} (1 KiB..=128 KiB, power of two)"
            ),
            LayoutError::NotEraseAligned(r) => {
                write!(f, "{r} is not aligned to erase sectors")
            }
            LayoutError::OutOfFlash(r) => write!(f, "{r} extends beyond the flash"),
            LayoutError::Overlap(a, b) => write!(f, "{a} overlaps {b}"),
            LayoutError::StateTooSmall { sectors } => write!(
                f,
                "state region has {sectors} erase sector(s); at least 2 are needed"
            ),
            LayoutError::UnequalBanks => f.write_str("bank A and bank B differ in size"),
            LayoutError::BankTooSmall => f.write_str("banks are too small to hold an image"),
            LayoutError::BanksSwapped => {
                f.write_str("bank A lies above bank B (swapped?): bank A must be the lower bank")
            }
            LayoutError::Missing(field) => write!(f, "layout has no {field}"),
            LayoutError::FlashNotWholeSectors {
                flash_size,
                erase_size,
            } => write!(
                f,
                "flash size {flash_size:#x} is not a whole number of {erase_size:#x}-byte erase \
                 sectors"
            ),
            LayoutError::TooManySectorRuns { runs } => write!(
                f,
                "sector map has {runs} runs; at most {MAX_SECTOR_RUNS} are supported"
            ),
            LayoutError::BadSectorRun { index } => write!(
                f,
                "sector map run {index} has no sectors or an unsupported sector size (a power of \
                 two in {MIN_ERASE_SIZE}..={MAX_ERASE_SIZE})"
            ),
            LayoutError::SectorMapNotFlash {
                flash_size,
                map_size,
            } => write!(
                f,
                "the sector map covers {map_size:#x} bytes, the flash size is {flash_size:#x}"
            ),
            LayoutError::StateSectorsUneven => {
                f.write_str("the sectors of the state region are not all the same size")
            }
            LayoutError::EraseSizeAndSectorMap => {
                f.write_str("both an erase size and a sector map were given: give one")
            }
        }
    }
}

impl core::error::Error for LayoutError {}

/// Why a flash driver was refused for a layout: the driver's geometry is not the one the layout
/// (the board description) states. Either number can be the wrong one; on a board whose layout
/// comes from `twinbank.toml`, the file's `[flash]` section must say what the driver says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GeometryError {
    /// `NorFlash::WRITE_SIZE` differs from the layout's write size.
    WriteSize {
        /// The layout's write size (`[flash] write_size`).
        layout: u32,
        /// The driver's `WRITE_SIZE`.
        driver: u32,
    },
    /// `NorFlash::ERASE_SIZE` differs from the layout's erase size.
    EraseSize {
        /// The layout's erase size (`[flash] erase_size`).
        layout: u32,
        /// The driver's `ERASE_SIZE`.
        driver: u32,
    },
    /// `ReadNorFlash::READ_SIZE` is not a power of two up to
    /// [`MAX_READ_SIZE`](crate::flash::MAX_READ_SIZE) (reads are bounced through a buffer that
    /// large).
    ReadSize {
        /// The driver's `READ_SIZE`.
        driver: u32,
    },
    /// `capacity()` differs from the layout's flash size.
    Capacity {
        /// The layout's flash size (`[flash] size`).
        layout: u32,
        /// The driver's capacity.
        driver: u64,
    },
    /// A layout with a [`SectorMap`]: `NorFlash::ERASE_SIZE` is neither the map's largest sector
    /// (the convention of drivers for non-uniform parts, e.g. embassy-stm32: `ERASE_SIZE` is the
    /// largest sector, `erase` takes any range aligned to the part's sector map) nor a divisor
    /// of every sector of the map.
    SectorMapEraseSize {
        /// The largest sector of the layout's map.
        largest: u32,
        /// The smallest sector of the layout's map.
        smallest: u32,
        /// The driver's `ERASE_SIZE`.
        driver: u32,
    },
}

impl GeometryError {
    /// A few words for the bootloader's boot line (no formatting machinery needed).
    pub fn summary(&self) -> &'static str {
        match self {
            GeometryError::WriteSize { .. } => "flash write size differs from the layout",
            GeometryError::EraseSize { .. } => "flash erase size differs from the layout",
            GeometryError::ReadSize { .. } => "flash read size unsupported",
            GeometryError::Capacity { .. } => "flash capacity differs from the layout",
            GeometryError::SectorMapEraseSize { .. } => {
                "flash erase size does not fit the sector map"
            }
        }
    }
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeometryError::WriteSize { layout, driver } => write!(
                f,
                "the flash driver's WRITE_SIZE is {driver} bytes, the layout's write size \
                 {layout}"
            ),
            GeometryError::EraseSize { layout, driver } => write!(
                f,
                "the flash driver's ERASE_SIZE is {driver:#x} bytes, the layout's erase size \
                 {layout:#x}"
            ),
            GeometryError::ReadSize { driver } => write!(
                f,
                "the flash driver's READ_SIZE is {driver} bytes; supported: a power of two up \
                 to {}",
                crate::flash::MAX_READ_SIZE
            ),
            GeometryError::Capacity { layout, driver } => write!(
                f,
                "the flash driver's capacity is {driver:#x} bytes, the layout's flash size \
                 {layout:#x}"
            ),
            GeometryError::SectorMapEraseSize {
                largest,
                smallest,
                driver,
            } => write!(
                f,
                "the flash driver's ERASE_SIZE is {driver:#x} bytes: neither the sector map's \
                 largest sector ({largest:#x}) nor a divisor of its smallest ({smallest:#x})"
            ),
        }
    }
}

impl core::error::Error for GeometryError {}

/// Builds a [`Layout`] from named fields; [`LayoutBuilder::build`] checks every invariant.
///
/// Every field but the base address (default 0) is required. The flash geometry is given either
/// as uniform sectors ([`LayoutBuilder::erase_size`]) or as a [`SectorMap`]
/// ([`LayoutBuilder::sector_map`]), not both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct LayoutBuilder {
    flash_size: Option<u32>,
    write_size: Option<u32>,
    erase_size: Option<u32>,
    sector_map: Option<SectorMap>,
    base_address: u32,
    state: Option<Region>,
    bank_a: Option<Region>,
    bank_b: Option<Region>,
}

impl LayoutBuilder {
    /// Capacity of the flash device in bytes.
    pub const fn flash_size(mut self, bytes: u32) -> Self {
        self.flash_size = Some(bytes);
        self
    }

    /// Program granularity in bytes (`NorFlash::WRITE_SIZE`).
    pub const fn write_size(mut self, bytes: u32) -> Self {
        self.write_size = Some(bytes);
        self
    }

    /// Uniform erase sector size in bytes (`NorFlash::ERASE_SIZE`).
    pub const fn erase_size(mut self, bytes: u32) -> Self {
        self.erase_size = Some(bytes);
        self
    }

    /// Non-uniform erase sectors: the part's sector map (instead of
    /// [`LayoutBuilder::erase_size`]).
    pub const fn sector_map(mut self, map: SectorMap) -> Self {
        self.sector_map = Some(map);
        self
    }

    /// CPU address of flash offset 0 (where the banks execute in place); default 0.
    pub const fn base_address(mut self, address: u32) -> Self {
        self.base_address = address;
        self
    }

    /// The boot state region.
    pub const fn state(mut self, region: Region) -> Self {
        self.state = Some(region);
        self
    }

    /// Bank A (the lower bank; the factory image goes here).
    pub const fn bank_a(mut self, region: Region) -> Self {
        self.bank_a = Some(region);
        self
    }

    /// Bank B (above bank A, the same size).
    pub const fn bank_b(mut self, region: Region) -> Self {
        self.bank_b = Some(region);
        self
    }

    /// Checks every invariant and builds the layout.
    ///
    /// A `const fn`: a board whose layout is fixed builds it at compile time (a broken layout is
    /// then a build error), so its bootloader carries neither the checks nor an error path.
    pub const fn build(self) -> Result<Layout, LayoutError> {
        use LayoutField as F;
        let sectors = match (self.erase_size, self.sector_map) {
            (Some(erase), None) => Some(Sectors::Uniform(erase)),
            (None, Some(map)) => Some(Sectors::Map(map)),
            (Some(_), Some(_)) => return Err(LayoutError::EraseSizeAndSectorMap),
            (None, None) => None,
        };
        match (
            self.flash_size,
            self.write_size,
            sectors,
            self.state,
            self.bank_a,
            self.bank_b,
        ) {
            (Some(flash), Some(write), Some(sectors), Some(state), Some(a), Some(b)) => {
                Layout::check(flash, write, sectors, self.base_address, state, a, b)
            }
            (None, ..) => Err(LayoutError::Missing(F::FlashSize)),
            (_, None, ..) => Err(LayoutError::Missing(F::WriteSize)),
            (_, _, None, ..) => Err(LayoutError::Missing(F::EraseSize)),
            (_, _, _, None, ..) => Err(LayoutError::Missing(F::State)),
            (.., None, _) => Err(LayoutError::Missing(F::BankA)),
            (.., None) => Err(LayoutError::Missing(F::BankB)),
        }
    }
}

/// Smallest write unit this crate supports (bytes).
pub const MIN_WRITE_SIZE: u32 = 1;
/// Largest write unit this crate supports (bytes); bounds the RAM buffers that hold a partial unit.
pub const MAX_WRITE_SIZE: u32 = 32;
/// Smallest erase sector supported (1 KiB): a state record sector must hold several records.
pub const MIN_ERASE_SIZE: u32 = 1024;
/// Largest erase sector supported (128 KiB).
pub const MAX_ERASE_SIZE: u32 = 128 * 1024;
/// Most runs a [`SectorMap`] holds (the STM32F4/F7 maps need 3; dual-bank parts 6).
pub const MAX_SECTOR_RUNS: usize = 8;

/// `count` consecutive erase sectors of `size` bytes each: one run of a [`SectorMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SectorRun {
    /// Number of sectors in the run (≥ 1).
    pub count: u32,
    /// Size of each sector in bytes (a power of two in [`MIN_ERASE_SIZE`]..=[`MAX_ERASE_SIZE`]).
    pub size: u32,
}

impl SectorRun {
    /// A run of `count` sectors of `size` bytes.
    pub const fn new(count: u32, size: u32) -> SectorRun {
        SectorRun { count, size }
    }

    const EMPTY: SectorRun = SectorRun::new(0, 0);

    /// Bytes the run covers (saturated).
    const fn bytes(&self) -> u32 {
        self.count.saturating_mul(self.size)
    }
}

/// The erase sectors of a flash device from offset 0 up, as runs of equal sectors (e.g. the
/// STM32F4's 4 × 16 KiB, 1 × 64 KiB, 7 × 128 KiB). Bounded ([`MAX_SECTOR_RUNS`]), no heap, built
/// in a `const` context when the part is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SectorMap {
    runs: [SectorRun; MAX_SECTOR_RUNS],
    len: u8,
}

impl SectorMap {
    /// A map from its runs, lowest first. Refused: more than [`MAX_SECTOR_RUNS`] runs, a run
    /// without sectors or with an unsupported sector size, a map larger than 4 GiB.
    pub const fn new(runs: &[SectorRun]) -> Result<SectorMap, LayoutError> {
        if runs.len() > MAX_SECTOR_RUNS {
            return Err(LayoutError::TooManySectorRuns {
                runs: if runs.len() > u32::MAX as usize {
                    u32::MAX
                } else {
                    runs.len() as u32
                },
            });
        }
        let mut map = SectorMap {
            runs: [SectorRun::EMPTY; MAX_SECTOR_RUNS],
            len: runs.len() as u8,
        };
        let mut total: u32 = 0;
        let mut i = 0;
        while i < runs.len() {
            let r = runs[i];
            let size_ok =
                r.size.is_power_of_two() && r.size >= MIN_ERASE_SIZE && r.size <= MAX_ERASE_SIZE;
            let bytes = r.count.checked_mul(r.size);
            total = match (size_ok && r.count > 0, bytes) {
                (true, Some(b)) => match total.checked_add(b) {
                    Some(t) => t,
                    None => return Err(LayoutError::BadSectorRun { index: i as u32 }),
                },
                _ => return Err(LayoutError::BadSectorRun { index: i as u32 }),
            };
            map.runs[i] = r;
            i += 1;
        }
        Ok(map)
    }

    /// The runs, lowest first.
    pub fn runs(&self) -> &[SectorRun] {
        self.runs.get(..self.len as usize).unwrap_or(&[])
    }

    /// Bytes the map covers.
    pub const fn size(&self) -> u32 {
        let mut total: u32 = 0;
        let mut i = 0;
        while i < self.len as usize && i < MAX_SECTOR_RUNS {
            total = total.saturating_add(self.runs[i].bytes());
            i += 1;
        }
        total
    }

    /// Number of sectors in the map.
    pub const fn sector_count(&self) -> u32 {
        let mut total: u32 = 0;
        let mut i = 0;
        while i < self.len as usize && i < MAX_SECTOR_RUNS {
            total = total.saturating_add(self.runs[i].count);
            i += 1;
        }
        total
    }

    /// The largest sector size of the map (0 for an empty map).
    pub const fn largest(&self) -> u32 {
        let mut m = 0;
        let mut i = 0;
        while i < self.len as usize && i < MAX_SECTOR_RUNS {
            if self.runs[i].size > m {
                m = self.runs[i].size;
            }
            i += 1;
        }
        m
    }

    /// The smallest sector size of the map (0 for an empty map).
    pub const fn smallest(&self) -> u32 {
        let mut m = 0;
        let mut i = 0;
        while i < self.len as usize && i < MAX_SECTOR_RUNS {
            if m == 0 || self.runs[i].size < m {
                m = self.runs[i].size;
            }
            i += 1;
        }
        m
    }

    /// The sector holding `offset`: `(index, start, size)`; at the map's end `(count, end, 0)`;
    /// beyond it `None`.
    const fn locate(&self, offset: u32) -> Option<(u32, u32, u32)> {
        let (mut start, mut index, mut i) = (0u32, 0u32, 0);
        while i < self.len as usize && i < MAX_SECTOR_RUNS {
            let r = self.runs[i];
            let bytes = r.bytes();
            if offset - start < bytes && r.size > 0 {
                let k = (offset - start) / r.size;
                return Some((index + k, start + k * r.size, r.size));
            }
            start = start.saturating_add(bytes);
            index = index.saturating_add(r.count);
            i += 1;
        }
        if offset == start {
            Some((index, start, 0))
        } else {
            None
        }
    }

    /// Sector number `index` of the map: `(start, size)`, `None` past the end.
    const fn nth(&self, index: u32) -> Option<(u32, u32)> {
        let (mut start, mut first, mut i) = (0u32, 0u32, 0);
        while i < self.len as usize && i < MAX_SECTOR_RUNS {
            let r = self.runs[i];
            if index - first < r.count {
                return Some((start + (index - first) * r.size, r.size));
            }
            start = start.saturating_add(r.bytes());
            first = first.saturating_add(r.count);
            i += 1;
        }
        None
    }
}

/// How a layout's sectors are described (internal to the checks).
#[derive(Debug, Clone, Copy)]
enum Sectors {
    Uniform(u32),
    Map(SectorMap),
}

/// A validated flash layout. Invariants (checked by [`LayoutBuilder::build`] and [`Layout::new`]):
/// - geometry within the supported ranges, erase size a multiple of write size;
/// - every region starts and ends on erase-sector boundaries (of the [`SectorMap`] when there is
///   one), inside the flash, not overlapping another;
/// - the state region holds at least two erase sectors, all of one size;
/// - both banks have the same size, and bank A lies below bank B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Layout {
    state: Region,
    banks: [Region; 2],
    flash_size: u32,
    write_size: u32,
    /// Uniform sectors: their size. With a map: its largest sector.
    erase_size: u32,
    /// `None`: uniform sectors of `erase_size`.
    map: Option<SectorMap>,
    /// The smallest sector (`erase_size` when uniform); kept so that the geometry check needs no
    /// walk of the map.
    smallest: u32,
    /// Sectors of the state region and their size, computed once by the checks (the state store
    /// of a bootloader then carries no code to walk the map).
    state_sectors: u32,
    state_sector_size: u32,
    base_address: u32,
}

impl Layout {
    /// A builder with named fields (preferred over [`Layout::new`]: seven positional numbers are
    /// easy to swap).
    pub const fn builder() -> LayoutBuilder {
        LayoutBuilder {
            flash_size: None,
            write_size: None,
            erase_size: None,
            sector_map: None,
            base_address: 0,
            state: None,
            bank_a: None,
            bank_b: None,
        }
    }

    /// Checks and builds a layout from positional values (kept for existing callers; see
    /// [`Layout::builder`]).
    ///
    /// `flash_size` is the capacity of the flash device; `base_address` is the CPU address of flash
    /// offset 0 (where the banks are executed in place).
    pub const fn new(
        flash_size: u32,
        write_size: u32,
        erase_size: u32,
        base_address: u32,
        state: Region,
        bank_a: Region,
        bank_b: Region,
    ) -> Result<Layout, LayoutError> {
        Layout::check(
            flash_size,
            write_size,
            Sectors::Uniform(erase_size),
            base_address,
            state,
            bank_a,
            bank_b,
        )
    }

    const fn check(
        flash_size: u32,
        write_size: u32,
        sectors: Sectors,
        base_address: u32,
        state: Region,
        bank_a: Region,
        bank_b: Region,
    ) -> Result<Layout, LayoutError> {
        let (erase_size, map) = match sectors {
            Sectors::Uniform(e) => (e, None),
            Sectors::Map(m) => (m.largest(), Some(m)),
        };
        // `const`: loops are `while`, comparisons on the raw numbers.
        let geometry_ok = write_size.is_power_of_two()
            && write_size >= MIN_WRITE_SIZE
            && write_size <= MAX_WRITE_SIZE
            && erase_size.is_power_of_two()
            && erase_size >= MIN_ERASE_SIZE
            && erase_size <= MAX_ERASE_SIZE;
        if !geometry_ok {
            return Err(LayoutError::UnsupportedGeometry {
                write_size,
                erase_size,
            });
        }
        match map {
            None if !flash_size.is_multiple_of(erase_size) => {
                return Err(LayoutError::FlashNotWholeSectors {
                    flash_size,
                    erase_size,
                })
            }
            Some(m) if m.size() != flash_size => {
                return Err(LayoutError::SectorMapNotFlash {
                    flash_size,
                    map_size: m.size(),
                })
            }
            _ => {}
        }
        let named = [
            (RegionName::State, state),
            (RegionName::Bank(Bank::A), bank_a),
            (RegionName::Bank(Bank::B), bank_b),
        ];
        let mut i = 0;
        while i < named.len() {
            let (name, region) = named[i];
            match region.end() {
                Some(end) if end <= flash_size && region.size.0 > 0 => {}
                _ => return Err(LayoutError::OutOfFlash(name)),
            }
            let aligned = match map {
                None => region.offset.0 % erase_size == 0 && region.size.0 % erase_size == 0,
                Some(m) => {
                    // Both ends exist (checked above) and lie inside the map (its size is the
                    // flash size).
                    let start = m.locate(region.offset.0);
                    let end = m.locate(region.offset.0 + region.size.0);
                    matches!(start, Some((_, s, _)) if s == region.offset.0)
                        && matches!(end, Some((_, e, _)) if e == region.offset.0 + region.size.0)
                }
            };
            if !aligned {
                return Err(LayoutError::NotEraseAligned(name));
            }
            i += 1;
        }
        let mut i = 0;
        while i < named.len() {
            let mut j = i + 1;
            while j < named.len() {
                if named[i].1.overlaps(&named[j].1) {
                    return Err(LayoutError::Overlap(named[i].0, named[j].0));
                }
                j += 1;
            }
            i += 1;
        }
        let (sectors, state_sector_size) = match map {
            None => (state.size.0 / erase_size, erase_size),
            Some(m) => match (
                m.locate(state.offset.0),
                m.locate(state.offset.0 + state.size.0),
            ) {
                (Some((first, _, size)), Some((end, _, _))) => {
                    let mut i = first;
                    while i < end {
                        if !matches!(m.nth(i), Some((_, s)) if s == size) {
                            return Err(LayoutError::StateSectorsUneven);
                        }
                        i += 1;
                    }
                    (end - first, size)
                }
                // Not reached: both ends were found above.
                _ => (0, erase_size),
            },
        };
        if sectors < 2 {
            return Err(LayoutError::StateTooSmall { sectors });
        }
        if bank_a.size.0 != bank_b.size.0 {
            return Err(LayoutError::UnequalBanks);
        }
        if bank_a.offset.0 > bank_b.offset.0 {
            return Err(LayoutError::BanksSwapped);
        }
        if bank_a.size.0 < crate::image::HEADER_SIZE as u32 {
            return Err(LayoutError::BankTooSmall);
        }
        // Banks execute in place: their CPU addresses must exist on a 32-bit core.
        let mut i = 1;
        while i < named.len() {
            let fits = match named[i].1.end() {
                Some(end) => base_address.checked_add(end).is_some(),
                None => false,
            };
            if !fits {
                return Err(LayoutError::OutOfFlash(named[i].0));
            }
            i += 1;
        }
        Ok(Layout {
            state,
            banks: [bank_a, bank_b],
            flash_size,
            write_size,
            erase_size,
            map,
            smallest: match map {
                None => erase_size,
                Some(m) => m.smallest(),
            },
            state_sectors: sectors,
            state_sector_size,
            base_address,
        })
    }

    /// The state region.
    pub fn state(&self) -> Region {
        self.state
    }

    /// The region of `bank`.
    pub fn bank(&self, bank: Bank) -> Region {
        self.banks[bank.index()]
    }

    /// Size of each bank in bytes (both are equal).
    pub fn bank_size(&self) -> u32 {
        self.banks[0].size.0
    }

    /// CPU address of the first byte of `bank` (the image header; MCUboot's `ROM_FIXED` load address).
    pub fn bank_address(&self, bank: Bank) -> u32 {
        // Cannot overflow: checked in `new`.
        self.base_address.wrapping_add(self.bank(bank).offset.0)
    }

    /// CPU address of flash offset 0.
    pub fn base_address(&self) -> u32 {
        self.base_address
    }

    /// Capacity of the flash device the layout describes (bytes).
    pub fn flash_size(&self) -> u32 {
        self.flash_size
    }

    /// Checks that `flash` is the device this layout describes: its `NorFlash::WRITE_SIZE`,
    /// `ERASE_SIZE` and `capacity()` are the layout's write size, erase size and flash size, and
    /// its `READ_SIZE` is one the crate reads through (a power of two up to
    /// [`MAX_READ_SIZE`](crate::flash::MAX_READ_SIZE)).
    ///
    /// With a [`SectorMap`] the driver has no single erase size: its `ERASE_SIZE` must be the
    /// map's largest sector (what drivers of non-uniform parts state, e.g. embassy-stm32, whose
    /// `erase` then takes any range aligned to the part's sectors) or a power of two dividing
    /// every sector of the map. Every erase the crate asks for is one whole sector of the map.
    ///
    /// The crate calls it where a layout first meets a flash handle,
    /// [`StateStore::open`](crate::state::StateStore::open), which every entry point
    /// ([`decide`](crate::boot::decide), [`Updater::new`](crate::update::Updater::new), the
    /// recovery updater) goes through first; a board may call it earlier to fail at start-up.
    /// With a layout and a driver fixed at build time the compiler folds it away.
    pub fn check_flash<F: NorFlash>(&self, flash: &F) -> Result<(), GeometryError> {
        let driver = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        if driver(F::WRITE_SIZE) != self.write_size {
            return Err(GeometryError::WriteSize {
                layout: self.write_size,
                driver: driver(F::WRITE_SIZE),
            });
        }
        let erase = driver(F::ERASE_SIZE);
        match self.map {
            None if erase != self.erase_size => {
                return Err(GeometryError::EraseSize {
                    layout: self.erase_size,
                    driver: erase,
                });
            }
            // Sectors of a map are powers of two: a power of two up to the smallest divides all.
            // `erase_size` is the map's largest sector.
            Some(_)
                if erase != self.erase_size
                    && !(erase.is_power_of_two() && erase <= self.smallest) =>
            {
                return Err(GeometryError::SectorMapEraseSize {
                    largest: self.erase_size,
                    smallest: self.smallest,
                    driver: erase,
                });
            }
            _ => {}
        }
        let read = F::READ_SIZE;
        if read == 0 || !read.is_power_of_two() || read > crate::flash::MAX_READ_SIZE {
            return Err(GeometryError::ReadSize {
                driver: driver(read),
            });
        }
        let capacity = u64::try_from(flash.capacity()).unwrap_or(u64::MAX);
        if capacity != u64::from(self.flash_size) {
            return Err(GeometryError::Capacity {
                layout: self.flash_size,
                driver: capacity,
            });
        }
        Ok(())
    }

    /// Program granularity (bytes).
    pub fn write_size(&self) -> u32 {
        self.write_size
    }

    /// Erase granularity (bytes): the sector size of a uniform layout, the largest sector of a
    /// [`SectorMap`]. Erases go through [`Layout::sector_in`] / [`Layout::sector_at`], which
    /// know both.
    pub fn erase_size(&self) -> u32 {
        self.erase_size
    }

    /// The sector map, `None` for uniform sectors of [`Layout::erase_size`].
    pub fn sector_map(&self) -> Option<&SectorMap> {
        self.map.as_ref()
    }

    /// Number of erase sectors in the state region (≥ 2).
    pub fn state_sectors(&self) -> u32 {
        self.state_sectors
    }

    /// Size of each sector of the state region (they are all the same size).
    pub fn state_sector_size(&self) -> u32 {
        self.state_sector_size
    }

    /// The erase sector holding flash offset `offset`, `None` beyond the flash.
    pub fn sector_at(&self, offset: u32) -> Option<Region> {
        match self.map {
            None if offset < self.flash_size => {
                let e = self.erase_size;
                Some(Region::new(offset - offset % e, e))
            }
            None => None,
            Some(m) => match m.locate(offset) {
                Some((_, start, size)) if size > 0 => Some(Region::new(start, size)),
                _ => None,
            },
        }
    }

    /// Index of the sector holding flash offset `offset` (counted over the whole flash); the
    /// number of sectors at the flash's end.
    fn sector_number(&self, offset: u32) -> u32 {
        match self.map {
            None => offset / self.erase_size,
            Some(m) => match m.locate(offset) {
                Some((index, ..)) => index,
                None => m.sector_count(),
            },
        }
    }

    /// Number of erase sectors of `region` (a region of this layout: on sector boundaries).
    pub fn sectors_in(&self, region: Region) -> u32 {
        let end = region.offset.0.saturating_add(region.size.0);
        self.sector_number(end)
            .saturating_sub(self.sector_number(region.offset.0))
    }

    /// Sector `index` of `region` (counted from the region's start), as a flash region; `None`
    /// past the region's end. Every erase of the crate is one of these.
    pub fn sector_in(&self, region: Region, index: u32) -> Option<Region> {
        let sector = match self.map {
            None => {
                let at = (index as u64) * (self.erase_size as u64);
                (at < region.size.0 as u64)
                    .then(|| Region::new(region.offset.0 + at as u32, self.erase_size))?
            }
            Some(m) => {
                let first = self.sector_number(region.offset.0);
                let (start, size) = m.nth(first.checked_add(index)?)?;
                Region::new(start, size)
            }
        };
        let inside = sector.offset.0 - region.offset.0 < region.size.0;
        inside.then_some(sector)
    }

    /// Index (counted from `region`'s start) of the sector holding byte `offset` of `region`;
    /// the region's number of sectors for an offset at or past its end.
    pub fn sector_index_in(&self, region: Region, offset: u32) -> u32 {
        if offset >= region.size.0 {
            return self.sectors_in(region);
        }
        match self.map {
            None => offset / self.erase_size,
            Some(_) => self
                .sector_number(region.offset.0 + offset)
                .saturating_sub(self.sector_number(region.offset.0)),
        }
    }

    /// Offset (from `region`'s start) of sector `index` of `region`; the region's size for the
    /// index one past its last sector (and beyond).
    pub fn sector_start_in(&self, region: Region, index: u32) -> u32 {
        match self.sector_in(region, index) {
            Some(s) => s.offset.0 - region.offset.0,
            None => region.size.0,
        }
    }

    /// Number of sectors of `region` that the first `len` bytes of it touch (all of them when
    /// `len` exceeds the region).
    pub fn sectors_spanning(&self, region: Region, len: u32) -> u32 {
        match len {
            0 => 0,
            _ if len >= region.size.0 => self.sectors_in(region),
            _ => self.sector_index_in(region, len - 1) + 1,
        }
    }

    /// The bank whose region contains CPU address `address`, if any.
    pub fn bank_at_address(&self, address: u32) -> Option<Bank> {
        Bank::ALL.into_iter().find(|&b| {
            let start = self.bank_address(b);
            address >= start && address - start < self.bank_size()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: u32 = 4096;

    fn layout(state: Region, a: Region, b: Region) -> Result<Layout, LayoutError> {
        Layout::new(1 << 20, 4, K4, 0x0800_0000, state, a, b)
    }

    #[test]
    fn accepts_a_sane_layout() {
        let l = layout(
            Region::new(0, 2 * K4),
            Region::new(2 * K4, 16 * K4),
            Region::new(18 * K4, 16 * K4),
        )
        .unwrap();
        assert_eq!(l.bank_address(Bank::B), 0x0800_0000 + 18 * K4);
        assert_eq!(l.bank_at_address(0x0800_0000 + 18 * K4 + 5), Some(Bank::B));
        assert_eq!(l.bank_at_address(0x0800_0000), None);
        assert_eq!(l.state_sectors(), 2);
    }

    /// The sector queries of a uniform layout are today's arithmetic (`offset / erase_size`,
    /// `len.div_ceil(erase_size)`), so `Receiving.from_sector` means what it meant; a map of one
    /// run of the same sectors answers the same.
    #[test]
    fn uniform_sector_queries_are_the_old_arithmetic() {
        let (s, a, b) = (
            Region::new(0, 2 * K4),
            Region::new(2 * K4, 16 * K4),
            Region::new(18 * K4, 16 * K4),
        );
        let uniform = layout(s, a, b).unwrap();
        let one_run = Layout::builder()
            .flash_size(1 << 20)
            .write_size(4)
            .sector_map(SectorMap::new(&[SectorRun::new(256, K4)]).unwrap())
            .base_address(0x0800_0000)
            .state(s)
            .bank_a(a)
            .bank_b(b)
            .build()
            .unwrap();
        assert_eq!(uniform.sector_map(), None);
        for l in [uniform, one_run] {
            assert_eq!((l.state_sectors(), l.state_sector_size()), (2, K4));
            for bank in [a, b] {
                assert_eq!(l.sectors_in(bank), 16);
                for off in (0..=16 * K4).step_by(512) {
                    assert_eq!(l.sector_index_in(bank, off), off / K4);
                    assert_eq!(l.sectors_spanning(bank, off), off.div_ceil(K4));
                }
                for i in 0..18 {
                    let want = (i < 16).then(|| Region::new(bank.offset.0 + i * K4, K4));
                    assert_eq!(l.sector_in(bank, i), want);
                    assert_eq!(l.sector_start_in(bank, i), (i * K4).min(16 * K4));
                }
            }
            assert_eq!(l.sector_at(K4 + 5), Some(Region::new(K4, K4)));
            assert_eq!(l.sector_at(1 << 20), None);
        }
    }

    #[test]
    fn refuses_each_broken_layout() {
        let s = Region::new(0, 2 * K4);
        let a = Region::new(2 * K4, 16 * K4);
        let b = Region::new(18 * K4, 16 * K4);
        assert_eq!(
            layout(s, a, Region::new(10 * K4, 16 * K4)),
            Err(LayoutError::Overlap(
                RegionName::Bank(Bank::A),
                RegionName::Bank(Bank::B)
            ))
        );
        assert_eq!(
            layout(s, Region::new(2 * K4 + 1, 16 * K4), b),
            Err(LayoutError::NotEraseAligned(RegionName::Bank(Bank::A)))
        );
        assert_eq!(
            layout(Region::new(0, K4), Region::new(K4, 16 * K4), b),
            Err(LayoutError::StateTooSmall { sectors: 1 })
        );
        assert_eq!(
            layout(s, a, Region::new(18 * K4, 8 * K4)),
            Err(LayoutError::UnequalBanks)
        );
        assert_eq!(
            layout(s, a, Region::new(250 * K4, 16 * K4)),
            Err(LayoutError::OutOfFlash(RegionName::Bank(Bank::B)))
        );
        assert_eq!(layout(s, b, a), Err(LayoutError::BanksSwapped));
        assert_eq!(
            Layout::builder()
                .flash_size(1 << 20)
                .write_size(4)
                .erase_size(K4)
                .state(s)
                .bank_a(a)
                .build(),
            Err(LayoutError::Missing(LayoutField::BankB))
        );
        assert_eq!(
            Layout::builder()
                .flash_size(1 << 20)
                .write_size(4)
                .erase_size(K4)
                .base_address(0x0800_0000)
                .state(s)
                .bank_a(a)
                .bank_b(b)
                .build(),
            layout(s, a, b)
        );
        assert_eq!(
            Layout::new(1 << 20, 3, K4, 0, s, a, b),
            Err(LayoutError::UnsupportedGeometry {
                write_size: 3,
                erase_size: K4
            })
        );
        assert_eq!(
            Layout::new((1 << 20) + 512, 4, K4, 0, s, a, b),
            Err(LayoutError::FlashNotWholeSectors {
                flash_size: (1 << 20) + 512,
                erase_size: K4
            })
        );
        assert_eq!(
            Layout::new(1 << 20, 64, K4, 0, s, a, b),
            Err(LayoutError::UnsupportedGeometry {
                write_size: 64,
                erase_size: K4
            })
        );
    }
}
