//! Harness `board`: the board description loader (`twinbank.toml`).

use super::{ensure, fail, seed, Seed};
use crate::board::{parse_uuid, BoardDescription};
use crate::layout::Bank;
use crate::testing::invariants::Violation;
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

/// Harness `board`: the input is a board description (lossy UTF-8).
///
/// An accepted description yields a layout, ids and attempts that all check out, with regions
/// inside the flash and the address space, erase-aligned, disjoint, equal banks, two or more
/// state sectors, a header smaller than a bank, and both vector tables aligned; a UUID that
/// parses prints and parses back the same.
pub fn board(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(u) = parse_uuid(&text) {
        ensure(
            parse_uuid(&u.to_string()) == Some(u),
            "uuid does not round-trip",
        );
    }
    let Ok(d) = BoardDescription::parse(&text) else {
        return;
    };
    let (Ok(layout), Ok(_), Ok(_)) = (d.layout(), d.ids(), d.attempts()) else {
        fail(Violation::Parser(
            "accepted board description fails its own checks",
        ));
    };
    let erase = layout.erase_size() as u64;
    let regions = [layout.state(), layout.bank(Bank::A), layout.bank(Bank::B)];
    for r in regions {
        let (start, size) = (r.offset.0 as u64, r.size.0 as u64);
        ensure(
            start + size <= d.flash.size as u64,
            "region outside the flash",
        );
        ensure(
            size > 0 && start.is_multiple_of(erase) && size.is_multiple_of(erase),
            "region not erase-aligned",
        );
    }
    for (i, a) in regions.iter().enumerate() {
        for b in &regions[i + 1..] {
            let (a0, a1) = (a.offset.0 as u64, a.offset.0 as u64 + a.size.0 as u64);
            let (b0, b1) = (b.offset.0 as u64, b.offset.0 as u64 + b.size.0 as u64);
            ensure(a1 <= b0 || b1 <= a0, "regions overlap");
        }
    }
    ensure(layout.state_sectors() >= 2, "state region too small");
    ensure(regions[1].size == regions[2].size, "banks differ");
    ensure(
        u32::from(d.image.header_size) < layout.bank_size(),
        "header leaves no room in a bank",
    );
    for bank in Bank::ALL {
        let r = layout.bank(bank);
        let end = d.flash.base as u64 + r.offset.0 as u64 + r.size.0 as u64;
        ensure(end <= 1 << 32, "bank outside the address space");
        let vectors = layout.bank_address(bank) as u64 + d.image.header_size as u64;
        ensure(
            d.image.vector_alignment > 0 && vectors.is_multiple_of(d.image.vector_alignment as u64),
            "vector table misaligned",
        );
    }
}

/// A board description in the shipped file's form.
fn board_text(base: u32, erase: u32, header: u32, ids: bool) -> String {
    let bank = 64 * erase;
    let mut text = format!(
        "[board]\nname = \"fuzz seed\"\n\n[flash]\nbase = {base:#x}\nsize = {:#x}\n\
         write_size = 4\nerase_size = {erase:#x}\n\n[layout]\n\
         state  = {{ offset = 0x0, size = {:#x} }}\n\
         bank_a = {{ offset = {:#x}, size = {bank:#x} }}\n\
         bank_b = {{ offset = {:#x}, size = {bank:#x} }}\n\n\
         [image]\nheader_size = {header:#x}\nvector_alignment = {header:#x}\n\n[device]\n",
        4 * erase + 2 * bank,
        4 * erase,
        4 * erase,
        4 * erase + bank,
    );
    if ids {
        text.push_str("vendor_id = \"5a1a2b3c-0d0e-4f10-8112-131415161718\"\n");
        text.push_str("class_id  = \"c1a55e00-0000-4000-8000-0000000a0385\"\n");
    }
    text.push_str("attempts = 3\n");
    text
}

pub(super) fn seeds() -> Vec<Seed> {
    vec![
        seed(
            "qemu-like",
            board_text(0x2100_0000, 4096, 0x400, true).into_bytes(),
        ),
        seed(
            "big-sectors-no-ids",
            board_text(0x0800_0000, 0x2_0000, 0x200, false).into_bytes(),
        ),
        seed("uuid", b"5a1a2b3c-0d0e-4f10-8112-131415161718".to_vec()),
    ]
}
