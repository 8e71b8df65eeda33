//! Harnesses `state_record` (one record) and `state_store` (the scan over arbitrary region
//! contents, then appends).

use super::{ensure, fail, seed, Script, Seed, CRC32C};
use crate::flash::ERASED;
use crate::image::Version;
use crate::layout::{Bank, Layout, LayoutError, Region};
use crate::state::record::{decode, encode, RECORD_MAGIC, RECORD_SIZE};
use crate::state::{Attempts, BankState, BootState, ImageId, StateError, StateStore};
use crate::testing::invariants::Violation;
use crate::testing::StrictFlash;
use std::vec;
use std::vec::Vec;

/// Offset of the CRC in a record (the last four bytes).
const RECORD_CRC_OFFSET: usize = RECORD_SIZE - 4;

/// Makes the record's CRC valid, so a fuzzer reaches the field checks behind it.
fn seal_record(raw: &mut [u8; RECORD_SIZE]) {
    let crc = CRC32C.checksum(&raw[..RECORD_CRC_OFFSET]);
    raw[RECORD_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
}

fn check_record(raw: &[u8; RECORD_SIZE]) {
    let Some((state, seq)) = decode(raw) else {
        return;
    };
    ensure(
        decode(&encode(&state, seq)) == Some((state, seq)),
        "decoded record does not re-encode to itself",
    );
    for bank in Bank::ALL {
        if let BankState::Pending { attempts_left, .. } = state.bank(bank) {
            ensure(*attempts_left <= Attempts::MAX, "too many attempts decoded");
        }
    }
}

/// Harness `state_record`: the input is one record (padded with 0xff); it is decoded as it is
/// and again with its CRC made valid. A record that decodes re-encodes to the same state.
pub fn state_record(data: &[u8]) {
    let mut raw = [ERASED; RECORD_SIZE];
    let n = data.len().min(RECORD_SIZE);
    raw[..n].copy_from_slice(&data[..n]);
    check_record(&raw);
    seal_record(&mut raw);
    check_record(&raw);
}

fn sample_id(seed: u8) -> ImageId {
    ImageId {
        version: Version::new(seed, 1, 2, 3),
        digest: [seed; 32],
        security_counter: seed as u32,
        size: 1000 + seed as u32,
    }
}

pub(super) fn sample_states() -> Vec<BootState> {
    let factory = BootState::factory(Bank::A, sample_id(1), None);
    let mut pending = factory;
    *pending.bank_mut(Bank::B) = BankState::Pending {
        image: sample_id(2),
        attempts_left: 3,
    };
    pending.preferred = Bank::B;
    let mut rejected = factory;
    *rejected.bank_mut(Bank::B) = BankState::Rejected(sample_id(2));
    let mut both = BootState::factory(Bank::B, sample_id(4), Some(sample_id(3)));
    both.min_security_counter = 3;
    vec![factory, pending, rejected, both]
}

pub(super) fn record_seeds() -> Vec<Seed> {
    let names = ["factory", "pending", "rejected", "both-confirmed"];
    sample_states()
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (s, name))| seed(name, encode(s, i as u32 + 1).to_vec()))
        .collect()
}

const STORE_W: usize = 8;
const STORE_E: usize = 1024;
/// Sectors of the `state_store` harness's state region.
pub const STORE_SECTORS: u32 = 3;
/// Most appends the `state_store` harness makes (enough to go round the ring twice).
const STORE_MAX_WRITES: u8 = 64;
/// Control bit: make the CRC of every slot that starts with the record magic valid.
const STORE_SEAL: u8 = 0x01;

fn store_layout() -> Result<Layout, LayoutError> {
    let e = STORE_E as u32;
    let state = STORE_SECTORS * e;
    Layout::new(
        state + 2 * e,
        STORE_W as u32,
        e,
        0,
        Region::new(0, state),
        Region::new(state, e),
        Region::new(state + e, e),
    )
}

/// Harness `state_store`: the input is a control byte and the state region's bytes (padded
/// with 0xff). Bit 0 of the control byte makes every slot that starts with the magic carry a
/// valid CRC; bits 2.. give the number of appends.
///
/// The scan must return the valid record with the highest sequence number; each append must
/// succeed (never programming a unit twice: the strict flash panics), and a fresh scan must then
/// find exactly the appended state.
pub fn state_store(data: &[u8]) {
    let Ok(layout) = store_layout() else {
        fail(Violation::Parser("store layout"));
    };
    let mut script = Script { data };
    let control = script.byte();
    let region_len = layout.state().size.0 as usize;
    let mut bytes = vec![ERASED; region_len + 2 * STORE_E];
    let given = script.bytes(region_len);
    bytes[..given.len()].copy_from_slice(given);
    let mut valid = Vec::new();
    for slot in bytes[..region_len].chunks_exact_mut(RECORD_SIZE) {
        let mut raw = [0u8; RECORD_SIZE];
        raw.copy_from_slice(slot);
        if control & STORE_SEAL != 0 && raw[..4] == RECORD_MAGIC.to_le_bytes() {
            seal_record(&mut raw);
            slot.copy_from_slice(&raw);
        }
        valid.extend(decode(&raw));
    }
    let mut flash = StrictFlash::<STORE_W, STORE_E>::from_bytes(&bytes);
    let mut store = match StateStore::open(&mut flash, &layout) {
        Ok(s) => s,
        Err(e) => fail(Violation::Store(e)),
    };
    match valid.iter().map(|&(_, seq)| seq).max() {
        None => ensure(
            store.current().is_none(),
            "state found in a region without one",
        ),
        Some(newest) => {
            ensure(store.sequence() == newest, "scan missed the newest record");
            let current = store.current().copied();
            ensure(
                valid
                    .iter()
                    .any(|&(s, q)| q == newest && Some(s) == current),
                "scan returned a state that is not the newest record",
            );
        }
    }
    let writes = (control >> 2) % STORE_MAX_WRITES;
    let states = sample_states();
    for i in 0..writes {
        let mut next = states[i as usize % states.len()];
        next.min_security_counter = i as u32;
        let before = store.sequence();
        match store.write(&mut flash, &next) {
            Ok(()) => {}
            Err(StateError::SequenceExhausted) if before == u32::MAX => return,
            Err(e) => fail(Violation::Store(e)),
        }
        let reopened = match StateStore::open(&mut flash, &layout) {
            Ok(s) => s,
            Err(e) => fail(Violation::Store(e)),
        };
        if reopened.current() != Some(&next) || reopened.sequence() != store.sequence() {
            fail(Violation::StoreDisagrees(
                "an append is not the newest record",
            ));
        }
        store = reopened;
    }
}

/// A state region written by the real store: `writes` appends of the sample states.
fn written_region(writes: u32) -> Vec<u8> {
    let Ok(layout) = store_layout() else {
        return Vec::new();
    };
    let mut flash = StrictFlash::<STORE_W, STORE_E>::new((STORE_SECTORS as usize + 2) * STORE_E);
    let states = sample_states();
    if let Ok(mut store) = StateStore::open(&mut flash, &layout) {
        for i in 0..writes {
            let mut s = states[i as usize % states.len()];
            s.min_security_counter = i;
            if store.write(&mut flash, &s).is_err() {
                break;
            }
        }
    }
    flash.bytes()[..layout.state().size.0 as usize].to_vec()
}

fn store_control(seal: bool, writes: u8) -> u8 {
    (writes << 2) | if seal { STORE_SEAL } else { 0 }
}

pub(super) fn store_seeds() -> Vec<Seed> {
    let with = |control: u8, region: Vec<u8>| {
        let mut v = vec![control];
        v.extend(region);
        v
    };
    let slots = STORE_E / RECORD_SIZE;
    let mut torn = written_region(3);
    // The third record torn after 40 bytes.
    torn[2 * RECORD_SIZE + 40..3 * RECORD_SIZE].fill(ERASED);
    let mut gap = written_region(5);
    // A blank slot (a write the driver refused) between valid records.
    gap[2 * RECORD_SIZE..3 * RECORD_SIZE].fill(ERASED);
    vec![
        seed("blank", with(store_control(false, 2), Vec::new())),
        seed(
            "three-records",
            with(store_control(false, 4), written_region(3)),
        ),
        seed(
            "wrapped-ring",
            with(
                store_control(true, 9),
                written_region((STORE_SECTORS as usize * slots + 3) as u32),
            ),
        ),
        seed("torn-record", with(store_control(false, 3), torn)),
        seed("blank-slot", with(store_control(true, 1), gap)),
    ]
}
