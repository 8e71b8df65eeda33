//! What the bootloader prints, written without `core::fmt`: its formatting machinery (`Formatter`,
//! padding, integer `Display`) costs ≈ 4 KB of a bootloader's flash, more than all of the boot
//! decision (issue 12). These writers take any [`core::fmt::Write`] sink but only ever call
//! `write_str`, so nothing of `core::fmt` is linked.
//!
//! ```text
//! twinbank: boot A 1.0.0+0 normal
//! twinbank: boot A 1.0.0+0 normal (bank B rejected)
//! twinbank: boot B 2.0.0+0 trial 2 left
//! twinbank: boot A 1.0.0+0 rolled back from B: trial attempts exhausted
//! twinbank: boot A 1.0.0+0 rolled back from B: verification failed: hash mismatch
//! twinbank: boot B 3.0.0+0 last resort (bank A: hash mismatch)
//! twinbank: no bootable image (bank A: empty; bank B: untrusted key)
//! ```

use crate::boot::{BootDecision, BootError, BootReason, RollbackCause, Unbootable};
use crate::image::Version;
use crate::layout::Bank;
use core::fmt::{Result, Write};

/// One string per hex digit: writing them one by one needs no UTF-8 check of a buffer.
const DIGITS: [&str; 16] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
];

/// Writes `n` in decimal.
pub fn dec<W: Write>(w: &mut W, n: u32) -> Result {
    // Digits from the last, then written first to last (u32::MAX has 10 digits). `get_mut` and
    // the digit table's 16 entries keep every index in bounds without a panic path.
    let mut digits = [0u8; 10];
    let (mut rest, mut first) = (n, digits.len());
    while let Some(slot) = first.checked_sub(1).and_then(|i| digits.get_mut(i)) {
        *slot = (rest % 10) as u8;
        first -= 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for d in digits.iter().skip(first) {
        w.write_str(DIGITS[(*d & 0xf) as usize])?;
    }
    Ok(())
}

/// Writes `n` as `0x` and eight lowercase hex digits.
pub fn hex<W: Write>(w: &mut W, n: u32) -> Result {
    w.write_str("0x")?;
    for i in (0..8).rev() {
        w.write_str(DIGITS[((n >> (4 * i)) & 0xf) as usize])?;
    }
    Ok(())
}

/// Writes a version as `major.minor.revision+build`.
pub fn version<W: Write>(w: &mut W, v: &Version) -> Result {
    dec(w, v.major as u32)?;
    w.write_str(".")?;
    dec(w, v.minor as u32)?;
    w.write_str(".")?;
    dec(w, v.revision as u32)?;
    w.write_str("+")?;
    dec(w, v.build)
}

fn bank<W: Write>(w: &mut W, b: Bank) -> Result {
    w.write_str(match b {
        Bank::A => "A",
        Bank::B => "B",
    })
}

fn cause<W: Write>(w: &mut W, c: &RollbackCause) -> Result {
    match c {
        RollbackCause::AttemptsExhausted => w.write_str("trial attempts exhausted"),
        RollbackCause::VerifyFailed(e) => {
            w.write_str("verification failed: ")?;
            w.write_str(e.summary())
        }
        RollbackCause::ImageReplaced => w.write_str("bank content differs from the recorded image"),
    }
}

fn unbootable<W: Write>(w: &mut W, u: &Unbootable) -> Result {
    w.write_str(u.summary())
}

/// The boot line of a decision, newline included.
pub fn decision<W: Write>(w: &mut W, d: &BootDecision) -> Result {
    w.write_str("twinbank: boot ")?;
    bank(w, d.bank)?;
    w.write_str(" ")?;
    version(w, &d.version)?;
    match d.reason {
        BootReason::Normal => w.write_str(" normal")?,
        BootReason::Fallback { rejected } => {
            w.write_str(" normal (bank ")?;
            bank(w, rejected)?;
            w.write_str(" rejected)")?;
        }
        BootReason::Trial { attempts_left } => {
            w.write_str(" trial ")?;
            dec(w, attempts_left as u32)?;
            w.write_str(" left")?;
        }
        BootReason::RolledBack { from, cause: c } => {
            w.write_str(" rolled back from ")?;
            bank(w, from)?;
            w.write_str(": ")?;
            cause(w, &c)?;
        }
        BootReason::LastResort { other } => {
            w.write_str(" last resort (bank ")?;
            bank(w, d.bank.other())?;
            w.write_str(": ")?;
            unbootable(w, &other)?;
            w.write_str(")")?;
        }
    }
    w.write_str("\n")
}

/// The line of a boot that found nothing to boot (or could not read its state), newline
/// included.
pub fn error<W: Write>(w: &mut W, e: &BootError) -> Result {
    w.write_str("twinbank: no bootable image (")?;
    match e {
        BootError::NoBootableImage { a, b } => {
            w.write_str("bank A: ")?;
            unbootable(w, a)?;
            w.write_str("; bank B: ")?;
            unbootable(w, b)?;
        }
        BootError::State(s) => w.write_str(s.summary())?,
        BootError::Flash(k) => {
            w.write_str("bank: ")?;
            w.write_str(k.summary())?;
        }
    }
    w.write_str(")\n")
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::image::ImageError;
    use std::string::String;

    #[test]
    fn numbers_and_versions() {
        let mut s = String::new();
        for n in [0, 7, 10, 4_294_967_295] {
            dec(&mut s, n).unwrap();
            s.push(' ');
        }
        hex(&mut s, 0x2101_0400).unwrap();
        s.push(' ');
        version(&mut s, &Version::new(1, 22, 333, 4444)).unwrap();
        assert_eq!(s, "0 7 10 4294967295 0x21010400 1.22.333+4444");
    }

    #[test]
    fn lines_read_as_before() {
        let mut s = String::new();
        let d = BootDecision {
            bank: Bank::A,
            vector_table: 0,
            version: Version::new(1, 0, 0, 0),
            reason: BootReason::RolledBack {
                from: Bank::B,
                cause: RollbackCause::VerifyFailed(ImageError::HashMismatch),
            },
        };
        decision(&mut s, &d).unwrap();
        error(
            &mut s,
            &BootError::NoBootableImage {
                a: Unbootable::Empty,
                b: Unbootable::Invalid(ImageError::UntrustedKey),
            },
        )
        .unwrap();
        assert_eq!(
            s,
            "twinbank: boot A 1.0.0+0 rolled back from B: verification failed: hash mismatch\n\
             twinbank: no bootable image (bank A: empty; bank B: untrusted key)\n"
        );
    }
}
