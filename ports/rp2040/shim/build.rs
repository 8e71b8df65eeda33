//! Links the shim after the second-stage bootloader (the board crate's `memory-shim.x`).
fn main() {
    twinbank_port_gen::link_shim("twinbank-port-rp2040");
}
