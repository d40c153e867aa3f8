//! Escaping of untrusted text for a log that is read one line per record,
//! often on a terminal.
//!
//! Every record field comes from a directory request (or from whoever
//! speaks to the logger), so it may hold a newline that forges a second
//! record, or an escape sequence that a terminal would obey. Escaped text
//! holds neither:
//!
//! | character | printed as |
//! |---|---|
//! | `\` | `\\` |
//! | newline, carriage return, tab | `\n`, `\r`, `\t` |
//! | any other control character (U+0000..U+001F, U+007F..U+009F) | `\xNN` (two lowercase hex digits, e.g. `\x1b`) |
//! | line and paragraph separators, bidirectional controls (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) | `\u{NNNN}` |
//! | a space, in a [`Kind::Token`] only | `\x20` |
//!
//! Everything else is printed as it is. The escape is reversible: a `\`
//! in the output always starts an escape, so distinct inputs print
//! differently.

use std::fmt::Write;

/// What a field may contain, which decides whether a space is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A name that never holds a space when valid (user, op, file): a
    /// space is escaped, so that the line still splits into its fields.
    Token,
    /// Free text whose spaces belong to it (the datetime, the outcome).
    Text,
}

/// Appends `text` to `out`, escaped as the module docs say.
pub fn push_escaped(out: &mut String, text: &str, kind: Kind) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' ' if kind == Kind::Token => out.push_str("\\x20"),
            // Every control character is at most U+009F: two hex digits.
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_layout_control(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Characters that are not control characters but still break a line
/// (U+2028, U+2029 in many viewers) or reorder what a reader sees around
/// them (the bidirectional controls).
fn is_layout_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn escaped(text: &str, kind: Kind) -> String {
        let mut out = String::new();
        push_escaped(&mut out, text, kind);
        out
    }

    /// Reverses [`push_escaped`]; `None` if `text` is not its output.
    fn unescape(text: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                'u' => {
                    let rest = chars.as_str();
                    let end = rest.find('}')?;
                    let hex = rest.get(1..end)?;
                    out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
                    chars = rest[end + 1..].chars();
                }
                _ => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn plain_names_are_unchanged() {
        assert_eq!(escaped("alice", Kind::Token), "alice");
        assert_eq!(escaped("ñandú_42.mp3", Kind::Token), "ñandú_42.mp3");
        assert_eq!(
            escaped("21/11/2026 09:05:07", Kind::Text),
            "21/11/2026 09:05:07"
        );
    }

    #[test]
    fn controls_and_backslash_are_escaped() {
        assert_eq!(escaped("a\nb", Kind::Token), "a\\nb");
        assert_eq!(escaped("a\r\tb", Kind::Text), "a\\r\\tb");
        assert_eq!(escaped("\u{1b}[2J", Kind::Token), "\\x1b[2J");
        assert_eq!(escaped("\0\u{7f}\u{9b}", Kind::Token), "\\x00\\x7f\\x9b");
        assert_eq!(escaped("c:\\x1b", Kind::Token), "c:\\\\x1b");
        assert_eq!(escaped("a\u{2028}b", Kind::Text), "a\\u{2028}b");
        assert_eq!(escaped("\u{202e}3pm.exe", Kind::Token), "\\u{202e}3pm.exe");
    }

    #[test]
    fn spaces_are_escaped_in_tokens_only() {
        assert_eq!(escaped("my song", Kind::Token), "my\\x20song");
        assert_eq!(
            escaped("USER DOES NOT EXIST", Kind::Text),
            "USER DOES NOT EXIST"
        );
    }

    /// Text with the characters that matter here much more often than
    /// `any::<String>()` gives them (it never gives control characters).
    pub(crate) fn hostile_text() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '\n', '\r', '\t', '\0', '\u{1b}', '\u{7f}', '\u{9b}', '\\', ' ', 'x', '{', '}',
            '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}',
        ]);
        prop::collection::vec(prop_oneof![any::<char>(), special], 0..24)
            .prop_map(String::from_iter)
    }

    proptest! {
        #[test]
        fn escaped_text_is_one_safe_line_that_reverses(
            text in hostile_text(),
            token in any::<bool>(),
        ) {
            let kind = if token { Kind::Token } else { Kind::Text };
            let out = escaped(&text, kind);
            prop_assert!(!out.chars().any(|c| c.is_control() || is_layout_control(c)));
            prop_assert!(kind == Kind::Text || !out.contains(' '));
            prop_assert_eq!(unescape(&out), Some(text));
        }
    }
}
