//! Prerequisites: checks what a command needs, installs what can be installed without root
//! surprises (the Rust target, imgtool in a virtualenv under target/), and says clearly what is
//! missing otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Runs a command, echoing it; Err with a message naming it when it fails.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(cmd)))
    }
}

/// A command line as text.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn works(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// The firmware target: installed with rustup when missing.
pub const THUMB: &str = "thumbv7m-none-eabi";

/// Makes sure the thumbv7m target is installed.
pub fn ensure_thumb_target() -> Result<(), String> {
    ensure_target(THUMB)
}

/// Makes sure the Rust target `target` (a QEMU board's) is installed: installed with rustup when
/// missing.
pub fn ensure_target(target: &str) -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == target)
        })
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    eprintln!("xtask: the {target} target is missing; installing it with rustup");
    run(Command::new("rustup").args(["target", "add", target])).map_err(|e| {
        format!("{e}\n  the firmware needs the {target} target: run `rustup target add {target}`")
    })
}

/// Makes sure qemu-system-arm exists: installs it with apt-get when running as root on a Debian
/// machine (as CI does), otherwise says how to install it.
pub fn ensure_qemu() -> Result<(), String> {
    if works(Command::new("qemu-system-arm").arg("--version")) {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root && works(Command::new("apt-get").arg("--version")) {
        eprintln!(
            "xtask: qemu-system-arm is missing; installing it (apt-get install -y qemu-system-arm)"
        );
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "qemu-system-arm"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if works(Command::new("qemu-system-arm").arg("--version")) {
            return Ok(());
        }
    }
    Err(
        "qemu-system-arm is missing: install it with `sudo apt-get update && sudo apt-get install \
         -y qemu-system-arm` (Debian/Ubuntu; QEMU ≥ 7.2 with the mps2-an385 board), then run this \
         command again"
            .into(),
    )
}

/// Path of an `imgtool` that works: $TWINBANK_IMGTOOL, `imgtool` on PATH, or one installed into
/// target/imgtool-venv (created here with python3 -m venv + pip, pinned to the version the
/// fixtures were made with).
pub fn ensure_imgtool() -> Result<String, String> {
    if let Ok(p) = std::env::var("TWINBANK_IMGTOOL") {
        if works(Command::new(&p).arg("version")) {
            return Ok(p);
        }
        return Err(format!("TWINBANK_IMGTOOL={p} does not run"));
    }
    if works(Command::new("imgtool").arg("version")) {
        return Ok("imgtool".into());
    }
    let venv = root().join("target/imgtool-venv");
    let exe = venv.join("bin/imgtool");
    if works(Command::new(&exe).arg("version")) {
        return Ok(exe.to_string_lossy().into_owned());
    }
    eprintln!("xtask: imgtool (MCUboot's signing tool, for the interop tests) is missing; installing it into {}", venv.display());
    let how = "the interop tests need MCUboot's imgtool: `python3 -m venv target/imgtool-venv && \
               target/imgtool-venv/bin/pip install imgtool==2.5.0` (needs python3-venv and PyPI)";
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .map_err(|e| format!("{e}\n  {how}"))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "imgtool==2.5.0"]))
        .map_err(|e| format!("{e}\n  {how}"))?;
    if works(Command::new(&exe).arg("version")) {
        Ok(exe.to_string_lossy().into_owned())
    } else {
        Err(format!("imgtool was installed but does not run\n  {how}"))
    }
}

/// The `smpmgr` version the SMP tests are pinned to (PyPI; its smpclient is pinned by it).
pub const SMPMGR_VERSION: &str = "0.19.1";

/// Path of an `smpmgr` (the SMP client from PyPI) that works: $TWINBANK_SMPMGR, or one
/// installed into target/smpmgr-venv (created here with python3 -m venv + pip, pinned).
pub fn ensure_smpmgr() -> Result<String, String> {
    if let Ok(p) = std::env::var("TWINBANK_SMPMGR") {
        if works(Command::new(&p).arg("--version")) {
            return Ok(p);
        }
        return Err(format!("TWINBANK_SMPMGR={p} does not run"));
    }
    let venv = root().join("target/smpmgr-venv");
    let exe = venv.join("bin/smpmgr");
    let pinned = Command::new(&exe).arg("--version").output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == SMPMGR_VERSION
    });
    if pinned {
        return Ok(exe.to_string_lossy().into_owned());
    }
    eprintln!(
        "xtask: smpmgr {SMPMGR_VERSION} (SMP client, for the SMP tests) is missing; installing it into {}",
        venv.display()
    );
    let how = format!(
        "the SMP tests need smpmgr: `python3 -m venv target/smpmgr-venv && \
         target/smpmgr-venv/bin/pip install smpmgr=={SMPMGR_VERSION}` (needs python3-venv and PyPI)"
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .map_err(|e| format!("{e}\n  {how}"))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        &format!("smpmgr=={SMPMGR_VERSION}"),
    ]))
    .map_err(|e| format!("{e}\n  {how}"))?;
    if works(Command::new(&exe).arg("--version")) {
        Ok(exe.to_string_lossy().into_owned())
    } else {
        Err(format!("smpmgr was installed but does not run\n  {how}"))
    }
}
