//! Board constants and linker maps from `../board.toml` (see `ports/board-gen`).
fn main() {
    twinbank_port_gen::board(
        "../board.toml",
        twinbank_port_gen::Chip {
            // 256 KiB of RAM.
            ram_start: 0x2000_0000,
            ram_size: 0x0004_0000,
            // The shim at the reset address, before the state region.
            shim_origin: 0x0,
            shim_size: 0x8000,
            shim_regions: "",
            shim_sections: "",
        },
    );
}
