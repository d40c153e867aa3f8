//! The in-memory name index behind SEARCH.
//!
//! Why: SEARCH matches substrings of file names across every user; a scan
//! of a million entries per request would make its cost grow with the
//! directory. Instead every file name is cut into byte trigrams of its
//! folded (lower-case) form, and each trigram keeps the sorted list of
//! entries containing it. A pattern's candidates are the intersection of
//! the lists of its literal runs' trigrams; each candidate is then checked
//! against the full pattern ([`Pattern::matches`]). Byte trigrams of the
//! folded text are enough: a literal that occurs in a folded name has all
//! its byte trigrams in that name's folded bytes.
//!
//! A pattern whose literal runs are all shorter than 3 bytes (`ab`, `a*b`,
//! `*`) has no trigram and falls back to a scan of the names (documented in
//! docs/PROTOCOL-EXTENSIONS.md): still in memory, a short loop per name.
//!
//! Memory is kept small on purpose (the index holds every published name):
//! names live in
//! one string arena, entries and owners are small fixed records, and
//! posting lists are delta-encoded varints (a few bytes per trigram per
//! entry). Removal only marks an entry dead; when dead entries outnumber
//! live ones, [`SearchIndex::compact`] rebuilds everything from the live
//! ones (renumbering entries; the caller remaps what refers to them).

use std::hash::BuildHasher;

// hashbrown's default hasher (foldhash, seeded per process) rather than
// std's SipHash: every PUBLISH and DELETE hashes the owner and a dozen
// trigrams on the commit thread, where SipHash was a visible share of the
// writer's time.
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use super::glob::{fold, Pattern};

/// An entry id that means "none" (end of an owner's list, dead entry).
const NONE: u32 = u32::MAX;

/// Compact once this many entries are dead and they outnumber live ones.
const COMPACT_MIN_DEAD: usize = 4096;

/// A string in the arena.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u8,
}

/// A user that is connected or has published files.
#[derive(Debug, Clone, Copy)]
struct Owner {
    /// The user name.
    name: Span,
    /// Connected now: sorts first and marks results online.
    connected: bool,
    /// The user's first entry, chained through [`Entry::next`].
    first: u32,
    /// False once the user unregistered (the slot waits for compaction).
    alive: bool,
}

/// One published file.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The owner's slot, or [`NONE`] once removed.
    owner: u32,
    /// The file name.
    name: Span,
    /// The owner's next entry.
    next: u32,
}

/// A posting list: ascending entry ids, delta-encoded as LEB128 varints.
#[derive(Debug, Default, Clone)]
struct Posting {
    bytes: Vec<u8>,
    /// The last id appended (ids only grow between compactions).
    last: u32,
    /// Number of ids.
    len: u32,
}

impl Posting {
    fn push(&mut self, id: u32) {
        let mut delta = if self.len == 0 { id } else { id - self.last };
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                self.bytes.push(byte);
                break;
            }
            self.bytes.push(byte | 0x80);
        }
        self.last = id;
        self.len += 1;
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        let mut pos = 0;
        let mut prev = 0u32;
        let mut first = true;
        std::iter::from_fn(move || {
            if pos >= self.bytes.len() {
                return None;
            }
            let mut value = 0u32;
            let mut shift = 0;
            while let Some(&byte) = self.bytes.get(pos) {
                pos += 1;
                value |= u32::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            prev = if first { value } else { prev + value };
            first = false;
            Some(prev)
        })
    }
}

/// One search result, borrowed from the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<'a> {
    pub owner: &'a str,
    pub file: &'a str,
    pub connected: bool,
}

/// The name index. Not synchronised: [`super::Indexes`] sits behind a
/// lock, written only by the commit writer after each commit.
pub struct SearchIndex {
    /// Owner and file names.
    arena: String,
    owners: Vec<Owner>,
    /// Owner slots by name (hash of the arena text).
    owner_ids: HashTable<u32>,
    hasher: DefaultHashBuilder,
    entries: Vec<Entry>,
    /// Trigram (3 bytes in a u32) -> entries whose folded name contains it.
    postings: HashMap<u32, Posting>,
    /// Live entries.
    live: usize,
    /// Removed entries still in the vectors and postings.
    dead: usize,
}

impl Default for SearchIndex {
    fn default() -> Self {
        SearchIndex {
            arena: String::new(),
            owners: Vec::new(),
            owner_ids: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            entries: Vec::new(),
            postings: HashMap::new(),
            live: 0,
            dead: 0,
        }
    }
}

/// The byte trigrams of a folded text.
fn trigrams(folded: &str) -> impl Iterator<Item = u32> + '_ {
    folded
        .as_bytes()
        .windows(3)
        .map(|w| u32::from(w[0]) << 16 | u32::from(w[1]) << 8 | u32::from(w[2]))
}

impl SearchIndex {
    fn text(&self, span: Span) -> &str {
        let start = span.start as usize;
        &self.arena[start..start + usize::from(span.len)]
    }

    fn intern(&mut self, text: &str) -> Span {
        // Names are at most 255 bytes (PROTOCOL.md); a longer one is cut at
        // a character boundary rather than corrupting the arena.
        let mut len = text.len().min(255);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let start = self.arena.len() as u32;
        self.arena.push_str(&text[..len]);
        Span {
            start,
            len: len as u8,
        }
    }

    fn find_owner(&self, user: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(user);
        self.owner_ids
            .find(hash, |&id| self.text(self.owners[id as usize].name) == user)
            .copied()
    }

    fn owner_or_insert(&mut self, user: &str) -> u32 {
        if let Some(id) = self.find_owner(user) {
            return id;
        }
        let name = self.intern(user);
        let id = self.owners.len() as u32;
        self.owners.push(Owner {
            name,
            connected: false,
            first: NONE,
            alive: true,
        });
        let hash = self.hasher.hash_one(user);
        let (owners, arena, hasher) = (&self.owners, &self.arena, &self.hasher);
        self.owner_ids.insert_unique(hash, id, |&id| {
            let span = owners[id as usize].name;
            let start = span.start as usize;
            hasher.hash_one(&arena[start..start + usize::from(span.len)])
        });
        id
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Marks `user` connected or not.
    pub fn set_connected(&mut self, user: &str, connected: bool) {
        if connected {
            let id = self.owner_or_insert(user);
            self.owners[id as usize].connected = true;
        } else if let Some(id) = self.find_owner(user) {
            self.owners[id as usize].connected = false;
        }
    }

    /// Whether `user` is connected, as far as the index knows.
    #[cfg(test)]
    pub fn is_connected(&self, user: &str) -> bool {
        self.find_owner(user)
            .is_some_and(|id| self.owners[id as usize].connected)
    }

    /// The entry of `file` in `owner`'s list.
    fn find_in(&self, owner: u32, file: &str) -> Option<u32> {
        let mut id = self.owners[owner as usize].first;
        while id != NONE {
            let entry = self.entries[id as usize];
            if self.text(entry.name) == file {
                return Some(id);
            }
            id = entry.next;
        }
        None
    }

    /// Indexes `user`'s `file` and returns its entry id (the existing one
    /// if it is already indexed).
    pub fn add(&mut self, user: &str, file: &str) -> u32 {
        let owner = self.owner_or_insert(user);
        if let Some(id) = self.find_in(owner, file) {
            return id;
        }
        let name = self.intern(file);
        let id = self.entries.len() as u32;
        self.entries.push(Entry {
            owner,
            name,
            next: self.owners[owner as usize].first,
        });
        self.owners[owner as usize].first = id;
        let folded = fold(file).into_owned();
        let mut seen: Vec<u32> = trigrams(&folded).collect();
        seen.sort_unstable();
        seen.dedup();
        for trigram in seen {
            self.postings.entry(trigram).or_default().push(id);
        }
        self.live += 1;
        id
    }

    /// Removes `user`'s `file`; returns its entry id if it was indexed.
    pub fn remove(&mut self, user: &str, file: &str) -> Option<u32> {
        let owner = self.find_owner(user)?;
        let mut prev = NONE;
        let mut id = self.owners[owner as usize].first;
        while id != NONE {
            let entry = self.entries[id as usize];
            if self.text(entry.name) == file {
                if prev == NONE {
                    self.owners[owner as usize].first = entry.next;
                } else {
                    self.entries[prev as usize].next = entry.next;
                }
                self.kill(id);
                return Some(id);
            }
            prev = id;
            id = entry.next;
        }
        None
    }

    fn kill(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        entry.owner = NONE;
        entry.next = NONE;
        self.live -= 1;
        self.dead += 1;
    }

    /// Removes `user` and all its entries; returns their ids.
    pub fn remove_owner(&mut self, user: &str) -> Vec<u32> {
        let Some(owner) = self.find_owner(user) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        let mut id = self.owners[owner as usize].first;
        while id != NONE {
            let next = self.entries[id as usize].next;
            self.kill(id);
            removed.push(id);
            id = next;
        }
        let slot = &mut self.owners[owner as usize];
        slot.first = NONE;
        slot.connected = false;
        slot.alive = false;
        let hash = self.hasher.hash_one(user);
        if let Ok(found) = self.owner_ids.find_entry(hash, |&id| id == owner) {
            found.remove();
        }
        removed
    }

    /// Owner, file and connected flag of a live entry.
    pub fn hit(&self, id: u32) -> Option<Hit<'_>> {
        let entry = self.entries.get(id as usize)?;
        let owner = self.owners.get(entry.owner as usize)?;
        Some(Hit {
            owner: self.text(owner.name),
            file: self.text(entry.name),
            connected: owner.connected,
        })
    }

    /// Every live entry matching `pattern`: how many, and the first
    /// `limit` of them ordered connected owners first, then by owner and
    /// file.
    pub fn search(&self, pattern: &Pattern, limit: usize) -> (u64, Vec<Hit<'_>>) {
        let mut matches: Vec<Hit<'_>> = Vec::new();
        let mut check = |id: u32| {
            if let Some(hit) = self.hit(id) {
                if pattern.matches(hit.file) {
                    matches.push(hit);
                }
            }
        };
        match self.candidates(pattern) {
            Some(ids) => ids.into_iter().for_each(&mut check),
            None => (0..self.entries.len() as u32).for_each(&mut check),
        }
        let total = matches.len() as u64;
        let order = |a: &Hit<'_>, b: &Hit<'_>| {
            (!a.connected, a.owner, a.file).cmp(&(!b.connected, b.owner, b.file))
        };
        if matches.len() > limit && limit > 0 {
            matches.select_nth_unstable_by(limit - 1, order);
        }
        matches.truncate(limit);
        matches.sort_unstable_by(order);
        (total, matches)
    }

    /// Entries containing every trigram of the pattern's literals, or
    /// `None` when the pattern has no trigram (scan instead).
    fn candidates(&self, pattern: &Pattern) -> Option<Vec<u32>> {
        let mut wanted: Vec<u32> = pattern
            .literals()
            .iter()
            .flat_map(|literal| trigrams(literal).collect::<Vec<_>>())
            .collect();
        if wanted.is_empty() {
            return None;
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut lists = Vec::with_capacity(wanted.len());
        for trigram in wanted {
            match self.postings.get(&trigram) {
                Some(posting) => lists.push(posting),
                // A trigram nobody has: nothing matches.
                None => return Some(Vec::new()),
            }
        }
        lists.sort_by_key(|p| p.len);
        let mut result: Vec<u32> = lists[0].ids().collect();
        for list in &lists[1..] {
            if result.is_empty() {
                break;
            }
            let mut other = list.ids().peekable();
            result.retain(|&id| {
                while other.next_if(|&o| o < id).is_some() {}
                other.peek() == Some(&id)
            });
        }
        Some(result)
    }

    /// True when enough entries are dead that [`compact`](Self::compact)
    /// is worth its cost.
    pub fn wants_compaction(&self) -> bool {
        self.dead >= COMPACT_MIN_DEAD && self.dead > self.live
            || self.arena.len() > (u32::MAX as usize) / 2
    }

    /// Rebuilds the index from its live entries. Returns, for every old
    /// entry id, its new id (or `u32::MAX` for a dead one).
    pub fn compact(&mut self) -> Vec<u32> {
        let old = std::mem::take(self);
        self.hasher = old.hasher.clone();
        let mut remap = vec![NONE; old.entries.len()];
        for owner in old.owners.iter().filter(|o| o.alive) {
            let name = old.text(owner.name);
            if owner.connected {
                self.set_connected(name, true);
            }
            // Keep each owner's order of entries (oldest first here).
            let mut ids = Vec::new();
            let mut id = owner.first;
            while id != NONE {
                ids.push(id);
                id = old.entries[id as usize].next;
            }
            for id in ids.into_iter().rev() {
                let file = old.text(old.entries[id as usize].name);
                remap[id as usize] = self.add(name, file);
            }
        }
        remap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(index: &SearchIndex, pattern: &str, limit: usize) -> (u64, Vec<String>) {
        let pattern = Pattern::parse(pattern).unwrap();
        let (total, hits) = index.search(&pattern, limit);
        let hits = hits
            .iter()
            .map(|h| {
                format!(
                    "{}/{}{}",
                    h.owner,
                    h.file,
                    if h.connected { "+" } else { "" }
                )
            })
            .collect();
        (total, hits)
    }

    #[test]
    fn posting_round_trips() {
        let mut posting = Posting::default();
        let ids = [0u32, 1, 5, 127, 128, 300, 70_000, u32::MAX - 1];
        for id in ids {
            posting.push(id);
        }
        assert_eq!(posting.ids().collect::<Vec<_>>(), ids);
    }

    #[test]
    fn order_cap_and_removal() {
        let mut index = SearchIndex::default();
        index.add("bo", "Song.mp3");
        index.add("al", "song.txt");
        index.add("cy", "xsongx");
        index.add("cy", "other");
        index.set_connected("cy", true);
        assert_eq!(
            names(&index, "SONG", 10),
            (
                3,
                vec![
                    "cy/xsongx+".into(),
                    "al/song.txt".into(),
                    "bo/Song.mp3".into()
                ]
            )
        );
        assert_eq!(
            names(&index, "song", 2),
            (3, vec!["cy/xsongx+".into(), "al/song.txt".into()])
        );
        assert_eq!(
            names(&index, "s?ng.*3", 10),
            (1, vec!["bo/Song.mp3".into()])
        );
        assert_eq!(names(&index, "o", 10).0, 4, "short pattern scans");
        assert_eq!(index.remove("bo", "Song.mp3"), Some(0));
        assert_eq!(index.remove("bo", "Song.mp3"), None);
        assert_eq!(names(&index, "song", 10).0, 2);
        index.set_connected("cy", false);
        assert_eq!(names(&index, "song", 1).1, ["al/song.txt"]);
        assert_eq!(index.remove_owner("cy").len(), 2);
        assert_eq!(names(&index, "o", 10), (1, vec!["al/song.txt".into()]));
        assert!(!index.is_connected("cy"));
        index.add("cy", "song2");
        assert_eq!(names(&index, "song", 10).0, 2);
    }

    #[test]
    fn compaction_keeps_live_entries() {
        let mut index = SearchIndex::default();
        for i in 0..10_000 {
            index.add(&format!("u{i}"), &format!("file{i}"));
        }
        index.set_connected("u9999", true);
        for i in 0..9_000 {
            index.remove(&format!("u{i}"), &format!("file{i}"));
        }
        assert!(index.wants_compaction());
        let remap = index.compact();
        assert!(!index.wants_compaction());
        assert_eq!(remap[0], NONE);
        assert_eq!(index.hit(remap[9_999]).unwrap().file, "file9999");
        assert_eq!(index.len(), 1_000);
        let (total, hits) = names(&index, "file99", 3);
        assert_eq!(total, 100, "file9900..file9999");
        assert_eq!(hits[0], "u9999/file9999+");
    }
}
