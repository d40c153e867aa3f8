//! `peerdex`: the client shell. All logic lives in the library.
//!
//! Exit status: 0 when every command succeeded, 1 when any command printed
//! a FAIL or refusal line, 2 for a usage or start-up error.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use peerdex_client::Status;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // clap exits with status 2 on a usage error by itself.
    let args = peerdex_client::cli::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("PEERDEX_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("peerdex: cannot start the runtime: {err}");
            return ExitCode::from(START_UP_STATUS);
        }
    };
    let result = runtime.block_on(peerdex_client::run(args));
    // Do not wait for a blocked stdin read or a peer still downloading.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(Status::AllOk) => ExitCode::SUCCESS,
        Ok(Status::SomeFailed) => ExitCode::from(1),
        Err(err) => {
            eprintln!("peerdex: {err:#}");
            ExitCode::from(START_UP_STATUS)
        }
    }
}

/// Status when the shell could not start (or its terminal failed): the
/// same as clap's for a usage error.
const START_UP_STATUS: u8 = 2;
