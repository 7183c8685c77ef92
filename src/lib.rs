//! cachewarden: provenance and incident response for BuildKit build caches.
//!
//! The binary is a thin shell around [`run`]; everything else lives in the library so the
//! integration tests and benchmarks drive the same code.

pub mod actor;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod graph;
pub mod ingest;
pub mod model;
pub mod parse;
pub mod plan;
pub mod printer;
pub mod purge;
pub mod remote;
pub mod report;
pub mod serve;
pub mod store;
pub mod suggest;
pub mod sweep;
pub mod time;
pub mod wire;

#[cfg(test)]
mod layout_tests;

pub use error::ExitStatus;

/// Runs one parsed command line and returns the process exit status.
///
/// This is the only place that turns errors into text: the full cause chain goes to stderr on
/// one line per cause, and the error's kind picks the exit status.
pub async fn run(cli: cli::Cli) -> ExitStatus {
    let printer = printer::Printer::new(&cli.global);
    match commands::dispatch(cli, printer).await {
        Ok(status) => status,
        Err(err) => {
            if error::is_broken_pipe(&err) {
                return ExitStatus::Success;
            }
            printer.error(&err);
            error::exit_status_of(&err)
        }
    }
}
