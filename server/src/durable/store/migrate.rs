//! The schema migrations of [`super::Store::open`]: a database of an older
//! table layout is rewritten as the current one inside the transaction that
//! found its version, so a crash leaves either the old layout or the new.
//!
//! - Version 1 stored the address as binary (`[4, a, b, c, d, port]`) and
//!   kept a `file_counts` table ([`from_v1`] makes it version 2).
//! - Version 2 had no `file_content` table ([`from_v2`] creates it and sets
//!   version 3; entries published before stay without size and hash).
//! - Version 3 had no accounts: [`from_v3`] creates the `credentials`,
//!   `holders` and `last_seen` tables, empty (every earlier account has no
//!   password, no user was connected through a session, none has a
//!   recorded disconnect), and sets version 4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{
    encode_addr, StoreError, CONNECTED, CONTENT, CREDENTIALS, HOLDERS, LAST_SEEN, META, SCHEMA_KEY,
    SCHEMA_VERSION,
};

/// Version 1 only: number of files per user.
const FILE_COUNTS_V1: TableDefinition<&str, u64> = TableDefinition::new("file_counts");

/// Rewrites a version-1 database as version 2 inside `txn`: addresses from
/// binary to their encoded fields, and the `file_counts` table dropped.
pub(super) fn from_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
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
pub(super) fn from_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CONTENT)?;
    txn.open_table(META)?.insert(SCHEMA_KEY, 3)?;
    tracing::info!("database migrated from schema version 2 to 3");
    Ok(())
}

/// Rewrites a version-3 database as version 4 inside `txn`: adds the
/// account tables, empty.
pub(super) fn from_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CREDENTIALS)?;
    txn.open_table(HOLDERS)?;
    txn.open_table(LAST_SEEN)?;
    txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
    tracing::info!("database migrated from schema version 3 to {SCHEMA_VERSION}");
    Ok(())
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

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase, TableHandle};

    use super::super::{Store, DB_FILE_NAME, FILES, USERS};
    use super::*;
    use crate::effect::Effect;

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// The schema version stored in the database.
    fn schema_version(store: &Store) -> u64 {
        let txn = store.db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let version = meta.get(SCHEMA_KEY).unwrap().unwrap().value();
        version
    }

    #[test]
    fn version_1_address_decodes() {
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
        let (tables, _) = store.load().unwrap();
        let listed: Vec<u8> = tables
            .connected_entries()
            .runs()
            .flatten()
            .copied()
            .collect();
        assert_eq!(listed, b"al\x0010.0.0.1\x008000\x00bo\x00::1\x0080\x00");
        assert_eq!(tables.file_entries("al").len(), 1);
        let txn = store.db.begin_write().unwrap();
        assert!(!txn
            .list_tables()
            .unwrap()
            .any(|t| t.name() == "file_counts"));
        drop(txn);
        assert_eq!(schema_version(&store), SCHEMA_VERSION);
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
        let (tables, indexes) = store.load().unwrap();
        let file = tables.file("al", "Song.mp3").unwrap();
        assert_eq!((file.description, file.content), ("d", None));
        // The index was built from the migrated store.
        let pattern = crate::index::Pattern::parse("song").unwrap();
        assert_eq!(indexes.names.search(&pattern, 10).0, 1);
        store
            .apply_durably(&[
                Effect::AddFile {
                    user: "al".into(),
                    file: "g".into(),
                    description: String::new(),
                },
                Effect::SetContent {
                    user: "al".into(),
                    file: "g".into(),
                    size: 3,
                    hash: [1; 32],
                },
            ])
            .unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tables, _) = store.load().unwrap();
        assert_eq!(tables.file("al", "g").unwrap().content, Some((3, [1; 32])));
        assert_eq!(schema_version(&store), SCHEMA_VERSION);
    }

    #[test]
    fn version_3_database_is_migrated() {
        let dir = temp();
        let db = Database::create(dir.path().join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META).unwrap().insert(SCHEMA_KEY, 3).unwrap();
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
                .insert(("al", "f"), "d")
                .unwrap();
            txn.open_table(CONTENT)
                .unwrap()
                .insert(("al", "f"), &super::super::encode_content(3, &[1; 32])[..])
                .unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        assert!(matches!(
            super::super::survey(dir.path()),
            super::super::Survey::OlderSchema(3)
        ));

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_version(&store), SCHEMA_VERSION);
        let (tables, _) = store.load().unwrap();
        // Everything of version 3 is kept, and nobody has an account yet.
        assert_eq!(tables.address("al"), Some("10.0.0.1:80".parse().unwrap()));
        assert_eq!(tables.file("al", "f").unwrap().content, Some((3, [1; 32])));
        assert_eq!(tables.credential("al"), None);
        assert_eq!(tables.holder("al"), None);
        assert_eq!(tables.last_seen("al"), None);
        // The new tables are there to write.
        store
            .apply_durably(&[
                Effect::SetCredential {
                    user: "al".into(),
                    phc: "$argon2id$x".into(),
                },
                Effect::SetLastSeen {
                    user: "al".into(),
                    at: 9,
                },
            ])
            .unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tables, _) = store.load().unwrap();
        assert_eq!(tables.credential("al").as_deref(), Some("$argon2id$x"));
        assert_eq!(tables.last_seen("al"), Some(9));
    }
}
