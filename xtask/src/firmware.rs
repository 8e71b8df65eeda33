//! Building the firmware (shim and demo app) for a QEMU board's target (thumbv7m-none-eabi for the
//! MPS2-AN385, thumbv7em-none-eabi for the MPS2-AN500: [`crate::qemu::Board`]); signing the app ELFs and
//! provisioning flash files go through the host tool's library (`twinbank_host`), the one
//! implementation of that pipeline. The QEMU tests use this module through the xtask library.
//!
//! Builds are per variant: the build scripts read `TWINBANK_TRUSTED_KEYS`, `TWINBANK_BANK` and
//! `TWINBANK_APP_VERSION`, and the app's cargo features select its behaviour. Each variant is
//! built in turn and its ELF copied to `<out>/<name>.elf`; a stamp (hash of the sources, the
//! environment and the keys) next to it skips the build when nothing changed, so switching
//! variants does not rebuild every time.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use twinbank::board::BoardDescription;
use twinbank::image::Version;
use twinbank::{Bank, ImageId, TrustedKey};
use twinbank_host::sign::{sign_firmware, SignPlan};
use twinbank_host::{input, keys, provision};

use crate::qemu::Board;

pub use twinbank_host::provision::{FlashImage, FlashReport};

/// The Rust target of the default board's firmware (each [`Board`] names its own).
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
    /// The package's default features are on (off only for the production shim, whose default
    /// feature is the QEMU test hooks).
    pub default_features: bool,
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
            default_features: true,
            env: vec![],
        }
    }

    /// The production shim: the plain shim without the QEMU test hooks (power-cut injection,
    /// NOR rule checks, flash-operation counters), as a real board's would be built. The one
    /// `cargo xtask size` holds to the board's flash budget; booted by the QEMU tests too.
    pub fn shim_production() -> Variant {
        Variant {
            name: "shim-production".into(),
            default_features: false,
            ..Variant::shim(false)
        }
    }

    /// The shim with serial recovery (`smp`: with SMP beside the native protocol).
    pub fn shim_recovery(smp: bool) -> Variant {
        Variant {
            name: if smp {
                "shim-recovery-smp".into()
            } else {
                "shim-recovery".into()
            },
            package: "twinbank-shim",
            bin: "twinbank-shim",
            features: vec![if smp { "recovery-smp" } else { "recovery" }],
            default_features: true,
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
            default_features: true,
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
    /// The board built for: its Rust target and, for any board but the default, its description
    /// (`TWINBANK_BOARD` for the board crate's build script).
    pub board: &'static Board,
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
            "boards",
            "Cargo.lock",
            "Cargo.toml",
        ] {
            hash_tree(&mut h, &self.workspace.join(p));
        }
        for k in &self.trusted_keys {
            hash_tree(&mut h, k);
        }
        self.board.name.hash(&mut h);
        v.package.hash(&mut h);
        v.features.hash(&mut h);
        v.default_features.hash(&mut h);
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
                    self.board.target,
                    "-p",
                    v.package,
                ])
                .env("CARGO_TARGET_DIR", &self.target_dir)
                .env("TWINBANK_TRUSTED_KEYS", &keys)
                .env_remove("TWINBANK_BANK")
                .env_remove("TWINBANK_APP_VERSION")
                .env_remove("TWINBANK_BOARD");
            // The default board's builds keep the environment they always had (the board crate
            // reads the workspace's `twinbank.toml`): same fingerprints, no rebuild.
            if !self.board.is_default() {
                cmd.env("TWINBANK_BOARD", self.board.description_path());
            }
            if !v.features.is_empty() {
                cmd.args(["--features", &v.features.join(",")]);
            }
            if !v.default_features {
                cmd.arg("--no-default-features");
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
            let built = self
                .target_dir
                .join(self.board.target)
                .join(PROFILE)
                .join(v.bin);
            std::fs::copy(&built, &elf).map_err(|e| format!("{}: {e}", built.display()))?;
            std::fs::write(&stamp_path, stamp).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// How to sign one image of an app ELF (through the host tool's library: the same ELF reading,
/// signing and checks as `twinbank sign --bank`).
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

/// Makes a signed image of an app ELF for the board's bank `s.bank`, with the board's ids.
pub fn sign_elf(elf: &Path, s: &Signing<'_>) -> Result<Vec<u8>, String> {
    sign_elf_sized(elf, s, s.pad_to, false)
}

/// As [`sign_elf`] with a payload of exactly `len` bytes: padded with 0xFF, or cut to `len` when
/// the app is larger. A cut app cannot run: this is for the boot measurement, whose measuring
/// shim checks the vector table at the start of the payload and stops after its report, before
/// the jump (`cargo xtask firmware --measure boot`).
pub fn sign_elf_exactly(elf: &Path, s: &Signing<'_>, len: usize) -> Result<Vec<u8>, String> {
    sign_elf_sized(elf, s, Some(len), true)
}

fn sign_elf_sized(
    elf: &Path,
    s: &Signing<'_>,
    len: Option<usize>,
    cut: bool,
) -> Result<Vec<u8>, String> {
    let version: Version = s.version.parse().map_err(|e| format!("{e}"))?;
    let plan = SignPlan::for_bank(s.board, s.bank, version, s.security_counter)
        .map_err(|e| e.to_string())?;
    let mut fw = input::load(elf, plan.slot_size as u64).map_err(|e| e.to_string())?;
    if let Some(n) = len {
        if fw.data.len() < n || cut {
            fw.data.resize(n, twinbank::flash::ERASED);
        }
    }
    let key = keys::signing_key(s.key).map_err(|e| e.to_string())?;
    sign_firmware(&fw, &plan, &key, &elf.display().to_string())
        .map(|signed| signed.image)
        .map_err(|e| e.to_string())
}

/// Writes a fresh Ed25519 private key (PKCS#8 PEM, mode 0600) to `path` unless one is there.
pub fn ensure_key(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    keys::keygen(path, false)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The trusted key of a PEM file.
pub fn trusted_key(pem_path: &Path) -> Result<TrustedKey, String> {
    keys::read(pem_path)
        .map(|k| k.trusted())
        .map_err(|e| e.to_string())
}

/// The identity of a signed image for `bank`, verified with `trusted`.
pub fn image_id(
    board: &BoardDescription,
    bank: Bank,
    image: &[u8],
    trusted: &[TrustedKey],
) -> Result<ImageId, String> {
    let config = provision::config(board, trusted).map_err(|e| e.to_string())?;
    provision::image_id(&config, bank, image).map_err(|e| e.to_string())
}

/// A factory-provisioned flash: `image_a` in bank A, confirmed and preferred (`twinbank
/// provision`'s library path).
pub fn factory_flash(
    board: &BoardDescription,
    image_a: &[u8],
    trusted: &[TrustedKey],
) -> Result<Vec<u8>, String> {
    provision::factory_flash(board, trusted, image_a, None)
        .map(|(flash, _)| flash.into_bytes())
        .map_err(|e| e.to_string())
}

/// Reads a flash image through the device crate: the boot state and each bank's verification.
pub fn inspect(
    board: &BoardDescription,
    flash: &[u8],
    trusted: &[TrustedKey],
) -> Result<FlashReport, String> {
    let config = provision::config(board, trusted).map_err(|e| e.to_string())?;
    provision::report(&config, flash).map_err(|e| e.to_string())
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    crate::tools::root()
}

/// The firmware of the QEMU tests on the default board: its own target directory (so `cargo
/// test` holding the main one's lock does not block it), its own trusted key, ELFs in
/// `target/qemu-tests/firmware/`.
pub fn test_build() -> Build {
    test_build_for(Board::default_board())
}

/// The firmware of the QEMU tests on `board`: as [`test_build`] (same cargo target directory:
/// each board has its own Rust target there, same keys); the ELFs of a board other than the
/// default in `target/qemu-tests/firmware-<board>/`.
pub fn test_build_for(board: &'static Board) -> Build {
    let ws = workspace_root();
    let dir = ws.join("target/qemu-tests");
    Build {
        board,
        workspace: ws,
        target_dir: dir.join("cargo"),
        out_dir: if board.is_default() {
            dir.join("firmware")
        } else {
            dir.join(format!("firmware-{}", board.name))
        },
        trusted_keys: vec![dir.join("keys/trusted.pem")],
        verbose: false,
    }
}

/// Milliseconds of the UART recovery window of the QEMU tests' window shim.
pub const TEST_RECOVERY_WINDOW_MS: u32 = 1000;

/// The board description of the window shim: the default board's `twinbank.toml` with
/// `recovery_window_ms` set to [`TEST_RECOVERY_WINDOW_MS`], written under
/// `target/qemu-tests/` (same layout, keys and ids as every other test build).
pub fn window_board() -> Result<PathBuf, String> {
    let ws = workspace_root();
    let text = std::fs::read_to_string(Board::default_board().description_path())
        .map_err(|e| e.to_string())?;
    let key = "recovery_window_ms = 0";
    if !text.contains(key) {
        return Err(format!("twinbank.toml has no `{key}` line to change"));
    }
    let text = text.replace(
        key,
        &format!("recovery_window_ms = {TEST_RECOVERY_WINDOW_MS}"),
    );
    let dir = ws.join("target/qemu-tests/window-board");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("twinbank.toml");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
    }
    Ok(path)
}

/// The variants the QEMU tests use: the shim without recovery (with the test hooks, and the
/// production build without them), with recovery and SMP, with
/// recovery and a UART window; versions 1 (A), 2 (B), a healthy 3 (A: an update from B back
/// into A) and three faulty 3s (B); for the delta tests, v2 with a one-line change and v1
/// built against an older dependency.
pub fn test_variants() -> Vec<Variant> {
    vec![
        Variant::shim(false),
        Variant::shim_production(),
        Variant::shim_recovery(true),
        Variant {
            name: "shim-recovery-window".into(),
            env: vec![(
                "TWINBANK_BOARD",
                window_board()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            )],
            ..Variant::shim_recovery(false)
        },
        Variant::app("app-v1-A", Bank::A, "1.0.0", "healthy"),
        Variant::app("app-v2-B", Bank::B, "2.0.0", "healthy"),
        Variant::app("app-v2-B-one-line", Bank::B, "2.0.0", "delta-one-line"),
        Variant::app("app-v1-A-heapless07", Bank::A, "1.0.0", "heapless-0-7"),
        Variant::app("app-v3-A", Bank::A, "3.0.0", "healthy"),
        Variant::app("app-v3-B-fail-health", Bank::B, "3.0.0", "fail-health"),
        Variant::app("app-v3-B-crash", Bank::B, "3.0.0", "crash"),
        Variant::app("app-v3-B-hang", Bank::B, "3.0.0", "hang"),
    ]
}

/// The variants of the QEMU tests on `board`: all of [`test_variants`] on the default board; on
/// another board those of its core suite (boot, update, rollback of each failing variant,
/// security, serial, power cuts): the plain shim, v1 (A), v2 (B), v3 (A) and the faulty v3s (B).
/// The recovery, SMP and delta suites run on the default board only.
pub fn test_variants_for(board: &Board) -> Vec<Variant> {
    let all = test_variants();
    if board.is_default() {
        return all;
    }
    all.into_iter()
        .filter(|v| {
            v.name == "shim"
                || v.name == "shim-production"
                || (v.package == "twinbank-demo-app"
                    && !v.name.contains("one-line")
                    && !v.name.contains("heapless"))
        })
        .collect()
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
    build_all_for(Board::default_board())
}

/// Builds the firmware of the QEMU tests on `board` ([`test_variants_for`]).
pub fn build_all_for(board: &'static Board) -> Result<(), String> {
    let b = test_build_for(board);
    test_keys(&b)?;
    b.build(&test_variants_for(board))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_board_builds_the_core_suites_variants_in_its_own_directory() {
        let an500 = Board::by_name("mps2-an500").unwrap();
        let names: Vec<String> = test_variants_for(an500)
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(
            names,
            [
                "shim",
                "shim-production",
                "app-v1-A",
                "app-v2-B",
                "app-v3-A",
                "app-v3-B-fail-health",
                "app-v3-B-crash",
                "app-v3-B-hang"
            ]
        );
        assert_eq!(
            test_variants_for(Board::default_board()).len(),
            test_variants().len()
        );
        let (a, b) = (test_build(), test_build_for(an500));
        assert!(a.out_dir.ends_with("target/qemu-tests/firmware"));
        assert!(b.out_dir.ends_with("target/qemu-tests/firmware-mps2-an500"));
        assert_ne!(
            a.stamp(&Variant::shim(false)),
            b.stamp(&Variant::shim(false))
        );
    }
}
