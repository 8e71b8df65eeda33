//! The QSPI flash through the RP2040 boot ROM's flash routines, as an `embedded_storage`
//! `NorFlash` of 4-byte writes and 4 KiB erases.
//!
//! - The chip programs whole 256-byte pages (`flash_range_program` takes page-aligned multiples
//!   of 256 bytes): a write programs each page it touches with the written bytes and 0xFF
//!   everywhere else. Programming 0xFF changes no bit of NOR flash, so the other units of the
//!   page keep what they hold (erased or written), and a power cut can only leave the written
//!   units torn: the 4-byte NOR model twinbank and the power-cut harness assume.
//! - While the flash is programmed or erased it cannot be read, so nothing may execute in place:
//!   [`flash_op`] runs from RAM (`.data`, copied there by cortex-m-rt at reset) with interrupts
//!   off, calls only boot-ROM routines (their addresses looked up beforehand), and returns to
//!   XIP with `flash_enter_cmd_xip` — the ROM's slow serial read mode, not the second-stage
//!   bootloader's quad mode: execution from flash is slower after the first write until the next
//!   reset (a product would copy boot2 to RAM and re-run it, as the Pico SDK can).
//! - Reads go through the XIP window at [`FLASH_BASE`], whose cache `flash_flush_cache` empties
//!   after each operation.

use crate::consts::{ERASE_SIZE, FLASH_BASE, FLASH_SIZE, WRITE_SIZE};
use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind,
    ReadNorFlash,
};

/// The flash chip's program page.
pub const PAGE_SIZE: usize = 256;
/// The boot ROM's pointer to its function table (a 16-bit address).
const ROM_FUNC_TABLE: usize = 0x14;
/// The boot ROM's pointer to `rom_table_lookup` (a 16-bit address).
const ROM_TABLE_LOOKUP: usize = 0x18;
/// Erase 64 KiB blocks with the block-erase command where a range covers them whole.
const BLOCK_SIZE: u32 = 1 << 16;
/// The W25Q-family 64 KiB block-erase command.
const BLOCK_ERASE_CMD: u32 = 0xD8;
/// The erased value of a NOR flash byte.
const ERASED: u8 = 0xFF;

/// An out-of-range or misaligned request (the ROM routines report no error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashError(NorFlashErrorKind);

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

type RomFn0 = unsafe extern "C" fn();
type RomErase = unsafe extern "C" fn(u32, usize, u32, u32);
type RomProgram = unsafe extern "C" fn(u32, *const u8, usize);

/// The boot ROM routines a flash operation needs.
#[derive(Clone, Copy)]
struct Rom {
    connect: RomFn0,
    exit_xip: RomFn0,
    erase: RomErase,
    program: RomProgram,
    flush_cache: RomFn0,
    enter_xip: RomFn0,
}

/// Looks a routine up by its two-letter code in the boot ROM's table.
fn rom_fn(code: [u8; 2]) -> usize {
    type Lookup = unsafe extern "C" fn(*const u16, u32) -> usize;
    // SAFETY: the RP2040 boot ROM holds these two 16-bit pointers at fixed addresses
    // (datasheet 2.8.3 "Bootrom Contents"); the lookup routine is documented as above.
    unsafe {
        let table = core::ptr::read_volatile(ROM_FUNC_TABLE as *const u16) as usize;
        let lookup = core::ptr::read_volatile(ROM_TABLE_LOOKUP as *const u16) as usize;
        let lookup: Lookup = core::mem::transmute::<usize, Lookup>(lookup);
        lookup(
            table as *const u16,
            u32::from(code[0]) | u32::from(code[1]) << 8,
        )
    }
}

impl Rom {
    fn get() -> Self {
        // SAFETY: each code names a routine of the signature its field declares.
        unsafe {
            Self {
                connect: core::mem::transmute::<usize, RomFn0>(rom_fn(*b"IF")),
                exit_xip: core::mem::transmute::<usize, RomFn0>(rom_fn(*b"EX")),
                erase: core::mem::transmute::<usize, RomErase>(rom_fn(*b"RE")),
                program: core::mem::transmute::<usize, RomProgram>(rom_fn(*b"RP")),
                flush_cache: core::mem::transmute::<usize, RomFn0>(rom_fn(*b"FC")),
                enter_xip: core::mem::transmute::<usize, RomFn0>(rom_fn(*b"CX")),
            }
        }
    }
}

/// One erase (`data` null: `len` bytes from `offset`) or one page program (`data`: a RAM buffer
/// of `len` bytes), with XIP off. Runs from RAM and calls only the ROM.
///
/// # Safety
/// Interrupts must be off (no handler may run from flash); `data` must be in RAM; `offset` and
/// `len` must be aligned as the ROM routine requires.
#[inline(never)]
#[link_section = ".data.twinbank_flash_op"]
unsafe extern "C" fn flash_op(rom: &Rom, offset: u32, data: *const u8, len: usize) {
    (rom.connect)();
    (rom.exit_xip)();
    if data.is_null() {
        (rom.erase)(offset, len, BLOCK_SIZE, BLOCK_ERASE_CMD);
    } else {
        (rom.program)(offset, data, len);
    }
    (rom.flush_cache)();
    (rom.enter_xip)();
}

/// The RP2040's QSPI flash.
pub struct QspiFlash {
    rom: Rom,
}

impl QspiFlash {
    /// The driver. Only one may write at a time (the shim, then the application), and only on
    /// core 0 while core 1 does not execute from flash.
    pub fn new() -> Self {
        Self { rom: Rom::get() }
    }
}

impl Default for QspiFlash {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorType for QspiFlash {
    type Error = FlashError;
}

impl ReadNorFlash for QspiFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len()).map_err(FlashError)?;
        let src = (FLASH_BASE + offset) as *const u8;
        // SAFETY: the range was checked against the capacity; the XIP window maps the flash.
        let flash = unsafe { core::slice::from_raw_parts(src, bytes.len()) };
        bytes.copy_from_slice(flash);
        Ok(())
    }

    fn capacity(&self) -> usize {
        FLASH_SIZE as usize
    }
}

impl NorFlash for QspiFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to).map_err(FlashError)?;
        let rom = self.rom;
        // SAFETY: interrupts off; a sector-aligned range (checked); no data buffer.
        cortex_m::interrupt::free(|_| unsafe {
            flash_op(&rom, from, core::ptr::null(), (to - from) as usize)
        });
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len()).map_err(FlashError)?;
        let mut at = offset as usize;
        let mut rest = bytes;
        while !rest.is_empty() {
            let page = at - at % PAGE_SIZE;
            let start = at - page;
            let n = rest.len().min(PAGE_SIZE - start);
            let (now, later) = rest.split_at(n);
            // The page in RAM (on the stack): the written bytes, 0xFF elsewhere.
            let mut buf = [ERASED; PAGE_SIZE];
            if let Some(dst) = buf.get_mut(start..start + n) {
                dst.copy_from_slice(now);
            }
            let rom = self.rom;
            // SAFETY: interrupts off; a page-aligned offset inside the flash (checked above) and
            // a whole page in RAM.
            cortex_m::interrupt::free(|_| unsafe {
                flash_op(&rom, page as u32, buf.as_ptr(), PAGE_SIZE)
            });
            at += n;
            rest = later;
        }
        Ok(())
    }
}
