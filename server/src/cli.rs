//! Command-line arguments.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use peerdex_protocol::frame::{HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT};

use crate::server::{Config, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_RATE};

/// The data directory when none is given.
const DEFAULT_DATA_DIR: &str = "./peerdex-data";

/// peerdex directory server.
///
/// `peerdex-server -p PORT ...` runs the server; `check` and `salvage`
/// look at (and repair) a data directory whose journal is damaged.
#[derive(Debug, Parser)]
#[command(
    name = "peerdex-server",
    version = env!("PEERDEX_VERSION"),
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    /// A tool to run instead of the server.
    #[command(subcommand)]
    pub command: Option<Tool>,
    /// TCP port to listen on (0 = let the OS choose; the chosen port is printed).
    #[arg(short = 'p', long = "port", required = true)]
    pub port: Option<u16>,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Directory holding the database (created if missing).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// RPC logger to send one record per operation to (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    pub logger: Option<String>,
    /// Most connections served at once; further clients wait to be accepted.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a client has to send its whole request, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// `open`: classic clients and sessions may create and change accounts
    /// without a password; `required`: account creation and every mutation
    /// need an authenticated session (classic clients can only read).
    #[arg(long, value_enum, default_value_t = Auth::Open)]
    pub auth: Auth,
    /// Seconds between two probes of a classic-connected user's listener
    /// (0: never probe).
    #[arg(long, default_value_t = DEFAULT_PROBE_INTERVAL.as_secs())]
    pub probe_interval: u64,
    /// Most listener probes started per second.
    #[arg(long, default_value_t = DEFAULT_PROBE_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub probe_rate: u32,
    /// Password hashes (logins, password changes) computed at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_threads: u32,
    /// Session heartbeat interval in milliseconds (tests shorten it).
    #[arg(long, hide = true, default_value_t = HEARTBEAT_INTERVAL.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_interval_ms: u64,
    /// Session silence timeout in milliseconds (tests shorten it).
    #[arg(long, hide = true, default_value_t = HEARTBEAT_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_timeout_ms: u64,
}

/// Who may change the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    /// Accounts without a password work as PROTOCOL.md says.
    Open,
    /// Every mutation needs an authenticated session.
    Required,
}

/// Tools for a data directory, run instead of the server.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Reports what of the journal and the database is intact and what is
    /// damaged, changing nothing. Exits 1 when damage is found (a torn
    /// tail, the last write that was never acknowledged, is not damage).
    Check {
        /// Directory holding the database.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Applies everything before the first journal damage to the database,
    /// moves the damaged segment and every later one into `damaged/`, and
    /// prints every lost record, so that its operations can be redone.
    Salvage {
        /// Directory holding the database.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

impl Args {
    /// The server configuration these arguments describe; `None` when they
    /// name a tool instead (then there is no port).
    pub fn config(&self) -> Option<Config> {
        Some(Config {
            bind: self.bind,
            port: self.port?,
            data_dir: self.data_dir.clone(),
            logger: self.logger.clone(),
            max_connections: self.max_connections as usize,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            auth_required: self.auth == Auth::Required,
            probe_interval: Duration::from_secs(self.probe_interval),
            probe_rate: self.probe_rate,
            login_threads: self.login_threads as usize,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let args = Args::try_parse_from(["peerdex-server", "-p", "0"]).unwrap();
        assert!(args.command.is_none());
        let config = args.config().unwrap();
        assert_eq!(config.bind.to_string(), "0.0.0.0");
        assert_eq!(config.data_dir, PathBuf::from("./peerdex-data"));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.request_timeout, Duration::from_millis(5000));
        assert_eq!(config.logger, None);
        assert!(!config.auth_required);
        assert_eq!(config.probe_interval, Duration::from_secs(80));
        assert_eq!(config.probe_rate, 2000);
        assert_eq!(config.login_threads, 1);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(15));
    }

    #[test]
    fn session_and_presence_flags() {
        let args = Args::try_parse_from([
            "peerdex-server",
            "-p",
            "0",
            "--auth",
            "required",
            "--probe-interval",
            "0",
            "--probe-rate",
            "10",
            "--login-threads",
            "2",
            "--heartbeat-timeout-ms",
            "300",
        ])
        .unwrap();
        let config = args.config().unwrap();
        assert!(config.auth_required);
        assert!(config.probe_interval.is_zero());
        assert_eq!(config.probe_rate, 10);
        assert_eq!(config.login_threads, 2);
        assert_eq!(config.heartbeat_timeout, Duration::from_millis(300));
        assert!(Args::try_parse_from(["peerdex-server", "-p", "0", "--auth", "maybe"]).is_err());
        assert!(
            Args::try_parse_from(["peerdex-server", "-p", "0", "--login-threads", "0"]).is_err()
        );
    }

    #[test]
    fn all_flags() {
        let args = Args::try_parse_from([
            "peerdex-server",
            "-p",
            "4000",
            "--bind",
            "127.0.0.1",
            "--data-dir",
            "/tmp/d",
            "--logger",
            "localhost:9000",
            "--max-connections",
            "8",
            "--request-timeout-ms",
            "250",
        ])
        .unwrap();
        let config = args.config().unwrap();
        assert_eq!(config.port, 4000);
        assert_eq!(config.logger.as_deref(), Some("localhost:9000"));
        assert_eq!(config.max_connections, 8);
        assert_eq!(config.request_timeout, Duration::from_millis(250));
        assert!(
            Args::try_parse_from(["peerdex-server"]).is_err(),
            "port is required"
        );
        assert!(
            Args::try_parse_from(["peerdex-server", "-p", "0", "--max-connections", "0"]).is_err()
        );
    }

    #[test]
    fn tools_need_no_port_and_take_no_server_flags() {
        let args = Args::try_parse_from(["peerdex-server", "check", "--data-dir", "/d"]).unwrap();
        assert!(
            matches!(&args.command, Some(Tool::Check { data_dir }) if data_dir == &PathBuf::from("/d"))
        );
        assert!(args.config().is_none());
        let args = Args::try_parse_from(["peerdex-server", "salvage"]).unwrap();
        assert!(
            matches!(&args.command, Some(Tool::Salvage { data_dir }) if data_dir == &PathBuf::from(DEFAULT_DATA_DIR))
        );
        assert!(Args::try_parse_from(["peerdex-server", "-p", "1", "check"]).is_err());
        assert!(Args::try_parse_from(["peerdex-server", "check", "-p", "1"]).is_err());
    }
}
