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

/// Where a CONNECTing client listens for peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAddr {
    /// `None` when the client sent an empty or unspecified IP, or only a port:
    /// the server records the TCP source address instead.
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
                let ip = match addr.ip {
                    Ok(Some(ip)) => ip.to_string(),
                    _ => "0.0.0.0".to_string(),
                };
                let port = addr.port.map_err(|_| CodecError::EncodeTooLong(0))?;
                put_field(&mut dst, &ip)?;
                put_field(&mut dst, &port.to_string())?;
            }
            Operation::Publish { file, description } => {
                put_field(&mut dst, value(file)?)?;
                put_field(&mut dst, value(description)?)?;
            }
            Operation::Delete { file } => put_field(&mut dst, value(file)?)?,
            Operation::ListContent { remote_user } => put_field(&mut dst, value(remote_user)?)?,
        }
        Ok(dst)
    }
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
            OpKind::Delete | OpKind::ListContent => n == 1,
            OpKind::Publish => n == 2,
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
}
