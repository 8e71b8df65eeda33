//! # twinbank-powercut — the power-cut proof
//!
//! For every geometry of the matrix and every scenario, the harness runs the scenario's step on a
//! strict NOR flash, cuts power at each flash operation with each cut model, restarts from the
//! resulting flash, runs the recovery (boot decision, then what the device does next), cuts that
//! too (nested), and checks the invariants after every step. See `docs/power-loss.md`.
//!
//! - [`flash`]: the traced flash adapter and the deliberately broken state writer;
//! - [`world`]: layout, key and signed images of one geometry;
//! - [`scenario`]: the scenarios, recovery and invariants;
//! - [`harness`]: the exploration of cut points;
//! - [`wear`]: the erase figures;
//! - [`walk`]: the randomized device-life walk against a reference model (issue 16).

pub mod flash;
pub mod harness;
pub mod ports;
pub mod scenario;
pub mod walk;
pub mod wear;
pub mod world;

use flash::Fault;
use harness::{explore_case, Cut, Failure, Plan, Tally};
use scenario::{Case, Sc, Stop};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use world::World;

/// Write sizes of the matrix.
pub const WRITE_SIZES: [usize; 5] = [1, 4, 8, 16, 32];
/// Erase sizes of the matrix.
pub const ERASE_SIZES: [usize; 3] = [1024, 4096, 128 * 1024];
/// The geometry of the STM32F4 sector map (issue 13): the flash of an STM32F405/407 with 1 MiB
/// (4 × 16 KiB, 1 × 64 KiB, 7 × 128 KiB), laid out as `boards/stm32f4-nonuniform.toml` (state in
/// sectors 2-3, bank A in 5-7, bank B in 8-10), 4-byte writes. Its `E` is the driver's
/// `ERASE_SIZE`, 16 KiB (a power of two dividing every sector of the map, the second arm of
/// `Layout::check_flash`'s rule; `device/tests/sectors.rs` runs the first, `ERASE_SIZE` = the
/// largest sector); the strict flash enforces the map itself, so every erase is a whole map
/// sector. In reports: `E=16384`.
pub const F4_GEOMETRY: (usize, usize) = (4, F4_ERASE_SIZE);
/// The `E` of [`F4_GEOMETRY`] (no uniform geometry of the matrix uses it).
pub const F4_ERASE_SIZE: usize = 16 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reduced matrix (the test suite's).
    pub quick: bool,
    /// Geometries (write size, erase size); empty = the matrix.
    pub geometries: Vec<(usize, usize)>,
    /// Scenarios; empty = all.
    pub scenarios: Vec<Sc>,
    /// Replay one path of nested cuts.
    pub replay: Option<Vec<Cut>>,
    /// Run against a broken state writer.
    pub fault: Option<Fault>,
    /// Only model (a) (cuts between operations).
    pub before_only: bool,
    /// Exhaustive depth override.
    pub depth: Option<usize>,
    /// Worker threads.
    pub threads: usize,
    /// Print progress of each scenario.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            geometries: Vec::new(),
            scenarios: Vec::new(),
            replay: None,
            fault: None,
            before_only: false,
            depth: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            verbose: false,
        }
    }
}

/// The result of one scenario in one geometry.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// (write size, erase size).
    pub geometry: (usize, usize),
    /// The scenario.
    pub sc: Sc,
    /// Counts.
    pub tally: Tally,
    /// Wall time.
    pub time: Duration,
}

/// The result of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per geometry and scenario.
    pub cases: Vec<CaseResult>,
    /// Wall time.
    pub time: Duration,
}

impl Report {
    /// Scenario runs (geometry × scenario).
    pub fn scenarios(&self) -> usize {
        self.cases.len()
    }
    /// Cut points.
    pub fn points(&self) -> u64 {
        self.cases.iter().map(|c| c.tally.points()).sum()
    }
    /// Failures.
    pub fn failures(&self) -> u64 {
        self.cases.iter().map(|c| c.tally.failures()).sum()
    }
    /// Distinct failing first-level cut points (geometry, scenario, operation of the step).
    pub fn failing_first_ops(&self) -> usize {
        self.cases
            .iter()
            .map(|c| c.tally.failing_first_ops.len())
            .sum()
    }
    /// The summary line.
    pub fn summary(&self) -> String {
        format!(
            "powercut: {} scenarios, {} cut points, {} failures",
            self.scenarios(),
            self.points(),
            self.failures()
        )
    }
}

/// Distinct first-level cut points (geometry, scenario, operation of the step) whose exploration
/// failed in `all` but not in `before_only`: the points only the in-operation models reveal.
pub fn in_op_only(all: &Report, before_only: &Report) -> usize {
    all.cases
        .iter()
        .map(|c| {
            let a = before_only
                .cases
                .iter()
                .find(|b| b.geometry == c.geometry && b.sc == c.sc)
                .map(|b| b.tally.failing_first_ops.clone())
                .unwrap_or_default();
            c.tally.failing_first_ops.difference(&a).count()
        })
        .sum()
}

/// The matrix for these options.
pub fn geometries(opts: &Options) -> Vec<(usize, usize)> {
    if !opts.geometries.is_empty() {
        return opts.geometries.clone();
    }
    if opts.quick {
        let mut g = vec![
            (1, 1024),
            (8, 4096),
            (32, 1024),
            (4, 128 * 1024),
            F4_GEOMETRY,
        ];
        // The ports' geometries (ports.rs).
        for p in ports::PORT_GEOMETRIES {
            if !g.contains(&(p.write_size, p.erase_size)) {
                g.push((p.write_size, p.erase_size));
            }
        }
        return g;
    }
    let mut g = Vec::new();
    for &e in &ERASE_SIZES {
        for &w in &WRITE_SIZES {
            g.push((w, e));
        }
    }
    g.push(F4_GEOMETRY);
    g
}

/// The exploration plan for a geometry.
pub fn plan_for(opts: &Options, erase: usize) -> Plan {
    let small = erase == 1024;
    let (exhaustive_depth, max_depth, deeper, samples, seeds, rich) = if opts.quick {
        (1, 3, 0.5, 2, 1, false)
    } else if small {
        (2, 5, 0.2, 1, 3, true)
    } else {
        (1, 5, 1.0, 12, 2, true)
    };
    Plan {
        exhaustive_depth: opts.depth.unwrap_or(exhaustive_depth),
        max_depth: if opts.replay.is_some() {
            usize::MAX
        } else {
            // An explicit depth means exactly that many nested cuts, exhaustively.
            opts.depth.unwrap_or(max_depth)
        },
        deeper,
        samples,
        seeds,
        rich_prefixes: rich,
        before_only: opts.before_only,
        replay: opts.replay.clone(),
        verbose: opts.replay.is_some(),
    }
}

fn run_case<const W: usize, const E: usize>(opts: &Options, sc: Sc) -> Option<CaseResult> {
    let t0 = Instant::now();
    let w: World<W, E> = World::new(opts.fault);
    if !sc.applies(&w) {
        return None;
    }
    let plan = plan_for(opts, E);
    let tally = match Case::new(&w, sc) {
        Ok(case) => {
            let seed = (W as u64) << 40 ^ (E as u64) << 8 ^ sc as u64;
            explore_case(&case, &plan, seed)
        }
        Err(e) => {
            let message = match e {
                Stop::Cut => "setup was cut".into(),
                Stop::Fail(m) => format!("setup failed: {m}"),
            };
            Tally {
                uncut_failures: 1,
                examples: vec![Failure {
                    path: Vec::new(),
                    message,
                }],
                ..Tally::default()
            }
        }
    };
    Some(CaseResult {
        geometry: (W, E),
        sc,
        tally,
        time: t0.elapsed(),
    })
}

/// Calls `$f::<W, E>($args)` for a runtime geometry of the matrix.
#[macro_export]
macro_rules! with_geometry {
    ($w:expr, $e:expr, $f:ident ( $($arg:expr),* )) => {
        match ($w, $e) {
            (1, 1024) => Some($f::<1, 1024>($($arg),*)),
            (4, 1024) => Some($f::<4, 1024>($($arg),*)),
            (8, 1024) => Some($f::<8, 1024>($($arg),*)),
            (16, 1024) => Some($f::<16, 1024>($($arg),*)),
            (32, 1024) => Some($f::<32, 1024>($($arg),*)),
            (1, 4096) => Some($f::<1, 4096>($($arg),*)),
            (4, 4096) => Some($f::<4, 4096>($($arg),*)),
            (8, 4096) => Some($f::<8, 4096>($($arg),*)),
            (16, 4096) => Some($f::<16, 4096>($($arg),*)),
            (32, 4096) => Some($f::<32, 4096>($($arg),*)),
            (1, 131072) => Some($f::<1, 131072>($($arg),*)),
            (4, 131072) => Some($f::<4, 131072>($($arg),*)),
            (8, 131072) => Some($f::<8, 131072>($($arg),*)),
            (16, 131072) => Some($f::<16, 131072>($($arg),*)),
            (32, 131072) => Some($f::<32, 131072>($($arg),*)),
            // The STM32F4 sector map (`F4_GEOMETRY`).
            (4, 16384) => Some($f::<4, 16384>($($arg),*)),
            // The STM32L476 port's geometry (ports.rs).
            (8, 2048) => Some($f::<8, 2048>($($arg),*)),
            _ => None,
        }
    };
}

/// Runs the matrix (or the selected part) on `opts.threads` threads.
pub fn run(opts: &Options) -> Result<Report, String> {
    let t0 = Instant::now();
    let scenarios: Vec<Sc> = if opts.scenarios.is_empty() {
        Sc::ALL.to_vec()
    } else {
        opts.scenarios.clone()
    };
    let mut jobs = Vec::new();
    for (w, e) in geometries(opts) {
        if with_geometry!(w, e, supported()).is_none() {
            return Err(format!("geometry W={w} E={e} is not in the matrix"));
        }
        for &sc in &scenarios {
            jobs.push((w, e, sc));
        }
    }
    // Biggest jobs first (uploads on 1 KiB sectors explore two cut levels exhaustively), so the
    // threads finish together.
    let cost = |&(w, e, sc): &(usize, usize, Sc)| {
        let upload = matches!(
            sc,
            Sc::Provision | Sc::Install | Sc::SecondUpdate | Sc::PaddedInstall | Sc::DeltaInstall
        );
        std::cmp::Reverse((e == 1024, upload, w))
    };
    jobs.sort_by_key(cost);
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(w, e, sc)) = jobs.get(i) else {
                    break;
                };
                if let Some(Some(r)) = with_geometry!(w, e, run_case(opts, sc)) {
                    if opts.verbose {
                        eprintln!(
                            "  W={w:<2} E={e:<6} {:>2} {:<18} {:>8} points {:>6} failures {:>7.1}s",
                            sc as u8,
                            sc.name(),
                            r.tally.points(),
                            r.tally.failures(),
                            r.time.as_secs_f64()
                        );
                    }
                    results.lock().expect("results").push(r);
                }
            });
        }
    });
    let mut cases = results.into_inner().expect("results");
    cases.sort_by_key(|c| (c.geometry.1, c.geometry.0, c.sc));
    Ok(Report {
        cases,
        time: t0.elapsed(),
    })
}

fn supported<const W: usize, const E: usize>() {}

/// The replay command of a failure.
pub fn replay_command(
    geometry: (usize, usize),
    sc: Sc,
    fault: Option<Fault>,
    path: &[Cut],
) -> String {
    let mut s = format!(
        "cargo run --release -p twinbank-powercut -- --geometry {},{} --scenario {}",
        geometry.0, geometry.1, sc as u8
    );
    if let Some(f) = fault {
        s += &format!(" --fault {}", f.name());
    }
    for (op, m) in path {
        s += &format!(" --cut {op} --model {}", harness::model_arg(m));
        if let Some(seed) = harness::model_seed(m) {
            s += &format!(" --seed {seed}");
        }
    }
    s
}

/// The report: a table per scenario × cut model, per geometry figures, failures with their
/// replay command, and the summary line last.
pub fn render(report: &Report, fault: Option<Fault>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut scs: Vec<Sc> = report.cases.iter().map(|c| c.sc).collect();
    scs.sort();
    scs.dedup();
    let _ = writeln!(
        out,
        "cut points (failures) per scenario and cut model, all geometries:"
    );
    let _ = write!(out, "{:<22}", "scenario");
    for m in harness::MODEL_CLASSES {
        let _ = write!(out, "{m:>20}");
    }
    let _ = writeln!(out, "{:>12}{:>10}", "total", "uncut-F");
    let mut total = Tally::default();
    for sc in &scs {
        let mut t = Tally::default();
        for c in report.cases.iter().filter(|c| c.sc == *sc) {
            t.add(&c.tally);
        }
        let _ = write!(out, "{:<22}", format!("{:>2} {}", *sc as u8, sc.name()));
        for i in 0..5 {
            let _ = write!(
                out,
                "{:>20}",
                format!("{} ({})", t.points[i], t.failures[i])
            );
        }
        let _ = writeln!(out, "{:>12}{:>10}", t.points(), t.uncut_failures);
        total.add(&t);
    }
    let _ = write!(out, "{:<22}", "all");
    for i in 0..5 {
        let _ = write!(
            out,
            "{:>20}",
            format!("{} ({})", total.points[i], total.failures[i])
        );
    }
    let _ = writeln!(out, "{:>12}{:>10}", total.points(), total.uncut_failures);
    let _ = writeln!(out, "\nper geometry:");
    let mut geos: Vec<(usize, usize)> = report.cases.iter().map(|c| c.geometry).collect();
    geos.sort_by_key(|g| (g.1, g.0));
    geos.dedup();
    for g in geos {
        let cs: Vec<&CaseResult> = report.cases.iter().filter(|c| c.geometry == g).collect();
        let p: u64 = cs.iter().map(|c| c.tally.points()).sum();
        let f: u64 = cs.iter().map(|c| c.tally.failures()).sum();
        let t: f64 = cs.iter().map(|c| c.time.as_secs_f64()).sum();
        let ops: usize = cs.iter().map(|c| c.tally.step_ops).sum();
        let _ = writeln!(
            out,
            "  W={:<2} E={:<6} {:>2} scenarios {:>5} step ops {:>9} cut points {:>6} failures {:>8.1} s",
            g.0,
            g.1,
            cs.len(),
            ops,
            p,
            f,
            t
        );
    }
    for c in &report.cases {
        if c.sc == Sc::Compaction && c.tally.step_state_erases == 0 {
            let _ = writeln!(
                out,
                "  note: W={} E={} compaction step erased no state sector",
                c.geometry.0, c.geometry.1
            );
        }
    }
    let failing: Vec<&CaseResult> = report
        .cases
        .iter()
        .filter(|c| c.tally.failures() > 0)
        .collect();
    if !failing.is_empty() {
        let _ = writeln!(out, "\nfailures (first ones per geometry × scenario):");
        for c in failing {
            for f in &c.tally.examples {
                let path: Vec<String> = f
                    .path
                    .iter()
                    .map(|(op, m)| {
                        let seed = harness::model_seed(m)
                            .map(|s| format!(" seed {s}"))
                            .unwrap_or_default();
                        format!("op {op} {}{seed}", harness::model_arg(m))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "FAIL W={} E={} scenario {} ({}) cut [{}]: {}\n  replay: {}",
                    c.geometry.0,
                    c.geometry.1,
                    c.sc as u8,
                    c.sc.name(),
                    if path.is_empty() {
                        "none".into()
                    } else {
                        path.join(" -> ")
                    },
                    f.message,
                    replay_command(c.geometry, c.sc, fault, &f.path)
                );
            }
        }
    }
    let _ = writeln!(out, "\nrun time {:.1} s", report.time.as_secs_f64());
    out
}
