//! The `xfer` binary: parse the command line, run it, print any error once as
//! `xfer: <chain>` on stderr, and exit with the code its kind maps to.

use std::process::ExitCode;

use xfer::cli::Cli;
use xfer::ui::report;
use xfer::{commands, error};

fn main() -> ExitCode {
    let invocation = Cli::parse_checked();
    match commands::run(invocation) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::line(&format!("xfer: {err:#}"));
            ExitCode::from(error::exit_code(&err))
        }
    }
}
