//! The in-memory content index behind FIND_SOURCES: BLAKE3 root -> the
//! entries publishing it.
//!
//! Why: FIND_SOURCES must find every peer with identical content without a
//! scan; only entries published with PUBLISH_CONTENT have a hash, so the
//! index holds just those (a classic directory costs nothing here).

use hashbrown::HashMap;

/// A BLAKE3 root.
pub type Digest = [u8; 32];

/// Root -> entry ids (of [`super::search::SearchIndex`]), and back.
#[derive(Debug, Default)]
pub struct SourcesIndex {
    by_hash: HashMap<Digest, Vec<u32>>,
    /// The hash and size of each entry that has one.
    of_entry: HashMap<u32, (u64, Digest)>,
}

impl SourcesIndex {
    /// Records that entry `id` holds content `hash` of `size` bytes.
    pub fn set(&mut self, id: u32, size: u64, hash: Digest) {
        self.remove(id);
        self.by_hash.entry(hash).or_default().push(id);
        self.of_entry.insert(id, (size, hash));
    }

    /// Forgets entry `id`.
    pub fn remove(&mut self, id: u32) {
        let Some((_, hash)) = self.of_entry.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_hash.get_mut(&hash) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.by_hash.remove(&hash);
            }
        }
    }

    /// Size and hash of entry `id`, if published with them.
    pub fn content(&self, id: u32) -> Option<(u64, Digest)> {
        self.of_entry.get(&id).copied()
    }

    /// The entries publishing `hash`.
    pub fn entries(&self, hash: &Digest) -> &[u32] {
        self.by_hash.get(hash).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Renumbers entries after the name index compacted (`remap[old]` is
    /// the new id, `u32::MAX` for a dead entry).
    pub fn remap(&mut self, remap: &[u32]) {
        let old = std::mem::take(&mut self.of_entry);
        self.by_hash.clear();
        for (id, (size, hash)) in old {
            match remap.get(id as usize) {
                Some(&new) if new != u32::MAX => self.set(new, size, hash),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_remove_remap() {
        let mut index = SourcesIndex::default();
        index.set(1, 10, [1; 32]);
        index.set(2, 10, [1; 32]);
        index.set(3, 5, [2; 32]);
        assert_eq!(index.entries(&[1; 32]), [1, 2]);
        index.set(2, 5, [2; 32]);
        assert_eq!(index.entries(&[1; 32]), [1]);
        index.remove(1);
        assert!(index.entries(&[1; 32]).is_empty());
        index.remap(&[u32::MAX, u32::MAX, 0, u32::MAX]);
        assert_eq!(index.entries(&[2; 32]), [0]);
        assert_eq!(index.content(0), Some((5, [2; 32])));
    }
}
