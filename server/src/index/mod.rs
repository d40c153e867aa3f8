//! In-memory indexes over the tables: file names for SEARCH ([`search`])
//! and content hashes for FIND_SOURCES ([`sources`]).
//!
//! Invariants:
//! - The indexes hold the same batches as the tables
//!   ([`crate::state::State`]): built from the store at start-up (after
//!   journal replay), then changed only by the group-commit writer, from
//!   each batch's effects, right after the tables, under their own lock. A
//!   reader of the indexes therefore finds each hit in the tables too, or,
//!   for an entry just removed, leaves it out; it may briefly miss an
//!   entry just added (answered as if it had arrived a moment later).
//! - Like the tables, they may hold batches whose journal sync is still
//!   running: SEARCH and FIND_SOURCES wait until everything applied is
//!   durable before replying (`connection.rs`, through
//!   [`crate::durable::writer::Durability`]).

pub mod glob;
pub mod search;
pub mod sources;

use crate::effect::Effect;

pub use glob::Pattern;
pub use search::SearchIndex;
pub use sources::{Digest, SourcesIndex};

/// Both indexes, kept in step (entry ids are shared).
#[derive(Default)]
pub struct Indexes {
    /// File names, for SEARCH; owns the entry ids.
    pub names: SearchIndex,
    /// Size and root of files published with them, for FIND_SOURCES.
    pub content: SourcesIndex,
}

impl Indexes {
    /// Applies the effects of one batch (or, at start-up, of one stored
    /// row), in order.
    pub fn apply(&mut self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::AddUser(_) => {}
                Effect::RemoveUser(user) => {
                    for id in self.names.remove_owner(user) {
                        self.content.remove(id);
                    }
                }
                Effect::SetAddress(user, _) | Effect::SetHeldAddress { user, .. } => {
                    self.names.set_connected(user, true)
                }
                Effect::SetCredential { .. } | Effect::SetLastSeen { .. } => {}
                Effect::ClearAddress(user) => self.names.set_connected(user, false),
                Effect::AddFile { user, file, .. } => {
                    self.names.add(user, file);
                }
                Effect::RemoveFile { user, file } => {
                    if let Some(id) = self.names.remove(user, file) {
                        self.content.remove(id);
                    }
                }
                Effect::SetContent {
                    user,
                    file,
                    size,
                    hash,
                } => {
                    let id = self.names.add(user, file);
                    self.content.set(id, *size, *hash);
                }
            }
        }
        if self.names.wants_compaction() {
            let remap = self.names.compact();
            self.content.remap(&remap);
        }
    }
}
