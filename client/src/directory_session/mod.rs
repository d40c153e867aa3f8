//! [`SessionLink`]: one persistent session with a peerdex directory
//! ("Accounts and sessions" in docs/PROTOCOL-EXTENSIONS.md, frames in
//! `peerdex_protocol::frame`).
//!
//! [`SessionLink::open`] connects, sends the preface and the `Login` in one
//! write and waits for the `LoginReply`; anything else (a close, silence
//! within the first-byte budget, bytes that are not a `LoginReply`) is
//! [`OpenError::NotSession`]: the caller falls back to classic connections.
//!
//! Once open, two tasks own the socket: the writer sends queued frames and
//! a `Ping` after [`Timing::heartbeat`] without sending; the reader answers
//! `Ping`s, reassembles each request's `ReplyPart`s and `Reply` and hands
//! the bytes to the waiting [`SessionLink::call`], which decodes them with
//! the classic reply reader. Events go to the channel returned by `open`.
//! Everything is bounded: requests in flight, a reassembled reply, the
//! event queue; a session silent for [`Timing::silence`], a bad frame or a
//! `Close` ends it, and every waiting and later call fails at once with
//! [`CallError::Lost`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use peerdex_protocol::frame::{
    Frame, FrameCodec, FrameError, Login, LoginCode, EVENT_DISCONNECTED, EVENT_LOGGED_OUT,
    HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, PREFACE,
};
use peerdex_protocol::wire::{field_reader, read_reply, ReplyError};
use peerdex_protocol::{Reply, Request};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::timeout;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::directory_client::{describe_io, CONNECT_TIMEOUT, REPLY_TIMEOUT};

/// Most requests in flight on one session; more wait for a slot.
pub const MAX_IN_FLIGHT: usize = 256;
/// Longest reply reassembled from parts (a listing of a very large
/// directory); a longer one fails its call.
pub const MAX_REPLY_LEN: usize = 64 * 1024 * 1024;
/// Events kept until the shell reads them; later ones are dropped.
pub const EVENT_QUEUE: usize = 64;
/// Frames queued for the writer.
const OUTGOING_QUEUE: usize = 64;

/// The session's clocks; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A `Ping` is sent after this long without sending anything.
    pub heartbeat: Duration,
    /// The session is dead after this long without receiving anything.
    pub silence: Duration,
    /// Bound on one call's reply.
    pub reply: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: HEARTBEAT_INTERVAL,
            silence: HEARTBEAT_TIMEOUT,
            reply: REPLY_TIMEOUT,
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("cannot reach directory {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The server does not speak sessions (a classic server, or one of
    /// ours from before sessions): use classic connections.
    #[error("directory {addr} does not open sessions ({why})")]
    NotSession { addr: String, why: String },
    /// The account is protected and the password is not its password.
    #[error("wrong password for {user}")]
    Refused { user: String },
    /// The server could not log the user in (malformed name, storage).
    #[error("directory {addr} could not log {user} in")]
    Failed { addr: String, user: String },
}

/// Why a call in a session got no reply.
#[derive(Debug, Error)]
pub enum CallError {
    /// The session ended (before or while waiting).
    #[error("session with {addr} lost: {reason}")]
    Lost { addr: String, reason: String },
    #[error("directory {addr} did not answer in time")]
    Timeout { addr: String },
    #[error("bad reply from directory {addr}: {source}")]
    BadReply {
        addr: String,
        #[source]
        source: ReplyError,
    },
    #[error("cannot encode request: {0}")]
    Encode(#[from] FrameError),
}

/// What the directory told the session outside any reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session's user was disconnected by the server.
    Disconnected { reason: String },
    /// The session no longer acts for its account; a `Close` follows.
    LoggedOut { reason: String },
    /// The session ended without our asking (server gone, heartbeats
    /// missed, a `Close`, a bad frame).
    Lost { reason: String },
}

/// One open session, for one user. Dropping it closes the connection.
pub struct SessionLink {
    user: String,
    addr: String,
    /// The local address of the session's socket: the IP CONNECT sends.
    local: SocketAddr,
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Frame>,
    slots: Semaphore,
    timing: Timing,
    tasks: [AbortHandle; 2],
}

impl std::fmt::Debug for SessionLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLink")
            .field("user", &self.user)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// State shared by the calls and the reader.
struct Shared {
    waiters: Mutex<Waiters>,
    /// Woken when the session ends.
    ended: tokio::sync::Notify,
}

/// Requests in flight, by id; `dead` once the session ended.
#[derive(Default)]
struct Waiters {
    next_id: u32,
    pending: HashMap<u32, Pending>,
    dead: Option<String>,
    /// We asked for the end: no `Lost` event.
    closing: bool,
    /// The server said the session no longer acts for its account.
    logged_out: bool,
}

/// One request's reply as it arrives.
struct Pending {
    parts: BytesMut,
    done: oneshot::Sender<Result<Bytes, String>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh id with its waiter, unless the session is dead.
    fn register(&self) -> Result<(NonZeroU32, oneshot::Receiver<Result<Bytes, String>>), String> {
        let mut waiters = self.lock();
        if let Some(reason) = &waiters.dead {
            return Err(reason.clone());
        }
        let id = loop {
            waiters.next_id = waiters.next_id.wrapping_add(1);
            if let Some(id) = NonZeroU32::new(waiters.next_id) {
                if !waiters.pending.contains_key(&id.get()) {
                    break id;
                }
            }
        };
        let (done, receiver) = oneshot::channel();
        waiters.pending.insert(
            id.get(),
            Pending {
                parts: BytesMut::new(),
                done,
            },
        );
        Ok((id, receiver))
    }

    fn forget(&self, id: NonZeroU32) {
        self.lock().pending.remove(&id.get());
    }

    /// A reply frame: appended to its request's bytes, handed over when
    /// last. A reply for no request in flight (one that timed out) is
    /// dropped.
    fn part(&self, id: NonZeroU32, more: bool, body: &[u8]) {
        let mut waiters = self.lock();
        let Some(pending) = waiters.pending.get_mut(&id.get()) else {
            tracing::debug!("reply for request {id} that nobody waits for");
            return;
        };
        if pending.parts.len() + body.len() > MAX_REPLY_LEN {
            if let Some(pending) = waiters.pending.remove(&id.get()) {
                let _ = pending
                    .done
                    .send(Err(format!("reply longer than {MAX_REPLY_LEN} bytes")));
            }
            return;
        }
        pending.parts.extend_from_slice(body);
        if !more {
            if let Some(pending) = waiters.pending.remove(&id.get()) {
                let _ = pending.done.send(Ok(pending.parts.freeze()));
            }
        }
    }

    /// Ends the session: every waiter fails. Returns whether this ended it
    /// without our asking (the first end, not a close of ours).
    fn die(&self, reason: &str) -> bool {
        let mut waiters = self.lock();
        if waiters.dead.is_some() {
            return false;
        }
        waiters.dead = Some(reason.to_string());
        for (_, pending) in waiters.pending.drain() {
            let _ = pending.done.send(Err(reason.to_string()));
        }
        let unasked = !waiters.closing;
        drop(waiters);
        self.ended.notify_waiters();
        unasked
    }
}

/// Tells when a session ended, without keeping it open.
#[derive(Clone)]
pub struct EndSignal(Arc<Shared>);

impl EndSignal {
    /// Returns once the session has ended.
    pub async fn ended(&self) {
        loop {
            let notified = self.0.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.lock().dead.is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Whether it ended without our asking and without a logout: a loss
    /// worth reconnecting after.
    pub fn lost(&self) -> bool {
        let waiters = self.0.lock();
        waiters.dead.is_some() && !waiters.closing && !waiters.logged_out
    }
}

impl SessionLink {
    /// Opens a session at `host:port` and logs `login.user` in. `first_byte`
    /// bounds the wait for the server's first byte (the short probe budget
    /// for a server of unknown kind); the rest of the login reply is bound
    /// by `timing.reply`.
    pub async fn open(
        host: &str,
        port: u16,
        login: Login,
        first_byte: Duration,
        timing: Timing,
    ) -> Result<(SessionLink, mpsc::Receiver<SessionEvent>), OpenError> {
        let addr = display_addr(host, port);
        let unreachable = |reason: String| OpenError::Unreachable {
            addr: addr.clone(),
            reason,
        };
        let not_session = |why: String| OpenError::NotSession {
            addr: addr.clone(),
            why,
        };
        // A login that cannot be encoded (a name longer than a field) says
        // nothing about the server: refused before connecting.
        let user = login.user.clone();
        let mut opening = BytesMut::from(&PREFACE[..]);
        if let Err(err) =
            tokio_util::codec::Encoder::encode(&mut FrameCodec, Frame::Login(login), &mut opening)
        {
            tracing::debug!("cannot encode the login of {user:?}: {err}");
            return Err(OpenError::Failed { addr, user });
        }
        let mut stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(unreachable(describe_io(&err))),
            Err(_) => return Err(unreachable("connection timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_err(|err| unreachable(describe_io(&err)))?;
        if let Err(err) = stream.write_all(&opening).await {
            return Err(not_session(describe_io(&err)));
        }
        if timeout(first_byte, stream.peek(&mut [0u8; 1]))
            .await
            .is_err()
        {
            return Err(not_session(format!("no answer within {first_byte:?}")));
        }
        let (read, write) = stream.into_split();
        let mut frames = FramedRead::new(read, FrameCodec::new());
        let mut writer = FramedWrite::new(write, FrameCodec::new());
        let code = loop {
            let next = match timeout(timing.reply, frames.next()).await {
                Ok(next) => next,
                Err(_) => return Err(not_session("no login reply in time".into())),
            };
            match next {
                Some(Ok(Ok(Frame::LoginReply(code)))) => break code,
                Some(Ok(Ok(Frame::Ping(nonce)))) => {
                    if let Err(err) = writer.send(Frame::Pong(nonce)).await {
                        return Err(not_session(err.to_string()));
                    }
                }
                Some(Ok(Ok(Frame::Pong(_)))) => {}
                Some(Ok(Ok(other))) => {
                    return Err(not_session(format!(
                        "{:?} frame before the login reply",
                        other.kind()
                    )))
                }
                Some(Ok(Err(bad))) => return Err(not_session(bad.to_string())),
                Some(Err(err)) => return Err(not_session(err.to_string())),
                None => return Err(not_session("closed".into())),
            }
        };
        match code {
            LoginCode::Ok => {}
            LoginCode::Refused => return Err(OpenError::Refused { user }),
            LoginCode::Fail => return Err(OpenError::Failed { addr, user }),
        }
        let shared = Arc::new(Shared {
            waiters: Mutex::new(Waiters::default()),
            ended: tokio::sync::Notify::new(),
        });
        let (outgoing, queued) = mpsc::channel(OUTGOING_QUEUE);
        let (events, received) = mpsc::channel(EVENT_QUEUE);
        let writing = tokio::spawn(write_frames(writer, queued, Arc::clone(&shared), timing));
        let reading = tokio::spawn(read_frames(
            frames,
            outgoing.clone(),
            events,
            Arc::clone(&shared),
            timing,
        ));
        let link = SessionLink {
            user,
            addr,
            local,
            shared,
            outgoing,
            slots: Semaphore::new(MAX_IN_FLIGHT),
            timing,
            tasks: [writing.abort_handle(), reading.abort_handle()],
        };
        Ok((link, received))
    }

    /// The user the session acts for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The local address of the session's connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A handle that tells when this session ends.
    pub fn end_signal(&self) -> EndSignal {
        EndSignal(Arc::clone(&self.shared))
    }

    /// Whether the session can still carry requests.
    pub fn is_alive(&self) -> bool {
        self.shared.lock().dead.is_none()
    }

    /// Sends `request` stamped with `datetime` and reads its reply; other
    /// calls may be in flight at the same time.
    pub async fn call(&self, request: &Request, datetime: &str) -> Result<Reply, CallError> {
        let op = request.operation.kind();
        let lost = |reason: String| CallError::Lost {
            addr: self.addr.clone(),
            reason,
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| lost("closed".into()))?;
        let placeholder = NonZeroU32::MIN;
        // Encoded before an id is taken, so that an unencodable request
        // leaves nothing behind.
        let Frame::Request { body, .. } = Frame::request(placeholder, request, datetime)? else {
            return Err(lost("internal: not a request frame".into()));
        };
        let (id, reply) = self.shared.register().map_err(lost)?;
        if self
            .outgoing
            .send(Frame::Request { id, body })
            .await
            .is_err()
        {
            self.shared.forget(id);
            return Err(lost(self.dead_reason()));
        }
        let bytes = match timeout(self.timing.reply, reply).await {
            Err(_) => {
                self.shared.forget(id);
                return Err(CallError::Timeout {
                    addr: self.addr.clone(),
                });
            }
            Ok(Err(_)) => return Err(lost(self.dead_reason())),
            Ok(Ok(Err(reason))) => return Err(lost(reason)),
            Ok(Ok(Ok(bytes))) => bytes,
        };
        read_reply(&mut field_reader(&bytes[..]), op)
            .await
            .map_err(|source| CallError::BadReply {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Ends the session politely (a `Close`, then the connection's end);
    /// no `Lost` event follows.
    pub async fn close(&self) {
        self.shared.lock().closing = true;
        let _ = timeout(
            Duration::from_millis(500),
            self.outgoing.send(Frame::Close("bye".into())),
        )
        .await;
    }

    fn dead_reason(&self) -> String {
        self.shared
            .lock()
            .dead
            .clone()
            .unwrap_or_else(|| "closed".into())
    }
}

impl Drop for SessionLink {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        // The writer ends on its own once the queue is drained (a Close
        // sent by `close` still goes out); the reader holds a sender, so
        // it is stopped here.
        self.tasks[1].abort();
        self.shared.die("closed by this client");
        let writer = self.tasks[0].clone();
        // A writer stuck on a full socket must not outlive the link; with
        // no runtime left (process exit) it is gone already.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    writer.abort();
                });
            }
            Err(_) => writer.abort(),
        }
    }
}

/// The writer task: queued frames, and a `Ping` when idle.
async fn write_frames(
    mut writer: FramedWrite<OwnedWriteHalf, FrameCodec>,
    mut queued: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
    timing: Timing,
) {
    let mut nonce: u32 = 0;
    loop {
        let frame = match timeout(timing.heartbeat, queued.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                nonce = nonce.wrapping_add(1);
                Frame::Ping(nonce)
            }
        };
        let closing = matches!(frame, Frame::Close(_));
        if let Err(err) = writer.send(frame).await {
            if shared.die(&format!("cannot send: {err}")) {
                tracing::debug!("session writer: {err}");
            }
            break;
        }
        if closing {
            break;
        }
    }
    let _ = writer.get_mut().shutdown().await;
}

/// The reader task: replies to their waiters, heartbeats, events, the end.
async fn read_frames(
    mut frames: FramedRead<OwnedReadHalf, FrameCodec>,
    outgoing: mpsc::Sender<Frame>,
    events: mpsc::Sender<SessionEvent>,
    shared: Arc<Shared>,
    timing: Timing,
) {
    let reason = loop {
        let next = match timeout(timing.silence, frames.next()).await {
            Ok(next) => next,
            Err(_) => break format!("nothing heard for {:?}", timing.silence),
        };
        let frame = match next {
            None => break "closed by the directory".to_string(),
            Some(Err(err)) => break format!("broken stream: {err}"),
            Some(Ok(Err(bad))) => break bad.to_string(),
            Some(Ok(Ok(frame))) => frame,
        };
        match frame {
            Frame::Reply { id, more, body } => shared.part(id, more, &body),
            Frame::Ping(nonce) => {
                // A full queue is sending already: that is a heartbeat too.
                let _ = outgoing.try_send(Frame::Pong(nonce));
            }
            Frame::Pong(_) => {}
            Frame::Event(event) => {
                let reason = event.fields.into_iter().next().unwrap_or_default();
                let event = match event.name.as_str() {
                    EVENT_DISCONNECTED => SessionEvent::Disconnected { reason },
                    EVENT_LOGGED_OUT => {
                        shared.lock().logged_out = true;
                        SessionEvent::LoggedOut { reason }
                    }
                    other => {
                        tracing::debug!("ignoring event {other:?}");
                        continue;
                    }
                };
                if events.try_send(event).is_err() {
                    tracing::debug!("event queue full: event dropped");
                }
            }
            Frame::Close(reason) if reason.is_empty() => break "closed by the directory".into(),
            Frame::Close(reason) => break format!("closed by the directory: {reason}"),
            other => break format!("unexpected {:?} frame", other.kind()),
        }
    };
    if shared.die(&reason) {
        let _ = events.try_send(SessionEvent::Lost { reason });
    }
}

/// `host:port`, bracketed for IPv6.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests;
