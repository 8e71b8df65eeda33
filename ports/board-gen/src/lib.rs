//! # twinbank-port-gen: one build script for every port
//!
//! Each port's board crate calls [`board`] from its `build.rs` with its chip's memory
//! ([`Chip`]); its shim and its application call [`link_shim`] and [`link_app`]. From the
//! port's board description (`ports/<chip>/board.toml`, the format of `twinbank.toml`) and
//! `TWINBANK_TRUSTED_KEYS` (comma-separated PEM paths) it writes:
//! - `board_gen.rs`: the constants (`consts`), the compile-time checked `LAYOUT` and `ATTEMPTS`,
//!   and `config()`, included by the board crate;
//! - `memory-shim.x` (the shim at the chip's reset address) and `memory-bank-{A,B}.x` (the
//!   application at bank address + header size, the bank's end left for the TLVs), whose
//!   directory the board crate exports to the shim and the app (`DEP_<LINKS>_MEMORY_DIR`).
//!
//! A failure stops the build with one line naming the file (`cargo::error`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bytes at the end of a bank kept free for the image's TLVs (hash, key hash, signature,
/// security counter, ids).
pub const TLV_ROOM: u32 = 0x1000;

/// The chip's memory, which the board description does not hold.
#[derive(Debug, Clone, Copy)]
pub struct Chip {
    /// First byte of RAM.
    pub ram_start: u32,
    /// Bytes of RAM.
    pub ram_size: u32,
    /// CPU address the shim is linked at (the reset vector table's address).
    pub shim_origin: u32,
    /// Bytes of flash the shim may take (before the board description's state region).
    pub shim_size: u32,
    /// Extra `MEMORY` lines of `memory-shim.x` (e.g. the RP2040's `BOOT2` region).
    pub shim_regions: &'static str,
    /// Extra linker script text after the `MEMORY` block of `memory-shim.x` (e.g. the RP2040's
    /// `.boot2` section).
    pub shim_sections: &'static str,
}

/// Stops the build with one clear line.
fn fail(msg: String) -> ! {
    println!("cargo::error={msg}");
    std::process::exit(1)
}

/// A path given in an environment variable: relative paths are taken from the user's directory.
fn user_path(p: &str) -> PathBuf {
    let path = Path::new(p);
    match std::env::var_os("PWD") {
        Some(dir) if path.is_relative() => Path::new(&dir).join(path),
        _ => path.to_path_buf(),
    }
}

fn uuid(u: Option<twinbank::Uuid>) -> String {
    match u {
        Some(u) => format!("Some(Uuid({:?}))", u.0),
        None => "None".into(),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(format!("{name} is not set (not a build script?)")))
}

/// The board crate's build script: generates `board_gen.rs` and the linker maps from
/// `board_toml` (relative to the crate's manifest directory) for `chip`.
pub fn board(board_toml: &str, chip: Chip) {
    println!("cargo:rerun-if-env-changed=TWINBANK_TRUSTED_KEYS");
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let board_path = manifest.join(board_toml);
    println!("cargo:rerun-if-changed={}", board_path.display());
    let board = twinbank::board::BoardDescription::load(&board_path)
        .unwrap_or_else(|e| fail(format!("board description {e}")));
    let (layout, ids, attempts) = match (board.layout(), board.ids(), board.attempts()) {
        (Ok(l), Ok(i), Ok(a)) => (l, i, a.get()),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            fail(format!("board description {}: {e}", board_path.display()))
        }
    };
    let mut keys = Vec::new();
    let list = std::env::var("TWINBANK_TRUSTED_KEYS").unwrap_or_default();
    for given in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let path = user_path(given);
        println!("cargo:rerun-if-changed={}", path.display());
        let pem = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(format!("TWINBANK_TRUSTED_KEYS: {given}: {e}")));
        let key = twinbank::image::encode::trusted_key_from_pem(&pem)
            .unwrap_or_else(|e| fail(format!("TWINBANK_TRUSTED_KEYS: {given}: {e}")));
        keys.push(key.0);
    }
    if keys.is_empty() {
        println!(
            "cargo:warning=TWINBANK_TRUSTED_KEYS is not set: this firmware trusts no key and boots nothing"
        );
    }
    let region = |r: twinbank::Region| format!("Region::new({:#x}, {:#x})", r.offset.0, r.size.0);
    let f = &board.flash;
    let mut out = String::new();
    let mut c = |doc: &str, item: String| {
        let _ = writeln!(out, "    /// {doc}\n    {item}");
    };
    c(
        "Board name from the description.",
        format!("pub const BOARD_NAME: &str = {:?};", board.board.name),
    );
    c(
        "First byte of RAM.",
        format!("pub const RAM_START: u32 = {:#x};", chip.ram_start),
    );
    c(
        "One past the last byte of RAM.",
        format!(
            "pub const RAM_END: u32 = {:#x};",
            chip.ram_start + chip.ram_size
        ),
    );
    c(
        "CPU address of flash offset 0.",
        format!("pub const FLASH_BASE: u32 = {:#x};", f.base),
    );
    c(
        "Flash capacity.",
        format!("pub const FLASH_SIZE: u32 = {:#x};", f.size),
    );
    c(
        "Program granularity.",
        format!("pub const WRITE_SIZE: usize = {};", f.write_size),
    );
    c(
        "Erase sector size.",
        format!("pub const ERASE_SIZE: usize = {};", layout.erase_size()),
    );
    c(
        "State region.",
        format!("pub const STATE: Region = {};", region(layout.state())),
    );
    c(
        "Bank A.",
        format!(
            "pub const BANK_A: Region = {};",
            region(layout.bank(twinbank::Bank::A))
        ),
    );
    c(
        "Bank B.",
        format!(
            "pub const BANK_B: Region = {};",
            region(layout.bank(twinbank::Bank::B))
        ),
    );
    c(
        "Image header size (payload offset).",
        format!(
            "pub const HEADER_SIZE: u32 = {:#x};",
            board.image.header_size
        ),
    );
    c(
        "Vector table alignment (VTOR).",
        format!(
            "pub const VECTOR_ALIGNMENT: u32 = {:#x};",
            board.image.vector_alignment
        ),
    );
    c(
        "The device's ids.",
        format!(
            "pub const IDS: DeviceIds = DeviceIds {{ vendor: {}, class: {} }};",
            uuid(ids.vendor),
            uuid(ids.class)
        ),
    );
    c(
        "Trial boot attempts.",
        format!("pub const ATTEMPTS: u8 = {attempts};"),
    );
    let list: String = keys
        .iter()
        .map(|k| format!("TrustedKey({k:?}), "))
        .collect();
    c(
        "Trusted public keys (from TWINBANK_TRUSTED_KEYS at build time).",
        format!(
            "pub static TRUSTED_KEYS: [TrustedKey; {}] = [{list}];",
            keys.len()
        ),
    );
    let code = format!(
        "// Generated by twinbank-port-gen from {path}\n\
         /// Board constants generated from the board description at build time.\n\
         pub mod consts {{\n    use twinbank::image::{{DeviceIds, TrustedKey, Uuid}};\n    use twinbank::layout::Region;\n{out}}}\n\
         {COMMON}",
        path = board_path.display()
    );
    std::fs::write(out_dir.join("board_gen.rs"), code).unwrap();

    let ram = format!(
        "  RAM : ORIGIN = {:#x}, LENGTH = {:#x}\n",
        chip.ram_start, chip.ram_size
    );
    let flash_end = f.base + layout.state().offset.0;
    if chip.shim_origin + chip.shim_size > flash_end && chip.shim_origin < f.base + f.size {
        fail(format!(
            "{}: the shim's flash ({:#x} + {:#x}) overlaps the state region at {flash_end:#x}",
            board_path.display(),
            chip.shim_origin,
            chip.shim_size
        ));
    }
    std::fs::write(
        out_dir.join("memory-shim.x"),
        format!(
            "MEMORY\n{{\n{}  FLASH : ORIGIN = {:#x}, LENGTH = {:#x}\n{ram}}}\n{}",
            chip.shim_regions, chip.shim_origin, chip.shim_size, chip.shim_sections
        ),
    )
    .unwrap();
    for bank in twinbank::Bank::ALL {
        let origin = layout.bank_address(bank) + u32::from(board.image.header_size);
        let len = layout.bank_size() - u32::from(board.image.header_size) - TLV_ROOM;
        std::fs::write(
            out_dir.join(format!("memory-bank-{bank}.x")),
            format!("MEMORY\n{{\n  FLASH : ORIGIN = {origin:#x}, LENGTH = {len:#x}\n{ram}}}\n"),
        )
        .unwrap();
    }
    println!("cargo:memory_dir={}", out_dir.display());
}

/// Code every board crate shares, after its `consts`.
const COMMON: &str = r#"
/// The flash layout of this board, checked at compile time: a layout that breaks an invariant
/// of `twinbank::Layout` fails the build.
pub const LAYOUT: twinbank::Layout = {
    use consts::*;
    match twinbank::Layout::builder()
        .flash_size(FLASH_SIZE)
        .write_size(WRITE_SIZE as u32)
        .erase_size(ERASE_SIZE as u32)
        .base_address(FLASH_BASE)
        .state(STATE)
        .bank_a(BANK_A)
        .bank_b(BANK_B)
        .build()
    {
        Ok(l) => l,
        Err(_) => panic!("board.toml: the layout breaks an invariant of twinbank::Layout"),
    }
};

/// Trial boots a new image gets, checked at compile time like [`LAYOUT`].
pub const ATTEMPTS: twinbank::Attempts = match twinbank::Attempts::new(consts::ATTEMPTS) {
    Some(a) => a,
    None => panic!("board.toml: attempts must be 1..=7"),
};

/// The twinbank configuration of this board: layout, trusted keys, ids, attempts.
pub fn config() -> twinbank::Config<'static> {
    twinbank::Config {
        layout: LAYOUT,
        keys: &consts::TRUSTED_KEYS,
        ids: consts::IDS,
        attempts: ATTEMPTS,
    }
}
"#;

/// Copies the board crate's map `name` as `memory.x` and links with cortex-m-rt's `link.x`.
fn link(links: &str, name: &str) {
    let var = format!("DEP_{}_MEMORY_DIR", links.to_uppercase().replace('-', "_"));
    println!("cargo:rerun-if-env-changed={var}");
    let dir = PathBuf::from(env(&var));
    let out = PathBuf::from(env("OUT_DIR"));
    std::fs::copy(dir.join(name), out.join("memory.x"))
        .unwrap_or_else(|e| fail(format!("{}: {e}", dir.join(name).display())));
    println!("cargo:rerun-if-changed={}", dir.join(name).display());
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
}

/// Writes an empty `device.x` for a firmware without a PAC that defines its own one-entry
/// interrupt table (cortex-m-rt's `device` feature includes the file).
pub fn no_device_interrupts() {
    let out = PathBuf::from(env("OUT_DIR"));
    std::fs::write(out.join("device.x"), "/* no device interrupt names */\n").unwrap();
}

/// A shim's build script: links at the chip's reset address with the board crate `links`.
///
/// The shim defines its own one-entry interrupt table (`__INTERRUPTS`, see the ports' shims):
/// cortex-m-rt's `device` feature, which the application's HAL turns on when both are built in
/// one cargo command, includes a `device.x` of interrupt names; the shim's is empty.
pub fn link_shim(links: &str) {
    link(links, "memory-shim.x");
    let out = PathBuf::from(env("OUT_DIR"));
    std::fs::write(
        out.join("device.x"),
        "/* the shim has no device interrupts */\n",
    )
    .unwrap();
}

/// An application's build script: links for the bank `TWINBANK_BANK` (A, the default, or B).
pub fn link_app(links: &str) {
    println!("cargo:rerun-if-env-changed=TWINBANK_BANK");
    let bank = match std::env::var("TWINBANK_BANK").as_deref() {
        Ok("B") | Ok("b") => "B",
        Ok("A") | Ok("a") | Err(_) => "A",
        Ok(other) => fail(format!("TWINBANK_BANK must be A or B, not {other:?}")),
    };
    link(links, &format!("memory-bank-{bank}.x"));
    let out = PathBuf::from(env("OUT_DIR"));
    std::fs::write(
        out.join("app_gen.rs"),
        format!("/// The bank this build is linked for.\npub const BANK: twinbank::Bank = twinbank::Bank::{bank};\n"),
    )
    .unwrap();
}
