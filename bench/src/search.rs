//! The SEARCH operation of the benchmark (`--mix search-only`): which pattern to send
//! and how to check the reply.
//!
//! Populate gives user `j` the files `f<j>a` and `f<j>b`. A pattern `<i>a`
//! (digits of `i`, then `a`) is a substring of exactly the files `f<j>a`
//! whose decimal `j` ends with the digits of `i`, that is
//! `j = k * 10^d + i` for `k >= 0` (`d` digits in `i`): a handful of hits,
//! computable without listing the directory. `i` is drawn from
//! `[N/100, N)`, so a pattern hits 1 to about 10 files, and is at least
//! three bytes long (so the server can use its trigram index); for tiny N
//! the exact name `f<i>a` (one hit) is sent instead. Temporary files
//! (`tmp-<c>-<seq>`) contain no `a` and never match.

use peerdex_protocol::reply::{SearchEntry, SearchReply};

use crate::model;

/// The LIMIT sent with every SEARCH: smaller than the largest hit counts,
/// so that replies cut at the limit are exercised (and checked) too.
pub const LIMIT: u32 = 8;

/// Shortest pattern sent (the trigram index needs three bytes).
pub const MIN_PATTERN: usize = 3;

/// A SEARCH to send and what its reply must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub pattern: String,
    /// Every populated file the pattern matches, in increasing `j`.
    pub expected: Vec<usize>,
}

/// The range `i` is drawn from for `users` users: `[N/100, N)`, at least 1.
pub fn pick_range(users: usize) -> std::ops::Range<usize> {
    (users / 100).max(1).min(users.saturating_sub(1))..users
}

/// The query for the random draw `i` (`i < users`).
pub fn query(i: usize, users: usize) -> Query {
    let digits = i.to_string();
    let pattern = format!("{digits}a");
    if pattern.len() < MIN_PATTERN {
        return Query {
            pattern: model::permanent_files(i)[0].0.clone(),
            expected: vec![i],
        };
    }
    let step = 10usize.pow(digits.len() as u32);
    let expected = (0..)
        .map(|k| k * step + i)
        .take_while(|&j| j < users)
        .collect();
    Query { pattern, expected }
}

/// Checks a code-0 SEARCH reply against `query`.
///
/// Always: COUNT <= LIMIT, COUNT <= TOTAL, COUNT == min(TOTAL, LIMIT), and
/// every returned FILE contains the pattern (compared in lower case).
/// With `exact` (`--verify-content`, the server holds only benchmark data):
/// TOTAL is the number of expected files, and every result is one of them,
/// owned by its user, at most once.
pub fn check(query: &Query, limit: u32, reply: &SearchReply, exact: bool) -> Result<(), String> {
    let count = reply.entries.len() as u64;
    let limit = u64::from(limit);
    if count > limit {
        return Err(format!(
            "SEARCH {}: COUNT {count} > LIMIT {limit}",
            query.pattern
        ));
    }
    if count > reply.total {
        return Err(format!(
            "SEARCH {}: COUNT {count} > TOTAL {}",
            query.pattern, reply.total
        ));
    }
    if count != reply.total.min(limit) {
        return Err(format!(
            "SEARCH {}: COUNT {count}, expected min(TOTAL {}, LIMIT {limit})",
            query.pattern, reply.total
        ));
    }
    let needle = query.pattern.to_lowercase();
    for entry in &reply.entries {
        if !entry.file.to_lowercase().contains(&needle) {
            return Err(format!(
                "SEARCH {}: result {:?} of {} does not contain the pattern",
                query.pattern, entry.file, entry.owner
            ));
        }
    }
    if exact {
        check_exact(query, reply)?;
    }
    Ok(())
}

fn check_exact(query: &Query, reply: &SearchReply) -> Result<(), String> {
    if reply.total != query.expected.len() as u64 {
        return Err(format!(
            "SEARCH {}: TOTAL {}, expected {} ({} users with a matching f<j>a)",
            query.pattern,
            reply.total,
            query.expected.len(),
            query.expected.len()
        ));
    }
    let mut seen = Vec::with_capacity(reply.entries.len());
    for entry in &reply.entries {
        let j = expected_owner(query, entry).ok_or_else(|| {
            format!(
                "SEARCH {}: unexpected result {:?} of {}",
                query.pattern, entry.file, entry.owner
            )
        })?;
        if seen.contains(&j) {
            return Err(format!(
                "SEARCH {}: {:?} of {} returned twice",
                query.pattern, entry.file, entry.owner
            ));
        }
        seen.push(j);
    }
    Ok(())
}

/// The `j` of an expected file `f<j>a` owned by `bench-u<j>`, if `entry` is one.
fn expected_owner(query: &Query, entry: &SearchEntry) -> Option<usize> {
    query.expected.iter().copied().find(|&j| {
        let [(file, description), _] = model::permanent_files(j);
        entry.file == file && entry.owner == model::user_name(j) && entry.description == description
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(owner: &str, file: &str, description: &str) -> SearchEntry {
        SearchEntry {
            owner: owner.into(),
            file: file.into(),
            description: description.into(),
            size: None,
            hash: None,
            connected: true,
        }
    }

    fn user_entry(j: usize) -> SearchEntry {
        let [(file, description), _] = model::permanent_files(j);
        entry(&model::user_name(j), &file, &description)
    }

    fn reply(total: u64, js: &[usize]) -> SearchReply {
        SearchReply {
            total,
            entries: js.iter().map(|&j| user_entry(j)).collect(),
        }
    }

    /// The expected set, by brute force over every populated name.
    fn brute(pattern: &str, users: usize) -> Vec<usize> {
        (0..users)
            .filter(|&j| {
                model::permanent_files(j)
                    .iter()
                    .any(|(f, _)| f.to_lowercase().contains(pattern))
            })
            .collect()
    }

    #[test]
    fn queries_match_brute_force_and_hit_a_few() {
        for users in [1, 2, 10, 99, 100, 1000, 10_000, 15_000] {
            // Every draw for small N, a sample for large N (brute force is
            // quadratic).
            let step = if users > 1000 { 97 } else { 1 };
            for i in pick_range(users).step_by(step) {
                let q = query(i, users);
                assert!(q.pattern.len() >= MIN_PATTERN, "{q:?}");
                assert_eq!(q.expected, brute(&q.pattern, users), "N={users} {q:?}");
                assert!(
                    (1..=15).contains(&q.expected.len()),
                    "N={users} {q:?} hits {}",
                    q.expected.len()
                );
            }
        }
    }

    #[test]
    fn ten_thousand_users_hit_one_or_ten() {
        assert_eq!(pick_range(10_000), 100..10_000);
        let q = query(123, 10_000);
        assert_eq!(q.pattern, "123a");
        assert_eq!(
            q.expected,
            (0..10).map(|k| k * 1000 + 123).collect::<Vec<_>>()
        );
        assert_eq!(query(4567, 10_000).expected, vec![4567]);
        assert_eq!(query(5, 7).pattern, "f5a");
    }

    #[test]
    fn full_and_cut_replies_pass() {
        let q = query(123, 10_000);
        let all = q.expected.clone();
        assert_eq!(check(&q, 20, &reply(10, &all), true), Ok(()));
        assert_eq!(check(&q, LIMIT, &reply(10, &all[..8]), true), Ok(()));
        // Mixed case in the reply still contains the pattern.
        let mut upper = reply(1, &[]);
        upper.entries.push(entry("x", "F123A", ""));
        assert_eq!(check(&q, LIMIT, &upper, false), Ok(()));
    }

    #[test]
    fn count_above_limit_is_an_error() {
        let q = query(123, 10_000);
        let err = check(&q, LIMIT, &reply(10, &q.expected), false).unwrap_err();
        assert!(err.contains("> LIMIT"), "{err}");
    }

    #[test]
    fn count_inconsistent_with_total_is_an_error() {
        let q = query(123, 10_000);
        let err = check(&q, LIMIT, &reply(3, &q.expected[..4]), false).unwrap_err();
        assert!(err.contains("> TOTAL"), "{err}");
        // Fewer results than min(TOTAL, LIMIT).
        let err = check(&q, LIMIT, &reply(10, &q.expected[..5]), false).unwrap_err();
        assert!(err.contains("expected min"), "{err}");
    }

    #[test]
    fn result_without_the_pattern_is_an_error() {
        let q = query(123, 10_000);
        let mut r = reply(1, &[]);
        r.entries
            .push(entry("bench-u124", "f124a", "bench file 124 a"));
        let err = check(&q, LIMIT, &r, false).unwrap_err();
        assert!(err.contains("does not contain"), "{err}");
    }

    #[test]
    fn exact_checks_total_owner_and_duplicates() {
        let q = query(123, 10_000);
        // Wrong TOTAL only matters when exact.
        assert_eq!(check(&q, LIMIT, &reply(9, &q.expected[..8]), false), Ok(()));
        let err = check(&q, LIMIT, &reply(9, &q.expected[..8]), true).unwrap_err();
        assert!(err.contains("TOTAL 9, expected 10"), "{err}");
        // A matching name under the wrong owner.
        let mut r = reply(10, &q.expected[..7]);
        r.entries
            .push(entry("bench-u1", "f1123a", "bench file 1123 a"));
        let err = check(&q, LIMIT, &r, true).unwrap_err();
        assert!(err.contains("unexpected result"), "{err}");
        // The same file twice.
        let mut js = q.expected[..7].to_vec();
        js.push(q.expected[0]);
        let err = check(&q, LIMIT, &reply(10, &js), true).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
