//! Command-line arguments of the `peerdex` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// peerdex shell: talks to a directory server and shares files with peers.
#[derive(Debug, Clone, Parser)]
#[command(name = "peerdex", version = env!("PEERDEX_VERSION"), about)]
pub struct Args {
    /// Host name or IP address of the directory server.
    #[arg(short = 's', long = "server")]
    pub server: String,

    /// TCP port of the directory server.
    #[arg(short = 'p', long = "port")]
    pub port: u16,

    /// Directory whose files this shell serves to peers (default: the
    /// current directory). Only published files inside it are served.
    #[arg(long, value_name = "DIR")]
    pub share_dir: Option<PathBuf>,

    /// Run `SHARE DIR` right after a successful CONNECT: publish every
    /// regular file under DIR (a path inside the share dir).
    #[arg(long, value_name = "DIR")]
    pub share: Option<PathBuf>,

    /// Address the peer listener binds on CONNECT (default 0.0.0.0:0: all
    /// interfaces, a port chosen by the OS).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// RPC logger to ask for the DATETIME of each operation (default: the
    /// local clock).
    #[arg(long, value_name = "HOST:PORT")]
    pub time_service: Option<String>,

    /// History file of the interactive editor (default $HOME/.peerdex_history).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,

    /// Where the client remembers what each directory server speaks
    /// (default $XDG_STATE_HOME/peerdex, else ~/.local/state/peerdex).
    #[arg(long, value_name = "DIR", env = "PEERDEX_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// File whose first line is the login password when stdin is not a
    /// terminal (else PEERDEX_PASSWORD, else none). Never on the command line.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// File whose first line is PASSWD's new password when stdin is not a
    /// terminal (else PEERDEX_NEW_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_flags() {
        let args = Args::try_parse_from([
            "peerdex",
            "-s",
            "localhost",
            "-p",
            "4000",
            "--share-dir",
            "/tmp",
            "--listen",
            "127.0.0.1:0",
            "--time-service",
            "127.0.0.1:5000",
            "--history",
            "/tmp/h",
        ])
        .unwrap();
        assert_eq!(args.server, "localhost");
        assert_eq!(args.port, 4000);
        assert_eq!(args.listen, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn server_and_port_are_required() {
        assert!(Args::try_parse_from(["peerdex", "-s", "h"]).is_err());
        assert!(Args::try_parse_from(["peerdex", "-p", "1"]).is_err());
    }
}
