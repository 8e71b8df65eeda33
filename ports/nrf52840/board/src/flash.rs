//! The NVMC (non-volatile memory controller) as an `embedded_storage` `NorFlash`: 32-bit word
//! writes, 4 KiB page erases, each polled until READY (nRF52840 Product Specification, NVMC).
//!
//! The CPU stalls while the NVMC writes or erases (single-bank flash, executing in place), so
//! no code needs to move to RAM; a page erase takes up to 85 ms, a word write 41 µs.

use crate::consts::{ERASE_SIZE, FLASH_BASE, FLASH_SIZE, WRITE_SIZE};
use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind,
    ReadNorFlash,
};

/// NVMC register block.
const NVMC: usize = 0x4001_E000;
/// READY: 1 when the NVMC is ready.
const READY: usize = NVMC + 0x400;
/// CONFIG: 0 read only, 1 write enabled, 2 erase enabled.
const CONFIG: usize = NVMC + 0x504;
/// ERASEPAGE: write a page's address to erase it.
const ERASEPAGE: usize = NVMC + 0x508;
const CONFIG_READ: u32 = 0;
const CONFIG_WRITE: u32 = 1;
const CONFIG_ERASE: u32 = 2;

/// An out-of-range or misaligned request (the only errors the NVMC has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvmcError(NorFlashErrorKind);

impl NorFlashError for NvmcError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

/// The nRF52840's internal flash.
#[derive(Debug)]
pub struct Nvmc {
    _private: (),
}

impl Nvmc {
    /// The driver. Only one may write at a time (the shim, then the application).
    pub fn new() -> Self {
        Self { _private: () }
    }
}

impl Default for Nvmc {
    fn default() -> Self {
        Self::new()
    }
}

fn reg(addr: usize) -> *mut u32 {
    addr as *mut u32
}

fn wait_ready() {
    // SAFETY: reads of an NVMC register.
    while unsafe { core::ptr::read_volatile(reg(READY)) } & 1 == 0 {}
}

fn configure(mode: u32) {
    // SAFETY: the NVMC's CONFIG register; only this driver writes it.
    unsafe { core::ptr::write_volatile(reg(CONFIG), mode) };
    wait_ready();
}

impl ErrorType for Nvmc {
    type Error = NvmcError;
}

impl ReadNorFlash for Nvmc {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NvmcError> {
        check_read(self, offset, bytes.len()).map_err(NvmcError)?;
        let src = (FLASH_BASE + offset) as *const u8;
        // SAFETY: the range was checked against the flash's capacity; flash is memory mapped.
        let flash = unsafe { core::slice::from_raw_parts(src, bytes.len()) };
        bytes.copy_from_slice(flash);
        Ok(())
    }

    fn capacity(&self) -> usize {
        FLASH_SIZE as usize
    }
}

impl NorFlash for Nvmc {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), NvmcError> {
        check_erase(self, from, to).map_err(NvmcError)?;
        configure(CONFIG_ERASE);
        for page in (from..to).step_by(ERASE_SIZE) {
            // SAFETY: erase enabled; the page lies inside the flash (checked).
            unsafe { core::ptr::write_volatile(reg(ERASEPAGE), FLASH_BASE + page) };
            wait_ready();
        }
        configure(CONFIG_READ);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NvmcError> {
        check_write(self, offset, bytes.len()).map_err(NvmcError)?;
        configure(CONFIG_WRITE);
        for (i, word) in bytes.chunks_exact(WRITE_SIZE).enumerate() {
            let mut w = [0u8; WRITE_SIZE];
            w.copy_from_slice(word);
            let addr = FLASH_BASE as usize + offset as usize + i * WRITE_SIZE;
            // SAFETY: write enabled; a word-aligned address inside the flash (checked).
            unsafe { core::ptr::write_volatile(reg(addr), u32::from_le_bytes(w)) };
            wait_ready();
        }
        configure(CONFIG_READ);
        Ok(())
    }
}
