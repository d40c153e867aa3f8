//! Presence: whether the holder of a connected user is still there.
//!
//! A session holds its user while it lives ([`crate::session`] disconnects
//! the user when it ends); a classic CONNECT is held by its listener
//! address, which [`prober`] probes in the background. [`precheck`] is the
//! CONNECT takeover check: before a CONNECT of a user listed as connected
//! is queued, it finds out whether the listed holder is gone, so that the
//! rules may let the CONNECT replace the entry.

pub(crate) mod prober;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::actor::{SessionId, Takeover};
use crate::session::registry::Registry;
use crate::state::State;

/// Longest wait for a listener to accept a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// True when something accepts a TCP connection at `addr` within
/// `limit`. The connection is closed at once without a byte sent, which a
/// classic peer reads as a client that had nothing to ask.
pub async fn answers(addr: SocketAddr, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// What the CONNECT pre-check found about a user's listed holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Precheck {
    /// The holder is gone: the CONNECT may replace the entry.
    pub takeover: Option<Takeover>,
    /// The entry is held by this live session (told "connected elsewhere"
    /// if the CONNECT replaces it anyway).
    pub live_holder: Option<SessionId>,
}

/// Looks at `user`'s listed holder, probing a classic entry's address now
/// (at most [`PROBE_TIMEOUT`]). Nothing to find for a user not connected.
pub async fn precheck(state: &State, registry: &Registry, user: &str) -> Precheck {
    let (holder, address) = {
        let tables = state.tables();
        if !tables.is_connected(user) {
            return Precheck::default();
        }
        (tables.holder(user), tables.address(user))
    };
    match (holder, address) {
        (Some(id), _) if registry.is_live(id) => Precheck {
            takeover: None,
            live_holder: Some(id),
        },
        (Some(id), _) => Precheck {
            takeover: Some(Takeover::DeadSession(id)),
            live_holder: None,
        },
        (None, Some(addr)) if !answers(addr, PROBE_TIMEOUT).await => Precheck {
            takeover: Some(Takeover::DeadAddress(addr)),
            live_holder: None,
        },
        (None, _) => Precheck::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_listener_answers_and_a_closed_port_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(answers(addr, PROBE_TIMEOUT).await);
        drop(listener);
        assert!(!answers(addr, PROBE_TIMEOUT).await);
    }
}
