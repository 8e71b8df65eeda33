//! `cargo xtask demo`, `cargo xtask qemu` and `cargo xtask firmware`: the QEMU demo device.
//!
//! `demo` checks the tools (installs the thumbv7m target with rustup; qemu-system-arm with
//! apt-get when run as root, otherwise says how), builds the shim and the demo apps, makes a
//! signing key, signs v1 (bank A), v2 (bank B) and a faulty v3 (bank A), provisions a flash file
//! with v1, runs the update story under QEMU, narrates it one line per step, and ends with a
//! table of the banks read from the flash file through the device crate. Exit status 1 when a
//! step did not behave.

use crate::firmware::{self, Build, Signing, Variant};
use crate::qemu::{self, Outcome, Run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use twinbank::board::BoardDescription;
use twinbank::{Bank, BankState};

/// Timeout of one QEMU run of the story.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Files of the demo device.
struct Demo {
    board: BoardDescription,
    dir: PathBuf,
    key: PathBuf,
    build: Build,
}

impl Demo {
    fn new() -> Result<Demo, String> {
        let ws = workspace();
        let board = BoardDescription::load(&ws.join("twinbank.toml")).map_err(|e| e.to_string())?;
        let dir = ws.join("target/demo");
        let key = dir.join("keys/demo-signing.pem");
        Ok(Demo {
            board,
            build: Build {
                workspace: ws.clone(),
                target_dir: ws.join("target"),
                out_dir: ws.join("target/firmware"),
                trusted_keys: vec![key.clone()],
                verbose: true,
            },
            dir,
            key,
        })
    }

    fn flash(&self) -> PathBuf {
        self.dir.join("flash.bin")
    }

    fn image(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.img"))
    }

    fn shim(&self) -> PathBuf {
        self.build.elf("shim")
    }

    /// Key, firmware, signed images. `provision`: also a fresh factory flash file.
    fn prepare(&self, provision: bool) -> Result<(), String> {
        firmware::ensure_key(&self.key)?;
        println!("key      {}", self.key.display());
        self.build.build(&[
            Variant::shim(false),
            Variant::app("app-v1-A", Bank::A, "1.0.0", "healthy"),
            Variant::app("app-v2-B", Bank::B, "2.0.0", "healthy"),
            Variant::app("app-v3-A-fail-health", Bank::A, "3.0.0", "fail-health"),
        ])?;
        println!("firmware {}", self.build.out_dir.display());
        for (name, elf, bank, version, counter) in [
            ("v1", "app-v1-A", Bank::A, "1.0.0", 1),
            ("v2", "app-v2-B", Bank::B, "2.0.0", 2),
            ("v3", "app-v3-A-fail-health", Bank::A, "3.0.0", 3),
        ] {
            let img = firmware::sign_elf(
                &self.build.elf(elf),
                &Signing {
                    board: &self.board,
                    bank,
                    version,
                    security_counter: counter,
                    key: &self.key,
                    pad_to: None,
                },
            )?;
            std::fs::write(self.image(name), &img).map_err(|e| e.to_string())?;
            println!(
                "signed   {} {version} for bank {bank}, security counter {counter}, {} bytes",
                self.image(name).display(),
                img.len()
            );
        }
        if provision || !self.flash().exists() {
            let v1 = std::fs::read(self.image("v1")).map_err(|e| e.to_string())?;
            let keys = [firmware::trusted_key(&self.key)?];
            let flash = firmware::factory_flash(&self.board, &v1, &keys)?;
            qemu::write_flash(&self.flash(), &flash)?;
            println!(
                "flash    {} (factory: v1 in bank A, confirmed)",
                self.flash().display()
            );
        }
        Ok(())
    }

    fn run(&self, args: &[String]) -> Result<Outcome, String> {
        let mut r = Run::new(&self.shim(), &self.flash(), RUN_TIMEOUT);
        r.args = args.to_vec();
        r.run()
    }
}

fn check_tools() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == firmware::TARGET)
        });
    match installed {
        Ok(true) => {}
        Ok(false) => {
            println!("installing the Rust target {}", firmware::TARGET);
            let ok = Command::new("rustup")
                .args(["target", "add", firmware::TARGET])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("`rustup target add {}` failed", firmware::TARGET));
            }
        }
        Err(_) => println!(
            "rustup not found: assuming the {} target is installed (else: rustup target add {})",
            firmware::TARGET,
            firmware::TARGET
        ),
    }
    if qemu::available() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = Command::new("apt-get").arg("--version").output().is_ok();
    if root && apt {
        println!("qemu-system-arm not found: installing it (apt-get install -y qemu-system-arm)");
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "qemu-system-arm"])
            .status();
        if qemu::available() {
            return Ok(());
        }
    }
    Err("qemu-system-arm is not installed. Install it with:\n    \
         sudo apt-get update && sudo apt-get install -y qemu-system-arm\n\
         (Debian/Ubuntu; QEMU 7.2 or newer with the mps2-an385 machine)"
        .into())
}

/// Finds the next line at or after `*at` that contains `needle`; advances `*at` past it.
fn find<'a>(lines: &[&'a str], at: &mut usize, needle: &str) -> Option<&'a str> {
    let i = lines[*at..].iter().position(|l| l.contains(needle))?;
    *at += i + 1;
    Some(lines[*at - 1])
}

struct Story {
    step: usize,
    failed: usize,
}

impl Story {
    fn step(&mut self, what: &str, seen: Option<&str>) {
        self.step += 1;
        match seen {
            Some(line) => println!("  {:>2}. {what:<42} ok    {line}", self.step),
            None => {
                self.failed += 1;
                println!(
                    "  {:>2}. {what:<42} FAILED (expected line not seen)",
                    self.step
                );
            }
        }
    }

    fn exit(&mut self, o: &Outcome) {
        if o.status != Some(0) {
            self.failed += 1;
            println!(
                "      QEMU ended with {:?}{} — expected status 0",
                o.status,
                if o.timed_out { " (timeout)" } else { "" }
            );
        }
    }
}

fn save_log(dir: &Path, name: &str, o: &Outcome) {
    let _ = std::fs::write(dir.join(format!("{name}.uart.log")), &o.output);
}

/// `cargo xtask demo`.
pub fn demo(args: &[String]) -> Result<(), String> {
    let verbose = args.iter().any(|a| a == "-v" || a == "--verbose");
    if let Some(a) = args
        .iter()
        .find(|a| !matches!(a.as_str(), "-v" | "--verbose"))
    {
        return Err(format!(
            "demo: unknown argument {a} (usage: cargo xtask demo [-v])"
        ));
    }
    match run_demo(verbose)? {
        true => Ok(()),
        false => Err("demo: a step did not behave (see above)".into()),
    }
}

fn run_demo(verbose: bool) -> Result<bool, String> {
    println!("== twinbank demo: A/B updates on an emulated MPS2-AN385 (QEMU)");
    check_tools()?;
    let demo = Demo::new()?;
    demo.prepare(true)?;
    let img = |n: &str| format!("update={}", demo.image(n).display());
    let halt = "halt".to_string();
    let mut story = Story { step: 0, failed: 0 };

    println!("== power on with update=v2 (the app downloads v2 through semihosting)");
    let o = demo.run(&[img("v2"), halt.clone()])?;
    save_log(&demo.dir, "run1", &o);
    if verbose {
        print!("{}", o.output);
    }
    let lines = o.lines();
    let mut at = 0;
    story.step(
        "v1 boots, confirmed",
        find(&lines, &mut at, "twinbank: boot A 1.0.0+0 normal"),
    );
    story.step(
        "update to v2 (bank B)",
        find(&lines, &mut at, "app: installed 2.0.0+0 into bank B"),
    );
    story.step(
        "trial boot of v2",
        find(&lines, &mut at, "twinbank: boot B 2.0.0+0 trial"),
    );
    story.step(
        "v2 health check passes",
        find(&lines, &mut at, "app: health ok"),
    );
    story.step("v2 confirmed", find(&lines, &mut at, "app: confirmed"));
    story.exit(&o);

    println!("== power on with update=v3 (faulty: its health check fails)");
    let o = demo.run(&[img("v3"), halt.clone()])?;
    save_log(&demo.dir, "run2", &o);
    if verbose {
        print!("{}", o.output);
    }
    let lines = o.lines();
    let mut at = 0;
    story.step(
        "v2 boots, confirmed",
        find(&lines, &mut at, "twinbank: boot B 2.0.0+0 normal"),
    );
    story.step(
        "update to v3 (bank A)",
        find(&lines, &mut at, "app: installed 3.0.0+0 into bank A"),
    );
    story.step(
        "trial boot of v3",
        find(&lines, &mut at, "twinbank: boot A 3.0.0+0 trial"),
    );
    story.step(
        "v3 health check fails, v3 rejects itself",
        find(&lines, &mut at, "app: rejected"),
    );
    story.step(
        "automatic rollback to v2",
        find(
            &lines,
            &mut at,
            "twinbank: boot B 2.0.0+0 normal (bank A rejected)",
        ),
    );
    let again = find(&lines, &mut at, "app: v2.0.0+0 bank B")
        .and_then(|_| find(&lines, &mut at, "app: health ok"));
    story.step("v2 runs again", again);
    story.exit(&o);

    println!("== power on again (no update)");
    let o = demo.run(std::slice::from_ref(&halt))?;
    save_log(&demo.dir, "run3", &o);
    if verbose {
        print!("{}", o.output);
    }
    let lines = o.lines();
    let mut at = 0;
    story.step(
        "v2 keeps booting after a reset",
        find(&lines, &mut at, "twinbank: boot B 2.0.0+0 normal"),
    );
    story.exit(&o);

    println!(
        "== banks, read from {} through the device crate",
        demo.flash().display()
    );
    let ok_table = print_table(&demo)?;
    if !ok_table {
        story.failed += 1;
    }
    println!("UART logs: {}/run{{1,2,3}}.uart.log", demo.dir.display());
    if story.failed == 0 {
        println!("demo: all {} steps behaved", story.step);
        Ok(true)
    } else {
        println!("demo: {} check(s) FAILED", story.failed);
        Ok(false)
    }
}

/// Prints the bank table; true when it shows the expected end state (B: v2 confirmed and
/// preferred; A: v3 rejected).
fn print_table(demo: &Demo) -> Result<bool, String> {
    let flash = std::fs::read(demo.flash()).map_err(|e| e.to_string())?;
    let keys = [firmware::trusted_key(&demo.key)?];
    let report = firmware::inspect(&demo.board, &flash, &keys)?;
    let Some(state) = report.state else {
        println!("  no valid boot state record");
        return Ok(false);
    };
    println!(
        "  {:<5} {:<10} {:<22} {:<10} image check",
        "bank", "version", "status", "preferred"
    );
    for bank in Bank::ALL {
        let s = state.bank(bank);
        let version = s.image().map_or("-".to_string(), |i| i.version.to_string());
        let status = match s {
            BankState::Pending { attempts_left, .. } => format!("pending ({attempts_left} left)"),
            other => other.status_name().to_string(),
        };
        let check = match &report.images[bank.index()] {
            Ok(id) if id.security_counter < state.min_security_counter => format!(
                "intact, but counter {} < minimum: no longer bootable",
                id.security_counter
            ),
            Ok(id) if s.image().is_some_and(|i| i.digest == id.digest) => "verifies".to_string(),
            Ok(id) => format!("verifies, but holds {}", id.version),
            Err(e) => e.clone(),
        };
        println!(
            "  {:<5} {:<10} {:<22} {:<10} {check}",
            bank.to_string(),
            version,
            status,
            if state.preferred == bank { "yes" } else { "" }
        );
    }
    println!("  minimum security counter: {}", state.min_security_counter);
    let ok = state.preferred == Bank::B
        && matches!(state.bank(Bank::B), BankState::Confirmed(i) if i.version.major == 2)
        && matches!(state.bank(Bank::A), BankState::Rejected(i) if i.version.major == 3)
        && report.images[1].is_ok();
    Ok(ok)
}

/// `cargo xtask qemu [--flash FILE] [--update IMAGE]`: the demo device for a person.
pub fn qemu_cmd(args: &[String]) -> Result<(), String> {
    let mut flash = None;
    let mut update = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--flash" => flash = it.next().map(PathBuf::from),
            "--update" => update = it.next().cloned(),
            other => {
                return Err(format!(
                    "qemu: unknown argument {other}\nusage: cargo xtask qemu [--flash FILE] [--update IMAGE]"
                ))
            }
        }
    }
    match run_interactive(flash, update)? {
        0 => Ok(()),
        code => Err(format!("QEMU ended with status {code}")),
    }
}

fn run_interactive(flash: Option<PathBuf>, update: Option<String>) -> Result<i32, String> {
    check_tools()?;
    let demo = Demo::new()?;
    demo.prepare(false)?;
    let flash = flash.unwrap_or_else(|| demo.flash());
    let len = std::fs::metadata(&flash)
        .map_err(|e| format!("{}: {e}", flash.display()))?
        .len();
    if len != demo.board.flash.size as u64 {
        return Err(format!(
            "{}: {len} bytes, the board's flash is {} bytes",
            flash.display(),
            demo.board.flash.size
        ));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut run = Run::new(&demo.shim(), &flash, Duration::MAX);
    if let Some(u) = update {
        let abs = std::fs::canonicalize(&u).map_err(|e| format!("{u}: {e}"))?;
        run.args.push(format!("update={}", abs.display()));
    }
    let mut cmd = run.command(&format!(
        "tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"
    ));
    println!("flash: {}", flash.display());
    println!("serial: tcp:127.0.0.1:{port}");
    println!("  connect with `nc 127.0.0.1 {port}` (the board starts when you connect; typed text is echoed)");
    println!("  stop with Ctrl-C");
    let status = cmd.status().map_err(|e| format!("{}: {e}", qemu::QEMU))?;
    Ok(status.code().unwrap_or(1))
}

/// `cargo xtask firmware [--measure]`: builds the demo firmware; `--measure` also takes the
/// figures of BENCHMARKS.md ("## QEMU").
pub fn firmware_cmd(args: &[String]) -> Result<(), String> {
    let measure = args.iter().any(|a| a == "--measure");
    let demo = Demo::new()?;
    demo.prepare(false)?;
    firmware::build_all()?;
    println!("test firmware {}", firmware::test_build().out_dir.display());
    if measure {
        crate::demo::measure(&demo)?;
    }
    Ok(())
}

fn section_sizes(elf: &Path) -> Result<(u64, u64, u64), String> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(elf).map_err(|e| e.to_string())?;
    let file = object::File::parse(&*data).map_err(|e| e.to_string())?;
    let (mut text, mut data_s, mut bss) = (0, 0, 0);
    for s in file.sections() {
        match s.name().unwrap_or("") {
            ".vector_table" | ".text" | ".rodata" => text += s.size(),
            ".data" => data_s += s.size(),
            ".bss" | ".uninit" => bss += s.size(),
            _ => {}
        }
    }
    Ok((text, data_s, bss))
}

fn parse_kv(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
}

fn measure(demo: &Demo) -> Result<(), String> {
    demo.build.build(&[Variant::shim(true)])?;
    let (text, data, bss) = section_sizes(&demo.shim())?;
    let keys = [firmware::trusted_key(&demo.key)?];
    let work = demo.dir.join("measure");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let mut stack = 0;
    let mut rows = Vec::new();
    let mut updates = Vec::new();
    for size in [64 * 1024usize, 256 * 1024] {
        let sign = |elf: &str, bank, version, counter| {
            firmware::sign_elf(
                &demo.build.elf(elf),
                &Signing {
                    board: &demo.board,
                    bank,
                    version,
                    security_counter: counter,
                    key: &demo.key,
                    pad_to: Some(size),
                },
            )
        };
        let a = sign("app-v1-A", Bank::A, "1.0.0", 1)?;
        let b = sign("app-v2-B", Bank::B, "2.0.0", 2)?;
        let id = firmware::image_id(&demo.board, Bank::A, &a, &keys)?;
        for (kind, state) in [
            ("normal", twinbank::BootState::factory(Bank::A, id, None)),
            (
                "trial",
                twinbank::BootState {
                    preferred: Bank::A,
                    min_security_counter: 0,
                    banks: [
                        BankState::Pending {
                            image: id,
                            attempts_left: 3,
                        },
                        BankState::Empty,
                    ],
                },
            ),
        ] {
            let mut flash = firmware::blank_flash(&demo.board);
            firmware::place(&demo.board, &mut flash, Bank::A, &a)?;
            firmware::place_state(&demo.board, &mut flash, &state, 1)?;
            let path = work.join("flash.bin");
            qemu::write_flash(&path, &flash)?;
            let mut run = Run::new(
                &demo.build.elf("shim-bench"),
                &path,
                Duration::from_secs(120),
            );
            run.icount = true;
            run.args.push("halt".into());
            let o = run.run()?;
            let line = o
                .output
                .lines()
                .find(|l| l.starts_with("twinbank: bench"))
                .ok_or_else(|| format!("no bench line:\n{}{}", o.output, o.stderr))?
                .to_string();
            let n = parse_kv(&line, "instructions").unwrap_or(0);
            stack = stack.max(parse_kv(&line, "stack").unwrap_or(0));
            rows.push((a.len(), kind, n));
        }
        // One update: install + activate + trial + confirm, counted by the board's flash driver.
        let flash = firmware::factory_flash(&demo.board, &a, &keys)?;
        let path = work.join("flash.bin");
        qemu::write_flash(&path, &flash)?;
        let img = work.join("update.img");
        std::fs::write(&img, &b).map_err(|e| e.to_string())?;
        let mut run = Run::new(&demo.shim(), &path, Duration::from_secs(120));
        run.args = vec![format!("update={}", img.display()), "halt".into()];
        let o = run.run()?;
        let line = o
            .output
            .lines()
            .rfind(|l| l.starts_with("app: flash stats"))
            .ok_or_else(|| format!("no stats line:\n{}", o.output))?
            .to_string();
        updates.push((
            b.len(),
            parse_kv(&line, "ops").unwrap_or(0),
            parse_kv(&line, "erases").unwrap_or(0),
            parse_kv(&line, "writes").unwrap_or(0),
            parse_kv(&line, "bytes").unwrap_or(0),
        ));
    }
    println!(
        "\nShim (release profile `firmware`: opt s, LTO), {}:",
        demo.shim().display()
    );
    println!(
        "| flash (text + rodata + vectors) | RAM static (data + bss) | peak stack | RAM total |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {text} B ({:.1} KiB) | {} B | {stack} B | {} B |",
        text as f64 / 1024.0,
        data + bss,
        data + bss + stack
    );
    println!("\nInstructions from reset to the jump into the app (-icount shift=0; SysTick, ±40):");
    println!("| image size | boot | instructions |");
    println!("|---|---|---|");
    for (size, kind, n) in &rows {
        println!("| {size} B | {kind} | {n} |");
    }
    println!("\nFlash work per update (install + activate + trial + confirm):");
    println!("| image size | flash ops | sector erases | write calls | bytes programmed | programmed / image |");
    println!("|---|---|---|---|---|---|");
    for (size, ops, erases, writes, bytes) in &updates {
        println!(
            "| {size} B | {ops} | {erases} | {writes} | {bytes} | {:.3} |",
            *bytes as f64 / *size as f64
        );
    }
    Ok(())
}
