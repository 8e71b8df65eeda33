//! Running QEMU (MPS2-AN385) with a persistent flash file, following docs/qemu recipe:
//! the flash is a `memory-backend-file` with `share=on` at 0x2100_0000, the shim is loaded with
//! `-kernel` (re-copied at every reset: a boot ROM), the UART goes over TCP to a listener of ours
//! (QEMU connects as the client), semihosting gives exit codes and the guest's arguments.
//!
//! Guest arguments (`-semihosting-config arg=…`, read once per QEMU process by the board crate):
//! `update=PATH` (the app installs this image), `halt` (the app ends QEMU when done),
//! `cut=N` (power fails during flash operation N, counted from the QEMU start).
//!
//! Also compiled into the QEMU tests (`tests/tests/qemu_support/mod.rs`): std only.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-arm";

/// One QEMU run.
#[derive(Debug, Clone)]
pub struct Run {
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
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// QEMU's exit status (`None`: killed by us or by a signal).
    pub status: Option<i32>,
    /// Everything the guest printed on UART0.
    pub output: String,
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
    /// A run of `shim` on `flash` with a timeout.
    pub fn new(shim: &Path, flash: &Path, timeout: Duration) -> Run {
        Run {
            shim: shim.to_path_buf(),
            flash: flash.to_path_buf(),
            args: Vec::new(),
            timeout,
            stop_on: None,
            icount: false,
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
        cmd.args([
            "-machine",
            "mps2-an385,memory-backend=fl",
            "-cpu",
            "cortex-m3",
        ])
        .arg("-object")
        .arg(format!(
            "memory-backend-file,id=fl,size=16M,mem-path={},share=on",
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
        let mut child = self
            .command(&format!("tcp:127.0.0.1:{port},nodelay=on"))
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
        let mut reader = None;
        let mut exited = false;
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let sink = output.clone();
                    reader = Some(std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        loop {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
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

/// A QEMU child and its UART output so far.
pub struct Running {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
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
            stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
            timed_out,
            stopped,
        }
    }
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
