//! Command-line arguments.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::server::Config;

/// peerdex directory server.
#[derive(Debug, Parser)]
#[command(name = "peerdex-server", version, about)]
pub struct Args {
    /// TCP port to listen on (0 = let the OS choose; the chosen port is printed).
    #[arg(short = 'p', long = "port")]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Directory holding the database (created if missing).
    #[arg(long, default_value = "./peerdex-data")]
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
}

impl Args {
    /// The server configuration these arguments describe.
    pub fn config(&self) -> Config {
        Config {
            bind: self.bind,
            port: self.port,
            data_dir: self.data_dir.clone(),
            logger: self.logger.clone(),
            max_connections: self.max_connections as usize,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let args = Args::try_parse_from(["peerdex-server", "-p", "0"]).unwrap();
        let config = args.config();
        assert_eq!(config.bind.to_string(), "0.0.0.0");
        assert_eq!(config.data_dir, PathBuf::from("./peerdex-data"));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.request_timeout, Duration::from_millis(5000));
        assert_eq!(config.logger, None);
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
        let config = args.config();
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
}
