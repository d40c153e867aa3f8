//! One directory operation over one TCP connection, as the protocol requires,
//! and the loud error log shared by populate and the workload.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use peerdex_protocol::wire::{field_reader, read_reply, ReplyError};
use peerdex_protocol::{CodecError, OpKind, Outcome, Reply};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::list_reader::{ListScanner, ListVisitor, Scan};

/// Why an operation got no usable reply.
#[derive(Debug, Error)]
pub enum CallError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("sending the request: {0}")]
    Send(#[source] io::Error),
    #[error("reading the reply: {0}")]
    Reply(#[from] ReplyError),
    #[error("after a complete OK reply: {0}")]
    AfterReply(String),
    #[error("no reply and close within {0:?}")]
    Timeout(Duration),
    #[error("encoding the request: {0}")]
    Encode(#[from] CodecError),
}

impl CallError {
    /// The socket error behind this failure, if any.
    fn io(&self) -> Option<&io::Error> {
        match self {
            CallError::Connect(e) | CallError::Send(e) => Some(e),
            CallError::Reply(ReplyError::Codec(CodecError::Io(e))) => Some(e),
            _ => None,
        }
    }

    /// EADDRNOTAVAIL (or EADDRINUSE) on connect: the client ran out of
    /// ephemeral ports, typically because of sockets in TIME_WAIT at high
    /// connection rates. It is a limit of the test machine, not a server bug,
    /// and the report says so.
    pub fn is_addr_exhaustion(&self) -> bool {
        match self {
            CallError::Connect(e) => matches!(
                e.kind(),
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse
            ),
            _ => false,
        }
    }

    /// A short class for the error counters.
    pub fn class(&self) -> String {
        let stage = match self {
            CallError::Connect(_) => "connect",
            CallError::Send(_) => "send",
            CallError::Reply(ReplyError::Codec(CodecError::Io(_))) => "reply io",
            CallError::Reply(ReplyError::Closed) => "closed before reply",
            CallError::Reply(_) => "malformed reply",
            CallError::AfterReply(_) => "after reply",
            CallError::Timeout(_) => return "timeout".into(),
            CallError::Encode(_) => return "encode".into(),
        };
        match self.io() {
            Some(e) if self.is_addr_exhaustion() => {
                format!("{stage}: {:?} (ephemeral port exhaustion?)", e.kind())
            }
            Some(e) => format!("{stage}: {:?}", e.kind()),
            None => stage.into(),
        }
    }
}

/// Connects, sends `request` in one write, reads the reply to `op`, then
/// waits for the server to close (PROTOCOL.md: the server closes). Waiting for
/// the close keeps TIME_WAIT on the server side, as with real clients that
/// read to EOF, and checks that nothing follows an OK reply. The whole
/// exchange is bounded by `timeout`.
pub async fn call(
    addr: SocketAddr,
    request: &[u8],
    op: OpKind,
    timeout: Duration,
) -> Result<Reply, CallError> {
    match tokio::time::timeout(timeout, exchange(addr, request, op)).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

async fn exchange(addr: SocketAddr, request: &[u8], op: OpKind) -> Result<Reply, CallError> {
    let mut stream = TcpStream::connect(addr).await.map_err(CallError::Connect)?;
    stream.write_all(request).await.map_err(CallError::Send)?;
    let mut reader = field_reader(&mut stream);
    let reply = read_reply(&mut reader, op).await?;
    let ok = reply.outcome() == Outcome::Ok;
    // Some servers send a count after an error code: ignore what follows a
    // non-zero code, but an OK reply must be followed by the close alone.
    while let Some(next) = reader.next().await {
        match next {
            Ok(field) if ok => {
                return Err(CallError::AfterReply(format!("unexpected field {field:?}")))
            }
            Err(e) if ok => return Err(CallError::AfterReply(e.to_string())),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(reply)
}

/// Reusable buffers of [`call_list`], one set per client loop.
pub struct ListBuffers {
    scanner: ListScanner,
    chunk: Vec<u8>,
}

impl Default for ListBuffers {
    fn default() -> Self {
        ListBuffers {
            scanner: ListScanner::new(OpKind::ListUsers),
            chunk: vec![0; 64 * 1024],
        }
    }
}

/// Like [`call`] for LIST_USERS / LIST_CONTENT, but streams the entries to
/// `visitor` without building them (see [`crate::list_reader`] for why).
/// Returns the reply's outcome; on OK every entry has been visited.
pub async fn call_list<V: ListVisitor + Send>(
    addr: SocketAddr,
    request: &[u8],
    op: OpKind,
    timeout: Duration,
    buffers: &mut ListBuffers,
    visitor: &mut V,
) -> Result<Outcome, CallError> {
    let exchange = exchange_list(addr, request, op, buffers, visitor);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

async fn exchange_list<V: ListVisitor + Send>(
    addr: SocketAddr,
    request: &[u8],
    op: OpKind,
    buffers: &mut ListBuffers,
    visitor: &mut V,
) -> Result<Outcome, CallError> {
    let read_error = |e| CallError::Reply(ReplyError::Codec(CodecError::Io(e)));
    let mut stream = TcpStream::connect(addr).await.map_err(CallError::Connect)?;
    stream.write_all(request).await.map_err(CallError::Send)?;
    let ListBuffers { scanner, chunk } = buffers;
    scanner.reset(op);
    let (outcome, trailing) = loop {
        let n = stream.read(chunk).await.map_err(read_error)?;
        if n == 0 {
            return Err(CallError::Reply(ReplyError::Closed));
        }
        if let Scan::Done { outcome, consumed } = scanner.feed(&chunk[..n], visitor)? {
            break (outcome, n - consumed);
        }
    };
    let ok = outcome == Outcome::Ok;
    if ok && trailing > 0 {
        return Err(CallError::AfterReply(format!(
            "{trailing} unexpected bytes"
        )));
    }
    // Wait for the server's close, as in `exchange`.
    loop {
        match stream.read(chunk).await {
            Ok(0) => return Ok(outcome),
            Ok(n) if ok => return Err(CallError::AfterReply(format!("{n} unexpected bytes"))),
            Ok(_) => {}
            Err(e) if ok => return Err(CallError::AfterReply(e.to_string())),
            Err(_) => return Ok(outcome),
        }
    }
}

/// Prints the first failures in full, counts the rest: an error must never
/// go unnoticed, but a dead server must not flood the terminal either.
#[derive(Debug)]
pub struct ErrorLog {
    printed: AtomicU64,
    limit: u64,
}

impl ErrorLog {
    pub fn new(limit: u64) -> Self {
        ErrorLog {
            printed: AtomicU64::new(0),
            limit,
        }
    }

    pub fn report(&self, what: &str, detail: &str) {
        let n = self.printed.fetch_add(1, Ordering::Relaxed);
        if n < self.limit {
            eprintln!("ERROR: {what}: {detail}");
        } else if n == self.limit {
            eprintln!("ERROR: more errors; only counting them from now on");
        }
    }
}
