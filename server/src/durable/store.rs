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
//! - `credentials`: name -> the argon2id PHC string of a protected account.
//! - `holders`: name -> the id of the session holding a user connected
//!   through one (only ever read at start-up, which disconnects them).
//! - `last_seen`: name -> when the user was last disconnected (seconds
//!   since the Unix epoch, u64).
//! - `peerdex_meta`: `schema_version` -> version of this layout.
//!
//! [`Store::open`] migrates a database of an older layout (version 1 to 3)
//! in the transaction that checks the version: [`migrate`].
//!
//! The database is the checkpoint behind the journal, not what requests
//! read: at start-up it is loaded into memory ([`Store::load`]) after the
//! journal segments left by the previous run were applied to it
//! ([`Store::apply_segment`]); while the server runs, the checkpointer
//! ([`crate::durable::checkpoint`]) applies each full journal segment in one durable
//! transaction. Nothing else writes it.
//!
//! redb trusts its file: some damaged pages make it panic instead of
//! returning an error. Every operation here runs inside
//! [`quiet_panic::catch`] and turns such a panic into
//! [`StoreError::Panicked`], naming the file like any other corruption.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use peerdex_protocol::field::put_field;
use peerdex_protocol::CodecError;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    TableHandle, WriteTransaction,
};
use thiserror::Error;

use crate::durable::journal::{JournalError, SegmentRead};
use crate::durable::net_effects::NetEffects;
use crate::durable::quiet_panic;
use crate::effect::Effect;
use crate::index::Indexes;
use crate::state::Tables;

mod migrate;

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "peerdex.redb";

/// Version of the table layout described in the module doc.
pub const SCHEMA_VERSION: u64 = 4;

const META: TableDefinition<&str, u64> = TableDefinition::new("peerdex_meta");
const SCHEMA_KEY: &str = "schema_version";
const USERS: TableDefinition<&str, ()> = TableDefinition::new("users");
const CONNECTED: TableDefinition<&str, &[u8]> = TableDefinition::new("connected");
const FILES: TableDefinition<(&str, &str), &str> = TableDefinition::new("files");
const CONTENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("file_content");
const CREDENTIALS: TableDefinition<&str, &str> = TableDefinition::new("credentials");
const HOLDERS: TableDefinition<&str, u64> = TableDefinition::new("holders");
const LAST_SEEN: TableDefinition<&str, u64> = TableDefinition::new("last_seen");

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
    #[error("database {path} is corrupt: redb panicked while {during} it ({message})")]
    Panicked {
        path: PathBuf,
        /// What was being done: "opening", "loading", ...
        during: &'static str,
        /// The panic's message.
        message: String,
    },
    #[error("cannot load database {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    #[error("cannot apply journal segment {segment} to database {path}")]
    Apply {
        path: PathBuf,
        segment: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
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
    #[error("the checkpointer thread panicked; the journal is replayed at the next start")]
    CheckpointerPanicked,
    #[error("stored entry of user {0:?} cannot be loaded: {1}")]
    CorruptEntry(String, CodecError),
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
    /// The open redb database.
    db: Database,
    /// The database file, for error messages.
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// redb's page cache. Requests never read redb; only checkpoints do, one
/// segment's worth of keys at a time, so a small cache bounds the server's
/// memory and misses come from the OS page cache.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

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
        guarded(&path, "opening", || {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(|err| open_err(err.into()))
                .and_then(|db| {
                    let store = Store {
                        db,
                        path: path.clone(),
                    };
                    store.check_schema().map(|()| store)
                })
        })
    }

    /// Loads the whole committed state: the tables and the search indexes.
    /// Any error names the file (a damaged page shows here first).
    pub fn load(&self) -> Result<(Tables, Indexes), StoreError> {
        guarded(&self.path, "loading", || {
            self.db
                .begin_read()
                .map_err(StoreError::from)
                .and_then(load_tables)
        })
        .map_err(|err| self.load_err(err))
    }

    /// `err` from loading, with the file named unless it already is.
    fn load_err(&self, err: StoreError) -> StoreError {
        match err {
            err @ StoreError::Panicked { .. } => err,
            err => StoreError::Load {
                path: self.path.clone(),
                source: Box::new(err),
            },
        }
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
                    migrate::from_v1(&txn)?;
                    migrate::from_v2(&txn)?;
                    migrate::from_v3(&txn)?;
                }
                Some(2) => {
                    drop(meta);
                    migrate::from_v2(&txn)?;
                    migrate::from_v3(&txn)?;
                }
                Some(3) => {
                    drop(meta);
                    migrate::from_v3(&txn)?;
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
        txn.open_table(CREDENTIALS)?;
        txn.open_table(HOLDERS)?;
        txn.open_table(LAST_SEEN)?;
        txn.commit()?;
        Ok(())
    }

    /// Applies `effects` in order in one durable transaction: when this
    /// returns Ok they are on disk in the database.
    #[cfg(test)]
    pub fn apply_durably(&self, effects: &[Effect]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut tables = WriteTables::open(&txn)?;
            for effect in effects {
                tables.apply_effect(effect)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Applies the whole records of `segment` (all of them, or those
    /// before its damage or torn tail) in one durable transaction; returns
    /// the number of effects. What is written is the segment's net change
    /// ([`NetEffects`]: most effects of a busy segment cancel), or, for a
    /// sequence the rules never produce, every effect in order.
    pub fn apply_segment(&self, segment: &SegmentRead) -> Result<usize, StoreError> {
        guarded(&self.path, "applying a journal segment to", || {
            self.apply_records(segment)
        })
        .map_err(|err| match err {
            err @ StoreError::Panicked { .. } => err,
            err => StoreError::Apply {
                path: self.path.clone(),
                segment: segment.path().to_path_buf(),
                source: Box::new(err),
            },
        })
    }

    fn apply_records(&self, segment: &SegmentRead) -> Result<usize, StoreError> {
        let mut net = Some(NetEffects::default());
        let read = segment.for_each_record(|effects| {
            if let Some(sum) = &mut net {
                if effects
                    .iter()
                    .try_for_each(|effect| sum.add(effect))
                    .is_err()
                {
                    net = None;
                }
            }
            Ok::<(), StoreError>(())
        })?;
        let txn = self.db.begin_write()?;
        {
            let mut tables = WriteTables::open(&txn)?;
            match net {
                Some(net) => net
                    .into_effects()
                    .iter()
                    .try_for_each(|effect| tables.apply_effect(effect))?,
                None => {
                    tracing::warn!(path = %segment.path().display(), "journal segment not nettable, applying it effect by effect");
                    segment.for_each_record(|effects| {
                        effects
                            .iter()
                            .try_for_each(|effect| tables.apply_effect(effect))
                    })?;
                }
            }
        }
        txn.commit()?;
        Ok(read)
    }

    /// Closes the database, reporting what dropping it would hide.
    pub fn close(self) -> Result<(), StoreError> {
        self.db.close()?;
        Ok(())
    }
}

/// Runs `f` on the database at `path`, turning a panic inside it into
/// [`StoreError::Panicked`].
fn guarded<T>(
    path: &Path,
    during: &'static str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    quiet_panic::catch(f).unwrap_or_else(|message| {
        Err(StoreError::Panicked {
            path: path.to_path_buf(),
            during,
            message,
        })
    })
}

/// What a read-only look at the database found ([`survey`]).
#[derive(Debug)]
pub enum Survey {
    /// There is no database file: the next start creates one.
    Missing,
    /// It loads as the server would load it.
    Intact { users: usize, files: usize },
    /// It was not closed cleanly (a crash): redb repairs it when the
    /// server next opens it for writing, so it cannot be read without
    /// changing it.
    NeedsRepair,
    /// An older schema, migrated when the server next opens it.
    OlderSchema(u64),
    /// A running server has it open.
    InUse,
    /// It cannot be opened or loaded.
    Damaged(StoreError),
}

/// Looks at the database in `dir` without changing anything: opens it
/// read-only and loads every table the way start-up does.
pub fn survey(dir: &Path) -> Survey {
    let path = dir.join(DB_FILE_NAME);
    if !path.exists() {
        return Survey::Missing;
    }
    let looked = guarded(&path, "reading", || {
        let opened = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .open_read_only(&path);
        let db = match opened {
            Ok(db) => db,
            Err(redb::DatabaseError::RepairAborted) => return Ok(Survey::NeedsRepair),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(Survey::InUse),
            Err(err) => {
                return Err(StoreError::Open {
                    path: path.clone(),
                    source: err.into(),
                })
            }
        };
        let txn = db.begin_read()?;
        let version = match txn.open_table(META) {
            Ok(meta) => meta.get(SCHEMA_KEY)?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(err) => return Err(err.into()),
        };
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(found @ (1..=3)) => return Ok(Survey::OlderSchema(found)),
            Some(found) => {
                return Err(StoreError::SchemaVersion {
                    path: path.clone(),
                    found,
                })
            }
            None => return Err(StoreError::Foreign { path: path.clone() }),
        }
        let (tables, indexes) = load_tables(txn).map_err(|err| StoreError::Load {
            path: path.clone(),
            source: Box::new(err),
        })?;
        Ok(Survey::Intact {
            users: tables.user_count(),
            files: indexes.names.len(),
        })
    });
    looked.unwrap_or_else(Survey::Damaged)
}

/// Reads every table of a database in `txn` into memory: the tables and
/// the search indexes. Errors do not name the file (the caller does).
fn load_tables(txn: ReadTransaction) -> Result<(Tables, Indexes), StoreError> {
    let mut tables = Tables::default();
    let mut indexes = Indexes::default();
    let mut effects = Vec::with_capacity(1);
    let mut load = |effect: Effect, tables: &mut Tables, indexes: &mut Indexes| {
        let user = effect.user().to_string();
        tables
            .apply(&effect)
            .map_err(|err| StoreError::CorruptEntry(user, err))?;
        effects.clear();
        effects.push(effect);
        indexes.apply(&effects);
        Ok::<(), StoreError>(())
    };
    for entry in txn.open_table(USERS)?.iter()? {
        let (name, _) = entry?;
        load(
            Effect::AddUser(name.value().to_string()),
            &mut tables,
            &mut indexes,
        )?;
    }
    for entry in txn.open_table(CONNECTED)?.iter()? {
        let (name, value) = entry?;
        let name = name.value().to_string();
        let addr =
            decode_addr(value.value()).ok_or_else(|| StoreError::CorruptAddress(name.clone()))?;
        load(Effect::SetAddress(name, addr), &mut tables, &mut indexes)?;
    }
    for entry in txn.open_table(FILES)?.iter()? {
        let (key, description) = entry?;
        let (user, file) = key.value();
        let effect = Effect::AddFile {
            user: user.to_string(),
            file: file.to_string(),
            description: description.value().to_string(),
        };
        load(effect, &mut tables, &mut indexes)?;
    }
    for entry in txn.open_table(CONTENT)?.iter()? {
        let (key, value) = entry?;
        let (user, file) = key.value();
        if let Some((size, hash)) = decode_content(value.value()) {
            let effect = Effect::SetContent {
                user: user.to_string(),
                file: file.to_string(),
                size,
                hash,
            };
            load(effect, &mut tables, &mut indexes)?;
        }
    }
    for entry in txn.open_table(CREDENTIALS)?.iter()? {
        let (name, phc) = entry?;
        let effect = Effect::SetCredential {
            user: name.value().to_string(),
            phc: phc.value().to_string(),
        };
        load(effect, &mut tables, &mut indexes)?;
    }
    for entry in txn.open_table(HOLDERS)?.iter()? {
        let (name, session) = entry?;
        let user = name.value().to_string();
        // A holder without an address holds nothing: the rules never
        // leave one behind, and there is no entry to disconnect.
        if let Some(addr) = tables.address(&user) {
            let effect = Effect::SetHeldAddress {
                user,
                addr,
                session: session.value(),
            };
            load(effect, &mut tables, &mut indexes)?;
        }
    }
    for entry in txn.open_table(LAST_SEEN)?.iter()? {
        let (name, at) = entry?;
        let effect = Effect::SetLastSeen {
            user: name.value().to_string(),
            at: at.value(),
        };
        load(effect, &mut tables, &mut indexes)?;
    }
    tracing::info!(
        users = tables.user_count(),
        files = indexes.names.len(),
        table_mib = tables.heap_bytes() / (1024 * 1024),
        "directory loaded"
    );
    Ok((tables, indexes))
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
    put_field(&mut out, &addr.ip().to_string())?;
    put_field(&mut out, &addr.port().to_string())?;
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

/// The smallest string greater than every string that starts with `user`
/// followed by nothing: the exclusive upper bound of `user`'s file range
/// (names never contain NUL).
fn after(user: &str) -> String {
    format!("{user}\0")
}

/// The tables of one write transaction.
struct WriteTables<'txn> {
    /// Registered users.
    users: Table<'txn, &'static str, ()>,
    /// Connected users and their listening address.
    connected: Table<'txn, &'static str, &'static [u8]>,
    /// Published files, by (user, file).
    files: Table<'txn, (&'static str, &'static str), &'static str>,
    /// Size and hash of files published with them.
    content: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    /// PHC strings of protected accounts.
    credentials: Table<'txn, &'static str, &'static str>,
    /// Sessions holding users connected through one.
    holders: Table<'txn, &'static str, u64>,
    /// When each user was last disconnected.
    last_seen: Table<'txn, &'static str, u64>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(WriteTables {
            users: txn.open_table(USERS)?,
            connected: txn.open_table(CONNECTED)?,
            files: txn.open_table(FILES)?,
            content: txn.open_table(CONTENT)?,
            credentials: txn.open_table(CREDENTIALS)?,
            holders: txn.open_table(HOLDERS)?,
            last_seen: txn.open_table(LAST_SEEN)?,
        })
    }

    /// Replays one journaled effect.
    fn apply_effect(&mut self, effect: &Effect) -> Result<(), StoreError> {
        match effect {
            Effect::AddUser(user) => self.add_user(user),
            Effect::RemoveUser(user) => self.remove_user(user),
            Effect::SetAddress(user, addr) => {
                self.set_address(user, *addr)?;
                self.clear_holder(user)
            }
            Effect::SetHeldAddress {
                user,
                addr,
                session,
            } => {
                self.set_address(user, *addr)?;
                self.holders.insert(user.as_str(), *session)?;
                Ok(())
            }
            Effect::ClearAddress(user) => {
                self.clear_address(user)?;
                self.clear_holder(user)
            }
            Effect::SetCredential { user, phc } => {
                self.credentials.insert(user.as_str(), phc.as_str())?;
                Ok(())
            }
            Effect::SetLastSeen { user, at } => {
                self.last_seen.insert(user.as_str(), *at)?;
                Ok(())
            }
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
    pub fn add_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.users.insert(user, ())?;
        Ok(())
    }

    /// Removes the user, its address and all its files.
    pub fn remove_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.users.remove(user)?;
        self.connected.remove(user)?;
        self.holders.remove(user)?;
        self.credentials.remove(user)?;
        self.last_seen.remove(user)?;
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
        Ok(())
    }

    /// Records `user`'s address, leaving the row alone when it already
    /// holds it: a DISCONNECT and CONNECT from the same address nets to
    /// this (see [`crate::durable::net_effects`]), and in redb a read is much
    /// cheaper than an insert, which copies the B-tree path it changes.
    pub fn set_address(&mut self, user: &str, addr: SocketAddr) -> Result<(), StoreError> {
        let encoded = encode_addr(addr)?;
        if let Some(current) = self.connected.get(user)? {
            if current.value() == &encoded[..] {
                return Ok(());
            }
        }
        self.connected.insert(user, &encoded[..])?;
        Ok(())
    }

    pub fn clear_address(&mut self, user: &str) -> Result<(), StoreError> {
        self.connected.remove(user)?;
        Ok(())
    }

    /// The user is held by no session (classic CONNECT, DISCONNECT).
    /// Most users never had a holder: a read first, which in redb is much
    /// cheaper than a remove that finds nothing to copy.
    fn clear_holder(&mut self, user: &str) -> Result<(), StoreError> {
        if self.holders.get(user)?.is_some() {
            self.holders.remove(user)?;
        }
        Ok(())
    }

    /// Adds a file the caller checked is not yet published.
    pub fn add_file(
        &mut self,
        user: &str,
        file: &str,
        description: &str,
    ) -> Result<(), StoreError> {
        self.files.insert((user, file), description)?;
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
        Ok(())
    }

    /// Removes a file; true when it was published.
    pub fn remove_file(&mut self, user: &str, file: &str) -> Result<bool, StoreError> {
        let removed = self.files.remove((user, file))?.is_some();
        if removed {
            self.content.remove((user, file))?;
        }
        Ok(removed)
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
        store
            .apply_durably(&[Effect::AddUser("alice".into())])
            .unwrap();
        store.close().unwrap();
        let store = Store::open(&data).unwrap();
        assert!(store.load().unwrap().0.user_exists("alice"));
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

    /// Setting the address a user already has changes nothing; a new
    /// address replaces it, also in the same transaction.
    #[test]
    fn unchanged_address_is_kept_and_a_new_one_replaces_it() {
        let dir = temp();
        let store = Store::open(dir.path()).unwrap();
        let first: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let second: SocketAddr = "10.0.0.2:81".parse().unwrap();
        let at = |store: &Store| store.load().unwrap().0.address("al");
        store
            .apply_durably(&[
                Effect::AddUser("al".into()),
                Effect::SetAddress("al".into(), first),
            ])
            .unwrap();
        store
            .apply_durably(&[Effect::SetAddress("al".into(), first)])
            .unwrap();
        assert_eq!(at(&store), Some(first));
        store
            .apply_durably(&[
                Effect::SetAddress("al".into(), second),
                Effect::SetAddress("al".into(), second),
            ])
            .unwrap();
        assert_eq!(at(&store), Some(second));
        store
            .apply_durably(&[
                Effect::ClearAddress("al".into()),
                Effect::SetAddress("al".into(), second),
            ])
            .unwrap();
        assert_eq!(at(&store), Some(second));
    }

    #[test]
    fn address_round_trips() {
        for addr in ["127.0.0.1:80", "[::1]:65535", "10.1.2.3:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(decode_addr(&encode_addr(addr).unwrap()), Some(addr));
        }
        assert_eq!(decode_addr(&[4, 1, 2]), None);
        assert_eq!(decode_addr(b"1.2.3.4\0"), None);
    }

    #[test]
    fn effects_survive_reopen_including_user_removal() {
        let dir = temp();
        let store = Store::open(dir.path()).unwrap();
        let mut effects = Vec::new();
        for user in ["a", "ab", "b"] {
            effects.push(Effect::AddUser(user.into()));
            for i in 0..50 {
                effects.push(Effect::AddFile {
                    user: user.into(),
                    file: format!("f{i:02}"),
                    description: "d".into(),
                });
            }
        }
        effects.push(Effect::SetAddress("ab".into(), "[::1]:9".parse().unwrap()));
        store.apply_durably(&effects).unwrap();
        store
            .apply_durably(&[Effect::RemoveUser("a".into())])
            .unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tables, _) = store.load().unwrap();
        assert_eq!(tables.user_names(), ["ab", "b"]);
        assert_eq!(tables.file_entries("a").len(), 0);
        assert_eq!(tables.file_entries("ab").len(), 50);
        assert_eq!(tables.address("ab"), Some("[::1]:9".parse().unwrap()));
    }

    /// Credentials, holders and last-seen times survive a reopen; a
    /// classic CONNECT or DISCONNECT drops the holder, UNREGISTER all
    /// three.
    #[test]
    fn account_effects_survive_reopen() {
        let dir = temp();
        let store = Store::open(dir.path()).unwrap();
        let held: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let mut effects = Vec::new();
        for user in ["al", "bo", "cy", "di"] {
            effects.push(Effect::AddUser(user.into()));
            effects.push(Effect::SetCredential {
                user: user.into(),
                phc: format!("$argon2id${user}"),
            });
            effects.push(Effect::SetHeldAddress {
                user: user.into(),
                addr: held,
                session: 3,
            });
            effects.push(Effect::SetLastSeen {
                user: user.into(),
                at: 100,
            });
        }
        effects.push(Effect::SetAddress("bo".into(), held));
        effects.push(Effect::ClearAddress("cy".into()));
        effects.push(Effect::RemoveUser("di".into()));
        store.apply_durably(&effects).unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tables, indexes) = store.load().unwrap();
        let state = |user: &str| {
            (
                tables.credential(user).map(|c| c.to_string()),
                tables.address(user),
                tables.holder(user),
                tables.last_seen(user),
            )
        };
        let phc = |user: &str| Some(format!("$argon2id${user}"));
        assert_eq!(state("al"), (phc("al"), Some(held), Some(3), Some(100)));
        assert_eq!(state("bo"), (phc("bo"), Some(held), None, Some(100)));
        assert_eq!(state("cy"), (phc("cy"), None, None, Some(100)));
        assert_eq!(state("di"), (None, None, None, None));
        assert_eq!(tables.user_names(), ["al", "bo", "cy"]);
        drop(indexes);
        // The holders table forgot bo, cy and di, not just the tables.
        let txn = store.db.begin_read().unwrap();
        let holders = txn.open_table(HOLDERS).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&holders).unwrap(), 1);
    }
}
