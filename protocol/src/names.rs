//! Validation of the names the directory stores.

/// A user name: 1..255 bytes, no ASCII whitespace or control characters.
pub fn is_valid_user(name: &str) -> bool {
    is_token(name)
}

/// A published file name: 1..255 bytes, no whitespace or control characters.
pub fn is_valid_file(name: &str) -> bool {
    is_token(name) && !name.chars().any(char::is_whitespace)
}

/// A description: 0..255 bytes, spaces allowed, no control characters (they
/// would break the shell's one-line-per-file listing).
pub fn is_valid_description(text: &str) -> bool {
    text.len() <= crate::MAX_FIELD_LEN && !text.chars().any(char::is_control)
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= crate::MAX_FIELD_LEN
        && !text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        && !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(is_valid_user("alice"));
        assert!(is_valid_user("ñandú_42"));
        assert!(!is_valid_user(""));
        assert!(!is_valid_user("a b"));
        assert!(!is_valid_user("a\tb"));
        assert!(!is_valid_user("bell\u{7}"));
        assert!(!is_valid_user(&"u".repeat(256)));
    }

    #[test]
    fn file_names_and_descriptions() {
        assert!(is_valid_file("song.mp3"));
        assert!(!is_valid_file("my song.mp3"));
        assert!(!is_valid_file("nbsp\u{a0}name"));
        assert!(is_valid_description(""));
        assert!(is_valid_description("a nice song"));
        assert!(!is_valid_description("two\nlines"));
    }
}
