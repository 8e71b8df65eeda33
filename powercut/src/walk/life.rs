//! One random device life: provisioning, then boots and what the application and the host do
//! (installs good and bad, interrupted and resumed, confirm, reject, rollback, resets), with power
//! cuts, driver errors and bit rot. Every call of the device code is predicted by the model and
//! checked against it and against the invariants.

use super::catalog::{Catalog, CLASS, VENDOR};
use super::driver::{Driver, FaultKind, Fired, OpRec, Plan, Sabotage, Shared};
use super::model::{Cause, Ctx, Model, Upload, Want, Why};
use super::stats::Stats;
use crate::harness::class;
use crate::world::World;
use embedded_storage::nor_flash::NorFlash;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Debug;
use twinbank::state::record::decode;
use twinbank::state::{StateStore, RECORD_SIZE};
use twinbank::testing::SplitMix64;
use twinbank::{
    Attempts, Bank, BankState, BootError, BootReason, BootState, Config, DeviceIds, Layout,
    RollbackCause, UpdateError, Updater,
};

/// Probability (per mille) that a call gets a power cut.
const CUT_PER_MILLE: u64 = 30;
/// The same while recovering from a cut (nested cuts).
const NESTED_CUT_PER_MILLE: u64 = 300;
/// Probability (per mille) that a call gets a driver error.
const FAULT_PER_MILLE: u64 = 40;
/// Probability (per mille) of bit rot while the device is off.
const ROT_PER_MILLE: u64 = 10;
/// Reads a transient read error is aimed at (most calls read less; uploads and scans more).
const READ_FAULT_SPAN: [u64; 2] = [32, 4096];
/// Events kept for a failure report.
const RECENT: usize = 40;

/// How a life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The step budget ran out.
    Steps,
    /// Nothing bootable (bit rot took the last image).
    NoBootableImage,
}

/// A failed check.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Step at which it failed.
    pub step: u64,
    /// What failed.
    pub message: String,
    /// The last events before it.
    pub recent: Vec<String>,
}

/// What the host is uploading.
#[derive(Debug, Clone)]
struct Host {
    /// The catalog image announced.
    img: usize,
    /// What the host sends (the image, or corrupted bytes).
    data: Vec<u8>,
    /// `start` + `erase_next` instead of `begin`.
    spread: bool,
}

struct Life<'c, 's, const W: usize, const E: usize> {
    ctx: Ctx<'c>,
    cfg: Config<'c>,
    cell: &'c RefCell<Driver<W, E>>,
    layout: Layout,
    model: Model,
    rng: SplitMix64,
    up: Option<Updater<'c, Shared<'c, W, E>>>,
    host: Option<Host>,
    /// The running image's bytes, as booted.
    snapshot: Option<(Bank, Vec<u8>)>,
    /// The highest minimum counter seen on flash.
    max_min: Option<u32>,
    /// Cuts since the device last completed an application call (nesting).
    depth: u64,
    step: u64,
    stats: &'s mut Stats,
    recent: VecDeque<String>,
    verbose: bool,
    scanner: StateScan,
    /// The last updater call got a driver error.
    after_fault: bool,
}

/// How to run a life.
#[derive(Debug, Clone, Copy)]
pub struct LifeOptions {
    /// Calls of the device code at most.
    pub max_steps: u64,
    /// Print every step.
    pub verbose: bool,
    /// A deliberately broken driver.
    pub sabotage: Option<Sabotage>,
}

/// Runs the life of `seed` on geometry (W, E).
pub fn run_life<const W: usize, const E: usize>(
    seed: u64,
    opts: LifeOptions,
    stats: &mut Stats,
) -> Result<End, Failure> {
    let LifeOptions {
        max_steps,
        verbose,
        sabotage,
    } = opts;
    let world: World<W, E> = World::new(None);
    let cat = Catalog::new(&world.layout);
    let mut rng = SplitMix64(seed ^ 0x5eed_11fe);
    let ids = if rng.next_u64() % 10 < 7 {
        DeviceIds {
            vendor: Some(VENDOR),
            class: Some(CLASS),
        }
    } else {
        DeviceIds::default()
    };
    let attempts =
        Attempts::new(1 + (rng.next_u64() % Attempts::MAX as u64) as u8).unwrap_or_default();
    let cfg = Config {
        layout: world.layout,
        keys: &cat.keys,
        ids,
        attempts,
    };
    let ctx = Ctx {
        cat: &cat,
        ids,
        attempts,
        write_size: W as u32,
        erase_size: E as u32,
        layout: world.layout,
    };
    let cell = RefCell::new(Driver::new(world.blank(), rng.next_u64(), sabotage));
    let mut life = Life {
        ctx,
        cfg,
        cell: &cell,
        layout: world.layout,
        model: Model::new(world.layout.bank_size() as usize),
        rng,
        up: None,
        host: None,
        snapshot: None,
        max_min: None,
        depth: 0,
        step: 0,
        stats,
        recent: VecDeque::new(),
        verbose,
        scanner: StateScan::default(),
        after_fault: false,
    };
    life.note(format!(
        "life: W={W} E={E} ids={} attempts={}",
        ids.vendor.is_some(),
        attempts.get()
    ));
    let r = life.run(max_steps);
    life.stats.steps += life.step;
    r.map_err(|message| Failure {
        step: life.step,
        message,
        recent: life.recent.iter().cloned().collect(),
    })
}

fn name_of<T: Debug>(v: &T) -> String {
    let s = format!("{v:?}");
    let end = s.find(['(', ' ', '{']).unwrap_or(s.len());
    s[..end].to_string()
}

fn why_of(r: &BootReason) -> Why {
    match *r {
        BootReason::Normal => Why::Normal,
        BootReason::Fallback { rejected } => Why::Fallback(rejected),
        BootReason::Trial { attempts_left } => Why::Trial(attempts_left),
        BootReason::RolledBack { from, cause } => Why::RolledBack(
            from,
            match cause {
                RollbackCause::AttemptsExhausted => Cause::Exhausted,
                RollbackCause::VerifyFailed(_) => Cause::Verify,
                RollbackCause::ImageReplaced => Cause::Replaced,
                _ => Cause::Unknown,
            },
        ),
        BootReason::LastResort { .. } => Why::LastResort,
        _ => Why::Unknown,
    }
}

/// A slot's bytes and what they decode to (state, sequence number).
type CachedSlot = ([u8; RECORD_SIZE], Option<(BootState, u32)>);

/// Reads the newest valid record of the state region independently of the store: every slot is
/// decoded, the highest sequence number wins, and two valid records with one sequence number are
/// an error. Keeps each slot's bytes and decoding, so a slot is decoded again only when it changed.
#[derive(Debug, Default)]
pub struct StateScan {
    slots: Vec<CachedSlot>,
}

impl StateScan {
    /// The newest valid state and the flash offset of its slot.
    pub fn scan(
        &mut self,
        bytes: &[u8],
        layout: &Layout,
    ) -> Result<Option<(BootState, usize)>, String> {
        let st = layout.state();
        let start = st.offset.0 as usize;
        let n = st.size.0 as usize / RECORD_SIZE;
        if self.slots.len() != n {
            self.slots = vec![([0xFF; RECORD_SIZE], None); n];
        }
        let mut best: Option<(BootState, u32, usize)> = None;
        let mut seqs = Vec::new();
        for (k, (cached, decoded)) in self.slots.iter_mut().enumerate() {
            let off = start + k * RECORD_SIZE;
            let slot = &bytes[off..off + RECORD_SIZE];
            if slot != &cached[..] {
                cached.copy_from_slice(slot);
                *decoded = decode(cached);
            }
            if let Some((s, seq)) = decoded {
                seqs.push(*seq);
                if best.as_ref().is_none_or(|b| *seq > b.1) {
                    best = Some((*s, *seq, off));
                }
            }
        }
        seqs.sort_unstable();
        if let Some(w) = seqs.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "two valid state records with sequence number {}",
                w[0]
            ));
        }
        Ok(best.map(|(s, _, off)| (s, off)))
    }
}

impl<'c, const W: usize, const E: usize> Life<'c, '_, W, E> {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn note(&mut self, s: String) {
        if self.verbose {
            println!("{s}");
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(s);
    }

    fn bank_off(&self, b: Bank) -> usize {
        self.layout.bank(b).offset.0 as usize
    }

    fn bank_size(&self) -> usize {
        self.layout.bank_size() as usize
    }

    fn run(&mut self, max_steps: u64) -> Result<End, String> {
        self.provision()?;
        while self.step < max_steps {
            if self.model.running.is_none() {
                self.maybe_rot();
                if !self.boot()? {
                    self.stats.dead += 1;
                    return Ok(End::NoBootableImage);
                }
            } else {
                self.app_step()?;
            }
        }
        Ok(End::Steps)
    }

    // ---- provisioning -------------------------------------------------------------------

    fn provision(&mut self) -> Result<(), String> {
        let cat = self.ctx.cat;
        let x = self.below(100);
        let mut d = self.cell.borrow_mut();
        d.start_call(Plan::default());
        if x < 60 {
            // The factory line: erase, program, write the Confirmed record.
            let img = &cat.images[cat.factory[0]];
            let mut bytes = img.bytes.clone();
            bytes.resize(bytes.len().div_ceil(W) * W, 0xFF);
            let base = self.layout.bank(Bank::A).offset.0;
            let bank = self.layout.bank(Bank::A);
            for s in 0..self.layout.sectors_spanning(bank, bytes.len() as u32) {
                let Some(sector) = self.layout.sector_in(bank, s) else {
                    break;
                };
                let from = sector.offset.0;
                d.flash
                    .erase(from, from + sector.size.0)
                    .map_err(|e| format!("factory erase: {e:?}"))?;
            }
            d.flash
                .write(base, &bytes)
                .map_err(|e| format!("factory program: {e:?}"))?;
            let state = BootState::factory(Bank::A, img.id, None);
            let mut store = StateStore::open(&mut d.flash, &self.layout)
                .map_err(|e| format!("factory state: {e}"))?;
            store
                .write(&mut d.flash, &state)
                .map_err(|e| format!("factory state: {e}"))?;
            self.model.shadow[0][..bytes.len()].copy_from_slice(&bytes);
            self.model.state = Some(state);
            self.max_min = Some(state.min_security_counter);
            drop(d);
            self.note(format!("provision: factory {}", img.name));
            self.stats.count("provision (factory)");
        } else {
            // A programmer wrote images without a state record: the first boot adopts them.
            let mut what = Vec::new();
            for b in Bank::ALL {
                let y = self.rng.next_u64() % 100;
                let fits = |i: &usize| cat.images[*i].len() <= self.layout.bank_size() as usize;
                let bytes = if (b == Bank::A && y < 85) || (b == Bank::B && y < 40) {
                    Some(cat.images[cat.factory[b.index()]].bytes.clone())
                } else if y < 65 {
                    let i = (self.rng.next_u64() % cat.images.len() as u64) as usize;
                    Some(i).filter(fits).map(|i| cat.images[i].bytes.clone())
                } else if y < 75 {
                    let n = 1 + (self.rng.next_u64() % 3000) as usize;
                    Some((0..n).map(|_| self.rng.next_u64() as u8).collect())
                } else {
                    None
                };
                if let Some(bytes) = bytes {
                    let off = self.layout.bank(b).offset.0 as usize;
                    d.flash.inner.load(off, &bytes);
                    self.model.shadow[b.index()][..bytes.len()].copy_from_slice(&bytes);
                    what.push(format!(
                        "{b}: {}",
                        cat.image_in(&bytes)
                            .map_or("garbage".to_string(), |i| cat.images[i].name.clone())
                    ));
                }
            }
            drop(d);
            self.note(format!("provision: programmer only [{}]", what.join(", ")));
            self.stats.count("provision (programmer, adopted at boot)");
        }
        self.check_invariants(false)
    }

    // ---- bit rot --------------------------------------------------------------------------

    fn maybe_rot(&mut self) {
        if !self.chance(ROT_PER_MILLE) {
            return;
        }
        if self.below(10) < 7 {
            let b = if self.below(2) == 0 { Bank::A } else { Bank::B };
            // Anywhere, but not in the unprotected TLVs of the image the bank holds: the model
            // predicts the verdict on a broken hashed part (refused) or on bytes the verifier
            // ignores (accepted), not on a rewritten TLV entry (a key TLV whose type rotted is
            // skipped, and the image still verifies).
            let img = self
                .model
                .image_in(&self.ctx, b)
                .map(|i| &self.ctx.cat.images[i]);
            let mut pos = self.below(self.bank_size() as u64) as usize;
            if let Some(img) = img {
                let in_tlvs = pos >= img.hashed_len
                    && pos < img.len()
                    && !img.ignored.is_some_and(|(a, z)| pos >= a && pos < z);
                if in_tlvs || self.below(10) < 3 {
                    pos = self.below(img.hashed_len as u64) as usize;
                }
            }
            let bit = 1u8 << self.below(8);
            let off = self.bank_off(b) + pos;
            self.cell.borrow_mut().flash.inner.bytes_mut()[off] ^= bit;
            self.model.shadow[b.index()][pos] ^= bit;
            self.stats.rot_bank += 1;
            self.note(format!("rot: bank {b} byte {pos} bit {bit:#04x}"));
        } else {
            // Programmed cells lose charge (0 → 1), erased cells get disturbed (1 → 0). The newest
            // record has no second copy (by design), so rot spares it; a slot that reads non-blank
            // stays non-blank (the store skips it and never programs it again).
            let mut d = self.cell.borrow_mut();
            let newest = self
                .scanner
                .scan(d.flash.inner.bytes(), &self.layout)
                .ok()
                .flatten()
                .map(|(_, off)| off);
            let st = self.layout.state();
            let slots = st.size.0 as u64 / RECORD_SIZE as u64;
            let off = st.offset.0 as usize + (self.rng.next_u64() % slots) as usize * RECORD_SIZE;
            if Some(off) == newest {
                return;
            }
            let slot = &mut d.flash.inner.bytes_mut()[off..off + RECORD_SIZE];
            let zeros: u32 = slot.iter().map(|b| b.count_zeros()).sum();
            let r = self.rng.next_u64();
            if zeros == 0 {
                slot[(r % RECORD_SIZE as u64) as usize] &= !(1 << ((r >> 8) % 8));
            } else if zeros >= 2 {
                let mut k = (r % zeros as u64) as u32;
                'flip: for byte in slot.iter_mut() {
                    for bit in 0..8 {
                        if *byte & (1 << bit) == 0 {
                            if k == 0 {
                                *byte |= 1 << bit;
                                break 'flip;
                            }
                            k -= 1;
                        }
                    }
                }
            } else {
                return;
            }
            drop(d);
            self.stats.rot_state += 1;
            self.note(format!("rot: state slot at {off:#x}"));
        }
    }

    // ---- calls ----------------------------------------------------------------------------

    fn plan(&mut self, estimate: u64) -> Plan {
        let mut plan = Plan::default();
        let p = if self.depth > 0 {
            NESTED_CUT_PER_MILLE
        } else {
            CUT_PER_MILLE
        };
        if self.chance(p) {
            plan.cut = Some(self.below(estimate + 1));
        } else if self.chance(FAULT_PER_MILLE) {
            match self.below(3) {
                0 => plan.fault = Some((FaultKind::Refused, self.below(estimate + 1))),
                1 => plan.fault = Some((FaultKind::Landed, self.below(estimate + 1))),
                _ => {
                    let span = READ_FAULT_SPAN[(self.below(4) == 0) as usize];
                    plan.read_fault = Some(self.below(span));
                }
            }
        }
        plan
    }

    fn in_state(&self, op: &OpRec) -> bool {
        let st = self.layout.state();
        op.offset >= st.offset.0 && op.offset + op.len <= st.offset.0 + st.size.0
    }

    fn bank_of(&self, op: &OpRec) -> Option<(Bank, u32)> {
        Bank::ALL.into_iter().find_map(|b| {
            let r = self.layout.bank(b);
            (op.offset >= r.offset.0 && op.offset + op.len <= r.offset.0 + r.size.0)
                .then_some((b, op.offset - r.offset.0))
        })
    }

    /// Every program/erase of the call is one the model predicted (state-region operations are
    /// the store's business: the state is checked by its content).
    fn check_ops(&self, after: &Model, log: &[OpRec]) -> Result<(), String> {
        for op in log {
            if self.in_state(op) {
                continue;
            }
            let Some((b, at)) = self.bank_of(op) else {
                return Err(format!("operation outside every region: {op:?}"));
            };
            let ok = if op.erase {
                // One whole sector of the bank (of the layout's map when it has one).
                let region = self.layout.bank(b);
                let index = self.layout.sector_index_in(region, at);
                self.layout.sector_in(region, index)
                    == Some(twinbank::Region::new(region.offset.0 + at, op.len))
                    && after.erases.contains(&(b, index))
            } else {
                after
                    .programs
                    .iter()
                    .any(|&(pb, lo, hi)| pb == b && lo <= at && at + op.len <= hi)
            };
            if !ok {
                return Err(format!(
                    "unexpected {} in bank {b} at {at:#x} (+{:#x}); the model expected erases {:?} and programs {:?}",
                    if op.erase { "erase" } else { "program" },
                    op.len,
                    after.erases,
                    after.programs
                ));
            }
        }
        Ok(())
    }

    /// After a call: holds the flash against the model (exactly when nothing was injected;
    /// "before or after" otherwise, then the model follows the flash), and the invariants.
    /// `upload`: the updater's `next_offset()` after the call, when an updater ran it.
    fn settle(
        &mut self,
        before: &Model,
        mut after: Model,
        fired: &[Fired],
        log: &[OpRec],
        upload: Option<Option<u32>>,
        may_raise_min: bool,
    ) -> Result<(), String> {
        self.check_ops(&after, log)?;
        let d = self.cell.borrow();
        let bytes = d.flash.inner.bytes();
        let on_flash = self.scanner.scan(bytes, &self.layout)?.map(|(s, _)| s);
        let banks: [&[u8]; 2] = Bank::ALL.map(|b| {
            let off = self.bank_off(b);
            &bytes[off..off + self.bank_size()]
        });
        let show = |s: &Option<BootState>| s.map_or("none".into(), |s| crate::scenario::show(&s));
        if fired.is_empty() {
            if on_flash != after.state {
                return Err(format!(
                    "state on flash {} but the model says {}",
                    show(&on_flash),
                    show(&after.state)
                ));
            }
            for b in Bank::ALL {
                if let Some(i) = first_diff(banks[b.index()], &after.shadow[b.index()]) {
                    return Err(format!(
                        "bank {b} byte {i:#x} is {:#04x}, the model says {:#04x}",
                        banks[b.index()][i],
                        after.shadow[b.index()][i]
                    ));
                }
            }
            if let Some(next) = upload {
                if next != after.upload.as_ref().map(|u| u.next) {
                    return Err(format!(
                        "the updater expects offset {next:?}, the model {:?}",
                        after.upload.as_ref().map(|u| u.next)
                    ));
                }
            }
            drop(d);
            self.model = after;
        } else {
            let allowed =
                on_flash == before.state || after.chain.iter().any(|s| Some(*s) == on_flash);
            if !allowed {
                return Err(format!(
                    "after {fired:?} the state on flash is {}: neither the state before ({}) nor one the call writes ({})",
                    show(&on_flash),
                    show(&before.state),
                    after
                        .chain
                        .iter()
                        .map(crate::scenario::show)
                        .collect::<Vec<_>>()
                        .join(" then ")
                ));
            }
            let cut_range = fired.iter().find_map(|f| match f {
                Fired::Cut(_, op) if !self.in_state(op) => self.bank_of(op),
                _ => None,
            });
            let cut_len = fired.iter().find_map(|f| match f {
                Fired::Cut(_, op) => Some(op.len as usize),
                _ => None,
            });
            for b in Bank::ALL {
                let (fl, be, af) = (
                    banks[b.index()],
                    &before.shadow[b.index()],
                    &after.shadow[b.index()],
                );
                if fl == &be[..] || fl == &af[..] {
                    continue;
                }
                for i in 0..fl.len() {
                    // A byte goes through at most: before → erased (if the call erases its
                    // sector) → programmed (after).
                    let sector = self.layout.sector_index_in(self.layout.bank(b), i as u32);
                    let erased_here = fl[i] == 0xFF && after.erases.contains(&(b, sector));
                    if fl[i] == be[i] || fl[i] == af[i] || erased_here {
                        continue;
                    }
                    let in_cut = matches!((cut_range, cut_len), (Some((cb, at)), Some(n))
                        if cb == b && i >= at as usize && i < at as usize + n);
                    if !in_cut {
                        return Err(format!(
                            "after {fired:?} bank {b} byte {i:#x} is {:#04x}: neither before ({:#04x}) nor erased by the call nor after ({:#04x})",
                            fl[i], be[i], af[i]
                        ));
                    }
                }
            }
            let cut = fired.iter().any(|f| matches!(f, Fired::Cut(..)));
            let kept: Option<Upload> = match upload {
                _ if cut => None,
                None | Some(None) => None,
                Some(Some(n)) => {
                    if after.upload.as_ref().is_some_and(|u| u.next == n) {
                        after.upload.clone()
                    } else if before.upload.as_ref().is_some_and(|u| u.next == n) {
                        before.upload.clone()
                    } else {
                        return Err(format!(
                            "after {fired:?} the updater expects offset {n}, neither before ({:?}) nor after ({:?})",
                            before.upload.as_ref().map(|u| u.next),
                            after.upload.as_ref().map(|u| u.next)
                        ));
                    }
                }
            };
            after.follow(on_flash, banks, kept);
            drop(d);
            self.model = after;
            self.stats.uncertain += 1;
        }
        self.check_invariants(may_raise_min)
    }

    /// The invariants that hold whatever happened: no NOR violation, the minimum counter never
    /// decreases (and only a confirm raises it), a pending bank is the preferred one, the running
    /// image is untouched.
    fn check_invariants(&mut self, may_raise_min: bool) -> Result<(), String> {
        let d = self.cell.borrow();
        if !d.flash.violations().is_empty() {
            return Err(format!("NOR rule violation: {:?}", d.flash.violations()));
        }
        let bytes = d.flash.inner.bytes();
        let state = self.scanner.scan(bytes, &self.layout)?.map(|(s, _)| s);
        if let Some(s) = state {
            let m = s.min_security_counter;
            match self.max_min {
                Some(prev) if m < prev => {
                    return Err(format!("minimum security counter decreased: {prev} -> {m}"))
                }
                Some(prev) if m > prev && !may_raise_min => {
                    return Err(format!(
                        "minimum security counter raised {prev} -> {m} without a confirm"
                    ))
                }
                _ => self.max_min = Some(m),
            }
            for b in Bank::ALL {
                if matches!(s.bank(b), BankState::Pending { .. }) && s.preferred != b {
                    return Err(format!("pending bank {b} is not the preferred one"));
                }
            }
        } else if self.max_min.is_some() {
            return Err("the state was lost (no valid record)".into());
        }
        if let Some((b, img)) = &self.snapshot {
            let off = self.bank_off(*b);
            if let Some(i) = first_diff(&bytes[off..off + img.len()], img) {
                return Err(format!(
                    "the running image in bank {b} changed at byte {i:#x}"
                ));
            }
        }
        Ok(())
    }

    fn take_call(&self) -> (Vec<Fired>, Vec<OpRec>) {
        let mut d = self.cell.borrow_mut();
        d.end_call();
        (std::mem::take(&mut d.fired), std::mem::take(&mut d.log))
    }

    fn count_fired(&mut self, fired: &[Fired]) {
        for f in fired {
            match f {
                Fired::Cut(m, op) => {
                    self.stats.cuts[class(m)] += 1;
                    if self.in_state(op) {
                        self.stats.cuts_state += 1;
                    }
                    if self.depth > 0 {
                        self.stats.nested_cuts += 1;
                    }
                    self.depth += 1;
                    self.stats.max_depth = self.stats.max_depth.max(self.depth);
                }
                Fired::Fault(k, op) => {
                    self.stats.faults[*k as usize] += 1;
                    if self.in_state(op) {
                        self.stats.faults_state += 1;
                    }
                }
                Fired::ReadFault => self.stats.faults[FaultKind::Read as usize] += 1,
            }
        }
    }

    /// Power goes (a cut) or the device resets: the application and its updater are gone.
    fn power_off(&mut self) {
        self.up = None;
        self.snapshot = None;
        self.model.running = None;
        self.model.upload = None;
        self.cell.borrow_mut().flash.power_on();
    }

    /// An updater call, predicted, run, checked.
    fn call<T: PartialEq + Debug + Clone>(
        &mut self,
        what: &str,
        predict: impl FnOnce(&mut Model, &Ctx<'c>) -> Want<T>,
        act: impl FnOnce(&mut Updater<'c, Shared<'c, W, E>>) -> Result<T, UpdateError>,
        may_raise_min: bool,
    ) -> Result<Result<T, UpdateError>, String> {
        self.step += 1;
        let before = self.model.clone();
        let mut after = std::mem::replace(&mut self.model, Model::new(0));
        after.begin_op();
        let want = predict(&mut after, &self.ctx);
        let plan = self.plan(after.ops_estimate());
        self.cell.borrow_mut().start_call(plan);
        let up = self.up.as_mut().ok_or("walk: no updater")?;
        let got = act(up);
        let next = up.next_offset();
        let (fired, log) = self.take_call();
        self.count_fired(&fired);
        self.stats.count(what);
        self.note(format!(
            "{}: {what} -> {got:?} (model {want:?}){}",
            self.step,
            if fired.is_empty() {
                String::new()
            } else {
                format!(" INJECTED {fired:?}")
            }
        ));
        if fired.is_empty() {
            if !want.matches(&got) {
                return Err(format!(
                    "{what}: the device returned {got:?}, the model {want:?}"
                ));
            }
            if let Err(e) = &got {
                let kind = match e {
                    UpdateError::Image(ie) => format!("Image({})", name_of(ie)),
                    e => name_of(e),
                };
                *self
                    .stats
                    .refusals
                    .entry(format!("{what}: {kind}"))
                    .or_default() += 1;
                if matches!(what, "begin" | "start") && !log.is_empty() {
                    return Err(format!("{what} refused ({e}) but wrote to flash: {log:?}"));
                }
            }
        } else if got.is_ok() {
            return Err(format!("{what} returned Ok although {fired:?} failed"));
        }
        self.settle(&before, after, &fired, &log, Some(next), may_raise_min)?;
        if fired.iter().any(|f| matches!(f, Fired::Cut(..))) {
            self.power_off();
            self.note("power cut".into());
        } else {
            self.depth = 0;
            self.after_fault = !fired.is_empty();
        }
        Ok(got)
    }

    /// Power on: the boot decision, predicted, run, checked. False when nothing can boot.
    fn boot(&mut self) -> Result<bool, String> {
        self.step += 1;
        let before = self.model.clone();
        let mut after = std::mem::replace(&mut self.model, Model::new(0));
        after.begin_op();
        let want = after.boot(&self.ctx);
        let plan = self.plan(after.ops_estimate());
        self.cell.borrow_mut().start_call(plan);
        let got = twinbank::decide(&mut Shared(self.cell), &self.cfg);
        let (fired, log) = self.take_call();
        self.count_fired(&fired);
        self.note(format!(
            "{}: boot -> {got:?} (model {want:?}){}",
            self.step,
            if fired.is_empty() {
                String::new()
            } else {
                format!(" INJECTED {fired:?}")
            }
        ));
        if let Some(op) = log.iter().find(|op| !self.in_state(op)) {
            return Err(format!("the boot decision wrote to a bank: {op:?}"));
        }
        if !fired.is_empty() {
            if got.is_ok() {
                return Err(format!("boot returned Ok although {fired:?} failed"));
            }
            self.settle(&before, after, &fired, &log, None, false)?;
            self.model.running = None;
            self.power_off();
            return Ok(true);
        }
        let (d, b) = match (&got, &want) {
            (Ok(d), Some(b))
                if d.bank == b.bank && d.version == b.version && why_of(&d.reason) == b.why =>
            {
                (*d, *b)
            }
            (Err(BootError::NoBootableImage { .. }), None) => {
                self.settle(&before, after, &fired, &log, None, false)?;
                self.stats.count("boot: no bootable image");
                return Ok(false);
            }
            _ => {
                return Err(format!(
                    "boot: the device decided {got:?}, the model {want:?}"
                ))
            }
        };
        self.stats.count(match b.why {
            Why::Normal => "boot: normal",
            Why::Fallback(_) => "boot: fallback",
            Why::Trial(_) => "boot: trial",
            Why::RolledBack(_, Cause::Exhausted) => "boot: rolled back (attempts exhausted)",
            Why::RolledBack(_, Cause::Verify) => "boot: rolled back (verification failed)",
            Why::RolledBack(_, Cause::Replaced) => "boot: rolled back (image replaced)",
            Why::LastResort => "boot: last resort (a rejected image that verifies)",
            Why::RolledBack(_, Cause::Unknown) | Why::Unknown => {
                return Err("the model predicted a boot reason it does not know".into())
            }
        });
        self.settle(&before, after, &fired, &log, None, false)?;
        // The booted bank holds a verifying image, recorded for it, above the minimum counter.
        let cat = self.ctx.cat;
        let flash = self.cell.borrow();
        let bytes = flash.flash.inner.bytes();
        let off = self.bank_off(d.bank);
        let img = cat
            .image_in(&bytes[off..off + self.bank_size()])
            .map(|i| &cat.images[i])
            .filter(|i| i.verifies_in(d.bank, &self.ctx.ids))
            .ok_or_else(|| format!("boots bank {} which holds no verifying image", d.bank))?;
        let state = self.model.state.ok_or("booted without a state")?;
        let recorded = match (state.bank(d.bank), d.reason) {
            (BankState::Confirmed(id) | BankState::Pending { image: id, .. }, _) => *id,
            // Issue 10's last resort: only when nothing else can boot (the model predicted it).
            (BankState::Rejected(id), BootReason::LastResort { .. }) => *id,
            (other, _) => return Err(format!("boots bank {} recorded {other}", d.bank)),
        };
        if recorded.digest != img.id.digest || img.id.security_counter < state.min_security_counter
        {
            return Err(format!(
                "boots {} in bank {}, recorded {recorded:?}, minimum {}",
                img.name, d.bank, state.min_security_counter
            ));
        }
        let snap = bytes[off..off + img.len()].to_vec();
        drop(flash);
        self.snapshot = Some((d.bank, snap));
        Ok(true)
    }

    /// The application opens its updater (scans the state).
    fn open_updater(&mut self) -> Result<(), String> {
        self.step += 1;
        let running = self.model.running.ok_or("walk: not running")?;
        let plan = self.plan(0);
        self.cell.borrow_mut().start_call(plan);
        let r = Updater::new(Shared(self.cell), self.cfg, running);
        let (fired, log) = self.take_call();
        self.count_fired(&fired);
        self.note(format!(
            "{}: open updater -> {:?}{}",
            self.step,
            r.as_ref().err(),
            if fired.is_empty() {
                String::new()
            } else {
                format!(" INJECTED {fired:?}")
            }
        ));
        if !log.is_empty() {
            return Err(format!("Updater::new wrote to flash: {log:?}"));
        }
        match r {
            Ok(up) if fired.is_empty() => self.up = Some(up),
            Ok(_) => {
                return Err(format!(
                    "Updater::new returned Ok although {fired:?} failed"
                ))
            }
            Err(e) if fired.is_empty() => return Err(format!("Updater::new failed: {e}")),
            Err(_) => {}
        }
        self.model.upload = None;
        Ok(())
    }

    // ---- what the application and the host do ---------------------------------------------

    fn app_step(&mut self) -> Result<(), String> {
        if self.up.is_none() {
            return self.open_updater();
        }
        let r = self.model.running.ok_or("walk: not running")?;
        let s = self.model.state.ok_or("walk: running without a state")?;
        if self.after_fault && self.below(2) == 0 {
            return self.refresh();
        }
        if self.host.is_some() {
            return self.host_step();
        }
        let x = self.below(1000);
        match *s.bank(r) {
            BankState::Pending { .. } => match x {
                0..450 => self.confirm(),
                450..550 => self.reject(),
                550..750 => self.reset("reset without confirming"),
                750..800 => self.rollback(),
                800..850 => self.new_host(),
                850..870 => self.reset("power off"),
                _ => self.misuse(),
            },
            _ if s.preferred != r => match x {
                0..700 => self.reset("reset into the other bank"),
                700..800 => self.new_host(),
                800..850 => self.rollback(),
                850..900 => self.confirm(),
                _ => self.reset("power off"),
            },
            _ => match x {
                0..650 => self.new_host(),
                650..700 => self.rollback(),
                700..740 => self.reject(),
                740..780 => self.confirm(),
                780..850 => self.reset("reset"),
                850..880 => self.reset("power off"),
                880..910 => self.disconnect(),
                _ => self.misuse(),
            },
        }
    }

    fn reset(&mut self, why: &str) -> Result<(), String> {
        self.check_invariants(false)?;
        self.note(why.to_string());
        self.stats.count("reset");
        self.power_off();
        Ok(())
    }

    fn disconnect(&mut self) -> Result<(), String> {
        self.note("disconnect (the updater is dropped)".into());
        self.stats.count("disconnect");
        self.up = None;
        self.model.upload = None;
        Ok(())
    }

    fn confirm(&mut self) -> Result<(), String> {
        self.call("confirm", |m, _| m.confirm(), |u| u.confirm(), true)
            .map(|_| ())
    }

    fn reject(&mut self) -> Result<(), String> {
        self.call("reject", |m, c| m.reject(c), |u| u.reject(), false)
            .map(|_| ())
    }

    fn rollback(&mut self) -> Result<(), String> {
        self.call("rollback", |m, c| m.rollback(c), |u| u.rollback(), false)
            .map(|_| ())
    }

    /// `Updater::refresh`: afterwards the updater's view of the state is what the flash holds.
    fn refresh(&mut self) -> Result<(), String> {
        self.after_fault = false;
        let got = self.call("refresh", |_, _| Want::Ok(()), |u| u.refresh(), false)?;
        if got.is_ok() {
            let seen = self.up.as_ref().and_then(|u| u.state().copied());
            if seen != self.model.state {
                return Err(format!(
                    "after refresh the updater sees {seen:?}, the flash holds {:?}",
                    self.model.state
                ));
            }
        }
        Ok(())
    }

    /// Calls that are refused (write and finish without an upload), and a refresh.
    fn misuse(&mut self) -> Result<(), String> {
        let x = self.below(3);
        if x == 2 {
            self.refresh()
        } else if x == 0 {
            let data = [1u8, 2, 3];
            self.call(
                "write",
                |m, c| m.write(c, 0, &data),
                |u| u.write(0, &data),
                false,
            )
            .map(|_| ())
        } else {
            self.call(
                "finish",
                |m, c| m.finish(c).map(|_| ()),
                |u| u.finish().map(|_| ()),
                false,
            )
            .map(|_| ())
        }
    }

    /// The host picks an image (good, a rebuild of what the bank receives, or any) and what it
    /// sends (the image, corrupted bytes, or another image's bytes), then begins.
    fn new_host(&mut self) -> Result<(), String> {
        let cat = self.ctx.cat;
        let r = self.model.running.ok_or("walk: not running")?;
        let s = self.model.state.ok_or("walk: no state")?;
        let t = r.other();
        let min = s.min_security_counter;
        let good: Vec<usize> = (0..cat.images.len())
            .filter(|&i| cat.refusal(i, t, min, &self.ctx.ids).is_none())
            .collect();
        let receiving = match s.bank(t) {
            BankState::Receiving(rc) => Some(rc.image),
            _ => None,
        };
        let same_header: Vec<usize> = receiving
            .and_then(|id| cat.images.iter().find(|i| i.id == id))
            .map(|cur| {
                (0..cat.images.len())
                    .filter(|&i| cat.images[i].manifest.header_bytes == cur.manifest.header_bytes)
                    .collect()
            })
            .unwrap_or_default();
        let x = self.below(100);
        let pick =
            |v: &[usize], rng: &mut SplitMix64| v[(rng.next_u64() % v.len() as u64) as usize];
        // The receiving image itself (a resume) or another build with its header (bug 1).
        let img = if x < 30 && same_header.len() > 1 {
            pick(&same_header, &mut self.rng)
        } else if x < 75 && !good.is_empty() {
            pick(&good, &mut self.rng)
        } else {
            self.below(cat.images.len() as u64) as usize
        };
        let image = &cat.images[img];
        if receiving.is_some_and(|id| id != image.id && same_header.contains(&img)) {
            self.stats
                .count("host: another build with the header of the receiving image");
        }
        let mut data = image.bytes.clone();
        let y = self.below(100);
        let how = if y < 8 {
            let at = self.below(image.hashed_len as u64) as usize;
            data[at] ^= 1 + self.below(255) as u8;
            "corrupted"
        } else if y < 12 {
            let other = &cat.images[self.below(cat.images.len() as u64) as usize];
            data = other.bytes.clone();
            data.resize(image.len(), 0xFF);
            "another image's bytes"
        } else {
            "the image"
        };
        let spread = self.below(2) == 0;
        self.note(format!(
            "host: announces {} to bank {t}, sends {how}{}",
            image.name,
            if spread { ", spreads the erase" } else { "" }
        ));
        self.stats.count(&format!("host: new upload, sends {how}"));
        self.host = Some(Host { img, data, spread });
        self.host_begin()
    }

    /// `begin` (or `start`) of the host's image: a fresh upload or a resume.
    fn host_begin(&mut self) -> Result<(), String> {
        let h = self.host.clone().ok_or("walk: no host")?;
        let manifest = self.ctx.cat.images[h.img].manifest.clone();
        let got = if h.spread {
            self.call(
                "start",
                |m, c| m.start(c, h.img).map(|s| s.offset),
                |u| u.start(&manifest).map(|s| s.offset),
                false,
            )?
        } else {
            self.call(
                "begin",
                |m, c| m.begin(c, h.img),
                |u| u.begin(&manifest),
                false,
            )?
        };
        match got {
            Ok(o) if o > 0 => self.stats.resumes += 1,
            Err(UpdateError::Image(_))
            | Err(UpdateError::TrialInProgress)
            | Err(UpdateError::SwitchPending) => self.host = None,
            _ => {}
        }
        Ok(())
    }

    fn host_step(&mut self) -> Result<(), String> {
        let h = self.host.clone().ok_or("walk: no host")?;
        let x = self.below(1000);
        let Some(up) = self.model.upload.clone() else {
            // The upload is gone (disconnect, error): the host begins again, or changes its mind.
            return match x {
                0..850 => self.host_begin(),
                850..950 => self.new_host(),
                _ => {
                    self.note("host: gives up".into());
                    self.host = None;
                    Ok(())
                }
            };
        };
        let total = h.data.len() as u32;
        if up.erasing() && h.spread && x < 600 {
            return self
                .call(
                    "erase_next",
                    |m, c| m.erase_next(c),
                    |u| u.erase_next(),
                    false,
                )
                .map(|_| ());
        }
        if up.next < total {
            match x {
                0..900 => {
                    let n = self.chunk_len();
                    let end = (up.next as usize + n).min(h.data.len());
                    self.send(up.next, h.data[up.next as usize..end].to_vec())
                }
                900..940 => {
                    // A resend overlapping what was accepted, sometimes with other bytes.
                    let back = 1 + self.below(up.next.min(700) as u64 + 1) as u32;
                    let from = up.next.saturating_sub(back);
                    let end = (up.next as usize + self.chunk_len()).min(h.data.len());
                    let mut data = h.data[from as usize..end].to_vec();
                    if x >= 930 {
                        // Only in the part already accepted: a refused resend. (Other bytes in
                        // the new part could hit the unprotected TLVs, whose verdict the model
                        // does not predict.)
                        let i = self.below(u64::from(up.next - from)) as usize;
                        data[i] ^= 0x40;
                    }
                    self.send(from, data)
                }
                940..950 => {
                    let gap = 1 + self.below(100) as u32;
                    self.send(up.next + gap, vec![0x11; 16])
                }
                950..955 => {
                    let mut data = h.data[up.next as usize..].to_vec();
                    data.extend_from_slice(&[0x22; 7]);
                    self.send(up.next, data)
                }
                955..965 => self.finish(),
                965..975 => self.disconnect(),
                975..985 => self.host_begin(),
                985..990 => self.new_host(),
                990..995 => self.reset("reset during the upload"),
                _ => self.reset("power off during the upload"),
            }
        } else {
            match x {
                0..900 => self.finish(),
                900..950 => self.send(
                    up.next.saturating_sub(10),
                    h.data[up.next.saturating_sub(10) as usize..].to_vec(),
                ),
                950..975 => self.disconnect(),
                _ => self.reset("reset before finish"),
            }
        }
    }

    fn chunk_len(&mut self) -> usize {
        match self.below(100) {
            0..10 => 1 + self.below(3 * W as u64) as usize,
            10..80 => 1 + self.below(600) as usize,
            80..95 => 600 + self.below(3500) as usize,
            _ => usize::MAX / 2,
        }
    }

    fn send(&mut self, offset: u32, data: Vec<u8>) -> Result<(), String> {
        self.call(
            "write",
            |m, c| m.write(c, offset, &data),
            |u| u.write(offset, &data),
            false,
        )
        .map(|_| ())
    }

    fn finish(&mut self) -> Result<(), String> {
        let got = self.call("finish", |m, c| m.finish(c), |u| u.finish(), false)?;
        match got {
            Ok(_) => {
                self.stats.installs += 1;
                self.host = None;
            }
            Err(UpdateError::Incomplete { .. }) => {}
            Err(_) if self.model.upload.is_none() && self.below(10) < 7 => self.host = None,
            Err(_) => {}
        }
        Ok(())
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(Some(a.len().min(b.len())))
}
