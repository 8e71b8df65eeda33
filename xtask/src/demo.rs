//! `cargo xtask demo`, `cargo xtask qemu` and `cargo xtask firmware`: the QEMU demo device.
//!
//! `demo` checks the tools (installs the thumbv7m target with rustup; qemu-system-arm with
//! apt-get when run as root, otherwise says how), builds the shim, the demo apps and the host
//! tool, makes a signing key, signs v1 (bank A, counter 1), v2 (bank B, counter 1: v1 stays a
//! fallback the operator can roll back to) and a faulty v3 (bank A, counter 3),
//! provisions a flash file with v1, and runs the update story under QEMU the operator's way:
//! `twinbank serial upload … --activate --reboot --wait-confirm` over the device's UART (relayed
//! to a TCP port). It narrates the story one line per step and ends with a table of the banks
//! read from the flash file through the device crate. Exit status 1 when a step did not behave.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use twinbank::board::BoardDescription;
use twinbank::{Bank, BankState};
use xtask::firmware::{self, Build, FlashImage, Signing, Variant};
use xtask::qemu::{self, Board, Outcome, Run};

/// Timeout of one QEMU run of the story.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    xtask::tools::root()
}

/// Files of the demo device.
struct Demo {
    /// The QEMU board.
    qemu: &'static Board,
    board: BoardDescription,
    dir: PathBuf,
    key: PathBuf,
    build: Build,
}

impl Demo {
    /// The demo device on `qemu`: in `target/demo/` on the default board, in
    /// `target/demo-<board>/` on another.
    fn new(qemu: &'static Board) -> Result<Demo, String> {
        let ws = workspace();
        let board = qemu.load()?;
        let dir = if qemu.is_default() {
            ws.join("target/demo")
        } else {
            ws.join(format!("target/demo-{}", qemu.name))
        };
        let key = dir.join("keys/demo-signing.pem");
        Ok(Demo {
            board,
            // Its own cargo target directory: the demo never overwrites firmware a user built
            // at the paths the README names (target/thumbv7m-none-eabi/firmware/).
            build: Build {
                board: qemu,
                workspace: ws.clone(),
                target_dir: dir.join("cargo"),
                out_dir: dir.join("firmware"),
                trusted_keys: vec![key.clone()],
                verbose: true,
            },
            qemu,
            dir,
            key,
        })
    }

    /// A QEMU run of `shim` on `flash` on this demo's board.
    fn new_run(&self, shim: &Path, flash: &Path, timeout: Duration) -> Run {
        let mut r = Run::new(shim, flash, timeout);
        r.board = self.qemu;
        r
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
            ("v2", "app-v2-B", Bank::B, "2.0.0", 1),
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
        let mut r = self.new_run(&self.shim(), &self.flash(), RUN_TIMEOUT);
        r.args = args.to_vec();
        r.run()
    }
}

fn check_tools(board: &Board) -> Result<(), String> {
    xtask::tools::ensure_target(board.target)?;
    xtask::tools::ensure_qemu()
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

/// `cargo xtask demo [--board NAME]`.
pub fn demo(verbose: bool, board: &'static Board) -> Result<(), String> {
    match run_demo(verbose, board)? {
        true => Ok(()),
        false => Err("demo: a step did not behave (see above)".into()),
    }
}

/// Builds the host tool (`twinbank`) the demo drives the device with; returns its path.
fn host_tool() -> Result<PathBuf, String> {
    let ws = workspace();
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&ws)
        .args([
            "build",
            "--quiet",
            "-p",
            "twinbank-host",
            "--bin",
            "twinbank",
        ])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err("building the host tool (twinbank) failed".into());
    }
    Ok(ws
        .join("target/debug")
        .join(format!("twinbank{}", std::env::consts::EXE_SUFFIX)))
}

/// One `twinbank serial --tcp ADDR …` run: (success, stdout, stderr).
fn serial(tool: &Path, addr: &str, args: &[&str]) -> Result<(bool, String, String), String> {
    let out = Command::new(tool)
        .args(["serial", "--tcp", addr])
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The line of `text` that contains `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    text.lines().find(|l| l.contains(needle))
}

/// Prints the host tool's messages (progress lines shortened to the last one).
fn show_tool(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    let last_progress = lines.iter().rposition(|l| l.contains("% ("));
    for (i, l) in lines.iter().enumerate() {
        if l.contains("% (") && Some(i) != last_progress {
            continue;
        }
        println!("      | {l}");
    }
}

/// The running demo device and the host tool that talks to it.
struct Live {
    running: qemu::Running,
    addr: String,
    tool: PathBuf,
    _relay: qemu::TcpRelay,
}

impl Live {
    /// The device's text since byte `mark` of its UART log.
    fn text_since(&self, mark: usize) -> String {
        qemu::device_text(self.running.output_bytes().get(mark..).unwrap_or(&[]))
    }

    /// `twinbank serial upload IMAGE --activate --reboot --wait-confirm`; returns the UART mark
    /// before it, whether the tool succeeded, and its messages.
    fn upload(&mut self, image: &Path) -> Result<(usize, bool, String), String> {
        let image = image.display().to_string();
        println!(
            "== twinbank serial --tcp {} upload {image} --activate --reboot --wait-confirm",
            self.addr
        );
        let mark = self.running.output_bytes().len();
        let (ok, _, err) = serial(
            &self.tool,
            &self.addr,
            &["upload", &image, "--activate", "--reboot", "--wait-confirm"],
        )?;
        show_tool(&err);
        Ok((mark, ok, err))
    }
}

/// Power on: v1 boots confirmed and serves the protocol on its UART (relayed to a TCP port).
fn power_on(demo: &Demo, story: &mut Story, tool: PathBuf) -> Result<Live, String> {
    println!("== power on: v1 serves the serial protocol on its UART (relayed to a TCP port)");
    let mut run = demo.new_run(&demo.shim(), &demo.flash(), RUN_TIMEOUT);
    run.die_with_parent = true;
    let mut running = run.spawn()?;
    running.kill_after(RUN_TIMEOUT);
    let relay = running.serve_tcp()?;
    running.wait_for_text("app: serving the serial protocol", Duration::from_secs(20));
    let t = running.text();
    story.step(
        "v1 boots, confirmed",
        line_with(&t, "twinbank: boot A 1.0.0+0 normal"),
    );
    story.step(
        "v1 serves the serial protocol",
        line_with(&t, "app: serving the serial protocol"),
    );
    Ok(Live {
        running,
        addr: relay.addr(),
        tool,
        _relay: relay,
    })
}

/// v2 over the UART into bank B: trial boot, health check, confirm.
fn update_confirms(demo: &Demo, live: &mut Live, story: &mut Story) -> Result<(), String> {
    let (mark, ok, err) = live.upload(&demo.image("v2"))?;
    story.step(
        "upload v2 over the UART, activate (bank B)",
        line_with(&err, "verified and activated 2.0.0+0 in bank B").filter(|_| ok),
    );
    live.running
        .wait_for_text("app: confirmed", Duration::from_secs(20));
    let t = live.text_since(mark);
    let lines: Vec<&str> = t.lines().collect();
    let mut at = 0;
    story.step(
        "reboot: trial boot of v2",
        find(&lines, &mut at, "twinbank: boot B 2.0.0+0 trial"),
    );
    story.step(
        "v2 health check passes",
        find(&lines, &mut at, "app: health ok"),
    );
    story.step("v2 confirmed", find(&lines, &mut at, "app: confirmed"));
    story.step(
        "the host tool sees the confirm",
        line_with(&err, "bank B confirmed 2.0.0+0").filter(|_| ok),
    );
    Ok(())
}

/// v3 (its health check fails) into bank A: trial, reject, automatic rollback to v2.
fn update_rolls_back(demo: &Demo, live: &mut Live, story: &mut Story) -> Result<(), String> {
    println!("   (v3 is faulty: its health check fails)");
    let (mark, ok, err) = live.upload(&demo.image("v3"))?;
    story.step(
        "upload v3 over the UART, activate (bank A)",
        line_with(&err, "verified and activated 3.0.0+0 in bank A"),
    );
    let t = live.text_since(mark);
    let lines: Vec<&str> = t.lines().collect();
    let mut at = 0;
    story.step(
        "reboot: trial boot of v3",
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
    story.step(
        "the host tool reports the rollback (exit 1)",
        line_with(&err, "rolled back to bank B").filter(|_| !ok),
    );
    Ok(())
}

/// `twinbank serial status`, then power off.
fn status_and_power_off(
    demo: &Demo,
    live: Live,
    story: &mut Story,
    verbose: bool,
) -> Result<(), String> {
    println!("== twinbank serial --tcp {} status", live.addr);
    let (ok, out, err) = serial(&live.tool, &live.addr, &["status"])?;
    for l in out.lines().chain(err.lines()) {
        println!("      | {l}");
    }
    story.step(
        "status: v2 confirmed and preferred",
        line_with(&out, "B*    yes      confirmed   2.0.0+0").filter(|_| ok),
    );
    let o = live.running.kill9();
    let _ = std::fs::write(demo.dir.join("run1.uart.log"), qemu::device_text(&o.raw));
    if verbose {
        print!("{}", qemu::device_text(&o.raw));
    }
    Ok(())
}

/// Power on again: v2 keeps booting.
fn power_cycle(demo: &Demo, story: &mut Story, verbose: bool) -> Result<(), String> {
    println!("== power off, power on again");
    let o = demo.run(&["halt".to_string()])?;
    save_log(&demo.dir, "run2", &o);
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
    Ok(())
}

fn run_demo(verbose: bool, qemu: &'static Board) -> Result<bool, String> {
    check_tools(qemu)?;
    let demo = Demo::new(qemu)?;
    println!(
        "== twinbank demo: A/B updates on an emulated {} (QEMU -machine {}, -cpu {}, {})",
        demo.board.board.name, qemu.machine, qemu.cpu, qemu.target
    );
    println!(
        "board    {}: flash at {:#x}, {} B writes, {} B sectors",
        qemu.description,
        demo.board.flash.base,
        demo.board.flash.write_size,
        (demo.board.flash.erase_size).map_or_else(|| "mapped".to_string(), |e| e.to_string())
    );
    demo.prepare(true)?;
    let tool = host_tool()?;
    println!("host     {}", tool.display());
    let mut story = Story { step: 0, failed: 0 };
    let mut live = power_on(&demo, &mut story, tool)?;
    update_confirms(&demo, &mut live, &mut story)?;
    update_rolls_back(&demo, &mut live, &mut story)?;
    status_and_power_off(&demo, live, &mut story, verbose)?;
    power_cycle(&demo, &mut story, verbose)?;
    println!(
        "== banks, read from {} through the device crate",
        demo.flash().display()
    );
    if !print_table(&demo)? {
        story.failed += 1;
    }
    println!("UART logs: {}/run{{1,2}}.uart.log", demo.dir.display());
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

/// `cargo xtask qemu [--flash FILE] [--shim ELF] [--tcp]`: a device for a person, its UART on a
/// pseudo-terminal (`serial: /dev/pts/N`) for `twinbank serial --port`, or with `--tcp` on a
/// local TCP port (`serial: tcp:127.0.0.1:N`) for `twinbank serial --tcp`. QEMU ends with this
/// process, however it ends (Ctrl-C, SIGTERM, even SIGKILL).
pub fn qemu_cmd(
    flash: Option<PathBuf>,
    shim: Option<PathBuf>,
    tcp: bool,
    board: &'static Board,
) -> Result<(), String> {
    xtask::tools::ensure_qemu()?;
    let demo = Demo::new(board)?;
    let (flash, shim, is_demo) = match (flash, shim) {
        (Some(flash), Some(shim)) => (flash, shim, false),
        (None, Some(_)) => {
            return Err(
                "qemu: --shim needs --flash FILE (a flash provisioned for that shim's keys)".into(),
            )
        }
        (flash, None) => {
            xtask::tools::ensure_target(board.target)?;
            // Without --flash: the demo device, freshly provisioned (v1 in bank A).
            demo.prepare(flash.is_none())?;
            (flash.unwrap_or_else(|| demo.flash()), demo.shim(), true)
        }
    };
    let len = std::fs::metadata(&flash)
        .map_err(|e| format!("{}: {e}", flash.display()))?
        .len();
    if len != demo.board.flash.size as u64 {
        return Err(format!(
            "{}: {len} bytes, the board's flash is {} bytes (give the whole-flash file of \
             `twinbank provision -o`)",
            flash.display(),
            demo.board.flash.size
        ));
    }
    std::fs::metadata(&shim).map_err(|e| format!("{}: {e}", shim.display()))?;
    let mut run = demo.new_run(&shim, &flash, Duration::MAX);
    run.die_with_parent = true;
    let running = run.spawn()?;
    println!("flash: {}", flash.display());
    // The relay lives as long as QEMU (the pty relay also shows the device's text lines here).
    let (_pty, _tcp);
    if tcp {
        let relay = running.serve_tcp()?;
        println!("serial: tcp:{}", relay.addr());
        println!("  e.g. twinbank serial --tcp {} status", relay.addr());
        _tcp = relay;
    } else {
        let pty = running.serve_pty(|line| println!("device| {line}"))?;
        println!("serial: {}", pty.path);
        println!("  e.g. twinbank serial --port {} status", pty.path);
        _pty = pty;
    }
    if is_demo {
        println!(
            "  signed images to upload: {} (v2 for bank B), {}",
            demo.image("v2").display(),
            demo.image("v3").display()
        );
    }
    println!("  the device's text lines are shown here as `device| …`; stop with Ctrl-C");
    let o = running.wait();
    match o.status.unwrap_or(1) {
        0 => Ok(()),
        code => Err(format!("QEMU ended with status {code}")),
    }
}

/// What `cargo xtask firmware --measure` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Measure {
    /// Everything below.
    All,
    /// The shim: size per crate, boot instructions (64 KiB and 256 KiB, normal and trial), cost
    /// per image byte and fixed cost against the board's budget, peak stack.
    Boot,
    /// The flash work of one update and the serial upload.
    Update,
}

/// Boot cost budget of the demo board (issue 12): instructions per image byte…
const BOOT_BUDGET_PER_BYTE: f64 = 55.0;
/// …and instructions independent of the image size.
const BOOT_BUDGET_FIXED: f64 = 2_000_000.0;

/// `cargo xtask firmware [--measure [WHAT]]`: builds the demo firmware; `--measure` also takes
/// the figures of BENCHMARKS.md ("## QEMU").
pub fn firmware_cmd(measure: Option<Measure>, board: &'static Board) -> Result<(), String> {
    xtask::tools::ensure_target(board.target)?;
    let demo = Demo::new(board)?;
    println!(
        "board    {} ({}, -cpu {}, {})",
        board.name, board.description, board.cpu, board.target
    );
    demo.prepare(false)?;
    if measure != Some(Measure::Boot) {
        firmware::build_all_for(board)?;
        println!(
            "test firmware {}",
            firmware::test_build_for(board).out_dir.display()
        );
    }
    match measure {
        None => Ok(()),
        Some(Measure::Boot) => measure_boot(&demo),
        Some(Measure::Update) => measure_update(&demo),
        Some(Measure::All) => {
            measure_boot(&demo)?;
            measure_update(&demo)
        }
    }
}

fn parse_kv(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
}

type SerialRow = (usize, u64, f64, f64, f64);

/// v1 (bank A, counter 1) and v2 (bank B, counter 2), their payloads padded to `size` bytes.
fn padded_pair(demo: &Demo, size: usize) -> Result<(Vec<u8>, Vec<u8>), String> {
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
    Ok((
        sign("app-v1-A", Bank::A, "1.0.0", 1)?,
        sign("app-v2-B", Bank::B, "2.0.0", 2)?,
    ))
}

/// Uploads v2 padded to 64 KiB and 256 KiB over the UART of a served QEMU device with the host
/// tool; returns its figures and the app's RAM line.
fn measure_serial(
    demo: &Demo,
    keys: &[twinbank::TrustedKey],
    work: &Path,
) -> Result<(Vec<SerialRow>, String), String> {
    let tool = host_tool()?;
    let mut rows = Vec::new();
    let mut ram = String::new();
    for size in [64 * 1024usize, 256 * 1024] {
        let (a, b) = padded_pair(demo, size)?;
        let path = work.join("flash.bin");
        qemu::write_flash(&path, &firmware::factory_flash(&demo.board, &a, keys)?)?;
        let img = work.join("serial.img");
        std::fs::write(&img, &b).map_err(|e| e.to_string())?;
        let mut running = demo
            .new_run(&demo.shim(), &path, Duration::from_secs(120))
            .spawn()?;
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
        let (ok, out, err) = serial(
            &tool,
            &relay.addr(),
            &["upload", &img.display().to_string(), "--json"],
        )?;
        let _ = running.kill9();
        if !ok {
            return Err(format!("serial upload failed: {err}"));
        }
        let j = |k: &str| {
            out.split(&format!("\"{k}\":"))
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        rows.push((
            b.len(),
            j("wire_bytes") as u64,
            j("payload_ratio"),
            j("seconds"),
            j("kib_per_s"),
        ));
    }
    Ok((rows, ram))
}

/// One boot of the measuring shim: its bench line's figures.
#[derive(Debug, Clone, Copy)]
struct BootRun {
    image_len: usize,
    kind: &'static str,
    instructions: u64,
    stack: u64,
    flash_ops: u64,
}

/// Boots the measuring shim (`shim-bench`) on a flash holding `image` in bank A with `state`.
fn bench_boot(
    demo: &Demo,
    work: &Path,
    image: &[u8],
    kind: &'static str,
    state: &twinbank::BootState,
) -> Result<BootRun, String> {
    let layout = demo.board.layout().map_err(|e| e.to_string())?;
    let mut flash = FlashImage::blank(layout, demo.board.flash.size);
    flash
        .place_in_bank(Bank::A, image)
        .map_err(|e| e.to_string())?;
    flash.place_state(state).map_err(|e| e.to_string())?;
    let path = work.join("flash.bin");
    qemu::write_flash(&path, flash.bytes())?;
    let mut run = demo.new_run(
        &demo.build.elf("shim-bench"),
        &path,
        Duration::from_secs(120),
    );
    run.icount = true;
    let o = run.run()?;
    let line = o
        .output
        .lines()
        .find(|l| l.starts_with("twinbank: bench"))
        .ok_or_else(|| format!("no bench line:\n{}{}", o.output, o.stderr))?
        .to_string();
    let get = |k: &str| parse_kv(&line, k).ok_or_else(|| format!("no {k} in: {line}"));
    Ok(BootRun {
        image_len: image.len(),
        kind,
        instructions: get("instructions")?,
        stack: get("stack")?,
        flash_ops: get("flash_ops")?,
    })
}

/// The shim's size per crate, boot instructions for 64 KiB and 256 KiB payloads (normal and
/// trial), the cost per image byte and the fixed cost (checked against the board's budget), the
/// peak stack, and the flash operations of each boot (a normal boot performs none).
fn measure_boot(demo: &Demo) -> Result<(), String> {
    demo.build
        .build(&[Variant::shim(true), Variant::shim_production()])?;
    // The size a board ships: the production shim (no QEMU test hooks). The instructions are
    // counted by the bench build (the same boot path, with the hooks and a counter).
    let production = demo.build.elf("shim-production");
    let sizes = crate::size::measure(&production)?;
    let keys = [firmware::trusted_key(&demo.key)?];
    let work = demo.dir.join("measure");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for size in [64 * 1024usize, 256 * 1024] {
        // Payloads of exactly 64 KiB and 256 KiB: the app padded, or cut where it is larger (the
        // measuring shim stops after its report, so the app does not have to run).
        let a = firmware::sign_elf_exactly(
            &demo.build.elf("app-v1-A"),
            &Signing {
                board: &demo.board,
                bank: Bank::A,
                version: "1.0.0",
                security_counter: 1,
                key: &demo.key,
                pad_to: None,
            },
            size,
        )?;
        let id = firmware::image_id(&demo.board, Bank::A, &a, &keys)?;
        let normal = twinbank::BootState::factory(Bank::A, id, None);
        let trial = twinbank::BootState {
            preferred: Bank::A,
            min_security_counter: 0,
            banks: [
                BankState::Pending {
                    image: id,
                    attempts_left: 3,
                },
                BankState::Empty,
            ],
        };
        rows.push(bench_boot(demo, &work, &a, "normal", &normal)?);
        rows.push(bench_boot(demo, &work, &a, "trial", &trial)?);
    }
    let stack = rows.iter().map(|r| r.stack).max().unwrap_or(0);
    println!(
        "\nShim (release profile `firmware`, LTO; the shim's own code at opt \"z\"; production \
         build, without the QEMU test hooks), {}:",
        production.display()
    );
    println!(
        "| flash (vectors + text + rodata) | RAM static (data + bss) | peak stack | RAM total |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {} B ({:.1} KiB) | {} B | {stack} B | {} B |",
        sizes.flash,
        sizes.flash as f64 / 1024.0,
        sizes.ram,
        sizes.ram + stack
    );
    crate::size::print("shim-production", &sizes, None);
    println!("\nInstructions from reset to the jump into the app (-icount shift=0; SysTick, ±40):");
    println!("| image size | boot | instructions | flash operations |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} B | {} | {} | {} |",
            r.image_len, r.kind, r.instructions, r.flash_ops
        );
    }
    let normal: Vec<&BootRun> = rows.iter().filter(|r| r.kind == "normal").collect();
    let (small, large) = (normal[0], normal[1]);
    let per_byte = (large.instructions - small.instructions) as f64
        / (large.image_len - small.image_len) as f64;
    let fixed = small.instructions as f64 - per_byte * small.image_len as f64;
    println!(
        "\nNormal boot: {per_byte:.2} instructions per image byte + {:.0} fixed (budget: \
         {BOOT_BUDGET_PER_BYTE} per byte + {BOOT_BUDGET_FIXED:.0} fixed)",
        fixed
    );
    let mut problems = Vec::new();
    // The budget is the demo board's (issue 12, the MPS2-AN385); another board's figures are
    // reported for comparison.
    if !demo.qemu.is_default() {
        println!(
            "(the budget is the {}'s; on {} the figures are reported, not checked)",
            Board::default_board().name,
            demo.qemu.name
        );
    } else if per_byte > BOOT_BUDGET_PER_BYTE || fixed > BOOT_BUDGET_FIXED {
        problems.push("the boot cost exceeds the budget".to_string());
    }
    for r in &rows {
        let expected = if r.kind == "normal" { 0 } else { 1 };
        if r.flash_ops != expected {
            problems.push(format!(
                "a {} boot of {} B performed {} flash operations (expected {expected})",
                r.kind, r.image_len, r.flash_ops
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The flash work of one update (install + activate + trial + confirm) and the serial upload.
fn measure_update(demo: &Demo) -> Result<(), String> {
    let keys = [firmware::trusted_key(&demo.key)?];
    let work = demo.dir.join("measure");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let mut updates = Vec::new();
    for size in [64 * 1024usize, 256 * 1024] {
        let (a, b) = padded_pair(demo, size)?;
        // One update: install + activate + trial + confirm, counted by the board's flash driver.
        let flash = firmware::factory_flash(&demo.board, &a, &keys)?;
        let path = work.join("flash.bin");
        qemu::write_flash(&path, &flash)?;
        let img = work.join("update.img");
        std::fs::write(&img, &b).map_err(|e| e.to_string())?;
        let mut run = demo.new_run(&demo.shim(), &path, Duration::from_secs(120));
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
    let serial_rows = measure_serial(demo, &keys, &work)?;
    println!("\nSerial upload over the UART (`twinbank serial --tcp … upload --json`, no resume):");
    println!("| image | bytes on the wire (host → device) | payload / wire | seconds | KiB/s |");
    println!("|---|---|---|---|---|");
    for (size, wire, ratio, secs, kib) in &serial_rows.0 {
        println!("| {size} B | {wire} | {ratio:.4} | {secs:.2} | {kib:.1} |");
    }
    println!(
        "\nProtocol RAM in the demo app (statics; the app prints them when it starts serving):"
    );
    println!("{}", serial_rows.1);
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
