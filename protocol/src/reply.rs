//! Directory server replies: a code, then for `LIST_*` on code 0 a count and
//! the entries. The server streams entries with the `put_*` helpers; the
//! client reads them back with [`crate::wire::read_reply`].

use std::net::IpAddr;

use bytes::BytesMut;

use crate::field::{put_field, CodecError};
use crate::op::Outcome;

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

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A reply without a body, or a non-zero code of any operation.
    Status(Outcome),
    /// LIST_USERS with code 0.
    Users(Vec<UserEntry>),
    /// LIST_CONTENT with code 0.
    Content(Vec<ContentEntry>),
}

impl Reply {
    pub fn outcome(&self) -> Outcome {
        match self {
            Reply::Status(outcome) => *outcome,
            Reply::Users(_) | Reply::Content(_) => Outcome::Ok,
        }
    }
}

/// Appends a reply code.
pub fn put_code(dst: &mut BytesMut, code: u8) {
    // A decimal u8 is at most 3 bytes: cannot fail.
    let _ = put_field(dst, &code.to_string());
}

/// Appends the entry count of a listing.
pub fn put_count(dst: &mut BytesMut, count: u64) {
    let _ = put_field(dst, &count.to_string());
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
