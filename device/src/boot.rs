//! The boot decision: what the bootloader shim calls after reset.
//!
//! Ordered rules for the preferred bank `P` (at most two banks are tried, so at most a handful of
//! record writes happen per boot; no loop depends on flash contents):
//!
//! | `P` holds            | image verifies | written before returning              | result            |
//! |----------------------|----------------|----------------------------------------|-------------------|
//! | Confirmed            | yes            | nothing                                | boot P (normal)   |
//! | Confirmed            | no             | P Rejected, preferred = other          | try the other     |
//! | Pending, n > 0 left  | yes            | P Pending n-1 (the attempt is spent)   | boot P (trial)    |
//! | Pending, n > 0 left  | no             | P Rejected, preferred = other          | try the other     |
//! | Pending, 0 left      | —              | P Rejected, preferred = other          | try the other     |
//! | Empty/Rejected       | —              | preferred = other, if other is bootable | try the other    |
//! | no valid record      | —              | adopt: verified banks Confirmed, A preferred | as above    |
//! | none of the above boots | a Rejected bank verifies | preferred = it (trial that ran out first) | boot it (last resort) |
//!
//! "Verifies" means the full check of [`crate::image::verify_image`] with the current minimum
//! security counter, plus the image digest equal to the one the state recorded for that bank.
//! A flash read error is returned as an error and marks nothing (a glitch must not reject a bank).
//!
//! Stack: the state scan (one 128-byte record) and image verification (see [`crate::image`]);
//! ≈ 8 KB in all on Cortex-M3.

use crate::image::{
    verify_image_with, ImageError, Sha256Engine, SoftSha256, VerifiedImage, Version,
};
use crate::layout::Bank;
use crate::state::{BankState, BootState, ImageId, StateError, StateStore};
use crate::Config;
use core::fmt;
use embedded_storage::nor_flash::NorFlash;

/// Why the bootloader left a bank during this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RollbackCause {
    /// The trial image used all its boot attempts without confirming.
    AttemptsExhausted,
    /// The image failed verification.
    VerifyFailed(ImageError),
    /// The bank holds another image than the one the state recorded.
    ImageReplaced,
}

impl fmt::Display for RollbackCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackCause::AttemptsExhausted => f.write_str("trial attempts exhausted"),
            RollbackCause::VerifyFailed(e) => write!(f, "verification failed: {e}"),
            RollbackCause::ImageReplaced => {
                f.write_str("bank content differs from the recorded image")
            }
        }
    }
}

/// Why this bank boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BootReason {
    /// The preferred bank holds a confirmed image.
    Normal,
    /// A confirmed image, while the other bank holds an image that was rejected earlier (by its
    /// health check, or by a rollback on an earlier boot).
    Fallback {
        /// The bank holding the rejected image.
        rejected: Bank,
    },
    /// A trial boot of a new image; one attempt was spent for it.
    Trial {
        /// Boots left after this one before the image is rolled back.
        attempts_left: u8,
    },
    /// This boot rolled back from the other bank.
    RolledBack {
        /// The bank that was given up.
        from: Bank,
        /// Why.
        cause: RollbackCause,
    },
    /// Nothing confirmed or on trial can boot, so an image the state records as rejected (its
    /// trial ran out, or its health check failed) but that still verifies boots rather than
    /// nothing (issue 10). It stays rejected; it is preferred, so its application can install
    /// an update into the other bank.
    LastResort {
        /// Why the other bank cannot boot.
        other: Unbootable,
    },
}

impl fmt::Display for BootReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootReason::Normal => f.write_str("normal"),
            BootReason::Fallback { rejected } => {
                write!(f, "normal, bank {rejected} holds a rejected image")
            }
            BootReason::Trial { attempts_left } => {
                write!(f, "trial, {attempts_left} attempts left")
            }
            BootReason::RolledBack { from, cause } => {
                write!(f, "rolled back from bank {from} because {cause}")
            }
            BootReason::LastResort { other } => write!(
                f,
                "last resort: a rejected image, because the other bank cannot boot ({other})"
            ),
        }
    }
}

/// The result: which bank to jump to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BootDecision {
    /// The bank to boot.
    pub bank: Bank,
    /// CPU address of the image's vector table (bank address + header size).
    pub vector_table: u32,
    /// Version of the image booted.
    pub version: Version,
    /// Why this bank.
    pub reason: BootReason,
}

/// Why nothing can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BootError {
    /// Neither bank holds a bootable, verified image. The shim reports it and stops.
    NoBootableImage {
        /// Why bank A cannot boot.
        a: Unbootable,
        /// Why bank B cannot boot.
        b: Unbootable,
    },
    /// The state region could not be read or written.
    State(StateError),
    /// A bank could not be read.
    Flash(crate::flash::FlashFault),
}

/// Why one bank cannot boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Unbootable {
    /// The state says the bank is empty (or being written).
    Empty,
    /// The state says the bank's image was rejected.
    Rejected,
    /// The state says an update is being written into the bank.
    Receiving,
    /// The image failed verification.
    Invalid(ImageError),
}

impl Unbootable {
    /// A short fixed description (for `Invalid`, the image error's summary).
    pub fn summary(&self) -> &'static str {
        match self {
            Unbootable::Empty => "empty",
            Unbootable::Rejected => "rejected",
            Unbootable::Receiving => "receiving an update",
            Unbootable::Invalid(e) => e.summary(),
        }
    }

    /// Why a bank in this (non-bootable) state cannot boot.
    fn of_state(state: &BankState) -> Unbootable {
        match state {
            BankState::Rejected(_) => Unbootable::Rejected,
            BankState::Receiving(_) => Unbootable::Receiving,
            _ => Unbootable::Empty,
        }
    }
}

impl fmt::Display for Unbootable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unbootable::Invalid(e) => write!(f, "{e}"),
            u => f.write_str(u.summary()),
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::NoBootableImage { a, b } => {
                write!(f, "no bootable image (bank A: {a}; bank B: {b})")
            }
            BootError::State(e) => write!(f, "{e}"),
            BootError::Flash(k) => write!(f, "bank: {}", k),
        }
    }
}

impl From<StateError> for BootError {
    fn from(e: StateError) -> Self {
        BootError::State(e)
    }
}

/// What booting a verified image needs: where its vector table is and which version it is.
#[derive(Clone, Copy)]
struct Target {
    vector_table: u32,
    version: Version,
}

impl Target {
    fn of(img: &VerifiedImage) -> Target {
        Target {
            // load_addr is the bank address (verification requires ROM_FIXED at this bank).
            vector_table: img
                .header
                .load_addr
                .wrapping_add(img.header.hdr_size as u32),
            version: img.header.version,
        }
    }

    fn boot(self, bank: Bank, reason: BootReason) -> BootDecision {
        BootDecision {
            bank,
            vector_table: self.vector_table,
            version: self.version,
            reason,
        }
    }
}

/// Verifies `bank` against the state's expectations. `Ok(Err(_))` is a verdict on the image;
/// `Err(_)` is a flash failure. Out of line: the decision calls it from two places, and each
/// inlined copy would cost the bootloader flash.
#[inline(never)]
fn check_bank<F: NorFlash, H: Sha256Engine>(
    flash: &mut F,
    config: &Config<'_>,
    state: &BootState,
    bank: Bank,
    expected: &ImageId,
    engine: &mut H,
) -> Result<Result<Target, RollbackCause>, BootError> {
    match verify_image_with(
        flash,
        &config.verify_params(bank, state.min_security_counter),
        engine,
    ) {
        Ok(img) if img.digest == expected.digest => Ok(Ok(Target::of(&img))),
        Ok(_) => Ok(Err(RollbackCause::ImageReplaced)),
        Err(ImageError::Flash(k)) => Err(BootError::Flash(k)),
        Err(e) => Ok(Err(RollbackCause::VerifyFailed(e))),
    }
}

/// A state for a device without any valid record (never provisioned): each bank whose image
/// verifies is adopted as confirmed; A is preferred when it verifies. Nothing is written here.
/// Also returns, per bank, why it was not adopted.
fn adopt<F: NorFlash, H: Sha256Engine>(
    flash: &mut F,
    config: &Config<'_>,
    engine: &mut H,
) -> Result<(BootState, [Unbootable; 2]), BootError> {
    let mut banks = [BankState::Empty, BankState::Empty];
    let mut why = [Unbootable::Empty; 2];
    for bank in Bank::ALL {
        match verify_image_with(flash, &config.verify_params(bank, 0), engine) {
            Ok(img) => banks[bank.index()] = BankState::Confirmed(ImageId::of(&img)),
            Err(ImageError::Flash(k)) => return Err(BootError::Flash(k)),
            Err(e) => why[bank.index()] = Unbootable::Invalid(e),
        }
    }
    let preferred = if matches!(banks[0], BankState::Confirmed(_)) || banks[1] == BankState::Empty {
        Bank::A
    } else {
        Bank::B
    };
    Ok((
        BootState {
            preferred,
            min_security_counter: 0,
            banks,
        },
        why,
    ))
}

/// Decides which bank to boot, spending a trial attempt or rolling back as the state demands.
/// See the module documentation for the rules. Every state change is written before the
/// decision is returned, so a reset at any moment replays a consistent decision.
pub fn decide<F: NorFlash>(flash: &mut F, config: &Config<'_>) -> Result<BootDecision, BootError> {
    decide_with(flash, config, &mut SoftSha256::default())
}

/// [`decide`] hashing through the board's SHA-256 `engine`.
pub fn decide_with<F: NorFlash, H: Sha256Engine>(
    flash: &mut F,
    config: &Config<'_>,
    engine: &mut H,
) -> Result<BootDecision, BootError> {
    let mut store = StateStore::open(flash, &config.layout)?;
    let mut verdict = [Unbootable::Empty; 2];
    let mut state = match store.current() {
        Some(s) => *s,
        None => {
            let (adopted, why) = adopt(flash, config, engine)?;
            if adopted.banks != [BankState::Empty, BankState::Empty] {
                store.write(flash, &adopted)?;
            }
            // A bank not adopted reports why its image did not verify, not just "empty".
            verdict = why;
            adopted
        }
    };
    let mut rolled_back: Option<(Bank, RollbackCause)> = None;
    // Each pass either returns or moves `preferred` to the other bank after marking this one
    // unbootable; two passes see both banks.
    for _ in 0..2 {
        let bank = state.preferred;
        let current = *state.bank(bank);
        let failure = match current {
            // A confirmed image, or a trial with attempts left: it boots if it verifies.
            BankState::Confirmed(id)
            | BankState::Pending {
                image: id,
                attempts_left: 1..,
            } => match check_bank(flash, config, &state, bank, &id, engine)? {
                Ok(target) => {
                    let other = bank.other();
                    let reason = match (current, rolled_back, state.bank(other)) {
                        (BankState::Pending { attempts_left, .. }, ..) => {
                            // The attempt is spent before the image runs.
                            let left = attempts_left - 1;
                            *state.bank_mut(bank) = BankState::Pending {
                                image: id,
                                attempts_left: left,
                            };
                            store.write(flash, &state)?;
                            BootReason::Trial {
                                attempts_left: left,
                            }
                        }
                        (_, Some((from, cause)), _) => BootReason::RolledBack { from, cause },
                        (_, None, BankState::Rejected(_)) => {
                            BootReason::Fallback { rejected: other }
                        }
                        _ => BootReason::Normal,
                    };
                    return Ok(target.boot(bank, reason));
                }
                Err(cause) => cause,
            },
            BankState::Pending { .. } => RollbackCause::AttemptsExhausted,
            BankState::Empty | BankState::Rejected(_) | BankState::Receiving(_) => {
                if verdict[bank.index()] == Unbootable::Empty {
                    verdict[bank.index()] = Unbootable::of_state(&current);
                }
                let other = bank.other();
                if state.bank(other).may_boot() {
                    state.preferred = other;
                    store.write(flash, &state)?;
                    continue;
                }
                break;
            }
        };
        // This bank cannot boot: record it, then try the other one.
        verdict[bank.index()] = match failure {
            RollbackCause::VerifyFailed(e) => Unbootable::Invalid(e),
            _ => Unbootable::Rejected,
        };
        if let Some(id) = current.image() {
            *state.bank_mut(bank) = BankState::Rejected(*id);
        }
        let other = bank.other();
        let other_may_boot = state.bank(other).may_boot();
        if other_may_boot {
            state.preferred = other;
        }
        store.write(flash, &state)?;
        rolled_back.get_or_insert((bank, failure));
        if !other_may_boot {
            verdict[other.index()] = Unbootable::of_state(state.bank(other));
            break;
        }
    }
    // Report the other bank's status too when the loop ended before looking at it.
    for bank in Bank::ALL {
        if verdict[bank.index()] == Unbootable::Empty {
            verdict[bank.index()] = Unbootable::of_state(state.bank(bank));
        }
    }
    // Last resort: never stop while a bank holds an image that verifies. Nothing confirmed or on
    // trial can boot, so an image the state names as rejected (a trial that ran out — tried
    // first —, a failed health check) and that still verifies (digest as recorded, counter not
    // below the minimum) boots rather than nothing. Empty or receiving banks hold nothing that
    // was ever activated: a device without any such image waits for one (serial recovery).
    let first = match rolled_back {
        Some((b, RollbackCause::AttemptsExhausted)) => b,
        _ => state.preferred,
    };
    for bank in [first, first.other()] {
        let BankState::Rejected(id) = *state.bank(bank) else {
            continue;
        };
        if matches!(verdict[bank.index()], Unbootable::Invalid(_)) {
            continue; // failed verification in this boot already
        }
        match check_bank(flash, config, &state, bank, &id, engine)? {
            Ok(target) => {
                // Preferred, so that its application can install into the other bank.
                if state.preferred != bank {
                    state.preferred = bank;
                    store.write(flash, &state)?;
                }
                let other = verdict[bank.other().index()];
                return Ok(target.boot(bank, BootReason::LastResort { other }));
            }
            Err(RollbackCause::VerifyFailed(e)) => verdict[bank.index()] = Unbootable::Invalid(e),
            Err(_) => {}
        }
    }
    Err(BootError::NoBootableImage {
        a: verdict[0],
        b: verdict[1],
    })
}
