//! [`Effect`]: one change to the directory, the unit every part of the
//! server that holds or stores the directory shares.
//!
//! The rules ([`crate::rules`]) decide what an operation changes and record
//! it as effects in the batch overlay ([`crate::state::Batch`]); the
//! journal writes them ([`crate::durable::journal`]); the in-memory tables
//! ([`crate::state`]) and the search indexes ([`crate::index`]) apply them;
//! the checkpoint writes their net change to redb
//! ([`crate::durable::net_effects`], [`crate::durable::store`]).
//!
//! An effect is absolute (set or remove a key, never "do PUBLISH"), so that
//! applying it again over a state that already holds it changes nothing:
//! replaying a journal segment is idempotent.

use std::net::SocketAddr;

use crate::actor::SessionId;

/// One change to the directory, as an absolute assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    AddUser(String),
    /// The user, its address, its files, its credential, its holder and
    /// its last-seen time are gone.
    RemoveUser(String),
    /// A classic CONNECT: the user's LIST_USERS entry, held by no session.
    SetAddress(String, SocketAddr),
    /// The user is no longer connected (nor held by any session).
    ClearAddress(String),
    /// The account's argon2id PHC string: it is protected by it from now
    /// on (REGISTER in a session with a password, SET_PASSWORD).
    SetCredential {
        user: String,
        phc: String,
    },
    /// A CONNECT through a session: the LIST_USERS entry as for
    /// [`Effect::SetAddress`], held by `session` while it lives.
    SetHeldAddress {
        user: String,
        addr: SocketAddr,
        session: SessionId,
    },
    /// When the user was last disconnected, in seconds since the Unix
    /// epoch (WHOIS's "last seen").
    SetLastSeen {
        user: String,
        at: u64,
    },
    AddFile {
        user: String,
        file: String,
        description: String,
    },
    RemoveFile {
        user: String,
        file: String,
    },
    /// The size and BLAKE3 root of a published file (PUBLISH_CONTENT);
    /// always journaled right after its `AddFile`.
    SetContent {
        user: String,
        file: String,
        size: u64,
        hash: [u8; 32],
    },
}

impl Effect {
    /// The user whose data the effect changes.
    pub fn user(&self) -> &str {
        match self {
            Effect::AddUser(user)
            | Effect::RemoveUser(user)
            | Effect::SetAddress(user, _)
            | Effect::ClearAddress(user)
            | Effect::SetCredential { user, .. }
            | Effect::SetHeldAddress { user, .. }
            | Effect::SetLastSeen { user, .. }
            | Effect::AddFile { user, .. }
            | Effect::RemoveFile { user, .. }
            | Effect::SetContent { user, .. } => user,
        }
    }
}
