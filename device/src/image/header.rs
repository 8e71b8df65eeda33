//! The 32-byte MCUboot image header.
//!
//! ```text
//! off  size  field
//!  0    4    magic 0x96f3b83d
//!  4    4    load_addr        (the bank's CPU address when flags has ROM_FIXED)
//!  8    2    hdr_size         (payload starts here; vector table alignment comes from it)
//! 10    2    protect_tlv_size (whole protected TLV area incl. its 4-byte info header, or 0)
//! 12    4    img_size         (payload length)
//! 16    4    flags
//! 20    8    version: major u8, minor u8, revision u16, build u32
//! 28    4    padding
//! ```
//! All fields little endian. The image in a bank is
//! `header (32 B + 0xff pad to hdr_size) | payload (img_size) | protected TLVs | unprotected TLVs`.

use core::fmt;

/// Header magic (`IMAGE_MAGIC` in MCUboot).
pub const IMAGE_MAGIC: u32 = 0x96f3_b83d;
/// Size of the fixed header fields; `hdr_size` may be larger (zero padding up to the vectors).
pub const HEADER_SIZE: usize = 32;
/// `IMAGE_F_PIC`: position-independent code (informational; not used by twinbank).
pub const FLAG_PIC: u32 = 0x0000_0001;
/// `IMAGE_F_RAM_LOAD`: the image is copied to RAM before it runs (not supported by twinbank).
pub const FLAG_RAM_LOAD: u32 = 0x0000_0020;
/// `IMAGE_F_ROM_FIXED`: the image only runs at `load_addr` (our bank binding).
pub const FLAG_ROM_FIXED: u32 = 0x0000_0100;
/// `IMAGE_F_NON_BOOTABLE`: a data image (refused by the bootloader).
pub const FLAG_NON_BOOTABLE: u32 = 0x0000_0010;
/// `IMAGE_F_ENCRYPTED_*`: encrypted payloads are not supported (refused).
pub const FLAGS_ENCRYPTED: u32 = 0x0000_0004 | 0x0000_0008 | 0x0000_0400;

/// The header flags by name, as `imgtool` and MCUboot call them (for tools that print headers).
pub const FLAG_NAMES: [(u32, &str); 5] = [
    (FLAG_PIC, "PIC"),
    (FLAGS_ENCRYPTED, "ENCRYPTED"),
    (FLAG_NON_BOOTABLE, "NON_BOOTABLE"),
    (FLAG_RAM_LOAD, "RAM_LOAD"),
    (FLAG_ROM_FIXED, "ROM_FIXED"),
];

/// The names of the flags set in `flags` (see [`FLAG_NAMES`]).
pub fn flag_names(flags: u32) -> impl Iterator<Item = &'static str> {
    FLAG_NAMES
        .into_iter()
        .filter(move |(bits, _)| flags & bits != 0)
        .map(|(_, name)| name)
}

/// An image version, `major.minor.revision+build`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Version {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Revision.
    pub revision: u16,
    /// Build number.
    pub build: u32,
}

impl Version {
    /// A version from its parts.
    pub const fn new(major: u8, minor: u8, revision: u16, build: u32) -> Version {
        Version {
            major,
            minor,
            revision,
            build,
        }
    }

    /// The 8-byte MCUboot encoding.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.major;
        b[1] = self.minor;
        b[2..4].copy_from_slice(&self.revision.to_le_bytes());
        b[4..8].copy_from_slice(&self.build.to_le_bytes());
        b
    }

    /// Decodes the 8-byte MCUboot encoding.
    pub fn from_bytes(b: [u8; 8]) -> Version {
        Version {
            major: b[0],
            minor: b[1],
            revision: u16::from_le_bytes([b[2], b[3]]),
            build: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}+{}",
            self.major, self.minor, self.revision, self.build
        )
    }
}

/// As [`Display`](fmt::Display): `1.2.3+4`.
#[cfg(feature = "defmt")]
impl defmt::Format for Version {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "{=u8}.{=u8}.{=u16}+{=u32}",
            self.major,
            self.minor,
            self.revision,
            self.build
        );
    }
}

/// Why a version string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VersionParseError;

impl fmt::Display for VersionParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("version must look like MAJOR.MINOR.REVISION+BUILD (e.g. 1.2.3+4), each part within MCUboot's field sizes (u8.u8.u16+u32)")
    }
}

impl core::error::Error for VersionParseError {}

impl core::str::FromStr for Version {
    type Err = VersionParseError;

    /// Parses `1`, `1.2`, `1.2.3` or `1.2.3+4` (missing parts are 0), like `imgtool --version`.
    fn from_str(s: &str) -> Result<Version, VersionParseError> {
        let (main, build) = match s.split_once('+') {
            Some((m, b)) => (m, b.parse::<u32>().map_err(|_| VersionParseError)?),
            None => (s, 0),
        };
        let mut parts = main.split('.');
        let major = parts
            .next()
            .ok_or(VersionParseError)?
            .parse::<u8>()
            .map_err(|_| VersionParseError)?;
        let minor = match parts.next() {
            Some(p) => p.parse::<u8>().map_err(|_| VersionParseError)?,
            None => 0,
        };
        let revision = match parts.next() {
            Some(p) => p.parse::<u16>().map_err(|_| VersionParseError)?,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(VersionParseError);
        }
        Ok(Version::new(major, minor, revision, build))
    }
}

/// The decoded fixed header. Only [`ImageHeader::parse`] builds one from untrusted bytes, and it
/// checks the magic and that `hdr_size` covers the fixed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// `load_addr`: with [`FLAG_ROM_FIXED`], the CPU address of the bank the image was linked for.
    pub load_addr: u32,
    /// Offset of the payload from the start of the image (≥ 32).
    pub hdr_size: u16,
    /// Size of the protected TLV area including its info header, or 0 when absent.
    pub protect_tlv_size: u16,
    /// Payload size in bytes.
    pub img_size: u32,
    /// Flag bits (`FLAG_*`).
    pub flags: u32,
    /// Image version.
    pub version: Version,
}

/// Why header bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HeaderError {
    /// The magic is not 0x96f3b83d (erased bank, or not an MCUboot image).
    BadMagic(u32),
    /// `hdr_size` is smaller than the 32 fixed bytes.
    HeaderSizeTooSmall(u16),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::BadMagic(m) => write!(f, "not an MCUboot image (header magic {m:#010x})"),
            HeaderError::HeaderSizeTooSmall(s) => {
                write!(f, "header size {s} is smaller than the 32-byte header")
            }
        }
    }
}

impl core::error::Error for HeaderError {}

impl ImageHeader {
    /// Decodes the fixed header fields.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<ImageHeader, HeaderError> {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let magic = u32_at(0);
        if magic != IMAGE_MAGIC {
            return Err(HeaderError::BadMagic(magic));
        }
        let hdr_size = u16_at(8);
        if (hdr_size as usize) < HEADER_SIZE {
            return Err(HeaderError::HeaderSizeTooSmall(hdr_size));
        }
        let mut version = [0u8; 8];
        version.copy_from_slice(&b[20..28]);
        Ok(ImageHeader {
            load_addr: u32_at(4),
            hdr_size,
            protect_tlv_size: u16_at(10),
            img_size: u32_at(12),
            flags: u32_at(16),
            version: Version::from_bytes(version),
        })
    }

    /// Encodes the fixed header fields (padding zero).
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.load_addr.to_le_bytes());
        b[8..10].copy_from_slice(&self.hdr_size.to_le_bytes());
        b[10..12].copy_from_slice(&self.protect_tlv_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.img_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.flags.to_le_bytes());
        b[20..28].copy_from_slice(&self.version.to_bytes());
        b
    }

    /// Offset of the protected TLV area (or of the unprotected one when there is none), as u64 so
    /// that hostile sizes cannot overflow.
    pub fn tlv_offset(&self) -> u64 {
        self.hdr_size as u64 + self.img_size as u64
    }

    /// Bytes covered by the image hash: header, payload and protected TLVs.
    pub fn hashed_len(&self) -> u64 {
        self.tlv_offset() + self.protect_tlv_size as u64
    }

    /// True when the image is bound to the bank at `load_addr`.
    pub fn rom_fixed(&self) -> bool {
        self.flags & FLAG_ROM_FIXED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_refuses_bad_magic() {
        let h = ImageHeader {
            load_addr: 0x2101_0000,
            hdr_size: 0x400,
            protect_tlv_size: 0,
            img_size: 1234,
            flags: FLAG_ROM_FIXED,
            version: Version::new(1, 2, 3, 4),
        };
        let b = h.to_bytes();
        assert_eq!(ImageHeader::parse(&b), Ok(h));
        let mut bad = b;
        bad[0] ^= 1;
        assert!(matches!(
            ImageHeader::parse(&bad),
            Err(HeaderError::BadMagic(_))
        ));
        let mut small = b;
        small[8] = 31;
        small[9] = 0;
        assert_eq!(
            ImageHeader::parse(&small),
            Err(HeaderError::HeaderSizeTooSmall(31))
        );
    }

    #[test]
    fn versions_parse_like_imgtool() {
        use std::string::ToString;
        assert_eq!("1.2.3+4".parse(), Ok(Version::new(1, 2, 3, 4)));
        assert_eq!("2".parse(), Ok(Version::new(2, 0, 0, 0)));
        assert_eq!("1.2".parse(), Ok(Version::new(1, 2, 0, 0)));
        assert!("256.0.0".parse::<Version>().is_err());
        assert!("1.2.3.4".parse::<Version>().is_err());
        assert!("x".parse::<Version>().is_err());
        assert_eq!(Version::new(1, 2, 3, 4).to_string(), "1.2.3+4");
        assert!(Version::new(1, 2, 3, 4) < Version::new(1, 3, 0, 0));
    }
}
