//! Alternated runs A B A B against the null server and our server, in the
//! same session, reported as medians and the ratio ours/null: absolute ops/s
//! vary from machine to machine and minute to minute, a ratio to the ceiling
//! measured alongside does much less.
//!
//! Both servers run as child processes (the null server is this binary's
//! `null-server`), so that neither shares the load generator's runtime and
//! both can be measured from /proc the same way. They stay up across rounds,
//! and our server is populated once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::CompareArgs;
use crate::populate;
use crate::report;
use crate::stats::{median, ms};
use crate::workload::{self, LoadConfig, LoadReport, Row};

/// A server child process and where it listens.
struct Server {
    name: &'static str,
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

/// Runs the comparison; returns whether every run was error-free.
pub async fn run(args: CompareArgs, base: LoadConfig) -> anyhow::Result<bool> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let log_path = args.server_log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("peerdex-compare-{}.log", std::process::id()))
    });
    let start_timeout = crate::secs(args.start_timeout, "--start-timeout")?;
    let pause = crate::secs(args.pause, "--pause")?;

    let exe = std::env::current_exe().context("locating this executable")?;
    let mut null_cmd = Command::new(exe);
    null_cmd.args(["null-server", "-p", "0", "--bind", "127.0.0.1"]);
    let mut null = spawn(
        "null",
        null_cmd,
        "null-server listening on ",
        &log_path,
        start_timeout,
    )
    .await?;

    let cmd = args.server_cmd.replace("{port}", &args.port.to_string());
    let mut ours_cmd = Command::new("sh");
    // exec: the child is the server itself, so its pid is the one measured
    // and the one killed at the end.
    ours_cmd.arg("-c").arg(format!("exec {cmd}"));
    let ours = spawn(
        "ours",
        ours_cmd,
        "s> init server ",
        &log_path,
        start_timeout,
    )
    .await;
    let mut ours = match ours {
        Ok(ours) => ours,
        Err(e) => {
            stop(&mut null).await;
            return Err(e);
        }
    };
    println!(
        "compare: null server pid {} at {}, our server pid {} at {} (`{cmd}`, output in {})",
        null.pid,
        null.addr,
        ours.pid,
        ours.addr,
        log_path.display()
    );

    let result = rounds(&args, &base, &null, &ours, pause).await;
    stop(&mut ours).await;
    stop(&mut null).await;
    result
}

async fn rounds(
    args: &CompareArgs,
    base: &LoadConfig,
    null: &Server,
    ours: &Server,
    pause: Duration,
) -> anyhow::Result<bool> {
    let populated = populate::populate(
        ours.addr,
        base.users,
        args.workload.populate_concurrency,
        base.op_timeout,
    )
    .await?;
    report::print_populate(&populated);

    let mut null_runs: Vec<LoadReport> = Vec::new();
    let mut our_runs: Vec<LoadReport> = Vec::new();
    for round in 1..=args.rounds {
        for server in [null, ours] {
            tokio::time::sleep(pause).await;
            let config = LoadConfig {
                addr: server.addr,
                server_pid: Some(server.pid),
                // The null server's lists are empty by design.
                verify_content: server.name == "ours",
                ..base.clone()
            };
            let r = workload::run(config).await?;
            report::print_load(&format!("round {round} {}", server.name), &r);
            if server.name == "ours" {
                our_runs.push(r);
            } else {
                null_runs.push(r);
            }
        }
        let (n, o) = (&null_runs[round - 1], &our_runs[round - 1]);
        println!(
            "round {round}: null {:.0} ops/s, ours {:.0} ops/s, ratio {:.3}",
            n.ops_per_sec,
            o.ops_per_sec,
            o.ops_per_sec / n.ops_per_sec
        );
    }
    summarize(args, &populated, &null_runs, &our_runs);
    let errors: u64 = null_runs.iter().chain(&our_runs).map(|r| r.errors).sum();
    Ok(errors == 0)
}

fn summarize(
    args: &CompareArgs,
    populated: &populate::PopulateReport,
    null_runs: &[LoadReport],
    our_runs: &[LoadReport],
) {
    let ops = |runs: &[LoadReport]| runs.iter().map(|r| r.ops_per_sec).collect::<Vec<_>>();
    let (null_ops, our_ops) = (ops(null_runs), ops(our_runs));
    let null_med = median(&null_ops).unwrap_or(f64::NAN);
    let our_med = median(&our_ops).unwrap_or(f64::NAN);
    let ratios: Vec<f64> = null_ops.iter().zip(&our_ops).map(|(n, o)| o / n).collect();
    let ratio = our_med / null_med;
    // Median latency of our server per operation, across rounds.
    let lat = |row: Row, f: fn(&crate::stats::Summary) -> Duration| {
        let v: Vec<f64> = our_runs
            .iter()
            .filter_map(|r| r.rows.iter().find(|x| x.row == row)?.latency)
            .map(|l| ms(f(&l)))
            .collect();
        median(&v)
    };
    let errors: u64 = null_runs.iter().chain(our_runs).map(|r| r.errors).sum();
    let last_server = our_runs.last().and_then(|r| r.server);
    let cpu = |runs: &[LoadReport]| {
        median(
            &runs
                .iter()
                .filter_map(|r| r.server.map(|s| s.cpu_pct))
                .collect::<Vec<_>>(),
        )
    };

    println!();
    println!(
        "compare: users={} clients={} mix={} window={}s rounds={}",
        args.workload.users,
        args.workload.clients,
        args.workload.mix,
        args.workload.duration,
        args.rounds
    );
    println!("  null ops/s:  {}  median {null_med:.0}", list(&null_ops));
    println!("  ours ops/s:  {}  median {our_med:.0}", list(&our_ops));
    println!(
        "  ratio ours/null of medians: {ratio:.3} ({:.1}%); per-round ratios {} (median {:.3})",
        ratio * 100.0,
        list3(&ratios),
        median(&ratios).unwrap_or(f64::NAN)
    );
    for row in Row::ALL {
        if let (Some(p50), Some(p99)) = (lat(row, |l| l.p50), lat(row, |l| l.p99)) {
            println!(
                "  ours {:<13} p50 {p50:.3} ms  p99 {p99:.3} ms (medians over rounds)",
                row.op().name()
            );
        }
    }
    if let Some(s) = last_server {
        println!(
            "  ours RSS at end {:.1} MiB, peak {:.1} MiB; server CPU median {:.0}% of one core (null: {:.0}%)",
            s.rss_end_kib as f64 / 1024.0,
            s.hwm_kib as f64 / 1024.0,
            cpu(our_runs).unwrap_or(f64::NAN),
            cpu(null_runs).unwrap_or(f64::NAN)
        );
    }
    println!(
        "  errors: {errors}{}",
        if errors > 0 { "  <-- FAILED" } else { "" }
    );
    if args.workload.json {
        println!(
            "{{\"kind\":\"compare\",\"users\":{},\"clients\":{},\"mix\":{},\"rounds\":{},\
             \"null_ops_per_sec\":[{}],\"ours_ops_per_sec\":[{}],\"null_median\":{},\
             \"ours_median\":{},\"ratio\":{},\"errors\":{},\"ours_rss_end_kib\":{},\
             \"ours_hwm_kib\":{},\"populate_secs\":{}}}",
            args.workload.users,
            args.workload.clients,
            report::string(args.workload.mix.name()),
            args.rounds,
            json_list(&null_ops),
            json_list(&our_ops),
            report::num(null_med),
            report::num(our_med),
            report::num(ratio),
            errors,
            last_server.map_or("null".into(), |s| s.rss_end_kib.to_string()),
            last_server.map_or("null".into(), |s| s.hwm_kib.to_string()),
            report::num(populated.elapsed.as_secs_f64()),
        );
    }
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list3(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn json_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| report::num(*x))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts a server and waits for the stdout line carrying `marker` and its
/// address. Everything else it prints goes to `log`.
async fn spawn(
    name: &'static str,
    mut cmd: Command,
    marker: &str,
    log: &Path,
    wait: Duration,
) -> anyhow::Result<Server> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file.try_clone()?))
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the {name} server"))?;
    let pid = child.id().context("server exited at once")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut log_out = tokio::fs::File::from_std(log_file);
    let found = tokio::time::timeout(wait, async {
        while let Some(line) = lines.next_line().await? {
            log_out.write_all(format!("{line}\n").as_bytes()).await?;
            if let Some((_, rest)) = line.split_once(marker) {
                return Ok::<_, std::io::Error>(Some(rest.trim().to_string()));
            }
        }
        Ok(None)
    })
    .await;
    let addr_text = match found {
        Ok(Ok(Some(text))) => text,
        Ok(Ok(None)) => bail!(
            "the {name} server closed its stdout before printing {marker:?} (see {})",
            log.display()
        ),
        Ok(Err(e)) => bail!("reading the {name} server's stdout: {e}"),
        Err(_) => bail!("the {name} server did not print {marker:?} within {wait:?}"),
    };
    let addr =
        parse_addr(&addr_text).with_context(|| format!("{name} server announced {addr_text:?}"))?;
    // Keep draining stdout so that the server never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if log_out
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Ok(Server {
        name,
        child,
        pid,
        addr,
    })
}

/// `ip:port` as announced; an unspecified IP (bound to all interfaces) is
/// reached on loopback.
fn parse_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let token = text.split_whitespace().next().unwrap_or_default();
    let mut addr: SocketAddr = token.parse().context("not ip:port")?;
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Ok(addr)
}

/// Kills a child we started (by its own handle, never by name).
async fn stop(server: &mut Server) {
    let _ = server.child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), server.child.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_announced_addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:4000").unwrap(),
            "127.0.0.1:4000".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:4000 (data in /tmp)").unwrap(),
            "127.0.0.1:4000".parse().unwrap()
        );
        assert!(parse_addr("somewhere").is_err());
    }
}
