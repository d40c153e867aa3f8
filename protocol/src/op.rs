//! The eight classic directory operations, the peerdex directory
//! extensions (`PUBLISH_CONTENT`, `SEARCH`, `FIND_SOURCES`, `WHOIS`,
//! `SET_PASSWORD`, see docs/PROTOCOL-EXTENSIONS.md) and their reply codes.
//!
//! Each operation's codes form a table ([`OpKind::outcomes`]): the code is the
//! index of the outcome in it, and the last entry is the catch-all FAIL. One
//! table serves the server (outcome -> code) and the client (code -> outcome).

use std::fmt;

/// A directory server operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Register,
    Unregister,
    Connect,
    Disconnect,
    Publish,
    Delete,
    ListUsers,
    ListContent,
    /// Extension: PUBLISH with the content's size and BLAKE3 root.
    PublishContent,
    /// Extension: files whose name matches a pattern, across all users.
    Search,
    /// Extension: connected peers publishing identical content.
    FindSources,
    /// Extension: whether a user is online, where, or when it was last seen.
    Whois,
    /// Extension (sessions only): sets the account's password.
    SetPassword,
}

/// What happened to an operation, independent of its numeric code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    UsernameInUse,
    UserDoesNotExist,
    UserAlreadyConnected,
    UserNotConnected,
    ContentAlreadyPublished,
    ContentNotPublished,
    RemoteUserDoesNotExist,
    /// The catch-all: malformed or over-long field, bad port, storage failure.
    Fail,
    /// Not allowed to this connection: a protected account acted for
    /// without an authenticated session of it, or a mutation from a
    /// classic client under `--auth required`. No table has it, so it is
    /// sent as the operation's catch-all code; the server's logger shows
    /// it as `REFUSED`.
    Refused,
}

use Outcome::*;

impl Outcome {
    /// The outcome in the words of the shell's result lines (PROTOCOL.md):
    /// `OK`, `USER DOES NOT EXIST`, ..., `FAIL`. The shell and the logger
    /// print it, so that both say the same thing.
    pub fn text(self) -> &'static str {
        match self {
            Ok => "OK",
            UsernameInUse => "USERNAME IN USE",
            UserDoesNotExist => "USER DOES NOT EXIST",
            UserAlreadyConnected => "USER ALREADY CONNECTED",
            UserNotConnected => "USER NOT CONNECTED",
            ContentAlreadyPublished => "CONTENT ALREADY PUBLISHED",
            ContentNotPublished => "CONTENT NOT PUBLISHED",
            RemoteUserDoesNotExist => "REMOTE USER DOES NOT EXIST",
            Fail => "FAIL",
            Refused => "REFUSED",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl OpKind {
    /// Every classic operation, in PROTOCOL.md's order. Extensions are
    /// in [`OpKind::EXTENSIONS`], so code that walks the classic contract
    /// never meets them.
    pub const ALL: [OpKind; 8] = [
        OpKind::Register,
        OpKind::Unregister,
        OpKind::Connect,
        OpKind::Disconnect,
        OpKind::Publish,
        OpKind::Delete,
        OpKind::ListUsers,
        OpKind::ListContent,
    ];

    /// The peerdex directory extensions (docs/PROTOCOL-EXTENSIONS.md).
    pub const EXTENSIONS: [OpKind; 5] = [
        OpKind::PublishContent,
        OpKind::Search,
        OpKind::FindSources,
        OpKind::Whois,
        OpKind::SetPassword,
    ];

    /// True for an extension op: a classic server closes on it.
    pub fn is_extension(self) -> bool {
        OpKind::EXTENSIONS.contains(&self)
    }

    /// The op field as sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Register => "REGISTER",
            OpKind::Unregister => "UNREGISTER",
            OpKind::Connect => "CONNECT",
            OpKind::Disconnect => "DISCONNECT",
            OpKind::Publish => "PUBLISH",
            OpKind::Delete => "DELETE",
            OpKind::ListUsers => "LIST_USERS",
            OpKind::ListContent => "LIST_CONTENT",
            OpKind::PublishContent => "PUBLISH_CONTENT",
            OpKind::Search => "SEARCH",
            OpKind::FindSources => "FIND_SOURCES",
            OpKind::Whois => "WHOIS",
            OpKind::SetPassword => "SET_PASSWORD",
        }
    }

    /// Parses an op field. Surrounding ASCII whitespace is ignored, as
    /// PROTOCOL.md requires; the name itself is case-sensitive.
    pub fn from_wire(field: &str) -> Option<OpKind> {
        let name = field.trim_matches(|c: char| c.is_ascii_whitespace());
        OpKind::ALL
            .into_iter()
            .chain(OpKind::EXTENSIONS)
            .find(|op| op.name() == name)
    }

    /// The operation's outcomes, indexed by reply code.
    pub fn outcomes(self) -> &'static [Outcome] {
        match self {
            OpKind::Register => &[Ok, UsernameInUse, Fail],
            OpKind::Unregister | OpKind::Whois | OpKind::SetPassword => {
                &[Ok, UserDoesNotExist, Fail]
            }
            OpKind::Connect => &[Ok, UserDoesNotExist, UserAlreadyConnected, Fail],
            OpKind::Disconnect => &[Ok, UserDoesNotExist, UserNotConnected, Fail],
            OpKind::Publish | OpKind::PublishContent => &[
                Ok,
                UserDoesNotExist,
                UserNotConnected,
                ContentAlreadyPublished,
                Fail,
            ],
            OpKind::Delete | OpKind::FindSources => &[
                Ok,
                UserDoesNotExist,
                UserNotConnected,
                ContentNotPublished,
                Fail,
            ],
            OpKind::ListUsers | OpKind::Search => &[Ok, UserDoesNotExist, UserNotConnected, Fail],
            OpKind::ListContent => &[
                Ok,
                UserDoesNotExist,
                UserNotConnected,
                RemoteUserDoesNotExist,
                Fail,
            ],
        }
    }

    /// The reply code of `outcome`. An outcome that this operation cannot
    /// have maps to its catch-all code, which is what the protocol says such
    /// a failure is.
    pub fn code(self, outcome: Outcome) -> u8 {
        let outcomes = self.outcomes();
        let index = outcomes
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(outcomes.len() - 1);
        index as u8
    }

    /// The outcome of a reply code, or `None` for a code out of range.
    pub fn outcome(self, code: u8) -> Option<Outcome> {
        self.outcomes().get(usize::from(code)).copied()
    }

    /// The catch-all FAIL code.
    pub fn fail_code(self) -> u8 {
        self.code(Fail)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_protocol_tables() {
        assert_eq!(OpKind::Register.code(UsernameInUse), 1);
        assert_eq!(OpKind::Register.fail_code(), 2);
        assert_eq!(OpKind::Connect.code(UserAlreadyConnected), 2);
        assert_eq!(OpKind::Connect.fail_code(), 3);
        assert_eq!(OpKind::Publish.code(ContentAlreadyPublished), 3);
        assert_eq!(OpKind::Publish.fail_code(), 4);
        assert_eq!(OpKind::Delete.code(ContentNotPublished), 3);
        assert_eq!(OpKind::ListContent.code(RemoteUserDoesNotExist), 3);
        assert_eq!(OpKind::ListContent.fail_code(), 4);
    }

    #[test]
    fn impossible_outcome_is_catch_all() {
        assert_eq!(OpKind::Register.code(ContentNotPublished), 2);
    }

    #[test]
    fn code_round_trips_for_every_op() {
        for op in OpKind::ALL {
            for (code, outcome) in op.outcomes().iter().enumerate() {
                assert_eq!(op.code(*outcome), code as u8);
                assert_eq!(op.outcome(code as u8), Some(*outcome));
            }
            assert_eq!(op.outcome(op.outcomes().len() as u8), None);
            assert_eq!(*op.outcomes().last().unwrap(), Fail);
        }
    }

    #[test]
    fn extension_codes_and_names() {
        assert_eq!(OpKind::PublishContent.code(ContentAlreadyPublished), 3);
        assert_eq!(OpKind::PublishContent.fail_code(), 4);
        assert_eq!(OpKind::Search.code(UserNotConnected), 2);
        assert_eq!(OpKind::Search.fail_code(), 3);
        assert_eq!(OpKind::FindSources.code(ContentNotPublished), 3);
        assert_eq!(OpKind::FindSources.fail_code(), 4);
        for op in OpKind::EXTENSIONS {
            assert!(op.is_extension());
            assert_eq!(OpKind::from_wire(op.name()), Some(op));
            assert_eq!(*op.outcomes().last().unwrap(), Fail);
        }
        assert!(OpKind::ALL.iter().all(|op| !op.is_extension()));
        assert_eq!(OpKind::Whois.code(UserDoesNotExist), 1);
        assert_eq!(OpKind::SetPassword.fail_code(), 2);
    }

    #[test]
    fn refused_is_sent_as_the_catch_all() {
        for op in OpKind::ALL.into_iter().chain(OpKind::EXTENSIONS) {
            assert_eq!(op.code(Refused), op.fail_code(), "{op}");
        }
        assert_eq!(Refused.text(), "REFUSED");
    }

    #[test]
    fn op_names_ignore_surrounding_whitespace_only() {
        assert_eq!(OpKind::from_wire(" LIST_USERS\t"), Some(OpKind::ListUsers));
        assert_eq!(OpKind::from_wire("register"), None);
        assert_eq!(OpKind::from_wire("LIST USERS"), None);
    }
}
