//! Append-only storage of state records in a ring of erase sectors.
//!
//! ```text
//! state region:  | sector 0              | sector 1              | ... (≥ 2 sectors)
//!                | r1 r2 r3 ... r32      | r33 r34 ░░ ·· ·· ··   |   ░░ torn/garbage, ·· erased
//!                                          ^ newest valid record   ^ next append (after last non-blank slot)
//! ```
//!
//! Rules (each one prevents a way to lose the state on power loss):
//! - A change appends one record to the next free slot of the sector holding the newest valid
//!   record. A slot is only ever programmed when it reads fully erased, so every write unit is
//!   programmed at most once between erases.
//! - A torn write leaves a slot that is not blank and not valid: it is skipped, never rewritten.
//! - When that sector is full, the next sector of the ring is erased (always, even if it looks
//!   blank: an interrupted erase can leave weak bits) and the record goes to its first slot. The
//!   sector erased is never the one holding the newest valid record, so the only valid copy is
//!   never erased; until the new record is complete, the old one still wins.
//! - The scan reads every slot: a write the driver refused before programming anything leaves a
//!   blank slot that the next record skips, so a newer record can follow a blank slot.
//! - Every write attempt consumes its sequence number, so a record that landed although the driver
//!   reported an error can never tie with (and win against) the record written after it.
//! - Each record is read back after writing; a mismatch is reported and the slot is left behind.
//! - After a write that reported an error, the store does not know which state the flash holds
//!   (the record may have landed): [`StateStore::refresh`] scans the region again before anything
//!   is decided from the state, so no decision contradicts what a reset would find.

use super::record::{decode, encode, RECORD_SIZE};
use super::BootState;
use crate::flash::{fault, FlashFault};
use crate::flash::{read_exact, ERASED};
use crate::layout::{GeometryError, Layout};
use core::fmt;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
#[cfg(feature = "async")]
use {
    crate::asynch::CheckAsyncFlash,
    crate::flash::read_exact_async,
    embedded_storage_async::nor_flash::{
        NorFlash as AsyncNorFlash, ReadNorFlash as AsyncReadNorFlash,
    },
};

/// Why the state could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StateError {
    /// The flash driver failed.
    Flash(FlashFault),
    /// A record read back differently from what was written (the slot is skipped from now on).
    WriteVerifyFailed,
    /// The sequence number reached its maximum (after 4 billion changes; not reachable in a
    /// device's life, refused rather than wrapped).
    SequenceExhausted,
    /// The flash driver's geometry is not the layout's ([`Layout::check_flash`]): nothing was
    /// read or written.
    Geometry(GeometryError),
}

impl StateError {
    /// A few words for the bootloader's boot line (no formatting machinery needed).
    pub fn summary(&self) -> &'static str {
        match self {
            StateError::Geometry(e) => e.summary(),
            _ => "state error",
        }
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Flash(k) => write!(f, "state region: {}", k),
            StateError::WriteVerifyFailed => {
                f.write_str("state record did not read back as written")
            }
            StateError::SequenceExhausted => f.write_str("state sequence number exhausted"),
            StateError::Geometry(e) => write!(f, "flash geometry: {e}"),
        }
    }
}

/// Where the next record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    sector: u32,
    /// Next slot in `sector`; `== slots_per_sector` when the sector is full.
    slot: u32,
}

/// The state store: knows the newest record and where the next one goes. Build it with
/// [`StateStore::open`], which scans the region once.
#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", cfg_attr(docsrs, doc(cfg(feature = "async")))),
    idents(
        StateStore(sync, async = "AsyncStateStore"),
        NorFlash(sync, async = "AsyncNorFlash"),
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        check_flash(sync, async = "check_async_flash")
    )
)]
#[derive(Debug, Clone)]
pub struct StateStore {
    region_offset: u32,
    sectors: u32,
    erase_size: u32,
    /// `None` when no valid record exists (blank or never provisioned): the next write erases
    /// sector 0 first.
    cursor: Option<Cursor>,
    seq: u32,
    current: Option<BootState>,
    /// A write failed since the last successful one: the flash may hold a newer record than
    /// `current`.
    uncertain: bool,
}

#[maybe_async_cfg::maybe(
    sync(keep_self),
    async(feature = "async", cfg_attr(docsrs, doc(cfg(feature = "async")))),
    idents(
        StateStore(sync, async = "AsyncStateStore"),
        NorFlash(sync, async = "AsyncNorFlash"),
        ReadNorFlash(sync, async = "AsyncReadNorFlash"),
        read_exact(sync, async = "read_exact_async"),
        check_flash(sync, async = "check_async_flash")
    )
)]
impl StateStore {
    /// Slots per erase sector.
    fn slots(&self) -> u32 {
        self.erase_size / RECORD_SIZE as u32
    }

    fn slot_offset(&self, sector: u32, slot: u32) -> u32 {
        self.region_offset + sector * self.erase_size + slot * RECORD_SIZE as u32
    }

    /// Checks the flash against the layout ([`Layout::check_flash`]: a driver whose geometry is
    /// not the layout's is refused with [`StateError::Geometry`] before anything is read), then
    /// scans the state region and finds the newest valid record.
    ///
    /// Every entry point of the crate that takes a flash handle opens the store first, so this is
    /// the one place the geometry is checked. Reads each slot once; stack: one record buffer.
    pub async fn open<F: NorFlash>(
        flash: &mut F,
        layout: &Layout,
    ) -> Result<StateStore, StateError> {
        Layout::check_flash(layout, flash).map_err(StateError::Geometry)?;
        Self::scanned(flash, layout).await
    }

    /// The newest valid state of a flash *image* read as it is (a file, a dump, a buffer in a
    /// [`SliceFlash`](crate::flash::SliceFlash)), `None` when it holds no valid record. Tools use
    /// it where no driver exists to check the geometry against; nothing can be written through it.
    pub async fn peek<F: ReadNorFlash>(
        flash: &mut F,
        layout: &Layout,
    ) -> Result<Option<BootState>, StateError> {
        Ok(Self::scanned(flash, layout).await?.current)
    }

    async fn scanned<F: ReadNorFlash>(
        flash: &mut F,
        layout: &Layout,
    ) -> Result<StateStore, StateError> {
        let mut store = StateStore {
            region_offset: layout.state().offset.0,
            sectors: layout.state_sectors(),
            // The sectors of the state region are all this size (a layout invariant).
            erase_size: layout.state_sector_size(),
            cursor: None,
            seq: 0,
            current: None,
            uncertain: false,
        };
        store.scan(flash).await?;
        Ok(store)
    }

    /// True when a write reported an error since the last successful write or scan: the flash
    /// may hold a newer state than [`StateStore::current`] (the record may have landed).
    pub fn is_uncertain(&self) -> bool {
        self.uncertain
    }

    /// After a failed write: scans the region again so that [`StateStore::current`] is what the
    /// flash holds (what a reset would find). A no-op when no write failed. Sequence numbers
    /// already consumed stay consumed, and a slot a failed write was aimed at is never used again.
    pub async fn refresh<F: ReadNorFlash>(&mut self, flash: &mut F) -> Result<(), StateError> {
        if !self.uncertain {
            return Ok(());
        }
        let (seq, cursor) = (self.seq, self.cursor);
        self.scan(flash).await?;
        self.seq = self.seq.max(seq);
        if let (Some(ram), Some(scanned)) = (cursor, self.cursor) {
            if ram.sector == scanned.sector && ram.slot > scanned.slot {
                self.cursor = Some(ram);
            }
        }
        self.uncertain = false;
        Ok(())
    }

    /// Finds the newest valid record and the next free slot after it.
    async fn scan<F: ReadNorFlash>(&mut self, flash: &mut F) -> Result<(), StateError> {
        let store = self;
        store.cursor = None;
        store.seq = 0;
        store.current = None;
        let mut buf = [0u8; RECORD_SIZE];
        for sector in 0..store.sectors {
            let mut used = 0;
            let mut newest_here = false;
            for slot in 0..store.slots() {
                read_exact(flash, store.slot_offset(sector, slot), &mut buf)
                    .await
                    .map_err(StateError::Flash)?;
                if buf.iter().all(|&b| b == ERASED) {
                    // A slot left blank by a failed write may precede newer records.
                    continue;
                }
                used = slot + 1;
                if let Some((state, seq)) = decode(&buf) {
                    if store.current.is_none() || seq > store.seq {
                        store.current = Some(state);
                        store.seq = seq;
                        newest_here = true;
                    }
                }
            }
            if newest_here {
                store.cursor = Some(Cursor { sector, slot: used });
            }
        }
        Ok(())
    }

    /// The newest valid state, `None` when the region holds no valid record.
    pub fn current(&self) -> Option<&BootState> {
        self.current.as_ref()
    }

    /// Sequence number of the newest record, or of the last write attempt if that was later (0
    /// when there is none).
    pub fn sequence(&self) -> u32 {
        self.seq
    }

    /// Appends `state` as the new current state: one record write, preceded by one sector erase
    /// when the current sector is full (or when there is no valid record yet).
    ///
    /// Power loss at any point leaves either the previous state or `state` as the newest valid
    /// record. Writing a state equal to the current one is a no-op.
    pub async fn write<F: NorFlash>(
        &mut self,
        flash: &mut F,
        state: &BootState,
    ) -> Result<(), StateError> {
        if !self.uncertain && self.current.as_ref() == Some(state) {
            return Ok(());
        }
        // `seq` is 0 without a record. Every attempt consumes its number, even a failed one.
        let seq = self
            .seq
            .checked_add(1)
            .ok_or(StateError::SequenceExhausted)?;
        let target = match self.cursor {
            Some(c) if c.slot < self.slots() => c,
            // The next sector of the ring (a comparison, not `%`: no division, no panic path).
            Some(c) if c.sector + 1 < self.sectors => {
                self.erase_sector(flash, c.sector + 1).await?
            }
            Some(_) => self.erase_sector(flash, 0).await?,
            None => self.erase_sector(flash, 0).await?,
        };
        let record = encode(state, seq);
        self.seq = seq;
        // Until this write is known to have succeeded, flash may hold it or not: no shortcuts.
        self.uncertain = true;
        let offset = self.slot_offset(target.sector, target.slot);
        // The slot is consumed whatever happens next: never program it twice.
        self.cursor = Some(Cursor {
            sector: target.sector,
            slot: target.slot + 1,
        });
        flash
            .write(offset, &record)
            .await
            .map_err(|e| StateError::Flash(fault(e)))?;
        let mut back = [0u8; RECORD_SIZE];
        read_exact(flash, offset, &mut back)
            .await
            .map_err(StateError::Flash)?;
        if back != record {
            return Err(StateError::WriteVerifyFailed);
        }
        self.current = Some(*state);
        self.uncertain = false;
        Ok(())
    }

    async fn erase_sector<F: NorFlash>(
        &mut self,
        flash: &mut F,
        sector: u32,
    ) -> Result<Cursor, StateError> {
        let from = self.region_offset + sector * self.erase_size;
        // On failure the cursor still says "current sector full", so the next write erases again.
        flash
            .erase(from, from + self.erase_size)
            .await
            .map_err(|e| StateError::Flash(fault(e)))?;
        Ok(Cursor { sector, slot: 0 })
    }
}
