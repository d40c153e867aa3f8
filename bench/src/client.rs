//! One directory operation over one TCP connection, as the protocol requires,
//! and the loud error log shared by populate and the workload.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use peerdex_protocol::listing::{ListKind, ListingReader};
use peerdex_protocol::wire::{field_reader, read_reply, ReplyError};
use peerdex_protocol::{CodecError, OpKind, Outcome, Reply};
use thiserror::Error;

use crate::session::SessionError;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
    #[error("{0}")]
    Session(#[from] SessionError),
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
            CallError::Session(e) => return e.class().into(),
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
    read_whole_reply(&mut stream, op).await
}

/// Reads the reply to `op` from `source` and checks that nothing follows
/// an OK reply up to the end of `source`: the socket's close for a classic
/// call, the end of the assembled bytes for a session's reply.
pub async fn read_whole_reply<R: AsyncRead + Unpin>(
    source: R,
    op: OpKind,
) -> Result<Reply, CallError> {
    let mut reader = field_reader(source);
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

/// Receives the entries of a listing, in order, as the server sent them.
pub trait ListVisitor {
    /// One entry: `[name, ip, port]` for LIST_USERS, `[file, description]`
    /// for LIST_CONTENT.
    fn entry(&mut self, fields: &[&str]);
}

/// Read buffer of a LIST_USERS reply: a 10,000-user listing is ~300 KB, so
/// a few large reads instead of dozens of 8 KiB ones.
const USERS_READ_BUFFER: usize = 64 * 1024;

/// Read buffer of a LIST_CONTENT reply, usually a few hundred bytes. Tokio's
/// `BufReader` zeroes its whole buffer when created: with 64 KiB for every
/// LIST_CONTENT (40% of the mix), that `memset` is load-generator CPU
/// taken from the server under test on a shared machine.
const CONTENT_READ_BUFFER: usize = 8 * 1024;

/// The read buffer for a listing of `kind`.
fn list_read_buffer(kind: ListKind) -> usize {
    match kind {
        ListKind::Users => USERS_READ_BUFFER,
        ListKind::Content => CONTENT_READ_BUFFER,
    }
}

/// Like [`call`] for LIST_USERS / LIST_CONTENT, but streams the entries to
/// `visitor` with the protocol's [`ListingReader`] instead of building them:
/// `read_reply` allocates per field, a cost of the load generator that grows
/// with the listing and would be measured as server latency.
/// Returns the reply's outcome; on OK exactly COUNT entries were visited.
pub async fn call_list<V: ListVisitor + Send>(
    addr: SocketAddr,
    request: &[u8],
    kind: ListKind,
    timeout: Duration,
    visitor: &mut V,
) -> Result<Outcome, CallError> {
    let exchange = exchange_list(addr, request, kind, visitor);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

async fn exchange_list<V: ListVisitor + Send>(
    addr: SocketAddr,
    request: &[u8],
    kind: ListKind,
    visitor: &mut V,
) -> Result<Outcome, CallError> {
    let mut stream = TcpStream::connect(addr).await.map_err(CallError::Connect)?;
    stream.write_all(request).await.map_err(CallError::Send)?;
    let reader = BufReader::with_capacity(list_read_buffer(kind), stream);
    read_whole_listing(reader, kind, visitor).await
}

/// Streams a listing from `reader` to `visitor` and checks, as
/// [`read_whole_reply`] does, that nothing follows an OK reply up to the
/// end of `reader`.
pub async fn read_whole_listing<R: AsyncBufRead + Unpin, V: ListVisitor + Send>(
    reader: R,
    kind: ListKind,
    visitor: &mut V,
) -> Result<Outcome, CallError> {
    let mut list = ListingReader::start(reader, kind).await?;
    while let Some(entry) = list.next_entry().await? {
        visitor.entry(entry.fields());
    }
    let outcome = list.outcome();
    let ok = outcome == Outcome::Ok;
    // Wait for the server's close, as in `exchange`: after an OK reply not a
    // byte may follow (bytes already buffered are read first).
    let mut reader = list.into_inner();
    let mut rest = [0u8; 512];
    loop {
        match reader.read(&mut rest).await {
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

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[derive(Default)]
    struct Collect(Vec<Vec<String>>);

    impl ListVisitor for Collect {
        fn entry(&mut self, fields: &[&str]) {
            self.0.push(fields.iter().map(|f| f.to_string()).collect());
        }
    }

    /// Serves `reply` to one connection (after reading the request), then
    /// closes; returns what `call_list` made of it.
    async fn serve(reply: &'static [u8]) -> (Result<Outcome, CallError>, Vec<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 64];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(reply).await;
        });
        let mut seen = Collect::default();
        let timeout = Duration::from_secs(5);
        let kind = ListKind::Users;
        let result = call_list(addr, b"LIST_USERS\0u\0", kind, timeout, &mut seen).await;
        server.await.expect("server task");
        (result, seen.0)
    }

    #[tokio::test]
    async fn listing_is_streamed_and_checked_to_the_close() {
        let (result, seen) = serve(b"0\x002\x00a\x001.2.3.4\x0080\x00b\x00::1\x0081\x00").await;
        assert_eq!(result.expect("a good reply"), Outcome::Ok);
        assert_eq!(seen, [["a", "1.2.3.4", "80"], ["b", "::1", "81"]]);

        // A byte after the COUNT-th entry of an OK reply is an error.
        let (result, _) = serve(b"0\x001\x00a\x001.2.3.4\x0080\x00x").await;
        assert!(
            matches!(result, Err(CallError::AfterReply(_))),
            "{result:?}"
        );

        // Fewer entries than COUNT: an error, never a short list.
        let (result, _) = serve(b"0\x002\x00a\x001.2.3.4\x0080\x00").await;
        assert!(
            matches!(result, Err(CallError::Reply(ReplyError::Closed))),
            "{result:?}"
        );

        // A count after an error code is not the client's business.
        let (result, seen) = serve(b"2\x005\x00").await;
        assert_eq!(result.expect("a code"), Outcome::UserNotConnected);
        assert!(seen.is_empty());
    }
}
