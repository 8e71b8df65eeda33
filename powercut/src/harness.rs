//! The exploration: run a session uncut to learn its flash operations, then cut it at each
//! operation with each cut model, power on, check, and recover — recursively.

use crate::flash::{DevFlash, Op, OpKind};
use crate::scenario::{show, Case, Session, Stop};
use std::collections::BTreeSet;
use twinbank::testing::{CutModel, SplitMix64};
use twinbank::BootState;

/// Model classes, in table order.
pub const MODEL_CLASSES: [&str; 5] = [
    "(a) before",
    "(b) prefix",
    "(c) bits",
    "(d) erase-partial",
    "(d) erase-garbage",
];

/// Index of a model's class in [`MODEL_CLASSES`].
pub fn class(m: &CutModel) -> usize {
    match m {
        CutModel::Before => 0,
        CutModel::WritePrefix { .. } => 1,
        CutModel::WriteBits { .. } => 2,
        CutModel::ErasePartial { .. } => 3,
        CutModel::EraseGarbage { .. } => 4,
    }
}

/// `--model` text of a model (the seed goes in `--seed`).
pub fn model_arg(m: &CutModel) -> String {
    match m {
        CutModel::Before => "before".into(),
        CutModel::WritePrefix { units } => format!("prefix:{units}"),
        CutModel::WriteBits { units, .. } => format!("bits:{units}"),
        CutModel::ErasePartial { .. } => "erase-partial".into(),
        CutModel::EraseGarbage { .. } => "erase-garbage".into(),
    }
}

/// The seed of a model, if it has one.
pub fn model_seed(m: &CutModel) -> Option<u64> {
    match m {
        CutModel::WriteBits { seed, .. }
        | CutModel::ErasePartial { seed }
        | CutModel::EraseGarbage { seed } => Some(*seed),
        _ => None,
    }
}

/// Parses `--model` and `--seed`.
pub fn parse_model(s: &str, seed: u64) -> Option<CutModel> {
    let (name, arg) = match s.split_once(':') {
        Some((n, a)) => (n, a.parse::<usize>().ok()),
        None => (s, None),
    };
    Some(match name {
        "before" | "a" => CutModel::Before,
        "prefix" | "b" => CutModel::WritePrefix { units: arg? },
        "bits" | "c" => CutModel::WriteBits {
            units: arg.unwrap_or(0),
            seed,
        },
        "erase-partial" | "dp" => CutModel::ErasePartial { seed },
        "erase-garbage" | "dg" => CutModel::EraseGarbage { seed },
        _ => return None,
    })
}

/// One cut of a path: at operation `op` of the session, with `model`.
pub type Cut = (u64, CutModel);

/// How thoroughly to explore.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every cut point is tried up to this depth (number of nested cuts).
    pub exhaustive_depth: usize,
    /// Beyond it, random nested cuts up to this depth.
    pub max_depth: usize,
    /// Probability of going one level deeper at random.
    pub deeper: f64,
    /// Random cut points tried at the first random level.
    pub samples: usize,
    /// Seeds per random model (c, d).
    pub seeds: usize,
    /// Prefix lengths tried per write (besides the ends).
    pub rich_prefixes: bool,
    /// Only model (a): cuts between operations.
    pub before_only: bool,
    /// Replay exactly this path instead of exploring.
    pub replay: Option<Vec<Cut>>,
    /// Print what happens (replay).
    pub verbose: bool,
}

/// A failure, with what is needed to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The nested cuts.
    pub path: Vec<Cut>,
    /// What went wrong.
    pub message: String,
}

/// Counts of one scenario run.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Cut points per model class.
    pub points: [u64; 5],
    /// Failing cut points per model class.
    pub failures: [u64; 5],
    /// Failures of uncut runs (the step itself, or a recovery leaf reached without a new cut
    /// failing: attributed to the last cut of the path).
    pub uncut_failures: u64,
    /// First failures, for printing.
    pub examples: Vec<Failure>,
    /// Distinct first-level cut points (operation of the step) whose subtree revealed a failure.
    pub failing_first_ops: BTreeSet<u64>,
    /// First-level operations of the step (cut points at depth 1, without models).
    pub step_ops: usize,
    /// State-region erases in the uncut step.
    pub step_state_erases: usize,
}

impl Tally {
    /// Total cut points.
    pub fn points(&self) -> u64 {
        self.points.iter().sum()
    }
    /// Total failures.
    pub fn failures(&self) -> u64 {
        self.failures.iter().sum::<u64>() + self.uncut_failures
    }
    /// Adds another tally.
    pub fn add(&mut self, o: &Tally) {
        for i in 0..5 {
            self.points[i] += o.points[i];
            self.failures[i] += o.failures[i];
        }
        self.uncut_failures += o.uncut_failures;
        self.step_ops += o.step_ops;
    }
}

const MAX_EXAMPLES: usize = 8;

/// The cut models tried at `op` (the ones that apply to its kind).
fn models_for(op: &Op, plan: &Plan, seed: u64) -> Vec<CutModel> {
    let mut out = vec![CutModel::Before];
    if plan.before_only {
        return out;
    }
    let mut rng = SplitMix64(seed);
    let seeds: Vec<u64> = (0..plan.seeds).map(|_| rng.next_u64()).collect();
    match op.kind {
        OpKind::Write { units } => {
            let mut prefixes = BTreeSet::new();
            if units > 1 {
                prefixes.insert(1);
                prefixes.insert(units / 2);
                prefixes.insert(units - 1);
                if plan.rich_prefixes && op.in_state {
                    // State records: every quarter, and the unit ending the magic / sequence.
                    for q in [units / 4, 3 * units / 4, (8 * units).div_ceil(128)] {
                        prefixes.insert(q);
                    }
                }
            }
            prefixes.retain(|&k| k >= 1 && k < units);
            out.extend(prefixes.iter().map(|&k| CutModel::WritePrefix { units: k }));
            let mut torn = BTreeSet::new();
            torn.insert(0);
            torn.insert(units - 1);
            for (i, s) in seeds.iter().enumerate() {
                for &k in &torn {
                    // Vary which unit is torn with the seed too.
                    let k = if i % 2 == 1 && units > 2 && k == 0 {
                        (*s as usize) % units
                    } else {
                        k
                    };
                    out.push(CutModel::WriteBits { units: k, seed: *s });
                }
            }
        }
        OpKind::Erase => {
            for s in &seeds {
                out.push(CutModel::ErasePartial { seed: *s });
                out.push(CutModel::EraseGarbage { seed: s ^ 0x5a5a });
            }
        }
    }
    out
}

fn mix(a: u64, b: u64) -> u64 {
    SplitMix64(a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b).next_u64()
}

/// Explores one scenario case. Returns its tally.
pub fn explore_case<const W: usize, const E: usize>(
    case: &Case<'_, W, E>,
    plan: &Plan,
    seed: u64,
) -> Tally {
    let mut t = Tally::default();
    let mut rng = SplitMix64(seed);
    let mut path = Vec::new();
    let pre = case.pre.clone();
    let min = case.pre_state.map(|s| s.min_security_counter);
    let mut ex = Explorer {
        case,
        plan,
        tally: &mut t,
        rng: &mut rng,
        seed,
    };
    ex.explore(&pre, Session::Step, &mut path, min, case.pre_state);
    t
}

struct Explorer<'a, 'c, const W: usize, const E: usize> {
    case: &'a Case<'c, W, E>,
    plan: &'a Plan,
    tally: &'a mut Tally,
    rng: &'a mut SplitMix64,
    seed: u64,
}

impl<const W: usize, const E: usize> Explorer<'_, '_, W, E> {
    fn record(&mut self, path: &[Cut], message: String) {
        match path.last() {
            Some((_, m)) => self.tally.failures[class(m)] += 1,
            None => self.tally.uncut_failures += 1,
        }
        if let Some((op, _)) = path.first() {
            self.tally.failing_first_ops.insert(*op);
        }
        if self.plan.verbose {
            println!("  FAIL: {message}");
        }
        if self.tally.examples.len() < MAX_EXAMPLES {
            self.tally.examples.push(Failure {
                path: path.to_vec(),
                message,
            });
        }
    }

    /// Runs `session` uncut from `start` (checks the end state), then the cuts.
    /// `min`: the minimum counter observed at `start`; `start_state`: the state at `start`.
    fn explore(
        &mut self,
        start: &DevFlash<W, E>,
        session: Session,
        path: &mut Vec<Cut>,
        min: Option<u32>,
        start_state: Option<BootState>,
    ) {
        let case = self.case;
        // 1. Uncut run, traced.
        let mut f = start.clone();
        f.start_trace();
        let r = case.run(&mut f, session);
        let trace = f.take_trace();
        if session == Session::Step && path.is_empty() {
            self.tally.step_ops = trace.len();
            self.tally.step_state_erases = trace
                .iter()
                .filter(|o| o.in_state && o.kind == OpKind::Erase)
                .count();
        }
        if self.plan.verbose {
            for (i, op) in trace.iter().enumerate() {
                println!(
                    "    op {i}: {:?} at {:#x}{}",
                    op.kind,
                    op.offset,
                    if op.in_state { " (state)" } else { "" }
                );
            }
        }
        if let Err(e) = r.and_then(|_| self.check_end(&mut f, session, path.is_empty(), min)) {
            let msg = match e {
                Stop::Cut => "uncut run reported a power cut".into(),
                Stop::Fail(m) => m,
            };
            self.record(
                path,
                format!("{} (uncut {:?} after the cuts)", msg, session),
            );
            return;
        }
        if self.plan.verbose {
            let s = case.w.read_state(&mut f);
            println!(
                "  depth {}: uncut {:?}: {} ops, ends in {}",
                path.len(),
                session,
                trace.len(),
                s.map(|s| show(&s)).unwrap_or("no state".into())
            );
        }
        // 2. Cuts.
        let depth = path.len();
        let candidates: Vec<Cut> = if let Some(replay) = &self.plan.replay {
            match replay.get(depth) {
                Some(c) => vec![*c],
                None => return,
            }
        } else {
            let all = || {
                let mut v = Vec::new();
                for (i, op) in trace.iter().enumerate() {
                    let s = mix(
                        self.seed,
                        mix(
                            i as u64,
                            path.iter().map(|c| c.0 + 1).fold(depth as u64, mix),
                        ),
                    );
                    for m in models_for(op, self.plan, s) {
                        v.push((i as u64, m));
                    }
                }
                v
            };
            if depth < self.plan.exhaustive_depth {
                all()
            } else if depth < self.plan.max_depth && !trace.is_empty() {
                let p = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if p < self.plan.deeper {
                    let v = all();
                    // More samples at the first random level, one per level below it.
                    let n = if depth == self.plan.exhaustive_depth {
                        self.plan.samples
                    } else {
                        1
                    };
                    let mut picked = BTreeSet::new();
                    for _ in 0..n.min(v.len()) {
                        picked.insert((self.rng.next_u64() % v.len() as u64) as usize);
                    }
                    picked.into_iter().map(|k| v[k]).collect()
                } else {
                    Vec::new()
                }
            } else {
                Vec::new()
            }
        };
        for (op, model) in candidates {
            if op as usize >= trace.len() {
                self.record(
                    path,
                    format!("replay: the session has only {} operations", trace.len()),
                );
                continue;
            }
            path.push((op, model));
            self.tally.points[class(&model)] += 1;
            let mut g = start.clone();
            g.cut_at(op, model);
            let r = case.run(&mut g, session);
            let outcome = match r {
                Err(Stop::Cut) => Ok(()),
                Err(Stop::Fail(m)) => Err(m),
                Ok(()) => Err("the session ended normally although power was cut".into()),
            };
            if self.plan.verbose {
                println!(
                    "  depth {}: cut {:?} at op {op} {:?} ({:?})",
                    path.len(),
                    session,
                    trace[op as usize],
                    model
                );
            }
            let outcome = outcome.and_then(|_| {
                g.power_on();
                let mut m = min;
                case.check_flash(&mut g, &mut m).map_err(stop_msg)?;
                self.check_record_atomic(&mut g, &trace, op as usize, start_state)?;
                Ok(m)
            });
            match outcome {
                Ok(m) => {
                    let st = case.w.read_state(&mut g);
                    self.explore(&g, Session::Recover, path, m, st);
                }
                Err(msg) => self.record(path, msg),
            }
            path.pop();
        }
    }

    /// After a cut at operation `op`: the newest valid record is the state before the
    /// interrupted change or after it (never older, never anything else).
    fn check_record_atomic(
        &self,
        flash: &mut DevFlash<W, E>,
        trace: &[Op],
        op: usize,
        start_state: Option<BootState>,
    ) -> Result<(), String> {
        let before = trace[..op]
            .iter()
            .rev()
            .find_map(|o| o.record)
            .or(start_state);
        let during = trace[op].record;
        let now = self.case.w.read_state(flash);
        if now == before || (during.is_some() && now == during) {
            return Ok(());
        }
        // The boot decision may adopt the banks when there is no record (never provisioned).
        if before.is_none() && self.case.pre_state.is_none() {
            return Ok(());
        }
        let sh = |s: Option<BootState>| s.map(|s| show(&s)).unwrap_or("none".into());
        Err(format!(
            "state after the cut is {}, neither the state before the interrupted change ({}) nor after it ({})",
            sh(now),
            sh(before),
            sh(during)
        ))
    }

    fn check_end(
        &self,
        f: &mut DevFlash<W, E>,
        session: Session,
        top: bool,
        min: Option<u32>,
    ) -> Result<(), Stop> {
        let case = self.case;
        let mut m = min;
        case.check_flash(f, &mut m)?;
        let Some(s) = case.w.read_state(f) else {
            return Err(Stop::Fail("no state at the end".into()));
        };
        if session == Session::Step && top {
            if s != case.expected {
                return Err(Stop::Fail(format!(
                    "uncut scenario ends in {}, expected {}",
                    show(&s),
                    show(&case.expected)
                )));
            }
        } else if !case.acceptable(&s) {
            return Err(Stop::Fail(format!(
                "recovery ends in {}, not an acceptable end state (expected {} or its rollback)",
                show(&s),
                show(&case.expected)
            )));
        }
        case.check_liveness(f)
    }
}

fn stop_msg(s: Stop) -> String {
    match s {
        Stop::Cut => "unexpected power cut".into(),
        Stop::Fail(m) => m,
    }
}
