//! The `cachewarden` executable: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use cachewarden::cli::Cli;

/// A trace or an import of a fleet allocates millions of small names and rows: jemalloc
/// serves them faster than the system allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_process();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(cachewarden::ExitStatus::Internal.code());
        }
    };
    let status = runtime.block_on(cachewarden::run(cli));
    ExitCode::from(status.code())
}
