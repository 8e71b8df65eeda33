//! One geometry's world: the layout, the signing key, the signed test images, and the device
//! configuration.

use crate::flash::{DevFlash, Fault};
use ed25519_dalek::SigningKey;
use twinbank::flash::SliceFlash;
use twinbank::image::encode::ImageBuilder;
use twinbank::state::StateStore;
use twinbank::testing::SplitMix64;
use twinbank::update::Manifest;
use twinbank::{
    Attempts, Bank, BootState, Config, DeviceIds, ImageId, Layout, Region, TrustedKey, Version,
};

/// CPU address of flash offset 0.
pub const BASE_ADDRESS: u32 = 0x0800_0000;
/// Header size of the test images (header padded with 0xff, like `imgtool --pad-header`).
pub const HEADER_SIZE: u16 = 256;
/// Bytes per upload chunk (deliberately not a multiple of any write size but 1 and 8: exercises
/// the updater's partial write unit).
pub const CHUNK: usize = 200;
/// Bytes per write of the factory programmer.
pub const FACTORY_CHUNK: usize = 512;

/// A signed test image.
#[derive(Debug, Clone)]
pub struct Img {
    /// Short name for messages.
    pub name: &'static str,
    /// The bank it is linked for.
    pub bank: Bank,
    /// The whole signed image.
    pub bytes: Vec<u8>,
    /// Its identity as the state records it.
    pub id: ImageId,
    /// Its manifest (what `Updater::begin` takes).
    pub manifest: Manifest,
    /// SHA-256 of the whole file (what a streamed upload announces).
    pub file_sha: [u8; 32],
}

/// The images of a world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImgName {
    /// Factory image, bank A, counter 1.
    F,
    /// First update, bank B, counter 2.
    U1,
    /// Second update, bank A, counter 2.
    U2,
    /// Update for bank B with a run of erased-value (0xff) bytes across a sector boundary.
    Pad,
    /// A rebuild of U1: same header (version, size, counter), different payload.
    U1b,
    /// The target of a delta update from F: F's payload with bytes changed and inserted, for
    /// bank B.
    D,
}

/// Flash size of the STM32F4 geometry ([`crate::F4_GEOMETRY`]).
const F4_FLASH: u32 = 0x10_0000;

/// The layout of `boards/stm32f4-nonuniform.toml` (STM32F405/407, 1 MiB).
fn f4_layout() -> Layout {
    use twinbank::{SectorMap, SectorRun};
    const K: u32 = 1024;
    let map = SectorMap::new(&[
        SectorRun::new(4, 16 * K),
        SectorRun::new(1, 64 * K),
        SectorRun::new(7, 128 * K),
    ])
    .expect("F4 sector map");
    Layout::builder()
        .flash_size(F4_FLASH)
        .write_size(4)
        .sector_map(map)
        .base_address(BASE_ADDRESS)
        .state(Region::new(0x8000, 0x8000))
        .bank_a(Region::new(0x2_0000, 0x6_0000))
        .bank_b(Region::new(0x8_0000, 0x6_0000))
        .build()
        .expect("F4 layout")
}

/// Everything about one geometry.
pub struct World<const W: usize, const E: usize> {
    /// The layout.
    pub layout: Layout,
    /// The trusted key.
    pub keys: [TrustedKey; 1],
    /// Flash size in bytes.
    pub flash_size: usize,
    /// The broken state writer in use, if any.
    pub fault: Option<Fault>,
    images: Vec<(ImgName, Img)>,
    /// The patch from F to D (`twinbank delta`).
    pub delta_patch: Vec<u8>,
}

fn payload(seed: u64, len: usize, ff_run: Option<(usize, usize)>) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut p: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    if let Some((from, to)) = ff_run {
        p[from..to].fill(0xFF);
    }
    p
}

impl<const W: usize, const E: usize> World<W, E> {
    /// Builds the world for this geometry.
    pub fn new(fault: Option<Fault>) -> World<W, E> {
        let e = E as u32;
        // Payload sizes per erase size: a few sectors for small sectors, a small image inside one
        // sector for 128 KiB sectors (so the run stays fast).
        // (payload sizes of F, U1, U2), (PAD payload size, its 0xff run), state sectors.
        type Sizes = ([usize; 3], Option<(usize, (usize, usize))>, u32);
        let (sizes, pad, state_sectors): Sizes = match E {
            1024 => ([1900, 2400, 2100], Some((2900, (1700, 2400))), 3),
            4096 => ([5000, 6500, 5800], Some((9000, (7600, 8400))), 2),
            // The STM32L476 port's 2 KiB pages (its state region: 4 pages).
            2048 => ([1900, 2400, 2100], Some((2900, (1700, 2400))), 4),
            _ => ([1200, 1600, 1400], None, 2),
        };
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let keys = [TrustedKey(key.verifying_key().to_bytes())];
        let max_payload = sizes
            .iter()
            .copied()
            .chain(pad.map(|p| p.0))
            .max()
            .unwrap_or(0);
        // Header + payload + protected TLVs + TLVs (< 512 bytes of overhead).
        let bank_sectors = (max_payload as u32 + HEADER_SIZE as u32 + 512).div_ceil(e);
        let bank_size = bank_sectors * e;
        let state = Region::new(0, state_sectors * e);
        let a = Region::new(state_sectors * e, bank_size);
        let b = Region::new(state_sectors * e + bank_size, bank_size);
        let flash_size = (state_sectors * e + 2 * bank_size) as usize;
        let (layout, flash_size) = if E == crate::F4_ERASE_SIZE {
            (f4_layout(), F4_FLASH as usize)
        } else {
            let layout = Layout::new(flash_size as u32, W as u32, e, BASE_ADDRESS, state, a, b)
                .expect("harness layout");
            (layout, flash_size)
        };
        let make =
            |name: &'static str, bank: Bank, version: Version, counter: u32, payload: Vec<u8>| {
                let mut builder = ImageBuilder::new(HEADER_SIZE, version);
                builder.rom_fixed = Some(layout.bank_address(bank));
                builder.security_counter = Some(counter);
                let bytes = builder.sign(&payload, &key).expect("sign test image");
                let manifest =
                    Manifest::read(&mut SliceFlash(&bytes), bytes.len() as u32).expect("manifest");
                let file_sha =
                    twinbank::image::hash_range(&mut SliceFlash(&bytes), 0, bytes.len() as u32)
                        .expect("hash");
                Img {
                    name,
                    bank,
                    id: manifest.image_id(),
                    manifest,
                    file_sha,
                    bytes,
                }
            };
        let mut images = vec![
            (
                ImgName::F,
                make(
                    "F",
                    Bank::A,
                    Version::new(1, 0, 0, 0),
                    1,
                    payload(1, sizes[0], None),
                ),
            ),
            (
                ImgName::U1,
                make(
                    "U1",
                    Bank::B,
                    Version::new(2, 0, 0, 0),
                    2,
                    payload(2, sizes[1], None),
                ),
            ),
            (
                ImgName::U2,
                make(
                    "U2",
                    Bank::A,
                    Version::new(3, 0, 0, 0),
                    2,
                    payload(3, sizes[2], None),
                ),
            ),
            (
                ImgName::U1b,
                make(
                    "U1b",
                    Bank::B,
                    Version::new(2, 0, 0, 0),
                    2,
                    payload(5, sizes[1], None),
                ),
            ),
        ];
        if let Some((len, run)) = pad {
            images.push((
                ImgName::Pad,
                make(
                    "PAD",
                    Bank::B,
                    Version::new(4, 0, 0, 0),
                    2,
                    payload(4, len, Some(run)),
                ),
            ));
        }
        // D: F's program with a few bytes changed and a short run inserted in the middle.
        let mut d = payload(1, sizes[0], None);
        let mid = d.len() / 2;
        d[10] ^= 0x5A;
        d.splice(mid..mid, payload(6, 24, None));
        images.push((
            ImgName::D,
            make("D", Bank::B, Version::new(5, 0, 0, 0), 2, d),
        ));
        for (_, img) in &images {
            assert!(img.bytes.len() as u32 <= bank_size, "image fits its bank");
        }
        let find = |n: ImgName| &images.iter().find(|(m, _)| *m == n).expect("image").1;
        let delta_patch = twinbank::delta::encode::make_patch(
            &find(ImgName::F).bytes,
            &find(ImgName::D).bytes,
            &twinbank::delta::encode::EncodeOptions::default(),
        )
        .expect("delta patch")
        .bytes;
        World {
            layout,
            keys,
            flash_size,
            fault,
            images,
            delta_patch,
        }
    }

    /// The device configuration (3 attempts, no ids).
    pub fn config(&self) -> Config<'_> {
        Config {
            layout: self.layout,
            keys: &self.keys,
            ids: DeviceIds::default(),
            attempts: Attempts::DEFAULT,
        }
    }

    /// Trial attempts configured.
    pub fn attempts(&self) -> u8 {
        Attempts::DEFAULT.get()
    }

    /// An image, if this geometry has it.
    pub fn try_img(&self, name: ImgName) -> Option<&Img> {
        self.images.iter().find(|(n, _)| *n == name).map(|(_, i)| i)
    }

    /// An image.
    pub fn img(&self, name: ImgName) -> &Img {
        self.try_img(name).expect("image exists in this geometry")
    }

    /// An erased flash (enforcing the layout's sector map when it has one).
    pub fn blank(&self) -> DevFlash<W, E> {
        let st = self.layout.state();
        let mut f = DevFlash::new(self.flash_size, st.offset.0, st.size.0, self.fault);
        if let Some(map) = self.layout.sector_map() {
            f.inner = f.inner.with_sector_map(map);
        }
        f
    }

    /// Slots per state sector.
    pub fn slots(&self) -> u32 {
        self.layout.state_sector_size() / twinbank::state::RECORD_SIZE as u32
    }

    /// The bytes of `bank` (as long as `len`).
    pub fn bank_bytes<'f>(&self, flash: &'f DevFlash<W, E>, bank: Bank, len: usize) -> &'f [u8] {
        let off = self.layout.bank(bank).offset.0 as usize;
        &flash.inner.bytes()[off..off + len]
    }

    /// True when `bank` holds exactly `img`.
    pub fn holds(&self, flash: &DevFlash<W, E>, bank: Bank, img: &Img) -> bool {
        img.bank == bank && self.bank_bytes(flash, bank, img.bytes.len()) == img.bytes.as_slice()
    }

    /// The image (among the world's) with this digest.
    pub fn by_digest(&self, digest: &[u8; 32]) -> Option<&Img> {
        self.images
            .iter()
            .map(|(_, i)| i)
            .find(|i| &i.id.digest == digest)
    }

    /// The newest valid state (reads only).
    pub fn read_state(&self, flash: &mut DevFlash<W, E>) -> Option<BootState> {
        StateStore::open(flash, &self.layout)
            .ok()
            .and_then(|s| s.current().copied())
    }

    /// (sector, slots used) of the sector holding the newest valid record.
    pub fn state_fill(&self, flash: &DevFlash<W, E>) -> Option<(u32, u32)> {
        use twinbank::state::record::decode;
        let rs = twinbank::state::RECORD_SIZE;
        let st = self.layout.state().offset.0 as usize;
        let mut best: Option<(u32, u32, u32)> = None; // seq, sector, used
        for sector in 0..self.layout.state_sectors() {
            let mut used = 0;
            let mut newest: Option<u32> = None;
            for slot in 0..self.slots() {
                let o =
                    st + (sector * self.layout.state_sector_size()) as usize + slot as usize * rs;
                let mut b = [0u8; 128];
                b.copy_from_slice(&flash.inner.bytes()[o..o + rs]);
                if b.iter().all(|&x| x == 0xFF) {
                    break;
                }
                used = slot + 1;
                if let Some((_, seq)) = decode(&b) {
                    newest = Some(newest.map_or(seq, |n: u32| n.max(seq)));
                }
            }
            if let Some(seq) = newest {
                if best.is_none_or(|(s, _, _)| seq > s) {
                    best = Some((seq, sector, used));
                }
            }
        }
        best.map(|(_, s, u)| (s, u))
    }
}
