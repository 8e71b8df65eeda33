//! Semihosting calls (QEMU `-semihosting-config enable=on,target=native`): exit with a code, the
//! command line, and reading host files (the demo's stand-in for a download).

use cortex_m_semihosting::{nr, syscall1};
use embedded_storage::nor_flash::{ErrorType, NorFlashErrorKind, ReadNorFlash};

const SYS_EXIT_EXTENDED: usize = 0x20;
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;

/// Ends QEMU with exit status `code`.
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, code as usize];
    loop {
        // SAFETY: the block outlives the call; QEMU reads two words.
        unsafe { syscall1(SYS_EXIT_EXTENDED, block.as_ptr() as usize) };
    }
}

/// Copies the semihosting command line (`-semihosting-config arg=…`) into `buf`; returns its
/// length, 0 when there is none.
pub fn cmdline(buf: &mut [u8]) -> usize {
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: QEMU writes at most `buf.len()` bytes into `buf` and the length into `block[1]`.
    let r = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
    if r != 0 {
        return 0;
    }
    let n = block[1].min(buf.len());
    // The length may or may not count the terminating NUL.
    buf[..n].iter().position(|&b| b == 0).unwrap_or(n)
}

/// A read-only host file, readable like a flash (so `twinbank::update::Manifest::read` and the
/// updater can stream from it).
#[derive(Debug)]
pub struct HostFile {
    handle: usize,
    len: u32,
}

impl HostFile {
    /// Opens `path` for binary reading; `None` if it cannot be opened.
    pub fn open(path: &str) -> Option<HostFile> {
        let mut name = [0u8; 256];
        if path.len() >= name.len() {
            return None;
        }
        name[..path.len()].copy_from_slice(path.as_bytes());
        let block = [name.as_ptr() as usize, nr::open::R_BINARY, path.len()];
        // SAFETY: NUL-terminated name and block outlive the call.
        let handle = unsafe { syscall1(nr::OPEN, block.as_ptr() as usize) };
        if handle as isize == -1 {
            return None;
        }
        let b = [handle];
        // SAFETY: as above.
        let len = unsafe { syscall1(nr::FLEN, b.as_ptr() as usize) };
        if len as isize == -1 {
            return None;
        }
        Some(HostFile {
            handle,
            len: len as u32,
        })
    }

    /// File length in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        let b = [self.handle];
        // SAFETY: closes our own handle.
        unsafe { syscall1(nr::CLOSE, b.as_ptr() as usize) };
    }
}

impl ErrorType for HostFile {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for HostFile {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let end = offset as u64 + bytes.len() as u64;
        if end > self.len as u64 {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        let seek = [self.handle, offset as usize];
        // SAFETY: plain arguments.
        if unsafe { syscall1(nr::SEEK, seek.as_ptr() as usize) } != 0 {
            return Err(NorFlashErrorKind::Other);
        }
        let block = [self.handle, bytes.as_mut_ptr() as usize, bytes.len()];
        // SAFETY: QEMU writes at most `bytes.len()` bytes into `bytes`.
        let not_read = unsafe { syscall1(nr::READ, block.as_ptr() as usize) };
        if not_read != 0 {
            return Err(NorFlashErrorKind::Other);
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}
