//! The session transport against a scripted fake server.

use super::*;
use futures::SinkExt;
use peerdex_protocol::frame::{parse_request_body, Event, MAX_BODY_LEN};
use peerdex_protocol::{Operation, Outcome, Secret};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

const DT: &str = "21/11/2026 09:05:07";

type ServerSide = Framed<TcpStream, FrameCodec>;

fn login(user: &str, password: &str) -> Login {
    Login {
        user: user.into(),
        password: Secret::new(password),
        client_version: "peerdex/test".into(),
    }
}

fn request(user: &str, operation: Operation) -> Request {
    Request {
        datetime: None,
        user: Ok(user.into()),
        operation,
    }
}

fn fast() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(100),
        silence: Duration::from_millis(400),
        reply: Duration::from_secs(2),
    }
}

/// Accepts one connection, checks the preface, reads the Login and
/// answers `code`; returns the framed stream and the login.
async fn accept(listener: &TcpListener, code: LoginCode) -> (ServerSide, Login) {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut preface = [0u8; 8];
    sock.read_exact(&mut preface).await.unwrap();
    assert_eq!(preface, PREFACE);
    let mut framed = Framed::new(sock, FrameCodec::new());
    let Some(Ok(Ok(Frame::Login(login)))) = framed.next().await else {
        panic!("no login")
    };
    framed.send(Frame::LoginReply(code)).await.unwrap();
    (framed, login)
}

/// The next request frame, Pings answered on the way.
async fn next_request(server: &mut ServerSide) -> (NonZeroU32, Request) {
    loop {
        match server.next().await.unwrap().unwrap().unwrap() {
            Frame::Request { id, body } => return (id, parse_request_body(&body).unwrap()),
            Frame::Ping(n) => server.send(Frame::Pong(n)).await.unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn bound() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

async fn open(
    port: u16,
    timing: Timing,
) -> Result<(SessionLink, mpsc::Receiver<SessionEvent>), OpenError> {
    SessionLink::open(
        "127.0.0.1",
        port,
        login("alice", "pw"),
        Duration::from_millis(500),
        timing,
    )
    .await
}

#[tokio::test]
async fn login_then_pipelined_replies_out_of_order_and_in_parts() {
    let (listener, port) = bound().await;
    let server = tokio::spawn(async move {
        let (mut server, login) = accept(&listener, LoginCode::Ok).await;
        assert_eq!(login.user, "alice");
        assert_eq!(login.password.expose(), "pw");
        let (first, a) = next_request(&mut server).await;
        let (second, b) = next_request(&mut server).await;
        assert_eq!(a.operation.kind(), peerdex_protocol::OpKind::Register);
        assert_eq!(b.operation.kind(), peerdex_protocol::OpKind::ListUsers);
        assert_ne!(first, second);
        // The second first, in three parts interleaved with a Ping.
        let parts: [&[u8]; 3] = [b"0\0", b"1\0alice\x00127.0.", b"0.1\x004000\0"];
        for (i, part) in parts.iter().enumerate() {
            server
                .send(Frame::Reply {
                    id: second,
                    more: i < 2,
                    body: Bytes::copy_from_slice(part),
                })
                .await
                .unwrap();
            server.send(Frame::Ping(9)).await.unwrap();
        }
        server
            .send(Frame::Reply {
                id: first,
                more: false,
                body: Bytes::from_static(b"1\0"),
            })
            .await
            .unwrap();
        // The client answers the Pings.
        let mut pongs = 0;
        while pongs < 3 {
            if let Frame::Pong(9) = server.next().await.unwrap().unwrap().unwrap() {
                pongs += 1;
            }
        }
    });
    let (link, _events) = open(port, Timing::default()).await.unwrap();
    assert_eq!(link.user(), "alice");
    let register = request("alice", Operation::Register);
    let list = request("alice", Operation::ListUsers);
    let (a, b) = tokio::join!(link.call(&register, DT), async {
        // Sent after the REGISTER, so the server sees them in this order.
        tokio::task::yield_now().await;
        link.call(&list, DT).await
    });
    assert_eq!(a.unwrap(), Reply::Status(Outcome::UsernameInUse));
    let Reply::Users(users) = b.unwrap() else {
        panic!("not a listing")
    };
    assert_eq!(users[0].port, "4000");
    server.await.unwrap();
}

#[tokio::test]
async fn a_refused_or_failed_login_is_typed() {
    for (code, refused) in [(LoginCode::Refused, true), (LoginCode::Fail, false)] {
        let (listener, port) = bound().await;
        tokio::spawn(async move {
            let (mut server, _) = accept(&listener, code).await;
            let _ = server.send(Frame::Close("bad".into())).await;
        });
        let err = open(port, Timing::default()).await.unwrap_err();
        if refused {
            assert!(matches!(err, OpenError::Refused { ref user } if user == "alice"));
            assert_eq!(err.to_string(), "wrong password for alice");
        } else {
            assert!(matches!(err, OpenError::Failed { .. }), "{err}");
        }
    }
}

#[tokio::test]
async fn classic_answers_are_not_sessions() {
    // A close, a classic code, garbage, an oversized frame, silence.
    let answers: [Option<&'static [u8]>; 5] = [
        Some(b""),
        Some(b"-1\0"),
        Some(b"\x00\x00\x00\x06\x63\x00\x00\x00\x00x"),
        Some(b"\xFF\xFF\xFF\xFF"),
        None,
    ];
    for answer in answers {
        let (listener, port) = bound().await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = sock.read(&mut buf).await;
            match answer {
                Some(bytes) => {
                    sock.write_all(bytes).await.unwrap();
                    drop(sock);
                }
                None => tokio::time::sleep(Duration::from_secs(3)).await,
            }
        });
        let started = std::time::Instant::now();
        let err = open(port, Timing::default()).await.unwrap_err();
        assert!(
            matches!(err, OpenError::NotSession { .. }),
            "{answer:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{answer:?}");
    }
}

#[tokio::test]
async fn an_unencodable_login_fails_without_connecting() {
    let (listener, port) = bound().await;
    let long = "x".repeat(300);
    let err = SessionLink::open(
        "127.0.0.1",
        port,
        login(&long, ""),
        Duration::from_millis(500),
        Timing::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OpenError::Failed { .. }), "{err}");
    let accepted = timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "nothing connected");
}

#[tokio::test]
async fn an_unreachable_server_is_not_taken_for_a_classic_one() {
    let (listener, port) = bound().await;
    drop(listener);
    let err = open(port, Timing::default()).await.unwrap_err();
    assert!(matches!(err, OpenError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn silence_ends_the_session_and_fails_calls_promptly() {
    let (listener, port) = bound().await;
    let server = tokio::spawn(async move {
        let (mut server, _) = accept(&listener, LoginCode::Ok).await;
        // Reads everything (the client's Pings included), never answers.
        let mut pings = 0;
        while let Some(Ok(Ok(frame))) = server.next().await {
            if matches!(frame, Frame::Ping(_)) {
                pings += 1;
            }
        }
        pings
    });
    let (link, mut events) = open(port, fast()).await.unwrap();
    let err = link
        .call(&request("alice", Operation::ListUsers), DT)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Lost { .. }), "{err}");
    assert!(!link.is_alive());
    let event = events.recv().await.unwrap();
    assert!(matches!(event, SessionEvent::Lost { ref reason } if reason.contains("nothing heard")));
    // A later call fails at once.
    let started = std::time::Instant::now();
    assert!(link
        .call(&request("alice", Operation::ListUsers), DT)
        .await
        .is_err());
    assert!(started.elapsed() < Duration::from_millis(100));
    drop(link);
    assert!(
        server.await.unwrap() >= 1,
        "the idle client sent heartbeats"
    );
}

#[tokio::test]
async fn events_are_delivered_and_close_ends_the_session() {
    let (listener, port) = bound().await;
    tokio::spawn(async move {
        let (mut server, _) = accept(&listener, LoginCode::Ok).await;
        for (name, reason) in [
            ("SOMETHING_NEW", "ignored"),
            (EVENT_DISCONNECTED, "connected elsewhere"),
            (EVENT_LOGGED_OUT, "password changed"),
        ] {
            server
                .send(Frame::Event(Event {
                    name: name.into(),
                    fields: vec![reason.into()],
                }))
                .await
                .unwrap();
        }
        server
            .send(Frame::Close("password changed".into()))
            .await
            .unwrap();
        // Keeps the connection open: the Close alone ends the session.
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let (link, mut events) = open(port, Timing::default()).await.unwrap();
    assert_eq!(
        events.recv().await.unwrap(),
        SessionEvent::Disconnected {
            reason: "connected elsewhere".into()
        }
    );
    assert_eq!(
        events.recv().await.unwrap(),
        SessionEvent::LoggedOut {
            reason: "password changed".into()
        }
    );
    let lost = events.recv().await.unwrap();
    assert!(
        matches!(lost, SessionEvent::Lost { ref reason } if reason.contains("password changed"))
    );
    assert!(!link.is_alive());
}

#[tokio::test]
async fn garbage_and_oversized_frames_end_the_session_without_panic() {
    let garbage: [&'static [u8]; 4] = [
        b"\x00\x00\x00\x05\x63\x00\x00\x00\x01",
        b"\x00\x01\x00\x01\x04",
        b"\x00\x00\x00\x02ab",
        b"\x00\x00\x00\x05\x02\x00\x00\x00\x00",
    ];
    for bytes in garbage {
        let (listener, port) = bound().await;
        tokio::spawn(async move {
            let (server, _) = accept(&listener, LoginCode::Ok).await;
            let mut sock = server.into_inner();
            sock.write_all(bytes).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let (link, mut events) = open(port, Timing::default()).await.unwrap();
        let lost = timeout(Duration::from_secs(2), events.recv())
            .await
            .unwrap();
        assert!(matches!(lost, Some(SessionEvent::Lost { .. })), "{bytes:?}");
        assert!(matches!(
            link.call(&request("alice", Operation::ListUsers), DT).await,
            Err(CallError::Lost { .. })
        ));
    }
}

#[tokio::test]
async fn a_reply_to_nobody_is_dropped_and_a_long_reply_is_reassembled() {
    let (listener, port) = bound().await;
    tokio::spawn(async move {
        let (mut server, _) = accept(&listener, LoginCode::Ok).await;
        server
            .send(Frame::Reply {
                id: NonZeroU32::new(777).unwrap(),
                more: false,
                body: Bytes::from_static(b"0\0"),
            })
            .await
            .unwrap();
        let (id, _) = next_request(&mut server).await;
        // LIST_CONTENT of many entries, longer than one frame.
        let mut reply = BytesMut::new();
        peerdex_protocol::reply::put_code(&mut reply, 0);
        peerdex_protocol::reply::put_count(&mut reply, 500);
        for i in 0..500 {
            let name = format!("{i:0>200}");
            peerdex_protocol::reply::put_content_entry(&mut reply, &name, "d").unwrap();
        }
        assert!(reply.len() > MAX_BODY_LEN);
        for frame in peerdex_protocol::frame::reply_frames(id, reply.freeze()) {
            server.send(frame).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let (link, _events) = open(port, Timing::default()).await.unwrap();
    let reply = link
        .call(
            &request(
                "alice",
                Operation::ListContent {
                    remote_user: Ok("alice".into()),
                },
            ),
            DT,
        )
        .await
        .unwrap();
    let Reply::Content(files) = reply else {
        panic!("not a listing")
    };
    assert_eq!(files.len(), 500);
    assert!(link.is_alive());
}

#[tokio::test]
async fn close_sends_a_close_frame_and_raises_no_lost_event() {
    let (listener, port) = bound().await;
    let server = tokio::spawn(async move {
        let (mut server, _) = accept(&listener, LoginCode::Ok).await;
        loop {
            match server.next().await {
                Some(Ok(Ok(Frame::Close(_)))) => return true,
                Some(Ok(Ok(_))) => {}
                _ => return false,
            }
        }
    });
    let (link, mut events) = open(port, Timing::default()).await.unwrap();
    link.close().await;
    assert!(server.await.unwrap(), "the server saw a Close");
    drop(link);
    assert_eq!(
        events.recv().await,
        None,
        "no Lost event after our own close"
    );
}
