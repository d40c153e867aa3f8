//! The write-ahead journal: what makes a group commit durable with one
//! sequential write and one `fdatasync`.
//!
//! Why: a durable redb commit writes every copy-on-write page of every
//! B-tree it touched, one `pwrite` each; with random users that was ~40
//! pages per batch and the writer thread was the server's bottleneck (see
//! docs/PERFORMANCE.md). Instead, each batch appends the effects it wrote
//! (absolute assignments such as "file f of u is d", never "do PUBLISH") to
//! this file, syncs it, and only then commits the redb transaction without
//! durability (visible to readers, held in memory). Every
//! [`CHECKPOINT_BYTES`] the store makes one durable redb commit and empties
//! the journal. At start-up the journal is replayed over the database.
//!
//! Replaying is idempotent: every effect sets a key to a value or removes
//! it, so replaying the whole journal over a state that already contains a
//! prefix of it (a checkpoint that was durable before the truncation was)
//! gives the same state.
//!
//! Format: the magic [`MAGIC`], then records `len: u32 LE, hash: u64 LE
//! (FNV-1a of the payload), payload`. A record that is cut short or fails
//! its hash ends the journal: only the batch being written when the process
//! died can be torn, and nobody was answered for it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Name of the journal file inside the data directory.
pub const JOURNAL_FILE_NAME: &str = "peerdex.journal";

/// First bytes of every journal: a foreign or garbage file is refused.
pub const MAGIC: &[u8; 8] = b"PDXJRNL1";

/// Journal size after which the store checkpoints: bounds both replay time
/// and the redb pages held in memory between durable commits.
pub const CHECKPOINT_BYTES: u64 = 512 * 1024;

/// Why the journal could not be read or written.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error("cannot open or write journal {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a peerdex journal")]
    Foreign { path: PathBuf },
}

/// One change written to the tables: what the journal records and replays.
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

/// The open journal file.
#[derive(Debug)]
pub struct Journal {
    /// The file, written at explicit offsets.
    file: File,
    /// Its path, for errors.
    path: PathBuf,
    /// Where the next record goes (= the valid length).
    end: u64,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and returns it with the
    /// effects it still holds, in order.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Effect>), JournalError> {
        let path = dir.join(JOURNAL_FILE_NAME);
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        let effects = if bytes.is_empty() {
            // Brand new: write the magic now so that the file is never a
            // bare record stream.
            file.write_all_at(MAGIC, 0).map_err(io_err)?;
            file.sync_data().map_err(io_err)?;
            Vec::new()
        } else if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(JournalError::Foreign { path });
        } else {
            parse_records(&bytes[MAGIC.len()..])
        };
        let journal = Journal {
            file,
            path,
            end: MAGIC.len() as u64,
            buf: Vec::new(),
        };
        // `end` stays at the magic: the caller replays the effects, makes
        // them durable in the database, then calls `reset`; until then
        // nothing is appended.
        Ok((journal, effects))
    }

    /// Bytes of records since the last reset.
    pub fn len(&self) -> u64 {
        self.end - MAGIC.len() as u64
    }

    /// True when no record was appended since the last reset.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `effects` as one record in one write and syncs it: when this
    /// returns Ok they survive a crash.
    pub fn append(&mut self, effects: &[Effect]) -> Result<(), JournalError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 12]);
        for effect in effects {
            encode(effect, &mut self.buf);
        }
        let payload_len = self.buf.len() - 12;
        let len = u32::try_from(payload_len).map_err(|_| self.io(io::ErrorKind::InvalidInput))?;
        let hash = fnv1a(&self.buf[12..]);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..12].copy_from_slice(&hash.to_le_bytes());
        let io_err = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        self.file
            .write_all_at(&self.buf, self.end)
            .map_err(io_err)?;
        self.file.sync_data().map_err(io_err)?;
        self.end += self.buf.len() as u64;
        Ok(())
    }

    /// Forgets every record: call only after they are durable in the
    /// database. Not synced on purpose: if the old records reappear after
    /// a crash, replaying them is idempotent.
    pub fn reset(&mut self) -> Result<(), JournalError> {
        self.file
            .set_len(MAGIC.len() as u64)
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.end = MAGIC.len() as u64;
        Ok(())
    }

    fn io(&self, kind: io::ErrorKind) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source: io::Error::from(kind),
        }
    }
}

/// 64-bit FNV-1a: enough to tell a torn or stale record from a whole one.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The effects of every whole record, stopping at the first torn one.
fn parse_records(mut bytes: &[u8]) -> Vec<Effect> {
    let mut effects = Vec::new();
    while bytes.len() >= 12 {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&bytes[4..12]);
        let Some(payload) = bytes.get(12..12 + len) else {
            break;
        };
        if fnv1a(payload) != u64::from_le_bytes(hash) {
            break;
        }
        let mut cursor = payload;
        let mut record = Vec::new();
        while !cursor.is_empty() {
            match decode(&mut cursor) {
                Some(effect) => record.push(effect),
                None => return effects,
            }
        }
        effects.extend(record);
        bytes = &bytes[12 + len..];
    }
    effects
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names, files and descriptions are at most 255 bytes (PROTOCOL.md);
    // u16 leaves room without a special case.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

fn encode(effect: &Effect, out: &mut Vec<u8>) {
    match effect {
        Effect::AddUser(user) => {
            out.push(0);
            put_str(out, user);
        }
        Effect::RemoveUser(user) => {
            out.push(1);
            put_str(out, user);
        }
        Effect::SetAddress(user, addr) => {
            out.push(2);
            put_str(out, user);
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
            out.extend_from_slice(&addr.port().to_le_bytes());
        }
        Effect::ClearAddress(user) => {
            out.push(3);
            put_str(out, user);
        }
        Effect::AddFile {
            user,
            file,
            description,
        } => {
            out.push(4);
            put_str(out, user);
            put_str(out, file);
            put_str(out, description);
        }
        Effect::RemoveFile { user, file } => {
            out.push(5);
            put_str(out, user);
            put_str(out, file);
        }
        Effect::SetContent {
            user,
            file,
            size,
            hash,
        } => {
            out.push(6);
            put_str(out, user);
            put_str(out, file);
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(hash);
        }
    }
}

fn take<'a>(cursor: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = cursor.split_at_checked(n)?;
    *cursor = rest;
    Some(head)
}

fn take_str(cursor: &mut &[u8]) -> Option<String> {
    let len = take(cursor, 2)?;
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    let bytes = take(cursor, len)?;
    String::from_utf8(bytes.to_vec()).ok()
}

fn decode(cursor: &mut &[u8]) -> Option<Effect> {
    let tag = take(cursor, 1)?[0];
    Some(match tag {
        0 => Effect::AddUser(take_str(cursor)?),
        1 => Effect::RemoveUser(take_str(cursor)?),
        2 => {
            let user = take_str(cursor)?;
            let ip: IpAddr = match take(cursor, 1)?[0] {
                4 => {
                    let o: [u8; 4] = take(cursor, 4)?.try_into().ok()?;
                    Ipv4Addr::from(o).into()
                }
                6 => {
                    let o: [u8; 16] = take(cursor, 16)?.try_into().ok()?;
                    Ipv6Addr::from(o).into()
                }
                _ => return None,
            };
            let port = take(cursor, 2)?;
            let port = u16::from_le_bytes([port[0], port[1]]);
            Effect::SetAddress(user, SocketAddr::new(ip, port))
        }
        3 => Effect::ClearAddress(take_str(cursor)?),
        4 => Effect::AddFile {
            user: take_str(cursor)?,
            file: take_str(cursor)?,
            description: take_str(cursor)?,
        },
        5 => Effect::RemoveFile {
            user: take_str(cursor)?,
            file: take_str(cursor)?,
        },
        6 => Effect::SetContent {
            user: take_str(cursor)?,
            file: take_str(cursor)?,
            size: u64::from_le_bytes(take(cursor, 8)?.try_into().ok()?),
            hash: take(cursor, 32)?.try_into().ok()?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Effect> {
        vec![
            Effect::AddUser("al".into()),
            Effect::SetAddress("al".into(), "10.0.0.1:80".parse().unwrap()),
            Effect::SetAddress("al".into(), "[::1]:65535".parse().unwrap()),
            Effect::AddFile {
                user: "al".into(),
                file: "f".into(),
                description: "a b c".into(),
            },
            Effect::SetContent {
                user: "al".into(),
                file: "f".into(),
                size: u64::MAX - 1,
                hash: [0x5a; 32],
            },
            Effect::RemoveFile {
                user: "al".into(),
                file: "f".into(),
            },
            Effect::ClearAddress("al".into()),
            Effect::RemoveUser("al".into()),
        ]
    }

    #[test]
    fn records_round_trip_and_reset_empties() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, replay) = Journal::open(dir.path()).unwrap();
        assert!(replay.is_empty());
        let effects = sample();
        journal.append(&effects[..3]).unwrap();
        journal.append(&effects[3..]).unwrap();
        drop(journal);
        let (mut journal, replay) = Journal::open(dir.path()).unwrap();
        assert_eq!(replay, effects);
        journal.reset().unwrap();
        drop(journal);
        assert!(Journal::open(dir.path()).unwrap().1.is_empty());
    }

    #[test]
    fn torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        let effects = sample();
        journal.append(&effects[..2]).unwrap();
        journal.append(&effects[2..]).unwrap();
        drop(journal);
        let path = dir.path().join(JOURNAL_FILE_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        assert_eq!(Journal::open(dir.path()).unwrap().1, effects[..2]);
        // A flipped byte in the last record: the same.
        file.set_len(len).unwrap();
        file.write_all_at(b"\xff", len - 1).unwrap();
        assert_eq!(Journal::open(dir.path()).unwrap().1, effects[..2]);
    }

    #[test]
    fn garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(JOURNAL_FILE_NAME), b"not a journal").unwrap();
        assert!(matches!(
            Journal::open(dir.path()),
            Err(JournalError::Foreign { .. })
        ));
    }
}
