//! Where the directory's state is stored: one redb database file in the data
//! directory.
//!
//! Tables are keyed so that the cost of an operation does not grow with the
//! number of users:
//! - `users`: name -> `()`; who is registered.
//! - `connected`: name -> encoded IP + port; who is connected, and where.
//! - `files`: `(user, file)` -> description; one user's files are one range.
//! - `file_counts`: user -> number of files; the LIST_CONTENT count without a
//!   scan.
//! - `peerdex_meta`: `schema_version` -> version of this layout.
//!
//! Writes only happen through [`Store::write`], which the group-commit writer
//! ([`crate::commit`]) calls; reads go through a [`ReadView`], one consistent
//! snapshot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use peerdex_protocol::field::put_field;
use peerdex_protocol::reply::put_content_entry;
use peerdex_protocol::CodecError;
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, TableHandle,
};
use thiserror::Error;

use crate::addr_text::{IpText, PortText};

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "peerdex.redb";

/// Version of the table layout described in the module doc.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("peerdex_meta");
const SCHEMA_KEY: &str = "schema_version";
const USERS: TableDefinition<&str, ()> = TableDefinition::new("users");
const CONNECTED: TableDefinition<&str, &[u8]> = TableDefinition::new("connected");
const FILES: TableDefinition<(&str, &str), &str> = TableDefinition::new("files");
const FILE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("file_counts");

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
    redb::CommitError
);

/// The directory's database.
pub struct Store {
    /// The open redb database; `Database` is `Sync`, readers and the writer
    /// share it.
    db: Database,
    /// The database file, for error messages.
    path: PathBuf,
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
        let store = Store { db, path };
        store.check_schema()?;
        Ok(store)
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
        txn.open_table(FILE_COUNTS)?;
        txn.commit()?;
        Ok(())
    }

    /// Runs `apply` inside one write transaction and commits it durably
    /// (fsync) if it succeeded. On error nothing is committed.
    pub fn write<T>(
        &self,
        apply: impl FnOnce(&mut WriteTables<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write()?;
        let result = {
            let mut tables = WriteTables {
                users: txn.open_table(USERS)?,
                connected: txn.open_table(CONNECTED)?,
                files: txn.open_table(FILES)?,
                file_counts: txn.open_table(FILE_COUNTS)?,
            };
            apply(&mut tables)
        };
        match result {
            Ok(value) => {
                txn.commit()?;
                Ok(value)
            }
            Err(err) => {
                // Abort errors hide nothing the caller does not already know.
                let _ = txn.abort();
                Err(err)
            }
        }
    }

    /// A consistent snapshot of the committed state.
    pub fn read(&self) -> Result<ReadView, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(ReadView {
            users: txn.open_table(USERS)?,
            connected: txn.open_table(CONNECTED)?,
            files: txn.open_table(FILES)?,
            file_counts: txn.open_table(FILE_COUNTS)?,
            _txn: txn,
        })
    }

    /// Closes the database, reporting what dropping it would hide.
    pub fn close(self) -> Result<(), StoreError> {
        self.db.close()?;
        Ok(())
    }
}

/// Encodes an address as `[4, a, b, c, d, port_hi, port_lo]` or
/// `[6, 16 bytes, port_hi, port_lo]`.
fn encode_addr(addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(19);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

fn decode_addr(bytes: &[u8]) -> Option<SocketAddr> {
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
    /// Number of files per user (absent = 0).
    file_counts: Table<'txn, &'static str, u64>,
}

impl WriteTables<'_> {
    pub fn user_exists(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.users.get(user)?.is_some())
    }

    pub fn add_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.users.insert(user, ())?;
        Ok(())
    }

    /// Removes the user, its address and all its files.
    pub fn remove_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.users.remove(user)?;
        self.connected.remove(user)?;
        self.file_counts.remove(user)?;
        let upper = after(user);
        let mut names = Vec::new();
        for entry in self.files.range((user, "")..(upper.as_str(), ""))? {
            let (key, _) = entry?;
            names.push(key.value().1.to_string());
        }
        for name in names {
            self.files.remove((user, name.as_str()))?;
        }
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
        self.connected.insert(user, encode_addr(addr).as_slice())?;
        Ok(())
    }

    pub fn clear_address(&mut self, user: &str) -> Result<(), StoreError> {
        self.connected.remove(user)?;
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
        if self.files.insert((user, file), description)?.is_none() {
            let count = self.file_counts.get(user)?.map_or(0, |c| c.value());
            self.file_counts.insert(user, count + 1)?;
        }
        Ok(())
    }

    /// Removes a file; true when it was published.
    pub fn remove_file(&mut self, user: &str, file: &str) -> Result<bool, StoreError> {
        if self.files.remove((user, file))?.is_none() {
            return Ok(false);
        }
        let count = self.file_counts.get(user)?.map_or(0, |c| c.value());
        if count <= 1 {
            self.file_counts.remove(user)?;
        } else {
            self.file_counts.insert(user, count - 1)?;
        }
        Ok(true)
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
    /// Number of files per user.
    file_counts: ReadOnlyTable<&'static str, u64>,
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

    /// How many users are connected in this snapshot.
    pub fn connected_count(&self) -> Result<u64, StoreError> {
        Ok(self.connected.len()?)
    }

    /// How many files `user` published in this snapshot.
    pub fn file_count(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self.file_counts.get(user)?.map_or(0, |c| c.value()))
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
            let addr = decode_addr(addr.value())
                .ok_or_else(|| StoreError::CorruptAddress(name.to_string()))?;
            // The same three fields as `reply::put_user_entry`, without
            // a heap string per address (see `addr_text`).
            put_field(out, name)?;
            put_field(out, IpText::new(addr.ip()).as_str())?;
            put_field(out, PortText::new(addr.port()).as_str())?;
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
            Err(StoreError::SchemaVersion { found: 2, .. })
        ));
    }

    #[test]
    fn address_round_trips() {
        for addr in ["127.0.0.1:80", "[::1]:65535", "10.1.2.3:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(decode_addr(&encode_addr(addr)), Some(addr));
        }
        assert_eq!(decode_addr(&[4, 1, 2]), None);
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
