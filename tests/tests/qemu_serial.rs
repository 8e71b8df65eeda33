//! QEMU end to end: the serial protocol on the demo app's UART0, driven by `twinbank serial`.
//!
//! QEMU connects its UART to a listener of the test; the test relays it to a second TCP port
//! that the host tool connects to (`twinbank serial --tcp`), and keeps every byte the device
//! sent (its text lines go to `target/qemu-tests/runs/serial/<test>/uart.log`). One test relays
//! to a pseudo-terminal instead, for `--port`, as `cargo xtask qemu` does.
//!
//! - status and info of a provisioned device;
//! - upload of a signed image, activate, reboot, trial, operator confirm;
//! - operator rollback after a confirmed update, and forward again; a refused rollback;
//! - resume after the host tool is killed mid-upload, and after the link is cut;
//! - resume after QEMU is killed (`kill -9`) mid-upload and restarted on the same flash file;
//! - refusals over the wire (tampered, wrong bank, wrong key, downgrade), nothing changed;
//! - garbage, an oversized, a truncated and a bad-CRC frame: the device keeps answering.

mod qemu_support;
use qemu_support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use twinbank::image::ImageError;
use twinbank::protocol::message::{RemoteError, Request, Response};
use twinbank::protocol::{decode_frame, encode_frame, Envelope, FrameError, MAX_FRAME};
use twinbank::{Bank, UpdateError};

fn device(name: &str) -> Device {
    Device::factory(&format!("serial/{name}"))
}

/// Writes `image` next to the flash file; returns its path as a string.
fn save(dev: &Device, name: &str, image: &[u8]) -> String {
    let p = dev.dir.join(name);
    std::fs::write(&p, image).unwrap();
    p.display().to_string()
}

#[test]
fn status_info_upload_activate_reboot_trial_confirm() {
    let f = fw();
    let dev = device("upload");
    let v2 = save(&dev, "v2.bin", &f.v2());
    let mut d = dev.serve(&["manual-confirm"]);

    let s = d.status();
    assert_eq!(s["provisioned"], true);
    assert_eq!(s["preferred"], "A");
    assert_eq!(s["banks"]["A"]["status"], "confirmed");
    assert_eq!(s["banks"]["A"]["version"], "1.0.0+0");
    assert_eq!(s["banks"]["B"]["status"], "empty");
    assert_eq!(s["min_security_counter"], 1);
    let i = d.info();
    assert_eq!(i["protocol"], twinbank::protocol::PROTOCOL_VERSION);
    assert_eq!(i["running"], "A");
    assert_eq!(i["running_version"], "1.0.0+0");
    let bank_b = f.board.layout().unwrap().bank_address(Bank::B);
    assert_eq!(i["bank_b"], format!("{bank_b:#x}"));
    assert_eq!(i["vendor_id"], f.board.device.vendor_id.as_deref().unwrap());
    let human = d.ok(&["status"]).stdout;
    assert!(
        human.contains("A*    yes      confirmed   1.0.0+0"),
        "{human}"
    );

    let before = d.mark();
    let up = d
        .ok(&["upload", &v2, "--activate", "--reboot", "--json"])
        .json();
    assert_eq!(up["bank"], "B");
    assert_eq!(up["activated"], true);
    assert_eq!(up["resumed_from"], 0);
    assert!(up["payload_ratio"].as_f64().unwrap() >= 0.95, "{up}");
    assert!(d.wait_since(before, "app: on trial, waiting for the operator to confirm"));
    let boot = d.text_since(before);
    assert!(
        boot.contains("twinbank: boot B 2.0.0+0 trial 2 left"),
        "{boot}"
    );

    let s = d.status();
    assert_eq!(s["preferred"], "B");
    assert_eq!(s["banks"]["B"]["status"], "pending");
    assert_eq!(s["banks"]["B"]["attempts_left"], 2);
    assert_eq!(d.info()["running"], "B");

    let c = d.ok(&["confirm"]);
    assert!(c.stderr.contains("confirmed"), "{}", c.stderr);
    let s = d.status();
    assert_eq!(s["banks"]["B"]["status"], "confirmed");
    assert_eq!(s["banks"]["B"]["version"], "2.0.0+0");
    assert_eq!(s["min_security_counter"], 2);
    // Confirming raised the minimum counter past v1's: rolling back to it is refused.
    let r = d.tool(&["rollback", "--yes"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "nothing to roll back to: bank A holds 1.0.0+0 with security counter 1, below"
        ),
        "{}",
        r.stderr
    );
    drop(d);
    let state = dev.state();
    assert_eq!(state.preferred, Bank::B);
    assert_eq!(
        confirmed(&state, Bank::B),
        Some(f.id(Bank::B, &f.v2(), &f.keys))
    );
}

#[test]
fn operator_rollback_and_forward_again() {
    let f = fw();
    let dev = device("rollback");
    // v2 with v1's security counter, so v1 stays an accepted fallback after the confirm.
    let v2 = f.image_with("app-v2-B", Bank::B, "2.0.0", 1, &f.trusted);
    let v2p = save(&dev, "v2.bin", &v2);
    let mut d = dev.serve(&[]);
    let up = d.ok(&["upload", &v2p, "--reboot", "--wait-confirm"]);
    assert!(
        up.stderr.contains("bank B confirmed 2.0.0+0"),
        "{}",
        up.stderr
    );
    assert!(d.text().contains("app: confirmed"));

    let before = d.mark();
    let r = d.ok(&["rollback", "--yes", "--reboot"]);
    assert!(
        r.stderr
            .contains("rollback: from bank B (2.0.0+0) to bank A (confirmed 1.0.0+0"),
        "{}",
        r.stderr
    );
    assert!(d.wait_since(before, "app: serving"));
    let t = d.text_since(before);
    assert!(t.contains("twinbank: boot A 1.0.0+0 normal"), "{t:?}");
    let i = d.info();
    assert_eq!(
        (i["running"].as_str(), i["running_version"].as_str()),
        (Some("A"), Some("1.0.0+0"))
    );
    let s = d.status();
    assert_eq!(s["preferred"], "A");
    assert_eq!(s["banks"]["A"]["status"], "confirmed");
    assert_eq!(s["banks"]["B"]["status"], "confirmed");

    // A second rollback goes forward again.
    let before = d.mark();
    let r = d.ok(&["rollback", "--yes", "--reboot", "--json"]);
    assert_eq!(r.json()["bank"], "B");
    assert!(d.wait_since(before, "app: serving"));
    assert!(d
        .text_since(before)
        .contains("twinbank: boot B 2.0.0+0 normal"));
    assert!(d.text_since(before).contains("app: v2.0.0+0 bank B"));
    let i = d.info();
    assert_eq!(
        (i["running"].as_str(), i["running_version"].as_str()),
        (Some("B"), Some("2.0.0+0"))
    );
    drop(d);
    assert_eq!(dev.state().preferred, Bank::B);
}

/// Runs an upload in the background; returns the child and its stderr lines (as they come, and
/// all of them).
fn spawn_upload(d: &Served, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>, Lines) {
    let mut child = d
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let all = Lines::default();
    let keep = all.clone();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            eprintln!("  (upload) {line}");
            keep.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (child, rx, all)
}

type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Waits for a progress line at or past `pct` percent.
#[track_caller]
fn wait_progress(rx: &mpsc::Receiver<String>, pct: u32) {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            let p = l
                .strip_prefix("upload: ")
                .and_then(|r| r.split('%').next())
                .and_then(|n| n.parse::<u32>().ok());
            if p.is_some_and(|p| p >= pct && p < 100) {
                return;
            }
            assert!(
                !l.contains("100%"),
                "the upload ended before it could be interrupted"
            );
        }
    }
    panic!("no upload progress to {pct}%");
}

#[test]
fn resume_after_host_killed_and_link_cut() {
    let f = fw();
    let dev = device("resume-disconnect");
    let img = f.padded("app-v2-B", Bank::B, "2.0.0", 2, 96 * 1024);
    let total = img.len() as u64;
    let p = save(&dev, "v2.bin", &img);
    let mut d = dev.serve(&[]);

    // The host tool dies mid-upload (kill -9): nothing is activated; the rerun resumes.
    let (mut child, rx, _) = spawn_upload(&d, &["upload", &p, "--json"]);
    wait_progress(&rx, 30);
    child.kill().unwrap();
    let _ = child.wait();
    // Not bootable: the state names the image being received (what lets only it resume).
    assert_eq!(d.status()["banks"]["B"]["status"], "receiving");

    // The rerun resumes; the link is cut under it halfway: the tool reconnects and goes on.
    let (mut child, rx, all) = spawn_upload(
        &d,
        &[
            "--timeout",
            "1",
            "upload",
            &p,
            "--activate",
            "--reboot",
            "--json",
        ],
    );
    wait_progress(&rx, 70);
    d.relay.cut();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let st = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let lines = all.lock().unwrap().clone();
    assert!(st.success(), "upload after the cut failed: {lines:?}");
    let up: serde_json::Value = serde_json::from_str(&out).unwrap();
    let resumed = up["resumed_from"].as_u64().unwrap();
    assert!(resumed > 0 && resumed < total, "{up}");
    assert!(
        lines.iter().any(|l| l.contains("resuming at byte")),
        "{lines:?}"
    );
    assert_eq!(up["activated"], true);
    assert!(d.wait_for("app: confirmed"));
    assert!(d.text().contains("twinbank: boot B 2.0.0+0 trial"));
    drop(d);
    let s = dev.state();
    assert_eq!(confirmed(&s, Bank::B), Some(f.id(Bank::B, &img, &f.keys)));
}

#[test]
fn resume_after_qemu_killed_mid_upload() {
    let f = fw();
    let dev = device("resume-kill9");
    let img = f.padded("app-v2-B", Bank::B, "2.0.0", 2, 128 * 1024);
    let total = img.len() as u64;
    let p = save(&dev, "v2.bin", &img);

    let d = dev.serve(&[]);
    let (mut child, rx, _) = spawn_upload(&d, &["upload", &p, "--json"]);
    wait_progress(&rx, 40);
    d.kill9(); // power cut: QEMU killed while chunks are being written
    let _ = child.kill();
    let _ = child.wait();

    // Power on again, same flash file: v1 still runs; the upload resumes where the flash says.
    let d = dev.serve(&[]);
    assert!(
        d.text().contains("twinbank: boot A 1.0.0+0 normal"),
        "{}",
        d.text()
    );
    assert_eq!(d.status()["banks"]["B"]["status"], "receiving");
    let before = d.mark();
    let up = d.ok(&["upload", &p, "--reboot", "--wait-confirm", "--json"]);
    let j = up.json();
    let resumed = j["resumed_from"].as_u64().unwrap();
    assert!(resumed > 0 && resumed < total, "{j}");
    assert!(
        up.stderr.contains(&format!("resuming at byte {resumed}")),
        "{}",
        up.stderr
    );
    assert!(
        up.stderr.contains("bank B confirmed 2.0.0+0"),
        "{}",
        up.stderr
    );
    let t = d.text_since(before);
    assert!(t.contains("twinbank: boot B 2.0.0+0 trial"), "{t}");
    assert!(t.contains("app: confirmed"), "{t}");
    drop(d);
    let r = dev.report();
    assert_eq!(
        confirmed(r.state.as_ref().unwrap(), Bank::B),
        Some(f.id(Bank::B, &img, &f.keys))
    );
    assert!(r.images[0].is_ok(), "v1 intact: {:?}", r.images);
}

/// A raw connection to the device through the relay, for hand-made frames.
struct Wire {
    s: TcpStream,
    rx: Vec<u8>,
}

impl Wire {
    fn new(d: &Served) -> Wire {
        let s = TcpStream::connect(d.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Wire { s, rx: Vec::new() }
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    fn frame(seq: u16, r: &Request<'_>) -> Vec<u8> {
        let mut scratch = vec![0u8; MAX_FRAME];
        let mut out = vec![0u8; MAX_FRAME + 8];
        let n = encode_frame(
            &Envelope {
                seq,
                body: r.clone(),
            },
            &mut scratch,
            &mut out,
        )
        .unwrap();
        out.truncate(n);
        out
    }

    /// Every response frame that arrives within `wait` (text and undecodable bytes skipped).
    fn responses(&mut self, wait: Duration) -> Vec<Envelope<Response>> {
        let end = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.s.read(&mut buf) {
                self.rx.extend_from_slice(&buf[..n]);
            }
            while let Some(i) = self.rx.iter().position(|&b| b == 0) {
                let mut seg: Vec<u8> = self.rx.drain(..=i).collect();
                seg.pop();
                if let Ok(e) = decode_frame::<Envelope<Response>>(&mut seg) {
                    got.push(e);
                }
            }
        }
        got
    }

    /// Sends `bytes` and returns the first response (waits up to 5 s).
    #[track_caller]
    fn exchange(&mut self, bytes: &[u8]) -> Envelope<Response> {
        self.send(bytes);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Some(r) = self
                .responses(Duration::from_millis(100))
                .into_iter()
                .next()
            {
                return r;
            }
        }
        panic!("no response");
    }

    #[track_caller]
    fn call(&mut self, seq: u16, r: &Request<'_>) -> Response {
        let e = self.exchange(&Self::frame(seq, r));
        assert_eq!(e.seq, seq);
        e.body
    }
}

#[test]
fn refusals_over_the_wire_change_nothing() {
    let f = fw();
    let dev = device("refusals");
    let mut tampered = f.v2();
    tampered[0x400 + 0x800] ^= 0x01; // one payload bit
    let wrong_bank = f.image_with("app-v1-A", Bank::A, "1.1.0", 2, &f.trusted);
    let wrong_key = f.image_with("app-v2-B", Bank::B, "2.0.0", 2, &f.untrusted);
    let downgrade = f.image_with("app-v2-B", Bank::B, "0.9.0", 0, &f.trusted);
    let paths = [
        save(&dev, "tampered.bin", &tampered),
        save(&dev, "wrong-bank.bin", &wrong_bank),
        save(&dev, "wrong-key.bin", &wrong_key),
        save(&dev, "downgrade.bin", &downgrade),
    ];
    let d = dev.serve(&[]);
    let before = d.status();
    let layout = f.board.layout().unwrap();
    let (bank_a, bank_b) = (layout.bank_address(Bank::A), layout.bank_address(Bank::B));
    let linked_for_a = format!(
        "linked for {bank_a:#x} but the bank is at {bank_b:#x} (it is linked for bank A, which \
         is running; sign it for bank B)"
    );

    // Through the host tool: tampered and wrong key are sent and refused by the device at the
    // verification; wrong bank and downgrade are refused before sending (checked against Info).
    for (path, want) in [
        (
            &paths[0],
            "the device does not take the image: image hash mismatch",
        ),
        (&paths[1], linked_for_a.as_str()),
        (
            &paths[2],
            "the device does not take the image: image is signed by an untrusted key",
        ),
        (
            &paths[3],
            "downgrade: security counter 0 is below the minimum 1",
        ),
    ] {
        let t = d.tool(&["upload", path, "--activate"]);
        assert_eq!(t.code, Some(1), "{path}: {}", t.stderr);
        assert!(
            t.stderr.contains(want),
            "{path}: want {want:?} in\n{}",
            t.stderr
        );
        assert_eq!(
            t.stderr.matches("refused").count(),
            1,
            "{path}: says \"refused\" once: {}",
            t.stderr
        );
        assert_eq!(d.status(), before, "{path} changed the state");
    }

    // The device refuses them itself too (a host without the checks): hand-made UploadBegin.
    let mut w = Wire::new(&d);
    for (seq, img, want) in [
        (
            10u16,
            &wrong_bank,
            RemoteError::Update(UpdateError::Image(ImageError::WrongBank {
                linked_for: bank_a,
                bank_address: bank_b,
            })),
        ),
        (
            11,
            &downgrade,
            RemoteError::Update(UpdateError::Image(ImageError::SecurityCounterTooLow {
                image: 0,
                minimum: 1,
            })),
        ),
    ] {
        let r = w.call(seq, &Request::upload_begin(img).expect("well-formed image"));
        assert_eq!(r, Response::Error(want));
    }
    // Finishing with no upload, confirming a confirmed image: typed refusals.
    assert_eq!(
        w.call(12, &Request::UploadFinish),
        Response::Error(RemoteError::Update(UpdateError::NoUpload))
    );
    assert_eq!(
        w.call(13, &Request::Reject),
        Response::Error(RemoteError::Update(UpdateError::NotPending))
    );
    drop(w);
    assert_eq!(d.status(), before);
    assert_eq!(d.info()["running"], "A");
    drop(d);
    let s = dev.state();
    assert_eq!(s.preferred, Bank::A);
    assert!(confirmed(&s, Bank::A).is_some());
}

#[test]
fn garbage_and_broken_frames_then_valid_requests() {
    let dev = device("garbage");
    let d = dev.serve(&[]);
    let mut w = Wire::new(&d);

    // Random bytes (zeros included): whatever the device answers, it keeps serving.
    let mut x = 0x1234_5678u32;
    let junk: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    w.send(&junk);
    w.send(&[0]);
    for e in w.responses(Duration::from_millis(500)) {
        assert_eq!(e.seq, 0, "garbage was taken for a request: {e:?}");
        assert!(
            matches!(e.body, Response::Error(RemoteError::Frame(_))),
            "{e:?}"
        );
    }
    assert_eq!(d.status()["banks"]["A"]["status"], "confirmed");
    // (The host tool took the relay over: connect again.)
    let mut w = Wire::new(&d);

    // A frame of the maximum size + 1: a valid chunk frame padded to MAX_FRAME + 1 bytes.
    let data = vec![0xA5u8; 1000];
    let mut big = Wire::frame(
        20,
        &Request::UploadChunk {
            offset: 0,
            data: &data,
        },
    );
    big.pop(); // delimiter
    big.resize(MAX_FRAME + 1, 0x5A);
    big.push(0);
    let e = w.exchange(&big);
    assert_eq!(e.seq, 0);
    assert_eq!(
        e.body,
        Response::Error(RemoteError::Frame(FrameError::Oversized))
    );
    // MAX_FRAME bytes exactly are collected (and then fail their CRC).
    big.truncate(MAX_FRAME);
    big.push(0);
    let e = w.exchange(&big);
    assert!(
        matches!(
            e.body,
            Response::Error(RemoteError::Frame(
                FrameError::BadCrc | FrameError::BadEncoding
            ))
        ),
        "{e:?}"
    );

    // A truncated frame: the first half of a valid one, then a delimiter.
    let full = Wire::frame(21, &Request::Status);
    let mut cut = full[..full.len() / 2].to_vec();
    cut.push(0);
    let e = w.exchange(&cut);
    assert_eq!(e.seq, 0);
    assert!(
        matches!(
            e.body,
            Response::Error(RemoteError::Frame(
                FrameError::BadCrc | FrameError::BadEncoding
            ))
        ),
        "{e:?}"
    );

    // A valid frame with a bad CRC.
    let mut raw = Wire::frame(22, &Request::Info);
    raw.pop();
    let n = cobs::decode_in_place(&mut raw).unwrap();
    raw.truncate(n);
    raw[n - 1] ^= 0xFF; // last CRC byte
    let mut bad = vec![0u8; cobs::max_encoding_length(raw.len()) + 1];
    let m = cobs::encode(&raw, &mut bad);
    bad.truncate(m);
    bad.push(0);
    let e = w.exchange(&bad);
    assert_eq!(
        (e.seq, e.body),
        (0, Response::Error(RemoteError::Frame(FrameError::BadCrc)))
    );

    // A chunk larger than the device accepts (the frame itself fits).
    let data = vec![1u8; 1060];
    assert_eq!(
        w.call(
            23,
            &Request::UploadChunk {
                offset: 0,
                data: &data
            }
        ),
        Response::Error(RemoteError::ChunkTooLarge)
    );

    // The next valid request is answered correctly.
    match w.call(24, &Request::Info) {
        Response::Info(i) => {
            assert_eq!(i.running, Bank::A);
            assert_eq!(
                i.running_version.map(|v| v.to_string()),
                Some("1.0.0+0".into())
            );
        }
        r => panic!("{r:?}"),
    }
    drop(w);
    let s = d.status();
    assert_eq!(s["banks"]["B"]["status"], "empty");
    assert_eq!(d.info()["running"], "A");
}

#[test]
fn port_on_a_pseudo_terminal() {
    let dev = device("pty");
    let r = fw().run(&fw().shim(), &dev.flash, TIMEOUT);
    let mut running = r.spawn().unwrap();
    running.kill_after(TIMEOUT);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let pty = running
        .serve_pty(move |l| sink.lock().unwrap().push(l.to_string()))
        .unwrap();
    assert!(pty.path.starts_with("/dev/pts/"), "{}", pty.path);
    assert!(running.wait_for_text("app: serving the serial protocol", Duration::from_secs(20)));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(twinbank_tests::host_bin())
            .args(["serial", "--port", &pty.path])
            .args(args)
            .output()
            .unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "--port {args:?}: {o}{e}");
        o
    };
    let s = run(&["status"]);
    assert!(s.contains("A*    yes      confirmed   1.0.0+0"), "{s}");
    let i: serde_json::Value = serde_json::from_str(&run(&["info", "--json"])).unwrap();
    assert_eq!(i["running"], "A");
    // Twice more: the terminal is reusable after a client closed it.
    run(&["status"]);
    run(&["status", "--json"]);
    let o = running.kill9();
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l == "twinbank: boot A 1.0.0+0 normal"),
        "text lines: {lines:?}\n{}",
        o.output
    );
    assert!(
        lines.iter().all(|l| !l.contains('\u{fffd}')),
        "a frame was shown as text: {lines:?}"
    );
}
