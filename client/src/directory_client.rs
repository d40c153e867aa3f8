//! [`DirectoryClient`]: one TCP connection per directory operation.
//!
//! Each call connects, sends the encoded request in a single write, reads
//! the reply to its end with the protocol crate's reader, then closes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use peerdex_protocol::wire::{field_reader, read_reply, ReplyError};
use peerdex_protocol::{CodecError, Reply, Request};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Default bound on connecting to the directory.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on sending the request and reading the whole reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a directory operation got no usable reply.
#[derive(Debug, Error)]
pub enum DirectoryError {
    #[error("cannot reach directory {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("directory {addr} did not answer in time")]
    Timeout { addr: String },
    #[error("cannot send to directory {addr}: {reason}")]
    Send { addr: String, reason: String },
    #[error("bad reply from directory {addr}: {source}")]
    BadReply {
        addr: String,
        #[source]
        source: ReplyError,
    },
    /// Closed or reset before the first reply byte: what a classic
    /// directory does on an op it does not know (PROTOCOL.md), so the
    /// extension client reads it as "no directory extensions".
    #[error("directory {addr} closed the connection without a reply ({reason})")]
    NoReply { addr: String, reason: String },
    /// No reply byte within a probe's short budget: what a classic
    /// directory that neither answers nor closes an unknown op looks like.
    #[error("directory {addr} did not answer within {waited:?}")]
    Silent { addr: String, waited: Duration },
    #[error("cannot encode request: {0}")]
    Encode(#[from] CodecError),
    /// A session login with a password that is not the account's.
    #[error("wrong password for {user}")]
    WrongPassword { user: String },
    /// A session login the directory could not carry out.
    #[error("directory {addr} could not log {user} in")]
    LoginFailed { addr: String, user: String },
    /// The session carrying the request ended.
    #[error("session with {addr} lost: {reason}")]
    SessionLost { addr: String, reason: String },
    /// An op that only a session may carry, and the directory opens none.
    #[error("directory {addr} opens no sessions")]
    NoSessions { addr: String },
    /// No password could be had for a login.
    #[error(transparent)]
    Password(#[from] crate::passwords::PasswordError),
}

impl DirectoryError {
    /// The answer of a directory that does not know the op: a close before
    /// any reply byte, or a code the op does not define (some servers send
    /// `-1`).
    pub fn is_unknown_op_answer(&self) -> bool {
        matches!(
            self,
            DirectoryError::NoReply { .. }
                | DirectoryError::BadReply {
                    source: ReplyError::UnknownCode(..),
                    ..
                }
        )
    }
}

/// Talks to the directory server at one address.
#[derive(Debug, Clone)]
pub struct DirectoryClient {
    /// Host name or IP of the directory, as given with `-s`.
    host: String,
    /// Port of the directory, as given with `-p`.
    port: u16,
    /// Bound on establishing the TCP connection.
    connect_timeout: Duration,
    /// Bound on the request/reply exchange once connected.
    reply_timeout: Duration,
}

impl DirectoryClient {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            connect_timeout: CONNECT_TIMEOUT,
            reply_timeout: REPLY_TIMEOUT,
        }
    }

    /// Overrides the timeouts (tests use short ones).
    #[cfg(test)]
    pub fn with_timeouts(mut self, connect: Duration, reply: Duration) -> Self {
        self.connect_timeout = connect;
        self.reply_timeout = reply;
        self
    }

    /// The host as given.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port as given.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends `request` stamped with `datetime` and reads its reply.
    pub async fn call(&self, request: &Request, datetime: &str) -> Result<Reply, DirectoryError> {
        self.call_with(|_| request.clone(), datetime).await
    }

    /// Like [`Self::call`], but gives up with [`DirectoryError::Silent`]
    /// when no reply byte arrived within `first_byte`: how an extension
    /// op is tried on a directory that may be classic and never answer it.
    pub async fn call_probing(
        &self,
        request: &Request,
        datetime: &str,
        first_byte: Duration,
    ) -> Result<Reply, DirectoryError> {
        self.exchange(|_| request.clone(), datetime, Some(first_byte))
            .await
    }

    /// The host and port as given, the key under which findings about this
    /// server are remembered.
    pub fn key(&self) -> String {
        self.addr()
    }

    /// Like [`Self::call`], but the request is built once the connection is
    /// up, from the connection's local address (CONNECT sends the IP the
    /// directory sees us on).
    pub async fn call_with(
        &self,
        build: impl Fn(SocketAddr) -> Request,
        datetime: &str,
    ) -> Result<Reply, DirectoryError> {
        self.exchange(build, datetime, None).await
    }

    async fn exchange(
        &self,
        build: impl Fn(SocketAddr) -> Request,
        datetime: &str,
        first_byte: Option<Duration>,
    ) -> Result<Reply, DirectoryError> {
        // A request that cannot be encoded is refused before connecting, so
        // that the directory never sees a connection closed without a request.
        build(SocketAddr::from(([0, 0, 0, 0], 0))).encode(datetime)?;
        let addr = self.addr();
        let unreachable = |reason: String| DirectoryError::Unreachable {
            addr: addr.clone(),
            reason,
        };
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let mut stream = match timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(unreachable(describe_io(&err))),
            Err(_) => return Err(unreachable("connection timed out".into())),
        };
        let local = stream
            .local_addr()
            .map_err(|err| unreachable(describe_io(&err)))?;
        let request = build(local);
        let op = request.operation.kind();
        let bytes = request.encode(datetime)?;
        let exchange = async {
            if let Err(err) = stream.write_all(&bytes).await {
                let reason = describe_io(&err);
                return Err(if is_closed_by_peer(&err) {
                    DirectoryError::NoReply {
                        addr: addr.clone(),
                        reason,
                    }
                } else {
                    DirectoryError::Send {
                        addr: addr.clone(),
                        reason,
                    }
                });
            }
            if let Some(budget) = first_byte {
                // Data, a close or an error all end the wait; the reader
                // below sorts them out.
                if timeout(budget, stream.peek(&mut [0u8; 1])).await.is_err() {
                    return Err(DirectoryError::Silent {
                        addr: addr.clone(),
                        waited: budget,
                    });
                }
            }
            let mut counted = Counted::new(&mut stream);
            let result = read_reply(&mut field_reader(&mut counted), op).await;
            let replied = counted.seen_bytes();
            result.map_err(|source| no_reply_or_bad(&addr, replied, source))
        };
        match timeout(self.reply_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(DirectoryError::Timeout { addr: addr.clone() }),
        }
    }
}

/// Sorts a reply error: nothing at all received and the connection closed
/// or reset is [`DirectoryError::NoReply`], the rest a bad reply.
fn no_reply_or_bad(addr: &str, replied: bool, source: ReplyError) -> DirectoryError {
    let closed = match &source {
        ReplyError::Closed | ReplyError::Codec(CodecError::Truncated) => Some("closed".into()),
        ReplyError::Codec(CodecError::Io(err)) if is_closed_by_peer(err) => Some(describe_io(err)),
        _ => None,
    };
    match closed {
        Some(reason) if !replied => DirectoryError::NoReply {
            addr: addr.to_string(),
            reason,
        },
        _ => DirectoryError::BadReply {
            addr: addr.to_string(),
            source,
        },
    }
}

/// Errors that mean the other side closed or reset the connection.
fn is_closed_by_peer(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// An [`AsyncRead`] that remembers whether any byte came through, so that
/// "closed before replying" can be told from "closed mid-reply".
struct Counted<R> {
    inner: R,
    seen: bool,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Self { inner, seen: false }
    }

    fn seen_bytes(&self) -> bool {
        self.seen
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.seen = true;
        }
        poll
    }
}

/// A short, lower-case reason for an I/O error (`connection refused`),
/// without the `(os error N)` suffix.
pub fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => err.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::{Operation, Outcome, UserEntry};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn request(user: &str, operation: Operation) -> Request {
        Request {
            datetime: None,
            user: Ok(user.into()),
            operation,
        }
    }

    /// A fake directory: accepts one connection, reads until the request
    /// has `fields` NUL-terminated fields, answers `reply`, closes. Returns
    /// the request bytes it got.
    async fn fake_directory(
        fields: usize,
        reply: &'static [u8],
    ) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while got.iter().filter(|&&b| b == 0).count() < fields {
                let n = sock.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            sock.write_all(reply).await.unwrap();
            got
        });
        (port, task)
    }

    const DT: &str = "21/11/2026 09:05:07";

    #[cfg(target_os = "linux")]
    #[test]
    fn io_reasons_are_short() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(describe_io(&refused), "connection refused");
        let custom = io::Error::other("Boom");
        assert_eq!(describe_io(&custom), "boom");
    }

    #[tokio::test]
    async fn register_sends_one_request_and_reads_the_code() {
        let (port, server) = fake_directory(3, b"1\0").await;
        let client = DirectoryClient::new("127.0.0.1", port);
        let reply = client
            .call(&request("alice", Operation::Register), DT)
            .await
            .unwrap();
        assert_eq!(reply, Reply::Status(Outcome::UsernameInUse));
        assert_eq!(
            server.await.unwrap(),
            b"REGISTER\x0021/11/2026 09:05:07\0alice\0"
        );
    }

    #[tokio::test]
    async fn list_users_reply_is_read_completely() {
        let (port, server) = fake_directory(
            3,
            b"0\x002\0al\x00127.0.0.1\x004000\0bo\x0010.0.0.2\x005000\0",
        )
        .await;
        let client = DirectoryClient::new("127.0.0.1", port);
        let reply = client
            .call(&request("al", Operation::ListUsers), DT)
            .await
            .unwrap();
        let Reply::Users(users) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            users[1],
            UserEntry {
                name: "bo".into(),
                ip: "10.0.0.2".into(),
                port: "5000".into()
            }
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connect_request_is_built_from_the_local_address() {
        let (port, server) = fake_directory(5, b"0\0").await;
        let client = DirectoryClient::new("127.0.0.1", port);
        let reply = client
            .call_with(
                |local| {
                    request(
                        "al",
                        Operation::Connect(peerdex_protocol::ConnectAddr {
                            ip: Ok(Some(local.ip())),
                            port: Ok(4321),
                        }),
                    )
                },
                DT,
            )
            .await
            .unwrap();
        assert_eq!(reply, Reply::Status(Outcome::Ok));
        let sent = server.await.unwrap();
        assert!(sent.ends_with(b"al\x00127.0.0.1\x004321\0"), "{sent:?}");
    }

    #[tokio::test]
    async fn unreachable_directory_is_an_error_with_a_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = DirectoryClient::new("127.0.0.1", port);
        let err = client
            .call(&request("al", Operation::Register), DT)
            .await
            .unwrap_err();
        assert!(matches!(err, DirectoryError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("connection refused"), "{err}");
    }

    #[tokio::test]
    async fn close_without_reply_and_garbage_code_are_errors() {
        for reply in [&b""[..], b"7\0", b"0\0x", b"0"] {
            let reply: &'static [u8] = reply;
            let (port, _server) = fake_directory(3, reply).await;
            let client = DirectoryClient::new("127.0.0.1", port);
            let op = if reply.starts_with(b"0") {
                Operation::ListUsers
            } else {
                Operation::Register
            };
            let err = client.call(&request("al", op), DT).await.unwrap_err();
            if reply.is_empty() {
                // Nothing at all: how a classic directory refuses an op.
                assert!(matches!(err, DirectoryError::NoReply { .. }), "{err}");
            } else {
                assert!(matches!(err, DirectoryError::BadReply { .. }), "{err}");
            }
        }
    }

    #[tokio::test]
    async fn silent_directory_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(sock);
        });
        let client = DirectoryClient::new("127.0.0.1", port)
            .with_timeouts(Duration::from_secs(1), Duration::from_millis(200));
        let err = client
            .call(&request("al", Operation::Register), DT)
            .await
            .unwrap_err();
        assert!(matches!(err, DirectoryError::Timeout { .. }), "{err}");
    }
}
