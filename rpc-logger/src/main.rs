//! `peerdex-logger -p PORT [--bind ADDR]`: prints the directory server's
//! operation records, one line each, to stdout.

use std::io::Write;
use std::net::IpAddr;

use anyhow::Context;
use clap::Parser;

/// The peerdex RPC logger.
#[derive(Debug, Parser)]
#[command(version = env!("PEERDEX_VERSION"), about)]
struct Args {
    /// TCP port to listen on (0 picks a free one; the start-up line shows it).
    #[arg(short, long)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let logger = peerdex_logger::serve((args.bind, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "logger listening on {}", logger.local_addr())?;
        out.flush()?;
    }
    logger.join().await.context("the accept loop failed")?;
    Ok(())
}
