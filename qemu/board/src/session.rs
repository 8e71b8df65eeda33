//! The QEMU session block: 1 KiB at the start of RAM (outside the firmware's linker map) that
//! survives guest resets (QEMU does not clear RAM on a system reset) but not a QEMU restart (RAM
//! starts zeroed). It is how the test harness talks to the guest and how one "power-on" is
//! tracked across the resets inside it:
//!
//! - the semihosting command line (`-semihosting-config arg=…`), read once per QEMU process by
//!   [`init`] (called by the shim at every boot; only the first call of a process reads it);
//! - the power-cut point: argument `cut=N` makes the N-th flash operation (counted from the
//!   QEMU start, across resets, shim and app alike) the one during which power fails;
//! - counters of flash operations, erases, writes and bytes programmed;
//! - flags the app keeps across its own resets (e.g. "the update was installed").
//!
//! On real hardware this module does not exist: nothing here is needed to boot or update.

const ADDR: usize = 0x2000_0000;
const MAGIC: u32 = 0x5E55_1017;
const ARGS_CAP: usize = 1024 - 4 * 10;

#[repr(C)]
struct Block {
    magic: u32,
    boots: u32,
    ops: u32,
    cut_at: u32,
    erases: u32,
    writes: u32,
    bytes_programmed: u32,
    flags: u32,
    args_len: u32,
    _reserved: u32,
    args: [u8; ARGS_CAP],
}

fn blk() -> &'static mut Block {
    // SAFETY: the block is RAM reserved for this module (outside every linker map); the firmware
    // is single-threaded and no reference escapes this module. Stores are complete before a
    // reset or exit: both are asm statements that clobber memory.
    unsafe { &mut *(ADDR as *mut Block) }
}

/// Flags kept across resets within one QEMU run.
pub mod flags {
    /// The app installed the image named by `update=` in this run.
    pub const UPDATE_DONE: u32 = 1;
}

/// Called by the shim at every boot: on the first boot of a QEMU process, reads the command
/// line and sets up the counters.
pub fn init() {
    if blk().magic != MAGIC {
        let b = blk();
        *b = Block {
            magic: 0,
            boots: 0,
            ops: 0,
            cut_at: 0,
            erases: 0,
            writes: 0,
            bytes_programmed: 0,
            flags: 0,
            args_len: 0,
            _reserved: 0,
            args: [0; ARGS_CAP],
        };
        let n = crate::semihosting::cmdline(&mut b.args);
        blk().args_len = n as u32;
        blk().magic = MAGIC;
        let cut = arg("cut").and_then(parse_u32).unwrap_or(0);
        blk().cut_at = cut;
    }
    blk().boots = blk().boots.wrapping_add(1);
}

fn parse_u32(s: &str) -> Option<u32> {
    s.parse().ok()
}

fn args() -> &'static str {
    if blk().magic != MAGIC {
        return "";
    }
    let n = (blk().args_len as usize).min(ARGS_CAP);
    let bytes = &blk().args[..n];
    core::str::from_utf8(bytes).unwrap_or("")
}

/// The value of argument `key=value` on the command line.
pub fn arg(key: &str) -> Option<&'static str> {
    args()
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// True when the bare word `name` is on the command line.
pub fn has(name: &str) -> bool {
    args().split_ascii_whitespace().any(|w| w == name)
}

/// Boots in this QEMU run (1 on the first).
pub fn boots() -> u32 {
    blk().boots
}

/// Flag bits ([`flags`]).
pub fn flag(bit: u32) -> bool {
    blk().flags & bit != 0
}

/// Sets a flag bit.
pub fn set_flag(bit: u32) {
    blk().flags = blk().flags | bit;
}

/// Flash statistics since the QEMU start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlashStats {
    /// Operations (each erased sector and each write call count one).
    pub ops: u32,
    /// Sectors erased.
    pub erases: u32,
    /// Write calls.
    pub writes: u32,
    /// Bytes programmed.
    pub bytes_programmed: u32,
}

/// Flash statistics since the QEMU start.
pub fn stats() -> FlashStats {
    FlashStats {
        ops: blk().ops,
        erases: blk().erases,
        writes: blk().writes,
        bytes_programmed: blk().bytes_programmed,
    }
}

/// Counts one flash operation; true when power fails during this one.
pub(crate) fn count_op(erase: bool, bytes: u32) -> bool {
    if blk().magic != MAGIC {
        return false;
    }
    let ops = blk().ops.wrapping_add(1);
    blk().ops = ops;
    if erase {
        blk().erases = blk().erases.wrapping_add(1);
    } else {
        blk().writes = blk().writes.wrapping_add(1);
        blk().bytes_programmed = blk().bytes_programmed.wrapping_add(bytes);
    }
    blk().cut_at == ops
}

/// The power-cut point (0: none) and the current count.
pub fn cut_at() -> u32 {
    blk().cut_at
}
