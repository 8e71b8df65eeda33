//! `cargo xtask size [--features F] [--elf FILE]`: the bootloader shim's flash and RAM, and the
//! bytes each crate contributes, read from the ELF's sections and symbols (no external tools).
//! The budget is the production shim's (`twinbank-shim --no-default-features`: no QEMU test
//! hooks); the shim the QEMU tests run (with the hooks) and the shim with serial recovery
//! (features `recovery` and `recovery-smp`) are reported beside it.
//! Fails when the flash exceeds the budget the board description declares
//! (`[bootloader] flash_budget` in twinbank.toml), so every change's cost is visible in CI.

use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use twinbank::board::BoardDescription;
use xtask::firmware::{self, Build, Variant};
use xtask::tools::root;

/// The sizes of one firmware ELF.
#[derive(Debug, Clone, Default)]
pub struct Sizes {
    /// Bytes in flash: vector table, code, read-only data and the initial values of `.data`.
    pub flash: u64,
    /// Static RAM: `.data` + `.bss` + `.uninit`.
    pub ram: u64,
    /// Flash bytes per crate (code + read-only data), largest first.
    pub per_crate: Vec<(String, u64)>,
    /// Flash bytes per symbol (demangled), largest first.
    pub per_symbol: Vec<(String, u64)>,
}

/// The crate a (demangled) symbol belongs to: the first path segment, looking through
/// `<T as Trait>` and `<T>` wrappers; `(no crate)` for C-level symbols (memcpy, Reset, …).
fn crate_of(name: &str) -> String {
    let d = format!("{:#}", rustc_demangle::demangle(name));
    let mut s = d.as_str();
    while let Some(rest) = s.strip_prefix('<') {
        s = rest;
    }
    s = s.trim_start_matches('&').trim_start_matches("mut ");
    match s.split_once("::") {
        Some((krate, _)) if !krate.is_empty() && !krate.contains(' ') => krate.to_string(),
        _ => "(no crate)".to_string(),
    }
}

/// Reads the sizes of `elf`.
pub fn measure(elf: &Path) -> Result<Sizes, String> {
    let data = std::fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let file = object::File::parse(&*data).map_err(|e| format!("{}: {e}", elf.display()))?;
    let mut sizes = Sizes::default();
    let mut flash_sections = Vec::new();
    for s in file.sections() {
        let name = s.name().unwrap_or("");
        match name {
            ".vector_table" | ".text" | ".rodata" => {
                sizes.flash += s.size();
                flash_sections.push((s.index(), s.size()));
            }
            ".data" => {
                sizes.flash += s.size();
                sizes.ram += s.size();
            }
            ".bss" | ".uninit" => sizes.ram += s.size(),
            _ => {}
        }
    }
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    let mut attributed = 0u64;
    // Aliases (several names for one routine, e.g. `memcpy` and `__aeabi_memcpy4`) count once.
    let mut seen = std::collections::BTreeSet::new();
    let mut symbols: Vec<_> = file.symbols().collect();
    symbols.sort_by_key(|s| (s.address(), s.name().unwrap_or("").to_string()));
    for sym in symbols {
        let Some(idx) = sym.section_index() else {
            continue;
        };
        if sym.size() == 0 || !flash_sections.iter().any(|(i, _)| *i == idx) {
            continue;
        }
        if matches!(
            sym.kind(),
            object::SymbolKind::Section | object::SymbolKind::File
        ) {
            continue;
        }
        if !seen.insert(sym.address()) {
            continue;
        }
        let name = sym.name().unwrap_or("");
        let krate = if name.starts_with(".L") || name.is_empty() {
            "(anonymous data)".to_string()
        } else {
            crate_of(name)
        };
        *per.entry(krate).or_default() += sym.size();
        attributed += sym.size();
        sizes
            .per_symbol
            .push((format!("{:#}", rustc_demangle::demangle(name)), sym.size()));
    }
    let in_sections: u64 = flash_sections.iter().map(|(_, s)| s).sum();
    if in_sections > attributed {
        per.insert(
            "(no symbol: vectors, padding, literals)".into(),
            in_sections - attributed,
        );
    }
    let mut v: Vec<(String, u64)> = per.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sizes.per_crate = v;
    sizes
        .per_symbol
        .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(sizes)
}

/// Prints the table of `sizes` for `what`.
pub fn print(what: &str, sizes: &Sizes, budget: Option<u64>) {
    println!(
        "{what}: flash {} B ({:.1} KiB), static RAM {} B{}",
        sizes.flash,
        sizes.flash as f64 / 1024.0,
        sizes.ram,
        budget
            .map(|b| format!(", budget {b} B ({} B left)", b as i64 - sizes.flash as i64))
            .unwrap_or_default()
    );
    println!("| crate | flash bytes |");
    println!("|---|---|");
    for (k, n) in &sizes.per_crate {
        println!("| {k} | {n} |");
    }
}

fn size_build() -> Result<Build, String> {
    let ws = root();
    let dir = ws.join("target/size");
    let key = dir.join("keys/size.pem");
    firmware::ensure_key(&key)?;
    Ok(Build {
        board: xtask::qemu::Board::default_board(),
        workspace: ws.clone(),
        target_dir: dir.join("cargo"),
        out_dir: dir.join("firmware"),
        trusted_keys: vec![key],
        verbose: true,
    })
}

/// `cargo xtask size`: measures `elf` (or the production shim, built), prints the table and the
/// `symbols` largest symbols, and fails above the board's budget. Without `elf` it also reports
/// the shim with the QEMU test hooks (the one the QEMU tests run) and the recovery builds, which
/// the budget does not cover.
pub fn size_cmd(elf: Option<PathBuf>, symbols: Option<usize>) -> Result<(), String> {
    let board = BoardDescription::load(&root().join("twinbank.toml")).map_err(|e| e.to_string())?;
    let budget = board.bootloader.as_ref().map(|b| b.flash_budget as u64);
    let (what, elf) = match elf {
        Some(e) => ("shim".to_string(), e),
        None => {
            let b = size_build()?;
            let others = [
                Variant::shim(false),
                Variant::shim_recovery(false),
                Variant::shim_recovery(true),
            ];
            b.build(&[Variant::shim_production()])?;
            b.build(&others)?;
            let production = measure(&b.elf("shim-production"))?;
            for v in &others {
                let sizes = measure(&b.elf(&v.name))?;
                let what = if v.features.is_empty() {
                    format!(
                        "{} (with the QEMU test hooks: {:+} B)",
                        v.name,
                        sizes.flash as i64 - production.flash as i64
                    )
                } else {
                    format!("{} (features {})", v.name, v.features.join(","))
                };
                print(&what, &sizes, None);
                println!();
            }
            (
                "shim-production (what a board ships; the budget's)".to_string(),
                b.elf("shim-production"),
            )
        }
    };
    let sizes = measure(&elf)?;
    print(&what, &sizes, budget);
    if let Some(n) = symbols {
        println!("\n| symbol | flash bytes |\n|---|---|");
        for (name, bytes) in sizes.per_symbol.iter().take(n) {
            println!("| {name} | {bytes} |");
        }
    }
    if let Some(b) = budget {
        if sizes.flash > b {
            return Err(format!(
                "the shim's flash ({} B) exceeds the board's budget ({b} B)",
                sizes.flash
            ));
        }
    }
    Ok(())
}
