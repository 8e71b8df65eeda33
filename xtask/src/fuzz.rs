//! `cargo xtask fuzz [--seconds N] [--smoke] [--seeds] [--asan] [TARGET...]`: coverage-guided
//! fuzzing of every parser with cargo-fuzz (libFuzzer). See fuzz/README.md.
//!
//! - no option: every target (or the ones named) for 60 s each, one after the other, keeping what
//!   it finds in target/fuzz/corpus/<target>/ (the committed seeds in fuzz/corpus/ stay as they
//!   are); prints executions, coverage and crashes per target;
//! - `--smoke`: what `cargo xtask test` runs: every target for 15 s from the committed seeds and
//!   past findings only, with a fixed libFuzzer seed; fails only on a crash;
//! - `--seeds`: regenerates the seed corpora (fuzz/corpus/<target>/seed-*) from the crate's
//!   encoders;
//! - `--asan`: with AddressSanitizer (needs the nightly toolchain). The default is no sanitizer:
//!   the device crate forbids `unsafe`, so ASan has little to find there and halves the speed;
//!   without it the stable toolchain suffices.
//!
//! Installs cargo-fuzz (pinned) with `cargo install` when it is missing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use xtask::tools::{self, root, run};

/// The cargo-fuzz release installed when none is present.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds per target of a plain `cargo xtask fuzz`.
const DEFAULT_SECONDS: u64 = 60;
/// Seconds per target of the smoke run in `cargo xtask test`.
pub const SMOKE_SECONDS: u64 = 15;
/// libFuzzer's random seed in the smoke run (fixed: the same inputs in every run of one tree).
const SMOKE_SEED: u64 = 1;
/// An input that runs longer than this (seconds) is reported as a hang.
const INPUT_TIMEOUT: u64 = 60;

/// What one target's run reported.
#[derive(Debug, Default)]
struct Stats {
    executions: u64,
    per_second: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    /// The input that crashed the target, if any.
    crash: Option<String>,
}

#[derive(Debug, Default)]
struct Options {
    seconds: Option<u64>,
    smoke: bool,
    seeds: bool,
    asan: bool,
    targets: Vec<String>,
}

fn usage() -> String {
    "usage: cargo xtask fuzz [--seconds N] [--smoke] [--seeds] [--asan] [TARGET...]".into()
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let n = it.next().ok_or_else(usage)?;
                o.seconds = Some(
                    n.parse()
                        .map_err(|_| format!("--seconds {n}: not a number\n{}", usage()))?,
                );
            }
            "--smoke" => o.smoke = true,
            "--seeds" => o.seeds = true,
            "--asan" => o.asan = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{}", usage())),
            t => o.targets.push(t.to_string()),
        }
    }
    Ok(o)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn works(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure `cargo fuzz` runs: installs the pinned cargo-fuzz with `cargo install` if not.
pub fn ensure_cargo_fuzz() -> Result<(), String> {
    if works(cargo().args(["fuzz", "--version"])) {
        return Ok(());
    }
    let how = format!(
        "fuzzing needs cargo-fuzz: `cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} \
         --locked` (from crates.io; builds in a few minutes)"
    );
    eprintln!("xtask: cargo-fuzz is missing; installing it ({how})");
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .map_err(|e| format!("{e}\n  {how}"))?;
    if works(cargo().args(["fuzz", "--version"])) {
        Ok(())
    } else {
        Err(format!(
            "cargo-fuzz was installed but `cargo fuzz` does not run (is ~/.cargo/bin on \
             PATH?)\n  {how}"
        ))
    }
}

/// Makes sure the nightly toolchain exists (AddressSanitizer needs it).
fn ensure_nightly() -> Result<(), String> {
    if works(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask: --asan needs the nightly toolchain; installing it with rustup");
    run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
        .map_err(|e| {
            format!(
                "{e}\n  --asan needs `rustup toolchain install nightly` (or fuzz without --asan)"
            )
        })
}

/// The fuzz targets (`cargo fuzz list`: the `bin` lines of fuzz/Cargo.toml).
fn list_targets() -> Result<Vec<String>, String> {
    let out = cargo()
        .args(["fuzz", "list"])
        .output()
        .map_err(|e| format!("cannot run `cargo fuzz list`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo fuzz list` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn sanitizer(asan: bool) -> &'static str {
    if asan {
        "address"
    } else {
        "none"
    }
}

/// `cargo [+nightly] fuzz <sub> --sanitizer …`.
fn cargo_fuzz(sub: &str, asan: bool) -> Command {
    let mut c = if asan {
        let mut c = Command::new("cargo");
        c.current_dir(root()).arg("+nightly");
        c
    } else {
        cargo()
    };
    c.args(["fuzz", sub, "--sanitizer", sanitizer(asan)]);
    c
}

/// The number after `key` in a libFuzzer status line (`cov: 123`).
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Reads libFuzzer's final statistics and the last status line from a run's log.
fn stats(log: &str) -> Stats {
    let mut s = Stats::default();
    if let Some(line) = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains(" cov: "))
    {
        s.cov = field(line, "cov:").unwrap_or(0);
        s.ft = field(line, "ft:").unwrap_or(0);
        s.corpus = field(line, "corp:").unwrap_or(0);
    }
    for line in log.lines() {
        if let Some(v) = field(line, "stat::number_of_executed_units:") {
            s.executions = v;
        }
        if let Some(v) = field(line, "stat::average_exec_per_sec:") {
            s.per_second = v;
        }
        if let Some(i) = line.find("Test unit written to ") {
            s.crash = Some(line[i + "Test unit written to ".len()..].trim().to_string());
        }
    }
    s
}

/// Fuzzes one target for `seconds`; the log goes to target/fuzz/logs/<target>.log.
fn fuzz_target(target: &str, seconds: u64, smoke: bool, asan: bool) -> Result<Stats, String> {
    let dir = root().join("target/fuzz");
    // New inputs go to the first corpus directory: never into the committed seeds. The smoke run
    // starts from an empty one each time, so it replays the same inputs.
    let work = dir
        .join(if smoke { "smoke" } else { "corpus" })
        .join(target);
    if smoke {
        let _ = fs::remove_dir_all(&work);
    }
    let logs = dir.join("logs");
    for d in [&work, &logs] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut c = cargo_fuzz("run", asan);
    c.arg(target).arg(&work);
    for sub in ["corpus", "regressions"] {
        let d = root().join("fuzz").join(sub).join(target);
        if d.is_dir() {
            c.arg(d);
        }
    }
    c.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT}"))
        .arg("-print_final_stats=1");
    if smoke {
        c.arg(format!("-seed={SMOKE_SEED}"));
    }
    eprintln!(
        "xtask: $ {}  (log: {})",
        tools::describe(&c),
        log_path.display()
    );
    let status = c
        .stdout(log)
        .stderr(err)
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let mut s = stats(&text);
    if !status.success() && s.crash.is_none() {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "fuzz target {target} failed without a crash input ({status}):\n{}",
            tail.join("\n")
        ));
    }
    s.crash = s.crash.map(|p| resolve(&p));
    Ok(s)
}

/// An artifact path as cargo-fuzz prints it (relative to the fuzz directory), made absolute.
fn resolve(path: &str) -> String {
    let p = Path::new(path);
    let candidates: [PathBuf; 3] = [p.to_path_buf(), root().join(p), root().join("fuzz").join(p)];
    candidates
        .iter()
        .find(|c| c.is_file())
        .map_or_else(|| path.to_string(), |c| c.display().to_string())
}

fn regenerate_seeds() -> Result<(), String> {
    eprintln!("xtask: regenerating fuzz/corpus/*/seed-* from the crate's encoders");
    run(cargo()
        .args([
            "test",
            "-p",
            "twinbank",
            "--test",
            "fuzz_corpus",
            "seed_corpora",
        ])
        .env("TWINBANK_BLESS_SEEDS", "1"))
}

/// Runs the targets; prints a table; fails when any crashed.
fn fuzz_all(targets: &[String], seconds: u64, smoke: bool, asan: bool) -> Result<(), String> {
    eprintln!("xtask: building the fuzz targets (cargo-fuzz, release, instrumented)");
    run(&mut cargo_fuzz("build", asan))?;
    let mut rows = Vec::new();
    for t in targets {
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        rows.push((t.clone(), fuzz_target(t, seconds, smoke, asan)?));
    }
    println!("\n| target | seconds | executions | exec/s | cov | ft | corpus | crashes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (t, s) in &rows {
        println!(
            "| {t} | {seconds} | {} | {} | {} | {} | {} | {} |",
            s.executions,
            s.per_second,
            s.cov,
            s.ft,
            s.corpus,
            u8::from(s.crash.is_some())
        );
    }
    let crashes: Vec<String> = rows
        .iter()
        .filter_map(|(t, s)| {
            s.crash.as_ref().map(|a| {
                format!(
                    "  {t}: {a}\n    reproduce: cargo fuzz run --sanitizer {} {t} {a}\n    \
                     then copy it to fuzz/regressions/{t}/ and add a regression test",
                    sanitizer(asan)
                )
            })
        })
        .collect();
    if crashes.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzzing found crashes:\n{}", crashes.join("\n")))
    }
}

/// The smoke run of `cargo xtask test`: every target, briefly, deterministic inputs.
pub fn smoke() -> Result<(), String> {
    ensure_cargo_fuzz()?;
    let targets = list_targets()?;
    fuzz_all(&targets, SMOKE_SECONDS, true, false)
}

/// `cargo xtask fuzz ARGS`.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    if o.seeds {
        return regenerate_seeds();
    }
    ensure_cargo_fuzz()?;
    if o.asan {
        ensure_nightly()?;
    }
    let all = list_targets()?;
    let targets = if o.targets.is_empty() {
        all
    } else {
        for t in &o.targets {
            if !all.contains(t) {
                return Err(format!(
                    "no fuzz target {t}; the targets are: {}",
                    all.join(", ")
                ));
            }
        }
        o.targets
    };
    let seconds = o.seconds.unwrap_or(if o.smoke {
        SMOKE_SECONDS
    } else {
        DEFAULT_SECONDS
    });
    fuzz_all(&targets, seconds, o.smoke, o.asan)
}
