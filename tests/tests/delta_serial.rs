//! `twinbank delta`, `twinbank inspect PATCH` and `twinbank serial upload --delta-from` against an
//! in-process device (the device crate's protocol server with a delta applier, over the QEMU
//! board's layout on a strict flash, behind a TCP socket), without QEMU: the patch is used when
//! the device runs a local image, the fallbacks say why, a link cut mid-patch resumes, and a
//! patch refused by the device changes nothing. (Under QEMU: qemu_delta.rs.)

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use twinbank::board::BoardDescription;
use twinbank::delta::Applier;
use twinbank::image::encode::trusted_key_from_pem;
use twinbank::protocol::server::OUT_FRAME;
use twinbank::protocol::{FrameDecoder, Server};
use twinbank::testing::{synthetic_firmware, StrictFlash};
use twinbank::{boot, Bank, Config, TrustedKey, Updater};
use twinbank_tests::{host_bin, workspace};

type Flash = StrictFlash<4, 4096>;

/// Serves the protocol on `listener` (one connection at a time; the server and its RAM live on
/// across connections, as on a device whose UART a host reconnects to), with a delta applier
/// when `delta`. A `Reboot` re-runs the boot decision. After `drop_after` requests, the
/// connection is cut once. Bytes programmed since the start are kept in `programmed`.
fn fake_device(
    listener: TcpListener,
    mut flash: Flash,
    config: Config<'static>,
    delta: bool,
    drop_after: Arc<AtomicU32>,
    programmed: Arc<AtomicU32>,
) {
    let mut running = boot::decide(&mut flash, &config).expect("boots").bank;
    let mut applier = Applier::new();
    loop {
        let up = Updater::new(&mut flash, config, running).unwrap();
        let mut server = if delta {
            Server::with_delta(up, config, &mut applier)
        } else {
            Server::new(up, config)
        };
        let mut reboot = false;
        while !reboot {
            let Ok((mut sock, _)) = listener.accept() else {
                return;
            };
            let mut dec = FrameDecoder::new();
            let mut out = vec![0u8; OUT_FRAME];
            let mut buf = [0u8; 2048];
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
                            server.handle_frame(dec.frame(len), &mut out)
                        }
                        Some(Err(e)) => server.frame_error(e, &mut out),
                        None => continue,
                    };
                    if sock.write_all(&out[..len]).is_err() {
                        break 'conn;
                    }
                    reboot |= server.reboot_requested();
                }
                if reboot {
                    break;
                }
            }
            let written = server.updater().flash_mut().counters.bytes_written;
            programmed.store(written as u32, Ordering::SeqCst);
        }
        running = boot::decide(&mut flash, &config).expect("boots").bank;
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

fn ok(dir: &Path, args: &[&str]) -> Output {
    let out = twinbank(dir, args);
    assert!(out.status.success(), "twinbank {args:?} failed");
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// A directory with a key, the board, and signed images: v1 (bank A, the factory image), v2 (bank
/// B, v1's program with one function grown), `noise` (bank B, random: no patch helps).
struct Setup {
    tmp: tempfile::TempDir,
    config: Config<'static>,
    layout: twinbank::Layout,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let board = workspace().join("twinbank.toml");
        std::fs::copy(&board, dir.join("twinbank.toml")).unwrap();
        let desc = BoardDescription::load(&board).unwrap();
        let layout = desc.layout().unwrap();
        let hdr = desc.image.header_size as u32;
        ok(dir, &["keygen", "-o", "key.pem"]);
        let a = layout.bank_address(Bank::A) + hdr;
        let b = layout.bank_address(Bank::B) + hdr;
        std::fs::write(dir.join("v1.raw"), synthetic_firmware(a, 11, None)).unwrap();
        std::fs::write(
            dir.join("v2.raw"),
            synthetic_firmware(b, 11, Some((30, 40))),
        )
        .unwrap();
        let mut x = 0x9e37_79b9u32;
        // Large enough that the LZ's literal runs cost more than the header padding saves.
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        std::fs::write(dir.join("noise.raw"), noise).unwrap();
        for (raw, bank, ver, out) in [
            ("v1.raw", "A", "1.0.0", "v1-a.bin"),
            ("v2.raw", "B", "2.0.0", "v2-b.bin"),
            ("noise.raw", "B", "2.1.0", "noise-b.bin"),
        ] {
            ok(
                dir,
                &[
                    "sign",
                    "-k",
                    "key.pem",
                    "--version",
                    ver,
                    "--security-counter",
                    "1",
                    "--bank",
                    bank,
                    "--board-ids",
                    raw,
                    "-o",
                    out,
                ],
            );
        }
        std::fs::create_dir(dir.join("released")).unwrap();
        std::fs::copy(dir.join("v1-a.bin"), dir.join("released/v1-a.bin")).unwrap();
        std::fs::write(dir.join("released/notes.txt"), "not an image").unwrap();
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
        let pem = std::fs::read_to_string(dir.join("key.pem")).unwrap();
        let keys: &'static [TrustedKey] =
            Box::leak(Box::new([trusted_key_from_pem(&pem).unwrap()]));
        let config = Config {
            layout,
            keys,
            ids: desc.ids().unwrap(),
            attempts: desc.attempts().unwrap(),
        };
        Setup {
            tmp,
            config,
            layout,
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A device on a copy of the factory flash: (address, cut trigger, bytes programmed).
    fn device(&self, delta: bool) -> (String, Arc<AtomicU32>, Arc<AtomicU32>) {
        let flash = Flash::from_bytes(&std::fs::read(self.dir().join("flash.bin")).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let drop_after = Arc::new(AtomicU32::new(0));
        let programmed = Arc::new(AtomicU32::new(0));
        let (d, p, c) = (drop_after.clone(), programmed.clone(), self.config);
        std::thread::spawn(move || fake_device(listener, flash, c, delta, d, p));
        (addr, drop_after, programmed)
    }
}

#[test]
fn delta_and_inspect_make_and_describe_a_patch() {
    let s = Setup::new();
    let dir = s.dir();
    let out = ok(
        dir,
        &[
            "delta",
            "--from",
            "v1-a.bin",
            "--to",
            "v2-b.bin",
            "-o",
            "v1-v2.patch",
            "--json",
        ],
    );
    let j = json(&out);
    let image_len = std::fs::metadata(dir.join("v2-b.bin")).unwrap().len();
    let patch_len = std::fs::metadata(dir.join("v1-v2.patch")).unwrap().len();
    assert_eq!(j["patch_bytes"], patch_len);
    assert!(patch_len * 10 < image_len, "{patch_len} of {image_len}");
    assert_eq!(j["base_version"], "1.0.0+0");
    assert_eq!(j["target_version"], "2.0.0+0");

    let i = json(&ok(dir, &["inspect", "v1-v2.patch", "--json"]));
    assert_eq!(i["format"], "twinbank patch");
    assert_eq!(i["target"]["version"], "2.0.0+0");
    assert_eq!(i["target"]["size"], image_len);
    assert_eq!(
        i["base"]["address"],
        format!("{:#010x}", s.layout.bank_address(Bank::A))
    );
    assert_eq!(i["normalised"], true);
    assert!(i["segments"].as_u64().unwrap() > 0, "{i}");
    assert!(i["ops"]["copy"]["bytes"].as_u64().unwrap() > image_len / 2);
    let text = String::from_utf8_lossy(&ok(dir, &["inspect", "v1-v2.patch"]).stdout).into_owned();
    assert!(text.contains("twinbank patch"), "{text}");
    assert!(text.contains("% of the target"), "{text}");

    // A damaged patch is described as such (exit 2), and the inputs must be signed images.
    let mut bad = std::fs::read(dir.join("v1-v2.patch")).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    std::fs::write(dir.join("bad.patch"), &bad).unwrap();
    let out = twinbank(dir, &["inspect", "bad.patch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a valid patch"),
        "{}",
        stderr(&out)
    );
    let out = twinbank(
        dir,
        &[
            "delta", "--from", "v1.raw", "--to", "v2-b.bin", "-o", "x.patch",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.join("x.patch").exists(), "no output on failure");
}

#[test]
fn upload_sends_a_patch_and_the_device_activates_the_image() {
    let s = Setup::new();
    let dir = s.dir();
    let (addr, _, programmed) = s.device(true);
    let a = addr.as_str();
    let out = ok(
        dir,
        &[
            "serial",
            "--tcp",
            a,
            "upload",
            "v2-b.bin",
            "--delta-from",
            "released",
            "--reboot",
            "--json",
        ],
    );
    let j = json(&out);
    let image_len = std::fs::metadata(dir.join("v2-b.bin")).unwrap().len();
    assert_eq!(j["activated"], true);
    assert!(
        j["delta"]["base"].as_str().unwrap().ends_with("v1-a.bin"),
        "{j}"
    );
    assert!(
        j["wire_bytes"].as_u64().unwrap() * 10 < image_len,
        "a tenth of the image on the wire at most: {j}"
    );
    assert!(stderr(&out).contains("as a patch from"), "{}", stderr(&out));
    let st = json(&ok(dir, &["serial", "--tcp", a, "status", "--json"]));
    assert_eq!(st["banks"]["B"]["status"], "pending");
    assert_eq!(st["banks"]["B"]["version"], "2.0.0+0");
    assert_eq!(st["preferred"], "B");
    ok(dir, &["serial", "--tcp", a, "confirm"]);
    let st = json(&ok(dir, &["serial", "--tcp", a, "status", "--json"]));
    assert_eq!(st["banks"]["B"]["status"], "confirmed");
    // Each image byte programmed once (units of 0xff are skipped): not more than the image.
    assert!(programmed.load(Ordering::SeqCst) as u64 <= image_len + 1024);
}

#[test]
fn upload_falls_back_to_the_whole_image_and_says_why() {
    let s = Setup::new();
    let dir = s.dir();
    std::fs::create_dir(dir.join("empty")).unwrap();
    for (delta_from, device_delta, image, why) in [
        (
            "empty",
            true,
            "v2-b.bin",
            "no image in empty is the one the device runs",
        ),
        (
            "v2-b.bin",
            true,
            "v2-b.bin",
            "v2-b.bin is not the image the device runs",
        ),
        (
            "released",
            true,
            "noise-b.bin",
            "would not be smaller than the image",
        ),
        (
            "released",
            false,
            "v2-b.bin",
            "the device does not apply patches",
        ),
    ] {
        let (addr, _, _) = s.device(device_delta);
        let out = ok(
            dir,
            &[
                "serial",
                "--tcp",
                &addr,
                "upload",
                image,
                "--delta-from",
                delta_from,
                "--activate",
                "--json",
            ],
        );
        let err = stderr(&out);
        assert!(err.contains("full upload: "), "{err}");
        assert!(err.contains(why), "want {why:?} in {err}");
        let j = json(&out);
        assert_eq!(j["activated"], true);
        assert!(j["delta"].is_null(), "{j}");
    }
}

#[test]
fn a_link_cut_mid_patch_resumes_where_the_body_stopped() {
    let s = Setup::new();
    let dir = s.dir();
    let (addr, drop_after, _) = s.device(true);
    // Six requests before the body (info + status to stage, info for the chunk size, info +
    // status for the base, DeltaBegin), three chunks of 16 bytes, and the link is cut at the
    // fourth; with one try the tool gives up.
    drop_after.store(6 + 3 + 1, Ordering::SeqCst);
    let args = [
        "serial",
        "--tcp",
        &addr,
        "--timeout",
        "0.5",
        "--tries",
        "1",
        "upload",
        "v2-b.bin",
        "--delta-from",
        "released",
        "--activate",
        "--chunk",
        "16",
        "--json",
    ];
    let out = twinbank(dir, &args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The device still holds the patch: the next run goes on from its fourth chunk (byte 48).
    let out = ok(dir, &args);
    let err = stderr(&out);
    assert!(err.contains("resuming the patch at byte 48"), "{err}");
    let j = json(&out);
    assert_eq!(j["resumed_from"], 48);
    assert_eq!(j["activated"], true);
}

#[test]
fn a_patch_for_another_base_is_refused_and_changes_nothing() {
    let s = Setup::new();
    let dir = s.dir();
    // A patch from v2 (bank B) to v1: its base is not what the device runs.
    ok(
        dir,
        &[
            "delta",
            "--from",
            "v2-b.bin",
            "--to",
            "v1-a.bin",
            "-o",
            "wrong.patch",
        ],
    );
    let (addr, _, programmed) = s.device(true);
    let before = json(&ok(dir, &["serial", "--tcp", &addr, "status", "--json"]));
    // Send it by hand, as a host that does not check would.
    let patch = std::fs::read(dir.join("wrong.patch")).unwrap();
    let req = twinbank::protocol::Request::delta_begin(&patch).unwrap();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    let mut scratch = vec![0u8; twinbank::protocol::MAX_FRAME];
    let mut frame = vec![0u8; twinbank::protocol::MAX_FRAME + 8];
    let n = twinbank::protocol::encode_frame(
        &twinbank::protocol::Envelope { seq: 7, body: req },
        &mut scratch,
        &mut frame,
    )
    .unwrap();
    sock.write_all(&frame[..n]).unwrap();
    let mut rx = Vec::new();
    let mut buf = [0u8; 512];
    let answer = loop {
        let k = sock.read(&mut buf).unwrap();
        assert!(k > 0, "the device closed the link");
        rx.extend_from_slice(&buf[..k]);
        if let Some(end) = rx.iter().skip(1).position(|&b| b == 0) {
            let mut f = rx[1..=end].to_vec();
            break twinbank::protocol::decode_frame::<
                twinbank::protocol::Envelope<twinbank::protocol::Response>,
            >(&mut f)
            .unwrap();
        }
    };
    drop(sock);
    match answer.body {
        twinbank::protocol::Response::Error(twinbank::protocol::message::RemoteError::Delta(
            twinbank::delta::DeltaError::WrongBase { .. },
        )) => {}
        other => panic!("{other:?}"),
    }
    let after = json(&ok(dir, &["serial", "--tcp", &addr, "status", "--json"]));
    assert_eq!(before, after);
    assert_eq!(programmed.load(Ordering::SeqCst), 0, "nothing programmed");
}
