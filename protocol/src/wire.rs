//! Async helpers that run the codec and parsers over a socket: the only place
//! where bytes from the network become requests and replies.

use futures::StreamExt;
use thiserror::Error;
use tokio::io::AsyncRead;
use tokio_util::codec::FramedRead;

use crate::field::{CodecError, Field, FieldCodec};
use crate::op::{OpKind, Outcome};
use crate::reply::{ContentEntry, Reply, UserEntry};
use crate::request::{Progress, Request, RequestParser};

/// A socket read as a stream of fields.
pub type FieldReader<R> = FramedRead<R, FieldCodec>;

/// Wraps a reader in the field codec.
pub fn field_reader<R: AsyncRead>(reader: R) -> FieldReader<R> {
    FramedRead::new(reader, FieldCodec::new())
}

/// How reading a request ended.
#[derive(Debug)]
pub enum RequestRead {
    Request(Request),
    /// The op field named no operation.
    UnknownOp(String),
    /// The peer closed before sending any field.
    Closed,
}

/// Why a request could not be read to its end.
#[derive(Debug, Error)]
#[error("{source}")]
pub struct RequestError {
    /// The operation, if its field had arrived: the server answers its
    /// catch-all code when it can.
    pub op: Option<OpKind>,
    #[source]
    pub source: CodecError,
}

/// Reads one complete directory request.
pub async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
) -> Result<RequestRead, RequestError> {
    let mut parser = RequestParser::new();
    let mut first = true;
    loop {
        let field = match reader.next().await {
            Some(Ok(field)) => field,
            Some(Err(source)) => {
                return Err(RequestError {
                    op: parser.op(),
                    source,
                })
            }
            None if first => return Ok(RequestRead::Closed),
            None => {
                return Err(RequestError {
                    op: parser.op(),
                    source: CodecError::Truncated,
                })
            }
        };
        first = false;
        match parser.feed(field) {
            Progress::NeedMore => {}
            Progress::Done(request) => return Ok(RequestRead::Request(request)),
            Progress::UnknownOp(name) => return Ok(RequestRead::UnknownOp(name)),
        }
    }
}

/// Why a reply could not be read.
#[derive(Debug, Error)]
pub enum ReplyError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("connection closed before the reply was complete")]
    Closed,
    #[error("malformed reply field: {0}")]
    Malformed(&'static str),
    #[error("reply code {0} is not defined for {1}")]
    UnknownCode(String, OpKind),
}

/// Upper bound on entries pre-allocated from a count we did not check.
const PREALLOC_LIMIT: usize = 1024;

/// Reads the reply to `op`. After a non-zero code nothing more is read
/// (some servers send a count even after an error).
pub async fn read_reply<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
    op: OpKind,
) -> Result<Reply, ReplyError> {
    let code_text = next_text(reader).await?;
    let code: u8 = code_text
        .trim()
        .parse()
        .map_err(|_| ReplyError::UnknownCode(code_text.clone(), op))?;
    let outcome = op
        .outcome(code)
        .ok_or(ReplyError::UnknownCode(code_text, op))?;
    if outcome != Outcome::Ok {
        return Ok(Reply::Status(outcome));
    }
    match op {
        OpKind::ListUsers => {
            let count = read_count(reader).await?;
            let mut users = Vec::with_capacity(count.min(PREALLOC_LIMIT));
            for _ in 0..count {
                let name = next_text(reader).await?;
                let ip = next_text(reader).await?;
                let port = next_text(reader).await?;
                users.push(UserEntry { name, ip, port });
            }
            Ok(Reply::Users(users))
        }
        OpKind::ListContent => {
            let count = read_count(reader).await?;
            let mut files = Vec::with_capacity(count.min(PREALLOC_LIMIT));
            for _ in 0..count {
                let file = next_text(reader).await?;
                let description = next_text(reader).await?;
                files.push(ContentEntry { file, description });
            }
            Ok(Reply::Content(files))
        }
        _ => Ok(Reply::Status(Outcome::Ok)),
    }
}

async fn read_count<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
) -> Result<usize, ReplyError> {
    next_text(reader)
        .await?
        .trim()
        .parse()
        .map_err(|_| ReplyError::Malformed("count is not a number"))
}

/// Reads the next field as text, failing on close or malformed content.
pub async fn next_text<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
) -> Result<String, ReplyError> {
    match reader.next().await {
        Some(Ok(Field::Text(text))) => Ok(text),
        Some(Ok(Field::TooLong)) => Err(ReplyError::Malformed("field longer than 255 bytes")),
        Some(Ok(Field::NotUtf8)) => Err(ReplyError::Malformed("field is not UTF-8")),
        Some(Err(err)) => Err(err.into()),
        None => Err(ReplyError::Closed),
    }
}
