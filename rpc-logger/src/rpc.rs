//! The RPC logger service (tarpc, JSON over TCP): the interface shared by
//! the directory server that sends records, this crate's logger that
//! prints them, and clients that ask it for the time.

use std::io;

use serde::{Deserialize, Serialize};
use tarpc::serde_transport::tcp;
use tarpc::tokio_serde::formats::Json;
use tokio::net::ToSocketAddrs;

/// One operation the directory server handled, as the logger prints it.
///
/// Every field is text the server took from the request (or its own
/// clock), so a printer must treat all of them as untrusted: the logger
/// escapes them (the `line` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// The USER field as received (it need not be a valid name: refused
    /// requests are recorded too).
    pub user: String,
    /// The operation the user asked for, in the shell's words: `PUBLISH`
    /// for both publish forms, other ops by their wire name.
    pub op: String,
    /// The file name, for PUBLISH and DELETE.
    pub file: Option<String>,
    /// The client's DATETIME, or the server's clock when the client sent none.
    pub datetime: String,
    /// What the client was answered, in the shell's words (`OK`, `USER DOES
    /// NOT EXIST`, ..., `FAIL`; see [`peerdex_protocol::Outcome::text`]). A string and
    /// not the enum, so that a logger older than a new outcome still prints
    /// it; `None` from a server that predates the field (and a logger that
    /// predates it ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
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
    transport
        .config_mut()
        .max_frame_length(crate::MAX_FRAME_LENGTH);
    let transport = transport.await?;
    Ok(LoggerClient::new(tarpc::client::Config::default(), transport).spawn())
}
