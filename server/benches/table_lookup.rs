//! Exact-key look-ups in the directory's files table, side by side with a
//! `BTreeMap` holding the same entries (the obvious alternative), at
//! 10,000 and 1,000,000 users with 2 files each: the look-ups every
//! mutation's rules and every LIST_CONTENT make (docs/PERFORMANCE.md).
//!
//! Two rows per size: independent look-ups, whose cache misses the
//! processor overlaps, and chained ones, each key depending on the
//! previous answer, which is how the writer's rules meet them.
//!
//! `cargo bench -p peerdex-server --bench table_lookup`; the numbers and
//! what they mean are in docs/PERFORMANCE.md. Rounds alternate the two
//! structures and report medians, and the ratio is what to compare across
//! machines.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use peerdex_server::state::entries::EntryTable;

/// Look-ups per timed pass.
const LOOKUPS: usize = 200_000;
/// Alternated passes per structure.
const ROUNDS: usize = 5;

/// The `files` entry of a benchmark user's file, as the server stores it.
fn entry(user: usize, file: usize) -> Vec<u8> {
    format!("bench-u{user}\0bench-f{user}-{file}.dat\0description of file {file}\0").into_bytes()
}

/// The key of that entry (owner and file fields).
fn key(user: usize, file: usize) -> Vec<u8> {
    format!("bench-u{user}\0bench-f{user}-{file}.dat\0").into_bytes()
}

/// Nanoseconds per look-up of `users`' files in `order`, each key
/// depending on the previous answer (`get` returns the entry's length, 0
/// when absent).
fn chained_ns(order: &[usize], get: impl Fn(&[u8]) -> usize) -> f64 {
    let start = Instant::now();
    let mut found = 0usize;
    for (i, user) in order.iter().enumerate() {
        // `found >> 40` is always 0, but only known after the previous
        // look-up answered.
        let probe = key(user + (found >> 40), i % 2);
        found = get(black_box(&probe));
    }
    black_box(found);
    start.elapsed().as_nanos() as f64 / order.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    for users in [10_000usize, 1_000_000] {
        let mut table = EntryTable::new(2);
        let mut map = BTreeMap::new();
        for user in 0..users {
            for file in 0..2 {
                table.insert(&entry(user, file));
                map.insert(key(user, file), entry(user, file));
            }
        }
        // A fixed scattered order: consecutive look-ups hit unrelated
        // chunks, as requests from many clients do.
        let probes: Vec<Vec<u8>> = (0..LOOKUPS)
            .map(|i| key(i.wrapping_mul(7919) % users, i % 2))
            .collect();
        let (mut ours, mut btree) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let found = probes
                .iter()
                .filter(|k| table.get(black_box(k)).is_some())
                .count();
            ours.push(start.elapsed().as_nanos() as f64 / LOOKUPS as f64);
            assert_eq!(found, LOOKUPS, "every probed key is in the table");

            let start = Instant::now();
            let found = probes
                .iter()
                .filter(|k| map.contains_key(black_box(*k)))
                .count();
            btree.push(start.elapsed().as_nanos() as f64 / LOOKUPS as f64);
            assert_eq!(found, LOOKUPS, "every probed key is in the map");
        }
        let (ours, btree) = (median(ours), median(btree));
        println!(
            "users {users:>9} ({} entries): EntryTable {ours:7.0} ns/lookup, BTreeMap {btree:7.0} ns/lookup, ratio {:.2} (medians of {ROUNDS})",
            2 * users,
            ours / btree
        );
        // Chained: each look-up's key depends on the previous answer, so
        // the processor cannot overlap their cache misses. This is the
        // latency the server's rules see, one look-up after another.
        let order: Vec<usize> = (0..LOOKUPS).map(|i| i.wrapping_mul(7919) % users).collect();
        let (mut ours, mut btree) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ours.push(chained_ns(&order, |probe| {
                table.get(probe).map_or(0, <[u8]>::len)
            }));
            btree.push(chained_ns(&order, |probe| {
                map.get(probe).map_or(0, Vec::len)
            }));
        }
        let (ours, btree) = (median(ours), median(btree));
        println!(
            "users {users:>9} chained (each key from the previous answer; includes formatting the key): EntryTable {ours:7.0} ns/lookup, BTreeMap {btree:7.0} ns/lookup, ratio {:.2}",
            ours / btree
        );
    }
}
