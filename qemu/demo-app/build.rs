//! Links the app for one bank (execute in place): `TWINBANK_BANK=A|B` selects the board crate's
//! `memory-bank-{A,B}.x`; `TWINBANK_APP_VERSION` is compiled in for messages.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=TWINBANK_BANK");
    println!("cargo:rerun-if-env-changed=TWINBANK_APP_VERSION");
    println!("cargo:rerun-if-changed=build.rs");
    let bank = std::env::var("TWINBANK_BANK").unwrap_or_else(|_| "A".into());
    let bank = match bank.as_str() {
        "A" | "a" => "A",
        "B" | "b" => "B",
        other => panic!("TWINBANK_BANK must be A or B, not {other:?}"),
    };
    let version = std::env::var("TWINBANK_APP_VERSION").unwrap_or_else(|_| "0.0.0".into());
    let dir = PathBuf::from(
        std::env::var("DEP_TWINBANK_BOARD_MEMORY_DIR")
            .expect("twinbank-board exports its memory maps"),
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let map = dir.join(format!("memory-bank-{bank}.x"));
    println!("cargo:rerun-if-changed={}", map.display());
    std::fs::copy(&map, out.join("memory.x")).unwrap();
    std::fs::write(
        out.join("app_gen.rs"),
        format!(
            "/// The bank this build is linked for.\npub const BANK: twinbank::Bank = twinbank::Bank::{bank};\n\
             /// The version given at build time.\npub const BUILD_VERSION: &str = {version:?};\n"
        ),
    )
    .unwrap();
    // cortex-m-rt's `device` feature includes `device.x` (a PAC's interrupt handler names): the
    // app defines its `__INTERRUPTS` table itself (src/main.rs) and needs no names.
    std::fs::write(
        out.join("device.x"),
        "/* no device interrupt names: see src/main.rs */\n",
    )
    .unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
}
