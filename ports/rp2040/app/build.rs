//! Links the application for its bank (`TWINBANK_BANK`, A by default).
fn main() {
    twinbank_port_gen::link_app("twinbank-port-rp2040");
}
