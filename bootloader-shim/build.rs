//! Links the shim at 0x0 (SSRAM1, loaded by QEMU's `-kernel`): copies the board crate's
//! `memory-shim.x` into OUT_DIR as `memory.x` for cortex-m-rt's `link.x`.
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(
        std::env::var("DEP_TWINBANK_BOARD_MEMORY_DIR")
            .expect("twinbank-board exports its memory maps"),
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy(dir.join("memory-shim.x"), out.join("memory.x")).unwrap();
    // cortex-m-rt's `device` feature includes `device.x` (the interrupt handler names of a PAC):
    // the shim defines its one-entry `__INTERRUPTS` itself and needs no names.
    std::fs::write(
        out.join("device.x"),
        "/* no device interrupts: see src/main.rs */\n",
    )
    .unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("memory-shim.x").display()
    );
}
