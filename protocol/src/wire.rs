//! Async helpers that run the codec and parsers over a socket: the only place
//! where bytes from the network become requests and replies.

use futures::StreamExt;
use thiserror::Error;
use tokio::io::AsyncRead;
use tokio_util::codec::FramedRead;

use crate::field::{CodecError, Field, FieldCodec};
use crate::op::{OpKind, Outcome};
use crate::peer_ext::from_hex;
use crate::reply::{
    ContentEntry, Reply, SearchEntry, SearchReply, SourceEntry, SourcesReply, UserEntry, Whois,
};
use crate::request::{PartialRequest, Progress, Request, RequestParser};

/// A socket read as a stream of fields.
pub type FieldReader<R> = FramedRead<R, FieldCodec>;

/// Wraps a reader in the field codec.
pub fn field_reader<R: AsyncRead>(reader: R) -> FieldReader<R> {
    FramedRead::new(reader, FieldCodec::new())
}

/// First buffer size of [`request_reader`]: a request is a few short
/// fields, and buffers this small come from the allocator's per-thread
/// cache. The default 8 KiB does not: glibc's path for large chunks then
/// shows in the server's profile, and this buffer, allocated for every
/// connection, is its largest source.
pub const REQUEST_BUFFER: usize = 512;

/// Wraps a socket that sends one request: like [`field_reader`], with a
/// small first buffer that grows when a request is longer.
pub fn request_reader<R: AsyncRead>(reader: R) -> FieldReader<R> {
    FramedRead::with_capacity(reader, FieldCodec::new(), REQUEST_BUFFER)
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
    /// The fields that had arrived, so that the refusal can be logged.
    pub partial: PartialRequest,
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
                    partial: parser.take_partial(),
                    source,
                })
            }
            None if first => return Ok(RequestRead::Closed),
            None => {
                return Err(RequestError {
                    op: parser.op(),
                    partial: parser.take_partial(),
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
        OpKind::Search => {
            let total = read_count(reader).await? as u64;
            let count = read_count(reader).await?;
            let mut entries = Vec::with_capacity(count.min(PREALLOC_LIMIT));
            for _ in 0..count {
                let owner = next_text(reader).await?;
                let file = next_text(reader).await?;
                let description = next_text(reader).await?;
                let size = optional_size(&next_text(reader).await?)?;
                let hash = optional_hash(&next_text(reader).await?)?;
                let connected = match next_text(reader).await?.as_str() {
                    "1" => true,
                    "0" => false,
                    _ => return Err(ReplyError::Malformed("CONNECTED is not 0 or 1")),
                };
                entries.push(SearchEntry {
                    owner,
                    file,
                    description,
                    size,
                    hash,
                    connected,
                });
            }
            Ok(Reply::Search(SearchReply { total, entries }))
        }
        OpKind::FindSources => {
            let size = optional_size(&next_text(reader).await?)?;
            let hash = optional_hash(&next_text(reader).await?)?;
            let count = read_count(reader).await?;
            let mut sources = Vec::with_capacity(count.min(PREALLOC_LIMIT));
            for _ in 0..count {
                let user = next_text(reader).await?;
                let ip = next_text(reader).await?;
                let port = next_text(reader).await?;
                let file = next_text(reader).await?;
                sources.push(SourceEntry {
                    user,
                    ip,
                    port,
                    file,
                });
            }
            Ok(Reply::Sources(SourcesReply {
                size,
                hash,
                sources,
            }))
        }
        OpKind::Whois => {
            let whois = match next_text(reader).await?.as_str() {
                crate::reply::WHOIS_ONLINE => {
                    let ip = next_text(reader).await?;
                    let port = next_text(reader).await?;
                    Whois::Online { ip, port }
                }
                crate::reply::WHOIS_OFFLINE => {
                    let seen = next_text(reader).await?;
                    let last_seen = match seen.as_str() {
                        crate::reply::WHOIS_NEVER => None,
                        text if crate::datetime::is_datetime(text) => Some(seen),
                        _ => return Err(ReplyError::Malformed("LAST_SEEN is not a DATETIME")),
                    };
                    Whois::Offline { last_seen }
                }
                _ => return Err(ReplyError::Malformed("STATE is not online or offline")),
            };
            Ok(Reply::Whois(whois))
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

/// A SIZE field: empty means unknown.
fn optional_size(text: &str) -> Result<Option<u64>, ReplyError> {
    if text.is_empty() {
        return Ok(None);
    }
    crate::request::parse_size(text)
        .map(Some)
        .map_err(|_| ReplyError::Malformed("SIZE is not a decimal number"))
}

/// A HASH field: empty means unknown.
fn optional_hash(text: &str) -> Result<Option<crate::peer_ext::Digest>, ReplyError> {
    if text.is_empty() {
        return Ok(None);
    }
    from_hex(text)
        .map(Some)
        .ok_or(ReplyError::Malformed("HASH is not 64 hex characters"))
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::reply::{
        put_code, put_count, put_hash, put_search_entry, put_size, put_source_entry,
    };

    fn read(op: OpKind, bytes: &[u8]) -> Result<Reply, ReplyError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(read_reply(&mut field_reader(bytes), op))
    }

    #[test]
    fn search_reply_round_trips() {
        let entries = vec![
            SearchEntry {
                owner: "al".into(),
                file: "Song.mp3".into(),
                description: "a song".into(),
                size: Some(42),
                hash: Some([7; 32]),
                connected: true,
            },
            SearchEntry {
                owner: "bo".into(),
                file: "song.txt".into(),
                description: String::new(),
                size: None,
                hash: None,
                connected: false,
            },
        ];
        let mut bytes = BytesMut::new();
        put_code(&mut bytes, 0);
        put_count(&mut bytes, 9);
        put_count(&mut bytes, 2);
        for entry in &entries {
            put_search_entry(&mut bytes, entry).unwrap();
        }
        let reply = read(OpKind::Search, &bytes).unwrap();
        assert_eq!(reply, Reply::Search(SearchReply { total: 9, entries }));
        // Truncated: an error, never a short list.
        assert!(read(OpKind::Search, &bytes[..bytes.len() - 3]).is_err());
        assert_eq!(
            read(OpKind::Search, b"2\0").unwrap(),
            Reply::Status(Outcome::UserNotConnected)
        );
    }

    #[test]
    fn sources_reply_round_trips() {
        let mut bytes = BytesMut::new();
        put_code(&mut bytes, 0);
        put_size(&mut bytes, Some(5));
        put_hash(&mut bytes, Some(&[0xab; 32]));
        put_count(&mut bytes, 1);
        put_source_entry(&mut bytes, "al", "10.0.0.1".parse().unwrap(), 80, "f").unwrap();
        let Reply::Sources(reply) = read(OpKind::FindSources, &bytes).unwrap() else {
            panic!("not a sources reply")
        };
        assert_eq!((reply.size, reply.hash), (Some(5), Some([0xab; 32])));
        assert_eq!(reply.sources[0].file, "f");
        assert_eq!(reply.sources[0].ip, "10.0.0.1");
        assert_eq!(
            read(OpKind::FindSources, b"3\0").unwrap(),
            Reply::Status(Outcome::ContentNotPublished)
        );
        assert!(read(OpKind::FindSources, b"0\0x\0").is_err());
    }
}
