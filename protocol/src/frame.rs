//! Session frames: the wire units of a persistent, authenticated connection
//! between a peerdex client and a peerdex directory.
//!
//! A session carries many operations over one connection, several in flight
//! at once, so it needs what the classic protocol does without: a boundary
//! around each message (a length), a way to pair a reply with its request
//! (an id) and messages that belong to no operation (heartbeats, server
//! pushes, close). The operations themselves are not re-encoded: a request
//! frame carries the bytes of [`Request::encode`] and a reply frame the bytes
//! of a classic reply, so there is one codec for an op's fields, the same
//! codes and the same durability rule (code 0 means durable) as over a
//! classic connection.
//!
//! # Opening: telling a session from a classic request and from TLS
//!
//! Sessions share the directory's port with classic clients. A session
//! client's first bytes are the 8-byte [`PREFACE`]:
//!
//! | byte | value | why |
//! |---|---|---|
//! | 0 | `0xFF` | never in UTF-8, so never the first byte of a classic op field (ASCII letters and blanks); not `0x16`, a TLS ClientHello's first byte |
//! | 1..=4 | `PDXS` | "peerdex session": a readable marker in captures |
//! | 5..=6 | `/1` | the frame format's version |
//! | 7 | `0x00` | ends the "op field" for a classic server that receives it by mistake: it reads a complete, unknown op and closes at once instead of waiting for a NUL |
//!
//! [`classify`] decides from the first bytes: the exact preface is a
//! session, a first byte `0x16` is TLS, and everything else is classic and
//! handed to the classic parser with the bytes already read, so no classic
//! client is affected. It answers [`Opening::NeedMore`] only while the bytes
//! are a strict prefix of the preface: a classic request (whose first byte
//! is never `0xFF`) is decided on its first byte and never waits for bytes
//! its client will not send. A newer format gets a new version in the
//! preface; a server that does not know it takes it for a classic request
//! with an unknown op and closes, which tells the client to fall back.
//!
//! # Frames
//!
//! After the preface both directions carry frames:
//!
//! | field | size | meaning |
//! |---|---|---|
//! | `len` | u32 big-endian | bytes that follow: `kind` + `id` + body, so `5..=`[`MAX_FRAME_LEN`] |
//! | `kind` | u8 | what the frame is (table below) |
//! | `id` | u32 big-endian | the request id; 0 for frames outside a request |
//! | body | `len - 5` bytes | depends on the kind, at most [`MAX_BODY_LEN`] |
//!
//! A receiver rejects a `len` above [`MAX_FRAME_LEN`] or below 5 as soon as
//! the 4 length bytes arrived, before buffering the frame, and closes the
//! connection: after a bad length the stream cannot be resynchronised.
//!
//! | kind | name | direction | id | body |
//! |---|---|---|---|---|
//! | 1 | `Login` | client → server | 0 | fields `USER`, `PASSWORD`, `CLIENT_VERSION` |
//! | 2 | `LoginReply` | server → client | 0 | field `CODE`: 0 OK · 1 REFUSED · 2 FAIL |
//! | 3 | `Request` | client → server | ≠ 0 | the classic request: `OP`, `DATETIME`, `USER`, the op's fields |
//! | 4 | `Reply` | server → client | ≠ 0 | the last (or only) part of the classic reply |
//! | 5 | `ReplyPart` | server → client | ≠ 0 | a part of the classic reply; more parts follow |
//! | 6 | `Ping` | either | any (nonce) | empty |
//! | 7 | `Pong` | either | the ping's | empty |
//! | 8 | `Event` | server → client | 0 | fields `NAME`, then the event's text fields |
//! | 9 | `Close` | either | 0 | field `REASON` (may be empty) |
//!
//! "Fields" are the classic ones ([`crate::field`]): UTF-8, at most 255
//! bytes, each terminated by NUL, nothing after the last one. Numbers are
//! ASCII decimal. Using the classic field rule for session bodies keeps one
//! definition of a field and lets a password contain anything but NUL.
//!
//! # A session, step by step
//!
//! - The client sends [`PREFACE`] and a `Login`; it sends nothing else but
//!   `Ping` until the `LoginReply`. The server answers `LoginReply`; on a
//!   non-zero code it then sends `Close` and closes. `REFUSED` is a wrong
//!   password for an account that has one; a name without an account (or
//!   an account without a password) logs in, since the classic codes tell
//!   every client which names exist anyway (docs/PROTOCOL-EXTENSIONS.md,
//!   "Login"). `FAIL` is the catch-all (malformed login, storage failure).
//!   One login per session: a second `Login` is a protocol error.
//! - Each `Request` carries an id the client chose, unique among its
//!   requests in flight. Its `USER` is the logged-in user; a request for
//!   another user is answered with the op's catch-all code. The server
//!   answers each request with zero or more `ReplyPart`s and one `Reply`,
//!   all with the request's id; concatenated, their bodies are exactly the
//!   classic reply ([`crate::wire::read_reply`] reads them). Replies come in
//!   the order the operations complete, and parts of different replies may
//!   interleave, so a long listing never holds back a short answer. A
//!   sender may cut a reply anywhere ([`reply_frames`] cuts at
//!   [`MAX_BODY_LEN`]); a receiver concatenates.
//! - A request whose `OP` is unknown is answered like the classic one: no
//!   reply; the server sends `Close` and closes.
//! - Heartbeats: each side sends a `Ping` after [`HEARTBEAT_INTERVAL`]
//!   without sending anything; the other answers `Pong` with the same id at
//!   once. A side that receives nothing at all for [`HEARTBEAT_TIMEOUT`]
//!   considers the peer dead and closes.
//! - Events are server pushes, for instance `DISCONNECTED` with the reason
//!   `connected elsewhere`. A client ignores an event name it does not know:
//!   events inform, they never ask for an answer.
//! - `Close` ends the session: its sender sends nothing after it and closes
//!   once it is written. A frame that decodes to a [`BadFrame`] (unknown
//!   kind, malformed body, wrong id) is answered with `Close` naming the
//!   problem.
//!
//! [`FrameCodec`] is hostile-input code, like [`crate::field::FieldCodec`]:
//! it checks a length before anything else, never reserves memory because a
//! peer announced a length (the buffer grows only with bytes that arrived),
//! and reports malformed frames as values the receiver can answer.

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

use crate::field::{put_field, CodecError, Field, FieldCodec};
use crate::op::OpKind;
use crate::request::{Progress, Request, RequestParser};
use crate::secret::Secret;

/// The first bytes a session client sends (see the module doc for why each
/// byte is what it is).
pub const PREFACE: [u8; 8] = *b"\xFFPDXS/1\0";

/// First byte of a TLS record carrying a handshake (the ClientHello).
pub const TLS_HANDSHAKE: u8 = 0x16;

/// Size of the length prefix.
pub const LEN_SIZE: usize = 4;

/// Size of `kind` + `id`: the smallest valid length.
pub const HEADER_LEN: usize = 5;

/// Largest valid length (`kind` + `id` + body). Bodies are classic requests
/// and replies of bounded fields, or parts of a listing, so 64 KiB is ample
/// and bounds what one frame can make a receiver buffer.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Largest body of one frame.
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;

/// Silence after which a side sends a `Ping`.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Silence from the peer after which a side gives the session up: three
/// missed heartbeats. A dead client whose kernel did not close its
/// connection (a machine gone, a cable pulled) is noticed within this.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);

/// The `Event` a server sends to a session whose user it disconnected;
/// its one field is the reason ([`REASON_CONNECTED_ELSEWHERE`], ...).
pub const EVENT_DISCONNECTED: &str = "DISCONNECTED";

/// The `Event` a server sends to a session whose authority ended (its
/// account's password changed or the account was removed elsewhere); a
/// `Close` follows. Its one field is the reason.
pub const EVENT_LOGGED_OUT: &str = "LOGGED_OUT";

/// Reason of a `DISCONNECTED`: another session of the account connected.
pub const REASON_CONNECTED_ELSEWHERE: &str = "connected elsewhere";
/// Reason of a `LOGGED_OUT`: the account's password was changed.
pub const REASON_PASSWORD_CHANGED: &str = "password changed";
/// Reason of a `LOGGED_OUT`: the account was unregistered.
pub const REASON_UNREGISTERED: &str = "account removed";

/// What a connection's first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A classic request: hand every byte read so far to the classic parser.
    Classic,
    /// A session: the [`PREFACE`] is consumed, frames follow.
    Session,
    /// A TLS ClientHello: hand every byte read so far to the TLS acceptor.
    Tls,
    /// A strict prefix of the preface: read more before deciding.
    NeedMore,
}

/// Decides what a connection is from its first bytes (at most
/// [`PREFACE`]`.len()` of them matter). Anything that is not exactly the
/// preface or a TLS record is classic, so that no classic client is ever
/// refused; `NeedMore` only while `first` is a strict prefix of the preface.
pub fn classify(first: &[u8]) -> Opening {
    if first.first() == Some(&TLS_HANDSHAKE) {
        return Opening::Tls;
    }
    let seen = &first[..first.len().min(PREFACE.len())];
    if seen != &PREFACE[..seen.len()] {
        Opening::Classic
    } else if seen.len() == PREFACE.len() {
        Opening::Session
    } else {
        Opening::NeedMore
    }
}

/// The `kind` byte of each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Login = 1,
    LoginReply = 2,
    Request = 3,
    Reply = 4,
    ReplyPart = 5,
    Ping = 6,
    Pong = 7,
    Event = 8,
    Close = 9,
}

impl Kind {
    /// Every kind, for tests and tables.
    pub const ALL: [Kind; 9] = [
        Kind::Login,
        Kind::LoginReply,
        Kind::Request,
        Kind::Reply,
        Kind::ReplyPart,
        Kind::Ping,
        Kind::Pong,
        Kind::Event,
        Kind::Close,
    ];

    /// The kind of a `kind` byte; `None` for a byte no kind uses.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }
}

/// The id of a request in flight: never 0, which marks frames outside a
/// request.
pub type RequestId = NonZeroU32;

/// The body of a `Login` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user the session acts for.
    pub user: String,
    /// Checked by the server; any text without NUL, at most 255 bytes;
    /// empty for an account without a password.
    pub password: Secret,
    /// The client program and version (`peerdex/0.3.0`), so that the server
    /// can log it and avoid sending what an older client cannot read.
    pub client_version: String,
}

/// The code of a `LoginReply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCode {
    /// Logged in: requests may follow.
    Ok = 0,
    /// A wrong password for a protected account.
    Refused = 1,
    /// Anything else: malformed login, storage failure.
    Fail = 2,
}

impl LoginCode {
    /// The code as sent.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The login code of a code field's value; `None` for an undefined code.
    pub fn from_code(code: u8) -> Option<LoginCode> {
        match code {
            0 => Some(LoginCode::Ok),
            1 => Some(LoginCode::Refused),
            2 => Some(LoginCode::Fail),
            _ => None,
        }
    }
}

/// The body of an `Event` frame: a server push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened (`DISCONNECTED`); unknown names are ignored by clients.
    pub name: String,
    /// The event's text fields (for `DISCONNECTED`, the reason).
    pub fields: Vec<String>,
}

/// One session frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Login(Login),
    LoginReply(LoginCode),
    /// A classic request, as [`Request::encode`] writes it.
    Request {
        id: RequestId,
        body: Bytes,
    },
    /// A part of the classic reply to request `id`; `more` is true for a
    /// `ReplyPart` (more parts follow) and false for the final `Reply`.
    Reply {
        id: RequestId,
        more: bool,
        body: Bytes,
    },
    /// A heartbeat; the id is a nonce that the `Pong` echoes.
    Ping(u32),
    Pong(u32),
    Event(Event),
    /// The end of the session, with the reason.
    Close(String),
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Login(_) => Kind::Login,
            Frame::LoginReply(_) => Kind::LoginReply,
            Frame::Request { .. } => Kind::Request,
            Frame::Reply { more: false, .. } => Kind::Reply,
            Frame::Reply { more: true, .. } => Kind::ReplyPart,
            Frame::Ping(_) => Kind::Ping,
            Frame::Pong(_) => Kind::Pong,
            Frame::Event(_) => Kind::Event,
            Frame::Close(_) => Kind::Close,
        }
    }

    /// The `id` written on the wire.
    pub fn id(&self) -> u32 {
        match self {
            Frame::Request { id, .. } | Frame::Reply { id, .. } => id.get(),
            Frame::Ping(nonce) | Frame::Pong(nonce) => *nonce,
            Frame::Login(_) | Frame::LoginReply(_) | Frame::Event(_) | Frame::Close(_) => 0,
        }
    }

    /// A `Request` frame for `request`, encoded by the classic codec.
    pub fn request(id: RequestId, request: &Request, datetime: &str) -> Result<Frame, FrameError> {
        let body = request.encode(datetime)?.freeze();
        if body.len() > MAX_BODY_LEN {
            return Err(FrameError::BodyTooLong(body.len()));
        }
        Ok(Frame::Request { id, body })
    }

    /// Builds the frame from a decoded header and body, or says why the
    /// frame is malformed.
    fn from_parts(kind: u8, id: u32, body: Bytes) -> Result<Frame, BadFrame> {
        let bad = |problem| BadFrame { kind, id, problem };
        let kind = Kind::from_byte(kind).ok_or(bad(Problem::UnknownKind))?;
        let request_id = || NonZeroU32::new(id).ok_or(bad(Problem::Id));
        let no_id = || {
            if id == 0 {
                Ok(())
            } else {
                Err(bad(Problem::Id))
            }
        };
        let empty = || {
            if body.is_empty() {
                Ok(())
            } else {
                Err(bad(Problem::Body("a heartbeat has no body")))
            }
        };
        let fields = || body_fields(&body).map_err(|why| bad(Problem::Body(why)));
        Ok(match kind {
            Kind::Login => {
                no_id()?;
                let [user, password, client_version] = <[String; 3]>::try_from(fields()?)
                    .map_err(|_| bad(Problem::Body("a login has three fields")))?;
                Frame::Login(Login {
                    user,
                    password: Secret::new(password),
                    client_version,
                })
            }
            Kind::LoginReply => {
                no_id()?;
                let [code] = <[String; 1]>::try_from(fields()?)
                    .map_err(|_| bad(Problem::Body("a login reply has one field")))?;
                let code = parse_code(&code)
                    .and_then(LoginCode::from_code)
                    .ok_or(bad(Problem::Body("undefined login code")))?;
                Frame::LoginReply(code)
            }
            Kind::Request => Frame::Request {
                id: request_id()?,
                body,
            },
            Kind::Reply | Kind::ReplyPart => Frame::Reply {
                id: request_id()?,
                more: kind == Kind::ReplyPart,
                body,
            },
            Kind::Ping => {
                empty()?;
                Frame::Ping(id)
            }
            Kind::Pong => {
                empty()?;
                Frame::Pong(id)
            }
            Kind::Event => {
                no_id()?;
                let mut fields = fields()?.into_iter();
                let name = fields
                    .next()
                    .filter(|name| !name.is_empty())
                    .ok_or(bad(Problem::Body("an event starts with its name")))?;
                Frame::Event(Event {
                    name,
                    fields: fields.collect(),
                })
            }
            Kind::Close => {
                no_id()?;
                let [reason] = <[String; 1]>::try_from(fields()?)
                    .map_err(|_| bad(Problem::Body("a close has one field")))?;
                Frame::Close(reason)
            }
        })
    }
}

/// A code field: ASCII digits only, as the classic replies send them.
fn parse_code(text: &str) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Splits a body into classic fields, refusing anything the field codec
/// would not produce from a well-formed message.
fn body_fields(body: &[u8]) -> Result<Vec<String>, &'static str> {
    let mut codec = FieldCodec::new();
    let mut src = BytesMut::from(body);
    let mut fields = Vec::new();
    loop {
        match codec.decode_eof(&mut src) {
            Ok(Some(Field::Text(text))) => fields.push(text),
            Ok(Some(Field::TooLong)) => return Err("field longer than 255 bytes"),
            Ok(Some(Field::NotUtf8)) => return Err("field is not UTF-8"),
            Ok(None) => return Ok(fields),
            Err(_) => return Err("body does not end with a NUL"),
        }
    }
}

/// A frame whose length was valid but whose content is not: the stream is
/// still in sync, and the receiver answers it (with `Close`, see the module
/// doc) instead of failing on it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad frame (kind {kind}, id {id}): {problem}")]
pub struct BadFrame {
    /// The `kind` byte as received.
    pub kind: u8,
    /// The `id` as received, so that an answer can name the request.
    pub id: u32,
    pub problem: Problem,
}

/// What is wrong with a [`BadFrame`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("unknown frame kind")]
    UnknownKind,
    #[error("id not allowed for this kind (0 outside a request, non-zero for a request)")]
    Id,
    #[error("malformed body: {0}")]
    Body(&'static str),
}

/// Errors of the frame codec. A decoding error means the stream cannot be
/// trusted any further: the receiver closes the connection.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("frame length {0} is above the maximum of {MAX_FRAME_LEN}")]
    TooLong(u32),
    #[error("frame length {0} is below the header size of {HEADER_LEN}")]
    TooShort(u32),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error("frame body of {0} bytes is longer than {MAX_BODY_LEN}")]
    BodyTooLong(usize),
    #[error("an event needs a name")]
    UnnamedEvent,
    #[error(transparent)]
    Field(#[from] CodecError),
}

/// tokio-util codec for session frames (after the [`PREFACE`], which the
/// caller reads with [`classify`]). Stateless: a frame is decoded only when
/// all its bytes arrived.
#[derive(Debug, Default)]
pub struct FrameCodec;

impl FrameCodec {
    pub fn new() -> Self {
        Self
    }
}

impl Decoder for FrameCodec {
    /// A frame, or a malformed one the receiver can answer.
    type Item = Result<Frame, BadFrame>;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        let Some(&[a, b, c, d]) = src.get(..LEN_SIZE) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        // Checked before anything is buffered or reserved for the frame.
        if len as usize > MAX_FRAME_LEN {
            return Err(FrameError::TooLong(len));
        }
        if (len as usize) < HEADER_LEN {
            return Err(FrameError::TooShort(len));
        }
        if src.len() < LEN_SIZE + len as usize {
            // No `reserve`: the buffer grows only with bytes that arrived.
            return Ok(None);
        }
        src.advance(LEN_SIZE);
        let kind = src.get_u8();
        let id = src.get_u32();
        let body = src.split_to(len as usize - HEADER_LEN).freeze();
        Ok(Some(Frame::from_parts(kind, id, body)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated(src.len())),
        }
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let mut fields = BytesMut::new();
        let body: &[u8] = match frame {
            Frame::Request { body, .. } | Frame::Reply { body, .. } => body,
            Frame::Ping(_) | Frame::Pong(_) => &[],
            Frame::Login(login) => {
                put_field(&mut fields, &login.user)?;
                put_field(&mut fields, login.password.expose())?;
                put_field(&mut fields, &login.client_version)?;
                &fields
            }
            Frame::LoginReply(code) => {
                put_field(&mut fields, &code.code().to_string())?;
                &fields
            }
            Frame::Event(event) => {
                if event.name.is_empty() {
                    return Err(FrameError::UnnamedEvent);
                }
                put_field(&mut fields, &event.name)?;
                for field in &event.fields {
                    put_field(&mut fields, field)?;
                }
                &fields
            }
            Frame::Close(reason) => {
                put_field(&mut fields, reason)?;
                &fields
            }
        };
        if body.len() > MAX_BODY_LEN {
            return Err(FrameError::BodyTooLong(body.len()));
        }
        dst.reserve(LEN_SIZE + HEADER_LEN + body.len());
        // At most MAX_FRAME_LEN, checked above: fits a u32.
        dst.put_u32((HEADER_LEN + body.len()) as u32);
        dst.put_u8(frame.kind() as u8);
        dst.put_u32(frame.id());
        dst.put_slice(body);
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&frame, dst)
    }
}

/// Cuts a classic reply into frames of at most [`MAX_BODY_LEN`] bytes of
/// body: `ReplyPart`s, then one final `Reply` (which is empty only when the
/// whole reply is). Lets a large listing stream without one huge frame.
pub fn reply_frames(id: RequestId, reply: Bytes) -> impl Iterator<Item = Frame> {
    let parts = reply.len().div_ceil(MAX_BODY_LEN).max(1);
    (0..parts).map(move |i| {
        let start = i * MAX_BODY_LEN;
        let end = (start + MAX_BODY_LEN).min(reply.len());
        Frame::Reply {
            id,
            more: i + 1 < parts,
            body: reply.slice(start..end),
        }
    })
}

/// Why a `Request` frame's body is not a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestBodyError {
    /// The op field named no operation: answered like a classic unknown op.
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    /// The body ended before the request was complete; the op, if it
    /// arrived, says which catch-all code answers it.
    #[error("request body ended before the request was complete")]
    Incomplete { op: Option<OpKind> },
    /// Bytes after a complete request.
    #[error("{extra} bytes after the end of the {op} request")]
    Trailing { op: OpKind, extra: usize },
}

/// Parses a `Request` frame's body with the classic parser: exactly one
/// request, nothing after it.
pub fn parse_request_body(body: &[u8]) -> Result<Request, RequestBodyError> {
    let mut codec = FieldCodec::new();
    let mut parser = RequestParser::new();
    let mut src = BytesMut::from(body);
    loop {
        let field = match codec.decode_eof(&mut src) {
            Ok(Some(field)) => field,
            Ok(None) | Err(_) => return Err(RequestBodyError::Incomplete { op: parser.op() }),
        };
        match parser.feed(field) {
            Progress::NeedMore => {}
            Progress::UnknownOp(name) => return Err(RequestBodyError::UnknownOp(name)),
            Progress::Done(request) if src.is_empty() => return Ok(request),
            Progress::Done(request) => {
                return Err(RequestBodyError::Trailing {
                    op: request.operation.kind(),
                    extra: src.len(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Operation;

    fn id(n: u32) -> RequestId {
        NonZeroU32::new(n).expect("test ids are non-zero")
    }

    fn encode(frame: &Frame) -> BytesMut {
        let mut dst = BytesMut::new();
        FrameCodec.encode(frame, &mut dst).expect("encodable");
        dst
    }

    fn decode(bytes: &[u8]) -> Result<Option<Result<Frame, BadFrame>>, FrameError> {
        FrameCodec.decode_eof(&mut BytesMut::from(bytes))
    }

    /// A frame's bytes with the given kind, id and body, whatever they are.
    fn raw(kind: u8, id: u32, body: &[u8]) -> Vec<u8> {
        let len = (HEADER_LEN + body.len()) as u32;
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.push(kind);
        bytes.extend(id.to_be_bytes());
        bytes.extend(body);
        bytes
    }

    #[test]
    fn the_preface_is_decided_byte_by_byte() {
        for n in 0..PREFACE.len() {
            assert_eq!(classify(&PREFACE[..n]), Opening::NeedMore, "{n} bytes");
        }
        assert_eq!(classify(&PREFACE), Opening::Session);
        let mut more = PREFACE.to_vec();
        more.extend(raw(6, 0, b""));
        assert_eq!(classify(&more), Opening::Session);
        assert_eq!(classify(b"\xFFPDXS/2\0"), Opening::Classic);
        assert_eq!(classify(b"\xFFP"), Opening::NeedMore);
        assert_eq!(classify(b"\xFFQ"), Opening::Classic);
    }

    #[test]
    fn classic_and_tls_are_decided_on_the_first_byte() {
        assert_eq!(classify(b"R"), Opening::Classic);
        assert_eq!(classify(b" LIST_USERS\0"), Opening::Classic);
        assert_eq!(classify(b"\0"), Opening::Classic);
        assert_eq!(classify(&[0x16]), Opening::Tls);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Opening::Tls);
    }

    #[test]
    fn each_kind_round_trips() {
        let frames = [
            Frame::Login(Login {
                user: "alice".into(),
                password: Secret::new("pa ss wörd"),
                client_version: "peerdex/0.3.0".into(),
            }),
            Frame::LoginReply(LoginCode::Ok),
            Frame::LoginReply(LoginCode::Refused),
            Frame::LoginReply(LoginCode::Fail),
            Frame::Request {
                id: id(7),
                body: Bytes::from_static(b"LIST_USERS\0d\0alice\0"),
            },
            Frame::Reply {
                id: id(7),
                more: true,
                body: Bytes::from_static(b"0\0"),
            },
            Frame::Reply {
                id: id(u32::MAX),
                more: false,
                body: Bytes::new(),
            },
            Frame::Ping(0),
            Frame::Pong(42),
            Frame::Event(Event {
                name: "DISCONNECTED".into(),
                fields: vec!["connected elsewhere".into()],
            }),
            Frame::Event(Event {
                name: "X".into(),
                fields: vec![],
            }),
            Frame::Close(String::new()),
        ];
        for frame in frames {
            let bytes = encode(&frame);
            assert_eq!(bytes[LEN_SIZE], frame.kind() as u8);
            assert_eq!(decode(&bytes).unwrap(), Some(Ok(frame)));
        }
    }

    #[test]
    fn exact_maximum_is_accepted_one_more_is_rejected() {
        let body = vec![b'x'; MAX_BODY_LEN];
        let frame = Frame::Reply {
            id: id(1),
            more: false,
            body: Bytes::from(body.clone()),
        };
        let bytes = encode(&frame);
        assert_eq!(bytes.len(), LEN_SIZE + MAX_FRAME_LEN);
        assert_eq!(decode(&bytes).unwrap(), Some(Ok(frame)));

        let mut src = BytesMut::from(&((MAX_FRAME_LEN + 1) as u32).to_be_bytes()[..]);
        assert!(matches!(
            FrameCodec.decode(&mut src),
            Err(FrameError::TooLong(n)) if n as usize == MAX_FRAME_LEN + 1
        ));
        let too_long = Frame::Reply {
            id: id(1),
            more: false,
            body: Bytes::from(vec![b'x'; MAX_BODY_LEN + 1]),
        };
        assert!(matches!(
            FrameCodec.encode(&too_long, &mut BytesMut::new()),
            Err(FrameError::BodyTooLong(n)) if n == MAX_BODY_LEN + 1
        ));
    }

    #[test]
    fn lengths_below_the_header_are_rejected() {
        for len in 0..HEADER_LEN as u32 {
            assert!(matches!(
                decode(&len.to_be_bytes()),
                Err(FrameError::TooShort(n)) if n == len
            ));
        }
    }

    #[test]
    fn zero_length_body_is_a_frame() {
        assert_eq!(
            decode(&raw(Kind::Ping as u8, 9, b"")).unwrap(),
            Some(Ok(Frame::Ping(9)))
        );
        assert_eq!(
            decode(&raw(Kind::Reply as u8, 3, b"")).unwrap(),
            Some(Ok(Frame::Reply {
                id: id(3),
                more: false,
                body: Bytes::new()
            }))
        );
        // Kinds whose body is fields need at least one.
        let close = decode(&raw(Kind::Close as u8, 0, b"")).unwrap();
        assert!(matches!(
            close,
            Some(Err(BadFrame {
                problem: Problem::Body(_),
                ..
            }))
        ));
    }

    #[test]
    fn malformed_frames_are_answerable_values() {
        let cases: [(&[u8], Problem); 9] = [
            (&raw(0, 1, b""), Problem::UnknownKind),
            (&raw(200, 1, b""), Problem::UnknownKind),
            (&raw(Kind::Request as u8, 0, b""), Problem::Id),
            (&raw(Kind::ReplyPart as u8, 0, b""), Problem::Id),
            (&raw(Kind::Close as u8, 4, b"x\0"), Problem::Id),
            (
                &raw(Kind::Ping as u8, 1, b"x"),
                Problem::Body("a heartbeat has no body"),
            ),
            (
                &raw(Kind::LoginReply as u8, 0, b"3\0"),
                Problem::Body("undefined login code"),
            ),
            (
                &raw(Kind::Login as u8, 0, b"al\0pw\0"),
                Problem::Body("a login has three fields"),
            ),
            (
                &raw(Kind::Close as u8, 0, b"ab"),
                Problem::Body("body does not end with a NUL"),
            ),
        ];
        for (bytes, problem) in cases {
            let Ok(Some(Err(bad))) = decode(bytes) else {
                panic!("{bytes:?} decoded as a frame or failed the stream");
            };
            assert_eq!(bad.problem, problem, "{bytes:?}");
            assert_eq!(bad.kind, bytes[LEN_SIZE]);
        }
    }

    #[test]
    fn a_bad_frame_leaves_the_stream_in_sync() {
        let mut bytes = raw(99, 5, b"???");
        bytes.extend(encode(&Frame::Pong(1)));
        let mut src = BytesMut::from(&bytes[..]);
        assert!(matches!(FrameCodec.decode(&mut src), Ok(Some(Err(_)))));
        assert_eq!(
            FrameCodec.decode(&mut src).unwrap(),
            Some(Ok(Frame::Pong(1)))
        );
    }

    #[test]
    fn a_truncated_frame_at_eof_is_an_error() {
        let bytes = encode(&Frame::Close("bye".into()));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(FrameError::Truncated(n)) if n == bytes.len() - 1
        ));
        assert!(matches!(decode(&bytes[..2]), Err(FrameError::Truncated(2))));
        assert_eq!(decode(b"").unwrap(), None);
    }

    #[test]
    fn encoder_refuses_what_decoder_would_reject() {
        let nul = Frame::Close("a\0b".into());
        assert!(matches!(
            FrameCodec.encode(&nul, &mut BytesMut::new()),
            Err(FrameError::Field(CodecError::EncodeNul))
        ));
        let unnamed = Frame::Event(Event {
            name: String::new(),
            fields: vec![],
        });
        assert!(matches!(
            FrameCodec.encode(&unnamed, &mut BytesMut::new()),
            Err(FrameError::UnnamedEvent)
        ));
    }

    #[test]
    fn reply_frames_cut_at_the_maximum_body() {
        let reply = Bytes::from(vec![b'r'; 2 * MAX_BODY_LEN + 1]);
        let frames: Vec<Frame> = reply_frames(id(4), reply.clone()).collect();
        let kinds: Vec<Kind> = frames.iter().map(Frame::kind).collect();
        assert_eq!(kinds, [Kind::ReplyPart, Kind::ReplyPart, Kind::Reply]);
        let mut joined = Vec::new();
        for frame in &frames {
            let Frame::Reply { body, .. } = frame else {
                panic!("not a reply")
            };
            joined.extend_from_slice(body);
        }
        assert_eq!(joined, reply);
        let empty: Vec<Frame> = reply_frames(id(4), Bytes::new()).collect();
        assert_eq!(
            empty,
            [Frame::Reply {
                id: id(4),
                more: false,
                body: Bytes::new()
            }]
        );
    }

    #[test]
    fn request_bodies_use_the_classic_parser() {
        let request = Request {
            datetime: Some("01/01/2027 00:00:00".into()),
            user: Ok("carol".into()),
            operation: Operation::Delete {
                file: Ok("f.txt".into()),
            },
        };
        let Frame::Request { body, .. } =
            Frame::request(id(1), &request, "01/01/2027 00:00:00").unwrap()
        else {
            panic!("not a request frame")
        };
        assert_eq!(&body[..], b"DELETE\x0001/01/2027 00:00:00\0carol\0f.txt\0");
        assert_eq!(parse_request_body(&body), Ok(request));
        assert_eq!(
            parse_request_body(b"FROB\0al\0"),
            Err(RequestBodyError::UnknownOp("FROB".into()))
        );
        assert_eq!(
            parse_request_body(b"DELETE\0al\0"),
            Err(RequestBodyError::Incomplete {
                op: Some(OpKind::Delete)
            })
        );
        assert_eq!(
            parse_request_body(b"LIST_USERS\0al\0x\0"),
            Err(RequestBodyError::Trailing {
                op: OpKind::ListUsers,
                extra: 2
            })
        );
        assert_eq!(
            parse_request_body(b""),
            Err(RequestBodyError::Incomplete { op: None })
        );
    }
}
