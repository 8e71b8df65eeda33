//! Links the shim at the reset address (the board crate's `memory-shim.x`).
fn main() {
    twinbank_port_gen::link_shim("twinbank-port-stm32l476");
}
