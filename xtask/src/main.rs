//! `cargo xtask <command>`: the project's automation. See README.md.

mod firmware;
mod qemu;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        _ => {
            eprintln!("usage: cargo xtask <test|demo|qemu|powercut|firmware>");
            2
        }
    };
    std::process::exit(code);
}
