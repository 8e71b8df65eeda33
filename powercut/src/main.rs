//! `cargo run --release -p twinbank-powercut -- [options]` (what `cargo xtask powercut` runs).
//!
//! ```text
//! (no option)          the full matrix: WRITE_SIZE {1,4,8,16,32} × ERASE_SIZE {1K,4K,128K}, and
//!                      the STM32F4 sector map (--geometry 4,16384)
//! --quick              the reduced matrix of the test suite
//! --geometry W,E       one geometry (repeatable)
//! --scenario N         one scenario (repeatable)
//! --cut I --model M [--seed S]   replay: cut at operation I with model M (repeat for nested cuts)
//!                      M = before | prefix:K | bits:K | erase-partial | erase-garbage
//! --fault erase-in-place         run against a deliberately broken state writer
//! --before-only        only cut between operations (model a)
//! --depth N            exhaustive nesting depth
//! --threads N          worker threads (default: available cores)
//! --no-wear            skip the wear figures
//! --compare            also run with model (a) only and count the failing cut points only the
//!                      in-operation models reveal
//! -v                   progress per scenario (and a trace when replaying)
//! walk [ARGS]          the randomized device-life walk (see `twinbank_powercut::walk`)
//! ```

use std::process::ExitCode;
use twinbank_powercut::harness::parse_model;
use twinbank_powercut::scenario::Sc;
use twinbank_powercut::wear::wear;
use twinbank_powercut::{flash::Fault, in_op_only, render, run, with_geometry, Options};

fn usage(msg: &str) -> ExitCode {
    eprintln!("powercut: {msg}");
    eprintln!(
        "usage: twinbank-powercut [--quick] [--geometry W,E]... [--scenario N]... \
         [--cut I --model M [--seed S]]... [--fault erase-in-place] [--before-only] [--depth N] \
         [--threads N] [--no-wear] [--compare] [-v]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("walk") {
        return twinbank_powercut::walk::main(&args[1..]);
    }
    let mut opts = Options::default();
    let mut cuts: Vec<(u64, String, u64)> = Vec::new();
    let mut wear_figures = true;
    let mut compare = false;
    let mut i = 0;
    let value = |i: &mut usize| -> Option<String> {
        *i += 1;
        args.get(*i).cloned()
    };
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => opts.quick = true,
            "--geometry" => {
                let Some(v) = value(&mut i) else {
                    return usage("--geometry needs W,E");
                };
                let parts: Vec<Option<usize>> = v.split(',').map(|p| p.parse().ok()).collect();
                match parts.as_slice() {
                    [Some(w), Some(e)] => opts.geometries.push((*w, *e)),
                    _ => return usage("--geometry needs W,E (e.g. 4,1024)"),
                }
            }
            "--scenario" => match value(&mut i)
                .and_then(|v| v.parse().ok())
                .and_then(Sc::from_number)
            {
                Some(sc) => opts.scenarios.push(sc),
                None => return usage("--scenario needs a number 1..=19"),
            },
            "--cut" => match value(&mut i).and_then(|v| v.parse().ok()) {
                Some(op) => cuts.push((op, "before".into(), 0)),
                None => return usage("--cut needs an operation number"),
            },
            "--model" => match (value(&mut i), cuts.last_mut()) {
                (Some(m), Some(c)) => c.1 = m,
                _ => return usage("--model follows --cut"),
            },
            "--seed" => match (value(&mut i).and_then(|v| v.parse().ok()), cuts.last_mut()) {
                (Some(s), Some(c)) => c.2 = s,
                _ => return usage("--seed follows --cut"),
            },
            "--fault" => match value(&mut i).as_deref().and_then(Fault::parse) {
                Some(f) => opts.fault = Some(f),
                None => return usage("--fault erase-in-place"),
            },
            "--before-only" => opts.before_only = true,
            "--depth" => match value(&mut i).and_then(|v| v.parse().ok()) {
                Some(d) => opts.depth = Some(d),
                None => return usage("--depth needs a number"),
            },
            "--threads" => match value(&mut i).and_then(|v| v.parse().ok()) {
                Some(n) => opts.threads = n,
                None => return usage("--threads needs a number"),
            },
            "--no-wear" => wear_figures = false,
            "--compare" => compare = true,
            "-v" | "--verbose" => opts.verbose = true,
            other => return usage(&format!("unknown argument {other}")),
        }
        i += 1;
    }
    if !cuts.is_empty() {
        let mut path = Vec::new();
        for (op, m, seed) in &cuts {
            let Some(model) = parse_model(m, *seed) else {
                return usage(&format!("unknown model {m}"));
            };
            path.push((*op, model));
        }
        if opts.geometries.len() != 1 || opts.scenarios.len() != 1 {
            return usage("a replay needs one --geometry and one --scenario");
        }
        opts.replay = Some(path);
        opts.verbose = true;
        wear_figures = false;
        opts.threads = 1;
    }
    let report = match run(&opts) {
        Ok(r) => r,
        Err(e) => return usage(&e),
    };
    if compare {
        // The same matrix with cuts between operations only (model a).
        let between = match run(&Options {
            before_only: true,
            ..opts.clone()
        }) {
            Ok(r) => r,
            Err(e) => return usage(&e),
        };
        println!(
            "model (a) only: {} cut points, {} failures, {} failure-revealing first-level cut points",
            between.points(),
            between.failures(),
            between.failing_first_ops()
        );
        println!(
            "all models:     {} cut points, {} failures, {} failure-revealing first-level cut points, {} of them only with in-operation models (b, c, d)",
            report.points(),
            report.failures(),
            report.failing_first_ops(),
            in_op_only(&report, &between)
        );
    }
    print!("{}", render(&report, opts.fault));
    let mut wear_ok = true;
    if wear_figures && opts.fault.is_none() {
        let (updates, trials) = if opts.quick { (100, 100) } else { (1000, 1000) };
        let geos: Vec<(usize, usize)> = if opts.geometries.is_empty() {
            vec![
                (4, 1024),
                (8, 4096),
                (16, 131072),
                twinbank_powercut::F4_GEOMETRY,
            ]
        } else {
            opts.geometries.clone()
        };
        for (w, e) in geos {
            match with_geometry!(w, e, wear(updates, trials)) {
                Some(Ok(fig)) => {
                    wear_ok &= fig.within_bound();
                    println!("{}", fig.line());
                }
                Some(Err(e)) => {
                    wear_ok = false;
                    println!("wear W={w} E={e}: FAILED: {e}");
                }
                None => {}
            }
        }
    }
    println!("{}", report.summary());
    if report.failures() > 0 || !wear_ok {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
