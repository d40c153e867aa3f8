//! The stateless ceiling: a server that does everything a directory server
//! must do on the socket (read one complete request, answer, half-close,
//! drain, close) and nothing else. With one TCP connection per operation the
//! kernel's connection setup and teardown dominate, so its throughput is the
//! most any directory server can reach on this machine; our server is
//! reported as a fraction of it.
//!
//! It also accepts sessions (see [`crate::null_session`]), telling them
//! from classic requests by the first bytes as a directory does.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use bytes::{Bytes, BytesMut};
use peerdex_protocol::frame::{classify, Opening, PREFACE};
use peerdex_protocol::listen::listen;
use peerdex_protocol::reply::{put_code, put_count};
use peerdex_protocol::wire::{field_reader, read_request, RequestRead};
use peerdex_protocol::{OpKind, Request};

use crate::null_journal::NullJournal;
use crate::null_session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};

/// How long a client may take to send its request or close after the reply:
/// a stalled client must not hold a task forever.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this much is drained after the reply before closing anyway.
const MAX_DRAIN: usize = 64 * 1024;

/// Size of the first read: a classic request is a few short fields.
const FIRST_READ: usize = 512;

/// The two possible answers, encoded once.
#[derive(Clone)]
pub struct Replies {
    /// `"0\0"`: every operation without a body.
    plain: Bytes,
    /// `"0\0" "0\0"`: LIST_USERS / LIST_CONTENT with an empty list.
    empty_list: Bytes,
}

impl Replies {
    pub fn new() -> Self {
        let mut plain = BytesMut::new();
        put_code(&mut plain, 0);
        let mut empty_list = plain.clone();
        put_count(&mut empty_list, 0);
        Replies {
            plain: plain.freeze(),
            empty_list: empty_list.freeze(),
        }
    }

    /// The reply to every request of `op`: code 0, and an empty list for
    /// the listings.
    pub fn for_op(&self, op: OpKind) -> Bytes {
        match op {
            OpKind::ListUsers | OpKind::ListContent => self.empty_list.clone(),
            _ => self.plain.clone(),
        }
    }
}

/// Serves forever, one task per connection; with a journal, every
/// mutating request is durable before its reply.
pub async fn serve(listener: TcpListener, journal: Option<NullJournal>) -> io::Result<()> {
    let replies = Replies::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, replies.clone(), journal.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the
                // pending connection stays in the backlog.
                eprintln!("null-server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, replies: Replies, journal: Option<NullJournal>) {
    // The first read is the one the classic reader would make anyway (a
    // request arrives in one segment), so telling a session from a classic
    // request costs the classic path no system call.
    let mut first = BytesMut::with_capacity(FIRST_READ);
    loop {
        match timeout(CLIENT_TIMEOUT, stream.read_buf(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        match classify(&first) {
            Opening::NeedMore => continue,
            Opening::Session => {
                let _ = first.split_to(PREFACE.len());
                null_session::serve(stream, first, replies).await;
                return;
            }
            Opening::Classic | Opening::Tls => break,
        }
    }
    let request = {
        let mut reader = field_reader((&first[..]).chain(&mut stream));
        timeout(CLIENT_TIMEOUT, read_request(&mut reader)).await
    };
    let reply = match request {
        Ok(Ok(RequestRead::Request(request))) => {
            let kind = request.operation.kind();
            match &journal {
                Some(journal) if mutates(kind) => {
                    let record = journal_record(kind, &request);
                    if journal.append(&record).await {
                        Some(replies.for_op(kind))
                    } else {
                        let mut b = BytesMut::new();
                        put_code(&mut b, kind.fail_code());
                        Some(b.freeze())
                    }
                }
                _ => Some(replies.for_op(kind)),
            }
        }
        // PROTOCOL.md: an unknown op is closed without a reply.
        Ok(Ok(RequestRead::UnknownOp(_) | RequestRead::Closed)) => None,
        // A malformed or truncated request of a known op gets its catch-all.
        Ok(Err(e)) => e.op.map(|op| {
            let mut b = BytesMut::new();
            put_code(&mut b, op.fail_code());
            b.freeze()
        }),
        Err(_) => None,
    };
    if let Some(reply) = reply {
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
    drain(&mut stream).await;
}

/// The operations a durable server must make durable before answering.
fn mutates(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Register
            | OpKind::Unregister
            | OpKind::Connect
            | OpKind::Disconnect
            | OpKind::Publish
            | OpKind::PublishContent
            | OpKind::Delete
    )
}

/// What the durable ceiling writes for one mutation: the operation and the
/// user, about the size of our journal's effect records.
fn journal_record(kind: OpKind, request: &Request) -> Vec<u8> {
    let user = request.user.as_deref().unwrap_or("");
    let mut record = Vec::with_capacity(kind.name().len() + user.len() + 2);
    record.extend_from_slice(kind.name().as_bytes());
    record.push(0);
    record.extend_from_slice(user.as_bytes());
    record.push(0);
    record
}

/// Reads until EOF (bounded in time and bytes) so that closing never finds
/// unread bytes, which would turn the close into a reset that can destroy
/// the reply in flight.
async fn drain(stream: &mut TcpStream) {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < MAX_DRAIN {
        match timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => total += n,
        }
    }
}

/// The `null-server` subcommand.
pub async fn run(ip: IpAddr, port: u16, durable: Option<&Path>) -> anyhow::Result<()> {
    let journal = match durable {
        Some(dir) => Some(
            NullJournal::open(dir)
                .with_context(|| format!("cannot open the journal in {}", dir.display()))?,
        ),
        None => None,
    };
    // The directory server's listener, backlog included: the ceiling must
    // not lose handshakes that ours keeps.
    let listener = listen(SocketAddr::new(ip, port))?;
    println!("null-server listening on {}", listener.local_addr()?);
    serve(listener, journal).await?;
    Ok(())
}

/// A null server on a free loopback port, in the caller's runtime: what the
/// session client's and the lanes' tests run against.
#[cfg(test)]
pub async fn spawn_for_tests() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(serve(listener, None));
    addr
}
