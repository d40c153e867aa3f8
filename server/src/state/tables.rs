//! The directory in memory: registered users, connected users with their
//! address, and published files (every staged batch applied, durable or
//! not yet, see [`crate::state`]).
//!
//! This is the authority every reader and the writer's rules consult (redb
//! is only the checkpoint behind the journal, see [`crate::durable::checkpoint`]).
//! Each table is an [`EntryTable`] of wire-encoded entries:
//! - `users`: `user\0`.
//! - `connected`: `user\0ip\0port\0`, a LIST_USERS entry as sent.
//! - `files`: `user\0file\0description\0`, then for files published with
//!   PUBLISH_CONTENT the size (u64 LE) and BLAKE3 root (32 bytes). One
//!   user's files are one key range; LIST_CONTENT sends `file\0desc\0`.
//!
//! Beside them, plain maps for what no listing streams: each protected
//! account's credential, the session holding each user connected through
//! one, and when each user was last disconnected. A classic CONNECT or a
//! DISCONNECT drops the holder; UNREGISTER drops all three.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use hashbrown::HashMap;
use peerdex_protocol::field::put_field;
use peerdex_protocol::CodecError;

use super::changes::RecentChanges;
use super::entries::{EntryTable, Slice};
use crate::actor::SessionId;
use crate::effect::Effect;

/// Size and BLAKE3 root of a file published with PUBLISH_CONTENT.
pub type Content = (u64, [u8; 32]);

/// Bytes of the content trailer of a `files` entry.
const CONTENT_LEN: usize = 40;

/// One published file, borrowed from the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo<'a> {
    pub description: &'a str,
    pub content: Option<Content>,
}

/// The three tables, and which users changed in batches that may not be
/// durable yet (kept under the same lock, so that a reader sees both as
/// of the same batch).
#[derive(Debug, Clone)]
pub struct Tables {
    users: EntryTable,
    connected: EntryTable,
    files: EntryTable,
    changes: RecentChanges,
    /// The argon2id PHC string of each protected account (one with a
    /// password); accounts without one are absent.
    credentials: HashMap<Box<str>, Arc<str>>,
    /// The session holding each user connected through a session; users
    /// connected by a classic CONNECT are absent.
    holders: HashMap<Box<str>, SessionId>,
    /// When each user was last disconnected (seconds since the Unix
    /// epoch); users never disconnected are absent.
    last_seen: HashMap<Box<str>, u64>,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            users: EntryTable::new(1),
            connected: EntryTable::new(1),
            files: EntryTable::new(2),
            changes: RecentChanges::default(),
            credentials: HashMap::new(),
            holders: HashMap::new(),
            last_seen: HashMap::new(),
        }
    }
}

/// `user\0`: the key of a user in every table, and the prefix of its files.
fn user_key(user: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user.len() + 1);
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key
}

/// `user\0file\0`: the key of a file.
fn file_key(user: &str, file: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user.len() + file.len() + 2);
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key.extend_from_slice(file.as_bytes());
    key.push(0);
    key
}

/// Splits the first `n` NUL-terminated fields off `bytes`.
fn fields<const N: usize>(bytes: &[u8]) -> Option<([&[u8]; N], &[u8])> {
    let mut out = [&bytes[..0]; N];
    let mut rest = bytes;
    for field in &mut out {
        let end = rest.iter().position(|b| *b == 0)?;
        *field = &rest[..end];
        rest = &rest[end + 1..];
    }
    Some((out, rest))
}

/// The LIST_USERS entry of `user` connected at `addr`. Built once per
/// CONNECT (and per connected user at start-up), never per listing: a
/// listing copies the encoded entries.
fn connected_entry(user: &str, addr: SocketAddr) -> Result<BytesMut, CodecError> {
    let mut out = BytesMut::with_capacity(user.len() + 24);
    put_field(&mut out, user)?;
    put_field(&mut out, &addr.ip().to_string())?;
    put_field(&mut out, &addr.port().to_string())?;
    Ok(out)
}

/// Whether a user is registered and connected, from one look-up in the
/// common case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Unknown,
    Registered,
    Connected,
}

impl Presence {
    /// Looks up connected first: a connected user is registered (every
    /// table removes a user's address with the user), so the usual case,
    /// a connected user acting, costs one look-up instead of two.
    pub fn find(
        is_connected: impl FnOnce() -> bool,
        user_exists: impl FnOnce() -> bool,
    ) -> Presence {
        if is_connected() {
            Presence::Connected
        } else if user_exists() {
            Presence::Registered
        } else {
            Presence::Unknown
        }
    }
}

impl Tables {
    /// Registered and connected, see [`Presence`].
    pub fn presence(&self, user: &str) -> Presence {
        Presence::find(|| self.is_connected(user), || self.user_exists(user))
    }

    pub fn user_exists(&self, user: &str) -> bool {
        self.users.get(&user_key(user)).is_some()
    }

    pub fn is_connected(&self, user: &str) -> bool {
        self.connected.get(&user_key(user)).is_some()
    }

    /// The account's argon2id PHC string; `None` for an account without a
    /// password (or no account).
    pub fn credential(&self, user: &str) -> Option<Arc<str>> {
        self.credentials.get(user).cloned()
    }

    /// The session holding `user`'s connection; `None` when the user is
    /// not connected or connected by a classic CONNECT.
    pub fn holder(&self, user: &str) -> Option<SessionId> {
        self.holders.get(user).copied()
    }

    /// When `user` was last disconnected (seconds since the Unix epoch).
    pub fn last_seen(&self, user: &str) -> Option<u64> {
        self.last_seen.get(user).copied()
    }

    /// Every user held by a session, in no particular order: at start-up
    /// these sessions died with the previous process.
    pub fn held_users(&self) -> Vec<String> {
        self.holders.keys().map(|user| user.to_string()).collect()
    }

    /// The address `user` is connected at.
    pub fn address(&self, user: &str) -> Option<SocketAddr> {
        let entry = self.connected.get(&user_key(user))?;
        let ([_, ip, port], _) = fields::<3>(entry)?;
        let ip: IpAddr = std::str::from_utf8(ip).ok()?.parse().ok()?;
        let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    }

    pub fn has_file(&self, user: &str, file: &str) -> bool {
        self.files.get(&file_key(user, file)).is_some()
    }

    /// `user`'s `file`, if published.
    pub fn file(&self, user: &str, file: &str) -> Option<FileInfo<'_>> {
        let entry = self.files.get(&file_key(user, file))?;
        let ([_, _, description], rest) = fields::<3>(entry)?;
        let content = (rest.len() == CONTENT_LEN).then(|| {
            let mut size = [0u8; 8];
            size.copy_from_slice(&rest[..8]);
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&rest[8..]);
            (u64::from_le_bytes(size), hash)
        });
        Some(FileInfo {
            description: std::str::from_utf8(description).ok()?,
            content,
        })
    }

    /// Every connected user's LIST_USERS entry, in name order.
    pub fn connected_entries(&self) -> Slice {
        self.connected.all()
    }

    /// `user`'s `files` entries, in file name order.
    pub fn file_entries(&self, user: &str) -> Slice {
        self.files.with_prefix(&user_key(user))
    }

    /// Every user name, in order.
    #[cfg(test)]
    pub fn user_names(&self) -> Vec<String> {
        self.users
            .all()
            .entries()
            .map(|e| String::from_utf8_lossy(&e[..e.len().saturating_sub(1)]).into_owned())
            .collect()
    }

    /// Heap bytes held by the three tables.
    pub fn heap_bytes(&self) -> usize {
        self.users.heap_bytes() + self.connected.heap_bytes() + self.files.heap_bytes()
    }

    /// Number of registered users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The last batch that changed `user` if it may not be durable yet; 0
    /// when every change of `user` is durable. An answer about `user` may
    /// be sent once the journal is synced up to it.
    pub fn last_change(&self, user: &str) -> u64 {
        self.changes.last(user)
    }

    /// Records that batch `seq` changed `user` (every batch up to
    /// `durable` is durable: older records may be forgotten).
    pub fn note_change(&mut self, user: &str, seq: u64, durable: u64) {
        self.changes.note(user, seq, durable);
    }

    /// Applies one committed change.
    pub fn apply(&mut self, effect: &Effect) -> Result<(), CodecError> {
        match effect {
            Effect::AddUser(user) => {
                let mut entry = BytesMut::with_capacity(user.len() + 1);
                put_field(&mut entry, user)?;
                self.users.insert(&entry);
            }
            Effect::RemoveUser(user) => {
                let key = user_key(user);
                self.users.remove(&key);
                self.connected.remove(&key);
                self.files.remove_prefix(&key);
                self.credentials.remove(user.as_str());
                self.holders.remove(user.as_str());
                self.last_seen.remove(user.as_str());
            }
            Effect::SetAddress(user, addr) => {
                self.connected.insert(&connected_entry(user, *addr)?);
                self.holders.remove(user.as_str());
            }
            Effect::SetHeldAddress {
                user,
                addr,
                session,
            } => {
                self.connected.insert(&connected_entry(user, *addr)?);
                self.holders.insert(user.as_str().into(), *session);
            }
            Effect::ClearAddress(user) => {
                self.connected.remove(&user_key(user));
                self.holders.remove(user.as_str());
            }
            Effect::SetCredential { user, phc } => {
                self.credentials
                    .insert(user.as_str().into(), Arc::from(phc.as_str()));
            }
            Effect::SetLastSeen { user, at } => {
                self.last_seen.insert(user.as_str().into(), *at);
            }
            Effect::AddFile {
                user,
                file,
                description,
            } => {
                let mut entry =
                    BytesMut::with_capacity(user.len() + file.len() + description.len() + 3);
                put_field(&mut entry, user)?;
                put_field(&mut entry, file)?;
                put_field(&mut entry, description)?;
                self.files.insert(&entry);
            }
            Effect::RemoveFile { user, file } => {
                self.files.remove(&file_key(user, file));
            }
            Effect::SetContent {
                user,
                file,
                size,
                hash,
            } => {
                // Journaled right after its AddFile: the entry is there.
                let Some(old) = self.files.get(&file_key(user, file)) else {
                    return Ok(());
                };
                let Some((_, rest)) = fields::<3>(old) else {
                    return Ok(());
                };
                let mut entry = old[..old.len() - rest.len()].to_vec();
                entry.extend_from_slice(&size.to_le_bytes());
                entry.extend_from_slice(hash);
                self.files.insert(&entry);
            }
        }
        Ok(())
    }
}

/// The LIST_CONTENT entry (`file\0description\0`) inside a `files` entry:
/// without the owner's field and the content trailer.
pub fn listed_file(entry: &[u8]) -> &[u8] {
    match fields::<3>(entry) {
        Some(([user, _, _], rest)) => &entry[user.len() + 1..entry.len() - rest.len()],
        None => &[],
    }
}
