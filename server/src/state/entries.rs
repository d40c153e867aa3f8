//! A sorted table of entries made of NUL-terminated fields, kept in small
//! chunks that readers share.
//!
//! Why this shape (figures in docs/PERFORMANCE.md):
//! - An entry is stored exactly as it goes on the wire (`user\0ip\0port\0`
//!   for LIST_USERS), so a listing copies runs of bytes instead of
//!   formatting or even visiting entries one by one.
//! - Entries live in chunks of at most [`MAX_CHUNK`] bytes behind `Arc`s.
//!   A reader takes a [`Slice`] (clones of the chunk pointers) under the
//!   state's read lock and streams it after releasing the lock: a
//!   consistent snapshot without building the reply. The writer changes a
//!   chunk with `Arc::make_mut`: in place when no reader holds it, else a
//!   copy of that one chunk (a few KiB), never of the table.
//! - Memory: one byte string per entry plus a 2-byte offset, no per-entry
//!   allocation (a million users fit in tens of MiB).
//!
//! The key of an entry is its first `key_fields` fields including their
//! NUL terminators. Since fields never contain NUL, byte order of keys is
//! the order of the field tuples (`al\0` < `alb\0`, `u\0f\0` < `u\0g\0`).
//! Bytes after the key fields are the value; they may be binary.

use std::cmp::Ordering;
use std::sync::Arc;

use super::first_keys::FirstKeys;

/// A chunk is split in two once its entries exceed this many bytes.
pub const MAX_CHUNK: usize = 4 * 1024;

/// Bytes a chunk's buffer grows by when an entry does not fit.
const GROW_BYTES: usize = 1024;

/// Free bytes each half of a split chunk starts with. Without them every
/// chunk of a freshly loaded table is full, and the first insert into
/// each one, a PUBLISH among millions, reallocates it (after a restart,
/// those allocations and the page faults of the growing heap dominate the
/// commit writer's time). A few entries' worth
/// absorbs the publish-then-delete churn of a running directory.
const SPLIT_ROOM: usize = 256;

/// Entries stored back to back with the offset where each starts, all in
/// one shared allocation:
///
/// `[entries: u16][data bytes: u16][start of each entry: u16 ...][data][room]`
///
/// Why one allocation: a look-up in a million-entry table is a chain of
/// cache and TLB misses. As `Arc<struct { Vec, Vec }>` a chunk cost three
/// of them before the first key was compared (the `Arc`, the starts, the
/// data, each elsewhere in memory); here the starts sit in front of the
/// data they index. Starts are offsets into
/// the data, which stays under 64 KiB: a chunk splits past [`MAX_CHUNK`]
/// and an entry is a few hundred bytes (fields are at most 255 bytes).
#[derive(Debug, Clone)]
pub struct Chunk(Arc<[u8]>);

/// Bytes of the chunk header: entry count and data length.
const HEADER: usize = 4;

impl Default for Chunk {
    fn default() -> Self {
        Chunk(zeroed(HEADER))
    }
}

/// A chunk buffer of `len` zero bytes.
fn zeroed(len: usize) -> Arc<[u8]> {
    std::iter::repeat_n(0, len).collect()
}

fn read_u16(buf: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([buf[at], buf[at + 1]]))
}

fn write_u16(buf: &mut [u8], at: usize, value: usize) {
    let value = u16::try_from(value).expect("a chunk's data stays under 64 KiB");
    buf[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

impl Chunk {
    fn len(&self) -> usize {
        read_u16(&self.0, 0)
    }

    /// Bytes of entry data.
    fn data_len(&self) -> usize {
        read_u16(&self.0, 2)
    }

    /// Where the data starts in the buffer.
    fn base(&self) -> usize {
        HEADER + 2 * self.len()
    }

    /// Start of entry `i` in the data (`i == len` is the end).
    fn start(&self, i: usize) -> usize {
        if i == self.len() {
            self.data_len()
        } else {
            read_u16(&self.0, HEADER + 2 * i)
        }
    }

    /// Entry `i`.
    pub fn entry(&self, i: usize) -> &[u8] {
        self.run(i, i + 1)
    }

    /// Bytes of entries `from..to`, back to back.
    pub fn run(&self, from: usize, to: usize) -> &[u8] {
        if from >= to {
            return &[];
        }
        let base = self.base();
        &self.0[base + self.start(from)..base + self.start(to)]
    }

    /// Allocated bytes.
    fn capacity(&self) -> usize {
        self.0.len()
    }

    /// Asks the processor to start loading the whole chunk before the
    /// binary search reads it. In a million-user table the chunk is cold,
    /// and each probe of the search was a cache miss waiting for the one
    /// before; fetched together they overlap (the `table_lookup` bench,
    /// figures in docs/PERFORMANCE.md). A chunk
    /// is at most a few KiB, and its size is known without reading it.
    #[cfg(target_arch = "x86_64")]
    fn prefetch(&self) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = self.0.as_ptr();
        for offset in (0..self.0.len()).step_by(64) {
            // SAFETY: a prefetch is only a hint: it never faults and never
            // makes the program read memory (the address is inside the
            // chunk's allocation anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(offset).cast()) };
        }
    }

    /// Only a hint; other processors go without it.
    #[cfg(not(target_arch = "x86_64"))]
    fn prefetch(&self) {}

    /// The first entry index whose key is not below `key`.
    fn lower_bound(&self, key: &[u8]) -> usize {
        let mut low = 0;
        let mut high = self.len();
        while low < high {
            let mid = (low + high) / 2;
            if compare_key(self.entry(mid), key) == Ordering::Less {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// The buffer, for changing in place: copied first if a reader's
    /// snapshot shares it, and given at least `room` free bytes.
    fn buffer_mut(&mut self, room: usize) -> &mut [u8] {
        let used = self.base() + self.data_len();
        if self.capacity() - used < room {
            // Grow in small exact steps rather than doubling: a million
            // users' chunks would otherwise carry a third of their size as
            // slack; the copies stay a few KiB.
            let extra = room.max(GROW_BYTES);
            let mut grown = zeroed(self.capacity() + extra);
            // Fresh, so never copied here.
            Arc::make_mut(&mut grown)[..used].copy_from_slice(&self.0[..used]);
            self.0 = grown;
        }
        Arc::make_mut(&mut self.0)
    }

    fn insert(&mut self, i: usize, entry: &[u8]) {
        let (n, base, data_len) = (self.len(), self.base(), self.data_len());
        let at = self.start(i);
        let buf = self.buffer_mut(2 + entry.len());
        // The data after the new entry moves by the new start and the
        // entry, the data before it by the new start only.
        buf.copy_within(base + at..base + data_len, base + 2 + at + entry.len());
        buf.copy_within(base..base + at, base + 2);
        buf[base + 2 + at..base + 2 + at + entry.len()].copy_from_slice(entry);
        buf.copy_within(HEADER + 2 * i..HEADER + 2 * n, HEADER + 2 * i + 2);
        write_u16(buf, HEADER + 2 * i, at);
        for j in i + 1..=n {
            let start = read_u16(buf, HEADER + 2 * j);
            write_u16(buf, HEADER + 2 * j, start + entry.len());
        }
        write_u16(buf, 0, n + 1);
        write_u16(buf, 2, data_len + entry.len());
    }

    fn replace(&mut self, i: usize, entry: &[u8]) {
        let (n, base, data_len) = (self.len(), self.base(), self.data_len());
        let (start, end) = (self.start(i), self.start(i + 1));
        let buf = self.buffer_mut(entry.len().saturating_sub(end - start));
        buf.copy_within(base + end..base + data_len, base + start + entry.len());
        buf[base + start..base + start + entry.len()].copy_from_slice(entry);
        for j in i + 1..n {
            let old = read_u16(buf, HEADER + 2 * j);
            write_u16(buf, HEADER + 2 * j, old - end + start + entry.len());
        }
        write_u16(buf, 2, data_len - (end - start) + entry.len());
    }

    fn remove(&mut self, i: usize) {
        let (n, base, data_len) = (self.len(), self.base(), self.data_len());
        let (start, end) = (self.start(i), self.start(i + 1));
        let removed = end - start;
        let buf = self.buffer_mut(0);
        buf.copy_within(HEADER + 2 * (i + 1)..HEADER + 2 * n, HEADER + 2 * i);
        for j in i..n - 1 {
            let old = read_u16(buf, HEADER + 2 * j);
            write_u16(buf, HEADER + 2 * j, old - removed);
        }
        // The data before the entry moves down by the start removed, the
        // data after it by the entry too.
        buf.copy_within(base..base + start, base - 2);
        buf.copy_within(base + end..base + data_len, base - 2 + start);
        write_u16(buf, 0, n - 1);
        write_u16(buf, 2, data_len - removed);
    }

    /// A chunk holding `data`'s entries with their starts, and
    /// [`SPLIT_ROOM`] free bytes.
    fn from_run(data: &[u8], starts: impl ExactSizeIterator<Item = usize>) -> Chunk {
        let n = starts.len();
        let mut chunk = zeroed(HEADER + 2 * n + data.len() + SPLIT_ROOM);
        let buf = Arc::make_mut(&mut chunk);
        write_u16(buf, 0, n);
        write_u16(buf, 2, data.len());
        for (j, start) in starts.enumerate() {
            write_u16(buf, HEADER + 2 * j, start);
        }
        buf[HEADER + 2 * n..HEADER + 2 * n + data.len()].copy_from_slice(data);
        Chunk(chunk)
    }

    /// Moves the upper half of the entries into a new chunk.
    fn split(&mut self) -> Chunk {
        let n = self.len();
        let half = n / 2;
        let at = self.start(half);
        let upper = Chunk::from_run(self.run(half, n), (half..n).map(|j| self.start(j) - at));
        let lower = Chunk::from_run(self.run(0, half), (0..half).map(|j| self.start(j)));
        *self = lower;
        upper
    }
}

/// The key of `entry`: its first `key_fields` fields with their NULs (the
/// whole entry if it has fewer).
pub fn key_of(entry: &[u8], key_fields: usize) -> &[u8] {
    let mut seen = 0;
    for (i, byte) in entry.iter().enumerate() {
        if *byte == 0 {
            seen += 1;
            if seen == key_fields {
                return &entry[..=i];
            }
        }
    }
    entry
}

/// Compares the key of `entry` with `key` (a whole key: its fields and
/// their NULs) without finding the key's end first: the first `key.len()`
/// bytes decide. Both keys end at their last field's NUL and NUL is the
/// smallest byte, so a difference inside those bytes orders the keys, and
/// equal bytes mean equal keys. This is the hot loop of every look-up.
fn compare_key(entry: &[u8], key: &[u8]) -> Ordering {
    let n = entry.len().min(key.len());
    entry[..n].cmp(key)
}

/// Where an entry is: chunk index and entry index in it. `chunk ==
/// chunks.len()` is the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    chunk: usize,
    entry: usize,
}

/// A sorted set of entries keyed by their first fields.
#[derive(Debug, Clone)]
pub struct EntryTable {
    /// How many leading fields form the key.
    key_fields: usize,
    /// Non-empty chunks in key order.
    chunks: Vec<Chunk>,
    /// The key of each chunk's first entry: where a look-up starts.
    firsts: FirstKeys,
    /// Number of entries.
    len: usize,
}

impl EntryTable {
    /// An empty table whose keys are the first `key_fields` fields.
    pub fn new(key_fields: usize) -> EntryTable {
        EntryTable {
            key_fields,
            chunks: Vec::new(),
            firsts: FirstKeys::default(),
            len: 0,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held by the table (allocated capacity, not counting
    /// the allocator's own overhead): for logs and memory budgets.
    pub fn heap_bytes(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(|c| 16 + c.capacity()).sum();
        chunks + self.firsts.heap_bytes() + std::mem::size_of::<Chunk>() * self.chunks.capacity()
    }

    /// The first position whose key is not below `key`.
    fn lower_bound(&self, key: &[u8]) -> Pos {
        // Chunks whose first key is below `key`: the bound is in the last
        // of them, or at the start of the next one.
        let below = self.firsts.count_below(key);
        if below == 0 {
            return Pos { chunk: 0, entry: 0 };
        }
        let chunk = &self.chunks[below - 1];
        chunk.prefetch();
        let entry = chunk.lower_bound(key);
        if entry < chunk.len() {
            Pos {
                chunk: below - 1,
                entry,
            }
        } else {
            Pos {
                chunk: below,
                entry: 0,
            }
        }
    }

    /// The position of the entry with exactly `key`.
    fn find(&self, key: &[u8]) -> Result<Pos, Pos> {
        let pos = self.lower_bound(key);
        match self.chunks.get(pos.chunk) {
            Some(chunk) if compare_key(chunk.entry(pos.entry), key) == Ordering::Equal => Ok(pos),
            _ => Err(pos),
        }
    }

    /// The entry with exactly `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let pos = self.find(key).ok()?;
        Some(self.chunks[pos.chunk].entry(pos.entry))
    }

    /// Inserts `entry`, replacing the entry with the same key.
    pub fn insert(&mut self, entry: &[u8]) {
        let key = key_of(entry, self.key_fields);
        let pos = match self.find(key) {
            Ok(pos) => {
                self.chunks[pos.chunk].replace(pos.entry, entry);
                return;
            }
            Err(pos) => pos,
        };
        self.len += 1;
        if self.chunks.is_empty() {
            self.chunks.push(Chunk::default());
            self.firsts.insert(0, key);
        }
        // At the end of a chunk, append to it rather than prepend to the
        // next one: sequential inserts then fill chunks left to right.
        let (chunk, entry_index) = if pos.entry == 0 && pos.chunk > 0 {
            let previous = pos.chunk - 1;
            (previous, self.chunks[previous].len())
        } else {
            (pos.chunk.min(self.chunks.len() - 1), pos.entry)
        };
        let target = &mut self.chunks[chunk];
        target.insert(entry_index, entry);
        if entry_index == 0 {
            self.firsts.set(chunk, key);
        }
        if target.data_len() > MAX_CHUNK && target.len() > 1 {
            let upper = target.split();
            self.firsts
                .insert(chunk + 1, key_of(upper.entry(0), self.key_fields));
            self.chunks.insert(chunk + 1, upper);
        }
    }

    /// Removes the entry with `key`; true when it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.find(key) {
            Ok(pos) => {
                self.remove_at(pos);
                true
            }
            Err(_) => false,
        }
    }

    fn remove_at(&mut self, pos: Pos) {
        let chunk = &mut self.chunks[pos.chunk];
        chunk.remove(pos.entry);
        self.len -= 1;
        if chunk.len() == 0 {
            self.chunks.remove(pos.chunk);
            self.firsts.remove(pos.chunk);
        } else if pos.entry == 0 {
            let first = key_of(chunk.entry(0), self.key_fields);
            self.firsts.set(pos.chunk, first);
        }
    }

    /// Removes every entry whose key starts with `prefix`; returns how
    /// many.
    pub fn remove_prefix(&mut self, prefix: &[u8]) -> usize {
        let mut removed = 0;
        loop {
            let pos = self.lower_bound(prefix);
            match self.chunks.get(pos.chunk) {
                Some(chunk) if chunk.entry(pos.entry).starts_with(prefix) => {
                    self.remove_at(pos);
                    removed += 1;
                }
                _ => return removed,
            }
        }
    }

    /// A snapshot of every entry.
    pub fn all(&self) -> Slice {
        Slice {
            chunks: self.chunks.clone(),
            first: 0,
            count: self.len,
        }
    }

    /// A snapshot of the entries whose key starts with `prefix`, a whole
    /// number of fields (ends with NUL).
    pub fn with_prefix(&self, prefix: &[u8]) -> Slice {
        let start = self.lower_bound(prefix);
        let mut chunks = Vec::new();
        let mut count = 0;
        let mut first = start.entry;
        for (i, chunk) in self.chunks.iter().enumerate().skip(start.chunk) {
            let from = if i == start.chunk { start.entry } else { 0 };
            let matching = (from..chunk.len())
                .take_while(|e| chunk.entry(*e).starts_with(prefix))
                .count();
            if matching == 0 {
                break;
            }
            if chunks.is_empty() {
                first = from;
            }
            chunks.push(chunk.clone());
            count += matching;
            if from + matching < chunk.len() {
                break;
            }
        }
        Slice {
            chunks,
            first,
            count,
        }
    }
}

/// A consistent run of consecutive entries, independent of later changes to
/// the table.
#[derive(Debug, Clone, Default)]
pub struct Slice {
    /// The chunks holding the entries.
    chunks: Vec<Chunk>,
    /// Index of the first entry in `chunks[0]`.
    first: usize,
    /// Number of entries.
    count: usize,
}

impl Slice {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries in key order.
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.runs_by_chunk()
            .flat_map(|(chunk, from, to)| (from..to).map(move |i| chunk.entry(i)))
    }

    /// The entries' bytes in a few large runs (one per chunk), for
    /// listings that send entries as stored.
    #[cfg(test)]
    pub fn runs(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.runs_by_chunk()
            .map(|(chunk, from, to)| chunk.run(from, to))
    }

    /// The slice as owned parts (one per chunk), for a listing that is
    /// written over several socket writes.
    pub fn into_parts(self) -> Vec<Part> {
        let parts: Vec<(usize, usize)> = self
            .runs_by_chunk()
            .map(|(_, from, to)| (from, to))
            .collect();
        self.chunks
            .into_iter()
            .zip(parts)
            .map(|(chunk, (from, to))| Part { chunk, from, to })
            .collect()
    }

    fn runs_by_chunk(&self) -> impl Iterator<Item = (&Chunk, usize, usize)> + '_ {
        let mut left = self.count;
        self.chunks.iter().enumerate().map_while(move |(i, chunk)| {
            if left == 0 {
                return None;
            }
            let from = if i == 0 { self.first } else { 0 };
            let to = chunk.len().min(from + left);
            left -= to - from;
            Some((chunk, from, to))
        })
    }
}

/// Consecutive entries of one shared chunk.
#[derive(Debug, Clone)]
pub struct Part {
    chunk: Chunk,
    from: usize,
    to: usize,
}

impl Part {
    /// The entries' bytes, back to back.
    pub fn bytes(&self) -> &[u8] {
        self.chunk.run(self.from, self.to)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.to - self.from
    }

    /// True when the part holds no entry.
    pub fn is_empty(&self) -> bool {
        self.to == self.from
    }

    /// Entry `i` of the part.
    pub fn entry(&self, i: usize) -> &[u8] {
        self.chunk.entry(self.from + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn entry(user: &str, value: &str) -> Vec<u8> {
        format!("{user}\0{value}\0").into_bytes()
    }

    #[test]
    fn insert_get_replace_remove() {
        let mut table = EntryTable::new(1);
        table.insert(&entry("bo", "2"));
        table.insert(&entry("al", "1"));
        table.insert(&entry("alb", "3"));
        assert_eq!(table.len(), 3);
        assert_eq!(table.get(b"al\0"), Some(&b"al\x001\0"[..]));
        table.insert(&entry("al", "one"));
        assert_eq!(table.len(), 3);
        assert_eq!(table.get(b"al\0"), Some(&b"al\0one\0"[..]));
        let listed: Vec<u8> = table.all().runs().flatten().copied().collect();
        assert_eq!(listed, b"al\0one\0alb\x003\0bo\x002\0");
        assert!(table.remove(b"alb\0"));
        assert!(!table.remove(b"alb\0"));
        assert_eq!(table.get(b"alb\0"), None);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn snapshots_do_not_see_later_changes() {
        let mut table = EntryTable::new(1);
        for i in 0..2000 {
            table.insert(&entry(&format!("u{i:05}"), "10.0.0.1"));
        }
        assert!(table.chunks.len() > 2, "split into chunks");
        let snapshot = table.all();
        for i in 0..1000 {
            table.remove(format!("u{i:05}\0").as_bytes());
        }
        table.insert(&entry("a", "new"));
        assert_eq!(snapshot.len(), 2000);
        assert_eq!(snapshot.entries().count(), 2000);
        assert_eq!(
            snapshot.entries().next(),
            Some(&b"u00000\x0010.0.0.1\0"[..])
        );
        assert_eq!(table.len(), 1001);
        assert_eq!(table.all().entries().next(), Some(&b"a\0new\0"[..]));
    }

    /// Thousands of entries in scattered order: chunks split, empty and
    /// move, and every exact look-up still finds exactly what is there.
    #[test]
    fn exact_look_ups_survive_splits_and_removals() {
        let mut table = EntryTable::new(1);
        let key = |i: u64| format!("user{:06}\0", (i * 7919) % 6000);
        for i in 0..6000 {
            table.insert(format!("{}10.0.0.1\0{}\0", key(i), i).as_bytes());
        }
        assert!(table.chunks.len() > 20, "{} chunks", table.chunks.len());
        for i in (0..6000).filter(|i| i % 3 != 0) {
            assert!(table.remove(key(i).as_bytes()));
        }
        for i in 0..6000 {
            let found = table.get(key(i).as_bytes()).is_some();
            assert_eq!(found, i % 3 == 0, "{}", key(i));
        }
        assert_eq!(table.len(), 2000);
    }

    #[test]
    fn prefix_ranges_and_removal() {
        let mut table = EntryTable::new(2);
        for user in ["a", "ab", "b"] {
            for i in 0..300 {
                let description = "d".repeat(40);
                table.insert(format!("{user}\0f{i:03}\0{description}\0").as_bytes());
            }
        }
        let slice = table.with_prefix(b"a\0");
        assert_eq!(slice.len(), 300);
        assert!(slice.entries().all(|e| e.starts_with(b"a\0")));
        let bytes: usize = slice.runs().map(<[u8]>::len).sum();
        assert_eq!(bytes, slice.entries().map(<[u8]>::len).sum::<usize>());
        let parts = table.with_prefix(b"a\0").into_parts();
        assert!(parts.len() > 1);
        let from_parts: Vec<u8> = parts.iter().flat_map(|p| p.bytes().to_vec()).collect();
        let from_runs: Vec<u8> = slice.runs().flatten().copied().collect();
        assert_eq!(from_parts, from_runs);
        assert_eq!(parts.iter().map(Part::len).sum::<usize>(), 300);
        assert_eq!(table.with_prefix(b"c\0").len(), 0);
        assert_eq!(table.remove_prefix(b"a\0"), 300);
        assert_eq!(table.with_prefix(b"a\0").len(), 0);
        assert_eq!(table.with_prefix(b"ab\0").len(), 300);
        assert_eq!(table.len(), 600);
    }

    #[test]
    fn compare_key_orders_like_the_key_fields() {
        assert_eq!(compare_key(b"al\0x\0", b"al\0"), Ordering::Equal);
        assert_eq!(compare_key(b"al\0x\0", b"alb\0"), Ordering::Less);
        assert_eq!(compare_key(b"alb\0x\0", b"al\0"), Ordering::Greater);
        assert_eq!(compare_key(b"u\0f\0d\0", b"u\0f\0"), Ordering::Equal);
        assert_eq!(compare_key(b"u\0f\0d\0", b"u\0g\0"), Ordering::Less);
        assert_eq!(compare_key(b"u\0", b"u\0f\0"), Ordering::Less);
    }

    #[test]
    fn key_of_stops_at_the_key_fields() {
        assert_eq!(key_of(b"u\0f\0d\0\x00\x01", 2), b"u\0f\0");
        assert_eq!(key_of(b"u\0", 2), b"u\0");
        assert_eq!(key_of(b"", 1), b"");
    }

    proptest! {
        /// A chunk's in-place edits (insert, replace, remove, split) keep
        /// every entry where a list of byte strings says it is, through
        /// growth steps, and a clone taken on the way (a reader's
        /// snapshot) keeps what it saw.
        #[test]
        fn chunk_edits_match_a_list_and_spare_snapshots(
            ops in proptest::collection::vec((0u8..4, 0usize..64, 0usize..300), 1..200),
            snapshot_at in 0usize..200,
        ) {
            let mut chunk = Chunk::default();
            let mut model: Vec<Vec<u8>> = Vec::new();
            let mut snapshot = None;
            for (step, (op, at, len)) in ops.into_iter().enumerate() {
                if step == snapshot_at {
                    snapshot = Some((chunk.clone(), model.clone()));
                }
                let entry: Vec<u8> = (0..len).map(|b| (b + step) as u8).collect();
                match op {
                    0 | 1 => {
                        let i = at % (model.len() + 1);
                        chunk.insert(i, &entry);
                        model.insert(i, entry);
                    }
                    2 if !model.is_empty() => {
                        let i = at % model.len();
                        chunk.replace(i, &entry);
                        model[i] = entry;
                    }
                    3 if !model.is_empty() => {
                        let i = at % model.len();
                        chunk.remove(i);
                        model.remove(i);
                    }
                    _ if model.len() > 1 => {
                        let upper = chunk.split();
                        let lower_len = model.len() / 2;
                        let upper_model: Vec<Vec<u8>> = model.split_off(lower_len);
                        prop_assert_eq!((0..upper.len()).map(|i| upper.entry(i).to_vec()).collect::<Vec<_>>(), upper_model);
                    }
                    _ => {}
                }
                prop_assert_eq!(chunk.len(), model.len());
                prop_assert_eq!(chunk.data_len(), model.iter().map(Vec::len).sum::<usize>());
                prop_assert_eq!(chunk.run(0, chunk.len()), model.concat());
                for (i, expected) in model.iter().enumerate() {
                    prop_assert_eq!(chunk.entry(i), expected.as_slice());
                }
            }
            if let Some((seen, then)) = snapshot {
                prop_assert_eq!(seen.len(), then.len());
                for (i, expected) in then.iter().enumerate() {
                    prop_assert_eq!(seen.entry(i), expected.as_slice());
                }
            }
        }

        /// Any sequence of inserts and removals leaves the table equal to a
        /// BTreeMap model, in order, with prefix slices matching too.
        #[test]
        fn behaves_like_a_sorted_map(
            ops in proptest::collection::vec((0u8..16, 0u16..400, 0u8..4, 0usize..60), 1..600)
        ) {
            let mut table = EntryTable::new(2);
            let mut model = BTreeMap::new();
            for (op, user, file, pad) in ops {
                let key = format!("u{}\0f{}\0", user % 40, file);
                match op {
                    0..=9 => {
                        let value = "x".repeat(pad);
                        let entry = format!("{key}{value}\0");
                        table.insert(entry.as_bytes());
                        model.insert(key, entry);
                    }
                    10..=14 => {
                        prop_assert_eq!(table.remove(key.as_bytes()), model.remove(&key).is_some());
                    }
                    _ => {
                        let prefix = format!("u{}\0", user % 40);
                        let before = model.len();
                        model.retain(|k, _| !k.starts_with(&prefix));
                        prop_assert_eq!(table.remove_prefix(prefix.as_bytes()), before - model.len());
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
            // Exact look-ups agree with the model for every key, present
            // or not.
            for user in 0..40 {
                for file in 0..4 {
                    let key = format!("u{user}\0f{file}\0");
                    prop_assert_eq!(
                        table.get(key.as_bytes()),
                        model.get(&key).map(|e| e.as_bytes())
                    );
                }
            }
            let all = table.all();
            let listed: Vec<&[u8]> = all.entries().collect();
            let expected: Vec<&[u8]> = model.values().map(|e| e.as_bytes()).collect();
            prop_assert_eq!(listed, expected);
            for user in 0..40 {
                let prefix = format!("u{user}\0");
                let slice = table.with_prefix(prefix.as_bytes());
                let expected: Vec<&[u8]> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, e)| e.as_bytes())
                    .collect();
                prop_assert_eq!(slice.entries().collect::<Vec<_>>(), expected);
            }
            prop_assert_eq!(table.chunks.len(), table.firsts.len());
            for (i, chunk) in table.chunks.iter().enumerate() {
                prop_assert!(chunk.len() > 0);
                prop_assert_eq!(key_of(chunk.entry(0), 2), table.firsts.get(i));
            }
        }
    }
}
