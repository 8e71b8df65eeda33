//! State and banks on two flash devices of different geometry (`twinbank::flash::Split`): the
//! state region in a small internal flash with 8-byte writes and 2 KiB pages, the banks in an
//! external NOR with 1-byte writes and 4 KiB sectors executing in place at 0x9000_0000. The
//! unchanged `decide` and `Updater` run the whole life cycle on the pair, each device sees only
//! its own accesses, and a power cut on either device at any operation leaves a bootable device.

mod common;

use common::{manifest, payload, v, CLASS, HEADER, VENDOR};
use ed25519_dalek::SigningKey;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use twinbank::flash::{Split, SplitError, SplitLayoutError};
use twinbank::image::encode::ImageBuilder;
use twinbank::layout::RegionName;
use twinbank::testing::{CutModel, StrictFlash};
use twinbank::{
    Attempts, Bank, BootReason, Config, DeviceIds, GeometryError, Layout, LayoutError, Region,
    TrustedKey, Updater,
};

/// The external bank flash: 1-byte writes, 4 KiB sectors, two 64 KiB banks.
type BankFlash = StrictFlash<1, 4096>;
/// The internal state flash: 8-byte writes, 2 KiB pages, 8 KiB.
type StateFlash = StrictFlash<8, 2048>;
type Pair = Split<BankFlash, StateFlash>;

const XIP: u32 = 0x9000_0000;
const BANK: u32 = 0x1_0000;
const STATE: u32 = 0x2000;

fn layout() -> Layout {
    Layout::builder()
        .flash_size(2 * BANK + STATE)
        .write_size(8)
        .erase_size(4096)
        .base_address(XIP)
        .state(Region::new(2 * BANK, STATE))
        .bank_a(Region::new(0, BANK))
        .bank_b(Region::new(BANK, BANK))
        .build()
        .expect("split layout")
}

struct World {
    key: SigningKey,
    keys: &'static [TrustedKey],
}

impl World {
    fn new() -> World {
        let key = SigningKey::from_bytes(&[9; 32]);
        let keys: &'static [TrustedKey] =
            Box::leak(Box::new([TrustedKey(key.verifying_key().to_bytes())]));
        World { key, keys }
    }

    fn config(&self) -> Config<'static> {
        Config {
            layout: layout(),
            keys: self.keys,
            ids: DeviceIds {
                vendor: Some(VENDOR),
                class: Some(CLASS),
            },
            attempts: Attempts::DEFAULT,
        }
    }

    fn image(&self, bank: Bank, major: u8, seed: u8) -> Vec<u8> {
        ImageBuilder {
            header_size: HEADER,
            version: v(major),
            rom_fixed: Some(layout().bank_address(bank)),
            security_counter: Some(u32::from(major)),
            vendor_id: Some(VENDOR),
            class_id: Some(CLASS),
        }
        .sign(&payload(seed), &self.key)
        .expect("sign")
    }

    /// A factory device: image 1 in bank A, nothing in the state flash yet.
    fn factory(&self) -> Pair {
        let mut banks = BankFlash::new(2 * BANK as usize);
        banks.load(0, &self.image(Bank::A, 1, 1));
        Split::new(banks, StateFlash::new(STATE as usize))
    }
}

/// Installs `image` from `running` and confirms it after the trial boot.
fn update_and_confirm(
    pair: &mut Pair,
    config: Config<'static>,
    running: Bank,
    image: &[u8],
) -> Result<(), String> {
    let mut up = Updater::new(&mut *pair, config, running).map_err(|e| e.to_string())?;
    let mut next = up.begin(&manifest(image)).map_err(|e| e.to_string())? as usize;
    while next < image.len() {
        let end = (next + 700).min(image.len());
        next = up
            .write(next as u32, &image[next..end])
            .map_err(|e| e.to_string())? as usize;
    }
    up.finish().map_err(|e| e.to_string())?;
    let trial = twinbank::decide(&mut *pair, &config).map_err(|e| e.to_string())?;
    if trial.bank != running.other() {
        return Err(format!("trial boot chose {}", trial.bank));
    }
    Updater::new(&mut *pair, config, trial.bank)
        .and_then(|mut up| up.confirm())
        .map_err(|e| e.to_string())
}

#[test]
fn the_pair_runs_the_life_cycle_and_each_device_sees_only_its_own_accesses() {
    let w = World::new();
    let config = w.config();
    let mut pair = w.factory();
    assert_eq!(Pair::WRITE_SIZE, 8);
    assert_eq!(Pair::ERASE_SIZE, 4096);
    assert_eq!(pair.capacity(), (2 * BANK + STATE) as usize);
    assert_eq!(pair.check_layout(&config.layout), Ok(()));

    // First boot: adopts bank A, writes one record, into the state flash only.
    let d = twinbank::decide(&mut pair, &config).expect("boots");
    assert_eq!((d.bank, d.reason), (Bank::A, BootReason::Normal));
    assert_eq!(d.vector_table, XIP + u32::from(HEADER));
    assert_eq!(pair.banks.counters.writes + pair.banks.counters.erases, 0);
    assert_eq!(pair.state.counters.writes, 1);
    // The record is in the state flash (offset 0 of that device).
    assert_ne!(pair.state.bytes()[..8], [0xFF; 8]);

    let next = w.image(Bank::B, 2, 2);
    update_and_confirm(&mut pair, config, Bank::A, &next).expect("update");
    // Bank B holds the image byte for byte; the state flash never holds image bytes.
    assert_eq!(
        &pair.banks.bytes()[BANK as usize..BANK as usize + next.len()],
        &next[..]
    );
    // Each image byte written at most once (units of 0xff are left erased), nothing else.
    let written = pair.banks.counters.bytes_written as usize;
    assert!(
        written <= next.len().next_multiple_of(8) && written >= common::PAYLOAD,
        "{written} bytes programmed for a {}-byte image",
        next.len()
    );
    assert!(pair.banks.counters.erases_per_sector[..16]
        .iter()
        .all(|&n| n == 0));
    let d = twinbank::decide(&mut pair, &config).expect("boots");
    assert_eq!((d.bank, d.reason), (Bank::B, BootReason::Normal));
    assert_eq!(d.vector_table, XIP + BANK + u32::from(HEADER));
}

#[test]
fn a_power_cut_on_either_device_leaves_a_bootable_device() {
    let w = World::new();
    let config = w.config();
    let mut booted = w.factory();
    twinbank::decide(&mut booted, &config).expect("factory boot");
    let next = w.image(Bank::B, 2, 2);
    let mut cuts = [0u32; 2];
    for on_state in [false, true] {
        for op in 0.. {
            let mut pair = booted.clone();
            let model = match op % 3 {
                0 => CutModel::Before,
                1 => CutModel::WriteBits { units: 1, seed: op },
                _ => CutModel::ErasePartial { seed: op },
            };
            if on_state {
                pair.state.cut_at(op, model);
            } else {
                pair.banks.cut_at(op, model);
            }
            let result = update_and_confirm(&mut pair, config, Bank::A, &next);
            let fired = pair.state.is_cut() || pair.banks.is_cut();
            if !fired {
                result.expect("no cut: the update completes");
                break;
            }
            cuts[usize::from(on_state)] += 1;
            pair.state.power_on();
            pair.banks.power_on();
            let d = twinbank::decide(&mut pair, &config)
                .unwrap_or_else(|e| panic!("cut at op {op} (state: {on_state}): {e}"));
            let image = if d.bank == Bank::A {
                w.image(Bank::A, 1, 1)
            } else {
                next.clone()
            };
            let start = (d.bank.index() as u32 * BANK) as usize;
            assert_eq!(
                &pair.banks.bytes()[start..start + image.len()],
                &image[..],
                "cut at op {op}: boots bank {} whose image is not the one recorded",
                d.bank
            );
            // The device recovers: the update completes from whatever it runs.
            if d.bank == Bank::A {
                update_and_confirm(&mut pair, config, Bank::A, &next)
                    .unwrap_or_else(|e| panic!("after a cut at op {op}: {e}"));
            }
        }
    }
    eprintln!(
        "cut points: {} on the bank flash, {} on the state flash",
        cuts[0], cuts[1]
    );
    assert!(
        cuts[0] > 10 && cuts[1] > 3,
        "cut points exercised: {cuts:?}"
    );
}

#[test]
fn layouts_and_accesses_that_do_not_fit_the_pair_are_refused() {
    let w = World::new();
    let mut pair = w.factory();
    // A layout for the bank device alone (1-byte writes): not the pair's geometry.
    let wrong = Layout::builder()
        .flash_size(2 * BANK + STATE)
        .write_size(1)
        .erase_size(4096)
        .state(Region::new(2 * BANK, STATE))
        .bank_a(Region::new(0, BANK))
        .bank_b(Region::new(BANK, BANK))
        .build()
        .unwrap();
    let geometry = GeometryError::WriteSize {
        layout: 1,
        driver: 8,
    };
    assert_eq!(
        pair.check_layout(&wrong),
        Err(SplitLayoutError::Geometry(geometry))
    );
    let config = Config {
        layout: wrong,
        ..w.config()
    };
    assert_eq!(
        twinbank::decide(&mut pair, &config).unwrap_err(),
        twinbank::BootError::State(twinbank::state::StateError::Geometry(geometry))
    );
    // The state region on the bank device, the banks on the state device.
    let state_low = Layout::builder()
        .flash_size(2 * BANK + STATE)
        .write_size(8)
        .erase_size(4096)
        .state(Region::new(0, STATE))
        .bank_a(Region::new(STATE, BANK - STATE))
        .bank_b(Region::new(BANK, BANK - STATE))
        .build()
        .unwrap();
    assert_eq!(
        pair.check_layout(&state_low),
        Err(SplitLayoutError::Layout(LayoutError::OutOfFlash(
            RegionName::State
        )))
    );
    // Bank B reaching into the state device.
    let b_on_state = Layout::builder()
        .flash_size(2 * BANK + STATE)
        .write_size(8)
        .erase_size(4096)
        .state(Region::new(BANK + 0x4000, 0x2000))
        .bank_a(Region::new(0, 0x4000))
        .bank_b(Region::new(2 * BANK - 0x2000, 0x4000))
        .build()
        .unwrap();
    assert_eq!(
        pair.check_layout(&b_on_state),
        Err(SplitLayoutError::Layout(LayoutError::OutOfFlash(
            RegionName::Bank(Bank::B)
        )))
    );
    // Accesses across the boundary are refused, on every operation.
    let mut buf = [0u8; 16];
    assert!(matches!(
        pair.read(2 * BANK - 8, &mut buf),
        Err(SplitError::Straddles)
    ));
    assert!(matches!(
        pair.write(2 * BANK - 8, &buf),
        Err(SplitError::Straddles)
    ));
    assert!(matches!(
        pair.erase(2 * BANK - 4096, 2 * BANK + 4096),
        Err(SplitError::Straddles)
    ));
    assert_eq!(pair.banks.counters.writes + pair.state.counters.writes, 0);
}
