//! The `xfer` binary. Everything it does lives in the library (`src/dispatch.rs`
//! and below), whose one public entry is `xfer::main`.

fn main() -> std::process::ExitCode {
    xfer::main()
}
