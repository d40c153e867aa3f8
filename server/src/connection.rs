//! One client connection: what it is (classic or session, from its first
//! byte); for a classic one, one request, one reply, then a clean close.
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

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use peerdex_protocol::frame::{self, Opening};
use peerdex_protocol::reply::{put_code, put_count};
use peerdex_protocol::wire::{
    read_request, FieldReader, RequestError, RequestRead, REQUEST_BUFFER,
};
use peerdex_protocol::{FieldCodec, OpKind, Operation, Outcome, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::{Decoder, FramedRead};

use crate::actor::{Actor, SessionId};
use crate::auth::limiter::Limiter;
use crate::auth::Hasher;
use crate::durable::writer::{Committer, Mutation};
use crate::log_record;
use crate::log_sink::LogSink;
use crate::presence::prober::Prober;
use crate::presence::{self, Precheck};
use crate::query::{self, QueryAnswer};
use crate::rules::{self, ListAnswer, Plan};
use crate::session;
use crate::session::registry::Registry;
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
    /// The live sessions.
    pub registry: Registry,
    /// The password hashing pool.
    pub hasher: Hasher,
    /// Failed-login delays.
    pub limiter: Limiter,
    /// Told about every classic CONNECT, to probe its listener.
    pub prober: Prober,
    /// Session heartbeats: a `Ping` after this long without sending.
    pub heartbeat_interval: Duration,
    /// Session heartbeats: the session ends after this long without
    /// receiving anything.
    pub heartbeat_timeout: Duration,
    /// Becomes true when the server shuts down: sessions close.
    pub shutdown: watch::Receiver<bool>,
}

/// Serves one connection to its end. Never fails: every error is logged
/// and ends the connection.
///
/// The first read decides what the connection is ([`frame::classify`]): a
/// session preface goes to [`crate::session`]; anything else is classic.
/// The deciding is a decoder of the classic reader itself, swapped for the
/// field decoder once it has decided, so a classic request is read with
/// the same buffer and the same reads as if nothing had looked at it.
pub async fn handle(mut socket: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let deadline = Instant::now() + shared.request_timeout;
    let mut sniffing = FramedRead::with_capacity(&mut socket, Sniff, REQUEST_BUFFER);
    let opening = match timeout_at(deadline, sniffing.next()).await {
        Err(_) => {
            tracing::debug!(%peer, "request not complete before the deadline, dropping");
            return;
        }
        Ok(None) => return,
        Ok(Some(Err(err))) => {
            tracing::debug!(%peer, error = %err, "read failed");
            return;
        }
        Ok(Some(Ok(opening))) => opening,
    };
    if opening == Opening::Session {
        let rest = sniffing.into_parts().read_buf;
        session::run(socket, peer, rest, shared.clone()).await;
        return;
    }
    let reader = sniffing.map_decoder(|Sniff| FieldCodec::new());
    classic(reader, peer, deadline, shared).await;
}

/// Decodes nothing but what a connection is: `Session` (the preface is
/// consumed), `Classic` or `Tls` (nothing consumed); it waits for more
/// bytes only while they are a strict prefix of the preface.
struct Sniff;

impl Decoder for Sniff {
    type Item = Opening;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Opening>> {
        if src.is_empty() {
            return Ok(None);
        }
        Ok(match frame::classify(src) {
            Opening::NeedMore => None,
            Opening::Session => {
                src.advance(frame::PREFACE.len());
                Some(Opening::Session)
            }
            other => Some(other),
        })
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Opening>> {
        match self.decode(src)? {
            // A strict prefix of the preface, then the end: not a session.
            None if !src.is_empty() => Ok(Some(Opening::Classic)),
            decided => Ok(decided),
        }
    }
}

/// One classic request, read by `reader` (its buffer holds what the
/// opening read).
async fn classic(
    mut reader: FieldReader<&mut TcpStream>,
    peer: SocketAddr,
    deadline: Instant,
    shared: &Shared,
) {
    let read = timeout_at(deadline, read_request(&mut reader)).await;
    let write_half = reader.get_mut();
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
            send(write_half, &reply, shared.request_timeout).await
        }
        Ok(Err(RequestError {
            op: None, source, ..
        })) => {
            tracing::debug!(%peer, error = %source, "unreadable request, closing");
            Ok(())
        }
        Ok(Ok(RequestRead::Request(request))) => {
            let mut out = ClassicOut {
                out: write_half,
                limit: shared.request_timeout,
            };
            serve(&request, peer, shared, Actor::Classic, &mut out)
                .await
                .map(|_| ())
        }
    };
    if let Err(err) = replied {
        tracing::debug!(%peer, error = %err, "reply not delivered");
        return;
    }
    if let Err(err) = reader.get_mut().shutdown().await {
        tracing::debug!(%peer, error = %err, "shutdown failed");
        return;
    }
    drain(reader).await;
}

/// Where a reply goes: straight to a classic socket, or cut into reply
/// frames of a session.
pub trait ReplyOut {
    /// Writes the next bytes of the reply.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The reply is complete.
    async fn finish(&mut self) -> io::Result<()>;
}

/// A classic connection's write half: each part written within `limit`.
struct ClassicOut<'a, W> {
    out: &'a mut W,
    limit: Duration,
}

impl<W: AsyncWrite + Unpin> ReplyOut for ClassicOut<'_, W> {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        send(self.out, bytes, self.limit).await
    }

    async fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Applies a request for `actor` and writes its whole reply; returns the
/// outcome the reply carried.
pub async fn serve<O: ReplyOut>(
    request: &Request,
    peer: SocketAddr,
    shared: &Shared,
    actor: Actor,
    out: &mut O,
) -> io::Result<Outcome> {
    let kind = request.operation.kind();
    let outcome = match rules::plan(request) {
        Plan::Answer(outcome) => outcome,
        Plan::Mutate { user } => return mutate(request, user, peer, shared, actor, out).await,
        Plan::Query { user } => match query::query(&shared.state, &user, &request.operation) {
            // Searches read every user: everything applied must be durable.
            _ if !is_durable(shared, shared.state.applied_seq()).await => Outcome::Fail,
            Ok(QueryAnswer::Status(outcome)) => outcome,
            Ok(QueryAnswer::Reply(reply)) => {
                log_operation(shared, request, kind, Outcome::Ok);
                out.send(&reply).await?;
                out.finish().await?;
                return Ok(Outcome::Ok);
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
                stream_listing(listing, out).await?;
                out.finish().await?;
                return Ok(Outcome::Ok);
            }
        },
    };
    answer(request, kind, outcome, shared, out).await
}

/// Logs and writes a reply that is only a code.
async fn answer<O: ReplyOut>(
    request: &Request,
    kind: OpKind,
    outcome: Outcome,
    shared: &Shared,
    out: &mut O,
) -> io::Result<Outcome> {
    log_operation(shared, request, kind, outcome);
    let mut reply = BytesMut::with_capacity(4);
    put_code(&mut reply, kind.code(outcome));
    out.send(&reply).await?;
    out.finish().await?;
    Ok(outcome)
}

/// A mutation through the group-commit writer. A CONNECT first checks
/// whether the user's listed holder is gone (presence); what the mutation
/// changed that live sessions must hear of is told to them once it is
/// durable.
async fn mutate<O: ReplyOut>(
    request: &Request,
    user: String,
    peer: SocketAddr,
    shared: &Shared,
    actor: Actor,
    out: &mut O,
) -> io::Result<Outcome> {
    let kind = request.operation.kind();
    let own_session = match &actor {
        Actor::Session(session) => Some(session.id),
        _ => None,
    };
    let precheck = match request.operation {
        Operation::Connect { .. } => {
            presence::precheck(&shared.state, &shared.registry, &user).await
        }
        _ => Precheck::default(),
    };
    let classic = actor == Actor::Classic;
    let mutation = Mutation {
        user,
        operation: request.operation.clone(),
        peer_ip: peer.ip().to_canonical(),
        actor,
        takeover: precheck.takeover,
    };
    let user = mutation.user.clone();
    let outcome = shared.committer.submit(mutation).await;
    if outcome == Outcome::Ok {
        match request.operation {
            Operation::Connect { .. } => {
                if let Some(old) = precheck.live_holder.filter(|old| Some(*old) != own_session) {
                    shared
                        .registry
                        .disconnected(old, frame::REASON_CONNECTED_ELSEWHERE);
                }
                if classic {
                    shared.prober.connected(&user);
                }
            }
            Operation::Unregister => {
                shared.registry.log_out_others(
                    &user,
                    own_session.unwrap_or(NO_SESSION),
                    frame::REASON_UNREGISTERED,
                );
            }
            Operation::SetPassword { .. } => {
                shared.registry.log_out_others(
                    &user,
                    own_session.unwrap_or(NO_SESSION),
                    frame::REASON_PASSWORD_CHANGED,
                );
            }
            _ => {}
        }
    }
    answer(request, kind, outcome, shared, out).await
}

/// No session has this id: what a classic mutation passes as its own.
const NO_SESSION: SessionId = 0;

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
async fn stream_listing<O: ReplyOut>(
    mut listing: Box<rules::Listing>,
    out: &mut O,
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
        out.send(&buf).await?;
        buf.clear();
        if !more {
            return Ok(());
        }
    }
}

/// Hands the operation's record to the logger sink (never waits).
/// `outcome` is what the reply says: callers pass it after every wait for
/// durability, just before they write it.
pub(crate) fn log_operation(shared: &Shared, request: &Request, kind: OpKind, outcome: Outcome) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(bytes: &[u8]) -> (Option<Opening>, usize) {
        let mut src = BytesMut::from(bytes);
        let opening = Sniff.decode(&mut src).unwrap();
        (opening, src.len())
    }

    #[test]
    fn a_classic_request_is_decided_on_its_first_byte_and_keeps_every_byte() {
        assert_eq!(sniff(b"R"), (Some(Opening::Classic), 1));
        assert_eq!(sniff(b"REGISTER\0al\0"), (Some(Opening::Classic), 12));
        assert_eq!(sniff(&[0x16, 3, 1]), (Some(Opening::Tls), 3));
        assert_eq!(sniff(b""), (None, 0));
    }

    #[test]
    fn a_preface_is_consumed_and_what_follows_is_kept() {
        let mut bytes = frame::PREFACE.to_vec();
        assert_eq!(sniff(&bytes[..5]), (None, 5));
        assert_eq!(sniff(&bytes), (Some(Opening::Session), 0));
        bytes.extend_from_slice(b"\0\0\0\x05\x06\0\0\0\0");
        assert_eq!(sniff(&bytes), (Some(Opening::Session), 9));
    }

    #[test]
    fn a_prefix_of_the_preface_then_the_end_is_classic() {
        let mut src = BytesMut::from(&frame::PREFACE[..3]);
        assert_eq!(Sniff.decode_eof(&mut src).unwrap(), Some(Opening::Classic));
        assert_eq!(src.len(), 3);
        assert_eq!(Sniff.decode_eof(&mut BytesMut::new()).unwrap(), None);
    }
}
