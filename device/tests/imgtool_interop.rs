//! Interoperability with MCUboot's `imgtool` (2.5.0): the fixtures in tests/fixtures/imgtool were
//! made by `make-fixtures.sh` there (the exact commands) with a key from `imgtool keygen -t ed25519`.
//! - images signed by imgtool verify with this crate;
//! - this crate's encoder produces the same bytes as `imgtool sign --pad-header` (Ed25519 is
//!   deterministic), and `imgtool verify` accepts them (run when imgtool is installed: set
//!   TWINBANK_IMGTOOL or put `imgtool` on PATH; `.ci/run` installs it. Without it the test fails,
//!   unless TWINBANK_SKIP_IMGTOOL=1 says to skip it on purpose).

use std::path::PathBuf;
use std::process::Command;
use twinbank::board::parse_uuid;
use twinbank::flash::SliceFlash;
use twinbank::image::encode::{signing_key_from_pem, trusted_key_from_pem, ImageBuilder};
use twinbank::image::{verify_image, ImageError, VerifyParams};
use twinbank::{DeviceIds, TrustedKey, Version};

const BANK_A: u32 = 0x2101_0000;
const BANK_B: u32 = 0x2111_0000;
const SLOT: u32 = 0x10_0000;
const VID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
const CID: &str = "7d444840-9dc0-11d1-b245-5ffdce74fad2";

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/imgtool")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn key() -> TrustedKey {
    trusted_key_from_pem(&String::from_utf8(fixture("ed25519-imgtool.pub.pem")).unwrap()).unwrap()
}

fn params(keys: &[TrustedKey], bank: u32, ids: DeviceIds, min: u32) -> VerifyParams<'_> {
    VerifyParams {
        offset: 0,
        capacity: SLOT,
        bank_address: bank,
        keys,
        ids,
        min_security_counter: min,
    }
}

fn ids() -> DeviceIds {
    DeviceIds {
        vendor: parse_uuid(VID),
        class: parse_uuid(CID),
    }
}

#[test]
fn imgtool_keys_load_both_ways() {
    let sk =
        signing_key_from_pem(&String::from_utf8(fixture("ed25519-imgtool.pem")).unwrap()).unwrap();
    assert_eq!(TrustedKey(sk.verifying_key().to_bytes()), key());
    assert_eq!(key().0.to_vec(), fixture("ed25519-imgtool.pub.raw"));
    assert_eq!(key().spki().to_vec(), fixture("ed25519-imgtool.pub.der"));
    assert_eq!(
        key().keyhash().to_vec(),
        fixture("ed25519-imgtool.pubhash.bin")
    );
}

#[test]
fn imgtool_images_verify() {
    let keys = [key()];
    for name in [
        "signed-basic.bin",
        "signed-pubkey.bin",
        "signed-unaligned.bin",
    ] {
        let img = fixture(name);
        let v = verify_image(
            &mut SliceFlash(&img),
            &params(&keys, BANK_A, DeviceIds::default(), 0),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.header.version, Version::new(1, 2, 3, 4), "{name}");
        assert_eq!(v.total_len as usize, img.len(), "{name}");
    }
    let full = fixture("signed-full.bin");
    let v = verify_image(&mut SliceFlash(&full), &params(&keys, BANK_B, ids(), 7)).unwrap();
    assert_eq!(v.protected.security_counter, 7);
    assert_eq!(v.protected.vendor_id, parse_uuid(VID));
    assert_eq!(v.protected.class_id, parse_uuid(CID));
    // The same image, judged by a device that demands more, or lives elsewhere:
    let refuse = |p: VerifyParams<'_>| verify_image(&mut SliceFlash(&full), &p).unwrap_err();
    assert_eq!(
        refuse(params(&keys, BANK_B, ids(), 8)),
        ImageError::SecurityCounterTooLow {
            image: 7,
            minimum: 8
        }
    );
    assert_eq!(
        refuse(params(&keys, BANK_A, ids(), 0)),
        ImageError::WrongBank {
            linked_for: BANK_B,
            bank_address: BANK_A
        }
    );
    let other = DeviceIds {
        class: parse_uuid(VID),
        ..ids()
    };
    assert_eq!(
        refuse(params(&keys, BANK_B, other, 0)),
        ImageError::ClassIdMismatch
    );
    let stranger = [TrustedKey(
        ed25519_dalek::SigningKey::from_bytes(&[1; 32])
            .verifying_key()
            .to_bytes(),
    )];
    assert_eq!(
        refuse(params(&stranger, BANK_B, ids(), 0)),
        ImageError::UntrustedKey
    );
    // imgtool --pure (SHA-512 + signature over the whole image) is not supported: refused.
    let pure = fixture("signed-pure.bin");
    assert_eq!(
        verify_image(
            &mut SliceFlash(&pure),
            &params(&keys, BANK_A, DeviceIds::default(), 0)
        ),
        Err(ImageError::PureSignature)
    );
}

fn our_images() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let sk =
        signing_key_from_pem(&String::from_utf8(fixture("ed25519-imgtool.pem")).unwrap()).unwrap();
    let basic = ImageBuilder {
        header_size: 0x400,
        version: Version::new(1, 2, 3, 4),
        rom_fixed: Some(BANK_A),
        ..ImageBuilder::default()
    };
    let full = ImageBuilder {
        header_size: 0x400,
        version: Version::new(2, 0, 0, 0),
        rom_fixed: Some(BANK_B),
        security_counter: Some(7),
        vendor_id: parse_uuid(VID),
        class_id: parse_uuid(CID),
    };
    vec![
        (
            "signed-basic.bin",
            basic.sign(&fixture("payload.bin"), &sk).unwrap(),
            fixture("signed-basic.bin"),
        ),
        (
            "signed-unaligned.bin",
            basic.sign(&fixture("payload-unaligned.bin"), &sk).unwrap(),
            fixture("signed-unaligned.bin"),
        ),
        (
            "signed-full.bin",
            full.sign(&fixture("payload.bin"), &sk).unwrap(),
            fixture("signed-full.bin"),
        ),
    ]
}

#[test]
fn encoder_output_is_byte_identical_to_imgtool() {
    for (name, ours, theirs) in our_images() {
        assert_eq!(ours.len(), theirs.len(), "{name}: length");
        let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        assert_eq!(first, None, "{name}: first differing byte");
    }
}

#[test]
fn imgtool_verify_accepts_our_images() {
    let imgtool = std::env::var("TWINBANK_IMGTOOL").unwrap_or_else(|_| "imgtool".into());
    let probe = Command::new(&imgtool).arg("version").output();
    if probe.is_err() {
        if std::env::var("TWINBANK_SKIP_IMGTOOL").as_deref() == Ok("1") {
            eprintln!("SKIPPED on request (TWINBANK_SKIP_IMGTOOL=1): imgtool not found");
            return;
        }
        panic!(
            "imgtool not found ({imgtool}); install it (`pip install imgtool`, as .ci/run does) and \
             set TWINBANK_IMGTOOL, or set TWINBANK_SKIP_IMGTOOL=1 to skip on purpose"
        );
    }
    let dir = std::env::temp_dir().join(format!("twinbank-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/imgtool/ed25519-imgtool.pem");
    for (name, ours, _) in our_images() {
        let path = dir.join(name);
        std::fs::write(&path, &ours).unwrap();
        let out = Command::new(&imgtool)
            .arg("verify")
            .arg("-k")
            .arg(&key)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "imgtool verify {name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // And a tampered copy is refused by imgtool too (the check can fail).
        let mut bad = ours.clone();
        bad[0x400 + 5] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let out = Command::new(&imgtool)
            .arg("verify")
            .arg("-k")
            .arg(&key)
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "imgtool accepted a tampered {name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
