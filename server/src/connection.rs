//! One client connection: one request, one reply, then a clean close.
//!
//! The request must arrive whole within the request deadline (a client that
//! sends half a request and stalls is dropped; nobody else notices). After
//! the reply the write half is shut down and whatever the peer still sends is
//! drained (bounded) before the socket is dropped: closing with unread bytes
//! turns into a TCP reset that can destroy the reply in flight.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use peerdex_protocol::reply::{put_code, put_count};
use peerdex_protocol::wire::{
    read_request, request_reader, FieldReader, RequestError, RequestRead, REQUEST_BUFFER,
};
use peerdex_protocol::{OpKind, Outcome, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::durable::writer::{Committer, Mutation};
use crate::log_record;
use crate::log_sink::LogSink;
use crate::query::{self, QueryAnswer};
use crate::rules::{self, ListAnswer, Plan};
use crate::state::State;

/// Listing replies are flushed to the socket in chunks of about this size.
pub const CHUNK: usize = 64 * 1024;
/// Most bytes read from the peer after the reply before closing anyway.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Longest wait for the peer to close after the reply.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What every connection handler shares.
pub struct Shared {
    /// The directory in memory: listings and queries read it (and wait for
    /// the batches they depend on to be durable).
    pub state: Arc<State>,
    /// The group-commit writer, for every mutation.
    pub committer: Committer,
    /// Where one record per handled operation goes.
    pub log: LogSink,
    /// How long a client has to send its request, and to take each chunk
    /// of the reply.
    pub request_timeout: Duration,
}

/// Serves one connection to its end. Never fails: every error is logged
/// and ends the connection.
pub async fn handle(mut socket: TcpStream, peer: SocketAddr, shared: &Shared) {
    let (read_half, mut write_half) = socket.split();
    let mut reader = request_reader(read_half);
    let read = timeout(shared.request_timeout, read_request(&mut reader)).await;
    let replied = match read {
        Err(_) => {
            tracing::debug!(%peer, "request not complete before the deadline, dropping");
            return;
        }
        Ok(Ok(RequestRead::Closed)) => return,
        Ok(Ok(RequestRead::UnknownOp(name))) => {
            tracing::warn!(%peer, op = %name.escape_debug(), "unknown operation, closing");
            Ok(())
        }
        Ok(Err(RequestError {
            op: Some(op),
            partial,
            source,
        })) => {
            tracing::debug!(%peer, %op, error = %source, "unreadable request, answering FAIL");
            if shared.log.is_enabled() {
                shared.log.record(log_record::refused(op, partial));
            }
            let mut reply = BytesMut::with_capacity(4);
            put_code(&mut reply, op.fail_code());
            send(&mut write_half, &reply, shared.request_timeout).await
        }
        Ok(Err(RequestError {
            op: None, source, ..
        })) => {
            tracing::debug!(%peer, error = %source, "unreadable request, closing");
            Ok(())
        }
        Ok(Ok(RequestRead::Request(request))) => {
            serve(&request, peer, shared, &mut write_half).await
        }
    };
    if let Err(err) = replied {
        tracing::debug!(%peer, error = %err, "reply not delivered");
        return;
    }
    if let Err(err) = write_half.shutdown().await {
        tracing::debug!(%peer, error = %err, "shutdown failed");
        return;
    }
    drain(reader).await;
}

/// Applies a request and writes its whole reply.
async fn serve<W: AsyncWrite + Unpin>(
    request: &Request,
    peer: SocketAddr,
    shared: &Shared,
    out: &mut W,
) -> io::Result<()> {
    let kind = request.operation.kind();
    let outcome = match rules::plan(request) {
        Plan::Answer(outcome) => outcome,
        Plan::Mutate { user } => {
            let mutation = Mutation {
                user,
                operation: request.operation.clone(),
                peer_ip: peer.ip().to_canonical(),
                actor: crate::actor::Actor::Classic,
                takeover: None,
            };
            shared.committer.submit(mutation).await
        }
        Plan::Query { user } => match query::query(&shared.state, &user, &request.operation) {
            // Searches read every user: everything applied must be durable.
            _ if !is_durable(shared, shared.state.applied_seq()).await => Outcome::Fail,
            Ok(QueryAnswer::Status(outcome)) => outcome,
            Ok(QueryAnswer::Reply(reply)) => {
                log_operation(shared, request, kind, Outcome::Ok);
                return send(out, &reply, shared.request_timeout).await;
            }
            Err(err) => {
                tracing::error!(error = %err, %kind, "cannot query the directory");
                Outcome::Fail
            }
        },
        Plan::Read { user } => match rules::list(&shared.state, &user, &request.operation) {
            (_, depends_on) if !is_durable(shared, depends_on).await => Outcome::Fail,
            (ListAnswer::Status(outcome), _) => outcome,
            (ListAnswer::Listing(listing), _) => {
                log_operation(shared, request, kind, Outcome::Ok);
                return stream_listing(listing, shared.request_timeout, out).await;
            }
        },
    };
    log_operation(shared, request, kind, outcome);
    let mut reply = BytesMut::with_capacity(4);
    put_code(&mut reply, kind.code(outcome));
    send(out, &reply, shared.request_timeout).await
}

/// Waits until batch `seen`, the last one this connection's answer
/// depends on, is durable (the state holds batches whose journal sync is
/// still running); false if the journal failed, and the answer must then
/// be the catch-all.
async fn is_durable(shared: &Shared, seen: u64) -> bool {
    !shared.state.has_failed() && shared.committer.durability().wait_for(seen).await
}

/// Writes code 0, the count and the entries, flushing every [`CHUNK`] bytes
/// so that a huge listing never sits in memory (the entries themselves are
/// a shared snapshot).
async fn stream_listing<W: AsyncWrite + Unpin>(
    mut listing: Box<rules::Listing>,
    chunk_timeout: Duration,
    out: &mut W,
) -> io::Result<()> {
    // A listing that fits in one chunk gets a buffer of its own size: most
    // LIST_CONTENT replies are a few hundred bytes, and a full-chunk buffer
    // per reply would be a large allocation on every one.
    let header = 4 + 21;
    let capacity = header + listing.bytes_bound().min(CHUNK + 16 * 1024);
    let mut buf = BytesMut::with_capacity(capacity);
    put_code(&mut buf, 0);
    put_count(&mut buf, listing.count());
    loop {
        let more = listing.fill(&mut buf, CHUNK);
        send(out, &buf, chunk_timeout).await?;
        buf.clear();
        if !more {
            return Ok(());
        }
    }
}

/// Hands the operation's record to the logger sink (never waits).
/// `outcome` is what the reply says: callers pass it after every wait for
/// durability, just before they write it.
fn log_operation(shared: &Shared, request: &Request, kind: OpKind, outcome: Outcome) {
    tracing::debug!(op = %kind, user = %rules::user_label(&request.user), ?outcome, "handled");
    if !shared.log.is_enabled() {
        // No logger: building the record would be four allocations per
        // operation for nothing.
        return;
    }
    shared
        .log
        .record(log_record::answered(request, kind, outcome));
}

/// Writes all of `bytes` within `limit`.
async fn send<W: AsyncWrite + Unpin>(out: &mut W, bytes: &[u8], limit: Duration) -> io::Result<()> {
    match timeout(limit, out.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer not reading the reply",
        )),
    }
}

/// Reads and discards what the peer still sends until it closes, at most
/// [`DRAIN_LIMIT`] bytes and [`DRAIN_TIMEOUT`]. It reads into the request
/// reader's buffer: an array of its own would be part of every
/// connection's task, allocated and copied at each accept (most of the
/// task's size).
async fn drain<R: AsyncRead + Unpin>(reader: FieldReader<R>) {
    let parts = reader.into_parts();
    let (mut socket, mut buffer) = (parts.io, parts.read_buf);
    let drained = timeout(DRAIN_TIMEOUT, async {
        let mut total = 0;
        while total < DRAIN_LIMIT {
            buffer.clear();
            buffer.reserve(REQUEST_BUFFER);
            match socket.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!("peer did not close after the reply");
    }
}
