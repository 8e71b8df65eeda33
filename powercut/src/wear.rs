//! Wear: erases per sector over many updates, confirms and trial boots (no power cuts).

use crate::scenario::{provision, upload, Stop};
use crate::world::{ImgName, World};
use twinbank::state::StateStore;
use twinbank::update::Updater;
use twinbank::{Bank, BankState};

/// Erase figures of one wear run.
#[derive(Debug, Clone)]
pub struct Wear {
    /// (write size, erase size).
    pub geometry: (usize, usize),
    /// Updates installed and confirmed.
    pub updates: u32,
    /// Trial boots (besides the one before each confirm).
    pub trial_boots: u32,
    /// State changes (records written).
    pub state_changes: u64,
    /// Erases of state-region sectors.
    pub state_erases: u64,
    /// Most erases of one state sector.
    pub state_sector_max: u32,
    /// Most erases of one bank sector.
    pub bank_sector_max: u32,
    /// Records per state sector.
    pub slots: u32,
    /// Sectors in the state region.
    pub state_sectors: u32,
}

impl Wear {
    /// State-region erases per state change.
    pub fn erases_per_change(&self) -> f64 {
        self.state_erases as f64 / self.state_changes.max(1) as f64
    }

    /// The bound: one erase per sector's worth of records, plus the first sector's erase.
    pub fn bound(&self) -> u64 {
        self.state_changes.div_ceil(self.slots as u64) + 1
    }

    /// True when the figure is within the bound.
    pub fn within_bound(&self) -> bool {
        self.state_erases <= self.bound()
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        format!(
            "wear W={} E={}: {} updates + confirms, {} trial boots: {} state changes, {} state-region erases = {:.4} erases/change (bound 1/{} + 1 = {} erases: {}); max erases per state sector {} ({} sectors), per bank sector {}",
            self.geometry.0,
            self.geometry.1,
            self.updates,
            self.trial_boots,
            self.state_changes,
            self.state_erases,
            self.erases_per_change(),
            self.slots,
            self.bound(),
            if self.within_bound() { "ok" } else { "EXCEEDED" },
            self.state_sector_max,
            self.state_sectors,
            self.bank_sector_max,
        )
    }
}

fn err(e: impl core::fmt::Display) -> String {
    e.to_string()
}

/// Runs `updates` update + trial boot + confirm cycles, then trial boots without confirms
/// (each trial ends in a rollback) until `trial_boots` were spent.
pub fn wear<const W: usize, const E: usize>(
    updates: u32,
    trial_boots: u32,
) -> Result<Wear, String> {
    let w: World<W, E> = World::new(None);
    let cfg = w.config();
    let mut f = w.blank();
    let stop = |s: Stop| match s {
        Stop::Cut => "power cut".to_string(),
        Stop::Fail(m) => m,
    };
    provision(&w, &mut f).map_err(stop)?;
    let seq0 = StateStore::open(&mut f, &w.layout).map_err(err)?.sequence();
    f.inner.reset_counters();
    let img_for = |target: Bank| match target {
        Bank::A => w.img(ImgName::U2),
        Bank::B => w.img(ImgName::U1),
    };
    for _ in 0..updates {
        let running = twinbank::decide(&mut f, &cfg).map_err(err)?.bank;
        upload(&w, &mut f, running, img_for(running.other())).map_err(stop)?;
        let d = twinbank::decide(&mut f, &cfg).map_err(err)?;
        if d.bank == running {
            return Err("the update did not boot".into());
        }
        Updater::new(&mut f, cfg, d.bank)
            .and_then(|mut u| u.confirm())
            .map_err(err)?;
    }
    let mut trials = 0;
    while trials < trial_boots {
        let running = twinbank::decide(&mut f, &cfg).map_err(err)?.bank;
        upload(&w, &mut f, running, img_for(running.other())).map_err(stop)?;
        loop {
            let d = twinbank::decide(&mut f, &cfg).map_err(err)?;
            let s = w.read_state(&mut f).ok_or("state lost")?;
            if matches!(s.bank(d.bank), BankState::Confirmed(_)) {
                break;
            }
            trials += 1;
        }
    }
    let seq1 = StateStore::open(&mut f, &w.layout).map_err(err)?.sequence();
    if !f.violations().is_empty() {
        return Err(format!("NOR violations: {:?}", f.violations()));
    }
    let per = &f.inner.counters.erases_per_sector;
    let state_sectors = w.layout.state_sectors();
    // Sector numbers (over the whole flash, the strict flash's counters) of the state region.
    let whole = twinbank::Region::new(0, w.layout.flash_size());
    let first = w.layout.sector_index_in(whole, w.layout.state().offset.0) as usize;
    let state_range = first..first + state_sectors as usize;
    let st = per.get(state_range.clone()).unwrap_or(&[]);
    Ok(Wear {
        geometry: (W, E),
        updates,
        trial_boots: trials,
        state_changes: (seq1 - seq0) as u64,
        state_erases: st.iter().map(|&x| x as u64).sum(),
        state_sector_max: st.iter().copied().max().unwrap_or(0),
        bank_sector_max: (0..per.len())
            .filter(|i| !state_range.contains(i))
            .map(|i| per[i])
            .max()
            .unwrap_or(0),
        slots: w.slots(),
        state_sectors,
    })
}
