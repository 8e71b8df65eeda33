//! What a walk did: the figures of docs/power-loss.md.

use super::driver::FaultKind;
use crate::harness::MODEL_CLASSES;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Counts over all lives of a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lives run.
    pub lives: u64,
    /// Calls of the device code (boot decisions, updater calls).
    pub steps: u64,
    /// Lives and steps per geometry (write size, erase size).
    pub geometries: BTreeMap<(usize, usize), (u64, u64)>,
    /// Calls and events by name.
    pub calls: BTreeMap<String, u64>,
    /// Refusals (errors the model predicted) by call and kind.
    pub refusals: BTreeMap<String, u64>,
    /// Power cuts by model class ([`MODEL_CLASSES`]).
    pub cuts: [u64; 5],
    /// Cuts of a state-region operation.
    pub cuts_state: u64,
    /// Cuts while recovering from a cut (before an application call completed).
    pub nested_cuts: u64,
    /// Deepest nesting of cuts.
    pub max_depth: u64,
    /// Driver errors by kind ([`FaultKind`]).
    pub faults: [u64; 3],
    /// Program/erase errors in the state region.
    pub faults_state: u64,
    /// Calls whose outcome a cut or a driver error made uncertain (the model followed the flash).
    pub uncertain: u64,
    /// Bit flips in the banks.
    pub rot_bank: u64,
    /// Bit flips in the state region.
    pub rot_state: u64,
    /// Uploads resumed past offset 0.
    pub resumes: u64,
    /// Installs completed (`finish` succeeded).
    pub installs: u64,
    /// Lives that ended with nothing bootable (rot took the last image).
    pub dead: u64,
}

impl Stats {
    /// Counts one event.
    pub fn count(&mut self, what: &str) {
        *self.calls.entry(what.to_string()).or_default() += 1;
    }

    /// Total power cuts.
    pub fn cuts_total(&self) -> u64 {
        self.cuts.iter().sum()
    }

    /// Total driver errors.
    pub fn faults_total(&self) -> u64 {
        self.faults.iter().sum()
    }

    /// The figures, as printed at the end of a walk.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "lives {}, steps {}", self.lives, self.steps);
        let _ = writeln!(o, "geometries (lives, steps):");
        for ((w, e), (l, s)) in &self.geometries {
            let _ = writeln!(o, "  W={w:<2} E={e:<6} {l:>7} {s:>10}");
        }
        let _ = writeln!(
            o,
            "power cuts {} (state region {}, banks {}); nested {} (deepest {})",
            self.cuts_total(),
            self.cuts_state,
            self.cuts_total() - self.cuts_state,
            self.nested_cuts,
            self.max_depth
        );
        for (name, n) in MODEL_CLASSES.iter().zip(self.cuts) {
            let _ = writeln!(o, "  {name:<20} {n:>10}");
        }
        let _ = writeln!(
            o,
            "driver errors {} (program/erase in the state region {})",
            self.faults_total(),
            self.faults_state
        );
        for (k, n) in FaultKind::ALL.iter().zip(self.faults) {
            let name = match k {
                FaultKind::Refused => "refused, nothing done",
                FaultKind::Landed => "done, reported failed",
                FaultKind::Read => "transient read error",
            };
            let _ = writeln!(o, "  {name:<22} {n:>10}");
        }
        let _ = writeln!(
            o,
            "uncertain outcomes followed {}; bit rot: banks {}, state region {}",
            self.uncertain, self.rot_bank, self.rot_state
        );
        let _ = writeln!(
            o,
            "installs completed {}, uploads resumed {}, lives ended with nothing bootable {}",
            self.installs, self.resumes, self.dead
        );
        let _ = writeln!(o, "calls and events:");
        for (k, n) in &self.calls {
            let _ = writeln!(o, "  {k:<45} {n:>10}");
        }
        let _ = writeln!(o, "refusals and errors (as predicted):");
        for (k, n) in &self.refusals {
            let _ = writeln!(o, "  {k:<45} {n:>10}");
        }
        o
    }
}
