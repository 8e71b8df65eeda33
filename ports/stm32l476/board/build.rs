//! Board constants and linker maps from `../board.toml` (see `ports/board-gen`).
fn main() {
    twinbank_port_gen::board(
        "../board.toml",
        twinbank_port_gen::Chip {
            // SRAM1: 96 KiB (SRAM2, 32 KiB at 0x1000_0000, is left to the application).
            ram_start: 0x2000_0000,
            ram_size: 0x0001_8000,
            // The shim at the reset address (flash aliased at 0), before the state region.
            shim_origin: 0x0800_0000,
            shim_size: 0x8000,
            shim_regions: "",
            shim_sections: "",
        },
    );
}
