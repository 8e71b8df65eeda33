//! The xtask library: building the firmware for the QEMU board ([`firmware`]), running it under
//! QEMU ([`qemu`]) and the prerequisites ([`tools`]). The `xtask` binary (`cargo xtask …`) and
//! the QEMU end-to-end tests in `tests/` share it; signing and provisioning come from the host
//! tool's library (`twinbank_host`).

pub mod firmware;
pub mod qemu;
pub mod tools;
