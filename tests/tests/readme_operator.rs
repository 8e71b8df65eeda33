//! The README's operator session cannot drift from the tool: every `twinbank serial` command of
//! its "Operator session" block runs against a demo device under QEMU, and every output line the
//! README shows must appear, in order, in what the tool printed (digests, byte counts,
//! throughput, the pseudo-terminal name and the progress bar normalised).

mod qemu_support;
use qemu_support::*;
use twinbank::Bank;
use twinbank_tests::workspace;

/// The first ```text block after the heading "## Operator session".
fn operator_block() -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme
        .split_once("## Operator session")
        .expect("README has an operator session")
        .1;
    let body = section.split_once("```text\n").expect("a text block").1;
    body.split_once("```").expect("closed block").0.to_string()
}

/// One README command and the lines it shows after it.
struct Step {
    args: Vec<String>,
    shown: Vec<String>,
}

/// The `$ twinbank serial --port PTY ARGS` steps (other `$` lines, e.g. `cargo xtask qemu`, and
/// the device's own lines are the setup the test does itself).
fn steps(block: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_tool = false;
    for line in block.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            let cmd = cmd.split("  #").next().unwrap_or("").trim();
            in_tool = cmd.starts_with("twinbank serial ");
            if in_tool {
                let words: Vec<String> = cmd.split_whitespace().map(String::from).collect();
                // twinbank serial --port PTY ARGS…
                assert_eq!(words.get(2).map(String::as_str), Some("--port"), "{cmd}");
                out.push(Step {
                    args: words[4..].to_vec(),
                    shown: Vec::new(),
                });
            }
        } else if in_tool {
            if let Some(s) = out.last_mut() {
                s.shown.push(line.to_string());
            }
        }
    }
    out
}

/// What may differ between the README and a run: hex digests, numbers of three digits or more
/// (sizes, rates), the progress bar and progress lines.
fn normalise(line: &str) -> Option<String> {
    let t = line.trim_end();
    if t.starts_with("[#") || (t.starts_with("upload: ") && t.contains("% (")) {
        return None;
    }
    let mut out = String::new();
    let mut word = String::new();
    let flush = |w: &mut String, out: &mut String| {
        let is_hex = w.len() >= 16 && w.chars().all(|c| c.is_ascii_hexdigit());
        let is_num = w.len() >= 3 && w.chars().all(|c| c.is_ascii_digit());
        if is_hex {
            out.push('H');
        } else if is_num {
            out.push('N');
        } else {
            out.push_str(w);
        }
        w.clear();
    };
    for c in t.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    Some(out)
}

#[test]
fn readme_operator_session_runs() {
    let block = operator_block();
    let steps = steps(&block);
    assert!(steps.len() >= 4, "the operator session shows its commands");
    let f = fw();
    let dev = Device::factory("readme/operator");
    // The README uploads the demo's v2 (bank B, counter 1: the rollback to v1 stays allowed).
    let v2 = f.image_with("app-v2-B", Bank::B, "2.0.0", 1, &f.trusted);
    let v2_path = dev.dir.join("v2.img");
    std::fs::write(&v2_path, &v2).unwrap();
    let mut d = dev.serve(&[]);
    for step in &steps {
        let args: Vec<String> = step
            .args
            .iter()
            .map(|a| {
                if a.ends_with("v2.img") {
                    v2_path.display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mark = d.mark();
        let t = d.ok(&argv);
        if argv.contains(&"--reboot") {
            assert!(
                d.wait_since(mark, "app: serving the serial protocol"),
                "{}",
                d.text()
            );
        }
        let got: Vec<String> = format!("{}{}", t.stdout, t.stderr)
            .lines()
            .filter_map(normalise)
            .map(|l| l.replace(&v2_path.display().to_string(), "target/demo/v2.img"))
            .collect();
        let mut at = 0;
        for want in step.shown.iter().filter_map(|l| normalise(l)) {
            match got[at..].iter().position(|g| *g == want) {
                Some(i) => at += i + 1,
                None => panic!(
                    "README shows {want:?} after `twinbank serial {}`; the tool printed:\n{}",
                    args.join(" "),
                    got.join("\n")
                ),
            }
        }
    }
}
