//! Helpers shared by the end-to-end tests (host tool and QEMU).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The host tool binary `twinbank`, built once per test process in the test's profile (or taken
/// from `TWINBANK_BIN`).
pub fn host_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("TWINBANK_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "twinbank-host", "--bin", "twinbank"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let st = cmd
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build -p twinbank-host failed");
        // Test binaries run from target/<profile>/deps/.
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let p = dir.join(format!("twinbank{}", std::env::consts::EXE_SUFFIX));
        assert!(p.exists(), "{} not found after cargo build", p.display());
        p
    })
}
