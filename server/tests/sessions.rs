//! Framed sessions over loopback: login, pipelined requests, heartbeats,
//! presence. Raw frames, built with the protocol crate's codec.

mod common;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use peerdex_protocol::frame::{Frame, FrameCodec, Login, LoginCode, RequestId, PREFACE};
use peerdex_protocol::{OpKind, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Encoder, Framed};

use common::{config, request, TestServer, DT};

/// Longest wait for anything a test expects.
const PATIENCE: Duration = Duration::from_secs(20);

/// A session client speaking raw frames.
struct Client {
    framed: Framed<TcpStream, FrameCodec>,
    /// Reply bytes of requests whose final `Reply` has not come yet.
    partial: HashMap<u32, Vec<u8>>,
    /// Frames of each reply (to see that long ones come in parts).
    parts: HashMap<u32, usize>,
}

fn id(n: u32) -> RequestId {
    NonZeroU32::new(n).unwrap()
}

impl Client {
    /// Connects and sends the preface and the login in one write.
    async fn open(server: &TestServer, user: &str, password: &str) -> Client {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let mut bytes = BytesMut::from(&PREFACE[..]);
        FrameCodec
            .encode(
                Frame::Login(Login {
                    user: user.to_string(),
                    password: Secret::new(password),
                    client_version: "test/1".to_string(),
                }),
                &mut bytes,
            )
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        Client {
            framed: Framed::new(stream, FrameCodec),
            partial: HashMap::new(),
            parts: HashMap::new(),
        }
    }

    /// Opens a session and returns its login code.
    async fn login(server: &TestServer, user: &str, password: &str) -> (Client, LoginCode) {
        let mut client = Client::open(server, user, password).await;
        match client.next().await {
            Some(Frame::LoginReply(code)) => (client, code),
            other => panic!("expected a login reply, got {other:?}"),
        }
    }

    async fn logged_in(server: &TestServer, user: &str) -> Client {
        let (client, code) = Client::login(server, user, "").await;
        assert_eq!(code, LoginCode::Ok);
        client
    }

    /// The next frame that is not a heartbeat (a `Ping` is answered);
    /// `None` when the server closed.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.framed.next())
                .await
                .expect("a frame in time")?
                .expect("a well-formed frame stream")
                .expect("a well-formed frame");
            match frame {
                Frame::Ping(nonce) => self.framed.send(Frame::Pong(nonce)).await.unwrap(),
                Frame::Pong(_) => {}
                other => return Some(other),
            }
        }
    }

    async fn send(&mut self, n: u32, fields: &[&str]) {
        self.framed
            .send(Frame::Request {
                id: id(n),
                body: request(fields).into(),
            })
            .await
            .unwrap();
    }

    /// Reads frames until some request's reply is complete: its id and
    /// bytes.
    async fn any_reply(&mut self) -> (u32, Vec<u8>) {
        loop {
            match self.next().await {
                Some(Frame::Reply { id, more, body }) => {
                    let id = id.get();
                    self.partial.entry(id).or_default().extend_from_slice(&body);
                    *self.parts.entry(id).or_default() += 1;
                    if !more {
                        return (id, self.partial.remove(&id).unwrap());
                    }
                }
                other => panic!("expected a reply, got {other:?}"),
            }
        }
    }

    /// Sends one request and waits for its reply.
    async fn ask(&mut self, n: u32, fields: &[&str]) -> Vec<u8> {
        self.send(n, fields).await;
        let (got, reply) = self.any_reply().await;
        assert_eq!(got, n);
        reply
    }

    /// Reads until the server closes; returns the frames that came.
    /// REGISTERs `user` (ids 1 and 2) and CONNECTs it at a live listener,
    /// kept open by the caller so that the entry is not taken over.
    async fn register_and_connect(&mut self, user: &str) -> (TcpListener, String) {
        assert_eq!(self.ask(1, &["REGISTER", DT, user]).await, b"0\0");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        assert_eq!(
            self.ask(2, &["CONNECT", DT, user, "127.0.0.1", &port])
                .await,
            b"0\0"
        );
        (listener, port)
    }

    async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            frames.push(frame);
        }
        frames
    }
}

/// LIST_USERS over a classic connection, as `name ip port` lines.
async fn listed(server: &TestServer, asker: &str) -> Vec<String> {
    let reply = server.send(&["LIST_USERS", DT, asker]).await;
    let fields: Vec<String> = reply
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(fields[0], "0", "{fields:?}");
    fields[2..]
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| c.join(" "))
        .collect()
}

/// Polls LIST_USERS until `pred` holds (presence acts in the background).
async fn eventually(server: &TestServer, asker: &str, pred: impl Fn(&[String]) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let users = listed(server, asker).await;
        if pred(&users) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened; listed: {users:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(users: &[String]) -> Vec<&str> {
    users.iter().filter_map(|u| u.split(' ').next()).collect()
}

/// A port nothing listens on (bound, then released).
async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_open_login_is_ok_and_a_malformed_one_fails_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    // No such account, no password: 0.
    let (mut client, code) = Client::login(&server, "al", "").await;
    assert_eq!(code, LoginCode::Ok);
    assert_eq!(client.ask(1, &["REGISTER", DT, "al"]).await, b"0\0");
    // An account without a password: 0 for anyone, with a password or not.
    let (_other, code) = Client::login(&server, "al", "whatever").await;
    assert_eq!(code, LoginCode::Ok);
    // An invalid user name: FAIL, then Close.
    let (mut bad, code) = Client::login(&server, "bad name", "").await;
    assert_eq!(code, LoginCode::Fail);
    assert!(matches!(bad.until_closed().await[..], [Frame::Close(_)]));
    // A login with a missing field: FAIL, then Close.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = PREFACE.to_vec();
    let body = b"al\0\0";
    bytes.extend(((5 + body.len()) as u32).to_be_bytes());
    bytes.push(1);
    bytes.extend(0u32.to_be_bytes());
    bytes.extend(body);
    stream.write_all(&bytes).await.unwrap();
    let mut raw = Client {
        framed: Framed::new(stream, FrameCodec),
        partial: HashMap::new(),
        parts: HashMap::new(),
    };
    assert_eq!(raw.next().await, Some(Frame::LoginReply(LoginCode::Fail)));
    assert!(matches!(raw.until_closed().await[..], [Frame::Close(_)]));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_protected_account_needs_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let (mut owner, code) = Client::login(&server, "al", "s3cret").await;
    assert_eq!(code, LoginCode::Ok);
    // REGISTER in a session that logged in with a password: protected.
    assert_eq!(owner.ask(1, &["REGISTER", DT, "al"]).await, b"0\0");
    let (mut wrong, code) = Client::login(&server, "al", "guess").await;
    assert_eq!(code, LoginCode::Refused);
    assert!(matches!(wrong.until_closed().await[..], [Frame::Close(_)]));
    let (_empty, code) = Client::login(&server, "al", "").await;
    assert_eq!(code, LoginCode::Refused);
    let (mut right, code) = Client::login(&server, "al", "s3cret").await;
    assert_eq!(code, LoginCode::Ok);
    assert_eq!(
        right.ask(1, &["CONNECT", DT, "al", "127.0.0.1", "9"]).await,
        b"0\0"
    );
    // A classic request for the protected account changes nothing.
    assert_eq!(
        server.send(&["DISCONNECT", DT, "al"]).await,
        [OpKind::Disconnect.fail_code() + b'0', 0]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn pipelined_requests_interleave_and_a_long_listing_comes_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut client = Client::logged_in(&server, "al").await;
    let (_listener, port) = client.register_and_connect("al").await;
    // More requests in flight than a session runs at once: the server
    // stops reading until some finish, and every one is answered.
    let description = "d".repeat(200);
    let files: Vec<String> = (0..600).map(|n| format!("file{n:04}")).collect();
    for (n, file) in files.iter().enumerate() {
        client
            .send(100 + n as u32, &["PUBLISH", DT, "al", file, &description])
            .await;
    }
    let mut answered = HashMap::new();
    for _ in 0..files.len() {
        let (id, reply) = client.any_reply().await;
        assert!(answered.insert(id, reply).is_none(), "one reply per id");
    }
    assert_eq!(answered.len(), files.len());
    assert!(answered.values().all(|r| r == b"0\0"));
    // A long listing and short requests at once.
    client.send(5000, &["LIST_CONTENT", DT, "al", "al"]).await;
    client.send(5001, &["LIST_USERS", DT, "al"]).await;
    client.send(5002, &["REGISTER", DT, "al"]).await;
    let mut replies = HashMap::new();
    for _ in 0..3 {
        let (id, reply) = client.any_reply().await;
        replies.insert(id, reply);
    }
    assert_eq!(replies[&5002], b"1\0");
    assert_eq!(
        replies[&5001],
        request(&["0", "1", "al", "127.0.0.1", &port])
    );
    let mut expected = vec!["0".to_string(), files.len().to_string()];
    for file in &files {
        expected.push(file.clone());
        expected.push(description.clone());
    }
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(replies[&5000], request(&expected));
    assert!(client.parts[&5000] > 1, "a listing over 64 KiB is in parts");
    // The same listing over a classic connection is the same bytes.
    assert_eq!(
        server.send(&["LIST_CONTENT", DT, "al", "al"]).await,
        replies[&5000]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_for_another_user_gets_the_catch_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    assert_eq!(server.send(&["REGISTER", DT, "bob"]).await, b"0\0");
    let mut client = Client::logged_in(&server, "al").await;
    for (op, fields) in [
        (OpKind::Register, vec!["REGISTER", DT, "carol"]),
        (OpKind::Unregister, vec!["UNREGISTER", DT, "bob"]),
        (OpKind::ListUsers, vec!["LIST_USERS", DT, "bob"]),
    ] {
        let expected = [b'0' + op.fail_code(), 0];
        assert_eq!(client.ask(7, &fields).await, expected, "{op}");
    }
    // Nothing changed: bob is still registered, carol is not.
    assert_eq!(server.send(&["REGISTER", DT, "bob"]).await, b"1\0");
    assert_eq!(server.send(&["REGISTER", DT, "carol"]).await, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_op_closes_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut client = Client::logged_in(&server, "al").await;
    client.send(3, &["FROBNICATE", DT, "al"]).await;
    assert!(matches!(
        &client.until_closed().await[..],
        [Frame::Close(_)]
    ));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.heartbeat_interval = Duration::from_millis(50);
    config.heartbeat_timeout = Duration::from_millis(400);
    let server = TestServer::start(config).await;
    let (client, code) = Client::login(&server, "al", "").await;
    assert_eq!(code, LoginCode::Ok);
    // Read raw frames without answering anything.
    let mut framed = client.framed;
    let mut pings = 0;
    let close = loop {
        match tokio::time::timeout(PATIENCE, framed.next()).await.unwrap() {
            Some(Ok(Ok(Frame::Ping(_)))) => pings += 1,
            Some(Ok(Ok(Frame::Close(reason)))) => break reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(pings >= 1, "the server pings a quiet session");
    assert_eq!(close, "heartbeat timeout");
    // A client that answers stays: pings keep it alive past the timeout.
    let (mut client, _) = Client::login(&server, "bo", "").await;
    for _ in 0..3 {
        client.framed.send(Frame::Ping(9)).await.unwrap();
        let reply = tokio::time::timeout(PATIENCE, client.framed.next())
            .await
            .unwrap();
        assert!(matches!(
            reply,
            Some(Ok(Ok(Frame::Pong(_) | Frame::Ping(_))))
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.ask(1, &["REGISTER", DT, "bo"]).await, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_closed_session_disconnects_its_user_durably() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut client = Client::logged_in(&server, "al").await;
    let (_listener, _port) = client.register_and_connect("al").await;
    let _watcher = common::connected_live(&server, "zz").await;
    assert_eq!(names(&listed(&server, "zz").await), ["al", "zz"]);
    drop(client);
    eventually(&server, "zz", |users| names(users) == ["zz"]).await;
    server.stop().await.unwrap();
    let server = TestServer::start(common::config(dir.path())).await;
    assert_eq!(names(&listed(&server, "zz").await), ["zz"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_connect_takes_over_the_entry_of_a_dead_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // Long heartbeats: the old session's death is found by the pre-check,
    // not by its timeout.
    config.heartbeat_timeout = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let mut one = Client::logged_in(&server, "al").await;
    assert_eq!(one.ask(1, &["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(
        one.ask(2, &["CONNECT", DT, "al", "127.0.0.1", "9"]).await,
        b"0\0"
    );
    // A second session of the same (open) account while the first lives:
    // the entry is still held.
    let mut two = Client::logged_in(&server, "al").await;
    assert_eq!(
        two.ask(1, &["CONNECT", DT, "al", "127.0.0.1", "10"]).await,
        b"2\0"
    );
    drop(one);
    // Once the first session is gone its entry is free (either its release
    // or the takeover gets there first).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = two.ask(3, &["CONNECT", DT, "al", "127.0.0.1", "10"]).await;
        if reply == b"0\0" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed(&server, "al").await, ["al 127.0.0.1 10"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_classic_entry_with_a_live_listener_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let _listener = common::connected_live(&server, "al").await;
    assert_eq!(
        server.send(&["CONNECT", DT, "al", "127.0.0.1", "1"]).await,
        b"2\0"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_classic_connect_takes_over_an_entry_whose_listener_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let port = dead_port().await.to_string();
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(
        server
            .send(&["CONNECT", DT, "al", "127.0.0.1", &port])
            .await,
        b"0\0"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap().port().to_string();
    assert_eq!(
        server
            .send(&["CONNECT", DT, "al", "127.0.0.1", &live])
            .await,
        b"0\0"
    );
    assert_eq!(
        listed(&server, "al").await,
        [format!("al 127.0.0.1 {live}")]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_prober_disconnects_a_classic_user_whose_listener_died() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.probe_interval = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let _alive = common::connected_live(&server, "bo").await;
    let port = dead_port().await.to_string();
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(
        server
            .send(&["CONNECT", DT, "al", "127.0.0.1", &port])
            .await,
        b"0\0"
    );
    assert_eq!(names(&listed(&server, "bo").await), ["al", "bo"]);
    // Three failed probes (after the interval, then 2 s and 4 s later);
    // bo's listener answers every probe.
    eventually(&server, "bo", |users| names(users) == ["bo"]).await;
    server.stop().await.unwrap();
    // Durable: still gone after a restart.
    let server = TestServer::start(common::config(dir.path())).await;
    assert_eq!(names(&listed(&server, "bo").await), ["bo"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_login_storm_does_not_hold_up_classic_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(TestServer::start(config(dir.path())).await);
    let answered = Arc::new(AtomicUsize::new(0));
    let logins = 32;
    let mut storm = Vec::new();
    for n in 0..logins {
        let server = server.clone();
        let answered = answered.clone();
        storm.push(tokio::spawn(async move {
            // A password for an account that does not exist yet: hashed.
            let (client, code) = Client::login(&server, &format!("u{n}"), "pw").await;
            answered.fetch_add(1, Ordering::SeqCst);
            (client, code)
        }));
    }
    // Classic requests meanwhile: a few writes, more reads.
    for n in 0..3 {
        let user = format!("classic{n}");
        assert_eq!(server.send(&["REGISTER", DT, &user]).await, b"0\0");
    }
    for _ in 0..20 {
        assert_eq!(server.send(&["LIST_USERS", DT, "classic0"]).await, b"2\0");
    }
    assert!(
        answered.load(Ordering::SeqCst) < logins,
        "classic requests were answered while logins were still hashing"
    );
    for login in storm {
        let (_client, code) = login.await.unwrap();
        assert_eq!(code, LoginCode::Ok);
    }
    let server = Arc::into_inner(server).unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn classic_openings_that_look_like_a_preface_stay_classic() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    // Part of the preface, then something else: an unknown classic op.
    assert_eq!(server.exchange(b"\xFFPDXQ\0").await, b"");
    // A TLS ClientHello's first byte: classic, unknown, closed.
    assert_eq!(server.exchange(&[0x16, 3, 1, 0, 0]).await, b"");
    // A request sent byte by byte is still read whole.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for byte in request(&["REGISTER", DT, "al"]) {
        stream.write_all(&[byte]).await.unwrap();
    }
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unregister_logs_out_the_accounts_other_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut one = Client::logged_in(&server, "al").await;
    let mut two = Client::logged_in(&server, "al").await;
    let mut bob = Client::logged_in(&server, "bob").await;
    assert_eq!(one.ask(1, &["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(one.ask(2, &["UNREGISTER", DT, "al"]).await, b"0\0");
    let frames = two.until_closed().await;
    assert_eq!(
        frames[0],
        Frame::Event(peerdex_protocol::frame::Event {
            name: "LOGGED_OUT".into(),
            fields: vec!["account removed".into()],
        })
    );
    assert!(matches!(frames[1..], [Frame::Close(_)]));
    // The session that unregistered and other accounts' sessions go on.
    assert_eq!(one.ask(3, &["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(bob.ask(1, &["REGISTER", DT, "bob"]).await, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_password_change_logs_out_the_other_sessions_and_a_connect_elsewhere_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let (mut one, _) = Client::login(&server, "al", "first").await;
    assert_eq!(one.ask(1, &["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(
        one.ask(2, &["CONNECT", DT, "al", "127.0.0.1", "9"]).await,
        b"0\0"
    );
    let (mut two, code) = Client::login(&server, "al", "first").await;
    assert_eq!(code, LoginCode::Ok);
    // An authenticated session of the same account takes the connection.
    assert_eq!(
        two.ask(1, &["CONNECT", DT, "al", "127.0.0.1", "10"]).await,
        b"0\0"
    );
    assert_eq!(
        one.next().await,
        Some(Frame::Event(peerdex_protocol::frame::Event {
            name: "DISCONNECTED".into(),
            fields: vec!["connected elsewhere".into()],
        }))
    );
    assert_eq!(
        two.ask(2, &["SET_PASSWORD", DT, "al", "second"]).await,
        b"0\0"
    );
    let frames = one.until_closed().await;
    assert!(matches!(&frames[..], [Frame::Event(e), Frame::Close(_)] if e.name == "LOGGED_OUT"));
    let (_, code) = Client::login(&server, "al", "first").await;
    assert_eq!(code, LoginCode::Refused);
    let (_, code) = Client::login(&server, "al", "second").await;
    assert_eq!(code, LoginCode::Ok);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_open_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut client = Client::logged_in(&server, "al").await;
    assert_eq!(client.ask(1, &["REGISTER", DT, "al"]).await, b"0\0");
    let stopping = tokio::spawn(server.stop());
    assert_eq!(
        client.until_closed().await,
        [Frame::Close("server shutting down".into())]
    );
    stopping.await.unwrap().unwrap();
    // The store was closed cleanly: it opens again.
    let server = TestServer::start(common::config(dir.path())).await;
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"1\0");
    server.stop().await.unwrap();
}
