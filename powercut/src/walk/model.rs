//! The reference model: the ordered state table of docs/design.md, written from the table, over
//! an abstract device — the newest state record, the bytes of both banks (a shadow of what they
//! must hold), and the updater's RAM (the upload in progress).
//!
//! Each operation of the device (the boot decision, every `Updater` call) has a model operation
//! that predicts its result, the records it writes (in order: `chain`), and the bank sectors it
//! may erase and the byte ranges it may program. The model never reads the flash: whether a bank
//! verifies is decided from the shadow and the catalog (a bank verifies when it starts with a
//! catalog image without defect that the device accepts). After a call that a power cut or a
//! driver error interrupted, the walk checks the flash against "before or after" and makes the
//! model follow it ([`Model::follow`]).

use super::catalog::Catalog;
use twinbank::update::Start;
use twinbank::{Attempts, Bank, BankState, BootState, DeviceIds, ImageId, UpdateError, Version};

/// What the device knows about itself, as the model sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'c> {
    /// The images.
    pub cat: &'c Catalog,
    /// Device ids.
    pub ids: DeviceIds,
    /// Trial attempts.
    pub attempts: Attempts,
    /// Write size.
    pub write_size: u32,
    /// Erase size.
    pub erase_size: u32,
    /// The layout (its sector queries: a bank's sectors need not be `erase_size` each).
    pub layout: twinbank::Layout,
}

/// A predicted result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want<T> {
    /// Success with this value.
    Ok(T),
    /// This error.
    Err(UpdateError),
    /// A verification error of the image (`UpdateError::Image(_)`; the kind depends on how the
    /// bytes are broken, which the model does not track).
    VerifyErr,
}

impl<T: PartialEq + std::fmt::Debug> Want<T> {
    /// True when `got` is what was predicted.
    pub fn matches(&self, got: &Result<T, UpdateError>) -> bool {
        match (self, got) {
            (Want::Ok(a), Ok(b)) => a == b,
            (Want::Err(a), Err(b)) => a == b,
            (Want::VerifyErr, Err(UpdateError::Image(_))) => true,
            _ => false,
        }
    }

    /// Maps the success value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Want<U> {
        match self {
            Want::Ok(v) => Want::Ok(f(v)),
            Want::Err(e) => Want::Err(e),
            Want::VerifyErr => Want::VerifyErr,
        }
    }
}

/// Why the boot decision left a bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A pending image with no attempt left.
    Exhausted,
    /// The image does not verify.
    Verify,
    /// The bank verifies but holds another image than recorded.
    Replaced,
    /// A cause the device crate added after this model: never predicted, so a boot giving it
    /// fails the comparison.
    Unknown,
}

/// Why a bank boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Confirmed, preferred.
    Normal,
    /// Confirmed, the other bank holds a rejected image.
    Fallback(Bank),
    /// A trial; attempts left after this boot.
    Trial(u8),
    /// This boot left the other bank.
    RolledBack(Bank, Cause),
    /// Nothing else boots: a rejected image that still verifies (issue 10's last resort).
    LastResort,
    /// A reason the device crate added after this model: never predicted, so a boot giving it
    /// fails the comparison.
    Unknown,
}

/// A predicted boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    /// The bank.
    pub bank: Bank,
    /// Why.
    pub why: Why,
    /// The version booted.
    pub version: Version,
    /// The catalog image booted.
    pub img: usize,
}

/// The updater's upload, as the model predicts its RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The catalog image announced.
    pub img: usize,
    /// Its id.
    pub id: ImageId,
    /// The target bank.
    pub bank: Bank,
    /// Next sector to erase.
    pub erase_next: u32,
    /// One past the last sector to erase.
    pub erase_end: u32,
    /// Next byte expected.
    pub next: u32,
    /// Bytes accepted but not programmed (the start of a write unit).
    pub partial: Vec<u8>,
}

impl Upload {
    /// True while sectors remain to erase.
    pub fn erasing(&self) -> bool {
        self.erase_next < self.erase_end
    }
}

/// The model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The newest valid record (`None`: never provisioned).
    pub state: Option<BootState>,
    /// What each bank must hold.
    pub shadow: [Vec<u8>; 2],
    /// The bank the application runs from (`None`: not running).
    pub running: Option<Bank>,
    /// The upload in the updater's RAM.
    pub upload: Option<Upload>,
    /// Records written by the current operation, in order.
    pub chain: Vec<BootState>,
    /// Bank sectors the current operation erases.
    pub erases: Vec<(Bank, u32)>,
    /// Bank byte ranges the current operation programs.
    pub programs: Vec<(Bank, u32, u32)>,
}

impl Model {
    /// A blank device with banks of `bank_size` bytes.
    pub fn new(bank_size: usize) -> Model {
        Model {
            state: None,
            shadow: [vec![0xFF; bank_size], vec![0xFF; bank_size]],
            running: None,
            upload: None,
            chain: Vec::new(),
            erases: Vec::new(),
            programs: Vec::new(),
        }
    }

    /// Starts predicting an operation.
    pub fn begin_op(&mut self) {
        self.chain.clear();
        self.erases.clear();
        self.programs.clear();
    }

    /// Program/erase operations the prediction implies (a count to aim cuts and faults at).
    pub fn ops_estimate(&self) -> u64 {
        (self.chain.len() + self.erases.len() + 2 * self.programs.len()) as u64
    }

    /// After an interrupted operation: the state and the banks the flash holds (already checked
    /// to be "before or after"), and the upload the updater kept.
    pub fn follow(&mut self, state: Option<BootState>, banks: [&[u8]; 2], upload: Option<Upload>) {
        self.state = state;
        for b in Bank::ALL {
            self.shadow[b.index()].copy_from_slice(banks[b.index()]);
        }
        self.upload = upload;
    }

    /// A record write: the store writes nothing when the state does not change.
    fn record(&mut self, s: BootState) {
        if self.state != Some(s) {
            self.state = Some(s);
            self.chain.push(s);
        }
    }

    /// The catalog image `bank` starts with.
    pub fn image_in(&self, ctx: &Ctx<'_>, bank: Bank) -> Option<usize> {
        ctx.cat.image_in(&self.shadow[bank.index()])
    }

    /// Full verification of `bank` with minimum counter `min`: the image it holds, or `None`.
    pub fn verified(&self, ctx: &Ctx<'_>, bank: Bank, min: u32) -> Option<usize> {
        let i = self.image_in(ctx, bank)?;
        let img = &ctx.cat.images[i];
        (img.verifies_in(bank, &ctx.ids) && img.id.security_counter >= min).then_some(i)
    }

    /// The boot's check of a bank recorded with `id`.
    fn check(&self, ctx: &Ctx<'_>, bank: Bank, id: &ImageId, min: u32) -> Result<usize, Cause> {
        match self.verified(ctx, bank, min) {
            Some(i) if ctx.cat.images[i].id.digest == id.digest => Ok(i),
            Some(_) => Err(Cause::Replaced),
            None => Err(Cause::Verify),
        }
    }

    /// Rows 1–8: the boot decision. `None`: nothing bootable.
    pub fn boot(&mut self, ctx: &Ctx<'_>) -> Option<Boot> {
        self.running = None;
        self.upload = None;
        let mut s = match self.state {
            Some(s) => s,
            None => {
                // Row 1: adopt every bank whose image verifies (any counter), A preferred if valid.
                let mut banks = [BankState::Empty, BankState::Empty];
                for b in Bank::ALL {
                    if let Some(i) = self.verified(ctx, b, 0) {
                        banks[b.index()] = BankState::Confirmed(ctx.cat.images[i].id);
                    }
                }
                let a_ok = matches!(banks[0], BankState::Confirmed(_));
                let s = BootState {
                    preferred: if a_ok || banks[1] == BankState::Empty {
                        Bank::A
                    } else {
                        Bank::B
                    },
                    min_security_counter: 0,
                    banks,
                };
                if banks != [BankState::Empty, BankState::Empty] {
                    self.record(s);
                }
                s
            }
        };
        let mut left: Option<(Bank, Cause)> = None;
        // Banks whose image failed verification during this boot (never a last resort).
        let mut failed = [false; 2];
        for _ in 0..2 {
            let p = s.preferred;
            let o = p.other();
            let here = *s.bank(p);
            let cause = match here {
                // Row 2 (3 when it fails).
                BankState::Confirmed(id) => match self.check(ctx, p, &id, s.min_security_counter) {
                    Ok(i) => {
                        let why = match (left, s.bank(o)) {
                            (Some((from, c)), _) => Why::RolledBack(from, c),
                            (None, BankState::Rejected(_)) => Why::Fallback(o),
                            _ => Why::Normal,
                        };
                        return Some(self.booting(ctx, p, why, i));
                    }
                    Err(c) => c,
                },
                // Row 4 (5 when it fails).
                BankState::Pending {
                    image,
                    attempts_left,
                } if attempts_left > 0 => {
                    match self.check(ctx, p, &image, s.min_security_counter) {
                        Ok(i) => {
                            *s.bank_mut(p) = BankState::Pending {
                                image,
                                attempts_left: attempts_left - 1,
                            };
                            self.record(s);
                            return Some(self.booting(ctx, p, Why::Trial(attempts_left - 1), i));
                        }
                        Err(c) => c,
                    }
                }
                // Row 6.
                BankState::Pending { .. } => Cause::Exhausted,
                // Rows 7 and 8.
                BankState::Empty | BankState::Rejected(_) | BankState::Receiving(_) => {
                    if s.bank(o).may_boot() {
                        s.preferred = o;
                        self.record(s);
                        continue;
                    }
                    break;
                }
            };
            if cause == Cause::Verify {
                failed[p.index()] = true;
            }
            // Rows 3, 5, 6: P rejected, the other bank preferred if it may boot.
            if let Some(id) = here.image() {
                *s.bank_mut(p) = BankState::Rejected(*id);
            }
            let other_may = s.bank(o).may_boot();
            if other_may {
                s.preferred = o;
            }
            self.record(s);
            left.get_or_insert((p, cause));
            if !other_may {
                break;
            }
        }
        // Row 8 (issue 10): never stop while a bank the state names as rejected holds an image
        // that verifies; the trial that just ran out is tried first, and it becomes preferred.
        let first = match left {
            Some((b, Cause::Exhausted)) => b,
            _ => s.preferred,
        };
        for b in [first, first.other()] {
            let BankState::Rejected(id) = *s.bank(b) else {
                continue;
            };
            if failed[b.index()] {
                continue;
            }
            if let Ok(i) = self.check(ctx, b, &id, s.min_security_counter) {
                if s.preferred != b {
                    s.preferred = b;
                    self.record(s);
                }
                return Some(self.booting(ctx, b, Why::LastResort, i));
            }
        }
        None
    }

    fn booting(&mut self, ctx: &Ctx<'_>, bank: Bank, why: Why, img: usize) -> Boot {
        self.running = Some(bank);
        Boot {
            bank,
            why,
            version: ctx.cat.images[img].id.version,
            img,
        }
    }

    fn current(&self) -> Result<BootState, UpdateError> {
        self.state.ok_or(UpdateError::NotProvisioned)
    }

    fn running(&self) -> Bank {
        self.running.expect("model: updater call while not running")
    }

    /// Rows 9–12: `Updater::start` of catalog image `img`.
    pub fn start(&mut self, ctx: &Ctx<'_>, img: usize) -> Want<Start> {
        self.upload = None;
        let mut s = match self.current() {
            Ok(s) => s,
            Err(e) => return Want::Err(e),
        };
        let r = self.running();
        if matches!(s.bank(r), BankState::Pending { .. }) {
            return Want::Err(UpdateError::TrialInProgress);
        }
        if s.preferred != r {
            return Want::Err(UpdateError::SwitchPending);
        }
        let t = r.other();
        if let Some(e) = ctx.cat.refusal(img, t, s.min_security_counter, &ctx.ids) {
            return Want::Err(e);
        }
        let image = &ctx.cat.images[img];
        let total = image.len() as u32;
        let region = ctx.layout.bank(t);
        let span = ctx.layout.sectors_spanning(region, total);
        let from = match *s.bank(t) {
            BankState::Receiving(rc)
                if rc.image == image.id && rc.kind == twinbank::state::ReceivingKind::Announced =>
            {
                self.resume_sector(ctx, t, img, rc.from_sector as u32, rc.erased, span)
            }
            _ => 0,
        };
        if !(from == 0 && *s.bank(t) == BankState::Empty) {
            *s.bank_mut(t) = receiving(image.id, from, false);
            self.record(s);
        }
        self.upload = Some(Upload {
            img,
            id: image.id,
            bank: t,
            erase_next: from,
            erase_end: span,
            next: ctx.layout.sector_start_in(region, from),
            partial: Vec::new(),
        });
        Want::Ok(Start {
            offset: ctx.layout.sector_start_in(region, from),
            erases: span - from,
        })
    }

    /// Row 10b: where an upload of the same image continues. With `erased`, the sector of the last
    /// byte that reads non-erased from sector `f` to the image's end (`f` if none); else `f`. A
    /// resume past sector 0 needs the image's header at the start of the bank.
    fn resume_sector(
        &self,
        ctx: &Ctx<'_>,
        t: Bank,
        img: usize,
        f: u32,
        erased: bool,
        span: u32,
    ) -> u32 {
        if f >= span {
            return 0;
        }
        let region = ctx.layout.bank(t);
        let image = &ctx.cat.images[img];
        let bank = &self.shadow[t.index()];
        let sector = if erased {
            let lo = ctx.layout.sector_start_in(region, f) as usize;
            match bank[lo..image.len()].iter().rposition(|&b| b != 0xFF) {
                Some(i) => ctx.layout.sector_index_in(region, (lo + i) as u32),
                None => f,
            }
        } else {
            f
        };
        let header = &image.manifest.header_bytes;
        if sector > 0 && bank[..header.len()] != header[..] {
            return 0;
        }
        sector
    }

    /// `Updater::erase_next`.
    pub fn erase_next(&mut self, ctx: &Ctx<'_>) -> Want<u32> {
        let Some(mut up) = self.upload.take() else {
            return Want::Err(UpdateError::NoUpload);
        };
        if !up.erasing() {
            self.upload = Some(up);
            return Want::Ok(0);
        }
        let region = ctx.layout.bank(up.bank);
        let at = ctx.layout.sector_start_in(region, up.erase_next) as usize;
        let e = ctx
            .layout
            .sector_in(region, up.erase_next)
            .map_or(0, |s| s.size.0 as usize);
        self.shadow[up.bank.index()][at..at + e].fill(0xFF);
        self.erases.push((up.bank, up.erase_next));
        up.erase_next += 1;
        if !up.erasing() {
            let mut s = self.state.expect("receiving implies a state");
            let from = ctx.layout.sector_index_in(region, up.next);
            *s.bank_mut(up.bank) = receiving(up.id, from, true);
            self.record(s);
        }
        let left = up.erase_end - up.erase_next;
        self.upload = Some(up);
        Want::Ok(left)
    }

    /// `Updater::begin`: start, then erase everything.
    pub fn begin(&mut self, ctx: &Ctx<'_>, img: usize) -> Want<u32> {
        match self.start(ctx, img) {
            Want::Ok(st) => {
                while self.upload.as_ref().is_some_and(Upload::erasing) {
                    self.erase_next(ctx);
                }
                Want::Ok(st.offset)
            }
            other => other.map(|st| st.offset),
        }
    }

    /// `Updater::write(offset, data)`.
    pub fn write(&mut self, ctx: &Ctx<'_>, offset: u32, data: &[u8]) -> Want<u32> {
        while self.upload.as_ref().is_some_and(Upload::erasing) {
            self.erase_next(ctx);
        }
        let Some(mut up) = self.upload.take() else {
            return Want::Err(UpdateError::NoUpload);
        };
        let r = self.write_in(ctx, &mut up, offset, data);
        self.upload = Some(up);
        r
    }

    fn write_in(&mut self, ctx: &Ctx<'_>, up: &mut Upload, offset: u32, data: &[u8]) -> Want<u32> {
        if offset > up.next {
            return Want::Err(UpdateError::OutOfOrder { expected: up.next });
        }
        let end = offset as u64 + data.len() as u64;
        if end > up.id.size as u64 {
            return Want::Err(UpdateError::OutOfRange);
        }
        let end = end as u32;
        let bank = up.bank.index();
        let flushed = up.next - up.partial.len() as u32;
        for pos in offset..end.min(up.next) {
            let held = if pos < flushed {
                self.shadow[bank][pos as usize]
            } else {
                up.partial[(pos - flushed) as usize]
            };
            if held != data[(pos - offset) as usize] {
                return Want::Err(UpdateError::ContentMismatch { offset: pos });
            }
        }
        if end <= up.next {
            return Want::Ok(up.next);
        }
        up.partial
            .extend_from_slice(&data[(up.next - offset) as usize..]);
        up.next = end;
        let ws = ctx.write_size as usize;
        let whole = up.partial.len() / ws * ws;
        if whole > 0 {
            self.program(up.bank, flushed, &up.partial[..whole]);
            up.partial.drain(..whole);
        }
        Want::Ok(up.next)
    }

    /// Programming ANDs the bytes in (units of 0xff are not programmed; that reads the same).
    fn program(&mut self, bank: Bank, at: u32, bytes: &[u8]) {
        let dst = &mut self.shadow[bank.index()][at as usize..at as usize + bytes.len()];
        for (d, s) in dst.iter_mut().zip(bytes) {
            *d &= *s;
        }
        self.programs.push((bank, at, at + bytes.len() as u32));
    }

    /// Rows 13–14: `Updater::finish`.
    pub fn finish(&mut self, ctx: &Ctx<'_>) -> Want<ImageId> {
        let Some(mut up) = self.upload.clone() else {
            return Want::Err(UpdateError::NoUpload);
        };
        let total = up.id.size;
        if up.next < total || up.erasing() {
            return Want::Err(UpdateError::Incomplete {
                received: up.next,
                total,
            });
        }
        if !up.partial.is_empty() {
            let ws = ctx.write_size as usize;
            let at = up.next - up.partial.len() as u32;
            let mut unit = up.partial.clone();
            unit.resize(ws, 0xFF);
            self.program(up.bank, at, &unit);
            up.partial.clear();
        }
        self.upload = None;
        let mut s = match self.current() {
            Ok(s) => s,
            Err(e) => return Want::Err(e),
        };
        if !matches!(s.bank(up.bank), BankState::Receiving(r)
            if r.image == up.id && r.kind == twinbank::state::ReceivingKind::Announced)
        {
            return Want::Err(UpdateError::NoUpload);
        }
        let verdict = match self.verified(ctx, up.bank, s.min_security_counter) {
            Some(i)
                if ctx.cat.images[i].id.digest == up.id.digest
                    && ctx.cat.images[i].len() as u32 == total =>
            {
                Want::Ok(ctx.cat.images[i].id)
            }
            Some(_) => Want::Err(UpdateError::DigestMismatch),
            None => Want::VerifyErr,
        };
        match verdict {
            Want::Ok(id) => {
                *s.bank_mut(up.bank) = BankState::Pending {
                    image: id,
                    attempts_left: ctx.attempts.get(),
                };
                s.preferred = up.bank;
                self.record(s);
                Want::Ok(id)
            }
            fail => {
                *s.bank_mut(up.bank) = BankState::Empty;
                self.record(s);
                fail
            }
        }
    }

    /// Rows 15–16: `Updater::confirm`.
    pub fn confirm(&mut self) -> Want<()> {
        let mut s = match self.current() {
            Ok(s) => s,
            Err(e) => return Want::Err(e),
        };
        let r = self.running();
        match *s.bank(r) {
            BankState::Confirmed(_) if s.preferred == r => Want::Ok(()),
            BankState::Pending { image, .. } if s.preferred == r => {
                *s.bank_mut(r) = BankState::Confirmed(image);
                s.min_security_counter = s.min_security_counter.max(image.security_counter);
                self.record(s);
                Want::Ok(())
            }
            _ => Want::Err(UpdateError::NotPending),
        }
    }

    /// Rows 17 and 19: `Updater::reject`.
    pub fn reject(&mut self, ctx: &Ctx<'_>) -> Want<()> {
        let mut s = match self.current() {
            Ok(s) => s,
            Err(e) => return Want::Err(e),
        };
        let r = self.running();
        let BankState::Pending { image, .. } = *s.bank(r) else {
            return Want::Err(UpdateError::NotPending);
        };
        if let Err(e) = self.fallback(ctx, &s) {
            return e.into_want();
        }
        *s.bank_mut(r) = BankState::Rejected(image);
        s.preferred = r.other();
        self.record(s);
        Want::Ok(())
    }

    /// Rows 18–19: `Updater::rollback`.
    pub fn rollback(&mut self, ctx: &Ctx<'_>) -> Want<ImageId> {
        let mut s = match self.current() {
            Ok(s) => s,
            Err(e) => return Want::Err(e),
        };
        let r = self.running();
        let id = match self.fallback(ctx, &s) {
            Ok(id) => id,
            Err(e) => return e.into_want(),
        };
        if let BankState::Pending { image, .. } = *s.bank(r) {
            *s.bank_mut(r) = BankState::Rejected(image);
        }
        s.preferred = r.other();
        self.record(s);
        Want::Ok(id)
    }

    /// The other bank's confirmed image, verified with the current minimum.
    fn fallback(&self, ctx: &Ctx<'_>, s: &BootState) -> Result<ImageId, NoFallback> {
        let o = self.running().other();
        let BankState::Confirmed(id) = *s.bank(o) else {
            return Err(NoFallback::Refused);
        };
        match self.verified(ctx, o, s.min_security_counter) {
            Some(i) if ctx.cat.images[i].id.digest == id.digest => Ok(id),
            Some(_) => Err(NoFallback::Refused),
            None => Err(NoFallback::Unverified),
        }
    }
}

/// Why there is no fallback.
enum NoFallback {
    /// `NoFallback`.
    Refused,
    /// The other bank does not verify (its verification error).
    Unverified,
}

impl NoFallback {
    fn into_want<T>(self) -> Want<T> {
        match self {
            NoFallback::Refused => Want::Err(UpdateError::NoFallback),
            NoFallback::Unverified => Want::VerifyErr,
        }
    }
}

fn receiving(image: ImageId, from: u32, erased: bool) -> BankState {
    BankState::Receiving(twinbank::state::Receiving {
        image,
        from_sector: from as u16,
        erased,
        kind: twinbank::state::ReceivingKind::Announced,
    })
}
