//! One source of a download, and the two extension requests the engine
//! makes of it: the piece list (`GET_HASHES`) and a range (`GET_RANGE`).
//! One TCP connection per request, like every peer exchange.

use std::time::Duration;

use peerdex_protocol::peer_ext::{
    hashes_request, range_request, read_hashes_header, read_piece, read_range_header, ExtCode,
    ExtReplyError,
};
use peerdex_protocol::wire::{field_reader, ReplyError};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::download::{CONNECT_TIMEOUT, IDLE_TIMEOUT, REPLY_TIMEOUT};
use super::PeerAddr;
use crate::content::pieces::Manifest;
use crate::directory_client::describe_io;

/// Piece digests reserved before any arrived: a hostile count costs at most
/// this much memory up front.
const PREALLOCATED_PIECES: usize = 4096;

/// A peer that has (or is said to have) the content, and its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where the peer listens.
    pub addr: PeerAddr,
    /// The file name as that peer published it.
    pub file: String,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.addr)
    }
}

/// Why a source did not give what was asked.
#[derive(Debug, Error)]
pub enum SourceError {
    /// Connect refused or timed out.
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// Connected, but no reply within the step's bound: a frozen peer.
    #[error("no reply within {0:?}")]
    Unresponsive(Duration),
    /// Code 1: the source does not have (or no longer publishes) the file.
    #[error("the file is not there")]
    NotFound,
    /// The source does not speak the extension: code 2, a close without a
    /// reply, or a reply that is not one. A classic peer looks like this.
    #[error("no extension reply ({0})")]
    Unsupported(String),
    /// The source has other content (size or root) than the download.
    #[error("it serves other content")]
    OtherContent,
    /// The reply ended early, stalled or failed mid-way.
    #[error("transfer failed: {0}")]
    Transfer(String),
    /// Any other refusal (codes 2 and 3 to a range).
    #[error("refused with code {0:?}")]
    Refused(ExtCode),
}

impl SourceError {
    fn from_reply(err: ExtReplyError) -> SourceError {
        match err {
            ExtReplyError::Code(ExtCode::NotFound) => SourceError::NotFound,
            ExtReplyError::Code(code) => SourceError::Unsupported(format!("code {code:?}")),
            ExtReplyError::Malformed(what) => SourceError::Unsupported(what.to_string()),
            ExtReplyError::Reply(ReplyError::Closed) => {
                SourceError::Unsupported("closed without a reply".into())
            }
            ExtReplyError::Reply(err) => SourceError::Transfer(err.to_string()),
        }
    }
}

async fn connect(addr: &PeerAddr, request: &[u8]) -> Result<TcpStream, SourceError> {
    let connect = TcpStream::connect((addr.host.as_str(), addr.port));
    let mut stream = match timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(SourceError::Unreachable(describe_io(&err))),
        Err(_) => return Err(SourceError::Unreachable("connection timed out".into())),
    };
    let _ = stream.set_nodelay(true);
    stream
        .write_all(request)
        .await
        .map_err(|err| SourceError::Transfer(describe_io(&err)))?;
    Ok(stream)
}

/// Asks `source` for its piece list. The list is checked (count, merge into
/// the root) before it is returned.
pub async fn fetch_manifest(source: &Source) -> Result<Manifest, SourceError> {
    let request =
        hashes_request(&source.file).map_err(|err| SourceError::Transfer(err.to_string()))?;
    let stream = connect(&source.addr, &request).await?;
    let mut reader = field_reader(stream);
    let header = match timeout(REPLY_TIMEOUT, read_hashes_header(&mut reader)).await {
        Ok(Ok(header)) => header,
        Ok(Err(err)) => return Err(SourceError::from_reply(err)),
        Err(_) => return Err(SourceError::Unresponsive(REPLY_TIMEOUT)),
    };
    // The list is 32 bytes a piece; each must arrive within the idle bound
    // (the count was checked against the size, and the vector grows as
    // pieces arrive instead of trusting it).
    let mut pieces = Vec::with_capacity((header.count as usize).min(PREALLOCATED_PIECES));
    for _ in 0..header.count {
        match timeout(IDLE_TIMEOUT, read_piece(&mut reader)).await {
            Ok(Ok(piece)) => pieces.push(piece),
            Ok(Err(err)) => return Err(SourceError::from_reply(err)),
            Err(_) => {
                return Err(SourceError::Transfer(format!(
                    "no data for {IDLE_TIMEOUT:?}"
                )))
            }
        }
    }
    let manifest = Manifest {
        size: header.size,
        piece_size: header.piece_size,
        root: header.root,
        pieces,
    };
    manifest
        .verify()
        .map_err(|err| SourceError::Transfer(format!("bad piece list: {err}")))?;
    Ok(manifest)
}

/// Fetches `buf.len()` bytes at `offset` of the file `manifest` describes
/// into `buf`. The reply's size and root must be the manifest's, and its
/// stated length exactly what was asked: anything shorter is a truncation.
pub async fn fetch_range(
    source: &Source,
    manifest: &Manifest,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), SourceError> {
    let length = buf.len() as u64;
    let request = range_request(&source.file, offset, length)
        .map_err(|err| SourceError::Transfer(err.to_string()))?;
    let stream = connect(&source.addr, &request).await?;
    let mut reader = field_reader(stream);
    let header = match timeout(REPLY_TIMEOUT, read_range_header(&mut reader)).await {
        Ok(Ok(header)) => header,
        Ok(Err(ExtReplyError::Code(code @ (ExtCode::Error | ExtCode::OutOfRange)))) => {
            return Err(SourceError::Refused(code))
        }
        Ok(Err(err)) => return Err(SourceError::from_reply(err)),
        Err(_) => return Err(SourceError::Unresponsive(REPLY_TIMEOUT)),
    };
    if header.size != manifest.size || header.root != manifest.root {
        return Err(SourceError::OtherContent);
    }
    if header.length != length {
        return Err(SourceError::Transfer(format!(
            "announced {} bytes instead of {length}",
            header.length
        )));
    }
    let buffered = reader.read_buffer().len().min(buf.len());
    buf[..buffered].copy_from_slice(&reader.read_buffer()[..buffered]);
    let mut stream = reader.into_inner();
    let mut filled = buffered;
    while filled < buf.len() {
        match timeout(IDLE_TIMEOUT, stream.read(&mut buf[filled..])).await {
            Ok(Ok(0)) => {
                return Err(SourceError::Transfer(format!(
                    "truncated: {filled} of {length} bytes"
                )))
            }
            Ok(Ok(n)) => filled += n,
            Ok(Err(err)) => return Err(SourceError::Transfer(describe_io(&err))),
            Err(_) => {
                return Err(SourceError::Transfer(format!(
                    "no data for {:?}",
                    IDLE_TIMEOUT
                )))
            }
        }
    }
    Ok(())
}

/// How long a source that failed waits before its next request.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50 * u64::from(failures.min(10)))
}
