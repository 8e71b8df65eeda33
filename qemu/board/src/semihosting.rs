//! Semihosting (QEMU `-semihosting-config enable=on,target=native`) through the maintained
//! `semihosting` crate: exit with a code, and reading host files (the demo's stand-in for a
//! download).

use embedded_storage::nor_flash::{ErrorType, NorFlashErrorKind, ReadNorFlash};
use semihosting::fs::File;
use semihosting::io::{Read, Seek, SeekFrom};

/// Longest host path [`HostFile::open`] takes (bytes, without the terminating NUL).
pub const PATH_CAP: usize = 255;

/// Ends QEMU with exit status `code` (`SYS_EXIT_EXTENDED`, so any code reaches the host).
pub fn exit(code: u32) -> ! {
    semihosting::process::exit(code as i32)
}

/// A read-only host file, readable like a flash (so `twinbank::Manifest::read` and the updater
/// can stream from it).
#[derive(Debug)]
pub struct HostFile {
    file: File,
    len: u32,
}

impl HostFile {
    /// Opens `path` for binary reading; `None` if it cannot be opened.
    pub fn open(path: &str) -> Option<HostFile> {
        let mut name = [0u8; PATH_CAP + 1];
        name.get_mut(..path.len())?.copy_from_slice(path.as_bytes());
        let name = core::ffi::CStr::from_bytes_until_nul(&name).ok()?;
        let file = File::open(name).ok()?;
        let len = u32::try_from(file.metadata().ok()?.len()).ok()?;
        Some(HostFile { file, len })
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
        self.file
            .seek(SeekFrom::Start(offset as u64))
            .map_err(|_| NorFlashErrorKind::Other)?;
        self.file
            .read_exact(bytes)
            .map_err(|_| NorFlashErrorKind::Other)
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}
