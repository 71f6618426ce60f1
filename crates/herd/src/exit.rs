//! Exit codes: 0 success, 1 a runtime failure, 2 a config error.

use std::process::ExitCode;

use herd_config::ConfigErrors;

/// A runtime failure: herd not running, an operation refused, an I/O error.
pub const RUNTIME: u8 = 1;
/// The config file has errors; nothing was started.
pub const CONFIG: u8 = 2;

/// Prints every config error and returns the config exit code.
pub fn config_errors(errors: &ConfigErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    eprintln!(
        "herd: {} problem(s) in the config; nothing was started",
        errors.0.len()
    );
    ExitCode::from(CONFIG)
}
