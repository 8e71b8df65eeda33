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
use twinbank::delta::DeltaError;
use twinbank::image::{check_manifest, VerifyParams};
use twinbank::protocol::message::{DeviceInfo, RemoteError, Request, Response};
use twinbank::protocol::FrameError;
use twinbank::{Bank, BankState, BootState, DeviceIds, ImageError, Manifest, UpdateError};

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
        /// Send a patch from the image the device runs instead of the whole image: FILE is that
        /// image, or DIR holds earlier images (the one whose digest the device reports is
        /// used). Falls back to a full upload, saying why, when no local image matches, when
        /// the patch would not be smaller, or when the device does not apply patches.
        #[arg(long, value_name = "DIR|FILE")]
        delta_from: Option<PathBuf>,
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
    /// Cancel an update that was activated but has not booted yet (the running image stays
    /// preferred), or an interrupted upload.
    Cancel,
    /// Reboot the device.
    Reboot,
}

fn link_error(e: ClientError) -> CliError {
    CliError::input(e.to_string())
}

/// A refusal from the device. The error line says "refused" once (see `error_line`), so the
/// device's own wording is kept without a second "refused".
fn remote(e: RemoteError) -> CliError {
    match e {
        RemoteError::Update(UpdateError::Image(i)) => {
            CliError::refused(format!("the device does not take the image: {i}"))
        }
        other => {
            let msg = other.to_string();
            let msg = msg.strip_prefix("refused: ").unwrap_or(&msg).to_string();
            CliError::refused(format!("device: {msg}"))
        }
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

fn print_status(s: &Option<BootState>, running: Bank, recovery: bool, json: bool) {
    if recovery && !json {
        println!(
            "device is in serial recovery (the bootloader answers; no application runs): \
             uploads go to bank {}",
            running.other()
        );
    }
    let Some(s) = s else {
        if json {
            println!(
                "{}",
                serde_json::json!({ "provisioned": false, "recovery": recovery })
            );
        } else {
            println!("device has no boot state (not provisioned)");
        }
        return;
    };
    if json {
        let v = serde_json::json!({
            "provisioned": true,
            "recovery": recovery,
            "running": running.to_string(),
            "preferred": s.preferred.to_string(),
            "min_security_counter": s.min_security_counter,
            "banks": { "A": bank_json(s.bank(Bank::A)), "B": bank_json(s.bank(Bank::B)) },
        });
        println!("{v}");
        return;
    }
    println!("bank  running  status      version        counter  attempts  digest");
    for bank in Bank::ALL {
        let b = s.bank(bank);
        let (ver, cnt, dig) = match b.image() {
            Some(i) => (
                i.version.to_string(),
                i.security_counter.to_string(),
                format!("{}…", hex(&i.digest[..8])),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let att = match b {
            BankState::Pending { attempts_left, .. } => attempts_left.to_string(),
            _ => "-".into(),
        };
        let mark = if s.preferred == bank { "*" } else { " " };
        let run = match (running == bank, recovery) {
            (true, false) => "yes",
            (true, true) => "kept",
            (false, _) => "-",
        };
        println!(
            "{bank}{mark}    {run:<8} {:<11} {ver:<14} {cnt:<8} {att:<9} {dig}",
            b.status_name()
        );
    }
    println!(
        "running: {running}, preferred: {} (*), minimum security counter: {}",
        s.preferred, s.min_security_counter
    );
}

/// Checks, before sending anything, that the device would take the image: the device crate's
/// own manifest check ([`check_manifest`]: flags, size, bank binding, ids, counter) with what the
/// device reported about itself. Returns the bank the image goes to.
fn precheck(m: &Manifest, info: &DeviceInfo, state: &Option<BootState>) -> Result<Bank, CliError> {
    let target = info.running.other();
    let params = VerifyParams {
        offset: 0,
        capacity: info.bank_size,
        bank_address: info.bank_addresses[target.index()],
        keys: &[],
        ids: DeviceIds {
            vendor: info.vendor_id,
            class: info.class_id,
        },
        min_security_counter: state.as_ref().map_or(0, |s| s.min_security_counter),
    };
    let fits = if m.total_len > info.bank_size {
        Err(ImageError::DoesNotFit {
            needed: m.total_len,
            capacity: info.bank_size,
        })
    } else {
        Ok(())
    };
    fits.and_then(|()| check_manifest(&m.header, &m.protected, &params))
        .map_err(|e| {
            let hint = match e {
                ImageError::WrongBank { linked_for, .. }
                    if linked_for == info.bank_addresses[info.running.index()] =>
                {
                    format!(
                        " (it is linked for bank {}, which is running; sign it for bank {target})",
                        info.running
                    )
                }
                ImageError::WrongBank { .. } => format!(" (the inactive bank is {target})"),
                _ => String::new(),
            };
            CliError::refused(format!("the device would not take this image: {e}{hint}"))
        })?;
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

/// What `upload` was asked to do.
struct UploadOptions {
    activate: bool,
    reboot: bool,
    wait_confirm: bool,
    wait_timeout: f64,
    chunk: usize,
    json: bool,
    delta_from: Option<PathBuf>,
}

/// An image read from a file and checked against the device.
struct Staged {
    bytes: Vec<u8>,
    manifest: Manifest,
    target: Bank,
}

/// Reads the image and checks it against the device before anything is sent.
fn stage(c: &mut Client, path: &std::path::Path) -> Result<Staged, CliError> {
    let mut bytes =
        std::fs::read(path).map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let manifest = Manifest::from_image(&bytes)
        .map_err(|e| CliError::input(format!("{}: not a signed image: {e}", path.display())))?;
    bytes.truncate(manifest.total_len as usize);
    let info = info(c)?;
    let state = status(c)?;
    let target = precheck(&manifest, &info, &state).map_err(|e| e.context_file(path))?;
    Ok(Staged {
        bytes,
        manifest,
        target,
    })
}

/// Sends `UploadBegin`; the device answers where to start (0, or where an upload stopped).
fn begin(c: &mut Client, begin: &Request<'_>) -> Result<usize, CliError> {
    match c.call(begin).map_err(link_error)? {
        Response::NextOffset(n) => Ok(n as usize),
        r => Err(unexpected(r)),
    }
}

/// Verifies and activates the uploaded image; starts over once when resumed bytes turn out to
/// belong to another image with the same header.
fn activate(
    c: &mut Client,
    up: &Staged,
    begin_req: &Request<'_>,
    chunk: usize,
    resumed: usize,
    path: &std::path::Path,
) -> Result<twinbank::Version, CliError> {
    let mut answer = c.call(&Request::UploadFinish).map_err(link_error)?;
    if resumed > 0 && resumed_over_other_bytes(&answer) {
        // The device recorded the bank empty again, so a new begin starts from zero.
        eprintln!(
            "upload: the resumed bytes did not match this image; uploading it again from the start"
        );
        let next = begin(c, begin_req)?;
        let mut progress = Progress::new(up.bytes.len() as u64);
        transfer(c, begin_req, &up.bytes, chunk, next, next, &mut progress)?;
        answer = c.call(&Request::UploadFinish).map_err(link_error)?;
    }
    match answer {
        Response::Activated(v) => {
            eprintln!(
                "upload: verified and activated {v} in bank {} (runs on trial after reboot)",
                up.target
            );
            Ok(v)
        }
        r => Err(unexpected(r).prefix(&path.display().to_string())),
    }
}

/// After a reboot: waits until the new image is confirmed (Ok) or rolled back (refused).
fn wait_confirm(c: &mut Client, up: &Staged, timeout: f64) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    std::thread::sleep(Duration::from_millis(300));
    loop {
        if Instant::now() > deadline {
            return Err(CliError::refused("the new image did not confirm in time"));
        }
        if let Ok(Response::Status(Some(s))) = c.call(&Request::Status) {
            match s.bank(up.target) {
                BankState::Confirmed(i) if i.digest == up.manifest.digest => {
                    eprintln!("upload: bank {} confirmed {}", up.target, i.version);
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

/// How an upload went: the bytes that were sent (image or patch body), from where.
struct Sent {
    version: Option<twinbank::Version>,
    resumed: usize,
    payload: usize,
    delta: Option<serde_json::Value>,
}

/// `upload`: stage, then a patch (`--delta-from`) or the whole image, then activate / reboot /
/// wait as asked.
fn upload(c: &mut Client, path: &std::path::Path, o: &UploadOptions) -> Result<(), CliError> {
    let up = stage(c, path)?;
    let info_chunk = info(c)?.max_chunk as usize;
    let chunk = o.chunk.clamp(16, info_chunk);
    let started = Instant::now();
    let sent_before = c.bytes_sent;
    let mut sent = None;
    if let Some(from) = &o.delta_from {
        match delta_plan(c, &up, from)? {
            Ok(plan) => sent = upload_delta(c, &up, &plan, chunk, o, path)?,
            Err(why) => eprintln!("upload: full upload: {why}"),
        }
    }
    let sent = match sent {
        Some(s) => s,
        None => upload_full(c, &up, chunk, o, path)?,
    };
    if o.json {
        let secs = started.elapsed().as_secs_f64();
        let wire = c.bytes_sent - sent_before;
        let ratio = if wire > 0 {
            sent.payload as f64 / wire as f64
        } else {
            1.0
        };
        println!(
            "{}",
            serde_json::json!({
                "bank": up.target.to_string(), "version": up.manifest.header.version.to_string(),
                "bytes": up.bytes.len(), "resumed_from": sent.resumed, "wire_bytes": wire,
                "payload_ratio": ratio, "seconds": secs,
                "kib_per_s": sent.payload as f64 / 1024.0 / secs.max(1e-6),
                "activated": sent.version.is_some(),
                "delta": sent.delta,
            })
        );
    }
    if o.reboot || o.wait_confirm {
        do_reboot(c)?;
    }
    if o.wait_confirm {
        wait_confirm(c, &up, o.wait_timeout)?;
    }
    Ok(())
}

/// The whole image: begin, transfer, activate when asked.
fn upload_full(
    c: &mut Client,
    up: &Staged,
    chunk: usize,
    o: &UploadOptions,
    path: &std::path::Path,
) -> Result<Sent, CliError> {
    let begin_req = Request::upload_begin(&up.bytes)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let next = begin(c, &begin_req)?;
    let resumed = next;
    if resumed > 0 {
        eprintln!("upload: resuming at byte {resumed} of {}", up.bytes.len());
    }
    eprintln!(
        "upload: {} ({}, {} bytes) → bank {}",
        path.display(),
        up.manifest.header.version,
        up.bytes.len(),
        up.target
    );
    let mut progress = Progress::new(up.bytes.len() as u64);
    transfer(
        c,
        &begin_req,
        &up.bytes,
        chunk,
        next,
        resumed,
        &mut progress,
    )?;
    let version = if o.activate || o.reboot || o.wait_confirm {
        Some(activate(c, up, &begin_req, chunk, resumed, path)?)
    } else {
        None
    };
    Ok(Sent {
        version,
        resumed,
        payload: up.bytes.len() - resumed,
        delta: None,
    })
}

/// A patch ready to send: from which local image, and its bytes.
struct DeltaPlan {
    base_path: PathBuf,
    base_version: twinbank::Version,
    patch: Vec<u8>,
}

/// The patch from the image the device runs to `up`, or why there is none (`Ok(Err(why))`:
/// the caller falls back to a full upload).
fn delta_plan(
    c: &mut Client,
    up: &Staged,
    from: &std::path::Path,
) -> Result<Result<DeltaPlan, String>, CliError> {
    let i = info(c)?;
    let state = status(c)?;
    let running = state.as_ref().map(|s| *s.bank(i.running));
    let digest = match running {
        Some(BankState::Confirmed(id))
        | Some(BankState::Rejected(id))
        | Some(BankState::Pending { image: id, .. }) => id.digest,
        _ => {
            return Ok(Err(format!(
                "the device does not report the image it runs (bank {} is {})",
                i.running,
                running.map_or("unknown".to_string(), |b| b.to_string())
            )))
        }
    };
    let short = hex(&digest[..8]);
    let candidates: Vec<PathBuf> = if from.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(from)
            .map_err(|e| CliError::input(format!("{}: {e}", from.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![from.to_path_buf()]
    };
    let base = candidates.iter().find_map(|p| {
        crate::delta::read_signed(p)
            .ok()
            .filter(|s| s.manifest.digest == digest)
            .map(|s| (p.clone(), s))
    });
    let Some((base_path, base)) = base else {
        return Ok(Err(if from.is_dir() {
            format!(
                "no image in {} is the one the device runs (digest {short}…)",
                from.display()
            )
        } else {
            format!(
                "{} is not the image the device runs (digest {short}…)",
                from.display()
            )
        }));
    };
    let target = crate::delta::Signed {
        bytes: up.bytes.clone(),
        manifest: up.manifest.clone(),
    };
    let patch = crate::delta::patch(&base, &target)?;
    if patch.len() >= up.bytes.len() {
        return Ok(Err(format!(
            "the patch from {} ({} bytes) would not be smaller than the image ({} bytes)",
            base_path.display(),
            patch.len(),
            up.bytes.len()
        )));
    }
    Ok(Ok(DeltaPlan {
        base_path,
        base_version: base.manifest.header.version,
        patch,
    }))
}

/// Sends the patch; `None` when the device does not apply patches (the caller uploads the
/// whole image).
fn upload_delta(
    c: &mut Client,
    up: &Staged,
    plan: &DeltaPlan,
    chunk: usize,
    o: &UploadOptions,
    path: &std::path::Path,
) -> Result<Option<Sent>, CliError> {
    let begin_req =
        Request::delta_begin(&plan.patch).map_err(|e| CliError::input(e.to_string()))?;
    let body = twinbank::delta::PatchFile::parse(&plan.patch)
        .map_err(|e| CliError::input(e.to_string()))?
        .body;
    let next = match c.call(&begin_req).map_err(link_error)? {
        Response::NextOffset(n) => n as usize,
        Response::Error(RemoteError::DeltaUnsupported)
        | Response::Error(RemoteError::Frame(FrameError::BadMessage)) => {
            eprintln!("upload: full upload: the device does not apply patches");
            return Ok(None);
        }
        r => return Err(unexpected(r).prefix(&path.display().to_string())),
    };
    if next > 0 {
        eprintln!(
            "upload: resuming the patch at byte {next} of {}",
            body.len()
        );
    }
    eprintln!(
        "upload: {} ({}) as a patch from {} ({}): {} bytes, {:.2} % of {} → bank {}",
        path.display(),
        up.manifest.header.version,
        plan.base_path.display(),
        plan.base_version,
        plan.patch.len(),
        crate::delta::percent(plan.patch.len(), up.bytes.len()),
        up.bytes.len(),
        up.target
    );
    let mut progress = Progress::new(body.len() as u64);
    transfer_delta(c, &begin_req, body, chunk, next, &mut progress)?;
    let version = if o.activate || o.reboot || o.wait_confirm {
        match c.call(&Request::DeltaFinish).map_err(link_error)? {
            Response::Activated(v) => {
                eprintln!(
                    "upload: verified and activated {v} in bank {} (runs on trial after reboot)",
                    up.target
                );
                Some(v)
            }
            r => return Err(unexpected(r).prefix(&path.display().to_string())),
        }
    } else {
        None
    };
    Ok(Some(Sent {
        version,
        resumed: next,
        payload: body.len() - next,
        delta: Some(serde_json::json!({
            "base": plan.base_path.display().to_string(),
            "base_version": plan.base_version.to_string(),
            "patch_bytes": plan.patch.len(),
            "body_bytes": body.len(),
        })),
    }))
}

/// Sends the patch body from `next` to the end; begins again when the device lost the patch
/// (restart, power cut: it regenerates the bytes already in the bank without programming them)
/// or when its bank held bytes of an earlier attempt that differ (it then starts afresh).
fn transfer_delta(
    c: &mut Client,
    begin: &Request<'_>,
    body: &[u8],
    chunk: usize,
    mut next: usize,
    progress: &mut Progress,
) -> Result<(), CliError> {
    let mut restarted = false;
    while next < body.len() {
        let req = Request::delta_chunk(body, next as u32, chunk)
            .ok_or_else(|| CliError::input(format!("the device asked for offset {next}")))?;
        let again = match c.call(&req).map_err(link_error)? {
            Response::NextOffset(n) => {
                next = n as usize;
                false
            }
            Response::Error(RemoteError::Delta(
                DeltaError::NoPatch | DeltaError::OutOfOrder { .. },
            ))
            | Response::Error(RemoteError::Update(
                UpdateError::NoUpload | UpdateError::OutOfOrder { .. },
            )) => true,
            Response::Error(RemoteError::Update(UpdateError::ContentMismatch { .. }))
                if !restarted =>
            {
                restarted = true;
                eprintln!(
                    "upload: the bank held other bytes of an earlier attempt; the device starts \
                     afresh"
                );
                true
            }
            r => return Err(unexpected(r)),
        };
        if again {
            next = match c.call(begin).map_err(link_error)? {
                Response::NextOffset(n) => n as usize,
                r => return Err(unexpected(r)),
            };
            eprintln!("upload: device asked to resume the patch at byte {next}");
        }
        progress.show(next as u64, 0);
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
        let req = Request::upload_chunk(image, next as u32, chunk)
            .ok_or_else(|| CliError::input(format!("the device asked for offset {next}")))?;
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
            let i = info(&mut c)?;
            let s = status(&mut c)?;
            print_status(&s, i.running, i.recovery, a.json);
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
                        "recovery": i.recovery,
                    })
                );
            } else {
                println!("protocol:  {}", i.protocol);
                if i.recovery {
                    println!("mode:      serial recovery in the bootloader (no application runs)");
                }
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
            delta_from,
        } => upload(
            &mut c,
            &image,
            &UploadOptions {
                activate,
                reboot,
                wait_confirm,
                wait_timeout,
                chunk,
                json: a.json,
                delta_from,
            },
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
        SerialCmd::Rollback { yes, reboot } => rollback(&mut c, yes, reboot, a.json),
        SerialCmd::Cancel => match c.call(&Request::Cancel).map_err(link_error)? {
            Response::Done => {
                eprintln!("device: cancelled; the running image stays preferred");
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        SerialCmd::Reboot => do_reboot(&mut c),
    }
}

/// Why the device could not roll back to `other`, judged from its state before anything is
/// sent; `None` when it can.
fn no_rollback(s: &BootState, other: Bank) -> Option<String> {
    match s.bank(other) {
        BankState::Empty => Some(format!("nothing to roll back to: bank {other} is empty")),
        BankState::Rejected(i) => Some(format!(
            "nothing to roll back to: bank {other} holds the rejected {}",
            i.version
        )),
        BankState::Pending { image, .. } => Some(format!(
            "nothing to roll back to: bank {other} holds {} on trial, not a confirmed image",
            image.version
        )),
        BankState::Confirmed(i) if i.security_counter < s.min_security_counter => Some(format!(
            "nothing to roll back to: bank {other} holds {} with security counter {}, below the \
             device's minimum {} (raised when a newer image was confirmed)",
            i.version, i.security_counter, s.min_security_counter
        )),
        BankState::Receiving(r) => Some(format!(
            "nothing to roll back to: bank {other} is receiving {} (an interrupted upload)",
            r.image.version
        )),
        BankState::Confirmed(_) => None,
    }
}

/// `rollback`: refused on the host when the other bank holds nothing to boot; otherwise says
/// what it switches to, asks on a terminal, and sends the request.
fn rollback(c: &mut Client, yes: bool, reboot: bool, json: bool) -> Result<(), CliError> {
    let i = info(c)?;
    let s = status(c)?.ok_or_else(|| remote(RemoteError::Update(UpdateError::NotProvisioned)))?;
    let other = i.running.other();
    if let Some(why) = no_rollback(&s, other) {
        return Err(CliError::refused(why));
    }
    eprintln!(
        "rollback: from bank {} ({}) to bank {other} ({})",
        i.running,
        i.running_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into()),
        s.bank(other)
    );
    if !yes && std::io::stdin().is_terminal() && !confirm_prompt("switch banks at the next reboot?")
    {
        return Err(CliError::input("rollback cancelled"));
    }
    match c.call(&Request::Rollback).map_err(link_error)? {
        Response::SwitchedTo(bank, v) => {
            eprintln!("device: bank {bank} ({v}) boots after the next reboot");
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "bank": bank.to_string(), "version": v.to_string() })
                );
            }
        }
        r => return Err(unexpected(r)),
    }
    if reboot {
        do_reboot(c)?;
    }
    Ok(())
}
