//! `peerdex-server`: parses the arguments, starts the server, prints its
//! address, and serves until SIGINT or SIGTERM.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use peerdex_server::{cli::Args, shutdown, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = args.config();
    let server = Server::bind(config)
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
        .context("server stopped with an error")?;
    Ok(())
}
