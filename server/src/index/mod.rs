//! In-memory indexes derived from the store: file names for SEARCH
//! ([`search`]) and content hashes for FIND_SOURCES ([`sources`]).
//!
//! Invariant: the indexes hold exactly the committed state. They are
//! built from a read snapshot when the store opens (after journal replay)
//! and then updated only by the store's single writer, from the effects of
//! each transaction, right AFTER that transaction committed. A reader
//! therefore never finds an entry that is not committed; it may briefly
//! miss one that was just committed (it is then also answered as missing,
//! exactly as if it had arrived a moment earlier).

pub mod glob;
pub mod search;
pub mod sources;

use crate::effect::Effect;

pub use glob::{Pattern, PatternError};
pub use search::{Hit, SearchIndex};
pub use sources::{Digest, SourcesIndex};

/// Both indexes, kept in step (entry ids are shared).
#[derive(Default)]
pub struct Indexes {
    pub names: SearchIndex,
    pub content: SourcesIndex,
}

impl Indexes {
    /// Applies the effects of one committed transaction, in order.
    pub fn apply(&mut self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::AddUser(_) => {}
                Effect::RemoveUser(user) => {
                    for id in self.names.remove_owner(user) {
                        self.content.remove(id);
                    }
                }
                Effect::SetAddress(user, _) => self.names.set_connected(user, true),
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
