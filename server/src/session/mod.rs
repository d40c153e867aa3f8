//! A framed session (`docs/PROTOCOL-EXTENSIONS.md`, "Accounts and
//! sessions"; frames in `peerdex_protocol::frame`): login, then many
//! requests in flight, heartbeats, server pushes, and when it ends, the
//! user it held is disconnected.
//!
//! Layout: [`login`] decides the `Login`; [`writer`] is the one task that
//! writes the session's frames; [`out`] cuts a reply into frames;
//! [`registry`] knows the live sessions. This module is the loop that reads
//! frames, runs each request as a task of its own through the same path
//! as a classic request ([`crate::connection::serve`]), and cleans up.

pub(crate) mod login;
pub(crate) mod out;
pub(crate) mod registry;
pub(crate) mod writer;

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::StreamExt;
use peerdex_protocol::frame::{self, Frame, FrameCodec, LoginCode, RequestBodyError, RequestId};
use peerdex_protocol::reply::put_code;
use peerdex_protocol::request::PartialRequest;
use peerdex_protocol::{OpKind, Operation, Outcome, Request};
use tokio::io::{AsyncReadExt, Chain};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::codec::FramedRead;

use crate::actor::{Actor, SessionActor, SessionId, Takeover};
use crate::connection::{log_operation, serve, ReplyOut, Shared};
use crate::durable::writer::Mutation;
use crate::log_record;
use out::FrameOut;
use registry::Notice;

/// Most requests of one session in flight; with this many, the session
/// reads no further frame until one finishes.
pub const MAX_IN_FLIGHT: usize = 256;

type Frames = FramedRead<Chain<Cursor<BytesMut>, OwnedReadHalf>, FrameCodec>;

/// What one session's request tasks share.
struct Context {
    id: SessionId,
    user: Arc<str>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    frames: mpsc::Sender<Frame>,
    /// What this session proves now (SET_PASSWORD changes it).
    credential: Mutex<Option<Arc<str>>>,
}

impl Context {
    fn credential(&self) -> Option<Arc<str>> {
        self.credential
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_credential(&self, credential: Option<Arc<str>>) {
        *self.credential.lock().unwrap_or_else(|p| p.into_inner()) = credential;
    }
}

/// Serves a session whose preface was read; `read` holds the bytes that
/// came after it.
pub async fn run(socket: TcpStream, peer: SocketAddr, read: BytesMut, shared: Arc<Shared>) {
    let (read_half, write_half) = socket.into_split();
    // The bytes read after the preface come first (a client may have sent
    // its login with the preface).
    let mut frames: Frames = FramedRead::new(Cursor::new(read).chain(read_half), FrameCodec::new());
    let (sender, queue) = mpsc::channel(writer::QUEUE);
    let mut writer = tokio::spawn(writer::run(
        write_half,
        queue,
        shared.heartbeat_interval,
        shared.heartbeat_timeout,
    ));

    let Some(decision) = log_in(&mut frames, &sender, peer, &shared).await else {
        drop(sender);
        let _ = writer.await;
        return;
    };
    let (login_user, decision) = decision;
    if decision.code != LoginCode::Ok {
        let _ = sender.send(Frame::LoginReply(decision.code)).await;
        let reason = match decision.code {
            LoginCode::Refused => "login refused",
            _ => "login failed",
        };
        let _ = sender.send(Frame::Close(reason.to_string())).await;
        drop(sender);
        let _ = writer.await;
        return;
    }
    let id = shared.registry.next_id();
    let mut writer_ended = false;
    let user: Arc<str> = Arc::from(login_user);
    let notices = shared.registry.register(id, user.clone());
    let context = Arc::new(Context {
        id,
        user,
        peer,
        shared: shared.clone(),
        frames: sender,
        credential: Mutex::new(decision.credential),
    });
    if context
        .frames
        .send(Frame::LoginReply(LoginCode::Ok))
        .await
        .is_ok()
    {
        tracing::debug!(%peer, session = id, "session logged in");
        writer_ended = serve_frames(&context, frames, notices, &mut writer).await;
    }
    shared.registry.remove(id);
    // The session is no longer live; what it held is released once every
    // request it started is done (a CONNECT in flight may still take the
    // user).
    let user = context.user.clone();
    drop(context);
    release(&shared, &user, id).await;
    if !writer_ended {
        let _ = writer.await;
    }
}

/// Reads the `Login` (within the request deadline) and decides it while
/// answering heartbeats. `None`: the session ended before a decision.
async fn log_in(
    frames: &mut Frames,
    sender: &mpsc::Sender<Frame>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<(String, login::Decision)> {
    let deadline = Instant::now() + shared.request_timeout;
    let login = loop {
        match timeout_at(deadline, frames.next()).await {
            Ok(Some(Ok(Ok(Frame::Login(login))))) => break login,
            Ok(Some(Ok(Ok(Frame::Ping(nonce))))) => {
                let _ = sender.send(Frame::Pong(nonce)).await;
            }
            Ok(Some(Ok(Ok(Frame::Pong(_))))) => {}
            Ok(Some(Ok(_))) => {
                // Not a login, or a malformed one: FAIL, then Close.
                tracing::debug!(%peer, "session did not start with a valid login");
                let _ = sender.send(Frame::LoginReply(LoginCode::Fail)).await;
                let _ = sender.send(Frame::Close("expected a login".into())).await;
                return None;
            }
            Ok(Some(Err(err))) => {
                tracing::debug!(%peer, error = %err, "unreadable session frame");
                return None;
            }
            Ok(None) | Err(_) => return None,
        }
    };
    let user = login.user.clone();
    let decide = login::decide(shared, login, peer.ip().to_canonical());
    tokio::pin!(decide);
    let mut silence = Instant::now() + shared.heartbeat_timeout;
    loop {
        tokio::select! {
            decision = &mut decide => return Some((user, decision)),
            frame = frames.next() => {
                silence = Instant::now() + shared.heartbeat_timeout;
                match frame {
                    Some(Ok(Ok(Frame::Ping(nonce)))) => {
                        let _ = sender.send(Frame::Pong(nonce)).await;
                    }
                    Some(Ok(Ok(Frame::Pong(_)))) => {}
                    Some(Ok(_)) => {
                        let _ = sender
                            .send(Frame::Close("nothing but Ping before the login reply".into()))
                            .await;
                        return None;
                    }
                    Some(Err(_)) | None => return None,
                }
            }
            _ = sleep_until(silence) => return None,
        }
    }
}

/// Why the frame loop stopped reading.
enum Stop {
    /// Send this `Close`, then end.
    Close(String),
    /// End without a word (the peer closed, or the stream broke).
    Quiet,
}

/// The logged-in session's loop: frames in, requests out to tasks, notices,
/// heartbeat timeout, server shutdown. True when it stopped because the
/// writer ended (its handle is then spent).
async fn serve_frames(
    context: &Arc<Context>,
    mut frames: Frames,
    mut notices: mpsc::Receiver<Notice>,
    writer: &mut tokio::task::JoinHandle<()>,
) -> bool {
    let mut writer_ended = false;
    let shared = &context.shared;
    let mut shutdown = shared.shutdown.clone();
    let mut in_flight = JoinSet::new();
    let mut silence = Instant::now() + shared.heartbeat_timeout;
    let stop = loop {
        if *shutdown.borrow() {
            break Stop::Close("server shutting down".into());
        }
        let reading = in_flight.len() < MAX_IN_FLIGHT;
        tokio::select! {
            frame = frames.next(), if reading => {
                silence = Instant::now() + shared.heartbeat_timeout;
                let frame = match frame {
                    Some(Ok(Ok(frame))) => frame,
                    Some(Ok(Err(bad))) => break Stop::Close(bad.to_string()),
                    Some(Err(err)) => {
                        tracing::debug!(session = context.id, error = %err, "session stream broken");
                        break Stop::Quiet;
                    }
                    None => break Stop::Quiet,
                };
                match frame {
                    Frame::Request { id, body } => {
                        if let Some(stop) = start_request(context, &mut in_flight, id, &body).await {
                            break stop;
                        }
                    }
                    Frame::Ping(nonce) => {
                        if context.frames.send(Frame::Pong(nonce)).await.is_err() {
                            break Stop::Quiet;
                        }
                    }
                    Frame::Pong(_) => {}
                    Frame::Close(_) => break Stop::Quiet,
                    Frame::Login(_) => break Stop::Close("one login per session".into()),
                    Frame::LoginReply(_) | Frame::Reply { .. } | Frame::Event(_) => {
                        break Stop::Close("frame kind not sent by clients".into())
                    }
                }
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {
                if !reading {
                    // The peer was not read while the session was full.
                    silence = Instant::now() + shared.heartbeat_timeout;
                }
            }
            notice = notices.recv() => match notice {
                Some(Notice::Event(event)) => {
                    if context.frames.send(Frame::Event(event)).await.is_err() {
                        break Stop::Quiet;
                    }
                }
                Some(Notice::LogOut(event)) => {
                    let _ = context.frames.send(Frame::Event(event)).await;
                    break Stop::Close("logged out".into());
                }
                None => break Stop::Quiet,
            },
            _ = sleep_until(silence), if reading => {
                tracing::debug!(session = context.id, "no heartbeat, closing the session");
                break Stop::Close("heartbeat timeout".into());
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    // The server is gone.
                    break Stop::Close("server shutting down".into());
                }
            }
            _ = &mut *writer => {
                writer_ended = true;
                break Stop::Quiet;
            }
        }
    };
    // Requests in flight finish (their mutations are queued already);
    // replies that can no longer be written are dropped by their tasks.
    while in_flight.join_next().await.is_some() {}
    if let Stop::Close(reason) = stop {
        let _ = context.frames.send(Frame::Close(reason)).await;
    }
    writer_ended
}

/// Starts the request in a `Request` frame, or answers it at once when it
/// cannot run. `Some`: the session must stop.
async fn start_request(
    context: &Arc<Context>,
    in_flight: &mut JoinSet<()>,
    id: RequestId,
    body: &[u8],
) -> Option<Stop> {
    let request = match frame::parse_request_body(body) {
        Ok(request) => request,
        Err(RequestBodyError::UnknownOp(name)) => {
            tracing::warn!(session = context.id, op = %name.escape_debug(), "unknown operation, closing");
            return Some(Stop::Close("unknown operation".into()));
        }
        Err(
            RequestBodyError::Incomplete { op: Some(op) } | RequestBodyError::Trailing { op, .. },
        ) => {
            if context.shared.log.is_enabled() {
                context
                    .shared
                    .log
                    .record(log_record::refused(op, PartialRequest::default()));
            }
            return fail(context, id, op).await;
        }
        Err(RequestBodyError::Incomplete { op: None }) => {
            return Some(Stop::Close("malformed request".into()));
        }
    };
    let kind = request.operation.kind();
    if !matches!(&request.user, Ok(user) if **user == *context.user) {
        log_operation(&context.shared, &request, kind, Outcome::Fail);
        return fail(context, id, kind).await;
    }
    let context = context.clone();
    in_flight.spawn(async move { run_request(&context, id, request).await });
    None
}

/// Answers request `id` with the catch-all code of `op`.
async fn fail(context: &Context, id: RequestId, op: OpKind) -> Option<Stop> {
    let mut reply = BytesMut::with_capacity(4);
    put_code(&mut reply, op.fail_code());
    let mut out = FrameOut::new(id, context.frames.clone());
    let sent = async {
        out.send(&reply).await?;
        out.finish().await
    };
    match sent.await {
        Ok(()) => None,
        Err(_) => Some(Stop::Quiet),
    }
}

/// One request of the session, through the classic path with the
/// session as its actor.
async fn run_request(context: &Context, id: RequestId, request: Request) {
    let shared = &context.shared;
    let mut new_credential = None;
    if let Operation::SetPassword {
        password: Ok(password),
    } = &request.operation
    {
        if !password.is_empty() {
            match shared.hasher.hash(password.clone()).await {
                Ok(hash) => new_credential = Some(hash),
                Err(err) => {
                    tracing::error!(error = %err, "cannot hash a new password");
                    log_operation(shared, &request, OpKind::SetPassword, Outcome::Fail);
                    let _ = fail(context, id, OpKind::SetPassword).await;
                    return;
                }
            }
        }
    }
    let actor = Actor::Session(SessionActor {
        id: context.id,
        credential: context.credential(),
        new_credential: new_credential.clone(),
    });
    let mut out = FrameOut::new(id, context.frames.clone());
    match serve(&request, context.peer, shared, actor, &mut out).await {
        Ok(Outcome::Ok) if new_credential.is_some() => context.set_credential(new_credential),
        Ok(_) => {}
        Err(err) => tracing::debug!(session = context.id, error = %err, "reply not delivered"),
    }
}

/// The session `id` ended: if it still holds `user`'s connection, the user
/// is disconnected, durably, as the server.
async fn release(shared: &Shared, user: &str, id: SessionId) {
    if shared.state.tables().holder(user) != Some(id) {
        return;
    }
    let mutation = Mutation {
        user: user.to_string(),
        operation: Operation::Disconnect,
        peer_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
        actor: Actor::Server,
        takeover: Some(Takeover::DeadSession(id)),
    };
    let outcome = shared.committer.submit(mutation).await;
    tracing::debug!(
        session = id,
        ?outcome,
        "session ended, its user disconnected"
    );
}
