//! Where the directory's state is stored: one redb database file in the data
//! directory.
//!
//! Tables are keyed so that the cost of an operation does not grow with the
//! number of users:
//! - `users`: name -> `()`; who is registered.
//! - `connected`: name -> the IP and PORT fields of the user's LIST_USERS
//!   entry, already encoded (`ip\0port\0`): a listing copies them instead
//!   of formatting an address per entry.
//! - `files`: `(user, file)` -> description; one user's files are one range,
//!   and LIST_CONTENT counts them by walking that range (no per-user counter
//!   table: every table a mutation touches costs redb copy-on-write pages
//!   and a `pwrite` per commit, see docs/PERFORMANCE.md).
//! - `file_content`: `(user, file)` -> size (u64 LE) and BLAKE3 root (32
//!   bytes), only for files published with PUBLISH_CONTENT. A separate
//!   table so that classic PUBLISH and LIST_CONTENT touch exactly what they
//!   touched before.
//! - `peerdex_meta`: `schema_version` -> version of this layout.
//!
//! Version 2 had no `file_content` table; opening it creates the table and
//! sets version 3 (entries published before stay without size and hash).
//!
//! Version 1 stored the address as binary (`[4, a, b, c, d, port]`) and kept
//! a `file_counts` table; [`Store::open`] migrates such a database in one
//! transaction.
//!
//! Writes only happen through [`Store::write`], which the group-commit writer
//! ([`crate::commit`]) calls: the transaction's effects are appended to the
//! write-ahead [`Journal`] and synced, and only then is the redb transaction
//! committed, without its own fsync; every [`CHECKPOINT_BYTES`] of journal
//! one durable redb commit empties it. Reads go through a [`ReadView`], one
//! consistent snapshot, which never sees a change before it is durable in
//! the journal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use bytes::BytesMut;
use peerdex_protocol::field::put_field;
use peerdex_protocol::reply::put_content_entry;
use peerdex_protocol::CodecError;
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, TableHandle, WriteTransaction,
};
use thiserror::Error;

use crate::addr_text::{IpText, PortText};
use crate::index::Indexes;
use crate::journal::{Effect, Journal, JournalError, CHECKPOINT_BYTES};

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "peerdex.redb";

/// Version of the table layout described in the module doc.
pub const SCHEMA_VERSION: u64 = 3;

const META: TableDefinition<&str, u64> = TableDefinition::new("peerdex_meta");
const SCHEMA_KEY: &str = "schema_version";
const USERS: TableDefinition<&str, ()> = TableDefinition::new("users");
const CONNECTED: TableDefinition<&str, &[u8]> = TableDefinition::new("connected");
const FILES: TableDefinition<(&str, &str), &str> = TableDefinition::new("files");
const CONTENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("file_content");
/// Version 1 only: number of files per user.
const FILE_COUNTS_V1: TableDefinition<&str, u64> = TableDefinition::new("file_counts");

/// Why the store could not be opened, read or written.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("database {path} is corrupt: redb panicked while opening it")]
    OpenPanicked { path: PathBuf },
    #[error("database {path} is not a peerdex database (it has tables but no schema version)")]
    Foreign { path: PathBuf },
    #[error("database {path} has schema version {found}, this server supports {SCHEMA_VERSION}")]
    SchemaVersion { path: PathBuf, found: u64 },
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("stored address of user {0:?} is corrupt")]
    CorruptAddress(String),
    #[error(transparent)]
    Encode(#[from] CodecError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("a journaled change could not be applied to the database; restart the server to replay the journal")]
    Diverged,
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(err: $ty) -> Self {
                StoreError::Redb(err.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// The directory's database.
pub struct Store {
    /// The open redb database; `Database` is `Sync`, readers and the writer
    /// share it.
    db: Database,
    /// The database file, for error messages.
    path: PathBuf,
    /// The write-ahead journal; taken by the one writer per transaction.
    journal: Mutex<JournalState>,
    /// SEARCH / FIND_SOURCES indexes: built at open, updated by the writer
    /// after each commit (see [`crate::index`]).
    indexes: RwLock<Indexes>,
}

/// The journal and whether the database still matches it.
#[derive(Debug)]
struct JournalState {
    journal: Journal,
    /// Set when a change was journaled but its redb commit failed: the
    /// database no longer holds what the journal says, so every later write
    /// fails until a restart replays the journal.
    diverged: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the database in `dir`, creating `dir` if missing.
    /// A corrupt, foreign or newer database is an error naming its path,
    /// never a silently empty directory.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE_NAME);
        let open_err = |source: redb::Error| StoreError::Open {
            path: path.clone(),
            source,
        };
        // redb trusts a cleanly closed file and may panic on one altered
        // behind its back: turn that into an error too.
        let opened = catch_unwind(AssertUnwindSafe(|| {
            redb::Builder::new()
                .set_cache_size(256 * 1024 * 1024)
                .create(&path)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(err)) => return Err(open_err(err.into())),
            Err(_) => return Err(StoreError::OpenPanicked { path }),
        };
        let (journal, replay) = Journal::open(dir)?;
        let store = Store {
            db,
            path,
            journal: Mutex::new(JournalState {
                journal,
                diverged: false,
            }),
            indexes: RwLock::new(Indexes::default()),
        };
        store.check_schema()?;
        store.replay(&replay)?;
        store.build_indexes()?;
        Ok(store)
    }

    /// Builds the in-memory indexes from the committed state.
    fn build_indexes(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let mut indexes = Indexes::default();
        for entry in txn.open_table(CONNECTED)?.iter()? {
            let (name, _) = entry?;
            indexes.names.set_connected(name.value(), true);
        }
        for entry in txn.open_table(FILES)?.iter()? {
            let (key, _) = entry?;
            let (user, file) = key.value();
            indexes.names.add(user, file);
        }
        for entry in txn.open_table(CONTENT)?.iter()? {
            let (key, value) = entry?;
            let (user, file) = key.value();
            if let (Some(id), Some((size, hash))) = (
                indexes.names.find(user, file),
                decode_content(value.value()),
            ) {
                indexes.content.set(id, size, hash);
            }
        }
        tracing::info!(files = indexes.names.len(), "search index built");
        *self.indexes.write().unwrap_or_else(|p| p.into_inner()) = indexes;
        Ok(())
    }

    /// The SEARCH / FIND_SOURCES indexes, for reading.
    pub fn indexes(&self) -> RwLockReadGuard<'_, Indexes> {
        // A panic in an index update leaves the index usable (every
        // update is a few field writes); serving it beats failing forever.
        self.indexes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the schema version, initialising a brand-new database.
    fn check_schema(&self) -> Result<(), StoreError> {
        let path = || self.path.clone();
        let txn = self.db.begin_write()?;
        let has_meta = txn.list_tables()?.any(|t| t.name() == META.name());
        if has_meta {
            let meta = txn.open_table(META)?;
            let found = meta.get(SCHEMA_KEY)?.map(|v| v.value());
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(1) => {
                    drop(meta);
                    migrate_from_v1(&txn)?;
                    migrate_from_v2(&txn)?;
                }
                Some(2) => {
                    drop(meta);
                    migrate_from_v2(&txn)?;
                }
                Some(found) => {
                    return Err(StoreError::SchemaVersion {
                        path: path(),
                        found,
                    })
                }
                None => return Err(StoreError::Foreign { path: path() }),
            }
        } else {
            if txn.list_tables()?.next().is_some() || txn.list_multimap_tables()?.next().is_some() {
                return Err(StoreError::Foreign { path: path() });
            }
            txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
        }
        // Create every table, so that readers never meet a missing one.
        txn.open_table(USERS)?;
        txn.open_table(CONNECTED)?;
        txn.open_table(FILES)?;
        txn.open_table(CONTENT)?;
        txn.commit()?;
        Ok(())
    }

    /// Applies journal `effects` left by a previous run in one durable
    /// transaction, then empties the journal.
    fn replay(&self, effects: &[Effect]) -> Result<(), StoreError> {
        let mut state = self.lock_journal()?;
        if !effects.is_empty() {
            let txn = self.db.begin_write()?;
            {
                let mut tables = WriteTables::open(&txn)?;
                for effect in effects {
                    tables.apply_effect(effect)?;
                }
            }
            txn.commit()?;
            tracing::info!(effects = effects.len(), "journal replayed");
        }
        state.journal.reset()?;
        Ok(())
    }

    fn lock_journal(&self) -> Result<MutexGuard<'_, JournalState>, StoreError> {
        // A panic while holding the lock left no half-written record that
        // `append` would not detect; the flag below still guards the data.
        Ok(self.journal.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `apply` inside one write transaction and makes it durable if it
    /// succeeded: its effects are appended to the journal and synced, then
    /// the transaction is committed (visible to readers) without a redb
    /// fsync. On error nothing is committed.
    pub fn write<T>(
        &self,
        apply: impl FnOnce(&mut WriteTables<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock_journal()?;
        if state.diverged {
            return Err(StoreError::Diverged);
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let result = {
            let mut tables = WriteTables::open(&txn)?;
            apply(&mut tables).and_then(|value| {
                if !tables.effects.is_empty() {
                    state.journal.append(&tables.effects)?;
                }
                Ok((value, std::mem::take(&mut tables.effects)))
            })
        };
        let (value, effects) = match result {
            Ok(value) => value,
            Err(err) => {
                // Abort errors hide nothing the caller does not already know.
                let _ = txn.abort();
                return Err(err);
            }
        };
        if let Err(err) = txn.commit() {
            tracing::error!(error = %err, "journaled transaction failed to commit");
            state.diverged = true;
            return Err(StoreError::Diverged);
        }
        // Committed: only now may readers of the indexes see the change.
        // Still under the journal lock, so index updates follow commit order.
        if !effects.is_empty() {
            self.indexes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(&effects);
        }
        if state.journal.len() >= CHECKPOINT_BYTES {
            // The change is already durable in the journal: a failed
            // checkpoint is retried after the next write.
            if let Err(err) = self.checkpoint(&mut state) {
                tracing::warn!(error = %err, "checkpoint failed, keeping the journal");
            }
        }
        Ok(value)
    }

    /// One durable redb commit (which persists every earlier non-durable
    /// one), then the journal is emptied.
    fn checkpoint(&self, state: &mut JournalState) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        state.journal.reset()?;
        Ok(())
    }

    /// A consistent snapshot of the committed state.
    pub fn read(&self) -> Result<ReadView, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(ReadView {
            users: txn.open_table(USERS)?,
            connected: txn.open_table(CONNECTED)?,
            files: txn.open_table(FILES)?,
            content: txn.open_table(CONTENT)?,
            _txn: txn,
        })
    }

    /// Closes the database, reporting what dropping it would hide.
    pub fn close(self) -> Result<(), StoreError> {
        {
            let mut state = self.lock_journal()?;
            if !state.diverged {
                self.checkpoint(&mut state)?;
            }
        }
        self.db.close()?;
        Ok(())
    }
}

/// Rewrites a version-1 database as version 2 inside `txn`: addresses from
/// binary to their encoded fields, and the `file_counts` table dropped.
fn migrate_from_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut connected = txn.open_table(CONNECTED)?;
    let mut rows = Vec::new();
    for entry in connected.iter()? {
        let (name, value) = entry?;
        let name = name.value().to_string();
        let addr = decode_addr_v1(value.value())
            .ok_or_else(|| StoreError::CorruptAddress(name.clone()))?;
        rows.push((name, encode_addr(addr)?));
    }
    for (name, value) in rows {
        connected.insert(name.as_str(), &value[..])?;
    }
    drop(connected);
    txn.delete_table(FILE_COUNTS_V1)?;
    txn.open_table(META)?.insert(SCHEMA_KEY, 2)?;
    tracing::info!("database migrated from schema version 1 to 2");
    Ok(())
}

/// Rewrites a version-2 database as version 3 inside `txn`: adds the
/// `file_content` table (empty: earlier entries have no size nor hash).
fn migrate_from_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CONTENT)?;
    txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
    tracing::info!("database migrated from schema version 2 to {SCHEMA_VERSION}");
    Ok(())
}

/// A `file_content` value: size (u64 LE) then the 32-byte root.
fn encode_content(size: u64, hash: &[u8; 32]) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&size.to_le_bytes());
    out[8..].copy_from_slice(hash);
    out
}

/// Decodes what [`encode_content`] wrote; `None` for a corrupt value.
fn decode_content(bytes: &[u8]) -> Option<(u64, [u8; 32])> {
    let size = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let hash = bytes.get(8..40)?.try_into().ok()?;
    (bytes.len() == 40).then_some((size, hash))
}

/// Encodes an address as the IP and PORT fields of a LIST_USERS entry.
fn encode_addr(addr: SocketAddr) -> Result<BytesMut, StoreError> {
    let mut out = BytesMut::with_capacity(24);
    put_field(&mut out, IpText::new(addr.ip()).as_str())?;
    put_field(&mut out, PortText::new(addr.port()).as_str())?;
    Ok(out)
}

/// A stored address is two NUL-terminated fields; anything else is corrupt
/// and must never be copied into a reply.
fn is_encoded_addr(bytes: &[u8]) -> bool {
    bytes.last() == Some(&0) && bytes.iter().filter(|b| **b == 0).count() == 2
}

/// Decodes what [`encode_addr`] wrote.
fn decode_addr(bytes: &[u8]) -> Option<SocketAddr> {
    if !is_encoded_addr(bytes) {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut fields = text.split_terminator('\0');
    let ip: IpAddr = fields.next()?.parse().ok()?;
    let port: u16 = fields.next()?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Decodes a version-1 address: `[4, a, b, c, d, port_hi, port_lo]` or
/// `[6, 16 bytes, port_hi, port_lo]`.
fn decode_addr_v1(bytes: &[u8]) -> Option<SocketAddr> {
    let (ip, port): (IpAddr, &[u8]) = match bytes {
        [4, rest @ ..] if rest.len() == 6 => {
            let octets: [u8; 4] = rest[..4].try_into().ok()?;
            (Ipv4Addr::from(octets).into(), &rest[4..])
        }
        [6, rest @ ..] if rest.len() == 18 => {
            let octets: [u8; 16] = rest[..16].try_into().ok()?;
            (Ipv6Addr::from(octets).into(), &rest[16..])
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(port.try_into().ok()?);
    Some(SocketAddr::new(ip, port))
}

/// The smallest string greater than every string that starts with `user`
/// followed by nothing: the exclusive upper bound of `user`'s file range
/// (names never contain NUL).
fn after(user: &str) -> String {
    format!("{user}\0")
}

/// The tables of one write transaction.
pub struct WriteTables<'txn> {
    /// Registered users.
    users: Table<'txn, &'static str, ()>,
    /// Connected users and their listening address.
    connected: Table<'txn, &'static str, &'static [u8]>,
    /// Published files, by (user, file).
    files: Table<'txn, (&'static str, &'static str), &'static str>,
    /// Size and hash of files published with them.
    content: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    /// What was written, in order: the journal record of this transaction.
    effects: Vec<Effect>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(WriteTables {
            users: txn.open_table(USERS)?,
            connected: txn.open_table(CONNECTED)?,
            files: txn.open_table(FILES)?,
            content: txn.open_table(CONTENT)?,
            effects: Vec::new(),
        })
    }

    /// Replays one journaled effect.
    fn apply_effect(&mut self, effect: &Effect) -> Result<(), StoreError> {
        match effect {
            Effect::AddUser(user) => self.add_user(user),
            Effect::RemoveUser(user) => self.remove_user(user),
            Effect::SetAddress(user, addr) => self.set_address(user, *addr),
            Effect::ClearAddress(user) => self.clear_address(user),
            Effect::AddFile {
                user,
                file,
                description,
            } => self.add_file(user, file, description),
            Effect::RemoveFile { user, file } => self.remove_file(user, file).map(|_| ()),
            Effect::SetContent {
                user,
                file,
                size,
                hash,
            } => self.set_content(user, file, *size, hash),
        }
    }
}

impl WriteTables<'_> {
    pub fn user_exists(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.users.get(user)?.is_some())
    }

    pub fn add_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.users.insert(user, ())?;
        self.effects.push(Effect::AddUser(user.to_string()));
        Ok(())
    }

    /// Removes the user, its address and all its files.
    pub fn remove_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.users.remove(user)?;
        self.connected.remove(user)?;
        let upper = after(user);
        let mut names = Vec::new();
        for entry in self.files.range((user, "")..(upper.as_str(), ""))? {
            let (key, _) = entry?;
            names.push(key.value().1.to_string());
        }
        for name in names {
            self.files.remove((user, name.as_str()))?;
            self.content.remove((user, name.as_str()))?;
        }
        self.effects.push(Effect::RemoveUser(user.to_string()));
        Ok(())
    }

    pub fn address(&self, user: &str) -> Result<Option<SocketAddr>, StoreError> {
        match self.connected.get(user)? {
            None => Ok(None),
            Some(bytes) => decode_addr(bytes.value())
                .map(Some)
                .ok_or_else(|| StoreError::CorruptAddress(user.to_string())),
        }
    }

    pub fn is_connected(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.connected.get(user)?.is_some())
    }

    pub fn set_address(&mut self, user: &str, addr: SocketAddr) -> Result<(), StoreError> {
        self.connected.insert(user, &encode_addr(addr)?[..])?;
        self.effects
            .push(Effect::SetAddress(user.to_string(), addr));
        Ok(())
    }

    pub fn clear_address(&mut self, user: &str) -> Result<(), StoreError> {
        self.connected.remove(user)?;
        self.effects.push(Effect::ClearAddress(user.to_string()));
        Ok(())
    }

    pub fn has_file(&self, user: &str, file: &str) -> Result<bool, StoreError> {
        Ok(self.files.get((user, file))?.is_some())
    }

    /// Adds a file the caller checked is not yet published.
    pub fn add_file(
        &mut self,
        user: &str,
        file: &str,
        description: &str,
    ) -> Result<(), StoreError> {
        self.files.insert((user, file), description)?;
        self.effects.push(Effect::AddFile {
            user: user.to_string(),
            file: file.to_string(),
            description: description.to_string(),
        });
        Ok(())
    }

    /// Records the size and hash of a file just added (PUBLISH_CONTENT).
    pub fn set_content(
        &mut self,
        user: &str,
        file: &str,
        size: u64,
        hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        self.content
            .insert((user, file), &encode_content(size, hash)[..])?;
        self.effects.push(Effect::SetContent {
            user: user.to_string(),
            file: file.to_string(),
            size,
            hash: *hash,
        });
        Ok(())
    }

    /// Removes a file; true when it was published.
    pub fn remove_file(&mut self, user: &str, file: &str) -> Result<bool, StoreError> {
        let removed = self.files.remove((user, file))?.is_some();
        if removed {
            self.content.remove((user, file))?;
            self.effects.push(Effect::RemoveFile {
                user: user.to_string(),
                file: file.to_string(),
            });
        }
        Ok(removed)
    }
}

/// One read snapshot: what LIST_USERS and LIST_CONTENT stream from.
pub struct ReadView {
    /// Registered users.
    users: ReadOnlyTable<&'static str, ()>,
    /// Connected users and their address.
    connected: ReadOnlyTable<&'static str, &'static [u8]>,
    /// Published files, by (user, file).
    files: ReadOnlyTable<(&'static str, &'static str), &'static str>,
    /// Size and hash of files published with them.
    content: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    /// Keeps the snapshot alive as long as the tables are read.
    _txn: ReadTransaction,
}

/// Where a chunked listing stopped: the last key written.
pub type Cursor = Option<String>;

impl ReadView {
    pub fn user_exists(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.users.get(user)?.is_some())
    }

    pub fn is_connected(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.connected.get(user)?.is_some())
    }

    /// The address `user` is connected at.
    pub fn address(&self, user: &str) -> Result<Option<SocketAddr>, StoreError> {
        match self.connected.get(user)? {
            None => Ok(None),
            Some(bytes) => decode_addr(bytes.value())
                .map(Some)
                .ok_or_else(|| StoreError::CorruptAddress(user.to_string())),
        }
    }

    /// The description of `user`'s `file`, `None` if not published.
    pub fn description(&self, user: &str, file: &str) -> Result<Option<String>, StoreError> {
        Ok(self.files.get((user, file))?.map(|d| d.value().to_string()))
    }

    /// Size and hash of `user`'s `file`, when published with them.
    pub fn content(&self, user: &str, file: &str) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        Ok(self
            .content
            .get((user, file))?
            .and_then(|v| decode_content(v.value())))
    }

    /// How many users are connected in this snapshot.
    pub fn connected_count(&self) -> Result<u64, StoreError> {
        Ok(self.connected.len()?)
    }

    /// How many files `user` published in this snapshot.
    pub fn file_count(&self, user: &str) -> Result<u64, StoreError> {
        // Walks the user's range: the listing that follows walks it again,
        // so the cost stays proportional to the reply.
        let upper = after(user);
        let mut count = 0;
        for entry in self.files.range((user, "")..(upper.as_str(), ""))? {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    /// Appends connected users after `cursor` as LIST_USERS entries until
    /// `out` holds at least `limit` bytes. Returns false when the listing is
    /// complete.
    pub fn users_chunk(
        &self,
        cursor: &mut Cursor,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let lower = match cursor.as_deref() {
            Some(last) => Bound::Excluded(last),
            None => Bound::Unbounded,
        };
        for entry in self.connected.range::<&str>((lower, Bound::Unbounded))? {
            let (name, addr) = entry?;
            let name = name.value();
            let addr = addr.value();
            if !is_encoded_addr(addr) {
                return Err(StoreError::CorruptAddress(name.to_string()));
            }
            // The same three fields as `reply::put_user_entry`; IP and PORT
            // were encoded by `put_field` at CONNECT time.
            put_field(out, name)?;
            out.extend_from_slice(addr);
            if out.len() >= limit {
                *cursor = Some(name.to_string());
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Appends `user`'s files after `cursor` as LIST_CONTENT entries until
    /// `out` holds at least `limit` bytes. Returns false when complete.
    pub fn files_chunk(
        &self,
        user: &str,
        cursor: &mut Cursor,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let upper = after(user);
        let lower = match cursor.as_deref() {
            Some(last) => Bound::Excluded((user, last)),
            None => Bound::Included((user, "")),
        };
        let range = (lower, Bound::Excluded((upper.as_str(), "")));
        for entry in self.files.range::<(&str, &str)>(range)? {
            let (key, description) = entry?;
            let (_, file) = key.value();
            put_content_entry(out, file, description.value())?;
            if out.len() >= limit {
                *cursor = Some(file.to_string());
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn creates_missing_dir_and_reopens() {
        let dir = temp();
        let data = dir.path().join("a/b");
        let store = Store::open(&data).unwrap();
        store.write(|t| t.add_user("alice")).unwrap();
        store.close().unwrap();
        let store = Store::open(&data).unwrap();
        assert!(store.read().unwrap().user_exists("alice").unwrap());
    }

    #[test]
    fn garbage_file_is_an_error_naming_the_path() {
        let dir = temp();
        let path = dir.path().join(DB_FILE_NAME);
        std::fs::write(&path, vec![0xAB; 8192]).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn short_garbage_file_is_an_error() {
        let dir = temp();
        std::fs::write(dir.path().join(DB_FILE_NAME), b"hello world").unwrap();
        assert!(Store::open(dir.path()).is_err());
    }

    #[test]
    fn data_dir_that_is_a_file_is_an_error() {
        let dir = temp();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
    }

    #[test]
    fn foreign_redb_database_is_refused() {
        let dir = temp();
        let path = dir.path().join(DB_FILE_NAME);
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: TableDefinition<u64, u64> = TableDefinition::new("other");
            txn.open_table(table).unwrap().insert(1, 2).unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Foreign { .. })
        ));
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = temp();
        let store = Store::open(dir.path()).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
        store.close().unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::SchemaVersion { found, .. }) if found == SCHEMA_VERSION + 1
        ));
    }

    #[test]
    fn address_round_trips() {
        for addr in ["127.0.0.1:80", "[::1]:65535", "10.1.2.3:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(decode_addr(&encode_addr(addr).unwrap()), Some(addr));
        }
        assert_eq!(decode_addr(&[4, 1, 2]), None);
        assert_eq!(decode_addr(b"1.2.3.4\0"), None);
        assert_eq!(
            decode_addr_v1(&[4, 10, 0, 0, 1, 0, 80]),
            Some("10.0.0.1:80".parse().unwrap())
        );
    }

    #[test]
    fn version_1_database_is_migrated() {
        let dir = temp();
        let db = Database::create(dir.path().join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META).unwrap().insert(SCHEMA_KEY, 1).unwrap();
            let mut users = txn.open_table(USERS).unwrap();
            let mut connected = txn.open_table(CONNECTED).unwrap();
            for user in ["al", "bo", "cy"] {
                users.insert(user, ()).unwrap();
            }
            connected
                .insert("al", &[4u8, 10, 0, 0, 1, 0x1f, 0x40][..])
                .unwrap();
            let mut v6 = vec![6u8];
            v6.extend_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
            v6.extend_from_slice(&[0, 80]);
            connected.insert("bo", &v6[..]).unwrap();
            txn.open_table(FILES)
                .unwrap()
                .insert(("al", "f"), "d")
                .unwrap();
            txn.open_table(FILE_COUNTS_V1)
                .unwrap()
                .insert("al", 1)
                .unwrap();
        }
        txn.commit().unwrap();
        drop(db);

        let store = Store::open(dir.path()).unwrap();
        let view = store.read().unwrap();
        let mut out = BytesMut::new();
        assert!(!view.users_chunk(&mut None, &mut out, 1 << 20).unwrap());
        assert_eq!(&out[..], b"al\x0010.0.0.1\x008000\x00bo\x00::1\x0080\x00");
        assert_eq!(view.file_count("al").unwrap(), 1);
        drop(view);
        let txn = store.db.begin_write().unwrap();
        assert!(!txn
            .list_tables()
            .unwrap()
            .any(|t| t.name() == "file_counts"));
        let version = txn
            .open_table(META)
            .unwrap()
            .get(SCHEMA_KEY)
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn version_2_database_is_migrated() {
        let dir = temp();
        let db = Database::create(dir.path().join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META).unwrap().insert(SCHEMA_KEY, 2).unwrap();
            txn.open_table(USERS).unwrap().insert("al", ()).unwrap();
            txn.open_table(CONNECTED)
                .unwrap()
                .insert(
                    "al",
                    &encode_addr("10.0.0.1:80".parse().unwrap()).unwrap()[..],
                )
                .unwrap();
            txn.open_table(FILES)
                .unwrap()
                .insert(("al", "Song.mp3"), "d")
                .unwrap();
        }
        txn.commit().unwrap();
        drop(db);

        let store = Store::open(dir.path()).unwrap();
        let view = store.read().unwrap();
        assert_eq!(
            view.description("al", "Song.mp3").unwrap().as_deref(),
            Some("d")
        );
        assert_eq!(view.content("al", "Song.mp3").unwrap(), None);
        drop(view);
        // The index was built from the migrated store.
        let pattern = crate::index::Pattern::parse("song").unwrap();
        assert_eq!(store.indexes().names.search(&pattern, 10).0, 1);
        store
            .write(|t| {
                t.add_file("al", "g", "")?;
                t.set_content("al", "g", 3, &[1; 32])
            })
            .unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.read().unwrap().content("al", "g").unwrap(),
            Some((3, [1; 32]))
        );
        let txn = store.db.begin_write().unwrap();
        let version = txn
            .open_table(META)
            .unwrap()
            .get(SCHEMA_KEY)
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(version, 3);
    }

    #[test]
    fn files_are_per_user_and_chunked() {
        let dir = temp();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|t| {
                for user in ["a", "ab", "b"] {
                    t.add_user(user)?;
                    for i in 0..50 {
                        t.add_file(user, &format!("f{i:02}"), "d")?;
                    }
                }
                Ok(())
            })
            .unwrap();
        let view = store.read().unwrap();
        assert_eq!(view.file_count("a").unwrap(), 50);
        let mut cursor = None;
        let mut all = BytesMut::new();
        let mut chunks = 0;
        loop {
            let mut out = BytesMut::new();
            let more = view.files_chunk("a", &mut cursor, &mut out, 40).unwrap();
            all.extend_from_slice(&out);
            chunks += 1;
            if !more {
                break;
            }
        }
        assert!(chunks > 5);
        let text = String::from_utf8(all.to_vec()).unwrap();
        let fields: Vec<&str> = text.trim_end_matches('\0').split('\0').collect();
        assert_eq!(fields.len(), 100);
        assert_eq!(fields[0], "f00");
        assert_eq!(fields[98], "f49");
        drop(view);
        store.write(|t| t.remove_user("a")).unwrap();
        let view = store.read().unwrap();
        assert_eq!(view.file_count("a").unwrap(), 0);
        let mut out = BytesMut::new();
        assert!(!view.files_chunk("a", &mut None, &mut out, 1 << 20).unwrap());
        assert!(out.is_empty());
        assert_eq!(view.file_count("ab").unwrap(), 50);
    }
}
