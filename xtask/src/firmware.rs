//! Building the firmware (shim and demo app) for thumbv7m-none-eabi, turning app ELFs into
//! signed images, and provisioning flash files.
//!
//! Also compiled into the QEMU tests (`tests/tests/qemu_support/mod.rs` includes this file), so
//! it depends on `std`, `twinbank` and `object` only.
//!
//! Builds are per variant: the build scripts read `TWINBANK_TRUSTED_KEYS`, `TWINBANK_BANK` and
//! `TWINBANK_APP_VERSION`, and the app's cargo features select its behaviour. Each variant is
//! built in turn and its ELF copied to `<out>/<name>.elf`; a stamp (hash of the sources, the
//! environment and the keys) next to it skips the build when nothing changed, so switching
//! variants does not rebuild every time.
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use twinbank::board::BoardDescription;
use twinbank::image::encode::{signing_key_from_pem, ImageBuilder};
use twinbank::image::Version;
use twinbank::state::record;
use twinbank::{Bank, BootState, ImageId};

/// The Rust target of the firmware.
pub const TARGET: &str = "thumbv7m-none-eabi";
/// The cargo profile of the firmware (opt "s", LTO, panic abort).
pub const PROFILE: &str = "firmware";

/// One firmware build: a package, its features and its build-time environment.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Output name (`<out>/<name>.elf`).
    pub name: String,
    /// Cargo package.
    pub package: &'static str,
    /// Binary name produced by the package.
    pub bin: &'static str,
    /// Cargo features.
    pub features: Vec<&'static str>,
    /// Extra environment (bank, version).
    pub env: Vec<(&'static str, String)>,
}

impl Variant {
    /// The bootloader shim (`bench`: the measuring build).
    pub fn shim(bench: bool) -> Variant {
        Variant {
            name: if bench {
                "shim-bench".into()
            } else {
                "shim".into()
            },
            package: "twinbank-shim",
            bin: "twinbank-shim",
            features: if bench { vec!["bench"] } else { vec![] },
            env: vec![],
        }
    }

    /// A demo app build: `behaviour` is "healthy" or a feature (fail-health, crash, hang).
    pub fn app(name: &str, bank: Bank, version: &str, behaviour: &'static str) -> Variant {
        Variant {
            name: name.into(),
            package: "twinbank-demo-app",
            bin: "twinbank-demo-app",
            features: if behaviour == "healthy" {
                vec![]
            } else {
                vec![behaviour]
            },
            env: vec![
                ("TWINBANK_BANK", bank.to_string()),
                ("TWINBANK_APP_VERSION", version.into()),
            ],
        }
    }
}

/// Where and how to build.
#[derive(Debug, Clone)]
pub struct Build {
    /// The workspace root.
    pub workspace: PathBuf,
    /// Cargo target directory.
    pub target_dir: PathBuf,
    /// Where the ELFs go.
    pub out_dir: PathBuf,
    /// PEM files of the keys the firmware trusts.
    pub trusted_keys: Vec<PathBuf>,
    /// Print cargo's output (xtask) or keep quiet unless it fails (tests).
    pub verbose: bool,
}

fn hash_tree(h: &mut DefaultHasher, path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => return,
        };
        entries.sort();
        for e in entries {
            if e.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            hash_tree(h, &e);
        }
    } else if let Ok(bytes) = std::fs::read(path) {
        path.hash(h);
        bytes.hash(h);
    }
}

impl Build {
    /// The ELF of a variant.
    pub fn elf(&self, name: &str) -> PathBuf {
        self.out_dir.join(format!("{name}.elf"))
    }

    fn stamp(&self, v: &Variant) -> String {
        let mut h = DefaultHasher::new();
        for p in [
            "device",
            "qemu",
            "bootloader-shim",
            "twinbank.toml",
            "Cargo.lock",
            "Cargo.toml",
        ] {
            hash_tree(&mut h, &self.workspace.join(p));
        }
        for k in &self.trusted_keys {
            hash_tree(&mut h, k);
        }
        v.package.hash(&mut h);
        v.features.hash(&mut h);
        v.env.hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Builds the variants that are not up to date.
    pub fn build(&self, variants: &[Variant]) -> Result<(), String> {
        std::fs::create_dir_all(&self.out_dir)
            .map_err(|e| format!("{}: {e}", self.out_dir.display()))?;
        let keys = self
            .trusted_keys
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        for v in variants {
            let stamp = self.stamp(v);
            let stamp_path = self.out_dir.join(format!("{}.stamp", v.name));
            let elf = self.elf(&v.name);
            if elf.exists() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp)
            {
                continue;
            }
            if self.verbose {
                println!(
                    "  building {} ({}{})",
                    v.name,
                    v.package,
                    if v.features.is_empty() {
                        String::new()
                    } else {
                        format!(", features {}", v.features.join(","))
                    }
                );
            }
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.current_dir(&self.workspace)
                .args([
                    "build",
                    "--quiet",
                    "--profile",
                    PROFILE,
                    "--target",
                    TARGET,
                    "-p",
                    v.package,
                ])
                .env("CARGO_TARGET_DIR", &self.target_dir)
                .env("TWINBANK_TRUSTED_KEYS", &keys)
                .env_remove("TWINBANK_BANK")
                .env_remove("TWINBANK_APP_VERSION");
            if !v.features.is_empty() {
                cmd.args(["--features", &v.features.join(",")]);
            }
            for (k, val) in &v.env {
                cmd.env(k, val);
            }
            let out = cmd.output().map_err(|e| format!("cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building {} failed:\n{}",
                    v.name,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let built = self.target_dir.join(TARGET).join(PROFILE).join(v.bin);
            std::fs::copy(&built, &elf).map_err(|e| format!("{}: {e}", built.display()))?;
            std::fs::write(&stamp_path, stamp).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The loadable bytes of an ELF in `[start, limit)` (the bank after the image header), up to the
/// end of the last loaded byte, by physical (load) address; gaps read as 0xFF. Segments outside
/// the bank (e.g. the program headers the linker maps into RAM) are not part of the image.
pub fn elf_payload(elf: &Path, start: u32, limit: u32) -> Result<Vec<u8>, String> {
    use object::read::elf::{ElfFile32, FileHeader, ProgramHeader};
    let data = std::fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let file = ElfFile32::<object::Endianness>::parse(&*data)
        .map_err(|e| format!("{}: not a 32-bit ELF: {e}", elf.display()))?;
    let endian = file.endian();
    let mut parts = Vec::new();
    for ph in file
        .elf_header()
        .program_headers(endian, &*data)
        .map_err(|e| e.to_string())?
    {
        if ph.p_type(endian) != object::elf::PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let bytes = ph
            .data(endian, &*data)
            .map_err(|_| "bad segment".to_string())?;
        let at = ph.p_paddr(endian);
        if at < start || at >= limit {
            continue;
        }
        if at as u64 + bytes.len() as u64 > limit as u64 {
            return Err(format!(
                "{}: segment at {at:#x} overflows the bank",
                elf.display()
            ));
        }
        parts.push((at, bytes));
    }
    let end = parts
        .iter()
        .map(|(a, b)| a + b.len() as u32)
        .max()
        .ok_or_else(|| {
            format!(
                "{}: nothing to load at {start:#x}: linked for another bank?",
                elf.display()
            )
        })?;
    let mut out = vec![0xFF; (end - start) as usize];
    for (a, b) in parts {
        let o = (a - start) as usize;
        out[o..o + b.len()].copy_from_slice(b);
    }
    Ok(out)
}

/// How to sign one image.
#[derive(Debug, Clone)]
pub struct Signing<'a> {
    /// The board.
    pub board: &'a BoardDescription,
    /// The bank the app was linked for.
    pub bank: Bank,
    /// Version in the header.
    pub version: &'a str,
    /// Security counter TLV.
    pub security_counter: u32,
    /// Private key PEM file.
    pub key: &'a Path,
    /// Pad the payload with 0xFF to this many bytes (measurements with larger images).
    pub pad_to: Option<usize>,
}

/// Makes a signed image of an app ELF (the payload starts at the bank address + header size).
pub fn sign_elf(elf: &Path, s: &Signing<'_>) -> Result<Vec<u8>, String> {
    let layout = s.board.layout().map_err(|e| e.to_string())?;
    let ids = s.board.ids().map_err(|e| e.to_string())?;
    let bank_address = layout.bank_address(s.bank);
    let mut payload = elf_payload(
        elf,
        bank_address + s.board.image.header_size as u32,
        bank_address + layout.bank_size(),
    )?;
    if let Some(n) = s.pad_to {
        if payload.len() < n {
            payload.resize(n, 0xFF);
        }
    }
    let version: Version = s.version.parse().map_err(|e| format!("{e}"))?;
    let builder = ImageBuilder {
        header_size: s.board.image.header_size,
        version,
        rom_fixed: Some(bank_address),
        security_counter: Some(s.security_counter),
        vendor_id: ids.vendor,
        class_id: ids.class,
    };
    let pem = std::fs::read_to_string(s.key).map_err(|e| format!("{}: {e}", s.key.display()))?;
    let key = signing_key_from_pem(&pem).map_err(|e| e.to_string())?;
    builder.sign(&payload, &key).map_err(|e| e.to_string())
}

/// Writes a fresh Ed25519 private key (PKCS#8 PEM) to `path` unless one is there.
pub fn ensure_key(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let key = twinbank::image::encode::generate_signing_key();
    std::fs::write(path, twinbank::image::encode::signing_key_to_pem(&key))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The identity of a signed image, verified with `key_pem` against the board's bank `bank`.
pub fn image_id(
    board: &BoardDescription,
    bank: Bank,
    image: &[u8],
    trusted: &[twinbank::TrustedKey],
) -> Result<ImageId, String> {
    let layout = board.layout().map_err(|e| e.to_string())?;
    let params = twinbank::image::VerifyParams {
        offset: 0,
        capacity: layout.bank_size(),
        bank_address: layout.bank_address(bank),
        keys: trusted,
        ids: board.ids().map_err(|e| e.to_string())?,
        min_security_counter: 0,
    };
    let v = twinbank::image::verify_image(&mut twinbank::flash::SliceFlash(image), &params)
        .map_err(|e| format!("image does not verify: {e}"))?;
    Ok(ImageId::of(&v))
}

/// The trusted key of a PEM file.
pub fn trusted_key(pem_path: &Path) -> Result<twinbank::TrustedKey, String> {
    let pem =
        std::fs::read_to_string(pem_path).map_err(|e| format!("{}: {e}", pem_path.display()))?;
    twinbank::image::encode::trusted_key_from_pem(&pem).map_err(|e| e.to_string())
}

/// A blank flash image: the whole flash erased (0xFF).
pub fn blank_flash(board: &BoardDescription) -> Vec<u8> {
    vec![0xFF; board.flash.size as usize]
}

/// Puts `image` at the start of `bank` in a flash image (as a host-side factory programmer does).
pub fn place(
    board: &BoardDescription,
    flash: &mut [u8],
    bank: Bank,
    image: &[u8],
) -> Result<(), String> {
    let layout = board.layout().map_err(|e| e.to_string())?;
    let r = layout.bank(bank);
    if image.len() > r.size.0 as usize {
        return Err("image does not fit the bank".into());
    }
    let o = r.offset.0 as usize;
    flash[o..o + image.len()].copy_from_slice(image);
    Ok(())
}

/// Writes a state record into the first slot of the state region (a blank state region).
pub fn place_state(
    board: &BoardDescription,
    flash: &mut [u8],
    state: &BootState,
    seq: u32,
) -> Result<(), String> {
    let layout = board.layout().map_err(|e| e.to_string())?;
    let o = layout.state().offset.0 as usize;
    let rec = record::encode(state, seq);
    flash[o..o + rec.len()].copy_from_slice(&rec);
    Ok(())
}

/// A factory-provisioned flash: `image_a` in bank A, confirmed and preferred.
pub fn factory_flash(
    board: &BoardDescription,
    image_a: &[u8],
    trusted: &[twinbank::TrustedKey],
) -> Result<Vec<u8>, String> {
    let id = image_id(board, Bank::A, image_a, trusted)?;
    let mut flash = blank_flash(board);
    place(board, &mut flash, Bank::A, image_a)?;
    place_state(board, &mut flash, &BootState::factory(Bank::A, id, None), 1)?;
    Ok(flash)
}

/// What a flash file holds: the boot state and, per bank, whether its image verifies.
#[derive(Debug, Clone)]
pub struct FlashReport {
    /// The newest valid state record, if any.
    pub state: Option<BootState>,
    /// Per bank (A, B): the image verified for integrity and signature (any security counter),
    /// or why it does not verify. Compare its counter with the state's minimum to know whether
    /// the device would still boot it.
    pub images: [Result<ImageId, String>; 2],
}

/// Reads a flash image through the device crate (state store and image verification).
pub fn inspect(
    board: &BoardDescription,
    flash: &[u8],
    trusted: &[twinbank::TrustedKey],
) -> Result<FlashReport, String> {
    let layout = board.layout().map_err(|e| e.to_string())?;
    let mut f = twinbank::flash::SliceFlash(flash);
    let store = twinbank::state::StateStore::open(&mut f, &layout).map_err(|e| e.to_string())?;
    let state = store.current().copied();
    let ids = board.ids().map_err(|e| e.to_string())?;
    let images = Bank::ALL.map(|bank| {
        let params = twinbank::image::VerifyParams {
            offset: layout.bank(bank).offset.0,
            capacity: layout.bank_size(),
            bank_address: layout.bank_address(bank),
            keys: trusted,
            ids,
            min_security_counter: 0,
        };
        twinbank::image::verify_image(&mut twinbank::flash::SliceFlash(flash), &params)
            .map(|v| ImageId::of(&v))
            .map_err(|e| e.to_string())
    });
    Ok(FlashReport { state, images })
}

/// The workspace root (this file is compiled into crates one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate lives in the workspace")
        .to_path_buf()
}

/// The firmware of the QEMU tests: its own target directory (so `cargo test` holding the main
/// one's lock does not block it), its own trusted key, ELFs in `target/qemu-tests/firmware/`.
pub fn test_build() -> Build {
    let ws = workspace_root();
    let dir = ws.join("target/qemu-tests");
    Build {
        workspace: ws,
        target_dir: dir.join("cargo"),
        out_dir: dir.join("firmware"),
        trusted_keys: vec![dir.join("keys/trusted.pem")],
        verbose: false,
    }
}

/// The variants the QEMU tests use: versions 1 (A), 2 (B), and three faulty 3s (B).
pub fn test_variants() -> Vec<Variant> {
    vec![
        Variant::shim(false),
        Variant::app("app-v1-A", Bank::A, "1.0.0", "healthy"),
        Variant::app("app-v2-B", Bank::B, "2.0.0", "healthy"),
        Variant::app("app-v3-B-fail-health", Bank::B, "3.0.0", "fail-health"),
        Variant::app("app-v3-B-crash", Bank::B, "3.0.0", "crash"),
        Variant::app("app-v3-B-hang", Bank::B, "3.0.0", "hang"),
    ]
}

/// Keys of the QEMU tests: the trusted one (built into the test firmware) and an untrusted one.
pub fn test_keys(b: &Build) -> Result<(PathBuf, PathBuf), String> {
    let trusted = b.trusted_keys[0].clone();
    let untrusted = trusted.with_file_name("untrusted.pem");
    ensure_key(&trusted)?;
    ensure_key(&untrusted)?;
    Ok((trusted, untrusted))
}

/// Builds the firmware of the QEMU tests (`cargo xtask test` calls this before `cargo test`).
pub fn build_all() -> Result<(), String> {
    let b = test_build();
    test_keys(&b)?;
    b.build(&test_variants())
}
