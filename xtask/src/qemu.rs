//! Running QEMU (MPS2-AN385, or another [`Board`]) with a persistent flash file, following the
//! docs/qemu.md recipe: the flash is a `memory-backend-file` with `share=on` (the machine's
//! 16 MiB PSRAM: 0x2100_0000 on the AN385, 0x6000_0000 on the AN500), the shim is loaded with
//! `-kernel` (re-copied at every reset: a boot ROM), the UART goes over TCP to a listener of ours
//! (QEMU connects as the client), semihosting gives exit codes and the guest's arguments.
//!
//! Guest arguments (`-semihosting-config arg=…`, read once per QEMU process by the board crate):
//! `update=PATH` (the app installs this image), `halt` (the app ends QEMU when done),
//! `cut=N` (power fails during flash operation N, counted from the QEMU start),
//! `manual-confirm` (a trial image waits for the operator's confirm).
//!
//! Without `halt`, the demo app serves the serial protocol on its UART: [`Running::serve_tcp`]
//! relays it to TCP clients (`twinbank serial --tcp`), [`Running::serve_pty`] to a
//! pseudo-terminal (`twinbank serial --port /dev/pts/N`). QEMU always connects to our own
//! listener (no port race, no lost early output) and every byte is kept in the run's log.
//!
//! The QEMU tests use this module through the xtask library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-arm";

/// The environment variable that selects the QEMU board of the end-to-end tests and of a [`Run`]
/// by name (`cargo xtask test` sets it for the second board's pass). Unset: the MPS2-AN385.
pub const BOARD_ENV: &str = "TWINBANK_QEMU_BOARD";

/// Size of the machine RAM QEMU maps as the "flash" (`memory-backend-file`): both MPS2 machines
/// require exactly their 16 MiB.
pub const FLASH_BACKEND_SIZE: &str = "16M";

/// A QEMU machine the firmware runs on: the board description (flash geometry, layout, ids), the
/// QEMU machine and CPU, and the Rust target. The board crate (`qemu/board`) derives everything
/// else from the description at build time; the shim and the demo app are the same source.
#[derive(Debug, PartialEq, Eq)]
pub struct Board {
    /// Name given to `--board` and [`BOARD_ENV`].
    pub name: &'static str,
    /// Board description, relative to the workspace root.
    pub description: &'static str,
    /// `qemu-system-arm -machine`.
    pub machine: &'static str,
    /// `qemu-system-arm -cpu`.
    pub cpu: &'static str,
    /// Rust target of the firmware.
    pub target: &'static str,
    /// Where the machine maps its RAM, the `memory-backend` the "flash" is (QEMU 7.2, `info
    /// mtree`): the board description's `[flash] base` must be this.
    pub flash_base: u32,
}

/// The QEMU boards: the default (MPS2-AN385, Cortex-M3) first.
pub static BOARDS: [Board; 2] = [
    Board {
        name: "mps2-an385",
        description: "twinbank.toml",
        machine: "mps2-an385",
        cpu: "cortex-m3",
        target: "thumbv7m-none-eabi",
        flash_base: 0x2100_0000,
    },
    Board {
        name: "mps2-an500",
        description: "boards/mps2-an500.toml",
        machine: "mps2-an500",
        cpu: "cortex-m7",
        target: "thumbv7em-none-eabi",
        flash_base: 0x6000_0000,
    },
];

impl Board {
    /// The default board (MPS2-AN385): its firmware keeps the paths it always had.
    pub fn default_board() -> &'static Board {
        &BOARDS[0]
    }

    /// True for the default board.
    pub fn is_default(&self) -> bool {
        self.name == Board::default_board().name
    }

    /// The board called `name`.
    pub fn by_name(name: &str) -> Result<&'static Board, String> {
        BOARDS.iter().find(|b| b.name == name).ok_or_else(|| {
            let names: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
            format!("unknown QEMU board {name:?} (known: {})", names.join(", "))
        })
    }

    /// The board named by [`BOARD_ENV`] (unset or empty: the default board).
    pub fn from_env() -> Result<&'static Board, String> {
        match std::env::var(BOARD_ENV) {
            Ok(n) if !n.is_empty() => Board::by_name(&n).map_err(|e| format!("{BOARD_ENV}: {e}")),
            _ => Ok(Board::default_board()),
        }
    }

    /// Path of the board description.
    pub fn description_path(&self) -> PathBuf {
        crate::tools::root().join(self.description)
    }

    /// The board description, loaded; refused when its flash is not where the machine maps
    /// its memory-backend.
    pub fn load(&self) -> Result<twinbank::board::BoardDescription, String> {
        let p = self.description_path();
        let d = twinbank::board::BoardDescription::load(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if d.flash.base != self.flash_base {
            return Err(format!(
                "{}: [flash] base is {:#x}, but QEMU's {} maps the flash (its RAM) at {:#x}",
                p.display(),
                d.flash.base,
                self.machine,
                self.flash_base
            ));
        }
        Ok(d)
    }
}

/// One QEMU run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The QEMU machine.
    pub board: &'static Board,
    /// The shim ELF (`-kernel`).
    pub shim: PathBuf,
    /// The flash file (16 MiB).
    pub flash: PathBuf,
    /// Guest arguments.
    pub args: Vec<String>,
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Kill QEMU once the UART output contains this (for runs that do not end by themselves).
    pub stop_on: Option<String>,
    /// Deterministic instruction counting (`-icount shift=0,align=off,sleep=off`).
    pub icount: bool,
    /// QEMU ends when the thread that started it ends (Linux `PR_SET_PDEATHSIG`): a `cargo
    /// xtask qemu` that is interrupted or terminated, even killed, takes QEMU with it.
    pub die_with_parent: bool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// QEMU's exit status (`None`: killed by us or by a signal).
    pub status: Option<i32>,
    /// Everything the guest printed on UART0 (lossy UTF-8).
    pub output: String,
    /// The same, raw bytes (protocol frames intact; see [`device_text`]).
    pub raw: Vec<u8>,
    /// QEMU's stderr.
    pub stderr: String,
    /// Killed because of the timeout.
    pub timed_out: bool,
    /// Killed because `stop_on` appeared.
    pub stopped: bool,
}

impl Outcome {
    /// The UART lines.
    pub fn lines(&self) -> Vec<&str> {
        self.output.lines().collect()
    }

    /// The shim's boot lines (`twinbank: …`), bench lines excluded.
    pub fn boot_lines(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter(|l| l.starts_with("twinbank: ") && !l.starts_with("twinbank: bench"))
            .collect()
    }
}

impl Run {
    /// A run of `shim` on `flash` with a timeout, on the board [`BOARD_ENV`] names (the
    /// default board when it is unset or names no board: the tests check it first).
    pub fn new(shim: &Path, flash: &Path, timeout: Duration) -> Run {
        Run {
            board: Board::from_env().unwrap_or(Board::default_board()),
            shim: shim.to_path_buf(),
            flash: flash.to_path_buf(),
            args: Vec::new(),
            timeout,
            stop_on: None,
            icount: false,
            die_with_parent: false,
        }
    }

    /// Adds a guest argument.
    pub fn arg(mut self, a: impl Into<String>) -> Run {
        self.args.push(a.into());
        self
    }

    /// The QEMU command line; `serial` is the `-serial` backend.
    pub fn command(&self, serial: &str) -> Command {
        let mut cmd = Command::new(QEMU);
        let mut semi = String::from("enable=on,target=native");
        for a in &self.args {
            // QEMU option syntax: a comma inside a value is written twice.
            semi.push_str(",arg=");
            semi.push_str(&a.replace(',', ",,"));
        }
        cmd.arg("-machine")
            .arg(format!("{},memory-backend=fl", self.board.machine))
            .args(["-cpu", self.board.cpu])
            .arg("-object")
            .arg(format!(
                "memory-backend-file,id=fl,size={FLASH_BACKEND_SIZE},mem-path={},share=on",
                self.flash.display().to_string().replace(',', ",,")
            ))
            .args(["-display", "none", "-monitor", "none", "-nodefaults"])
            .args(["-semihosting-config", &semi])
            .args(["-serial", serial])
            .arg("-kernel")
            .arg(&self.shim);
        if self.icount {
            cmd.args(["-icount", "shift=0,align=off,sleep=off"]);
        }
        cmd
    }

    /// Starts QEMU with its UART connected to a listener of ours.
    pub fn spawn(&self) -> Result<Running, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let mut cmd = self.command(&format!("tcp:127.0.0.1:{port},nodelay=on"));
        #[cfg(target_os = "linux")]
        if self.die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the child between fork and exec and only makes one
            // async-signal-safe system call (prctl).
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
        let started = Instant::now();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut stderr_reader = None;
        if let Some(mut err) = child.stderr.take() {
            let sink = stderr.clone();
            stderr_reader = Some(std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf);
                sink.lock().unwrap().extend_from_slice(&buf);
            }));
        }
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink: Sink = Arc::new(Mutex::new(None));
        let mut uart = None;
        let mut reader = None;
        let mut exited = false;
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_nodelay(true);
                    uart = stream.try_clone().ok();
                    let log = output.clone();
                    let forward = sink.clone();
                    reader = Some(std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        loop {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if let Some(f) = forward.lock().unwrap().as_mut() {
                                        f(&buf[..n]);
                                    }
                                }
                            }
                        }
                    }));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // QEMU may have connected, written and exited between two polls: its
                    // connection is then still in the backlog, so look once more after the exit.
                    if exited {
                        break;
                    }
                    if let Ok(Some(_)) = child.try_wait() {
                        exited = true;
                        continue;
                    }
                    if started.elapsed() > self.timeout {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        }
        Ok(Running {
            child,
            output,
            sink,
            uart,
            collected: Arc::new(Mutex::new(false)),
            stderr,
            reader,
            stderr_reader,
            started,
            timeout: self.timeout,
            stop_on: self.stop_on.clone(),
        })
    }

    /// Runs QEMU to its end (exit, `stop_on`, or the timeout).
    pub fn run(&self) -> Result<Outcome, String> {
        let r = self.spawn()?;
        Ok(r.wait())
    }
}

/// Where the UART output goes besides the log (a relay's client).
type Sink = Arc<Mutex<Option<Box<dyn FnMut(&[u8]) + Send>>>>;

/// A QEMU child and its UART output so far.
pub struct Running {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    sink: Sink,
    uart: Option<TcpStream>,
    collected: Arc<Mutex<bool>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    started: Instant,
    timeout: Duration,
    stop_on: Option<String>,
}

impl Running {
    /// The UART output so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// The UART output so far, raw bytes (protocol frames included).
    pub fn output_bytes(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// The device's text lines so far (protocol frames left out).
    pub fn text(&self) -> String {
        device_text(&self.output.lock().unwrap())
    }

    /// Waits until the device's text contains `needle`; false after `timeout` or a QEMU exit.
    pub fn wait_for_text(&mut self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.text().contains(needle) {
                return true;
            }
            if Instant::now() > end || !self.alive() {
                return self.text().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills QEMU (SIGKILL) once `timeout` has passed since its start, unless the run was
    /// collected before (for runs that are driven from outside, e.g. by a relay's client).
    #[cfg(unix)]
    pub fn kill_after(&self, timeout: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let collected = self.collected.clone();
        let left = timeout.saturating_sub(self.started.elapsed());
        std::thread::spawn(move || {
            std::thread::sleep(left);
            // The child is reaped only after `collected` is set, so the pid is still ours.
            let c = collected.lock().unwrap();
            if !*c {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
    }

    /// True while QEMU runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Relays the UART to TCP clients: the host tool connects (`twinbank serial --tcp ADDR`), one
    /// client at a time (a new one replaces the old). Every byte the device sends stays in the
    /// log; while no client is connected it goes nowhere else, as on a real cable.
    pub fn serve_tcp(&self) -> Result<TcpRelay, String> {
        let uart = self
            .uart
            .as_ref()
            .ok_or("QEMU never connected its UART")?
            .try_clone()
            .map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let client: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        let sink = self.sink.clone();
        let current = client.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let _ = conn.set_nodelay(true);
                let (Ok(mut to_client), Ok(mut from_client), Ok(mut to_uart)) =
                    (conn.try_clone(), conn.try_clone(), uart.try_clone())
                else {
                    continue;
                };
                if let Some(old) = current.lock().unwrap().replace(conn) {
                    let _ = old.shutdown(std::net::Shutdown::Both);
                }
                *sink.lock().unwrap() = Some(Box::new(move |b: &[u8]| {
                    let _ = to_client.write_all(b);
                }));
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match from_client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to_uart.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        Ok(TcpRelay { addr, client })
    }

    /// Relays the UART to a pseudo-terminal (for `twinbank serial --port /dev/pts/N`), and calls
    /// `text` with each text line the device prints. Returns the terminal's path.
    #[cfg(unix)]
    pub fn serve_pty(
        &self,
        mut text: impl FnMut(&str) + Send + 'static,
    ) -> Result<PtyRelay, String> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let mut uart = self
            .uart
            .as_ref()
            .ok_or("QEMU never connected its UART")?
            .try_clone()
            .map_err(|e| e.to_string())?;
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
        let (master, slave) = (pty.master, pty.slave);
        // Raw mode on the terminal (no echo, no line editing, no CR/LF translation): the host
        // tool sets it too, but bytes may arrive before it opens the terminal. The slave stays
        // open here, so the master never reads EIO between two host tool runs.
        let mut t = tcgetattr(&slave).map_err(|e| format!("tcgetattr: {e}"))?;
        cfmakeraw(&mut t);
        tcsetattr(&slave, SetArg::TCSANOW, &t).map_err(|e| format!("tcsetattr: {e}"))?;
        let path = nix::unistd::ttyname(&slave).map_err(|e| format!("pty name: {e}"))?;
        let master = std::fs::File::from(master);
        let mut to_pty = master.try_clone().map_err(|e| e.to_string())?;
        // Writes to the terminal never block (see the sink below); reads block in the relay.
        set_nonblocking(&to_pty)?;
        let mut lines = TextLines::default();
        // The text printed before the relay started first, then the rest as it comes (the log
        // lock keeps the reader thread out meanwhile, so no byte is missed or repeated).
        let log = self.output.lock().unwrap();
        lines.push(&log, &mut text);
        *self.sink.lock().unwrap() = Some(Box::new(move |b: &[u8]| {
            // Non-blocking: when nobody reads the terminal and its buffer is full, bytes are
            // dropped (as on a cable with nobody listening) instead of stalling the device.
            let _ = to_pty.write(b);
            lines.push(b, &mut text);
        }));
        drop(log);
        let mut from_pty = master;
        let to_device = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = to_device.clone();
        std::thread::spawn(move || {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            let mut buf = [0u8; 4096];
            loop {
                match from_pty.read(&mut buf) {
                    Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                    Ok(n) => {
                        if uart.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let mut fds = [PollFd::new(from_pty.as_fd(), PollFlags::POLLIN)];
                        let _ = poll(&mut fds, PollTimeout::from(100u16));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(PtyRelay {
            path: path.display().to_string(),
            _slave: slave,
            to_device,
        })
    }

    /// The process id of QEMU.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL now (`kill -9`), then collect.
    pub fn kill9(mut self) -> Outcome {
        let _ = self.child.kill();
        self.finish(None, false, false)
    }

    /// Waits for the end: exit, `stop_on` seen (killed), or the timeout (killed).
    pub fn wait(mut self) -> Outcome {
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return self.finish(st.code(), false, false);
            }
            if let Some(s) = &self.stop_on {
                if self.output().contains(s.as_str()) {
                    let _ = self.child.kill();
                    return self.finish(None, false, true);
                }
            }
            if self.started.elapsed() > self.timeout {
                let _ = self.child.kill();
                return self.finish(None, true, false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self, status: Option<i32>, timed_out: bool, stopped: bool) -> Outcome {
        *self.collected.lock().unwrap() = true;
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
        Outcome {
            status,
            output: self.output(),
            raw: self.output_bytes(),
            stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
            timed_out,
            stopped,
        }
    }
}

/// Makes reads and writes on `file` return `WouldBlock` instead of blocking.
#[cfg(unix)]
fn set_nonblocking(file: &std::fs::File) -> Result<(), String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(file, FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(file, FcntlArg::F_SETFL(flags)).map_err(|e| format!("fcntl: {e}"))?;
    Ok(())
}

/// Creates (or overwrites) a flash file with `contents` (16 MiB).
pub fn write_flash(path: &Path, contents: &[u8]) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
}

/// True when `qemu-system-arm` can be started.
pub fn available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The TCP side of [`Running::serve_tcp`].
pub struct TcpRelay {
    /// Where the host tool connects (`--tcp ADDR`).
    pub addr: SocketAddr,
    client: Arc<Mutex<Option<TcpStream>>>,
}

impl TcpRelay {
    /// The address as `HOST:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Pulls the cable: closes the current client's connection.
    pub fn cut(&self) {
        if let Some(c) = self.client.lock().unwrap().take() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The pseudo-terminal of [`Running::serve_pty`] (kept open while this lives).
#[cfg(unix)]
pub struct PtyRelay {
    /// `/dev/pts/N`.
    pub path: String,
    _slave: std::os::fd::OwnedFd,
    to_device: Arc<std::sync::atomic::AtomicU64>,
}

#[cfg(unix)]
impl PtyRelay {
    /// Bytes the host side wrote to the device so far (for wire-efficiency figures).
    pub fn bytes_to_device(&self) -> u64 {
        self.to_device.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The device's text lines in a UART capture: protocol frames (the bytes between two 0x00
/// delimiters that decode as a response) and SMP console lines are left out, the rest is text.
/// The last segment (no delimiter yet) counts up to its last newline, when that part is
/// printable text (it may be the start of a frame still arriving).
pub fn device_text(bytes: &[u8]) -> String {
    let mut out = String::new();
    let bytes = &without_smp_lines(bytes)[..];
    let segs: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    for (i, seg) in segs.iter().enumerate() {
        let seg = if i + 1 == segs.len() {
            let end = seg.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let head = &seg[..end];
            if !printable(head) {
                continue;
            }
            head
        } else {
            seg
        };
        if seg.is_empty() || is_frame(seg) {
            continue;
        }
        out.push_str(&String::from_utf8_lossy(seg));
    }
    out
}

/// True for the bytes of an SMP console line before its newline: a line marker, then base64.
fn is_smp_line(seg: &[u8]) -> bool {
    matches!(seg, [0x06, 0x09, rest @ ..] | [0x04, 0x14, rest @ ..]
        if rest.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')))
}

/// `bytes` without the SMP console lines in it (they are responses, not text).
fn without_smp_lines(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if !(line.ends_with(b"\n") && is_smp_line(body)) {
            out.extend_from_slice(line);
        }
    }
    out
}

fn printable(b: &[u8]) -> bool {
    b.iter()
        .all(|&b| (0x20..0x7F).contains(&b) || matches!(b, b'\t' | b'\r' | b'\n'))
}

fn is_frame(seg: &[u8]) -> bool {
    use twinbank::protocol::{decode_frame, message::Response, Envelope};
    let mut f = seg.to_vec();
    decode_frame::<Envelope<Response>>(&mut f).is_ok()
}

/// Splits a live UART stream into the device's text lines, skipping protocol frames: a line is
/// reported at its newline while everything since the last delimiter is printable text; a
/// segment that turns out to be a frame is dropped at its delimiter.
#[derive(Default)]
pub struct TextLines {
    seg: Vec<u8>,
}

impl TextLines {
    /// Feeds bytes; calls `line` for each complete text line.
    pub fn push(&mut self, bytes: &[u8], line: &mut dyn FnMut(&str)) {
        for &b in bytes {
            match b {
                0 => {
                    if self.printable() && !is_frame(&self.seg) {
                        line(&String::from_utf8_lossy(&self.seg));
                    }
                    self.seg.clear();
                }
                b'\n' if self.printable() => {
                    let l = String::from_utf8_lossy(&self.seg).trim_end().to_string();
                    line(&l);
                    self.seg.clear();
                }
                // An SMP console line (0x06 0x09 / 0x04 0x14 + base64): not text.
                b'\n' if is_smp_line(&self.seg) => self.seg.clear(),
                _ => {
                    if self.seg.len() < 4096 {
                        self.seg.push(b);
                    }
                }
            }
        }
    }

    fn printable(&self) -> bool {
        !self.seg.is_empty() && printable(&self.seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_are_found_by_name_and_the_default_is_the_an385() {
        assert_eq!(Board::default_board().name, "mps2-an385");
        assert!(Board::default_board().is_default());
        let an500 = Board::by_name("mps2-an500").unwrap();
        assert!(!an500.is_default());
        assert_eq!(
            (an500.cpu, an500.target),
            ("cortex-m7", "thumbv7em-none-eabi")
        );
        let e = Board::by_name("mps2-an999").unwrap_err();
        assert!(e.contains("mps2-an385, mps2-an500"), "{e}");
    }

    #[test]
    fn every_board_description_loads_and_matches_its_machine() {
        for b in &BOARDS {
            let d = b.load().unwrap();
            assert_eq!(d.flash.base, b.flash_base, "{}", b.name);
            assert!(d.layout().is_ok(), "{}", b.name);
        }
        // The second board has another geometry than the default (the point of running it).
        let (a, b) = (BOARDS[0].load().unwrap(), BOARDS[1].load().unwrap());
        assert_eq!((b.flash.write_size, b.flash.erase_size), (16, Some(8192)));
        assert_ne!(
            (a.flash.write_size, a.flash.erase_size),
            (b.flash.write_size, b.flash.erase_size)
        );
    }

    #[test]
    fn the_command_line_names_the_machine_cpu_and_backend_size() {
        let mut r = Run::new(
            Path::new("shim.elf"),
            Path::new("f.bin"),
            Duration::from_secs(1),
        );
        r.board = Board::by_name("mps2-an500").unwrap();
        let args: Vec<String> = r
            .command("null")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |k: &str| {
            args.iter()
                .position(|a| a == k)
                .map(|i| args[i + 1].clone())
        };
        assert_eq!(at("-machine").unwrap(), "mps2-an500,memory-backend=fl");
        assert_eq!(at("-cpu").unwrap(), "cortex-m7");
        assert!(at("-object").unwrap().contains("size=16M"), "{args:?}");
    }
}
