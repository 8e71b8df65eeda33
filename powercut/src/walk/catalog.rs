//! The images a walk can send, program or find in a bank, for one geometry: good ones of every
//! span, same-header rebuilds, builds of one image with other unprotected TLVs (longer or shorter
//! with the same header, issue 16 bug 1), a build signed by the second trusted key, and one image
//! per refusal kind.
//!
//! Every image the walk ever places in a bank is in the catalog, so the model can say what a bank
//! holds by comparing bytes: a bank verifies exactly when its first bytes are a catalog image
//! without defect that the device accepts (nobody forges a signature here), except for bytes the
//! verifier never reads (the value of an unknown TLV), which may differ.

use crate::world::HEADER_SIZE;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use twinbank::image::encode::ImageBuilder;
use twinbank::image::tlv::{
    TLV_ED25519, TLV_INFO_MAGIC, TLV_KEYHASH, TLV_PUBKEY, TLV_SHA256, TLV_SIG_PURE,
};
use twinbank::image::{FLAGS_ENCRYPTED, FLAG_NON_BOOTABLE, MAX_ANNOUNCED_TLVS};
use twinbank::testing::SplitMix64;
use twinbank::update::Manifest;
use twinbank::{
    Bank, DeviceIds, ImageError, ImageId, Layout, TrustedKey, UpdateError, Uuid, Version,
};

/// Seeds of the two keys the device trusts.
pub const TRUSTED_KEY_SEEDS: [[u8; 32]; 2] = [[7; 32], [8; 32]];
/// Seed of a key the device does not trust.
pub const UNTRUSTED_KEY_SEED: [u8; 32] = [9; 32];
/// The vendor id of the walk's devices (when the life configures ids).
pub const VENDOR: Uuid = Uuid([0x11; 16]);
/// The class id of the walk's devices (when the life configures ids).
pub const CLASS: Uuid = Uuid([0x22; 16]);
/// An id of somebody else.
pub const OTHER_ID: Uuid = Uuid([0x33; 16]);
/// Offset of the flags field in the image header.
const FLAGS_OFFSET: usize = 16;
/// Type of the filler TLV of the padded builds (unknown to the verifier, so ignored).
const TLV_FILLER: u16 = 0x0777;
/// Security counters of the good images of each bank (a downgrade is an image below the minimum).
const COUNTERS: [u32; 8] = [1, 1, 2, 2, 3, 4, 5, 6];
/// Counter of the images whose only defect is elsewhere.
const DEFECT_COUNTER: u32 = 3;

/// What is wrong with an image apart from its bank, ids, counter and size (which depend on the
/// device and the bank it is offered to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Defect {
    /// None: signed by a trusted key, bootable.
    None,
    /// No signature TLV.
    Unsigned,
    /// A trusted key's signature with a flipped bit.
    BadSignature,
    /// Signed by a key the device does not trust.
    UntrustedKey,
    /// The SHA-256 TLV names another digest than the one signed.
    ForgedDigest,
    /// Carries the `imgtool --pure` TLV.
    PureSignature,
    /// No `ROM_FIXED` bank binding.
    NotBankBound,
    /// Flagged non-bootable.
    NonBootable,
    /// Flagged encrypted.
    Encrypted,
}

/// The unprotected TLV area of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tlvs {
    /// SHA-256, KEYHASH, signature by trusted key `k`.
    KeyHash(usize),
    /// SHA-256, PUBKEY (the whole key), signature by trusted key 0.
    PubKey,
    /// As `KeyHash(0)` plus a filler TLV of `n` value bytes.
    Filler(usize),
    /// Defective areas.
    Bad(Defect),
}

/// One image of the catalog.
#[derive(Debug, Clone)]
pub struct CatImg {
    /// Short name for messages.
    pub name: String,
    /// The whole image.
    pub bytes: Vec<u8>,
    /// What a host announces for it.
    pub manifest: Manifest,
    /// Its identity as announced (what the state records).
    pub id: ImageId,
    /// The bank its `load_addr` names (`None` when it has no `ROM_FIXED` flag).
    pub linked: Option<Bank>,
    /// Vendor id TLV.
    pub vendor: Option<Uuid>,
    /// Class id TLV.
    pub class: Option<Uuid>,
    /// Defect.
    pub defect: Defect,
    /// Bytes covered by the hash (header, payload, protected TLVs).
    pub hashed_len: usize,
    /// The header's flags.
    pub flags: u32,
    /// The header's load address.
    pub load_addr: u32,
    /// Bytes verification never reads (the value of a TLV of unknown type): `[from, to)`.
    pub ignored: Option<(usize, usize)>,
}

impl CatImg {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never empty (an image has a header); for clippy.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// True when `bank_bytes` start with this image (bytes verification ignores may differ).
    pub fn is_in(&self, bank_bytes: &[u8]) -> bool {
        let n = self.len();
        if n > bank_bytes.len() {
            return false;
        }
        match self.ignored {
            None => bank_bytes[..n] == self.bytes[..],
            Some((a, b)) => {
                bank_bytes[..a] == self.bytes[..a] && bank_bytes[b..n] == self.bytes[b..]
            }
        }
    }

    /// True when this image, placed in `bank`, verifies on a device with `ids`, whatever the
    /// minimum counter (the caller compares the counter).
    pub fn verifies_in(&self, bank: Bank, ids: &DeviceIds) -> bool {
        self.defect == Defect::None && self.linked == Some(bank) && ids_ok(self, ids).is_none()
    }
}

fn ids_ok(img: &CatImg, ids: &DeviceIds) -> Option<ImageError> {
    match (ids.vendor, img.vendor) {
        (Some(_), None) => return Some(ImageError::MissingVendorId),
        (Some(d), Some(i)) if d != i => return Some(ImageError::VendorIdMismatch),
        _ => {}
    }
    match (ids.class, img.class) {
        (Some(_), None) => Some(ImageError::MissingClassId),
        (Some(d), Some(i)) if d != i => Some(ImageError::ClassIdMismatch),
        _ => None,
    }
}

/// The images of one geometry and the keys.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// All images.
    pub images: Vec<CatImg>,
    /// The keys the device trusts.
    pub keys: Vec<TrustedKey>,
    /// The factory image of each bank (good, counter 1).
    pub factory: [usize; 2],
    /// The layout.
    pub layout: Layout,
}

fn push_tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

fn payload(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    // Runs of the erased value (real images have 0xff fill), sometimes across a sector boundary.
    for _ in 0..rng.next_u64() % 3 {
        if len < 2 {
            break;
        }
        let at = (rng.next_u64() % len as u64) as usize;
        let n = (rng.next_u64() % 1500) as usize;
        let end = (at + n).min(len);
        p[at..end].fill(0xFF);
    }
    p
}

/// What an image is made of.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    bank: Option<Bank>,
    version: Version,
    counter: u32,
    vendor: Option<Uuid>,
    class: Option<Uuid>,
    flags: u32,
    payload: Vec<u8>,
    tlvs: Tlvs,
}

impl Catalog {
    /// The catalog of a layout (deterministic).
    pub fn new(layout: &Layout) -> Catalog {
        let e = layout.erase_size() as usize;
        let bank_size = layout.bank_size() as usize;
        let signing: Vec<SigningKey> = TRUSTED_KEY_SEEDS
            .iter()
            .map(SigningKey::from_bytes)
            .collect();
        let untrusted = SigningKey::from_bytes(&UNTRUSTED_KEY_SEED);
        let keys: Vec<TrustedKey> = signing
            .iter()
            .map(|k| TrustedKey(k.verifying_key().to_bytes()))
            .collect();
        let mut rng = SplitMix64(layout.write_size() as u64 * 0x1_0000 + e as u64);
        // Header + protected TLVs (counter, two ids: 4 + 8 + 2 × 20).
        let overhead = HEADER_SIZE as usize + 52;
        let sig_tlvs = 144;
        let max_payload = bank_size - overhead - sig_tlvs - 64;
        // Payload sizes: small, ending near a sector boundary, and up to a full bank. 128 KiB
        // sectors get mostly small images (one sector anyway), so the walk stays fast.
        let size = |rng: &mut SplitMix64| -> usize {
            let r = rng.next_u64() % 10;
            let n = if r < 4 || (e > 4096 && r < 8) {
                let small = if e > 4096 { 6000 } else { e };
                64 + (rng.next_u64() % small as u64) as usize
            } else if r < 8 {
                // Ends within ~200 bytes of a sector boundary (before or after).
                let k = 1 + (rng.next_u64() % (bank_size / e) as u64) as usize;
                (k * e).saturating_sub(overhead + sig_tlvs) + (rng.next_u64() % 400) as usize - 200
            } else {
                (rng.next_u64() % max_payload as u64) as usize
            };
            n.clamp(16, max_payload)
        };
        let mut specs: Vec<Spec> = Vec::new();
        let good =
            |name: String, bank: Bank, version: Version, counter: u32, payload: Vec<u8>| Spec {
                name,
                bank: Some(bank),
                version,
                counter,
                vendor: Some(VENDOR),
                class: Some(CLASS),
                flags: 0,
                payload,
                tlvs: Tlvs::KeyHash(0),
            };
        let mut factory = [0; 2];
        let mut defect_seed = 0u64;
        for bank in Bank::ALL {
            let b = bank.index() as u8;
            factory[bank.index()] = specs.len();
            for (i, &c) in COUNTERS.iter().enumerate() {
                let n = if i == 0 {
                    1500.min(max_payload)
                } else {
                    size(&mut rng)
                };
                let v = Version::new(1 + i as u8, b, 0, 0);
                specs.push(good(
                    format!("{bank}{i}(c{c})"),
                    bank,
                    v,
                    c,
                    payload(&mut rng, n),
                ));
            }
            // Other builds with the same header. A rebuild: same version, size and counter, other
            // payload (other digest). Builds with other unprotected TLVs (same digest, other
            // lengths): PUBKEY instead of KEYHASH (12 bytes longer), a filler TLV that pushes the
            // end into the next sector when the image ends near one (issue 16 bug 1), and the
            // same length signed by the second trusted key (the same image id).
            let first = factory[bank.index()];
            for (k, variants) in [
                (2, &["rebuild"][..]),
                (3, &["pubkey", "filler", "key2"][..]),
                (4, &["filler", "rebuild"][..]),
                (5, &["pubkey", "filler"][..]),
            ] {
                let base = specs[first + k].clone();
                let hashed = overhead + base.payload.len();
                let to_boundary = hashed.div_ceil(e) * e - hashed;
                // Small enough to fit the bank (max_payload leaves 64 bytes), or just long
                // enough to end in the next sector when that fits the bank and the announcement
                // limit.
                let mut filler = 8 + (rng.next_u64() % 48) as usize;
                if to_boundary > sig_tlvs {
                    let crossing = to_boundary - sig_tlvs + (rng.next_u64() % 32) as usize;
                    if sig_tlvs + 4 + crossing <= MAX_ANNOUNCED_TLVS
                        && hashed + sig_tlvs + 4 + crossing <= bank_size
                    {
                        filler = crossing;
                    }
                }
                for v in variants {
                    let mut s = base.clone();
                    s.name = format!("{}-{v}", base.name);
                    match *v {
                        "rebuild" => s.payload = payload(&mut rng, base.payload.len()),
                        "pubkey" => s.tlvs = Tlvs::PubKey,
                        "filler" => s.tlvs = Tlvs::Filler(filler),
                        _ => s.tlvs = Tlvs::KeyHash(1),
                    }
                    specs.push(s);
                }
            }
            // One image per refusal kind.
            let mut defect = |name: &str, f: &mut dyn FnMut(&mut Spec)| {
                defect_seed += 1;
                let mut s = good(
                    format!("{bank}-{name}"),
                    bank,
                    Version::new(9, b, 0, 0),
                    DEFECT_COUNTER,
                    payload(&mut SplitMix64(defect_seed), 700),
                );
                f(&mut s);
                s
            };
            for d in [
                Defect::Unsigned,
                Defect::BadSignature,
                Defect::UntrustedKey,
                Defect::ForgedDigest,
                Defect::PureSignature,
            ] {
                specs.push(defect(&format!("{d:?}"), &mut |s| s.tlvs = Tlvs::Bad(d)));
            }
            specs.push(defect("not-bank-bound", &mut |s| s.bank = None));
            specs.push(defect("non-bootable", &mut |s| s.flags = FLAG_NON_BOOTABLE));
            specs.push(defect("encrypted", &mut |s| s.flags = FLAGS_ENCRYPTED));
            specs.push(defect("no-vendor", &mut |s| s.vendor = None));
            specs.push(defect("other-vendor", &mut |s| s.vendor = Some(OTHER_ID)));
            specs.push(defect("no-class", &mut |s| s.class = None));
            specs.push(defect("other-class", &mut |s| s.class = Some(OTHER_ID)));
            specs.push(defect("too-big", &mut |s| {
                s.payload = vec![0x5a; bank_size]
            }));
            // Header and payload fit, the TLVs do not.
            let tight = bank_size - overhead - 100;
            specs.push(defect("too-big-tlvs", &mut |s| {
                s.payload = vec![0xa5; tight]
            }));
        }
        let mut images = Vec::new();
        for s in &specs {
            images.push(build(layout, s, &signing, &untrusted));
        }
        // The model names a bank's content by the one image its bytes start with.
        for (i, a) in images.iter().enumerate() {
            for (j, b) in images.iter().enumerate() {
                assert!(
                    i == j || !a.is_in(&b.bytes),
                    "catalog: {} is a prefix of {}",
                    a.name,
                    b.name
                );
            }
        }
        Catalog {
            images,
            keys,
            factory,
            layout: *layout,
        }
    }

    /// Why `begin` refuses image `i` for `target` with minimum counter `min` on a device with
    /// `ids`, in the order the updater checks (`check_manifest`: flags, fit, bank binding, ids,
    /// counter; then the whole length; then the announced signature). `None`: accepted.
    pub fn refusal(
        &self,
        i: usize,
        target: Bank,
        min: u32,
        ids: &DeviceIds,
    ) -> Option<UpdateError> {
        let img = &self.images[i];
        let capacity = self.layout.bank_size();
        let bank_address = self.layout.bank_address(target);
        let e = |e: ImageError| Some(UpdateError::Image(e));
        if img.flags & FLAGS_ENCRYPTED != 0 {
            return e(ImageError::Encrypted);
        }
        if img.flags & FLAG_NON_BOOTABLE != 0 {
            return e(ImageError::NotBootable);
        }
        let needed = img.hashed_len as u32 + 4;
        if needed > capacity {
            return e(ImageError::DoesNotFit { needed, capacity });
        }
        if img.linked.is_none() {
            return e(ImageError::NotBankBound);
        }
        if img.load_addr != bank_address {
            return e(ImageError::WrongBank {
                linked_for: img.load_addr,
                bank_address,
            });
        }
        if let Some(err) = ids_ok(img, ids) {
            return e(err);
        }
        if img.id.security_counter < min {
            return e(ImageError::SecurityCounterTooLow {
                image: img.id.security_counter,
                minimum: min,
            });
        }
        if img.len() as u32 > capacity {
            return e(ImageError::DoesNotFit {
                needed: img.len() as u32,
                capacity,
            });
        }
        match img.defect {
            Defect::Unsigned => e(ImageError::MissingSignature),
            Defect::BadSignature | Defect::ForgedDigest => e(ImageError::BadSignature),
            Defect::UntrustedKey => e(ImageError::UntrustedKey),
            Defect::PureSignature => e(ImageError::PureSignature),
            _ => None,
        }
    }

    /// The image whose bytes start `bank_bytes`, if any (at most one: two catalog images always
    /// differ within the shorter one, outside bytes verification ignores).
    pub fn image_in(&self, bank_bytes: &[u8]) -> Option<usize> {
        self.images.iter().position(|i| i.is_in(bank_bytes))
    }
}

fn build(layout: &Layout, s: &Spec, keys: &[SigningKey], untrusted: &SigningKey) -> CatImg {
    let mut b = ImageBuilder::new(HEADER_SIZE, s.version);
    b.rom_fixed = s.bank.map(|bank| layout.bank_address(bank));
    b.security_counter = Some(s.counter);
    b.vendor_id = s.vendor;
    b.class_id = s.class;
    let mut image = b.hashed_part(&s.payload).expect("hashed part");
    let flags = u32::from_le_bytes(
        image[FLAGS_OFFSET..FLAGS_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    ) | s.flags;
    image[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&flags.to_le_bytes());
    let hashed_len = image.len();
    let digest: [u8; 32] = Sha256::digest(&image).into();
    let keyhash = |k: &SigningKey| TrustedKey(k.verifying_key().to_bytes()).keyhash();
    let mut t = Vec::new();
    let defect = match s.tlvs {
        Tlvs::Bad(d) => d,
        _ if s.bank.is_none() => Defect::NotBankBound,
        _ if s.flags & FLAG_NON_BOOTABLE != 0 => Defect::NonBootable,
        _ if s.flags & FLAGS_ENCRYPTED != 0 => Defect::Encrypted,
        _ => Defect::None,
    };
    match s.tlvs {
        Tlvs::KeyHash(k) => {
            push_tlv(&mut t, TLV_SHA256, &digest);
            push_tlv(&mut t, TLV_KEYHASH, &keyhash(&keys[k]));
            push_tlv(&mut t, TLV_ED25519, &keys[k].sign(&digest).to_bytes());
        }
        Tlvs::PubKey => {
            push_tlv(&mut t, TLV_SHA256, &digest);
            let spki = TrustedKey(keys[0].verifying_key().to_bytes()).spki();
            push_tlv(&mut t, TLV_PUBKEY, &spki);
            push_tlv(&mut t, TLV_ED25519, &keys[0].sign(&digest).to_bytes());
        }
        Tlvs::Filler(n) => {
            push_tlv(&mut t, TLV_SHA256, &digest);
            push_tlv(&mut t, TLV_KEYHASH, &keyhash(&keys[0]));
            push_tlv(&mut t, TLV_ED25519, &keys[0].sign(&digest).to_bytes());
            push_tlv(&mut t, TLV_FILLER, &vec![0x42; n]);
        }
        Tlvs::Bad(d) => {
            let mut sig = keys[0].sign(&digest).to_bytes();
            match d {
                Defect::Unsigned => push_tlv(&mut t, TLV_SHA256, &digest),
                Defect::BadSignature => {
                    sig[5] ^= 0x10;
                    push_tlv(&mut t, TLV_SHA256, &digest);
                    push_tlv(&mut t, TLV_KEYHASH, &keyhash(&keys[0]));
                    push_tlv(&mut t, TLV_ED25519, &sig);
                }
                Defect::UntrustedKey => {
                    push_tlv(&mut t, TLV_SHA256, &digest);
                    push_tlv(&mut t, TLV_KEYHASH, &keyhash(untrusted));
                    push_tlv(&mut t, TLV_ED25519, &untrusted.sign(&digest).to_bytes());
                }
                Defect::ForgedDigest => {
                    let mut forged = digest;
                    forged[0] ^= 1;
                    push_tlv(&mut t, TLV_SHA256, &forged);
                    push_tlv(&mut t, TLV_KEYHASH, &keyhash(&keys[0]));
                    push_tlv(&mut t, TLV_ED25519, &sig);
                }
                _ => {
                    push_tlv(&mut t, TLV_SHA256, &digest);
                    push_tlv(&mut t, TLV_KEYHASH, &keyhash(&keys[0]));
                    push_tlv(&mut t, TLV_SIG_PURE, &[0]);
                    push_tlv(&mut t, TLV_ED25519, &sig);
                }
            }
        }
    }
    image.extend_from_slice(&TLV_INFO_MAGIC.to_le_bytes());
    image.extend_from_slice(&((t.len() + 4) as u16).to_le_bytes());
    image.extend_from_slice(&t);
    let ignored = match s.tlvs {
        Tlvs::Filler(n) => Some((image.len() - n, image.len())),
        _ => None,
    };
    let manifest = Manifest::from_image(&image).expect("catalog manifest");
    CatImg {
        name: s.name.clone(),
        id: manifest.image_id(),
        manifest,
        linked: s.bank,
        vendor: s.vendor,
        class: s.class,
        defect,
        hashed_len,
        flags: s.flags,
        load_addr: s.bank.map_or(0, |bank| layout.bank_address(bank)),
        ignored,
        bytes: image,
    }
}
