//! The boot state: what each bank holds, its status, which bank is preferred, and the minimum
//! security counter. Stored as fixed-size records appended to a ring of erase sectors
//! ([`store`]); the newest record with a valid CRC wins.
//!
//! Bank status transitions (every arrow is exactly one record write; see docs/design.md for
//! the full ordered table):
//!
//! ```text
//!   any but the running bank ── begin (checks passed) ──► Receiving{from, erased: false}
//!        (Empty: this record is skipped)                        │ sectors from `from` erased
//!                                                               ▼
//!                                       Receiving{from, erased: true} ◄─┐ resume: back to
//!                                          │        │ finish fails      │ erased: false, erase
//!                      finish (verified,   │        └──► Empty          │ from the last sector
//!                      preferred = it)     ▼                            │ written
//!                                       Pending(n) ──── confirm ────► Confirmed
//!                                          │ boot: n>0 → Pending(n-1)  (min counter raised)
//!                                          └─ boot with n=0, reject, verify failure ─► Rejected
//!                                             (preferred = other)
//! ```

use crate::image::Version;
use crate::layout::Bank;
use core::fmt;

pub mod record;
pub mod store;

pub use record::{RECORD_MAGIC, RECORD_SIZE};
pub use store::{StateError, StateStore};

/// Boot attempts a new image gets before it is rolled back: 1..=7 (the brief's range; 3 by default).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Attempts(u8);

impl Attempts {
    /// The most attempts a trial can be given.
    pub const MAX: u8 = 7;
    /// The default: three boots to confirm.
    pub const DEFAULT: Attempts = Attempts(3);

    /// `n` attempts, if `1 <= n <= 7`.
    pub const fn new(n: u8) -> Option<Attempts> {
        if n >= 1 && n <= Self::MAX {
            Some(Attempts(n))
        } else {
            None
        }
    }

    /// The number of attempts.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts::DEFAULT
    }
}

/// Which image a bank holds: enough to recognise it (digest) and to reason about it without
/// reading the bank (version, counter, size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ImageId {
    /// Version from the image header.
    pub version: Version,
    /// SHA-256 of header ‖ payload ‖ protected TLVs (TLV 0x10).
    pub digest: [u8; 32],
    /// The image's security counter.
    pub security_counter: u32,
    /// Total image length in bytes, TLVs included.
    pub size: u32,
}

/// How far an upload into a bank got, as far as the flash proves it (see [`BankState::Receiving`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Receiving {
    /// The image being written, as announced by the host (not verified yet).
    pub image: ImageId,
    /// Erase sector (counted from the bank start) from which the bank is being (re)written. The
    /// bytes of the image before this sector were written by this upload, in order.
    pub from_sector: u16,
    /// True once every sector of the image's span from `from_sector` on was completely erased
    /// (after the bytes before it were written). Since then only this image's bytes were
    /// programmed, in order, so the last programmed byte tells how far the upload got. False
    /// while those sectors are being erased: their content proves nothing.
    pub erased: bool,
    /// Who announced the upload, and so what `image` identifies. A resume continues an upload
    /// of the same kind only: a native `begin` never resumes a streamed upload, or the reverse.
    pub kind: ReceivingKind,
}

/// How an upload in a [`Receiving`] bank identifies itself.
///
/// Variants are never reordered: the serial protocol carries this enum by variant index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReceivingKind {
    /// Announced with its whole manifest before the first byte (native protocol,
    /// [`crate::Updater::begin`]): `image` is the image's identity, signature checked.
    Announced,
    /// Streamed (SMP, [`crate::Updater::start_streamed`]): only the file's length and SHA-256
    /// were announced. `image.digest` is that SHA-256 of the whole file (not the image hash),
    /// `image.size` its length, `image.version` the header's; `image.security_counter` is 0
    /// (the protected TLVs come last).
    Streamed,
    /// A streamed upload that arrived completely and verified (full image verification and the
    /// announced SHA-256 of the bytes): `image` is the verified image's identity. Not bootable:
    /// it waits for [`crate::Updater::activate`] (SMP `image test`), which verifies it again.
    Verified,
}

/// What a bank holds and whether it may boot.
///
/// Variants are never reordered: the serial protocol carries this enum by variant index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BankState {
    /// Nothing bootable: erased, being written by an update, or a fallback given up for one.
    Empty,
    /// A verified new image on trial; `attempts_left` boots remain before it is rolled back.
    /// Invariant: a pending bank is the preferred bank.
    Pending {
        /// The image.
        image: ImageId,
        /// Trial boots still allowed (0 = the next boot rolls back).
        attempts_left: u8,
    },
    /// An image that passed its health check.
    Confirmed(ImageId),
    /// An image that failed (health check, attempts exhausted, or verification at boot).
    Rejected(ImageId),
    /// An update is being written into this bank: not bootable. Lets an interrupted upload of
    /// the same image (same digest and length) resume, and only that one.
    Receiving(Receiving),
}

impl BankState {
    /// The image this bank holds or receives, if any.
    pub fn image(&self) -> Option<&ImageId> {
        match self {
            BankState::Empty => None,
            BankState::Confirmed(i) | BankState::Rejected(i) => Some(i),
            BankState::Pending { image, .. } => Some(image),
            BankState::Receiving(r) => Some(&r.image),
        }
    }

    /// True for the states the bootloader may boot (confirmed, or pending a trial).
    pub fn may_boot(&self) -> bool {
        matches!(self, BankState::Confirmed(_) | BankState::Pending { .. })
    }

    /// A short name of the status.
    pub fn status_name(&self) -> &'static str {
        match self {
            BankState::Empty => "empty",
            BankState::Pending { .. } => "pending",
            BankState::Confirmed(_) => "confirmed",
            BankState::Rejected(_) => "rejected",
            BankState::Receiving(r) if r.kind == ReceivingKind::Verified => "uploaded",
            BankState::Receiving(_) => "receiving",
        }
    }
}

impl fmt::Display for BankState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BankState::Empty => f.write_str("empty"),
            BankState::Pending {
                image,
                attempts_left,
            } => write!(
                f,
                "pending {} ({attempts_left} attempts left)",
                image.version
            ),
            BankState::Confirmed(i) => write!(f, "confirmed {}", i.version),
            BankState::Rejected(i) => write!(f, "rejected {}", i.version),
            BankState::Receiving(r) if r.kind == ReceivingKind::Verified => {
                write!(f, "uploaded {} (not activated)", r.image.version)
            }
            BankState::Receiving(r) => write!(f, "receiving {}", r.image.version),
        }
    }
}

/// The whole boot state (one record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BootState {
    /// The bank the bootloader tries first.
    pub preferred: Bank,
    /// Images with a lower security counter are refused. Only raised by a confirm.
    pub min_security_counter: u32,
    /// Per bank, indexed by [`Bank::index`].
    pub banks: [BankState; 2],
}

impl BootState {
    /// The state of `bank`.
    pub fn bank(&self, bank: Bank) -> &BankState {
        &self.banks[bank.index()]
    }

    /// Mutable state of `bank`.
    pub fn bank_mut(&mut self, bank: Bank) -> &mut BankState {
        &mut self.banks[bank.index()]
    }

    /// The factory state: `image` confirmed in `bank`, preferred, the other bank empty (or holding
    /// `second`, confirmed too). The minimum counter starts at the lowest counter among them, so
    /// both factory images stay bootable.
    pub fn factory(bank: Bank, image: ImageId, second: Option<ImageId>) -> BootState {
        let mut banks = [BankState::Empty, BankState::Empty];
        banks[bank.index()] = BankState::Confirmed(image);
        if let Some(s) = second {
            banks[bank.other().index()] = BankState::Confirmed(s);
        }
        BootState {
            preferred: bank,
            min_security_counter: second.map_or(image.security_counter, |s| {
                s.security_counter.min(image.security_counter)
            }),
            banks,
        }
    }
}
