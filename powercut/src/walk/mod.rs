//! The randomized device-life walk (issue 16): random lives over every geometry of the matrix,
//! each call of the device code predicted by a reference model of the ordered state table
//! ([`model`]) and checked against it and against the invariants, with power cuts of every cut
//! model (nested), driver errors and bit rot.
//!
//! ```text
//! twinbank-powercut walk [--seconds N] [--lives N] [--seed S] [--steps N] [--geometry W,E]... [-v]
//! ```
//!
//! Life `i` of a walk with seed `S` has seed `S + i`, which alone determines it (its geometry,
//! device configuration, events, cuts and faults): a failure prints its life seed, and
//! `--seed <life seed> --lives 1` replays it exactly (`-v` prints every step).
//!
//! - [`catalog`]: the images of a geometry;
//! - [`driver`]: the flash driver that injects cuts and errors and logs operations;
//! - [`model`]: the reference model;
//! - [`life`]: one life and the checks;
//! - [`stats`]: the figures.

pub mod catalog;
pub mod driver;
pub mod life;
pub mod model;
pub mod stats;

use crate::{with_geometry, ERASE_SIZES, WRITE_SIZES};
use driver::Sabotage;
use life::{run_life, Failure, LifeOptions};
use stats::Stats;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use twinbank::testing::SplitMix64;

/// Shortest and longest life (calls of the device code), unless `--steps` says otherwise.
pub const LIFE_STEPS: (u64, u64) = (300, 3000);

/// What to walk.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Start no life after this many seconds (the running one ends normally, so a walk of `L`
    /// lives replays exactly with `--lives L`).
    pub seconds: Option<f64>,
    /// Run this many lives.
    pub lives: Option<u64>,
    /// The seed of life 0 (default: from the clock).
    pub seed: Option<u64>,
    /// Calls per life (default: random in [`LIFE_STEPS`]).
    pub steps: Option<u64>,
    /// Geometries (write size, erase size); empty: the whole matrix.
    pub geometries: Vec<(usize, usize)>,
    /// Print every step.
    pub verbose: bool,
    /// A deliberately broken driver (tests only).
    pub sabotage: Option<Sabotage>,
}

/// A failed life.
#[derive(Debug, Clone)]
pub struct WalkFailure {
    /// Its seed.
    pub seed: u64,
    /// Its geometry.
    pub geometry: (usize, usize),
    /// What failed.
    pub failure: Failure,
}

impl WalkFailure {
    /// The command that replays it.
    pub fn replay(&self) -> String {
        format!(
            "cargo xtask walk --seed {} --lives 1 --geometry {},{} -v",
            self.seed, self.geometry.0, self.geometry.1
        )
    }
}

/// The result of a walk.
#[derive(Debug, Clone)]
pub struct WalkReport {
    /// Seed of life 0.
    pub seed: u64,
    /// The figures.
    pub stats: Stats,
    /// The first failure (the walk stops there).
    pub failure: Option<WalkFailure>,
    /// Wall time.
    pub elapsed: Duration,
}

/// The geometries of these options.
pub fn geometries(opts: &WalkOptions) -> Vec<(usize, usize)> {
    if !opts.geometries.is_empty() {
        return opts.geometries.clone();
    }
    ERASE_SIZES
        .iter()
        .flat_map(|&e| WRITE_SIZES.iter().map(move |&w| (w, e)))
        .collect()
}

/// Runs the walk.
pub fn walk(opts: &WalkOptions) -> Result<WalkReport, String> {
    let t0 = Instant::now();
    let seed = opts.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let geos = geometries(opts);
    for &(w, e) in &geos {
        if with_geometry!(w, e, supported()).is_none() {
            return Err(format!("geometry W={w} E={e} is not in the matrix"));
        }
    }
    let deadline = opts.seconds.map(|s| t0 + Duration::from_secs_f64(s));
    let mut stats = Stats::default();
    let mut failure = None;
    for i in 0.. {
        if opts.lives.is_some_and(|n| i >= n) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let life_seed = seed.wrapping_add(i);
        let (w, e) = geos[(life_seed % geos.len() as u64) as usize];
        let steps = opts.steps.unwrap_or_else(|| {
            LIFE_STEPS.0 + SplitMix64(life_seed).next_u64() % (LIFE_STEPS.1 - LIFE_STEPS.0)
        });
        let before = stats.steps;
        let life = LifeOptions {
            max_steps: steps,
            verbose: opts.verbose,
            sabotage: opts.sabotage,
        };
        let r = with_geometry!(w, e, run_life(life_seed, life, &mut stats)).ok_or("geometry")?;
        stats.lives += 1;
        let g = stats.geometries.entry((w, e)).or_default();
        g.0 += 1;
        g.1 += stats.steps - before;
        match r {
            Ok(_) => {}
            Err(f) => {
                failure = Some(WalkFailure {
                    seed: life_seed,
                    geometry: (w, e),
                    failure: f,
                });
                break;
            }
        }
    }
    Ok(WalkReport {
        seed,
        stats,
        failure,
        elapsed: t0.elapsed(),
    })
}

fn supported<const W: usize, const E: usize>() {}

fn usage(msg: &str) -> ExitCode {
    eprintln!("walk: {msg}");
    eprintln!(
        "usage: twinbank-powercut walk [--seconds N] [--lives N] [--seed S] [--steps N] \
         [--geometry W,E]... [-v]"
    );
    ExitCode::from(2)
}

/// `twinbank-powercut walk ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    let mut opts = WalkOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--seconds" => match value().parse() {
                Ok(s) => opts.seconds = Some(s),
                Err(_) => return usage("--seconds needs a number"),
            },
            "--lives" => match value().parse() {
                Ok(n) => opts.lives = Some(n),
                Err(_) => return usage("--lives needs a number"),
            },
            "--seed" => match value().parse() {
                Ok(n) => opts.seed = Some(n),
                Err(_) => return usage("--seed needs a number"),
            },
            "--steps" => match value().parse() {
                Ok(n) => opts.steps = Some(n),
                Err(_) => return usage("--steps needs a number"),
            },
            "--geometry" => {
                let v = value();
                let parts: Vec<Option<usize>> = v.split(',').map(|p| p.parse().ok()).collect();
                match parts.as_slice() {
                    [Some(w), Some(e)] => opts.geometries.push((*w, *e)),
                    _ => return usage("--geometry needs W,E (e.g. 8,1024)"),
                }
            }
            "-v" | "--verbose" => opts.verbose = true,
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    if opts.seconds.is_none() && opts.lives.is_none() {
        opts.seconds = Some(60.0);
    }
    let report = match walk(&opts) {
        Ok(r) => r,
        Err(e) => return usage(&e),
    };
    println!(
        "walk: seed {}, {} lives (replay: --seed {} --lives {}), {:.1} s ({:.1} min)",
        report.seed,
        report.stats.lives,
        report.seed,
        report.stats.lives,
        report.elapsed.as_secs_f64(),
        report.elapsed.as_secs_f64() / 60.0
    );
    print!("{}", report.stats.render());
    match &report.failure {
        None => {
            println!(
                "walk: {} lives, {} steps, {} power cuts, {} driver errors, 0 failures",
                report.stats.lives,
                report.stats.steps,
                report.stats.cuts_total(),
                report.stats.faults_total()
            );
            ExitCode::SUCCESS
        }
        Some(f) => {
            println!("last events of the failing life:");
            for e in &f.failure.recent {
                println!("  {e}");
            }
            println!(
                "walk: FAIL life seed {} (W={} E={}) step {}: {}",
                f.seed, f.geometry.0, f.geometry.1, f.failure.step, f.failure.message
            );
            println!("replay: {}", f.replay());
            ExitCode::FAILURE
        }
    }
}
