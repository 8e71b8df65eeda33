//! The on-flash state record: 128 bytes, little endian, CRC-32 over everything before the CRC.
//!
//! ```text
//! off  size  field
//!   0    4   magic "TBS1" (format version 1)
//!   4    4   sequence number (newest valid record wins)
//!   8    1   preferred bank (0 = A, 1 = B)
//!   9    3   reserved (0)
//!  12    4   minimum security counter
//!  16   52   bank A entry
//!  68   52   bank B entry
//! 120    4   reserved (0)
//! 124    4   CRC-32/ISCSI of bytes 0..124
//!
//! bank entry (52 bytes):
//!   0    1   status: 0 empty, 1 receiving, 2 pending, 3 confirmed, 4 rejected
//!   1    1   pending: attempts left (≤ 7); receiving: bit 0 = erased from `from_sector` on,
//!            bits 1-2 = kind (0 announced, 1 streamed, 2 streamed and verified)
//!   2    2   receiving: from_sector (u16); otherwise 0
//!   4    4   image security counter
//!   8    8   image version (MCUboot encoding)
//!  16   32   image digest (SHA-256)
//!  48    4   image size
//! ```
//! 128 bytes is a multiple of every supported write size (1..=32), so a record is always whole
//! write units and never shares a unit with another record: each unit is programmed once.
//! A record that fails any check (magic, CRC, a field out of range) is ignored as a whole.

use super::{Attempts, BankState, BootState, ImageId, Receiving, ReceivingKind};
use crate::image::Version;
use crate::layout::Bank;
use crc::{Crc, NoTable, CRC_32_ISCSI};

/// Size of one record on flash.
pub const RECORD_SIZE: usize = 128;
/// "TBS1": twinbank state, format 1. A record with another magic is not ours.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"TBS1");

const CRC_OFFSET: usize = RECORD_SIZE - 4;
const BANK_ENTRY_SIZE: usize = 52;
/// Where the two bank entries lie (A, then B).
const BANK_ENTRIES: core::ops::Range<usize> = 16..16 + 2 * BANK_ENTRY_SIZE;
#[cfg(test)]
const BANK_OFFSETS: [usize; 2] = [BANK_ENTRIES.start, BANK_ENTRIES.start + BANK_ENTRY_SIZE];

/// CRC-32C (Castagnoli): good error detection for short records. Bitwise, without a lookup
/// table: it only ever covers 124-byte records, and the 1 KiB table would be ≈ 4 % of the
/// bootloader's flash budget (issue 12). ≈ 5 k instructions per record on a Cortex-M3.
const CRC32: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISCSI);

const STATUS_EMPTY: u8 = 0;
const STATUS_RECEIVING: u8 = 1;
const STATUS_PENDING: u8 = 2;
const STATUS_CONFIRMED: u8 = 3;
const STATUS_REJECTED: u8 = 4;

/// Receiving, byte 1: bit 0 says the span is erased from `from_sector` on; bits 1-2 the kind.
const RECEIVING_ERASED: u8 = 0b001;
const RECEIVING_KIND_SHIFT: u8 = 1;
const RECEIVING_KINDS: [ReceivingKind; 3] = [
    ReceivingKind::Announced,
    ReceivingKind::Streamed,
    ReceivingKind::Verified,
];

fn receiving_byte(r: &Receiving) -> u8 {
    let kind = match r.kind {
        ReceivingKind::Announced => 0,
        ReceivingKind::Streamed => 1,
        ReceivingKind::Verified => 2,
    };
    u8::from(r.erased) | (kind << RECEIVING_KIND_SHIFT)
}

/// Encodes `state` with sequence number `seq`.
pub fn encode(state: &BootState, seq: u32) -> [u8; RECORD_SIZE] {
    let mut b = [0u8; RECORD_SIZE];
    b[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&seq.to_le_bytes());
    b[8] = state.preferred.index() as u8;
    b[12..16].copy_from_slice(&state.min_security_counter.to_le_bytes());
    // Whole-array pieces: no index can fail, so the bootloader links no panic path here.
    let (entries, _) = b[BANK_ENTRIES].as_chunks_mut::<BANK_ENTRY_SIZE>();
    for (e, bank) in entries.iter_mut().zip(&state.banks) {
        let (status, byte1, from, image) = match bank {
            BankState::Empty => (STATUS_EMPTY, 0, 0, None),
            BankState::Pending {
                image,
                attempts_left,
            } => (STATUS_PENDING, *attempts_left, 0, Some(image)),
            BankState::Confirmed(i) => (STATUS_CONFIRMED, 0, 0, Some(i)),
            BankState::Rejected(i) => (STATUS_REJECTED, 0, 0, Some(i)),
            BankState::Receiving(r) => (
                STATUS_RECEIVING,
                receiving_byte(r),
                r.from_sector,
                Some(&r.image),
            ),
        };
        e[0] = status;
        e[1] = byte1;
        e[2..4].copy_from_slice(&from.to_le_bytes());
        if let Some(i) = image {
            e[4..8].copy_from_slice(&i.security_counter.to_le_bytes());
            e[8..16].copy_from_slice(&i.version.to_bytes());
            e[16..48].copy_from_slice(&i.digest);
            e[48..52].copy_from_slice(&i.size.to_le_bytes());
        }
    }
    let crc = CRC32.checksum(&b[..CRC_OFFSET]);
    b[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The little-endian `u32` at the start of `b` (0 when shorter: never, for the fixed offsets
/// below).
fn le32(b: &[u8]) -> u32 {
    b.first_chunk().map_or(0, |w| u32::from_le_bytes(*w))
}

/// Decodes a record; `None` when it is not a complete, valid record (blank, torn, corrupted, or
/// a field out of range). Returns the state and its sequence number.
pub fn decode(b: &[u8; RECORD_SIZE]) -> Option<(BootState, u32)> {
    if le32(&b[0..4]) != RECORD_MAGIC || le32(&b[CRC_OFFSET..]) != CRC32.checksum(&b[..CRC_OFFSET])
    {
        return None;
    }
    let seq = le32(&b[4..8]);
    let preferred = match b[8] {
        0 => Bank::A,
        1 => Bank::B,
        _ => return None,
    };
    let mut banks = [BankState::Empty; 2];
    let (entries, _) = b[BANK_ENTRIES].as_chunks::<BANK_ENTRY_SIZE>();
    for (e, bank) in entries.iter().zip(&mut banks) {
        let mut version = [0u8; 8];
        version.copy_from_slice(&e[8..16]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&e[16..48]);
        let image = ImageId {
            version: Version::from_bytes(version),
            digest,
            security_counter: le32(&e[4..8]),
            size: le32(&e[48..52]),
        };
        *bank = match (e[0], e[1]) {
            (STATUS_EMPTY, _) => BankState::Empty,
            (STATUS_PENDING, n) if n <= Attempts::MAX => BankState::Pending {
                image,
                attempts_left: n,
            },
            (STATUS_CONFIRMED, _) => BankState::Confirmed(image),
            (STATUS_REJECTED, _) => BankState::Rejected(image),
            (STATUS_RECEIVING, flags) => {
                let &kind = RECEIVING_KINDS.get(usize::from(flags >> RECEIVING_KIND_SHIFT))?;
                BankState::Receiving(Receiving {
                    image,
                    from_sector: u16::from_le_bytes([e[2], e[3]]),
                    erased: flags & RECEIVING_ERASED != 0,
                    kind,
                })
            }
            _ => return None,
        };
    }
    Some((
        BootState {
            preferred,
            min_security_counter: le32(&b[12..16]),
            banks,
        },
        seq,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootState {
        let id = ImageId {
            version: Version::new(1, 2, 3, 4),
            digest: [7; 32],
            security_counter: 5,
            size: 4096,
        };
        BootState {
            preferred: Bank::B,
            min_security_counter: 3,
            banks: [
                BankState::Confirmed(id),
                BankState::Pending {
                    image: ImageId {
                        digest: [9; 32],
                        ..id
                    },
                    attempts_left: 2,
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let r = encode(&s, 42);
        assert_eq!(decode(&r), Some((s, 42)));
    }

    #[test]
    fn any_single_bit_flip_or_truncation_is_rejected() {
        let r = encode(&sample(), 42);
        for bit in 0..RECORD_SIZE * 8 {
            let mut t = r;
            t[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&t), None, "bit {bit}");
        }
        for cut in 0..RECORD_SIZE {
            let mut t = [0xFFu8; RECORD_SIZE];
            t[..cut].copy_from_slice(&r[..cut]);
            assert_eq!(decode(&t), None, "prefix {cut}");
        }
        assert_eq!(decode(&[0xFF; RECORD_SIZE]), None);
        assert_eq!(decode(&[0; RECORD_SIZE]), None);
    }

    #[test]
    fn out_of_range_fields_are_rejected_even_with_a_valid_crc() {
        let fix_crc = |t: &mut [u8; RECORD_SIZE]| {
            let crc = CRC32.checksum(&t[..CRC_OFFSET]);
            t[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        };
        let r = encode(&sample(), 1);
        let mut t = r;
        t[8] = 2; // preferred bank C
        fix_crc(&mut t);
        assert_eq!(decode(&t), None);
        let mut t = r;
        t[BANK_OFFSETS[1]] = 9; // unknown status
        fix_crc(&mut t);
        assert_eq!(decode(&t), None);
        let mut t = r;
        t[BANK_OFFSETS[1] + 1] = 8; // 8 attempts
        fix_crc(&mut t);
        assert_eq!(decode(&t), None);
        let mut t = r;
        t[BANK_OFFSETS[1]] = STATUS_RECEIVING;
        t[BANK_OFFSETS[1] + 1] = 6; // kind 3 does not exist
        fix_crc(&mut t);
        assert_eq!(decode(&t), None);
        t[BANK_OFFSETS[1] + 1] = 0x81; // a bit past the kind
        fix_crc(&mut t);
        assert_eq!(decode(&t), None);
    }

    #[test]
    fn receiving_round_trips() {
        let mut s = sample();
        let image = *s.banks[0].image().unwrap();
        for kind in RECEIVING_KINDS {
            for (from_sector, erased) in [(0, false), (7, true), (u16::MAX, true)] {
                s.banks[0] = BankState::Receiving(Receiving {
                    image,
                    from_sector,
                    erased,
                    kind,
                });
                assert_eq!(decode(&encode(&s, 9)), Some((s, 9)));
            }
        }
        // Records written before the kind existed (byte 1 = 0 or 1) read as announced uploads.
        let r = encode(&s, 3);
        let mut old = r;
        old[BANK_OFFSETS[0] + 1] = 1;
        let crc = CRC32.checksum(&old[..CRC_OFFSET]);
        old[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        let (d, _) = decode(&old).unwrap();
        assert!(matches!(d.banks[0], BankState::Receiving(r)
            if r.kind == ReceivingKind::Announced && r.erased));
    }
}
