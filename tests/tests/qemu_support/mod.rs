//! Shared helpers of the QEMU end-to-end tests (`tests/tests/qemu_*.rs`).
//!
//! The firmware is built once per test binary into `target/qemu-tests/` (its own cargo target
//! directory, so the `cargo test` that runs us does not block it; a stamp skips up-to-date
//! variants), with its own trusted key. Every test gets its own directory and flash file under
//! `target/qemu-tests/runs/<test>/`, and every QEMU run has a timeout.
//!
//! The QEMU board is the one `TWINBANK_QEMU_BOARD` names (`xtask::qemu::BOARD_ENV`; unset: the
//! MPS2-AN385): `cargo xtask test` runs the core suite a second time on the MPS2-AN500. Every
//! test prints its board; the runs of a board other than the default are kept in
//! `target/qemu-tests/runs-<board>/<test>/`.
#![allow(dead_code)]

pub use xtask::{firmware, qemu};

use firmware::{Build, Signing};
use qemu::{Board, Outcome, Run, Running, TcpRelay};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use twinbank::board::BoardDescription;
use twinbank::{Bank, BankState, BootState, ImageId, TrustedKey};

/// Default timeout of one QEMU run.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The built firmware and the keys.
pub struct Fw {
    /// The QEMU board the tests run on.
    pub qemu: &'static Board,
    pub board: BoardDescription,
    pub build: Build,
    pub trusted: PathBuf,
    pub untrusted: PathBuf,
    pub keys: Vec<TrustedKey>,
}

static FW: OnceLock<Result<Fw, String>> = OnceLock::new();

/// The firmware of the QEMU tests (built on first use).
pub fn fw() -> &'static Fw {
    let r = FW.get_or_init(|| {
        if !qemu::available() {
            return Err(
                "qemu-system-arm is not installed: `apt-get install -y qemu-system-arm` \
                        (or run `cargo xtask test`, which checks the prerequisites)"
                    .into(),
            );
        }
        let qemu = Board::from_env()?;
        let build = firmware::test_build_for(qemu);
        let (trusted, untrusted) = firmware::test_keys(&build)?;
        build.build(&firmware::test_variants_for(qemu))?;
        let board = qemu.load()?;
        let keys = vec![firmware::trusted_key(&trusted)?];
        Ok(Fw {
            qemu,
            board,
            build,
            trusted,
            untrusted,
            keys,
        })
    });
    match r {
        Ok(f) => f,
        Err(e) => panic!("QEMU test firmware: {e}"),
    }
}

impl Fw {
    /// A QEMU run of `shim` on `flash` on the tests' board.
    pub fn run(&self, shim: &Path, flash: &Path, timeout: Duration) -> Run {
        let mut r = Run::new(shim, flash, timeout);
        r.board = self.qemu;
        r
    }

    /// The tests' board description file (for the host tool's `--board`).
    pub fn description(&self) -> PathBuf {
        self.qemu.description_path()
    }
    /// A signed image of app variant `elf` (see `firmware::test_variants`).
    pub fn image_with(
        &self,
        elf: &str,
        bank: Bank,
        version: &str,
        counter: u32,
        key: &Path,
    ) -> Vec<u8> {
        firmware::sign_elf(
            &self.build.elf(elf),
            &Signing {
                board: &self.board,
                bank,
                version,
                security_counter: counter,
                key,
                pad_to: None,
            },
        )
        .unwrap()
    }

    /// v1 (bank A, counter 1), signed with the trusted key.
    pub fn v1(&self) -> Vec<u8> {
        self.image_with("app-v1-A", Bank::A, "1.0.0", 1, &self.trusted)
    }

    /// v2 (bank B, counter 2), signed with the trusted key.
    pub fn v2(&self) -> Vec<u8> {
        self.image_with("app-v2-B", Bank::B, "2.0.0", 2, &self.trusted)
    }

    /// A signed image of `elf` whose payload is padded with 0xFF to `pad_to` bytes (uploads
    /// that take long enough to be interrupted).
    pub fn padded(
        &self,
        elf: &str,
        bank: Bank,
        version: &str,
        counter: u32,
        pad_to: usize,
    ) -> Vec<u8> {
        firmware::sign_elf(
            &self.build.elf(elf),
            &Signing {
                board: &self.board,
                bank,
                version,
                security_counter: counter,
                key: &self.trusted,
                pad_to: Some(pad_to),
            },
        )
        .unwrap()
    }

    /// A faulty v3 for bank B (counter 3): `variant` is fail-health, crash or hang.
    pub fn v3(&self, variant: &str) -> Vec<u8> {
        self.image_with(
            &format!("app-v3-B-{variant}"),
            Bank::B,
            "3.0.0",
            3,
            &self.trusted,
        )
    }

    /// The identity of an image for `bank`, verified with `keys`.
    pub fn id(&self, bank: Bank, image: &[u8], keys: &[TrustedKey]) -> ImageId {
        firmware::image_id(&self.board, bank, image, keys).unwrap()
    }

    pub fn shim(&self) -> PathBuf {
        self.build.elf("shim")
    }

    /// The production shim: no QEMU test hooks (no power-cut injection, NOR rule checks or
    /// flash-operation counters), the build `cargo xtask size` holds to the budget.
    pub fn production_shim(&self) -> PathBuf {
        self.build.elf("shim-production")
    }

    /// The shim with serial recovery and SMP (feature `recovery-smp`).
    pub fn recovery_shim(&self) -> PathBuf {
        self.build.elf("shim-recovery-smp")
    }
}

/// One test's device: a directory with its flash file and images.
pub struct Device {
    pub dir: PathBuf,
    pub flash: PathBuf,
}

impl Device {
    /// A fresh directory for test `name` with a flash file holding `contents`.
    pub fn new(name: &str, contents: &[u8]) -> Device {
        let qemu = fw().qemu;
        // Which board this test runs on (shown with --nocapture, and with a failure's output).
        eprintln!(
            "QEMU board: {} (-machine {} -cpu {}, {}), test device {name}",
            qemu.name, qemu.machine, qemu.cpu, qemu.description
        );
        let runs = if qemu.is_default() {
            "target/qemu-tests/runs".to_string()
        } else {
            format!("target/qemu-tests/runs-{}", qemu.name)
        };
        let dir = firmware::workspace_root().join(runs).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let flash = dir.join("flash.bin");
        qemu::write_flash(&flash, contents).unwrap();
        Device { dir, flash }
    }

    /// A factory-provisioned device: v1 in bank A, confirmed.
    pub fn factory(name: &str) -> Device {
        let f = fw();
        Device::new(
            name,
            &firmware::factory_flash(&f.board, &f.v1(), &f.keys).unwrap(),
        )
    }

    /// Saves an image next to the flash file; returns the `update=PATH` argument.
    pub fn update_arg(&self, name: &str, image: &[u8]) -> String {
        let p = self.dir.join(format!("{name}.img"));
        std::fs::write(&p, image).unwrap();
        format!("update={}", p.display())
    }

    /// Runs QEMU with `args` (a timeout, and the UART log appended to `uart.log`).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, TIMEOUT)
    }

    pub fn run_with(&self, args: &[&str], timeout: Duration) -> Outcome {
        self.run_shim(&fw().shim(), args, timeout)
    }

    /// As [`Device::run_with`] with the shim ELF `shim`.
    pub fn run_shim(&self, shim: &Path, args: &[&str], timeout: Duration) -> Outcome {
        let mut r = fw().run(shim, &self.flash, timeout);
        r.args = args.iter().map(|s| s.to_string()).collect();
        let o = r.run().unwrap();
        self.log(args, &o);
        o
    }

    pub fn log(&self, args: &[&str], o: &Outcome) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("uart.log"))
            .unwrap();
        let _ = writeln!(
            f,
            "=== run {args:?} -> status {:?} timed_out {}",
            o.status, o.timed_out
        );
        let _ = f.write_all(o.output.as_bytes());
    }

    /// Starts QEMU with `args` (no `halt`: the app serves the serial protocol) and relays its
    /// UART to a TCP port for `twinbank serial --tcp`. QEMU is killed after [`TIMEOUT`], or when
    /// the returned [`Served`] is dropped (its UART log is then appended to `uart.log`).
    pub fn serve(&self, args: &[&str]) -> Served {
        self.serve_with(&fw().shim(), args, "app: serving the serial protocol")
    }

    /// As [`Device::serve`] with the shim ELF `shim`, ready once the device printed `ready`
    /// (e.g. the recovery shim's `twinbank: recovery`).
    pub fn serve_with(&self, shim: &Path, args: &[&str], ready: &str) -> Served {
        let mut r = fw().run(shim, &self.flash, TIMEOUT);
        r.args = args.iter().map(|s| s.to_string()).collect();
        let running = r.spawn().unwrap();
        running.kill_after(TIMEOUT);
        let relay = running.serve_tcp().unwrap();
        let mut s = Served {
            running: Some(running),
            relay,
            dir: self.dir.clone(),
            args: r.args,
        };
        assert!(
            s.wait_for(ready),
            "the device does not print {ready:?}:\n{}",
            s.text()
        );
        s
    }

    /// The flash contents.
    pub fn read(&self) -> Vec<u8> {
        std::fs::read(&self.flash).unwrap()
    }

    /// State and per-bank verification, read through the device crate.
    pub fn report(&self) -> firmware::FlashReport {
        let f = fw();
        firmware::inspect(&f.board, &self.read(), &f.keys).unwrap()
    }

    /// The current boot state (panics when there is none).
    pub fn state(&self) -> BootState {
        self.report().state.expect("a valid boot state")
    }

    /// Appends a state record after the first one (slot 1 of the state region, sequence 2):
    /// what the device would write; for tests that stage a state.
    pub fn push_state(&self, state: &BootState) {
        let f = fw();
        let layout = f.board.layout().unwrap();
        let mut flash = self.read();
        let o = layout.state().offset.0 as usize + twinbank::state::RECORD_SIZE;
        assert!(flash[o..o + twinbank::state::RECORD_SIZE]
            .iter()
            .all(|&b| b == 0xFF));
        let rec = twinbank::state::record::encode(state, 2);
        flash[o..o + rec.len()].copy_from_slice(&rec);
        qemu::write_flash(&self.flash, &flash).unwrap();
    }

    /// Puts `image` into `bank` (the bank's first sectors are overwritten as a programmer would).
    pub fn place(&self, bank: Bank, image: &[u8]) {
        let f = fw();
        let mut flash = firmware::FlashImage::from_bytes(f.board.layout().unwrap(), self.read());
        flash.place_in_bank(bank, image).unwrap();
        qemu::write_flash(&self.flash, flash.bytes()).unwrap();
    }
}

/// Asserts that `needles` appear in the UART output in this order (each on its own line).
#[track_caller]
pub fn expect_in_order(o: &Outcome, needles: &[&str]) {
    let lines = o.lines();
    let mut at = 0;
    for n in needles {
        match lines[at..].iter().position(|l| l.contains(n)) {
            Some(i) => at += i + 1,
            None => panic!(
                "expected {n:?} (in order {needles:?}) in the UART output:\n{}\nstderr: {}",
                o.output, o.stderr
            ),
        }
    }
}

/// Asserts a clean end of the run (the app's `halt`).
#[track_caller]
pub fn expect_exit_ok(o: &Outcome) {
    assert_eq!(
        o.status,
        Some(0),
        "QEMU status (timed out: {}); output:\n{}\nstderr: {}",
        o.timed_out,
        o.output,
        o.stderr
    );
}

/// The confirmed image of `bank` in `state`, if any.
pub fn confirmed(state: &BootState, bank: Bank) -> Option<ImageId> {
    match state.bank(bank) {
        BankState::Confirmed(id) => Some(*id),
        _ => None,
    }
}

/// A QEMU device serving the serial protocol, its UART relayed to [`Served::addr`].
pub struct Served {
    running: Option<Running>,
    pub relay: TcpRelay,
    dir: PathBuf,
    args: Vec<String>,
}

/// Output of one host tool run.
pub struct Tool {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Tool {
    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Served {
    /// `HOST:PORT` of the relay.
    pub fn addr(&self) -> String {
        self.relay.addr()
    }

    pub fn running(&mut self) -> &mut Running {
        self.running.as_mut().expect("QEMU runs")
    }

    /// The device's text lines so far (frames left out).
    pub fn text(&self) -> String {
        self.running.as_ref().map(|r| r.text()).unwrap_or_default()
    }

    /// Waits (up to 20 s) until the device printed `needle`.
    pub fn wait_for(&mut self, needle: &str) -> bool {
        self.wait_since(0, needle)
    }

    /// Waits (up to 20 s) until the device printed `needle` after `mark`.
    pub fn wait_since(&mut self, mark: usize, needle: &str) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end && self.running().alive() {
            if self.text_since(mark).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.text_since(mark).contains(needle)
    }

    /// A mark in the UART log (between two host tool commands: at a frame boundary).
    pub fn mark(&self) -> usize {
        self.running
            .as_ref()
            .map(|r| r.output_bytes().len())
            .unwrap_or(0)
    }

    /// The device's text printed since `mark`.
    pub fn text_since(&self, mark: usize) -> String {
        let raw = self
            .running
            .as_ref()
            .map(|r| r.output_bytes())
            .unwrap_or_default();
        qemu::device_text(raw.get(mark..).unwrap_or(&[]))
    }

    /// The host tool command `twinbank serial --tcp ADDR <args>`.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(twinbank_tests::host_bin());
        c.args(["serial", "--tcp", &self.addr()]).args(args);
        c
    }

    /// Runs `twinbank serial --tcp ADDR <args>`.
    pub fn tool(&self, args: &[&str]) -> Tool {
        let out = self.command(args).output().unwrap();
        let t = Tool {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ twinbank serial {} -> {:?}\n{}{}",
            args.join(" "),
            t.code,
            t.stdout,
            t.stderr
        );
        t
    }

    /// Runs the host tool and asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Tool {
        let t = self.tool(args);
        assert_eq!(
            t.code,
            Some(0),
            "twinbank serial {args:?} failed:\n{}{}\ndevice:\n{}",
            t.stdout,
            t.stderr,
            self.text()
        );
        t
    }

    /// `status --json`.
    #[track_caller]
    pub fn status(&self) -> serde_json::Value {
        self.ok(&["status", "--json"]).json()
    }

    /// `info --json`.
    #[track_caller]
    pub fn info(&self) -> serde_json::Value {
        self.ok(&["info", "--json"]).json()
    }

    /// Power off: SIGKILL QEMU now (`kill -9`), keep its log.
    pub fn kill9(mut self) {
        if let Some(r) = self.running.take() {
            let o = r.kill9();
            self.save(&o);
        }
    }

    fn save(&self, o: &Outcome) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("uart.log"))
            .unwrap();
        let _ = writeln!(f, "=== served run {:?} -> status {:?}", self.args, o.status);
        let _ = f.write_all(qemu::device_text(&o.raw).as_bytes());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let o = r.kill9();
            self.save(&o);
        }
    }
}
