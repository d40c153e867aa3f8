//! Starts a real server in-process on 127.0.0.1:0 and speaks raw bytes to it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use peerdex_server::{Config, Server, ServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running in-process server.
pub struct TestServer {
    /// Where the server listens (127.0.0.1 and the OS-chosen port).
    pub addr: SocketAddr,
    /// Resolves the server's shutdown future.
    stop: oneshot::Sender<()>,
    /// The task running `Server::run`, to collect its result.
    task: JoinHandle<Result<(), ServerError>>,
}

pub fn config(data_dir: &Path) -> Config {
    Config::new("127.0.0.1".parse().unwrap(), 0, data_dir.to_path_buf())
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer { addr, stop, task }
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(self) -> Result<(), ServerError> {
        let _ = self.stop.send(());
        self.task.await.expect("server task")
    }

    /// Sends `request` and reads the whole reply until the server closes.
    pub async fn exchange(&self, request: &[u8]) -> Vec<u8> {
        exchange(self.addr, request).await
    }

    /// Sends the fields of a request and returns the reply.
    pub async fn send(&self, fields: &[&str]) -> Vec<u8> {
        self.exchange(&request(fields)).await
    }
}

/// Encodes fields as NUL-terminated strings.
pub fn request(fields: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        out.extend_from_slice(field.as_bytes());
        out.push(0);
    }
    out
}

pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("server closes after the reply")
        .expect("clean close");
    reply
}

pub const DT: &str = "21/11/2026 09:05:07";

/// Registers and connects `user` at 10.0.0.1:`port`.
pub async fn connected(server: &TestServer, user: &str, port: u16) {
    assert_eq!(server.send(&["REGISTER", DT, user]).await, b"0\0");
    let port = port.to_string();
    assert_eq!(
        server.send(&["CONNECT", DT, user, "10.0.0.1", &port]).await,
        b"0\0"
    );
}

/// Registers `user` and connects it at a listener of its own on
/// 127.0.0.1, which answers presence probes while the returned listener
/// lives (a CONNECT of a user whose listed address does not answer takes
/// the entry over).
pub async fn connected_live(server: &TestServer, user: &str) -> tokio::net::TcpListener {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    assert_eq!(server.send(&["REGISTER", DT, user]).await, b"0\0");
    assert_eq!(
        server
            .send(&["CONNECT", DT, user, "127.0.0.1", &port])
            .await,
        b"0\0"
    );
    listener
}
