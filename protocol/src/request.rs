//! Directory server requests: `OP`, `DATETIME`?, `USER`, then the op's fields.
//!
//! [`RequestParser`] is sans-IO: it is fed one [`Field`] at a time and says
//! when the request is complete, because how many fields a request has depends
//! on what the earlier ones were (optional DATETIME, the two CONNECT forms).
//! Malformed values are kept as [`Checked`] errors so that the server can
//! check reply codes in PROTOCOL.md's order.

use std::net::IpAddr;

use bytes::BytesMut;

use crate::datetime::is_datetime;
use crate::field::{put_field, Checked, CodecError, Field, Malformed};
use crate::op::OpKind;
use crate::peer_ext::{from_hex, to_hex, Digest};
use crate::secret::Secret;

/// Most SEARCH results a server returns, whatever LIMIT asks.
pub const MAX_SEARCH_LIMIT: u32 = 1000;

/// Where a CONNECTing client listens for peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAddr {
    /// `None` when the client sent an empty or unspecified IP, or only a port:
    /// the server records the TCP source address instead. Encoded, `None`
    /// is the port-only form.
    pub ip: Checked<Option<IpAddr>>,
    /// Listening port, 1..=65535.
    pub port: Checked<u16>,
}

/// An operation with its own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Register,
    Unregister,
    Connect(ConnectAddr),
    Disconnect,
    Publish {
        file: Checked<String>,
        description: Checked<String>,
    },
    Delete {
        file: Checked<String>,
    },
    ListUsers,
    ListContent {
        remote_user: Checked<String>,
    },
    /// Extension: PUBLISH plus the content's identity.
    PublishContent {
        file: Checked<String>,
        description: Checked<String>,
        /// Size in bytes (ASCII digits).
        size: Checked<u64>,
        /// BLAKE3 root (64 hex characters).
        hash: Checked<Digest>,
    },
    /// Extension: search file names across all users.
    Search {
        /// Substring with `*` / `?` wildcards, matched case-insensitively.
        pattern: Checked<String>,
        /// Results wanted, 1..; the server caps it at [`MAX_SEARCH_LIMIT`].
        limit: Checked<u32>,
    },
    /// Extension: every connected peer publishing identical content.
    FindSources {
        /// The content's root; `None` (empty field) means "the hash of
        /// REMOTE_USER's FILE".
        hash: Checked<Option<Digest>>,
        remote_user: Checked<String>,
        file: Checked<String>,
    },
    /// Extension: whether `target` is online (and where) or when it was
    /// last seen. Asks nothing of the requester.
    Whois {
        target: Checked<String>,
    },
    /// Extension, in an authenticated session only: the account's new
    /// password (not empty).
    SetPassword {
        password: Checked<Secret>,
    },
}

impl Operation {
    pub fn kind(&self) -> OpKind {
        match self {
            Operation::Register => OpKind::Register,
            Operation::Unregister => OpKind::Unregister,
            Operation::Connect(_) => OpKind::Connect,
            Operation::Disconnect => OpKind::Disconnect,
            Operation::Publish { .. } => OpKind::Publish,
            Operation::Delete { .. } => OpKind::Delete,
            Operation::ListUsers => OpKind::ListUsers,
            Operation::ListContent { .. } => OpKind::ListContent,
            Operation::PublishContent { .. } => OpKind::PublishContent,
            Operation::Search { .. } => OpKind::Search,
            Operation::FindSources { .. } => OpKind::FindSources,
            Operation::Whois { .. } => OpKind::Whois,
            Operation::SetPassword { .. } => OpKind::SetPassword,
        }
    }
}

/// A complete directory request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's DATETIME, when it sent one (older clients do not).
    pub datetime: Option<String>,
    /// The user the operation acts for.
    pub user: Checked<String>,
    pub operation: Operation,
}

impl Request {
    /// Encodes the request as one buffer, always with a DATETIME (use
    /// [`crate::datetime::now`] when there is no time service). Fails if a
    /// value is malformed or too long to send.
    pub fn encode(&self, datetime: &str) -> Result<BytesMut, CodecError> {
        fn value(field: &Checked<String>) -> Result<&str, CodecError> {
            field
                .as_deref()
                .map_err(|_| CodecError::EncodeTooLong(crate::MAX_FIELD_LEN + 1))
        }
        let mut dst = BytesMut::with_capacity(64);
        put_field(&mut dst, self.operation.kind().name())?;
        put_field(&mut dst, datetime)?;
        put_field(&mut dst, value(&self.user)?)?;
        match &self.operation {
            Operation::Register
            | Operation::Unregister
            | Operation::Disconnect
            | Operation::ListUsers => {}
            Operation::Connect(addr) => {
                let port = addr.port.map_err(|_| CodecError::EncodeTooLong(0))?;
                // No IP: the port-only form, which means the same to a
                // server of PROTOCOL.md (the source address is the IP) and
                // is the only one some deployed servers read.
                if let Ok(Some(ip)) = addr.ip {
                    put_field(&mut dst, &ip.to_string())?;
                }
                put_field(&mut dst, &port.to_string())?;
            }
            Operation::Publish { file, description } => {
                put_field(&mut dst, value(file)?)?;
                put_field(&mut dst, value(description)?)?;
            }
            Operation::Delete { file } => put_field(&mut dst, value(file)?)?,
            Operation::ListContent { remote_user } => put_field(&mut dst, value(remote_user)?)?,
            Operation::PublishContent {
                file,
                description,
                size,
                hash,
            } => {
                let bad = |_| CodecError::EncodeTooLong(0);
                put_field(&mut dst, value(file)?)?;
                put_field(&mut dst, value(description)?)?;
                put_field(&mut dst, &size.map_err(bad)?.to_string())?;
                put_field(&mut dst, &to_hex(&hash.map_err(bad)?))?;
            }
            Operation::Search { pattern, limit } => {
                put_field(&mut dst, value(pattern)?)?;
                let limit = limit.map_err(|_| CodecError::EncodeTooLong(0))?;
                put_field(&mut dst, &limit.to_string())?;
            }
            Operation::FindSources {
                hash,
                remote_user,
                file,
            } => {
                let hash = hash.map_err(|_| CodecError::EncodeTooLong(0))?;
                put_field(&mut dst, &hash.as_ref().map(to_hex).unwrap_or_default())?;
                put_field(&mut dst, value(remote_user)?)?;
                put_field(&mut dst, value(file)?)?;
            }
            Operation::Whois { target } => put_field(&mut dst, value(target)?)?,
            Operation::SetPassword { password } => {
                let password = password
                    .as_ref()
                    .map_err(|_| CodecError::EncodeTooLong(crate::MAX_FIELD_LEN + 1))?;
                put_field(&mut dst, password.expose())?
            }
        }
        Ok(dst)
    }
}

/// What had arrived of a request that could not be read to its end:
/// enough for the server to say whose operation it answered with FAIL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialRequest {
    /// The DATETIME, if one had arrived.
    pub datetime: Option<String>,
    /// The USER field, if it had arrived.
    pub user: Option<Checked<String>>,
    /// The FILE field of PUBLISH, PUBLISH_CONTENT or DELETE, if it had
    /// arrived.
    pub file: Option<Checked<String>>,
}

/// What feeding one more field told the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The request needs more fields.
    NeedMore,
    /// The request is complete.
    Done(Request),
    /// The op field named no operation: the server closes without a reply.
    UnknownOp(String),
}

/// Sans-IO request parser; feed it fields until it says [`Progress::Done`].
#[derive(Debug, Default)]
pub struct RequestParser {
    op: Option<OpKind>,
    datetime: Option<String>,
    user: Option<Checked<String>>,
    /// Fields after USER, as received.
    extras: Vec<Field>,
}

impl RequestParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The operation, once its field was read: what the server needs to
    /// answer the right catch-all code when the connection breaks.
    pub fn op(&self) -> Option<OpKind> {
        self.op
    }

    /// What arrived so far of a request that will not be completed.
    pub fn take_partial(&mut self) -> PartialRequest {
        let file = match self.op {
            Some(OpKind::Publish | OpKind::PublishContent | OpKind::Delete) => {
                self.extras.first().cloned().map(Field::into_text)
            }
            _ => None,
        };
        PartialRequest {
            datetime: self.datetime.take(),
            user: self.user.take(),
            file,
        }
    }

    /// Feeds the next field.
    pub fn feed(&mut self, field: Field) -> Progress {
        let Some(op) = self.op else {
            let name = match field {
                Field::Text(text) => text,
                Field::TooLong => return Progress::UnknownOp("<over-long op>".into()),
                Field::NotUtf8 => return Progress::UnknownOp("<non-UTF-8 op>".into()),
            };
            return match OpKind::from_wire(&name) {
                Some(op) => {
                    self.op = Some(op);
                    Progress::NeedMore
                }
                None => Progress::UnknownOp(name),
            };
        };
        if self.user.is_none() {
            match field {
                Field::Text(text) if self.datetime.is_none() && is_datetime(&text) => {
                    self.datetime = Some(text);
                    return Progress::NeedMore;
                }
                other => self.user = Some(other.into_text()),
            }
        } else {
            self.extras.push(field);
        }
        if self.is_complete(op) {
            Progress::Done(self.finish(op))
        } else {
            Progress::NeedMore
        }
    }

    fn is_complete(&self, op: OpKind) -> bool {
        let n = self.extras.len();
        match op {
            OpKind::Register | OpKind::Unregister | OpKind::Disconnect | OpKind::ListUsers => true,
            OpKind::Delete | OpKind::ListContent | OpKind::Whois | OpKind::SetPassword => n == 1,
            OpKind::Publish | OpKind::Search => n == 2,
            OpKind::FindSources => n == 3,
            OpKind::PublishContent => n == 4,
            OpKind::Connect => n == 2 || (n == 1 && is_port_only(&self.extras[0])),
        }
    }

    fn finish(&mut self, op: OpKind) -> Request {
        let port_only = self.extras.len() == 1;
        let mut extras = std::mem::take(&mut self.extras)
            .into_iter()
            .map(Field::into_text);
        let mut next = || {
            extras
                .next()
                .unwrap_or(Err(Malformed::Invalid("missing field")))
        };
        let operation = match op {
            OpKind::Register => Operation::Register,
            OpKind::Unregister => Operation::Unregister,
            OpKind::Disconnect => Operation::Disconnect,
            OpKind::ListUsers => Operation::ListUsers,
            OpKind::Delete => Operation::Delete { file: next() },
            OpKind::ListContent => Operation::ListContent {
                remote_user: next(),
            },
            OpKind::Publish => Operation::Publish {
                file: next(),
                description: next(),
            },
            OpKind::PublishContent => Operation::PublishContent {
                file: next(),
                description: next(),
                size: next().and_then(|s| parse_size(&s)),
                hash: next().and_then(|h| parse_hash(&h)),
            },
            OpKind::Search => Operation::Search {
                pattern: next(),
                limit: next().and_then(|l| parse_limit(&l)),
            },
            OpKind::FindSources => Operation::FindSources {
                hash: next().and_then(|h| {
                    if h.is_empty() {
                        Ok(None)
                    } else {
                        parse_hash(&h).map(Some)
                    }
                }),
                remote_user: next(),
                file: next(),
            },
            OpKind::Whois => Operation::Whois { target: next() },
            OpKind::SetPassword => Operation::SetPassword {
                password: next().map(Secret::new),
            },
            OpKind::Connect if port_only => Operation::Connect(ConnectAddr {
                ip: Ok(None),
                port: next().and_then(|p| parse_port(&p)),
            }),
            OpKind::Connect => Operation::Connect(ConnectAddr {
                ip: next().and_then(|ip| parse_ip(&ip)),
                port: next().and_then(|port| parse_port(&port)),
            }),
        };
        Request {
            datetime: self.datetime.take(),
            user: self
                .user
                .take()
                .unwrap_or(Err(Malformed::Invalid("missing user"))),
            operation,
        }
    }
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_port_only(field: &Field) -> bool {
    matches!(field, Field::Text(text) if is_digits(text))
}

/// Parses a PORT field: ASCII decimal 1..=65535.
pub fn parse_port(text: &str) -> Checked<u16> {
    if !is_digits(text) {
        return Err(Malformed::Invalid("port is not a decimal number"));
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(Malformed::Invalid("port out of range 1..65535")),
        Ok(port) => Ok(port),
    }
}

/// Parses a SIZE field: ASCII digits that fit a u64.
pub fn parse_size(text: &str) -> Checked<u64> {
    if !is_digits(text) {
        return Err(Malformed::Invalid("size is not a decimal number"));
    }
    text.parse()
        .map_err(|_| Malformed::Invalid("size out of range"))
}

/// Parses a HASH field: 64 hex characters (either case).
pub fn parse_hash(text: &str) -> Checked<Digest> {
    from_hex(text).ok_or(Malformed::Invalid("hash is not 64 hex characters"))
}

/// Parses a SEARCH LIMIT: ASCII digits, at least 1; larger values than
/// [`MAX_SEARCH_LIMIT`] are capped, not refused.
pub fn parse_limit(text: &str) -> Checked<u32> {
    if !is_digits(text) {
        return Err(Malformed::Invalid("limit is not a decimal number"));
    }
    match text.parse::<u64>() {
        Ok(0) => Err(Malformed::Invalid("limit must be at least 1")),
        Ok(n) => Ok(n.min(u64::from(MAX_SEARCH_LIMIT)) as u32),
        // Twenty-odd digits: still "as many as you allow".
        Err(_) => Ok(MAX_SEARCH_LIMIT),
    }
}

/// Parses an IP field; empty and unspecified addresses mean "use the source".
pub fn parse_ip(text: &str) -> Checked<Option<IpAddr>> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => Ok(None),
        Ok(ip) => Ok(Some(ip)),
        Err(_) => Err(Malformed::Invalid("not an IP address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_request_keeps_what_had_arrived() {
        let mut parser = RequestParser::new();
        for field in ["PUBLISH", "21/11/2026 09:05:07", "al", "f.txt"] {
            assert_eq!(parser.feed(Field::Text(field.into())), Progress::NeedMore);
        }
        assert_eq!(
            parser.take_partial(),
            PartialRequest {
                datetime: Some("21/11/2026 09:05:07".into()),
                user: Some(Ok("al".into())),
                file: Some(Ok("f.txt".into())),
            }
        );
        let mut parser = RequestParser::new();
        parser.feed(Field::Text("CONNECT".into()));
        parser.feed(Field::TooLong);
        assert_eq!(
            parser.take_partial(),
            PartialRequest {
                user: Some(Err(Malformed::TooLong)),
                ..PartialRequest::default()
            }
        );
    }

    fn parse(fields: &[&str]) -> Progress {
        let mut parser = RequestParser::new();
        let mut last = Progress::NeedMore;
        for field in fields {
            assert_eq!(last, Progress::NeedMore, "request ended before {field:?}");
            last = parser.feed(Field::Text(field.to_string()));
        }
        last
    }

    fn done(fields: &[&str]) -> Request {
        match parse(fields) {
            Progress::Done(request) => request,
            other => panic!("{fields:?} gave {other:?}"),
        }
    }

    #[test]
    fn register_with_and_without_datetime() {
        let with = done(&["REGISTER", "21/11/2026 09:05:07", "alice"]);
        assert_eq!(with.datetime.as_deref(), Some("21/11/2026 09:05:07"));
        assert_eq!(with.user, Ok("alice".into()));
        let without = done(&["REGISTER", "alice"]);
        assert_eq!(without.datetime, None);
        assert_eq!(without.user, Ok("alice".into()));
    }

    #[test]
    fn connect_forms() {
        let full = done(&["CONNECT", "21/11/2026 09:05:07", "bob", "127.0.0.2", "4000"]);
        assert_eq!(
            full.operation,
            Operation::Connect(ConnectAddr {
                ip: Ok(Some("127.0.0.2".parse().unwrap())),
                port: Ok(4000)
            })
        );
        let unspecified = done(&["CONNECT", "bob", "0.0.0.0", "4000"]);
        assert_eq!(
            unspecified.operation,
            Operation::Connect(ConnectAddr {
                ip: Ok(None),
                port: Ok(4000)
            })
        );
        let port_only = done(&["CONNECT", "bob", "4000"]);
        assert_eq!(
            port_only.operation,
            Operation::Connect(ConnectAddr {
                ip: Ok(None),
                port: Ok(4000)
            })
        );
        let bad_port = done(&["CONNECT", "bob", "::1", "70000"]);
        assert!(matches!(
            bad_port.operation,
            Operation::Connect(ConnectAddr { port: Err(_), .. })
        ));
        let zero = done(&["CONNECT", "bob", "::1", "0"]);
        assert!(matches!(
            zero.operation,
            Operation::Connect(ConnectAddr { port: Err(_), .. })
        ));
    }

    #[test]
    fn publish_keeps_description_spaces() {
        let request = done(&[
            "PUBLISH",
            "21/11/2026 09:05:07",
            "al",
            "f.txt",
            "a nice file",
        ]);
        assert_eq!(
            request.operation,
            Operation::Publish {
                file: Ok("f.txt".into()),
                description: Ok("a nice file".into())
            }
        );
    }

    #[test]
    fn unknown_op_is_reported_at_once() {
        assert_eq!(parse(&["FROB"]), Progress::UnknownOp("FROB".into()));
        assert_eq!(
            done(&[" LIST_USERS ", "al"]).operation,
            Operation::ListUsers
        );
    }

    #[test]
    fn malformed_later_field_keeps_user() {
        let mut parser = RequestParser::new();
        parser.feed(Field::Text("DELETE".into()));
        parser.feed(Field::Text("al".into()));
        let Progress::Done(request) = parser.feed(Field::TooLong) else {
            panic!()
        };
        assert_eq!(request.user, Ok("al".into()));
        assert_eq!(
            request.operation,
            Operation::Delete {
                file: Err(Malformed::TooLong)
            }
        );
    }

    #[test]
    fn extension_requests_parse() {
        let hash = "ab".repeat(32);
        let request = done(&[
            "PUBLISH_CONTENT",
            "01/01/2027 00:00:00",
            "al",
            "f",
            "d e",
            "42",
            &hash,
        ]);
        assert_eq!(
            request.operation,
            Operation::PublishContent {
                file: Ok("f".into()),
                description: Ok("d e".into()),
                size: Ok(42),
                hash: Ok([0xab; 32]),
            }
        );
        let bad = done(&["PUBLISH_CONTENT", "al", "f", "d", "-1", "xyz"]);
        assert!(matches!(
            bad.operation,
            Operation::PublishContent {
                size: Err(_),
                hash: Err(_),
                ..
            }
        ));
        let search = done(&["SEARCH", "al", "so*ng", "5000"]);
        assert_eq!(
            search.operation,
            Operation::Search {
                pattern: Ok("so*ng".into()),
                limit: Ok(MAX_SEARCH_LIMIT)
            }
        );
        assert!(matches!(
            done(&["SEARCH", "al", "x", "0"]).operation,
            Operation::Search { limit: Err(_), .. }
        ));
        let by_name = done(&["FIND_SOURCES", "al", "", "bo", "f"]);
        assert_eq!(
            by_name.operation,
            Operation::FindSources {
                hash: Ok(None),
                remote_user: Ok("bo".into()),
                file: Ok("f".into())
            }
        );
        let by_hash = done(&["FIND_SOURCES", "al", &hash.to_uppercase(), "", ""]);
        assert!(
            matches!(by_hash.operation, Operation::FindSources { hash: Ok(Some(h)), .. } if h == [0xab; 32])
        );
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let request = Request {
            datetime: Some("01/01/2027 00:00:00".into()),
            user: Ok("carol".into()),
            operation: Operation::ListContent {
                remote_user: Ok("dave".into()),
            },
        };
        let bytes = request.encode("01/01/2027 00:00:00").unwrap();
        let fields: Vec<&str> = std::str::from_utf8(&bytes)
            .unwrap()
            .trim_end_matches('\0')
            .split('\0')
            .collect();
        assert_eq!(done(&fields), request);
    }

    fn round_trip(request: Request) {
        let bytes = request.encode("01/01/2027 00:00:00").unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let fields: Vec<&str> = text[..text.len() - 1].split('\0').collect();
        assert_eq!(done(&fields), request);
    }

    proptest::proptest! {
        #[test]
        fn extension_ops_round_trip(
            file in "[a-zA-Z0-9._-]{1,40}",
            description in "[a-z ]{0,40}",
            size in proptest::prelude::any::<u64>(),
            hash in proptest::prelude::any::<[u8; 32]>(),
            pattern in "[a-z*?.]{1,30}",
            limit in 1u32..=MAX_SEARCH_LIMIT,
            by_hash in proptest::prelude::any::<bool>(),
        ) {
            let datetime = Some("01/01/2027 00:00:00".to_string());
            let user = Ok("carol".to_string());
            round_trip(Request { datetime: datetime.clone(), user: user.clone(), operation: Operation::PublishContent {
                file: Ok(file.clone()), description: Ok(description), size: Ok(size), hash: Ok(hash) } });
            round_trip(Request { datetime: datetime.clone(), user: user.clone(), operation: Operation::Search {
                pattern: Ok(pattern), limit: Ok(limit) } });
            let (hash, remote) = if by_hash { (Some(hash), "") } else { (None, "dave") };
            round_trip(Request { datetime, user, operation: Operation::FindSources {
                hash: Ok(hash), remote_user: Ok(remote.to_string()), file: Ok(if by_hash { String::new() } else { file }) } });
        }
    }
}
