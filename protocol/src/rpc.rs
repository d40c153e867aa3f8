//! The RPC logger service (tarpc), shared by the server that sends records,
//! the logger that prints them, and clients that ask it for the time.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};
use tarpc::serde_transport::tcp;
use tarpc::tokio_serde::formats::Json;
use tokio::net::ToSocketAddrs;

/// One operation the directory server handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    pub user: String,
    /// The operation's wire name (`PUBLISH`, ...).
    pub op: String,
    /// The file name, for PUBLISH and DELETE.
    pub file: Option<String>,
    /// The client's DATETIME, or the server's clock when the client sent none.
    pub datetime: String,
}

impl fmt::Display for OpRecord {
    /// PROTOCOL.md's line: `<user> <OP> <datetime>` or `<user> <OP> <file> <datetime>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{} {} {} {}", self.user, self.op, file, self.datetime),
            None => write!(f, "{} {} {}", self.user, self.op, self.datetime),
        }
    }
}

/// The logger's RPC interface.
#[tarpc::service]
pub trait Logger {
    /// Prints a batch of records, in order. Returns how many were printed.
    async fn log(records: Vec<OpRecord>) -> u64;
    /// The logger's clock as a DATETIME field.
    async fn now() -> String;
}

/// Connects a logger client over TCP with the JSON transport.
pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<LoggerClient> {
    let mut transport = tcp::connect(addr, Json::default);
    transport.config_mut().max_frame_length(16 * 1024 * 1024);
    let transport = transport.await?;
    Ok(LoggerClient::new(tarpc::client::Config::default(), transport).spawn())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_follow_protocol() {
        let mut record = OpRecord {
            user: "alice".into(),
            op: "REGISTER".into(),
            file: None,
            datetime: "21/11/2026 09:05:07".into(),
        };
        assert_eq!(record.to_string(), "alice REGISTER 21/11/2026 09:05:07");
        record.op = "PUBLISH".into();
        record.file = Some("a.txt".into());
        assert_eq!(
            record.to_string(),
            "alice PUBLISH a.txt 21/11/2026 09:05:07"
        );
    }
}
