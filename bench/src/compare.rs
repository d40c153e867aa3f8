//! Alternated runs A B A B against the null server and our server, in the
//! same session, reported as medians and the ratio ours/null: absolute ops/s
//! vary from machine to machine and minute to minute, a ratio to the ceiling
//! measured alongside does much less.
//!
//! With `--durable-ceiling` a third server joins the alternation, A B C A B
//! C: the durable ceiling (`null-server --durable`, journaling into a fresh
//! temporary directory), between the null server and ours. The null server
//! does not flush, so ours/null mixes the cost of the disk's flush with our
//! own; durable/null is the part any server that syncs before replying must
//! pay on this machine, and ours/durable the part that is ours.
//!
//! With `--populate-ceiling` the null server is populated too, just before
//! ours: the populate target is a time, and the time the null server needs
//! in the same session says how much of it is the machine's.
//!
//! Every window also reports the machine's idle and steal (/proc/stat): on
//! a shared VM a round in which the hypervisor stole a tenth of the CPUs
//! from one server and not the other compares the neighbours, and the
//! reader should see it. With `--max-steal` such a round is run again (the
//! whole round, so that its servers still run side by side), at most
//! `--rounds` times.
//!
//! With `--session` our server is driven through authenticated sessions
//! ([`crate::lanes`]), opened once (untimed) after the populate and kept
//! open across rounds; the null server still runs the classic workload,
//! the classic ceiling as in every other comparison, with `--clients`
//! loops. With `--session-ceiling` the null server also runs the session
//! workload in every round (it answers sessions too, on its own sessions,
//! also opened once): the session ceiling.
//!
//! All servers run as child processes (the ceilings are this binary's
//! `null-server`), so that none shares the load generator's runtime and all
//! can be measured from /proc the same way. They stay up across rounds, and
//! our server is populated once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::CompareArgs;
use crate::lanes::Lanes;
use crate::populate;
use crate::proc_stats;
use crate::report;
use crate::stats::{median, ms};
use crate::workload::{self, LoadConfig, LoadReport, Row};

/// What `null-server` prints, with or without `--durable`, once it accepts.
const NULL_MARKER: &str = "null-server listening on ";

/// What our server prints once it accepts.
const OURS_MARKER: &str = "s> init server ";

/// Which of the compared servers a child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The stateless ceiling.
    Null,
    /// The durable ceiling: the null server plus a group-committed journal.
    Durable,
    /// Our server, from `--server-cmd`.
    Ours,
    /// The null server's process, driven through sessions: the session
    /// ceiling (not a process of its own).
    NullSession,
}

impl Role {
    /// The name in every line printed about this server.
    fn name(self) -> &'static str {
        match self {
            Role::Null => "null",
            Role::Durable => "durable",
            Role::Ours => "ours",
            Role::NullSession => "null-session",
        }
    }
}

/// A server child process and where it listens.
struct Server {
    role: Role,
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

/// Every run so far, per server (`durable` stays empty without
/// `--durable-ceiling`).
#[derive(Default)]
struct Runs {
    null: Vec<LoadReport>,
    durable: Vec<LoadReport>,
    ours: Vec<LoadReport>,
    null_session: Vec<LoadReport>,
    /// Worst steal of each round discarded under `--max-steal`.
    discarded_steal: Vec<f64>,
    /// Failed operations in those rounds: errors are never the machine's,
    /// so they still fail the comparison.
    discarded_errors: u64,
}

impl Runs {
    /// Sets aside a round whose worst window had `steal` percent of steal.
    fn discard(&mut self, round: Vec<(Role, LoadReport)>, steal: f64) {
        self.discarded_errors += round.iter().map(|(_, r)| r.errors).sum::<u64>();
        self.discarded_steal.push(steal);
    }

    fn of(&mut self, role: Role) -> &mut Vec<LoadReport> {
        match role {
            Role::Null => &mut self.null,
            Role::Durable => &mut self.durable,
            Role::Ours => &mut self.ours,
            Role::NullSession => &mut self.null_session,
        }
    }

    /// Failed operations over every run of every server: any of them fails
    /// the comparison, since a ceiling that drops requests is no ceiling.
    fn errors(&self) -> u64 {
        self.null
            .iter()
            .chain(&self.durable)
            .chain(&self.ours)
            .chain(&self.null_session)
            .map(|r| r.errors)
            .sum::<u64>()
            + self.discarded_errors
    }
}

/// Runs the comparison; returns whether every run was error-free.
pub async fn run(args: CompareArgs, base: LoadConfig) -> anyhow::Result<bool> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let log_path = args.server_log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("peerdex-compare-{}.log", std::process::id()))
    });
    let start_timeout = crate::secs(args.start_timeout, "--start-timeout")?;
    let pause = crate::secs(args.pause, "--pause")?;
    // Fresh each time, so that no earlier run's ring is reused. Declared
    // before the servers: every return below stops them first, and the
    // drop then removes the directory (64 MiB of ring) on every path.
    let durable_dir = if args.durable_ceiling {
        let dir = tempfile::Builder::new()
            .prefix("peerdex-compare-durable-")
            .tempdir()
            .context("creating the durable ceiling's journal directory")?;
        Some(dir)
    } else {
        None
    };

    let exe = std::env::current_exe().context("locating this executable")?;
    let cmd = args.server_cmd.replace("{port}", &args.port.to_string());
    if let Some(warning) = probe_warning(&cmd) {
        eprintln!("warning: {warning}");
    }
    // In the order every round runs them.
    let mut launches = vec![(Role::Null, null_server(&exe, None), NULL_MARKER)];
    if let Some(dir) = &durable_dir {
        launches.push((
            Role::Durable,
            null_server(&exe, Some(dir.path())),
            NULL_MARKER,
        ));
    }
    let mut ours_cmd = Command::new("sh");
    // exec: the child is the server itself, so its pid is the one measured
    // and the one killed at the end.
    ours_cmd.arg("-c").arg(format!("exec {cmd}"));
    launches.push((Role::Ours, ours_cmd, OURS_MARKER));

    let mut servers = Vec::with_capacity(launches.len());
    for (role, command, marker) in launches {
        match spawn(role, command, marker, &log_path, start_timeout).await {
            Ok(server) => servers.push(server),
            Err(e) => {
                stop_all(&mut servers).await;
                return Err(e);
            }
        }
    }
    let describe = |role| {
        find(&servers, role).map_or_else(
            || "(not started)".to_string(),
            |s| format!("pid {} at {}", s.pid, s.addr),
        )
    };
    println!(
        "compare: null server {}, our server {} (`{cmd}`, output in {})",
        describe(Role::Null),
        describe(Role::Ours),
        log_path.display()
    );
    if let Some(dir) = &durable_dir {
        println!(
            "compare: durable server {} (journal in {})",
            describe(Role::Durable),
            dir.path().display()
        );
    }

    let result = rounds(&args, &base, &servers, pause).await;
    stop_all(&mut servers).await;
    if let Some(dir) = durable_dir {
        // Explicitly rather than by the drop, which would hide a failure.
        if let Err(e) = dir.close() {
            eprintln!("warning: removing the durable ceiling's journal: {e}");
        }
    }
    result
}

/// A warning when `cmd` starts a peerdex-server that would probe the
/// populated users: they are connected at fake listener addresses, so the
/// prober would disconnect them during the run and the checked replies
/// would fail.
fn probe_warning(cmd: &str) -> Option<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let ours = words.iter().any(|w| w.ends_with("peerdex-server"));
    let off = words
        .windows(2)
        .any(|w| w[0] == "--probe-interval" && w[1] == "0")
        || words.contains(&"--probe-interval=0");
    (ours && !off).then(|| {
        "the server command has no `--probe-interval 0`: the populated users have fake \
         listener addresses, and a server that probes them disconnects them mid-run"
            .to_string()
    })
}

/// `peerdex-bench null-server` on a free loopback port; with `journal`, the
/// durable ceiling journaling there.
fn null_server(exe: &Path, journal: Option<&Path>) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(["null-server", "-p", "0", "--bind", "127.0.0.1"]);
    if let Some(dir) = journal {
        cmd.arg("--durable").arg(dir);
    }
    cmd
}

/// The server playing `role`, if it was started.
fn find(servers: &[Server], role: Role) -> Option<&Server> {
    servers.iter().find(|s| s.role == role)
}

async fn rounds(
    args: &CompareArgs,
    base: &LoadConfig,
    servers: &[Server],
    pause: Duration,
) -> anyhow::Result<bool> {
    let ours = find(servers, Role::Ours).context("our server is not running")?;
    // The same users and concurrency for every server populated.
    let populate_at = |server: &Server| {
        populate::populate(
            server.addr,
            base.users,
            args.workload.populate_concurrency,
            base.op_timeout,
        )
    };
    let null_populated = if args.populate_ceiling {
        let null = find(servers, Role::Null).context("the null server is not running")?;
        let populated = populate_at(null).await?;
        println!(
            "populate of the null server: {}",
            report::populate_line(&populated)
        );
        Some(populated)
    } else {
        None
    };
    let populated = populate_at(ours).await?;
    report::print_populate(&populated);
    let plan = plan(args, base, servers).await?;

    let mut runs = Runs::default();
    let mut round = 1;
    while round <= args.rounds {
        let mut this_round = Vec::with_capacity(plan.len());
        for run in &plan {
            tokio::time::sleep(pause).await;
            let config = LoadConfig {
                addr: run.server.addr,
                server_pid: Some(run.server.pid),
                // The ceilings' lists are empty by design.
                verify_content: run.role == Role::Ours,
                clients: run
                    .lanes
                    .as_ref()
                    .map_or(base.clients, |l| l.layout.workers()),
                sessions: run.lanes.clone(),
                ..base.clone()
            };
            let r = workload::run(config).await?;
            report::print_load(&format!("round {round} {}", run.role.name()), &r);
            this_round.push((run.role, r));
        }
        let steal = worst_steal(this_round.iter().map(|(_, r)| r));
        if let (Some(limit), Some(steal)) = (args.max_steal, steal) {
            if discard_round(steal, limit, runs.discarded_steal.len(), args.rounds) {
                println!(
                    "round {round}: discarded, steal {steal:.0}% above {limit:.0}% in a window; running it again"
                );
                runs.discard(this_round, steal);
                continue;
            }
        }
        for (role, r) in this_round {
            runs.of(role).push(r);
        }
        let ops = |runs: &[LoadReport]| runs.last().map(|r| r.ops_per_sec);
        if let (Some(null), Some(ours)) = (ops(&runs.null), ops(&runs.ours)) {
            println!("{}", round_line(round, null, ops(&runs.durable), ours));
            if let Some(ceiling) = ops(&runs.null_session) {
                println!(
                    "round {round}: null-session {ceiling:.0} ops/s, ours/null-session {:.3}",
                    ours / ceiling
                );
            }
        }
        round += 1;
    }
    summarize(args, &populated, null_populated.as_ref(), &runs);
    Ok(runs.errors() == 0)
}

/// One run of every round: which server, and over which sessions.
struct Run<'s> {
    role: Role,
    server: &'s Server,
    lanes: Option<Arc<Lanes>>,
}

/// The runs of a round, in order; with `--session` opens the sessions
/// (once, untimed, kept open across rounds) and prints how long that took.
async fn plan<'s>(
    args: &CompareArgs,
    base: &LoadConfig,
    servers: &'s [Server],
) -> anyhow::Result<Vec<Run<'s>>> {
    let w = &args.workload;
    let mut plan = Vec::new();
    for server in servers {
        let lanes = if w.session && server.role == Role::Ours {
            Some(Arc::new(
                crate::open_lanes(w, server.addr, base.op_timeout).await?,
            ))
        } else {
            None
        };
        plan.push(Run {
            role: server.role,
            server,
            lanes,
        });
        if args.session_ceiling && server.role == Role::Null {
            let lanes = crate::open_lanes(w, server.addr, base.op_timeout).await?;
            plan.push(Run {
                role: Role::NullSession,
                server,
                lanes: Some(Arc::new(lanes)),
            });
        }
    }
    Ok(plan)
}

/// Whether a round whose worst window had `steal` percent of steal is run
/// again under `--max-steal limit`, with `discarded` rounds discarded so
/// far: at most `rounds` are, so that a host that never stops stealing
/// still ends the comparison.
fn discard_round(steal: f64, limit: f64, discarded: usize, rounds: usize) -> bool {
    steal > limit && discarded < rounds
}

/// The highest steal share among `reports`' windows; None without samples.
fn worst_steal<'r>(reports: impl Iterator<Item = &'r LoadReport>) -> Option<f64> {
    reports
        .filter_map(|r| r.machine.map(|m| m.steal_pct))
        .reduce(f64::max)
}

/// One round's throughputs (ops/s) and ratios. `ratio` stays ours/null
/// with the durable ceiling too, so that scripts reading it need no flag.
fn round_line(round: usize, n: f64, durable: Option<f64>, o: f64) -> String {
    match durable {
        None => format!(
            "round {round}: null {n:.0} ops/s, ours {o:.0} ops/s, ratio {:.3}",
            o / n
        ),
        Some(d) => format!(
            "round {round}: null {n:.0} ops/s, durable {d:.0} ops/s, ours {o:.0} ops/s, \
             ratio {:.3}, durable/null {:.3}, ours/durable {:.3}",
            o / n,
            d / n,
            o / d
        ),
    }
}

fn summarize(
    args: &CompareArgs,
    populated: &populate::PopulateReport,
    null_populated: Option<&populate::PopulateReport>,
    runs: &Runs,
) {
    let ops = |runs: &[LoadReport]| runs.iter().map(|r| r.ops_per_sec).collect::<Vec<_>>();
    let (null_ops, our_ops) = (ops(&runs.null), ops(&runs.ours));
    let null_med = median(&null_ops).unwrap_or(f64::NAN);
    let our_med = median(&our_ops).unwrap_or(f64::NAN);
    let durable_ops = args.durable_ceiling.then(|| ops(&runs.durable));
    // Median latency of our server per operation, across rounds.
    let lat = |row: Row, f: fn(&crate::stats::Summary) -> Duration| {
        let v: Vec<f64> = runs
            .ours
            .iter()
            .filter_map(|r| r.rows.iter().find(|x| x.row == row)?.latency)
            .map(|l| ms(f(&l)))
            .collect();
        median(&v)
    };
    let errors = runs.errors();
    let last_server = runs.ours.last().and_then(|r| r.server.as_ref());
    let cpu = |runs: &[LoadReport]| {
        median(
            &runs
                .iter()
                .filter_map(|r| r.server.as_ref().map(|s| s.cpu_pct))
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
    println!("  populate ours: {}", report::populate_line(populated));
    if let Some(null) = null_populated {
        println!(
            "  populate null: {}; ours took {:.2}x as long",
            report::populate_line(null),
            populated.elapsed.as_secs_f64() / null.elapsed.as_secs_f64().max(1e-9)
        );
    }
    println!("  null ops/s:  {}  median {null_med:.0}", list(&null_ops));
    if let Some(d) = &durable_ops {
        println!(
            "  durable ops/s:  {}  median {:.0}",
            list(d),
            median(d).unwrap_or(f64::NAN)
        );
    }
    if let Some(lanes) = &runs.ours.first().and_then(|r| r.config.sessions.clone()) {
        println!(
            "  ours over sessions: {} (set-up {:.2} s, untimed, once); null: classic, {} loops",
            lanes.layout.describe(),
            lanes.setup.as_secs_f64(),
            args.workload.clients
        );
    }
    let session_ops = ops(&runs.null_session);
    if args.session_ceiling {
        println!(
            "  null-session ops/s:  {}  median {:.0}",
            list(&session_ops),
            median(&session_ops).unwrap_or(f64::NAN)
        );
    }
    println!("  ours ops/s:  {}  median {our_med:.0}", list(&our_ops));
    let ratio = print_ratio("ours/null", &our_ops, &null_ops);
    let session_ratio = args
        .session_ceiling
        .then(|| print_ratio("ours/null-session", &our_ops, &session_ops));
    // (durable/null, ours/durable), for the JSON line.
    let durable_ratios = durable_ops.as_ref().map(|d| {
        (
            print_ratio("durable/null", d, &null_ops),
            print_ratio("ours/durable", &our_ops, d),
        )
    });
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
            cpu(&runs.ours).unwrap_or(f64::NAN),
            cpu(&runs.null).unwrap_or(f64::NAN)
        );
    }
    if let (Some(_), Some(c)) = (&durable_ops, cpu(&runs.durable)) {
        println!("  durable server CPU median {c:.0}% of one core");
    }
    if let (Some(n), Some(o)) = (cpu_per_op(&runs.null), cpu_per_op(&runs.ours)) {
        let durable = match cpu_per_op(&runs.durable) {
            Some(d) => format!(", durable {d:.1}"),
            None => String::new(),
        };
        let session = match cpu_per_op(&runs.null_session) {
            Some(c) => format!(", null-session {c:.1}"),
            None => String::new(),
        };
        println!("  server CPU us per op (medians): null {n:.1}{durable}{session}, ours {o:.1}");
        let threads = thread_cpu_per_op(&runs.ours);
        if !threads.is_empty() {
            println!("  ours by thread: {}", report::thread_list(&threads));
        }
    }
    for (role, role_runs) in [
        (Role::Null, &runs.null),
        (Role::Durable, &runs.durable),
        (Role::Ours, &runs.ours),
        (Role::NullSession, &runs.null_session),
    ] {
        if let Some(line) = machine_summary(role_runs) {
            println!("  machine during {}: {line}", role.name());
        }
    }
    let discarded = &runs.discarded_steal;
    if let Some(limit) = args.max_steal {
        println!(
            "  rounds discarded for steal above {limit:.0}%: {}{}",
            discarded.len(),
            if discarded.is_empty() {
                String::new()
            } else {
                format!(" (their worst steal % {})", list(discarded))
            }
        );
    }
    println!(
        "  errors: {errors}{}",
        if errors > 0 { "  <-- FAILED" } else { "" }
    );
    if args.workload.json {
        // Extra keys only with the durable ceiling: the line is otherwise
        // byte for byte what it was before the flag existed.
        let durable_json = match (&durable_ops, durable_ratios) {
            (Some(d), Some((durable_null, ours_durable))) => format!(
                ",\"durable_ops_per_sec\":[{}],\"durable_median\":{},\
                 \"ratio_durable_null\":{},\"ratio_ours_durable\":{}",
                json_list(d),
                report::num(median(d).unwrap_or(f64::NAN)),
                report::num(durable_null),
                report::num(ours_durable)
            ),
            _ => String::new(),
        };
        let null_populate_json = match null_populated {
            Some(null) => format!(
                ",\"null_populate_secs\":{}",
                report::num(null.elapsed.as_secs_f64())
            ),
            None => String::new(),
        };
        // Only with --max-steal, like the durable keys above.
        let discarded_json = match args.max_steal {
            Some(_) => format!(",\"discarded_rounds\":{}", discarded.len()),
            None => String::new(),
        };
        // Only with --session, like the keys above.
        let session_json = if args.workload.session {
            let ceiling = match session_ratio {
                Some(r) => format!(
                    ",\"null_session_ops_per_sec\":[{}],\"ratio_ours_null_session\":{}",
                    json_list(&session_ops),
                    report::num(r)
                ),
                None => String::new(),
            };
            format!(
                ",\"session\":true,\"pipeline\":{},\"pipeline_mode\":{}{ceiling}",
                args.workload.pipeline,
                report::string(args.workload.pipeline_mode.name())
            )
        } else {
            String::new()
        };
        println!(
            "{{\"kind\":\"compare\",\"users\":{},\"clients\":{},\"mix\":{},\"rounds\":{},\
             \"null_ops_per_sec\":[{}],\"ours_ops_per_sec\":[{}],\"null_median\":{},\
             \"ours_median\":{},\"ratio\":{},\"errors\":{},\"ours_rss_end_kib\":{},\
             \"ours_hwm_kib\":{},\"populate_secs\":{}{durable_json}{null_populate_json}{discarded_json}{session_json}}}",
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

/// Median server CPU microseconds per operation over `runs`: how much
/// each operation costs, which a noisy machine disturbs less than ops/s.
fn cpu_per_op(runs: &[LoadReport]) -> Option<f64> {
    let per_run: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            let server = r.server.as_ref()?;
            (r.total_ops > 0).then(|| server.cpu_secs * 1e6 / r.total_ops as f64)
        })
        .collect();
    median(&per_run)
}

/// Idle and steal of the machine in each of `runs`' windows, in run order:
/// which rounds the neighbours disturbed. None without samples.
fn machine_summary(runs: &[LoadReport]) -> Option<String> {
    let windows: Vec<_> = runs.iter().filter_map(|r| r.machine).collect();
    if windows.is_empty() {
        return None;
    }
    let pct = |f: fn(&proc_stats::MachineWindow) -> f64| {
        windows
            .iter()
            .map(|w| format!("{:.0}", f(w)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(format!(
        "idle % {}, steal % {}",
        pct(|w| w.idle_pct),
        pct(|w| w.steal_pct)
    ))
}

/// Median CPU microseconds per operation of each server thread name over
/// `runs`, most first.
fn thread_cpu_per_op(runs: &[LoadReport]) -> Vec<(String, f64)> {
    let mut per_name: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.total_ops > 0) {
        for (name, secs) in run.server.iter().flat_map(|s| &s.threads) {
            per_name
                .entry(name)
                .or_default()
                .push(secs * 1e6 / run.total_ops as f64);
        }
    }
    let mut out: Vec<(String, f64)> = per_name
        .into_iter()
        .filter_map(|(name, v)| Some((name.to_string(), median(&v)?)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Prints `  ratio {label} of medians: ...` with the per-round ratios;
/// returns the ratio of the medians.
fn print_ratio(label: &str, top: &[f64], bottom: &[f64]) -> f64 {
    let ratio = median(top).unwrap_or(f64::NAN) / median(bottom).unwrap_or(f64::NAN);
    let per_round: Vec<f64> = top.iter().zip(bottom).map(|(t, b)| t / b).collect();
    println!(
        "  ratio {label} of medians: {ratio:.3} ({:.1}%); per-round ratios {} (median {:.3})",
        ratio * 100.0,
        list3(&per_round),
        median(&per_round).unwrap_or(f64::NAN)
    );
    ratio
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
    role: Role,
    mut cmd: Command,
    marker: &str,
    log: &Path,
    wait: Duration,
) -> anyhow::Result<Server> {
    let name = role.name();
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
        role,
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

/// Kills the children we started (by their own handles, never by name),
/// last started first.
async fn stop_all(servers: &mut [Server]) {
    for server in servers.iter_mut().rev() {
        let _ = server.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), server.child.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_lines() {
        // Without the durable ceiling, exactly the line scripts parse.
        assert_eq!(
            round_line(2, 40000.0, None, 30000.0),
            "round 2: null 40000 ops/s, ours 30000 ops/s, ratio 0.750"
        );
        assert_eq!(
            round_line(1, 40000.0, Some(20000.0), 15000.0),
            "round 1: null 40000 ops/s, durable 20000 ops/s, ours 15000 ops/s, \
             ratio 0.375, durable/null 0.500, ours/durable 0.750"
        );
    }

    #[test]
    fn rounds_with_too_much_steal_are_discarded_a_bounded_number_of_times() {
        assert!(discard_round(12.0, 10.0, 0, 5));
        assert!(!discard_round(10.0, 10.0, 0, 5), "at the limit is kept");
        assert!(!discard_round(3.0, 10.0, 0, 5));
        assert!(discard_round(40.0, 10.0, 4, 5));
        assert!(!discard_round(40.0, 10.0, 5, 5), "no more than --rounds");
    }

    #[test]
    fn warns_about_a_probing_server_only() {
        assert!(probe_warning("target/release/peerdex-server -p 1 --data-dir d").is_some());
        assert!(probe_warning("target/release/peerdex-server -p 1 --probe-interval 0").is_none());
        assert!(probe_warning("peerdex-server --probe-interval=0").is_none());
        assert!(probe_warning("peerdex-server --probe-interval 5").is_some());
        assert!(probe_warning("sh -c 'other-server'").is_none());
    }

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
