//! The RPC logger sink: one record per operation, never on the critical path.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{config, TestServer, DT};
use futures::StreamExt;
use peerdex_logger::rpc::{Logger, OpRecord};
use tarpc::serde_transport::tcp;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Json;
use tokio::sync::mpsc;

/// A logger that forwards every record to a channel.
#[derive(Clone)]
struct Collecting(mpsc::UnboundedSender<OpRecord>);

impl Logger for Collecting {
    async fn log(self, _: tarpc::context::Context, records: Vec<OpRecord>) -> u64 {
        let n = records.len() as u64;
        for record in records {
            let _ = self.0.send(record);
        }
        n
    }

    async fn now(self, _: tarpc::context::Context) -> String {
        peerdex_protocol::datetime::now()
    }
}

async fn start_logger(addr: SocketAddr) -> mpsc::UnboundedReceiver<OpRecord> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut incoming = tcp::listen(addr, Json::default).await.unwrap();
    tokio::spawn(async move {
        while let Some(Ok(transport)) = incoming.next().await {
            let service = Collecting(tx.clone());
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(service.serve())
                    .for_each(|respond| respond),
            );
        }
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<OpRecord>) -> OpRecord {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("record within 10 s")
        .expect("logger alive")
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A record as `(user, op, file, datetime, outcome)`, for comparisons.
fn fields(record: &OpRecord) -> (&str, &str, Option<&str>, &str, Option<&str>) {
    (
        &record.user,
        &record.op,
        record.file.as_deref(),
        &record.datetime,
        record.outcome.as_deref(),
    )
}

/// A server reporting to a collecting logger.
async fn logged_server(dir: &tempfile::TempDir) -> (TestServer, mpsc::UnboundedReceiver<OpRecord>) {
    let logger_addr = free_port();
    let records = start_logger(logger_addr).await;
    let mut cfg = config(dir.path());
    cfg.logger = Some(logger_addr.to_string());
    (TestServer::start(cfg).await, records)
}

#[tokio::test]
async fn records_carry_user_op_file_datetime_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut records) = logged_server(&dir).await;
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(server.send(&["CONNECT", "al", "4000"]).await, b"0\0");
    assert_eq!(
        server.send(&["PUBLISH", DT, "al", "f.txt", "d"]).await,
        b"0\0"
    );
    assert_eq!(server.send(&["DELETE", DT, "zz", "g"]).await, b"1\0");
    assert_eq!(server.send(&["FROB", DT, "al"]).await, b"");
    let first = next(&mut records).await;
    assert_eq!(fields(&first), ("al", "REGISTER", None, DT, Some("OK")));
    let second = next(&mut records).await;
    assert_eq!(
        (
            second.user.as_str(),
            second.op.as_str(),
            second.outcome.as_deref()
        ),
        ("al", "CONNECT", Some("OK"))
    );
    assert!(peerdex_protocol::datetime::is_datetime(&second.datetime));
    assert_eq!(
        fields(&next(&mut records).await),
        ("al", "PUBLISH", Some("f.txt"), DT, Some("OK"))
    );
    assert_eq!(
        fields(&next(&mut records).await),
        ("zz", "DELETE", Some("g"), DT, Some("USER DOES NOT EXIST"))
    );
    server.stop().await.unwrap();
    assert!(records.try_recv().is_err(), "no record for an unknown op");
}

#[tokio::test]
async fn a_failed_connect_carries_its_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut records) = logged_server(&dir).await;
    assert_eq!(
        server
            .send(&["CONNECT", DT, "ghost", "10.0.0.1", "4000"])
            .await,
        b"1\0"
    );
    // A listener that answers: a CONNECT over an entry whose address
    // does not answer would take it over.
    let _listener = common::connected_live(&server, "al").await;
    assert_eq!(
        server
            .send(&["CONNECT", DT, "al", "10.0.0.1", "4001"])
            .await,
        b"2\0"
    );
    // A malformed port is the catch-all, once the user's checks passed.
    assert_eq!(server.send(&["REGISTER", DT, "bo"]).await, b"0\0");
    assert_eq!(
        server.send(&["CONNECT", DT, "bo", "10.0.0.1", "0"]).await,
        b"3\0"
    );
    let mut got = Vec::new();
    for _ in 0..6 {
        let record = next(&mut records).await;
        got.push(format!(
            "{} {} {}",
            record.user,
            record.op,
            record.outcome.unwrap_or_default()
        ));
    }
    assert_eq!(
        got,
        [
            "ghost CONNECT USER DOES NOT EXIST",
            "al REGISTER OK",
            "al CONNECT OK",
            "al CONNECT USER ALREADY CONNECTED",
            "bo REGISTER OK",
            "bo CONNECT FAIL",
        ]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn requests_refused_before_the_rules_are_logged_as_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut records) = logged_server(&dir).await;
    common::connected(&server, "al", 4000).await;
    next(&mut records).await;
    next(&mut records).await;
    // An over-long file name: the rules never see a usable value.
    let long = "f".repeat(300);
    assert_eq!(
        server.send(&["PUBLISH", DT, "al", &long, "d"]).await,
        b"4\0"
    );
    assert_eq!(
        fields(&next(&mut records).await),
        ("al", "PUBLISH", Some("<malformed>"), DT, Some("FAIL"))
    );
    // A request cut short: the server answers FAIL without reading it all.
    let mut cut = common::request(&["DELETE", DT, "al"]);
    cut.extend_from_slice(b"half a file na");
    let reply = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(&cut).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        reply
    };
    assert_eq!(reply, b"4\0");
    assert_eq!(
        fields(&next(&mut records).await),
        ("al", "DELETE", Some("<missing>"), DT, Some("FAIL"))
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn logger_down_does_not_slow_operations_and_is_rejoined() {
    let logger_addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.logger = Some(logger_addr.to_string());
    let server = TestServer::start(cfg).await;
    let started = Instant::now();
    for i in 0..50 {
        let user = format!("u{i}");
        assert_eq!(server.send(&["REGISTER", DT, &user]).await, b"0\0");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "operations waited for the logger"
    );
    // The logger comes up later: the backlog is delivered, in order.
    let mut records = start_logger(logger_addr).await;
    for i in 0..50 {
        assert_eq!(next(&mut records).await.user, format!("u{i}"));
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn publish_content_is_logged_as_publish() {
    let logger_addr = free_port();
    let mut records = start_logger(logger_addr).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.logger = Some(logger_addr.to_string());
    let server = TestServer::start(cfg).await;
    common::connected(&server, "al", 4000).await;
    let hash = "ab".repeat(32);
    assert_eq!(
        server
            .send(&["PUBLISH_CONTENT", DT, "al", "song.mp3", "d", "5", &hash])
            .await,
        b"0\0"
    );
    next(&mut records).await; // REGISTER
    next(&mut records).await; // CONNECT
    let publish = next(&mut records).await;
    assert_eq!(
        (publish.op.as_str(), publish.file.as_deref()),
        ("PUBLISH", Some("song.mp3"))
    );
    server.stop().await.unwrap();
}
