//! The board description file (`twinbank.toml`, `std` only): flash geometry, layout, image
//! header size and the device identity. One file read by the host tool, the build scripts of the
//! shim and the demo app, xtask and the tests, so they cannot disagree.

extern crate std;

use crate::image::{DeviceIds, Uuid};
use crate::layout::{Layout, LayoutError, Region, SectorMap, SectorRun};
use crate::state::Attempts;
use core::fmt;
use std::string::{String, ToString};
use std::vec::Vec;

/// The parsed board description.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardDescription {
    /// `[board]`.
    pub board: BoardInfo,
    /// `[flash]`.
    pub flash: FlashInfo,
    /// `[layout]`.
    pub layout: LayoutInfo,
    /// `[image]`.
    pub image: ImageInfo,
    /// `[device]`.
    pub device: DeviceInfo,
    /// `[bootloader]` (optional): what the bootloader may cost.
    #[serde(default)]
    pub bootloader: Option<BootloaderInfo>,
}

/// `[bootloader]`: the budget of the bootloader shim, checked by `cargo xtask size` (and CI).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootloaderInfo {
    /// Most flash bytes the shim (without serial recovery) may take: vector table, code,
    /// read-only data and initial data. Usually the bootloader's flash sector(s).
    pub flash_budget: u32,
    /// How long (milliseconds) a shim built with serial recovery listens on its UART after each
    /// reset for the operator's recovery request (0, the default: no window; for boards whose
    /// console line is noisy or where boot time matters).
    #[serde(default)]
    pub recovery_window_ms: u32,
}

/// `[board]`: a name for messages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    /// Human-readable board name.
    pub name: String,
}

/// `[flash]`: the flash device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashInfo {
    /// CPU address of flash offset 0.
    pub base: u32,
    /// Capacity in bytes.
    pub size: u32,
    /// Program granularity.
    pub write_size: u32,
    /// Uniform erase sector size (or `sectors`, not both).
    #[serde(default)]
    pub erase_size: Option<u32>,
    /// Non-uniform erase sectors, from offset 0 up (or `erase_size`, not both):
    /// `sectors = [{ count = 4, size = 0x4000 }, { count = 1, size = 0x10000 }, ...]`.
    #[serde(default)]
    pub sectors: Option<Vec<SectorRunInfo>>,
}

/// One run of `[flash] sectors`: `count` sectors of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectorRunInfo {
    /// Number of sectors.
    pub count: u32,
    /// Size of each, in bytes.
    pub size: u32,
}

/// A region in the description file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionInfo {
    /// Offset in the flash.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// `[layout]`: the three regions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutInfo {
    /// Boot state region.
    pub state: RegionInfo,
    /// Bank A.
    pub bank_a: RegionInfo,
    /// Bank B.
    pub bank_b: RegionInfo,
}

/// `[image]`: how images are laid out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// Header size (payload offset).
    pub header_size: u16,
    /// Alignment the vector table needs (VTOR).
    pub vector_alignment: u32,
}

/// `[device]`: identity and policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    /// Vendor UUID, if images must carry one.
    pub vendor_id: Option<String>,
    /// Class UUID, if images must carry one.
    pub class_id: Option<String>,
    /// Trial boot attempts (1..=7).
    pub attempts: u8,
}

/// Why a board description was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BoardError {
    /// The file could not be read.
    Io(String),
    /// TOML syntax or a missing/unknown field.
    Syntax(String),
    /// The layout breaks an invariant.
    Layout(LayoutError),
    /// A UUID field is not a UUID.
    BadUuid {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// `attempts` outside 1..=7.
    BadAttempts(u8),
    /// The header leaves no room for the image in a bank.
    HeaderDoesNotFit {
        /// Header size.
        header_size: u16,
        /// Bank size.
        bank_size: u32,
    },
    /// The header size does not put the vector table on its alignment.
    VectorMisaligned {
        /// Header size.
        header_size: u16,
        /// Alignment needed.
        alignment: u32,
    },
    /// `[flash]` gives both `erase_size` and `sectors`, or neither.
    FlashSectors {
        /// True: both were given; false: neither.
        both: bool,
    },
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardError::Io(e) => write!(f, "{e}"),
            BoardError::Syntax(e) => write!(f, "{e}"),
            BoardError::Layout(e) => write!(f, "[layout]: {e}"),
            BoardError::FlashSectors { both: true } => f.write_str(
                "[flash] gives both erase_size and sectors: uniform sectors take erase_size, a \
                 sector map takes sectors",
            ),
            BoardError::FlashSectors { both: false } => {
                f.write_str("[flash] needs erase_size (uniform sectors) or sectors (a sector map)")
            }
            BoardError::BadUuid { field, value } => {
                write!(f, "[device] {field} = {value:?} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
            }
            BoardError::BadAttempts(n) => write!(f, "[device] attempts = {n}: must be 1..=7"),
            BoardError::HeaderDoesNotFit {
                header_size,
                bank_size,
            } => write!(
                f,
                "[image] header_size {header_size:#x} leaves no room for an image in a \
                 {bank_size:#x}-byte bank"
            ),
            BoardError::VectorMisaligned {
                header_size,
                alignment,
            } => write!(
                f,
                "[image] header_size {header_size:#x} does not put the vector table on a \
                 {alignment:#x} boundary"
            ),
        }
    }
}

impl std::error::Error for BoardError {}

/// Parses a UUID in its usual text form (hyphens optional), as `imgtool --vid` accepts it.
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = core::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(Uuid(out))
}

impl BoardDescription {
    /// Parses and checks a description from TOML text.
    pub fn parse(text: &str) -> Result<BoardDescription, BoardError> {
        let d: BoardDescription =
            toml::from_str(text).map_err(|e| BoardError::Syntax(e.to_string()))?;
        d.layout()?;
        d.ids()?;
        d.attempts()?;
        let layout = d.layout()?;
        let header_size = d.image.header_size;
        if u32::from(header_size) >= layout.bank_size() {
            return Err(BoardError::HeaderDoesNotFit {
                header_size,
                bank_size: layout.bank_size(),
            });
        }
        let alignment = d.image.vector_alignment;
        for bank in crate::layout::Bank::ALL {
            // Inside the bank, whose end is a valid address (checked by `Layout::new`).
            let vt = layout
                .bank_address(bank)
                .checked_add(u32::from(header_size));
            if alignment == 0 || !vt.is_some_and(|vt| vt.is_multiple_of(alignment)) {
                return Err(BoardError::VectorMisaligned {
                    header_size,
                    alignment,
                });
            }
        }
        Ok(d)
    }

    /// Reads and checks a description file; errors name the file.
    pub fn load(path: &std::path::Path) -> Result<BoardDescription, BoardError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BoardError::Io(std::format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            BoardError::Syntax(s) => BoardError::Syntax(std::format!("{}: {s}", path.display())),
            other => other,
        })
    }

    /// The validated layout.
    pub fn layout(&self) -> Result<Layout, BoardError> {
        let r = |i: RegionInfo| Region::new(i.offset, i.size);
        let builder = match (self.flash.erase_size, &self.flash.sectors) {
            (Some(erase), None) => Layout::builder().erase_size(erase),
            (None, Some(runs)) => {
                let runs: Vec<SectorRun> = runs
                    .iter()
                    .map(|r| SectorRun::new(r.count, r.size))
                    .collect();
                Layout::builder().sector_map(SectorMap::new(&runs).map_err(BoardError::Layout)?)
            }
            (e, s) => {
                return Err(BoardError::FlashSectors {
                    both: e.is_some() && s.is_some(),
                })
            }
        };
        builder
            .flash_size(self.flash.size)
            .write_size(self.flash.write_size)
            .base_address(self.flash.base)
            .state(r(self.layout.state))
            .bank_a(r(self.layout.bank_a))
            .bank_b(r(self.layout.bank_b))
            .build()
            .map_err(BoardError::Layout)
    }

    /// The device ids.
    pub fn ids(&self) -> Result<DeviceIds, BoardError> {
        let one = |field: &'static str, v: &Option<String>| -> Result<Option<Uuid>, BoardError> {
            v.as_ref()
                .map(|s| {
                    parse_uuid(s).ok_or_else(|| BoardError::BadUuid {
                        field,
                        value: s.clone(),
                    })
                })
                .transpose()
        };
        Ok(DeviceIds {
            vendor: one("vendor_id", &self.device.vendor_id)?,
            class: one("class_id", &self.device.class_id)?,
        })
    }

    /// Trial attempts.
    pub fn attempts(&self) -> Result<Attempts, BoardError> {
        Attempts::new(self.device.attempts).ok_or(BoardError::BadAttempts(self.device.attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../twinbank.toml")).unwrap()
    }

    #[test]
    fn the_shipped_board_description_is_valid() {
        let d = BoardDescription::parse(&shipped()).unwrap();
        assert_eq!(d.attempts().unwrap().get(), 3);
        assert!(d.ids().unwrap().vendor.is_some());
    }

    #[test]
    fn refuses_a_misaligned_bank_b_vector_table() {
        // Vector tables 8 KiB aligned: bank A at 0x21010000 + 0x2000 is, bank B moved one
        // 4 KiB sector up (0x21111000 + 0x2000) is not.
        let text = shipped()
            .replace("vector_alignment = 0x400", "vector_alignment = 0x2000")
            .replace("header_size = 0x400", "header_size = 0x2000");
        assert!(BoardDescription::parse(&text).is_ok());
        let moved = text.replace(
            "bank_b = { offset = 0x00110000",
            "bank_b = { offset = 0x00111000",
        );
        assert!(matches!(
            BoardDescription::parse(&moved),
            Err(BoardError::VectorMisaligned { .. })
        ));
    }

    /// Bank B ends just below 4 GiB and the header is larger than the bank: the vector table
    /// address overflowed `u32` (a panic with debug assertions, a wrapped address otherwise).
    #[test]
    fn refuses_a_header_larger_than_the_bank_at_the_top_of_the_address_space() {
        let text = "[board]\nname = \"top\"\n\
            [flash]\nbase = 0xFFFF0000\nsize = 0x10000\nwrite_size = 4\nerase_size = 0x400\n\
            [layout]\nstate = { offset = 0x0, size = 0x800 }\n\
            bank_a = { offset = 0x800, size = 0x400 }\n\
            bank_b = { offset = 0xF800, size = 0x400 }\n\
            [image]\nheader_size = 0x8000\nvector_alignment = 0x400\n\
            [device]\nattempts = 3\n";
        assert_eq!(
            BoardDescription::parse(text),
            Err(BoardError::HeaderDoesNotFit {
                header_size: 0x8000,
                bank_size: 0x400
            })
        );
        // The same with a header that fits is accepted.
        let fits = text.replace("header_size = 0x8000", "header_size = 0x200");
        let fits = fits.replace("vector_alignment = 0x400", "vector_alignment = 0x200");
        assert!(BoardDescription::parse(&fits).is_ok());
    }

    /// A description whose `[flash]` disagrees with itself or with its `[layout]` is refused with
    /// the layout's error (the host tool reports the same text, tests/tests/host_tool.rs).
    #[test]
    fn refuses_a_flash_section_that_disagrees_with_itself() {
        let whole = shipped();
        let odd = whole.replace("size = 0x01000000", "size = 0x01000800");
        assert_eq!(
            BoardDescription::parse(&odd),
            Err(BoardError::Layout(LayoutError::FlashNotWholeSectors {
                flash_size: 0x0100_0800,
                erase_size: 4096
            }))
        );
        assert_eq!(
            BoardDescription::parse(&odd).unwrap_err().to_string(),
            "[layout]: flash size 0x1000800 is not a whole number of 0x1000-byte erase sectors"
        );
        // 64 KiB sectors: the 16 KiB state region is not made of whole sectors.
        let coarse = whole.replace("erase_size = 4096", "erase_size = 0x10000");
        assert_eq!(
            BoardDescription::parse(&coarse),
            Err(BoardError::Layout(LayoutError::NotEraseAligned(
                crate::layout::RegionName::State
            )))
        );
        // Another geometry that agrees with the layout is accepted.
        let other = whole
            .replace("write_size = 4 ", "write_size = 16")
            .replace("erase_size = 4096", "erase_size = 0x2000");
        let layout = BoardDescription::parse(&other).unwrap().layout().unwrap();
        assert_eq!((layout.write_size(), layout.erase_size()), (16, 0x2000));
    }

    /// The STM32F4 board description (`[flash] sectors`): its layout has the part's sector map;
    /// `erase_size` and `sectors` together, or neither, are refused; a bad map is the layout's
    /// error.
    #[test]
    fn a_sector_map_board() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../boards/stm32f4-nonuniform.toml"
        ))
        .unwrap();
        let layout = BoardDescription::parse(&text).unwrap().layout().unwrap();
        let runs = layout.sector_map().unwrap().runs().to_vec();
        assert_eq!(
            runs,
            [
                SectorRun::new(4, 0x4000),
                SectorRun::new(1, 0x1_0000),
                SectorRun::new(7, 0x2_0000)
            ]
        );
        assert_eq!((layout.state_sectors(), layout.erase_size()), (2, 0x2_0000));
        let both = text.replace("write_size = 4 ", "write_size = 4\nerase_size = 0x4000 ");
        assert_eq!(
            BoardDescription::parse(&both),
            Err(BoardError::FlashSectors { both: true })
        );
        let neither = shipped().replace("erase_size = 4096", "");
        assert_eq!(
            BoardDescription::parse(&neither),
            Err(BoardError::FlashSectors { both: false })
        );
        let short = text.replace("count = 7", "count = 6");
        assert_eq!(
            BoardDescription::parse(&short),
            Err(BoardError::Layout(LayoutError::SectorMapNotFlash {
                flash_size: 0x10_0000,
                map_size: 0xE_0000
            }))
        );
        // Bank B ends inside a 128 KiB sector; then whole sectors, one fewer than bank A.
        let split = text.replace(
            "size = 0x00060000 }   # sectors 8-10",
            "size = 0x00050000 }",
        );
        assert_eq!(
            BoardDescription::parse(&split),
            Err(BoardError::Layout(LayoutError::NotEraseAligned(
                crate::layout::RegionName::Bank(crate::layout::Bank::B)
            )))
        );
        let fewer = text.replace(
            "size = 0x00060000 }   # sectors 8-10",
            "size = 0x00040000 }",
        );
        assert_eq!(
            BoardDescription::parse(&fewer),
            Err(BoardError::Layout(LayoutError::UnequalBanks))
        );
    }

    #[test]
    fn the_recovery_window_is_off_unless_set() {
        let shipped = shipped();
        assert!(shipped.contains("recovery_window_ms = 0\n"));
        let without = shipped.replace("recovery_window_ms = 0\n", "");
        let d = BoardDescription::parse(&without).unwrap();
        assert_eq!(d.bootloader.as_ref().unwrap().recovery_window_ms, 0);
        let text = shipped.replace("recovery_window_ms = 0", "recovery_window_ms = 300");
        let d = BoardDescription::parse(&text).unwrap();
        assert_eq!(d.bootloader.unwrap().recovery_window_ms, 300);
    }

    #[test]
    fn uuids_must_be_hex() {
        assert!(parse_uuid("5a1a2b3c-0d0e-4f10-8112-131415161718").is_some());
        assert_eq!(parse_uuid("+a1a2b3c-0d0e-4f10-8112-131415161718"), None);
        assert_eq!(parse_uuid("5a1a2b3c-0d0e-4f10-8112-1314151617"), None);
    }
}
