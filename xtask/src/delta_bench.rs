//! `cargo xtask delta-bench`: the figures of BENCHMARKS.md "Delta updates", in one run.
//!
//! 1. the QEMU tests' firmware (v1 for bank A, v2 for bank B, v2 with a one-line change, v1
//!    built against heapless 0.7), signed as the tests sign it;
//! 2. patch sizes for three pairs: twinbank (each normalisation), and the tools people use
//!    today — bsdiff4 and detools from PyPI, installed into `target/delta-bench-venv`;
//! 3. the device's cost of applying each patch under QEMU `-icount` (`delta=PATH`), against
//!    writing the whole image (`update=PATH`), and the applier's RAM;
//! 4. an upload over the UART, whole image against patch (`twinbank serial upload
//!    [--delta-from]`), on fresh devices.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use twinbank::board::BoardDescription;
use twinbank::delta::encode::{make_patch, EncodeOptions, Normalisation};
use twinbank::Bank;
use xtask::firmware::{self, Signing};
use xtask::qemu::{self, Run};
use xtask::tools::{self, root};

/// The comparison tools, pinned.
const PIP_PACKAGES: [&str; 2] = ["detools==0.53.0", "bsdiff4==1.2.6"];
const VENV: &str = "target/delta-bench-venv";

fn python_venv() -> Result<PathBuf, String> {
    let venv = root().join(VENV);
    let py = venv.join("bin/python");
    let ready = Command::new(&py)
        .args(["-c", "import bsdiff4, detools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        eprintln!(
            "xtask: installing {} into {}",
            PIP_PACKAGES.join(" "),
            venv.display()
        );
        let how = "the comparison needs python3 with venv and pip (python3-venv) and PyPI";
        tools::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .map_err(|e| format!("{e}\n  {how}"))?;
        tools::run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet"])
                .args(PIP_PACKAGES),
        )
        .map_err(|e| format!("{e}\n  {how}"))?;
    }
    Ok(py)
}

fn host_tool() -> Result<PathBuf, String> {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "twinbank-host",
        "--bin",
        "twinbank",
    ]);
    tools::run(&mut c)?;
    Ok(root().join("target/release/twinbank"))
}

/// One pair of the comparison.
struct Pair {
    what: &'static str,
    base: (&'static str, Bank, &'static str, u32),
    target: (&'static str, Bank, &'static str, u32),
}

const PAIRS: [Pair; 3] = [
    Pair {
        what: "version bump (v1 → v2, bank A → B)",
        base: ("app-v1-A", Bank::A, "1.0.0", 1),
        target: ("app-v2-B", Bank::B, "2.0.0", 2),
    },
    Pair {
        what: "one-function change (+ one line)",
        base: ("app-v1-A", Bank::A, "1.0.0", 1),
        target: ("app-v2-B-one-line", Bank::B, "2.0.0", 2),
    },
    Pair {
        what: "dependency change (heapless 0.7 → 0.8)",
        base: ("app-v1-A-heapless07", Bank::A, "1.0.0", 1),
        target: ("app-v2-B", Bank::B, "2.0.0", 2),
    },
];

fn parse_after(line: &str, key: &str) -> Option<u64> {
    line.split(key)
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The number just before `key` in `line`.
fn number_before(line: &str, key: &str) -> Option<u64> {
    line.split(key)
        .next()?
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn json_field(out: &str, key: &str) -> f64 {
    serde_json::from_str::<serde_json::Value>(out)
        .ok()
        .and_then(|v| v[key].as_f64())
        .unwrap_or(0.0)
}

/// `cargo xtask delta-bench`.
pub fn run() -> Result<(), String> {
    tools::ensure_thumb_target()?;
    tools::ensure_qemu()?;
    let py = python_venv()?;
    let build = firmware::test_build();
    let (trusted, _) = firmware::test_keys(&build)?;
    build.build(&firmware::test_variants())?;
    let board = BoardDescription::load(&root().join("twinbank.toml")).map_err(|e| e.to_string())?;
    let keys = [firmware::trusted_key(&trusted)?];
    let work = root().join("target/delta-bench");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let sign = |(elf, bank, version, counter): (&str, Bank, &str, u32)| -> Result<PathBuf, String> {
        let img = firmware::sign_elf(
            &build.elf(elf),
            &Signing {
                board: &board,
                bank,
                version,
                security_counter: counter,
                key: &trusted,
                pad_to: None,
            },
        )?;
        let p = work.join(format!("{elf}.img"));
        std::fs::write(&p, img).map_err(|e| e.to_string())?;
        Ok(p)
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));

    // 1. Sizes.
    let mut json_pairs = Vec::new();
    let mut ours = Vec::new();
    let mut streams = Vec::new();
    for pair in &PAIRS {
        let (b, t) = (sign(pair.base)?, sign(pair.target)?);
        let (base, target) = (read(&b)?, read(&t)?);
        let mut sizes = Vec::new();
        for n in [
            Normalisation::Off,
            Normalisation::Rebase,
            Normalisation::Map,
        ] {
            let o = EncodeOptions {
                normalisation: n,
                ..EncodeOptions::default()
            };
            let p = make_patch(&base, &target, &o).map_err(|e| e.to_string())?;
            sizes.push(p.bytes.len());
            if n == Normalisation::Map {
                let path = work.join(format!("{}-{}.patch", pair.base.0, pair.target.0));
                std::fs::write(&path, &p.bytes).map_err(|e| e.to_string())?;
                let ops = work.join(format!("{}-{}.ops", pair.base.0, pair.target.0));
                std::fs::write(&ops, &p.op_stream).map_err(|e| e.to_string())?;
                let lz = |bits| twinbank::delta::lz::compress(&p.op_stream, bits).len();
                streams.push((ops, p.op_stream.len(), lz(10), lz(11)));
            }
        }
        ours.push((b.clone(), t.clone(), target.len(), sizes));
        json_pairs.push(serde_json::json!({
            "base": b, "target": t,
            "base_elf": build.elf(pair.base.0), "target_elf": build.elf(pair.target.0),
            "base_address": board.layout().map_err(|e| e.to_string())?.bank_address(pair.base.1),
            "target_address": board.layout().map_err(|e| e.to_string())?.bank_address(pair.target.1),
            "ops": streams.last().map(|s: &(PathBuf, usize, usize, usize)| s.0.clone()),
        }));
    }
    let pairs_file = work.join("pairs.json");
    std::fs::write(
        &pairs_file,
        serde_json::to_vec(&json_pairs).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new(&py)
        .arg(root().join("xtask/bench/delta_tools.py"))
        .arg(&work)
        .arg(&pairs_file)
        .output()
        .map_err(|e| format!("python: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the comparison tools failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let theirs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    println!("\nPatch size (bytes, and % of the target image):");
    println!(
        "| pair | image | twinbank | twinbank, rebase only | twinbank, no normalisation | \
         bsdiff4 | detools lzma | detools heatshrink | detools lzma + arm-cortex-m4 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let pct = |n: u64, of: usize| format!("{n} ({:.2} %)", 100.0 * n as f64 / of as f64);
    for ((pair, (_, _, len, sizes)), t) in PAIRS.iter().zip(&ours).zip(&theirs) {
        let v = |k: &str| t[k].as_u64().unwrap_or(0);
        println!(
            "| {} | {len} | **{}** | {} | {} | {} | {} | {} | {} |",
            pair.what,
            pct(sizes[2] as u64, *len),
            pct(sizes[1] as u64, *len),
            pct(sizes[0] as u64, *len),
            pct(v("bsdiff4"), *len),
            pct(v("detools_lzma"), *len),
            pct(v("detools_heatshrink"), *len),
            pct(v("detools_lzma_cm4"), *len),
        );
    }

    println!(
        "\nThe op stream (uncompressed, bytes) compressed by the candidates of the device side:"
    );
    println!(
        "| pair | op stream | twinbank LZ 1 KiB | twinbank LZ 2 KiB (used) | heatshrink W=8 L=4 | \
         heatshrink W=10 L=4 | heatshrink W=11 L=4 | heatshrink W=12 L=4 | heatshrink W=12 L=5 | \
         deflate (32 KiB) | lzma |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for ((pair, (_, len, lz10, lz11)), t) in PAIRS.iter().zip(&streams).zip(&theirs) {
        let o = &t["ops"];
        let v = |k: &str| o[k].as_u64().unwrap_or(0);
        println!(
            "| {} | {len} | {lz10} | **{lz11}** | {} | {} | {} | {} | {} | {} | {} |",
            pair.what,
            v("hs_8_4"),
            v("hs_10_4"),
            v("hs_11_4"),
            v("hs_12_4"),
            v("hs_12_5"),
            v("deflate"),
            v("lzma"),
        );
    }

    // 2. Device cost under -icount.
    println!("\nApply cost under QEMU -icount (instructions, the body's write loop; begin's erase and finish's verification excluded):");
    println!("| pair | patch body | image | instructions | per image byte | whole image written: instructions | per byte |");
    println!("|---|---|---|---|---|---|---|");
    let shim = build.elf("shim");
    for (pair, (b, t, len, _)) in PAIRS.iter().zip(&ours) {
        let base = read(b)?;
        let patch = work.join(format!("{}-{}.patch", pair.base.0, pair.target.0));
        let flash_path = work.join("flash.bin");
        let measure = |arg: String, key: &str| -> Result<String, String> {
            qemu::write_flash(&flash_path, &firmware::factory_flash(&board, &base, &keys)?)?;
            let mut run = Run::new(&shim, &flash_path, Duration::from_secs(300));
            run.icount = true;
            run.args = vec![arg, "halt".into()];
            let o = run.run()?;
            o.output
                .lines()
                .find(|l| l.contains(key))
                .map(str::to_string)
                .ok_or_else(|| format!("no `{key}` line:\n{}", o.output))
        };
        let d = measure(format!("delta={}", patch.display()), "app: delta applied")?;
        let f = measure(format!("update={}", t.display()), "app: full image written")?;
        let body = parse_after(&d, "body ").unwrap_or(0);
        let di = number_before(&d, " instructions").unwrap_or(0);
        let fi = number_before(&f, " instructions").unwrap_or(0);
        println!(
            "| {} | {body} | {len} | {di} | {:.1} | {fi} | {:.1} |",
            pair.what,
            di as f64 / *len as f64,
            fi as f64 / *len as f64
        );
    }

    // 3. Over the UART, and the applier's RAM.
    let tool = host_tool()?;
    let (b, t, len, _) = &ours[1];
    let released = work.join("released");
    let _ = std::fs::remove_dir_all(&released);
    std::fs::create_dir_all(&released).map_err(|e| e.to_string())?;
    std::fs::copy(b, released.join("v1.img")).map_err(|e| e.to_string())?;
    let base = read(b)?;
    let mut rows = Vec::new();
    let mut ram = String::new();
    for delta in [false, true] {
        let flash_path = work.join("flash.bin");
        qemu::write_flash(&flash_path, &firmware::factory_flash(&board, &base, &keys)?)?;
        let mut running = Run::new(&shim, &flash_path, Duration::from_secs(120)).spawn()?;
        running.kill_after(Duration::from_secs(120));
        let relay = running.serve_tcp()?;
        if !running.wait_for_text("app: serving", Duration::from_secs(20)) {
            return Err(format!("the app does not serve:\n{}", running.text()));
        }
        ram = running
            .text()
            .lines()
            .find(|l| l.contains("RAM:"))
            .unwrap_or("")
            .to_string();
        let t = t.display().to_string();
        let r = released.display().to_string();
        let mut args = vec!["serial", "--tcp", "", "upload", &t, "--activate", "--json"];
        let addr = relay.addr();
        args[2] = &addr;
        if delta {
            args.extend(["--delta-from", &r]);
        }
        let out = Command::new(&tool)
            .args(&args)
            .output()
            .map_err(|e| e.to_string())?;
        let _ = running.kill9();
        if !out.status.success() {
            return Err(format!(
                "upload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let o = String::from_utf8_lossy(&out.stdout).into_owned();
        rows.push((
            if delta { "patch" } else { "whole image" },
            json_field(&o, "wire_bytes"),
            json_field(&o, "seconds"),
        ));
    }
    println!("\nUpload over the UART of the one-function change ({len} bytes), factory device running v1:");
    println!("| sent | bytes on the wire (host → device) | time under QEMU | time at 115 200 baud (10 bits per byte) |");
    println!("|---|---|---|---|");
    for (what, wire, secs) in rows {
        println!(
            "| {what} | {wire} | {secs:.2} s | {:.2} s |",
            wire * 10.0 / 115_200.0
        );
    }
    println!("\nDevice RAM (the demo app's statics, size_of on thumbv7m):\n{ram}");
    Ok(())
}
