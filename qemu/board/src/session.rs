//! The QEMU session block: a few words at the start of RAM (outside the firmware's linker map)
//! that survive guest resets (QEMU does not clear RAM on a system reset) but not a QEMU restart
//! (RAM starts zeroed). It is how one "power-on" is tracked across the resets inside it:
//!
//! - the power-cut point: argument `cut=N` makes the N-th flash operation (counted from the
//!   QEMU start, across resets, shim and app alike) the one during which power fails;
//! - counters of flash operations, erases, writes and bytes programmed;
//! - flags the app keeps across its own resets (e.g. "the update was installed").
//!
//! The block is only ever read and written a word at a time through raw pointers (volatile), so
//! no Rust reference to it exists: the shim, the app and QEMU may all change it without aliasing
//! anything. The semihosting command line (`-semihosting-config arg=…`) is read with the
//! `semihosting` crate whenever it is asked for, and returned by value.
//!
//! On real hardware this module does not exist: nothing here is needed to boot or update.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

/// Where the block lives: the first bytes of RAM, which the linker maps leave out.
const ADDR: usize = 0x2000_0000;
const MAGIC: u32 = 0x5E55_1018;
/// Bytes of the command line read at most (the arguments are short words).
pub const CMDLINE_CAP: usize = 512;
/// Bytes of one argument value returned at most.
pub const ARG_CAP: usize = 256;

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
}

/// The block's address; never turned into a reference.
fn block() -> *mut Block {
    ADDR as *mut Block
}

macro_rules! get {
    ($field:ident) => {
        // SAFETY: the block is RAM reserved for this module (outside every linker map), aligned
        // and always mapped; it is accessed only word-wise through raw pointers, never through
        // a reference, and the firmware is single-threaded.
        unsafe { read_volatile(addr_of!((*block()).$field)) }
    };
}

macro_rules! set {
    ($field:ident, $value:expr) => {{
        let v: u32 = $value;
        // SAFETY: as in `get!`.
        unsafe { write_volatile(addr_of_mut!((*block()).$field), v) }
    }};
}

/// Flags kept across resets within one QEMU run.
pub mod flags {
    /// The app installed the image named by `update=` in this run.
    pub const UPDATE_DONE: u32 = 1;
    /// The app asked the bootloader for recovery (`recover`) in this run.
    pub const RECOVERY_ASKED: u32 = 2;
}

/// Called by the shim at every boot: on the first boot of a QEMU process, reads the power-cut
/// point from the command line and clears the counters.
pub fn init() {
    if get!(magic) != MAGIC {
        set!(boots, 0);
        set!(ops, 0);
        set!(erases, 0);
        set!(writes, 0);
        set!(bytes_programmed, 0);
        set!(flags, 0);
        set!(cut_at, cut_argument());
        set!(magic, MAGIC);
    }
    set!(boots, get!(boots).wrapping_add(1));
}

/// The power-cut point `cut=N` of the command line (0 when absent or not a `u32`). Scans the raw
/// bytes of the command line itself, without the UTF-8 check and argument splitting of [`arg`]:
/// the shim calls it on every boot, and those cost ≈ 1 KB of its flash budget (issue 12).
fn cut_argument() -> u32 {
    use semihosting::sys::arm_compat::syscall::{syscall, OperationNumber, ParamRegW};
    // Zeroed: the host writes a NUL-terminated line of at most `CMDLINE_CAP` bytes, so the line
    // ends at the first zero byte whatever the host did.
    let mut buf = [0u8; CMDLINE_CAP];
    let mut block = [ParamRegW::buf(&mut buf), ParamRegW::usize(CMDLINE_CAP)];
    // SAFETY: SYS_GET_CMDLINE writes at most the block's length (`CMDLINE_CAP`) bytes into the
    // buffer the block points to, and both outlive the call.
    let ret = unsafe {
        syscall(
            OperationNumber::SYS_GET_CMDLINE,
            ParamRegW::block(&mut block),
        )
    };
    if ret.usize() != 0 {
        return 0;
    }
    let line = buf.split(|&b| b == 0).next().unwrap_or(&[]);
    line.split(|&b| b == b' ' || b == b'\t')
        .find_map(|w| w.strip_prefix(CUT_KEY))
        .and_then(parse_u32)
        .unwrap_or(0)
}

/// The word that sets the power-cut point: `cut=N`.
const CUT_KEY: &[u8] = b"cut=";

/// Decimal digits as a `u32` (`None` when empty, not all digits, or too large), as
/// `str::parse::<u32>` reads them.
fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(digit as u32)
    })
}

/// An argument value, copied out of the command line.
pub type Arg = heapless::String<ARG_CAP>;

/// Calls `f` with each word of the command line (nothing when there is none or it cannot be
/// read); stops at the first `Some` it returns.
fn find_word<T>(mut f: impl FnMut(&str) -> Option<T>) -> Option<T> {
    let args = semihosting::experimental::env::args::<CMDLINE_CAP>().ok()?;
    (&args).flatten().find_map(&mut f)
}

/// The value of argument `key=value` on the command line (`None` when absent or longer than
/// [`ARG_CAP`]).
pub fn arg(key: &str) -> Option<Arg> {
    find_word(|w| {
        let value = w.strip_prefix(key)?.strip_prefix('=')?;
        Arg::try_from(value).ok()
    })
}

/// True when the bare word `name` is on the command line.
pub fn has(name: &str) -> bool {
    find_word(|w| (w == name).then_some(())).is_some()
}

/// Boots in this QEMU run (1 on the first).
pub fn boots() -> u32 {
    get!(boots)
}

/// Flag bits ([`flags`]).
pub fn flag(bit: u32) -> bool {
    get!(flags) & bit != 0
}

/// Sets a flag bit.
pub fn set_flag(bit: u32) {
    set!(flags, get!(flags) | bit);
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
        ops: get!(ops),
        erases: get!(erases),
        writes: get!(writes),
        bytes_programmed: get!(bytes_programmed),
    }
}

/// Counts one flash operation; true when power fails during this one.
#[cfg(feature = "test-hooks")]
pub(crate) fn count_op(erase: bool, bytes: u32) -> bool {
    if get!(magic) != MAGIC {
        return false;
    }
    let ops = get!(ops).wrapping_add(1);
    set!(ops, ops);
    if erase {
        set!(erases, get!(erases).wrapping_add(1));
    } else {
        set!(writes, get!(writes).wrapping_add(1));
        set!(bytes_programmed, get!(bytes_programmed).wrapping_add(bytes));
    }
    get!(cut_at) == ops
}

/// The power-cut point (0: none).
pub fn cut_at() -> u32 {
    get!(cut_at)
}
