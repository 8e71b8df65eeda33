//! The walk's flash driver: the harness flash ([`DevFlash`], strict NOR in error mode) behind a
//! driver that can, during one call of the device code,
//! - cut power at its `k`-th program/erase, with a cut model chosen for that operation's kind
//!   ([`CutModel`]: before, prefix, torn bits, partial erase, garbage erase);
//! - fail its `k`-th program/erase: refused before doing anything, or done but reported failed;
//! - fail its `k`-th read (a transient read error);
//!
//! and logs every program and erase, so the checker can hold each one against the model.

use crate::flash::DevFlash;
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use std::cell::RefCell;
use twinbank::testing::{CutModel, SplitMix64, StrictError};

/// An error of the walk's driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverError {
    /// The strict flash refused (power cut, NOR rule violation).
    Flash(StrictError),
    /// An injected driver error.
    Injected,
}

impl NorFlashError for DriverError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            DriverError::Flash(e) => e.kind(),
            DriverError::Injected => NorFlashErrorKind::Other,
        }
    }
}

/// How an injected program/erase error behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// The driver reports an error and does nothing.
    Refused,
    /// The driver does the operation completely, then reports an error.
    Landed,
    /// A read reports an error (nothing else happens).
    Read,
}

impl FaultKind {
    /// All kinds, in report order.
    pub const ALL: [FaultKind; 3] = [FaultKind::Refused, FaultKind::Landed, FaultKind::Read];
}

/// A program or an erase, as the device code issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRec {
    /// True for an erase.
    pub erase: bool,
    /// Flash offset.
    pub offset: u32,
    /// Bytes.
    pub len: u32,
}

/// What was injected during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Power was cut at this operation.
    Cut(CutModel, OpRec),
    /// This operation failed.
    Fault(FaultKind, OpRec),
    /// A read failed.
    ReadFault,
}

/// A deliberately broken driver, to show that the walk notices (`powercut/tests/walk.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Every 97th program reports success but programs nothing.
    LoseWrites,
}

/// Programs between two lost ones under [`Sabotage::LoseWrites`].
const LOSE_EVERY: u64 = 97;

/// What to inject into the next call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Cut at this program/erase (counted from 0 in the call).
    pub cut: Option<u64>,
    /// Fail this program/erase.
    pub fault: Option<(FaultKind, u64)>,
    /// Fail this read.
    pub read_fault: Option<u64>,
}

/// The driver.
#[derive(Debug)]
pub struct Driver<const W: usize, const E: usize> {
    /// The flash underneath.
    pub flash: DevFlash<W, E>,
    plan: Plan,
    ops: u64,
    reads: u64,
    /// Programs and erases of the current call.
    pub log: Vec<OpRec>,
    /// Injections of the current call.
    pub fired: Vec<Fired>,
    rng: SplitMix64,
    sabotage: Option<Sabotage>,
    programs: u64,
}

impl<const W: usize, const E: usize> Driver<W, E> {
    /// A driver over `flash`; `seed` chooses the cut models' details.
    pub fn new(flash: DevFlash<W, E>, seed: u64, sabotage: Option<Sabotage>) -> Self {
        Driver {
            sabotage,
            programs: 0,
            flash,
            plan: Plan::default(),
            ops: 0,
            reads: 0,
            log: Vec::new(),
            fired: Vec::new(),
            rng: SplitMix64(seed),
        }
    }

    /// Starts a call: `plan` applies to it; the log and the injections are reset.
    pub fn start_call(&mut self, plan: Plan) {
        self.plan = plan;
        self.ops = 0;
        self.reads = 0;
        self.log.clear();
        self.fired.clear();
    }

    /// Ends a call: nothing more is injected.
    pub fn end_call(&mut self) {
        self.plan = Plan::default();
    }

    /// The cut model for an operation (one that applies to its kind).
    fn model_for(&mut self, op: &OpRec) -> CutModel {
        let r = self.rng.next_u64();
        let seed = self.rng.next_u64();
        if op.erase {
            match r % 5 {
                0 => CutModel::Before,
                1 | 2 => CutModel::ErasePartial { seed },
                _ => CutModel::EraseGarbage { seed },
            }
        } else {
            let units = (op.len as usize / W).max(1);
            match r % 5 {
                0 => CutModel::Before,
                1 | 2 if units > 1 => CutModel::WritePrefix {
                    units: 1 + (seed as usize % (units - 1)),
                },
                _ => CutModel::WriteBits {
                    units: (seed >> 32) as usize % units,
                    seed,
                },
            }
        }
    }

    fn operate(
        &mut self,
        op: OpRec,
        f: impl FnOnce(&mut DevFlash<W, E>) -> Result<(), StrictError>,
    ) -> Result<(), DriverError> {
        let i = self.ops;
        self.ops += 1;
        self.log.push(op);
        if self.flash.is_cut() {
            return Err(DriverError::Flash(StrictError::PowerCut));
        }
        if self.plan.cut == Some(i) {
            let model = self.model_for(&op);
            self.flash.cut_at(0, model);
            let r = f(&mut self.flash);
            if self.flash.is_cut() {
                self.fired.push(Fired::Cut(model, op));
            }
            return r.map_err(DriverError::Flash);
        }
        match self.plan.fault {
            Some((kind @ FaultKind::Refused, at)) if at == i => {
                self.fired.push(Fired::Fault(kind, op));
                Err(DriverError::Injected)
            }
            Some((kind @ FaultKind::Landed, at)) if at == i => {
                self.fired.push(Fired::Fault(kind, op));
                f(&mut self.flash).map_err(DriverError::Flash)?;
                Err(DriverError::Injected)
            }
            _ => f(&mut self.flash).map_err(DriverError::Flash),
        }
    }
}

impl<const W: usize, const E: usize> ErrorType for Driver<W, E> {
    type Error = DriverError;
}

impl<const W: usize, const E: usize> ReadNorFlash for Driver<W, E> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let i = self.reads;
        self.reads += 1;
        if self.plan.read_fault == Some(i) {
            self.fired.push(Fired::ReadFault);
            return Err(DriverError::Injected);
        }
        self.flash.read(offset, bytes).map_err(DriverError::Flash)
    }

    fn capacity(&self) -> usize {
        self.flash.capacity()
    }
}

impl<const W: usize, const E: usize> NorFlash for Driver<W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let op = OpRec {
            erase: true,
            offset: from,
            len: to.saturating_sub(from),
        };
        self.operate(op, |f| f.erase(from, to))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.programs += 1;
        if self.sabotage == Some(Sabotage::LoseWrites) && self.programs.is_multiple_of(LOSE_EVERY) {
            return Ok(());
        }
        let op = OpRec {
            erase: false,
            offset,
            len: bytes.len() as u32,
        };
        self.operate(op, |f| f.write(offset, bytes))
    }
}

/// A handle on a shared driver: the device code holds one (inside an `Updater`) while the walk
/// checks the flash between calls.
#[derive(Debug, Clone, Copy)]
pub struct Shared<'a, const W: usize, const E: usize>(pub &'a RefCell<Driver<W, E>>);

impl<const W: usize, const E: usize> ErrorType for Shared<'_, W, E> {
    type Error = DriverError;
}

impl<const W: usize, const E: usize> ReadNorFlash for Shared<'_, W, E> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.borrow().capacity()
    }
}

impl<const W: usize, const E: usize> NorFlash for Shared<'_, W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.borrow_mut().erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().write(offset, bytes)
    }
}
