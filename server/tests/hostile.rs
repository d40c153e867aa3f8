//! Slow, broken and hostile clients, and many clients at once.

mod common;

use std::time::{Duration, Instant};

use common::{config, connected, exchange, request, TestServer, DT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn request_in_one_byte_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in request(&["REGISTER", DT, "slowpoke"]) {
        stream.write_all(&[byte]).await.unwrap();
        stream.flush().await.unwrap();
    }
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn over_long_file_gets_catch_all_then_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    connected(&server, "al", 1).await;
    let long = "f".repeat(300);
    assert_eq!(
        server.send(&["PUBLISH", DT, "al", &long, "d"]).await,
        b"4\0"
    );
    assert_eq!(server.send(&["DELETE", DT, "al", &long]).await, b"4\0");
    // The unknown user still gets 1: codes are checked in order.
    assert_eq!(
        server.send(&["PUBLISH", DT, "zz", &long, "d"]).await,
        b"1\0"
    );
    // Nothing was published.
    assert_eq!(
        server.send(&["LIST_CONTENT", DT, "al", "al"]).await,
        request(&["0", "0"])
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn over_long_user_gets_catch_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let long = "u".repeat(256);
    assert_eq!(server.send(&["REGISTER", DT, &long]).await, b"2\0");
    assert_eq!(server.send(&["UNREGISTER", DT, &long]).await, b"2\0");
    assert_eq!(
        server.send(&["CONNECT", DT, &long, "1.2.3.4", "5"]).await,
        b"3\0"
    );
    assert_eq!(server.send(&["LIST_USERS", DT, &long]).await, b"3\0");
    assert_eq!(server.send(&["LIST_CONTENT", DT, &long, "x"]).await, b"4\0");
    // A 255-byte name is fine.
    let max = "u".repeat(255);
    assert_eq!(server.send(&["REGISTER", DT, &max]).await, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn endless_field_after_op_gets_catch_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut bytes = request(&["LIST_USERS"]);
    bytes.extend(vec![b'x'; 100 * 1024]);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The server answers before reading everything; write concurrently.
    let (mut rd, mut wr) = stream.split();
    let write = async {
        let _ = wr.write_all(&bytes).await;
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut reply = Vec::new();
        let _ = rd.read_to_end(&mut reply).await;
        reply
    };
    let ((), reply) = tokio::join!(write, read);
    assert_eq!(reply, b"3\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_op_closes_without_reply() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    assert_eq!(server.send(&["FROB", DT, "al"]).await, b"");
    assert_eq!(server.send(&["register", DT, "al"]).await, b"");
    // The server is still fine.
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn truncated_request_after_op_gets_catch_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"PUBLISH\0al").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"4\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn staller_is_dropped_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.request_timeout = Duration::from_millis(500);
    let server = TestServer::start(cfg).await;
    let started = Instant::now();
    let mut staller = TcpStream::connect(server.addr).await.unwrap();
    staller.write_all(b"REGISTER\0").await.unwrap();
    // Others are served while the staller holds its connection.
    for i in 0..20 {
        let user = format!("u{i}");
        assert_eq!(server.send(&["REGISTER", DT, &user]).await, b"0\0");
    }
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), staller.read_to_end(&mut reply))
        .await
        .expect("staller is dropped after the deadline");
    assert!(read.is_ok() || reply.is_empty());
    assert!(reply.is_empty(), "no reply to a half request");
    assert!(started.elapsed() >= Duration::from_millis(450));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn connection_cap_makes_clients_wait_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.request_timeout = Duration::from_millis(300);
    cfg.max_connections = 1;
    let server = TestServer::start(cfg).await;
    let mut staller = TcpStream::connect(server.addr).await.unwrap();
    staller.write_all(b"REGISTER\0").await.unwrap();
    // Served once the staller's deadline frees the only slot.
    assert_eq!(server.send(&["REGISTER", DT, "patient"]).await, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_registers_of_one_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let addr = server.addr;
    let bytes = request(&["REGISTER", DT, "contested"]);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let bytes = bytes.clone();
            tokio::spawn(async move { exchange(addr, &bytes).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    let zeros = replies.iter().filter(|r| r.as_slice() == b"0\0").count();
    let ones = replies.iter().filter(|r| r.as_slice() == b"1\0").count();
    assert_eq!((zeros, ones), (1, 199));
    server.stop().await.unwrap();
}

/// What follows the request is drained in small reads (the request
/// reader's buffer) until the peer stops sending: tens of KiB of it must
/// still leave the reply intact and the close clean.
#[tokio::test]
async fn many_kib_after_the_request_are_drained() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut bytes = request(&["REGISTER", DT, "al"]);
    bytes.extend(std::iter::repeat_n(b'x', 32 * 1024));
    assert_eq!(server.exchange(&bytes).await, b"0\0");
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"1\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn extra_bytes_after_request_do_not_reset_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut bytes = request(&["REGISTER", DT, "al"]);
    bytes.extend(request(&["trailing", "junk"]));
    assert_eq!(server.exchange(&bytes).await, b"0\0");
    server.stop().await.unwrap();
}
