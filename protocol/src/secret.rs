//! [`Secret`]: a password as it travels through the program, never shown.
//!
//! Passwords pass through request values that are logged at debug level
//! and through error paths that format what they hold. Wrapping them in a
//! type whose `Debug` and `Display` print a marker keeps them out of every
//! log line and panic message without relying on each call site.

use std::fmt;

/// A password or other secret text. Formatting it prints `<secret>`; only
/// [`Secret::expose`] gives the text, for the codec and the hasher.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret text itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for the empty password (an account without a password).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_text() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<secret> <secret>");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(<secret>)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
