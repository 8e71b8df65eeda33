//! `twinbank serial`: talk to a device over its UART (a serial port, the pseudo-terminal of
//! `cargo xtask qemu`, or a TCP socket). The protocol and its codec come from the device crate.

mod client;
mod link;

use crate::CliError;
use client::{Client, ClientError};
use link::Endpoint;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use twinbank::flash::SliceFlash;
use twinbank::protocol::message::{DeviceInfo, RemoteError, Request, Response};
use twinbank::update::Manifest;
use twinbank::{Bank, BankState, BootState, ImageError, UpdateError};

/// `twinbank serial …` options.
#[derive(clap::Args, Debug)]
pub struct SerialArgs {
    /// Serial device (e.g. /dev/ttyUSB0, or the /dev/pts/N `cargo xtask qemu` prints).
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "tcp",
        required_unless_present = "tcp"
    )]
    port: Option<String>,
    /// Baud rate for --port.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// A TCP endpoint carrying the UART (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Attempts per request before giving up.
    #[arg(long, default_value_t = 3)]
    tries: u32,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: SerialCmd,
}

#[derive(clap::Subcommand, Debug)]
enum SerialCmd {
    /// Boot state: per bank status, version, digest, attempts left, counter; preferred bank.
    Status,
    /// Protocol version, device ids, layout, running bank and version.
    Info,
    /// Upload a signed image into the inactive bank (resumes an interrupted upload).
    Upload {
        /// The signed image (BIN, as `twinbank sign` writes it).
        image: PathBuf,
        /// Verify and activate it after the upload (it runs on trial after a reboot).
        #[arg(long)]
        activate: bool,
        /// Reboot after activating (implies --activate).
        #[arg(long)]
        reboot: bool,
        /// After rebooting, wait until the device confirms the new image (or rolls it back).
        #[arg(long)]
        wait_confirm: bool,
        /// Seconds --wait-confirm waits.
        #[arg(long, default_value_t = 60.0)]
        wait_timeout: f64,
        /// Bytes per chunk (at most what the device accepts).
        #[arg(long, default_value_t = 1024)]
        chunk: usize,
    },
    /// Confirm the running trial image.
    Confirm,
    /// Reject the running trial image (rollback at the next reboot).
    Reject,
    /// Switch to the other bank's confirmed image at the next reboot (operator rollback).
    Rollback {
        /// Do not ask for confirmation on a terminal.
        #[arg(long, short)]
        yes: bool,
        /// Reboot right away.
        #[arg(long)]
        reboot: bool,
    },
    /// Reboot the device.
    Reboot,
}

fn link_error(e: ClientError) -> CliError {
    CliError::input(e.to_string())
}

fn remote(e: RemoteError) -> CliError {
    match e {
        RemoteError::Update(UpdateError::Image(i)) => {
            CliError::refused(format!("device refused the image: {i}"))
        }
        other => CliError::refused(format!("device refused: {other}")),
    }
}

fn unexpected(r: Response) -> CliError {
    match r {
        Response::Error(e) => remote(e),
        other => CliError::input(format!("unexpected answer from the device: {other:?}")),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn info(c: &mut Client) -> Result<DeviceInfo, CliError> {
    match c.call(&Request::Info).map_err(link_error)? {
        Response::Info(i) if i.protocol == twinbank::protocol::PROTOCOL_VERSION => Ok(i),
        Response::Info(i) => Err(CliError::input(format!(
            "device speaks protocol {}, this tool {}",
            i.protocol,
            twinbank::protocol::PROTOCOL_VERSION
        ))),
        r => Err(unexpected(r)),
    }
}

fn status(c: &mut Client) -> Result<Option<BootState>, CliError> {
    match c.call(&Request::Status).map_err(link_error)? {
        Response::Status(s) => Ok(s),
        r => Err(unexpected(r)),
    }
}

fn bank_json(b: &BankState) -> serde_json::Value {
    let mut v = serde_json::json!({ "status": b.status_name() });
    if let Some(i) = b.image() {
        v["version"] = i.version.to_string().into();
        v["digest"] = hex(&i.digest).into();
        v["security_counter"] = i.security_counter.into();
        v["size"] = i.size.into();
    }
    if let BankState::Pending { attempts_left, .. } = b {
        v["attempts_left"] = (*attempts_left).into();
    }
    v
}

fn print_status(s: &Option<BootState>, json: bool) {
    let Some(s) = s else {
        if json {
            println!("{}", serde_json::json!({ "provisioned": false }));
        } else {
            println!("device has no boot state (not provisioned)");
        }
        return;
    };
    if json {
        let v = serde_json::json!({
            "provisioned": true,
            "preferred": s.preferred.to_string(),
            "min_security_counter": s.min_security_counter,
            "banks": { "A": bank_json(s.bank(Bank::A)), "B": bank_json(s.bank(Bank::B)) },
        });
        println!("{v}");
        return;
    }
    println!("bank  status      version        counter  attempts  digest");
    for bank in Bank::ALL {
        let b = s.bank(bank);
        let (ver, cnt, dig) = match b.image() {
            Some(i) => (
                i.version.to_string(),
                i.security_counter.to_string(),
                hex(&i.digest[..8]),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let att = match b {
            BankState::Pending { attempts_left, .. } => attempts_left.to_string(),
            _ => "-".into(),
        };
        let mark = if s.preferred == bank { "*" } else { " " };
        println!(
            "{bank}{mark}    {:<11} {ver:<14} {cnt:<8} {att:<9} {dig}…",
            b.status_name()
        );
    }
    println!(
        "preferred: {} (*), minimum security counter: {}",
        s.preferred, s.min_security_counter
    );
}

/// Checks, before sending anything, that the device would take the image.
fn precheck(m: &Manifest, info: &DeviceInfo, state: &Option<BootState>) -> Result<Bank, CliError> {
    let target = info.running.other();
    let refuse =
        |e: ImageError| CliError::refused(format!("the device would refuse this image: {e}"));
    let addr = info.bank_addresses[target.index()];
    if !m.header.rom_fixed() {
        return Err(refuse(ImageError::NotBankBound));
    }
    if m.header.load_addr != addr {
        let other = info.bank_addresses[info.running.index()];
        let hint = if m.header.load_addr == other {
            format!(
                " (it is linked for bank {}, which is running; sign it for bank {target})",
                info.running
            )
        } else {
            String::new()
        };
        return Err(CliError::refused(format!(
            "the device would refuse this image: linked for {:#010x} but the inactive bank {target} is at {addr:#010x}{hint}",
            m.header.load_addr
        )));
    }
    if m.total_len > info.bank_size {
        return Err(refuse(ImageError::DoesNotFit {
            needed: m.total_len,
            capacity: info.bank_size,
        }));
    }
    if let Some(v) = info.vendor_id {
        if m.protected.vendor_id != Some(v) {
            return Err(refuse(if m.protected.vendor_id.is_none() {
                ImageError::MissingVendorId
            } else {
                ImageError::VendorIdMismatch
            }));
        }
    }
    if let Some(c) = info.class_id {
        if m.protected.class_id != Some(c) {
            return Err(refuse(if m.protected.class_id.is_none() {
                ImageError::MissingClassId
            } else {
                ImageError::ClassIdMismatch
            }));
        }
    }
    if let Some(s) = state {
        if m.protected.security_counter < s.min_security_counter {
            return Err(refuse(ImageError::SecurityCounterTooLow {
                image: m.protected.security_counter,
                minimum: s.min_security_counter,
            }));
        }
    }
    Ok(target)
}

struct Progress {
    total: u64,
    start: Instant,
    tty: bool,
    last_plain: u64,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last_plain: u64::MAX,
        }
    }

    fn show(&mut self, done: u64, resumed_from: u64) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = (done - resumed_from.min(done)) as f64 / secs;
        let eta = if rate > 0.0 {
            (self.total - done) as f64 / rate
        } else {
            0.0
        };
        let pct = done * 100 / self.total.max(1);
        if self.tty {
            let width = 30u64;
            let filled = (done * width / self.total.max(1)) as usize;
            eprint!(
                "\r[{}{}] {pct:3}% {done}/{} B  {:.1} KiB/s  ETA {eta:.0}s ",
                "#".repeat(filled),
                "-".repeat(width as usize - filled),
                self.total,
                rate / 1024.0
            );
            if done == self.total {
                eprintln!();
            }
        } else if pct / 10 != self.last_plain || done == self.total {
            self.last_plain = pct / 10;
            eprintln!(
                "upload: {pct}% ({done}/{} bytes, {:.1} KiB/s)",
                self.total,
                rate / 1024.0
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn upload(
    c: &mut Client,
    path: &PathBuf,
    activate: bool,
    reboot: bool,
    wait_confirm: bool,
    wait_timeout: f64,
    chunk: usize,
    json: bool,
) -> Result<(), CliError> {
    let image =
        std::fs::read(path).map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let m = Manifest::read(&mut SliceFlash(&image), image.len() as u32)
        .map_err(|e| CliError::input(format!("{}: not a signed image: {e}", path.display())))?;
    let image = &image[..m.total_len as usize];
    let info = info(c)?;
    let state = status(c)?;
    let target = precheck(&m, &info, &state).map_err(|e| e.context_file(path))?;
    let chunk = chunk.clamp(16, info.max_chunk as usize);
    let begin = Request::upload_begin(image)
        .map_err(|e| CliError::input(format!("{}: not a signed image: {e}", path.display())))?;
    let next = match c.call(&begin).map_err(link_error)? {
        Response::NextOffset(n) => n as usize,
        r => return Err(unexpected(r)),
    };
    let resumed = next;
    if resumed > 0 {
        eprintln!("upload: resuming at byte {resumed} of {}", image.len());
    }
    eprintln!(
        "upload: {} ({}, {} bytes) → bank {target}",
        path.display(),
        m.header.version,
        image.len()
    );
    let mut progress = Progress::new(image.len() as u64);
    let started = Instant::now();
    let sent_before = c.bytes_sent;
    transfer(c, &begin, image, chunk, next, resumed, &mut progress)?;
    let activate = activate || reboot || wait_confirm;
    let mut activated = None;
    if activate {
        let mut answer = c.call(&Request::UploadFinish).map_err(link_error)?;
        if resumed > 0 && resumed_over_other_bytes(&answer) {
            // The bytes already in the bank belonged to another image with the same header; the
            // device erased its first sector, so a new begin starts from zero.
            eprintln!("upload: the resumed bytes did not match this image; uploading it again from the start");
            let next = match c.call(&begin).map_err(link_error)? {
                Response::NextOffset(n) => n as usize,
                r => return Err(unexpected(r)),
            };
            transfer(
                c,
                &begin,
                image,
                chunk,
                next,
                next,
                &mut Progress::new(image.len() as u64),
            )?;
            answer = c.call(&Request::UploadFinish).map_err(link_error)?;
        }
        match answer {
            Response::Activated(v) => {
                eprintln!("upload: verified and activated {v} in bank {target} (runs on trial after reboot)");
                activated = Some(v);
            }
            r => return Err(unexpected(r).prefix(&path.display().to_string())),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let wire = c.bytes_sent - sent_before;
    let sent_payload = image.len() - resumed;
    let ratio = if wire > 0 {
        sent_payload as f64 / wire as f64
    } else {
        1.0
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bank": target.to_string(), "version": m.header.version.to_string(), "bytes": image.len(),
                "resumed_from": resumed, "wire_bytes": wire, "payload_ratio": ratio,
                "seconds": secs, "kib_per_s": sent_payload as f64 / 1024.0 / secs.max(1e-6),
                "activated": activated.is_some(),
            })
        );
    }
    if reboot || wait_confirm {
        do_reboot(c)?;
    }
    if wait_confirm {
        let deadline = Instant::now() + Duration::from_secs_f64(wait_timeout);
        std::thread::sleep(Duration::from_millis(300));
        loop {
            if Instant::now() > deadline {
                return Err(CliError::refused("the new image did not confirm in time"));
            }
            if let Ok(Response::Status(Some(s))) = c.call(&Request::Status) {
                match s.bank(target) {
                    BankState::Confirmed(i) if i.digest == m.digest => {
                        eprintln!("upload: bank {target} confirmed {}", i.version);
                        return Ok(());
                    }
                    BankState::Rejected(_) => {
                        return Err(CliError::refused(format!(
                            "the new image was rejected; the device rolled back to bank {}",
                            s.preferred
                        )));
                    }
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    Ok(())
}

/// True when `finish` failed because the bank content is not this image (hash or digest).
fn resumed_over_other_bytes(answer: &Response) -> bool {
    matches!(
        answer,
        Response::Error(RemoteError::Update(
            UpdateError::DigestMismatch | UpdateError::Image(ImageError::HashMismatch)
        ))
    )
}

/// Sends the image from `next` to the end; re-asks the device where to resume when it lost the
/// session (restart, power cut).
fn transfer(
    c: &mut Client,
    begin: &Request<'_>,
    image: &[u8],
    chunk: usize,
    mut next: usize,
    resumed: usize,
    progress: &mut Progress,
) -> Result<(), CliError> {
    while next < image.len() {
        let end = (next + chunk).min(image.len());
        let req = Request::UploadChunk {
            offset: next as u32,
            data: &image[next..end],
        };
        match c.call(&req) {
            Ok(Response::NextOffset(n)) => next = n as usize,
            Ok(Response::Error(RemoteError::Update(UpdateError::NoUpload)))
            | Ok(Response::Error(RemoteError::Update(UpdateError::OutOfOrder { .. }))) => {
                // The device restarted or lost the session: ask it where to resume.
                next = match c.call(begin).map_err(link_error)? {
                    Response::NextOffset(n) => n as usize,
                    r => return Err(unexpected(r)),
                };
                eprintln!("upload: device asked to resume at byte {next}");
            }
            Ok(r) => return Err(unexpected(r)),
            Err(e) => return Err(link_error(e)),
        }
        progress.show(next as u64, resumed as u64);
    }
    Ok(())
}

fn do_reboot(c: &mut Client) -> Result<(), CliError> {
    match c.call(&Request::Reboot).map_err(link_error)? {
        Response::Rebooting => {
            eprintln!("device: rebooting");
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

fn confirm_prompt(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

/// Runs `twinbank serial …`.
pub fn run(a: SerialArgs) -> Result<(), CliError> {
    let endpoint = match (&a.port, &a.tcp) {
        (Some(p), _) => Endpoint::Port {
            path: p.clone(),
            baud: a.baud,
        },
        (None, Some(t)) => Endpoint::Tcp(t.clone()),
        (None, None) => return Err(CliError::input("give --port PATH or --tcp HOST:PORT")),
    };
    let timeout = Duration::from_secs_f64(a.timeout.max(0.05));
    let mut c = Client::connect(endpoint, timeout, a.tries).map_err(link_error)?;
    match a.cmd {
        SerialCmd::Status => {
            let s = status(&mut c)?;
            print_status(&s, a.json);
            Ok(())
        }
        SerialCmd::Info => {
            let i = info(&mut c)?;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "protocol": i.protocol,
                        "vendor_id": i.vendor_id.map(|u| u.to_string()),
                        "class_id": i.class_id.map(|u| u.to_string()),
                        "bank_a": format!("{:#010x}", i.bank_addresses[0]),
                        "bank_b": format!("{:#010x}", i.bank_addresses[1]),
                        "bank_size": i.bank_size, "write_size": i.write_size, "erase_size": i.erase_size,
                        "running": i.running.to_string(),
                        "running_version": i.running_version.map(|v| v.to_string()),
                        "max_chunk": i.max_chunk,
                    })
                );
            } else {
                println!("protocol:  {}", i.protocol);
                println!(
                    "running:   bank {} {}",
                    i.running,
                    i.running_version
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "?".into())
                );
                println!(
                    "banks:     A at {:#010x}, B at {:#010x}, {} bytes each",
                    i.bank_addresses[0], i.bank_addresses[1], i.bank_size
                );
                println!(
                    "flash:     write {} B, erase {} B",
                    i.write_size, i.erase_size
                );
                println!(
                    "vendor id: {}",
                    i.vendor_id
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "-".into())
                );
                println!(
                    "class id:  {}",
                    i.class_id
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        SerialCmd::Upload {
            image,
            activate,
            reboot,
            wait_confirm,
            wait_timeout,
            chunk,
        } => upload(
            &mut c,
            &image,
            activate,
            reboot,
            wait_confirm,
            wait_timeout,
            chunk,
            a.json,
        ),
        SerialCmd::Confirm => match c.call(&Request::Confirm).map_err(link_error)? {
            Response::Done => {
                eprintln!("device: running image confirmed");
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        SerialCmd::Reject => match c.call(&Request::Reject).map_err(link_error)? {
            Response::Done => {
                eprintln!("device: running image rejected; the other bank boots after a reboot");
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        SerialCmd::Rollback { yes, reboot } => {
            let i = info(&mut c)?;
            let s = status(&mut c)?;
            let other = i.running.other();
            let what = s
                .as_ref()
                .map(|s| s.bank(other).to_string())
                .unwrap_or_else(|| "unknown".into());
            eprintln!(
                "rollback: from bank {} ({}) to bank {other} ({what})",
                i.running,
                i.running_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into())
            );
            if !yes
                && std::io::stdin().is_terminal()
                && !confirm_prompt("switch banks at the next reboot?")
            {
                return Err(CliError::input("rollback cancelled"));
            }
            match c.call(&Request::Rollback).map_err(link_error)? {
                Response::SwitchedTo(bank, v) => {
                    eprintln!("device: bank {bank} ({v}) boots after the next reboot");
                    if a.json {
                        println!(
                            "{}",
                            serde_json::json!({ "bank": bank.to_string(), "version": v.to_string() })
                        );
                    }
                }
                r => return Err(unexpected(r)),
            }
            if reboot {
                do_reboot(&mut c)?;
            }
            Ok(())
        }
        SerialCmd::Reboot => do_reboot(&mut c),
    }
}
