//! `twinbank serial` against an in-process device: the device crate's protocol server over the
//! QEMU board's layout on a strict flash, behind a TCP socket. Exercises the whole operator flow
//! (status, upload, activate, reboot, confirm, rollback), the refusals, and reconnect/resume
//! after the link drops mid-upload, without QEMU. (The same flows under QEMU: qemu_serial.rs.)

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use twinbank::board::BoardDescription;
use twinbank::image::encode::trusted_key_from_pem;
use twinbank::protocol::server::OUT_FRAME;
use twinbank::protocol::{FrameDecoder, Server};
use twinbank::testing::StrictFlash;
use twinbank::{boot, Bank, Config, TrustedKey, Updater};
use twinbank_tests::{host_bin, workspace};

type Flash = StrictFlash<4, 4096>;

/// Serves the protocol on `listener` forever (one connection at a time). A `Reboot` request
/// re-runs the boot decision. After `drop_after` chunk requests, the first connection is cut once.
fn fake_device(
    listener: TcpListener,
    mut flash: Flash,
    config: Config<'static>,
    drop_after: Arc<AtomicU32>,
) {
    let mut running = boot::decide(&mut flash, &config).expect("boots").bank;
    loop {
        let Ok((mut sock, _)) = listener.accept() else {
            return;
        };
        let mut dec = FrameDecoder::new();
        let mut out = vec![0u8; OUT_FRAME];
        let mut buf = [0u8; 2048];
        let mut server = Server::new(Updater::new(&mut flash, config, running).unwrap(), config);
        let mut reboot = false;
        'conn: loop {
            let n = match sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                let len = match dec.push(b) {
                    Some(Ok(len)) => {
                        let left = drop_after.load(Ordering::SeqCst);
                        if left == 1 {
                            drop_after.store(0, Ordering::SeqCst);
                            break 'conn; // the cable is pulled
                        } else if left > 1 {
                            drop_after.store(left - 1, Ordering::SeqCst);
                        }
                        let frame = dec.frame(len);
                        server.handle_frame(frame, &mut out)
                    }
                    Some(Err(e)) => server.frame_error(e, &mut out),
                    None => continue,
                };
                if sock.write_all(&out[..len]).is_err() {
                    break 'conn;
                }
                if server.reboot_requested() {
                    reboot = true;
                }
            }
            if reboot {
                break;
            }
        }
        if reboot {
            running = boot::decide(&mut flash, &config).expect("boots").bank;
        }
    }
}

fn twinbank(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(host_bin())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ twinbank {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = twinbank(dir, args);
    assert!(out.status.success(), "twinbank {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_json(dir: &Path, addr: &str) -> serde_json::Value {
    serde_json::from_str(&ok(dir, &["serial", "--tcp", addr, "status", "--json"])).unwrap()
}

#[test]
fn operator_session_over_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let board = workspace().join("twinbank.toml");
    std::fs::copy(&board, dir.join("twinbank.toml")).unwrap();
    let desc = BoardDescription::load(&board).unwrap();
    let layout = desc.layout().unwrap();
    ok(dir, &["keygen", "-o", "key.pem"]);
    // Payloads: raw binaries standing in for firmware.
    for (name, seed) in [
        ("v1.raw", 1u8),
        ("v2.raw", 2),
        ("v3.raw", 3),
        ("v2x.raw", 4),
    ] {
        let p: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
            .collect();
        std::fs::write(dir.join(name), p).unwrap();
    }
    let ids = [
        "--vid",
        desc.device.vendor_id.as_deref().unwrap(),
        "--cid",
        desc.device.class_id.as_deref().unwrap(),
    ];
    let sign = |input: &str, bank: &str, ver: &str, cnt: &str, out: &str| {
        let mut a = vec![
            "sign",
            "-k",
            "key.pem",
            "--version",
            ver,
            "--security-counter",
            cnt,
            "--bank",
            bank,
        ];
        a.extend_from_slice(&ids);
        a.extend_from_slice(&[input, "-o", out]);
        ok(dir, &a);
    };
    sign("v1.raw", "A", "1.0.0", "1", "v1-a.bin");
    sign("v2.raw", "B", "2.0.0", "1", "v2-b.bin");
    // Same version, size and counter as v2: the same header bytes, other content.
    sign("v2x.raw", "B", "2.0.0", "1", "v2x-b.bin");
    sign("v3.raw", "A", "3.0.0", "2", "v3-a.bin"); // linked for the running bank
    sign("v3.raw", "A", "0.9.0", "0", "old-a.bin"); // counter below the minimum after confirm
    ok(
        dir,
        &[
            "provision",
            "-k",
            "key.pem",
            "--image-a",
            "v1-a.bin",
            "-o",
            "flash.bin",
        ],
    );

    let flash = Flash::from_bytes(&std::fs::read(dir.join("flash.bin")).unwrap());
    let pem = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let keys: &'static [TrustedKey] = Box::leak(Box::new([trusted_key_from_pem(&pem).unwrap()]));
    let config = Config {
        layout,
        keys,
        ids: desc.ids().unwrap(),
        attempts: desc.attempts().unwrap(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let drop_after = Arc::new(AtomicU32::new(0));
    let d = drop_after.clone();
    std::thread::spawn(move || fake_device(listener, flash, config, d));
    let a = addr.as_str();

    let s = status_json(dir, a);
    assert_eq!(s["banks"]["A"]["status"], "confirmed");
    assert_eq!(s["banks"]["B"]["status"], "empty");
    let info: serde_json::Value =
        serde_json::from_str(&ok(dir, &["serial", "--tcp", a, "info", "--json"])).unwrap();
    assert_eq!(info["running"], "A");
    assert_eq!(
        info["bank_b"],
        format!("{:#010x}", layout.bank_address(Bank::B))
    );

    // Refusals before anything is sent: wrong bank, and nothing changes.
    let out = twinbank(dir, &["serial", "--tcp", a, "upload", "v3-a.bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("linked for"));
    assert_eq!(status_json(dir, a), s);

    // An interrupted transfer of v2x (link cut after 10 chunks, one try: the tool gives up)
    // leaves bank B with a prefix of v2x, whose header equals v2's.
    drop_after.store(1 + 2 + 11, Ordering::SeqCst);
    let out = twinbank(
        dir,
        &[
            "serial",
            "--tcp",
            a,
            "--tries",
            "1",
            "--timeout",
            "1",
            "upload",
            "v2x-b.bin",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "the interrupted upload fails");
    assert_eq!(drop_after.load(Ordering::SeqCst), 0);
    // The state names the image bank B is receiving (what lets only that image resume); nothing
    // else changed and nothing was activated.
    let after = status_json(dir, a);
    assert_eq!(after["banks"]["B"]["status"], "receiving");
    assert_eq!(after["banks"]["A"], s["banks"]["A"]);
    assert_eq!(
        (&after["preferred"], &after["min_security_counter"]),
        (&s["preferred"], &s["min_security_counter"])
    );

    // Upload v2 with the link cut after 5 chunks. v2 has v2x's header but is another image (its
    // digest and length differ): the device starts it afresh (offset 0) instead of resuming over
    // v2x's prefix (issue 16). After the cut the client reconnects, and the device resumes v2 from
    // the start of the last sector it wrote.
    drop_after.store(1 + 2 + 5, Ordering::SeqCst); // info, status, begin, then 5 chunks
    let up: serde_json::Value = serde_json::from_str(&ok(
        dir,
        &[
            "serial",
            "--tcp",
            a,
            "--timeout",
            "1",
            "upload",
            "v2-b.bin",
            "--activate",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(
        drop_after.load(Ordering::SeqCst),
        0,
        "the link was cut during the upload"
    );
    assert_eq!(up["activated"], true);
    assert_eq!(
        up["resumed_from"], 0,
        "another image's prefix is never resumed: {up}"
    );
    // The device lost its session with the link: it resumed from the last sector start, so some
    // bytes went twice.
    assert!(up["wire_bytes"].as_u64().unwrap() > up["bytes"].as_u64().unwrap());
    let s = status_json(dir, a);
    assert_eq!(s["banks"]["B"]["status"], "pending");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(dir, &["inspect", "v2-b.bin", "--json"])).unwrap();
    let digest = inspect.to_string();
    assert!(
        digest.contains(s["banks"]["B"]["digest"].as_str().unwrap()),
        "bank B holds v2"
    );
    assert_eq!(s["preferred"], "B");

    // Reboot → trial of B; confirm; minimum counter rises.
    ok(dir, &["serial", "--tcp", a, "reboot"]);
    let s = status_json(dir, a);
    assert_eq!(s["banks"]["B"]["attempts_left"], 2);
    ok(dir, &["serial", "--tcp", a, "confirm"]);
    let s = status_json(dir, a);
    assert_eq!(s["banks"]["B"]["status"], "confirmed");
    assert_eq!(s["min_security_counter"], 1);

    // A downgrade is refused (checked before sending).
    let out = twinbank(dir, &["serial", "--tcp", a, "upload", "old-a.bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("security counter"),
        "{out:?}"
    );

    // Operator rollback to A, then forward to B again.
    ok(
        dir,
        &["serial", "--tcp", a, "rollback", "--yes", "--reboot"],
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(dir, &["serial", "--tcp", a, "info", "--json"])).unwrap();
    assert_eq!(
        (info["running"].as_str(), info["running_version"].as_str()),
        (Some("A"), Some("1.0.0+0"))
    );
    ok(
        dir,
        &["serial", "--tcp", a, "rollback", "--yes", "--reboot"],
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(dir, &["serial", "--tcp", a, "info", "--json"])).unwrap();
    assert_eq!(
        (info["running"].as_str(), info["running_version"].as_str()),
        (Some("B"), Some("2.0.0+0"))
    );
    // Confirm when nothing is on trial: a typed refusal, exit 1.
    let out = twinbank(dir, &["serial", "--tcp", a, "reject"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not on trial"),
        "{out:?}"
    );
    // No device: a clear message after the tries.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    let out = twinbank(
        dir,
        &[
            "serial",
            "--tcp",
            &dead_addr,
            "--timeout",
            "0.2",
            "--tries",
            "2",
            "status",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no response from device on tcp:"),
        "{out:?}"
    );
}
