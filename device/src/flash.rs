//! Small helpers over `embedded-storage`'s NOR flash traits.
//!
//! Errors from the flash driver are reduced to [`FlashFault`], so the crate's error types stay
//! non-generic, `Copy`, and can cross a wire (serde).

use crate::layout::{Layout, LayoutError, RegionName};
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
#[cfg(feature = "async")]
use embedded_storage_async::nor_flash::ReadNorFlash as AsyncReadNorFlash;

/// Largest `READ_SIZE` supported: reads are bounced through a buffer of this size when the
/// driver needs aligned reads.
pub const MAX_READ_SIZE: usize = 32;

/// Reads `out.len()` bytes at `offset`, whatever the driver's `READ_SIZE` (≤ [`MAX_READ_SIZE`]).
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", self = "read_exact_async"),
    idents(ReadNorFlash(sync, async = "AsyncReadNorFlash"))
)]
pub async fn read_exact<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    out: &mut [u8],
) -> Result<(), FlashFault> {
    let rs = F::READ_SIZE;
    if rs <= 1 {
        return flash.read(offset, out).await.map_err(fault);
    }
    if rs > MAX_READ_SIZE || !rs.is_power_of_two() {
        return Err(FlashFault::NotAligned);
    }
    let mut bounce = [0u8; MAX_READ_SIZE];
    let mut done = 0usize;
    while done < out.len() {
        let pos = offset as usize + done;
        let aligned = pos - pos % rs;
        flash
            .read(aligned as u32, &mut bounce[..rs])
            .await
            .map_err(fault)?;
        let skip = pos - aligned;
        let n = (rs - skip).min(out.len() - done);
        out[done..done + n].copy_from_slice(&bounce[skip..skip + n]);
        done += n;
    }
    Ok(())
}

/// True when `[offset, offset + len)` reads as erased (all `0xFF`).
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", self = "is_erased_async"),
    idents(
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async")
    )
)]
pub async fn is_erased<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
) -> Result<bool, FlashFault> {
    let mut buf = [0u8; 64];
    let mut pos = 0u32;
    while pos < len {
        let n = (len - pos).min(buf.len() as u32) as usize;
        read_exact(flash, offset + pos, &mut buf[..n]).await?;
        if buf[..n].iter().any(|&b| b != ERASED) {
            return Ok(false);
        }
        pos += n as u32;
    }
    Ok(true)
}

/// The value of an erased NOR byte.
pub const ERASED: u8 = 0xFF;

/// A flash driver failure, reduced to what the caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlashFault {
    /// The access was not aligned as the driver requires.
    NotAligned,
    /// The access was outside the flash.
    OutOfBounds,
    /// Any other driver error (bus, timeout, power cut in tests).
    Other,
}

impl From<NorFlashErrorKind> for FlashFault {
    fn from(k: NorFlashErrorKind) -> Self {
        match k {
            NorFlashErrorKind::NotAligned => FlashFault::NotAligned,
            NorFlashErrorKind::OutOfBounds => FlashFault::OutOfBounds,
            _ => FlashFault::Other,
        }
    }
}

/// Reduces a driver error to a [`FlashFault`].
pub fn fault<E: NorFlashError>(e: E) -> FlashFault {
    e.kind().into()
}

impl FlashFault {
    /// A few words for the bootloader's boot line (no formatting machinery needed).
    pub fn summary(&self) -> &'static str {
        "flash error"
    }
}

impl core::error::Error for FlashFault {}

impl core::fmt::Display for FlashFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FlashFault::NotAligned => "flash access not aligned",
            FlashFault::OutOfBounds => "flash access out of bounds",
            FlashFault::Other => "flash driver error",
        })
    }
}

/// An image held in memory, read like a flash: bytes past the end read as erased. Lets the same
/// parsing code run over a bank, a file loaded on the host, or a buffer received over a wire.
#[derive(Debug, Clone, Copy)]
pub struct SliceFlash<'a>(pub &'a [u8]);

impl ErrorType for SliceFlash<'_> {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for SliceFlash<'_> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (offset as usize)
                .checked_add(i)
                .and_then(|p| self.0.get(p))
                .copied()
                .unwrap_or(ERASED);
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.0.len()
    }
}

/// State and banks on two flash devices (state in internal flash, banks in external QSPI NOR;
/// or two partitions of one device), given to the crate as one [`NorFlash`] handle, so that
/// [`crate::decide`], [`crate::Updater`] and every other entry point take them unchanged.
///
/// ```text
///  offsets the crate sees:  0                     banks.capacity()          + state.capacity()
///                           | bank device         | state device                           |
/// ```
///
/// The bank device comes first, so the layout's `base_address` is the CPU address where the bank
/// device executes in place; the state region lies at or above `banks.capacity()`. The pair's
/// geometry is the coarser of the two: `WRITE_SIZE`, `ERASE_SIZE` and `READ_SIZE` are the larger
/// of each device's (all powers of two, so an access aligned for the pair is aligned for both);
/// an erase of one of the pair's sectors erases the device sectors it covers. The layout is
/// written for the pair ([`Split::WRITE_SIZE`], …), and the state region must hold two of its
/// sectors. An access that straddles the two devices is refused ([`SplitError::Straddles`]); a
/// valid layout never makes one, since no region crosses the boundary
/// ([`Split::check_layout`]).
#[derive(Debug, Clone)]
pub struct Split<B, S> {
    /// The device holding both banks (offset 0 of the pair).
    pub banks: B,
    /// The device holding the state region (offset `banks.capacity()` of the pair).
    pub state: S,
}

/// An error of one of the devices of a [`Split`], or an access across both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SplitError<B, S> {
    /// The bank device failed.
    Banks(B),
    /// The state device failed.
    State(S),
    /// The access starts on one device and ends on the other.
    Straddles,
}

impl<B: NorFlashError, S: NorFlashError> NorFlashError for SplitError<B, S> {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SplitError::Banks(e) => e.kind(),
            SplitError::State(e) => e.kind(),
            SplitError::Straddles => NorFlashErrorKind::OutOfBounds,
        }
    }
}

impl<B: core::fmt::Debug, S: core::fmt::Debug> core::fmt::Display for SplitError<B, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SplitError::Banks(e) => write!(f, "bank flash: {e:?}"),
            SplitError::State(e) => write!(f, "state flash: {e:?}"),
            SplitError::Straddles => f.write_str("access straddles the bank and state flash"),
        }
    }
}

impl<B: core::fmt::Debug, S: core::fmt::Debug> core::error::Error for SplitError<B, S> {}

/// Where an access of a [`Split`] goes.
enum Route {
    Banks(u32),
    State(u32),
}

/// The larger of two sizes (a `const fn`: the pair's geometry constants).
const fn larger(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

impl<B: NorFlash, S: NorFlash> Split<B, S> {
    /// The pair: `banks` at offset 0, `state` after it.
    pub fn new(banks: B, state: S) -> Self {
        Split { banks, state }
    }

    /// Checks that `layout` fits the pair: its geometry is the pair's ([`Layout::check_flash`],
    /// [`crate::GeometryError`]), both banks lie on the bank device and the state region on the
    /// state device (else [`LayoutError::OutOfFlash`] names the region on the wrong device).
    pub fn check_layout(&self, layout: &Layout) -> Result<(), SplitLayoutError> {
        layout
            .check_flash(self)
            .map_err(SplitLayoutError::Geometry)?;
        let boundary = u32::try_from(self.banks.capacity()).unwrap_or(u32::MAX);
        for bank in crate::Bank::ALL {
            if layout.bank(bank).end().is_none_or(|end| end > boundary) {
                return Err(SplitLayoutError::Layout(LayoutError::OutOfFlash(
                    RegionName::Bank(bank),
                )));
            }
        }
        if layout.state().offset.0 < boundary {
            return Err(SplitLayoutError::Layout(LayoutError::OutOfFlash(
                RegionName::State,
            )));
        }
        Ok(())
    }

    fn boundary(&self) -> usize {
        self.banks.capacity()
    }

    /// The device and its offset for `[offset, offset + len)`.
    fn route(&self, offset: u32, len: usize) -> Result<Route, SplitError<B::Error, S::Error>> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(SplitError::Straddles)?;
        let boundary = self.boundary();
        if end <= boundary {
            Ok(Route::Banks(offset))
        } else if start >= boundary {
            // `start - boundary < start <= u32::MAX`.
            Ok(Route::State((start - boundary) as u32))
        } else {
            Err(SplitError::Straddles)
        }
    }
}

/// Why a layout does not fit a [`Split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SplitLayoutError {
    /// The layout's geometry is not the pair's.
    Geometry(crate::GeometryError),
    /// A region lies on the wrong device (or across both).
    Layout(LayoutError),
}

impl core::fmt::Display for SplitLayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SplitLayoutError::Geometry(e) => write!(f, "{e}"),
            SplitLayoutError::Layout(LayoutError::OutOfFlash(RegionName::State)) => {
                f.write_str("the state region is not on the state flash")
            }
            SplitLayoutError::Layout(LayoutError::OutOfFlash(r)) => {
                write!(f, "{r} is not on the bank flash")
            }
            SplitLayoutError::Layout(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SplitLayoutError {}

impl<B: NorFlash, S: NorFlash> ErrorType for Split<B, S> {
    type Error = SplitError<B::Error, S::Error>;
}

impl<B: NorFlash, S: NorFlash> ReadNorFlash for Split<B, S> {
    const READ_SIZE: usize = larger(B::READ_SIZE, S::READ_SIZE);

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        match self.route(offset, bytes.len())? {
            Route::Banks(o) => self.banks.read(o, bytes).map_err(SplitError::Banks),
            Route::State(o) => self.state.read(o, bytes).map_err(SplitError::State),
        }
    }

    fn capacity(&self) -> usize {
        self.banks.capacity().saturating_add(self.state.capacity())
    }
}

impl<B: NorFlash, S: NorFlash> NorFlash for Split<B, S> {
    const WRITE_SIZE: usize = larger(B::WRITE_SIZE, S::WRITE_SIZE);
    const ERASE_SIZE: usize = larger(B::ERASE_SIZE, S::ERASE_SIZE);

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let len = to.checked_sub(from).ok_or(SplitError::Straddles)? as usize;
        match self.route(from, len)? {
            Route::Banks(o) => self
                .banks
                .erase(o, o + len as u32)
                .map_err(SplitError::Banks),
            Route::State(o) => self
                .state
                .erase(o, o + len as u32)
                .map_err(SplitError::State),
        }
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        match self.route(offset, bytes.len())? {
            Route::Banks(o) => self.banks.write(o, bytes).map_err(SplitError::Banks),
            Route::State(o) => self.state.write(o, bytes).map_err(SplitError::State),
        }
    }
}
