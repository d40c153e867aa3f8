//! `probe-bound`: what one presence probe costs on this machine whatever
//! the server that makes it: a blocking TCP connect to a loopback listener
//! and a close, in a loop, with nothing else in the probing thread.
//!
//! On loopback the kernel runs the listener's half of each handshake in the
//! connecting thread, so this thread's CPU per probe is the floor that the
//! directory's prober (which pays the same) is compared with; over a real
//! network the peer's half runs on the peer's machine.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use anyhow::Context;

use crate::proc_stats;

/// Name of the probing thread, found again in /proc.
const PROBER: &str = "probe-bound";

#[derive(Debug, clap::Args)]
pub struct ProbeBoundArgs {
    /// Probes to make.
    #[arg(long, default_value_t = 50_000)]
    pub probes: u32,
    /// Users whose cost to extrapolate to, probed once per `--interval`.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Seconds between two probes of one user (the server's default).
    #[arg(long, default_value_t = 80.0)]
    pub interval: f64,
}

pub fn run(args: ProbeBoundArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.probes > 0, "--probes must be at least 1");
    anyhow::ensure!(args.interval > 0.0, "--interval must be positive");
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the listener")?;
    let addr = listener.local_addr()?;
    thread::Builder::new()
        .name("probe-listener".into())
        .spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        })?;
    let probes = args.probes;
    let prober = thread::Builder::new()
        .name(PROBER.into())
        .spawn(move || probe_loop(addr, probes))?;
    let (ticks, elapsed) = prober
        .join()
        .map_err(|_| anyhow::anyhow!("the probing thread panicked"))??;
    let per_probe_us = ticks as f64 / proc_stats::clock_ticks() as f64 / f64::from(probes) * 1e6;
    let rate = args.users as f64 / args.interval;
    println!(
        "probe-bound: {probes} blocking connect+close to 127.0.0.1 in {:.2} s: {per_probe_us:.1} us of the probing thread's CPU per probe",
        elapsed.as_secs_f64()
    );
    println!(
        "probe-bound: {} users every {} s = {rate:.0} probes/s: {:.2}% of one core for the probes alone",
        args.users,
        args.interval,
        rate * per_probe_us / 1e4
    );
    Ok(true)
}

/// Probes `addr` `probes` times; returns the thread's CPU ticks and the
/// wall time.
fn probe_loop(addr: SocketAddr, probes: u32) -> anyhow::Result<(u64, std::time::Duration)> {
    let before = own_ticks()?;
    let started = Instant::now();
    for _ in 0..probes {
        drop(TcpStream::connect(addr).context("probing the listener")?);
    }
    let elapsed = started.elapsed();
    Ok((own_ticks()? - before, elapsed))
}

/// The probing thread's CPU ticks so far, from /proc.
fn own_ticks() -> anyhow::Result<u64> {
    let sample = proc_stats::sample(std::process::id()).context("reading /proc")?;
    sample
        .thread_ticks
        .values()
        .find(|(name, _)| name == PROBER)
        .map(|(_, ticks)| *ticks)
        .context("the probing thread is not in /proc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_a_listener_and_refuses_bad_arguments() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepter = thread::spawn(move || {
            for stream in listener.incoming().take(20) {
                drop(stream);
            }
        });
        let prober = thread::Builder::new()
            .name(PROBER.into())
            .spawn(move || probe_loop(addr, 20))
            .unwrap();
        let (_ticks, elapsed) = prober.join().unwrap().unwrap();
        assert!(elapsed.as_nanos() > 0);
        accepter.join().unwrap();
        let bad = ProbeBoundArgs {
            probes: 0,
            users: 1,
            interval: 80.0,
        };
        assert!(run(bad).is_err());
    }
}
