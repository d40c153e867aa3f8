//! The directory of an [`EntryTable`](super::entries::EntryTable)'s
//! chunks: the key of each chunk's first entry, searchable without
//! touching the keys themselves in the common case.
//!
//! Why: every look-up starts with a binary search over the chunks' first
//! keys. With a million users that is ~50,000 keys, and following a
//! pointer to each probed key costs a cache miss per step, most of a
//! look-up's time. The first 16 bytes of every key are therefore
//! also kept inline, as big-endian integers in one vector: the search
//! compares integers in contiguous memory and reads a key only among the
//! few chunks whose first keys share those 16 bytes with the one sought.
//!
//! Order is kept because a key's prefix is its first 16 bytes padded with
//! zeros, and zero is the smallest byte: when two prefixes differ, the keys
//! differ the same way (a shorter key padded with zeros sorts before a
//! longer key it begins), so only equal prefixes need the full keys.

/// Each chunk's first key, in chunk (hence key) order.
#[derive(Debug, Clone, Default)]
pub struct FirstKeys {
    /// The first 16 bytes of each key, zero-padded, big-endian.
    prefixes: Vec<u128>,
    /// The whole keys, for ties between prefixes.
    keys: Vec<Box<[u8]>>,
}

/// The first 16 bytes of `key`, zero-padded, as an integer ordered like
/// the bytes: when two keys' prefixes differ, the keys differ the same way.
fn key_prefix(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

/// How many leading `prefixes` equal `wanted` (all of them are at least
/// `wanted`). Usually none or one: this looks at the next prefix first and
/// widens the search only while they keep being equal, instead of a binary
/// search over the whole tail, whose first probes are cold cache lines far
/// away.
fn equal_run(prefixes: &[u128], wanted: u128) -> usize {
    let mut bound = 1;
    while bound <= prefixes.len() && prefixes[bound - 1] == wanted {
        bound *= 2;
    }
    // prefixes[..bound / 2] are equal; the run ends before `bound`.
    let start = bound / 2;
    let end = bound.min(prefixes.len());
    start + prefixes[start..end].partition_point(|p| *p == wanted)
}

impl FirstKeys {
    /// Number of chunks.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// How many first keys are below `key` (the chunk holding `key`'s
    /// lower bound is the last of them, if any).
    pub fn count_below(&self, key: &[u8]) -> usize {
        let wanted = key_prefix(key);
        let low = self.prefixes.partition_point(|p| *p < wanted);
        let ties = equal_run(&self.prefixes[low..], wanted);
        low + self.keys[low..low + ties].partition_point(|first| &**first < key)
    }

    /// Key of chunk `i`.
    #[cfg(test)]
    pub fn get(&self, i: usize) -> &[u8] {
        &self.keys[i]
    }

    /// Sets the first key of chunk `i` (its first entry changed).
    pub fn set(&mut self, i: usize, key: &[u8]) {
        self.prefixes[i] = key_prefix(key);
        self.keys[i] = key.into();
    }

    /// Records a new chunk at position `i`.
    pub fn insert(&mut self, i: usize, key: &[u8]) {
        self.prefixes.insert(i, key_prefix(key));
        self.keys.insert(i, key.into());
    }

    /// Forgets chunk `i`.
    pub fn remove(&mut self, i: usize) {
        self.prefixes.remove(i);
        self.keys.remove(i);
    }

    /// Heap bytes held (capacity, keys' lengths).
    pub fn heap_bytes(&self) -> usize {
        let keys: usize = self.keys.iter().map(|k| k.len()).sum();
        16 * self.prefixes.capacity() + 16 * self.keys.capacity() + keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_orders_like_the_bytes() {
        let keys: [&[u8]; 6] = [
            b"",
            b"a\0",
            b"a\0b\0",
            b"ab\0",
            b"bench-u1\0",
            b"bench-u10\0",
        ];
        for pair in keys.windows(2) {
            assert!(key_prefix(pair[0]) <= key_prefix(pair[1]));
        }
        // Beyond 16 bytes the prefix ties and the keys decide.
        assert_eq!(
            key_prefix(b"0123456789abcdef-x\0"),
            key_prefix(b"0123456789abcdef-y\0")
        );
    }

    proptest! {
        /// After any sequence of insertions, removals and first-key
        /// changes over hundreds of chunks, every search agrees with a scan
        /// of the keys; half of the keys share their first 16 bytes, so
        /// long runs of equal prefixes are searched too.
        #[test]
        fn searches_stay_exact_as_chunks_come_and_go(
            steps in proptest::collection::vec((0u8..3, 0u32..2000), 1..400),
            probes in proptest::collection::vec(0u32..2100, 1..30),
        ) {
            let key = |n: u32| {
                let shared = if n.is_multiple_of(2) { "0123456789abcdef" } else { "" };
                format!("{shared}k{n:05}\0").into_bytes()
            };
            let mut sorted: Vec<Vec<u8>> = Vec::new();
            let mut firsts = FirstKeys::default();
            for (action, n) in steps {
                let k = key(n);
                let at = sorted.partition_point(|x| *x < k);
                let present = sorted.get(at) == Some(&k);
                match action {
                    0 if !present => {
                        sorted.insert(at, k.clone());
                        firsts.insert(at, &k);
                    }
                    1 if present => {
                        sorted.remove(at);
                        firsts.remove(at);
                    }
                    // A first key replaced by a larger one that still
                    // sorts before the next chunk's.
                    2 if present => {
                        let mut bigger = k.clone();
                        bigger.insert(bigger.len() - 1, b'x');
                        if sorted.get(at + 1).is_none_or(|next| bigger < *next) {
                            sorted[at] = bigger.clone();
                            firsts.set(at, &bigger);
                        }
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(firsts.len(), sorted.len());
            for probe in probes.into_iter().map(key).chain(sorted.iter().cloned()) {
                let expected = sorted.iter().filter(|k| **k < probe).count();
                prop_assert_eq!(firsts.count_below(&probe), expected);
            }
        }

        /// `equal_run` counts the leading run of `wanted` in a sorted
        /// slice of values not below it, however long the run.
        #[test]
        fn equal_run_counts_the_leading_equal_prefixes(
            equal in 0usize..300,
            mut above in proptest::collection::vec(8u128..12, 0..50),
        ) {
            above.sort_unstable();
            let prefixes: Vec<u128> = std::iter::repeat_n(7u128, equal).chain(above).collect();
            prop_assert_eq!(equal_run(&prefixes, 7), equal);
        }

        /// `count_below` agrees with a scan of the sorted keys, including
        /// keys that share long prefixes.
        #[test]
        fn count_below_matches_a_scan(
            mut keys in proptest::collection::btree_set(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(b'b')], 0..24), 0..40),
            probes in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(b'b')], 0..24), 1..20),
            long_prefix in any::<bool>(),
        ) {
            if long_prefix {
                keys = keys.into_iter().map(|k| [b"0123456789abcdef".as_slice(), &k].concat()).collect();
            }
            let sorted: Vec<Vec<u8>> = keys.into_iter().collect();
            let mut firsts = FirstKeys::default();
            for (i, key) in sorted.iter().enumerate() {
                firsts.insert(i, key);
            }
            for probe in probes {
                let probe = if long_prefix { [b"0123456789abcdef".as_slice(), &probe].concat() } else { probe };
                let expected = sorted.iter().filter(|k| k.as_slice() < probe.as_slice()).count();
                prop_assert_eq!(firsts.count_below(&probe), expected);
            }
        }
    }
}
