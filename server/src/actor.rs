//! Who asks for a mutation: the one fact the rules need beyond the request
//! to decide what a protected account allows.
//!
//! A classic connection proves nothing about who sent it; a session proves
//! that its client knew a password at login; the directory itself acts when
//! presence ends a user's connection. The rules ([`crate::rules`]) compare
//! an actor's credential with the account's current one inside the
//! writer's batch, so that a password change and a request of an older
//! session can never both win.

use std::net::SocketAddr;
use std::sync::Arc;

/// The id of a live session, unique within one server process.
pub type SessionId = u64;

/// Who a [`crate::durable::engine::Mutation`] comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A classic one-operation connection: acts only for accounts without
    /// a password (and for none under `--auth required`).
    Classic,
    /// A framed session of the request's user.
    Session(SessionActor),
    /// The directory itself: presence disconnecting a user whose session
    /// ended or whose listener stopped answering. Allowed for every
    /// account, and only ever issued for DISCONNECT.
    Server,
}

/// What a session proved, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionActor {
    /// The session, recorded as the holder of a CONNECT it makes.
    pub id: SessionId,
    /// The argon2id PHC string this session proved at login (the
    /// account's, verified), or created at login for an account that did
    /// not exist yet (REGISTER in this session stores it). `None`: logged
    /// in without a password, which authenticates nothing.
    pub credential: Option<Arc<str>>,
    /// SET_PASSWORD only: the PHC string of the new password, hashed
    /// before the mutation was queued (never in the writer).
    pub new_credential: Option<Arc<str>>,
}

impl SessionActor {
    /// True when this session may act for an account whose current
    /// credential is `current` (`None`: no password, open to everyone).
    pub fn may_act_for(&self, current: Option<&str>) -> bool {
        match current {
            None => true,
            Some(current) => self.credential.as_deref() == Some(current),
        }
    }
}

/// Who may change the directory (`peerdex-server --auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Accounts without a password behave as PROTOCOL.md says, for
    /// everyone; protected accounts only for their authenticated sessions.
    #[default]
    Open,
    /// Every mutation needs a session with a credential: classic clients
    /// can only read, and REGISTER in a session needs a password.
    Required,
}

/// Why a CONNECT may replace the entry of a user listed as connected: the
/// server found the listed holder gone before queueing the CONNECT. The
/// rules allow the takeover only if the entry is still the one found dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// A classic entry whose listener address did not answer a probe.
    DeadAddress(SocketAddr),
    /// An entry held by a session that is no longer live.
    DeadSession(SessionId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_acts_for_an_account_only_with_its_current_credential() {
        let session = |credential: Option<&str>| SessionActor {
            id: 1,
            credential: credential.map(Arc::from),
            new_credential: None,
        };
        assert!(session(None).may_act_for(None));
        assert!(session(Some("$argon2id$a")).may_act_for(None));
        assert!(!session(None).may_act_for(Some("$argon2id$a")));
        assert!(session(Some("$argon2id$a")).may_act_for(Some("$argon2id$a")));
        assert!(!session(Some("$argon2id$a")).may_act_for(Some("$argon2id$b")));
    }
}
