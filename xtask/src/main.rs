//! `cargo xtask <command>`: the project's automation. See README.md.
//!
//! - `test`: every test (installs or checks the prerequisites first);
//! - `demo`: the QEMU demo story (the project's main job);
//! - `qemu [--flash FILE]`: a provisioned demo device left running for a person;
//! - `powercut [--quick] [...]`: the power-cut matrix (release build);
//! - `walk [--seconds N] [--seed S] [...]`: the randomized device-life walk (release build);
//! - `firmware`: build the shim and demo app variants into target/firmware/.

mod demo;
mod firmware;
mod qemu;
mod test;
mod tools;
mod walk;

/// `cargo xtask powercut ARGS`: the harness in release mode.
pub fn powercut(args: &[String]) -> Result<(), String> {
    let mut c =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(tools::root())
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "twinbank-powercut",
            "--",
        ])
        .args(args);
    tools::run(&mut c)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run_all(rest),
        Some("powercut") => powercut(rest),
        Some("walk") => walk::walk(rest),
        Some("demo") => demo::demo(rest),
        Some("qemu") => demo::qemu_cmd(rest),
        Some("firmware") => demo::firmware_cmd(rest),
        _ => {
            eprintln!("usage: cargo xtask <test|demo|qemu|powercut|walk|firmware>");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e}");
        std::process::exit(1);
    }
}
