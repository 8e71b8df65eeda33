//! Fuzz harnesses: one function per fuzz target, each taking arbitrary bytes and panicking only
//! when an invariant breaks (a panic is what libFuzzer reports as a crash).
//!
//! `fuzz/fuzz_targets/<name>.rs` is a one-line call into [`TARGETS`]; the harnesses live here so
//! that `cargo test` (stable, no fuzzer) replays every seed and every past finding
//! (`device/tests/fuzz_corpus.rs`), and so that the seed corpora are made by the same code that
//! makes real images, records and frames ([`Target::seeds`], written to `fuzz/corpus/<name>/`).
//!
//! | target | input | checked (details on each harness and in fuzz/README.md) |
//! |---|---|---|
//! | `image` | a flash image | verdicts agree: flash/wire manifests, placement, read size |
//! | `state_record` | one 128-byte record | decoded records re-encode to themselves |
//! | `state_store` | control byte + state region | the scan finds the newest; appends land and win |
//! | `frames` | serial bytes | the decoder splits as specified; messages round-trip |
//! | `protocol` | geometry + request script | [`super::invariants`] after every frame |
//! | `board` | board description text | accepted layouts keep every layout rule |
//! | `delta` | control bytes + patch file | refused, or exactly a real target that verifies |
//! | `smp` | console script (SMP, native, raw bytes) | well-formed answers; [`super::invariants`] |
//! | `ed25519` | mode + key/seed + signature/mask + message | the device's check decides as `verify_strict` |

//!
//! Adding a harness for a new parser: a module here with `pub fn <name>(data: &[u8])` and its
//! seeds, one entry in [`TARGETS`], then the fuzz target file and its line in `fuzz/Cargo.toml`
//! (see fuzz/README.md).

extern crate std;

mod board;
mod delta;
mod ed25519;
mod frames;
mod image;
mod protocol;
#[cfg(feature = "smp")]
mod smp;
mod state;

pub use board::board;
pub use delta::{delta, delta_outcome, DELTA_BANK};
pub use ed25519::ed25519;
pub use frames::frames;
pub use image::{image, IMAGE_BANK_ADDRESS, IMAGE_CAPACITY, IMGTOOL_KEY};
pub use protocol::{protocol, protocol_summary, ProtocolSummary, PROTOCOL_BANK};
#[cfg(feature = "smp")]
pub use smp::{smp, smp_summary, SMP_BANK};
pub use state::{state_record, state_store, STORE_SECTORS};

use super::invariants::Violation;
use std::string::{String, ToString};
use std::vec::Vec;

/// CRC-32C, as the state records and the frames use it (the harnesses make CRCs valid so a
/// fuzzer gets past them).
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// One fuzz target: its name (= `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`), its
/// harness and its seed corpus.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name of the target.
    pub name: &'static str,
    /// The harness: panics when an invariant breaks.
    pub run: fn(&[u8]),
    /// The seed inputs (real data made by the crate's own encoders).
    pub seeds: fn() -> Vec<Seed>,
}

/// One seed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// File name in the corpus directory (`seed-` prefixed by the writer).
    pub name: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

fn seed(name: &str, bytes: Vec<u8>) -> Seed {
    Seed {
        name: name.to_string(),
        bytes,
    }
}

/// Every harness of this module.
pub const TARGETS: &[Target] = &[
    Target {
        name: "image",
        run: image,
        seeds: image::seeds,
    },
    Target {
        name: "state_record",
        run: state_record,
        seeds: state::record_seeds,
    },
    Target {
        name: "state_store",
        run: state_store,
        seeds: state::store_seeds,
    },
    Target {
        name: "frames",
        run: frames,
        seeds: frames::seeds,
    },
    Target {
        name: "protocol",
        run: protocol,
        seeds: protocol::seeds,
    },
    Target {
        name: "board",
        run: board,
        seeds: board::seeds,
    },
    Target {
        name: "delta",
        run: delta,
        seeds: delta::seeds,
    },
    Target {
        name: "ed25519",
        run: ed25519,
        seeds: ed25519::seeds,
    },
    #[cfg(feature = "smp")]
    Target {
        name: "smp",
        run: smp,
        seeds: smp::seeds,
    },
];

/// The harness named `name`, if any.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Reports a broken invariant the way a fuzzer sees it.
fn fail(v: Violation) -> ! {
    panic!("invariant broken: {v}")
}

fn ensure(ok: bool, what: &'static str) {
    if !ok {
        fail(Violation::Parser(what));
    }
}

/// Reads fuzzer bytes as a script; reads past the end give zeros.
#[derive(Debug)]
struct Script<'a> {
    data: &'a [u8],
}

impl<'a> Script<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

fn u32_len(data: &[u8]) -> u32 {
    u32::try_from(data.len()).unwrap_or(u32::MAX)
}
