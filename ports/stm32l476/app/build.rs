//! Links the application for its bank (`TWINBANK_BANK`, A by default); it has no PAC, so its
//! interrupt names (`device.x`) are its own (none).
fn main() {
    twinbank_port_gen::link_app("twinbank-port-stm32l476");
    twinbank_port_gen::no_device_interrupts();
}
