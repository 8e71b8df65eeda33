//! The STM32L4 flash controller, register level (RM0351, section 3 "Embedded Flash memory"), as
//! an `embedded_storage` `NorFlash`: 64-bit double-word programming (8-byte writes), 2 KiB page
//! erases, over both 512 KiB banks of the STM32L476's 1 MiB.
//!
//! - Each operation unlocks the controller (KEYR), clears stale error flags, runs, waits for
//!   BSY to clear, checks the error flags, and locks again.
//! - The flash has ECC on every double-word: programming one twice between erases is a
//!   programming error (twinbank never does it), and reading a double-word whose programming a
//!   power cut interrupted may raise an ECC double-error NMI. The shim's and the application's
//!   NMI handlers call [`take_ecc_double_error`]: the flag is cleared and the read goes on with
//!   the uncorrected bytes, which twinbank refuses as it refuses any torn write (a state record's
//!   CRC, an image's hash). Without it the NMI would stop the core at every boot: a brick.
//! - After an erase, the data cache is reset so reads see the erased page.
//! - The CPU stalls while the bank it executes from is busy; no code needs to move to RAM.

use crate::consts::{ERASE_SIZE, FLASH_BASE, FLASH_SIZE, WRITE_SIZE};
use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind,
    ReadNorFlash,
};

/// FLASH register block.
const FLASH: usize = 0x4002_2000;
const ACR: usize = FLASH;
const KEYR: usize = FLASH + 0x08;
const SR: usize = FLASH + 0x10;
const CR: usize = FLASH + 0x14;
const KEY1: u32 = 0x4567_0123;
const KEY2: u32 = 0xCDEF_89AB;
/// ECC status register (FLASH_ECCR).
const ECCR: usize = FLASH + 0x18;
/// ECCR: double ECC error detected (raises the NMI; cleared by writing 1).
const ECCR_ECCD: u32 = 1 << 31;
/// ECCR: single ECC error corrected (cleared by writing 1; left as it is here).
const ECCR_ECCC: u32 = 1 << 30;
/// SR: busy.
const SR_BSY: u32 = 1 << 16;
/// SR: every error flag (OPERR, PROGERR, WRPERR, PGAERR, SIZERR, PGSERR, MISERR, FASTERR,
/// RDERR, OPTVERR) and EOP, cleared by writing ones.
const SR_CLEAR: u32 = 0x0000_C3FB;
/// SR: the error flags a program or erase can raise.
const SR_ERRORS: u32 = 0x0000_C3FA;
/// CR: program.
const CR_PG: u32 = 1 << 0;
/// CR: page erase.
const CR_PER: u32 = 1 << 1;
/// CR: page number (8 bits) position.
const CR_PNB_SHIFT: u32 = 3;
/// CR: erase in bank 2.
const CR_BKER: u32 = 1 << 11;
/// CR: start the erase.
const CR_STRT: u32 = 1 << 16;
/// CR: locked.
const CR_LOCK: u32 = 1 << 31;
/// ACR: data cache enable and reset.
const ACR_DCEN: u32 = 1 << 10;
const ACR_DCRST: u32 = 1 << 12;
/// Pages per bank (512 KiB / 2 KiB).
const PAGES_PER_BANK: u32 = 256;

/// What the flash driver refuses or the controller reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// An out-of-range or misaligned request.
    Request(NorFlashErrorKind),
    /// The controller's error flags (FLASH_SR) after an operation.
    Controller(u32),
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::Request(k) => *k,
            FlashError::Controller(_) => NorFlashErrorKind::Other,
        }
    }
}

fn read_reg(addr: usize) -> u32 {
    // SAFETY: a FLASH register.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write_reg(addr: usize, v: u32) {
    // SAFETY: a FLASH register; only this driver writes them.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

fn wait_idle() {
    while read_reg(SR) & SR_BSY != 0 {}
}

/// Unlocks the controller and clears stale flags.
fn begin() {
    wait_idle();
    if read_reg(CR) & CR_LOCK != 0 {
        write_reg(KEYR, KEY1);
        write_reg(KEYR, KEY2);
    }
    write_reg(SR, SR_CLEAR);
}

/// Waits for the operation, clears `bits` from CR, locks, and reports any error flag.
fn end(bits: u32) -> Result<(), FlashError> {
    wait_idle();
    let sr = read_reg(SR);
    write_reg(CR, (read_reg(CR) & !bits) | CR_LOCK);
    match sr & SR_ERRORS {
        0 => Ok(()),
        e => Err(FlashError::Controller(e)),
    }
}

/// The STM32L476's internal flash.
#[derive(Debug)]
pub struct Flash {
    _private: (),
}

impl Flash {
    /// The driver. Only one may write at a time (the shim, then the application).
    pub fn new() -> Self {
        Self { _private: () }
    }
}

impl Default for Flash {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorType for Flash {
    type Error = FlashError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len()).map_err(FlashError::Request)?;
        let src = (FLASH_BASE + offset) as *const u8;
        // SAFETY: the range was checked against the capacity; flash is memory mapped.
        let flash = unsafe { core::slice::from_raw_parts(src, bytes.len()) };
        bytes.copy_from_slice(flash);
        Ok(())
    }

    fn capacity(&self) -> usize {
        FLASH_SIZE as usize
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to).map_err(FlashError::Request)?;
        for page in (from..to).step_by(ERASE_SIZE) {
            let index = page / ERASE_SIZE as u32;
            let (bank2, pnb) = (index >= PAGES_PER_BANK, index % PAGES_PER_BANK);
            begin();
            let cr = CR_PER | (pnb << CR_PNB_SHIFT) | if bank2 { CR_BKER } else { 0 };
            write_reg(CR, cr);
            write_reg(CR, cr | CR_STRT);
            end(CR_PER | CR_BKER | (0xFF << CR_PNB_SHIFT))?;
        }
        // The data cache may hold the erased pages' old contents.
        let acr = read_reg(ACR);
        write_reg(ACR, acr & !ACR_DCEN);
        write_reg(ACR, (acr & !ACR_DCEN) | ACR_DCRST);
        write_reg(ACR, acr & !ACR_DCRST);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len()).map_err(FlashError::Request)?;
        for (i, dw) in bytes.chunks_exact(WRITE_SIZE).enumerate() {
            let (lo, hi) = dw.split_at(WRITE_SIZE / 2);
            let mut w = [0u8; 4];
            w.copy_from_slice(lo);
            let lo = u32::from_le_bytes(w);
            w.copy_from_slice(hi);
            let hi = u32::from_le_bytes(w);
            let addr = FLASH_BASE as usize + offset as usize + i * WRITE_SIZE;
            begin();
            write_reg(CR, CR_PG);
            // SAFETY: programming enabled; a double-word-aligned address inside the flash
            // (checked); the two words are written in order, as the controller requires.
            unsafe {
                core::ptr::write_volatile(addr as *mut u32, lo);
                core::ptr::write_volatile((addr + 4) as *mut u32, hi);
            }
            end(CR_PG)?;
        }
        Ok(())
    }
}

/// For the NMI handler: true when the NMI comes from a double ECC error on a flash read (a
/// double-word whose programming a power cut interrupted), after clearing its flag, so that the
/// handler returns and the read goes on with the uncorrected bytes (twinbank's own checks refuse
/// them: a record's CRC, an image's hash). False for any other NMI source. Not run on hardware
/// here (ports/README.md).
pub fn take_ecc_double_error() -> bool {
    let eccr = read_reg(ECCR);
    if eccr & ECCR_ECCD == 0 {
        return false;
    }
    // Writing 1 clears ECCD; 0 to ECCC leaves it; the read/write enable bit keeps its value.
    write_reg(ECCR, (eccr & !ECCR_ECCC) | ECCR_ECCD);
    true
}
