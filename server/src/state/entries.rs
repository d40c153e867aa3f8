//! A sorted table of entries made of NUL-terminated fields, kept in small
//! chunks that readers share.
//!
//! Why this shape (issue 3, docs/PERFORMANCE.md):
//! - An entry is stored exactly as it goes on the wire (`user\0ip\0port\0`
//!   for LIST_USERS), so a listing copies runs of bytes instead of
//!   formatting or even visiting entries one by one.
//! - Entries live in chunks of at most [`MAX_CHUNK`] bytes behind `Arc`s.
//!   A reader takes a [`Slice`] (clones of the chunk pointers) under the
//!   state's read lock and streams it after releasing the lock: a
//!   consistent snapshot without building the reply. The writer changes a
//!   chunk with `Arc::make_mut`: in place when no reader holds it, else a
//!   copy of that one chunk (a few KiB), never of the table.
//! - Memory: one byte string per entry plus a 4-byte offset, no per-entry
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

/// Entries stored back to back, with the offset where each starts.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    /// The entries' bytes, in key order.
    data: Vec<u8>,
    /// Start of each entry in `data`; entry `i` ends where `i + 1` starts.
    starts: Vec<u32>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn span(&self, i: usize) -> (usize, usize) {
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.data.len(), |s| *s as usize);
        (start, end)
    }

    /// Entry `i`.
    pub fn entry(&self, i: usize) -> &[u8] {
        let (start, end) = self.span(i);
        &self.data[start..end]
    }

    /// Bytes of entries `from..to`, back to back.
    pub fn run(&self, from: usize, to: usize) -> &[u8] {
        if from >= to {
            return &[];
        }
        let start = self.starts[from] as usize;
        let end = self.starts.get(to).map_or(self.data.len(), |s| *s as usize);
        &self.data[start..end]
    }

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

    fn insert(&mut self, i: usize, entry: &[u8]) {
        // Grow in small exact steps rather than doubling: a million users'
        // chunks would otherwise carry a third of their size as slack
        // (issue 3's memory target); the copies stay a few KiB.
        if self.data.capacity() - self.data.len() < entry.len() {
            self.data.reserve_exact(entry.len().max(GROW_BYTES));
        }
        if self.starts.capacity() == self.starts.len() {
            self.starts.reserve_exact(GROW_BYTES / 16);
        }
        let at = self.starts.get(i).map_or(self.data.len(), |s| *s as usize);
        self.data.splice(at..at, entry.iter().copied());
        let grow = entry.len() as u32;
        for start in &mut self.starts[i..] {
            *start += grow;
        }
        self.starts.insert(i, at as u32);
    }

    fn replace(&mut self, i: usize, entry: &[u8]) {
        let (start, end) = self.span(i);
        self.data.splice(start..end, entry.iter().copied());
        let old = (end - start) as i64;
        let delta = entry.len() as i64 - old;
        for s in &mut self.starts[i + 1..] {
            *s = (i64::from(*s) + delta) as u32;
        }
    }

    fn remove(&mut self, i: usize) {
        let (start, end) = self.span(i);
        self.data.drain(start..end);
        let shrink = (end - start) as u32;
        self.starts.remove(i);
        for s in &mut self.starts[i..] {
            *s -= shrink;
        }
    }

    /// Moves the upper half of the entries into a new chunk.
    fn split(&mut self) -> Chunk {
        let half = self.len() / 2;
        let at = self.starts[half] as usize;
        let data = self.data.split_off(at);
        let starts = self.starts.split_off(half);
        let starts = starts.into_iter().map(|s| s - at as u32).collect();
        self.data.shrink_to_fit();
        self.starts.shrink_to_fit();
        Chunk { data, starts }
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
    chunks: Vec<Arc<Chunk>>,
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
        let chunks: usize = self
            .chunks
            .iter()
            .map(|c| {
                std::mem::size_of::<Chunk>() + 16 + c.data.capacity() + 4 * c.starts.capacity()
            })
            .sum();
        chunks + self.firsts.heap_bytes() + 8 * self.chunks.capacity()
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
                Arc::make_mut(&mut self.chunks[pos.chunk]).replace(pos.entry, entry);
                return;
            }
            Err(pos) => pos,
        };
        self.len += 1;
        if self.chunks.is_empty() {
            self.chunks.push(Arc::new(Chunk::default()));
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
        let target = Arc::make_mut(&mut self.chunks[chunk]);
        target.insert(entry_index, entry);
        if entry_index == 0 {
            self.firsts.set(chunk, key);
        }
        if target.data.len() > MAX_CHUNK && target.len() > 1 {
            let upper = target.split();
            self.firsts
                .insert(chunk + 1, key_of(upper.entry(0), self.key_fields));
            self.chunks.insert(chunk + 1, Arc::new(upper));
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
        let chunk = Arc::make_mut(&mut self.chunks[pos.chunk]);
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
    chunks: Vec<Arc<Chunk>>,
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
    pub fn entries(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.runs_by_chunk()
            .flat_map(|(chunk, from, to)| (from..to).map(move |i| chunk.entry(i)))
    }

    /// The entries' bytes in a few large runs (one per chunk), for
    /// listings that send entries as stored.
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
            Some((&**chunk, from, to))
        })
    }
}

/// Consecutive entries of one shared chunk.
#[derive(Debug, Clone)]
pub struct Part {
    chunk: Arc<Chunk>,
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
