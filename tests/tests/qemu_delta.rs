//! Delta updates with real firmware builds and under QEMU.
//!
//! - round trips for pairs of demo app builds: v1 (bank A) → v2 (bank B), → v2 with a one-line
//!   change, and v1 built against heapless 0.7 → v2 (a changed dependency): the image rebuilt
//!   from the patch is byte-identical to the signed target, and the patch is a few percent of it;
//! - over the UART: `twinbank serial upload --delta-from`, trial boot, operator confirm;
//! - a patch whose base is not the running image is refused before any erase;
//! - QEMU killed (`kill -9`) in the middle of a patch: after power-on the patch is sent again
//!   from its start, the device regenerates what the bank holds without programming it again,
//!   and the new image boots;
//! - the applier applies a patch from a host file (`delta=PATH`) and reports its cost.

mod qemu_support;
use qemu_support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};
use twinbank::delta::encode::{make_patch, EncodeOptions};
use twinbank::delta::{apply_to_slice, DeltaError};
use twinbank::protocol::message::{RemoteError, Request, Response};
use twinbank::protocol::{decode_frame, encode_frame, Envelope, MAX_FRAME};
use twinbank::Bank;

fn device(name: &str) -> Device {
    Device::factory(&format!("delta/{name}"))
}

/// Writes `image` into `dir/name`; returns the path as a string.
fn save(dir: &std::path::Path, name: &str, image: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, image).unwrap();
    p.display().to_string()
}

/// v2 (bank B, counter 2) with `tail` pseudo-random bytes after the app: a target whose patch
/// is large enough to be interrupted.
fn v2_with_random_tail(tail: usize) -> Vec<u8> {
    use twinbank_host::sign::{sign_firmware, SignPlan};
    let f = fw();
    let plan = SignPlan::for_bank(&f.board, Bank::B, "2.0.0".parse().unwrap(), 2).unwrap();
    let mut input =
        twinbank_host::input::load(&f.build.elf("app-v2-B"), plan.slot_size as u64).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    input.data.extend((0..tail).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    let key = twinbank_host::keys::signing_key(&f.trusted).unwrap();
    sign_firmware(&input, &plan, &key, "v2+tail").unwrap().image
}

#[test]
fn patches_of_real_builds_rebuild_the_target_byte_for_byte() {
    let f = fw();
    let v1 = f.v1();
    let v1_old_dep = f.image_with("app-v1-A-heapless07", Bank::A, "1.0.0", 1, &f.trusted);
    let v2 = f.v2();
    let v2_one_line = f.image_with("app-v2-B-one-line", Bank::B, "2.0.0", 2, &f.trusted);
    for (what, base, target, at_most_percent) in [
        ("version bump", &v1, &v2, 5.0),
        ("one-line change", &v1, &v2_one_line, 10.0),
        ("changed dependency", &v1_old_dep, &v2, 10.0),
    ] {
        let p = make_patch(base, target, &EncodeOptions::default()).unwrap();
        let mut out = vec![0u8; target.len()];
        assert_eq!(
            apply_to_slice(base, &p.bytes, &mut out),
            Ok(target.len()),
            "{what}"
        );
        assert!(out == *target, "{what}: the rebuilt image differs");
        let percent = 100.0 * p.bytes.len() as f64 / target.len() as f64;
        eprintln!(
            "{what}: patch {} bytes, {percent:.2} % of {} bytes, {} segments",
            p.bytes.len(),
            target.len(),
            p.segments
        );
        assert!(percent <= at_most_percent, "{what}: {percent:.2} %");
        // The patch is for that base only.
        let other = if std::ptr::eq(base, &v1) {
            &v1_old_dep
        } else {
            &v1
        };
        assert!(matches!(
            apply_to_slice(other, &p.bytes, &mut out),
            Err(DeltaError::WrongBase { .. })
        ));
    }
}

#[test]
fn delta_update_over_the_uart_trial_and_confirm() {
    let f = fw();
    let dev = device("uart");
    let released = dev.dir.join("released");
    std::fs::create_dir_all(&released).unwrap();
    save(&released, "v1.bin", &f.v1());
    let v2 = save(&dev.dir, "v2.bin", &f.v2());
    let mut d = dev.serve(&["manual-confirm"]);
    assert!(
        d.text().contains("delta applier"),
        "the app reports the applier's RAM: {}",
        d.text()
    );
    let before = d.mark();
    let released = released.display().to_string();
    let up = d.ok(&[
        "upload",
        &v2,
        "--delta-from",
        &released,
        "--reboot",
        "--json",
    ]);
    let j = up.json();
    assert_eq!(j["activated"], true);
    assert!(
        j["delta"]["base"].as_str().unwrap().ends_with("v1.bin"),
        "{j}"
    );
    let image_len = f.v2().len() as u64;
    assert!(
        j["wire_bytes"].as_u64().unwrap() * 20 < image_len,
        "less than 5 % of the image on the wire: {j}"
    );
    assert!(d.wait_since(before, "app: on trial, waiting for the operator to confirm"));
    let t = d.text_since(before);
    assert!(t.contains("twinbank: boot B 2.0.0+0 trial"), "{t}");
    d.ok(&["confirm"]);
    let s = d.status();
    assert_eq!(s["banks"]["B"]["status"], "confirmed");
    assert_eq!(
        s["banks"]["A"]["status"], "confirmed",
        "v1 kept as the fallback"
    );
    drop(d);
    let r = dev.report();
    assert_eq!(
        confirmed(r.state.as_ref().unwrap(), Bank::B),
        Some(f.id(Bank::B, &f.v2(), &f.keys))
    );
    assert!(r.images[0].is_ok(), "v1 intact: {:?}", r.images);
}

/// Sends one request over a raw connection to the relay and returns the answer.
fn call(addr: &str, seq: u16, request: &Request<'_>) -> Response {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut scratch = vec![0u8; MAX_FRAME];
    let mut frame = vec![0u8; MAX_FRAME + 8];
    let n = encode_frame(
        &Envelope {
            seq,
            body: request.clone(),
        },
        &mut scratch,
        &mut frame,
    )
    .unwrap();
    s.write_all(&[0]).unwrap();
    s.write_all(&frame[..n]).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut rx = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < end {
        if let Ok(k) = s.read(&mut buf) {
            rx.extend_from_slice(&buf[..k]);
        }
        while let Some(i) = rx.iter().position(|&b| b == 0) {
            let mut seg: Vec<u8> = rx.drain(..=i).collect();
            seg.pop();
            if let Ok(e) = decode_frame::<Envelope<Response>>(&mut seg) {
                if e.seq == seq {
                    return e.body;
                }
            }
        }
    }
    panic!("no answer");
}

#[test]
fn a_patch_for_another_base_is_refused_before_any_erase() {
    let f = fw();
    let dev = device("wrong-base");
    // Bank B holds an old image (recorded empty): an erase would show.
    let old = f.image_with("app-v2-B", Bank::B, "1.5.0", 1, &f.trusted);
    dev.place(Bank::B, &old);
    let before = dev.read();
    let base = f.image_with("app-v1-A-heapless07", Bank::A, "1.0.0", 1, &f.trusted);
    let patch = make_patch(&base, &f.v2(), &EncodeOptions::default())
        .unwrap()
        .bytes;
    let d = dev.serve(&[]);
    let status = d.status();
    let answer = call(
        &d.addr(),
        31,
        &Request::delta_begin(&patch).expect("a well-formed patch"),
    );
    assert!(
        matches!(
            answer,
            Response::Error(RemoteError::Delta(DeltaError::WrongBase { .. }))
        ),
        "{answer:?}"
    );
    assert_eq!(d.status(), status, "the state is unchanged");
    drop(d);
    let after = dev.read();
    let layout = f.board.layout().unwrap();
    let b = layout.bank(Bank::B);
    let range = b.offset.0 as usize..(b.offset.0 + b.size.0) as usize;
    assert!(
        after[range.clone()] == before[range],
        "bank B was not erased nor written"
    );
}

#[test]
fn qemu_killed_mid_patch_then_the_patch_is_sent_again_and_boots() {
    let f = fw();
    let dev = device("kill9");
    let released = dev.dir.join("released");
    std::fs::create_dir_all(&released).unwrap();
    save(&released, "v1.bin", &f.v1());
    let target = v2_with_random_tail(96 * 1024);
    let p = save(&dev.dir, "v2-tail.bin", &target);
    let released = released.display().to_string();

    let d = dev.serve(&[]);
    let mut child = d
        .command(&["upload", &p, "--delta-from", &released, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(err).lines() {
        let line = line.unwrap();
        eprintln!("  (upload) {line}");
        let pct = line
            .strip_prefix("upload: ")
            .and_then(|r| r.split('%').next())
            .and_then(|n| n.parse::<u32>().ok());
        seen.push(line);
        if pct.is_some_and(|p| (40..100).contains(&p)) {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("as a patch from")),
        "{seen:?}"
    );
    d.kill9(); // power cut in the middle of the patch
    let _ = child.kill();
    let _ = child.wait();

    let mut d = dev.serve(&[]);
    assert!(
        d.text().contains("twinbank: boot A 1.0.0+0 normal"),
        "{}",
        d.text()
    );
    assert_eq!(d.status()["banks"]["B"]["status"], "receiving");
    let before = d.mark();
    let up = d.ok(&[
        "upload",
        &p,
        "--delta-from",
        &released,
        "--reboot",
        "--wait-confirm",
        "--json",
    ]);
    let j = up.json();
    assert_eq!(
        j["resumed_from"], 0,
        "after a power cut the patch starts again"
    );
    assert!(
        up.stderr.contains("bank B confirmed 2.0.0+0"),
        "{}",
        up.stderr
    );
    // The flash statistics of this power-on (printed at the boot after the upload): the bytes
    // the first attempt had written were compared, not programmed again.
    assert!(d.wait_since(before, "app: serving the serial protocol"));
    let t = d.text_since(before);
    let programmed = t
        .lines()
        .filter_map(|l| l.split("bytes=").nth(1))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .next_back()
        .expect("a flash stats line");
    assert!(
        programmed < target.len() as u64 * 4 / 5,
        "{programmed} bytes programmed for a {} byte image: the first part was not redone",
        target.len()
    );
    drop(d);
    let r = dev.report();
    assert_eq!(
        confirmed(r.state.as_ref().unwrap(), Bank::B),
        Some(f.id(Bank::B, &target, &f.keys))
    );
}

#[test]
fn the_app_applies_a_patch_from_a_host_file_and_reports_its_cost() {
    let f = fw();
    let dev = device("host-file");
    let patch = make_patch(&f.v1(), &f.v2(), &EncodeOptions::default())
        .unwrap()
        .bytes;
    let p = dev.dir.join("v1-v2.patch");
    std::fs::write(&p, &patch).unwrap();
    let o = dev.run(&[&format!("delta={}", p.display()), "halt"]);
    expect_in_order(
        &o,
        &[
            "app: applying a patch of",
            "app: delta applied: body",
            "app: installed 2.0.0+0 into bank B, resetting",
            "twinbank: boot B 2.0.0+0 trial",
            "app: confirmed",
        ],
    );
    expect_exit_ok(&o);
    let s = dev.state();
    assert_eq!(
        confirmed(&s, Bank::B),
        Some(f.id(Bank::B, &f.v2(), &f.keys))
    );
}
