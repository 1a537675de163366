//! The `xfer` binary: parse the command line, run it, print any error once as
//! `xfer: <chain>` on stderr, and exit with the code its kind maps to.

use std::process::ExitCode;

use xfer::cli::Cli;
use xfer::{error, report};

fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    match xfer::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::line(&format!("xfer: {err:#}"));
            ExitCode::from(error::exit_code(&err))
        }
    }
}
