//! Non-uniform erase sectors (issue 13): the life cycle, a refusal, resume, the state ring's
//! rotation and a power cut at every flash operation of an update, on the sector map of an
//! STM32F405/407 with 1 MiB of flash (4 × 16 KiB, 1 × 64 KiB, 7 × 128 KiB).
//!
//! The strict flash enforces the map ([`StrictFlash::with_sector_map`]): an erase that does not
//! start and end on sector boundaries of the map is a violation (a panic), so every test here
//! also proves that every erase the crate makes is whole map sectors.
//!
//! Two layouts of the same part:
//! - [`f4`]: the shim in sectors 0-1, the state in sectors 2-3 (2 × 16 KiB), bank A in sectors
//!   5-7 and bank B in sectors 8-10 (3 × 128 KiB each); sectors 4 and 11 are left to the
//!   application. The layout a board would use.
//! - [`mixed`]: banks whose sector sequences differ (bank A = sectors 0-3, 4 × 16 KiB; bank B =
//!   sector 4, 1 × 64 KiB) and the state in big sectors (5-6, 2 × 128 KiB): not a sensible board,
//!   but it proves that resume counts sectors of the target bank's own map.

mod common;
use common::*;
use twinbank::layout::{SectorMap, SectorRun, MAX_SECTOR_RUNS};
use twinbank::state::StateStore;
use twinbank::testing::{CutModel, StrictFlash};
use twinbank::{
    Bank, BankState, BootState, GeometryError, Layout, LayoutError, Region, UpdateError,
};

const K: u32 = 1024;
/// Program size of the STM32F4 at 2.7-3.6 V (x32 parallelism).
const W: usize = 4;
/// What a driver of the part reports as `ERASE_SIZE`: its largest sector (embassy-stm32's
/// convention; its `erase` takes any range aligned to the sector map).
const E: usize = 128 * 1024;
const FLASH: u32 = 1024 * K;

/// The sector map of the STM32F405/407 (RM0090, 1 MiB parts, one bank).
const F4_RUNS: [SectorRun; 3] = [
    SectorRun::new(4, 16 * K),
    SectorRun::new(1, 64 * K),
    SectorRun::new(7, 128 * K),
];

fn f4_map() -> SectorMap {
    SectorMap::new(&F4_RUNS).unwrap()
}

fn builder() -> twinbank::layout::LayoutBuilder {
    Layout::builder()
        .flash_size(FLASH)
        .write_size(W as u32)
        .sector_map(f4_map())
        .base_address(BASE)
}

/// The board layout: state in sectors 2-3, bank A 5-7, bank B 8-10.
fn f4() -> Layout {
    builder()
        .state(Region::new(0x8000, 0x8000))
        .bank_a(Region::new(0x2_0000, 0x6_0000))
        .bank_b(Region::new(0x8_0000, 0x6_0000))
        .build()
        .unwrap()
}

/// Banks with different sector sequences: A = 4 × 16 KiB, B = 1 × 64 KiB; state 2 × 128 KiB.
fn mixed() -> Layout {
    builder()
        .state(Region::new(0x2_0000, 0x4_0000))
        .bank_a(Region::new(0, 0x1_0000))
        .bank_b(Region::new(0x1_0000, 0x1_0000))
        .build()
        .unwrap()
}

fn rig(layout: Layout) -> Rig<W, E> {
    let mut rig = Rig::<W, E>::new();
    rig.layout = layout;
    rig.flash = StrictFlash::new(FLASH as usize).with_sector_map(&f4_map());
    rig
}

/// A signed image for `bank` with a payload of `len` bytes.
fn image(rig: &Rig<W, E>, bank: Bank, major: u8, counter: u32, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ major)
        .collect();
    rig.builder(bank, v(major), counter)
        .sign(&payload, &rig.key)
        .unwrap()
}

/// Map sectors (indices) whose erase counter is not zero.
fn erased_sectors(rig: &Rig<W, E>) -> Vec<usize> {
    let c = &rig.flash.counters.erases_per_sector;
    (0..c.len()).filter(|&i| c[i] > 0).collect()
}

#[test]
fn the_map_and_its_queries() {
    let l = f4();
    assert_eq!(l.erase_size(), 128 * K, "the largest sector");
    assert_eq!((l.state_sectors(), l.state_sector_size()), (2, 16 * K));
    assert_eq!(l.sector_at(0x5000), Some(Region::new(0x4000, 16 * K)));
    assert_eq!(l.sector_at(0x1_ffff), Some(Region::new(0x1_0000, 64 * K)));
    assert_eq!(l.sector_at(FLASH - 1), Some(Region::new(0xE_0000, 128 * K)));
    assert_eq!(l.sector_at(FLASH), None);
    let b = l.bank(Bank::B);
    assert_eq!(l.sectors_in(b), 3);
    assert_eq!(l.sector_in(b, 1), Some(Region::new(0xA_0000, 128 * K)));
    assert_eq!(l.sector_in(b, 3), None);
    assert_eq!(l.sector_index_in(b, 0x2_0000), 1);
    assert_eq!(l.sector_start_in(b, 2), 0x4_0000);
    assert_eq!(l.sectors_spanning(b, 0x2_0001), 2);
    let m = mixed();
    let (a, b) = (m.bank(Bank::A), m.bank(Bank::B));
    assert_eq!((m.sectors_in(a), m.sectors_in(b)), (4, 1));
    assert_eq!(m.sectors_spanning(a, 0x4001), 2);
    assert_eq!(m.sectors_spanning(b, 0x4001), 1);
    assert_eq!((m.state_sectors(), m.state_sector_size()), (2, 128 * K));
}

#[test]
fn broken_maps_are_refused_with_typed_errors() {
    let s = Region::new(0x8000, 0x8000);
    let a = Region::new(0x2_0000, 0x6_0000);
    let b = Region::new(0x8_0000, 0x6_0000);
    // A bank that ends inside a 128 KiB sector.
    assert_eq!(
        builder()
            .state(s)
            .bank_a(a)
            .bank_b(Region::new(0x8_0000, 0x5_0000))
            .build(),
        Err(LayoutError::NotEraseAligned(
            twinbank::layout::RegionName::Bank(Bank::B)
        ))
    );
    // Whole sectors, unequal sizes (3 × 128 KiB against 64 KiB + 2 × 128 KiB).
    assert_eq!(
        builder()
            .state(s)
            .bank_a(Region::new(0x1_0000, 0x5_0000))
            .bank_b(b)
            .build(),
        Err(LayoutError::UnequalBanks)
    );
    // One sector of state.
    assert_eq!(
        builder()
            .state(Region::new(0x8000, 0x4000))
            .bank_a(a)
            .bank_b(b)
            .build(),
        Err(LayoutError::StateTooSmall { sectors: 1 })
    );
    // State over a 16 KiB and the 64 KiB sector.
    assert_eq!(
        builder()
            .state(Region::new(0xC000, 0x1_4000))
            .bank_a(a)
            .bank_b(b)
            .build(),
        Err(LayoutError::StateSectorsUneven)
    );
    // The map does not cover the flash.
    assert_eq!(
        Layout::builder()
            .flash_size(2 * FLASH)
            .write_size(4)
            .sector_map(f4_map())
            .state(s)
            .bank_a(a)
            .bank_b(b)
            .build(),
        Err(LayoutError::SectorMapNotFlash {
            flash_size: 2 * FLASH,
            map_size: FLASH
        })
    );
    // Both descriptions at once.
    assert_eq!(
        builder()
            .erase_size(128 * K)
            .state(s)
            .bank_a(a)
            .bank_b(b)
            .build(),
        Err(LayoutError::EraseSizeAndSectorMap)
    );
    // Maps themselves.
    let runs = [SectorRun::new(1, 16 * K); MAX_SECTOR_RUNS + 1];
    assert_eq!(
        SectorMap::new(&runs),
        Err(LayoutError::TooManySectorRuns {
            runs: MAX_SECTOR_RUNS as u32 + 1
        })
    );
    for bad in [
        SectorRun::new(0, 16 * K),
        SectorRun::new(2, 24 * K),
        SectorRun::new(2, 256 * K),
        SectorRun::new(2, 512),
    ] {
        assert_eq!(
            SectorMap::new(&[SectorRun::new(4, 16 * K), bad]),
            Err(LayoutError::BadSectorRun { index: 1 }),
            "{bad:?}"
        );
    }
}

/// The driver's `ERASE_SIZE` against a map: the largest sector, or a divisor of every sector.
#[test]
fn driver_erase_size_rule() {
    let l = f4();
    let cap = FLASH as usize;
    assert_eq!(
        l.check_flash(&StrictFlash::<4, { 128 * 1024 }>::new(cap)),
        Ok(())
    );
    assert_eq!(l.check_flash(&StrictFlash::<4, 16384>::new(cap)), Ok(()));
    assert_eq!(l.check_flash(&StrictFlash::<4, 1024>::new(cap)), Ok(()));
    assert_eq!(
        l.check_flash(&StrictFlash::<4, 65536>::new(cap)),
        Err(GeometryError::SectorMapEraseSize {
            largest: 128 * K,
            smallest: 16 * K,
            driver: 64 * K
        })
    );
}

/// The strict flash refuses an erase that is not whole sectors of its map.
#[test]
fn strict_flash_enforces_the_map() {
    use embedded_storage::nor_flash::NorFlash;
    use twinbank::testing::{OnViolation, StrictError};
    let mut f = StrictFlash::<W, E>::new(FLASH as usize).with_sector_map(&f4_map());
    f.set_on_violation(OnViolation::Error);
    assert_eq!(f.erase(0x4000, 0x8000), Ok(()));
    assert_eq!(f.erase(0, 0x2_0000), Ok(()), "4 × 16 KiB + 64 KiB");
    assert_eq!(f.erase(0x2_0000, 0x4_0000), Ok(()));
    for (from, to) in [(0, 0x2000), (0x1_0000, 0x1_8000), (0x2_0000, 0x3_0000)] {
        assert_eq!(f.erase(from, to), Err(StrictError::NotAligned), "{from:#x}");
    }
    assert_eq!(f.counters.erases, 1 + 5 + 1);
    assert_eq!(f.counters.erases_per_sector[..6], [1, 2, 1, 1, 1, 1]);
}

/// The life cycle of `life_cycle.rs` on the map; every erase is a bank sector of the target or a
/// state sector.
fn life_cycle(layout: Layout, len: usize) {
    let mut rig = rig(layout);
    let v1 = image(&rig, Bank::A, 1, 1, len);
    rig.provision(&v1);
    assert_eq!(rig.boot().unwrap().bank, Bank::A);

    let v2 = image(&rig, Bank::B, 2, 2, len);
    rig.flash.reset_counters();
    let id2 = rig.install(Bank::A, &v2).unwrap();
    let bank_b = layout.bank(Bank::B);
    let spanned = layout.sectors_spanning(bank_b, v2.len() as u32);
    assert!(spanned >= 1);
    let first_b = sector_number(&layout, bank_b.offset.0);
    let erased = erased_sectors(&rig);
    for i in 0..spanned as usize {
        assert!(erased.contains(&(first_b + i)), "bank B sector {i} erased");
    }
    for s in &erased {
        let start = rig.flash.sectors()[*s].0 as u32;
        let in_b = start >= bank_b.offset.0 && start < bank_b.end().unwrap();
        let in_state = layout.state().offset.0 <= start && start < layout.state().end().unwrap();
        assert!(
            in_b || in_state,
            "sector {s} erased outside bank B and the state"
        );
    }
    let d = rig.boot().unwrap();
    assert_eq!((d.bank, d.version), (Bank::B, v(2)));
    rig.updater(Bank::B).confirm().unwrap();
    assert_eq!(*rig.state().bank(Bank::B), BankState::Confirmed(id2));

    // Over the old fallback, in bank A.
    let v3 = image(&rig, Bank::A, 3, 3, len);
    rig.install(Bank::B, &v3).unwrap();
    let d = rig.boot().unwrap();
    assert_eq!((d.bank, d.version), (Bank::A, v(3)));
    rig.updater(Bank::A).confirm().unwrap();
    assert_eq!(rig.boot().unwrap().version, v(3));

    // Refusal: an image below the security counter erases nothing and records nothing.
    let old = image(&rig, Bank::B, 4, 1, len);
    let (state, erases) = (rig.state_bytes(), rig.flash.counters.erases);
    assert!(matches!(
        rig.updater(Bank::A).begin(&manifest(&old)),
        Err(UpdateError::Image(_))
    ));
    assert_eq!(rig.flash.counters.erases, erases);
    assert_eq!(rig.state_bytes(), state);

    // SMP `image erase`: every sector of the other bank, whole.
    rig.updater(Bank::A).erase_other().unwrap();
    assert!(rig.bank_bytes(Bank::B).iter().all(|&b| b == 0xff));
}

fn sector_number(layout: &Layout, offset: u32) -> usize {
    let whole = Region::new(0, layout.flash_size());
    layout.sector_index_in(whole, offset) as usize
}

#[test]
fn life_cycle_f4_image_over_two_128k_sectors() {
    life_cycle(f4(), 150 * 1024);
}

#[test]
fn life_cycle_mixed_banks() {
    life_cycle(mixed(), 40 * 1024);
}

/// An upload cut by power at every flash operation (with each cut model) resumes at a sector
/// start of the target bank's map and completes; the device boots the factory image meanwhile.
fn power_cut_at_every_operation(layout: Layout, len: usize, chunk: usize) -> u64 {
    let rig0 = rig(layout);
    let img = image(&rig0, Bank::B, 2, 2, len);
    let m = manifest(&img);
    let models = [
        CutModel::Before,
        CutModel::WritePrefix { units: 1 },
        CutModel::WriteBits { units: 0, seed: 5 },
        CutModel::ErasePartial { seed: 9 },
        CutModel::EraseGarbage { seed: 13 },
    ];
    let mut cuts = 0;
    for model in models {
        for op in 0.. {
            let mut rig = rig(layout);
            rig.provision(&image(&rig, Bank::A, 1, 1, 1000));
            let (sent, result) = {
                let mut up = rig.updater(Bank::A);
                up.flash_mut().cut_at(op, model);
                let mut sent = 0usize;
                let r = (|| {
                    let mut off = up.begin(&m)? as usize;
                    while off < img.len() {
                        let n = chunk.min(img.len() - off);
                        off = up.write(off as u32, &img[off..off + n])? as usize;
                        sent = off;
                    }
                    up.finish()
                })();
                (sent, r)
            };
            if !rig.flash.is_cut() {
                assert!(result.is_ok(), "no cut at {op}: the update completes");
                break;
            }
            cuts += 1;
            rig.flash.power_on();
            let d = rig.boot().unwrap();
            assert_eq!(
                d.bank,
                Bank::A,
                "{model:?} at {op}: the factory image boots"
            );
            let mut up = rig.updater(Bank::A);
            let resume = up.begin(&m).unwrap();
            let b = layout.bank(Bank::B);
            assert!(resume as usize <= sent, "{model:?} at {op}");
            let sector = layout.sector_index_in(b, resume);
            assert_eq!(
                layout.sector_start_in(b, sector),
                resume,
                "{model:?} at {op}: resume at a sector start of bank B"
            );
            let mut off = resume as usize;
            while off < img.len() {
                let n = chunk.min(img.len() - off);
                off = up.write(off as u32, &img[off..off + n]).unwrap() as usize;
            }
            up.finish().unwrap();
            let d = rig.boot().unwrap();
            assert_eq!((d.bank, d.version), (Bank::B, v(2)), "{model:?} at {op}");
        }
    }
    cuts
}

#[test]
fn power_cut_at_every_operation_f4() {
    let cuts = power_cut_at_every_operation(f4(), 150 * 1024, 8 * 1024);
    println!("F4 layout: {cuts} cut points");
    assert!(cuts >= 5 * 20, "{cuts} cut points");
}

#[test]
fn power_cut_at_every_operation_mixed_banks() {
    // Bank B is one 64 KiB sector: the resume goes back to its start.
    let cuts = power_cut_at_every_operation(mixed(), 40 * 1024, 2 * 1024);
    println!("mixed layout: {cuts} cut points");
    assert!(cuts >= 5 * 20, "{cuts} cut points");
}

/// Resume into bank A of the mixed layout (4 × 16 KiB): from a later sector, not 0.
#[test]
fn resume_counts_sectors_of_the_target_banks_map() {
    let layout = mixed();
    let mut rig = rig(layout);
    rig.provision(&image(&rig, Bank::A, 1, 1, 1000));
    let v2 = image(&rig, Bank::B, 2, 2, 40 * 1024);
    rig.install(Bank::A, &v2).unwrap();
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
    rig.updater(Bank::B).confirm().unwrap();
    let v3 = image(&rig, Bank::A, 3, 3, 40 * 1024);
    let m = manifest(&v3);
    {
        let mut up = rig.updater(Bank::B);
        let mut off = up.begin(&m).unwrap() as usize;
        while off < 0x9000 {
            off = up.write(off as u32, &v3[off..off + 0x1000]).unwrap() as usize;
        }
    }
    let mut up = rig.updater(Bank::B);
    let resume = up.begin(&m).unwrap();
    assert_eq!(
        resume, 0x8000,
        "the 16 KiB sector holding the last byte written"
    );
    let mut off = resume as usize;
    while off < v3.len() {
        let n = 3000.min(v3.len() - off);
        off = up.write(off as u32, &v3[off..off + n]).unwrap() as usize;
    }
    up.finish().unwrap();
    assert_eq!(rig.boot().unwrap().version, v(3));
    match rig.state().bank(Bank::A) {
        BankState::Pending { .. } => {}
        other => panic!("bank A: {other:?}"),
    }
}

/// The state ring goes round its 16 KiB sectors: each erased in turn, the newest state always
/// found again.
#[test]
fn state_ring_rotates_over_the_small_sectors() {
    let layout = f4();
    let mut rig = rig(layout);
    let id = rig.provision(&image(&rig, Bank::A, 1, 1, 1000));
    let slots = 16 * 1024 / 128;
    let writes = 5 * slots + 7;
    let mut store = StateStore::open(&mut rig.flash, &layout).unwrap();
    for i in 0..writes {
        let mut s = BootState::factory(Bank::A, id, None);
        s.min_security_counter = 2 + i as u32;
        store.write(&mut rig.flash, &s).unwrap();
    }
    let state = rig.state();
    assert_eq!(state.min_security_counter, 1 + writes as u32);
    // State sectors are map sectors 2 and 3; nothing else was erased.
    let per = &rig.flash.counters.erases_per_sector;
    assert!(per[2] >= 2 && per[3] >= 2, "{per:?}");
    assert_eq!(erased_sectors(&rig), vec![2, 3]);
}
