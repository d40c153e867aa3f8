//! Peer-to-peer file transfer: serving ([`listener`], [`share`], [`published`]) and
//! downloading ([`download`]).

pub mod download;
pub mod listener;
pub mod published;
pub mod share;

use std::fmt;

/// Where a peer listens, as the directory listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// IP (or host name, for other directory servers) of the peer.
    pub host: String,
    /// Its listening port.
    pub port: u16,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}
