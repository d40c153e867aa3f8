//! The write-ahead journal: what makes a group commit durable with one
//! sequential write and one `fdatasync`.
//!
//! Why: a durable redb commit writes every copy-on-write page of every
//! B-tree it touched, one `pwrite` each, and even a non-durable one costs
//! the writer the in-memory page work; with random users that was the
//! server's bottleneck (see docs/PERFORMANCE.md). Instead, each batch
//! appends the effects it wrote (absolute assignments such as "file f of u
//! is d", never "do PUBLISH") to the current journal segment and syncs it;
//! that is the commit. The in-memory state is then updated
//! ([`crate::state`]), and redb catches up later, one whole segment per
//! transaction, in the background ([`crate::checkpoint`]), which then
//! deletes the segment. At start-up every remaining segment is replayed
//! over the database, in order.
//!
//! Replaying is idempotent: every effect sets a key to a value or removes
//! it, so replaying a segment over a state that already contains it (a
//! checkpoint that was durable before the segment was deleted) gives the
//! same state.
//!
//! Files: `peerdex.journal.<n>` with `n` increasing (zero-padded, so names
//! sort by number); `peerdex.journal` is the single journal of older
//! versions and is replayed first. Format of each: the magic [`MAGIC`], then
//! records `len: u32 LE, hash: u64 LE (FNV-1a of the payload), payload`. A
//! record that is cut short or fails its hash ends the segment: only the
//! batch being written when the process died can be torn, and nobody was
//! answered for it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// Name of the single journal of versions before segments.
pub const LEGACY_JOURNAL_NAME: &str = "peerdex.journal";

/// Segment file names are this prefix and the segment number.
pub const SEGMENT_PREFIX: &str = "peerdex.journal.";

/// First bytes of every journal: a foreign or garbage file is refused.
pub const MAGIC: &[u8; 8] = b"PDXJRNL1";

/// Segment size after which the writer starts a new segment and hands the
/// full one to the checkpointer: bounds replay time and the redb pages one
/// checkpoint transaction holds in memory.
pub const SEGMENT_BYTES: u64 = 1024 * 1024;

/// Bytes of zeros written into a new segment before records, a little more
/// than [`SEGMENT_BYTES`] so that a segment is rotated before it grows.
const PREALLOCATED_BYTES: u64 = SEGMENT_BYTES + 64 * 1024;

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

/// A journal file found in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its number; 0 for the legacy single journal.
    pub number: u64,
    pub path: PathBuf,
}

/// The path of segment `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{number:012}"))
}

/// The journal files in `dir`, oldest first.
pub fn segments(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let io_err = |source| JournalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = if name == LEGACY_JOURNAL_NAME {
            0
        } else if let Some(n) = name.strip_prefix(SEGMENT_PREFIX) {
            match n.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => continue,
            }
        } else {
            continue;
        };
        found.push(SegmentFile {
            number,
            path: entry.path(),
        });
    }
    found.sort_by_key(|s| s.number);
    Ok(found)
}

/// The effects of every whole record of the journal file at `path`, in
/// order. An empty file (created, never written) holds nothing.
#[cfg(test)]
pub fn read_segment(path: &Path) -> Result<Vec<Effect>, JournalError> {
    let bytes = read_checked(path)?;
    Ok(parse_records(bytes.get(MAGIC.len()..).unwrap_or_default()))
}

/// Syncs the directory itself, so that a created or renamed file's name
/// survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// The segment being appended to.
#[derive(Debug)]
pub struct Journal {
    /// The data directory, where the next segment goes.
    dir: PathBuf,
    /// The segment's number.
    number: u64,
    /// The file, written at explicit offsets; shared with the syncer, which
    /// flushes it while the writer appends the next records.
    file: Arc<File>,
    /// Its path, for errors.
    path: PathBuf,
    /// Where the next record goes (= the valid length).
    end: u64,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

impl Journal {
    /// Creates segment `number` in `dir` (magic written and synced, the
    /// directory entry synced) and opens it for appending.
    pub fn create(dir: &Path, number: u64) -> Result<Journal, JournalError> {
        let path = segment_path(dir, number);
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err)?;
        file.write_all_at(MAGIC, 0).map_err(io_err)?;
        // Zeros ahead of the records: an append that stays inside the
        // file's length changes no metadata, so its `fdatasync` is one
        // data flush instead of a flush of the inode too (measured 0.11 vs
        // 0.15 ms on this VM's disk). Zeros end a segment like a torn
        // record: a zero header fails the hash check.
        let zeros = vec![0u8; 64 * 1024];
        let mut at = MAGIC.len() as u64;
        while at < PREALLOCATED_BYTES {
            file.write_all_at(&zeros, at).map_err(io_err)?;
            at += zeros.len() as u64;
        }
        file.sync_data().map_err(io_err)?;
        sync_dir(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            number,
            file: Arc::new(file),
            path,
            end: MAGIC.len() as u64,
            buf: Vec::new(),
        })
    }

    /// This segment's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Starts the next segment; returns the number of the finished one.
    /// The finished file is complete: every record in it was synced.
    pub fn rotate(&mut self) -> Result<u64, JournalError> {
        let next = Journal::create(&self.dir, self.number + 1)?;
        let finished = std::mem::replace(self, next);
        Ok(finished.number)
    }

    /// Bytes of records in this segment.
    pub fn len(&self) -> u64 {
        self.end - MAGIC.len() as u64
    }

    /// True when no record was appended to this segment.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `effects` as one record in one write and syncs it: when this
    /// returns Ok they survive a crash. (The server splits the two steps:
    /// [`Journal::write`] in the writer, [`SyncHandle::sync`] in the syncer.)
    #[cfg(test)]
    pub fn append(&mut self, effects: &[Effect]) -> Result<(), JournalError> {
        self.write(effects)?;
        self.sync_handle().sync()
    }

    /// Appends `effects` as one record in one write, without syncing: the
    /// record is durable once a [`SyncHandle::sync`] of this segment that
    /// started after this returned has succeeded.
    pub fn write(&mut self, effects: &[Effect]) -> Result<(), JournalError> {
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
        self.file
            .write_all_at(&self.buf, self.end)
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.end += self.buf.len() as u64;
        Ok(())
    }

    /// What syncs this segment, from any thread.
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            file: self.file.clone(),
            path: self.path.clone(),
        }
    }

    fn io(&self, kind: io::ErrorKind) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source: io::Error::from(kind),
        }
    }
}

/// Flushes one segment's written records to disk.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    file: Arc<File>,
    path: PathBuf,
}

impl SyncHandle {
    /// `fdatasync` of the segment: every record written before this call
    /// is durable when it returns Ok.
    pub fn sync(&self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// True when both handles flush the same segment.
    pub fn same_segment(&self, other: &SyncHandle) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
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
#[cfg(test)]
fn parse_records(bytes: &[u8]) -> Vec<Effect> {
    let mut effects = Vec::new();
    each_record(bytes, |record| {
        effects.extend_from_slice(record);
        Ok::<(), ()>(())
    })
    .unwrap_or(0);
    effects
}

/// Calls `apply` with the effects of each whole record in order, stopping
/// at the first torn one or at `apply`'s first error. Returns how many
/// effects were applied. Only one record is decoded at a time, so the
/// checkpointer's memory does not grow with the segment.
fn each_record<E>(
    mut bytes: &[u8],
    mut apply: impl FnMut(&[Effect]) -> Result<(), E>,
) -> Result<usize, E> {
    let mut applied = 0;
    let mut record = Vec::new();
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
        record.clear();
        while !cursor.is_empty() {
            match decode(&mut cursor) {
                Some(effect) => record.push(effect),
                None => return Ok(applied),
            }
        }
        apply(&record)?;
        applied += record.len();
        bytes = &bytes[12 + len..];
    }
    Ok(applied)
}

/// Calls `apply` with each whole record of the journal file at `path`, in
/// order (a record cut short or failing its hash ends the file). Returns the
/// number of effects.
pub fn for_each_record<E: From<JournalError>>(
    path: &Path,
    apply: impl FnMut(&[Effect]) -> Result<(), E>,
) -> Result<usize, E> {
    let bytes = read_checked(path)?;
    each_record(bytes.get(MAGIC.len()..).unwrap_or_default(), apply)
}

/// The bytes of a journal file whose magic was checked; an empty file
/// gives an empty vector.
fn read_checked(path: &Path) -> Result<Vec<u8>, JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if !bytes.is_empty() && (bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC) {
        return Err(JournalError::Foreign {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
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
    fn records_round_trip_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        let effects = sample();
        journal.append(&effects[..3]).unwrap();
        assert_eq!(journal.rotate().unwrap(), 1);
        assert_eq!(journal.number(), 2);
        journal.append(&effects[3..]).unwrap();
        drop(journal);
        let found = segments(dir.path()).unwrap();
        assert_eq!(found.iter().map(|s| s.number).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(read_segment(&found[0].path).unwrap(), effects[..3]);
        assert_eq!(read_segment(&found[1].path).unwrap(), effects[3..]);
    }

    #[test]
    fn legacy_journal_comes_first_and_strays_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::create(dir.path(), 7).unwrap());
        let legacy = MAGIC.to_vec();
        std::fs::write(dir.path().join(LEGACY_JOURNAL_NAME), &legacy).unwrap();
        std::fs::write(dir.path().join("peerdex.journal.tmp"), b"x").unwrap();
        let found = segments(dir.path()).unwrap();
        assert_eq!(found.iter().map(|s| s.number).collect::<Vec<_>>(), [0, 7]);
        assert!(read_segment(&found[0].path).unwrap().is_empty());
    }

    #[test]
    fn torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        let effects = sample();
        journal.append(&effects[..2]).unwrap();
        journal.append(&effects[2..]).unwrap();
        let len = MAGIC.len() as u64 + journal.len();
        drop(journal);
        let path = segment_path(dir.path(), 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        assert_eq!(read_segment(&path).unwrap(), effects[..2]);
        // A flipped byte in the last record: the same.
        file.set_len(len).unwrap();
        file.write_all_at(b"\xff", len - 1).unwrap();
        assert_eq!(read_segment(&path).unwrap(), effects[..2]);
    }

    #[test]
    fn preallocated_zeros_end_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        let path = segment_path(dir.path(), 1);
        assert!(std::fs::metadata(&path).unwrap().len() > SEGMENT_BYTES);
        assert!(read_segment(&path).unwrap().is_empty());
        let effects = sample();
        journal.append(&effects).unwrap();
        assert_eq!(read_segment(&path).unwrap(), effects);
    }

    #[test]
    fn garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 3);
        std::fs::write(&path, b"not a journal").unwrap();
        assert!(matches!(
            read_segment(&path),
            Err(JournalError::Foreign { .. })
        ));
    }
}
