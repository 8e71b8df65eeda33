//! The `twinbank` binary: see the library crate `twinbank_host` for everything it does.

fn main() -> std::process::ExitCode {
    twinbank_host::main()
}
