//! Command line of `peerdex-bench`. Flags stay as they are so that the
//! commands recorded in docs/PERFORMANCE.md can be re-run verbatim.

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand};

use crate::lanes::PipelineMode;
use crate::mix::MixKind;

#[derive(Debug, Parser)]
#[command(
    name = "peerdex-bench",
    version = env!("PEERDEX_VERSION"),
    about = "Load generator and null-server ceiling for the peerdex directory server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A stateless server that answers code 0 (empty lists) to every request:
    /// the ceiling that one-connection-per-operation allows on this machine.
    NullServer(NullServerArgs),
    /// Populate a directory server, then run a timed mixed workload against it.
    Load(LoadArgs),
    /// Alternate load runs against the null server and our server (A B A B)
    /// and report medians and the ratio ours/null; with --durable-ceiling
    /// also against the durable ceiling (A B C A B C).
    Compare(CompareArgs),
    /// A file over loopback: a plain TCP copy against our verified
    /// download (and the classic GET_FILE), alternated, with medians.
    Transfer(crate::transfer::TransferArgs),
    /// Password logins per second at increasing concurrency, and the
    /// LIST_CONTENT p99 of classic clients alone and during a login storm.
    Logins(crate::logins::LoginsArgs),
    /// Time from SIGKILL of a session client to its disappearance from
    /// LIST_USERS, and the server's CPU per probe of classic peers.
    Presence(crate::presence::PresenceArgs),
    /// The kernel's own cost of one presence probe on this machine: blocking
    /// connect + close to a loopback listener, CPU of the probing thread.
    ProbeBound(crate::probe_bound::ProbeBoundArgs),
    /// Internal (spawned by `presence`): a session client that CONNECTs
    /// and waits to be killed.
    #[command(hide = true)]
    SessionHolder(crate::presence::HolderArgs),
    /// Internal (spawned by `transfer`): one download through the client
    /// library in a process of its own, so its memory is measurable.
    #[command(hide = true)]
    FetchWorker(crate::fetch_worker::FetchWorkerArgs),
}

#[derive(Debug, Args)]
pub struct NullServerArgs {
    /// TCP port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(short, long)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Be the durable ceiling instead: journal every mutating request in
    /// this directory with group-committed fdatasync before answering (see
    /// `null_journal`).
    #[arg(long, value_name = "DIR")]
    pub durable: Option<std::path::PathBuf>,
}

/// Knobs shared by `load` and `compare`.
#[derive(Debug, Args, Clone)]
pub struct WorkloadArgs {
    /// Number of directory users (`bench-u0` .. `bench-u<N-1>`).
    #[arg(long)]
    pub users: usize,
    /// Concurrent client loops; user i belongs to loop i % C, so N >= C.
    #[arg(long)]
    pub clients: usize,
    /// Measured window, seconds.
    #[arg(long)]
    pub duration: f64,
    /// Warm-up before the window, seconds (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Operation mix.
    #[arg(long, value_enum, default_value_t = MixKind::Default)]
    pub mix: MixKind,
    /// Concurrent connections while populating.
    #[arg(long, default_value_t = 64)]
    pub populate_concurrency: usize,
    /// Seed of the per-loop random generators (runs are repeatable).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Per-operation timeout (connect, request, reply, close), seconds.
    #[arg(long, default_value_t = 10.0)]
    pub op_timeout: f64,
    /// Decode LIST replies with the protocol crate's `read_reply` (builds
    /// every entry: slower on the client, for cross-checking the streaming
    /// reader).
    #[arg(long)]
    pub protocol_reader: bool,
    /// Also print one JSON line with the key numbers, for scripts.
    #[arg(long)]
    pub json: bool,
    /// Run the workload over authenticated sessions instead of one
    /// connection per operation: at set-up (untimed) every session logs in
    /// to its user and sets a random password (one argon2 hash each).
    /// Each session acts only for its own user, users 0 .. C x D - 1.
    #[arg(long)]
    pub session: bool,
    /// With --session: requests each client keeps in flight (D).
    #[arg(long, default_value_t = 4)]
    pub pipeline: usize,
    /// With --session: D sessions per client with one request in flight
    /// each (`lanes`), or one session per client with D in flight
    /// (`single-session`; a DISCONNECT+CONNECT pair waits for the
    /// session's other requests and runs alone).
    #[arg(long, value_enum, default_value_t = PipelineMode::Lanes)]
    pub pipeline_mode: PipelineMode,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server host (the benchmark is meant for loopback).
    #[arg(short = 's', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(short, long)]
    pub port: u16,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// The server is already populated with at least N users: measure only.
    #[arg(long)]
    pub skip_populate: bool,
    /// Report this process's RSS and CPU time over the window (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Check listing contents, not only reply codes (requires a real
    /// directory: the null server answers empty lists).
    #[arg(long)]
    pub verify_content: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Shell command that starts our server; `{port}` is replaced by --port.
    /// It must print `s> init server ip:port` on stdout when ready.
    #[arg(long)]
    pub server_cmd: String,
    /// Port substituted for `{port}` (0: the server picks one and prints it).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Alternated rounds (each = one null run + one run of ours, with a
    /// durable-ceiling run between them under --durable-ceiling).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Pause between runs, seconds, so one run's teardown does not leak into
    /// the next one's window.
    #[arg(long, default_value_t = 1.0)]
    pub pause: f64,
    /// Where our server's output goes (default: a file in /tmp).
    #[arg(long)]
    pub server_log: Option<std::path::PathBuf>,
    /// Seconds to wait for our server's `s> init server` line (and for the
    /// null servers' `listening on` line).
    #[arg(long, default_value_t = 60.0)]
    pub start_timeout: f64,
    /// Also measure the durable ceiling (`null-server --durable`, journaling
    /// into a fresh directory under the temp dir, $TMPDIR) in every round,
    /// between the null server and ours. The null server alone hides what a
    /// flush costs on this disk; this third server shows how much of the gap
    /// any server that syncs before replying must pay, so ours/durable is
    /// the part that is ours. Put $TMPDIR on the same disk as our data dir.
    #[arg(long)]
    pub durable_ceiling: bool,
    /// Also populate the null server, just before ours, with the same users
    /// and concurrency: how long the populate takes when the server costs
    /// nothing, measured in the same session as ours (the ceilings are
    /// stateless, so their windows do not depend on it).
    #[arg(long)]
    pub populate_ceiling: bool,
    /// Discard and run again a round in which any server's window had more
    /// than this percentage of steal (the hypervisor running other VMs on
    /// our CPUs): such a round compares the neighbours, not the servers.
    /// At most --rounds rounds are discarded; after that rounds are kept
    /// whatever their steal. Every discarded round is printed and counted.
    #[arg(long, value_name = "PERCENT", value_parser = percentage)]
    pub max_steal: Option<f64>,
    /// With --session: also run the session workload against the null
    /// server (which answers sessions too) in every round, right after its
    /// classic run: the session ceiling, so that ours/null-session says
    /// how much of the sessions' gain is ours.
    #[arg(long, requires = "session")]
    pub session_ceiling: bool,
}

/// A share from 0 to 100, e.g. `--max-steal 10`.
fn percentage(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err(format!("expected a percentage from 0 to 100, not {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("peerdex-bench").chain(args.iter().copied()))
    }

    const COMPARE: &[&str] = &[
        "compare",
        "--server-cmd",
        "x",
        "--users",
        "512",
        "--clients",
        "64",
        "--duration",
        "1",
    ];

    #[test]
    fn session_flags_parse_with_their_defaults() {
        let mut args = COMPARE.to_vec();
        args.push("--session");
        let Command::Compare(c) = parse(&args).expect("valid").command else {
            panic!("not compare")
        };
        assert!(c.workload.session && !c.session_ceiling);
        assert_eq!(c.workload.pipeline, 4);
        assert_eq!(c.workload.pipeline_mode, PipelineMode::Lanes);

        args.extend([
            "--pipeline",
            "8",
            "--pipeline-mode",
            "single-session",
            "--session-ceiling",
        ]);
        let Command::Compare(c) = parse(&args).expect("valid").command else {
            panic!("not compare")
        };
        assert_eq!(c.workload.pipeline, 8);
        assert_eq!(c.workload.pipeline_mode, PipelineMode::SingleSession);
        assert!(c.session_ceiling);
    }

    #[test]
    fn the_session_ceiling_needs_sessions() {
        let mut args = COMPARE.to_vec();
        args.push("--session-ceiling");
        assert!(parse(&args).is_err());
        let mut args = COMPARE.to_vec();
        args.extend(["--session", "--pipeline-mode", "pipelined"]);
        assert!(parse(&args).is_err(), "unknown mode");
    }

    #[test]
    fn logins_and_presence_parse() {
        let Command::Logins(l) = parse(&["logins", "-p", "1", "--concurrency", "1,2,8"])
            .expect("valid")
            .command
        else {
            panic!("not logins")
        };
        assert_eq!(l.concurrency, [1, 2, 8]);
        assert_eq!((l.storm, l.accounts), (200, 64));
        let Command::Presence(p) = parse(&["presence", "-p", "1"]).expect("valid").command else {
            panic!("not presence")
        };
        assert_eq!((p.users, p.kill_runs), (100_000, 5));
        assert!(parse(&["logins"]).is_err(), "the port is required");
    }
}
