//! # twinbank — A/B firmware updates on NOR flash
//!
//! Two firmware banks: one runs, the other receives the next image. A verified new image becomes
//! active through one atomic state record (the role swap), runs on trial, and rolls back on its own
//! when its health check fails or it never confirms. Each image byte is written to flash once.
//!
//! ```text
//!  | bootloader | state (ring of records) | bank A (image) | bank B (image) |
//!
//!   shim ── boot::decide ──► verify preferred bank ──► jump
//!   app  ── update::Updater ─► begin → write chunks → finish ─► reboot ─► trial ─► confirm
//! ```
//!
//! Modules, one per concept:
//! - [`layout`]: the regions and their invariants;
//! - [`image`]: MCUboot header/TLV format, streaming verification (and the encoder with `std`);
//! - [`state`]: the boot state and its power-safe record storage;
//! - [`boot`]: the boot decision the bootloader shim calls;
//! - [`update`]: what the application calls (install, confirm, reject, rollback);
//! - `asynch` (cargo feature `async`): the same updater for embassy applications, over
//!   `embedded-storage-async`, generated from the same source;
//! - [`delta`]: delta updates, the next image rebuilt from the running one and a patch;
//! - [`protocol`]: the serial protocol (frames, messages, the device-side server);
//! - [`report`]: the bootloader's boot line, written without `core::fmt`;
//! - `smp` (cargo feature `smp`): SMP (MCUmgr) for the tools MCUboot users own, served beside
//!   the native protocol on the same UART;
//! - [`testing`] (`std`): the strict NOR flash used by the tests, the device invariants every
//!   randomised test and fuzz target checks, a device rig driven through the protocol, and the
//!   fuzz harnesses.
//!
//! `no_std`, no heap, generic over [`embedded_storage::nor_flash::NorFlash`]. Nothing read from
//! flash can make it panic: every length is checked before use. Stack needs are listed in
//! `docs/design.md` (dominated by Ed25519 verification: a whole boot peaks at 9 328 B on
//! Cortex-M3, measured in BENCHMARKS.md).
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub mod asynch;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod board;
pub mod boot;
pub mod delta;
pub mod flash;
pub mod image;
pub mod layout;
pub mod protocol;
pub mod report;
#[cfg(feature = "smp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smp")))]
pub mod smp;
pub mod state;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod testing;
pub mod update;

pub use boot::{decide, decide_with, BootDecision, BootError, BootReason, RollbackCause};
pub use image::{DeviceIds, ImageError, Manifest, TrustedKey, Uuid, Version};
pub use layout::{Bank, GeometryError, Layout, LayoutError, Region, SectorMap, SectorRun};
pub use state::{Attempts, BankState, BootState, ImageId};
pub use update::{UpdateError, Updater};

/// The key type the image encoder signs with ([`image::encode::ImageBuilder::sign`]).
#[cfg(feature = "std")]
pub use ed25519_dalek::SigningKey;

// Errors of the modules whose files the boot and update paths own, so that `?` works in a
// `Box<dyn Error>` main.
impl core::error::Error for UpdateError {}
impl core::error::Error for BootError {}
impl core::error::Error for state::StateError {}

// The `defmt` feature's promise, checked by every build with it: the types a firmware logs
// implement `defmt::Format`.
#[cfg(feature = "defmt")]
const _: () = {
    const fn logs<T: defmt::Format>() {}
    logs::<BootDecision>();
    logs::<BootError>();
    logs::<UpdateError>();
    logs::<state::StateError>();
    logs::<ImageError>();
    logs::<LayoutError>();
    logs::<GeometryError>();
    logs::<delta::DeltaError>();
    logs::<protocol::message::RemoteError>();
    logs::<protocol::FrameError>();
    logs::<flash::FlashFault>();
    logs::<BootState>();
    logs::<BankState>();
    logs::<ImageId>();
    logs::<Version>();
    logs::<Bank>();
    logs::<Layout>();
};

/// Everything the device knows about itself: where things are, whom it trusts, what it is.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// The flash layout.
    pub layout: Layout,
    /// Trusted signing keys (built into the bootloader). Empty: nothing boots (fail closed).
    pub keys: &'a [TrustedKey],
    /// The device's vendor/class ids; images must match the ids that are set.
    pub ids: DeviceIds,
    /// Trial boots a new image gets.
    pub attempts: Attempts,
}

impl<'a> Config<'a> {
    /// Verification parameters for `bank` with the given minimum security counter.
    pub fn verify_params(&self, bank: Bank, min_security_counter: u32) -> image::VerifyParams<'a> {
        image::VerifyParams {
            offset: self.layout.bank(bank).offset.0,
            capacity: self.layout.bank_size(),
            bank_address: self.layout.bank_address(bank),
            keys: self.keys,
            ids: self.ids,
            min_security_counter,
        }
    }
}

impl state::ImageId {
    /// The identity of a verified image.
    pub fn of(image: &image::VerifiedImage) -> state::ImageId {
        state::ImageId {
            version: image.header.version,
            digest: image.digest,
            security_counter: image.protected.security_counter,
            size: image.total_len,
        }
    }
}
