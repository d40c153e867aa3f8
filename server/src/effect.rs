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

/// One change to the directory, as an absolute assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    AddUser(String),
    /// The user, its address and all its files are gone.
    RemoveUser(String),
    SetAddress(String, SocketAddr),
    ClearAddress(String),
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
            | Effect::AddFile { user, .. }
            | Effect::RemoveFile { user, .. }
            | Effect::SetContent { user, .. } => user,
        }
    }
}
