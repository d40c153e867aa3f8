//! `peerdex-server`: parses the arguments, starts the server, prints its
//! address, and serves until SIGINT or SIGTERM; or runs `check` /
//! `salvage` on a data directory and prints their report.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use std::path::Path;

use anyhow::Context;
use clap::Parser;
use peerdex_server::cli::{Args, Tool};
use peerdex_server::durable::recovery;
use peerdex_server::durable::JournalError;
use peerdex_server::durable::StoreError;
use peerdex_server::{shutdown, Server, ServerError};

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
    let result = match &args.command {
        Some(Tool::Check { data_dir }) => check(data_dir),
        Some(Tool::Salvage { data_dir }) => salvage(data_dir).map(|()| ExitCode::SUCCESS),
        None => run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("peerdex-server: {err:#}");
            if journal_damaged(&err) {
                let dir = match &args.command {
                    Some(Tool::Check { data_dir } | Tool::Salvage { data_dir }) => data_dir,
                    None => &args.data_dir,
                };
                eprintln!(
                    "peerdex-server: the journal was left as it is; `peerdex-server check --data-dir {0}` reports what is intact, `peerdex-server salvage --data-dir {0}` keeps what precedes the damage and lists what is lost",
                    dir.display()
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// True when `err` comes from a damaged journal segment (the library's
/// wrappers are transparent, so each level is looked at).
fn journal_damaged(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        let store = match e.downcast_ref::<ServerError>() {
            Some(ServerError::Store(store)) => Some(store),
            _ => e.downcast_ref::<StoreError>(),
        };
        matches!(
            store,
            Some(StoreError::Journal(JournalError::Damaged { .. }))
        ) || matches!(e.downcast_ref(), Some(JournalError::Damaged { .. }))
    })
}

/// `check`: prints the report; exit 1 when damage was found.
fn check(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let report = recovery::check(data_dir)
        .with_context(|| format!("cannot check data dir {}", data_dir.display()))?;
    print(&report)?;
    Ok(if report.damaged() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `salvage`: prints what was kept, moved and lost.
fn salvage(data_dir: &Path) -> anyhow::Result<()> {
    let report = recovery::salvage(data_dir)
        .with_context(|| format!("cannot salvage data dir {}", data_dir.display()))?;
    print(&report)
}

fn print(report: &impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{report}")
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = args.config().context("no port given")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
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
            .context("server stopped with an error")
    })
}
