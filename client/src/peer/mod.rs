//! Peer-to-peer file transfer: serving ([`listener`], [`share`], [`published`]) and
//! downloading: [`fetch`] decides between the verified multi-source piece
//! engine [`swarm`] (over [`sources`], resumable through [`resume`]) and
//! the classic transfer of [`download`].

pub(crate) mod direct_io;
pub mod download;
pub mod fetch;
#[cfg(test)]
mod fetch_tests;
pub(crate) mod listener;
pub(crate) mod published;
pub(crate) mod resume;
mod send;
pub(crate) mod share_dir;
pub mod sources;
pub(crate) mod swarm;

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
