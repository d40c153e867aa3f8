//! A session client for the load generator: one persistent connection,
//! logged in once, carrying many requests at once, each reply matched to
//! its request by id (docs/PROTOCOL-EXTENSIONS.md, "Accounts and sessions").
//!
//! The benchmark has a small session client of its own, so that what it
//! measures is the server and the frames, not a client library's retries,
//! reconnects or event handling. A
//! reply is returned as the concatenated bytes of its parts, which the
//! caller reads with the same classic readers as a classic reply, so both
//! transports are checked by one piece of code.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use peerdex_protocol::frame::{
    Frame, FrameCodec, FrameError, Login, LoginCode, HEARTBEAT_INTERVAL, PREFACE,
};
use peerdex_protocol::Secret;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// What the benchmark sends as `CLIENT_VERSION`.
pub const CLIENT_VERSION: &str = concat!("peerdex-bench/", env!("CARGO_PKG_VERSION"));

/// Why a session or one of its requests failed.
#[derive(Debug, Clone, Error)]
pub enum SessionError {
    #[error("connect: {0}")]
    Connect(Arc<io::Error>),
    #[error("login answered {0:?}")]
    Login(LoginCode),
    #[error("no login reply within {0:?}")]
    LoginTimeout(Duration),
    #[error("session closed: {0}")]
    Closed(Arc<str>),
    #[error("protocol: {0}")]
    Protocol(Arc<str>),
}

impl SessionError {
    fn closed(why: impl Into<Arc<str>>) -> Self {
        SessionError::Closed(why.into())
    }

    fn protocol(why: impl Into<Arc<str>>) -> Self {
        SessionError::Protocol(why.into())
    }

    /// A short class for the error counters.
    pub fn class(&self) -> &'static str {
        match self {
            SessionError::Connect(_) => "session connect",
            SessionError::Login(_) | SessionError::LoginTimeout(_) => "session login",
            SessionError::Closed(_) => "session closed",
            SessionError::Protocol(_) => "session protocol",
        }
    }
}

impl From<FrameError> for SessionError {
    fn from(e: FrameError) -> Self {
        SessionError::protocol(e.to_string())
    }
}

type Transport = Framed<TcpStream, FrameCodec>;

/// Requests waiting for their replies, and why the session ended if it did.
#[derive(Default)]
struct Pending {
    waiting: HashMap<u32, Waiter>,
    ended: Option<SessionError>,
}

/// One request in flight: the reply parts so far and who waits for them.
struct Waiter {
    parts: BytesMut,
    done: oneshot::Sender<Result<Bytes, SessionError>>,
}

impl Pending {
    /// Ends the session: every waiting request fails with `why`, and so
    /// does every later one.
    fn end(&mut self, why: SessionError) {
        for (_, waiter) in self.waiting.drain() {
            let _ = waiter.done.send(Err(why.clone()));
        }
        self.ended.get_or_insert(why);
    }
}

/// A logged-in session. Dropping it sends `Close` and closes.
pub struct Session {
    outgoing: mpsc::UnboundedSender<Frame>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU32,
    /// Events the server pushed (none is expected in a benchmark).
    events: Arc<AtomicU64>,
    reader: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The writer sends `Close` once the channel is closed (when the
        // sender drops with us); the reader is of no more use.
        self.reader.abort();
    }
}

/// Connects, sends the preface and `Login`, and waits for the answer. A
/// `Ping` before the answer is answered; anything else is an error.
async fn handshake(
    addr: SocketAddr,
    source: Option<IpAddr>,
    user: &str,
    password: &Secret,
    timeout: Duration,
) -> Result<(Transport, LoginCode), SessionError> {
    let mut stream = connect(addr, source)
        .await
        .map_err(|e| SessionError::Connect(Arc::new(e)))?;
    // Requests are small and latency is what is measured.
    let _ = stream.set_nodelay(true);
    let login = Frame::Login(Login {
        user: user.to_string(),
        password: password.clone(),
        client_version: CLIENT_VERSION.to_string(),
    });
    let mut first = BytesMut::from(&PREFACE[..]);
    tokio_util::codec::Encoder::encode(&mut FrameCodec, &login, &mut first)?;
    stream
        .write_all(&first)
        .await
        .map_err(|e| SessionError::closed(format!("sending the login: {e}")))?;
    let mut framed = Framed::new(stream, FrameCodec);
    let answer = tokio::time::timeout(timeout, async {
        loop {
            match framed.next().await {
                Some(Ok(Ok(Frame::LoginReply(code)))) => return Ok(code),
                Some(Ok(Ok(Frame::Ping(nonce)))) => framed.send(Frame::Pong(nonce)).await?,
                Some(Ok(Ok(Frame::Close(reason)))) => {
                    return Err(SessionError::closed(format!(
                        "before the login reply: {reason}"
                    )))
                }
                Some(Ok(Ok(other))) => {
                    return Err(SessionError::protocol(format!(
                        "{:?} frame before the login reply",
                        other.kind()
                    )))
                }
                Some(Ok(Err(bad))) => return Err(SessionError::protocol(bad.to_string())),
                Some(Err(e)) => return Err(e.into()),
                None => return Err(SessionError::closed("before the login reply")),
            }
        }
    })
    .await
    .map_err(|_| SessionError::LoginTimeout(timeout))??;
    Ok((framed, answer))
}

/// Connects from `source` if given (any 127.x.y.z reaches a loopback
/// server, and each is an address of its own for the server's throttling).
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

/// One login and nothing else (the logins benchmark), from `source` if
/// given: the code the server answered. The connection is closed right
/// after.
pub async fn login_once(
    addr: SocketAddr,
    source: Option<IpAddr>,
    user: &str,
    password: &Secret,
    timeout: Duration,
) -> Result<LoginCode, SessionError> {
    let (mut framed, code) = handshake(addr, source, user, password, timeout).await?;
    if code == LoginCode::Ok {
        let _ = framed.send(Frame::Close(String::new())).await;
    }
    Ok(code)
}

impl Session {
    /// Opens a session of `user`; any login code but OK is an error.
    pub async fn open(
        addr: SocketAddr,
        user: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<Session, SessionError> {
        let (framed, code) = handshake(addr, None, user, password, timeout).await?;
        if code != LoginCode::Ok {
            return Err(SessionError::Login(code));
        }
        let (sink, stream) = framed.split();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let events = Arc::new(AtomicU64::new(0));
        let (outgoing, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(sink, queue, pending.clone()));
        let reader = tokio::spawn(read_loop(
            stream,
            outgoing.clone(),
            pending.clone(),
            events.clone(),
        ));
        Ok(Session {
            outgoing,
            pending,
            next_id: AtomicU32::new(1),
            events,
            reader,
        })
    }

    /// Sends one classic request (its encoded bytes) and returns the
    /// classic reply's bytes. Many calls may be in flight at once. Dropping
    /// the future forgets the request (a late reply is then ignored).
    pub async fn call(&self, request: Bytes) -> Result<Bytes, SessionError> {
        let id = self.fresh_id();
        let (done, reply) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if let Some(why) = &pending.ended {
                return Err(why.clone());
            }
            pending.waiting.insert(
                id.get(),
                Waiter {
                    parts: BytesMut::new(),
                    done,
                },
            );
        }
        let _forget = Forget {
            pending: &self.pending,
            id: id.get(),
        };
        self.outgoing
            .send(Frame::Request { id, body: request })
            .map_err(|_| SessionError::closed("the writer stopped"))?;
        match reply.await {
            Ok(result) => result,
            Err(_) => Err(SessionError::closed("the reader stopped")),
        }
    }

    /// Events pushed by the server so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Whether the session ended (closed by either side or broken).
    pub fn ended(&self) -> Option<SessionError> {
        lock(&self.pending).ended.clone()
    }

    /// An id not in flight: ids wrap around after 2^32 - 1 requests, by
    /// which time the earlier request with the same id is long answered.
    fn fresh_id(&self) -> NonZeroU32 {
        loop {
            if let Some(id) = NonZeroU32::new(self.next_id.fetch_add(1, Ordering::Relaxed)) {
                return id;
            }
        }
    }
}

/// Removes a request from the pending table when its caller stops waiting
/// (answered, failed or timed out), so that a timed-out request does not
/// stay there forever.
struct Forget<'a> {
    pending: &'a Mutex<Pending>,
    id: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiting.remove(&self.id);
    }
}

/// The table's lock; a panic while it was held cannot leave it
/// inconsistent (every update is one map operation), so poisoning is
/// ignored.
fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes queued frames, batching whatever is queued into one flush, and
/// sends a `Ping` after [`HEARTBEAT_INTERVAL`] without anything to send so
/// that an idle session (between rounds) stays alive. When the session is
/// dropped it sends `Close`.
async fn write_loop(
    mut sink: futures::stream::SplitSink<Transport, Frame>,
    mut queue: mpsc::UnboundedReceiver<Frame>,
    pending: Arc<Mutex<Pending>>,
) {
    let mut nonce: u32 = 0;
    loop {
        let frame = match tokio::time::timeout(HEARTBEAT_INTERVAL, queue.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let _ = sink.send(Frame::Close(String::new())).await;
                let _ = sink.close().await;
                return;
            }
            Err(_) => {
                nonce = nonce.wrapping_add(1);
                Frame::Ping(nonce)
            }
        };
        let mut result = sink.feed(frame).await;
        while result.is_ok() {
            match queue.try_recv() {
                Ok(frame) => result = sink.feed(frame).await,
                Err(_) => break,
            }
        }
        if let Err(e) = result.and(sink.flush().await) {
            lock(&pending).end(SessionError::closed(format!("writing: {e}")));
            return;
        }
    }
}

/// Reads frames: assembles replies and hands each to its caller, answers
/// `Ping`, counts events, and ends the session on `Close`, on a frame a
/// server must not send and on a broken connection.
async fn read_loop(
    mut stream: futures::stream::SplitStream<Transport>,
    outgoing: mpsc::UnboundedSender<Frame>,
    pending: Arc<Mutex<Pending>>,
    events: Arc<AtomicU64>,
) {
    let why = loop {
        match stream.next().await {
            Some(Ok(Ok(Frame::Reply { id, more, body }))) => {
                let mut table = lock(&pending);
                // A reply to a request whose caller gave up is dropped.
                if let Some(waiter) = table.waiting.get_mut(&id.get()) {
                    waiter.parts.extend_from_slice(&body);
                    if !more {
                        if let Some(waiter) = table.waiting.remove(&id.get()) {
                            let _ = waiter.done.send(Ok(waiter.parts.freeze()));
                        }
                    }
                }
            }
            Some(Ok(Ok(Frame::Ping(nonce)))) => {
                let _ = outgoing.send(Frame::Pong(nonce));
            }
            Some(Ok(Ok(Frame::Pong(_)))) => {}
            Some(Ok(Ok(Frame::Event(_)))) => {
                events.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Ok(Frame::Close(reason)))) => {
                break SessionError::closed(format!("by the server: {reason:?}"))
            }
            Some(Ok(Ok(other))) => {
                break SessionError::protocol(format!("server sent a {:?} frame", other.kind()))
            }
            Some(Ok(Err(bad))) => break SessionError::protocol(bad.to_string()),
            Some(Err(e)) => break SessionError::from(e),
            None => break SessionError::closed("by the server without Close"),
        }
    };
    lock(&pending).end(why);
}

#[cfg(test)]
mod tests {
    use futures::future::join_all;
    use peerdex_protocol::{OpKind, Operation, Outcome, Reply};

    use super::*;
    use crate::client::{call, read_whole_reply};
    use crate::model;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn request(user: usize, operation: Operation) -> Bytes {
        model::encode(user, operation, "01/01/2026 00:00:00")
            .expect("encodable")
            .freeze()
    }

    #[tokio::test]
    async fn many_requests_in_flight_each_get_their_reply() {
        let addr = crate::null_server::spawn_for_tests().await;
        let session = Session::open(addr, "bench-u0", &Secret::default(), TIMEOUT)
            .await
            .expect("login");
        let calls = (0..200).map(|i| {
            let (operation, op) = if i % 2 == 0 {
                (Operation::ListUsers, OpKind::ListUsers)
            } else {
                (Operation::Disconnect, OpKind::Disconnect)
            };
            let session = &session;
            async move {
                let body = session.call(request(0, operation)).await.expect("reply");
                read_whole_reply(&body[..], op)
                    .await
                    .expect("a whole reply")
            }
        });
        for (i, reply) in join_all(calls).await.into_iter().enumerate() {
            match reply {
                Reply::Users(users) => assert!(i % 2 == 0 && users.is_empty()),
                Reply::Status(Outcome::Ok) => assert!(i % 2 == 1),
                other => panic!("request {i}: {other:?}"),
            }
        }
        assert_eq!(session.events(), 0);
        assert!(session.ended().is_none());
        crate::lanes::set_password(
            &session,
            "bench-u0",
            crate::lanes::random_password(),
            TIMEOUT,
        )
        .await
        .expect("the null server accepts SET_PASSWORD");
    }

    #[tokio::test]
    async fn logins_and_classic_requests_share_the_port() {
        let addr = crate::null_server::spawn_for_tests().await;
        let source = Some(IpAddr::from([127, 0, 0, 2]));
        let code = login_once(addr, source, "bench-u1", &Secret::new("pw"), TIMEOUT)
            .await
            .expect("a login reply");
        assert_eq!(code, LoginCode::Ok);
        let reply = call(
            addr,
            &request(1, Operation::Disconnect),
            OpKind::Disconnect,
            TIMEOUT,
        )
        .await
        .expect("a classic reply");
        assert_eq!(reply.outcome(), Outcome::Ok);
    }

    #[tokio::test]
    async fn an_unknown_op_ends_the_session_and_fails_its_requests() {
        let addr = crate::null_server::spawn_for_tests().await;
        let session = Session::open(addr, "bench-u2", &Secret::default(), TIMEOUT)
            .await
            .expect("login");
        let result = session.call(Bytes::from_static(b"NO_SUCH_OP\0")).await;
        assert!(matches!(result, Err(SessionError::Closed(_))), "{result:?}");
        let again = session.call(request(2, Operation::ListUsers)).await;
        assert!(again.is_err(), "a closed session takes no more requests");
        assert!(session.ended().is_some());
    }
}
