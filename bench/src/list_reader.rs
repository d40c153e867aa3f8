//! An allocation-free reader for LIST_USERS / LIST_CONTENT replies.
//!
//! Why the benchmark does not use `wire::read_reply` for listings: it builds
//! a `Vec` of entries with three allocations per field (measured: ~5 ms of
//! client CPU for a 10,000-user LIST_USERS), so the load generator, not the
//! server, would set the LIST_USERS latency that target 3 bounds at 2 ms.
//! This reader scans fields in place and hands each entry to a visitor as
//! `&str`s. It follows the same rules as the protocol's codec (NUL-terminated
//! UTF-8 fields of at most `MAX_FIELD_LEN` bytes, codes from
//! `OpKind::outcome`), and its tests check it against `reply::put_*` and
//! `wire::read_reply`. `--protocol-reader` switches back to `read_reply`.

use peerdex_protocol::wire::ReplyError;
use peerdex_protocol::{OpKind, Outcome, MAX_FIELD_LEN};

/// Receives the entries of a listing, in order.
pub trait ListVisitor {
    /// One entry: `[name, ip, port]` for LIST_USERS, `[file, description]`
    /// for LIST_CONTENT.
    fn entry(&mut self, fields: &[&str]);
}

/// What feeding bytes told the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    NeedMore,
    /// The reply is complete; `consumed` bytes of the last chunk belonged to
    /// it. After a non-zero code the rest is not the scanner's business.
    Done {
        outcome: Outcome,
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    Count,
    Entries { remaining: u64 },
    Done(Outcome),
}

/// Sans-IO scanner of one listing reply; reusable through [`reset`].
///
/// [`reset`]: ListScanner::reset
#[derive(Debug)]
pub struct ListScanner {
    op: OpKind,
    arity: usize,
    state: State,
    /// A field split across chunks, so far.
    partial: Vec<u8>,
    /// The fields of the current entry, concatenated, and where each ends.
    entry: Vec<u8>,
    ends: [usize; 3],
    fields: usize,
}

impl ListScanner {
    pub fn new(op: OpKind) -> ListScanner {
        let mut scanner = ListScanner {
            op,
            arity: 0,
            state: State::Code,
            partial: Vec::with_capacity(MAX_FIELD_LEN + 1),
            entry: Vec::with_capacity(3 * (MAX_FIELD_LEN + 1)),
            ends: [0; 3],
            fields: 0,
        };
        scanner.reset(op);
        scanner
    }

    /// Prepares for a new reply to `op` (LIST_USERS or LIST_CONTENT; any
    /// other op is read as a bare code).
    pub fn reset(&mut self, op: OpKind) {
        self.op = op;
        self.arity = match op {
            OpKind::ListUsers => 3,
            OpKind::ListContent => 2,
            _ => 0,
        };
        self.state = State::Code;
        self.partial.clear();
        self.entry.clear();
        self.fields = 0;
    }

    /// Feeds the next chunk of the reply.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        visitor: &mut dyn ListVisitor,
    ) -> Result<Scan, ReplyError> {
        let mut start = 0;
        while let State::Code | State::Count | State::Entries { .. } = self.state {
            let Some(len) = chunk[start..].iter().position(|&b| b == 0) else {
                self.partial.extend_from_slice(&chunk[start..]);
                if self.partial.len() > MAX_FIELD_LEN {
                    return Err(ReplyError::Malformed("field longer than 255 bytes"));
                }
                return Ok(Scan::NeedMore);
            };
            let end = start + len;
            if self.partial.is_empty() {
                self.field(&chunk[start..end], visitor)?;
            } else {
                let mut field = std::mem::take(&mut self.partial);
                field.extend_from_slice(&chunk[start..end]);
                let result = self.field(&field, visitor);
                field.clear();
                self.partial = field;
                result?;
            }
            start = end + 1;
        }
        match self.state {
            State::Done(outcome) => Ok(Scan::Done {
                outcome,
                consumed: start,
            }),
            _ => Ok(Scan::NeedMore),
        }
    }

    fn field(&mut self, field: &[u8], visitor: &mut dyn ListVisitor) -> Result<(), ReplyError> {
        if field.len() > MAX_FIELD_LEN {
            return Err(ReplyError::Malformed("field longer than 255 bytes"));
        }
        match self.state {
            State::Code => {
                let text = text(field)?;
                let outcome = text
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .and_then(|code| self.op.outcome(code))
                    .ok_or_else(|| ReplyError::UnknownCode(text.to_string(), self.op))?;
                self.state = if outcome == Outcome::Ok && self.arity > 0 {
                    State::Count
                } else {
                    State::Done(outcome)
                };
            }
            State::Count => {
                let count: u64 = text(field)?
                    .trim()
                    .parse()
                    .map_err(|_| ReplyError::Malformed("count is not a number"))?;
                self.state = if count == 0 {
                    State::Done(Outcome::Ok)
                } else {
                    State::Entries { remaining: count }
                };
            }
            State::Entries { remaining } => {
                self.entry.extend_from_slice(field);
                self.ends[self.fields] = self.entry.len();
                self.fields += 1;
                if self.fields == self.arity {
                    self.visit(visitor)?;
                    self.entry.clear();
                    self.fields = 0;
                    self.state = if remaining == 1 {
                        State::Done(Outcome::Ok)
                    } else {
                        State::Entries {
                            remaining: remaining - 1,
                        }
                    };
                }
            }
            State::Done(_) => {}
        }
        Ok(())
    }

    fn visit(&self, visitor: &mut dyn ListVisitor) -> Result<(), ReplyError> {
        let mut fields = [""; 3];
        let mut begin = 0;
        for (i, slot) in fields.iter_mut().take(self.arity).enumerate() {
            *slot = text(&self.entry[begin..self.ends[i]])?;
            begin = self.ends[i];
        }
        visitor.entry(&fields[..self.arity]);
        Ok(())
    }
}

fn text(field: &[u8]) -> Result<&str, ReplyError> {
    std::str::from_utf8(field).map_err(|_| ReplyError::Malformed("field is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use bytes::BytesMut;
    use peerdex_protocol::reply::{put_code, put_content_entry, put_count, put_user_entry};
    use peerdex_protocol::wire::{field_reader, read_reply};
    use peerdex_protocol::Reply;

    use super::*;

    #[derive(Default)]
    struct Collect(Vec<Vec<String>>);

    impl ListVisitor for Collect {
        fn entry(&mut self, fields: &[&str]) {
            self.0.push(fields.iter().map(|f| f.to_string()).collect());
        }
    }

    /// Scans `bytes` in chunks of `size`; returns the outcome, the entries
    /// and how many bytes followed the reply.
    fn scan(
        op: OpKind,
        bytes: &[u8],
        size: usize,
    ) -> Result<(Outcome, Vec<Vec<String>>, usize), ReplyError> {
        let mut scanner = ListScanner::new(op);
        let mut seen = Collect::default();
        let mut offset = 0;
        for chunk in bytes.chunks(size) {
            if let Scan::Done { outcome, consumed } = scanner.feed(chunk, &mut seen)? {
                return Ok((outcome, seen.0, bytes.len() - offset - consumed));
            }
            offset += chunk.len();
        }
        Err(ReplyError::Closed)
    }

    fn protocol(op: OpKind, bytes: &[u8]) -> Result<Reply, ReplyError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(read_reply(&mut field_reader(bytes), op))
    }

    fn users(n: usize) -> BytesMut {
        let mut b = BytesMut::new();
        put_code(&mut b, 0);
        put_count(&mut b, n as u64);
        for i in 0..n {
            let ip = IpAddr::V4(Ipv4Addr::new(10, 0, (i / 256) as u8, (i % 256) as u8));
            put_user_entry(&mut b, &format!("user-{i}-ü"), ip, (1000 + i) as u16).unwrap();
        }
        b
    }

    #[test]
    fn agrees_with_read_reply_on_users_in_any_chunking() {
        let bytes = users(300);
        let Ok(Reply::Users(expected)) = protocol(OpKind::ListUsers, &bytes) else {
            panic!("read_reply rejected the reply");
        };
        let expected: Vec<Vec<String>> = expected
            .into_iter()
            .map(|u| vec![u.name, u.ip, u.port])
            .collect();
        for size in [1, 2, 3, 7, 64, 4096, bytes.len()] {
            let (outcome, seen, trailing) = scan(OpKind::ListUsers, &bytes, size).unwrap();
            assert_eq!(outcome, Outcome::Ok);
            assert_eq!(seen, expected, "chunk size {size}");
            assert_eq!(trailing, 0);
        }
    }

    #[test]
    fn agrees_with_read_reply_on_content() {
        let mut bytes = BytesMut::new();
        put_code(&mut bytes, 0);
        put_count(&mut bytes, 2);
        put_content_entry(&mut bytes, "a.txt", "a file with spaces").unwrap();
        put_content_entry(&mut bytes, "b", "").unwrap();
        let Ok(Reply::Content(expected)) = protocol(OpKind::ListContent, &bytes) else {
            panic!("read_reply rejected the reply");
        };
        let expected: Vec<Vec<String>> = expected
            .into_iter()
            .map(|c| vec![c.file, c.description])
            .collect();
        for size in [1, 5, bytes.len()] {
            let (outcome, seen, _) = scan(OpKind::ListContent, &bytes, size).unwrap();
            assert_eq!(outcome, Outcome::Ok);
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn empty_list_and_error_codes() {
        let mut empty = BytesMut::new();
        put_code(&mut empty, 0);
        put_count(&mut empty, 0);
        assert_eq!(scan(OpKind::ListUsers, &empty, 1).unwrap().0, Outcome::Ok);

        // A count after an error code is left unread, as read_reply does.
        let mut err = BytesMut::new();
        put_code(&mut err, 2);
        put_count(&mut err, 5);
        let (outcome, seen, trailing) = scan(OpKind::ListUsers, &err, 64).unwrap();
        assert_eq!(outcome, Outcome::UserNotConnected);
        assert!(seen.is_empty());
        assert_eq!(trailing, 2);
        assert_eq!(
            protocol(OpKind::ListUsers, &err).unwrap().outcome(),
            Outcome::UserNotConnected
        );
    }

    #[test]
    fn trailing_bytes_after_an_ok_reply_are_reported() {
        let mut bytes = users(2);
        bytes.extend_from_slice(b"junk\0");
        let (_, seen, trailing) = scan(OpKind::ListUsers, &bytes, 3).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(trailing, 5);
    }

    #[test]
    fn malformed_replies_are_errors_like_read_reply() {
        let cases: [&[u8]; 4] = [
            b"9\0",
            b"0\0x\0",
            b"0\x001\x00\xff\xfe\x001.2.3.4\x0080\x00",
            b"zero\0",
        ];
        for bytes in cases {
            assert!(scan(OpKind::ListUsers, bytes, 2).is_err(), "{bytes:?}");
            assert!(protocol(OpKind::ListUsers, bytes).is_err(), "{bytes:?}");
        }
        let mut long = b"0\x001\x00".to_vec();
        long.extend(vec![b'a'; 256]);
        long.extend(b"\x001.2.3.4\x0080\x00");
        assert!(scan(OpKind::ListUsers, &long, 10).is_err());
        assert!(scan(OpKind::ListUsers, &long, 1000).is_err());
        assert!(protocol(OpKind::ListUsers, &long).is_err());
    }

    #[test]
    fn truncated_reply_needs_more() {
        let bytes = users(3);
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(
            scan(OpKind::ListUsers, cut, 4),
            Err(ReplyError::Closed)
        ));
    }

    #[test]
    fn scanner_is_reusable() {
        let bytes = users(4);
        let mut scanner = ListScanner::new(OpKind::ListUsers);
        for _ in 0..3 {
            scanner.reset(OpKind::ListUsers);
            let mut seen = Collect::default();
            let scan = scanner.feed(&bytes, &mut seen).unwrap();
            assert_eq!(
                scan,
                Scan::Done {
                    outcome: Outcome::Ok,
                    consumed: bytes.len()
                }
            );
            assert_eq!(seen.0.len(), 4);
        }
    }
}
