//! `peerdex-server`: parses the arguments, starts the server, prints its
//! address, and serves until SIGINT or SIGTERM.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use peerdex_server::{cli::Args, shutdown, Server};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("peerdex-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind(args.config())
            .await
            .with_context(|| format!("cannot start with data dir {}", args.data_dir.display()))?;
        let addr = server
            .local_addr()
            .context("cannot read the bound address")?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "s> init server {}:{}", addr.ip(), addr.port())
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
        drop(stdout);
        tracing::info!(%addr, data_dir = %args.data_dir.display(), "listening");
        server
            .run(shutdown::signal())
            .await
            .context("server stopped with an error")
    })
}
