//! OS management (group 0): echo, reset, MCUmgr parameters, bootloader information.
//!
//! | command | request | response |
//! |---|---|---|
//! | 0 echo (read or write) | `{d: text}` | `{r: text}` |
//! | 5 reset (write) | `{force?, boot_mode?}` | `{}`, then the device resets (after the answer is sent) |
//! | 6 MCUmgr parameters (read) | `{}` | `{buf_size: 1024, buf_count: 1}` |
//! | 8 bootloader information (read) | `{query?}` | `{bootloader: "twinbank"}`; query `"mode"`: `{mode: 5, "no-downgrade": true}` |
//!
//! Mode 5 is MCUboot's `DIRECT_XIP_WITH_REVERT`, what twinbank does: each image runs in place
//! from the bank it was linked for, a new one runs on trial and is reverted unless confirmed.
//! `no-downgrade`: the device refuses images below its minimum security counter.
//!
//! Reset boot modes (MCUmgr's numbering): 0 normal; [`BOOT_MODE_RECOVERY`] (1) asks the bootloader
//! for serial recovery at the next reset, accepted only where the application said its bootloader
//! offers recovery ([`Smp::offer_recovery`](super::Smp::offer_recovery)); any other mode, or mode
//! 1 on a device whose bootloader has no recovery, is refused with ENOTSUP and nothing resets.

use super::cbor::{self, flag, Body};
use super::error::{GroupErr, MgmtErr, OsErr, Reason, Refusal};
use super::framing::BUF_SIZE;
use super::header::Op;

/// Command: echo.
pub const ECHO: u8 = 0;
/// Command: reset.
pub const RESET: u8 = 5;
/// Command: MCUmgr parameters.
pub const PARAMETERS: u8 = 6;
/// Command: bootloader information.
pub const BOOTLOADER_INFO: u8 = 8;

/// Reset boot mode: enter the bootloader's serial recovery (MCUmgr's "bootloader mode").
pub const BOOT_MODE_RECOVERY: u8 = 1;

/// The bootloader's name in the bootloader information.
pub const BOOTLOADER_NAME: &str = "twinbank";
/// MCUboot's mode number for direct execute-in-place with revert.
pub const MODE_DIRECT_XIP_WITH_REVERT: u8 = 5;
/// SMP buffers the device has (one request at a time).
pub const BUF_COUNT: u32 = 1;

/// What an OS command asks of the device beyond its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum After {
    /// Nothing.
    #[default]
    Nothing,
    /// Reset once the answer is sent.
    Reset,
    /// Ask the bootloader for serial recovery, then reset, once the answer is sent.
    ResetToRecovery,
}

const UNSUPPORTED: Refusal = Refusal::mgmt(MgmtErr::NotSup, "command not supported");

/// Handles OS command `cmd`, writing the response body with `e`. `recovery`: the bootloader
/// offers serial recovery (a reset with [`BOOT_MODE_RECOVERY`] is accepted).
pub fn handle(
    op: Op,
    cmd: u8,
    body: &[u8],
    recovery: bool,
    e: &mut Body<'_>,
) -> Result<After, Refusal> {
    match (cmd, op) {
        (ECHO, _) => {
            let mut d = None;
            cbor::fields(body, |k, dec| {
                if k == "d" {
                    d = Some(dec.str()?);
                    return Ok(true);
                }
                Ok(false)
            })?;
            let d = d.ok_or(cbor::MALFORMED)?;
            e.map(1)?.str("r")?.str(d)?;
            Ok(After::Nothing)
        }
        (RESET, Op::Write) => {
            let mut mode = 0u8;
            cbor::fields(body, |k, dec| match k {
                "force" => flag(dec).map(|_| true),
                "boot_mode" => {
                    mode = dec.u8()?;
                    Ok(true)
                }
                _ => Ok(false),
            })?;
            let after = match mode {
                0 => After::Reset,
                BOOT_MODE_RECOVERY if recovery => After::ResetToRecovery,
                BOOT_MODE_RECOVERY => {
                    return Err(Refusal::mgmt(
                        MgmtErr::NotSup,
                        "the bootloader has no serial recovery",
                    ))
                }
                _ => {
                    return Err(Refusal::mgmt(
                        MgmtErr::NotSup,
                        "boot modes: 0 (normal), 1 (recovery)",
                    ))
                }
            };
            e.map(0)?;
            Ok(after)
        }
        (PARAMETERS, Op::Read) => {
            e.map(2)?
                .str("buf_size")?
                .u32(BUF_SIZE as u32)?
                .str("buf_count")?
                .u32(BUF_COUNT)?;
            Ok(After::Nothing)
        }
        (BOOTLOADER_INFO, Op::Read) => {
            let mut query = None;
            cbor::fields(body, |k, dec| {
                if k == "query" {
                    query = Some(dec.str()?);
                    return Ok(true);
                }
                Ok(false)
            })?;
            match query {
                None => {
                    e.map(1)?.str("bootloader")?.str(BOOTLOADER_NAME)?;
                }
                Some("mode") => {
                    e.map(2)?
                        .str("mode")?
                        .u8(MODE_DIRECT_XIP_WITH_REVERT)?
                        .str("no-downgrade")?
                        .bool(true)?;
                }
                Some(_) => {
                    return Err(Refusal {
                        rc: MgmtErr::Inval,
                        group: Some(GroupErr::Os(OsErr::QueryYieldsNoAnswer)),
                        reason: Reason::Text("unknown bootloader query"),
                    })
                }
            }
            Ok(After::Nothing)
        }
        _ => Err(UNSUPPORTED),
    }
}
