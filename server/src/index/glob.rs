//! SEARCH patterns: case-insensitive substring match with `*` (any run) and
//! `?` (one character) wildcards.
//!
//! A pattern always matches anywhere in the name, as if written
//! `*pattern*`. Both sides are compared in Unicode lower case
//! ([`fold`]), the same folding the trigram index uses, so that the
//! candidates the index proposes are a superset of the matches.

use thiserror::Error;

/// Why a SEARCH pattern is refused (code FAIL).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("pattern contains a control character or whitespace")]
    Invalid,
}

/// A parsed pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The folded pattern as characters, `*` and `?` kept as wildcards.
    chars: Vec<char>,
    /// The literal runs between wildcards, folded: what the index looks up.
    literals: Vec<String>,
}

/// Folds a name for matching: Unicode lower case, without allocating for
/// the usual ASCII lower-case names.
pub fn fold(text: &str) -> std::borrow::Cow<'_, str> {
    if text
        .bytes()
        .all(|b| !b.is_ascii_uppercase() && b.is_ascii())
    {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(text.to_lowercase())
    }
}

impl Pattern {
    /// Parses a pattern: not empty, no whitespace or control characters
    /// (file names never contain them, so such a pattern matches nothing
    /// and is a client error).
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::Invalid);
        }
        let folded = fold(text);
        let chars: Vec<char> = folded.chars().collect();
        let literals = folded
            .split(['*', '?'])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Pattern { chars, literals })
    }

    /// The literal runs between wildcards (folded).
    pub fn literals(&self) -> &[String] {
        &self.literals
    }

    /// True when `name` matches, as a substring, case-insensitively.
    pub fn matches(&self, name: &str) -> bool {
        let folded = fold(name);
        let name: Vec<char> = folded.chars().collect();
        matches_anywhere(&self.chars, &name)
    }
}

/// Wildcard match of `*pattern*` against `name`: the classic greedy
/// algorithm with one backtrack point, O(len(name) * len(pattern)) worst.
fn matches_anywhere(pattern: &[char], name: &[char]) -> bool {
    // Implicit leading `*`: the backtrack point starts before the pattern.
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = Some((0, 0));
    loop {
        if p == pattern.len() {
            // Implicit trailing `*`: any rest of the name is fine.
            return true;
        }
        if n < name.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if pattern[p] == '*' {
            p += 1;
            star = Some((p, n));
        } else if let Some((sp, sn)) = star {
            if sn >= name.len() {
                return false;
            }
            p = sp;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn substring_case_insensitive() {
        assert!(m("song", "My_SONG.mp3"));
        assert!(m("SONG", "song"));
        assert!(!m("songs", "song"));
        assert!(m("ÄB", "xäbx"));
        assert!(m("f1", "f1"));
    }

    #[test]
    fn wildcards() {
        assert!(m("s*g", "xsong"));
        assert!(m("s?ng", "a_sung_b"));
        assert!(!m("s?ng", "sng"));
        assert!(m("*", "anything"));
        assert!(m("a*b*c", "xxaYYbZZcQ"));
        assert!(!m("a*b*c", "xxaYYcZZb"));
        assert!(m("?", "x"));
        assert!(!m("??", "x"));
        assert!(m("é?", "éa"));
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(Pattern::parse("").unwrap_err(), PatternError::Empty);
        assert_eq!(Pattern::parse("a b").unwrap_err(), PatternError::Invalid);
        assert_eq!(Pattern::parse("a\u{1}").unwrap_err(), PatternError::Invalid);
        assert_eq!(
            Pattern::parse("Ab*cD?e").unwrap().literals(),
            ["ab", "cd", "e"]
        );
    }
}
