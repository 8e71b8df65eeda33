//! The README cannot drift from the code: its crate snippet is part of the `lifecycle` example
//! (which CI runs), and its factory block, extracted verbatim, runs in a fresh copy of the
//! repository and boots under QEMU (`cargo xtask qemu --flash … --shim …`), which then ends
//! QEMU when it is terminated.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use twinbank_tests::{host_bin, workspace};

/// The first fenced block of `lang` after the heading `heading` in README.md.
fn readme_block(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"))
        .1;
    let fence = format!("```{lang}\n");
    let body = section.split_once(&fence).expect("a code block").1;
    body.split_once("```").expect("closed block").0.to_string()
}

#[test]
fn readme_crate_snippet_is_part_of_the_lifecycle_example() {
    let snippet = readme_block("## Using the crate", "rust");
    let example =
        std::fs::read_to_string(workspace().join("device/examples/lifecycle.rs")).unwrap();
    let lines: Vec<&str> = example.lines().map(str::trim).collect();
    let mut checked = 0;
    for line in snippet.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            lines.contains(&line),
            "README line not in device/examples/lifecycle.rs: {line:?}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "the snippet is too short: {checked} lines");
}

/// Copies the tracked files of the repository to `dst`, writing only files whose contents
/// differ (so cargo's incremental builds in `dst/target` stay valid between runs).
fn fresh_copy(dst: &Path) {
    let ws = workspace();
    let out = Command::new("git")
        .args(["ls-files", "-co", "--exclude-standard"])
        .current_dir(&ws)
        .output()
        .expect("git");
    assert!(out.status.success(), "git ls-files failed");
    let files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    // Remove what a previous run of the block left (keys, images, flash files), keep target/.
    if let Ok(rd) = std::fs::read_dir(dst) {
        for e in rd.flatten() {
            if e.file_name() != "target" {
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
    for f in files {
        let (from, to) = (ws.join(&f), dst.join(&f));
        let Ok(bytes) = std::fs::read(&from) else {
            continue;
        };
        if std::fs::read(&to).ok().as_deref() != Some(&bytes[..]) {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(&to, &bytes).unwrap();
        }
    }
}

/// The shell commands of a block: continuation lines joined, comments dropped.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        let line = line.split(" # ").next().unwrap_or("").trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(line);
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_string());
            }
            cur.clear();
        }
    }
    out
}

/// The pids of QEMU processes started in directory `dir`.
fn qemus_in(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let in_dir = std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == dir);
        if cmd.starts_with(b"qemu-system-arm") && in_dir {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn readme_factory_block_boots() {
    let block = readme_block("## Factory flow", "sh");
    let cmds = commands(&block);
    let (last, setup) = cmds.split_last().expect("commands");
    assert!(
        last.starts_with("cargo xtask qemu --flash flash.bin --shim "),
        "{last}"
    );
    let dir: PathBuf = workspace().join("target/readme-test/clone");
    std::fs::create_dir_all(&dir).unwrap();
    fresh_copy(&dir);
    let bin_dir = host_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let shell = |cmd: &str| {
        let mut c = Command::new("bash");
        c.args(["-e", "-c", cmd])
            .current_dir(&dir)
            .env("PATH", &path)
            .env("PWD", &dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("TWINBANK_BOARD");
        c
    };
    for cmd in setup {
        let out = shell(cmd).output().unwrap();
        assert!(
            out.status.success(),
            "README factory command failed: {cmd}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The last command runs until it is stopped: read its output until the boot line.
    let mut child = shell(last)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut seen = Vec::new();
    let booted = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l.contains("device| twinbank: boot A 1.0.0+0 normal") => break true,
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => break false,
        }
    };
    let dir = dir.canonicalize().unwrap();
    let running = qemus_in(&dir);
    // Terminate `cargo xtask qemu` (cargo runs xtask in its place): QEMU must end with it.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let gone = Instant::now() + Duration::from_secs(10);
    while !qemus_in(&dir).is_empty() && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = qemus_in(&dir);
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        booted,
        "no boot line from `{last}`; its output:\n{}",
        seen.join("\n")
    );
    assert!(!running.is_empty(), "no QEMU process was seen running");
    assert!(
        left.is_empty(),
        "QEMU {left:?} kept running after `cargo xtask qemu` was terminated"
    );
}
