//! Directory server replies: a code, then for `LIST_*` on code 0 a count and
//! the entries. The server streams entries with the `put_*` helpers; the
//! client reads them back with [`crate::wire::read_reply`].

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::BytesMut;

use crate::field::{put_field, CodecError};
use crate::op::Outcome;
use crate::peer_ext::{to_hex, Digest};

/// One connected user in a LIST_USERS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    /// As the server sent it; an IP address for our server, text for others.
    pub ip: String,
    pub port: String,
}

/// One published file in a LIST_CONTENT reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentEntry {
    pub file: String,
    pub description: String,
}

/// One result of a SEARCH reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchEntry {
    pub owner: String,
    pub file: String,
    pub description: String,
    /// `None` when the entry was published without its size (classic PUBLISH).
    pub size: Option<u64>,
    /// `None` when the entry was published without its hash.
    pub hash: Option<Digest>,
    /// Whether the owner is connected now.
    pub connected: bool,
}

/// SEARCH with code 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchReply {
    /// Every match, also those beyond the limit.
    pub total: u64,
    /// The returned matches, connected owners first, then by owner and file.
    pub entries: Vec<SearchEntry>,
}

/// One peer of a FIND_SOURCES reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    pub user: String,
    /// As the server sent it.
    pub ip: String,
    pub port: String,
    /// The name under which this peer publishes the content.
    pub file: String,
}

/// FIND_SOURCES with code 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesReply {
    /// `None` when the entry has no known size.
    pub size: Option<u64>,
    /// `None` when the entry has no known hash (then the owner is the only
    /// source).
    pub hash: Option<Digest>,
    pub sources: Vec<SourceEntry>,
}

/// WHOIS with code 0: where a user is, or when it was last there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whois {
    /// Connected now, listening at this address (as the server sent it).
    Online { ip: String, port: String },
    /// Not connected; `last_seen` is the DATETIME (`DD/MM/YYYY HH:MM:SS`,
    /// UTC) of its last disconnect, `None` if it was never connected.
    Offline { last_seen: Option<String> },
}

/// The `STATE` field of a WHOIS reply for a connected user.
pub const WHOIS_ONLINE: &str = "online";
/// The `STATE` field of a WHOIS reply for a user not connected.
pub const WHOIS_OFFLINE: &str = "offline";
/// The `LAST_SEEN` field of a user never connected.
pub const WHOIS_NEVER: &str = "never";

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A reply without a body, or a non-zero code of any operation.
    Status(Outcome),
    /// LIST_USERS with code 0.
    Users(Vec<UserEntry>),
    /// LIST_CONTENT with code 0.
    Content(Vec<ContentEntry>),
    /// SEARCH with code 0.
    Search(SearchReply),
    /// FIND_SOURCES with code 0.
    Sources(SourcesReply),
    /// WHOIS with code 0.
    Whois(Whois),
}

impl Reply {
    pub fn outcome(&self) -> Outcome {
        match self {
            Reply::Status(outcome) => *outcome,
            Reply::Users(_)
            | Reply::Content(_)
            | Reply::Search(_)
            | Reply::Sources(_)
            | Reply::Whois(_) => Outcome::Ok,
        }
    }
}

/// Appends the body of a WHOIS reply after its code 0: `STATE`, then `IP`
/// and `PORT` or `LAST_SEEN`.
pub fn put_whois(dst: &mut BytesMut, whois: &Whois) -> Result<(), CodecError> {
    match whois {
        Whois::Online { ip, port } => {
            put_field(dst, WHOIS_ONLINE)?;
            put_field(dst, ip)?;
            put_field(dst, port)
        }
        Whois::Offline { last_seen } => {
            put_field(dst, WHOIS_OFFLINE)?;
            put_field(dst, last_seen.as_deref().unwrap_or(WHOIS_NEVER))
        }
    }
}

/// Appends a reply code.
pub fn put_code(dst: &mut BytesMut, code: u8) {
    put_decimal(dst, u64::from(code));
}

/// Appends the entry count of a listing.
pub fn put_count(dst: &mut BytesMut, count: u64) {
    put_decimal(dst, count);
}

/// Appends `n` in decimal as one field. Digits never contain NUL and are
/// far below the field length limit, so this cannot fail; formatting in
/// place saves the `String` every reply used to allocate.
fn put_decimal(dst: &mut BytesMut, n: u64) {
    // `BytesMut` grows on every write, so formatting into it cannot fail.
    let _ = write!(dst, "{n}");
    dst.extend_from_slice(&[0]);
}

/// Appends one LIST_USERS entry.
pub fn put_user_entry(
    dst: &mut BytesMut,
    name: &str,
    ip: IpAddr,
    port: u16,
) -> Result<(), CodecError> {
    put_field(dst, name)?;
    put_field(dst, &ip.to_string())?;
    put_field(dst, &port.to_string())
}

/// Appends one LIST_CONTENT entry.
pub fn put_content_entry(
    dst: &mut BytesMut,
    file: &str,
    description: &str,
) -> Result<(), CodecError> {
    put_field(dst, file)?;
    put_field(dst, description)
}

/// Appends a SIZE field: the decimal size, or empty when unknown.
pub fn put_size(dst: &mut BytesMut, size: Option<u64>) {
    // Digits only, at most 20 bytes: cannot fail.
    let _ = put_field(dst, &size.map(|s| s.to_string()).unwrap_or_default());
}

/// Appends a HASH field: 64 lower-case hex characters, or empty when unknown.
pub fn put_hash(dst: &mut BytesMut, hash: Option<&Digest>) {
    let _ = put_field(dst, &hash.map(to_hex).unwrap_or_default());
}

/// Appends one SEARCH result.
pub fn put_search_entry(dst: &mut BytesMut, entry: &SearchEntry) -> Result<(), CodecError> {
    put_field(dst, &entry.owner)?;
    put_field(dst, &entry.file)?;
    put_field(dst, &entry.description)?;
    put_size(dst, entry.size);
    put_hash(dst, entry.hash.as_ref());
    put_field(dst, if entry.connected { "1" } else { "0" })
}

/// Appends one FIND_SOURCES source.
pub fn put_source_entry(
    dst: &mut BytesMut,
    user: &str,
    ip: IpAddr,
    port: u16,
    file: &str,
) -> Result<(), CodecError> {
    put_user_entry(dst, user, ip, port)?;
    put_field(dst, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Formatting in place writes exactly what `to_string` would, each
        /// value as one NUL-terminated field.
        #[test]
        fn codes_and_counts_are_decimal_fields(code in any::<u8>(), n in any::<u64>()) {
            let mut out = BytesMut::new();
            put_code(&mut out, code);
            put_count(&mut out, n);
            let expected = format!("{code}\0{n}\0");
            prop_assert_eq!(&out[..], expected.as_bytes());
        }
    }

    #[test]
    fn edge_values() {
        for (n, text) in [
            (0, "0\0"),
            (9, "9\0"),
            (10, "10\0"),
            (u64::MAX, "18446744073709551615\0"),
        ] {
            let mut out = BytesMut::new();
            put_count(&mut out, n);
            assert_eq!(&out[..], text.as_bytes());
        }
    }
}
