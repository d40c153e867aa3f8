//! Test support for the session's tests: a fake directory on 127.0.0.1
//! that records requests, and a session pointed at it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use peerdex_protocol::reply::put_code;
use peerdex_protocol::wire::{field_reader, read_request, RequestRead};
use peerdex_protocol::Request;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::{Printed, Session, SessionConfig};
use crate::directory_client::DirectoryClient;
use crate::peer::share_dir::ShareDir;
use crate::server_profiles::ServerProfile;
use crate::time_source::TimeSource;

/// A fake directory: answers each request with `answer(request)` and
/// records the requests.
pub(super) struct FakeDirectory {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeDirectory {
    pub(super) async fn start(
        answer: impl Fn(&Request, SocketAddr) -> bytes::BytesMut + Send + Sync + 'static,
    ) -> Self {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let (mut sock, source) = socket.accept().await.unwrap();
                let mut reader = field_reader(&mut sock);
                let Ok(RequestRead::Request(request)) = read_request(&mut reader).await else {
                    continue;
                };
                let reply = answer(&request, source);
                seen.lock().unwrap().push(request);
                sock.write_all(&reply).await.unwrap();
            }
        });
        Self { port, requests }
    }

    pub(super) fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn session(&self, share: &Path) -> Session {
        session_for(self.port, share)
    }
}

/// A session keeping its publication records in `state_dir`.
pub(super) fn session_in(port: u16, share: &Path, state_dir: &Path) -> Session {
    let mut session = session_for(port, share);
    session.config.state_dir = Some(state_dir.to_path_buf());
    session
}

pub(super) fn session_for(port: u16, share: &Path) -> Session {
    session_with_passwords(port, share, crate::passwords::Passwords::none())
}

pub(super) fn code(code: u8) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    put_code(&mut out, code);
    out
}

pub(super) async fn run(session: &mut Session, line: &str) -> Printed {
    let command = crate::shell::command::parse(line).unwrap().unwrap();
    session.execute(command).await.0
}

/// What a fake session directory saw of one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SeenLogin {
    pub(super) user: String,
    pub(super) password: String,
}

/// A fake peerdex directory that opens sessions: `login` decides each
/// login's code, `answer` each request's reply (as [`FakeDirectory`]);
/// classic connections are answered the same way. Records logins and
/// requests (with whether they came in a session).
pub(super) struct FakeSessionDirectory {
    pub(super) port: u16,
    pub(super) logins: Arc<Mutex<Vec<SeenLogin>>>,
    pub(super) requests: Arc<Mutex<Vec<(bool, Request)>>>,
    /// Sends an event to every live session.
    pub(super) events: tokio::sync::broadcast::Sender<peerdex_protocol::frame::Event>,
}

impl FakeSessionDirectory {
    pub(super) async fn start(
        login: impl Fn(&str, &str) -> peerdex_protocol::frame::LoginCode + Send + Sync + 'static,
        answer: impl Fn(&Request, SocketAddr) -> bytes::BytesMut + Send + Sync + 'static,
    ) -> Self {
        use futures::{SinkExt, StreamExt};
        use peerdex_protocol::frame::{self, Frame, FrameCodec, LoginCode};
        use tokio::io::AsyncReadExt;
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let logins = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (events, _) = tokio::sync::broadcast::channel::<peerdex_protocol::frame::Event>(16);
        let (login, answer) = (Arc::new(login), Arc::new(answer));
        let (seen_logins, seen, event_source) =
            (Arc::clone(&logins), Arc::clone(&requests), events.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, source) = socket.accept().await.unwrap();
                let (login, answer) = (Arc::clone(&login), Arc::clone(&answer));
                let (seen_logins, seen) = (Arc::clone(&seen_logins), Arc::clone(&seen));
                let mut events = event_source.subscribe();
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    if sock.peek(&mut first).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if first[0] != frame::PREFACE[0] {
                        let mut reader = field_reader(&mut sock);
                        let Ok(RequestRead::Request(request)) = read_request(&mut reader).await
                        else {
                            return;
                        };
                        let reply = answer(&request, source);
                        seen.lock().unwrap().push((false, request));
                        let _ = sock.write_all(&reply).await;
                        return;
                    }
                    let mut preface = [0u8; 8];
                    if sock.read_exact(&mut preface).await.is_err() {
                        return;
                    }
                    let mut framed = tokio_util::codec::Framed::new(sock, FrameCodec::new());
                    let Some(Ok(Ok(Frame::Login(l)))) = framed.next().await else {
                        return;
                    };
                    let code = login(&l.user, l.password.expose());
                    seen_logins.lock().unwrap().push(SeenLogin {
                        user: l.user.clone(),
                        password: l.password.expose().to_string(),
                    });
                    let _ = framed.send(Frame::LoginReply(code)).await;
                    if code != LoginCode::Ok {
                        let _ = framed.send(Frame::Close("refused".into())).await;
                        return;
                    }
                    loop {
                        let next = tokio::select! {
                            next = framed.next() => next,
                            event = events.recv() => {
                                match event {
                                    // How a test makes the server go away.
                                    Ok(event) if event.name == "__DROP__" => return,
                                    Ok(event) => { let _ = framed.send(Frame::Event(event)).await; }
                                    Err(_) => return,
                                }
                                continue;
                            }
                        };
                        match next {
                            Some(Ok(Ok(Frame::Request { id, body }))) => {
                                let request = frame::parse_request_body(&body).unwrap();
                                let reply = answer(&request, source);
                                seen.lock().unwrap().push((true, request));
                                for part in frame::reply_frames(id, reply.freeze()) {
                                    let _ = framed.send(part).await;
                                }
                            }
                            Some(Ok(Ok(Frame::Ping(n)))) => {
                                let _ = framed.send(Frame::Pong(n)).await;
                            }
                            Some(Ok(Ok(Frame::Close(_)))) | None => return,
                            _ => {}
                        }
                    }
                });
            }
        });
        Self {
            port,
            logins,
            requests,
            events,
        }
    }

    pub(super) fn logins(&self) -> Vec<SeenLogin> {
        self.logins.lock().unwrap().clone()
    }

    /// The requests seen, each with whether it came in a session.
    pub(super) fn requests(&self) -> Vec<(bool, Request)> {
        self.requests.lock().unwrap().clone()
    }

    pub(super) fn session(&self, share: &Path) -> Session {
        session_for(self.port, share)
    }
}

/// A session whose passwords come from `passwords`.
pub(super) fn session_with_passwords(
    port: u16,
    share: &Path,
    passwords: crate::passwords::Passwords,
) -> Session {
    let directory = DirectoryClient::new("127.0.0.1", port);
    let config = SessionConfig {
        profile: ServerProfile::in_memory(&directory.key()),
        directory,
        time: TimeSource::local(),
        share: ShareDir::new(share).unwrap(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        progress: false,
        auto_share: None,
        passwords: Arc::new(passwords),
        state_dir: None,
    };
    Session::new(config, Arc::new(Mutex::new(Vec::new())))
}
