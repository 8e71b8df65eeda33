//! The flash the harness runs the device code on: the device crate's [`StrictFlash`] (NOR rules,
//! counted operations, power cuts) behind a thin adapter that
//! - records a trace of the operations of an uncut run (what each operation is, and for a state
//!   record, the state it writes), so the harness knows which cut models apply to operation `i`;
//! - can turn the device's state writer into a deliberately broken one ([`Fault`]), so the harness
//!   can show that it catches real breakage without touching `device/src`.
//!
//! Without a fault the adapter forwards every call unchanged.

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use twinbank::state::record::decode;
use twinbank::state::{BootState, RECORD_SIZE};
use twinbank::testing::{CutModel, OnViolation, StrictError, StrictFlash};

/// A deliberately broken state writer, for the negative tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Every state record is written "in place": the first sector of the state region (which
    /// holds the newest record) is erased, then the record is programmed at its first slot. Works
    /// perfectly as long as power stays on; loses the state when power fails between the erase and
    /// the end of the write.
    EraseInPlace,
}

impl Fault {
    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::EraseInPlace => "erase-in-place",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Fault> {
        match s {
            "erase-in-place" => Some(Fault::EraseInPlace),
            _ => None,
        }
    }
}

/// What a flash operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A program of `units` write units.
    Write {
        /// Write units programmed.
        units: usize,
    },
    /// A sector erase.
    Erase,
}

/// One flash operation of an uncut run.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// Write or erase.
    pub kind: OpKind,
    /// Flash offset.
    pub offset: u32,
    /// True when it touches the state region.
    pub in_state: bool,
    /// For a state record write: the state the record holds (if it decodes).
    pub record: Option<BootState>,
}

/// The harness flash: a [`StrictFlash`] with an operation trace and an optional [`Fault`].
#[derive(Debug, Clone)]
pub struct DevFlash<const W: usize, const E: usize> {
    /// The strict flash underneath.
    pub inner: StrictFlash<W, E>,
    fault: Option<Fault>,
    state_offset: u32,
    state_size: u32,
    /// [`Fault::EraseInPlace`]: the slot the store believes it wrote last (its reads are sent to
    /// the slot that was really written). Volatile: cleared at power-on.
    redirect: Option<u32>,
    trace: Option<Vec<Op>>,
}

impl<const W: usize, const E: usize> DevFlash<W, E> {
    /// An erased flash of `size` bytes; violations are recorded, not panicked on.
    pub fn new(size: usize, state_offset: u32, state_size: u32, fault: Option<Fault>) -> Self {
        let mut inner = StrictFlash::new(size);
        inner.set_on_violation(OnViolation::Error);
        DevFlash {
            inner,
            fault,
            state_offset,
            state_size,
            redirect: None,
            trace: None,
        }
    }

    /// Schedules a power cut at operation `op` (counted from now).
    pub fn cut_at(&mut self, op: u64, model: CutModel) {
        self.inner.cut_at(op, model);
    }

    /// True when power is off.
    pub fn is_cut(&self) -> bool {
        self.inner.is_cut()
    }

    /// Power comes back: RAM-only state of the adapter is lost.
    pub fn power_on(&mut self) {
        self.inner.power_on();
        self.redirect = None;
    }

    /// NOR rule violations recorded so far.
    pub fn violations(&self) -> &[StrictError] {
        &self.inner.violations
    }

    /// Starts recording operations.
    pub fn start_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    /// Stops recording and returns the operations.
    pub fn take_trace(&mut self) -> Vec<Op> {
        self.trace.take().unwrap_or_default()
    }

    fn in_state(&self, offset: u32) -> bool {
        offset >= self.state_offset && offset < self.state_offset + self.state_size
    }

    fn traced_write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), StrictError> {
        let before = self.inner.ops();
        let r = self.inner.write(offset, bytes);
        if self.inner.ops() > before {
            let in_state = self.in_state(offset);
            let record = if in_state && bytes.len() == RECORD_SIZE {
                let mut b = [0u8; RECORD_SIZE];
                b.copy_from_slice(bytes);
                decode(&b).map(|(s, _)| s)
            } else {
                None
            };
            if let Some(t) = self.trace.as_mut() {
                t.push(Op {
                    kind: OpKind::Write {
                        units: bytes.len() / W,
                    },
                    offset,
                    in_state,
                    record,
                });
            }
        }
        r
    }

    fn traced_erase(&mut self, from: u32, to: u32) -> Result<(), StrictError> {
        // One operation per sector, like the device code does it (it erases sector by sector);
        // the sectors of the strict flash's map when it has one.
        let sectors: Vec<(u32, u32)> = self
            .inner
            .sectors()
            .into_iter()
            .map(|(s, n)| (s as u32, n as u32))
            .filter(|&(s, _)| s >= from && s < to)
            .collect();
        for (s, n) in sectors {
            let before = self.inner.ops();
            let r = self.inner.erase(s, s + n);
            if self.inner.ops() > before {
                let in_state = self.in_state(s);
                if let Some(t) = self.trace.as_mut() {
                    t.push(Op {
                        kind: OpKind::Erase,
                        offset: s,
                        in_state,
                        record: None,
                    });
                }
            }
            r?;
        }
        Ok(())
    }
}

impl<const W: usize, const E: usize> ErrorType for DevFlash<W, E> {
    type Error = StrictError;
}

impl<const W: usize, const E: usize> ReadNorFlash for DevFlash<W, E> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if let Some(v) = self.redirect {
            let end = offset as usize + bytes.len();
            if offset >= v && end <= v as usize + RECORD_SIZE {
                return self.inner.read(self.state_offset + (offset - v), bytes);
            }
        }
        self.inner.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl<const W: usize, const E: usize> NorFlash for DevFlash<W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if to < from || !((to - from) as usize).is_multiple_of(E) {
            // Let the strict flash report the misuse.
            return self.inner.erase(from, to);
        }
        self.traced_erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if self.fault == Some(Fault::EraseInPlace)
            && self.in_state(offset)
            && bytes.len() == RECORD_SIZE
        {
            let s0 = self.state_offset;
            self.traced_erase(s0, s0 + E as u32)?;
            self.traced_write(s0, bytes)?;
            self.redirect = Some(offset);
            return Ok(());
        }
        self.traced_write(offset, bytes)
    }
}
