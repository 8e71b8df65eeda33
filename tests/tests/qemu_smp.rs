//! QEMU end to end: SMP (MCUmgr) on the demo app's UART0, through the pseudo-terminal, driven by
//! two independent real clients: `smpmgr` (PyPI, a subprocess; `cargo xtask test` and `.ci/run`
//! install it into target/smpmgr-venv) and mcumgr-toolkit (crates.io, used as a library).
//!
//! - state read of a provisioned device, echo, parameters, bootloader information;
//! - a whole update driven only by SMP: upload → test → reset → trial boot → confirm by the
//!   client (smpmgr), and by the app (mcumgr-toolkit's update routine) → state read shows it;
//! - a failing image uploaded and tested by the client rolls back on its own;
//! - forced rollback by the client; refusals (wrong key, wrong bank, downgrade, hash of nothing)
//!   answered with an error, and `twinbank serial status` shows nothing changed;
//! - uploads interrupted (client killed, QEMU killed) and resumed by the client;
//! - SMP and native requests interleaved on the same UART;
//! - the throughput figures of BENCHMARKS.md (smpmgr and `twinbank serial`, same image, one run).

mod qemu_support;
use mcumgr_toolkit::MCUmgrClient;
use qemu_support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinbank::{Bank, BankState};

/// How long one QEMU process may live in these tests (uploads over SMP take a while).
const LIFE: Duration = Duration::from_secs(300);

fn smpmgr_path() -> String {
    std::env::var("TWINBANK_SMPMGR").unwrap_or_else(|_| {
        let p = firmware::workspace_root().join("target/smpmgr-venv/bin/smpmgr");
        assert!(
            p.exists(),
            "smpmgr is not installed: run `cargo xtask test` (it installs smpmgr into \
             target/smpmgr-venv) or set TWINBANK_SMPMGR"
        );
        p.display().to_string()
    })
}

/// Seconds an SMP client waits for one answer. A request takes milliseconds on an idle machine;
/// when CI shares its two cores with builds, QEMU runs a fraction of the time and an erase plus
/// a 1 KiB write timed out at 5 s under that load. A hung device still fails the test.
const CLIENT_TIMEOUT_S: &str = "30";

/// A QEMU device whose UART is relayed to a pseudo-terminal.
struct PtyDev {
    running: Option<qemu::Running>,
    pty: qemu::PtyRelay,
    lines: Arc<Mutex<Vec<String>>>,
}

/// Output of a client run.
struct Out {
    ok: bool,
    text: String,
    stdout: String,
}

impl PtyDev {
    fn start(dev: &Device, args: &[&str]) -> PtyDev {
        Self::start_with(&fw().shim(), dev, args)
    }

    /// Starts the device with the shim `shim` (e.g. the recovery shim).
    fn start_with(shim: &std::path::Path, dev: &Device, args: &[&str]) -> PtyDev {
        let mut r = qemu::Run::new(shim, &dev.flash, LIFE);
        r.args = args.iter().map(|s| s.to_string()).collect();
        let running = r.spawn().unwrap();
        running.kill_after(LIFE);
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let pty = running
            .serve_pty(move |l| sink.lock().unwrap().push(l.to_string()))
            .unwrap();
        let d = PtyDev {
            running: Some(running),
            pty,
            lines,
        };
        assert!(
            d.wait_line(0, "app: serving the serial protocol and SMP"),
            "{:?}",
            d.lines()
        );
        d
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits (up to 30 s) for a device line containing `needle` after `mark`.
    fn wait_line(&self, mark: usize, needle: &str) -> bool {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if self.lines().iter().skip(mark).any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn smpmgr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(smpmgr_path());
        c.args(["--port", &self.pty.path, "--timeout", CLIENT_TIMEOUT_S])
            .args(args);
        c.env("COLUMNS", "200");
        c
    }

    /// Runs smpmgr with `args`.
    fn smpmgr(&self, args: &[&str]) -> Out {
        let o = self.smpmgr_cmd(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!(
            "$ smpmgr {} -> {:?}\n{text}",
            args.join(" "),
            o.status.code()
        );
        Out {
            ok: o.status.success(),
            text,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        }
    }

    /// smpmgr `image state-read`, parsed.
    fn state_read(&self) -> Vec<Entry> {
        let o = self.smpmgr(&["image", "state-read"]);
        assert!(o.ok, "{}", o.text);
        entries(&o.text)
    }

    /// An mcumgr-toolkit client on the pseudo-terminal.
    fn toolkit(&self) -> MCUmgrClient {
        let port = serialport::new(&self.pty.path, 115_200)
            .timeout(Duration::from_millis(500))
            .open()
            .unwrap();
        let c = MCUmgrClient::new_from_serial(port);
        c.set_timeout(Duration::from_secs(CLIENT_TIMEOUT_S.parse().unwrap()))
            .unwrap();
        c.use_auto_frame_size().unwrap();
        c
    }

    /// `twinbank serial --port PTY <args>`.
    fn twinbank(&self, args: &[&str]) -> Out {
        let o = Command::new(twinbank_tests::host_bin())
            .args(["serial", "--port", &self.pty.path])
            .args(args)
            .output()
            .unwrap();
        Out {
            ok: o.status.success(),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        }
    }

    /// `twinbank serial status --json`.
    fn status(&self) -> serde_json::Value {
        let o = self.twinbank(&["status", "--json"]);
        assert!(o.ok, "{}", o.text);
        serde_json::from_str(&o.stdout).unwrap()
    }

    fn kill9(mut self) {
        if let Some(r) = self.running.take() {
            r.kill9();
        }
    }
}

impl Drop for PtyDev {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill9();
        }
    }
}

/// One image as smpmgr prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    slot: u32,
    version: String,
    hash: String,
    bootable: bool,
    pending: bool,
    confirmed: bool,
    active: bool,
    permanent: bool,
}

/// Parses smpmgr's `ImageState(...)` printouts.
fn entries(text: &str) -> Vec<Entry> {
    let field = |block: &str, name: &str| -> String {
        let at = block
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("no {name} in {block}"));
        block[at + name.len() + 1..]
            .split([',', '\n', ')'])
            .next()
            .unwrap()
            .trim()
            .trim_matches('\'')
            .to_string()
    };
    text.split("ImageState(")
        .skip(1)
        .map(|b| {
            let h = &b[b.find("hash=").expect("hash")..];
            let q = h.find('\'').unwrap() + 1;
            let hash = h[q..q + h[q..].find('\'').unwrap()].to_lowercase();
            Entry {
                slot: field(b, "slot").parse().unwrap(),
                version: field(b, "version"),
                hash,
                bootable: field(b, "bootable") == "True",
                pending: field(b, "pending") == "True",
                confirmed: field(b, "confirmed") == "True",
                active: field(b, "active") == "True",
                permanent: field(b, "permanent") == "True",
            }
        })
        .collect()
}

fn slot(entries: &[Entry], s: u32) -> Option<&Entry> {
    entries.iter().find(|e| e.slot == s)
}

/// The SHA-256 TLV value of an image, hex.
fn hash_hex(image: &[u8]) -> String {
    let m = twinbank::Manifest::from_image(image).unwrap();
    m.digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn save(dev: &Device, name: &str, image: &[u8]) -> String {
    let p = dev.dir.join(name);
    std::fs::write(&p, image).unwrap();
    p.display().to_string()
}

#[test]
fn state_read_echo_parameters_with_both_clients() {
    let f = fw();
    let dev = Device::factory("smp/state-read");
    let d = PtyDev::start(&dev, &[]);
    let e = d.state_read();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0],
        Entry {
            slot: 0,
            version: "1.0.0".into(),
            hash: hash_hex(&f.v1()),
            bootable: true,
            pending: false,
            confirmed: true,
            active: true,
            permanent: false,
        }
    );
    let o = d.smpmgr(&["os", "echo", "hello twinbank"]);
    assert!(o.ok && o.text.contains("r='hello twinbank'"), "{}", o.text);

    let c = d.toolkit();
    assert_eq!(
        c.os_echo("from mcumgr-toolkit").unwrap(),
        "from mcumgr-toolkit"
    );
    let p = c.os_mcumgr_parameters().unwrap();
    assert_eq!((p.buf_size, p.buf_count), (1024, 1));
    match c.os_bootloader_info().unwrap() {
        mcumgr_toolkit::bootloader::BootloaderInfo::Unknown { name } => {
            assert_eq!(name, "twinbank")
        }
        other => panic!("{other:?}"),
    }
    let images = c.image_get_state().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(
        images[0].hash.as_deref(),
        Some(&twinbank::Manifest::from_image(&f.v1()).unwrap().digest[..])
    );
    assert!(images[0].active && images[0].confirmed && images[0].bootable);
    let slots = c.image_slot_info().unwrap();
    assert_eq!(slots[0].slots.len(), 2);
}

#[test]
fn whole_update_by_smp_clients_then_by_the_app() {
    let f = fw();
    let dev = Device::factory("smp/update");
    let v2 = f.v2();
    let v2p = save(&dev, "v2.img", &v2);
    let h2 = hash_hex(&v2);
    let d = PtyDev::start(&dev, &["manual-confirm"]);
    // Upload: verified, listed, not active.
    let o = d.smpmgr(&["image", "upload", &v2p]);
    assert!(o.ok, "{}", o.text);
    let e = d.state_read();
    let b = slot(&e, 1).expect("slot 1 listed after the upload");
    assert_eq!(
        (b.version.as_str(), b.hash.as_str()),
        ("2.0.0", h2.as_str())
    );
    assert!(b.bootable && !b.pending && !b.active && !b.confirmed);
    assert_eq!(d.status()["banks"]["B"]["status"], "uploaded");
    // Test: pending.
    let o = d.smpmgr(&["image", "state-write", &h2]);
    assert!(o.ok && !o.text.contains("Error"), "{}", o.text);
    assert!(slot(&d.state_read(), 1).unwrap().pending);
    // Reset: trial boot of B (the app waits for the operator).
    let m = d.mark();
    let o = d.smpmgr(&["os", "reset"]);
    assert!(o.ok, "{}", o.text);
    assert!(
        d.wait_line(m, "twinbank: boot B 2.0.0+0 trial"),
        "{:?}",
        d.lines()
    );
    assert!(d.wait_line(m, "app: serving the serial protocol and SMP"));
    let e = d.state_read();
    let (a, b) = (slot(&e, 0).unwrap(), slot(&e, 1).unwrap());
    assert!(
        b.active && !b.confirmed && a.confirmed && !a.active,
        "{e:?}"
    );
    // Confirm by the client.
    let o = d.smpmgr(&["image", "state-write", "--confirm"]);
    assert!(o.ok && !o.text.contains("Error"), "{}", o.text);
    let b = slot(&d.state_read(), 1).unwrap().clone();
    assert!(b.active && b.confirmed, "{b:?}");
    let s = d.status();
    assert_eq!(s["banks"]["B"]["status"], "confirmed");
    assert_eq!(s["min_security_counter"], 2);
    d.kill9();

    // A second update with mcumgr-toolkit's update routine (upload, test, reset); the app
    // confirms itself after its health check. (The bootloader calls itself "twinbank", so the
    // routine is told it is MCUboot-compatible.)
    let v3 = f.image_with("app-v3-A", Bank::A, "3.0.0", 3, &f.trusted);
    let d = PtyDev::start(&dev, &[]);
    let c = d.toolkit();
    let m = d.mark();
    let params = mcumgr_toolkit::client::FirmwareUpdateParams {
        bootloader_type: Some(mcumgr_toolkit::bootloader::BootloaderType::MCUboot),
        ..Default::default()
    };
    c.firmware_update(&v3, None, params, None).unwrap();
    drop(c); // (a client holds the terminal exclusively)
    assert!(
        d.wait_line(m, "twinbank: boot A 3.0.0+0 trial"),
        "{:?}",
        d.lines()
    );
    assert!(d.wait_line(m, "app: confirmed"), "{:?}", d.lines());
    assert!(d.wait_line(m, "app: serving the serial protocol and SMP"));
    let images = d.toolkit().image_get_state().unwrap();
    let a = images.iter().find(|i| i.slot == 0).unwrap();
    assert_eq!(a.version, "3.0.0");
    assert!(a.active && a.confirmed);
    drop(d);
    let s = dev.state();
    assert!(matches!(s.bank(Bank::A), BankState::Confirmed(i) if i.version.major == 3));
    assert_eq!(s.min_security_counter, 3);
}

#[test]
fn failing_image_rolls_back_on_its_own() {
    let f = fw();
    let dev = Device::factory("smp/fail-health");
    let v3 = f.v3("fail-health");
    let p = save(&dev, "v3.img", &v3);
    let d = PtyDev::start(&dev, &[]);
    let m = d.mark();
    // smpmgr's one-command update: upload, test, reset (`--slot 1`, see docs/design.md).
    let o = d.smpmgr(&["upgrade", "--slot", "1", &p]);
    assert!(o.ok && o.text.contains("Upgrade complete"), "{}", o.text);
    assert!(
        d.wait_line(m, "twinbank: boot B 3.0.0+0 trial"),
        "{:?}",
        d.lines()
    );
    assert!(d.wait_line(m, "app: health FAIL"));
    assert!(d.wait_line(m, "twinbank: boot A 1.0.0+0"));
    assert!(d.wait_line(m, "app: serving the serial protocol and SMP"));
    let images = d.toolkit().image_get_state().unwrap();
    let a = images.iter().find(|i| i.slot == 0).unwrap();
    let b = images.iter().find(|i| i.slot == 1).unwrap();
    assert!(a.active && a.confirmed, "{images:?}");
    assert!(!b.bootable && !b.pending && !b.confirmed, "{images:?}");
    assert_eq!(d.status()["banks"]["B"]["status"], "rejected");
}

#[test]
fn forced_rollback_and_refusals_change_nothing() {
    let f = fw();
    let dev = Device::factory("smp/rollback");
    let wrong_key = f.image_with("app-v2-B", Bank::B, "2.0.0", 2, &f.untrusted);
    let wrong_bank = f.image_with("app-v1-A", Bank::A, "1.1.0", 2, &f.trusted);
    let downgrade = f.image_with("app-v2-B", Bank::B, "0.9.0", 0, &f.trusted);
    let paths = [
        save(&dev, "wrong-key.img", &wrong_key),
        save(&dev, "wrong-bank.img", &wrong_bank),
        save(&dev, "downgrade.img", &downgrade),
    ];
    let d = PtyDev::start(&dev, &[]);
    let before = d.status();
    for p in &paths {
        let o = d.smpmgr(&["image", "upload", p]);
        assert!(!o.ok, "{p} was accepted:\n{}", o.text);
        assert_eq!(d.status(), before, "{p} changed the state");
    }
    // The same by mcumgr-toolkit: the device's error comes back.
    let c = d.toolkit();
    let e = c
        .image_upload(&wrong_bank, None, None, false, None)
        .unwrap_err();
    assert!(format!("{e:?}").contains("group: 1, rc: 25"), "{e:?}");
    // A state write naming an image the device does not hold.
    assert!(c.image_set_state(Some(&[0xab; 32]), false).is_err());
    drop(c); // (a client holds the terminal exclusively)
    let o = d.smpmgr(&["image", "state-write", &"ab".repeat(32)]);
    assert!(o.text.contains("NO_IMAGE"), "{}", o.text);
    assert_eq!(d.status(), before);
    d.kill9();

    // Forced rollback: v2 with v1's counter, confirmed (native tool, for speed), then the SMP
    // client switches back to v1's hash.
    let v2 = f.image_with("app-v2-B", Bank::B, "2.0.0", 1, &f.trusted);
    let v2p = save(&dev, "v2.img", &v2);
    let d = PtyDev::start(&dev, &[]);
    let o = d.twinbank(&["upload", &v2p, "--reboot", "--wait-confirm"]);
    assert!(o.ok, "{}", o.text);
    let c = d.toolkit();
    let h1 = twinbank::Manifest::from_image(&f.v1()).unwrap().digest;
    let images = c.image_set_state(Some(&h1), true).unwrap();
    let a = images.iter().find(|i| i.slot == 0).unwrap();
    assert!(a.pending && a.permanent && !a.active, "{images:?}");
    let m = d.mark();
    c.os_system_reset(false, None).unwrap();
    drop(c);
    assert!(
        d.wait_line(m, "twinbank: boot A 1.0.0+0 normal"),
        "{:?}",
        d.lines()
    );
    assert!(d.wait_line(m, "app: serving the serial protocol and SMP"));
    let s = d.status();
    assert_eq!(s["preferred"], "A");
    assert_eq!(s["banks"]["B"]["status"], "confirmed");
}

#[test]
fn interrupted_uploads_resume() {
    let f = fw();
    let dev = Device::factory("smp/resume");
    let img = f.padded("app-v2-B", Bank::B, "2.0.0", 2, 96 * 1024);
    let p = save(&dev, "v2.img", &img);
    let d = PtyDev::start(&dev, &[]);
    // smpmgr killed mid-upload: the bank is "receiving"; the rerun resumes.
    let log1 = dev.dir.join("smpmgr-killed.log");
    let log1p = log1.display().to_string();
    let mut child = d
        .smpmgr_cmd(&[
            "--loglevel",
            "INFO",
            "--logfile",
            &log1p,
            "image",
            "upload",
            &p,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it logged an offset past a few sectors (read from its log file: nothing
    // else talks to the device meanwhile).
    let past = |log: &str| {
        log.lines()
            .filter_map(|l| l.split("Upload offset=").nth(1))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .any(|n| n > 16 * 1024)
    };
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end && !past(&std::fs::read_to_string(&log1).unwrap_or_default()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(d.status()["banks"]["B"]["status"], "receiving");
    let log = dev.dir.join("smpmgr-resume.log");
    let logp = log.display().to_string();
    let o = d.smpmgr(&[
        "--loglevel",
        "INFO",
        "--logfile",
        &logp,
        "image",
        "upload",
        &p,
    ]);
    assert!(o.ok, "{}", o.text);
    let logged = std::fs::read_to_string(&log).unwrap();
    let first: u64 = logged
        .lines()
        .find_map(|l| l.split("Upload offset=").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("smpmgr logs the offsets:\n{logged}"));
    assert!(first > 16 * 1024, "the rerun started over ({first})");
    assert_eq!(d.status()["banks"]["B"]["status"], "uploaded");
    let o = d.smpmgr(&["image", "erase", "1"]);
    assert!(o.ok, "{}", o.text);
    assert_eq!(d.status()["banks"]["B"]["status"], "empty");

    // QEMU killed mid-upload (mcumgr-toolkit), restarted on the same flash: the toolkit's next
    // upload resumes where the flash says.
    let c = d.toolkit();
    let (tx, rx) = std::sync::mpsc::channel();
    let img2 = img.clone();
    let t = std::thread::spawn(move || {
        let mut seen = 0u64;
        let mut cb = |off: u64, total: u64| {
            seen = off;
            if off * 2 > total {
                let _ = tx.send(());
            }
            true
        };
        let r = c.image_upload(&img2, None, None, false, Some(&mut cb));
        (r.is_ok(), seen)
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("upload progress");
    d.kill9();
    let (ok, _) = t.join().unwrap();
    assert!(!ok, "the upload finished although QEMU was killed");
    let d = PtyDev::start(&dev, &[]);
    assert!(d
        .lines()
        .iter()
        .any(|l| l == "twinbank: boot A 1.0.0+0 normal"));
    assert_eq!(d.status()["banks"]["B"]["status"], "receiving");
    let c = d.toolkit();
    let mut offsets = Vec::new();
    let mut cb = |off: u64, _: u64| {
        offsets.push(off);
        true
    };
    c.image_upload(&img, None, None, false, Some(&mut cb))
        .unwrap();
    drop(c); // (a client holds the terminal exclusively)
    assert!(
        offsets[0] > img.len() as u64 / 4,
        "resumed at {}",
        offsets[0]
    );
    assert_eq!(*offsets.last().unwrap(), img.len() as u64);
    assert_eq!(d.status()["banks"]["B"]["status"], "uploaded");
}

#[test]
fn smp_and_native_interleaved_on_one_uart() {
    let f = fw();
    let dev = Device::factory("smp/interleaved");
    // Client by client on the pseudo-terminal.
    let d = PtyDev::start(&dev, &[]);
    assert!(d.twinbank(&["status"]).ok);
    assert_eq!(d.state_read().len(), 1);
    let info: serde_json::Value =
        serde_json::from_str(&d.twinbank(&["info", "--json"]).stdout).unwrap();
    assert_eq!(info["running"], "A");
    assert_eq!(d.toolkit().os_echo("x").unwrap(), "x");
    assert!(d.twinbank(&["status"]).ok);
    d.kill9();
    // Byte by byte on one connection: an SMP echo line and a native Status frame written
    // together, twice; both answered each time.
    let served = dev.serve(&[]);
    let mut s = TcpStream::connect(served.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let smp = smp_echo_lines(7, "ping");
    let native = native_status_frame(40);
    for _ in 0..2 {
        let mut both = smp.clone();
        both.extend_from_slice(&native);
        s.write_all(&both).unwrap();
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while Instant::now() < end && !(has_smp_echo(&got) && has_native_status(&got)) {
            if let Ok(n) = s.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert!(has_smp_echo(&got), "no SMP answer in {got:?}");
        assert!(has_native_status(&got), "no native answer in {got:?}");
    }
    let _ = f;
}

/// An SMP v2 echo request as console lines.
fn smp_echo_lines(seq: u8, text: &str) -> Vec<u8> {
    let mut body = vec![0xa1, 0x61, b'd', 0x60 | text.len() as u8];
    body.extend_from_slice(text.as_bytes());
    let mut p = vec![0x0a, 0, 0, body.len() as u8, 0, 0, seq, 0];
    p.extend_from_slice(&body);
    let mut out = vec![0u8; twinbank::smp::framing::MAX_ENCODED];
    let n = twinbank::smp::framing::encode(&p, &mut out).unwrap();
    out.truncate(n);
    out
}

fn has_smp_echo(bytes: &[u8]) -> bool {
    let mut d = twinbank::smp::framing::Decoder::new();
    bytes.iter().any(|&b| {
        d.push(b)
            .is_some_and(|n| d.packet(n).windows(4).any(|w| w == b"ping"))
    })
}

fn native_status_frame(seq: u16) -> Vec<u8> {
    use twinbank::protocol::{encode_frame, message::Request, Envelope, MAX_FRAME};
    let mut scratch = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; MAX_FRAME + 8];
    let n = encode_frame(
        &Envelope {
            seq,
            body: Request::Status,
        },
        &mut scratch,
        &mut out,
    )
    .unwrap();
    out.truncate(n);
    out
}

fn has_native_status(bytes: &[u8]) -> bool {
    use twinbank::protocol::{decode_frame, message::Response, Envelope};
    bytes.split(|&b| b == 0).any(|seg| {
        matches!(
            decode_frame::<Envelope<Response>>(&mut seg.to_vec()),
            Ok(Envelope {
                seq: 40,
                body: Response::Status(Some(_))
            })
        )
    })
}

/// The figures of BENCHMARKS.md: the same image uploaded by smpmgr (default and with the line
/// buffers that fill the device's 1 KiB SMP buffer) and by `twinbank serial`, to the same QEMU
/// device in one run: wall time, and payload against the bytes the host sent.
#[test]
fn smp_and_native_upload_throughput() {
    let f = fw();
    let dev = Device::factory("smp/throughput");
    let img = f.v2();
    let p = save(&dev, "v2.img", &img);
    let d = PtyDev::start(&dev, &[]);
    let run = |what: &str, f: &dyn Fn() -> Out| {
        let sent = d.pty.bytes_to_device();
        let t = Instant::now();
        let o = f();
        let secs = t.elapsed().as_secs_f64();
        assert!(o.ok, "{what}: {}", o.text);
        let wire = d.pty.bytes_to_device() - sent;
        println!(
            "FIGURES {what}: {} B in {secs:.2} s = {:.1} KiB/s, host sent {wire} B, payload/wire {:.3}",
            img.len(),
            img.len() as f64 / secs / 1024.0,
            img.len() as f64 / wire as f64
        );
        assert!(wire as usize > img.len());
        let e = d.smpmgr(&["image", "erase", "1"]);
        assert!(e.ok, "{}", e.text);
        secs
    };
    let smp = run("smpmgr image upload", &|| {
        d.smpmgr(&["image", "upload", &p])
    });
    let smp11 = run("smpmgr --line-buffers 11 image upload", &|| {
        d.smpmgr(&["--line-buffers", "11", "image", "upload", &p])
    });
    let native = run("twinbank serial upload", &|| d.twinbank(&["upload", &p]));
    println!(
        "FIGURES time ratio smpmgr/native {:.2}, smpmgr --line-buffers 11/native {:.2}",
        smp / native,
        smp11 / native
    );
}

/// SMP's reset into the bootloader (boot mode 1): refused under a shim without recovery (the app
/// keeps serving, nothing resets); under the recovery shim the app asks for recovery, the shim
/// serves it (the running bank kept), an SMP upload there boots on trial and confirms.
#[test]
fn reset_into_recovery_over_smp() {
    let f = fw();
    let dev = Device::factory("smp/boot-mode-1");
    let v2 = save(&dev, "v2.img", &f.v2());
    let d = PtyDev::start(&dev, &[]);
    let m = d.mark();
    let e = d.toolkit().os_system_reset(false, Some(1)).unwrap_err();
    assert!(format!("{e:?}").contains("rc: 8"), "{e:?}");
    assert_eq!(d.status()["running"], "A");
    assert!(!d
        .lines()
        .iter()
        .skip(m)
        .any(|l| l.contains("twinbank: boot")));
    d.kill9();

    let d = PtyDev::start_with(&f.recovery_shim(), &dev, &[]);
    let m = d.mark();
    d.toolkit().os_system_reset(false, Some(1)).unwrap();
    assert!(
        d.wait_line(m, "app: recovery requested over SMP, resetting"),
        "{:?}",
        d.lines()
    );
    assert!(
        d.wait_line(
            m,
            "twinbank: recovery (requested by the application; bank A kept)"
        ),
        "{:?}",
        d.lines()
    );
    // In recovery: smpmgr's one-command update into slot 1 (bank B), then its reset.
    let m = d.mark();
    let o = d.smpmgr(&["upgrade", "--slot", "1", &v2]);
    assert!(o.ok && o.text.contains("Upgrade complete"), "{}", o.text);
    assert!(
        d.wait_line(m, "twinbank: boot B 2.0.0+0 trial"),
        "{:?}",
        d.lines()
    );
    assert!(d.wait_line(m, "app: confirmed"), "{:?}", d.lines());
    drop(d);
    let s = dev.state();
    assert!(matches!(s.bank(Bank::B), BankState::Confirmed(i) if i.version.major == 2));
    assert!(matches!(s.bank(Bank::A), BankState::Confirmed(i) if i.version.major == 1));
}
