//! The writer's view of one group-commit batch: the tables as earlier
//! batches left them, plus the batch's own changes so far.
//!
//! Why an overlay: operations of one batch must see each other in order
//! (REGISTER then CONNECT of the same user in one batch), but the shared
//! tables may change only once the batch's journal record is written: if
//! that write fails, every operation of the batch fails and nothing
//! changes. So the rules ([`crate::rules::apply`]) read the [`Tables`]
//! through this overlay and record [`Effect`]s; the writer journals the
//! effects and only then applies them to the shared tables (readers still
//! wait for the record's sync before answering, [`crate::state`]).

use std::net::SocketAddr;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use super::tables::{Presence, Tables};
use crate::actor::SessionId;
use crate::effect::Effect;

/// The committed tables seen through one batch's uncommitted changes.
///
/// The overlay borrows its keys from the batch's requests, which outlive
/// it: the writer runs every mutation through it, and a `String` per key
/// would be most of the writer's allocations.
pub struct Batch<'a> {
    /// The committed state (read lock held by the caller).
    base: &'a Tables,
    /// Users registered (true) or unregistered (false) in this batch.
    users: HashMap<&'a str, bool>,
    /// Users connected (at this address) or disconnected (`None`) in
    /// this batch.
    connected: HashMap<&'a str, Option<SocketAddr>>,
    /// The session holding a user, or none (classic CONNECT, DISCONNECT,
    /// UNREGISTER), as this batch set it.
    holders: HashMap<&'a str, Option<SessionId>>,
    /// Credentials set (or, by UNREGISTER, removed) in this batch.
    credentials: HashMap<&'a str, Option<Arc<str>>>,
    /// Files published (true) or deleted (false) in this batch, by owner.
    files: HashMap<&'a str, HashMap<&'a str, bool>>,
    /// Users unregistered in this batch: their committed files are gone.
    cleared: HashSet<&'a str>,
    /// What the batch changed, in order: journaled, then applied.
    effects: Vec<Effect>,
}

impl<'a> Batch<'a> {
    pub fn new(base: &'a Tables) -> Batch<'a> {
        Batch {
            base,
            users: HashMap::new(),
            connected: HashMap::new(),
            holders: HashMap::new(),
            credentials: HashMap::new(),
            files: HashMap::new(),
            cleared: HashSet::new(),
            effects: Vec::new(),
        }
    }

    /// The effects recorded so far.
    pub fn into_effects(self) -> Vec<Effect> {
        self.effects
    }

    pub fn user_exists(&self, user: &str) -> bool {
        match self.users.get(user) {
            Some(exists) => *exists,
            None => self.base.user_exists(user),
        }
    }

    /// Registered and connected, see [`Presence`].
    pub fn presence(&self, user: &str) -> Presence {
        Presence::find(|| self.is_connected(user), || self.user_exists(user))
    }

    pub fn is_connected(&self, user: &str) -> bool {
        match self.connected.get(user) {
            Some(addr) => addr.is_some(),
            None => !self.cleared.contains(user) && self.base.is_connected(user),
        }
    }

    /// The address `user` is connected at.
    pub fn address(&self, user: &str) -> Option<SocketAddr> {
        match self.connected.get(user) {
            Some(addr) => *addr,
            None if self.cleared.contains(user) => None,
            None => self.base.address(user),
        }
    }

    /// The session holding `user`'s connection (`None`: not connected, or
    /// connected by a classic CONNECT).
    pub fn holder(&self, user: &str) -> Option<SessionId> {
        match self.holders.get(user) {
            Some(holder) => *holder,
            None if self.cleared.contains(user) => None,
            None => self.base.holder(user),
        }
    }

    /// The account's current credential (`None`: no password).
    pub fn credential(&self, user: &str) -> Option<Arc<str>> {
        match self.credentials.get(user) {
            Some(credential) => credential.clone(),
            None if self.cleared.contains(user) => None,
            None => self.base.credential(user),
        }
    }

    pub fn has_file(&self, user: &str, file: &str) -> bool {
        match self.files.get(user).and_then(|files| files.get(file)) {
            Some(published) => *published,
            None => !self.cleared.contains(user) && self.base.has_file(user, file),
        }
    }

    fn mark_file(&mut self, user: &'a str, file: &'a str, published: bool) {
        self.files.entry(user).or_default().insert(file, published);
    }

    pub fn add_user(&mut self, user: &'a str) {
        self.users.insert(user, true);
        self.effects.push(Effect::AddUser(user.to_string()));
    }

    /// Removes the user, its address and all its files.
    pub fn remove_user(&mut self, user: &'a str) {
        self.users.insert(user, false);
        self.connected.remove(user);
        self.holders.remove(user);
        self.credentials.remove(user);
        self.files.remove(user);
        self.cleared.insert(user);
        self.effects.push(Effect::RemoveUser(user.to_string()));
    }

    /// A classic CONNECT: connected at `addr`, held by no session.
    pub fn set_address(&mut self, user: &'a str, addr: SocketAddr) {
        self.connected.insert(user, Some(addr));
        self.holders.insert(user, None);
        self.effects
            .push(Effect::SetAddress(user.to_string(), addr));
    }

    /// A CONNECT through `session`, which holds the user from now on.
    pub fn set_held_address(&mut self, user: &'a str, addr: SocketAddr, session: SessionId) {
        self.connected.insert(user, Some(addr));
        self.holders.insert(user, Some(session));
        self.effects.push(Effect::SetHeldAddress {
            user: user.to_string(),
            addr,
            session,
        });
    }

    pub fn clear_address(&mut self, user: &'a str) {
        self.connected.insert(user, None);
        self.holders.insert(user, None);
        self.effects.push(Effect::ClearAddress(user.to_string()));
    }

    /// Protects the account with `phc` (an argon2id PHC string).
    pub fn set_credential(&mut self, user: &'a str, phc: Arc<str>) {
        self.effects.push(Effect::SetCredential {
            user: user.to_string(),
            phc: phc.to_string(),
        });
        self.credentials.insert(user, Some(phc));
    }

    /// Records when `user` was last disconnected.
    pub fn set_last_seen(&mut self, user: &str, at: u64) {
        self.effects.push(Effect::SetLastSeen {
            user: user.to_string(),
            at,
        });
    }

    /// Adds a file the caller checked is not yet published.
    pub fn add_file(&mut self, user: &'a str, file: &'a str, description: &str) {
        self.mark_file(user, file, true);
        self.effects.push(Effect::AddFile {
            user: user.to_string(),
            file: file.to_string(),
            description: description.to_string(),
        });
    }

    /// Records the size and hash of a file just added (PUBLISH_CONTENT).
    pub fn set_content(&mut self, user: &str, file: &str, size: u64, hash: &[u8; 32]) {
        self.effects.push(Effect::SetContent {
            user: user.to_string(),
            file: file.to_string(),
            size,
            hash: *hash,
        });
    }

    /// Removes a file; true when it was published.
    pub fn remove_file(&mut self, user: &'a str, file: &'a str) -> bool {
        if !self.has_file(user, file) {
            return false;
        }
        self.mark_file(user, file, false);
        self.effects.push(Effect::RemoveFile {
            user: user.to_string(),
            file: file.to_string(),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> Tables {
        let mut tables = Tables::default();
        for effect in [
            Effect::AddUser("al".into()),
            Effect::SetAddress("al".into(), "10.0.0.1:80".parse().unwrap()),
            Effect::AddFile {
                user: "al".into(),
                file: "f".into(),
                description: "d".into(),
            },
        ] {
            tables.apply(&effect).unwrap();
        }
        tables
    }

    #[test]
    fn sees_its_own_changes_and_leaves_the_base_alone() {
        let base = committed();
        let mut batch = Batch::new(&base);
        assert!(batch.user_exists("al") && batch.is_connected("al") && batch.has_file("al", "f"));
        batch.remove_user("al");
        assert!(
            !batch.user_exists("al") && !batch.is_connected("al") && !batch.has_file("al", "f")
        );
        batch.add_user("al");
        assert!(batch.user_exists("al") && !batch.is_connected("al"));
        assert!(
            !batch.has_file("al", "f"),
            "files of the old registration are gone"
        );
        batch.add_file("al", "g", "");
        assert!(batch.has_file("al", "g"));
        assert!(batch.remove_file("al", "g"));
        assert!(!batch.remove_file("al", "g"));
        let effects = batch.into_effects();
        assert_eq!(effects.len(), 4);
        // The committed tables did not change.
        assert!(base.has_file("al", "f") && base.is_connected("al"));
        // Applying the effects gives what the batch saw.
        let mut after = base.clone();
        for effect in &effects {
            after.apply(effect).unwrap();
        }
        assert!(after.user_exists("al") && !after.is_connected("al"));
        assert!(!after.has_file("al", "f") && !after.has_file("al", "g"));
    }

    #[test]
    fn sees_its_own_credentials_holders_and_addresses() {
        let mut base = committed();
        base.apply(&Effect::SetCredential {
            user: "al".into(),
            phc: "h1".into(),
        })
        .unwrap();
        let held: SocketAddr = "10.0.0.2:81".parse().unwrap();
        let mut batch = Batch::new(&base);
        assert_eq!(batch.credential("al").as_deref(), Some("h1"));
        assert_eq!(batch.address("al"), Some("10.0.0.1:80".parse().unwrap()));
        assert_eq!(batch.holder("al"), None);
        batch.set_held_address("al", held, 9);
        batch.set_credential("al", Arc::from("h2"));
        assert_eq!(
            (batch.address("al"), batch.holder("al")),
            (Some(held), Some(9))
        );
        assert_eq!(batch.credential("al").as_deref(), Some("h2"));
        batch.clear_address("al");
        assert_eq!((batch.address("al"), batch.holder("al")), (None, None));
        batch.set_held_address("al", held, 10);
        batch.remove_user("al");
        assert_eq!(
            (
                batch.address("al"),
                batch.holder("al"),
                batch.credential("al")
            ),
            (None, None, None)
        );
        batch.add_user("al");
        assert_eq!(
            batch.credential("al"),
            None,
            "a new account has no password"
        );
        batch.set_address("al", held);
        assert_eq!(batch.holder("al"), None);
        let effects = batch.into_effects();
        assert_eq!(
            base.credential("al").as_deref(),
            Some("h1"),
            "base unchanged"
        );
        let mut after = base.clone();
        for effect in &effects {
            after.apply(effect).unwrap();
        }
        assert_eq!(
            (
                after.address("al"),
                after.holder("al"),
                after.credential("al")
            ),
            (Some(held), None, None)
        );
    }
}
