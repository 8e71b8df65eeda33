//! Harness `image`: MCUboot header/TLV parsing and verification of a flash image.

use super::{ensure, fail, seed, u32_len, Seed};
use crate::flash::{SliceFlash, ERASED};
use crate::image::encode::ImageBuilder;
use crate::image::{
    check_manifest, hash_range, verify_image, DeviceIds, ImageHeader, TrustedKey, VerifyParams,
    Version, HEADER_SIZE,
};
use crate::testing::device::{signing_key, CLASS, VENDOR};
use crate::testing::invariants::{payload, Violation};
use crate::update::Manifest;
use embedded_storage::nor_flash::{ErrorType, NorFlashErrorKind, ReadNorFlash};
use std::vec;
use std::vec::Vec;

/// CPU address of the bank the `image` harness verifies for: bank A of the demo board, the
/// address the imgtool fixtures are bound to.
pub const IMAGE_BANK_ADDRESS: u32 = 0x2101_0000;
/// Capacity of that bank.
pub const IMAGE_CAPACITY: u32 = 0x2000;
/// The public key of `device/tests/fixtures/imgtool/ed25519-imgtool.pem` (a test key), trusted
/// next to the test device's key so imgtool's images reach the signature check.
pub const IMGTOOL_KEY: TrustedKey = TrustedKey([
    0x05, 0x6e, 0x4d, 0xd5, 0xcd, 0xd3, 0xcb, 0xbd, 0x8b, 0xf7, 0x7f, 0xaa, 0xbb, 0x2d, 0x4e, 0xac,
    0xcd, 0x06, 0x76, 0x16, 0x96, 0xea, 0xe4, 0x68, 0x87, 0xd0, 0xf3, 0x29, 0x70, 0x0c, 0xb3, 0x76,
]);

fn image_keys() -> &'static [TrustedKey] {
    static KEYS: std::sync::OnceLock<[TrustedKey; 2]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        [
            TrustedKey(signing_key().verifying_key().to_bytes()),
            IMGTOOL_KEY,
        ]
    })
}

fn image_params(capacity: u32) -> VerifyParams<'static> {
    VerifyParams {
        offset: 0,
        capacity,
        bank_address: IMAGE_BANK_ADDRESS,
        keys: image_keys(),
        ids: DeviceIds::default(),
        min_security_counter: 0,
    }
}

/// Harness `image`: the input is a flash image (the bank's contents from its first byte).
///
/// Never panics on any input, and: a parsed header re-encodes to the same fixed fields; a
/// manifest read from flash equals the one built from the parts a host sends; a verified image
/// has that manifest, passes the policy checks, fits, hashes to its digest, and verifies again
/// in a bank of exactly its own size; the verdict is the same at another bank offset through a
/// driver that reads aligned words only.
pub fn image(data: &[u8]) {
    image_placed(data);
    if let Some(fixed) = data.get(..HEADER_SIZE) {
        let mut b = [0u8; HEADER_SIZE];
        b.copy_from_slice(fixed);
        if let Ok(h) = ImageHeader::parse(&b) {
            // Bytes 28..32 are padding, not kept.
            ensure(h.to_bytes()[..28] == b[..28], "header does not re-encode")
        }
    }
    let len = u32_len(data);
    let manifest = Manifest::read(&mut SliceFlash(data), len);
    if let Ok(m) = &manifest {
        ensure(m.total_len <= len, "manifest longer than the image");
        let prot = data.get(m.header.tlv_offset() as usize..m.header.hashed_len() as usize);
        let tlvs = data.get(m.header.hashed_len() as usize..m.total_len as usize);
        let (Some(prot), Some(tlvs)) = (prot, tlvs) else {
            fail(Violation::Parser("TLV areas outside the image"));
        };
        let parts = Manifest::from_parts(m.header_bytes, prot, tlvs);
        ensure(parts.as_ref() == Ok(m), "flash and wire manifests differ");
    }
    let params = image_params(IMAGE_CAPACITY);
    let Ok(v) = verify_image(&mut SliceFlash(data), &params) else {
        return;
    };
    let Ok(m) = manifest else {
        fail(Violation::Parser("verified image without a manifest"));
    };
    ensure(
        (m.header, m.protected, m.digest, m.total_len)
            == (v.header, v.protected, v.digest, v.total_len),
        "manifest differs from the verified image",
    );
    ensure(
        check_manifest(&v.header, &v.protected, &params).is_ok(),
        "verified image fails the policy",
    );
    ensure(v.total_len <= IMAGE_CAPACITY, "verified image overflows");
    let digest = hash_range(&mut SliceFlash(data), 0, v.header.hashed_len() as u32);
    ensure(digest == Ok(v.digest), "digest is not the hash");
    let tight = verify_image(&mut SliceFlash(data), &image_params(v.total_len));
    ensure(tight == Ok(v), "verdict depends on the spare room");
}

/// Where the `image` harness places the image a second time: a bank that starts at this flash
/// offset, read by a driver that only reads aligned words.
const IMAGE_PLACED_AT: usize = 1024;
/// Read size of that driver.
const IMAGE_READ_SIZE: usize = 8;

/// A driver that reads `R`-byte aligned words only (like many MCU flash controllers).
struct AlignedReads<'a, const R: usize>(SliceFlash<'a>);

impl<const R: usize> ErrorType for AlignedReads<'_, R> {
    type Error = NorFlashErrorKind;
}

impl<const R: usize> ReadNorFlash for AlignedReads<'_, R> {
    const READ_SIZE: usize = R;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if !(offset as usize).is_multiple_of(R) || !bytes.len().is_multiple_of(R) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// The verdict on `data` does not depend on where the bank starts or on the driver's read size.
fn image_placed(data: &[u8]) {
    let mut flash = vec![ERASED; IMAGE_PLACED_AT];
    flash.extend_from_slice(data);
    let here = verify_image(&mut SliceFlash(data), &image_params(IMAGE_CAPACITY));
    let params = VerifyParams {
        offset: IMAGE_PLACED_AT as u32,
        ..image_params(IMAGE_CAPACITY)
    };
    let placed = verify_image(
        &mut AlignedReads::<IMAGE_READ_SIZE>(SliceFlash(&flash)),
        &params,
    );
    ensure(
        here == placed,
        "verdict depends on the bank offset or the read size",
    );
}

pub(super) fn seeds() -> Vec<Seed> {
    let key = signing_key();
    let builder = ImageBuilder {
        header_size: 0x100,
        version: Version::new(1, 2, 3, 4),
        rom_fixed: Some(IMAGE_BANK_ADDRESS),
        security_counter: Some(7),
        vendor_id: Some(VENDOR),
        class_id: Some(CLASS),
    };
    let body = payload(700, 1);
    let mut seeds = Vec::new();
    if let Ok(img) = builder.sign(&body, &key) {
        seeds.push(seed("signed-ids-counter", img));
    }
    let bare = ImageBuilder {
        rom_fixed: Some(IMAGE_BANK_ADDRESS),
        ..ImageBuilder::new(32, Version::new(0, 1, 0, 0))
    };
    if let Ok(img) = bare.sign(&body[..301], &key) {
        seeds.push(seed("signed-bare", img));
    }
    if let Ok(img) = builder.unsigned(&body) {
        seeds.push(seed("unsigned", img));
    }
    seeds.push(seed(
        "imgtool-basic",
        include_bytes!("../../../tests/fixtures/imgtool/signed-basic.bin").to_vec(),
    ));
    seeds.push(seed(
        "imgtool-pubkey",
        include_bytes!("../../../tests/fixtures/imgtool/signed-pubkey.bin").to_vec(),
    ));
    seeds.push(seed(
        "imgtool-pure",
        include_bytes!("../../../tests/fixtures/imgtool/signed-pure.bin").to_vec(),
    ));
    seeds
}
