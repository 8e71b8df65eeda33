//! The NOR flash driver over the file-backed PSRAM at `FLASH_BASE` (QEMU `memory-backend-file`,
//! `share=on`: every store is in the flash file at once).
//!
//! QEMU accepts any store there, so this driver enforces the NOR rules itself, strictly (the
//! second, with the feature `test-hooks`):
//! - erase works on whole sectors (`ERASE_SIZE`) and sets them to 0xFF;
//! - writes are aligned to `WRITE_SIZE`, and each write unit is programmed at most once between
//!   erases: a write to a unit that is not erased is a bug in the caller and ends the run with
//!   [`crate::exit_code::NOR_VIOLATION`] (a program can only clear bits, and parts with ECC forbid
//!   a second program of a word; this rule covers both).
//!
//! Both rules' checks and the power-cut injection below are test hooks (feature `test-hooks`):
//! without it the driver does what a real board's does, bounds and alignment checks and then the
//! operation (the production shim's build, `cargo xtask size`).
//!
//! Power-cut injection (tests): with `cut=N` on the command line ([`crate::session`]), the N-th
//! flash operation of the QEMU run is interrupted. A pseudo-random choice seeded by N decides how
//! much of it happened: a write programs a prefix of its units and possibly some of the 1→0 bit
//! transitions of the next unit; an erase resets a prefix of the sector to 0xFF and may leave the
//! rest as garbage (old bits with random bits set). Then the "device" loses power: QEMU ends with
//! [`crate::exit_code::POWER_CUT`] and the harness restarts it on the same flash file.

use crate::consts::{ERASE_SIZE, FLASH_BASE, FLASH_SIZE, WRITE_SIZE};
use core::ptr::{read_volatile, write_volatile};
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// The board's NOR flash (offsets relative to `FLASH_BASE`).
#[derive(Debug)]
pub struct Flash(());

/// Errors of the flash driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// Offset or length not aligned to the write or erase size.
    NotAligned,
    /// Beyond the end of the flash.
    OutOfBounds,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

impl Flash {
    /// The flash. Several handles may exist; the firmware is single-threaded.
    pub fn new() -> Flash {
        Flash(())
    }
}

impl Default for Flash {
    fn default() -> Self {
        Flash::new()
    }
}

fn ptr(offset: u32) -> *mut u8 {
    (FLASH_BASE + offset) as *mut u8
}

fn check(offset: u32, len: usize) -> Result<(), FlashError> {
    match (offset as usize).checked_add(len) {
        Some(end) if end <= FLASH_SIZE as usize => Ok(()),
        _ => Err(FlashError::OutOfBounds),
    }
}

/// `n` is a multiple of `size` (a power of two: checked when `twinbank::Layout` is built).
fn aligned(n: usize, size: usize) -> bool {
    n & (size - 1) == 0
}

fn rd(offset: u32) -> u8 {
    // SAFETY: callers checked `offset` against the flash size; the region is plain RAM.
    unsafe { read_volatile(ptr(offset)) }
}

fn wr(offset: u32, v: u8) {
    // SAFETY: as above.
    unsafe { write_volatile(ptr(offset), v) }
}

impl ErrorType for Flash {
    type Error = FlashError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check(offset, bytes.len())?;
        // Whole words where source and destination are word-aligned (the hashing buffer is),
        // bytes at the edges: ≈ 1 instruction per byte instead of ≈ 4 (issue 12).
        let mut i = 0usize;
        let word_aligned = (FLASH_BASE + offset) % 4 == (bytes.as_ptr() as u32) % 4;
        if word_aligned {
            while i < bytes.len() && !(offset as usize + i).is_multiple_of(4) {
                bytes[i] = rd(offset + i as u32);
                i += 1;
            }
            while i + 4 <= bytes.len() {
                // SAFETY: in range (checked above) and 4-aligned on both sides.
                let w = unsafe { read_volatile(ptr(offset + i as u32) as *const u32) };
                bytes[i..i + 4].copy_from_slice(&w.to_ne_bytes());
                i += 4;
            }
        }
        while i < bytes.len() {
            bytes[i] = rd(offset + i as u32);
            i += 1;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        FLASH_SIZE as usize
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from > to || !aligned(from as usize, ERASE_SIZE) || !aligned(to as usize, ERASE_SIZE) {
            return Err(FlashError::NotAligned);
        }
        check(from, (to - from) as usize)?;
        let mut sector = from;
        while sector < to {
            #[cfg(feature = "test-hooks")]
            hooks::before_erase(sector);
            for i in 0..ERASE_SIZE as u32 {
                wr(sector + i, 0xFF);
            }
            sector += ERASE_SIZE as u32;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if !aligned(offset as usize, WRITE_SIZE) || !aligned(bytes.len(), WRITE_SIZE) {
            return Err(FlashError::NotAligned);
        }
        check(offset, bytes.len())?;
        #[cfg(feature = "test-hooks")]
        hooks::before_write(offset, bytes);
        for (i, &b) in bytes.iter().enumerate() {
            wr(offset + i as u32, b);
        }
        Ok(())
    }
}

/// The test hooks (feature `test-hooks`): the NOR rule check and power-cut injection, called
/// before each sector erase and each write. Without the feature the driver is what a real
/// board's would be: bounds and alignment checks, then the operation.
#[cfg(feature = "test-hooks")]
mod hooks {
    use super::{rd, wr, ERASE_SIZE, WRITE_SIZE};
    use crate::{exit, exit_code, session, uart};
    use core::fmt::Write as _;

    /// xorshift32: the power-cut choices, reproducible from the cut number.
    struct Rng(u32);
    impl Rng {
        fn new(seed: u32) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9) | 1)
        }
        fn next(&mut self) -> u32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u32) -> u32 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn power_cut(what: &str, offset: u32) -> ! {
        // No `core::fmt` (the shim links the driver).
        let mut u = uart();
        let _ = u.write_str("board: power cut during ");
        let _ = u.write_str(what);
        let _ = u.write_str(" at ");
        let _ = twinbank::report::hex(&mut u, offset);
        let _ = u.write_str(" (flash op ");
        let _ = twinbank::report::dec(&mut u, session::cut_at());
        let _ = u.write_str(")\n");
        exit(exit_code::POWER_CUT)
    }

    /// Counts the erase of `sector`; when it is the cut point, does part of it and cuts power.
    pub(super) fn before_erase(sector: u32) {
        if session::count_op(true, 0) {
            let mut rng = Rng::new(session::cut_at());
            let done = rng.below(ERASE_SIZE as u32 + 1);
            let garbage = rng.below(2) == 1;
            for i in 0..ERASE_SIZE as u32 {
                if i < done {
                    wr(sector + i, 0xFF);
                } else if garbage {
                    wr(sector + i, rd(sector + i) | rng.next() as u8);
                }
            }
            power_cut("erase", sector);
        }
    }

    /// Checks the NOR rule (each unit programmed at most once between erases) and counts the
    /// write; when it is the cut point, programs part of it and cuts power.
    pub(super) fn before_write(offset: u32, bytes: &[u8]) {
        for i in 0..bytes.len() as u32 {
            if rd(offset + i) != 0xFF {
                let unit = (offset + i) - (offset + i) % WRITE_SIZE as u32;
                let mut u = uart();
                let _ = u.write_str("board: NOR rule violated: program of non-erased unit at ");
                let _ = twinbank::report::hex(&mut u, unit);
                let _ = u.write_str("\n");
                exit(exit_code::NOR_VIOLATION);
            }
        }
        if session::count_op(false, bytes.len() as u32) {
            let mut rng = Rng::new(session::cut_at());
            let units = (bytes.len() / WRITE_SIZE) as u32;
            let done = rng.below(units + 1);
            let torn = rng.below(2) == 1;
            for i in 0..bytes.len() as u32 {
                let unit = i / WRITE_SIZE as u32;
                if unit < done {
                    wr(offset + i, bytes[i as usize]);
                } else if unit == done && torn {
                    // Some of this unit's 1→0 transitions happened.
                    wr(offset + i, bytes[i as usize] | rng.next() as u8);
                }
            }
            power_cut("write", offset);
        }
    }
}
