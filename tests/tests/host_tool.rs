//! End-to-end tests of the `twinbank` host tool binary: round trips (keygen → sign from ELF, BIN
//! and HEX → verify → inspect --json), refusals, provisioning read back through the device crate,
//! and interoperability with MCUboot's `imgtool` and with OpenSSL keys.
//!
//! The binary is built with `cargo build -p twinbank-host` on first use (or taken from
//! `TWINBANK_BIN`). `imgtool` is `TWINBANK_IMGTOOL` or `imgtool` on PATH; when it is missing the
//! interop tests FAIL unless `TWINBANK_SKIP_IMGTOOL=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use twinbank::board::BoardDescription;
use twinbank::image::encode::trusted_key_from_pem;
use twinbank::state::StateStore;
use twinbank::testing::StrictFlash;
use twinbank::{Bank, BankState, BootReason, Config};

fn workspace() -> PathBuf {
    twinbank_tests::workspace()
}

fn board_path() -> PathBuf {
    workspace().join("twinbank.toml")
}

fn board() -> BoardDescription {
    BoardDescription::load(&board_path()).unwrap()
}

fn bin() -> &'static Path {
    twinbank_tests::host_bin()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run twinbank");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !r.stderr.contains("panicked"),
        "twinbank panicked on {args:?}: {}",
        r.stderr
    );
    r
}

/// Runs in `dir`, which holds a copy of the workspace board description.
fn ok(dir: &Path, args: &[&str]) -> Run {
    let r = run_in(dir, args);
    assert_eq!(
        r.code, 0,
        "twinbank {args:?} failed:\n{}\n{}",
        r.stdout, r.stderr
    );
    r
}

/// Expects exit `code` and `needle` in the output.
fn fails(dir: &Path, code: i32, needle: &str, args: &[&str]) -> Run {
    let r = run_in(dir, args);
    assert_eq!(
        r.code, code,
        "twinbank {args:?}: expected exit {code}:\n{}\n{}",
        r.stdout, r.stderr
    );
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains(needle),
        "twinbank {args:?}: expected {needle:?} in:\n{all}"
    );
    r
}

fn tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(board_path(), d.path().join("twinbank.toml")).unwrap();
    d
}

const VID: &str = "5a1a2b3c-0d0e-4f10-8112-131415161718";
const CID: &str = "c1a55e00-0000-4000-8000-0000000a0385";

/// A Cortex-M style payload linked at `addr`: SP, Thumb reset vector inside, then a pattern.
fn payload(addr: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    p[0..4].copy_from_slice(&0x2000_8000u32.to_le_bytes());
    p[4..8].copy_from_slice(&(addr + 0x41).to_le_bytes());
    p
}

/// A minimal ELF32 ARM executable: `text` at physical (= virtual) `addr`, `data` with a RAM
/// virtual address but loaded (physical address) right after the text, and a .bss segment (no
/// file bytes, must be ignored).
fn elf(addr: u32, text: &[u8], data: &[u8]) -> Vec<u8> {
    let phnum = 3u16;
    let hdr = 52usize;
    let ph_size = 32usize;
    let text_off = hdr + ph_size * phnum as usize;
    let data_off = text_off + text.len();
    let mut e = Vec::new();
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&40u16.to_le_bytes()); // EM_ARM
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(addr + 0x41).to_le_bytes()); // entry
    e.extend_from_slice(&(hdr as u32).to_le_bytes()); // phoff
    e.extend_from_slice(&0u32.to_le_bytes()); // shoff
    e.extend_from_slice(&0x0500_0200u32.to_le_bytes());
    e.extend_from_slice(&(hdr as u16).to_le_bytes());
    e.extend_from_slice(&(ph_size as u16).to_le_bytes());
    e.extend_from_slice(&phnum.to_le_bytes());
    e.extend_from_slice(&40u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    let mut ph = |off: usize, vaddr: u32, paddr: u32, filesz: usize, memsz: usize| {
        for v in [
            1u32,
            off as u32,
            vaddr,
            paddr,
            filesz as u32,
            memsz as u32,
            6,
            4,
        ] {
            e.extend_from_slice(&v.to_le_bytes());
        }
    };
    let data_lma = addr + text.len() as u32;
    ph(text_off, addr, addr, text.len(), text.len());
    ph(data_off, 0x2000_0000, data_lma, data.len(), data.len());
    ph(0, 0x2000_1000, 0x2000_1000, 0, 0x400); // .bss
    e.extend_from_slice(text);
    e.extend_from_slice(data);
    e
}

/// Intel HEX of `bytes` at `addr` (written here, independently of the tool's writer).
fn to_hex(addr: u32, bytes: &[u8]) -> String {
    let mut records = Vec::new();
    let mut upper = None;
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let a = addr + (i * 16) as u32;
        if upper != Some(a >> 16) {
            upper = Some(a >> 16);
            records.push(ihex::Record::ExtendedLinearAddress((a >> 16) as u16));
        }
        records.push(ihex::Record::Data {
            offset: a as u16,
            value: chunk.to_vec(),
        });
    }
    records.push(ihex::Record::EndOfFile);
    ihex::create_object_file_representation(&records).unwrap()
}

/// Segments of an Intel HEX file, via the `ihex` crate.
fn read_hex(text: &str) -> Vec<(u32, Vec<u8>)> {
    let mut upper = 0u32;
    let mut out = Vec::new();
    for r in ihex::Reader::new(text) {
        match r.unwrap() {
            ihex::Record::ExtendedLinearAddress(u) => upper = (u as u32) << 16,
            ihex::Record::Data { offset, value } => out.push((upper + offset as u32, value)),
            _ => {}
        }
    }
    out
}

fn bank_addr(bank: Bank) -> u32 {
    board().layout().unwrap().bank_address(bank)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", r.stdout))
}

#[test]
fn keygen_writes_owner_only_and_never_overwrites() {
    let d = tempdir();
    let k = d.path().join("key.pem");
    ok(d.path(), &["keygen", "-o", s(&k)]);
    let pem = std::fs::read_to_string(&k).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    fails(d.path(), 2, "--force", &["keygen", "-o", s(&k)]);
    assert_eq!(
        std::fs::read_to_string(&k).unwrap(),
        pem,
        "key was overwritten"
    );
    ok(d.path(), &["keygen", "-o", s(&k), "--force"]);
    assert_ne!(std::fs::read_to_string(&k).unwrap(), pem);

    // getpub: PEM, raw, rust, c, json agree with the device crate's view of the key.
    let tk = trusted_key_from_pem(&std::fs::read_to_string(&k).unwrap()).unwrap();
    let pem_pub = ok(d.path(), &["getpub", "-k", s(&k)]).stdout;
    assert!(pem_pub.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(trusted_key_from_pem(&pem_pub).unwrap(), tk);
    let raw = d.path().join("k.raw");
    ok(
        d.path(),
        &["getpub", "-k", s(&k), "--format", "raw", "-o", s(&raw)],
    );
    assert_eq!(std::fs::read(&raw).unwrap(), tk.0);
    let j = json(&ok(d.path(), &["getpub", "-k", s(&k), "--format", "json"]));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(j["keyhash"], hex(&tk.keyhash()));
    let rust = ok(d.path(), &["getpub", "-k", s(&k), "--format", "rust"]).stdout;
    assert!(rust.contains(&format!("0x{:02x},", tk.0[0])) && rust.contains("TrustedKey(["));
    let c = ok(d.path(), &["getpub", "-k", s(&k), "--format", "c"]).stdout;
    assert!(c.contains("ed25519_pub_key_len = 44"));
    fails(
        d.path(),
        2,
        "not an Ed25519 key",
        &["getpub", "-k", s(&d.path().join("twinbank.toml"))],
    );
}

#[test]
fn round_trip_elf_bin_hex_sign_verify_inspect() {
    let d = tempdir();
    let dir = d.path();
    let key = dir.join("key.pem");
    ok(dir, &["keygen", "-o", s(&key)]);
    let pay_a = bank_addr(Bank::A) + 0x400;
    let pay_b = bank_addr(Bank::B) + 0x400;

    // ELF linked for bank A (text + data loaded after it), HEX for bank B, BIN with --bank.
    let text = payload(pay_a, 5000);
    let data: Vec<u8> = (0..300).map(|i| i as u8).collect();
    std::fs::write(dir.join("app.elf"), elf(pay_a, &text, &data)).unwrap();
    std::fs::write(dir.join("app-b.hex"), to_hex(pay_b, &payload(pay_b, 4000))).unwrap();
    std::fs::write(dir.join("app.bin"), payload(pay_a, 3333)).unwrap();

    let common = [
        "-k",
        s(&key),
        "--security-counter",
        "5",
        "--vid",
        VID,
        "--cid",
        CID,
    ];
    let sign = |input: &str, out: &str, extra: &[&str], version: &str| {
        let mut args = vec!["sign", "--version", version];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        args.extend_from_slice(&[input, "-o", out, "--json"]);
        json(&ok(dir, &args))
    };
    // ELF: bank inferred from the load address; and explicitly.
    let j = sign("app.elf", "elf-a.bin", &[], "1.2.3+4");
    assert_eq!(j["input_type"], "ELF");
    assert_eq!(j["load_addr"], bank_addr(Bank::A));
    assert_eq!(j["payload_size"], 5300);
    sign("app.elf", "elf-a2.bin", &["--bank", "A"], "1.2.3+4");
    assert_eq!(
        std::fs::read(dir.join("elf-a.bin")).unwrap(),
        std::fs::read(dir.join("elf-a2.bin")).unwrap()
    );
    let j = sign("app-b.hex", "hex-b.hex", &["--bank", "B"], "1.3.0");
    assert_eq!(j["input_type"], "Intel HEX");
    assert_eq!(j["format"], "hex");
    let j = sign("app.bin", "bin-a.bin", &["--bank", "A"], "2.0.0+7");
    assert_eq!(j["input_type"], "raw binary");

    for (img, bank, version) in [
        ("elf-a.bin", "A", "1.2.3+4"),
        ("hex-b.hex", "B", "1.3.0+0"),
        ("bin-a.bin", "A", "2.0.0+7"),
    ] {
        let v = json(&ok(
            dir,
            &[
                "verify",
                "-k",
                s(&key),
                "--board-ids",
                "--bank",
                bank,
                "--min-security-counter",
                "5",
                img,
                "--json",
            ],
        ));
        assert_eq!(v["accepted"], true);
        assert_eq!(v["version"], version);
        assert_eq!(v["security_counter"], 5);
        let i = json(&ok(dir, &["inspect", img, "-k", s(&key), "--json"]));
        assert_eq!(i["hash"]["matches"], true);
        assert_eq!(i["hash"]["computed"], v["digest"]);
        assert_eq!(i["signature_valid"], true);
        assert_eq!(i["header"]["version"], version);
        assert_eq!(i["header"]["hdr_size"], 0x400);
        assert_eq!(i["header"]["flag_names"][0], "ROM_FIXED");
        let names: Vec<&str> = i["tlvs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["SEC_CNT", "UUID_VID", "UUID_CID", "SHA256", "KEYHASH", "ED25519"]
        );
        assert_eq!(i["tlvs"][1]["decoded"], VID);
    }
    // The human table names every field.
    let t = ok(dir, &["inspect", "elf-a.bin", "-k", s(&key)]).stdout;
    for f in [
        "load_addr",
        "hdr_size",
        "protect_tlv_size",
        "img_size",
        "flags",
        "version",
        "SEC_CNT",
        "KEYHASH",
        "valid",
    ] {
        assert!(t.contains(f), "{f} missing in:\n{t}");
    }
    // The ELF payload in the image is text ‖ data (loaded by physical address).
    let img = std::fs::read(dir.join("elf-a.bin")).unwrap();
    assert_eq!(&img[0x400..0x400 + 5000], &text[..]);
    assert_eq!(&img[0x400 + 5000..0x400 + 5300], &data[..]);
}

/// A signed image for bank A with ids and a counter, plus its key.
fn signed_fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("key.pem");
    ok(dir, &["keygen", "-o", s(&key)]);
    std::fs::write(
        dir.join("app.bin"),
        payload(bank_addr(Bank::A) + 0x400, 4096),
    )
    .unwrap();
    let img = dir.join("signed.bin");
    ok(
        dir,
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1.0.0",
            "--security-counter",
            "3",
            "--vid",
            VID,
            "--cid",
            CID,
            "--bank",
            "A",
            "app.bin",
            "-o",
            s(&img),
        ],
    );
    (key, img)
}

#[test]
fn refusals_are_specific() {
    let d = tempdir();
    let dir = d.path();
    let (key, img) = signed_fixture(dir);
    let good = std::fs::read(&img).unwrap();
    let st = twinbank::update::Manifest::read(
        &mut twinbank::flash::SliceFlash(&good),
        good.len() as u32,
    )
    .unwrap();
    let hashed = st.header.hashed_len() as usize;
    fn vargs<'a>(key: &'a str, file: &'a str) -> [&'a str; 5] {
        ["verify", "-k", key, "--board-ids", file]
    }
    let verify = |file: &'static str| vargs(s(&key), file);
    let tamper = |name: &str, at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x01;
        std::fs::write(dir.join(name), b).unwrap();
    };
    tamper("t-header.bin", 21); // version minor
    tamper("t-payload.bin", 0x400 + 100);
    tamper("t-prot.bin", 0x400 + 4096 + 8); // security counter value
    tamper("t-sig.bin", good.len() - 10);
    for f in ["t-header.bin", "t-payload.bin", "t-prot.bin"] {
        fails(dir, 1, "hash mismatch", &verify(f));
        fails(dir, 1, "hash mismatch", &["inspect", f]);
    }
    fails(dir, 1, "signature is invalid", &verify("t-sig.bin"));
    fails(
        dir,
        1,
        "no signature verifies",
        &["inspect", "t-sig.bin", "-k", s(&key)],
    );
    // Wrong key.
    let other = dir.join("other.pem");
    ok(dir, &["keygen", "-o", s(&other)]);
    fails(
        dir,
        1,
        "untrusted key",
        &["verify", "-k", s(&other), s(&img)],
    );
    // Truncated: inside the signature, and inside the payload.
    std::fs::write(dir.join("trunc1.bin"), &good[..good.len() - 20]).unwrap();
    std::fs::write(dir.join("trunc2.bin"), &good[..hashed - 100]).unwrap();
    fails(dir, 1, "truncated", &verify("trunc1.bin"));
    fails(dir, 1, "truncated", &verify("trunc2.bin"));
    fails(dir, 2, "truncated", &["inspect", "trunc1.bin"]);
    std::fs::write(dir.join("tiny.bin"), &good[..3]).unwrap();
    fails(dir, 2, "not an MCUboot image", &verify("tiny.bin"));
    // Policy: ids, counter, bank.
    fails(
        dir,
        1,
        "downgrade: security counter",
        &[
            "verify",
            "-k",
            s(&key),
            "--min-security-counter",
            "4",
            s(&img),
        ],
    );
    fails(
        dir,
        1,
        "another vendor",
        &["verify", "-k", s(&key), "--vid", CID, s(&img)],
    );
    fails(
        dir,
        1,
        "linked for 0x21010000 but the bank is at 0x21110000",
        &["verify", "-k", s(&key), "--bank", "B", s(&img)],
    );
    // Unknown file types.
    std::fs::write(dir.join("notes.txt"), "hello, not firmware\n").unwrap();
    fails(dir, 2, "unknown file type", &verify("notes.txt"));
    fails(
        dir,
        2,
        "unknown file type",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            "notes.txt",
            "-o",
            "x.bin",
        ],
    );
    fails(
        dir,
        2,
        "unknown file type",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            s(&img),
            "-o",
            "x.bin",
        ],
    );
    std::fs::write(
        dir.join("app.elf"),
        elf(bank_addr(Bank::A) + 0x400, &payload(0, 64), &[]),
    )
    .unwrap();
    fails(dir, 2, "ELF", &verify("app.elf"));
    std::fs::write(
        dir.join("broken.elf"),
        &elf(bank_addr(Bank::A) + 0x400, &payload(0, 64), &[])[..100],
    )
    .unwrap();
    fails(
        dir,
        2,
        "broken.elf",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "broken.elf",
            "-o",
            "x.bin",
        ],
    );
    std::fs::write(dir.join("bad.hex"), ":10000000FFFF\n").unwrap();
    fails(
        dir,
        2,
        "bad.hex: Intel HEX: line 1",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            "bad.hex",
            "-o",
            "x.bin",
        ],
    );
    // Bad key files and options.
    fails(
        dir,
        2,
        "twinbank.toml",
        &[
            "sign",
            "-k",
            "twinbank.toml",
            "--version",
            "1",
            "--bank",
            "A",
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
    let pubk = dir.join("pub.pem");
    ok(dir, &["getpub", "-k", s(&key), "-o", s(&pubk)]);
    fails(
        dir,
        2,
        "public key",
        &[
            "sign",
            "-k",
            s(&pubk),
            "--version",
            "1",
            "--bank",
            "A",
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
    fails(
        dir,
        2,
        "--bank A|B or --rom-fixed",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
    fails(
        dir,
        2,
        "MAJOR.MINOR",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1.2.3-rc1",
            "--bank",
            "A",
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
    fails(
        dir,
        2,
        "missing.toml",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--board",
            "missing.toml",
            "--bank",
            "A",
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
}

#[test]
fn sign_refuses_wrong_bank_misalignment_and_oversize() {
    let d = tempdir();
    let dir = d.path();
    let key = dir.join("key.pem");
    ok(dir, &["keygen", "-o", s(&key)]);
    let pay_b = bank_addr(Bank::B) + 0x400;
    std::fs::write(dir.join("b.elf"), elf(pay_b, &payload(pay_b, 2048), &[])).unwrap();
    let r = fails(
        dir,
        1,
        "0x21110400",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            "b.elf",
            "-o",
            "x.bin",
        ],
    );
    assert!(
        r.stderr.contains("0x21010400"),
        "must name both addresses: {}",
        r.stderr
    );
    assert!(!dir.join("x.bin").exists());
    // Linked for no bank at all.
    std::fs::write(
        dir.join("z.elf"),
        elf(0x0800_0000, &payload(0x0800_0000, 256), &[]),
    )
    .unwrap();
    fails(
        dir,
        1,
        "0x08000000",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "z.elf",
            "-o",
            "x.bin",
        ],
    );
    // Vector table not on the 1 KiB VTOR boundary.
    std::fs::write(dir.join("app.bin"), payload(0, 256)).unwrap();
    fails(
        dir,
        1,
        "not aligned",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            "--header-size",
            "0x200",
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
    // Oversize: payload fills the bank, TLVs do not fit; and a HEX spanning more than a bank.
    std::fs::write(dir.join("big.bin"), payload(0, 0x100000 - 0x400)).unwrap();
    fails(
        dir,
        1,
        "slot holds 1048576",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            "big.bin",
            "-o",
            "x.bin",
        ],
    );
    std::fs::write(dir.join("huge.bin"), payload(0, 0x100000 + 1)).unwrap();
    fails(
        dir,
        1,
        "slot",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            "huge.bin",
            "-o",
            "x.bin",
        ],
    );
    assert!(!dir.join("x.bin").exists());
}

#[test]
fn provisioned_flash_boots_bank_a_confirmed_and_survives_resets() {
    let d = tempdir();
    let dir = d.path();
    let key = dir.join("key.pem");
    ok(dir, &["keygen", "-o", s(&key)]);
    let pubk = dir.join("key.pub.pem");
    ok(dir, &["getpub", "-k", s(&key), "-o", s(&pubk)]);
    let pay_a = bank_addr(Bank::A) + 0x400;
    let pay_b = bank_addr(Bank::B) + 0x400;
    std::fs::write(
        dir.join("a.elf"),
        elf(pay_a, &payload(pay_a, 20_000), &[1, 2, 3]),
    )
    .unwrap();
    std::fs::write(dir.join("b.elf"), elf(pay_b, &payload(pay_b, 10_000), &[])).unwrap();
    let ids = ["--vid", VID, "--cid", CID];
    let mut sa = vec![
        "sign",
        "-k",
        s(&key),
        "--version",
        "1.0.0",
        "--security-counter",
        "2",
    ];
    sa.extend_from_slice(&ids);
    sa.extend_from_slice(&["a.elf", "-o", "a.bin"]);
    ok(dir, &sa);
    let mut sb = vec![
        "sign",
        "-k",
        s(&key),
        "--version",
        "0.9.0",
        "--security-counter",
        "1",
    ];
    sb.extend_from_slice(&ids);
    sb.extend_from_slice(&["b.elf", "-o", "b.hex"]);
    ok(dir, &sb);

    // The bootloader does not fit before the state region on this board: refused, nothing written.
    std::fs::write(dir.join("shim.bin"), [0u8, 1, 2, 3]).unwrap();
    fails(
        dir,
        2,
        "no room for a bootloader",
        &[
            "provision",
            "-k",
            s(&pubk),
            "--image-a",
            "a.bin",
            "--bootloader",
            "shim.bin",
            "-o",
            "flash.bin",
        ],
    );
    assert!(!dir.join("flash.bin").exists());
    // An image without the board's ids is refused before anything is written.
    ok(
        dir,
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "a.elf",
            "-o",
            "noids.bin",
        ],
    );
    fails(
        dir,
        1,
        "vendor id",
        &[
            "provision",
            "-k",
            s(&pubk),
            "--image-a",
            "noids.bin",
            "-o",
            "flash.bin",
        ],
    );
    // An image for bank B offered as bank A.
    fails(
        dir,
        1,
        "bank A",
        &[
            "provision",
            "-k",
            s(&pubk),
            "--image-a",
            "b.hex",
            "-o",
            "flash.bin",
        ],
    );
    let other = dir.join("other.pem");
    ok(dir, &["keygen", "-o", s(&other)]);
    fails(
        dir,
        1,
        "untrusted key",
        &[
            "provision",
            "-k",
            s(&other),
            "--image-a",
            "a.bin",
            "-o",
            "flash.bin",
        ],
    );
    assert!(!dir.join("flash.bin").exists());

    let j = json(&ok(
        dir,
        &[
            "provision",
            "-k",
            s(&pubk),
            "--image-a",
            "a.bin",
            "--image-b",
            "b.hex",
            "-o",
            "flash.bin",
            "--hex",
            "flash.hex",
            "--json",
        ],
    ));
    assert_eq!(j["banks"][0]["status"], "confirmed");
    assert_eq!(j["min_security_counter"], 1);
    let flash = std::fs::read(dir.join("flash.bin")).unwrap();
    let b = board();
    let layout = b.layout().unwrap();
    assert_eq!(
        flash.len(),
        b.flash.size as usize,
        "the QEMU flash file is the whole flash"
    );
    let a_img = std::fs::read(dir.join("a.bin")).unwrap();
    let off = layout.bank(Bank::A).offset.0 as usize;
    assert_eq!(&flash[off..off + a_img.len()], &a_img[..]);

    // The HEX (read with the independent `ihex` crate) holds exactly the non-erased contents.
    let mut from_hex = vec![0xFFu8; flash.len()];
    for (addr, data) in read_hex(&std::fs::read_to_string(dir.join("flash.hex")).unwrap()) {
        let o = (addr - layout.base_address()) as usize;
        from_hex[o..o + data.len()].copy_from_slice(&data);
    }
    assert!(from_hex == flash, "HEX and BIN outputs differ");

    // Read back through the device crate, as the shim would after the factory programmed it.
    let key_pem = std::fs::read_to_string(&pubk).unwrap();
    let keys = [trusted_key_from_pem(&key_pem).unwrap()];
    let config = Config {
        layout,
        keys: &keys,
        ids: b.ids().unwrap(),
        attempts: b.attempts().unwrap(),
    };
    let mut f = StrictFlash::<4, 4096>::from_bytes(&flash);
    let store = StateStore::open(&mut f, &layout).unwrap();
    let state = *store.current().expect("a valid state record");
    assert_eq!(state.preferred, Bank::A);
    assert!(matches!(state.bank(Bank::A), BankState::Confirmed(_)));
    assert!(matches!(state.bank(Bank::B), BankState::Confirmed(_)));
    for boot in 0..5 {
        let dcs = twinbank::decide(&mut f, &config).unwrap();
        assert_eq!(dcs.bank, Bank::A, "boot {boot}");
        assert_eq!(dcs.reason, BootReason::Normal, "boot {boot}");
        assert_eq!(dcs.vector_table, bank_addr(Bank::A) + 0x400);
        assert_eq!(dcs.version, twinbank::Version::new(1, 0, 0, 0));
    }
    assert_eq!(
        f.counters.writes + f.counters.erases,
        0,
        "a factory boot writes nothing"
    );
    let store = StateStore::open(&mut f, &layout).unwrap();
    assert_eq!(store.current(), Some(&state));
}

// ---------------------------------------------------------------------------------------------
// Interop with imgtool and OpenSSL.

/// The imgtool command, or `None` when skipping is explicitly allowed.
fn imgtool() -> Option<PathBuf> {
    let candidate = std::env::var("TWINBANK_IMGTOOL").unwrap_or_else(|_| "imgtool".into());
    let works = Command::new(&candidate)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(PathBuf::from(candidate));
    }
    if std::env::var("TWINBANK_SKIP_IMGTOOL").as_deref() == Ok("1") {
        eprintln!(
            "imgtool ({candidate}) not found: interop test SKIPPED (TWINBANK_SKIP_IMGTOOL=1)"
        );
        return None;
    }
    panic!(
        "imgtool not found (tried `{candidate}`). The interop tests need MCUboot's imgtool \
         (pip install imgtool==2.5.0). Set TWINBANK_IMGTOOL=/path/to/imgtool or put it on PATH; \
         set TWINBANK_SKIP_IMGTOOL=1 to skip these tests explicitly."
    );
}

fn openssl() -> Option<PathBuf> {
    let works = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(PathBuf::from("openssl"));
    }
    if std::env::var("TWINBANK_SKIP_IMGTOOL").as_deref() == Ok("1") {
        eprintln!("openssl not found: interop test SKIPPED (TWINBANK_SKIP_IMGTOOL=1)");
        return None;
    }
    panic!("openssl not found; install it or set TWINBANK_SKIP_IMGTOOL=1 to skip interop tests");
}

fn ext(dir: &Path, prog: &Path, args: &[&str]) -> Output {
    let o = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        prog.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn imgtool_images_verify_with_twinbank() {
    let Some(it) = imgtool() else { return };
    let d = tempdir();
    let dir = d.path();
    ext(dir, &it, &["keygen", "-k", "it.pem", "-t", "ed25519"]);
    let bank_b = format!("{:#x}", bank_addr(Bank::B));
    std::fs::write(
        dir.join("app.bin"),
        payload(bank_addr(Bank::B) + 0x400, 7777),
    )
    .unwrap();
    ext(
        dir,
        &it,
        &[
            "sign",
            "-k",
            "it.pem",
            "--version",
            "3.1.4+15",
            "--header-size",
            "0x400",
            "--pad-header",
            "--align",
            "4",
            "--slot-size",
            "0x100000",
            "--security-counter",
            "9",
            "--vid",
            VID,
            "--cid",
            CID,
            "--rom-fixed",
            &bank_b,
            "app.bin",
            "it-signed.bin",
        ],
    );
    let v = json(&ok(
        dir,
        &[
            "verify",
            "-k",
            "it.pem",
            "--board-ids",
            "--bank",
            "B",
            "--min-security-counter",
            "9",
            "it-signed.bin",
            "--json",
        ],
    ));
    assert_eq!(v["version"], "3.1.4+15");
    assert_eq!(v["security_counter"], 9);
    // Public key from imgtool getpub works as the trusted key too.
    let pubpem = ext(dir, &it, &["getpub", "-k", "it.pem", "-e", "pem"]).stdout;
    std::fs::write(dir.join("it.pub.pem"), &pubpem).unwrap();
    ok(
        dir,
        &["verify", "-k", "it.pub.pem", "--bank", "B", "it-signed.bin"],
    );
    // Policy refusals still apply to imgtool's images.
    fails(
        dir,
        1,
        "downgrade: security counter",
        &[
            "verify",
            "-k",
            "it.pem",
            "--min-security-counter",
            "10",
            "it-signed.bin",
        ],
    );
    fails(
        dir,
        1,
        "linked for",
        &["verify", "-k", "it.pem", "--bank", "A", "it-signed.bin"],
    );
    // imgtool HEX output too.
    ext(
        dir,
        &it,
        &[
            "sign",
            "-k",
            "it.pem",
            "--version",
            "1.0.0",
            "--header-size",
            "0x400",
            "--pad-header",
            "--slot-size",
            "0x100000",
            "--rom-fixed",
            &bank_b,
            "--hex-addr",
            &bank_b,
            "app.bin",
            "it-signed.hex",
        ],
    );
    ok(dir, &["verify", "-k", "it.pem", "it-signed.hex"]);
    let i = json(&ok(
        dir,
        &["inspect", "it-signed.hex", "-k", "it.pub.pem", "--json"],
    ));
    assert_eq!(i["signature_valid"], true);
}

#[test]
fn twinbank_images_verify_with_imgtool_and_match_it_byte_for_byte() {
    let Some(it) = imgtool() else { return };
    let Some(ossl) = openssl() else { return };
    let d = tempdir();
    let dir = d.path();
    // Keys from imgtool, openssl and twinbank all sign; the other tools agree on the public key.
    ext(dir, &it, &["keygen", "-k", "it.pem", "-t", "ed25519"]);
    ext(
        dir,
        &ossl,
        &["genpkey", "-algorithm", "ed25519", "-out", "ossl.pem"],
    );
    ok(dir, &["keygen", "-o", "tb.pem"]);
    let pay_a = bank_addr(Bank::A) + 0x400;
    std::fs::write(dir.join("app.bin"), payload(pay_a, 12345)).unwrap();
    std::fs::write(dir.join("app.elf"), elf(pay_a, &payload(pay_a, 12345), &[])).unwrap();
    let bank_a = format!("{:#x}", bank_addr(Bank::A));
    for k in ["it.pem", "ossl.pem", "tb.pem"] {
        let ours = ok(dir, &["getpub", "-k", k]).stdout;
        let theirs = ext(dir, &ossl, &["pkey", "-in", k, "-pubout"]).stdout;
        assert_eq!(ours.trim(), String::from_utf8_lossy(&theirs).trim(), "{k}");

        for (input, out) in [
            ("app.bin", "tb.bin"),
            ("app.elf", "tb-elf.bin"),
            ("app.bin", "tb.hex"),
        ] {
            ok(
                dir,
                &[
                    "sign",
                    "-k",
                    k,
                    "--version",
                    "1.2.3+4",
                    "--security-counter",
                    "7",
                    "--vid",
                    VID,
                    "--cid",
                    CID,
                    "--bank",
                    "A",
                    input,
                    "-o",
                    out,
                ],
            );
            let o = ext(dir, &it, &["verify", "-k", k, out]);
            assert!(String::from_utf8_lossy(&o.stdout).contains("correctly validated"));
            ok(dir, &["verify", "-k", k, "--board-ids", out]);
        }
        // Bonus: byte-identical to `imgtool sign --pad-header` with the same key and options.
        ext(
            dir,
            &it,
            &[
                "sign",
                "-k",
                k,
                "--version",
                "1.2.3+4",
                "--security-counter",
                "7",
                "--vid",
                VID,
                "--cid",
                CID,
                "--rom-fixed",
                &bank_a,
                "--header-size",
                "0x400",
                "--pad-header",
                "--slot-size",
                "0x100000",
                "app.bin",
                "it.bin",
            ],
        );
        assert!(
            std::fs::read(dir.join("tb.bin")).unwrap()
                == std::fs::read(dir.join("it.bin")).unwrap(),
            "twinbank and imgtool outputs differ for key {k}"
        );
        assert!(
            std::fs::read(dir.join("tb-elf.bin")).unwrap()
                == std::fs::read(dir.join("it.bin")).unwrap(),
            "ELF input gives another image than BIN for key {k}"
        );
    }
    // imgtool refuses a twinbank image signed by another key, and so do we.
    let o = Command::new(&it)
        .args(["verify", "-k", "it.pem", "tb.bin"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    fails(
        dir,
        1,
        "untrusted key",
        &["verify", "-k", "it.pem", "tb.bin"],
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input as a new user gives it: other key types, failing outputs, an explicit board file.

fn fixture_key(name: &str) -> PathBuf {
    workspace().join("tests/fixtures/keys").join(name)
}

#[test]
fn every_subcommand_names_the_key_it_was_given() {
    let d = tempdir();
    let dir = d.path();
    let (key, img) = signed_fixture(dir);
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let pubk = dir.join("pub.pem");
    ok(dir, &["getpub", "-k", s(&key), "-o", s(&pubk)]);
    let cases: [(PathBuf, &str); 6] = [
        (
            fixture_key("rsa.pem"),
            "this is an RSA key; twinbank signs with Ed25519",
        ),
        (
            fixture_key("p256.pem"),
            "this is an ECDSA P-256 key; twinbank signs with Ed25519",
        ),
        (fixture_key("p256.pub.pem"), "this is an ECDSA P-256 key"),
        (fixture_key("p256-sec1.pem"), "this is an ECDSA P-256 key"),
        (
            fixture_key("ed448.pem"),
            "this is an Ed448 key; twinbank signs with Ed25519",
        ),
        (dir.join("empty.pem"), "the key file is empty"),
    ];
    for (k, want) in &cases {
        let k = s(k);
        let sign = [
            "sign",
            "-k",
            k,
            "--version",
            "1",
            "--bank",
            "A",
            "app.bin",
            "-o",
            "x.bin",
        ];
        let verify = ["verify", "-k", k, s(&img)];
        let inspect = ["inspect", s(&img), "-k", k];
        let getpub = ["getpub", "-k", k];
        let provision = ["provision", "-k", k, "--image-a", s(&img), "-o", "f.bin"];
        for args in [&sign[..], &verify, &inspect, &getpub, &provision] {
            let r = fails(dir, 2, want, args);
            assert!(!r.stderr.contains("1.3.101.112"), "{args:?}: {}", r.stderr);
        }
    }
    assert!(!dir.join("x.bin").exists() && !dir.join("f.bin").exists());
    // A public key where the private one is needed; a private one where the public one is.
    fails(
        dir,
        2,
        "this is a public key; signing needs the private key",
        &[
            "sign",
            "-k",
            s(&pubk),
            "--version",
            "1",
            "--bank",
            "A",
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
    for args in [
        &["verify", "-k", s(&key), "--board-ids", s(&img)][..],
        &["inspect", s(&img), "-k", s(&key)],
        &[
            "provision",
            "-k",
            s(&key),
            "--image-a",
            s(&img),
            "-o",
            "f.bin",
        ],
    ] {
        let r = ok(dir, args);
        assert!(
            r.stderr
                .contains("is a private key; only its public key is used"),
            "{args:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn a_failing_command_leaves_no_output_file() {
    let d = tempdir();
    let dir = d.path();
    let (key, img) = signed_fixture(dir);
    // The HEX cannot be written: neither it nor the flash file of the same command appears.
    fails(
        dir,
        2,
        "cannot write",
        &[
            "provision",
            "-k",
            s(&key),
            "--image-a",
            s(&img),
            "-o",
            "flash.bin",
            "--hex",
            "no/dir/flash.hex",
        ],
    );
    assert!(!dir.join("flash.bin").exists(), "a stray flash.bin");
    let stray: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
    // An existing output is replaced only when the command succeeds.
    std::fs::write(dir.join("x.bin"), b"old").unwrap();
    fails(
        dir,
        1,
        "slot",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            "--slot-size",
            "16",
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
    assert_eq!(std::fs::read(dir.join("x.bin")).unwrap(), b"old");
}

#[test]
fn an_explicit_board_file_is_always_read_and_works_from_any_directory() {
    let d = tempdir();
    let dir = d.path();
    let (key, _) = signed_fixture(dir);
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(
        elsewhere.path().join("broken.toml"),
        "[flash]\nsize = \"big\"\n",
    )
    .unwrap();
    let broken = elsewhere.path().join("broken.toml");
    // Every value the board would give is on the command line: the file is read anyway.
    fails(
        dir,
        2,
        "broken.toml",
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--rom-fixed",
            "0x21010000",
            "--header-size",
            "0x400",
            "--slot-size",
            "0x100000",
            "--board",
            s(&broken),
            "app.bin",
            "-o",
            "x.bin",
        ],
    );
    assert!(!dir.join("x.bin").exists());
    // From a directory without twinbank.toml: the same hint everywhere, and --board works.
    let other = elsewhere.path();
    let app = dir.join("app.bin");
    let hint =
        "no board description: twinbank.toml is not in the current directory; give --board FILE";
    fails(
        other,
        2,
        hint,
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            s(&app),
            "-o",
            "x.bin",
        ],
    );
    fails(
        other,
        2,
        hint,
        &[
            "provision",
            "-k",
            s(&key),
            "--image-a",
            "x.bin",
            "-o",
            "f.bin",
        ],
    );
    fails(
        other,
        2,
        hint,
        &["verify", "-k", s(&key), "--board-ids", "x.bin"],
    );
    let j = json(&ok(
        other,
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1.0.0",
            "--security-counter",
            "1",
            "--bank",
            "A",
            "--board-ids",
            "--board",
            s(&board_path()),
            s(&app),
            "-o",
            "x.bin",
            "--json",
        ],
    ));
    assert_eq!(j["vendor_id"], VID);
    assert_eq!(j["class_id"], CID);
    ok(
        other,
        &[
            "provision",
            "-k",
            s(&key),
            "--image-a",
            "x.bin",
            "-o",
            "f.bin",
            "--board",
            s(&board_path()),
        ],
    );
}

/// A board description whose `[flash]` disagrees with itself is refused by the host tool with
/// the text the device crate's loader gives (`BoardDescription::load`), whatever the command;
/// a board of another geometry provisions a flash that boots through a driver of that geometry
/// (the device crate refuses a driver that disagrees with the layout).
#[test]
fn a_board_that_disagrees_with_itself_gets_the_loaders_error_and_other_geometries_work() {
    let d = tempdir();
    let dir = d.path();
    let (key, img) = signed_fixture(dir);
    let shipped = std::fs::read_to_string(board_path()).unwrap();
    let odd = dir.join("odd.toml");
    std::fs::write(
        &odd,
        shipped.replace("size = 0x01000000", "size = 0x01000800"),
    )
    .unwrap();
    let expected = BoardDescription::load(&odd).unwrap_err().to_string();
    assert!(
        expected.contains("not a whole number of 0x1000-byte erase sectors"),
        "{expected}"
    );
    let provision = [
        "provision",
        "-k",
        s(&key),
        "--image-a",
        s(&img),
        "-o",
        "flash.bin",
        "--board",
        s(&odd),
    ];
    fails(dir, 2, &expected, &provision);
    fails(
        dir,
        2,
        &expected,
        &[
            "sign",
            "-k",
            s(&key),
            "--version",
            "1",
            "--bank",
            "A",
            "app.bin",
            "-o",
            "x.bin",
            "--board",
            s(&odd),
        ],
    );
    assert!(!dir.join("flash.bin").exists() && !dir.join("x.bin").exists());

    // 16-byte writes and 8 KiB sectors: the layout's regions are whole sectors, so it agrees.
    let coarse = dir.join("coarse.toml");
    std::fs::write(
        &coarse,
        shipped
            .replace("write_size = 4 ", "write_size = 16")
            .replace("erase_size = 4096", "erase_size = 0x2000"),
    )
    .unwrap();
    let mut args = provision;
    args[8] = s(&coarse);
    ok(dir, &args);
    let flash = std::fs::read(dir.join("flash.bin")).unwrap();
    let b = BoardDescription::load(&coarse).unwrap();
    let layout = b.layout().unwrap();
    let pubk = dir.join("key.pub.pem");
    ok(dir, &["getpub", "-k", s(&key), "-o", s(&pubk)]);
    let keys = [trusted_key_from_pem(&std::fs::read_to_string(&pubk).unwrap()).unwrap()];
    let config = Config {
        layout,
        keys: &keys,
        ids: b.ids().unwrap(),
        attempts: b.attempts().unwrap(),
    };
    let mut f = StrictFlash::<16, 0x2000>::from_bytes(&flash);
    let dcs = twinbank::decide(&mut f, &config).unwrap();
    assert_eq!((dcs.bank, dcs.reason), (Bank::A, BootReason::Normal));
    // The shipped geometry's driver is refused for this layout.
    let mut wrong = StrictFlash::<4, 4096>::from_bytes(&flash);
    assert_eq!(
        twinbank::decide(&mut wrong, &config)
            .unwrap_err()
            .to_string(),
        "flash geometry: the flash driver's WRITE_SIZE is 4 bytes, the layout's write size 16"
    );
}

/// A board whose flash has non-uniform sectors (`[flash] sectors`, boards/stm32f4-nonuniform.toml,
/// an STM32F407 with 1 MiB): `sign` binds images to its banks, `provision` builds the factory
/// flash (bootloader in sectors 0-1), `inspect --bank` checks an image against it, and the device
/// crate boots the result through a strict flash that enforces the part's sector map.
#[test]
fn a_board_with_a_sector_map_signs_provisions_and_inspects() {
    let d = tempdir();
    let dir = d.path();
    let f4 = workspace().join("boards/stm32f4-nonuniform.toml");
    let b = BoardDescription::load(&f4).unwrap();
    let layout = b.layout().unwrap();
    assert!(layout.sector_map().is_some());
    let key = dir.join("key.pem");
    ok(dir, &["keygen", "-o", s(&key)]);
    let pubk = dir.join("key.pub.pem");
    ok(dir, &["getpub", "-k", s(&key), "-o", s(&pubk)]);
    for (bank, name) in [(Bank::A, "a"), (Bank::B, "b")] {
        let pay = layout.bank_address(bank) + u32::from(b.image.header_size);
        // Larger than one 128 KiB sector of the bank.
        std::fs::write(dir.join(format!("{name}.bin")), payload(pay, 150_000)).unwrap();
        let out = format!("{name}.signed.bin");
        let bank_arg = format!("{bank}");
        ok(
            dir,
            &[
                "sign",
                "-k",
                s(&key),
                "--version",
                "1.0.0",
                "--board-ids",
                "--bank",
                &bank_arg,
                &format!("{name}.bin"),
                "-o",
                &out,
                "--board",
                s(&f4),
            ],
        );
        let i = json(&ok(dir, &["inspect", &out, "-k", s(&key), "--json"]));
        ok(
            dir,
            &[
                "verify",
                "-k",
                s(&key),
                "--board-ids",
                "--bank",
                &bank_arg,
                &out,
                "--board",
                s(&f4),
            ],
        );
        assert_eq!(i["signature_valid"], true);
        assert_eq!(i["header"]["hdr_size"], 0x200);
    }
    // Bound to bank A, offered to bank B: refused.
    fails(
        dir,
        1,
        "",
        &[
            "verify",
            "-k",
            s(&key),
            "--bank",
            "B",
            "a.signed.bin",
            "--board",
            s(&f4),
        ],
    );
    let shim: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(dir.join("shim.bin"), &shim).unwrap();
    ok(
        dir,
        &[
            "provision",
            "-k",
            s(&pubk),
            "--image-a",
            "a.signed.bin",
            "--bootloader",
            "shim.bin",
            "-o",
            "flash.bin",
            "--board",
            s(&f4),
        ],
    );
    let flash = std::fs::read(dir.join("flash.bin")).unwrap();
    assert_eq!(flash.len(), 0x10_0000);
    assert_eq!(&flash[..shim.len()], &shim[..]);
    let keys = [trusted_key_from_pem(&std::fs::read_to_string(&pubk).unwrap()).unwrap()];
    let config = Config {
        layout,
        keys: &keys,
        ids: b.ids().unwrap(),
        attempts: b.attempts().unwrap(),
    };
    let map = *layout.sector_map().unwrap();
    let mut f = StrictFlash::<4, 0x2_0000>::from_bytes(&flash).with_sector_map(&map);
    let dcs = twinbank::decide(&mut f, &config).unwrap();
    assert_eq!((dcs.bank, dcs.reason), (Bank::A, BootReason::Normal));
}
