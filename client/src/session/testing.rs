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

    pub(super) fn session(&self, share: &Path) -> Session {
        session_for(self.port, share)
    }
}

pub(super) fn session_for(port: u16, share: &Path) -> Session {
    let directory = DirectoryClient::new("127.0.0.1", port);
    let config = SessionConfig {
        profile: ServerProfile::in_memory(&directory.key()),
        directory,
        time: TimeSource::local(),
        share: ShareDir::new(share).unwrap(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        progress: false,
        auto_share: None,
    };
    Session::new(config, Arc::new(Mutex::new(Vec::new())))
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
