//! `peerdex-bench presence`: what keeping the user list true costs.
//!
//! - Kill: a session client in a child process of its own logs in, sends
//!   CONNECT and waits; it is killed with SIGKILL (its kernel closes the
//!   connection, the process says nothing), and LIST_USERS is polled every
//!   10 ms until the user is gone. The time from the kill to the last
//!   listing that still shows it is how long a dead session peer stays
//!   listed; the median of several runs is reported.
//! - Probe: U users classically CONNECTed at addresses that answer (a few
//!   local listeners that accept and close), the server probing them at a
//!   short `--probe-interval`; the server's CPU over a window per probe
//!   (probes counted as accepts on the listeners, so the rate is measured,
//!   not assumed) gives the cost of one probe, extrapolated to the default
//!   interval: at 100,000 users every 80 s, 1,250 probes/s times that cost.
//!
//! The kill runs go first, on a directory still small, because every poll
//! is a whole LIST_USERS.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use peerdex_protocol::listen::listen;
use peerdex_protocol::listing::ListKind;
use peerdex_protocol::{OpKind, Operation, Outcome, Request, Secret};
use rand::RngExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::Instant;

use crate::client::{call, call_list, read_whole_reply, ListVisitor};
use crate::proc_stats;
use crate::session::Session;
use crate::stats::median;

#[derive(Debug, Args)]
pub struct PresenceArgs {
    /// Server host (loopback: the probed listeners are local).
    #[arg(short = 's', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(short, long)]
    pub port: u16,
    /// The server's pid, for its CPU while probing (required for that part).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Kill runs (0 skips that part).
    #[arg(long, default_value_t = 5)]
    pub kill_runs: usize,
    /// Seconds a killed client may stay listed before the run fails.
    #[arg(long, default_value_t = 60.0)]
    pub kill_timeout: f64,
    /// Users connected at answering addresses for the probe part (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// Local listeners the users are connected at (127.0.0.1, 127.0.0.2,
    /// ..., free ports).
    #[arg(long, default_value_t = 16)]
    pub listeners: usize,
    /// The server's --probe-interval, seconds: the expected rate U / interval
    /// is printed beside the measured one.
    #[arg(long)]
    pub probe_interval: Option<f64>,
    /// The interval the cost is extrapolated to, seconds (the default one).
    #[arg(long, default_value_t = 80.0)]
    pub default_interval: f64,
    /// The directory size the cost is extrapolated to.
    #[arg(long, default_value_t = 100_000)]
    pub extrapolate_users: usize,
    /// Seconds after the populate before the window starts.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Measured window of the probe part, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub window: f64,
    /// Concurrent connections while populating.
    #[arg(long, default_value_t = 256)]
    pub populate_concurrency: usize,
    /// Per-operation timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub op_timeout: f64,
}

/// The hidden `session-holder` subcommand: the child process of a kill run.
#[derive(Debug, Args)]
pub struct HolderArgs {
    #[arg(short = 's', long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(short, long)]
    pub port: u16,
    /// The (registered, unprotected) user to log in and CONNECT as.
    #[arg(long)]
    pub user: String,
    #[arg(long, default_value_t = 10.0)]
    pub op_timeout: f64,
}

/// What the holder prints once its user is connected.
const READY: &str = "holder ready";

/// Where the holder's user says it listens (nobody does: a session holds
/// the user, so the server does not probe it).
const HOLDER_PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 9);

/// Runs the parts asked for; `Ok(false)` when a run failed.
pub async fn run(args: PresenceArgs) -> anyhow::Result<bool> {
    let addr = crate::resolve(&args.host, args.port).await?;
    let timeout = crate::secs(args.op_timeout, "--op-timeout")?;
    let mut ok = true;
    if args.kill_runs > 0 {
        ok &= kill_runs(&args, addr, timeout).await?;
    }
    if args.users > 0 {
        probe(&args, addr, timeout).await?;
    }
    Ok(ok)
}

/// The kill part: every run's time, then the median.
async fn kill_runs(
    args: &PresenceArgs,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let limit = crate::secs(args.kill_timeout, "--kill-timeout")?;
    let tag = format!("{:06x}", rand::rng().random_range(0..0x100_0000u32));
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut times = Vec::new();
    let mut failed = 0;
    for run in 0..args.kill_runs {
        let user = format!("bench-holder{tag}-{run}");
        match kill_run(&exe, args, addr, &user, timeout, limit).await {
            Ok(gone) => {
                println!(
                    "kill run {}: {user} gone from LIST_USERS {:.1} ms after SIGKILL",
                    run + 1,
                    gone.as_secs_f64() * 1e3
                );
                times.push(gone.as_secs_f64() * 1e3);
            }
            Err(e) => {
                failed += 1;
                eprintln!("ERROR: kill run {}: {e:#}", run + 1);
            }
        }
    }
    let min = times.iter().copied().reduce(f64::min).unwrap_or(f64::NAN);
    let max = times.iter().copied().reduce(f64::max).unwrap_or(f64::NAN);
    println!(
        "kill: SIGKILL of a session client to its disappearance from LIST_USERS (polled every 10 ms): \
         median {:.1} ms over {} runs (min {min:.1}, max {max:.1}); {failed} failed",
        median(&times).unwrap_or(f64::NAN),
        times.len()
    );
    Ok(failed == 0)
}

/// One kill run: how long after SIGKILL `user` was last listed.
async fn kill_run(
    exe: &std::path::Path,
    args: &PresenceArgs,
    addr: SocketAddr,
    user: &str,
    timeout: Duration,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let register = encode(user, Operation::Register)?;
    let reply = call(addr, &register, OpKind::Register, timeout).await?;
    anyhow::ensure!(
        reply.outcome() == Outcome::Ok,
        "REGISTER {user}: {:?}",
        reply.outcome()
    );
    let mut child = Command::new(exe)
        .args(["session-holder", "--host", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string(), "--user", user])
        .args(["--op-timeout", &args.op_timeout.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the session holder")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(timeout * 3, async {
        while let Some(line) = lines.next_line().await? {
            if line.trim() == READY {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    match ready {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => bail!("the holder exited before it was ready"),
        Ok(Err(e)) => bail!("reading the holder's output: {e}"),
        Err(_) => bail!("the holder was not ready within {:?}", timeout * 3),
    }
    anyhow::ensure!(
        listed(addr, user, timeout).await?,
        "{user} is not listed after its CONNECT"
    );
    child.start_kill().context("killing the holder")?;
    let killed = Instant::now();
    let _ = child.wait().await;
    loop {
        let asked = Instant::now();
        if !listed(addr, user, timeout).await? {
            // Gone at some time between the last listing that showed it and
            // this one: this one's start is the bound reported.
            return Ok(asked.duration_since(killed));
        }
        if asked.duration_since(killed) > limit {
            bail!("{user} still listed {limit:?} after SIGKILL");
        }
        tokio::time::sleep_until(asked + Duration::from_millis(10)).await;
    }
}

/// Whether LIST_USERS shows `user`.
async fn listed(addr: SocketAddr, user: &str, timeout: Duration) -> anyhow::Result<bool> {
    let request = encode(user, Operation::ListUsers)?;
    let mut find = Find {
        name: user,
        found: false,
    };
    let outcome = call_list(addr, &request, ListKind::Users, timeout, &mut find).await?;
    match outcome {
        Outcome::Ok => Ok(find.found),
        // The user asks for itself: once disconnected it may not list.
        Outcome::UserNotConnected => Ok(false),
        other => bail!("LIST_USERS answered {other:?}"),
    }
}

/// Looks for one name in a LIST_USERS listing.
struct Find<'a> {
    name: &'a str,
    found: bool,
}

impl ListVisitor for Find<'_> {
    fn entry(&mut self, fields: &[&str]) {
        if fields.first() == Some(&self.name) {
            self.found = true;
        }
    }
}

fn encode(user: &str, operation: Operation) -> anyhow::Result<bytes::BytesMut> {
    Ok(Request {
        datetime: None,
        user: Ok(user.to_string()),
        operation,
    }
    .encode(&peerdex_protocol::datetime::now())?)
}

/// The child of a kill run: logs in, CONNECTs through the session, says
/// so, and then only keeps the session alive until it is killed.
pub async fn hold(args: HolderArgs) -> anyhow::Result<bool> {
    let addr = crate::resolve(&args.host, args.port).await?;
    let timeout = crate::secs(args.op_timeout, "--op-timeout")?;
    let session = Session::open(addr, &args.user, &Secret::default(), timeout).await?;
    let peer = SocketAddr::from(HOLDER_PEER);
    let connect = encode(&args.user, crate::model::connect_at(peer))?.freeze();
    let body = tokio::time::timeout(timeout, session.call(connect))
        .await
        .context("no CONNECT reply")??;
    let reply = read_whole_reply(&body[..], OpKind::Connect).await?;
    anyhow::ensure!(
        reply.outcome() == Outcome::Ok,
        "CONNECT answered {:?}",
        reply.outcome()
    );
    println!("{READY}");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        if let Some(why) = session.ended() {
            bail!("the session ended: {why}");
        }
    }
}

/// The probe part.
async fn probe(args: &PresenceArgs, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let pid = args
        .server_pid
        .context("the probe part needs --server-pid (or --users 0 to skip it)")?;
    anyhow::ensure!(args.listeners > 0, "--listeners must be at least 1");
    let accepts = Arc::new(AtomicU64::new(0));
    let mut peers = Vec::with_capacity(args.listeners);
    for i in 0..args.listeners {
        let listener = listen(listener_addr(i))?;
        peers.push(listener.local_addr()?);
        tokio::spawn(answer_probes(listener, accepts.clone()));
    }
    let p = crate::populate::populate_at_peers(
        addr,
        args.users,
        args.populate_concurrency,
        timeout,
        Arc::new(peers),
    )
    .await?;
    println!("presence populate: {}", crate::report::populate_line(&p));
    tokio::time::sleep(crate::secs(args.settle, "--settle")?).await;
    let window = crate::secs(args.window, "--window")?;
    let cpu0 = proc_stats::sample(pid).context("reading the server's /proc")?;
    let accepts0 = accepts.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1 = proc_stats::sample(pid).context("reading the server's /proc")?;
    let probes = accepts.load(Ordering::Relaxed) - accepts0;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_secs =
        cpu1.cpu_ticks.saturating_sub(cpu0.cpu_ticks) as f64 / proc_stats::clock_ticks() as f64;
    let rate = probes as f64 / secs;
    let expected = match args.probe_interval {
        Some(interval) if interval > 0.0 => format!(
            " (expected {:.0}/s: {} users / {interval} s)",
            args.users as f64 / interval,
            args.users
        ),
        _ => String::new(),
    };
    println!(
        "probe: {} users at {} listeners; {probes} probes in {secs:.1} s = {rate:.0} probes/s{expected}; \
         server CPU {:.1}% of one core",
        args.users,
        args.listeners,
        cpu_secs * 100.0 / secs
    );
    if probes == 0 {
        println!("probe: no probe reached the listeners (is --probe-interval 0, or the window shorter than it?)");
        return Ok(());
    }
    let per_probe_us = cpu_secs * 1e6 / probes as f64;
    let default_rate = args.extrapolate_users as f64 / args.default_interval;
    println!(
        "probe: {per_probe_us:.1} us of server CPU per probe (everything the server did in the window, \
         divided by the probes); at {} users every {} s = {default_rate:.0} probes/s: {:.2}% of one core",
        args.extrapolate_users,
        args.default_interval,
        default_rate * per_probe_us / 1e4
    );
    Ok(())
}

/// Where listener `i` listens: each on an address of its own (127.0.0.1,
/// 127.0.0.2, ...), a free port. The server's probes come from ephemeral
/// ports; every destination address has a port space of its own, so at
/// thousands of probes per second the sockets left in TIME_WAIT do not
/// exhaust it.
fn listener_addr(i: usize) -> SocketAddr {
    let host = (i % 254) as u8 + 1;
    SocketAddr::from(([127, 0, 0, host], 0))
}

/// Accepts and closes at once, as a classic peer with nothing to serve
/// reads a probe; counts every accept.
async fn answer_probes(listener: TcpListener, accepts: Arc<AtomicU64>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                accepts.fetch_add(1, Ordering::Relaxed);
                drop(stream);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_get_loopback_addresses_of_their_own() {
        assert_eq!(listener_addr(0), SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(listener_addr(15), SocketAddr::from(([127, 0, 0, 16], 0)));
        assert_eq!(listener_addr(254), listener_addr(0));
    }

    #[test]
    fn find_sees_only_the_exact_name() {
        let mut find = Find {
            name: "bench-holder1",
            found: false,
        };
        find.entry(&["bench-holder10", "127.0.0.1", "9"]);
        assert!(!find.found);
        find.entry(&["bench-holder1", "127.0.0.1", "9"]);
        assert!(find.found);
    }
}
