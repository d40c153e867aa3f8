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
//! transaction, in the background ([`crate::durable::checkpoint`]), which then
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
//! records `len: u32 LE, hash: u64 LE (FNV-1a of the payload), payload`,
//! then zeros to the end of the file (segments are preallocated). A file
//! that is empty or all zeros holds nothing (created, never written).
//!
//! # Torn tail or damage
//!
//! Reading ([`read_segment`]) stops at the first record that is not whole:
//! cut short (its header, or the payload its length announces, runs past
//! the end of the file), failing its hash, or not decoding. Only the batch
//! being written when the process died can be incomplete, and nobody was
//! answered for it; any other bad record held acknowledged operations.
//! So a bad record at offset `o` is a **torn tail**, dropped with a
//! warning, only when all of these hold:
//!
//! 1. no whole record starts anywhere after `o` (searched byte by byte,
//!    with cheap checks first: non-zero length that fits in the file, a
//!    known effect tag as the first payload byte; then the hash; the bytes
//!    hashed are bounded by [`SEARCH_BUDGET`], and a search that runs out
//!    counts as finding one);
//! 2. every byte after the record's extent is zero. The extent is
//!    `o + 12 + len`, or the end of the file when that runs past it; a
//!    header of zeros (length 0 and hash 0, which the writer never
//!    produces) has no length, and its extent runs to the last non-zero
//!    byte;
//! 3. the segment is the newest one: the writer finishes a segment before
//!    it starts the next, so a later segment means this record was written
//!    whole once (the one exception, a power cut between a segment's last
//!    write and its sync, is reported as damage too: the reader cannot tell
//!    it from a damaged record whose successors were acknowledged, and
//!    `salvage` recovers either);
//! 4. the record bears the mark of an incomplete write: it is cut short, or
//!    one of its pieces between 512-byte sector boundaries of the file
//!    (header included) is all zeros, a sector that never reached the disk
//!    (the rule of etcd's WAL, `isTornEntry`). A record of full length
//!    whose bytes are all there but wrong was written whole and then
//!    damaged.
//!
//! Anything else is **damage** ([`Damage`]): start-up stops with an error
//! naming the file and the offset and changes nothing; `peerdex-server
//! check` and `salvage` ([`crate::durable::recovery`]) are the way out. Segments
//! moved aside by `salvage` go to [`DAMAGED_DIR`], which the server does
//! not read but counts when it numbers new segments.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use crate::effect::Effect;

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

/// Subdirectory of the data directory where `salvage` moves damaged
/// segments: out of the way of replay, still counted by
/// [`next_segment_number`].
pub const DAMAGED_DIR: &str = "damaged";

/// Bytes of a record header: length and hash.
const HEADER: usize = 12;

/// Sector size the torn-write rule assumes: the smallest unit a disk
/// writes whole.
const SECTOR: usize = 512;

/// Largest effect tag ([`encode`]): a cheap first test of a candidate
/// record when searching past a bad one.
const MAX_TAG: u8 = 9;

/// Most payload bytes hashed while searching for a whole record after a
/// bad one: bounds the cost of a hostile file (every position announcing
/// a long payload) to a fraction of a second.
pub const SEARCH_BUDGET: usize = 64 * 1024 * 1024;

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
    #[error("journal segment {path} is damaged at offset {}: {damage}", damage.offset)]
    Damaged { path: PathBuf, damage: Damage },
}

/// What is wrong with a record that is not whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Its header, or the payload its length announces, runs past the end
    /// of the file.
    CutShort,
    /// Its header is zeros (no length), but non-zero bytes follow.
    ZeroHeader,
    /// Its payload does not match its hash.
    HashMismatch,
    /// Its hash matches, but the payload is not a sequence of effects.
    Undecodable,
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flaw::CutShort => "runs past the end of the file",
            Flaw::ZeroHeader => "has a header of zeros",
            Flaw::HashMismatch => "fails its hash check",
            Flaw::Undecodable => "does not decode",
        })
    }
}

/// Why a bad record is damage rather than a torn tail (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A whole record starts at this offset after it.
    RecordFollows(u64),
    /// The byte at this offset, after the record's extent, is not zero.
    DataFollows(u64),
    /// The search for a whole record after it ran out of budget.
    SearchGaveUp,
    /// A later segment follows this one.
    LaterSegment,
    /// All its bytes are there (not cut short, no zero sector).
    WrittenWhole,
}

/// A bad record that is not a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Its length field, unless its header is cut short or zeros.
    pub len: Option<u32>,
    /// What is wrong with it.
    pub flaw: Flaw,
    /// Why it cannot be the torn last write.
    pub evidence: Evidence,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.len {
            Some(len) => write!(f, "the record there (length {len}) {}", self.flaw)?,
            None => write!(f, "the record there {}", self.flaw)?,
        }
        match self.evidence {
            Evidence::RecordFollows(at) => write!(f, ", and a whole record follows at offset {at}"),
            Evidence::DataFollows(at) => write!(f, ", and data follows it at offset {at}"),
            Evidence::SearchGaveUp => f.write_str(", and whole records may follow it"),
            Evidence::LaterSegment => f.write_str(", and a later segment follows this one"),
            Evidence::WrittenWhole => f.write_str(", but all its bytes were written"),
        }
    }
}

/// How the records of a segment end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Zeros or the end of the file after the last whole record.
    Clean,
    /// The last write was incomplete (module doc): its record, at this
    /// offset, is dropped. Nobody was answered for it.
    TornTail { offset: u64, flaw: Flaw },
    /// A bad record that held acknowledged operations, or may have.
    Damaged(Damage),
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
        let Some(number) = name.to_str().and_then(segment_number) else {
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

/// The number of the journal file called `name`, if it is one.
fn segment_number(name: &str) -> Option<u64> {
    if name == LEGACY_JOURNAL_NAME {
        return Some(0);
    }
    match name.strip_prefix(SEGMENT_PREFIX)?.parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => None,
    }
}

/// The number for a new segment in `dir`: above every segment there and
/// every one moved aside into [`DAMAGED_DIR`], so that a new segment never
/// takes the name of one moved aside (nor of one an operator moves back).
pub fn next_segment_number(dir: &Path) -> Result<u64, JournalError> {
    let mut last = segments(dir)?.last().map_or(0, |s| s.number);
    let damaged = dir.join(DAMAGED_DIR);
    if damaged.is_dir() {
        last = last.max(segments(&damaged)?.last().map_or(0, |s| s.number));
    }
    Ok(last + 1)
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
    /// Length of the file as created (magic and zeros): what a failed
    /// write is cut back to.
    allocated: u64,
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
        // data flush instead of a flush of the inode too. Zeros end a
        // segment like a torn record: a zero header fails the hash check.
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
            allocated: at,
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
        if let Err(source) = self.file.write_all_at(&self.buf, self.end) {
            self.undo_partial_write(self.buf.len() as u64);
            return Err(JournalError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.end += self.buf.len() as u64;
        Ok(())
    }

    /// After a failed write of `len` bytes at the end: puts the zeros back
    /// and cuts what the write appended past the preallocation, so that
    /// the partial record it may have left is not taken for damage once a
    /// later segment exists (module doc, rule 3). Best effort: if this
    /// fails too, the next start reports damage at that offset and
    /// `salvage` lists the failed (never acknowledged) record as lost.
    fn undo_partial_write(&self, len: u64) {
        let zeros = vec![0u8; 64 * 1024];
        let undo = || -> io::Result<()> {
            let mut at = self.end;
            let zeroed_to = (self.end + len).min(self.allocated);
            while at < zeroed_to {
                let n = (zeroed_to - at).min(zeros.len() as u64) as usize;
                self.file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            self.file.set_len(self.allocated.max(self.end))?;
            self.file.sync_data()
        };
        if let Err(err) = undo() {
            tracing::error!(path = %self.path.display(), offset = self.end, error = %err, "cannot undo a failed journal write");
        }
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

/// A journal file read and checked: its whole records and how they end.
#[derive(Debug)]
pub struct SegmentRead {
    /// The file.
    path: PathBuf,
    /// Its bytes (magic included; empty for a file that holds nothing).
    bytes: Vec<u8>,
    /// End of the last whole record before the ending.
    intact_end: usize,
    /// Whole records before the ending.
    records: usize,
    /// Effects in them.
    effects: usize,
    /// What follows them.
    ending: Ending,
}

impl SegmentRead {
    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whole records before the ending (all of them when clean).
    pub fn records(&self) -> usize {
        self.records
    }

    /// Effects in those records.
    pub fn effects(&self) -> usize {
        self.effects
    }

    /// What follows the whole records.
    pub fn ending(&self) -> &Ending {
        &self.ending
    }

    /// The damage, if the segment is damaged.
    pub fn damage(&self) -> Option<&Damage> {
        match &self.ending {
            Ending::Damaged(damage) => Some(damage),
            _ => None,
        }
    }

    /// Ok unless the segment is damaged: then the error that names the
    /// file and the offset.
    pub fn intact(&self) -> Result<(), JournalError> {
        match self.damage() {
            None => Ok(()),
            Some(damage) => Err(JournalError::Damaged {
                path: self.path.clone(),
                damage: damage.clone(),
            }),
        }
    }

    /// Calls `apply` with the effects of each whole record before the
    /// ending, in order, stopping at `apply`'s first error. Returns how
    /// many effects were applied. One record is decoded at a time, so
    /// memory does not grow with the segment.
    pub fn for_each_record<E>(
        &self,
        mut apply: impl FnMut(&[Effect]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut applied = 0;
        let mut record = Vec::new();
        let mut at = MAGIC.len();
        while at < self.intact_end {
            let Parsed::Whole { end, .. } = parse_at(&self.bytes, at) else {
                // Checked whole when read: cannot happen.
                break;
            };
            record.clear();
            let mut cursor = &self.bytes[at + HEADER..end];
            while let Some(effect) = decode(&mut cursor) {
                record.push(effect);
            }
            apply(&record)?;
            applied += record.len();
            at = end;
        }
        Ok(applied)
    }

    /// Every record from the bad one on, when the segment is damaged: what
    /// is lost if the segment is set aside. Empty otherwise.
    pub fn lost_after_damage(&self) -> Vec<LostRecord> {
        match self.damage() {
            // The bad record starts where the whole ones end.
            Some(_) => lost_from(&self.bytes, self.intact_end),
            None => Vec::new(),
        }
    }

    /// Every record of the segment, whole or not, from the first: what is
    /// lost if the whole segment is set aside.
    pub fn all_records(&self) -> Vec<LostRecord> {
        if self.bytes.is_empty() {
            return Vec::new();
        }
        lost_from(&self.bytes, MAGIC.len())
    }
}

/// A record that `salvage` sets aside, as far as it can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostRecord {
    /// A whole record.
    Whole {
        /// Its byte offset.
        offset: u64,
        /// Its payload length.
        len: u32,
        /// Its effects.
        effects: Vec<Effect>,
    },
    /// Bytes that are not a whole record, up to the next whole record or
    /// the zeros at the end.
    Damaged {
        /// Where they start.
        offset: u64,
        /// Where they end.
        end: u64,
        /// The length field at `offset`, unless cut short or zeros.
        len: Option<u32>,
        /// What is wrong with the record there.
        flaw: Flaw,
        /// The effects its payload decodes to, as far as it decodes; not
        /// verified by the hash, so possibly not what was written.
        unverified: Vec<Effect>,
    },
}

/// Reads the journal file at `path` and checks its records (module doc).
/// `newest` says whether it is the newest segment, the only one that may
/// end in a torn tail. Damage is reported in [`SegmentRead::ending`], not
/// as an error: only I/O and a foreign file are errors here.
pub fn read_segment(path: &Path, newest: bool) -> Result<SegmentRead, JournalError> {
    let bytes = read_checked(path)?;
    let scan = scan(&bytes, newest);
    Ok(SegmentRead {
        path: path.to_path_buf(),
        bytes,
        intact_end: scan.intact_end,
        records: scan.records,
        effects: scan.effects,
        ending: scan.ending,
    })
}

/// Reads every segment of `segments` (oldest first, as [`segments`]
/// lists them): the last one is the newest.
pub fn read_segments(segments: &[SegmentFile]) -> Result<Vec<SegmentRead>, JournalError> {
    let newest = segments.len().saturating_sub(1);
    segments
        .iter()
        .enumerate()
        .map(|(i, segment)| read_segment(&segment.path, i == newest))
        .collect()
}

/// What [`scan`] found.
struct Scan {
    intact_end: usize,
    records: usize,
    effects: usize,
    ending: Ending,
}

/// A record parsed at an offset.
enum Parsed {
    /// Whole: it ends at `end` and holds `effects` effects.
    Whole { end: usize, effects: usize },
    /// Not whole.
    Bad { flaw: Flaw, len: Option<u32> },
}

/// Parses the record at `at` of the file `bytes`, checking its hash and
/// that its payload decodes. Never trusts the length before checking that
/// it fits.
fn parse_at(bytes: &[u8], at: usize) -> Parsed {
    let Some(header) = at.checked_add(HEADER).and_then(|end| bytes.get(at..end)) else {
        return Parsed::Bad {
            flaw: Flaw::CutShort,
            len: None,
        };
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut hash = [0u8; 8];
    hash.copy_from_slice(&header[4..]);
    let hash = u64::from_le_bytes(hash);
    if len == 0 && hash == 0 {
        return Parsed::Bad {
            flaw: Flaw::ZeroHeader,
            len: None,
        };
    }
    let start = at + HEADER;
    let payload = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .and_then(|end| bytes.get(start..end));
    let Some(payload) = payload else {
        return Parsed::Bad {
            flaw: Flaw::CutShort,
            len: Some(len),
        };
    };
    if fnv1a(payload) != hash {
        return Parsed::Bad {
            flaw: Flaw::HashMismatch,
            len: Some(len),
        };
    }
    match count_effects(payload) {
        Some(effects) => Parsed::Whole {
            end: start + payload.len(),
            effects,
        },
        None => Parsed::Bad {
            flaw: Flaw::Undecodable,
            len: Some(len),
        },
    }
}

/// The number of effects in `payload`, or `None` if it is not a sequence
/// of whole effects.
fn count_effects(mut payload: &[u8]) -> Option<usize> {
    let mut count = 0;
    while !payload.is_empty() {
        decode(&mut payload)?;
        count += 1;
    }
    Some(count)
}

/// Reads the records of the file `bytes` up to the first bad one and
/// classifies how they end (module doc).
fn scan(bytes: &[u8], newest: bool) -> Scan {
    let mut scan = Scan {
        intact_end: MAGIC.len(),
        records: 0,
        effects: 0,
        ending: Ending::Clean,
    };
    // Everything after the last non-zero byte is the preallocated zeros.
    let Some(last_nonzero) = bytes.iter().rposition(|&b| b != 0) else {
        return scan;
    };
    let mut at = MAGIC.len();
    while at <= last_nonzero {
        match parse_at(bytes, at) {
            Parsed::Whole { end, effects } => {
                scan.records += 1;
                scan.effects += effects;
                at = end;
                scan.intact_end = end;
            }
            Parsed::Bad { flaw, len } => {
                scan.ending = classify(bytes, at, flaw, len, last_nonzero, newest);
                break;
            }
        }
    }
    scan
}

/// Torn tail or damage for the bad record at `at` (module doc, rules 1-4).
fn classify(
    bytes: &[u8],
    at: usize,
    flaw: Flaw,
    len: Option<u32>,
    last_nonzero: usize,
    newest: bool,
) -> Ending {
    let offset = at as u64;
    let damaged = |evidence| {
        Ending::Damaged(Damage {
            offset,
            len,
            flaw,
            evidence,
        })
    };
    match find_record(bytes, at + 1) {
        Search::Found(next) => return damaged(Evidence::RecordFollows(next as u64)),
        Search::GaveUp => return damaged(Evidence::SearchGaveUp),
        Search::None => {}
    }
    let extent = match (flaw, len) {
        (Flaw::CutShort, _) => bytes.len(),
        (_, None) => last_nonzero + 1,
        (_, Some(len)) => (at + HEADER).saturating_add(len as usize).min(bytes.len()),
    };
    if last_nonzero >= extent {
        let data = bytes[extent..].iter().position(|&b| b != 0).unwrap_or(0) + extent;
        return damaged(Evidence::DataFollows(data as u64));
    }
    if !newest {
        return damaged(Evidence::LaterSegment);
    }
    if flaw != Flaw::CutShort && !has_zero_sector(&bytes[..extent], at) {
        return damaged(Evidence::WrittenWhole);
    }
    Ending::TornTail { offset, flaw }
}

/// True when a piece of `bytes[from..]` between two 512-byte boundaries of
/// the file (or its ends) is all zeros.
fn has_zero_sector(bytes: &[u8], from: usize) -> bool {
    let mut start = from;
    while start < bytes.len() {
        let end = ((start / SECTOR + 1) * SECTOR).min(bytes.len());
        if bytes[start..end].iter().all(|&b| b == 0) {
            return true;
        }
        start = end;
    }
    false
}

/// The result of a search for a whole record.
enum Search {
    Found(usize),
    None,
    GaveUp,
}

/// The first offset at or after `from` where a whole record starts. Cheap
/// checks come first (a non-zero length that fits, a known first tag);
/// at most [`SEARCH_BUDGET`] payload bytes are hashed.
fn find_record(bytes: &[u8], from: usize) -> Search {
    let mut budget = SEARCH_BUDGET;
    let mut at = from;
    while at + HEADER < bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let len = len as usize;
        let fits = len != 0 && len <= bytes.len() - at - HEADER;
        if fits && bytes[at + HEADER] <= MAX_TAG {
            let Some(left) = budget.checked_sub(len) else {
                return Search::GaveUp;
            };
            budget = left;
            if let Parsed::Whole { .. } = parse_at(bytes, at) {
                return Search::Found(at);
            }
        }
        at += 1;
    }
    Search::None
}

/// Every record of the file `bytes` from `at` on, whole or not (a bad
/// stretch ends at the next whole record).
fn lost_from(bytes: &[u8], mut at: usize) -> Vec<LostRecord> {
    let mut lost = Vec::new();
    let Some(last_nonzero) = bytes.iter().rposition(|&b| b != 0) else {
        return lost;
    };
    while at <= last_nonzero {
        match parse_at(bytes, at) {
            Parsed::Whole { end, .. } => {
                let mut cursor = &bytes[at + HEADER..end];
                let mut effects = Vec::new();
                while let Some(effect) = decode(&mut cursor) {
                    effects.push(effect);
                }
                lost.push(LostRecord::Whole {
                    offset: at as u64,
                    len: (end - at - HEADER) as u32,
                    effects,
                });
                at = end;
            }
            Parsed::Bad { flaw, len } => {
                let next = match find_record(bytes, at + 1) {
                    Search::Found(next) => Some(next),
                    Search::None | Search::GaveUp => None,
                };
                let end = next.unwrap_or(last_nonzero + 1);
                // Whatever the payload decodes to, within this stretch.
                let payload_end = len.map_or(at + HEADER, |len| {
                    (at + HEADER).saturating_add(len as usize).min(end)
                });
                let mut cursor = bytes.get(at + HEADER..payload_end).unwrap_or_default();
                let mut unverified = Vec::new();
                while let Some(effect) = decode(&mut cursor) {
                    unverified.push(effect);
                }
                lost.push(LostRecord::Damaged {
                    offset: at as u64,
                    end: end as u64,
                    len,
                    flaw,
                    unverified,
                });
                match next {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
    }
    lost
}

/// The bytes of a journal file whose magic was checked. A file that is
/// empty or all zeros (created, never written: a crash inside
/// [`Journal::create`]) gives an empty vector.
fn read_checked(path: &Path) -> Result<Vec<u8>, JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.iter().all(|&b| b == 0) {
        return Ok(Vec::new());
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(JournalError::Foreign {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names, files and descriptions are at most 255 bytes (PROTOCOL.md),
    // PHC strings about a hundred; u16 leaves room without a special case.
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
            put_addr(out, *addr);
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
        Effect::SetCredential { user, phc } => {
            out.push(7);
            put_str(out, user);
            put_str(out, phc);
        }
        Effect::SetHeldAddress {
            user,
            addr,
            session,
        } => {
            out.push(8);
            put_str(out, user);
            put_addr(out, *addr);
            out.extend_from_slice(&session.to_le_bytes());
        }
        Effect::SetLastSeen { user, at } => {
            out.push(9);
            put_str(out, user);
            out.extend_from_slice(&at.to_le_bytes());
        }
    }
}

/// An address: the IP version (4 or 6), its octets, the port (u16 LE).
fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
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

/// Decodes what [`put_addr`] wrote.
fn take_addr(cursor: &mut &[u8]) -> Option<SocketAddr> {
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
    Some(SocketAddr::new(ip, u16::from_le_bytes([port[0], port[1]])))
}

fn take_u64(cursor: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(cursor, 8)?.try_into().ok()?))
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
            Effect::SetAddress(user, take_addr(cursor)?)
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
        7 => Effect::SetCredential {
            user: take_str(cursor)?,
            phc: take_str(cursor)?,
        },
        8 => Effect::SetHeldAddress {
            user: take_str(cursor)?,
            addr: take_addr(cursor)?,
            session: take_u64(cursor)?,
        },
        9 => Effect::SetLastSeen {
            user: take_str(cursor)?,
            at: take_u64(cursor)?,
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
            Effect::SetCredential {
                user: "al".into(),
                phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
            Effect::SetHeldAddress {
                user: "al".into(),
                addr: "10.0.0.2:81".parse().unwrap(),
                session: u64::MAX - 3,
            },
            Effect::SetHeldAddress {
                user: "al".into(),
                addr: "[::2]:1".parse().unwrap(),
                session: 1,
            },
            Effect::ClearAddress("al".into()),
            Effect::SetLastSeen {
                user: "al".into(),
                at: 1_764_000_000,
            },
            Effect::RemoveUser("al".into()),
        ]
    }

    /// The effects of the whole records of the newest segment at `path`.
    fn effects(path: &Path) -> Vec<Effect> {
        let read = read_segment(path, true).unwrap();
        let mut effects = Vec::new();
        read.for_each_record(|record| {
            effects.extend_from_slice(record);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(effects.len(), read.effects());
        effects
    }

    /// A segment of `n` records (`AddUser u1` .. `AddUser u<n>`), its path
    /// and the offsets of its records.
    fn users_segment(dir: &Path, n: usize) -> (PathBuf, Vec<usize>) {
        let mut journal = Journal::create(dir, 1).unwrap();
        let mut offsets = Vec::new();
        for i in 1..=n {
            offsets.push(journal.end as usize);
            journal.append(&[Effect::AddUser(format!("u{i}"))]).unwrap();
        }
        (segment_path(dir, 1), offsets)
    }

    /// Changes the file at `path` with `change`.
    fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = std::fs::read(path).unwrap();
        change(&mut bytes);
        std::fs::write(path, bytes).unwrap();
    }

    fn ending(path: &Path, newest: bool) -> Ending {
        read_segment(path, newest).unwrap().ending().clone()
    }

    #[test]
    fn records_round_trip_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        let effects_in = sample();
        journal.append(&effects_in[..3]).unwrap();
        assert_eq!(journal.rotate().unwrap(), 1);
        assert_eq!(journal.number(), 2);
        journal.append(&effects_in[3..]).unwrap();
        drop(journal);
        let found = segments(dir.path()).unwrap();
        assert_eq!(found.iter().map(|s| s.number).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(effects(&found[0].path), effects_in[..3]);
        assert_eq!(effects(&found[1].path), effects_in[3..]);
        let reads = read_segments(&found).unwrap();
        assert!(reads.iter().all(|r| *r.ending() == Ending::Clean));
        assert_eq!(reads[0].records(), 1);
        assert_eq!(next_segment_number(dir.path()).unwrap(), 3);
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
        assert!(effects(&found[0].path).is_empty());
    }

    #[test]
    fn segments_moved_aside_are_counted_in_new_numbers() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_segment_number(dir.path()).unwrap(), 1);
        let damaged = dir.path().join(DAMAGED_DIR);
        std::fs::create_dir(&damaged).unwrap();
        drop(Journal::create(&damaged, 4).unwrap());
        assert!(segments(dir.path()).unwrap().is_empty());
        assert_eq!(next_segment_number(dir.path()).unwrap(), 5);
    }

    #[test]
    fn a_truncated_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = users_segment(dir.path(), 10);
        let last = offsets[9];
        for cut in [last + 3, last + HEADER, last + HEADER + 2] {
            edit(&path, |b| b.truncate(cut));
            assert_eq!(
                ending(&path, true),
                Ending::TornTail {
                    offset: last as u64,
                    flaw: Flaw::CutShort
                },
                "cut at {cut}"
            );
            assert_eq!(effects(&path).len(), 9);
        }
    }

    /// The last record's bytes from a sector boundary on never reached the
    /// disk: they are still the preallocated zeros.
    #[test]
    fn a_zeroed_sector_in_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        journal.append(&[Effect::AddUser("al".into())]).unwrap();
        let at = journal.end as usize;
        let long = Effect::AddFile {
            user: "al".into(),
            file: "f".repeat(255),
            description: "d".repeat(255),
        };
        journal.append(&[long.clone(), long]).unwrap();
        let end = journal.end as usize;
        drop(journal);
        let path = segment_path(dir.path(), 1);
        assert!(end - at > 2 * SECTOR);
        let boundary = (at / SECTOR + 1) * SECTOR;
        edit(&path, |b| b[boundary..end].fill(0));
        assert_eq!(
            ending(&path, true),
            Ending::TornTail {
                offset: at as u64,
                flaw: Flaw::HashMismatch
            }
        );
        assert_eq!(effects(&path), [Effect::AddUser("al".into())]);
        // Only a sector in the middle missing: the same.
        edit(&path, |b| {
            b[boundary..end].fill(0x66);
            b[boundary + SECTOR..boundary + 2 * SECTOR].fill(0);
        });
        assert!(matches!(ending(&path, true), Ending::TornTail { .. }));
    }

    /// A flipped byte in the last record: all its bytes were written, so it
    /// was damaged after the write, which may have been answered.
    #[test]
    fn a_flipped_byte_in_the_last_record_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = users_segment(dir.path(), 10);
        let last = offsets[9];
        edit(&path, |b| b[last + HEADER + 3] ^= 0x01);
        assert_eq!(
            ending(&path, true),
            Ending::Damaged(Damage {
                offset: last as u64,
                len: Some(6),
                flaw: Flaw::HashMismatch,
                evidence: Evidence::WrittenWhole,
            })
        );
    }

    #[test]
    fn a_flipped_payload_byte_in_the_middle_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = users_segment(dir.path(), 100);
        let at = offsets[49];
        edit(&path, |b| b[at + HEADER + 3] ^= 0x01);
        let read = read_segment(&path, true).unwrap();
        assert_eq!(
            *read.ending(),
            Ending::Damaged(Damage {
                offset: at as u64,
                len: Some(6),
                flaw: Flaw::HashMismatch,
                evidence: Evidence::RecordFollows(offsets[50] as u64),
            })
        );
        assert_eq!(read.records(), 49);
        let err = read.intact().unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(&format!("offset {at}")), "{err}");
        // What salvage lists: the bad record, then the 50 after it.
        let lost = read.lost_after_damage();
        assert_eq!(lost.len(), 51);
        assert_eq!(
            lost[0],
            LostRecord::Damaged {
                offset: at as u64,
                end: offsets[50] as u64,
                len: Some(6),
                flaw: Flaw::HashMismatch,
                unverified: vec![Effect::AddUser("t50".into())],
            }
        );
        assert_eq!(
            lost[1],
            LostRecord::Whole {
                offset: offsets[50] as u64,
                len: 6,
                effects: vec![Effect::AddUser("u51".into())],
            }
        );
        assert_eq!(read.all_records().len(), 100);
    }

    #[test]
    fn a_length_past_the_end_in_the_middle_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = users_segment(dir.path(), 100);
        let at = offsets[49];
        edit(&path, |b| b[at..at + 4].copy_from_slice(&[0xff; 4]));
        assert_eq!(
            ending(&path, true),
            Ending::Damaged(Damage {
                offset: at as u64,
                len: Some(u32::MAX),
                flaw: Flaw::CutShort,
                evidence: Evidence::RecordFollows(offsets[50] as u64),
            })
        );
        // In the last record, with nothing after it, the same length is
        // the torn last write.
        let (path, offsets) = users_segment(dir.path(), 100);
        let last = offsets[99];
        edit(&path, |b| b[last..last + 4].copy_from_slice(&[0xff; 4]));
        assert_eq!(
            ending(&path, true),
            Ending::TornTail {
                offset: last as u64,
                flaw: Flaw::CutShort
            }
        );
    }

    #[test]
    fn a_zeroed_header_in_the_middle_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = users_segment(dir.path(), 100);
        let at = offsets[49];
        edit(&path, |b| b[at..at + HEADER].fill(0));
        assert_eq!(
            ending(&path, true),
            Ending::Damaged(Damage {
                offset: at as u64,
                len: None,
                flaw: Flaw::ZeroHeader,
                evidence: Evidence::RecordFollows(offsets[50] as u64),
            })
        );
    }

    #[test]
    fn data_after_a_bad_last_record_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = users_segment(dir.path(), 10);
        let last = offsets[9];
        let end = last + HEADER + 6;
        // The last record cut short by zeros, then a stray byte further on.
        edit(&path, |b| {
            b[last + HEADER..end].fill(0);
            b[end + 100] = 0x77;
        });
        assert_eq!(
            ending(&path, true),
            Ending::Damaged(Damage {
                offset: last as u64,
                len: Some(6),
                flaw: Flaw::HashMismatch,
                evidence: Evidence::DataFollows((end + 100) as u64),
            })
        );
    }

    #[test]
    fn a_torn_tail_in_a_segment_that_is_not_the_newest_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = users_segment(dir.path(), 10);
        edit(&path, |b| b.truncate(offsets[9] + 3));
        assert!(matches!(ending(&path, true), Ending::TornTail { .. }));
        assert_eq!(
            ending(&path, false),
            Ending::Damaged(Damage {
                offset: offsets[9] as u64,
                len: None,
                flaw: Flaw::CutShort,
                evidence: Evidence::LaterSegment,
            })
        );
    }

    /// Every position announcing a long payload that fits, with a valid
    /// first tag: the search gives up within its budget instead of
    /// hashing for hours, and the segment counts as damaged.
    #[test]
    fn a_hostile_segment_costs_a_bounded_search() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = MAGIC.to_vec();
        bytes.extend([0u8, 0, 4, 0].iter().cycle().take(1024 * 1024));
        std::fs::write(&path, &bytes).unwrap();
        let started = std::time::Instant::now();
        let ending = ending(&path, true);
        assert!(
            matches!(
                ending,
                Ending::Damaged(Damage {
                    evidence: Evidence::SearchGaveUp,
                    ..
                })
            ),
            "{ending:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn preallocated_zeros_end_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        let path = segment_path(dir.path(), 1);
        assert!(std::fs::metadata(&path).unwrap().len() > SEGMENT_BYTES);
        assert!(effects(&path).is_empty());
        let sample = sample();
        journal.append(&sample).unwrap();
        assert_eq!(effects(&path), sample);
        assert_eq!(ending(&path, false), Ending::Clean);
    }

    /// A failed write leaves the zeros as they were, so the segment is
    /// clean once finished.
    #[test]
    fn a_failed_write_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        journal.append(&sample()).unwrap();
        // What a write that failed half-way (or past the preallocation)
        // may leave.
        let len = journal.allocated - journal.end + 100;
        let junk = vec![0x33u8; len as usize];
        journal.file.write_all_at(&junk, journal.end).unwrap();
        journal.undo_partial_write(len);
        journal.rotate().unwrap();
        let path = segment_path(dir.path(), 1);
        assert_eq!(ending(&path, false), Ending::Clean);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            journal.allocated,
            "cut back to its preallocated length"
        );
    }

    #[test]
    fn garbage_is_refused_and_zeros_hold_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 3);
        std::fs::write(&path, b"not a journal").unwrap();
        assert!(matches!(
            read_segment(&path, true),
            Err(JournalError::Foreign { .. })
        ));
        std::fs::write(&path, [0u8; 5]).unwrap();
        assert!(effects(&path).is_empty());
    }

    /// A segment written by a server before accounts (tags 0 to 6 only),
    /// byte by byte as that server laid it out: still read the same.
    #[test]
    fn records_of_older_servers_are_still_read() {
        let mut payload = vec![0u8, 2, 0, b'a', b'l'];
        payload.extend([2u8, 2, 0, b'a', b'l', 4, 10, 0, 0, 1, 80, 0]);
        payload.extend([6u8, 2, 0, b'a', b'l', 1, 0, b'f']);
        payload.extend(5u64.to_le_bytes());
        payload.extend([9u8; 32]);
        let mut bytes = MAGIC.to_vec();
        bytes.extend((payload.len() as u32).to_le_bytes());
        bytes.extend(fnv1a(&payload).to_le_bytes());
        bytes.extend(&payload);
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            effects(&path),
            [
                Effect::AddUser("al".into()),
                Effect::SetAddress("al".into(), "10.0.0.1:80".parse().unwrap()),
                Effect::SetContent {
                    user: "al".into(),
                    file: "f".into(),
                    size: 5,
                    hash: [9; 32],
                },
            ]
        );
    }

    /// The account effects survive a torn tail after them, and a damaged
    /// record of them is found by the search for whole records (their
    /// tags pass its first check).
    #[test]
    fn account_records_are_found_after_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        let accounts = sample()[6..11].to_vec();
        let first = journal.end as usize;
        journal.append(&[Effect::AddUser("al".into())]).unwrap();
        let second = journal.end as usize;
        journal.append(&accounts).unwrap();
        drop(journal);
        let path = segment_path(dir.path(), 1);
        edit(&path, |b| b[first + HEADER + 3] ^= 0x01);
        assert_eq!(
            ending(&path, true),
            Ending::Damaged(Damage {
                offset: first as u64,
                len: Some(5),
                flaw: Flaw::HashMismatch,
                evidence: Evidence::RecordFollows(second as u64),
            })
        );
    }
}
