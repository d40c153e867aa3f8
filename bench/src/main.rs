//! `peerdex-bench`: the load generator and null-server ceiling behind
//! docs/PERFORMANCE.md.
//!
//! - `null-server`: the stateless ceiling (see [`null_server`]).
//! - `load`: populate, then a timed, fully checked mixed workload.
//! - `compare`: alternated null/ours runs, medians and the ratio.
//! - `logins`: argon2 logins per second, and what a login storm costs
//!   other clients (see [`logins`]).
//! - `presence`: how long a killed session client stays listed, and what
//!   probing classic peers costs (see [`presence`]).
//! - `transfer`: verified downloads against a plain TCP copy (see
//!   [`transfer`]).
//!
//! The process exits 1 when any operation failed, 2 when the benchmark
//! itself could not run: a benchmark that hides errors measures nothing.

mod cli;
mod client;
mod compare;
mod fetch_worker;
mod lanes;
mod logins;
mod mix;
mod model;
mod null_journal;
mod null_server;
mod null_session;
mod part_progress;
mod peer_procs;
mod plain_copy;
mod populate;
mod presence;
mod probe_bound;
mod proc_stats;
mod report;
mod search;
mod session;
mod stats;
mod transfer;
mod transfer_report;
mod workload;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command, LoadArgs, WorkloadArgs};
use workload::LoadConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("FAILED: some operations failed (see ERROR lines above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a subcommand; `Ok(false)` means it ran but saw failed operations.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::NullServer(args) => {
            null_server::run(args.bind, args.port, args.durable.as_deref()).await?;
            Ok(true)
        }
        Command::Load(args) => load(args).await,
        Command::Compare(args) => {
            // The address is filled in per server.
            let base = load_config(&args.workload, SocketAddr::from(([127, 0, 0, 1], 0)))?;
            compare::run(args, base).await
        }
        Command::Transfer(args) => transfer::run(args).await,
        Command::FetchWorker(args) => fetch_worker::run(args).await,
        Command::Logins(args) => logins::run(args).await,
        Command::Presence(args) => presence::run(args).await,
        Command::SessionHolder(args) => presence::hold(args).await,
        Command::ProbeBound(args) => probe_bound::run(args),
    }
}

/// The first address of `host`.
pub async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

async fn load(args: LoadArgs) -> anyhow::Result<bool> {
    let addr = resolve(&args.host, args.port).await?;
    if !addr.ip().is_loopback() {
        eprintln!("warning: {addr} is not loopback; the benchmark is calibrated for 127.0.0.1");
    }
    let mut config = load_config(&args.workload, addr)?;
    config.server_pid = args.server_pid;
    config.verify_content = args.verify_content;
    let populated = if args.skip_populate {
        None
    } else {
        let p = populate::populate(
            addr,
            config.users,
            args.workload.populate_concurrency,
            config.op_timeout,
        )
        .await?;
        report::print_populate(&p);
        Some(p)
    };
    if args.workload.session {
        let lanes = open_lanes(&args.workload, addr, config.op_timeout).await?;
        config.clients = lanes.layout.workers();
        config.sessions = Some(Arc::new(lanes));
    }
    let report = workload::run(config).await?;
    report::print_load("load", &report);
    if args.workload.json {
        println!("{}", report::load_json(&report, populated.as_ref()));
    }
    Ok(report.errors == 0)
}

/// The least time one session's set-up may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens the authenticated sessions of `w`'s layout at `addr` and says how
/// long it took (one argon2 hash on the server per session).
pub async fn open_lanes(
    w: &WorkloadArgs,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<lanes::Lanes> {
    let layout = lanes::Layout::new(w.clients, w.pipeline, w.pipeline_mode, w.users)?;
    // Every SET_PASSWORD waits for the server's bounded hashing pool behind
    // the others in flight: far longer than an operation may take.
    let timeout = timeout.max(SETUP_TIMEOUT);
    let lanes = lanes::open(addr, layout, true, w.populate_concurrency, timeout).await?;
    println!(
        "session set-up at {addr}: {} sessions logged in and authenticated (SET_PASSWORD) in {:.2} s \
         ({:.1} ms per session); {}",
        layout.sessions(),
        lanes.setup.as_secs_f64(),
        lanes.setup.as_secs_f64() * 1e3 / layout.sessions() as f64,
        layout.describe()
    );
    Ok(lanes)
}

fn load_config(w: &WorkloadArgs, addr: SocketAddr) -> anyhow::Result<LoadConfig> {
    if w.session {
        // Checked here, before a populate that can take minutes.
        lanes::Layout::new(w.clients, w.pipeline, w.pipeline_mode, w.users)?;
    }
    // Checked before anything starts: each loop owns the users i with
    // i % C == loop, so every loop needs at least one.
    anyhow::ensure!(
        w.clients > 0 && w.users >= w.clients,
        "need --users >= --clients >= 1 (got {} users, {} clients)",
        w.users,
        w.clients
    );
    Ok(LoadConfig {
        addr,
        users: w.users,
        clients: w.clients,
        warmup: secs(w.warmup, "--warmup")?,
        duration: secs(w.duration, "--duration")?,
        mix: w.mix,
        seed: w.seed,
        op_timeout: secs(w.op_timeout, "--op-timeout")?,
        verify_content: false,
        protocol_reader: w.protocol_reader,
        server_pid: None,
        sessions: None,
    })
}

/// Seconds from the command line; rejects negative and non-finite values
/// instead of panicking on them.
pub fn secs(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value} is not a duration"))
}
