//! Board constants and linker maps from `../board.toml` (see `ports/board-gen`).
fn main() {
    twinbank_port_gen::board(
        "../board.toml",
        twinbank_port_gen::Chip {
            // SRAM0..3 (striped), 256 KiB.
            ram_start: 0x2000_0000,
            ram_size: 0x0004_0000,
            // After the 256-byte second-stage bootloader at the start of the QSPI flash, up to
            // the state region at 64 KiB.
            shim_origin: 0x1000_0100,
            shim_size: 0xff00,
            shim_regions: "  BOOT2 : ORIGIN = 0x10000000, LENGTH = 0x100\n",
            shim_sections: "SECTIONS {\n  .boot2 ORIGIN(BOOT2) :\n  {\n    KEEP(*(.boot2));\n  } > BOOT2\n} INSERT BEFORE .text;\n",
        },
    );
}
