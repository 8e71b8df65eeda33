//! `twinbank-host`: the host tool `twinbank` (keys, signing, inspection, verification, factory
//! provisioning, serial client) and the library behind it, which xtask and the tests use too, so
//! that there is one implementation of each job:
//!
//! ```text
//!  ELF / HEX / BIN ──input::load──► Firmware ──sign::sign_firmware──► signed image
//!  signed images ──provision::FlashImage (place, verify, factory state)──► flash.bin / flash.hex
//!  flash.bin ──provision::report──► boot state + per-bank verification
//!  running image + new image ──delta::patch──► patch (rebuilt and compared before it is written)
//! ```
//!
//! Every format (image header, TLVs, signature, state record) comes from the `twinbank` device
//! crate; this crate reads files, parses options and prints.
#![deny(missing_docs)]

pub mod board_file;
pub mod delta;
pub mod hex;
pub mod image_file;
pub mod input;
pub mod inspect;
pub mod keys;
pub mod output;
pub mod provision;
pub mod serial;
pub mod sign;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use twinbank::Bank;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (the image is valid / the file was written)
  1  refused: the image would not be accepted, does not fit, is linked for another bank,
     or verification failed
  2  usage or input error: bad option, unreadable or malformed file, bad key";

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// 1 = refused, 2 = usage/input.
    pub code: u8,
    /// The message (names the file and the field).
    pub msg: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CliError {}

impl CliError {
    /// Usage or input error (exit 2).
    pub fn input(msg: impl Into<String>) -> CliError {
        CliError {
            code: 2,
            msg: msg.into(),
        }
    }

    /// The image was refused (exit 1).
    pub fn refused(msg: impl Into<String>) -> CliError {
        CliError {
            code: 1,
            msg: msg.into(),
        }
    }

    /// Prefixes the message with a file name.
    pub fn context_file(self, path: &Path) -> CliError {
        self.prefix(&path.display().to_string())
    }

    /// Prefixes the message.
    pub fn prefix(self, p: &str) -> CliError {
        CliError {
            code: self.code,
            msg: format!("{p}: {}", self.msg),
        }
    }
}

/// A bank name on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BankArg {
    /// Bank A.
    #[value(name = "A", alias = "a")]
    A,
    /// Bank B.
    #[value(name = "B", alias = "b")]
    B,
}

impl From<BankArg> for Bank {
    fn from(b: BankArg) -> Bank {
        match b {
            BankArg::A => Bank::A,
            BankArg::B => Bank::B,
        }
    }
}

/// `getpub` output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PubFormat {
    /// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    Pem,
    /// The raw 32-byte key (binary).
    Raw,
    /// DER SubjectPublicKeyInfo, 44 bytes (what `imgtool getpub -e raw` writes).
    Der,
    /// A Rust constant `twinbank::TrustedKey` for the bootloader.
    Rust,
    /// A C array of the DER key (MCUboot key table style).
    C,
    /// JSON: raw key, DER, KEYHASH, PEM.
    Json,
}

/// Image output formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ImageFormat {
    /// Raw binary.
    Bin,
    /// Intel HEX at the bank address.
    Hex,
}

/// Parses `0x…` (hex) or decimal numbers.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let s = s.trim().replace('_', "");
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16)
    } else {
        s.parse::<u32>()
    };
    r.map_err(|_| format!("`{s}` is not a 32-bit number (decimal or 0x hex)"))
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let v = parse_u32(s)?;
    u16::try_from(v).map_err(|_| format!("`{s}` does not fit the 16-bit header size field"))
}

fn parse_uuid(s: &str) -> Result<twinbank::Uuid, String> {
    twinbank::board::parse_uuid(s)
        .ok_or_else(|| format!("`{s}` is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"))
}

fn parse_version(s: &str) -> Result<twinbank::Version, String> {
    s.parse()
        .map_err(|e: twinbank::image::VersionParseError| e.to_string())
}

#[derive(Parser)]
#[command(
    name = "twinbank",
    version,
    about = "twinbank host tool: keys, signing, inspection, verification and factory provisioning \
             of MCUboot-compatible A/B firmware images",
    after_help = EXIT_CODES,
    propagate_version = false
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate an Ed25519 signing key (PKCS#8 PEM, mode 0600).
    #[command(after_help = "Examples:
  twinbank keygen -o key.pem
  twinbank keygen -o key.pem --force     # replace an existing key

Keys from `openssl genpkey -algorithm ed25519` and `imgtool keygen -t ed25519` work too.

Exit codes: 0 written, 2 the file exists (without --force) or cannot be written.")]
    Keygen {
        /// Where to write the private key.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the public key of a key (private or public PEM), for the bootloader.
    #[command(after_help = "Examples:
  twinbank getpub -k key.pem                      # SPKI PEM
  twinbank getpub -k key.pem --format rust > src/trusted_key.rs
  twinbank getpub -k key.pem --format c
  twinbank getpub -k key.pem --format json        # raw key, DER, KEYHASH
  twinbank getpub -k key.pem --format raw -o key.raw

Exit codes: 0 ok, 2 bad or unreadable key.")]
    Getpub {
        /// Key file (private PKCS#8 PEM or public SPKI PEM).
        #[arg(short, long, value_name = "FILE")]
        key: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "pem")]
        format: PubFormat,
        /// Write to a file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Sign firmware (ELF, Intel HEX or raw binary) into an MCUboot-layout image.
    #[command(after_help = "Examples:
  twinbank sign -k key.pem --version 1.2.3+4 --bank A app.elf -o app-a.bin
  twinbank sign -k key.pem --version 1.0.0 --security-counter 1 --board-ids app.elf -o app.bin
  twinbank sign -k key.pem --version 1.3.0 --security-counter 2 --bank B app-b.elf -o app-b.hex
  twinbank sign -k key.pem --version 1.0.0 --rom-fixed 0x21010000 --header-size 0x400 \\
                --slot-size 0x100000 app.bin -o app.bin.signed --format bin

The input type is detected from its content. From an ELF or HEX file, the lowest load address
must be the bank address + header size (where the bootloader expects the vector table); without
--bank/--rom-fixed the bank is inferred from it. A raw binary needs --bank or --rom-fixed.
Header size, slot size and vector alignment default to the board description (--board FILE,
else twinbank.toml in the current directory); --board-ids takes the vendor and class ids from it.
The output is Intel HEX when OUTPUT ends in .hex or with --format hex; BIN otherwise.
For the same key, payload and options the output is byte-identical to
`imgtool sign --pad-header --header-size N --rom-fixed ADDR ...`.

Exit codes: 0 signed, 1 refused (wrong bank, misaligned, does not fit), 2 usage/input error.")]
    Sign(sign::SignArgs),
    /// Show every header field and TLV of an image; check its hash (and signature with -k).
    /// Given a patch (`twinbank delta`), show its base, target, size, ratio and ops.
    #[command(after_help = "Examples:
  twinbank inspect app-a.bin
  twinbank inspect v1-to-v2.patch
  twinbank inspect app-a.bin -k key.pem
  twinbank inspect app-a.hex --json | jq .hash.matches

Exit codes: 0 readable and consistent (hash matches; signature valid when -k is given),
1 hash mismatch or invalid signature, 2 not a readable image (unknown type, truncated, malformed).")]
    Inspect(inspect::InspectArgs),
    /// Verify an image exactly as the device would: exit 0 only if it would be accepted.
    #[command(after_help = "Examples:
  twinbank verify -k key.pub.pem app-a.bin
  twinbank verify -k key.pem --bank B --min-security-counter 3 app-b.bin
  twinbank verify -k key.pem --board-ids app-a.bin          # ids from twinbank.toml [device]
  twinbank verify -k key.pem --vid 5a1a2b3c-0d0e-4f10-8112-131415161718 app.bin --json

The bank is --bank, or the board bank the image is linked for. Without a board description the
bank binding is checked against the image's own load address only.

Exit codes: 0 accepted, 1 refused (with the reason), 2 usage/input error.")]
    Verify(inspect::VerifyArgs),
    /// Build the complete factory flash contents (state + bank A [+ bank B] [+ bootloader]).
    #[command(after_help = "Examples:
  twinbank provision --key key.pub.pem --image-a app-a.bin -o flash.bin
  twinbank provision --board twinbank.toml --key key.pem --image-a app-a.bin \\
                     --image-b app-b.bin -o flash.bin --hex flash.hex

flash.bin is the whole flash (erased bytes 0xFF): for the QEMU demo board it is the 16 MiB flash
file. flash.hex holds only the written ranges, at CPU addresses, for a factory programmer.
The boot state marks bank A confirmed and preferred (bank B confirmed too when given), so the
first reset never rolls back. Everything is verified with the device crate before anything is
written. --bootloader is placed at flash offset 0 only when the layout leaves room before the
first region; the QEMU board does not (its shim is loaded separately with -kernel).

Exit codes: 0 written, 1 an image was refused, 2 usage/input error.")]
    Provision(provision::ProvisionArgs),
    /// Make a patch from the image a device runs to a new signed image (a delta update).
    #[command(after_help = "Examples:
  twinbank delta --from app-v1-a.bin --to app-v2-b.bin -o v1-to-v2.patch
  twinbank inspect v1-to-v2.patch
  twinbank serial --port /dev/ttyUSB0 upload app-v2-b.bin --delta-from images/   # does it all

The patch rebuilds NEW.img in the device's other bank from the image it runs (OLD.img, linked for
the running bank): the device checks that it runs OLD.img and everything it checks of a full
upload (signature included) before it erases anything, and verifies the rebuilt image like any
other. Before the patch is written it is applied here and compared with NEW.img byte for byte.
The format is in docs/delta.md.

Exit codes: 0 written, 2 an input is not a complete signed image, or the output cannot be written.")]
    Delta(delta::DeltaArgs),
    /// Talk to a device over its UART: status, info, upload, confirm, reject, rollback, reboot.
    #[command(after_help = "Examples:
  twinbank serial --port /dev/ttyUSB0 status
  twinbank serial --port /dev/pts/3 info --json          # the pty `cargo xtask qemu` prints
  twinbank serial --tcp 127.0.0.1:4321 upload app-b.bin --activate --reboot --wait-confirm
  twinbank serial --port /dev/ttyUSB0 upload app-b.bin --delta-from released/ --reboot
  twinbank serial --port /dev/ttyUSB0 confirm
  twinbank serial --port /dev/ttyUSB0 rollback --yes --reboot

Uploads go to the bank that is not running, resume where an interrupted upload stopped, and are
checked against the device (bank, ids, counter, size) before the first byte is sent. With
--delta-from, a patch from the image the device runs is sent instead when one of the given images
is that image (a full upload otherwise, saying why).

Exit codes: 0 done, 1 the device refused (image, state), 2 no device / link or input error.")]
    Serial(serial::SerialArgs),
}

pub use board_file::load_board;
pub use output::write_file;

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Cmd::Keygen { output, force } => {
            let key = keys::keygen(&output, force)?;
            let pk = twinbank::TrustedKey(key.verifying_key().to_bytes());
            eprintln!(
                "wrote Ed25519 private key to {} (mode 0600)\npublic key: {}\nkeyhash:    {}",
                output.display(),
                keys::hex(&pk.0),
                keys::hex(&pk.keyhash())
            );
            Ok(())
        }
        Cmd::Getpub {
            key,
            format,
            output,
        } => {
            let k = keys::read(&key)?.trusted();
            let out = keys::export(&k, format);
            match output {
                Some(p) => write_file(&p, &out),
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&out)
                        .map_err(|e| CliError::input(format!("stdout: {e}")))
                }
            }
        }
        Cmd::Sign(a) => sign::run(a),
        Cmd::Inspect(a) => inspect::inspect(a),
        Cmd::Delta(a) => delta::run(a),
        Cmd::Verify(a) => inspect::verify(a),
        Cmd::Provision(a) => provision::run(a),
        Cmd::Serial(a) => serial::run(a),
    }
}

/// The line `twinbank` prints for an error: `twinbank: refused: …` (exit 1) or
/// `twinbank: error: …` (exit 2). "refused" is said once: a message that already starts with
/// it (e.g. a device's answer) is not prefixed again.
pub fn error_line(e: &CliError) -> String {
    let kind = if e.code == 1 { "refused" } else { "error" };
    let msg = e.msg.strip_prefix("refused: ").unwrap_or(&e.msg);
    format!("twinbank: {kind}: {msg}")
}

/// The `twinbank` command line: parses the arguments, runs the command, prints the error.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap: help/version → 0, usage errors → 2.
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error_line(&e));
            ExitCode::from(e.code)
        }
    }
}
