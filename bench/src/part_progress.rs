//! Progress of a download seen from outside: the `done` bitmap of
//! `<local>.part.state` (docs/PROTOCOL-EXTENSIONS.md). `.part` itself is
//! preallocated to the full size, so its length says nothing; the state
//! counts pieces verified *and* fsync'd, which is what a resume keeps.
//! A series of these readings that never goes down is the evidence that a
//! download did not start over.

use std::path::{Path, PathBuf};

/// `<local>.part.state`.
pub fn state_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".part.state");
    PathBuf::from(name)
}

/// Pieces marked done in the state file of `local`, if it is readable.
pub fn pieces_done(local: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(state_path(local)).ok()?;
    done_count(&text)
}

/// Counts the set bits of the `done` line.
fn done_count(text: &str) -> Option<u64> {
    let hex = text.lines().find_map(|line| line.strip_prefix("done "))?;
    hex.chars()
        .map(|c| c.to_digit(16).map(|d| u64::from(d.count_ones())))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_done_bits() {
        assert_eq!(done_count("peerdex-part 1\ndone ff01\ncheck 00\n"), Some(9));
        assert_eq!(done_count("done \n"), Some(0));
        assert_eq!(done_count("done zz\n"), None);
        assert_eq!(done_count("nothing\n"), None);
    }
}
